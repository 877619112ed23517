"""Outputs explain themselves: GeoPackage layers and fields carry descriptions that GDAL (and so
QGIS) reads, and docs/outputs.md lists every field the run writes with the same plain name."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import Point

from gdal_readback import ogr_fields
from outcrop.fields import FIELDS, LAYERS, field_info
from outcrop.io import write_geodataframe
from outcrop.search.analogues import RESULT_COLUMNS

DOC = (Path(__file__).resolve().parent.parent / "docs" / "outputs.md").read_text()


def test_geopackage_layer_and_fields_are_described(tmp_path):
    columns = {
        "id": [3],
        "scene": ["a"],
        "tile_id": [7],
        "k4": [2],
        "k12": [9],
        "h6": [1],
        "rock": [0.5],
        "custom": [1],
    }
    path = tmp_path / "labels.gpkg"
    write_geodataframe(path, gpd.GeoDataFrame(columns, geometry=[Point(0, 0)], crs=3031), layer="clusters")
    assert pyogrio.read_info(path)["layer_metadata"]["DESCRIPTION"] == LAYERS["clusters"]
    fields = ogr_fields(path, "clusters")
    assert fields["k4"][0] == "Cluster (k=4)" and "among 4 clusters" in fields["k4"][1]
    assert fields["h6"][0] == "Family (6 groups)"
    assert fields["id"][0] == "Index row" and fields["tile_id"][0] == "Tile in scene"
    assert fields["scene"][0] == "Scene id"
    # Every written field with an entry reaches GDAL with its plain name (GDAL drops an alias that
    # equals the field name but for case).
    assert all(fields[c][0] == field_info(c)[0] for c in columns if field_info(c) is not None)
    assert fields["custom"] == ("", "")  # a field without an entry is left unnamed, not mislabelled
    # The data is unchanged, and the file rewrites cleanly (the schema tables exist already).
    write_geodataframe(path, gpd.GeoDataFrame(columns, geometry=[Point(0, 0)], crs=3031), layer="clusters")
    assert gpd.read_file(path)["k12"].tolist() == [9]


@pytest.mark.parametrize("field", sorted(set(FIELDS) | set(RESULT_COLUMNS)))
def test_every_field_has_a_plain_name_in_docs(field):
    info = field_info(field)
    assert info is not None, f"{field}: no entry in outcrop.fields"
    assert f"| `{field}` | {info[0]} |" in DOC


def test_level_fields_are_documented_by_pattern():
    assert "| `kN` (e.g. `k12`) | Cluster (k=N) |" in DOC and "| `hN` (e.g. `h12`) | Family (N groups) |" in DOC
    assert field_info("k") is None and field_info("kx3") is None
