"""The area of interest: a polygon file, or a coastline buffered into a coastal strip, in the run CRS.

Tiles are cut only inside it. A coastline file holds lines; the strip of ``buffer_km`` either side
of them is the ground a coastal study cares about. Buffering happens in the run CRS, whose unit is
the metre for the projected CRSs a run uses (EPSG:3031 and UTM zones).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import read_vector
from outcrop.limits import refuse_above


def aoi_geometry(path: str | Path, crs: str, buffer_km: float = default("aoi.buffer_km")) -> Any:
    """One shapely geometry: the union of the file's features in ``crs``, lines buffered by ``buffer_km``.

    Polygons are kept as they are (and grown by ``buffer_km`` when it is positive); lines and points
    need a positive ``buffer_km`` since they enclose no area. Reads GeoPackage, GeoJSON, Shapefile
    and whatever else pyogrio reads.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError
    from shapely import get_num_coordinates, make_valid, union_all

    path = Path(path)
    if not path.exists():
        raise OutcropError(f"{path}: AOI file not found")
    if buffer_km < 0:
        raise OutcropError(f"{path}: buffer_km must not be negative, not {buffer_km}")
    try:
        target = CRS.from_user_input(crs)
    except CRSError:
        raise OutcropError(f"{path}: unknown run CRS {crs!r}") from None
    if target.is_geographic:
        raise OutcropError(f"{path}: the run CRS {crs} is geographic; buffers need a projected CRS in metres")
    try:
        gdf = read_vector(path)
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise OutcropError(f"{path}: cannot read AOI file ({str(exc).splitlines()[0][:200]})") from None
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise OutcropError(f"{path}: AOI file holds no geometry")
    # Before the union and the buffer, whose cost grows faster than the vertices.
    refuse_above(
        "aoi_vertices", int(get_num_coordinates(gdf.geometry.to_numpy()).sum()), str(path), "vertices in its geometries"
    )
    if gdf.crs is None:
        raise OutcropError(f"{path}: AOI file has no CRS")
    geoms = gdf.to_crs(target).geometry
    kinds = set(geoms.geom_type)
    areal = {"Polygon", "MultiPolygon"}
    if not kinds <= areal and buffer_km <= 0:
        raise OutcropError(
            f"{path}: AOI holds {', '.join(sorted(kinds - areal))} geometry; "
            f"give a positive buffer_km to turn it into a strip"
        )
    geom = union_all([make_valid(g) for g in geoms])
    if buffer_km > 0:
        geom = geom.buffer(buffer_km * 1000.0)
    if geom.is_empty or geom.area == 0:
        raise OutcropError(f"{path}: AOI has no area")
    return geom


def run_aoi(
    path: str | Path | None,
    *,
    prepared: str | Path,
    buffer_km: float = default("aoi.buffer_km"),
    grid: Path | None = None,
    crs: str = default("grid.crs"),
) -> Any | None:
    """The AOI of a stage that reads a prepared scene, in the run CRS (None without a ``path``).

    The run CRS is ``grid``'s (the run's ``grid.json``), else ``crs``, else (``auto``) the prepared
    scene's own.
    """
    if not path:
        return None
    if grid is not None:
        from outcrop.raster.grid_choice import load_grid

        crs = load_grid(grid).crs
    elif crs == "auto":
        from outcrop.raster.geo import read_scene_grid

        crs = read_scene_grid(prepared).crs.to_wkt()
    return aoi_geometry(path, crs, buffer_km=buffer_km)


def tile_scene_in_aoi(
    prepared: Path,
    out_tiles: Path,
    out_table: Path,
    *,
    scene: str,
    aoi: Path | None = None,
    aoi_buffer_km: float = default("aoi.buffer_km"),
    grid: Path | None = None,
    crs: str = default("grid.crs"),
    size: int = default("tiles.size"),
    stride: int = default("tiles.stride"),
    min_valid: float = default("tiles.min_valid"),
    log: Callable[[str], None] = print,
) -> int:
    """The ``tile`` stage: :func:`outcrop.raster.tiles.tile_scene` inside the AOI file ``aoi`` (buffered
    by ``aoi_buffer_km``), brought into the run CRS (:func:`run_aoi`). Here rather than in
    :mod:`outcrop.raster.tiles`, which the stages that only read tiles import without the AOI's needs."""
    from outcrop.raster.tiles import tile_scene

    geometry = run_aoi(aoi, prepared=prepared, buffer_km=aoi_buffer_km, grid=grid, crs=crs)
    return tile_scene(
        prepared,
        out_tiles,
        out_table,
        scene_id=scene,
        size=size,
        stride=stride,
        min_valid=min_valid,
        aoi=geometry,
        aoi_name=str(aoi),
        log=log,
    )
