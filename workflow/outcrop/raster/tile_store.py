"""A scene's tile array on disk: each prepared pixel once, read back as tiles without a copy per tile.

Tiles overlap (32 px at stride 16 covers every pixel four times), so an array of whole tiles holds
a scene four times over, and as float32 reflectance in twice the bytes of the prepared scene's
uint16 codes: 6.6 GB for a full Landsat scene beside its 0.8 GB COG. The tiles stage instead writes
``tiles/{scene}.npy`` as the prepared scene's own uint16 codes (``reflectance = code · scale +
offset``, :data:`outcrop.io.PREPARED_SCALE` and ``PREPARED_OFFSET``, 0 = nodata), cut into square
**blocks** of ``side = gcd(size, stride)`` pixels, (M, C, side, side): every tile is a k x k square
of whole blocks (k = size / side), since tiles start at multiples of the stride on one grid. Only
the blocks some kept tile covers are stored, in row-major order of the block grid, so an AOI or
cloud that drops tiles drops their pixels too. The file is still a plain memory-mappable ``.npy``.

Which blocks a tile is made of follows from the tile table alone (``row``, ``col``, ``size`` of
each tile, ``tiles/{scene}.parquet``) and the block side (the array's last axis): the stored
blocks are the distinct blocks of all tiles, sorted. :func:`open_tiles` rebuilds that map and
returns a :class:`TileArray`, which reads like the old (N, C, H, W) float32 array: indexing it
gathers the blocks of the asked tiles from the memory map (k² contiguous reads a tile), decodes
them to float32 reflectance and fills a tile's few nodata pixels with that tile's band mean, as
the tiles stage used to before writing. The values are the same, bit for bit, as the float32
tiles of earlier runs, which :func:`open_tiles` still reads as they are.

With stride = size (no overlap) a block is a tile and the file is the tiles as uint16: half the
bytes of float32. At the shipped stride of half a tile it is an eighth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.io import PREPARED_NODATA, PREPARED_OFFSET, PREPARED_SCALE, atomic_path, load_npy
from outcrop.runtime.progress import Progress

CODES = np.dtype(np.uint16)  # the stored type: the prepared scene's reflectance codes
STRIP_ROWS = 256  # pixel rows read from the prepared scene at once (its COG blocks are 256 px)


def block_side(size: int, stride: int) -> int:
    """Side (px) of the blocks tiles of ``size`` px at ``stride`` px are made of."""
    return math.gcd(int(size), int(stride))


@dataclass(frozen=True)
class BlockLayout:
    """Which stored block each tile is made of.

    ``keys``: the distinct blocks (``block_row · width + block_col``), sorted: block ``i`` of the
    file is ``keys[i]``. ``slots``: (N, k, k) position in the file of each tile's blocks, in
    the tile's row and column order.
    """

    side: int
    k: int
    width: int
    keys: np.ndarray
    slots: np.ndarray

    @property
    def block_rows(self) -> np.ndarray:
        return self.keys // self.width

    @property
    def block_cols(self) -> np.ndarray:
        return self.keys % self.width


def block_layout(rows: np.ndarray, cols: np.ndarray, size: int, side: int) -> BlockLayout:
    """The block layout of tiles at pixel origins (``rows``, ``cols``) of ``size`` px, blocks of ``side``.

    Every origin must lie on one block grid (the same remainder modulo ``side`` on each axis) and
    ``size`` be a multiple of ``side``: true of every tile cut at a stride that ``side`` divides.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if side <= 0 or size % side:
        raise ValueError(f"tiles of {size} px are not made of blocks of {side} px")
    k = size // side
    if len(rows) == 0:
        return BlockLayout(side, k, 1, np.empty(0, np.int64), np.empty((0, k, k), np.int64))
    if np.any(rows % side != rows[0] % side) or np.any(cols % side != cols[0] % side):
        raise ValueError(f"tile origins do not lie on one grid of {side} px blocks")
    block_row, block_col = rows // side, cols // side
    width = int(block_col.max()) + k + 1
    step = np.arange(k, dtype=np.int64)
    keys = (block_row[:, None, None] + step[None, :, None]) * width + (block_col[:, None, None] + step[None, None, :])
    unique = np.unique(keys)
    return BlockLayout(side, k, width, unique, np.searchsorted(unique, keys))


