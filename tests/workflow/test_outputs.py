"""The GIS files of a finished tiny run: GeoPackages with a CRS and typed columns, valid COGs.

Every ``.gpkg`` and every ``.tif`` the run wrote is checked, so a new output is covered the day it
appears. COG validity is rio-cogeo's validator (GDAL's layout rules: tiled, overviews after the
full-resolution image, header ghost area), not just "GDAL can open it".
"""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
from pyproj import CRS
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from outcrop.io import write_cog

SCENES = ["demo_1", "demo_2", "demo_3"]

# Columns people filter and join on, with the type a GIS must see (pyogrio's numpy dtypes).
GPKG_COLUMNS = {
    "clusters/labels.gpkg": {
        "id": "int64",
        "scene": "object",
        "tile_id": "int64",
        "k3": "int64",
        "k5": "int64",
        "h2": "int64",
        "rock": "float64",
        "snow_ice": "float64",
        "water": "float64",
    },
    "analogues/analogues.gpkg": {
        "rank": "int64",
        "score": "float64",
        "scene": "object",
        "tile_id": "int64",
        "nearest_positive": "object",
        "distance_km": "float64",
        "lon": "float64",
        "lat": "float64",
    },
    "demo/deposits.gpkg": {"name": "object"},
}


def _all(demo_run, pattern):
    return sorted((demo_run / "results").rglob(pattern))


def test_every_geopackage_has_a_crs_and_typed_columns(demo_run):
    results = demo_run / "results"
    found = {p.relative_to(results).as_posix() for p in _all(demo_run, "*.gpkg")}
    assert set(GPKG_COLUMNS) <= found
    for path in _all(demo_run, "*.gpkg"):
        info = pyogrio.read_info(path)
        assert info["crs"], f"{path}: no CRS"
        assert CRS.from_user_input(info["crs"]).to_epsg() in (3031, 4326), path
        assert info["features"] > 0, path
        assert info["geometry_type"] in ("Point", "Polygon", "MultiPolygon"), path
        dtypes = dict(zip(info["fields"], info["dtypes"]))
        for column, dtype in GPKG_COLUMNS.get(path.relative_to(results).as_posix(), {}).items():
            assert dtypes.get(column) == dtype, (path.name, column, dtypes.get(column))


def test_geoparquet_tables_declare_their_crs(demo_run):
    import json

    import pyarrow.parquet as pq

    tables = _all(demo_run, "*.parquet")
    assert len(tables) >= len(SCENES) + 2
    for path in tables:
        meta = json.loads(pq.read_schema(path).metadata[b"geo"])
        crs = meta["columns"][meta["primary_column"]]["crs"]
        assert CRS.from_json_dict(crs).to_epsg() == 3031, path


def test_every_raster_is_a_valid_cog_with_nodata(demo_run):
    rasters = _all(demo_run, "*.tif")
    kinds = {p.parent.relative_to(demo_run / "results").as_posix() for p in rasters}
    assert {"prepared", "quicklooks", "clusters/rasters", "analogues/similarity"} <= kinds
    for path in rasters:
        valid, errors, warnings = cog_validate(path, quiet=True)
        assert valid and errors == [], (path, errors)
        with rasterio.open(path) as src:
            assert src.crs is not None and src.crs.to_epsg() == 3031, path
            assert src.nodata is not None, f"{path}: no nodata"
            if max(src.width, src.height) > 512:
                assert src.overviews(1), f"{path}: a large raster without overviews"


def test_label_rasters_carry_a_colour_table(demo_run):
    for scene in SCENES:
        with rasterio.open(demo_run / "results" / "clusters" / "rasters" / f"{scene}.tif") as src:
            labels = src.read(1)
            colours = src.colormap(1)
            assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
            for value in np.unique(labels[labels != src.nodata]):
                assert colours[int(value)][3] == 255  # every label present has an opaque colour
            assert colours[int(src.nodata)][3] == 0


def test_quicklooks_are_rgb_on_the_scene_grid(demo_run):
    for scene in SCENES:
        with (
            rasterio.open(demo_run / "results" / "quicklooks" / f"{scene}.tif") as q,
            rasterio.open(demo_run / "results" / "prepared" / f"{scene}.tif") as p,
        ):
            assert q.count == 3 and q.dtypes == ("uint8",) * 3 and q.nodata == 0
            assert q.bounds == p.bounds
            rgb = q.read()
            mask = p.read(p.count)
            # Nodata exactly where the scene has none; colour (not one flat value) elsewhere.
            assert ((rgb == 0).all(axis=0) == (mask == 0)).mean() > 0.99
            assert rgb[:, mask != 0].std() > 10


@pytest.mark.parametrize("shape, dtype, nodata", [((3, 1500, 1300), "uint8", 0), ((1, 700, 900), "float32", np.nan)])
def test_write_cog_makes_valid_cogs_with_overviews(tmp_path, shape, dtype, nodata):
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 200 + 1).astype(dtype)
    path = tmp_path / "x.tif"
    write_cog(
        path,
        data,
        {"crs": "EPSG:3031", "transform": from_origin(1e6, -1e6, 30, 30), "nodata": nodata},
        resampling="average",
    )
    valid, errors, _ = cog_validate(path, quiet=True)
    assert valid and errors == []
    with rasterio.open(path) as src:
        assert src.overviews(1)[:2] == [2, 4]
        assert src.profile["blockxsize"] == 256 and src.profile["tiled"]
        np.testing.assert_array_equal(src.read(), data)


def test_demo_grid_is_chosen_as_antarctic_polar_stereographic_at_30_m(demo_run):
    """grid: auto on the demo's synthetic Antarctic coast gives the grid it always had, and copies."""
    import json

    grid = json.loads((demo_run / "results" / "grid.json").read_text())
    assert (grid["crs"], grid["resolution"], grid["warnings"]) == ("EPSG:3031", 30.0, [])
    assert all(scene["copied"] for scene in grid["scenes"].values())
