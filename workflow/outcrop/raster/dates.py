"""When a prepared scene was seen: its acquisition date, read from the GeoTIFF dataset tag.

Every prepared scene records the day it was acquired as the dataset tag ``ACQUISITION_DATE``
(ISO ``YYYY-MM-DD``), absent when the source does not say. The quality stage reads it to tell a
pair of overlapping scenes of one day (the same ground, the same light) from a pair of two days
(another season, sun, haze or snow line), which is where training has to earn its keep.
"""

from __future__ import annotations

import datetime
import os
import re

TAG = "ACQUISITION_DATE"
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

# How two scenes' dates relate (the keys of metrics.json's reidentification.by_dates).
SAME_DATE, DIFFERENT_DATES, UNKNOWN = "same_date", "different_dates", "unknown"


def acquisition_date(path: str | os.PathLike[str]) -> str | None:
    """The scene's acquisition day as ``YYYY-MM-DD``, or None when the tag is absent or not a date.

    A tag is a header value: anything but a real calendar day (``2020-02-30``, a time, free text)
    counts as unknown rather than being trusted.
    """
    import rasterio

    with rasterio.open(path) as src:
        value = src.tags().get(TAG)
    if value is None:
        return None
    value = value.strip()
    if not _ISO_DAY.fullmatch(value):
        return None
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return None
    return value


def date_relation(first: str | None, second: str | None) -> str:
    """``same_date``, ``different_dates``, or ``unknown`` when either scene's date is not known."""
    if first is None or second is None:
        return UNKNOWN
    return SAME_DATE if first == second else DIFFERENT_DATES
