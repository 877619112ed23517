"""FAISS index over the tile embeddings of every scene: cosine similarity as inner product.

Embeddings are L2-normalised, so the inner product is the cosine. The kind of index follows the
count, as the FAISS guidelines advise:

- up to ``exact_max`` vectors, ``IndexFlatIP``: exact, no training, fast enough (a brute-force scan
  of 200 000 vectors of 128 floats is a few milliseconds per query). Vectors can be added at any
  time.
- above it, ``IndexIVFFlat`` with ``nlist`` about sqrt(N) inverted lists (a power of two, at most
  N/39 so that every centroid has enough training points), trained on a seeded sample of at most
  64 points per list. A query costs nlist centroid comparisons plus nprobe·N/nlist vectors, so
  sqrt(N) balances the two; the 4–16·sqrt(N) often advised for many-core machines makes training
  (∝ nlist²) and adding (∝ N·nlist) 4–16 times slower for no gain in queries per second at the
  same recall on a workstation (benchmarks/index_scale.py). ``nprobe`` is the smallest that reaches
  ``recall_target`` (0.95) recall@10 on held-out queries: doubled from nlist/64 until it does, then
  bisected down (:func:`tune_nprobe`), since query time grows in proportion to it.

Adding vectors without rebuilding: ``IndexFlatIP`` takes them at any time and stays exact. The IVF
index takes them without retraining (``index.add``) while their distribution stays that of the
training sample; a very different batch of scenes deserves a rebuild, which is what the workflow
does anyway (its index rule reruns over all embeddings). HNSW would take them too, but can
never remove any.

HNSW is not used: it needs several times the memory of the vectors, builds slowly on few cores, and
cannot remove vectors, while IVF-Flat keeps exact inner products for the candidates it visits.

Recall@10 is measured against exact search on a held-out sample of query vectors at build time,
tie-aware (a result counts when its similarity reaches the tenth exact one, so duplicates in the
data do not make an exact index look inexact), and written to ``info.json``; a build under
``recall_floor`` fails rather than leave a quietly poor index behind.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop import OutcropError
from outcrop.config import default
from outcrop.io import atomic_path, load_npy, read_geoparquet, write_geodataframe, write_json
from outcrop.raster.surfaces import ground_fraction
from outcrop.raster.tiles import FRACTION_COLUMNS, with_later_fractions

FRACTIONS = ("valid", *FRACTION_COLUMNS)  # the tile table's fraction columns
TABLE_COLUMNS = ("id", "scene", "tile_id", "row", "col", "size", *FRACTIONS, "geometry")
RECALL_K = 10
RECALL_QUERIES = 1000
RECALL_TARGET = 0.95  # nprobe is tuned to this; recall_floor is where a build fails
SEARCH_BATCH = 4096


def scene_of(path: str | os.PathLike[str]) -> str:
    """Scene name of a per-scene file (``embeddings/{scene}.npy`` → ``scene``)."""
    return Path(path).stem


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32, contiguous); zero rows stay zero."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def gather_vectors(
    embedding_paths: Sequence[str | os.PathLike[str]],
    table_paths: Sequence[str | os.PathLike[str]],
    *,
    min_rock: float = 0.0,
) -> tuple[np.ndarray, Any]:
    """Stack the vectors of the tiles to index and build their id table.

    ``embedding_paths`` and ``table_paths`` are aligned per scene. A tile is indexed when its rock
    fraction is at least ``min_rock`` (0 indexes every tile). Returns (M, D) float32 normalised
    vectors and a GeoDataFrame with ``id`` = row = FAISS id, scene, tile_id, row, col, size,
    fractions and footprint.
    """
    import geopandas as gpd
    import pandas as pd

    if len(embedding_paths) != len(table_paths):
        raise OutcropError(f"{len(embedding_paths)} embedding files but {len(table_paths)} tile tables")
    if not embedding_paths:
        raise OutcropError("no scenes to index")
    blocks: list[np.ndarray] = []
    tables: list[Any] = []
    crs = None
    dim = None
    seen: set[str] = set()
    for emb_path, table_path in zip(embedding_paths, table_paths):
        emb = load_npy(emb_path)
        table = with_later_fractions(read_geoparquet(table_path))
        missing = [c for c in ("tile_id", "scene", "row", "col", "size", *FRACTIONS) if c not in table.columns]
        if missing:
            raise OutcropError(f"{table_path}: tile table lacks columns {missing}")
        scene = scene_of(emb_path)
        if scene in seen:
            raise OutcropError(f"{emb_path}: scene {scene!r} given twice")
        seen.add(scene)
        if len(table) and set(table["scene"].astype(str)) != {scene}:
            raise OutcropError(f"{table_path}: tile table is for scene(s) {sorted(set(table['scene']))}, "
                               f"but its embeddings are {emb_path}")
        if len(table) == 0 and emb.size == 0:
            continue  # a scene without tiles (all sea, say) adds nothing
        if emb.ndim != 2 or len(emb) != len(table):
            raise OutcropError(f"{emb_path}: {emb.shape[0] if emb.ndim else 0} embeddings for {len(table)} "
                               f"tiles in {table_path} (shape {emb.shape})")
        if dim is None:
            dim = emb.shape[1]
        elif emb.shape[1] != dim:
            raise OutcropError(f"{emb_path}: embedding dimension {emb.shape[1]}, other scenes have {dim}")
        if crs is None:
            crs = table.crs
        elif table.crs != crs:
            raise OutcropError(f"{table_path}: CRS {table.crs} differs from the run's {crs}")
        ground = ground_fraction(table["rock"].to_numpy(), table["unknown"].to_numpy() if "unknown" in table else None)
        keep = ground >= min_rock if min_rock > 0 else np.ones(len(table), bool)
        rows = np.flatnonzero(keep)
        vec = np.asarray(emb[rows], dtype=np.float32)
        if not np.all(np.isfinite(vec)):
            raise OutcropError(f"{emb_path}: embeddings contain NaN or infinite values")
        blocks.append(vec)
        sub = table.iloc[rows][["scene", "tile_id", "row", "col", "size", *FRACTIONS, "geometry"]]
        tables.append(sub)
    vectors = normalise_rows(np.concatenate(blocks, axis=0) if blocks else np.zeros((0, dim or 0), np.float32))
    table = gpd.GeoDataFrame(pd.concat(tables, ignore_index=True), geometry="geometry", crs=crs)
    table.insert(0, "id", np.arange(len(table), dtype=np.int64))
    table["scene"] = table["scene"].astype(str)
    for col in ("tile_id", "row", "col", "size"):
        table[col] = table[col].astype(np.int64)
    if len(table) == 0:
        raise OutcropError(f"no tile has a rock fraction of at least {min_rock}: nothing to index")
    return vectors, table


def ivf_params(count: int, trainable: int | None = None) -> dict[str, int]:
    """nlist (about sqrt(count)), starting nprobe and training-sample size for an IVF index.

    ``trainable`` (default ``count``) is how many vectors training may draw from; FAISS wants at
    least 39 per list, so nlist is capped by it.
    """
    trainable = count if trainable is None else trainable
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(count))))
    nlist = max(1, min(nlist, 2 ** int(math.log2(max(1, trainable // 39)))))
    return {"nlist": nlist, "nprobe": max(1, nlist // 64), "train_size": min(trainable, 64 * nlist)}


def search_batched(index: Any, queries: np.ndarray, k: int, batch: int = SEARCH_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search in batches, so that the (queries, k) results are the only large allocation."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        stop = start + batch
        scores[start:stop], ids[start:stop] = index.search(np.ascontiguousarray(queries[start:stop]), k)
    return scores, ids


def recall_at_k(exact_scores: np.ndarray, approx_scores: np.ndarray, approx_ids: np.ndarray, k: int) -> float:
    """Tie-aware recall@k: share of approximate results at least as similar as the k-th exact one."""
    kth = exact_scores[:, k - 1 : k]
    hits = (approx_scores[:, :k] >= kth - 1e-5) & (approx_ids[:, :k] >= 0)
    return float(hits.sum() / (len(exact_scores) * k))


@dataclass
class BuiltIndex:
    """An index over every vector, with the kind and parameters chosen and its measured recall@10."""

    index: Any
    kind: str
    params: dict[str, int]
    recall: float
    recall_queries: int


def index_vectors(
    vectors: np.ndarray,
    *,
    exact_max: int = 200_000,
    recall_target: float = RECALL_TARGET,
    seed: int = 0,
    log: Callable[[str], Any] = print,
) -> BuiltIndex:
    """Choose the index kind for ``vectors`` (unit rows), build it, and tune it to ``recall_target``.

    Up to ``exact_max`` vectors the index is flat (exact); above it, IVF-Flat whose ``nprobe`` is the
    smallest that reaches ``recall_target`` recall@10 on held-out queries (or ``nlist`` when none
    does: the caller decides whether the recall reached is good enough).
    """
    import faiss

    count, dim = vectors.shape
    rng = np.random.default_rng(seed)
    n_queries = min(RECALL_QUERIES, max(1, count // 10))
    query_ids = np.sort(rng.choice(count, n_queries, replace=False))
    if count <= exact_max:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return BuiltIndex(index, "flat", {}, 1.0, n_queries)
    # Held-out queries: the quantizer is trained without them.
    pool = np.setdiff1d(np.arange(count), query_ids, assume_unique=True)
    params = ivf_params(count, len(pool))
    index = _ivf_index_from_pool(vectors, pool, params, seed)
    queries = vectors[query_ids]
    k = min(RECALL_K, count)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    exact_scores, _ = search_batched(exact, queries, k)
    del exact

    def recall_at(nprobe: int) -> float:
        index.nprobe = nprobe
        approx_scores, approx_ids = search_batched(index, queries, k)
        recall = recall_at_k(exact_scores, approx_scores, approx_ids, k)
        log(f"IVF nlist={params['nlist']} nprobe={nprobe}: recall@{k} = {recall:.3f}")
        return recall

    nprobe, recall = tune_nprobe(recall_at, params["nprobe"], params["nlist"], recall_target)
    params["nprobe"] = nprobe
    index.nprobe = nprobe
    return BuiltIndex(index, "ivf_flat", params, recall, n_queries)


def tune_nprobe(recall_at: Callable[[int], float], start: int, nlist: int, target: float) -> tuple[int, float]:
    """Smallest nprobe whose recall reaches ``target``: doubling from ``start``, then bisection.

    Recall grows with nprobe, and query time grows in proportion to it, so overshooting the target
    by a doubling would cost up to twice the query time for recall nobody asked for. Returns the
    nprobe and its recall (``nlist`` and its recall when even that stays under the target).
    """
    low, high = 0, max(1, min(start, nlist))  # low: largest nprobe known to miss the target
    recalls = {high: recall_at(high)}
    while recalls[high] < target and high < nlist:
        low, high = high, min(nlist, 2 * high)
        recalls[high] = recall_at(high)
    if recalls[high] < target:
        return high, recalls[high]
    while high - low > max(1, high // 8):  # to within an eighth: finer steps cost more builds than they save
        mid = (low + high) // 2
        recalls[mid] = recall_at(mid)
        low, high = (mid, high) if recalls[mid] < target else (low, mid)
    return high, recalls[high]


def build_index(
    embedding_paths: Sequence[str | os.PathLike[str]],
    table_paths: Sequence[str | os.PathLike[str]],
    out_index: Path,
    out_table: Path,
    out_info: Path,
    *,
    min_rock: float = default("index.min_rock"),
    exact_max: int = default("index.exact_max"),
    recall_floor: float = default("index.recall_floor"),
    recall_target: float = RECALL_TARGET,
    seed: int = default("index.seed"),
    log: Callable[[str], Any] = print,
) -> None:
    """Index the tiles of every scene, measure recall@10 and write index, id table and info.

    An approximate index is tuned to ``recall_target`` (at least ``recall_floor``); the floor is
    the recall under which the build fails. Adding vectors later: see the module docstring.

    Raises :class:`OutcropError` (and writes nothing) when recall@10 stays under ``recall_floor``.
    """
    import faiss

    vectors, table = gather_vectors(embedding_paths, table_paths, min_rock=min_rock)
    count, dim = vectors.shape
    log(f"indexing {count} tiles of {table['scene'].nunique()} scenes, dimension {dim}")
    built = index_vectors(vectors, exact_max=exact_max, recall_target=max(recall_target, recall_floor),
                          seed=seed, log=log)
    k = min(RECALL_K, count)
    if built.recall < recall_floor:
        raise OutcropError(f"{out_index}: recall@{k} of the {built.kind} index is {built.recall:.3f}, "
                           f"under the floor of {recall_floor}")
    info = {"kind": built.kind, "count": count, "dim": dim, "params": built.params,
            "recall_at_10": round(built.recall, 4), "recall_queries": built.recall_queries,
            "metric": "inner_product", "min_rock": min_rock,
            "scenes": {str(s): int(n) for s, n in table["scene"].value_counts().sort_index().items()}}
    with atomic_path(out_index) as tmp:
        faiss.write_index(built.index, str(tmp))
    write_geodataframe(out_table, table)
    write_json(out_info, info)
    log(f"wrote {built.kind} index of {count} vectors, recall@{k} {built.recall:.3f}")


def _ivf_index_from_pool(vectors: np.ndarray, pool: np.ndarray, params: dict[str, int], seed: int) -> Any:
    """IVF-Flat trained on a seeded sample of ``pool`` rows; every vector is added."""
    import faiss

    dim = vectors.shape[1]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.spherical = True  # centroids on the unit sphere, like the data
    rng = np.random.default_rng(seed + 1)
    train = vectors[np.sort(rng.choice(pool, params["train_size"], replace=False))]
    index.train(np.ascontiguousarray(train))
    for start in range(0, len(vectors), 1 << 18):
        index.add(np.ascontiguousarray(vectors[start : start + (1 << 18)]))
    return index


def load_index(index_path: Path, table_path: Path) -> tuple[Any, Any]:
    """Read an index and its id table, checking that they belong together."""
    from outcrop.search.faiss_file import read_index

    if not Path(index_path).exists():
        raise OutcropError(f"{index_path}: file not found")
    index = read_index(index_path)  # its header's claims checked against the file first
    table = read_geoparquet(table_path)
    if "id" not in table.columns:
        raise OutcropError(f"{table_path}: index table has no 'id' column")
    if index.ntotal != len(table):
        raise OutcropError(f"{index_path} holds {index.ntotal} vectors but {table_path} has {len(table)} rows; "
                           "they come from different builds")
    if not np.array_equal(table["id"].to_numpy(), np.arange(len(table))):
        raise OutcropError(f"{table_path}: ids are not 0..{len(table) - 1} in order")
    return index, table


def table_vectors(table: Any, embedding_paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """The (M, D) normalised vectors of an index table's rows, read from per-scene embeddings.

    Works for every index kind (IVF indexes cannot hand back their vectors without a direct map).
    """
    by_scene = {scene_of(p): p for p in embedding_paths}
    scenes = table["scene"].to_numpy()
    tile_ids = table["tile_id"].to_numpy()
    out: np.ndarray | None = None
    for scene in np.unique(scenes):
        if scene not in by_scene:
            raise OutcropError(f"index has tiles of scene {scene!r} but no embeddings/{scene}.npy was given")
        emb = load_npy(by_scene[scene])
        rows = np.flatnonzero(scenes == scene)
        if tile_ids[rows].max() >= len(emb):
            raise OutcropError(f"{by_scene[scene]}: fewer embeddings ({len(emb)}) than the index table expects")
        if out is None:
            out = np.empty((len(table), emb.shape[1]), dtype=np.float32)
        out[rows] = emb[tile_ids[rows]]
    if out is None:
        raise OutcropError("index table is empty")
    return normalise_rows(out)
