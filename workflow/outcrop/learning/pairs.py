"""Tiles of different scenes that show the same ground: positives from real acquisitions.

Where a run holds the same ground in two or more scenes (overlapping rows of one pass, the same
place on another day), the two scenes' tiles of one footprint are two real views of it: other
sun, haze, snow line and sensor noise over the same rock. BYOL can take them as its two views
instead of two augmented crops of one tile (Seasonal Contrast, Mañas et al. 2021), so that what it
learns to ignore is what really changes between acquisitions.

Pairs are found from the tile tables alone. Every scene of a run is prepared onto one grid, so a
tile's origin on that grid is its scene's offset plus its ``row`` and ``col``; the offset comes from
one footprint of the table. Tiles start at multiples of the stride on that global grid, so where
two scenes' strides align (the same stride, origins on the same multiples), their tiles of one
footprint coincide exactly, and only those pair: a tile whose twin was not kept in the other scene
(cloud, snow, too little rock there) has no partner there, rather than a neighbour that shares half
its ground. Where strides do not align (tables cut with another stride, scenes whose pixels are not
aligned), a tile's partner in another scene is the tile it overlaps most, if they share at least
``min_overlap`` of their pixels: with a stride of half a tile the best one always shares at least
56 %, and half of the tile is the least share at which both views still show mostly the same
ground. A tile has at most one partner per other scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from outcrop.errors import OutcropError

MIN_OVERLAP = 0.5  # least shared share of a tile's pixels for two tiles to be one place
_CANDIDATES = 4  # nearest origins looked at per tile when grids do not align


@dataclass(frozen=True)
class Partners:
    """For each of N tiles, the positions (0..N-1) of its partners, as compressed rows.

    ``index[start[i]:start[i + 1]]`` are the partners of tile ``i``.
    """

    start: np.ndarray  # (N + 1,) int64
    index: np.ndarray  # (M,) int64

    def __len__(self) -> int:
        return len(self.start) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.start)

    def of(self, i: int) -> np.ndarray:
        return self.index[self.start[i] : self.start[i + 1]]

    def places(self) -> int:
        """How many distinct places the tiles show: groups of tiles joined by pairs count once."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = len(self)
        graph = coo_matrix((np.ones(len(self.index)), (np.repeat(np.arange(n), self.counts), self.index)), shape=(n, n))
        return int(connected_components(graph, directed=False)[0])

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One partner of each of ``rows``, drawn uniformly; -1 where a tile has none."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.counts[rows]
        pick = np.floor(rng.random(len(rows)) * np.maximum(counts, 1)).astype(np.int64)
        out = np.full(len(rows), -1, dtype=np.int64)
        has = counts > 0
        out[has] = self.index[self.start[rows[has]] + pick[has]]
        return out

    @classmethod
    def from_pairs(cls, n: int, a: np.ndarray, b: np.ndarray) -> Partners:
        """Partners of ``n`` tiles from directed pairs ``a[k] -> b[k]`` (duplicates dropped)."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if len(a):
            pairs = np.unique(np.stack([a, b], axis=1), axis=0)
            a, b = pairs[:, 0], pairs[:, 1]
        start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(a, minlength=n), out=start[1:])
        return cls(start, b)


FOOTPRINT_COLUMNS = ("row", "col", "size", "geometry")


def has_footprints(table_path: Path) -> bool:
    """Whether a tile table says where its tiles lie (as the tiles stage writes it), so that its
    tiles can pair with other scenes'; a bare table of rock fractions cannot."""
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(table_path).names)
    except Exception:  # noqa: BLE001 - a table that cannot be read is reported by the reader that needs it
        return False
    return set(FOOTPRINT_COLUMNS) <= names


