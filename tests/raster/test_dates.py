"""A prepared scene's acquisition date comes from its ACQUISITION_DATE tag, checked as a calendar day;
two scenes' dates relate as same, different or unknown."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from outcrop.raster.dates import acquisition_date, date_relation


def _scene(path, tags=None):
    with rasterio.open(path, "w", driver="GTiff", height=2, width=2, count=1, dtype="uint16", crs="EPSG:3031",
                       transform=from_origin(0, 2, 1, 1)) as dst:
        dst.write(np.ones((1, 2, 2), dtype=np.uint16))
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.mark.parametrize("tag, expected", [("2020-05-18", "2020-05-18"), (" 2015-01-01 ", "2015-01-01"),
                                           ("2020-02-30", None), ("2020-05-18T13:20:00", None), ("May 2020", None),
                                           ("<b>2020</b>", None)])
def test_the_date_is_the_tag_when_it_is_a_calendar_day(tmp_path, tag, expected):
    assert acquisition_date(_scene(tmp_path / "s.tif", {"ACQUISITION_DATE": tag})) == expected


def test_a_scene_without_the_tag_has_no_date_and_pairs_relate_by_date(tmp_path):
    assert acquisition_date(_scene(tmp_path / "s.tif")) is None
    assert date_relation("2020-05-18", "2020-05-18") == "same_date"
    assert date_relation("2020-05-18", "2015-01-01") == "different_dates"
    assert date_relation(None, "2015-01-01") == date_relation("2015-01-01", None) == "unknown"
