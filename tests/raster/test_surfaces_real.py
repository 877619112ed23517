"""Surface classes on real scenes of ../shared/data and tests/data, and the unknown class where bands cannot tell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from outcrop.figures.quicklook import read_preview
from outcrop.raster.scenes import prepare_scene
from outcrop.raster.surfaces import (
    CLOUD,
    ROCK,
    SNOW_ICE,
    UNKNOWN,
    VEGETATION,
    WATER,
    Thresholds,
    classify_surfaces,
    ground_fraction,
)
from shared_data import MISSING, SHARED_DATA

TEST_DATA = Path(__file__).resolve().parents[1] / "data"
SIX = ["blue", "green", "red", "nir", "swir1", "swir2"]


def shared_data() -> Path:
    if SHARED_DATA is None:
        pytest.skip(MISSING)
    return SHARED_DATA


def _mask(tmp_path: Path, folder: str, bands: list[str], crs: str) -> np.ndarray:
    out = tmp_path / "scene.tif"
    prepare_scene(
        str(shared_data() / "landsat8" / folder),
        "landsat-c2l1",
        out,
        scene_id="s",
        bands=bands,
        crs=crs,
        resolution=30,
        log=lambda _: None,
    )
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
    # water: dark in SWIR; soil: brighter in SWIR than green, but without red and NIR it could be
    # forest as well as soil: unknown ground, not rock
    refl = np.array([[[0.06, 0.10]], [[0.01, 0.25]]], dtype=np.float32)  # green, swir1
    mask = classify_surfaces(refl, ["green", "swir1"])
    assert mask.tolist() == [[WATER, UNKNOWN]]


def test_panchromatic_band_is_unknown():
    refl = np.full((1, 2, 2), 0.3, dtype=np.float32)
    refl[0, 0, 0] = np.nan
    assert classify_surfaces(refl, ["pan"]).tolist() == [[0, UNKNOWN], [UNKNOWN, UNKNOWN]]


def test_unknown_ground_passes_the_rock_filters():
    assert ground_fraction(np.array([0.1]), np.array([0.8])).tolist() == [pytest.approx(0.9)]
    assert ground_fraction(np.array([0.1]), None).tolist() == [pytest.approx(0.1)]


def _prepared(tmp_path: Path, source: Path, sensor: str, crs: str, resolution: float, **kw) -> dict:
    out = tmp_path / "scene.tif"
    prepare_scene(
        str(source),
        sensor,
        out,
        scene_id="s",
        bands=["blue", "green", "red", "nir", "swir1", "swir2"],
        crs=crs,
        resolution=resolution,
        log=lambda _: None,
        **kw,
    )
    return read_preview(out, 1024)


def test_virginia_level1c_atlantic_is_water_and_fields_are_not(tmp_path):
    # The scene states no processing baseline; its stored numbers (visible DN mostly under 1000)
    # show it has no 04.00 offset. Assuming one made the sea's NIR and green negative: rock 95 %.
    mask = _prepared(tmp_path, shared_data() / "sentinel2" / "s2_virginia", "sentinel2-l1c", "EPSG:32618", 60)["mask"]
    assert _share(mask[270:320, 250:320], WATER) > 0.99  # open Atlantic, south-east
    assert _share(mask[0:80, 0:80], WATER) < 0.02  # fields and forest, north-west
    # green fields and forest are vegetation (NDVI 0.4-0.7 at the top of the atmosphere), bare
    # fields and farmsteads exposed ground: before the vegetation class, 99 % "rock"
    assert _share(mask[0:80, 0:80], VEGETATION) > 0.75
    assert _share(mask[0:80, 0:80], ROCK) + _share(mask[0:80, 0:80], VEGETATION) > 0.95
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
    field = [0.09, 0.07, 0.05, 0.20, 0.12, 0.06]  # a green marsh field: NDVI 0.6, vegetation
    soil = [0.08, 0.09, 0.10, 0.14, 0.16, 0.12]  # moist bare soil: NDVI 0.17, exposed ground
    refl = np.array([lagoon, field, soil], dtype=np.float32).T[:, None, :]
    mask = classify_surfaces(refl, ["blue", "green", "red", "nir", "swir1", "swir2"])
    assert mask.tolist() == [[WATER, VEGETATION, ROCK]]


def test_olinda_city_and_beach_are_not_cloud(tmp_path):
    # Landsat 7 over a cloud-free Olinda: the city and sand are as bright as cloud in blue and SWIR1
    # but red-tinted and brighter in SWIR1 than in NIR (1.6 % cloud before the Fmask tests).
    source = shared_data() / "landsat7" / "L7_ETMs_olinda.tif"
    mask = _prepared(
        tmp_path,
        source,
        "geotiff",
        "EPSG:31985",
        28.5,
        declared_bands=["blue", "green", "red", "nir", "swir1", "swir2"],
    )["mask"]
    assert _share(mask, CLOUD) < 0.001
    assert _share(mask, ROCK) + _share(mask, VEGETATION) > 0.7


def test_olinda_mangrove_and_forest_are_vegetation_city_is_ground_and_no_snow(tmp_path):
    # Landsat 7 at 8 degrees south: the forest of the north-west and the mangrove along the estuary in
    # the north-east are vegetation, the city exposed ground. Before: every one of them "rock", and
    # 0.3 % snow/ice (red roofs, bright and dark in SWIR1 after the percentile rescaling).
    source = shared_data() / "landsat7" / "L7_ETMs_olinda.tif"
    mask = _prepared(tmp_path, source, "geotiff", "EPSG:31985", 28.5, declared_bands=SIX)["mask"]
    assert _share(mask[30:80, 0:60], VEGETATION) > 0.85  # forest
    assert _share(mask[5:35, 270:310], VEGETATION) > 0.6  # mangrove on the estuary
    assert _share(mask[130:170, 240:280], ROCK) > 0.6  # the city
    assert _share(mask[250:340, 300:345], WATER) > 0.99  # the Atlantic
    assert 0.2 < _share(mask, VEGETATION) < 0.5
    assert _share(mask, SNOW_ICE) < 0.0005


def _amazon(tmp_path: Path, bands: list[str]) -> dict:
    out = tmp_path / "amazon.tif"
    prepare_scene(
        str(TEST_DATA / "amazon_tucurui_tm5.tif"),
        "geotiff",
        out,
        scene_id="amazon",
        bands=bands,
        declared_bands=SIX,
        crs="EPSG:32622",
        resolution=30,
        log=lambda _: None,
    )
    return read_preview(out, 1024)


@pytest.mark.parametrize("bands", [SIX, ["green", "red", "nir", "swir1"]], ids=["six bands", "green-red-nir-swir1"])
def test_amazon_rainforest_is_vegetation_not_rock_and_never_snow(tmp_path, bands):
    # Landsat 5 surface reflectance over the Tucurui reservoir (3.8 S): closed forest (NDVI 0.7-0.8),
    # the reservoir and a few clearings. Before the vegetation class: 92.7 % rock.
    mask = _amazon(tmp_path, bands)["mask"]
    assert _share(mask, VEGETATION) > 0.85
    assert _share(mask, ROCK) < 0.02
    assert 0.04 < _share(mask, WATER) < 0.12
    assert _share(mask, SNOW_ICE) == 0.0
    assert _share(mask, UNKNOWN) == 0.0


def test_forest_tiles_do_not_pass_the_rock_filters(tmp_path):
    # train_min_rock and index.min_rock count exposed ground only: a tile of forest is not rock.
    from outcrop.learning.training_data import open_training_tiles
    from outcrop.raster.tiles import tile_scene

    _amazon(tmp_path, SIX)
    tile_scene(
        tmp_path / "amazon.tif", tmp_path / "a.npy", tmp_path / "a.parquet", scene_id="amazon", log=lambda _: None
    )
    every = len(open_training_tiles([tmp_path / "a.npy"], [tmp_path / "a.parquet"], 0.0))
    kept = len(open_training_tiles([tmp_path / "a.npy"], [tmp_path / "a.parquet"], 0.3))
    assert every >= 50 and kept <= 0.05 * every


def test_greenland_winter_has_no_vegetation(tmp_path):
    # Sunlit and shadowed slopes at a low January sun reach NDVI 0.3 at the top of the atmosphere:
    # the vegetation threshold stays above them.
    mask = _mask(tmp_path, "LC80030172015001LGN00_greenland", ["blue", "green", "red", "nir"], "EPSG:32622")
    assert _share(mask, VEGETATION) < 0.001
    assert _share(mask, ROCK) > 0.1


def test_gulf_coast_shore_vegetation_is_not_snow(tmp_path):
    # Wet shore vegetation is dark in SWIR1 (high NDSI) and bright in NIR: NDSI and NIR alone called
    # 61 of its pixels snow (0.016 %); dark green and NDVI 0.6 say it is not (one grey pixel at a
    # cloud's edge remains).
    prep = _prepared(tmp_path, shared_data() / "landsat8" / "l8_gulfcoast_cloudy", "landsat-c2l1", "EPSG:32616", 30)
    assert _share(prep["mask"], SNOW_ICE) < 0.00002
    assert _share(prep["mask"], VEGETATION) > 0.5


def test_snow_needs_more_than_a_high_ndsi():
    # blue, green, red, nir, swir1: Antarctic snow and glacier ice (the demo's spectra), then pixels
    # with NDSI above 0.4 and NIR above 0.11 that are not snow: shore vegetation (dark green), a red
    # roof (red above blue), wet forest dark in SWIR1 (NDVI 0.8)
    pixels = {
        "snow": ([0.90, 0.88, 0.85, 0.75, 0.12], SNOW_ICE),
        "glacier ice": ([0.66, 0.60, 0.52, 0.35, 0.04], SNOW_ICE),
        "shore vegetation": ([0.05, 0.04, 0.05, 0.15, 0.008], VEGETATION),
        "red roof": ([0.40, 0.44, 0.51, 0.18, 0.076], ROCK),
        "wet forest": ([0.06, 0.11, 0.03, 0.30, 0.03], VEGETATION),
    }
    refl = np.array([p for p, _ in pixels.values()], dtype=np.float32).T[:, None, :]
    mask = classify_surfaces(refl, ["blue", "green", "red", "nir", "swir1"])
    assert dict(zip(pixels, mask[0].tolist())) == {k: want for k, (_, want) in pixels.items()}


def test_vegetation_needs_red_and_nir_and_its_threshold_is_a_setting():
    forest = np.array([0.04, 0.06, 0.03, 0.30, 0.12], dtype=np.float32)[:, None, None]  # NDVI 0.82
    assert classify_surfaces(forest, ["blue", "green", "red", "nir", "swir1"]).item() == VEGETATION
    # without red, vegetation cannot be told from rock: unknown ground
    no_red = forest[[0, 1, 3, 4]]
    assert classify_surfaces(no_red, ["blue", "green", "nir", "swir1"]).item() == UNKNOWN
    assert (
        classify_surfaces(forest, ["blue", "green", "red", "nir", "swir1"], Thresholds(ndvi_vegetation=0.9)).item()
        == ROCK
    )


def test_gulf_coast_clouds_stay_cloud_by_the_spectral_test(tmp_path):
    # without the BQA band's verdict: the spectral test still finds the cloud bank, and only cloud
    prep = _prepared(tmp_path, shared_data() / "landsat8" / "l8_gulfcoast_cloudy", "landsat-c2l1", "EPSG:32616", 30)
    spectral = classify_surfaces(prep["reflectance"], prep["bands"]) == CLOUD
    assert np.mean(spectral[200:300, 50:600]) > 0.2
    assert np.mean(spectral[520:600, :]) < 0.01
    assert np.mean(prep["mask"][spectral] == CLOUD) > 0.9  # where BQA says cloud too
