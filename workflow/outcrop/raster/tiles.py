"""Cut a prepared scene into square tiles once, into one memory-mappable array and a tile table.

Training and embedding read the array back memory-mapped, so no stage opens a file per tile.
Tiles start at multiples of the stride on the global run grid, so overlapping scenes cut the same
tiles. Cutting runs in two passes over row strips: the mask band alone decides which tiles are
kept (cheap), then the reflectance of the kept tiles is written straight into the output array,
so memory stays at a few strips whatever the scene size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import decode_reflectance, write_geodataframe
from outcrop.raster.geo import TileLayout
from outcrop.raster.surfaces import CLASS_NAMES, NODATA
from outcrop.raster.tile_store import _fill_gaps, write_tile_blocks
from outcrop.runtime.progress import Progress

FRACTION_COLUMNS = [name for code, name in sorted(CLASS_NAMES.items()) if code != NODATA]
# Columns tile tables written before their class existed lack; read as 0 (none of the tile).
LATER_FRACTIONS = ("unknown", "vegetation")


def with_later_fractions(table: Any) -> Any:
    """``table`` with every :data:`LATER_FRACTIONS` column present (0.0 where it was missing)."""
    for name in LATER_FRACTIONS:
        if name not in table.columns:
            table[name] = 0.0
    return table


def tile_origins(length: int, first_global: int, size: int, stride: int) -> np.ndarray:
    """Offsets (px) of tiles along one axis whose start sits on a global multiple of ``stride``."""
    first = (-first_global) % stride
    return np.arange(first, length - size + 1, stride, dtype=np.int64)


def grid_position(transform: Any) -> tuple[int, int]:
    """The global (row, column) of a raster's top-left pixel on the run grid: the one rule every cut uses.

    ``floor``, not ``round``: with the run's pixel alignment at half a pixel (Landsat's corners at
    15 m on a 30 m grid) ``round`` would send scenes to neighbouring global columns by parity, and
    a cut that placed its tiles otherwise than the run's own would not land on the run's tiles.
    """
    res = transform.a
    return int(math.floor(-transform.f / res + 1e-6)), int(math.floor(transform.c / res + 1e-6))


def _block_fractions(mask_strip: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Per-tile fractions of each surface class for tiles starting at ``cols`` in a mask strip.

    Counts per pixel column first (contiguous passes over the strip), then per tile as differences
    of running sums: the cost does not grow with the tile size or the overlap between tiles.
    """
    n_classes = len(CLASS_NAMES)
    per_column = np.stack([np.count_nonzero(mask_strip == c, axis=0) for c in range(n_classes)])
    running = np.zeros((n_classes, per_column.shape[1] + 1), dtype=np.int64)
    np.cumsum(per_column, axis=1, out=running[:, 1:])
    counts = running[:, cols + size] - running[:, cols]  # (classes, n)
    return counts.T / float(size * size)


def tile_scene(
    prepared_path: str | Path,
    out_tiles: str | Path,
    out_table: str | Path,
    *,
    scene_id: str,
    size: int = default("tiles.size"),
    stride: int = default("tiles.stride"),
    min_valid: float = default("tiles.min_valid"),
    aoi: Any = None,
    aoi_name: str = "AOI",
    log: Callable[[str], None] = print,
) -> int:
    """Cut ``prepared_path`` into tiles; write the tile array and the GeoParquet tile table.

    A tile is kept when at least ``min_valid`` of its pixels hold data (not nodata, not cloud)
    and, given an AOI polygon in the run CRS, its centre lies inside it. Returns the tile count.
    A scene with no such tile (all cloud, say) gets an empty array and table and a log line, not an
    error: one cloudy scene must not stop the run for every other scene.
    """
    import rasterio
    import shapely

    if size <= 0 or stride <= 0:
        raise OutcropError(f"tiles: size and stride must be positive (got {size}, {stride})")
    t0 = time.perf_counter()
    try:
        src = rasterio.open(prepared_path)
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{prepared_path}: cannot read prepared scene ({exc})") from None
    with src:
        bands = [b for b in src.tags().get("bands", "").split(",") if b]
        if len(bands) != src.count - 1:
            raise OutcropError(f"{prepared_path}: not a prepared scene (no band list tag)")
        if size > src.width or size > src.height:
            raise OutcropError(
                f"{prepared_path}: tile size {size} px is larger than the scene ({src.width}x{src.height} px)"
            )
        if aoi is not None and not shapely.intersects(aoi, shapely.box(*src.bounds)):
            raise OutcropError(f"{prepared_path}: scene {scene_id} does not overlap the AOI {aoi_name}")
        transform = src.transform
        row0_global, col0_global = grid_position(transform)
        rows = tile_origins(src.height, row0_global, size, stride)
        cols = tile_origins(src.width, col0_global, size, stride)
        tile_rows, tile_cols, frac_all = _scan_kept_tiles(
            src, rows, cols, size, min_valid, aoi, aoi_name, scene_id, log
        )
        n = len(tile_rows)
        _write_tile_array(src, out_tiles, tile_rows, tile_cols, size, stride, len(bands), scene_id, log)

    table = _tile_table(transform, src.crs, scene_id, tile_rows, tile_cols, frac_all, size)
    write_tile_table(out_table, table, TileLayout(size, stride, float(min_valid)))
    log(f"tiles: {scene_id}: {n} tiles of {size}px (stride {stride}) in {time.perf_counter() - t0:.1f}s")
    return n


