"""Tests of the prepare stage (outcrop.raster.scenes) on synthetic files and on the real scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from gdal_readback import gdal_bands
from outcrop import OutcropError
from outcrop.io import PREPARED_OFFSET, PREPARED_SCALE, read_prepared
from outcrop.raster.scenes import prepare_scene, snap_bounds
from outcrop.raster.surfaces import CLOUD, NODATA, ROCK, SNOW_ICE, UNKNOWN, VEGETATION, WATER
from shared_data import DATA

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
        refl[:, :, i * third : (i + 1) * third] = np.array(SPECTRA[name])[:, None, None]
    refl[:, 10:20, 40:50] = np.array(SPECTRA["cloud"])[:, None, None]
    refl[:, :5, :5] = np.nan
    return refl


def write_demo_scene(
    path: Path,
    refl: np.ndarray,
    origin: tuple[float, float] = (-1_200_000.0, 900_000.0),
    res: float = 30.0,
    crs: str = "EPSG:3031",
    descriptions=OLI_BANDS,
) -> Path:
    """The demo's scene file: uint16 DN = (reflectance + 0.2) / 0.0000275, nodata 0, described bands."""
    dn = np.round((refl - C2L2_OFFSET) / C2L2_SCALE)
    dn = np.where(np.isfinite(dn), dn, 0).astype(np.uint16)
    profile = dict(
        driver="GTiff",
        width=refl.shape[2],
        height=refl.shape[1],
        count=refl.shape[0],
        dtype="uint16",
        crs=crs,
        transform=Affine(res, 0, origin[0], 0, -res, origin[1]),
        nodata=0,
        tiled=True,
        blockxsize=32,
        blockysize=32,
    )
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


def test_prepared_scene_explains_itself_to_gdal(tmp_path):
    """A GIS shows reflectance, not raw counts, and names the mask classes (as `gdalinfo` reads them)."""
    src = write_demo_scene(tmp_path / "demo.tif", demo_reflectance())
    out = tmp_path / "prepared" / "demo.tif"
    prepare_scene(str(src), "landsat-c2l2", out, scene_id="demo", bands=OLI_BANDS, log=lambda _: None)
    bands = gdal_bands(out)
    assert [b["description"] for b in bands] == [*OLI_BANDS, "mask"]
    for b in bands[:-1]:
        assert (b["scale"], b["offset"]) == (PREPARED_SCALE, PREPARED_OFFSET)
    assert (bands[-1]["scale"], bands[-1]["offset"]) == (1.0, 0.0)
    # values keep their meaning across versions: a later class takes the next free value
    classes = ["nodata", "rock", "snow/ice", "water", "cloud", "unknown", "vegetation"]
    assert bands[-1]["categories"][:7] == classes
    assert [r[1] for r in bands[-1]["rat_rows"]] == classes
    assert bands[-1]["rat_columns"][1] == ("class", 2)  # GFU_Name: QGIS labels the legend with it
    # Scale and offset reproduce the decoded reflectance.
    with rasterio.open(out) as ds:
        dn = ds.read(1).astype(np.float64)
    got, *_ = read_prepared(out)
    valid = dn > 0
    np.testing.assert_allclose(dn[valid] * bands[0]["scale"] + bands[0]["offset"], got[0][valid], atol=1e-6)
    valid_cog, errors, _ = cog_validate(out, strict=True, quiet=True)
    assert valid_cog and not errors


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
    prepare_scene(
        str(src), "landsat-c2l2", out, scene_id="off", bands=OLI_BANDS, crs="EPSG:3031", resolution=30.0, log=quiet
    )
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
    prepare_scene(
        str(src), "landsat-c2l2", out, scene_id="c", bands=["blue", "green", "nir"], resolution=90.0, log=quiet
    )
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
    prepare_scene(
        str(src),
        "geotiff",
        out,
        scene_id="g",
        bands=["green", "nir", "swir1"],
        declared_bands=OLI_BANDS,
        scale=C2L2_SCALE,
        offset=C2L2_OFFSET,
        log=quiet,
    )
    got, mask, _, bands = read_prepared(out)
    assert bands == ["green", "nir", "swir1"]
    assert np.nanmax(np.abs(got[1] - refl[4])) < 1e-4
    assert (mask[30:, 60:] == SNOW_ICE).all()