def grid_origins(table_path: Path, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Global grid origins (pixel row, pixel col) of ``rows`` of a tile table (None: every row), the
    tile's side in pixels and the pixel size: from the table's ``row``/``col`` and the offset one
    footprint gives.

    The table's ``row``/``col`` are pixel offsets in its prepared scene; the scene's own origin on
    the run grid is the first footprint's corner less its offset, in pixels of the footprint's width
    divided by the tile size.
    """
    import pyarrow.parquet as pq
    import shapely

    try:
        table = pq.read_table(table_path, columns=["row", "col", "size", "geometry"])
    except FileNotFoundError:
        raise OutcropError(f"{table_path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds (missing column, damaged file)
        raise OutcropError(
            f"{table_path}: not a tile table with row, col, size and footprints ({str(exc).splitlines()[0]})"
        ) from None
    row = table.column("row").to_numpy().astype(np.int64)
    col = table.column("col").to_numpy().astype(np.int64)
    if len(row) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0.0, 0.0
    size = int(table.column("size")[0].as_py())
    left, bottom, right, top = shapely.bounds(shapely.from_wkb(table.column("geometry")[0].as_py()))
    res = (right - left) / size
    if not res > 0:
        raise OutcropError(f"{table_path}: the first footprint is empty; cannot place the tiles on the grid")
    col0 = int(round(left / res)) - int(col[0])
    row0 = int(round(-top / res)) - int(row[0])
    rows = np.arange(len(row)) if rows is None else np.asarray(rows, dtype=np.int64)
    return row[rows] + row0, col[rows] + col0, float(size), float(res)


def grid_stride(grid_row: np.ndarray, grid_col: np.ndarray, size: float) -> tuple[int, int, int]:
    """The stride of a scene's tiles (the largest step dividing every gap between their origins; a
    lone tile: its size) and the phase of their origins on it, (stride, row phase, col phase)."""
    steps = [np.diff(np.unique(v)) for v in (grid_row, grid_col)]
    gaps = np.concatenate(steps).astype(np.int64)
    stride = int(np.gcd.reduce(gaps)) if len(gaps) else int(size)
    stride = stride or int(size)
    return stride, int(grid_row[0] % stride), int(grid_col[0] % stride)


def _exact(mine: np.ndarray, theirs: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of ``mine`` and ``theirs`` with the same origin, as matched index pairs."""

    def keys(members: np.ndarray) -> np.ndarray:
        return (origin[members, 0].astype(np.int64) << 32) + origin[members, 1].astype(np.int64)

    k_mine, k_theirs = keys(mine), keys(theirs)
    order = np.argsort(k_theirs)
    at = np.searchsorted(k_theirs[order], k_mine).clip(max=len(order) - 1)
    hit = k_theirs[order][at] == k_mine
    return mine[hit], theirs[order][at][hit]


def partners_on_grid(
    scene_of: np.ndarray,
    grid_row: np.ndarray,
    grid_col: np.ndarray,
    size: float,
    min_overlap: float = MIN_OVERLAP,
    strides: dict[int, tuple[int, int, int]] | None = None,
) -> Partners:
    """Partners of tiles placed on one grid (origins in pixels, side ``size`` px), for each tile and
    each other scene: the tile of the same origin where the two scenes' strides align (``strides``:
    scene -> :func:`grid_stride`; measured from these tiles when not given), else that scene's tile
    it overlaps most, if they share ``min_overlap`` of a tile (among the few nearest origins).
    """
    from scipy.spatial import cKDTree

    scene_of = np.asarray(scene_of, dtype=np.int64)
    origin = np.stack([grid_row, grid_col], axis=1).astype(np.float64)
    n = len(scene_of)
    scenes = np.unique(scene_of)
    if len(scenes) < 2:
        return Partners.from_pairs(n, np.zeros(0), np.zeros(0))
    members = {s: np.flatnonzero(scene_of == s) for s in scenes}
    boxes = {s: (origin[m].min(axis=0), origin[m].max(axis=0) + size) for s, m in members.items()}
    trees: dict[int, cKDTree] = {}
    if strides is None:
        strides = {s: grid_stride(grid_row[m], grid_col[m], size) for s, m in members.items()}
    found_a, found_b = [], []
    reach = size * (1.0 - min_overlap)  # farther than this on either axis shares too little
    for s in scenes:
        for t in scenes:
            if s == t:
                continue
            (lo_s, hi_s), (lo_t, hi_t) = boxes[s], boxes[t]
            if np.any(np.minimum(hi_s, hi_t) - np.maximum(lo_s, lo_t) < size * min_overlap):
                continue
            mine = members[s]
            if strides[s] == strides[t]:
                a, b = _exact(mine, members[t], origin)
                found_a.append(a)
                found_b.append(b)
                continue
            if t not in trees:
                trees[t] = cKDTree(origin[members[t]])
            k = min(_CANDIDATES, len(members[t]))
            dist, near = trees[t].query(origin[mine], k=k, distance_upper_bound=reach * np.sqrt(2) + 1e-9)
            dist, near = dist.reshape(len(mine), k), near.reshape(len(mine), k)
            valid = np.isfinite(dist)
            theirs = members[t][np.where(valid, near, 0)]
            gap = np.abs(origin[theirs] - origin[mine][:, None, :])  # (n, k, 2)
            share = np.prod(np.clip(size - gap, 0, None), axis=2) / size**2
            share = np.where(valid, share, -1.0)
            best = share.argmax(axis=1)
            keep = share[np.arange(len(mine)), best] >= min_overlap - 1e-9
            found_a.append(mine[keep])
            found_b.append(theirs[np.arange(len(mine)), best][keep])
    if not found_a:
        return Partners.from_pairs(n, np.zeros(0), np.zeros(0))
    return Partners.from_pairs(n, np.concatenate(found_a), np.concatenate(found_b))


