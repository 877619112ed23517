"""The run grid: auto CRS and resolution from the scenes' headers, one pixel alignment per run,
scenes already on it copied rather than resampled, and warnings for scenes the grid distorts."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from outcrop import OutcropError
from outcrop.io import decode_reflectance, encode_reflectance, read_prepared
from outcrop.raster.grid_choice import choose_grid, grid_lines, load_grid, write_grid, zone_crs
from outcrop.raster.scenes import prepare_scene, read_scene_header
from outcrop.raster.tile_store import open_tiles
from outcrop.raster.tiles import tile_scene
from shared_data import SHARED_DATA

SHARED = SHARED_DATA
PARANA = SHARED / "landsat8" / "LC08_L1TP_224078_20200518_parana" if SHARED else None
RGB = ["blue", "green", "red"]


def _synthetic(
    path: Path, left: float, top: float, field: np.ndarray, crs: str = "EPSG:32621", res: float = 30.0
) -> None:
    """A 3-band uint16 GeoTIFF cut from ``field`` (the same ground for every scene cut from it)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=field.shape[2],
        height=field.shape[1],
        count=3,
        dtype="uint16",
        crs=crs,
        transform=from_origin(left, top, res, res),
        nodata=0,
    ) as dst:
        dst.write(field)


def test_zones_utm_and_polar():
    assert zone_crs(-57.0, -25.0) == "EPSG:32721"
    assert zone_crs(-77.0, 37.5) == "EPSG:32618"
    assert zone_crs(-64.0, -65.0) == "EPSG:3031"
    assert zone_crs(-45.0, 70.0) == "EPSG:3413"


@pytest.mark.skipif(PARANA is None or not PARANA.is_dir(), reason="needs ../shared/data")
def test_auto_grid_is_the_scenes_own_utm_zone_resolution_and_pixel_corners():
    header = read_scene_header("parana", str(PARANA), "landsat-l1", RGB)
    choice = choose_grid([header], "auto", "auto", log=lambda _: None)
    # Landsat ships southern scenes in the northern zone code: its own CRS, not a reprojection
    assert (choice["crs"], choice["resolution"], choice["origin"]) == ("EPSG:32621", 30.0, [15.0, 15.0])
    assert choice["scenes"]["parana"]["copied"] and choice["warnings"] == []


@pytest.mark.skipif(PARANA is None or not PARANA.is_dir(), reason="needs ../shared/data")
def test_a_scene_on_the_run_grid_comes_through_bit_identical(tmp_path):
    """CRS and resolution of the scene: a copy, not a half-pixel shift and an interpolation."""
    header = read_scene_header("parana", str(PARANA), "landsat-l1", RGB)
    choice = choose_grid([header], "EPSG:32621", 30, log=lambda _: None)
    grid = load_grid(_written(tmp_path, choice))
    out = tmp_path / "p.tif"
    prepare_scene(
        str(PARANA),
        "landsat-l1",
        out,
        scene_id="parana",
        bands=RGB,
        crs=grid.crs,
        resolution=grid.resolution,
        origin=grid.origin,
        scale=2e-5,
        offset=-0.1,
        log=lambda _: None,
    )
    reflectance, _, profile, _ = read_prepared(out)
    red = sorted(PARANA.glob("*_B4.TIF"))[0]
    with rasterio.open(red) as src:
        dn = src.read(1)
        assert (profile["width"], profile["height"]) == (src.width, src.height)  # 2041 x 1860, not 2042 x 1861
        assert profile["transform"].almost_equals(src.transform)
    expected = decode_reflectance(encode_reflectance(dn.astype(np.float32) * np.float32(2e-5) + np.float32(-0.1)))
    valid = dn != 0
    np.testing.assert_array_equal(reflectance[2][valid], expected[valid])
    assert np.isnan(reflectance[2][~valid]).all()


def _written(tmp_path: Path, choice: dict) -> Path:
    path = tmp_path / "grid.json"
    write_grid(path, choice)
    return path


