"""The index's vectors, read on demand from per-scene memory-mapped embeddings, never all at once.

At coast scale (10 million tiles of 128 floats: 5.1 GB) holding every vector in memory next to the
index, the k-means sample and the tables does not fit a workstation's budget. A :class:`VectorSource`
keeps, per scene, the memory-mapped ``embeddings/{scene}.npy`` and the rows of it that are indexed,
in id order; it hands them out in normalised chunks (to add to an index or assign to centroids) or
by id (training samples, re-ranking candidates), so memory holds a chunk, not the collection.

Re-ranking: a product-quantised index ranks by approximate inner products; the top
``rerank_count(k)`` candidates it returns are re-scored with their exact vectors read from the
embeddings, which restores exact order among them (recall is then bounded only by whether the
true neighbours are among the candidates). This module imports numpy only, so that the query
command stays fast to start.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.runtime.pages import release_pages

CHUNK = 1 << 18  # vectors per chunk: 128 MiB of float32 at 128 dimensions
RERANK_FACTOR = 10  # candidates re-ranked per result asked for
RERANK_MIN = 100


def rerank_count(k: int, total: int) -> int:
    """How many candidates a quantised index returns for ``k`` results (at most ``total``)."""
    return int(min(total, max(RERANK_MIN, RERANK_FACTOR * k)))


def unit_rows(block: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copy of ``block``; zero rows stay zero."""
    out = np.array(block, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


@dataclass
class VectorSource:
    """Index vectors by id: part ``i`` gives ids ``offsets[i]..offsets[i+1]`` from ``arrays[i][rows[i]]``.

    ``names`` (one per part, a file path) name the file in error messages.
    """

    arrays: list[np.ndarray]
    rows: list[np.ndarray]
    names: list[str]
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum([len(r) for r in self.rows])]).astype(np.int64)
        dims = {a.shape[1] for a in self.arrays}
        if len(dims) > 1:
            raise OutcropError(f"embeddings of different dimensions {sorted(dims)}")

    @classmethod
    def from_array(cls, vectors: np.ndarray, name: str = "vectors") -> VectorSource:
        """One in-memory (or memory-mapped) array, every row."""
        return cls([vectors], [np.arange(len(vectors))], [name])

    @property
    def count(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return int(self.arrays[0].shape[1]) if self.arrays else 0

    def chunks(self, size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first id, normalised vectors) of consecutive ids, ``size`` (:data:`CHUNK`) at a time, checked finite."""
        size = CHUNK if size is None else size
        for part, (array, rows) in enumerate(zip(self.arrays, self.rows)):
            contiguous = len(rows) and rows[-1] - rows[0] == len(rows) - 1
            for start in range(0, len(rows), size):
                sel = rows[start : start + size]
                block = array[sel[0] : sel[-1] + 1] if contiguous else array[sel]
                block = unit_rows(block)
                if not np.all(np.isfinite(block)):
                    raise OutcropError(f"{self.names[part]}: embeddings contain NaN or infinite values")
                yield int(self.offsets[part] + start), block
            release_pages(array)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Normalised vectors of ``ids`` (any order, repeats allowed), read in row order per part."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.count):
            raise OutcropError(f"vector id outside 0..{self.count - 1}")
        part_of = np.searchsorted(self.offsets, ids, side="right") - 1
        for part in np.unique(part_of):
            where = np.flatnonzero(part_of == part)
            rows = self.rows[part][ids[where] - self.offsets[part]]
            order = np.argsort(rows, kind="stable")
            out[where[order]] = self.arrays[part][rows[order]]
            release_pages(self.arrays[part])  # a sample touches (and the kernel maps around) most pages
        return unit_rows(out)

    def sample(self, size: int, seed: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A seeded sample of ``size`` ids (sorted, not in ``exclude``) and their vectors."""
        pool = np.arange(self.count) if exclude is None else np.setdiff1d(np.arange(self.count), exclude)
        rng = np.random.default_rng(seed)
        ids = np.sort(rng.choice(pool, min(size, len(pool)), replace=False))
        return ids, self.take(ids)


def embedding_source(parts: Sequence[tuple[str | os.PathLike[str], np.ndarray]]) -> VectorSource:
    """A source over ``(embeddings path, rows)`` pairs, each file memory-mapped."""
    from outcrop.io import load_npy

    arrays, rows, names = [], [], []
    for path, sel in parts:
        arrays.append(load_npy(path))
        rows.append(np.asarray(sel, dtype=np.int64))
        names.append(str(path))
    return VectorSource(arrays, rows, names)


def table_source(scenes: np.ndarray, tile_ids: np.ndarray, embeddings_of: Callable[[str], Path]) -> VectorSource:
    """A source whose id ``i`` is the tile ``(scenes[i], tile_ids[i])``: one part per run of a scene."""
    scenes = np.asarray(scenes).astype(str)
    tile_ids = np.asarray(tile_ids, dtype=np.int64)
    if len(scenes) == 0:
        raise OutcropError("index table is empty")
    breaks = np.flatnonzero(scenes[1:] != scenes[:-1]) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(scenes)]])
    from outcrop.io import load_npy

    arrays, rows, names = [], [], []
    for start, stop in zip(starts, stops):
        path = embeddings_of(str(scenes[start]))
        emb = load_npy(path)
        if emb.ndim != 2:
            raise OutcropError(f"{path}: embeddings of shape {emb.shape}, expected (tiles, dimension)")
        sel = tile_ids[start:stop]
        if len(sel) and (sel.min() < 0 or sel.max() >= len(emb)):
            raise OutcropError(f"{path}: fewer embeddings ({len(emb)}) than the index table expects")
        arrays.append(emb)
        rows.append(sel)
        names.append(str(path))
    return VectorSource(arrays, rows, names)


