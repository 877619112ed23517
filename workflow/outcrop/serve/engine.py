"""A finished run opened once for searches from the map: ranked as ``outcrop analogues`` ranks.

Why a module of its own: ``outcrop analogues`` scores every tile with an exact scan (linear in the
tiles: 0.1 s and 0.8 GB of vectors read at a million), which is right for a job that runs once and
too slow for a click. Here the run's FAISS index is memory-mapped once and asked for candidates;
only they are scored, exactly, from the memory-mapped embeddings, and the ranking itself (exclusion
radius, negatives, one analogue per site, nearest positive and its distance) is
:func:`outcrop.search.analogues.rank_scored`, the function ``outcrop analogues`` ranks with.

**When the candidates suffice.** Each query (the set query and one per positive group, as
:func:`~outcrop.search.analogues.query_vectors` builds them) asks the index for its ``k`` nearest
tiles. A tile outside every query's list scores at most ``tau``, the highest of the lists' lowest
scores, so every ranked site scoring above ``tau`` is where an exact scan would put it. When the
last of the ``top`` sites does not clear ``tau`` (the exclusion zones and the site suppression ate
the candidates), ``k`` grows fourfold and the search runs again. With an exact (flat) index the
answer therefore equals ``outcrop analogues``' exactly; with an approximate one (IVF) it has the
index's recall (``index/info.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.layout import Layout

MAX_TOP = 200  # results a search may ask for
FIRST_CANDIDATES = 256  # candidates per query on the first try (at least 8 per result asked for)
MAX_QUERY_TILES = 20_000  # tiles a drawn polygon may select


@dataclass(frozen=True)
class Place:
    """A named geometry in the run's CRS: a clicked point, a drawn polygon, a mark."""

    name: str
    geometry: Any


class _Rows:
    """Unit vectors of index ids, read on demand: what ``query_vectors`` indexes with ``[ids]``."""

    def __init__(self, run: ServedRun) -> None:
        self.run = run

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        return self.run.vectors(np.asarray(ids, dtype=np.int64))