def test_generic_float_geotiff_is_taken_as_reflectance(tmp_path):
    refl = demo_reflectance().astype(np.float32)
    path = tmp_path / "float.tif"
    profile = dict(
        driver="GTiff",
        width=90,
        height=60,
        count=7,
        dtype="float32",
        crs="EPSG:3031",
        transform=Affine(30.0, 0, 0.0, 0, -30.0, 0.0),
        nodata=np.nan,
    )
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
        ({"crs": "EPSG:999999"}, "run CRS: 'EPSG:999999' is not a coordinate reference system"),
        ({"crs": "EPSG:4326", "resolution": 30}, "run CRS: 'EPSG:4326' is a geographic CRS with axes in degree"),
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


# --- product folders (synthetic layouts) --------------------------------------------------


def _write_band(
    path: Path,
    data: np.ndarray,
    res: float = 30.0,
    origin=(300_000.0, 4_000_020.0),
    crs: str = "EPSG:32616",
    nodata=None,
) -> None:
    profile = dict(
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=Affine(res, 0, origin[0], 0, -res, origin[1]),
        nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])


def test_level1_folder_with_mtl_applies_rescaling_and_sun_elevation(tmp_path):
    folder = tmp_path / "LC09_L1TP_001002_20230105_20230106_02_T1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    dn = {b: rng.integers(7000, 20000, (40, 50)).astype(np.uint16) for b in (2, 3, 4, 5)}
    for b, arr in dn.items():
        arr[:3] = 0  # collar
        _write_band(folder / f"{folder.name}_B{b}.TIF", arr)
    mtl = [
        "GROUP = LANDSAT_METADATA_FILE",
        "  GROUP = IMAGE_ATTRIBUTES",
        "    SUN_ELEVATION = 30.0",
        "  END_GROUP = IMAGE_ATTRIBUTES",
        "  GROUP = LEVEL1_RADIOMETRIC_RESCALING",
    ]
    mtl += [f"    REFLECTANCE_MULT_BAND_{b} = {2.0e-5 * (1 + b / 100):.6E}" for b in (2, 3, 4, 5)]
    mtl += [f"    REFLECTANCE_ADD_BAND_{b} = -0.100000" for b in (2, 3, 4, 5)]
    mtl += ["  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING", "END_GROUP = LANDSAT_METADATA_FILE", "END"]
    (folder / f"{folder.name}_MTL.txt").write_text("\n".join(mtl) + "\n")
    out = tmp_path / "l1.tif"
    prepare_scene(
        str(folder),
        "landsat-c2l1",
        out,
        scene_id="l1",
        bands=["blue", "green", "red", "nir"],
        crs="EPSG:32616",
        log=quiet,
    )
    got, mask, profile, _ = read_prepared(out)
    assert profile["transform"] == Affine(30, 0, 300_000, 0, -30, 4_000_020)
    for i, b in enumerate((2, 3, 4, 5)):
        expect = (2.0e-5 * (1 + b / 100) * dn[b][3:].astype(np.float64) - 0.1) / np.sin(np.radians(30.0))
        assert np.abs(got[i, 3:] - expect).max() < 1.5e-4
    assert np.isnan(got[:, :3]).all() and (mask[:3] == NODATA).all()


