"""When a scene was acquired: read from its product, written into the prepared scene, read back.

Two scenes of the same ground on different days differ in light, haze, snow and sea ice while the
rock stays put, so the date says which re-identifications are across days and which tiles can be
shown to the encoder as two real views of one place. Every prepared scene records its acquisition
date as the GeoTIFF dataset tag ``ACQUISITION_DATE`` (ISO 8601, ``YYYY-MM-DD``) when it is known:

- a ``date`` column of the scene sheet, which overrides everything else;
- the product's metadata: Landsat MTL ``DATE_ACQUIRED``, Sentinel-2 MTD ``PRODUCT_START_TIME``,
  ``DATATAKE_SENSING_START`` or ``SENSING_TIME``, a STAC item's ``datetime``, or the tag itself on
  a source GeoTIFF (the demo writes it on its scenes);
- the date in a Landsat or Sentinel-2 product or file name.

Otherwise the tag is absent: a wrong date would be worse than none. :func:`acquisition_date` is the
one reader every stage uses; :func:`date_relation` tells the quality stage a pair of overlapping
scenes of one day (the same ground, the same light) from a pair of two days (another season, sun,
haze or snow line), which is where training has to earn its keep.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from outcrop.errors import OutcropError

TAG = "ACQUISITION_DATE"

# How two scenes' dates relate (the keys of metrics.json's reidentification.by_dates).
SAME_DATE, DIFFERENT_DATES, UNKNOWN = "same_date", "different_dates", "unknown"

_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# Sentinel-2 product names (S2B_MSIL1C_20200406T101559_N0209_...), tile-level band files
# (T32UPC_20200406T101559_B04.jp2) and the older validity stamp (_V20160605T101032_).
_S2_NAME = re.compile(r"(?:S2[A-D]_MSIL[12][AC]_|_T\d{2}[A-Z]{3}_|^T\d{2}[A-Z]{3}_|_V)(\d{4})(\d{2})(\d{2})T\d{6}")
_MTD_TIME = re.compile(r"<(PRODUCT_START_TIME|DATATAKE_SENSING_START|SENSING_TIME)\b[^>]*>\s*(\d{4}-\d{2}-\d{2})")


def parse_date(value: str, where: str) -> str:
    """``value`` as an ISO date ``YYYY-MM-DD`` (a calendar date that exists), else one clear error."""
    text = str(value).strip()
    m = _ISO_DATE.match(text)
    try:
        if m is None:
            raise ValueError("expected YYYY-MM-DD")
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError as exc:
        raise OutcropError(f"{where}: {text!r} is not a date ({exc}; e.g. 2021-01-31)") from None


def _date_or_none(text: str | None) -> str | None:
    """An ISO date from the first ten characters of ``text`` (a date or a datetime), else None."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(str(text).strip()[:10]).isoformat()
    except ValueError:
        return None


def date_from_mtl(mtl: Mapping[str, str] | None) -> str | None:
    """``DATE_ACQUIRED`` of a flattened Landsat MTL (``{"GROUP.KEY": value}``), else None."""
    for key, value in (mtl or {}).items():
        if key.rpartition(".")[2] in ("DATE_ACQUIRED", "ACQUISITION_DATE"):
            found = _date_or_none(value)
            if found:
                return found
    return None


def date_from_mtd(text: str | None) -> str | None:
    """The sensing date in a Sentinel-2 product or tile metadata XML (MTD_MSI*.xml, MTD_TL.xml), else None."""
    m = _MTD_TIME.search(text or "")
    return _date_or_none(m.group(2)) if m else None


def date_from_name(name: str) -> str | None:
    """The acquisition date in a Landsat or Sentinel-2 product, scene or band-file name, else None."""
    from outcrop.raster.sensors import landsat_acquisition_date

    landsat = landsat_acquisition_date(name)
    if landsat is not None:
        return landsat.isoformat()
    m = _S2_NAME.search(name)
    if m:
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError:
            return None
    return None


def product_date(
    *,
    sheet: str | None = None,
    mtl: Mapping[str, str] | None = None,
    mtd: str | None = None,
    stamped: str | None = None,
    names: Iterable[str] = (),
) -> tuple[str | None, str]:
    """The scene's acquisition date and where it came from, in the order of the module docstring.

    ``sheet``: the scene sheet's ``date`` (checked); ``mtl``/``mtd``: the product's metadata;
    ``stamped``: a date the source carries itself (its ``ACQUISITION_DATE`` tag, a STAC item's
    ``datetime``); ``names``: the product and file names to look for a date in.
    """
    if sheet:
        return parse_date(sheet, "date"), "scene sheet"
    for found, how in (
        (date_from_mtl(mtl), "MTL DATE_ACQUIRED"),
        (date_from_mtd(mtd), "Sentinel-2 metadata"),
        (_date_or_none(stamped), "the source's own date"),
    ):
        if found:
            return found, how
    for name in names:
        found = date_from_name(Path(str(name)).name) or date_from_name(str(name))
        if found:
            return found, f"the name {Path(str(name)).name}"
    return None, "unknown"


def acquisition_date(path: str | Path) -> str | None:
    """The ``ACQUISITION_DATE`` tag of a raster (a prepared scene, a demo scene), or None when absent.

    A tag that is not an ISO date is treated as absent: the date decides only how scores are
    grouped and which tiles pair up, and a garbled one must not stop a run.
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            value = src.tags().get(TAG)
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read the raster ({exc})") from None
    if value is None or not _ISO_DATE.match(str(value).strip()):
        return None
    return _date_or_none(value)


def date_relation(first: str | None, second: str | None) -> str:
    """``same_date``, ``different_dates``, or ``unknown`` when either scene's date is not known."""
    if first is None or second is None:
        return UNKNOWN
    return SAME_DATE if first == second else DIFFERENT_DATES
