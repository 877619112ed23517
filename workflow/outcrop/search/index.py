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
- where the flat vectors would take more than half of ``memory_gb``, ``IndexIVFPQ`` with the same
  lists, its codes re-ranked on the exact vectors read from the memory-mapped embeddings
  (:func:`choose_kind`; :data:`KINDS` names the three).

Adding vectors without rebuilding: ``IndexFlatIP`` takes them at any time and stays exact. The IVF
index takes them without retraining (``index.add``) while their distribution stays that of the
training sample. The workflow keeps the trained index and the scenes in it (``index/state``, with
checksums): when its index job reruns for a new scene, only that scene's vectors are added
(:func:`add_to_index`; ``tests/search/test_index_scale.py::test_adding_a_scene_adds_to_the_kept_index``
shows nothing else is rebuilt). It retrains when asked (``index.retrain``) or when the new vectors
lie farther from their coarse centroids than ``index.drift_max`` times the training sample did: a
very different batch of scenes deserves a rebuild. HNSW would take new vectors too, but can never
remove any.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import atomic_path, load_npy, read_geoparquet, write_json
from outcrop.raster.geo import TileLayout
from outcrop.raster.surfaces import ground_fraction
from outcrop.raster.tiles import FRACTION_COLUMNS, with_later_fractions
from outcrop.search.incremental import (
    cached_digest,
    file_cache,
    file_digest,
    given_files,
    link_or_copy,
    read_state,
    unchanged,
)
from outcrop.search.index_table import IndexTable, append_index_table, write_index_table
from outcrop.search.vectors import (
    VectorSource,
    embedding_source,
    exact_top_k,
    is_quantised,
    rerank,
    rerank_count,
    table_source,
)

KINDS = ("flat", "ivf_flat", "ivf_pq")  # the kinds of index built, smallest run first (:func:`choose_kind`)
FRACTIONS = ("valid", *FRACTION_COLUMNS)  # the tile table's fraction columns
TABLE_COLUMNS = ("id", "scene", "tile_id", "row", "col", "size", *FRACTIONS, "geometry")
RECALL_K = 10
RECALL_QUERIES = 1000
RECALL_SAMPLE = 100_000  # an add measures recall within this many tiles, whatever the index holds
PLATEAU = 0.002  # a doubling of nprobe that gains less recall than this has reached the quantiser's limit
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


@dataclass
class ScenePart:
    """One scene's indexed tiles: its table rows, its embeddings file and the rows of it indexed.

    ``table`` is None for a scene kept from an earlier build and not read again (its rows are in
    the kept id table)."""

    scene: str
    table: Any
    embeddings: Path
    rows: np.ndarray
    dim: int
    digest: str
    table_path: Path | None = None


def gather_parts(
    embedding_paths: Sequence[str | os.PathLike[str]],
    table_paths: Sequence[str | os.PathLike[str]],
    *,
    min_rock: float = 0.0,
    digests: bool = False,
    cache: dict[str, Any] | None = None,
    kept: dict[str, tuple[str, int, int, Path]] | None = None,
) -> list[ScenePart]:
    """Check every scene's embeddings against its tile table and pick the tiles to index.

    ``embedding_paths`` and ``table_paths`` are aligned per scene. A tile is indexed when its rock
    fraction is at least ``min_rock`` (0 indexes every tile). Vectors stay on disk (memory-mapped);
    with ``digests`` each part carries the SHA-256 of its embeddings and table files, taken from
    ``cache`` (:func:`~outcrop.search.incremental.cached_digest`) when they have not changed.

    ``kept`` maps a scene already in a kept index to (digest, count, dim, rows file): when both its
    files are unchanged by ``cache``, neither is read again; its part has no table.
    """
    cache = {} if cache is None else cache
    kept = kept or {}
    if len(embedding_paths) != len(table_paths):
        raise OutcropError(f"{len(embedding_paths)} embedding files but {len(table_paths)} tile tables")
    if not embedding_paths:
        raise OutcropError("no scenes to index")
    parts: list[ScenePart] = []
    crs = None
    dim = None
    seen: set[str] = set()
    for emb_path, table_path in zip(embedding_paths, table_paths):
        scene = scene_of(emb_path)
        if scene in kept and scene not in seen and unchanged(emb_path, cache) and unchanged(table_path, cache):
            digest, count, kept_dim, rows_file = kept[scene]
            rows = np.load(rows_file, mmap_mode="r", allow_pickle=False) if count else np.empty(0, np.int64)
            seen.add(scene)
            dim = kept_dim if dim is None else dim
            parts.append(ScenePart(scene, None, Path(emb_path), rows, kept_dim, digest))
            continue
        emb = load_npy(emb_path)
        table = with_later_fractions(read_geoparquet(table_path))
        missing = [c for c in ("tile_id", "scene", "row", "col", "size", *FRACTIONS) if c not in table.columns]
        if missing:
            raise OutcropError(f"{table_path}: tile table lacks columns {missing}")
        if scene in seen:
            raise OutcropError(f"{emb_path}: scene {scene!r} given twice")
        seen.add(scene)
        if len(table) and set(table["scene"].astype(str)) != {scene}:
            raise OutcropError(
                f"{table_path}: tile table is for scene(s) {sorted(set(table['scene']))}, "
                f"but its embeddings are {emb_path}"
            )
        if len(table) == 0 and emb.size == 0:
            continue  # a scene without tiles (all sea, say) adds nothing
        if emb.ndim != 2 or len(emb) != len(table):
            raise OutcropError(
                f"{emb_path}: {emb.shape[0] if emb.ndim else 0} embeddings for {len(table)} "
                f"tiles in {table_path} (shape {emb.shape})"
            )
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
        sub = table.iloc[rows][["scene", "tile_id", "row", "col", "size", *FRACTIONS, "geometry"]]
        digest = f"{cached_digest(emb_path, cache)}:{cached_digest(table_path, cache)}" if digests else ""
        parts.append(ScenePart(scene, sub, Path(emb_path), rows, int(emb.shape[1]), digest, Path(table_path)))
    if not any(len(p.rows) for p in parts):
        raise OutcropError(f"no tile has a rock fraction of at least {min_rock}: nothing to index")
    return parts


