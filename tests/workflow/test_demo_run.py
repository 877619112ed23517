"""The whole workflow on the tiny demo: every output exists and keeps its contract."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
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


def test_the_demo_scores_its_planted_units_through_the_unit_map_code(demo_run):
    """No units configured: the demo's truth rasters are its unit maps, read by the same function as
    a user's map and as `outcrop evaluate`'s rock-unit tiles; every feature set and the workflow's own
    clusters are scored at every k and cut, the per-unit table is written, and the map shows them."""
    from outcrop.raster.demo import UNITS

    results = demo_run / "results"
    metrics = json.loads((results / "metrics.json").read_text())
    agree = metrics["map_agreement"]
    assert agree["maps"] == [f"{s}_units.tif" for s in SCENES] and agree["kind"] == ["raster"]
    assert agree["tiles_read"] == metrics["tiles"]  # the tiny demo is under the sample size
    assert agree["tiles_with_unit"] == metrics["rock_unit_tiles"]  # evaluate reads its units the same way
    assert set(agree["units"]) <= {u[0] for u in UNITS} | {"alteration"} and len(agree["units"]) >= 4
    levels = {f"k{k}" for k in TINY_CONFIG["clusters"]["k"]} | {f"h{c}" for c in TINY_CONFIG["clusters"]["cuts"]}
    for name in ("byol", "random_joined", "spectral_parts", "band_statistics", "random_encoder", "raw_pixels"):
        assert levels <= set(agree[name])
        for level in levels:
            assert -1 <= agree[name][level]["ari"] <= 1 and 0 <= agree[name][level]["purity"] <= 1
        assert 0 <= agree[name]["knn_macro_f1"] <= 1 and set(agree[name]["knn_recall"]) == set(agree["units"])
    assert set(agree["workflow_clusters"]) == levels
    table = pd.read_csv(results / "units.csv")
    assert sorted(table["unit"]) == sorted(agree["units"]) and table["tiles"].sum() == agree["tiles_with_unit"]
    gain = metrics["training_gain"]
    assert any(m.startswith("map_agreement.") for m in gain["measures"]) and gain["verdict"]
    # The demo's own truth scores have the untrained counterparts too, and count as measures.
    for name in ("random_joined", "spectral_parts"):
        assert 0 <= metrics[name]["knn_accuracy"] <= 1 and -1 <= metrics[name]["ari"] <= 1
    assert {"demo_truth.ari", "demo_truth.knn_accuracy", "demo_truth.deposit_recall.recall@20"} <= set(gain["measures"])
    page = (results / "map.html").read_text()
    assert "Geological map units" in page and '"unit_legend"' in page


def test_reidentification_is_reported_by_acquisition_date(demo_run, tmp_path):
    """The scenes' ACQUISITION_DATE tags sort overlapping pairs: demo_1 and demo_2 seen on one day,
    demo_3 on another; each relation is pooled apart, and the pooled figures make up the whole."""
    import shutil

    from outcrop.search.quality import quality_run

    results = demo_run / "results"
    dates = {"demo_1": "2021-12-14", "demo_2": "2021-12-14", "demo_3": "2022-01-30"}
    prepared = []
    for scene, day in dates.items():
        prepared.append(tmp_path / f"{scene}.tif")
        shutil.copy(results / "prepared" / f"{scene}.tif", prepared[-1])
        with rasterio.open(prepared[-1], "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
            dst.update_tags(ACQUISITION_DATE=day)
    lines = []
    metrics = quality_run(
        SCENES,
        tmp_path / "metrics.json",
        index=results / "index" / "tiles.faiss",
        index_table=results / "index" / "tiles.parquet",
        embeddings=[results / "embeddings" / f"{s}.npy" for s in SCENES],
        tiles=[results / "tiles" / f"{s}.npy" for s in SCENES],
        prepared=prepared,
        tables=[results / "tiles" / f"{s}.parquet" for s in SCENES],
        model=results / "model" / "encoder.pt",
        deposits=None,
        log=lines.append,
    )
    reid = metrics["reidentification"]
    relation = {(p["gallery"], p["queries"]): p["dates"] for p in reid["pairs"]}
    assert relation[("demo_1", "demo_2")] == "same_date" and relation[("demo_2", "demo_3")] == "different_dates"
    assert {p["gallery_date"] for p in reid["pairs"]} <= set(dates.values())
    by = reid["by_dates"]
    assert set(by) == set(relation.values()) and sum(b["queries"] for b in by.values()) == reid["queries"]
    for name in ("byol", "random_joined", "spectral_parts"):
        pooled = sum(b[name]["top1"] * b["queries"] for b in by.values()) / reid["queries"]
        assert pooled == pytest.approx(reid[name]["top1"])
    assert {"reidentification.same_date.top1", "reidentification.different_dates.top1"} <= set(
        metrics["training_gain"]["measures"]
    )
    assert any("re-identification, different dates" in line for line in lines)


def test_training_loss_went_down(demo_run):
    curve = pd.read_csv(demo_run / "results" / "model" / "training_curve.tsv", sep="\t")
    loss = curve["loss"].to_numpy()
    k = max(1, len(loss) // 4)
    assert loss[-k:].mean() < loss[:k].mean()


def test_second_run_does_nothing(demo_run):
    proc = snakemake(demo_run, "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr
