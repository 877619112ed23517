"""Tests of outcrop.raster.aoi on vector files built in tmp_path."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import LineString, Point, Polygon

from outcrop import OutcropError
from outcrop.raster.aoi import aoi_geometry


def test_polygon_is_reprojected_to_the_run_crs(tmp_path):
    square = Polygon([(0, -70), (1, -70), (1, -71), (0, -71)])
    path = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[square], crs=4326).to_file(path)
    geom = aoi_geometry(path, "EPSG:3031")
    expect = gpd.GeoSeries([square], crs=4326).to_crs(3031).iloc[0]
    assert geom.geom_type == "Polygon"
    assert abs(geom.area - expect.area) / expect.area < 1e-9
    assert 2e9 < geom.area < 6e9  # about 38 km x 111 km


def test_coastline_becomes_a_strip_of_buffer_km(tmp_path):
    line = LineString([(-1_000_000, 500_000), (-990_000, 500_000)])  # 10 km in EPSG:3031
    path = tmp_path / "coast.geojson"
    gpd.GeoDataFrame(geometry=[line], crs=3031).to_file(path, driver="GeoJSON")
    geom = aoi_geometry(path, "EPSG:3031", buffer_km=2.0)
    # a 10 km line buffered by 2 km: 10 x 4 km rectangle + two half discs of radius 2 km
    assert abs(geom.area - (10_000 * 4_000 + 3.14159 * 2_000**2)) / geom.area < 0.01
    assert geom.contains(Point(-995_000, 501_900)) and not geom.contains(Point(-995_000, 502_100))
    with pytest.raises(OutcropError, match="give a positive buffer_km"):
        aoi_geometry(path, "EPSG:3031")


def test_shapefile_of_several_lines_is_one_union(tmp_path):
    lines = [LineString([(0, 0), (5000, 0)]), LineString([(0, 100), (5000, 100)])]
    path = tmp_path / "coast.shp"
    gpd.GeoDataFrame(geometry=lines, crs=3031).to_file(path)
    geom = aoi_geometry(path, "EPSG:3031", buffer_km=1.0)
    assert geom.geom_type == "Polygon"  # the two strips overlap into one
    assert geom.area < 2 * (5000 * 2000 + 3.15e6)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_aoi_errors(tmp_path):
    with pytest.raises(OutcropError, match="not found"):
        aoi_geometry(tmp_path / "missing.gpkg", "EPSG:3031")
    # a Shapefile without its .prj has no CRS
    shp = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame(geometry=[Polygon([(0, 0), (1, 0), (1, 1)])]).to_file(shp)
    with pytest.raises(OutcropError, match=r"nocrs\.shp: AOI file has no CRS"):
        aoi_geometry(shp, "EPSG:3031")
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=3031)).to_file(empty)
    with pytest.raises(OutcropError, match="holds no geometry"):
        aoi_geometry(empty, "EPSG:3031")
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage")
    with pytest.raises(OutcropError, match=r"junk\.gpkg: cannot read AOI file"):
        aoi_geometry(junk, "EPSG:3031")
    with pytest.raises(OutcropError, match="geographic"):
        aoi_geometry(shp, "EPSG:4326")


def test_an_aoi_with_more_vertices_than_the_limit_is_refused_naming_the_setting(tmp_path, monkeypatch):
    """The union and the buffer of a huge coastline would run for hours: its vertices are counted first."""
    import numpy as np

    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    ring = Polygon(np.c_[-1_000_000 + 5000 * np.cos(angles), 500_000 + 5000 * np.sin(angles)])
    path = tmp_path / "coast.gpkg"
    gpd.GeoDataFrame(geometry=[ring], crs=3031).to_file(path)
    monkeypatch.setenv("OUTCROP_LIMITS", '{"aoi_vertices": 401}')
    assert aoi_geometry(path, "EPSG:3031").area > 0
    monkeypatch.setenv("OUTCROP_LIMITS", '{"aoi_vertices": 400}')
    with pytest.raises(OutcropError) as err:
        aoi_geometry(path, "EPSG:3031")
    assert str(err.value) == (
        f"{path}: 401 vertices in its geometries, and limits.aoi_vertices in the config (or "
        "OUTCROP_LIMITS='{\"aoi_vertices\": N}' for a command run by hand) allows at most 400; "
        "check the file, or raise the limit"
    )
