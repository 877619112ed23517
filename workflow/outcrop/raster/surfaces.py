"""Surface classes of polar coasts: which pixels are rock, snow/ice, water, cloud or nodata.

Most of an Antarctic coast is ice, snow and sea; exposed rock is a few percent. The rules follow
the rules-based rock-outcrop mapping of Antarctica from Landsat 8 (Burton-Johnson et al., 2016,
The Cryosphere 10, 1665–1677): snow and ice by the normalised difference snow index (NDSI), water by
the normalised difference water index (NDWI), cloud by brightness in the shortwave infrared where
snow is dark (and, as in Fmask, flat in the visible and not brighter in SWIR1 than in NIR). What is
left is rock, but only where the bands could tell the other classes apart:

- water needs green with NIR (NDWI) or green with SWIR1 (MNDWI); with both, either finds it (:func:`water`);
- snow/ice needs green with SWIR1 (NDSI) or, without SWIR1, blue, green, red and NIR (the visible rule);
- cloud needs the product's quality band or SWIR1 with blue; without either, bright cloud falls to
  the visible snow rule or to rock.

Where water or snow cannot be tested (an RGB file, a panchromatic band) the pixels that are not
nodata are ``UNKNOWN``, not rock: reservoir, forest and glacier look alike in three visible bands.
The training and indexing rock filters count unknown ground as rock (:data:`UNKNOWN_COUNTS_AS_ROCK`),
so such scenes still train and index, and the quicklook labels the mask "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from outcrop.config import default

NODATA = 0
ROCK = 1
SNOW_ICE = 2
WATER = 3
CLOUD = 4
UNKNOWN = 5  # valid ground whose bands cannot tell rock from water or snow/ice

CLASS_NAMES = {NODATA: "nodata", ROCK: "rock", SNOW_ICE: "snow_ice", WATER: "water", CLOUD: "cloud",
               UNKNOWN: "unknown"}
# The rock filters of training (encoder.train_min_rock) and indexing (index.min_rock) exist to keep
# snow, sea and cloud out; a scene whose bands cannot see those would otherwise train on nothing, so
# its unknown ground counts as rock there.
UNKNOWN_COUNTS_AS_ROCK = True
# Class names as a GIS shows them (the prepared scene's mask band carries them, see outcrop.io).
CLASS_LABELS = {NODATA: "nodata", ROCK: "rock", SNOW_ICE: "snow/ice", WATER: "water", CLOUD: "cloud",
                UNKNOWN: "unknown"}
# Colours for maps and raster colour tables (RGBA).
CLASS_COLOURS = {
    NODATA: (0, 0, 0, 0),
    ROCK: (140, 90, 60, 255),
    SNOW_ICE: (230, 240, 255, 255),
    WATER: (30, 70, 140, 255),
    CLOUD: (200, 200, 200, 255),
    UNKNOWN: (255, 0, 255, 255),
}


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the surface rules, configurable under ``surfaces:`` in the config."""

    ndsi_snow: float = default("surfaces.ndsi_snow")  # NDSI above this (and NIR bright) is snow/ice
    nir_snow: float = default("surfaces.nir_snow")  # NIR reflectance floor for snow/ice, separates it from dark water
    ndwi_water: float = default("surfaces.ndwi_water")  # NDWI (green vs NIR) above this, with dark NIR, is water
    nir_water: float = default("surfaces.nir_water")  # NIR ceiling for water
    swir_water: float = default("surfaces.swir_water")  # SWIR1 ceiling for water by MNDWI (green vs SWIR1)
    swir_cloud: float = default("surfaces.swir_cloud")  # SWIR1 reflectance above which bright pixels are cloud
    blue_cloud: float = default("surfaces.blue_cloud")  # blue reflectance floor for cloud
    # without SWIR1: mean blue/green/red above which a bluish pixel is snow/ice
    visible_snow: float = default("surfaces.visible_snow")
    ndvi_snow: float = default("surfaces.ndvi_snow")  # without SWIR1: vegetation (NDVI above this) is never snow


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a - b) / (a + b)