def parts_table(parts: Sequence[ScenePart]) -> Any:
    """The id table of ``parts`` in order: ``id`` = row = FAISS id, scene, tile_id, …, footprint."""
    import geopandas as gpd
    import pandas as pd

    crs = next(p.table.crs for p in parts)
    table = gpd.GeoDataFrame(pd.concat([p.table for p in parts], ignore_index=True), geometry="geometry", crs=crs)
    table.insert(0, "id", np.arange(len(table), dtype=np.int64))
    table["scene"] = table["scene"].astype(str)
    for col in ("tile_id", "row", "col", "size"):
        table[col] = table[col].astype(np.int64)
    return table


def parts_source(parts: Sequence[ScenePart]) -> VectorSource:
    """The vectors of ``parts`` in id order, memory-mapped."""
    return embedding_source([(p.embeddings, p.rows) for p in parts])


def gather_vectors(
    embedding_paths: Sequence[str | os.PathLike[str]],
    table_paths: Sequence[str | os.PathLike[str]],
    *,
    min_rock: float = 0.0,
) -> tuple[np.ndarray, Any]:
    """All vectors to index in memory, (M, D) normalised, with their id table (small runs, tests).

    See :func:`gather_parts`; the build itself streams them instead (:func:`parts_source`).
    """
    parts = gather_parts(embedding_paths, table_paths, min_rock=min_rock)
    source = parts_source(parts)
    vectors = np.empty((source.count, source.dim), dtype=np.float32)
    for start, block in source.chunks():
        vectors[start : start + len(block)] = block
    return vectors, parts_table(parts)


