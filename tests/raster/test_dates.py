"""Every prepared scene records when it was acquired: from the sheet, the product's metadata or its name;
the date is read back from its ACQUISITION_DATE tag, checked as a calendar day, and two scenes' dates
relate as same, different or unknown."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from outcrop import OutcropError
from outcrop.raster.dates import (
    TAG,
    acquisition_date,
    date_from_mtd,
    date_from_mtl,
    date_from_name,
    date_relation,
    parse_date,
)
from outcrop.raster.scenes import prepare_scene
from outcrop.raster.sensors import parse_mtl_text
from outcrop.raster.sheets import read_scene_sheet
from shared_data import DATA

TESTS = Path(__file__).resolve().parents[1]
METADATA = TESTS / "data" / "metadata"
BOUCONNE = TESTS / "data" / "bouconne" / "bouconne_s2_l3a_20180429.tif"
SHARED = DATA
PARANA = SHARED / "landsat8" / "LC08_L1TP_224078_20200518_parana"
BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]


def test_dates_in_real_product_metadata_and_names():
    mtl = parse_mtl_text((METADATA / "LC08_L1TP_193024_20200509_20200509_01_RT_MTL.txt").read_text())
    assert date_from_mtl(mtl) == "2020-05-09"
    mtd = (METADATA / "S2B_MSIL1C_20220615T101559_N0400_R065_T32UPC_20220615T122549_MTD.xml").read_text()
    assert date_from_mtd(mtd) == "2022-06-15"
    assert date_from_name("LC08_L1TP_224078_20200518_20200518_01_RT_B2.TIF") == "2020-05-18"
    assert date_from_name("LC80030172015001LGN00_B2.tiff") == "2015-01-01"  # year and day of year
    # The sensing time, not the product's generation time that follows the tile.
    assert date_from_name("S2A_MSIL2A_20200221T102041_N0214_R065_T32UQC_20200222T120618") == "2020-02-21"
    assert date_from_name("T32UPC_20200406T101559_B04.jp2") == "2020-04-06"
    assert date_from_name("s2_B04.jp2") is None and date_from_name("bouconne.tif") is None
    assert date_from_mtl({}) is None and date_from_mtd("<xml/>") is None


def _prepare(source, out, **kw):
    prepare_scene(
        str(source),
        "geotiff",
        out,
        scene_id="s",
        bands=BANDS,
        crs="EPSG:32631",
        resolution=10.0,
        scale=1e-4,
        offset=0.0,
        log=lambda m: None,
        **kw,
    )
    return out


def test_a_prepared_scene_carries_the_sources_date_and_the_sheet_overrides_it(tmp_path):
    assert acquisition_date(_prepare(BOUCONNE, tmp_path / "a.tif")) == "2018-04-29"
    assert acquisition_date(_prepare(BOUCONNE, tmp_path / "b.tif", date="2019-03-01")) == "2019-03-01"


def test_an_undated_scene_has_no_date_tag(tmp_path):
    plain = tmp_path / "plain.tif"
    with rasterio.open(BOUCONNE) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = names
    prepared = _prepare(plain, tmp_path / "p.tif")
    with rasterio.open(prepared) as src:
        assert TAG not in src.tags()
    assert acquisition_date(prepared) is None


def test_the_mtl_date_wins_over_a_date_in_the_file_names(tmp_path):
    """A product folder of real Landsat 8 bands (cut from the Paraná scene, named 2020-05-18) with a
    real MTL of another acquisition: the MTL's DATE_ACQUIRED is the one recorded."""
    folder = tmp_path / "product"
    folder.mkdir()
    for token in ("B2", "B3", "B4"):
        src_path = next(PARANA.glob(f"*_{token}.TIF"))
        with rasterio.open(src_path) as src:
            window = Window(700, 700, 128, 128)
            profile = src.profile | {"width": 128, "height": 128, "transform": src.window_transform(window)}
            with rasterio.open(folder / src_path.name, "w", **profile) as dst:
                dst.write(src.read(window=window))
    shutil.copy(METADATA / "LC08_L1TP_193024_20200509_20200509_01_RT_MTL.txt", folder / "LC08_PRODUCT_MTL.txt")
    out = tmp_path / "p.tif"
    prepare_scene(
        str(folder),
        "landsat-c2l1",
        out,
        scene_id="p",
        bands=["blue", "green", "red"],
        crs="EPSG:32621",
        resolution=30.0,
        log=lambda m: None,
    )
    assert acquisition_date(out) == "2020-05-09"
    (folder / "LC08_PRODUCT_MTL.txt").unlink()
    prepare_scene(
        str(folder),
        "landsat-c2l1",
        out,
        scene_id="p",
        bands=["blue", "green", "red"],
        crs="EPSG:32621",
        resolution=30.0,
        log=lambda m: None,
    )
    assert acquisition_date(out) == "2020-05-18"


def test_a_garbled_date_tag_reads_as_unknown(tmp_path):
    path = tmp_path / "g.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
        dst.update_tags(**{TAG: "soon"})
    assert acquisition_date(path) is None


def _sheet(tmp_path, date):
    sheet = tmp_path / "scenes.tsv"
    sheet.write_text(f"scene\tsource\tsensor\trole\tdate\na\t{BOUCONNE}\tgeotiff\ttrain\t{date}\n")
    return sheet


def test_a_sheet_date_is_checked_and_kept(tmp_path):
    assert read_scene_sheet(_sheet(tmp_path, "2018-04-29"))[0]["date"] == "2018-04-29"
    assert read_scene_sheet(_sheet(tmp_path, ""))[0]["date"] == ""
    with pytest.raises(OutcropError, match=r"scenes.tsv: line 2: date: '2021-02-30' is not a date") as err:
        read_scene_sheet(_sheet(tmp_path, "2021-02-30"))
    assert "\n" not in str(err.value)
    with pytest.raises(OutcropError, match=r"scenes.tsv: line 2: date: '21/02/2021' does not match"):
        read_scene_sheet(_sheet(tmp_path, "21/02/2021"))
    with pytest.raises(OutcropError, match=r"when: '2021-13-01' is not a date"):
        parse_date("2021-13-01", "when")


def _scene(path, tags=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=2,
        width=2,
        count=1,
        dtype="uint16",
        crs="EPSG:3031",
        transform=from_origin(0, 2, 1, 1),
    ) as dst:
        dst.write(np.ones((1, 2, 2), dtype=np.uint16))
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("2020-05-18", "2020-05-18"),
        (" 2015-01-01 ", "2015-01-01"),
        ("2020-02-30", None),
        ("2020-05-18T13:20:00", None),
        ("May 2020", None),
        ("<b>2020</b>", None),
    ],
)
def test_the_date_is_the_tag_when_it_is_a_calendar_day(tmp_path, tag, expected):
    assert acquisition_date(_scene(tmp_path / "s.tif", {TAG: tag})) == expected


def test_a_scene_without_the_tag_has_no_date_and_pairs_relate_by_date(tmp_path):
    assert acquisition_date(_scene(tmp_path / "s.tif")) is None
    assert date_relation("2020-05-18", "2020-05-18") == "same_date"
    assert date_relation("2020-05-18", "2015-01-01") == "different_dates"
    assert date_relation(None, "2015-01-01") == date_relation("2015-01-01", None) == "unknown"
