"""Surface classes of polar coasts: which pixels are rock, snow/ice, water, cloud or nodata.

Most of an Antarctic coast is ice, snow and sea; exposed rock is a few percent. The rules follow
the rules-based rock-outcrop mapping of Antarctica from Landsat 8 (Burton-Johnson et al., 2016,
The Cryosphere 10, 1665–1677): snow and ice by the normalised difference snow index (NDSI), water by
the normalised difference water index (NDWI), cloud by brightness in the shortwave infrared where
snow is dark. What is left is rock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NODATA = 0
ROCK = 1
SNOW_ICE = 2
WATER = 3
CLOUD = 4

CLASS_NAMES = {NODATA: "nodata", ROCK: "rock", SNOW_ICE: "snow_ice", WATER: "water", CLOUD: "cloud"}
# Colours for maps and raster colour tables (RGBA).
CLASS_COLOURS = {
    NODATA: (0, 0, 0, 0),
    ROCK: (140, 90, 60, 255),
    SNOW_ICE: (230, 240, 255, 255),
    WATER: (30, 70, 140, 255),
    CLOUD: (200, 200, 200, 255),
}


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the surface rules, configurable under ``surfaces:`` in the config."""

    ndsi_snow: float = 0.4  # NDSI above this (and NIR bright) is snow/ice
    nir_snow: float = 0.11  # NIR reflectance floor for snow/ice, separates it from dark water
    ndwi_water: float = 0.25  # NDWI (green vs NIR) above this, with dark NIR, is water
    nir_water: float = 0.12  # NIR ceiling for water
    swir_cloud: float = 0.3  # SWIR1 reflectance above which bright pixels are cloud
    blue_cloud: float = 0.3  # blue reflectance floor for cloud


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a - b) / (a + b)


def classify_surfaces(
    reflectance: np.ndarray, band_names: list[str], thresholds: Thresholds = Thresholds(),
    cloud: np.ndarray | None = None,
) -> np.ndarray:
    """Classify each pixel of a (C, H, W) reflectance array (NaN = nodata) into a surface class.

    ``cloud`` is a boolean cloud mask from the product's own quality band where there is one; the
    spectral cloud test is used otherwise. Bands needed: green, nir, and swir1 for snow and cloud
    (without swir1, snow is not separated from rock and cloud comes only from ``cloud``).
    """
    idx = {name: i for i, name in enumerate(band_names)}
    valid = np.all(np.isfinite(reflectance), axis=0)
    out = np.full(reflectance.shape[1:], ROCK, dtype=np.uint8)
    green = reflectance[idx["green"]]
    nir = reflectance[idx["nir"]]
    ndwi = _ratio(green, nir)
    out[(ndwi > thresholds.ndwi_water) & (nir < thresholds.nir_water)] = WATER
    if "swir1" in idx:
        swir1 = reflectance[idx["swir1"]]
        ndsi = _ratio(green, swir1)
        out[(ndsi > thresholds.ndsi_snow) & (nir > thresholds.nir_snow)] = SNOW_ICE
        if cloud is None and "blue" in idx:
            blue = reflectance[idx["blue"]]
            cloud = (swir1 > thresholds.swir_cloud) & (blue > thresholds.blue_cloud)
    if cloud is not None:
        out[cloud] = CLOUD
    out[~valid] = NODATA
    return out


def class_fractions(mask: np.ndarray) -> dict[str, float]:
    """Fraction of each surface class in a mask block."""
    total = mask.size
    counts = np.bincount(mask.ravel(), minlength=len(CLASS_NAMES))
    return {CLASS_NAMES[c]: counts[c] / total for c in CLASS_NAMES}
