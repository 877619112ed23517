"""Sensor tables: which file holds which canonical band, and how its numbers become reflectance.

Scenes of different sensors share one run only if their bands share names and their values share a
unit, so every sensor is reduced here to three facts: a table from the producer's band token
(``B2``, ``B8A``) to a canonical band name, a linear radiometric rescaling from stored numbers to
reflectance, and the kind of quality band that flags cloud. Sources of the constants:

- Landsat 8/9 Collection 2 Level-2 surface reflectance: ``DN * 0.0000275 - 0.2`` for every reflective
  band (USGS, *Landsat 8-9 Collection 2 Level-2 Science Product Guide*, LSDS-1619, section 6.2).
- Landsat 8/9 Level-1 top-of-atmosphere reflectance: ``(M * DN + A) / sin(sun elevation)`` with M, A
  and the sun elevation from the product's MTL file (USGS, *Landsat 8 Data Users Handbook*,
  LSDS-1574, section 5.1). For OLI, M = 2.0e-5 and A = -0.1 for every reflective band.
- Sentinel-2 L1C and L2A from processing baseline 04.00 (January 2022) on: ``(DN - 1000) / 10000``,
  that is ``DN * 1e-4 - 0.1`` (ESA, *Sentinel-2 Products Specification Document*, S2-PDGS-TAS-DI-PSD,
  issue 14.9, BOA_ADD_OFFSET / RADIO_ADD_OFFSET = -1000, QUANTIFICATION_VALUE = 10000). Older
  baselines have no offset; the product metadata or the ``_N0xyy_`` baseline in the product name
  say which applies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from outcrop.errors import OutcropError

CANONICAL_BANDS = (
    "coastal",
    "blue",
    "green",
    "red",
    "nir",
    "swir1",
    "swir2",
    "cirrus",
    "tir1",
    "tir2",
    "pan",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir08",
    "wv",
)
# Thermal bands measure temperature, not reflectance: the prepared format cannot hold them.
THERMAL_BANDS = frozenset({"tir1", "tir2"})

_LANDSAT_OLI = {
    "B1": "coastal",
    "B2": "blue",
    "B3": "green",
    "B4": "red",
    "B5": "nir",
    "B6": "swir1",
    "B7": "swir2",
    "B8": "pan",
    "B9": "cirrus",
    "B10": "tir1",
    "B11": "tir2",
}
# Level-2 products carry no panchromatic or cirrus band, and their thermal band is surface temperature.
_LANDSAT_OLI_L2 = {k: v for k, v in _LANDSAT_OLI.items() if k in {"B1", "B2", "B3", "B4", "B5", "B6", "B7"}}
_SENTINEL2_MSI = {
    "B1": "coastal",
    "B2": "blue",
    "B3": "green",
    "B4": "red",
    "B5": "rededge1",
    "B6": "rededge2",
    "B7": "rededge3",
    "B8": "nir",
    "B8A": "nir08",
    "B9": "wv",
    "B10": "cirrus",
    "B11": "swir1",
    "B12": "swir2",
}
# L2A drops the cirrus band B10 (it is used up by the atmospheric correction).
_SENTINEL2_L2A = {k: v for k, v in _SENTINEL2_MSI.items() if k != "B10"}


@dataclass(frozen=True)
class Sensor:
    """How one kind of product stores its bands.

    ``radiometry`` says where the rescaling comes from: ``fixed`` (``scale``/``offset`` below),
    ``mtl`` (Landsat Level-1 MTL file, :data:`OLI_L1_SCALE` / ``OLI_L1_OFFSET`` without sun-angle
    correction when there is none), ``sentinel2`` (scale 1e-4, offset by processing baseline) or
    ``auto`` (the generic rule of :func:`percentile_rescale` unless a scale is given).
    ``quality`` lists the quality-band tokens a product folder may hold.
    """

    name: str
    band_tokens: dict[str, str] = field(default_factory=dict)
    radiometry: str = "fixed"
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = 0
    quality: tuple[str, ...] = ()


OLI_L1_SCALE = 2.0e-5
OLI_L1_OFFSET = -0.1
S2_SCALE = 1e-4
S2_OFFSET = -0.1  # processing baseline >= 04.00
# The stored number of zero reflectance from baseline 04.00 on (-S2_OFFSET / S2_SCALE).
S2_ZERO_DN = 1000
# Share of a product's visible values below S2_ZERO_DN from which it cannot carry the 04.00 offset
# (see sentinel2_offset_from_values).
S2_PRE_BASELINE_SHARE = 0.05
VISIBLE_BANDS = ("blue", "green", "red")

SENSORS: dict[str, Sensor] = {
    "landsat-c2l2": Sensor("landsat-c2l2", _LANDSAT_OLI_L2, "fixed", 0.0000275, -0.2, 0, ("QA_PIXEL",)),
    "landsat-c2l1": Sensor("landsat-c2l1", _LANDSAT_OLI, "mtl", OLI_L1_SCALE, OLI_L1_OFFSET, 0, ("QA_PIXEL", "BQA")),
    "landsat-l1": Sensor("landsat-l1", _LANDSAT_OLI, "mtl", OLI_L1_SCALE, OLI_L1_OFFSET, 0, ("QA_PIXEL", "BQA")),
    "sentinel2-l2a": Sensor("sentinel2-l2a", _SENTINEL2_L2A, "sentinel2", S2_SCALE, S2_OFFSET, 0, ("SCL",)),
    "sentinel2-l1c": Sensor("sentinel2-l1c", _SENTINEL2_MSI, "sentinel2", S2_SCALE, S2_OFFSET, 0, ()),
    "geotiff": Sensor("geotiff", {}, "auto", 1.0, 0.0, None, ()),
}


def get_sensor(name: str) -> Sensor:
    """The sensor of that name, or an error listing the known ones."""
    try:
        return SENSORS[name]
    except KeyError:
        raise OutcropError(f"unknown sensor {name!r}; known sensors: {', '.join(sorted(SENSORS))}") from None


def check_band_names(bands: Sequence[str], where: str) -> None:
    """Refuse an empty band list, duplicates, names outside the canonical set, and thermal bands."""
    if not bands:
        raise OutcropError(f"{where}: no bands requested")
    unknown = [b for b in bands if b not in CANONICAL_BANDS]
    if unknown:
        raise OutcropError(
            f"{where}: unknown band name(s) {', '.join(map(repr, unknown))}; "
            f"canonical names are {', '.join(CANONICAL_BANDS)}"
        )
    if len(set(bands)) != len(bands):
        raise OutcropError(f"{where}: band list {list(bands)} names a band twice")
    thermal = [b for b in bands if b in THERMAL_BANDS]
    if thermal:
        raise OutcropError(f"{where}: thermal band(s) {', '.join(thermal)} cannot be stored as reflectance")


_TOKEN = re.compile(r"^B0*(\d{1,2}A?)$", re.IGNORECASE)


def normalise_token(token: str) -> str:
    """``B02`` / ``b2`` / ``SR_B2`` → ``B2``; ``B8A`` stays; other tokens are upper-cased."""
    token = token.upper()
    for prefix in ("SR_", "TOA_"):
        if token.startswith(prefix):
            token = token[len(prefix) :]
    m = _TOKEN.match(token)
    return f"B{m.group(1)}" if m else token


def canonical_name(sensor: Sensor, label: str) -> str | None:
    """Canonical name of a band label: a canonical name itself, or a producer token of the sensor."""
    low = label.strip().lower()
    if low in CANONICAL_BANDS:
        return low
    return sensor.band_tokens.get(normalise_token(label.strip()))


# --- quality bands --------------------------------------------------------------------------

# Landsat Collection 2 QA_PIXEL (LSDS-1619 table 6-3): bit 0 fill, 1 dilated cloud, 2 cirrus,
# 3 cloud, 4 cloud shadow. Shadow is not cloud: the ground under it is still seen.
_QA_PIXEL_FILL = 1 << 0
_QA_PIXEL_CLOUD = (1 << 1) | (1 << 2) | (1 << 3)
# Landsat Collection 1 BQA (Landsat 8 Collection 1 Level-1 Quality Assessment band, USGS): bit 0
# designated fill, bit 4 cloud; bits 13-15 unused, always 0.
_BQA_FILL = 1 << 0
_BQA_CLOUD = 1 << 4
# Pre-collection Landsat 8 BQA (products named like LC8…LGN00, before 2016) uses another layout:
# bits 12-13 cirrus confidence, bits 14-15 cloud confidence (00 not determined, 01 low, 10 medium,
# 11 high), bits 4-5 water confidence. Any of bits 13-15 set marks it: Collection 1 never sets them.
_BQA_PRE_COLLECTION_MARK = 0xE000


def _confidence(qa: np.ndarray, first_bit: int) -> np.ndarray:
    return (qa >> first_bit) & 0b11


def bqa_layout(qa: np.ndarray) -> str:
    """``"collection1"`` or ``"pre-collection"``: which bit layout a Landsat 8 BQA band uses."""
    return "pre-collection" if np.any(qa & _BQA_PRE_COLLECTION_MARK) else "collection1"


# Sentinel-2 scene classification (L2A, S2-PDGS-TAS-DI-PSD): 0 no data, 1 saturated or defective,
# 4 vegetation, 6 water, 8/9 cloud medium/high probability, 10 thin cirrus, 11 snow or ice.
SCL_NODATA = (0, 1)
SCL_VEGETATION = 4
SCL_CLOUD = (8, 9, 10)
SCL_WATER = 6
SCL_SNOW = 11


@dataclass(frozen=True)
class QualityMasks:
    """Boolean masks decoded from a quality band (``water``/``snow``/``vegetation`` only from Sentinel-2 SCL)."""

    fill: np.ndarray
    cloud: np.ndarray
    water: np.ndarray | None = None
    snow: np.ndarray | None = None
    vegetation: np.ndarray | None = None


def decode_quality(kind: str, qa: np.ndarray, layout: str | None = None) -> QualityMasks:
    """Decode a quality band of kind ``QA_PIXEL``, ``BQA`` or ``SCL`` into boolean masks.

    ``layout`` is the BQA bit layout when known from the whole band (a window of it may not
    show the pre-collection mark); by default it is read from ``qa`` itself.
    """
    qa = qa.astype(np.int64)
    if kind == "QA_PIXEL":
        return QualityMasks(fill=(qa & _QA_PIXEL_FILL) != 0, cloud=(qa & _QA_PIXEL_CLOUD) != 0)
    if kind == "BQA":
        fill = (qa & _BQA_FILL) != 0
        if (layout or bqa_layout(qa[~fill])) == "pre-collection":
            # high-confidence cloud or cirrus, the counterpart of QA_PIXEL's cloud and cirrus bits
            cloud = (_confidence(qa, 14) == 0b11) | (_confidence(qa, 12) == 0b11)
            return QualityMasks(fill=fill, cloud=cloud & ~fill)
        return QualityMasks(fill=fill, cloud=((qa & _BQA_CLOUD) != 0) & ~fill)
    if kind == "SCL":
        return QualityMasks(
            fill=np.isin(qa, SCL_NODATA),
            cloud=np.isin(qa, SCL_CLOUD),
            water=qa == SCL_WATER,
            snow=qa == SCL_SNOW,
            vegetation=qa == SCL_VEGETATION,
        )
    raise ValueError(f"unknown quality band kind {kind!r}")


# Value a quality band takes outside the source footprint after reprojection: "fill" in every kind.
QUALITY_FILL = {"QA_PIXEL": _QA_PIXEL_FILL, "BQA": _BQA_FILL, "SCL": 0}


# --- radiometry -----------------------------------------------------------------------------


def parse_mtl_text(text: str) -> dict[str, str]:
    """Flatten a Landsat MTL (``GROUP = …`` / ``KEY = value``) into ``{"GROUP.KEY": value}``.

    Keys are kept with their innermost group because Level-2 MTL files hold both the Level-1
    rescaling and the surface-reflectance rescaling under the same key names.
    """
    out: dict[str, str] = {}
    groups: list[str] = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if key == "GROUP":
            groups.append(value)
        elif key == "END_GROUP":
            if groups:
                groups.pop()
        else:
            out[f"{groups[-1] if groups else ''}.{key}"] = value.strip('"')
    return out


def flatten_mtl_json(data: dict, group: str = "") -> dict[str, str]:
    """Flatten a Collection 2 MTL JSON into the same ``{"GROUP.KEY": value}`` form."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten_mtl_json(value, key))
        else:
            out[f"{group}.{key}"] = str(value)
    return out