def test_level2_folder_masks_qa_pixel_cloud_bits(tmp_path):
    folder = tmp_path / "LC08_L2SP_001002_20230105_20230110_02_T1"
    folder.mkdir()
    refl = demo_reflectance(40, 60)[:, :, :]
    refl[:, :5, :5] = SPECTRA["rock"][0]  # no nodata corner here: fill comes from QA_PIXEL
    dn = np.round((refl - C2L2_OFFSET) / C2L2_SCALE).astype(np.uint16)
    for b in range(1, 8):
        _write_band(folder / f"{folder.name}_SR_B{b}.TIF", dn[b - 1])
    qa = np.full((40, 60), 1 << 6, np.uint16)  # clear
    qa[0:4, :] = 1  # fill
    qa[10:14, 0:10] |= 1 << 3  # cloud
    qa[20:24, 0:10] |= 1 << 1  # dilated cloud
    qa[30:34, 0:10] |= 1 << 2  # cirrus
    qa[30:34, 40:50] |= 1 << 4  # shadow only: not cloud
    _write_band(folder / f"{folder.name}_QA_PIXEL.TIF", qa)
    _write_band(folder / f"{folder.name}_ST_B10.TIF", dn[0])  # thermal: ignored
    out = tmp_path / "l2.tif"
    prepare_scene(str(folder), "landsat-c2l2", out, scene_id="l2", bands=OLI_BANDS, crs="EPSG:32616", log=quiet)
    got, mask, _, _ = read_prepared(out)
    assert (mask[0:4] == NODATA).all() and np.isnan(got[:, 0:4]).all()
    for rows in (slice(10, 14), slice(20, 24), slice(30, 34)):
        assert (mask[rows, 0:10] == CLOUD).all()
    assert (mask[30:34, 40:50] == SNOW_ICE).all()
    assert (mask[5:10, 0:20] == WATER).all()
    assert np.nanmax(np.abs(got[:, 4:] - refl[:, 4:])) < 1e-4


def test_sentinel2_l2a_folder_uses_finest_band_and_scl(tmp_path):
    safe = tmp_path / "S2B_MSIL2A_20230101T000000_N0509_R001_T01ABC_20230101T000000.SAFE"
    granule = safe / "GRANULE" / "X" / "IMG_DATA"
    r10, r20 = granule / "R10m", granule / "R20m"
    r10.mkdir(parents=True)
    r20.mkdir(parents=True)
    origin = (600_000.0, 1_000_020.0)
    green = np.full((60, 60), 1000 + 900, np.uint16)  # 0.09 reflectance with the -0.1 offset
    nir = np.full((60, 60), 1000 + 3000, np.uint16)
    _write_band(r10 / "T01ABC_20230101T000000_B03_10m.tif", green, 10, origin)
    _write_band(r10 / "T01ABC_20230101T000000_B08_10m.tif", nir, 10, origin)
    _write_band(r20 / "T01ABC_20230101T000000_B03_20m.tif", np.full((30, 30), 9999, np.uint16), 20, origin)
    scl = np.full((30, 30), 4, np.uint8)
    scl[0:10] = 6  # water
    scl[10:15] = 9  # cloud high probability
    scl[15:20] = 11  # snow
    scl[20:23] = 5  # not vegetated
    scl[25:] = 0  # no data
    _write_band(r20 / "T01ABC_20230101T000000_SCL_20m.tif", scl, 20, origin)
    out = tmp_path / "s2.tif"
    prepare_scene(
        str(tmp_path),
        "sentinel2-l2a",
        out,
        scene_id="s2",
        bands=["green", "nir"],
        crs="EPSG:32616",
        resolution=20.0,
        log=quiet,
    )
    got, mask, _, _ = read_prepared(out)
    assert abs(got[0, 0, 0] - 0.09) < 1e-4 and abs(got[1, 0, 0] - 0.30) < 1e-4  # the 10 m B03, offset -0.1
    assert (mask[0:10] == WATER).all() and (mask[10:15] == CLOUD).all()
    # without red the bands cannot test vegetation; SCL's own vegetation (4) and bare ground (5) say it
    assert (mask[15:20] == SNOW_ICE).all() and (mask[20:23] == ROCK).all() and (mask[23:25] == VEGETATION).all()
    assert (mask[25:] == NODATA).all() and np.isnan(got[:, 25:]).all()


def test_folder_errors_name_folder_and_band(tmp_path):
    folder = tmp_path / "LC08_L1TP_001002_20230105_20230106_02_T1"
    folder.mkdir()
    _write_band(folder / "x_B2.TIF", np.full((20, 20), 9000, np.uint16))
    _write_band(folder / "x_B3.TIF", np.full((20, 21), 9000, np.uint16))
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match=r"_T1: band 'red' \(B4\) is missing"):
        prepare_scene(str(folder), "landsat-l1", out, scene_id="x", bands=["blue", "red"], log=quiet)
    with pytest.raises(OutcropError, match=r"_T1: bands of mismatched extent or size: x_B2.TIF .* x_B3.TIF"):
        prepare_scene(str(folder), "landsat-l1", out, scene_id="x", bands=["blue", "green"], log=quiet)
    with pytest.raises(OutcropError, match="sensor landsat-c2l2 has no band 'pan'"):
        prepare_scene(str(folder), "landsat-c2l2", out, scene_id="x", bands=["pan"], log=quiet)
    assert not out.exists()


