"""Surface classes on real scenes of ../shared/data, and the unknown class where bands cannot tell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from outcrop.figures.quicklook import read_preview
from outcrop.raster.scenes import prepare_scene
from outcrop.raster.surfaces import CLOUD, ROCK, SNOW_ICE, UNKNOWN, WATER, classify_surfaces, ground_fraction


def shared_data() -> Path:
    for candidate in (Path(__file__).resolve().parents[3] / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    pytest.skip("the shared real scenes (../shared/data) are not here")


def _mask(tmp_path: Path, folder: str, bands: list[str], crs: str) -> np.ndarray:
    out = tmp_path / "scene.tif"
    prepare_scene(str(shared_data() / "landsat8" / folder), "landsat-c2l1", out, scene_id="s", bands=bands,
                  crs=crs, resolution=30, log=lambda _: None)
    return read_preview(out, 1024)["mask"]


def _share(mask: np.ndarray, code: int) -> float:
    return float(np.mean(mask == code))


def test_rgb_scene_is_unknown_not_rock_and_reservoir_is_not_ground(tmp_path):
    # Paraná ships blue, green and red only: its reservoir and its forest have the same visible
    # reflectance (0.10/0.08/0.04), so the mask may not call either rock.
    mask = _mask(tmp_path, "LC08_L1TP_224078_20200518_parana", ["blue", "green", "red"], "EPSG:32621")
    assert _share(mask, ROCK) == 0.0
    assert _share(mask[440:460, 490:510], UNKNOWN) == 1.0  # the reservoir
    assert _share(mask, UNKNOWN) > 0.8


def test_greenland_snow_is_snow_and_fjord_is_water(tmp_path):
    mask = _mask(tmp_path, "LC80030172015001LGN00_greenland", ["blue", "green", "red", "nir"], "EPSG:32622")
    assert _share(mask[290:310, 590:610], SNOW_ICE) > 0.9
    assert _share(mask[540:560, 40:60], WATER) > 0.9
    assert _share(mask, SNOW_ICE) > 0.5


def test_gulf_coast_clouds_are_cloud(tmp_path):
    mask = _mask(tmp_path, "l8_gulfcoast_cloudy", ["blue", "green", "red", "nir", "swir1", "swir2"], "EPSG:32616")
    assert _share(mask[200:300, 50:600], CLOUD) > 0.5
    assert _share(mask[520:600, :], CLOUD) < 0.2  # the clear coast below the cloud bank


def test_water_from_green_and_swir_without_nir():
    # water: dark in SWIR; soil: brighter in SWIR than green
    refl = np.array([[[0.06, 0.10]], [[0.01, 0.25]]], dtype=np.float32)  # green, swir1
    mask = classify_surfaces(refl, ["green", "swir1"])
    assert mask.tolist() == [[WATER, ROCK]]


def test_panchromatic_band_is_unknown():
    refl = np.full((1, 2, 2), 0.3, dtype=np.float32)
    refl[0, 0, 0] = np.nan
    assert classify_surfaces(refl, ["pan"]).tolist() == [[0, UNKNOWN], [UNKNOWN, UNKNOWN]]


def test_unknown_ground_passes_the_rock_filters():
    assert ground_fraction(np.array([0.1]), np.array([0.8])).tolist() == [pytest.approx(0.9)]
    assert ground_fraction(np.array([0.1]), None).tolist() == [pytest.approx(0.1)]


def _prepared(tmp_path: Path, source: Path, sensor: str, crs: str, resolution: float, **kw) -> dict:
    out = tmp_path / "scene.tif"
    prepare_scene(str(source), sensor, out, scene_id="s", bands=["blue", "green", "red", "nir", "swir1", "swir2"],
                  crs=crs, resolution=resolution, log=lambda _: None, **kw)
    return read_preview(out, 1024)


def test_virginia_level1c_atlantic_is_water_and_fields_are_not(tmp_path):
    # The scene states no processing baseline; its stored numbers (visible DN mostly under 1000)
    # show it has no 04.00 offset. Assuming one made the sea's NIR and green negative: rock 95 %.
    mask = _prepared(tmp_path, shared_data() / "sentinel2" / "s2_virginia", "sentinel2-l1c", "EPSG:32618", 60)["mask"]
    assert _share(mask[270:320, 250:320], WATER) > 0.99  # open Atlantic, south-east
    assert _share(mask[0:80, 0:80], WATER) < 0.02  # fields and forest, north-west
    assert _share(mask[0:80, 0:80], ROCK) > 0.95
    assert 0.4 < _share(mask, WATER) < 0.65


def test_sentinel2_offset_read_from_visible_values():
    from outcrop.raster.sensors import S2_OFFSET, sentinel2_offset_from_values

    old = np.array([[900.0, 1100.0, 650.0, np.nan]])  # 10000 * reflectance, no offset
    new = old + 1000.0
    assert sentinel2_offset_from_values(old)[0] == 0.0
    assert sentinel2_offset_from_values(new)[0] == S2_OFFSET


def test_turbid_lagoon_water_by_mndwi_and_moist_ground_is_not():
    # blue, green, red, nir, swir1, swir2: Virginia lagoon (NDWI 0.2, dark SWIR1); a marsh field
    lagoon = [0.106, 0.075, 0.058, 0.052, 0.034, 0.023]
    field = [0.09, 0.07, 0.05, 0.20, 0.12, 0.06]
    refl = np.array([lagoon, field], dtype=np.float32).T[:, None, :]
    mask = classify_surfaces(refl, ["blue", "green", "red", "nir", "swir1", "swir2"])
    assert mask.tolist() == [[WATER, ROCK]]


def test_olinda_city_and_beach_are_not_cloud(tmp_path):
    # Landsat 7 over a cloud-free Olinda: the city and sand are as bright as cloud in blue and SWIR1
    # but red-tinted and brighter in SWIR1 than in NIR (1.6 % cloud before the Fmask tests).
    source = shared_data() / "landsat7" / "L7_ETMs_olinda.tif"
    mask = _prepared(tmp_path, source, "geotiff", "EPSG:31985", 28.5,
                     declared_bands=["blue", "green", "red", "nir", "swir1", "swir2"])["mask"]
    assert _share(mask, CLOUD) < 0.001
    assert _share(mask, ROCK) > 0.7


def test_gulf_coast_clouds_stay_cloud_by_the_spectral_test(tmp_path):
    # without the BQA band's verdict: the spectral test still finds the cloud bank, and only cloud
    prep = _prepared(tmp_path, shared_data() / "landsat8" / "l8_gulfcoast_cloudy", "landsat-c2l1", "EPSG:32616", 30)
    spectral = classify_surfaces(prep["reflectance"], prep["bands"]) == CLOUD
    assert np.mean(spectral[200:300, 50:600]) > 0.2
    assert np.mean(spectral[520:600, :]) < 0.01
    assert np.mean(prep["mask"][spectral] == CLOUD) > 0.9  # where BQA says cloud too
