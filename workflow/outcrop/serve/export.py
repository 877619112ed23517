"""A search's result list as files: GeoJSON, CSV and GeoPackage, with the fields of ``analogues.gpkg``.

Each is made in memory and sent; nothing is written on the server's disk. The CSV goes through
:func:`outcrop.search.analogues.analogues_csv`, the writer of the run's ``analogues.csv``.
"""

from __future__ import annotations

import io
import json
from typing import Any

from outcrop.search.analogues import RESULT_COLUMNS, analogues_csv

FORMATS = {
    "geojson": ("application/geo+json", "geojson"),
    "csv": ("text/csv", "csv"),
    "gpkg": ("application/geopackage+sqlite3", "gpkg"),
}


def export_bytes(ranked: Any, fmt: str) -> bytes:
    """``ranked`` (a GeoDataFrame of :data:`RESULT_COLUMNS` and footprints) as a file of ``fmt``.

    GeoJSON is in WGS 84 longitude/latitude (RFC 7946); the GeoPackage keeps the run's CRS, as
    ``analogues.gpkg`` does.
    """
    if fmt == "csv":
        return analogues_csv(ranked).encode("utf-8")
    if fmt == "geojson":
        features = ranked[[*RESULT_COLUMNS, ranked.geometry.name]].to_crs("EPSG:4326").to_geo_dict(drop_id=True)
        return json.dumps(features).encode("utf-8")
    if fmt == "gpkg":
        import pyogrio

        buf = io.BytesIO()
        pyogrio.write_dataframe(ranked[[*RESULT_COLUMNS, ranked.geometry.name]], buf, driver="GPKG", layer="analogues")
        return buf.getvalue()
    raise ValueError(f"unknown export format {fmt!r}")
