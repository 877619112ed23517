"""The map's geographic helpers against pyproj: readout grid, graticule and coastline."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from outcrop.figures.map_geometry import (
    coastline,
    geographic_extent,
    graticule,
    interpolate_lonlat,
    nice_spacing,
    readout_grid,
)
from outcrop.raster.surfaces import CLOUD, NODATA, ROCK, WATER

# A polar stereographic extent with the South Pole inside it (so every longitude, the antimeridian
# included, passes through it), one on the Antarctic coast like the demo's, and a UTM zone's.
POLAR_POLE = ("EPSG:3031", (-400_000.0, -300_000.0, 350_000.0, 450_000.0))
POLAR_COAST = ("EPSG:3031", (2_300_000.0, -700_000.0, 2_650_000.0, -350_000.0))
UTM = ("EPSG:32633", (300_000.0, 5_500_000.0, 520_000.0, 5_700_000.0))
ANTIMERIDIAN = ("EPSG:3832", (3_190_000.0, -1_900_000.0, 3_490_000.0, -1_600_000.0))  # PDC Mercator, across 180°


def _angle_error(lon, lat, lon_ref, lat_ref):
    """Great-circle angle in degrees between two sets of points (longitude wraps, poles are fine)."""
    from outcrop.figures.map_geometry import unit_vectors

    dot = np.sum(unit_vectors(lon, lat) * unit_vectors(lon_ref, lat_ref), axis=-1)
    return np.degrees(np.arccos(np.clip(dot, -1.0, 1.0)))


@pytest.mark.parametrize("crs, box", [POLAR_POLE, POLAR_COAST, UTM, ANTIMERIDIAN])
def test_interpolated_readout_matches_pyproj(crs, box):
    grid = readout_grid(crs, box)
    rng = np.random.default_rng(0)
    x = rng.uniform(box[0], box[2], 500)
    y = rng.uniform(box[1], box[3], 500)
    lon, lat = interpolate_lonlat(grid, x, y)
    lon_ref, lat_ref = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    assert np.abs(lat - lat_ref).max() < 1e-3
    # Longitude itself only where it is defined well (a degree from the pole); position everywhere.
    away = np.abs(lat_ref) < 89.0
    dlon = (lon - lon_ref + 180.0) % 360.0 - 180.0
    assert np.abs(dlon[away]).max() < 1e-3
    assert _angle_error(lon, lat, lon_ref, lat_ref).max() < 1e-3


def test_readout_grid_rejects_an_empty_extent():
    with pytest.raises(ValueError):
        readout_grid("EPSG:3031", (0.0, 0.0, 0.0, 10.0))


def test_nice_spacing_puts_a_handful_of_lines_across():
    assert nice_spacing(0.5) == 0.1
    assert nice_spacing(3.0) == 0.5
    assert nice_spacing(15.0) == 2.0
    assert nice_spacing(360.0) == 30.0


def test_geographic_extent_of_a_pole_and_across_the_antimeridian():
    lon0, lon1, lat0, lat1 = geographic_extent(*POLAR_POLE)
    assert (lon0, lon1) == (-180.0, 180.0) and lat0 == -90.0
    lon0, lon1, _, _ = geographic_extent(*ANTIMERIDIAN)
    assert lon0 < 180.0 < lon1 and lon1 - lon0 < 10.0  # a few degrees across 180°, not 360


@pytest.mark.parametrize("crs, box", [POLAR_POLE, POLAR_COAST, UTM, ANTIMERIDIAN])
def test_graticule_lines_lie_on_their_latitude_or_longitude(crs, box):
    result = graticule(crs, box)
    lines = result["lines"]
    assert {line["kind"] for line in lines} == {"lat", "lon"}
    inverse = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    w, s, e, n = box
    for line in lines:
        pts = np.asarray(line["points"])
        y, x = pts[:, 0], pts[:, 1]
        assert (x >= w - 1).all() and (x <= e + 1).all() and (y >= s - 1).all() and (y <= n + 1).all()
        lon, lat = inverse.transform(x, y)
        if line["kind"] == "lat":
            assert np.abs(lat - line["value"]).max() < 1e-6
        else:
            # Off the meridian by less than 1e-6 degrees of arc (points are kept to the centimetre).
            dlon = (np.asarray(lon) - line["value"] + 180.0) % 360.0 - 180.0
            assert np.abs(dlon * np.cos(np.radians(lat))).max() < 1e-6
    # Values are multiples of the spacing, and each label names its line.
    for line in lines:
        step = result["lat_step"] if line["kind"] == "lat" else result["lon_step"]
        assert abs(line["value"] / step - round(line["value"] / step)) < 1e-6
        assert line["label"].endswith(("N", "S", "E", "W", "°"))


def test_polar_graticule_has_meridians_all_round():
    lons = {line["value"] for line in graticule(*POLAR_POLE)["lines"] if line["kind"] == "lon"}
    assert len(lons) == 12 and -180.0 in lons | {-v for v in lons}


def test_coastline_of_a_synthetic_mask_follows_the_water_edge_only():
    # 40 x 40 pixels of 30 m: water in the west half, rock in the east; the north quarter is
    # nodata and a cloud sits on the edge further south: neither gets a line.
    mask = np.full((40, 40), ROCK, dtype=np.uint8)
    mask[:, :20] = WATER
    mask[:10, :] = NODATA
    mask[30:35, 15:25] = CLOUD
    transform = Affine(30.0, 0.0, 1000.0, 0.0, -30.0, 5000.0)
    lines = coastline(mask, transform)
    assert lines
    pts = np.concatenate([np.asarray(line) for line in lines])
    y, x = pts[:, 0], pts[:, 1]
    edge = 1000.0 + 30.0 * 20  # the boundary between pixel centres 19.5 and 20.5
    assert np.abs(x - edge).max() <= 15.0 + 1e-6
    # Nothing in the nodata rows nor across the cloud.
    assert (y <= 5000.0 - 30.0 * 9.5 + 1e-6).all()
    assert not ((y < 5000.0 - 30.0 * 30.5) & (y > 5000.0 - 30.0 * 34.5)).any()
    # Simplified: a straight edge needs few vertices.
    assert sum(len(line) for line in lines) <= 8


def test_coastline_of_a_mask_without_water_is_empty():
    assert coastline(np.full((8, 8), ROCK, dtype=np.uint8), Affine(30.0, 0, 0, 0, -30.0, 0)) == []