def _scan_kept_tiles(
    src: Any,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int,
    min_valid: float,
    aoi: Any,
    aoi_name: str,
    scene_id: str,
    log: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1: which tiles to keep, from the mask band alone; their origins and surface fractions.

    No tile kept (all cloud or nodata) gives empty arrays and a log line, so the run goes on with
    the other scenes.
    """
    import shapely
    from rasterio.windows import Window

    from outcrop.raster.surfaces import CLOUD

    transform = src.transform
    res = transform.a
    mask_band = src.count
    kept_rc: list[tuple[np.ndarray, np.ndarray]] = []
    fractions: list[np.ndarray] = []
    scan = Progress(f"tiles: {scene_id}: scanning", len(rows), "strips", log)
    for i, r in enumerate(rows):
        strip = src.read(mask_band, window=Window(0, int(r), src.width, size))
        frac = _block_fractions(strip, cols, size)
        valid = 1.0 - frac[:, NODATA] - frac[:, CLOUD]
        keep = valid >= min_valid
        if aoi is not None and keep.any():
            cx = transform.c + (cols + size / 2) * res
            cy = transform.f - (r + size / 2) * res
            keep &= shapely.contains_xy(aoi, cx, np.full_like(cx, cy, dtype=float))
        if keep.any():
            kept_rc.append((np.full(keep.sum(), r), cols[keep]))
            fractions.append(np.column_stack([valid[keep], frac[keep][:, 1:]]))
        scan.update(i + 1)

    if not kept_rc:  # all cloud or nodata: an empty result, so the run goes on with the other scenes
        where = f" inside {aoi_name}" if aoi is not None else ""
        log(
            f"tiles: {scene_id}: no usable tiles: no tile{where} has at least {min_valid:.0%} valid pixels "
            "(not cloud, not nodata); writing an empty tile table"
        )
        kept_rc = [(np.empty(0, np.int64), np.empty(0, np.int64))]
        fractions = [np.empty((0, len(FRACTION_COLUMNS) + 1))]
    tile_rows = np.concatenate([rc[0] for rc in kept_rc])
    tile_cols = np.concatenate([rc[1] for rc in kept_rc])
    return tile_rows, tile_cols, np.concatenate(fractions)


def _write_tile_array(
    src: Any,
    out_tiles: str | Path,
    tile_rows: np.ndarray,
    tile_cols: np.ndarray,
    size: int,
    stride: int,
    n_bands: int,
    scene_id: str,
    log: Callable[[str], None],
) -> None:
    """Pass 2: the prepared codes of the kept tiles' pixels, once each, as the block store of
    :mod:`outcrop.raster.tile_store` (read back as tiles by :func:`~outcrop.raster.tile_store.open_tiles`)."""

    blocks = write_tile_blocks(
        src,
        out_tiles,
        tile_rows,
        tile_cols,
        size=size,
        stride=stride,
        n_bands=n_bands,
        what=f"tiles: {scene_id}: cutting",
        log=log,
    )
    log(f"tiles: {scene_id}: {len(tile_rows)} tiles stored as {blocks} blocks of the prepared pixels")


def _tile_table(
    transform: Any,
    crs: Any,
    scene_id: str,
    tile_rows: np.ndarray,
    tile_cols: np.ndarray,
    frac_all: np.ndarray,
    size: int,
) -> Any:
    """The GeoParquet tile table: one row per kept tile, its footprint and surface fractions."""
    import geopandas as gpd
    import shapely

    res = transform.a
    n = len(tile_rows)
    x0 = transform.c + tile_cols * res
    y0 = transform.f - tile_rows * res
    footprints = shapely.box(x0, y0 - size * res, x0 + size * res, y0)
    return gpd.GeoDataFrame(
        {
            "tile_id": np.arange(n, dtype=np.int64),
            "scene": scene_id,
            "row": tile_rows.astype(np.int64),
            "col": tile_cols.astype(np.int64),
            "size": np.full(n, size, dtype=np.int64),
            "valid": frac_all[:, 0],
            **{name: frac_all[:, k + 1] for k, name in enumerate(FRACTION_COLUMNS)},
        },
        geometry=footprints,
        crs=crs,
    )


# The key under which a tile table records the tile grid it was cut on (size, stride, clear fraction),
# in its pandas attributes (the Parquet footer's PANDAS_ATTRS): written with the tiles, read back by
# every stage that needs to frame tiles as the run did.
TILE_GRID_KEY = "tile_grid"


def write_tile_table(path: str | Path, table: Any, layout: TileLayout) -> None:
    """Write a tile table (GeoParquet) with the tile grid it was cut on recorded in its metadata."""
    table = table.copy()
    table.attrs[TILE_GRID_KEY] = layout.record()
    write_geodataframe(path, table)


def read_tile_grid(path: str | Path) -> TileLayout | None:
    """The tile grid recorded in a tile table's metadata (footer only), or None for a table written
    before outcrop recorded it."""
    import json

    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow raises many kinds
        raise OutcropError(f"{path}: not a readable tile table ({str(exc).splitlines()[0]})") from None
    try:
        attrs = json.loads(metadata.get(b"PANDAS_ATTRS", b"{}"))
    except ValueError:
        raise OutcropError(f"{path}: the tile table's metadata is not JSON") from None
    record = attrs.get(TILE_GRID_KEY) if isinstance(attrs, dict) else None
    return None if record is None else TileLayout.from_record(record, str(path))


def tables_tile_grid(paths: Sequence[str | Path]) -> TileLayout:
    """The one tile grid the tile tables ``paths`` were cut on; an error naming the table that records
    none (written before outcrop recorded it: cut its tiles again) or another grid."""
    layout: TileLayout | None = None
    for path in paths:
        found = read_tile_grid(path)
        if found is None:
            raise OutcropError(
                f"{path}: the tile table records no tile size and stride (it was written before "
                "outcrop recorded them); cut the tiles again (snakemake --forcerun tiles)"
            )
        if layout is not None and (found.size, found.stride) != (layout.size, layout.stride):
            raise OutcropError(
                f"{path}: tiles of {found.size} px at a stride of {found.stride}, other scenes' of "
                f"{layout.size} px at {layout.stride}; cut every scene with one tiles.size and "
                "tiles.stride"
            )
        layout = layout or found
    if layout is None:
        raise OutcropError("no tile tables given")
    return layout


def read_tile_table(path: str | Path) -> Any:
    """Read a tile table, checking the columns downstream stages rely on."""
    from outcrop.io import read_geoparquet

    table = with_later_fractions(read_geoparquet(path))
    missing = {"tile_id", "scene", "row", "col", "size", "valid", *FRACTION_COLUMNS} - set(table.columns)
    if missing:
        raise OutcropError(f"{path}: not a tile table (missing columns {sorted(missing)})")
    return table


def read_tile_positions(path: str | Path, n_tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixel origins (row, col) of a tile table's tiles, in tile-id order, without reading geometries.

    ``n_tiles`` is the length of the scene's tile array: a table of another length belongs to
    another run, and neighbours looked up in it would be other tiles.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["tile_id", "row", "col"])
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow raises many kinds: a missing column, a broken file
        raise OutcropError(f"{path}: not a tile table with tile_id, row and col ({str(exc).splitlines()[0]})") from None
    ids = table.column("tile_id").to_numpy()
    if len(ids) != n_tiles or not np.array_equal(ids, np.arange(n_tiles)):
        raise OutcropError(
            f"{path}: {len(ids)} rows for an array of {n_tiles} tiles (the table and the array are of different runs)"
        )
    return (
        np.asarray(table.column("row").to_numpy(), dtype=np.int64),
        np.asarray(table.column("col").to_numpy(), dtype=np.int64),
    )


def cut_offset_tiles(
    prepared_path: str | Path,
    *,
    size: int,
    stride: int,
    offset: int,
    bounds: tuple[float, float, float, float] | None = None,
    min_valid: float = default("tiles.min_valid"),
    limit: int | None = None,
    seed: int = 0,
    context: bool = False,
    where: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, ...]:
    """Tiles of a prepared scene on the global stride grid shifted by ``offset`` px in rows and columns.

    For re-identification: the same ground as the run's own tiles, framed differently, so that a
    match is never pixel for pixel. Only tiles wholly inside ``bounds`` (left, bottom, right, top, in
    the scene's CRS) with ``min_valid`` clear pixels are cut, and, given ``where`` (footprints ->
    which to keep), only those it keeps; with ``limit``, a seeded sample of that many, drawn after
    every filter. Returns (N, C, size, size) float32 reflectance and the N footprints (shapely boxes),
    and with ``context`` the N block spectra (:mod:`outcrop.raster.spectra`) read around each tile.
    """
    import rasterio
    import shapely
    from rasterio.windows import Window

    from outcrop.raster.surfaces import CLOUD

    try:
        src = rasterio.open(prepared_path)
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{prepared_path}: cannot read prepared scene ({exc})") from None
    with src:
        transform, res = src.transform, src.transform.a
        row0, col0 = grid_position(transform)
        rows = tile_origins(src.height, row0 - offset, size, stride)
        cols = tile_origins(src.width, col0 - offset, size, stride)
        if bounds is not None:
            left, bottom, right, top = bounds
            x0, y0 = transform.c + cols * res, transform.f - rows * res
            cols = cols[(x0 >= left - 1e-6) & (x0 + size * res <= right + 1e-6)]
            rows = rows[(y0 <= top + 1e-6) & (y0 - size * res >= bottom - 1e-6)]
        picked: list[tuple[int, int]] = []
        for r in rows:
            frac = _block_fractions(src.read(src.count, window=Window(0, int(r), src.width, size)), cols, size)
            valid = 1.0 - frac[:, NODATA] - frac[:, CLOUD]
            picked += [(int(r), int(c)) for c in cols[valid >= min_valid]]
        if where is not None and picked:
            rc = np.array(picked, dtype=np.float64)
            x0, y0 = transform.c + rc[:, 1] * res, transform.f - rc[:, 0] * res
            keep = np.asarray(where(shapely.box(x0, y0 - size * res, x0 + size * res, y0)), dtype=bool)
            picked = [p for p, k in zip(picked, keep) if k]
        if limit is not None and len(picked) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(picked), limit, replace=False))
            picked = [picked[i] for i in keep]
        bands = list(range(1, src.count))
        tiles = np.empty((len(picked), len(bands), size, size), dtype=np.float32)
        for i, (r, c) in enumerate(picked):
            tiles[i] = decode_reflectance(src.read(bands, window=Window(c, r, size, size)))
        tiles = _fill_gaps(tiles) if len(picked) else tiles
        blocks = (
            np.stack([_read_block_spectra(src, r, c, size, min_valid) for r, c in picked])
            if context and picked
            else np.zeros((0, 5 * len(bands)))
        )
    rc = np.array(picked, dtype=np.float64).reshape(-1, 2)
    x0, y0 = transform.c + rc[:, 1] * res, transform.f - rc[:, 0] * res
    boxes = shapely.box(x0, y0 - size * res, x0 + size * res, y0)
    return (tiles, boxes, blocks) if context else (tiles, boxes)


def _read_block_spectra(src: Any, row: int, col: int, size: int, min_valid: float) -> np.ndarray:
    """The block spectrum of the tile at (row, col), its squares read from the prepared raster.

    A square counts when it lies inside the raster with ``min_valid`` clear pixels, as a tile of the
    run's table would be kept; its few gaps are filled as a kept tile's are.
    """
    from rasterio.windows import Window

    from outcrop.raster.spectra import BLOCK, square_spectra
    from outcrop.raster.surfaces import CLOUD

    squares = []
    for dr, dc in BLOCK:
        r, c = row + dr * size, col + dc * size
        if r < 0 or c < 0 or r + size > src.height or c + size > src.width:
            continue
        frac = _block_fractions(src.read(src.count, window=Window(c, r, size, size)), np.array([0]), size)[0]
        if 1.0 - frac[NODATA] - frac[CLOUD] < min_valid:
            continue
        squares.append(decode_reflectance(src.read(list(range(1, src.count)), window=Window(c, r, size, size))))
    return square_spectra(_fill_gaps(np.stack(squares)))
