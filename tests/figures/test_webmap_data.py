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
    return main(
        [
            "webmap",
            "--quicklooks",
            *map(str, run.quicklooks),
            "--clusters",
            *map(str, run.cluster_rasters),
            "--similarity",
            *map(str, run.similarity),
            "--analogues",
            str(run.analogues),
            "--deposits",
            str(run.deposits),
            "--prepared",
            *map(str, prepared),
            "--out",
            str(out),
        ]
    )


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
    assert err == (
        f"outcrop webmap: error: {run.quicklooks[0]}: not a prepared scene (band list tag does not match 3 bands)"
    )
    assert not out.exists()


def test_map_draws_a_unit_map_as_a_layer_with_names_and_a_click_grid(run, tmp_path):
    """Polygons named by a field, drawn over each scene's extent: the overlay's click grid holds the
    index of the unit name under each cell (65535: no unit), and the legend names every unit shown."""
    import geopandas as gpd
    from shapely.geometry import box

    with rasterio.open(run.quicklooks[0]) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    middle = (left + right) / 2
    polygons = gpd.GeoDataFrame(
        {"lith": ["<b>granite</b>", "schist"]},
        geometry=[box(left, bottom, middle, top), box(middle, bottom, right, (bottom + top) / 2)],
        crs=crs,
    ).to_crs("EPSG:4326")
    polygons.to_file(tmp_path / "geology.geojson")
    out = tmp_path / "map.html"
    assert (
        main(
            [
                "webmap",
                "--quicklooks",
                *map(str, run.quicklooks),
                "--clusters",
                *map(str, run.cluster_rasters),
                "--units",
                str(tmp_path / "geology.geojson"),
                "--unit-field",
                "lith",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    page = out.read_text()
    assert "<b>granite</b>" not in page  # a name is text, escaped in the data
    data = _data(page)
    names = list(data["unit_legend"])
    assert sorted(names) == ["<b>granite</b>", "schist"] and data["layers"]["units"] == "Geological map units"
    overlay = data["units"][0]
    values = overlay["values"]
    grid = np.frombuffer(base64.b64decode(values["data"]), dtype="<u2").reshape(values["height"], values["width"])
    h, w = grid.shape
    assert names[grid[h // 2, w // 4]] == "<b>granite</b>"
    assert names[grid[3 * h // 4, 3 * w // 4]] == "schist"
    assert grid[h // 4, 3 * w // 4] == values["nodata"] == 65535  # the map says nothing there