def test_overlapping_scenes_on_one_utm_pixel_grid_keep_aligned_tiles(tmp_path):
    """Two scenes cut from one ground with Landsat's half-pixel corners: their tiles coincide where
    they overlap, pixel for pixel, and neither is resampled."""
    rng = np.random.default_rng(3)
    ground = rng.integers(1000, 30000, (3, 300, 300)).astype(np.uint16)
    left, top = 600015.0, -2999985.0  # corners at 15 m phase on a 30 m grid (Landsat: 27 S in zone 21 N)
    _synthetic(tmp_path / "a.tif", left, top, ground[:, :200, :200])
    _synthetic(tmp_path / "b.tif", left + 70 * 30, top - 45 * 30, ground[:, 45:245, 70:270])  # odd and even shifts
    headers = [read_scene_header(s, str(tmp_path / f"{s}.tif"), "geotiff", RGB, RGB) for s in ("a", "b")]
    grid = load_grid(_written(tmp_path, choose_grid(headers, "auto", "auto", log=lambda _: None)))
    assert (grid.crs, grid.resolution, grid.origin) == ("EPSG:32621", 30.0, (15.0, 15.0))
    tiles = {}
    for s in ("a", "b"):
        prepare_scene(
            str(tmp_path / f"{s}.tif"),
            "geotiff",
            tmp_path / f"p{s}.tif",
            scene_id=s,
            bands=RGB,
            declared_bands=RGB,
            crs=grid.crs,
            resolution=grid.resolution,
            origin=grid.origin,
            scale=1e-5,
            offset=0.0,
            collar=False,
            log=lambda _: None,
        )
        with rasterio.open(tmp_path / f"p{s}.tif") as src:
            assert (src.width, src.height) == (200, 200)  # copied: no extra row or column
        tile_scene(
            tmp_path / f"p{s}.tif",
            tmp_path / f"{s}.npy",
            tmp_path / f"{s}.parquet",
            scene_id=s,
            size=16,
            stride=8,
            min_valid=0.5,
            log=lambda _: None,
        )
        table = gpd.read_parquet(tmp_path / f"{s}.parquet")
        arrays = open_tiles(tmp_path / f"{s}.npy")[:]
        tiles[s] = {geom.wkb: arrays[i] for i, geom in enumerate(table.geometry)}
    shared = set(tiles["a"]) & set(tiles["b"])
    assert len(shared) > 50, "tiles of overlapping scenes do not line up"
    for key in shared:
        np.testing.assert_array_equal(tiles["a"][key], tiles["b"][key])


def test_a_grid_that_distorts_a_scene_is_a_warning_naming_it(tmp_path):
    field = np.full((3, 100, 100), 5000, dtype=np.uint16)
    _synthetic(tmp_path / "peru.tif", 300000.0, 8800000.0, field, crs="EPSG:32718")  # about 11 S, 77 W
    header = read_scene_header("peru", str(tmp_path / "peru.tif"), "geotiff", RGB, RGB)
    lines: list[str] = []
    choice = choose_grid([header], "EPSG:3031", 10, log=lines.append)
    assert choice["scenes"]["peru"]["area_scale"] > 2
    assert any(w.startswith("peru: the grid EPSG:3031 distorts this scene") for w in choice["warnings"])
    assert any(w.startswith("peru: each of its pixels becomes") for w in choice["warnings"])
    assert any("warning: peru:" in line for line in lines)
    assert any("warning: peru" in line for line in grid_lines(_written(tmp_path, choice)))
    fitting = choose_grid([header], "auto", "auto", log=lambda _: None)
    assert fitting["crs"] == "EPSG:32718" and fitting["warnings"] == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "cannot read the run grid"),
        ('{"crs": "EPSG:32621"}', "not a run grid"),
        ('{"crs": "EPSG:32621", "resolution": -30, "origin": [0, 0]}', "resolution must be positive"),
        ('{"crs": "nowhere", "resolution": 30, "origin": [0, 0]}', "unknown run CRS 'nowhere'"),
        ('{"crs": "EPSG:4326", "resolution": 30, "origin": [0, 0]}', "crs: 'EPSG:4326' is a geographic CRS"),
    ],
)
def test_a_broken_grid_file_is_one_clear_error(tmp_path, text, problem):
    path = tmp_path / "grid.json"
    path.write_text(text)
    with pytest.raises(OutcropError, match=problem) as err:
        load_grid(path)
    assert str(path) in str(err.value)


