"""Values from the config, the scene sheet and file names reach each command as one argument.

Every rule quotes what it puts into its shell command: a results folder, a scene source, a deposits
file and an AOI file whose names hold `$( )`, backticks, `;` and spaces run nothing, and a run
with them finishes end to end with its outputs where the names say. Scene ids, which become file
names, are refused unless they are plain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from shapely.geometry import box, mapping

from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config

pytestmark = pytest.mark.workflow

CANARIES = ("CANARY_R", "CANARY_B", "CANARY_S", "CANARY_SRC", "CANARY_D", "CANARY_A", "CANARY_ID")


def hostile(label: str) -> str:
    """A name with every shell metacharacter that would run `touch CANARY_<label>` if unquoted."""
    return f"{label} $(touch CANARY_{label}) `touch CANARY_B`; touch CANARY_S & x"


def canaries_under(*folders: Path) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob("CANARY_*") if p.name in CANARIES]


def outcrop(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "outcrop.cli", *args], check=True, capture_output=True, text=True)


def test_hostile_names_run_nothing_and_a_run_with_them_finishes(tmp_path):
    src = tmp_path / hostile("SRC")
    results = hostile("R")
    deposits = tmp_path / f"{hostile('D')}.gpkg"
    aoi = tmp_path / f"{hostile('A')}.geojson"
    size, seed = 256, 7
    scenes = []
    for i, scene in enumerate(("demo_1", "demo_2")):
        out = src / f"{scene}.tif"
        outcrop("demo-scene", "--scene", scene, "--size", str(size), "--seed", str(seed), "--out", str(out),
                "--truth", str(src / f"{scene}_units.tif"))
        scenes.append(f"{scene}\t{out}\tlandsat-c2l2\t{'train' if i == 0 else 'index'}")
    outcrop("demo-deposits", "--scenes", "2", "--size", str(size), "--seed", str(seed), "--out", str(deposits),
            "--truth", str(tmp_path / "hidden.gpkg"))
    with rasterio.open(src / "demo_1.tif") as ds:
        bounds, crs = ds.bounds, ds.crs.to_string()
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                               "features": [{"type": "Feature", "properties": {},
                                             "geometry": mapping(box(*bounds).buffer(30_000))}]}))
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text("scene\tsource\tsensor\trole\n" + "\n".join(scenes) + "\n")
    config = {k: v for k, v in TINY_CONFIG.items() if k != "demo"}
    config.update({"results": results, "scenes": str(sheet), "deposits": str(deposits),
                   "aoi": {"path": str(aoi), "buffer_km": 0}})
    write_config(tmp_path, config)

    snakemake(tmp_path, "--cores", "2")

    assert canaries_under(tmp_path) == []
    out = tmp_path / results
    for name in ("summary.html", "map.html", "analogues/analogues.gpkg", "clusters/labels.gpkg",
                 "prepared/demo_2.tif", "logs/prepare/demo_2.log"):
        assert (out / name).is_file(), name
    # Nothing escaped the declared folder: the shell did not split the name at `;` or at a space.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [src.name, results, deposits.name, aoi.name, "hidden.gpkg", "scenes.tsv", "config.yaml", ".snakemake"])


@pytest.mark.parametrize("scene", ["a$(touch CANARY_ID)", "a`touch CANARY_ID`", "a;touch CANARY_ID", "a b"])
def test_hostile_scene_ids_are_refused_before_any_job(tmp_path, scene):
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text(f"scene\tsource\tsensor\trole\n{scene}\t{tmp_path / 'a.tif'}\tlandsat-c2l2\ttrain\n")
    write_config(tmp_path, {"scenes": str(sheet), "deposits": str(tmp_path / "d.csv")})
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    assert "scenes.tsv: line 2: scene:" in text and "does not match" in text
    assert canaries_under(tmp_path) == [] and not (tmp_path / "results").exists()


@pytest.mark.parametrize("key", ["results", "deposits"])
def test_braces_in_a_path_are_refused_before_any_job(tmp_path, key):
    """Snakemake reads `{...}` in a path as a wildcard: refused, naming the key."""
    write_config(tmp_path, {key: "run{scene}"})
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    lines = [line for line in text.splitlines() if f"config: {key}: 'run{{scene}}': a path may not contain" in line]
    assert len(lines) == 1, text[-3000:]


def test_one_folder_spelled_two_ways_is_one_run(tmp_path):
    """`./results`, `results/` and the absolute path are one folder: one lock, one set of logs."""
    config = dict(TINY_CONFIG)
    outputs = set()
    for spelling in ("results", "./results", "results/", str(tmp_path / "results")):
        write_config(tmp_path, {**config, "results": spelling})
        proc = snakemake(tmp_path, "--cores", "1", "-n", "--forceall", "-p")
        outputs.add(frozenset(line.split()[-2] for line in proc.stdout.splitlines() if "> " in line and "2>&1" in line))
    assert len(outputs) == 1
    assert all(p.startswith("results/logs/") for p in next(iter(outputs)))


def test_braces_in_a_scene_source_are_refused_before_any_job(tmp_path):
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text(f"scene\tsource\tsensor\trole\na\t{tmp_path / 'a{scene}.tif'}\tlandsat-c2l2\ttrain\n")
    write_config(tmp_path, {"scenes": str(sheet), "deposits": str(tmp_path / "d.csv")})
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    assert "scenes.tsv: line 2: source:" in text and "a path may not contain '{' or '}'" in text
