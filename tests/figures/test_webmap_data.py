"""What the map embeds for its geography and its click popup, read back from the written page."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hostile_run import HostileRun, make_hostile_run
from outcrop.cli import main
from outcrop.raster.surfaces import WATER


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    return make_hostile_run(tmp_path_factory.mktemp("webmap_data"))


def _webmap(run: HostileRun, out: Path, prepared: list[Path]) -> int:
    return main(["webmap", "--quicklooks", *map(str, run.quicklooks), "--clusters", *map(str, run.cluster_rasters),
                 "--similarity", *map(str, run.similarity), "--analogues", str(run.analogues),
                 "--deposits", str(run.deposits), "--prepared", *map(str, prepared), "--out", str(out)])


def _data(page: str) -> dict:
    match = re.search(r'<script id="outcrop-data" type="application/json">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def test_map_embeds_value_grids_coastline_graticule_and_readout(run, tmp_path):
    out = tmp_path / "map.html"
    assert _webmap(run, out, run.prepared) == 0
    data = _data(out.read_text())
    for overlay, path in zip(data["clusters"], run.cluster_rasters):
        with rasterio.open(path) as src:
            labels, nodata = src.read(1), src.nodata
        values = overlay["values"]
        grid = np.frombuffer(base64.b64decode(values["data"]), dtype="<u2").reshape(values["height"], values["width"])
        assert grid.shape == labels.shape
        assert (grid[labels != nodata] == labels[labels != nodata]).all()
        assert (grid[labels == nodata] == values["nodata"]).all()
    for overlay, path in zip(data["similarity"], run.similarity):
        with rasterio.open(path) as src:
            score = src.read(1).astype(np.float64)
        values = overlay["values"]
        lo, hi = values["lo"], values["hi"]
        q = np.frombuffer(base64.b64decode(values["data"]), dtype=np.uint8).reshape(score.shape)
        finite = np.isfinite(score)
        assert (q[~finite] == 255).all() and (q[finite] < 255).all()
        assert np.abs(lo + q[finite] / 254 * (hi - lo) - score[finite]).max() <= (hi - lo) / 254 / 2 + 1e-6
    assert data["graticule"]["lines"] and data["readout"]["nodes"] ** 2 * 3 == len(data["readout"]["vectors"])
    has_water = False
    for path in run.prepared:
        with rasterio.open(path) as src:
            has_water |= bool((src.read(src.count) == WATER).any())
    assert bool(data["coastline"]) == has_water
    assert _webmap(run, tmp_path / "bare.html", []) == 0
    assert _data((tmp_path / "bare.html").read_text())["coastline"] == []


def test_map_refuses_a_raster_that_is_not_a_prepared_scene(run, tmp_path, capsys):
    out = tmp_path / "map.html"
    assert _webmap(run, out, [run.quicklooks[0]]) == 2
    err = capsys.readouterr().err.strip()
    # a quicklook: RGB
    assert err == (f"outcrop webmap: error: {run.quicklooks[0]}: not a prepared scene "
                   "(band list tag does not match 3 bands)")
    assert not out.exists()
