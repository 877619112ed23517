"""Surface classes of a coast: which pixels are rock, vegetation, snow/ice, water, cloud or nodata.

Most of an Antarctic coast is ice, snow and sea; exposed rock is a few percent. The rules follow
the rules-based rock-outcrop mapping of Antarctica from Landsat 8 (Burton-Johnson et al., 2016,
The Cryosphere 10, 1665–1677): snow and ice by the normalised difference snow index (NDSI), water by
the normalised difference water index (NDWI), cloud by brightness in the shortwave infrared where
snow is dark (and, as in Fmask, flat in the visible and not brighter in SWIR1 than in NIR). On any
other coast most dry ground is vegetated, so vegetation is a class of its own, found by NDVI
(:func:`vegetation`). What is left is rock (exposed ground: rock, soil, sand, built-up land), but
only where the bands could tell the other classes apart:

- water needs green with NIR (NDWI) or green with SWIR1 (MNDWI); with both, either finds it (:func:`water`);
- snow/ice needs green with SWIR1 (NDSI, :func:`ndsi_snow`) or, without SWIR1, blue, green, red and
  NIR (the visible rule, :func:`visible_snow`);
- vegetation needs red and NIR (NDVI);
- cloud needs the product's quality band or SWIR1 with blue; without either, bright cloud falls to
  the visible snow rule or to rock.

Where water, snow or vegetation cannot be tested (an RGB file, a panchromatic band, a scene without
red or NIR) the pixels that are not nodata are ``UNKNOWN``, not rock: reservoir, forest and glacier
look alike in three visible bands. The training and indexing rock filters count unknown ground as
exposed ground (:data:`UNKNOWN_COUNTS_AS_ROCK`), so such scenes still train and index, and the
quicklook labels the mask "unknown"; vegetation never counts.

Mask values are stable across versions (a run's older prepared scenes keep their meaning):
vegetation took the next free value, 6.
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
UNKNOWN = 5  # valid ground whose bands cannot tell rock from water, snow/ice or vegetation
VEGETATION = 6  # NDVI above surfaces.ndvi_vegetation (a later class: the next free value)

CLASS_NAMES = {
    NODATA: "nodata",
    ROCK: "rock",
    SNOW_ICE: "snow_ice",
    WATER: "water",
    CLOUD: "cloud",
    UNKNOWN: "unknown",
    VEGETATION: "vegetation",
}
# The rock filters of training (encoder.train_min_rock) and indexing (index.min_rock) keep what is
# exposed ground: rock, and unknown ground, since a scene whose bands cannot see snow, sea or
# vegetation would otherwise train on nothing. Vegetation, snow/ice, water and cloud never count.
UNKNOWN_COUNTS_AS_ROCK = True
# Class names as a GIS shows them (the prepared scene's mask band carries them, see outcrop.io).
CLASS_LABELS = {
    NODATA: "nodata",
    ROCK: "rock",
    SNOW_ICE: "snow/ice",
    WATER: "water",
    CLOUD: "cloud",
    UNKNOWN: "unknown",
    VEGETATION: "vegetation",
}
# Colours for maps and raster colour tables (RGBA).
CLASS_COLOURS = {
    NODATA: (0, 0, 0, 0),
    ROCK: (140, 90, 60, 255),
    SNOW_ICE: (230, 240, 255, 255),
    WATER: (30, 70, 140, 255),
    CLOUD: (200, 200, 200, 255),
    UNKNOWN: (255, 0, 255, 255),
    VEGETATION: (60, 150, 60, 255),
}


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the surface rules, configurable under ``surfaces:`` in the config."""

    ndsi_snow: float = default("surfaces.ndsi_snow")  # NDSI above this (and NIR bright) is snow/ice
    nir_snow: float = default("surfaces.nir_snow")  # NIR reflectance floor for snow/ice, separates it from dark water
    green_snow: float = default("surfaces.green_snow")  # green reflectance floor for snow/ice by NDSI
    ndwi_water: float = default("surfaces.ndwi_water")  # NDWI (green vs NIR) above this, with dark NIR, is water
    nir_water: float = default("surfaces.nir_water")  # NIR ceiling for water
    swir_water: float = default("surfaces.swir_water")  # SWIR1 ceiling for water by MNDWI (green vs SWIR1)
    swir_cloud: float = default("surfaces.swir_cloud")  # SWIR1 reflectance above which bright pixels are cloud
    blue_cloud: float = default("surfaces.blue_cloud")  # blue reflectance floor for cloud
    visible_snow: float = default(
        "surfaces.visible_snow"
    )  # without SWIR1: mean blue/green/red above which a bluish pixel is snow/ice
    ndvi_snow: float = default("surfaces.ndvi_snow")  # NDVI above this is never snow/ice
    ndvi_vegetation: float = default("surfaces.ndvi_vegetation")  # NDVI above this is vegetation


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a - b) / (a + b)


