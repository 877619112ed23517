"""Evaluation protocols: honest kNN (no overlapping neighbours), spatial-block probe, recall."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from outcrop.evaluate import as_unit_vectors, cluster_agreement, deposit_recall, knn_accuracy


def _grid_table(n_side=12, width=960.0, stride=960.0):
    xs, ys = np.meshgrid(np.arange(n_side) * stride, np.arange(n_side) * stride)
    x0, y0 = xs.ravel(), ys.ravel()
    geoms = shapely.box(x0, y0, x0 + width, y0 + width)
    return gpd.GeoDataFrame({"scene": "s", "tile_id": np.arange(len(x0))}, geometry=geoms, crs="EPSG:3031")


def test_knn_ignores_neighbours_closer_than_the_exclusion():
    # Two classes in two halves; each tile's vector is unique noise plus its exact copy 10 m away.
    rng = np.random.default_rng(0)
    n = 60
    centres = np.column_stack([np.repeat(np.arange(n // 2) * 5000.0, 2) + np.tile([0, 10], n // 2),
                               np.zeros(n)])
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
    hidden = gpd.GeoDataFrame(geometry=[centres[t].buffer(300) for t in hidden_tiles] +
                              [shapely.Point(-50_000, -50_000).buffer(300)], crs=table.crs)
    recall = deposit_recall(vectors, table, [np.array([0])], hidden, exclusion_m=1500, ks=[2, 10])
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
    args = dict(exclusion_m=1500, ks=[2])
    tiles = deposit_recall(vectors, table, [np.array([0])], hidden, **args)
    sites = deposit_recall(vectors, table, [np.array([0])], hidden, site_overlap=0.25, **args)
    # As tiles, the twin takes second place; as sites, the second place goes to the other patch.
    assert tiles["set"]["recall@2"] == pytest.approx(1 / 2)
    assert sites["set"]["recall@2"] == pytest.approx(1.0)
