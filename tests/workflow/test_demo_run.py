"""The whole workflow on the tiny demo: every output exists and keeps its contract."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio

from outcrop.raster.tile_store import open_tiles
from tests.workflow.conftest import TINY_CONFIG, snakemake

SCENES = ["demo_1", "demo_2", "demo_3"]


def test_every_output_exists(demo_run):
    r = demo_run / "results"
    expected = (
        [
            "clusters/labels.gpkg",
            "clusters/labels.parquet",
            "clusters/summary.csv",
            "clusters/dendrogram.png",
            "model/encoder.pt",
            "model/training_curve.tsv",
            "model/training_curve.png",
            "analogues/analogues.gpkg",
            "analogues/analogues.csv",
            "index/tiles.faiss",
            "index/info.json",
            "metrics.json",
            "summary.html",
        ]
        + [f"clusters/maps/{s}.png" for s in SCENES]
        + [f"analogues/similarity/{s}.tif" for s in SCENES]
    )
    missing = [p for p in expected if not (r / p).is_file() or (r / p).stat().st_size == 0]
    assert missing == []
    for rule in ("prepare", "tiles", "embed"):
        assert sorted(p.stem for p in (demo_run / "results" / "logs" / rule).glob("*.log")) == SCENES


def test_tile_tables_and_arrays_agree(demo_run):
    for scene in SCENES:
        table = gpd.read_parquet(demo_run / "results" / "tiles" / f"{scene}.parquet")
        tiles = open_tiles(demo_run / "results" / "tiles" / f"{scene}.npy")
        assert np.load(demo_run / "results" / "tiles" / f"{scene}.npy", mmap_mode="r").dtype == np.uint16  # blocks
        emb = np.load(demo_run / "results" / "embeddings" / f"{scene}.npy")
        assert table.crs.to_epsg() == 3031
        assert {"tile_id", "scene", "row", "col", "rock", "snow_ice", "water", "cloud"} <= set(table.columns)
        assert tiles.shape[0] == len(table) == emb.shape[0]
        assert tiles.shape[1:] == (7, 32, 32)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


def test_cluster_labels_geopackage(demo_run):
    path = demo_run / "results" / "clusters" / "labels.gpkg"
    info = pyogrio.read_info(path)
    assert info["crs"] is not None and "3031" in info["crs"]
    labels = gpd.read_file(path)
    for k in TINY_CONFIG["clusters"]["k"]:
        assert labels[f"k{k}"].between(0, k - 1).all()
        assert labels[f"k{k}"].nunique() == k


def test_analogues_are_ranked_and_outside_the_exclusion_zone(demo_run):
    csv = pd.read_csv(demo_run / "results" / "analogues" / "analogues.csv")
    gpkg = gpd.read_file(demo_run / "results" / "analogues" / "analogues.gpkg")
    assert len(csv) == len(gpkg) > 0
    assert list(csv["rank"]) == list(range(1, len(csv) + 1))
    assert csv["score"].is_monotonic_decreasing
    assert (csv["distance_km"] >= 1.0 - 1e-9).all()  # the default exclusion radius
    with rasterio.open(demo_run / "results" / "analogues" / "similarity" / "demo_1.tif") as src:
        assert src.crs.to_epsg() == 3031


def test_metrics_hold_the_four_scores_in_range(demo_run):
    metrics = json.loads((demo_run / "results" / "metrics.json").read_text())
    for features in ("byol", "raw_spectral"):
        m = metrics[features]
        assert -1.0 <= m["ari"] <= 1.0 and 0.0 <= m["nmi"] <= 1.0
        for mode in ("set", "per_positive", "combined"):
            for value in m["deposit_recall"][mode].values():
                assert 0.0 <= value <= 1.0
    assert metrics["hidden_deposits"] > 0 and metrics["known_deposits"] > 0


def test_training_loss_went_down(demo_run):
    curve = pd.read_csv(demo_run / "results" / "model" / "training_curve.tsv", sep="\t")
    loss = curve["loss"].to_numpy()
    k = max(1, len(loss) // 4)
    assert loss[-k:].mean() < loss[:k].mean()


def test_second_run_does_nothing(demo_run):
    proc = snakemake(demo_run, "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr
