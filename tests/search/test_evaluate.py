"""Evaluation protocols: honest kNN (no overlapping neighbours), spatial-block probe, recall."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from outcrop import OutcropError
from outcrop.search.evaluate import (
    as_unit_vectors,
    cluster_agreement,
    deposit_recall,
    knn_accuracy,
    linear_probe_accuracy,
)


def _grid_table(n_side=12, width=960.0, stride=960.0):
    xs, ys = np.meshgrid(np.arange(n_side) * stride, np.arange(n_side) * stride)
    x0, y0 = xs.ravel(), ys.ravel()
    geoms = shapely.box(x0, y0, x0 + width, y0 + width)
    return gpd.GeoDataFrame({"scene": "s", "tile_id": np.arange(len(x0))}, geometry=geoms, crs="EPSG:3031")


def test_knn_ignores_neighbours_closer_than_the_exclusion():
    # Two classes in two halves; each tile's vector is unique noise plus its exact copy 10 m away.
    rng = np.random.default_rng(0)
    n = 60
    centres = np.column_stack([np.repeat(np.arange(n // 2) * 5000.0, 2) + np.tile([0, 10], n // 2), np.zeros(n)])
    labels = np.repeat(np.arange(2), n // 2)
    base = rng.standard_normal((n // 2, 16))
    vectors = as_unit_vectors(np.repeat(base, 2, axis=0))  # copies are each other's nearest
    # Without exclusion the copy answers (trivially right); with it, noise decides (near chance).
    assert knn_accuracy(vectors, labels, centres, k=1, exclusion_m=0.0) == 1.0
    assert knn_accuracy(vectors, labels, centres, k=1, exclusion_m=100.0) < 0.8


def test_cluster_agreement_is_perfect_for_separated_units():
    rng = np.random.default_rng(1)
    labels = np.repeat([1, 2, 3], 40)
    centres = rng.standard_normal((3, 8)) * 5
    vectors = as_unit_vectors(centres[labels - 1] + 0.1 * rng.standard_normal((120, 8)))
    scores = cluster_agreement(vectors, labels, seed=0)
    assert scores["ari"] == pytest.approx(1.0) and scores["nmi"] == pytest.approx(1.0)


def test_the_linear_probe_reaches_the_optimum_a_long_lbfgs_reaches():
    """Units a linear boundary splits are predicted across the spatial folds; labels independent of
    the features are not (chance); and the accuracy is that of L-BFGS run to a tight tolerance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 10_000, (600, 2))
    labels = rng.integers(0, 3, 600)
    features = np.hstack([np.eye(3)[labels] * 2.0, rng.normal(size=(600, 40))])
    assert linear_probe_accuracy(features, labels, centres, block_m=1000) > 0.95
    noise = rng.normal(size=(600, 40))
    assert linear_probe_accuracy(noise, labels, centres, block_m=1000) < 0.5
    blocks = np.floor(centres / 1000).astype(np.int64)
    groups = blocks[:, 0] * 100_003 + blocks[:, 1]
    correct = 0
    for train, test in GroupKFold(n_splits=5).split(noise, labels, groups):
        scaler = StandardScaler().fit(noise[train])
        clf = LogisticRegression(max_iter=20_000, tol=1e-10).fit(scaler.transform(noise[train]), labels[train])
        correct += int((clf.predict(scaler.transform(noise[test])) == labels[test]).sum())
    assert linear_probe_accuracy(noise, labels, centres, block_m=1000) == pytest.approx(correct / 600, abs=2 / 600)


def test_deposit_recall_counts_tiles_covering_hidden_patches():
    table = _grid_table()
    rng = np.random.default_rng(2)
    vectors = as_unit_vectors(rng.standard_normal((len(table), 8)))
    signature = vectors[0].copy()
    hidden_tiles = [50, 100]
    for t in hidden_tiles:
        vectors[t] = signature + 0.01 * rng.standard_normal(8)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centres = table.geometry.centroid
    hidden = gpd.GeoDataFrame(
        geometry=[centres[t].buffer(300) for t in hidden_tiles] + [shapely.Point(-50_000, -50_000).buffer(300)],
        crs=table.crs,
    )
    recall = deposit_recall(vectors, table, [np.array([0])], hidden, known=[centres[0]], exclusion_m=1500, ks=[2, 10])
    # Two of three hidden patches are found in the first two places; the third is nowhere.
    assert recall["set"]["recall@2"] == pytest.approx(2 / 3)
    assert recall["combined"]["recall@10"] == pytest.approx(2 / 3)


