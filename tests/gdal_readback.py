"""What GDAL itself reports of a raster, the way `gdalinfo` shows it: band scale, offset,
description, category names and raster attribute table.

rasterio wraps scale, offset and descriptions but neither category names nor attribute tables, so
these are read by calling the GDAL library that rasterio ships with (its C API, through ctypes):
exactly what QGIS and `gdalinfo` read, not our own parse of the XML we wrote.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import rasterio


def _libgdal() -> ctypes.CDLL:
    here = os.path.dirname(rasterio.__file__)
    found = sorted(glob.glob(os.path.join(here, "..", "rasterio.libs", "libgdal*.so*")))
    if not found:  # a rasterio built against a system GDAL
        found = ["libgdal.so"]
    lib = ctypes.CDLL(found[0])
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterCount.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    for name in ("GDALGetRasterScale", "GDALGetRasterOffset"):
        getattr(lib, name).restype = ctypes.c_double
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALGetDescription.restype = ctypes.c_char_p
    lib.GDALGetDescription.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALGetDefaultRAT.restype = ctypes.c_void_p
    lib.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    for name in ("GDALRATGetRowCount", "GDALRATGetColumnCount"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.GDALRATGetNameOfCol.restype = ctypes.c_char_p
    lib.GDALRATGetNameOfCol.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALRATGetUsageOfCol.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALRATGetValueAsString.restype = ctypes.c_char_p
    lib.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    return lib


def gdal_bands(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Per band: description, scale, offset, category names and attribute table (columns, rows)."""
    lib = _libgdal()
    ds = lib.GDALOpen(os.fspath(path).encode(), 0)
    assert ds, f"GDAL cannot open {path}"
    try:
        bands = []
        for i in range(1, lib.GDALGetRasterCount(ds) + 1):
            band = lib.GDALGetRasterBand(ds, i)
            # Scale first: the GeoTIFF driver loads the .aux.xml lazily, on the first call that
            # needs it, and reading category names alone does not trigger it (`gdalinfo` reads
            # scale and offset before categories too).
            scale, offset = lib.GDALGetRasterScale(band, None), lib.GDALGetRasterOffset(band, None)
            names_ptr = lib.GDALGetRasterCategoryNames(band)
            names: list[str] = []
            if names_ptr:
                j = 0
                while names_ptr[j] is not None:
                    names.append(names_ptr[j].decode())
                    j += 1
            rat = lib.GDALGetDefaultRAT(band)
            columns, rows = [], []
            if rat:
                ncol = lib.GDALRATGetColumnCount(rat)
                columns = [
                    (lib.GDALRATGetNameOfCol(rat, c).decode(), lib.GDALRATGetUsageOfCol(rat, c)) for c in range(ncol)
                ]
                rows = [
                    [lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(ncol)]
                    for r in range(lib.GDALRATGetRowCount(rat))
                ]
            bands.append(
                {
                    "description": lib.GDALGetDescription(band).decode(),
                    "scale": scale,
                    "offset": offset,
                    "categories": names,
                    "rat_columns": columns,
                    "rat_rows": rows,
                }
            )
        return bands
    finally:
        lib.GDALClose(ds)


def ogr_fields(path: str | os.PathLike[str], layer: str) -> dict[str, tuple[str, str]]:
    """Per field of ``layer``: (alternative name, comment) as GDAL reads them (what QGIS shows as
    alias and comment)."""
    lib = _libgdal()
    lib.GDALOpenEx.restype = ctypes.c_void_p
    lib.GDALOpenEx.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALDatasetGetLayerByName.restype = ctypes.c_void_p
    lib.GDALDatasetGetLayerByName.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.OGR_L_GetLayerDefn.restype = ctypes.c_void_p
    lib.OGR_L_GetLayerDefn.argtypes = [ctypes.c_void_p]
    lib.OGR_FD_GetFieldCount.argtypes = [ctypes.c_void_p]
    lib.OGR_FD_GetFieldDefn.restype = ctypes.c_void_p
    lib.OGR_FD_GetFieldDefn.argtypes = [ctypes.c_void_p, ctypes.c_int]
    for name in ("OGR_Fld_GetNameRef", "OGR_Fld_GetAlternativeNameRef", "OGR_Fld_GetComment"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    ds = lib.GDALOpenEx(os.fspath(path).encode(), 0x04, None, None, None)  # GDAL_OF_VECTOR
    assert ds, f"GDAL cannot open {path}"
    try:
        lyr = lib.GDALDatasetGetLayerByName(ds, layer.encode())
        assert lyr, f"{path}: no layer {layer}"
        defn = lib.OGR_L_GetLayerDefn(lyr)
        out = {}
        for i in range(lib.OGR_FD_GetFieldCount(defn)):
            fld = lib.OGR_FD_GetFieldDefn(defn, i)
            out[lib.OGR_Fld_GetNameRef(fld).decode()] = (
                (lib.OGR_Fld_GetAlternativeNameRef(fld) or b"").decode(),
                (lib.OGR_Fld_GetComment(fld) or b"").decode(),
            )
        return out
    finally:
        lib.GDALClose(ds)
