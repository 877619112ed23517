"""Tests of the prepare stage (outcrop.scenes) on synthetic files and on the real scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from outcrop import OutcropError
from outcrop.io import read_prepared
from outcrop.scenes import prepare_scene, snap_bounds
from outcrop.surfaces import CLOUD, NODATA, ROCK, SNOW_ICE, WATER

OLI_BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
C2L2_SCALE, C2L2_OFFSET = 0.0000275, -0.2

# Reflectance spectra (coastal … swir2) of the demo's surfaces.
SPECTRA = {
    "water": [0.08, 0.07, 0.06, 0.04, 0.02, 0.01, 0.01],
    "rock": [0.10, 0.11, 0.13, 0.16, 0.20, 0.26, 0.22],
    "snow": [0.85, 0.85, 0.83, 0.80, 0.70, 0.05, 0.04],
    "cloud": [0.60, 0.58, 0.57, 0.55, 0.55, 0.45, 0.35],
}


def demo_reflectance(height: int = 60, width: int = 90) -> np.ndarray:
    """Water | rock | snow in vertical thirds, a cloud square on the rock, a nodata corner."""
    refl = np.empty((7, height, width), dtype=np.float64)
    third = width // 3
    for i, name in enumerate(["water", "rock", "snow"]):
        refl[:, :, i * third:(i + 1) * third] = np.array(SPECTRA[name])[:, None, None]
    refl[:, 10:20, 40:50] = np.array(SPECTRA["cloud"])[:, None, None]
    refl[:, :5, :5] = np.nan
    return refl


def write_demo_scene(path: Path, refl: np.ndarray, origin: tuple[float, float] = (-1_200_000.0, 900_000.0),
                     res: float = 30.0, crs: str = "EPSG:3031", descriptions=OLI_BANDS) -> Path:
    """The demo's scene file: uint16 DN = (reflectance + 0.2) / 0.0000275, nodata 0, described bands."""
    dn = np.round((refl - C2L2_OFFSET) / C2L2_SCALE)
    dn = np.where(np.isfinite(dn), dn, 0).astype(np.uint16)
    profile = dict(driver="GTiff", width=refl.shape[2], height=refl.shape[1], count=refl.shape[0],
                   dtype="uint16", crs=crs, transform=Affine(res, 0, origin[0], 0, -res, origin[1]),
                   nodata=0, tiled=True, blockxsize=32, blockysize=32)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn)
        if descriptions:
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
    return path


def quiet(_: str) -> None:
    pass


# --- the demo path ------------------------------------------------------------------------


def test_demo_scene_keeps_values_grid_and_classes(tmp_path):
    refl = demo_reflectance()
    src = write_demo_scene(tmp_path / "demo.tif", refl)
    out = tmp_path / "prepared" / "demo.tif"
    lines: list[str] = []
    prepare_scene(str(src), "landsat-c2l2", out, scene_id="demo", bands=OLI_BANDS, log=lines.append)

    got, mask, profile, bands = read_prepared(out)
    assert bands == OLI_BANDS
    assert got.shape == refl.shape
    # already on the run grid: same transform, no resampling, values within the uint16 encodings
    assert profile["transform"] == Affine(30.0, 0, -1_200_000.0, 0, -30.0, 900_000.0)
    assert profile["crs"].to_epsg() == 3031
    finite = np.isfinite(refl)
    assert np.array_equal(np.isfinite(got), finite)
    assert np.abs(got[finite] - refl[finite]).max() < 1e-4
    # surfaces: water, rock, snow thirds; the cloud square from the spectral test; nodata corner
    assert (mask[30:, :30] == WATER).all()
    assert (mask[30:, 30:60] == ROCK).all()
    assert (mask[30:, 60:] == SNOW_ICE).all()
    assert (mask[10:20, 40:50] == CLOUD).all()
    assert (mask[:5, :5] == NODATA).all()
    assert (mask[5:, 5:] != NODATA).all()
    with rasterio.open(out) as ds:
        assert ds.tags()["scene"] == "demo" and ds.tags()["sensor"] == "landsat-c2l2"
        assert ds.descriptions[-1] == "mask"
    assert any("blue" in line for line in lines)


