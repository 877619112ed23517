"""Collars without a nodata tag are masked as nodata, and a sheet column turns that off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from outcrop.io import read_prepared
from outcrop.raster.collar import find_collar
from outcrop.raster.scenes import prepare_scene
from outcrop.raster.sheets import read_scene_sheet
from outcrop.raster.surfaces import NODATA
from shared_data import SHARED_DATA

SHARED = SHARED_DATA


def _collared(path: Path, value: int = 1) -> float:
    """A 3-band uint8 scene on a tilted footprint, padded with ``value``; returns the collar share."""
    rng = np.random.default_rng(0)
    data = rng.integers(20, 200, (3, 200, 200)).astype(np.uint8)
    rows, cols = np.mgrid[0:200, 0:200]
    outside = (rows + cols < 80) | (rows - cols > 90) | (cols > 170)
    data[:, outside] = value
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=3,
        dtype="uint8",
        crs="EPSG:32618",
        transform=from_origin(500000, 4000000, 30, 30),
    ) as dst:
        dst.write(data)
    return float(outside.mean())


def _nodata_share(path: Path) -> float:
    _, mask, _, _ = read_prepared(path)
    return float(np.mean(mask == NODATA))


def _prepare(src: Path, out: Path, collar: bool = True, resolution: float = 30) -> list[str]:
    lines: list[str] = []
    bands = ["blue", "green", "red"]
    prepare_scene(
        str(src),
        "geotiff",
        out,
        scene_id="s",
        bands=bands,
        crs="EPSG:32618",
        resolution=resolution,
        declared_bands=list(bands),
        collar=collar,
        log=lines.append,
    )
    return lines


def test_synthetic_collar_without_nodata_tag_is_masked_and_logged(tmp_path):
    share = _collared(tmp_path / "c.tif")
    lines = _prepare(tmp_path / "c.tif", tmp_path / "p.tif")
    assert abs(_nodata_share(tmp_path / "p.tif") - share) < 0.02
    assert any("border of value 1" in line and "masked as nodata" in line for line in lines)
    _prepare(tmp_path / "c.tif", tmp_path / "kept.tif", collar=False)
    assert _nodata_share(tmp_path / "kept.tif") < 0.01


def test_constant_interior_is_not_a_collar():
    band = np.random.default_rng(1).integers(2, 200, (50, 50)).astype(np.uint8)
    band[10:40, 10:40] = 1  # a lake of one value inside ground: not connected to the edge
    assert find_collar(band) is None
    band[0:5] = 1  # now an edge strip joins nothing inside: the lake keeps the value from being nodata
    assert find_collar(band) is None


@pytest.mark.skipif(SHARED is None, reason="the shared real scenes are not here")
def test_shared_geotiffs(tmp_path):
    # Olinda has no collar: nothing is masked.
    with rasterio.open(SHARED / "landsat7" / "L7_ETMs_olinda.tif") as src:
        assert find_collar(src.read(1)) is None
    # The Bahamas subset with its nodata tag removed: its 0 collar (a third of the file) is found.
    with rasterio.open(SHARED / "landsat7" / "RGB.byte_bahamas.tif") as src:
        data, profile = src.read(), src.profile
    profile.update(nodata=None)
    untagged = tmp_path / "bahamas.tif"
    with rasterio.open(untagged, "w", **profile) as dst:
        dst.write(data)
    collar = find_collar(data[0])
    assert collar is not None and collar.value == 0 and 0.25 < collar.share < 0.4
    _prepare(untagged, tmp_path / "p.tif", resolution=300)
    assert _nodata_share(tmp_path / "p.tif") > 0.25


def test_sheet_collar_column(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text("scene\tsource\tsensor\trole\tcollar\na\ta.tif\tgeotiff\ttrain\toff\n")
    assert read_scene_sheet(sheet)[0]["collar"] == "off"
    sheet.write_text("scene\tsource\tsensor\trole\tcollar\na\ta.tif\tgeotiff\ttrain\tmaybe\n")
    with pytest.raises(Exception, match="collar"):
        read_scene_sheet(sheet)