def mtl_reflectance(mtl: dict[str, str], token: str) -> tuple[float, float] | None:
    """(scale, offset) for Level-1 TOA reflectance of band ``token`` from an MTL, sun angle included.

    TOA reflectance ρ = (M·DN + A) / sin(θ_SE): the division folds into both scale and offset.
    ``None`` when the MTL lacks the band (for example a thermal band).
    """
    num = token[1:]
    mult = add = None
    for key, value in mtl.items():
        group, _, name = key.rpartition(".")
        if "RADIOMETRIC_RESCALING" not in group:
            continue
        if name == f"REFLECTANCE_MULT_BAND_{num}":
            mult = float(value)
        elif name == f"REFLECTANCE_ADD_BAND_{num}":
            add = float(value)
    if mult is None or add is None:
        return None
    elevations = [float(v) for k, v in mtl.items() if k.rpartition(".")[2] == "SUN_ELEVATION"]
    sin_el = np.sin(np.radians(elevations[0])) if elevations else 1.0
    if sin_el <= 0.01:
        sin_el = 0.01
    return mult / sin_el, add / sin_el


_PRE_COLLECTION_ID = re.compile(r"L[COTEM]\d(\d{3})(\d{3})(\d{4})(\d{3})[A-Z]{3}\d{2}")
_COLLECTION_ID = re.compile(r"L[COTEM]\d{2}_L[12][A-Z]{2}_\d{6}_(\d{4})(\d{2})(\d{2})")


