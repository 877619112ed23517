"""Maps one can place: graticule with latitude/longitude labels, north arrow, scale bar and CRS on
every map figure; cluster maps in a grid, not a strip; similarity drawn only over land."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rasterio.transform import from_origin
from shapely.geometry import box

from outcrop import OutcropError
from outcrop.figures.analogue_maps import land_cells, write_analogue_maps
from outcrop.figures.cluster_maps import write_cluster_map
from outcrop.figures.map_furniture import crs_label, furnish, nice_length, nice_step, north_angle
from outcrop.io import write_cog, write_prepared
from outcrop.raster.surfaces import ROCK, WATER

CRS = "EPSG:3031"
# A 15 km square of the demo's coast (x -1200 km, y +900 km): there north points up and to the left.
EXTENT = (-1_200_000.0, -1_184_640.0, 884_640.0, 900_000.0)


@pytest.mark.parametrize(
    "x, y, angle", [(0, 1e6, 0.0), (0, -1e6, 180.0), (1e6, 0, -90.0), (-1e6, 0, 90.0), (-1.2e6, 0.9e6, 53.13)]
)
def test_north_points_away_from_the_south_pole(x, y, angle):
    extent = (x - 100, x + 100, y - 100, y + 100)
    assert abs((north_angle(CRS, extent) - angle + 180) % 360 - 180) < 0.05


def test_nice_lengths_and_steps():
    assert nice_length(15_360) == 2000 and nice_length(400_000) == 100_000 and nice_length(30) == 5
    assert nice_step(0.2) == 0.05 and nice_step(40) == 10.0 and nice_step(360) == 90.0
    assert crs_label(CRS) == "EPSG:3031 (WGS 84 / Antarctic Polar Stereographic)"


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_furniture_labels_the_graticule_scale_north_and_crs():
    fig, ax = plt.subplots()
    furnish(ax, CRS, EXTENT)
    texts = _texts(ax)
    lats = [t for t in texts if t.endswith("°S")]
    lons = [t for t in texts if t.endswith(("°W", "°E"))]
    assert len(lats) >= 2 and len(lons) >= 2
    assert all(-77 < -float(t[:-2]) < -75 for t in lats)  # the demo coast lies near 76° S, 53° W
    assert all(52 < float(t[:-2]) < 54 for t in lons)
    assert "N" in texts and "2 km" in texts and crs_label(CRS) in texts
    assert ax.get_xticks().size == 0  # no raw projected metres on the axes
    plt.close(fig)


def test_graticule_across_the_antimeridian_and_around_the_pole():
    fig, ax = plt.subplots()
    furnish(ax, CRS, (-300_000.0, 300_000.0, -300_000.0, 300_000.0))  # the South Pole in the middle
    texts = _texts(ax)
    assert any(t.endswith("°S") for t in texts) and any("°" in t and t[-1] in "EW" for t in texts)
    plt.close(fig)
    fig, ax = plt.subplots()
    furnish(ax, CRS, (-10_000.0, 10_000.0, -1_310_000.0, -1_290_000.0))  # across 180°
    assert any(t in ("180°",) or t.endswith("°E") for t in _texts(ax))
    plt.close(fig)


def test_cluster_map_is_a_grid_of_legible_panels(tmp_path):
    names = ["k4", "k8", "k12", "h3", "h6"]
    labels = np.stack([np.arange(64 * 64).reshape(64, 64) % int(n[1:]) for n in names]).astype(np.uint8)
    colours = (np.random.default_rng(0).random((12, 4)) * 255).astype(np.uint8)
    colours[:, 3] = 255
    out = tmp_path / "a.png"
    write_cluster_map(out, "a", labels, from_origin(EXTENT[0], EXTENT[3], 240, 240), CRS, names, 255, colours)
    width, height = Image.open(out).size
    assert width / height < 2.5  # two rows of three, not one 5-panel strip
    assert width <= 3 * 7 * 110


def _scene_with_sea(tmp_path):
    """A 64 x 64 px prepared scene (30 m) whose left half is water and right half rock, and a
    similarity raster of 4 x 4 cells (480 m) over it, high everywhere."""
    mask = np.full((64, 64), ROCK, dtype=np.uint8)
    mask[:, :32] = WATER
    transform = from_origin(EXTENT[0], EXTENT[3], 30, 30)
    prepared = tmp_path / "prepared" / "a.tif"
    write_prepared(prepared, np.full((2, 64, 64), 0.2, np.float32), mask, CRS, transform, ["red", "nir"])
    similarity = tmp_path / "similarity" / "a.tif"
    write_cog(
        similarity,
        np.full((1, 4, 4), 0.9, np.float32),
        {"crs": CRS, "transform": from_origin(EXTENT[0], EXTENT[3], 480, 480), "nodata": float("nan")},
    )
    return prepared, similarity


def test_similarity_is_drawn_only_over_land(tmp_path):
    prepared, similarity = _scene_with_sea(tmp_path)
    land = land_cells(prepared, (4, 4), from_origin(EXTENT[0], EXTENT[3], 480, 480), CRS)
    assert land[:, 2:].all() and not land[:, :2].any()

    analogues = gpd.GeoDataFrame(
        {"rank": [1], "scene": ["a"]},
        crs=CRS,
        geometry=[box(EXTENT[0] + 1000, EXTENT[3] - 2000, EXTENT[0] + 1960, EXTENT[3] - 1040)],
    )
    analogues.to_file(tmp_path / "analogues.gpkg")
    pd.DataFrame({"name": ["d1"], "lon": [-53.1], "lat": [-76.35]}).to_csv(tmp_path / "deposits.csv", index=False)
    out = tmp_path / "maps"
    write_analogue_maps(
        [similarity],
        tmp_path / "analogues.gpkg",
        tmp_path / "deposits.csv",
        out,
        prepared_paths=[prepared],
        log=lambda *_: None,
    )
    png = np.asarray(Image.open(out / "a.png").convert("RGB")).astype(int)
    # One score everywhere: the foot of viridis (dark purple) over land; the sea half is drawn in the
    # pale background, as large as the land half.
    purple = np.abs(png - np.array([68, 1, 84])).sum(axis=-1) < 12
    pale = np.abs(png - np.array([0xDF, 0xE7, 0xEE])).sum(axis=-1) < 12
    assert purple.sum() > 50_000 and pale.sum() > 0.8 * purple.sum()
    with pytest.raises(OutcropError, match="2 prepared scenes given for 1 similarity rasters"):
        write_analogue_maps(
            [similarity],
            tmp_path / "analogues.gpkg",
            tmp_path / "deposits.csv",
            out,
            prepared_paths=[prepared, prepared],
            log=lambda *_: None,
        )