def test_band_order_and_subset_follow_the_request(tmp_path):
    refl = demo_reflectance()
    src = write_demo_scene(tmp_path / "demo.tif", refl)
    out = tmp_path / "sub.tif"
    want = ["nir", "green", "blue"]
    prepare_scene(str(src), "landsat-c2l2", out, scene_id="s", bands=want, log=quiet)
    got, mask, _, bands = read_prepared(out)
    assert bands == want
    for i, name in enumerate(want):
        j = OLI_BANDS.index(name)
        assert np.nanmax(np.abs(got[i] - refl[j])) < 1e-4
    # without swir1 the spectral water test still works; snow is not separated from rock
    assert (mask[30:, :30] == WATER).all()


def test_off_grid_scene_is_snapped_to_multiples_of_the_resolution(tmp_path):
    refl = demo_reflectance()
    src = write_demo_scene(tmp_path / "off.tif", refl, origin=(-1_200_010.0, 900_017.0))
    out = tmp_path / "off_prep.tif"
    prepare_scene(str(src), "landsat-c2l2", out, scene_id="off", bands=OLI_BANDS, log=quiet)
    got, mask, profile, _ = read_prepared(out)
    t = profile["transform"]
    assert t.a == 30.0 and t.e == -30.0
    assert t.c % 30.0 == 0 and t.f % 30.0 == 0
    # the grid covers the source footprint
    with rasterio.open(src) as ds:
        b = ds.bounds
    assert t.c <= b.left and t.f >= b.top
    assert t.c + profile["width"] * 30 >= b.right and t.f - profile["height"] * 30 <= b.bottom
    # bilinear resampling inside a uniform region returns that region's reflectance
    green = OLI_BANDS.index("green")
    assert abs(got[green, 40, 75] - SPECTRA["snow"][2]) < 1e-3
    assert (mask[40, 75] == SNOW_ICE) and (mask[40, 10] == WATER)


def test_coarser_resolution_averages(tmp_path):
    refl = demo_reflectance()
    src = write_demo_scene(tmp_path / "demo.tif", refl, origin=(-900_000.0, 900_000.0))
    out = tmp_path / "coarse.tif"
    prepare_scene(str(src), "landsat-c2l2", out, scene_id="c", bands=["blue", "green", "nir"],
                  resolution=90.0, log=quiet)
    got, _, profile, _ = read_prepared(out)
    assert profile["transform"].a == 90.0
    assert got.shape[1:] == (20, 30)
    # 90 m cells are 3x3 source pixels: uniform cells keep their value, mixed ones average
    blue = 0
    assert abs(got[blue, 15, 5] - SPECTRA["water"][1]) < 1e-3
    cell = got[blue, 4, 14]  # covers rows 12-14, cols 42-44: all cloud
    assert abs(cell - SPECTRA["cloud"][1]) < 1e-3
    mixed = got[blue, 3, 13]  # rows 9-11, cols 39-41: 4 of 9 pixels cloud
    expect = (4 * SPECTRA["cloud"][1] + 5 * SPECTRA["rock"][1]) / 9
    assert abs(mixed - expect) < 2e-3


def test_generic_geotiff_with_declared_bands_and_scale(tmp_path):
    refl = demo_reflectance()
    src = write_demo_scene(tmp_path / "plain.tif", refl, descriptions=None)
    out = tmp_path / "g.tif"
    prepare_scene(str(src), "geotiff", out, scene_id="g", bands=["green", "nir", "swir1"],
                  declared_bands=OLI_BANDS, scale=C2L2_SCALE, offset=C2L2_OFFSET, log=quiet)
    got, mask, _, bands = read_prepared(out)
    assert bands == ["green", "nir", "swir1"]
    assert np.nanmax(np.abs(got[1] - refl[4])) < 1e-4
    assert (mask[30:, 60:] == SNOW_ICE).all()