def landsat_acquisition_date(name: str) -> dt.date | None:
    """Acquisition date from a Landsat product or scene ID (``LC08_L1TP_224078_20200518_…`` or
    the pre-collection ``LC80030172015001LGN00``), else ``None``."""
    m = _COLLECTION_ID.search(name)
    if m:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _PRE_COLLECTION_ID.search(name)
    if m:
        return dt.date(int(m.group(3)), 1, 1) + dt.timedelta(days=int(m.group(4)) - 1)
    return None


# Landsat 8/9: sun-synchronous, inclination 98.2 degrees, descending node at 10:11 mean local time
# (Landsat 8 Data Users Handbook, section 2).
_LANDSAT_INCLINATION = 98.2
_LANDSAT_NODE_HOURS = 10.0 + 11.0 / 60.0


def modelled_sun_elevation(lat: float, lon: float, date: dt.date) -> float:
    """Sun elevation (degrees) at a Landsat 8/9 overpass of latitude ``lat`` on ``date``.

    For products without their MTL file. The local solar time of the descending pass at latitude
    φ follows from the orbit: it is the node time shifted by the right-ascension offset Δα of the
    ground track, tan Δα = cos i · tan u with sin u = sin φ / sin i (later north of the equator,
    earlier south of it). The declination uses Cooper's (1969) approximation. Good to about a
    degree, which matters only at very low sun.
    """
    i = np.radians(_LANDSAT_INCLINATION)
    sin_u = np.clip(np.sin(np.radians(lat)) / np.sin(i), -1.0, 1.0)
    u = np.pi - np.arcsin(sin_u)  # argument of latitude on the descending half of the orbit
    delta_alpha = np.degrees(np.arctan2(np.sin(u) * np.cos(i), np.cos(u))) - 180.0
    delta_alpha = (delta_alpha + 180.0) % 360.0 - 180.0
    solar_hours = _LANDSAT_NODE_HOURS + delta_alpha / 15.0
    hour_angle = np.radians((solar_hours - 12.0) * 15.0)
    doy = date.timetuple().tm_yday
    decl = np.radians(23.44 * np.sin(np.radians(360.0 / 365.0 * (284 + doy))))
    phi = np.radians(lat)
    sin_el = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(hour_angle)
    return float(np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0))))


