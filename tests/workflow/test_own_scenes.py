"""Own scenes, first time: a run with a scene sheet and no deposits maps everything but analogues."""

from __future__ import annotations

import json
from pathlib import Path

from outcrop.figures.report import run_info
from outcrop.raster.demo import synthesise_scene
from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config


def _own_run(workdir: Path) -> None:
    """Two scenes of the demo coast as a user's own scene sheet, without a deposits file."""
    scenes = workdir / "scenes"
    scenes.mkdir(parents=True)
    rows = ["scene\tsource\tsensor\trole"]
    for i in range(2):
        synthesise_scene(scenes / f"own_{i}.tif", scenes / f"own_{i}_truth.tif", index=i, size=256, seed=7)
        rows.append(f"own_{i}\tscenes/own_{i}.tif\tlandsat-c2l2\ttrain")
    (workdir / "scenes.tsv").write_text("\n".join(rows) + "\n")
    config = {k: v for k, v in TINY_CONFIG.items() if k not in ("demo", "evaluate")}
    write_config(workdir, {**config, "scenes": "scenes.tsv"})


def test_run_without_deposits_builds_its_job_graph(tmp_path):
    _own_run(tmp_path)
    proc = snakemake(tmp_path, "-n", "--cores", "1", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rule analogues:" not in proc.stdout and "analogues_skipped" in proc.stdout
    assert "rule webmap" in proc.stdout and "rule report" in proc.stdout
    assert "rule quality:" in proc.stdout and "rule evaluate:" not in proc.stdout


def test_run_without_deposits_maps_and_says_so(tmp_path):
    _own_run(tmp_path)
    snakemake(tmp_path, "--cores", "2")
    results = tmp_path / "results"
    for path in ("map.html", "summary.html", "clusters/labels.gpkg", "quicklooks/own_0.png"):
        assert (results / path).is_file(), path
    assert not (results / "analogues" / "analogues.csv").exists()
    assert not (results / "analogues" / "similarity").exists()
    assert "no deposits given" in (results / "summary.html").read_text()
    assert "no deposits given" in run_info(results)
    # Quality is scored without deposits too: leave-one-out is not applicable, re-identification runs.
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["leave_one_out"]["skipped"].startswith("not applicable: no deposits given")
    assert "rock_unit_tiles" not in metrics and "seconds" in metrics["reidentification"]
    assert "not applicable: no deposits given" in (results / "summary.html").read_text()
    # the index says which grid its tiles lie on: the run's grid.json
    grid = json.loads((results / "grid.json").read_text())
    index_grid = json.loads((results / "index" / "info.json").read_text())["grid"]
    assert (index_grid["crs"], index_grid["resolution"]) == (grid["crs"], grid["resolution"])
    assert index_grid["crs_reason"] == grid["crs_reason"] and index_grid["crs_reason"]
