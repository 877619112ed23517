"""A tile's spectrum and the spectrum of the ground around it, as fixed-length feature vectors.

The spectrum of a tile is per-band mean, spread and 10/50/90th percentiles. The percentiles describe
the shape of each band's distribution, which a tile cut off the grid or resampled keeps better than
its mean and spread alone (on real scenes these five re-identify ground as well as the band-statistics
baseline; means and log spreads do worse, the log amplifying the spread that resampling smooths away).

The ground around a tile is its *block*: the 3 x 3 tile-sized squares centred on it (the tile and
its eight neighbours). A tile cut a little off another scene's grid, or from a scene warped to
another projection, shares only part of its pixels with the tile it should match; its block shares
most of them. The block's spectrum is the same five statistics over the pixels of the squares that
are valid tiles themselves, so cloud, nodata and the scene's edge never enter it. The same
definition holds for the run's own tiles (neighbours found by their grid origins) and for tiles cut
elsewhere (squares read from the prepared raster), so the two are comparable. Every second pixel in
rows and columns is used: the statistics of a 96 px block barely move (docs/evaluation.md) and the
block costs 2.25 tiles of percentiles instead of 9.
"""

from __future__ import annotations

import numpy as np

from outcrop.runtime.pages import release_pages

# Offsets of the block's squares, in tile sizes, centre first.
BLOCK = ((0, 0), *((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)))
BLOCK_STEP = 2  # pixel subsampling of the block's squares, in rows and columns


def pixel_spectra(pixels: np.ndarray) -> np.ndarray:
    """(N, C, P) pixels -> (N, 5C) float64: per-band mean, std, 10/50/90th percentiles over P."""
    flat = np.asarray(pixels, dtype=np.float64)
    return np.concatenate([flat.mean(axis=2), flat.std(axis=2), *np.percentile(flat, [10, 50, 90], axis=2)], axis=1)


def tile_spectra(tiles: np.ndarray) -> np.ndarray:
    """Each tile's spectrum as (N, 5C) float64 (see the module docstring)."""
    return pixel_spectra(np.asarray(tiles).reshape(tiles.shape[0], tiles.shape[1], -1))


def block_neighbours(rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """(N, 9) index of the tile at each square of every tile's block (centre first), -1 where none is.

    ``rows`` and ``cols`` are pixel origins on one grid (a tile table's ``row`` and ``col``); a
    neighbour's origin lies exactly ``size`` px away in rows, columns or both.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n = len(rows)
    out = np.full((n, len(BLOCK)), -1, dtype=np.int64)
    if n == 0:
        return out
    # One integer key per origin, with a margin of one square so that no offset wraps a row.
    lo_r, lo_c = rows.min() - size, cols.min() - size
    width = int(cols.max() - lo_c + 2 * size + 1)
    keys = (rows - lo_r) * width + (cols - lo_c)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    for k, (dr, dc) in enumerate(BLOCK):
        want = keys + dr * size * width + dc * size
        at = np.minimum(np.searchsorted(sorted_keys, want), n - 1)
        found = sorted_keys[at] == want
        out[found, k] = order[at[found]]
    return out


def block_spectra(tiles: np.ndarray, neighbours: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Each tile's block spectrum (N, 5C) from a (memory-mapped) tile array and :func:`block_neighbours`.

    Tiles are taken a chunk at a time and, within a chunk, in groups of equal count of present
    squares, so that every group is one vectorised gather and one percentile call: tiles beside
    water, cloud or the scene's edge (blocks with squares missing) cost no more than the others.
    """
    n, c = len(neighbours), tiles.shape[1]  # the blocks asked for: some of the tiles, or all of them
    out = np.empty((n, 5 * c), dtype=np.float64)
    present = np.sort(neighbours, axis=1)  # missing squares (-1) first, present ones last
    counts = (neighbours >= 0).sum(axis=1)
    for start in range(0, n, chunk):
        sel = np.arange(start, min(n, start + chunk))
        for k in np.unique(counts[sel]):
            group = sel[counts[sel] == k]
            idx = present[group, len(BLOCK) - k :].ravel()
            uniq, inv = np.unique(idx, return_inverse=True)
            squares = np.asarray(tiles[uniq][:, :, ::BLOCK_STEP, ::BLOCK_STEP], dtype=np.float32)[inv]
            squares = squares.reshape(len(group), k, c, -1).transpose(0, 2, 1, 3)
            out[group] = pixel_spectra(squares.reshape(len(group), c, -1))
        release_pages(tiles)
    return out


def square_spectra(squares: np.ndarray) -> np.ndarray:
    """The spectrum (5C,) of one block given its valid squares (K, C, H, W), subsampled as the run's are."""
    sub = squares[:, :, ::BLOCK_STEP, ::BLOCK_STEP]
    return pixel_spectra(sub.transpose(1, 0, 2, 3).reshape(1, squares.shape[1], -1))[0]
