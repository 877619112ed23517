"""Plain names and descriptions of the fields of the run's tables (the data dictionary).

Why in code: the same words go into the GeoPackages (field aliases and comments, which QGIS shows
in its attribute table and layer properties) and into ``docs/outputs.md``; a test keeps the two in
step and checks that no written field lacks an entry. Level columns (``k12``, ``h6``) are named by
pattern because the levels come from the config.
"""

from __future__ import annotations

import re

# field -> (plain name, description). A plain name never equals its field's name but for case:
# GDAL takes such an alias for none.
FIELDS: dict[str, tuple[str, str]] = {
    "id": (
        "Index row",
        "Row of the tile in the run's FAISS index (index/tiles.parquet); one id per indexed tile of the run",
    ),
    "scene": ("Scene id", "Scene identifier, as in the scene sheet"),
    "tile_id": (
        "Tile in scene",
        "Row of the tile in its scene's tile table and tile array (tiles/{scene}.parquet, .npy)",
    ),
    "row": ("Pixel row", "Row of the tile's top-left pixel on the prepared scene's grid"),
    "col": ("Pixel column", "Column of the tile's top-left pixel on the prepared scene's grid"),
    "size": ("Tile size (px)", "Pixels per tile side"),
    "valid": ("Valid share", "Share of the tile's pixels that are clear and valid (not nodata, not cloud)"),
    "rock": ("Rock share", "Share of the tile's pixels classed rock (exposed ground) by the surface rules"),
    "vegetation": (
        "Vegetation share",
        "Share of the tile's pixels classed vegetation (NDVI above surfaces.ndvi_vegetation)",
    ),
    "snow_ice": ("Snow/ice share", "Share of the tile's pixels classed snow or ice"),
    "water": ("Water share", "Share of the tile's pixels classed water"),
    "cloud": ("Cloud share", "Share of the tile's pixels classed cloud"),
    "unknown": (
        "Unknown-ground share",
        "Share of the tile's pixels of ground whose bands cannot tell rock from water, snow or vegetation "
        "(counted as exposed ground by the rock filters)",
    ),
    "rank": ("Analogue rank", "Rank of the analogue, 1 = most similar to the known deposits"),
    "score": ("Similarity", "Cosine similarity of the tile's embedding to the query that ranked it (1 = identical)"),
    "query": (
        "Matched query",
        "Which query ranked the tile: 'set' (all known deposits together) or the name of one deposit",
    ),
    "nearest_positive": ("Nearest known deposit", "Name of the known deposit nearest the tile"),
    "distance_km": (
        "Distance to nearest deposit (km)",
        "Distance from the tile's centre to the nearest known deposit, in km",
    ),
    "lon": ("Longitude", "Longitude of the tile's centre, degrees east (WGS 84)"),
    "lat": ("Latitude", "Latitude of the tile's centre, degrees north (WGS 84)"),
    "name": ("Deposit name", "Name of the deposit"),
    "radius_m": ("Radius (m)", "Radius of the planted patch, in metres (demo truth only)"),
}

# Layer descriptions (GeoPackage gpkg_contents.description).
LAYERS: dict[str, str] = {
    "clusters": "Cluster label of every indexed tile at each k-means k (kN) and each Ward hierarchy cut (hN), "
    "with the tile's surface shares. Field meanings: docs/outputs.md.",
    "analogues": "Places ranked by similarity of their tiles to the known deposits (one tile per site), "
    "with the nearest known deposit. Field meanings: docs/outputs.md.",
    "deposits": "Known mineral occurrences given to the run (demo: the published planted patches).",
    "hidden_deposits": "Demo only: planted alteration patches withheld from the run, read only by outcrop evaluate.",
}

_LEVEL = re.compile(r"([kh])([0-9]+)")


def field_info(name: str) -> tuple[str, str] | None:
    """(plain name, description) of a table field, or None for a field without an entry."""
    if name in FIELDS:
        return FIELDS[name]
    level = _LEVEL.fullmatch(name)
    if level is None:
        return None
    n = int(level.group(2))
    if level.group(1) == "k":
        return (
            f"Cluster (k={n})",
            f"k-means cluster of the tile among {n} clusters (0..{n - 1}); clusters/rasters/k{n}/ maps it",
        )
    return (
        f"Family ({n} groups)",
        f"Group of the tile when the Ward hierarchy over the finest k's clusters "
        f"is cut into {n} (0..{n - 1}); clusters/rasters/h{n}/ maps it",
    )