def test_deposit_recall_over_sites_does_not_count_a_duplicate_twice():
    table = _grid_table()
    rng = np.random.default_rng(4)
    # Tile 50 is seen twice (a second scene shifted by 100 m); both copies beat the other hidden tile.
    twin = table.iloc[[50]].assign(scene="t", geometry=table.geometry.iloc[[50]].translate(100, 100))
    table = gpd.GeoDataFrame(pd.concat([table, twin], ignore_index=True), geometry="geometry", crs=table.crs)
    vectors = as_unit_vectors(rng.standard_normal((len(table), 8)))
    signature = vectors[0].copy()
    for t, noise in ((50, 0.01), (len(table) - 1, 0.01), (100, 0.2)):
        vectors[t] = signature + noise * rng.standard_normal(8)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centres = table.geometry.centroid
    hidden = gpd.GeoDataFrame(geometry=[centres[t].buffer(300) for t in (50, 100)], crs=table.crs)
    args = dict(known=[centres[0]], exclusion_m=1500, ks=[2])
    tiles = deposit_recall(vectors, table, [np.array([0])], hidden, **args)
    sites = deposit_recall(vectors, table, [np.array([0])], hidden, site_overlap=0.25, **args)
    # As tiles, the twin takes second place; as sites, the second place goes to the other patch.
    assert tiles["set"]["recall@2"] == pytest.approx(1 / 2)
    assert sites["set"]["recall@2"] == pytest.approx(1.0)


def _model_file(path, *, arch="resnet-small", bands=("blue", "green", "red"), dim=32, mean=0.2, std=0.05):
    """An encoder file as the encoder stage writes it, with weights that are not a fresh init."""
    import torch

    from outcrop.learning.backbones import build_backbone
    from outcrop.learning.encoder import FORMAT_VERSION, MODEL_FORMAT

    torch.manual_seed(123)
    net = build_backbone(arch, len(bands), dim)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    meta = {
        "bands": list(bands),
        "mean": [mean] * len(bands),
        "std": [std] * len(bands),
        "arch": arch,
        "in_channels": len(bands),
        "embedding_dim": dim,
    }
    torch.save(
        {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "state_dict": net.state_dict(), "metadata": meta},
        path,
    )
    return path


def test_random_encoder_copies_the_model_shape_and_normalisation_not_its_weights(tmp_path):
    import torch

    from outcrop.learning.embeddings import embed_array
    from outcrop.learning.encoder import load_encoder
    from outcrop.search.evaluate import random_encoder_embeddings

    rng = np.random.default_rng(5)
    tiles = (0.2 + 0.05 * rng.standard_normal((40, 3, 16, 16))).astype(np.float32)
    model = _model_file(tmp_path / "encoder.pt")
    rng_before = torch.get_rng_state()
    a = random_encoder_embeddings(model, tiles, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    assert a.shape == (40, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # Seeded: the same seed gives the same encoder, another seed another one.
    np.testing.assert_array_equal(a, random_encoder_embeddings(model, tiles, seed=0))
    assert np.abs(a - random_encoder_embeddings(model, tiles, seed=1)).max() > 1e-2
    # Not the trained weights.
    trained = embed_array(*load_encoder(model), tiles, spectral_weight=0.0)
    assert np.abs(a - trained).max() > 1e-2
    # The stored normalisation is applied: tiles and statistics scaled alike give the same vectors.
    scaled = _model_file(tmp_path / "scaled.pt", mean=2.0, std=0.5)
    np.testing.assert_allclose(random_encoder_embeddings(scaled, tiles * 10, seed=0), a, atol=1e-4)
    # A file that is no encoder is refused as such.
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(OutcropError, match="bad.pt"):
        random_encoder_embeddings(bad, tiles)