_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")


def sentinel2_offset(metadata_text: str | None, product_name: str) -> float | None:
    """Reflectance offset of a Sentinel-2 product from its metadata XML or its name, else ``None``.

    From baseline 04.00 on, products carry BOA_ADD_OFFSET (L2A) or RADIO_ADD_OFFSET (L1C) of -1000
    on the 1e-4 scale; before it they have none.
    """
    if metadata_text:
        m = re.search(r"<(?:BOA|RADIO)_ADD_OFFSET[^>]*>\s*(-?\d+)\s*<", metadata_text)
        if m:
            return int(m.group(1)) * S2_SCALE
        m = re.search(r"<PROCESSING_BASELINE>\s*(\d+)\.(\d+)\s*<", metadata_text)
        if m:
            return S2_OFFSET if int(m.group(1)) >= 4 else 0.0
    m = _BASELINE.search(product_name)
    if m:
        return S2_OFFSET if int(m.group(1)) >= 4 else 0.0
    return None


def sentinel2_offset_from_values(visible_dn: np.ndarray) -> tuple[float, float]:
    """(offset, share below zero) of a Sentinel-2 product without metadata or baseline in its name.

    Why: a product older than baseline 04.00 stores ``10000 * reflectance`` with no offset; assuming
    the 04.00 offset on it subtracts 0.1 from every band, which turns dark sea (NIR about 0.03, SWIR
    about 0.01) into negative values that no water index can read. Its stored numbers tell which
    applies: with the offset, a value below :data:`S2_ZERO_DN` is a negative reflectance. In the
    visible bands that does not happen over any surface: at the top of the atmosphere Rayleigh
    scattering alone adds several percent in blue and green, and after atmospheric correction water,
    vegetation and shadow still reflect about 0.01 or more. So when at least
    :data:`S2_PRE_BASELINE_SHARE` of the valid visible values lie below :data:`S2_ZERO_DN` (5 %, far
    above the sensor noise on the darkest water), the product has no offset; otherwise the 04.00
    offset holds. ``visible_dn`` holds the stored numbers of the visible bands, NaN where invalid.
    """
    values = visible_dn[np.isfinite(visible_dn)]
    if values.size == 0:
        return S2_OFFSET, 0.0
    share = float(np.count_nonzero(values < S2_ZERO_DN)) / values.size
    return (0.0 if share >= S2_PRE_BASELINE_SHARE else S2_OFFSET), share