def test_quality_bit_layouts():
    from outcrop.raster.sensors import bqa_layout, decode_quality

    c1 = np.array([1, 0b0000_0000_0001_0000, 0b0000_0000_0110_0000, 0], np.uint16)  # fill, cloud, conf only
    q = decode_quality("BQA", c1)
    assert bqa_layout(c1) == "collection1"
    assert q.fill.tolist() == [True, False, False, False] and q.cloud.tolist() == [False, True, False, False]
    pre = np.array([20480, 61440, 28672, 36864, 20512], np.uint16)  # clear, cloud high, cirrus high, cloud medium
    q = decode_quality("BQA", pre)
    assert bqa_layout(pre) == "pre-collection"
    assert q.cloud.tolist() == [False, True, True, False, False]


# --- the real scenes under shared/data ----------------------------------------------------

real = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data not present")


def _fractions(mask: np.ndarray) -> np.ndarray:
    return np.bincount(mask.ravel(), minlength=7) / mask.size


def _window_of(profile: dict, src_path: Path, rows: slice, cols: slice) -> tuple[slice, slice]:
    """The prepared-grid window covering source pixels ``rows`` x ``cols`` (same CRS)."""
    with rasterio.open(src_path) as ds:
        x0, y0 = ds.transform @ (cols.start, rows.start)
        x1, y1 = ds.transform @ (cols.stop, rows.stop)
    inv = ~profile["transform"]
    c0, r0 = inv @ (x0, y0)
    c1, r1 = inv @ (x1, y1)
    return slice(int(np.ceil(r0)), int(r1)), slice(int(np.ceil(c0)), int(c1))


@real
def test_real_greenland_water_and_snow_without_swir(tmp_path):
    folder = DATA / "landsat8" / "LC80030172015001LGN00_greenland"
    out = tmp_path / "greenland.tif"
    prepare_scene(
        str(folder),
        "landsat-l1",
        out,
        scene_id="greenland",
        bands=["blue", "green", "red", "nir"],
        crs="EPSG:32622",
        resolution=120.0,
        log=quiet,
    )
    got, mask, profile, _ = read_prepared(out)
    with rasterio.open(out) as ds:
        assert "modelled sun elevation 4.8" in ds.tags()["radiometry"]  # Jan 1st at 61.6 N
    band = folder / "LC80030172015001LGN00_B2.tiff"
    fjord = _window_of(profile, band, slice(670, 720), slice(0, 150))
    inland = _window_of(profile, band, slice(300, 500), slice(500, 900))
    assert _fractions(mask[fjord])[WATER] > 0.9
    assert _fractions(mask[inland])[SNOW_ICE] > 0.75
    whole = _fractions(mask)
    assert whole[SNOW_ICE] > 0.6 and 0.02 < whole[WATER] < 0.15 and whole[NODATA] < 0.01


@real
def test_real_gulfcoast_clouds_come_from_bqa(tmp_path):
    from outcrop.raster.sensors import decode_quality

    folder = DATA / "landsat8" / "l8_gulfcoast_cloudy"
    out = tmp_path / "gulf.tif"
    prepare_scene(
        str(folder), "landsat-l1", out, scene_id="gulf", bands=OLI_BANDS, crs="EPSG:32616", resolution=30.0, log=quiet
    )
    got, mask, profile, _ = read_prepared(out)
    with rasterio.open(folder / "l8_BQA.tif") as ds:
        qa = ds.read(1)
        expect = decode_quality("BQA", qa).cloud
    # grid shifted by half a pixel from the UTM product grid: nearest neighbour keeps the fraction
    assert abs(_fractions(mask)[CLOUD] - expect.mean()) < 0.01
    assert 0.25 < expect.mean() < 0.45  # the cloud band across the middle of the scene
    band = folder / "l8_B2.tif"
    cloudy = _window_of(profile, band, slice(250, 420), slice(0, 200))
    clear = _window_of(profile, band, slice(520, 600), slice(0, 600))
    assert _fractions(mask[cloudy])[CLOUD] > 0.8
    assert _fractions(mask[clear])[CLOUD] < 0.05
    assert _fractions(mask)[NODATA] < 0.01