def ivf_params(count: int, trainable: int | None = None) -> dict[str, int]:
    """nlist (about sqrt(count)), starting nprobe and training-sample size for an IVF index.

    ``trainable`` (default ``count``) is how many vectors training may draw from; FAISS wants at
    least 39 per list, so nlist is capped by it.
    """
    trainable = count if trainable is None else trainable
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(count))))
    nlist = max(1, min(nlist, 2 ** int(math.log2(max(1, trainable // 39)))))
    return {"nlist": nlist, "nprobe": max(1, nlist // 64), "train_size": min(trainable, 64 * nlist)}


def pq_params(count: int, dim: int, trainable: int | None = None) -> dict[str, int]:
    """IVF parameters plus the product quantiser's: ``m`` sub-vectors of 8 bits, at most 4 dims each.

    ``m`` is the smallest divisor of ``dim`` with at most 4 dimensions a byte (the shipped 198-float
    vectors: 66 sub-vectors of 3; 33 of 6 left recall@10 stuck at 0.92 whatever nprobe). At most 4
    dimensions per byte keeps the approximate ranking good enough that re-ranking
    ``rerank_count(10)`` candidates on exact vectors reaches recall@10 ≥ 0.9 (benchmarks/README.md),
    at 1/16 (4 dimensions a byte) to 1/4 of the memory of flat vectors. The codebooks want 39 points per
    code (256 codes).
    """
    params = ivf_params(count, trainable)
    m = min(d for d in range(1, dim + 1) if dim % d == 0 and dim <= 4 * d)
    trainable = count if trainable is None else trainable
    params.update(m=m, nbits=8, train_size=min(trainable, max(params["train_size"], 256 * 64)))
    return params


def choose_kind(count: int, dim: int, *, exact_max: int, memory_gb: float) -> str:
    """``flat`` up to ``exact_max`` vectors; then ``ivf_flat`` while its vectors (with their ids)
    take at most half of ``memory_gb``, the rest left to training, queries and tables; else ``ivf_pq``."""
    if count <= exact_max:
        return "flat"
    return "ivf_flat" if count * (4 * dim + 8) <= memory_gb * (1 << 30) / 2 else "ivf_pq"


def index_bytes(count: int, dim: int, kind: str) -> int:
    """Memory an index of ``kind`` over ``count`` vectors needs for its vectors or codes and ids."""
    if kind == "ivf_pq":
        return count * (pq_params(count, dim)["m"] + 8)
    return count * (4 * dim + (8 if kind == "ivf_flat" else 0))


def search_batched(index: Any, queries: np.ndarray, k: int, batch: int = SEARCH_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search in batches, so that the (queries, k) results are the only large allocation."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        stop = start + batch
        scores[start:stop], ids[start:stop] = index.search(np.ascontiguousarray(queries[start:stop]), k)
    return scores, ids


def search_exact(index: Any, queries: np.ndarray, k: int, source: VectorSource) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index``; for a quantised one, re-rank ``rerank_count(k)`` candidates on exact vectors."""
    if not is_quantised(index):
        return search_batched(index, queries, k)
    _, cand = search_batched(index, queries, rerank_count(k, index.ntotal))
    return rerank(queries, cand, source.take, k)


def recall_at_k(exact_scores: np.ndarray, approx_scores: np.ndarray, approx_ids: np.ndarray, k: int) -> float:
    """Tie-aware recall@k: share of approximate results at least as similar as the k-th exact one."""
    kth = exact_scores[:, k - 1 : k]
    hits = (approx_scores[:, :k] >= kth - 1e-5) & (approx_ids[:, :k] >= 0)
    return float(hits.sum() / (len(exact_scores) * k))


@dataclass
class BuiltIndex:
    """An index over every vector, with the kind and parameters chosen and its measured recall@10.

    ``train_distance`` is the mean cosine distance of the training sample to its nearest coarse
    centroid (IVF kinds): the reference that later scenes' drift is measured against.
    """

    index: Any
    kind: str
    params: dict[str, int]
    recall: float
    recall_queries: int
    train_distance: float | None = None
    trained: np.ndarray | None = None  # the trained, empty index, serialised (IVF kinds)
    # The recall on held-out queries when the index was trained and, beside it, the recall within
    # the bounded sample an add measures (:func:`sampled_recall`), taken on the same index then.
    basis: dict[str, float] | None = None


def index_vectors(
    vectors: np.ndarray | VectorSource,
    *,
    exact_max: int = 200_000,
    memory_gb: float = default("index.memory_gb"),
    recall_target: float = RECALL_TARGET,
    seed: int = 0,
    log: Callable[[str], Any] = print,
) -> BuiltIndex:
    """Choose the index kind for ``vectors`` (unit rows), build it, and tune it to ``recall_target``.

    Up to ``exact_max`` vectors the index is flat (exact); above it IVF-Flat, or IVF-PQ with exact
    re-ranking when flat vectors would not fit ``memory_gb`` (:func:`choose_kind`). ``nprobe`` is
    the smallest that reaches ``recall_target`` recall@10 on held-out queries (or, when none does,
    ``nlist``, or for IVF-PQ the nprobe where recall stopped growing: the caller decides whether
    the recall reached is good enough). Vectors are read
    from the source in chunks: memory holds the index, a training sample and one chunk.
    """
    import faiss

    source = vectors if isinstance(vectors, VectorSource) else VectorSource.from_array(vectors)
    count, dim = source.count, source.dim
    rng = np.random.default_rng(seed)
    n_queries = min(RECALL_QUERIES, max(1, count // 10))
    query_ids = np.sort(rng.choice(count, n_queries, replace=False))
    kind = choose_kind(count, dim, exact_max=exact_max, memory_gb=memory_gb)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        _add_all(index, source)
        return BuiltIndex(index, "flat", {}, 1.0, n_queries)
    # Held-out queries: the quantizer is trained without them.
    trainable = count - n_queries
    params = pq_params(count, dim, trainable) if kind == "ivf_pq" else ivf_params(count, trainable)
    _, train = source.sample(params["train_size"], seed + 1, exclude=query_ids)
    log(f"training {kind} ({params}) on {len(train)} vectors of {count}")
    index = new_ivf_index(kind, dim, params, seed)
    index.train(train)
    trained = faiss.serialize_index(index)
    train_distance = coarse_distance(index, train)
    del train
    _add_all(index, source)
    queries = source.take(query_ids)
    k = min(RECALL_K, count)
    exact_scores, _ = exact_top_k(source, queries, k)

    def recall_at(nprobe: int) -> float:
        index.nprobe = nprobe
        approx_scores, approx_ids = search_exact(index, queries, k, source)
        recall = recall_at_k(exact_scores, approx_scores, approx_ids, k)
        log(f"{kind} nlist={params['nlist']} nprobe={nprobe}: recall@{k} = {recall:.3f}")
        return recall

    nprobe, recall = tune_nprobe(recall_at, params["nprobe"], params["nlist"], recall_target, ceiling=kind == "ivf_pq")
    params["nprobe"] = nprobe
    index.nprobe = nprobe
    return BuiltIndex(index, kind, params, recall, n_queries, train_distance, trained)


def new_ivf_index(kind: str, dim: int, params: dict[str, int], seed: int) -> Any:
    """An untrained IVF-Flat or IVF-PQ index (inner product, spherical coarse centroids)."""
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    index: faiss.IndexIVF
    if kind == "ivf_pq":
        index = faiss.IndexIVFPQ(
            quantizer, dim, params["nlist"], params["m"], params["nbits"], faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.spherical = True  # centroids on the unit sphere, like the data
    return index


def coarse_distance(index: Any, vectors: np.ndarray) -> float:
    """Mean cosine distance (1 − inner product) of ``vectors`` to their nearest coarse centroid."""
    import faiss

    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    sims, _ = search_batched(quantizer, np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return float(np.mean(1.0 - sims[:, 0])) if len(sims) else 0.0


def _add_all(index: Any, source: VectorSource) -> None:
    for _, block in source.chunks():
        index.add(block)


def tune_nprobe(
    recall_at: Callable[[int], float], start: int, nlist: int, target: float, *, ceiling: bool = False
) -> tuple[int, float]:
    """Smallest nprobe whose recall reaches ``target``: doubling from ``start``, then bisection.

    Recall grows with nprobe, and query time grows in proportion to it, so overshooting the target
    by a doubling would cost up to twice the query time for recall nobody asked for. Returns the
    nprobe and its recall (``nlist`` and its recall when even that stays under the target; with
    ``ceiling``, for a product-quantised index whose recall is bounded under 1, the last nprobe
    before a doubling stopped adding recall).
    """
    low, high = 0, max(1, min(start, nlist))  # low: largest nprobe known to miss the target
    recalls = {high: recall_at(high)}
    while recalls[high] < target and high < nlist:
        low, high = high, min(nlist, 2 * high)
        recalls[high] = recall_at(high)
        if ceiling and recalls[high] < target and recalls[high] - recalls[low] < PLATEAU:
            return low, recalls[low]  # more lists add query time, not recall: the quantiser's limit
    if recalls[high] < target:
        return high, recalls[high]
    while high - low > max(1, high // 8):  # to within an eighth: finer steps cost more builds than they save
        mid = (low + high) // 2
        recalls[mid] = recall_at(mid)
        low, high = (mid, high) if recalls[mid] < target else (low, mid)
    return high, recalls[high]


def sampled_recall(index: Any, source: VectorSource, seed: int, sample: int | None = None) -> tuple[float, int]:
    """Recall@10 of ``index`` (re-ranked when quantised) within a seeded sample of at most ``sample``
    ids (:data:`RECALL_SAMPLE`).

    Queries are drawn from the sample, the exact top 10 is a scan of the sample, and the index is
    searched among the sample's ids only (a FAISS ID selector), so the two answer the same question
    at a cost bounded by ``sample``, not by the size of the index: what an add can afford.
    """
    import faiss

    count = source.count
    sample = RECALL_SAMPLE if sample is None else sample
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(count, min(sample, count), replace=False)).astype(np.int64)
    sub = VectorSource.from_array(source.take(ids))
    n_queries = min(RECALL_QUERIES, max(1, len(ids) // 10))
    queries = sub.take(np.sort(rng.choice(len(ids), n_queries, replace=False)))
    k = min(RECALL_K, len(ids))
    exact_scores, exact_pos = exact_top_k(sub, queries, k)
    selector = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
    # faiss's Python wrapper sets a SearchParameters' fields from keywords; its stub leaves them out.
    params = faiss.SearchParametersIVF(sel=selector, nprobe=faiss.extract_index_ivf(index).nprobe)  # type: ignore[call-arg]
    quantised = is_quantised(index)
    scores, found = index.search(queries, rerank_count(k, len(ids)) if quantised else k, params=params)
    if quantised:
        scores, found = rerank(queries, found, source.take, k)
    return recall_at_k(exact_scores, scores, found, k), n_queries


def added_recall(sampled: float, basis: dict[str, float] | None) -> float:
    """Recall@10 of an index after an add, from the recall within a bounded sample.

    Within a sample of 100 000 of ten million tiles, a query's ten nearest are ten of the sample:
    farther apart than its true ten nearest, so spread over more IVF lists, and an index whose
    recall on held-out queries is 0.95 scores 0.90 there. That figure alone is not the index's
    recall. With the ``basis`` taken when the index was trained (both figures, on the same index),
    the recall after an add is the trained recall moved by what the sampled figure moved since (at
    most 1). As adds grow the index the sample becomes a smaller share of it and its figure falls
    for that reason too, so the estimate errs low: an add retrains early, never late. An index
    kept from before bases were kept (or with an unreadable one) has the sampled figure only.
    """
    try:
        recall, before = float(basis["recall"]), float(basis["sampled"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return float(sampled)
    return float(min(1.0, recall + sampled - before))


def build_index(
    embedding_paths: Sequence[str | os.PathLike[str]],
    table_paths: Sequence[str | os.PathLike[str]],
    out_index: Path,
    out_table: Path,
    out_info: Path,
    *,
    min_rock: float = default("index.min_rock"),
    exact_max: int = default("index.exact_max"),
    memory_gb: float = default("index.memory_gb"),
    recall_floor: float = default("index.recall_floor"),
    recall_target: float = RECALL_TARGET,
    seed: int = default("index.seed"),
    state_dir: Path | None = None,
    retrain: bool = default("index.retrain"),
    drift_max: float = default("index.drift_max"),
    grid: Path | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    """Index the tiles of every scene, measure recall@10 and write index, id table and info.

    ``grid`` is the run's ``grid.json``: info.json then says on which grid (CRS, resolution, origin,
    and why) the indexed tiles lie, so that a query or a later run can tell whether it matches.

    An approximate index is tuned to ``recall_target`` (at least ``recall_floor``); the floor is
    the recall under which the build fails. With ``state_dir``, the trained index and the scenes in
    it (with checksums) are kept there, and a later call whose scenes are those plus new ones only
    adds the new ones (:mod:`outcrop.search.incremental`), unless ``retrain`` is asked or their
    drift passes ``drift_max``.

    Raises :class:`OutcropError` (and writes nothing) when recall@10 stays under ``recall_floor``.
    """
    from outcrop.raster.grid_choice import grid_record

    run_grid = grid_record(grid) if grid is not None else None  # a bad grid.json fails before any work
    state = read_state(Path(state_dir) / "state.json") if state_dir is not None else None
    cache = file_cache(state)
    kept = kept_scenes(Path(state_dir), state) if state_dir is not None and state and not retrain else {}
    parts = gather_parts(
        embedding_paths, table_paths, min_rock=min_rock, digests=state_dir is not None, cache=cache, kept=kept
    )
    settings = {"min_rock": min_rock, "exact_max": exact_max, "memory_gb": memory_gb, "seed": seed, "dim": parts[0].dim}
    added = None
    if state_dir is not None and not retrain:
        added = add_to_index(Path(state_dir), parts, settings, drift_max=drift_max, recall_floor=recall_floor, log=log)
    elif retrain:
        log("retraining, as asked (index.retrain)")
    if added is not None:
        built, parts, info_extra = added
    else:
        if any(p.table is None for p in parts):  # kept scenes were not read: a full build needs them
            parts = gather_parts(embedding_paths, table_paths, min_rock=min_rock, digests=True, cache=cache)
        built = trained_index(
            parts,
            exact_max=exact_max,
            memory_gb=memory_gb,
            recall_target=max(recall_target, recall_floor),
            seed=seed,
            keep_basis=state_dir is not None,
            log=log,
        )
        info_extra = {"built": "trained", "added": [], "drift": None}
    count = sum(len(p.rows) for p in parts)
    k = min(RECALL_K, count)
    if built.recall < recall_floor:
        raise OutcropError(
            f"{out_index}: recall@{k} of the {built.kind} index is {built.recall:.3f}, "
            f"under the floor of {recall_floor}"
        )
    info = index_info(built, parts, min_rock=min_rock, memory_gb=memory_gb, run_grid=run_grid, extra=info_extra)
    trained = info_extra["built"] == "trained"
    write_index_outputs(built, parts, info_extra["added"], out_index, out_table, state_dir=state_dir, trained=trained)
    if state_dir is not None:
        from outcrop.parquet_append import commit

        cache = given_files(cache, [*embedding_paths, *table_paths])
        save_index_state(Path(state_dir), out_index, out_table, built, parts, settings, cache, retrained=trained)
        commit(Path(state_dir) / "tiles.parquet")
    write_json(out_info, info)
    log(f"wrote {built.kind} index of {count} vectors ({info_extra['built']}), recall@{k} {built.recall:.3f}")


def trained_index(
    parts: Sequence[ScenePart],
    *,
    exact_max: int,
    memory_gb: float,
    recall_target: float,
    seed: int,
    keep_basis: bool,
    log: Callable[[str], Any] = print,
) -> BuiltIndex:
    """An index trained afresh on every part; with ``keep_basis`` (a kept state), the recall within
    the fixed sample is measured too, which a later add's sampled recall is read against."""
    source = parts_source(parts)
    log(f"indexing {source.count} tiles of {len(parts)} scenes, dimension {source.dim}")
    built = index_vectors(
        source, exact_max=exact_max, memory_gb=memory_gb, recall_target=recall_target, seed=seed, log=log
    )
    if keep_basis and built.kind != "flat":
        sampled, _ = sampled_recall(built.index, source, seed + 3)
        built.basis = {"recall": built.recall, "sampled": sampled}
    return built


def index_info(
    built: BuiltIndex,
    parts: Sequence[ScenePart],
    *,
    min_rock: float,
    memory_gb: float,
    run_grid: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """``info.json``: what was indexed, how, and how well; on which grid."""
    count, dim = sum(len(p.rows) for p in parts), parts[0].dim
    info = {
        "kind": built.kind,
        "count": count,
        "dim": dim,
        "params": built.params,
        "recall_at_10": round(built.recall, 4),
        "recall_queries": built.recall_queries,
        "metric": "inner_product",
        "min_rock": min_rock,
        "memory_gb": memory_gb,
        "bytes": index_bytes(count, dim, built.kind),
        "rerank": rerank_count(RECALL_K, count) if built.kind == "ivf_pq" else None,
        "scenes": {p.scene: int(len(p.rows)) for p in sorted(parts, key=lambda p: p.scene) if len(p.rows)},
        **extra,
    }
    if run_grid is not None:
        info["grid"] = run_grid
    return info


def write_index_outputs(
    built: BuiltIndex,
    parts: Sequence[ScenePart],
    added: Sequence[str],
    out_index: Path,
    out_table: Path,
    *,
    state_dir: Path | None,
    trained: bool,
) -> None:
    """The index file and its id table: written whole after a training, the new scenes' rows appended
    in place to the kept table after an add (ids continuing)."""
    import faiss

    count = sum(len(p.rows) for p in parts)
    kept_table = Path(state_dir) / "tiles.parquet" if state_dir is not None else None
    new = [p for p in parts if p.scene in set(added)]
    # checked before anything is written: tables of two tile grids are refused
    tile_grid = recorded_tile_grid(parts) if trained else recorded_tile_grid(new, kept_table)
    with atomic_path(out_index) as tmp:
        faiss.write_index(built.index, str(tmp))
    if trained:
        write_index_table(out_table, parts_table(parts), tile_grid=tile_grid)
        return
    assert kept_table is not None  # an add (kept or added) is made only from a state_dir
    if new:
        table = parts_table(new)
        table["id"] += count - len(table)
        append_index_table(kept_table, table, tile_grid=tile_grid)
    else:  # nothing appended: the table's time is this job's, as Snakemake expects of its outputs
        os.utime(kept_table)
    link_or_copy(kept_table, out_table)


def recorded_tile_grid(parts: Sequence[ScenePart], kept_table: Path | None = None) -> TileLayout | None:
    """The tile grid the indexed scenes' tile tables record (and the kept id table, on an add), for
    the id table to carry on; None when one of them records none (tables of an older run: the later
    stages then infer it). Tables cut on different grids are one error naming the odd one."""
    from outcrop.raster.tiles import read_tile_grid
    from outcrop.search.index_table import IndexTable

    found = [(p.table_path, read_tile_grid(p.table_path)) for p in parts if p.table_path is not None]
    if kept_table is not None:
        found.append((kept_table, IndexTable.open(kept_table).tile_grid))
    grids = [(path, grid) for path, grid in found if grid is not None]
    if not found or len(grids) < len(found):
        return None
    first_path, first = grids[0]
    for path, grid in grids[1:]:
        if (grid.size, grid.stride) != (first.size, first.stride):
            raise OutcropError(
                f"{path}: tiles of {grid.size} px at a stride of {grid.stride}, but {first_path} "
                f"holds tiles of {first.size} px at {first.stride}; cut every scene with one "
                "tiles.size and tiles.stride"
            )
    return first


def kept_scenes(state_dir: Path, state: dict[str, Any]) -> dict[str, tuple[str, int, int, Path]]:
    """Scenes of a kept index that an add need not read again: scene -> (digest, count, dim, rows file).

    Only when the kept id table and every scene's rows file are there; else none (all are read).
    """
    dim = (state.get("settings") or {}).get("dim")
    scenes = state.get("scenes") or []
    if not isinstance(dim, int) or not (state_dir / "tiles.parquet").is_file():
        return {}
    out = {}
    for entry in scenes:
        if not isinstance(entry, dict):
            return {}
        rows = state_dir / "rows" / f"{entry.get('scene')}.npy"
        count = entry.get("count")
        if not isinstance(count, int) or (count and not rows.is_file()):
            return {}
        out[str(entry["scene"])] = (str(entry.get("digest")), count, dim, rows)
    return out


def add_to_index(
    state_dir: Path,
    parts: Sequence[ScenePart],
    settings: dict[str, Any],
    *,
    drift_max: float,
    recall_floor: float,
    log: Callable[[str], Any],
) -> tuple[BuiltIndex, list[ScenePart], dict[str, Any]] | None:
    """Add the scenes of ``parts`` that the kept index (:mod:`outcrop.search.incremental`) lacks;
    None when it must be trained afresh.

    Proportional to the new scenes: kept scenes' files are not read when unchanged (see
    :func:`gather_parts`), the new rows are appended to the kept id table, and recall is measured
    within a bounded sample (:func:`sampled_recall`).

    Returns (BuiltIndex, parts in id order: kept scenes first, then the new ones, info fields).
    """
    from outcrop.search.incremental import DRIFT_SAMPLE

    state = read_state(state_dir / "state.json")
    if state is None:
        log("no kept index state: training")
        return None
    order = kept_order(state, parts, settings, log)
    if order is None:
        return None
    ordered, new = order
    index = kept_index(state_dir, state, new, log)
    if index is None:
        return None
    kind = state["kind"]
    params = state.get("params", {})
    basis = state.get("recall_basis")
    if not new:
        log(f"no new scene: the kept {kind} index stands")
        built = BuiltIndex(
            index, kind, params, state["recall"], state["recall_queries"], state.get("train_distance"), basis=basis
        )
        return built, ordered, {"built": "kept", "added": [], "drift": None}
    new_source = parts_source(new)
    drift = None
    if kind != "flat" and new_source.count:
        _, sample = new_source.sample(DRIFT_SAMPLE, settings["seed"] + 2)
        reference = state.get("train_distance") or 0.0
        drift = coarse_distance(index, sample) / reference if reference > 0 else float("inf")
        if drift > drift_max:
            log(f"drift {drift:.3f} of the new scenes passes index.drift_max {drift_max}: retraining")
            return None
    for _, block in new_source.chunks():
        index.add(block)
    if kind == "flat":
        recall, queries = 1.0, state["recall_queries"]
    else:
        sampled, queries = sampled_recall(index, parts_source(ordered), settings["seed"] + 3)
        recall = added_recall(sampled, basis)
        if recall < recall_floor:
            log(f"recall@10 {recall:.3f} after adding is under the floor {recall_floor}: retraining")
            return None
    scenes = [p.scene for p in new]
    log(
        f"added {len(scenes)} scene(s) ({new_source.count} tiles) to the kept {kind} index"
        + (f", drift {drift:.3f}" if drift is not None else "")
        + (f", recall@10 {recall:.3f}" if kind != "flat" else "")
        + f": {', '.join(scenes)}"
    )
    built = BuiltIndex(index, kind, params, recall, queries, state.get("train_distance"), basis=basis)
    info = {"built": "added", "added": scenes, "drift": None if drift is None else round(drift, 4)}
    return built, ordered, info


def kept_order(
    state: dict[str, Any], parts: Sequence[ScenePart], settings: dict[str, Any], log: Callable[[str], Any]
) -> tuple[list[ScenePart], list[ScenePart]] | None:
    """The parts in id order (the kept scenes as the state lists them, then the new ones) and the new
    ones; None, saying why, when the kept index no longer stands for them: other settings, a kept
    scene gone or changed, or more tiles than its kind suits."""
    if state.get("settings") != settings:
        log("index settings changed since the kept index was trained: training afresh")
        return None
    by_scene = {p.scene: p for p in parts}
    kept = state.get("scenes", [])
    for entry in kept:
        part = by_scene.get(entry.get("scene"))
        if part is None:
            log(f"scene {entry.get('scene')!r} of the kept index is gone: training afresh")
            return None
        if part.digest != entry.get("digest") or len(part.rows) != entry.get("count"):
            log(f"scene {part.scene!r} changed since it was indexed: training afresh")
            return None
    names = {e["scene"] for e in kept}
    new = [p for p in parts if p.scene not in names]
    ordered = [by_scene[e["scene"]] for e in kept] + new
    total = sum(len(p.rows) for p in ordered)
    wanted = choose_kind(total, settings["dim"], exact_max=settings["exact_max"], memory_gb=settings["memory_gb"])
    if wanted != state["kind"]:
        log(f"{total} tiles call for a {wanted} index, the kept one is {state['kind']}: training afresh")
        return None
    return ordered, new


def kept_index(state_dir: Path, state: dict[str, Any], new: Sequence[ScenePart], log: Callable[[str], Any]) -> Any:
    """The kept FAISS index, once its id table is whole again (an add stopped halfway is undone) and
    both hold the scenes the state lists; None, saying why, when they cannot be used.

    Raises :class:`OutcropError` when a new scene's tiles lie in another CRS than the kept ones.
    """
    from outcrop.parquet_append import restore
    from outcrop.search.faiss_file import read_index

    if restore(state_dir / "tiles.parquet"):
        log("an add that did not finish was undone: the kept id table is as the state lists it")
    try:
        index = read_index(state_dir / "index.faiss")
        kept_table = IndexTable.open(state_dir / "tiles.parquet")
    except OutcropError as exc:
        log(f"kept index unusable ({exc}): training afresh")
        return None
    kept_count = sum(e["count"] for e in state.get("scenes", []))
    if index.ntotal != kept_count or kept_table.count != kept_count:
        log("kept index does not hold the scenes its state lists: training afresh")
        return None
    for part in new:
        if part.table is not None and len(part.table) and part.table.crs != kept_table.crs:
            raise OutcropError(
                f"{part.table_path}: CRS {part.table.crs.to_string()} differs from the run's "
                f"{kept_table.crs.to_string()}"
            )
    return index


def save_index_state(
    state_dir: Path,
    out_index: Path,
    out_table: Path,
    built: BuiltIndex,
    parts: Sequence[ScenePart],
    settings: dict[str, Any],
    cache: dict[str, Any],
    *,
    retrained: bool,
) -> None:
    """Keep what a later call needs to add to this index (index and id table are linked, not copied);
    only the rows files of scenes read this time are written."""
    state_dir.mkdir(parents=True, exist_ok=True)
    old = read_state(state_dir / "state.json") or {}
    link_or_copy(out_index, state_dir / "index.faiss")
    link_or_copy(out_table, state_dir / "tiles.parquet")
    (state_dir / "rows").mkdir(exist_ok=True)
    for part in parts:
        if part.table is not None and len(part.rows):
            with atomic_path(state_dir / "rows" / f"{part.scene}.npy") as tmp:
                np.save(tmp, np.asarray(part.rows, dtype=np.int64))
    trained_sha = old.get("trained_sha256")
    if retrained:
        trained = state_dir / "trained.faiss"
        if built.trained is not None:
            with atomic_path(trained) as tmp:
                tmp.write_bytes(built.trained.tobytes())
            trained_sha = file_digest(trained)
        else:
            trained.unlink(missing_ok=True)
            trained_sha = None
    write_json(
        state_dir / "state.json",
        {
            "kind": built.kind,
            "params": built.params,
            "settings": settings,
            "recall": built.recall,
            "recall_queries": built.recall_queries,
            "train_distance": built.train_distance,
            "recall_basis": built.basis,
            "trained_sha256": trained_sha,
            "scenes": [{"scene": p.scene, "digest": p.digest, "count": int(len(p.rows))} for p in parts],
            "files": cache,
        },
    )


def load_index(index_path: Path, table_path: Path) -> tuple[Any, Any]:
    """Read an index and its id table, checking that they belong together."""
    from outcrop.search.faiss_file import read_index

    if not Path(index_path).exists():
        raise OutcropError(f"{index_path}: file not found")
    index = read_index(index_path)  # its header's claims checked against the file first
    table = with_later_fractions(read_geoparquet(table_path))  # id tables written before a class lack it
    if "id" not in table.columns:
        raise OutcropError(f"{table_path}: index table has no 'id' column")
    if index.ntotal != len(table):
        raise OutcropError(
            f"{index_path} holds {index.ntotal} vectors but {table_path} has {len(table)} rows; "
            "they come from different builds"
        )
    if not np.array_equal(table["id"].to_numpy(), np.arange(len(table))):
        raise OutcropError(f"{table_path}: ids are not 0..{len(table) - 1} in order")
    return index, table


def embeddings_lookup(embedding_paths: Sequence[str | os.PathLike[str]]) -> Callable[[str], Path]:
    """Scene name -> its embeddings file, refusing (by name) a scene the index holds but no file was given for."""
    by_scene = {scene_of(p): Path(p) for p in embedding_paths}

    def embeddings_of(scene: str) -> Path:
        if scene not in by_scene:
            raise OutcropError(f"index has tiles of scene {scene!r} but no embeddings/{scene}.npy was given")
        return by_scene[scene]

    return embeddings_of


def table_vector_source(table: Any, embedding_paths: Sequence[str | os.PathLike[str]]) -> VectorSource:
    """The normalised vectors of an index table's rows (id ``i``: row ``i``), read from the per-scene
    embeddings a chunk at a time: at coast scale they do not fit in memory together."""
    return table_source(
        table["scene"].astype(str).to_numpy(), table["tile_id"].to_numpy(), embeddings_lookup(embedding_paths)
    )


def table_vectors(table: Any, embedding_paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """The (M, D) normalised vectors of an index table's rows, held at once: for samples and small
    runs (a coast's go through :func:`table_vector_source`).

    Works for every index kind (IVF indexes cannot hand back their vectors without a direct map).
    """
    source = table_vector_source(table, embedding_paths)
    out = np.empty((source.count, source.dim), dtype=np.float32)
    for start, block in source.chunks():
        out[start : start + len(block)] = block
    return out