def exact_top_k(source: VectorSource, queries: np.ndarray, k: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` of every query over the whole source, streamed in chunks.

    The scan holds one chunk at a time: the collection itself is never in memory. Each chunk's top
    ``k`` comes from FAISS's brute-force search (BLAS products, then a heap per query: a numpy
    argpartition of the (queries, chunk) scores took three times as long). Returns (scores, ids),
    best first.
    """
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start, block in source.chunks(chunk):
        kk = min(k, len(block))
        scores, top = faiss.knn(queries, np.ascontiguousarray(block, dtype=np.float32), kk, faiss.METRIC_INNER_PRODUCT)
        cand_s = np.concatenate([best_s, scores], axis=1)
        cand_i = np.concatenate([best_i, np.where(top >= 0, top + start, -1)], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, keep, 1)
        best_i = np.take_along_axis(cand_i, keep, 1)
    return best_s, best_i


def rerank(
    queries: np.ndarray, cand_ids: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ids (-1: none) with exact vectors; keep the best ``k`` of each query.

    ``vectors_of(ids)`` returns the unit vectors of valid ids. Returns (scores, ids), best first,
    padded with (-inf, -1) where a query had fewer than ``k`` candidates.
    """
    queries = np.asarray(queries, dtype=np.float32)
    valid = cand_ids >= 0
    flat = np.unique(cand_ids[valid])
    scores = np.full(cand_ids.shape, -np.inf, dtype=np.float32)
    if len(flat):
        vecs = vectors_of(flat)
        pos = np.searchsorted(flat, np.where(valid, cand_ids, flat[0]))
        scores = np.einsum("qd,qcd->qc", queries, vecs[pos]).astype(np.float32)
        scores[~valid] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_s = np.take_along_axis(scores, order, 1)
    out_i = np.where(np.isfinite(out_s), np.take_along_axis(cand_ids, order, 1), -1)
    return out_s, out_i


def is_quantised(index: Any) -> bool:
    """Whether ``index`` stores compressed codes (its scores need exact re-ranking)."""
    import faiss

    inner = index
    if isinstance(inner, faiss.IndexPreTransform):
        return True
    return isinstance(inner, (faiss.IndexIVFPQ, faiss.IndexPQ))