@real
def test_real_parana_nodata_edge_and_footprint_in_3031(tmp_path):
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    folder = DATA / "landsat8" / "LC08_L1TP_224078_20200518_parana"
    out = tmp_path / "parana.tif"
    prepare_scene(
        str(folder),
        "landsat-l1",
        out,
        scene_id="parana",
        bands=["blue", "green", "red"],
        crs="EPSG:32621",
        resolution=30.0,
        log=quiet,
    )
    got, mask, _, _ = read_prepared(out)
    band = next(folder.glob("*_B2.TIF"))
    with rasterio.open(band) as ds:
        src_valid = ds.read(1) != 0
        src_transform, src_crs = ds.transform, ds.crs
    assert abs(_fractions(mask)[NODATA] - (1 - src_valid.mean())) < 0.01
    assert np.isnan(got[:, mask == NODATA]).all() and np.isfinite(got[:, mask != NODATA]).all()

    out3031 = tmp_path / "parana3031.tif"
    prepare_scene(
        str(folder),
        "landsat-l1",
        out3031,
        scene_id="parana",
        bands=["blue", "green", "red"],
        crs="EPSG:3031",
        resolution=240.0,
        log=quiet,
    )
    _, mask3031, profile, _ = read_prepared(out3031)
    assert profile["crs"].to_epsg() == 3031
    assert profile["transform"].c % 240 == 0 and profile["transform"].f % 240 == 0

    def footprint(valid, transform):
        polys = [shape(g) for g, v in shapes(valid.astype(np.uint8), mask=valid, transform=transform) if v]
        return unary_union(polys)

    src_poly = (
        gpd.GeoSeries([footprint(src_valid[::8, ::8], src_transform @ Affine.scale(8))], crs=src_crs)
        .to_crs(3031)
        .iloc[0]
    )
    dst_poly = footprint(mask3031 != NODATA, profile["transform"])
    assert abs(dst_poly.area - src_poly.area) / src_poly.area < 0.03
    assert src_poly.symmetric_difference(dst_poly).area / src_poly.area < 0.06


@real
def test_real_sentinel2_mixed_resolutions_on_one_grid(tmp_path):
    folder = DATA / "sentinel2" / "s2_virginia"
    out = tmp_path / "s2.tif"
    lines: list[str] = []
    bands = ["coastal", "blue", "green", "rededge1", "nir", "swir1"]
    prepare_scene(
        str(folder),
        "sentinel2-l1c",
        out,
        scene_id="s2",
        bands=bands,
        crs="EPSG:32618",
        resolution=60.0,
        log=lines.append,
    )
    # a pre-04.00 product without metadata: its visible values say it has no offset
    assert any("so no offset (baseline before 04.00)" in line for line in lines)
    assert not any("warning" in line and "offset" in line for line in lines)
    prepare_scene(
        str(folder),
        "sentinel2-l1c",
        out,
        scene_id="s2",
        bands=bands,
        crs="EPSG:32618",
        resolution=60.0,
        offset=0.0,
        log=quiet,
    )
    got, mask, profile, _ = read_prepared(out)
    t = profile["transform"]
    # every band fills the interior of the one grid
    assert np.isfinite(got[:, 2:-2, 2:-2]).all()
    # the 60 m band lies on the grid: copied exactly
    with rasterio.open(folder / "s2_B01.jp2") as ds:
        b01 = ds.read(1)
        r0, c0 = (~t @ (ds.transform.c, ds.transform.f))[::-1]
    r0, c0 = int(round(r0)), int(round(c0))
    assert np.allclose(got[0, r0 + 5, c0 + 5], b01[5, 5] * 1e-4, atol=1e-4)
    # the 10 m band is averaged over the 6x6 pixels of each 60 m cell
    with rasterio.open(folder / "s2_B02.jp2") as ds:
        row, col = 100, 120
        x, y = t @ (col, row)
        sr, sc = ds.index(x + 1, y - 1)
        block = ds.read(1)[sr : sr + 6, sc : sc + 6].astype(np.float64)
    assert abs(got[1, row, col] - block.mean() * 1e-4) < 2e-4
    frac = _fractions(mask)
    # bay and ocean; fields, forest and villages: ground of unknown kind, since without the red band
    # vegetation cannot be told from rock
    assert frac[WATER] > 0.3 and frac[UNKNOWN] > 0.3 and frac[ROCK] == 0.0