def test_generic_float_geotiff_is_taken_as_reflectance(tmp_path):
    refl = demo_reflectance().astype(np.float32)
    path = tmp_path / "float.tif"
    profile = dict(driver="GTiff", width=90, height=60, count=7, dtype="float32", crs="EPSG:3031",
                   transform=Affine(30.0, 0, 0.0, 0, -30.0, 0.0), nodata=np.nan)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(refl)
        for i, name in enumerate(OLI_BANDS, start=1):
            dst.set_band_description(i, name)
    out = tmp_path / "f.tif"
    prepare_scene(str(path), "geotiff", out, scene_id="f", bands=OLI_BANDS, log=quiet)
    got, mask, _, _ = read_prepared(out)
    assert np.nanmax(np.abs(got - refl)) < 1e-4
    assert (mask[:5, :5] == NODATA).all() and (mask[30:, :30] == WATER).all()


# --- errors -------------------------------------------------------------------------------


def test_missing_band_names_file_and_band_and_writes_nothing(tmp_path):
    src = write_demo_scene(tmp_path / "demo.tif", demo_reflectance())
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match=r"demo\.tif.*'cirrus'"):
        prepare_scene(str(src), "landsat-c2l2", out, scene_id="x", bands=["blue", "cirrus"], log=quiet)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sensor": "landsat-99"}, "unknown sensor 'landsat-99'"),
        ({"bands": ["blue", "ultraviolet"]}, "unknown band name.*'ultraviolet'"),
        ({"bands": []}, "no bands"),
        ({"bands": ["tir1"]}, "thermal"),
        ({"declared_bands": ["blue", "green"]}, "2 declared band names for a file of 7 bands"),
        ({"crs": "EPSG:999999"}, "unknown run CRS"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, pattern):
    src = write_demo_scene(tmp_path / "demo.tif", demo_reflectance())
    out = tmp_path / "x.tif"
    args = {"sensor": "landsat-c2l2", "bands": OLI_BANDS} | kwargs
    sensor = args.pop("sensor")
    with pytest.raises(OutcropError, match=pattern):
        prepare_scene(str(src), sensor, out, scene_id="x", log=quiet, **args)
    assert not out.exists()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_missing_crs_is_refused(tmp_path):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16") as dst:
        dst.write(np.full((1, 8, 8), 9000, np.uint16))
        dst.set_band_description(1, "blue")
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match=r"nocrs\.tif.*no CRS"):
        prepare_scene(str(path), "landsat-c2l2", out, scene_id="x", bands=["blue"], log=quiet)
    assert not out.exists()


def test_empty_scene_is_refused(tmp_path):
    refl = np.full((7, 20, 20), np.nan)
    src = write_demo_scene(tmp_path / "empty.tif", refl)
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match=r"empty\.tif: empty scene"):
        prepare_scene(str(src), "landsat-c2l2", out, scene_id="x", bands=OLI_BANDS, log=quiet)
    assert not out.exists()


def test_truncated_file_is_refused(tmp_path):
    src = write_demo_scene(tmp_path / "demo.tif", demo_reflectance())
    data = src.read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match=r"cut\.tif"):
        prepare_scene(str(bad), "landsat-c2l2", out, scene_id="x", bands=OLI_BANDS, log=quiet)
    assert not out.exists()
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(OutcropError, match=r"junk\.tif: cannot read raster"):
        prepare_scene(str(junk), "landsat-c2l2", out, scene_id="x", bands=OLI_BANDS, log=quiet)


def test_missing_source_and_undescribed_bands(tmp_path):
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match="no such file or folder"):
        prepare_scene(str(tmp_path / "nope.tif"), "geotiff", out, scene_id="x", bands=["blue"], log=quiet)
    src = write_demo_scene(tmp_path / "plain.tif", demo_reflectance(), descriptions=None)
    with pytest.raises(OutcropError, match="no descriptions"):
        prepare_scene(str(src), "geotiff", out, scene_id="x", bands=["blue"], log=quiet)


def test_snap_bounds_grows_outwards_to_grid_edges():
    assert snap_bounds((10.0, -50.0, 70.0, 31.0), 30.0) == (0.0, -60.0, 90.0, 60.0)
    assert snap_bounds((30.0, 60.0, 90.0, 120.0), 30.0) == (30.0, 60.0, 90.0, 120.0)