def write_tile_blocks(
    src: Any,
    out_path: str | os.PathLike[str],
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    size: int,
    stride: int,
    n_bands: int,
    what: str = "cutting",
    log: Callable[[str], None] | None = None,
) -> int:
    """Write the blocks of the tiles at (``rows``, ``cols``) of the open prepared scene ``src`` as
    ``out_path`` (atomically), reading its reflectance bands in strips of :data:`STRIP_ROWS` rows.

    The codes are copied as stored: no decoding, no filling (the reader does both per tile).
    With ``log``, progress lines name ``what``. Returns the number of blocks written.
    """
    from rasterio.windows import Window

    side = block_side(size, stride) if len(rows) else size
    layout = block_layout(rows, cols, size, side)
    brow, bcol = layout.block_rows, layout.block_cols
    row0 = int(rows[0] % side) if len(rows) else 0
    col0 = int(cols[0] % side) if len(cols) else 0
    bands = list(range(1, n_bands + 1))
    per_strip = max(1, STRIP_ROWS // side)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        header = {
            "descr": np.lib.format.dtype_to_descr(CODES),
            "fortran_order": False,
            "shape": (len(layout.keys), n_bands, side, side),
        }
        np.lib.format.write_array_header_1_0(fh, header)
        # The blocks of each strip of block rows, in file order (keys are sorted row-major).
        starts = np.flatnonzero(np.diff(brow // per_strip, prepend=-1)) if len(brow) else np.empty(0, np.int64)
        bounds = np.append(starts, len(brow))
        progress = Progress(what, len(starts), "strips", log) if log is not None else None
        if progress is not None and len(starts):
            progress.update(0)  # said before the first strip, while the work is still to do
        written = 0
        for j in range(len(starts)):
            lo, hi = int(bounds[j]), int(bounds[j + 1])
            r_first, r_last = int(brow[lo]), int(brow[hi - 1])
            c_first, c_last = int(bcol[lo:hi].min()), int(bcol[lo:hi].max())
            n_r, n_c = r_last - r_first + 1, c_last - c_first + 1
            window = Window(col0 + c_first * side, row0 + r_first * side, n_c * side, n_r * side)
            strip = src.read(bands, window=window).reshape(n_bands, n_r, side, n_c, side)
            blocks = strip[:, brow[lo:hi] - r_first, :, bcol[lo:hi] - c_first, :]  # (n, C, side, side)
            fh.write(np.ascontiguousarray(blocks, dtype=CODES).data.cast("B"))
            written += hi - lo
            if progress is not None:
                progress.update(j + 1)
        if written != len(layout.keys):  # the header promised this many blocks; never leave a file that lies
            raise RuntimeError(f"{out_path}: wrote {written} blocks, expected {len(layout.keys)}")
    return len(layout.keys)


def decode_tiles(blocks: np.ndarray, k: int) -> np.ndarray:
    """(n, k, k, C, side, side) block codes to (n, C, k·side, k·side) float32 reflectance tiles, each
    tile's nodata pixels set to its band mean.

    The same arithmetic as :func:`outcrop.io.decode_reflectance` followed by the tiles stage's
    filling of earlier runs, so the tiles are those runs' tiles bit for bit. The blocks are placed
    and converted in one strided pass, then scaled in place: two passes fewer than converting a
    rearranged copy (about half the time per batch).
    """

    n, _, _, channels, side = blocks.shape[:5]
    out = np.empty((n, channels, k * side, k * side), dtype=np.float32)
    out.reshape(n, channels, k, side, k, side)[...] = blocks.transpose(0, 3, 1, 4, 2, 5)
    out *= np.float32(PREPARED_SCALE)
    out += np.float32(PREPARED_OFFSET)
    if n and blocks.min() == PREPARED_NODATA:
        nodata = out == np.float32(PREPARED_NODATA) * np.float32(PREPARED_SCALE) + np.float32(PREPARED_OFFSET)
        tiles = np.flatnonzero(nodata.any(axis=(1, 2, 3)))
        part = out[tiles]
        part[nodata[tiles]] = np.nan
        out[tiles] = _fill_gaps(part)
    return out


class TileArray:
    """A scene's tiles as an (N, C, size, size) float32 array, read from its block store.

    Index it as the memory-mapped arrays of earlier runs were (an integer, a slice, an array of
    integers or booleans, then any further indices of the tile axes): each access gathers and
    decodes only the tiles asked for, so memory holds a batch, never the scene.
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, blocks: np.ndarray, layout: BlockLayout, path: Path) -> None:
        self.blocks = blocks
        self.layout = layout
        self.path = path
        size = layout.side * layout.k
        self.shape = (len(layout.slots), int(blocks.shape[1]), size, size)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        return f"TileArray({self.path}, shape={self.shape}, {len(self.blocks)} blocks of {self.layout.side} px)"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = (key[0] if key else slice(None)), key[1:]
        if isinstance(key, (int, np.integer)):
            at = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= at < len(self):
                raise IndexError(f"tile {int(key)} of {len(self)}")
            return self.take(np.array([at]))[0][rest] if rest else self.take(np.array([at]))[0]
        index: np.ndarray
        if isinstance(key, slice):
            index = np.arange(*key.indices(len(self)))
        else:
            index = np.asarray(key)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise IndexError(f"boolean index of shape {index.shape} for {len(self)} tiles")
                index = np.flatnonzero(index)
            elif index.size and not np.issubdtype(index.dtype, np.integer):
                raise IndexError(f"tiles are indexed by integers, not {index.dtype}")
            index = index.astype(np.int64).reshape(-1)
            index = np.where(index < 0, index + len(self), index)
            if index.size and (index.min() < 0 or index.max() >= len(self)):
                raise IndexError(f"tile index out of range for {len(self)} tiles")
        out = self.take(index)
        return out[(slice(None), *rest)] if rest else out

    def take(self, index: np.ndarray) -> np.ndarray:
        """Tiles ``index`` (in that order) as float32 reflectance (n, C, size, size)."""
        k, side = self.layout.k, self.layout.side
        n, channels = len(index), self.shape[1]
        slots = self.layout.slots[index].reshape(-1)
        codes = np.asarray(self.blocks[slots]) if len(slots) else np.empty((0, channels, side, side), CODES)
        return decode_tiles(codes.reshape(n, k, k, channels, side, side), k)

    def release_pages(self) -> None:
        """Drop the pages of the block file from this process's resident set (:mod:`outcrop.runtime.pages`)."""
        from outcrop.runtime.pages import release_pages

        release_pages(self.blocks)


def tile_positions(
    table_path: str | os.PathLike[str], n_tiles: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(rows, cols, size) of a tile table's tiles in tile-id order, without reading footprints."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(table_path, columns=["tile_id", "row", "col", "size"])
    except FileNotFoundError:
        raise OutcropError(f"{table_path}: file not found (a tile array is read through its tile table)") from None
    except Exception as exc:  # pyarrow raises many kinds: a missing column, a broken file
        raise OutcropError(
            f"{table_path}: not a tile table with tile_id, row, col and size ({str(exc).splitlines()[0]})"
        ) from None
    ids = np.asarray(table.column("tile_id").to_numpy())
    if not np.array_equal(ids, np.arange(len(ids))) or (n_tiles is not None and len(ids) != n_tiles):
        raise OutcropError(f"{table_path}: tile ids are not 0..{len(ids) - 1} in order")
    sizes = np.unique(np.asarray(table.column("size").to_numpy()))
    if len(sizes) > 1:
        raise OutcropError(f"{table_path}: tiles of several sizes {sizes.tolist()}")
    return (
        np.asarray(table.column("row").to_numpy(), dtype=np.int64),
        np.asarray(table.column("col").to_numpy(), dtype=np.int64),
        int(sizes[0]) if len(sizes) else 0,
    )


def _fill_gaps(block: np.ndarray) -> np.ndarray:
    """Replace the few nodata pixels of kept tiles by that tile's band mean, so arrays stay finite."""
    bad = ~np.isfinite(block)
    if bad.any():
        means = np.nanmean(np.where(bad, np.nan, block), axis=(2, 3), keepdims=True)
        means = np.nan_to_num(means, nan=0.0)
        block = np.where(bad, np.broadcast_to(means, block.shape), block)
    return block.astype(np.float32, copy=False)


def open_tiles(path: str | os.PathLike[str], table: str | os.PathLike[str] | None = None) -> Any:
    """A scene's tiles, (N, C, size, size) float32 reflectance, memory-mapped: a :class:`TileArray`
    over the block store, through its tile table (``table``, by default the ``.parquet`` beside it);
    or, for a run tiled before the block store, its float32 array of whole tiles as it is.
    """
    path = Path(path)
    array = load_npy(path)
    if array.ndim == 4 and array.dtype == np.float32:
        return array  # whole tiles, float32 (runs tiled before the block store)
    if array.ndim != 4 or array.dtype != CODES or array.shape[2] != array.shape[3]:
        raise OutcropError(
            f"{path}: not a tile array: {array.dtype} {array.shape} (expected uint16 blocks "
            "(M, C, side, side) or float32 tiles (N, C, H, W))"
        )
    table_path = Path(table) if table else path.with_suffix(".parquet")
    rows, cols, size = tile_positions(table_path)
    side = int(array.shape[-1])
    if len(rows) == 0:
        size = side
    if size % side:
        raise OutcropError(f"{path}: blocks of {side} px cannot make the {size} px tiles of {table_path}")
    try:
        layout = block_layout(rows, cols, size, side)
    except ValueError as exc:
        raise OutcropError(f"{table_path}: {exc}; it does not belong to {path}") from None
    if len(layout.keys) != array.shape[0]:
        raise OutcropError(
            f"{path}: holds {array.shape[0]} blocks, but the {len(rows)} tiles of {table_path} "
            f"cover {len(layout.keys)}: the array and the table are of different runs"
        )
    return TileArray(array, layout, path)
