"""Scene grids and per-tile rasters: put one value per tile back on the map.

Tiles are cut at a fixed stride from a prepared scene (see ``docs/architecture.md``), so a value per
tile (a cluster label, a similarity) is naturally a raster whose cells are ``stride`` pixels wide and
centred on the tile centres. With overlapping tiles (stride < size) every tile still owns one cell,
and the cells tile the scene without gaps or double counting.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from outcrop.errors import OutcropError


@dataclass(frozen=True)
class SceneGrid:
    """A pixel grid: CRS, affine transform and size in pixels (a prepared scene, or a block of the run grid)."""

    crs: Any
    transform: Any
    width: int
    height: int


@dataclass(frozen=True)
class TileLayout:
    """Tile size and stride in pixels, shared by all scenes of a run, and (when recorded with the
    tiles) the clear fraction a tile needed to be kept."""

    size: int
    stride: int
    min_valid: float | None = None

    def record(self) -> dict[str, Any]:
        """As recorded in a tile table's and the index table's metadata."""
        return {"size": self.size, "stride": self.stride, "min_valid": self.min_valid}

    @classmethod
    def from_record(cls, record: Any, where: str) -> TileLayout:
        """From a recorded mapping, checked: whole positive size and stride, a fraction in [0, 1]."""
        try:
            size, stride = record["size"], record["stride"]
            min_valid = record.get("min_valid")
            assert all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (size, stride))
            assert min_valid is None or (isinstance(min_valid, (int, float)) and 0 <= min_valid <= 1)
        except (TypeError, KeyError, AttributeError, AssertionError):
            raise OutcropError(
                f"{where}: the recorded tile grid {record!r} is not a tile size, stride and clear fraction"
            ) from None
        return cls(size, stride, None if min_valid is None else float(min_valid))


def read_scene_grid(path: str | os.PathLike[str]) -> SceneGrid:
    """Read only the header of a prepared scene (no pixels)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise OutcropError(f"{path}: prepared scene has no CRS")
            return SceneGrid(src.crs, src.transform, src.width, src.height)
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read prepared scene header ({exc})") from None


def scene_band_names(path: str | os.PathLike[str]) -> list[str]:
    """Canonical band names of a prepared scene, from its ``bands`` tag (header only)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            return [b for b in src.tags().get("bands", "").split(",") if b]
    except rasterio.errors.RasterioIOError as exc:
        raise OutcropError(f"{path}: cannot read prepared scene header ({exc})") from None


def infer_layout(scenes: np.ndarray, rows: np.ndarray, cols: np.ndarray, sizes: np.ndarray) -> TileLayout:
    """Tile size and stride from the pixel offsets of tiles, for tables that do not record them.

    The stride is the greatest common divisor of the offsets between tiles of the same scene. It can
    only be a multiple of the true stride (every other tile left out, say), so the recorded one
    (:func:`outcrop.raster.tiles.read_tile_grid`) is used wherever it exists. With at most one tile
    per scene the stride cannot be seen and is taken to be the tile size.
    """
    if len(rows) == 0:
        raise OutcropError("no tiles to infer the tile layout from")
    size = int(np.max(sizes))
    if np.any(sizes != size):
        raise OutcropError(f"tiles of different sizes ({sorted(set(np.asarray(sizes).tolist()))}) in one run")
    # Offsets from the first tile of each scene: sort by scene and subtract the group minimum.
    codes, uniq = _codes(scenes)
    row_min = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    col_min = row_min.copy()
    np.minimum.at(row_min, codes, rows)
    np.minimum.at(col_min, codes, cols)
    diffs = np.concatenate([rows - row_min[codes], cols - col_min[codes]]).astype(np.int64)
    stride = int(np.gcd.reduce(diffs)) if diffs.size else 0
    return TileLayout(size=size, stride=stride if stride > 0 else size)


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.astype(np.int64), uniq


def tile_raster(
    grid: SceneGrid,
    layout: TileLayout,
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    nodata: float | int,
    dtype: Any,
    phase: tuple[int, int] | None = None,
) -> tuple[np.ndarray, Any]:
    """A (bands, H, W) raster with one cell per tile position, and its affine transform.

    ``values`` is (N,) or (N, bands), one row per tile at pixel offsets ``rows``, ``cols``. Cells are
    ``stride`` pixels wide and centred on the tile centres; the grid covers the whole scene, cells
    without a tile hold ``nodata``. ``phase`` is the pixel offset (mod stride) of the tile grid in
    this scene; it is read from the tiles when not given (and zero for a scene without tiles).
    """
    from rasterio.transform import Affine

    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    s = layout.stride
    if phase is None:
        phase = (int(rows.min() % s), int(cols.min() % s)) if len(rows) else (0, 0)
    half = (layout.size - s) / 2.0
    # Top-left pixel offset of the cell of a tile at (phase_r, phase_c), moved back by whole cells
    # until the grid starts at or before the scene's own origin.
    shift_r = math.ceil((phase[0] + half) / s)
    shift_c = math.ceil((phase[1] + half) / s)
    origin_r = phase[0] + half - shift_r * s
    origin_c = phase[1] + half - shift_c * s
    height = max(1, math.ceil((grid.height - origin_r) / s))
    width = max(1, math.ceil((grid.width - origin_c) / s))
    out = np.full((values.shape[1], height, width), nodata, dtype=dtype)
    if len(rows):
        if np.any((rows - phase[0]) % s) or np.any((cols - phase[1]) % s):
            raise OutcropError("tile offsets are not on one stride grid")
        i = (rows - phase[0]) // s + shift_r
        j = (cols - phase[1]) // s + shift_c
        inside = (i >= 0) & (i < height) & (j >= 0) & (j < width)
        out[:, i[inside], j[inside]] = values[inside].T.astype(dtype)
    transform = grid.transform @ Affine.translation(origin_c, origin_r) @ Affine.scale(s)
    return out, transform


def scene_rasters(
    prepared_paths: Any, table: Any, layout: TileLayout, values: np.ndarray, nodata: Any, dtype: Any
) -> Any:
    """Per scene: (scene, grid, raster, transform) of ``values`` (one per table row) at tile cells.

    The whole-run stages (clusters, analogues) map per-tile values back onto every scene's grid
    the same way; scenes with no rows give an all-nodata raster.
    """
    from pathlib import Path

    scenes = table["scene"].to_numpy()
    rows_all, cols_all = table["row"].to_numpy(), table["col"].to_numpy()
    for prepared in prepared_paths:
        scene = Path(prepared).stem
        grid = read_scene_grid(prepared)
        rows = np.flatnonzero(scenes == scene)
        raster, transform = tile_raster(grid, layout, rows_all[rows], cols_all[rows], values[rows], nodata, dtype)
        yield scene, grid, raster, transform