def classify_surfaces(
    reflectance: np.ndarray, band_names: list[str], thresholds: Thresholds = Thresholds(),
    cloud: np.ndarray | None = None,
) -> np.ndarray:
    """Classify each pixel of a (C, H, W) reflectance array (NaN = nodata) into a surface class.

    ``cloud`` is a boolean cloud mask from the product's own quality band where there is one; the
    spectral cloud test is used otherwise. Which rules run depends on the bands (module docstring);
    valid pixels no rule claims are ``ROCK`` when water and snow could both be tested, else ``UNKNOWN``.
    """
    idx = {name: i for i, name in enumerate(band_names)}
    valid = np.all(np.isfinite(reflectance), axis=0)
    water_testable = "green" in idx and ("nir" in idx or "swir1" in idx)
    snow_testable = {"green", "swir1"} <= idx.keys() or {"blue", "green", "red", "nir"} <= idx.keys()
    out = np.full(reflectance.shape[1:], ROCK if water_testable and snow_testable else UNKNOWN, dtype=np.uint8)
    green = reflectance[idx["green"]] if "green" in idx else None
    if green is not None and water_testable:
        out[water(reflectance, idx, thresholds)] = WATER
    if green is not None and "swir1" in idx:
        swir1 = reflectance[idx["swir1"]]
        # snow is bright in NIR (and in green, where NIR is missing); dark water has high NDSI too
        bright = reflectance[idx["nir"]] if "nir" in idx else green
        out[(_ratio(green, swir1) > thresholds.ndsi_snow) & (bright > thresholds.nir_snow)] = SNOW_ICE
        if cloud is None and "blue" in idx:
            cloud = spectral_cloud(reflectance, idx, thresholds)
    else:
        out[visible_snow(reflectance, idx, thresholds) & np.isin(out, (ROCK, UNKNOWN))] = SNOW_ICE
    if cloud is not None:
        out[cloud] = CLOUD
    out[~valid] = NODATA
    return out


# Fmask's tests that keep bright ground out of its cloud candidates (Zhu & Woodcock 2012, Remote Sens.
# Environ. 118, 83-94, eq. 1-4 and the "bright rock" test): cloud is spectrally flat in the visible
# (whiteness, the mean absolute departure of blue, green and red from their mean divided by that
# mean, below 0.7), and not brighter in SWIR1 than in NIR (NIR/SWIR1 above 0.75): bare soil, sand,
# roofs and rock rise from NIR into SWIR1 as iron oxides and dry materials do, cloud does not.
CLOUD_MAX_WHITENESS = 0.7
CLOUD_MIN_NIR_SWIR1 = 0.75


def spectral_cloud(reflectance: np.ndarray, idx: dict[str, int], thresholds: Thresholds) -> np.ndarray:
    """Cloud without a quality band: bright in SWIR1 (where snow is dark) and in blue, and, where
    the bands are there, flat in the visible and not brighter in SWIR1 than in NIR (Fmask's
    whiteness and bright-rock tests, :data:`CLOUD_MAX_WHITENESS`, :data:`CLOUD_MIN_NIR_SWIR1`).
    Brightness alone calls a sunlit city and its beach cloud: on Landsat 7 over Olinda they are as
    bright as cloud in blue and SWIR1, but red-tinted and brighter in SWIR1 than in NIR."""
    swir1, blue = reflectance[idx["swir1"]], reflectance[idx["blue"]]
    cloud = (swir1 > thresholds.swir_cloud) & (blue > thresholds.blue_cloud)
    if "nir" in idx:
        with np.errstate(divide="ignore", invalid="ignore"):
            cloud &= reflectance[idx["nir"]] / swir1 > CLOUD_MIN_NIR_SWIR1
    if {"green", "red"} <= idx.keys():
        visible = np.stack([blue, reflectance[idx["green"]], reflectance[idx["red"]]])
        mean = visible.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cloud &= np.abs(visible - mean).sum(axis=0) / mean < CLOUD_MAX_WHITENESS
    return cloud