def test_grid_command_refuses_a_bad_scene_list_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop.cli",
            "grid",
            "--scenes-json",
            "[]",
            "--bands",
            "red",
            "--out",
            str(tmp_path / "grid.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("outcrop grid: error: grid: --scenes-json must be")
    assert not (tmp_path / "grid.json").exists()


def test_grid_command_writes_the_choice(tmp_path):
    field = np.full((3, 50, 50), 5000, dtype=np.uint16)
    _synthetic(tmp_path / "s.tif", 500000.0, 4150000.0, field, crs="EPSG:32618")
    scenes = json.dumps(
        [{"scene": "s", "source": str(tmp_path / "s.tif"), "sensor": "geotiff", "bands": "blue,green,red"}]
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop.cli",
            "grid",
            "--scenes-json",
            scenes,
            "--bands",
            "red",
            "--out",
            str(tmp_path / "grid.json"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads((tmp_path / "grid.json").read_text())
    # the origin: 500000 and 4150000 modulo 30
    assert (data["crs"], data["resolution"], data["origin"]) == ("EPSG:32618", 30.0, [20.0, 10.0])


def test_info_and_summary_show_the_grid_and_its_warnings(tmp_path):
    from outcrop.figures.report import run_info, write_summary
    from outcrop.layout import Layout

    field = np.full((3, 100, 100), 5000, dtype=np.uint16)
    _synthetic(tmp_path / "peru.tif", 300000.0, 8800000.0, field, crs="EPSG:32718")
    header = read_scene_header("peru", str(tmp_path / "peru.tif"), "geotiff", RGB, RGB)
    results = tmp_path / "results"
    results.mkdir()
    write_grid(results / "grid.json", choose_grid([header], "EPSG:3031", 30, log=lambda _: None))
    info = run_info(results)
    assert "grid: EPSG:3031 at 30.0 m" in info and "crs: given in the config" in info
    assert "warning: peru: the grid EPSG:3031 distorts this scene" in info
    run = Layout(results)
    write_summary(
        ["peru"],
        tmp_path / "summary.html",
        tile_tables=[Path(run.tile_table("peru"))],
        prepared=[Path(run.prepared("peru"))],
        training_curve=Path(run.training_curve_png),
        dendrogram=Path(run.dendrogram),
        cluster_maps=[Path(run.cluster_map("peru"))],
        index_info=Path(run.index_info),
        grid=Path(run.grid),
        log=lambda _: None,
    )
    page = (tmp_path / "summary.html").read_text()
    assert "<h2>Grid</h2>" in page and "<strong>warning: peru: the grid EPSG:3031 distorts" in page


# --- near and beyond the ±60° switch ---------------------------------------------------------------


def _utm_scene(name: str, lon: float, lat: float, pixel: float = 30.0, size: int = 7000):
    """The header of a north-up Landsat-sized scene centred at (lon, lat) in its own WGS 84 UTM zone."""
    from affine import Affine
    from pyproj import Transformer
    from rasterio.crs import CRS

    from outcrop.raster.grid_choice import BandHeader, SceneHeader

    epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    half = size * pixel / 2
    t = Affine(pixel, 0, round((x - half) / pixel) * pixel + 15, 0, -pixel, round((y + half) / pixel) * pixel + 15)
    return SceneHeader(name, (BandHeader(f"{name}_B4.TIF", CRS.from_epsg(epsg), t, size, size),)), f"EPSG:{epsg}"


@pytest.mark.parametrize("lat", [61.0, 70.0, -61.0, -79.0])
def test_a_scene_in_its_own_utm_zone_keeps_it_beyond_60_degrees(lat):
    header, own = _utm_scene("glacier", -147.0, lat)
    choice = choose_grid([header], "auto", "auto", log=lambda _: None)
    # its own zone, its own pixels: copied, not resampled onto a 31 m polar grid
    assert (choice["crs"], choice["resolution"]) == (own, 30.0)
    assert choice["scenes"]["glacier"]["copied"] and choice["warnings"] == []
    polar = "EPSG:3031" if lat < 0 else "EPSG:3413"
    assert choice["crs_reason"].endswith("kept beyond ±60° (see polar)")
    # the numbers behind it: both grids' area scale factors against the limit
    note = choice["polar_reason"]
    assert f"keeps its own UTM zone {own}, within the area-scale limit 1.1" in note
    utm_scale = float(note.split("area scale ")[1].split(" ")[0])
    polar_scale = float(note.split(", ")[-1].split(f" on {polar}")[0])
    assert abs(utm_scale - 1) < 0.002 and polar_scale != utm_scale


def test_a_scene_below_60_degrees_is_unchanged_and_beyond_utm_goes_polar():
    header, own = _utm_scene("fjord", 21.0, 59.0)
    choice = choose_grid([header], "auto", "auto", log=lambda _: None)
    assert choice["crs"] == own and "polar_reason" not in choice
    header, own = _utm_scene("ice", 21.0, 85.0)
    choice = choose_grid([header], "auto", "auto", log=lambda _: None)
    assert choice["crs"] == "EPSG:3413"
    assert "beyond UTM's domain (80° S to 84° N), so EPSG:3413" in choice["polar_reason"]


def test_a_polar_coast_across_utm_zones_gets_the_polar_grid_and_says_why():
    a, zone_a = _utm_scene("a", -147.0, 65.0)
    b, zone_b = _utm_scene("b", -135.0, 65.0)
    choice = choose_grid([a, b], "auto", "auto", log=lambda _: None)
    assert zone_a != zone_b and choice["crs"] == "EPSG:3413"
    assert choice["crs_reason"].startswith("auto: EPSG:3413, polar stereographic: 2 scene(s) lie beyond ±60°")
    assert f"the UTM zone {zone_a} kept beyond ±60° must cover every scene there" in choice["polar_reason"]
    # the resolution says where its number comes from: 30 m there, a little more on the polar grid
    assert "30 m in its own CRS" in choice["resolution_reason"]
    assert f"rounded to {choice['resolution']:g} m" in choice["resolution_reason"]


def test_a_grid_turning_a_scene_warns_of_its_empty_block(tmp_path):
    # zone 6 at 60 N on EPSG:3413: turned by 12 degrees, 29 % of its block outside the scene
    header, _ = _utm_scene("turned", -147.0, 60.0)
    choice = choose_grid([header], "EPSG:3413", 30, log=lambda _: None)
    d = choice["scenes"]["turned"]
    assert 0.25 < d["outside"] < 0.33 and 11 < abs(d["turned_deg"]) < 13
    (warning,) = choice["warnings"]
    assert warning.startswith(
        "turned: 29% of its block on the grid EPSG:3413 lies outside the scene (limit 15%, the grid turns it by 12°)"
    )
    assert f"  warning: {warning}" in grid_lines(_written(tmp_path, choice))


@pytest.mark.skipif(SHARED is None, reason="needs ../shared/data")
def test_greenland_at_61_north_keeps_its_utm_zone_and_info_says_why(tmp_path):
    from outcrop.figures.report import run_info

    folder = SHARED / "landsat8" / "LC80030172015001LGN00_greenland"
    header = read_scene_header("greenland", str(folder), "landsat-c2l1", ["blue", "green", "red", "nir"])
    choice = choose_grid([header], "auto", "auto", log=lambda _: None)
    assert (choice["crs"], choice["resolution"]) == ("EPSG:32622", 30.0)
    assert choice["scenes"]["greenland"]["copied"] and choice["warnings"] == []
    results = tmp_path / "results"
    results.mkdir()
    write_grid(results / "grid.json", choice)
    info = run_info(results)
    assert "  polar: greenland at 61.6° N: keeps its own UTM zone EPSG:32622, within the area-scale limit 1.1" in info
    # the summary states the same switch, with its numbers
    from outcrop.figures.report import write_summary
    from outcrop.layout import Layout

    run = Layout(results)
    write_summary(
        ["greenland"],
        tmp_path / "summary.html",
        tile_tables=[Path(run.tile_table("greenland"))],
        prepared=[Path(run.prepared("greenland"))],
        training_curve=Path(run.training_curve_png),
        dendrogram=Path(run.dendrogram),
        cluster_maps=[Path(run.cluster_map("greenland"))],
        index_info=Path(run.index_info),
        grid=Path(run.grid),
        log=lambda _: None,
    )
    page = (tmp_path / "summary.html").read_text()
    polar = next(line for line in info.splitlines() if line.startswith("  polar: "))
    assert "area scale" in polar and "on EPSG:3413" in polar
    assert f"<li>{html.escape(polar.strip())}</li>" in page