def cross_scene_partners(
    table_paths: Sequence[Path], scene_of: np.ndarray, row_of: np.ndarray, min_overlap: float = MIN_OVERLAP
) -> Partners:
    """Partners among training tiles (``scene_of``/``row_of``: the chosen rows of each scene's
    table, :class:`outcrop.learning.training_data.TrainingTiles`) that lie in other scenes."""
    scene_of = np.asarray(scene_of, dtype=np.int64)
    row_of = np.asarray(row_of, dtype=np.int64)
    grid_row = np.zeros(len(scene_of), np.int64)
    grid_col = np.zeros(len(scene_of), np.int64)
    sizes, resolutions = set(), set()
    strides: dict[int, tuple[int, int, int]] = {}
    for s, path in enumerate(table_paths):
        sel = np.flatnonzero(scene_of == s)
        if not len(sel):
            continue
        every_r, every_c, size, res = grid_origins(Path(path), None)
        grid_row[sel], grid_col[sel] = every_r[row_of[sel]], every_c[row_of[sel]]
        strides[s] = grid_stride(every_r, every_c, size)  # of every tile of the scene, kept for training or not
        sizes.add(size)
        resolutions.add(round(res, 6))
    if len(sizes) > 1 or len(resolutions) > 1:
        raise OutcropError(
            f"{', '.join(map(str, table_paths))}: tiles of {sorted(sizes)} px at {sorted(resolutions)} "
            "m; pairs across scenes need one tile size on one grid"
        )
    if not sizes:
        return Partners.from_pairs(len(scene_of), np.zeros(0), np.zeros(0))
    return partners_on_grid(scene_of, grid_row, grid_col, sizes.pop(), min_overlap, strides)


def neighbour_partners(
    table_paths: Sequence[Path], scene_of: np.ndarray, row_of: np.ndarray, max_offset: float = 1.0
) -> Partners:
    """Tile2Vec's positives (Jean et al. 2019): tiles of the same scene whose origins lie within
    ``max_offset`` tile sides of a tile (itself excluded), for comparison with cross-scene pairs."""
    from scipy.spatial import cKDTree

    scene_of = np.asarray(scene_of, dtype=np.int64)
    row_of = np.asarray(row_of, dtype=np.int64)
    found_a, found_b = [], []
    for s, path in enumerate(table_paths):
        sel = np.flatnonzero(scene_of == s)
        if len(sel) < 2:
            continue
        r, c, size, _ = grid_origins(Path(path), row_of[sel])
        pairs = cKDTree(np.stack([r, c], axis=1)).query_pairs(max_offset * size + 1e-9, p=np.inf, output_type="ndarray")
        found_a += [sel[pairs[:, 0]], sel[pairs[:, 1]]]
        found_b += [sel[pairs[:, 1]], sel[pairs[:, 0]]]
    if not found_a:
        return Partners.from_pairs(len(scene_of), np.zeros(0), np.zeros(0))
    return Partners.from_pairs(len(scene_of), np.concatenate(found_a), np.concatenate(found_b))


def second_view_rows(partners: Partners, rows: np.ndarray, share: float, seed: int, step: int) -> np.ndarray:
    """For a batch of training tiles ``rows``, the tile whose view is each one's second view: a
    partner in another scene for about ``share`` of those that have one, else -1 (the tile itself,
    augmented). Drawn from a generator of (seed, step) alone, so a resumed run draws the same."""
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng([seed, step, 0x5EC0])
    across = (rng.random(len(rows)) < share) & (partners.counts[rows] > 0)
    out = np.full(len(rows), -1, dtype=np.int64)
    out[across] = partners.draw(rows[across], rng)
    return out