def water(reflectance: np.ndarray, idx: dict[str, int], thresholds: Thresholds) -> np.ndarray:
    """Water from the bands there are: NDWI with NIR, MNDWI with SWIR1, either where both exist.

    NDWI (green vs NIR, McFeeters 1996, Int. J. Remote Sens. 17, 1425-1432) with a NIR ceiling
    (``nir_water``) finds clear water. Shallow, turbid or algal water (lagoons, marsh creeks, river
    plumes) is bright in NIR from sediment and, in top-of-atmosphere data, from haze: on the
    Level-1C scene of Virginia's barrier lagoons it has NDWI about 0.2, under the threshold. SWIR1
    is absorbed by a centimetre of water whatever it carries, so MNDWI (green vs SWIR1, Xu 2006,
    Int. J. Remote Sens. 27, 3025-3033) stays high there; haze adds little at 1.6 um, so a SWIR1
    ceiling (``swir_water``: TOA over water is path radiance, a few hundredths; moist soil and
    vegetation are above 0.1) keeps bright ground out. The MNDWI threshold is the NDWI one: haze
    lifts green more than SWIR1, so Xu's threshold of 0 would take hazy land. Cast shadows are dark
    in every band and may pass (Feyisa et al. 2014, Remote Sens. Environ. 140, 23-35).
    """
    green = reflectance[idx["green"]]
    found = np.zeros(green.shape, dtype=bool)
    nir = reflectance[idx["nir"]] if "nir" in idx else None
    if nir is not None:
        found |= (_ratio(green, nir) > thresholds.ndwi_water) & (nir < thresholds.nir_water)
    if "swir1" in idx:
        swir1 = reflectance[idx["swir1"]]
        by_swir = (_ratio(green, swir1) > thresholds.ndwi_water) & (swir1 < thresholds.swir_water)
        found |= by_swir & (nir < thresholds.nir_water) if nir is not None else by_swir
    return found


def visible_snow(reflectance: np.ndarray, idx: dict[str, int], thresholds: Thresholds) -> np.ndarray:
    """Snow and ice in a scene without a shortwave-infrared band.

    NDSI needs SWIR1, where snow is dark and everything bright in the visible is not. Without it,
    snow and ice are bright in the visible (mean of blue, green, red above ``visible_snow``),
    neutral-to-blue (blue at least red: snow reflectance falls from blue to red, Warren 1982,
    Rev. Geophys. 20, 67-89, while rocks and soils, reddened by iron oxides, rise), and not
    vegetated (NDVI below ``ndvi_snow``). Bright bluish cloud must then come from a quality band.
    """
    if not {"blue", "green", "red", "nir"} <= idx.keys():
        return np.zeros(reflectance.shape[1:], dtype=bool)
    blue, green, red, nir = (reflectance[idx[b]] for b in ("blue", "green", "red", "nir"))
    visible = (blue + green + red) / 3.0
    ndvi = _ratio(nir, red)
    return (visible > thresholds.visible_snow) & (blue >= red) & (ndvi < thresholds.ndvi_snow)


def class_fractions(mask: np.ndarray) -> dict[str, float]:
    """Fraction of each surface class in a mask block."""
    total = mask.size
    counts = np.bincount(mask.ravel(), minlength=len(CLASS_NAMES))
    return {CLASS_NAMES[c]: counts[c] / total for c in CLASS_NAMES}


def ground_fraction(rock: np.ndarray, unknown: np.ndarray | None) -> np.ndarray:
    """The fraction the rock filters compare with their threshold: rock, plus unknown ground when
    :data:`UNKNOWN_COUNTS_AS_ROCK` (``unknown`` is None for tile tables written before the class)."""
    rock = np.asarray(rock, dtype=np.float64)
    return rock + np.asarray(unknown, dtype=np.float64) if UNKNOWN_COUNTS_AS_ROCK and unknown is not None else rock
