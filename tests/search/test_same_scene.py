"""Same-scene re-identification: the reprojected copy is turned 30 degrees from any run grid, the
package's warp is the one the real-scene benchmark and test use, and a prepared window's copy keeps
its ground and surface classes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from outcrop.search.same_scene import ROTATION_DEG, grid_angle, reprojected, reprojected_copy, rotated_crs
from shared_data import DATA

PARANA = DATA / "landsat8" / "LC08_L1TP_224078_20200518_parana"


@pytest.mark.parametrize(
    "crs, x, y",
    [
        ("EPSG:3031", -1_200_000.0, 900_000.0),
        ("EPSG:32621", 300_000.0, -2_600_000.0),
        ("EPSG:3413", -200_000.0, -2_500_000.0),
        ("EPSG:32633", 500_000.0, 10_000.0),
    ],
)
def test_the_copy_is_turned_thirty_degrees_from_the_run_grid_whatever_the_run_crs(crs, x, y):
    """Polar stereographic grids are turned from true north by the longitude; UTM grids hardly: the
    copy's turn is measured from the run grid, so it is 30 degrees on each (no d4 symmetry undoes it)."""
    turned = rotated_crs(crs, x, y)
    assert grid_angle(crs, turned, x, y) == pytest.approx(ROTATION_DEG, abs=1e-3)
    assert grid_angle(crs, turned, x + 3000.0, y - 3000.0) == pytest.approx(ROTATION_DEG, abs=0.5)


def test_the_package_warp_is_the_one_the_real_scene_test_and_benchmark_use():
    """benchmarks/reidentification_real.py calls this warp; the real-scene test keeps its own copy:
    both give the same pixels, transform and validity on a window of the Paraná scene."""
    from tests.learning.test_reidentification import read_window
    from tests.learning.test_reidentification import reprojected as test_copy

    image, transform, crs = read_window((700, 700, 96, 96))
    warped = reprojected(image, transform, crs, "EPSG:3031")
    expected, expected_transform, expected_valid = test_copy(image, transform, crs)
    np.testing.assert_array_equal(warped.image, expected)
    assert warped.transform == expected_transform
    np.testing.assert_array_equal(warped.valid, expected_valid)
    assert 0.3 < warped.valid.mean() < 0.9  # turned by about 53 degrees: corners outside the source


def test_a_prepared_window_copy_keeps_its_ground_and_classes(tmp_path):
    from outcrop.io import read_prepared, write_prepared

    rng = np.random.default_rng(0)
    refl = np.stack([np.full((128, 128), 0.1 + 0.1 * b, dtype=np.float32) for b in range(3)])
    refl[:, :, 64:] += 0.3  # a bright east half
    refl += rng.normal(0, 0.005, refl.shape).astype(np.float32)
    mask = np.ones((128, 128), dtype=np.uint8)
    mask[:, 64:] = 2  # snow/ice on the bright half
    path = tmp_path / "p.tif"
    write_prepared(
        path, refl, mask, "EPSG:3031", from_origin(-1_200_000.0, 900_000.0, 30.0, 30.0), ["blue", "green", "red"]
    )
    copy = tmp_path / "copy.tif"
    crs = reprojected_copy(path, Window(16, 16, 96, 96), copy)
    got, classes, profile, bands = read_prepared(copy)
    assert bands == ["blue", "green", "red"] and "omerc" in str(profile["crs"].to_proj4())
    inside = classes > 0
    # The same ground: both halves' classes in equal shares, their reflectance as before.
    assert abs((classes[inside] == 1).mean() - 0.5) < 0.05
    dark = inside & (classes == 1)
    np.testing.assert_allclose(np.nanmedian(got[:, dark], axis=1), [0.1, 0.2, 0.3], atol=0.01)
    with rasterio.open(copy) as src:  # the file's CRS is the turned one
        assert grid_angle("EPSG:3031", src.crs, -1_200_000.0 + 64 * 30.0, 900_000.0 - 64 * 30.0) == pytest.approx(
            ROTATION_DEG, abs=1e-3
        )
    assert "omerc" in crs
