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