@real
def test_real_landsat7_files_through_generic_geotiff(tmp_path):
    olinda = DATA / "landsat7" / "L7_ETMs_olinda.tif"
    out = tmp_path / "olinda.tif"
    etm = ["blue", "green", "red", "nir", "swir1", "swir2"]
    prepare_scene(
        str(olinda),
        "geotiff",
        out,
        scene_id="olinda",
        bands=etm,
        declared_bands=etm,
        crs="EPSG:31985",
        resolution=28.5,
        log=quiet,
    )
    got, mask, profile, _ = read_prepared(out)
    # the percentile rule: dark objects near 0, the brightest 0.1 % of values at 0.9 and above
    assert got.shape[0] == 6 and np.nanpercentile(got, 99) < 0.9 and np.nanpercentile(got, 1) > -0.005
    frac = _fractions(mask)
    assert frac[WATER] > 0.05 and frac[ROCK] > 0.5 and frac[NODATA] < 0.02  # sea, land

    bahamas = DATA / "landsat7" / "RGB.byte_bahamas.tif"
    out = tmp_path / "bahamas.tif"
    prepare_scene(
        str(bahamas),
        "geotiff",
        out,
        scene_id="bahamas",
        bands=["blue", "green", "red"],
        declared_bands=["red", "green", "blue"],
        crs="EPSG:32618",
        resolution=300.0,
        log=quiet,
    )
    got, mask, _, bands = read_prepared(out)
    with rasterio.open(bahamas) as ds:
        collar = (ds.read(1) == 0).mean()
    assert bands == ["blue", "green", "red"]
    assert abs(_fractions(mask)[NODATA] - collar) < 0.02
    assert set(np.unique(mask)) == {NODATA, UNKNOWN}  # no NIR: water and snow cannot be told from rock


# --- remote COGs --------------------------------------------------------------------------


@pytest.fixture
def scenes_http_server(tmp_path):
    """A local HTTP server with byte-range support over ``tmp_path / "www"``: (base URL, root, log)."""
    from range_server import serve

    with serve(tmp_path / "www") as server:
        yield server.url, server.root, server.log


def test_remote_cog_is_read_by_range_requests(tmp_path, scenes_http_server):
    from rasterio.shutil import copy as rio_copy

    base, root, requests = scenes_http_server
    refl = demo_reflectance(300, 300)
    local = write_demo_scene(tmp_path / "demo.tif", refl)
    rio_copy(local, root / "demo_cog.tif", driver="COG", compress="DEFLATE", blocksize=256)
    out_remote, out_local = tmp_path / "remote.tif", tmp_path / "local.tif"
    prepare_scene(f"{base}/demo_cog.tif", "landsat-c2l2", out_remote, scene_id="r", bands=OLI_BANDS, log=quiet)
    prepare_scene(str(local), "landsat-c2l2", out_local, scene_id="r", bands=OLI_BANDS, log=quiet)
    a, ma, pa, _ = read_prepared(out_remote)
    b, mb, pb, _ = read_prepared(out_local)
    assert pa["transform"] == pb["transform"]
    assert np.array_equal(np.nan_to_num(a, nan=-9), np.nan_to_num(b, nan=-9)) and np.array_equal(ma, mb)
    statuses = [r.status for r in requests]
    assert 206 in statuses and 200 not in [r.status for r in requests if r.method == "GET"]


def test_unreachable_url_is_an_error(tmp_path, scenes_http_server):
    base, _, _ = scenes_http_server
    out = tmp_path / "x.tif"
    with pytest.raises(OutcropError, match=r"missing\.tif: cannot read raster"):
        prepare_scene(f"{base}/missing.tif", "landsat-c2l2", out, scene_id="x", bands=OLI_BANDS, log=quiet)
    with pytest.raises(OutcropError, match=r"127\.0\.0\.1:9/none\.tif"):
        prepare_scene("http://127.0.0.1:9/none.tif", "landsat-c2l2", out, scene_id="x", bands=OLI_BANDS, log=quiet)
    assert not out.exists()