class ServedRun:
    """The parts of a run a search needs, opened once: the index (memory-mapped), the id table with
    its spatial index, and the per-scene embeddings (memory-mapped)."""

    def __init__(
        self, results: Path, *, buffer_m: float, exclusion_km: float, site_overlap: float | None, log: Any = print
    ) -> None:
        import faiss
        from pyproj import Transformer

        from outcrop.io import load_npy, read_geoparquet
        from outcrop.search.faiss_file import read_index

        self.results = Path(results)
        self.layout = Layout(self.results)
        self.buffer_m = float(buffer_m)
        self.exclusion_m = float(exclusion_km) * 1000.0
        self.site_overlap = site_overlap
        index_path, table_path = Path(self.layout.index), Path(self.layout.index_table)
        if not table_path.is_file():
            raise OutcropError(f"{self.results}: not a finished run (no {table_path.relative_to(self.results)})")
        if not index_path.is_file():
            raise OutcropError(f"{index_path}: file not found")
        # One thread per search inside FAISS: the server runs searches side by side on its own threads.
        faiss.omp_set_num_threads(1)
        self.index = read_index(index_path, mapped=True)
        table = read_geoparquet(table_path)
        if "id" not in table.columns or not np.array_equal(table["id"].to_numpy(), np.arange(len(table))):
            raise OutcropError(f"{table_path}: ids are not 0..{len(table) - 1} in order")
        if self.index.ntotal != len(table):
            raise OutcropError(
                f"{index_path} holds {self.index.ntotal} vectors but {table_path} has {len(table)} "
                "rows; they come from different builds"
            )
        if table.crs is None:
            raise OutcropError(f"{table_path}: index table has no CRS")
        self.table = table
        self.crs = table.crs
        self.sindex = table.sindex  # built now, not by the first search (and not by two at once)
        scenes = table["scene"].to_numpy().astype(str)
        self.scene_names, self.scene_of = np.unique(scenes, return_inverse=True)
        self.tile_ids = table["tile_id"].to_numpy().astype(np.int64)
        self.embeddings = []
        for code, scene in enumerate(self.scene_names):
            path = Path(self.layout.embeddings(str(scene)))
            if not path.is_file():
                raise OutcropError(f"{path}: file not found (the index has tiles of scene {scene!r})")
            emb = load_npy(path)
            rows = self.tile_ids[self.scene_of == code]
            if emb.ndim != 2 or emb.shape[1] != self.index.d:
                raise OutcropError(f"{path}: embeddings of shape {emb.shape}, the index has dimension {self.index.d}")
            if len(rows) and rows.max() >= len(emb):
                raise OutcropError(f"{path}: fewer embeddings ({len(emb)}) than the index table expects")
            self.embeddings.append(emb)
        self.to_run = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self.to_lonlat = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        log(
            f"serve: {len(table)} tiles of {len(self.scene_names)} scenes; index {type(self.index).__name__} "
            f"memory-mapped from {index_path}"
        )

    @property
    def count(self) -> int:
        return len(self.table)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), D) unit float32 vectors of index ids, read from the memory-mapped embeddings."""
        from outcrop.search.index import normalise_rows

        out = np.empty((len(ids), self.index.d), dtype=np.float32)
        codes = self.scene_of[ids]
        for code in np.unique(codes):
            where = np.flatnonzero(codes == code)
            rows = self.tile_ids[ids[where]]
            order = np.argsort(rows, kind="stable")
            out[where[order]] = self.embeddings[code][rows[order]]
        return normalise_rows(out)

    def project(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat (EPSG:4326) to the run's CRS."""
        x, y = self.to_run.transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        return np.asarray(x), np.asarray(y)

    def unproject(self, x: float, y: float) -> tuple[float, float]:
        """A point of the run's CRS as lon/lat."""
        lon, lat = self.to_lonlat.transform(x, y)
        return float(lon), float(lat)

    def tiles_of(self, places: list[Place]) -> list[np.ndarray]:
        """The indexed tiles each place selects, as a deposit selects its positives (points buffered
        by ``buffer_m``); :class:`OutcropError` naming a place that meets none."""
        from outcrop.search.analogues import positives_of_shapes

        if not places:
            return []
        return positives_of_shapes(
            self.sindex,
            np.array([p.geometry for p in places], dtype=object),
            [p.name for p in places],
            buffer_m=self.buffer_m,
        )

    def search(self, positives: list[Place], negatives: list[Place], top: int) -> Any:
        """The ``top`` analogue sites of the positives, pushed from the negatives (module docstring):
        a GeoDataFrame with the columns of ``analogues.gpkg``, footprints in the run's CRS."""
        from outcrop.search.analogues import analogue_table, query_vectors, rank_scored

        if not positives:
            raise OutcropError("nothing to search with: click a place, draw a polygon or mark a positive")
        pos = self.tiles_of(positives)
        neg = self.tiles_of(negatives) or None
        queries = np.ascontiguousarray(query_vectors(_Rows(self), pos, neg), dtype=np.float32)
        n = self.count
        k = min(n, max(FIRST_CANDIDATES, 8 * top))
        names = [p.name for p in positives]
        geoms = np.array([p.geometry for p in positives], dtype=object)
        while True:
            score, which, tau, more = self._candidates(queries, k)
            ranked = rank_scored(
                score,
                which,
                self.table,
                pos,
                geoms,
                exclusion_m=self.exclusion_m,
                top=top,
                names=names,
                site_overlap=self.site_overlap,
                negatives=neg,
            )
            done = len(ranked) == top and float(ranked["score"].iloc[-1]) > tau
            if done or not more or k >= n:
                break
            k = min(n, 4 * k)
        return analogue_table(ranked, self.table, self.to_lonlat)

    def _candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """Scores over the table (-inf off the candidates), the query of each, the bound ``tau`` on
        every other tile's score, and whether a larger ``k`` could bring more candidates."""
        _, found = self.index.search(queries, k)
        cand = np.unique(found[found >= 0])
        exact = self.vectors(cand) @ queries.T  # (candidates, queries)
        score = np.full(self.count, -np.inf, dtype=np.float32)
        which = np.zeros(self.count, dtype=np.int64)
        score[cand] = exact.max(axis=1)
        which[cand] = exact.argmax(axis=1)
        full = (found >= 0).all(axis=1)
        if not full.any():
            return score, which, -np.inf, False  # every list ended early: the index has no more to give
        pos = np.searchsorted(cand, np.where(found >= 0, found, cand[0]))
        lowest = np.where(found >= 0, exact[pos, np.arange(len(queries))[:, None]], np.inf).min(axis=1)
        return score, which, float(lowest[full].max()), True
