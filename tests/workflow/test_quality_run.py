"""An ordinary run (a scene sheet and a deposits file, no demo truth) scores its own quality:
metrics.json holds leave-one-deposit-out and cross-scene re-identification, beside the baselines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared_data import DATA
from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config


def outcrop(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "outcrop.cli", *args], check=True, capture_output=True, text=True)


def test_an_ordinary_run_writes_leave_one_out_and_reidentification(tmp_path):
    size, seed, n = 256, 7, 3
    rows = []
    for i in range(n):
        scene = f"scene_{i + 1}"
        out = tmp_path / "src" / f"{scene}.tif"
        outcrop(
            "demo-scene",
            "--scene",
            f"demo_{i + 1}",
            "--size",
            str(size),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--truth",
            str(tmp_path / "src" / f"{scene}_units.tif"),
        )
        rows.append(f"{scene}\t{out}\tlandsat-c2l2\t{'train' if i < 2 else 'index'}")
    deposits = tmp_path / "deposits.gpkg"
    outcrop(
        "demo-deposits",
        "--scenes",
        str(n),
        "--size",
        str(size),
        "--seed",
        str(seed),
        "--out",
        str(deposits),
        "--truth",
        str(tmp_path / "hidden.gpkg"),
    )
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text("scene\tsource\tsensor\trole\n" + "\n".join(rows) + "\n")
    config = {k: v for k, v in TINY_CONFIG.items() if k != "demo"}
    config.update({"results": "results", "scenes": str(sheet), "deposits": str(deposits)})
    write_config(tmp_path, config)

    snakemake(tmp_path, "--cores", "2")

    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert "rock_unit_tiles" not in metrics  # no demo truth in an ordinary run
    loo, reid = metrics["leave_one_out"], metrics["reidentification"]
    assert loo["deposits"] >= 3 and loo["seconds"] >= 0 and reid["seconds"] >= 0
    for name in ("byol", "band_statistics", "random_encoder", "random_joined", "raw_pixels"):
        assert len(loo[name]["ranks"]) == loo["deposits"]
        assert set(loo[name]) >= {"recall@5", "recall@20", "median_rank"}
        assert 0.0 <= reid[name]["top1"] <= reid[name]["top5"] <= 1.0
    # Neighbouring scenes overlap by a third: both pairs of neighbours are matched, on many tiles.
    assert {(p["gallery"], p["queries"]) for p in reid["pairs"]} >= {("scene_1", "scene_2"), ("scene_2", "scene_3")}
    assert reid["queries"] >= 50 and reid["offset_px"] == TINY_CONFIG["tiles"]["stride"] // 2
    # The same re-finds ground well above chance (one in hundreds of gallery tiles), and the shipped
    # embedding (learned, spectrum, block) above the tile's band statistics.
    assert reid["byol"]["top5"] > 0.2
    assert reid["byol"]["top1"] > reid["band_statistics"]["top1"]
    summary = (tmp_path / "results" / "summary.html").read_text()
    assert "Leave-one-deposit-out" in summary and "Cross-scene re-identification" in summary
    log = (tmp_path / "results" / "logs" / "quality.log").read_text()
    assert "leave-one-out took" in log and "re-identification took" in log


GREENLAND = DATA / "landsat8" / "LC80030172015001LGN00_greenland"


def test_a_one_scene_run_without_deposits_reports_what_training_added(tmp_path):
    """A real Landsat 8 scene (Greenland, 2015-01-01), alone, no deposits: no leave-one-out, no scene
    pair, and still a figure: its own window re-found under a shifted grid and a reprojected copy,
    and what training added over the untrained network joined with the same spectra and over the
    spectra alone, in metrics.json, the summary and `outcrop info`."""
    from outcrop.figures.report import run_info

    (tmp_path / "scenes.tsv").write_text(f"scene\tsource\tsensor\trole\ngreenland\t{GREENLAND}\tlandsat-l1\ttrain\n")
    config = {k: v for k, v in TINY_CONFIG.items() if k not in ("demo", "evaluate")}
    config.update({"scenes": "scenes.tsv", "bands": ["blue", "green", "red", "nir"], "grid": {"resolution": 90}})
    write_config(tmp_path, config)

    snakemake(tmp_path, "--cores", "2")

    results = tmp_path / "results"
    metrics = json.loads((results / "metrics.json").read_text())
    assert "skipped" in metrics["leave_one_out"] and "skipped" in metrics["reidentification"]
    same = metrics["same_scene"]
    assert same["scene"] == "greenland" and same["gallery"] > 100
    for kind in ("shifted", "reprojected"):
        assert same[kind]["queries"] > 50
        for name in ("byol", "random_joined", "spectral_parts", "band_statistics", "random_encoder"):
            assert 0.0 <= same[kind][name]["top1"] <= same[kind][name]["top5"] <= 1.0
        assert same[kind]["byol"]["top5"] > 0.2  # far above chance (one in hundreds of gallery tiles)
    gain = metrics["training_gain"]
    assert set(gain["measures"]) == {
        f"same_scene.{k}.{m}" for k in ("shifted", "reprojected") for m in ("top1", "top5")
    }
    for measure, row in gain["measures"].items():
        _, kind, key = measure.split(".")
        scores = same[kind]
        assert row["shipped"] == scores["byol"][key]
        assert row["reference_value"] == max(scores["random_joined"][key], scores["spectral_parts"][key])
        assert scores[row["reference"]][key] == row["reference_value"]
        assert row["gain"] == pytest.approx(row["shipped"] - row["reference_value"], abs=1e-6)
    assert gain["verdict"].startswith("Training")
    assert "What training added" in (results / "summary.html").read_text()
    assert f"training gain: {gain['verdict']}" in run_info(results)
    assert "same-scene re-identification took" in (results / "logs" / "quality.log").read_text()
