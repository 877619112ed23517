"""The run grid: auto CRS and resolution from the scenes' headers, one pixel alignment per run,
scenes already on it copied rather than resampled, and warnings for scenes the grid distorts."""

from __future__ import annotations

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
from outcrop.raster.tiles import tile_scene

SHARED = next((p for p in (Path(__file__).resolve().parents[3] / "shared" / "data", Path("/work/shared/data"))
               if p.is_dir()), None)
PARANA = SHARED / "landsat8" / "LC08_L1TP_224078_20200518_parana" if SHARED else None
RGB = ["blue", "green", "red"]


def _synthetic(path: Path, left: float, top: float, field: np.ndarray, crs: str = "EPSG:32621",
               res: float = 30.0) -> None:
    """A 3-band uint16 GeoTIFF cut from ``field`` (the same ground for every scene cut from it)."""
    with rasterio.open(path, "w", driver="GTiff", width=field.shape[2], height=field.shape[1], count=3,
                       dtype="uint16", crs=crs, transform=from_origin(left, top, res, res), nodata=0) as dst:
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
    prepare_scene(str(PARANA), "landsat-l1", out, scene_id="parana", bands=RGB, crs=grid.crs,
                  resolution=grid.resolution, origin=grid.origin, scale=2e-5, offset=-0.1, log=lambda _: None)
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
        prepare_scene(str(tmp_path / f"{s}.tif"), "geotiff", tmp_path / f"p{s}.tif", scene_id=s, bands=RGB,
                      declared_bands=RGB, crs=grid.crs, resolution=grid.resolution, origin=grid.origin,
                      scale=1e-5, offset=0.0, collar=False, log=lambda _: None)
        with rasterio.open(tmp_path / f"p{s}.tif") as src:
            assert (src.width, src.height) == (200, 200)  # copied: no extra row or column
        tile_scene(tmp_path / f"p{s}.tif", tmp_path / f"{s}.npy", tmp_path / f"{s}.parquet", scene_id=s, size=16,
                   stride=8, min_valid=0.5, log=lambda _: None)
        table = gpd.read_parquet(tmp_path / f"{s}.parquet")
        arrays = np.load(tmp_path / f"{s}.npy")
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


@pytest.mark.parametrize("text, problem", [
    ("{not json", "cannot read the run grid"),
    ('{"crs": "EPSG:32621"}', "not a run grid"),
    ('{"crs": "EPSG:32621", "resolution": -30, "origin": [0, 0]}', "resolution must be positive"),
    ('{"crs": "nowhere", "resolution": 30, "origin": [0, 0]}', "unknown run CRS 'nowhere'"),
    ('{"crs": "EPSG:4326", "resolution": 30, "origin": [0, 0]}', "crs: 'EPSG:4326' is a geographic CRS"),
])
def test_a_broken_grid_file_is_one_clear_error(tmp_path, text, problem):
    path = tmp_path / "grid.json"
    path.write_text(text)
    with pytest.raises(OutcropError, match=problem) as err:
        load_grid(path)
    assert str(path) in str(err.value)


def test_grid_command_refuses_a_bad_scene_list_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "outcrop.cli", "grid", "--scenes-json", "[]", "--bands", "red",
                           "--out", str(tmp_path / "grid.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("outcrop grid: error: grid: --scenes-json must be")
    assert not (tmp_path / "grid.json").exists()


def test_grid_command_writes_the_choice(tmp_path):
    field = np.full((3, 50, 50), 5000, dtype=np.uint16)
    _synthetic(tmp_path / "s.tif", 500000.0, 4150000.0, field, crs="EPSG:32618")
    scenes = json.dumps([{"scene": "s", "source": str(tmp_path / "s.tif"), "sensor": "geotiff",
                          "bands": "blue,green,red"}])
    subprocess.run([sys.executable, "-m", "outcrop.cli", "grid", "--scenes-json", scenes, "--bands", "red",
                    "--out", str(tmp_path / "grid.json")], check=True, capture_output=True, text=True)
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
    write_summary(["peru"], tmp_path / "summary.html", tile_tables=[Path(run.tile_table("peru"))],
                  prepared=[Path(run.prepared("peru"))], training_curve=Path(run.training_curve_png),
                  dendrogram=Path(run.dendrogram), cluster_maps=[Path(run.cluster_map("peru"))],
                  index_info=Path(run.index_info), grid=Path(run.grid), log=lambda _: None)
    page = (tmp_path / "summary.html").read_text()
    assert "<h2>Grid</h2>" in page and "<strong>warning: peru: the grid EPSG:3031 distorts" in page