def classify_surfaces(
    reflectance: np.ndarray,
    band_names: list[str],
    thresholds: Thresholds = Thresholds(),
    cloud: np.ndarray | None = None,
) -> np.ndarray:
    """Classify each pixel of a (C, H, W) reflectance array (NaN = nodata) into a surface class.

    ``cloud`` is a boolean cloud mask from the product's own quality band where there is one; the
    spectral cloud test is used otherwise. Which rules run depends on the bands (module docstring);
    a later rule wins where two claim a pixel: vegetation, then water, then snow/ice, then cloud.
    Valid pixels no rule claims are ``ROCK`` when water, snow and vegetation could all be tested,
    else ``UNKNOWN``.
    """
    idx = {name: i for i, name in enumerate(band_names)}
    valid = np.all(np.isfinite(reflectance), axis=0)
    water_testable = "green" in idx and ("nir" in idx or "swir1" in idx)
    snow_testable = {"green", "swir1"} <= idx.keys() or {"blue", "green", "red", "nir"} <= idx.keys()
    vegetation_testable = {"red", "nir"} <= idx.keys()
    ground = ROCK if water_testable and snow_testable and vegetation_testable else UNKNOWN
    out = np.full(reflectance.shape[1:], ground, dtype=np.uint8)
    if vegetation_testable:
        out[vegetation(reflectance, idx, thresholds)] = VEGETATION
    if water_testable:
        out[water(reflectance, idx, thresholds)] = WATER
    if {"green", "swir1"} <= idx.keys():
        out[ndsi_snow(reflectance, idx, thresholds)] = SNOW_ICE
        if cloud is None and "blue" in idx:
            cloud = spectral_cloud(reflectance, idx, thresholds)
    else:
        out[visible_snow(reflectance, idx, thresholds) & np.isin(out, (ROCK, UNKNOWN))] = SNOW_ICE
    if cloud is not None:
        out[cloud] = CLOUD
    out[~valid] = NODATA
    return out


def vegetation(reflectance: np.ndarray, idx: dict[str, int], thresholds: Thresholds) -> np.ndarray:
    """Vegetation: NDVI (NIR vs red, Rouse et al. 1974; Tucker 1979, Remote Sens. Environ. 8, 127-150)
    above ``ndvi_vegetation``.

    Bare rock, soil and sand lie below about 0.2 (the bare-soil NDVI of Sobrino et al. 2004, Remote
    Sens. Environ. 90, 434-440, and of the fractional-cover models after Carlson & Ripley 1997) and
    closed vegetation above 0.5; the default 0.3 lies between and was checked on the real scenes of
    the tests: Amazon forest (surface reflectance) 0.7-0.8, Virginia's fields and forest and Olinda's
    mangrove (top of atmosphere, where haze lowers NDVI) mostly 0.4-0.7, while the sunlit and shadowed
    slopes of the Greenland winter scene, which have no green vegetation, stay below 0.3 (99.9 %).
    A pixel a third vegetated or more is vegetation: it is not exposed ground for the rock filters.
    """
    return _ratio(reflectance[idx["nir"]], reflectance[idx["red"]]) > thresholds.ndvi_vegetation


def ndsi_snow(reflectance: np.ndarray, idx: dict[str, int], thresholds: Thresholds) -> np.ndarray:
    """Snow and ice where SWIR1 is there: NDSI (green vs SWIR1) above ``ndsi_snow``, and more than that.

    High NDSI alone is not snow: everything dark in SWIR1 has it, and dark water, wet vegetation
    at a shore and shadows are dark in SWIR1 (a rainforest composite had 0.3-0.5 % of its pixels
    "snow" on NDSI and NIR alone). So, as in SNOMAP and Fmask (Hall et al. 1995, Remote Sens.
    Environ. 54, 127-140; Zhu & Woodcock 2012, eq. 20), snow must also be bright in NIR (above
    ``nir_snow``, or in green where NIR is missing) and in green (above ``green_snow``); where red and
    NIR are there, not vegetated (NDVI below ``ndvi_snow``); and where blue and red are there, not
    red-tinted (blue at least red: snow and ice reflect less from blue to red, Warren 1982, Rev.
    Geophys. 20, 67-89, while red roofs, soils and iron-stained rock rise, as in :func:`visible_snow`).
    """
    green, swir1 = reflectance[idx["green"]], reflectance[idx["swir1"]]
    bright = reflectance[idx["nir"]] if "nir" in idx else green
    found = (_ratio(green, swir1) > thresholds.ndsi_snow) & (bright > thresholds.nir_snow)
    found &= green > thresholds.green_snow
    if {"red", "nir"} <= idx.keys():
        found &= _ratio(reflectance[idx["nir"]], reflectance[idx["red"]]) < thresholds.ndvi_snow
    if {"blue", "red"} <= idx.keys():
        found &= reflectance[idx["blue"]] >= reflectance[idx["red"]]
    return found


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
    """The fraction the rock filters compare with their threshold: exposed ground, that is rock plus
    unknown ground when :data:`UNKNOWN_COUNTS_AS_ROCK` (``unknown`` is None for tile tables written
    before the class). Vegetation is not exposed ground and never counts."""
    rock = np.asarray(rock, dtype=np.float64)
    return rock + np.asarray(unknown, dtype=np.float64) if UNKNOWN_COUNTS_AS_ROCK and unknown is not None else rock