# Generic integer data without a declared scale: dark-object subtraction at this low percentile of
# each band, then division by this high percentile of all bands together times the target.
PERCENTILE_DARK = 0.1
PERCENTILE_BRIGHT = 99.9
BRIGHT_REFLECTANCE = 0.9


def percentile_rescale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (scale, offset) for integer data whose physical units are not known.

    Why this rule: thresholds on normalised differences (NDWI, NDSI) need a zero that means "no
    signal" and a gain shared by all bands. Each band's darkest pixels (percentile
    :data:`PERCENTILE_DARK`) are taken as path radiance and subtracted (dark-object subtraction,
    Chavez 1988, Remote Sens. Environ. 24, 459–479); one gain for all bands maps the scene's
    brightest pixels (percentile :data:`PERCENTILE_BRIGHT` over all bands) to
    :data:`BRIGHT_REFLECTANCE`, the reflectance of fresh snow or bright cloud. The result is
    approximate and scene-dependent: give ``scale``/``offset`` where the units are known.
    ``values`` is (C, H, W) float with NaN for nodata.
    """
    c = values.shape[0]
    flat = values.reshape(c, -1)
    ok = np.all(np.isfinite(flat), axis=0)
    flat = flat[:, ok]
    if flat.shape[1] == 0:
        return np.ones(c), np.zeros(c)
    dark = np.percentile(flat, PERCENTILE_DARK, axis=1)
    bright = np.percentile(flat - dark[:, None], PERCENTILE_BRIGHT)
    gain = BRIGHT_REFLECTANCE / bright if bright > 0 else 1.0
    return np.full(c, gain), -dark * gain
