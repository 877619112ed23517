"""Clusters of similar ground: spherical k-means at several k, and a hierarchy above the finest.

k-means runs on the unit sphere (cosine, like the index) with FAISS, seeded, at each requested k.
Labels are renumbered by cluster size (0 = largest) so that colours and tables read the same way
from run to run. The hierarchy is Ward linkage over the centroids of the largest k, each weighted by
its size: merging clusters A and B costs ``nA·nB/(nA+nB)·|cA−cB|²``, exactly the growth in
within-cluster sum of squares that Ward linkage on all tiles would see if each cluster were
collapsed onto its centroid. That keeps the hierarchy O(k²) in memory however many tiles there are.
Cutting it at ``c`` clusters gives the ``h{c}`` labels.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.csvfile import write_csv
from outcrop.errors import OutcropError
from outcrop.io import read_geoparquet, write_cog, write_geodataframe
from outcrop.raster.geo import TileLayout, infer_layout, scene_band_names, scene_rasters
from outcrop.search.cluster_outputs import Summary, exemplars_by_similarity, fingerprint, link_tree
from outcrop.search.incremental import cached_digest, link_or_copy
from outcrop.search.index import FRACTIONS, SEARCH_BATCH, embeddings_lookup, normalise_rows, scene_of
from outcrop.search.index_table import IndexTable, table_layout
from outcrop.search.vectors import VectorSource, table_source

SPECTRUM_BATCH = 2048


def spherical_kmeans(
    vectors: np.ndarray, k: int, *, seed: int = 0, niter: int = 10, max_points_per_centroid: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded spherical k-means with FAISS: (labels (N,) int64, unit centroids (k, D) float32).

    Labels are numbered by decreasing cluster size (ties by centroid order), so that the same
    clustering always gets the same numbers. FAISS trains on at most ``max_points_per_centroid``
    points per centroid (a seeded sample), then every vector is assigned to its most similar
    centroid in batches. From k-means++ seeds, 64 points per centroid and 10 iterations came
    within 0.03 % of the spherical objective of 20 iterations in half the time, while 32 points
    lost 2 % (1 000 clusters of 200 000 clustered vectors, 256-d, data of benchmarks/index_scale.py).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    centroids = train_centroids(vectors, k, seed=seed, niter=niter, max_points_per_centroid=max_points_per_centroid)
    labels = assign(vectors, centroids)
    order = size_order(np.bincount(labels, minlength=k))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels], centroids[order]


def train_centroids(
    sample: np.ndarray, k: int, *, seed: int = 0, niter: int = 10, max_points_per_centroid: int = 64
) -> np.ndarray:
    """Unit centroids (k, D) of seeded spherical k-means on ``sample`` (k-means++ seeds), unordered.

    At coast scale the sample is a seeded draw of ``clusters.sample`` tiles, not every tile: FAISS
    uses only ``max_points_per_centroid`` per centroid anyway, so reading more costs memory only.
    """
    import faiss

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n, dim = sample.shape
    if not 1 <= k <= n:
        raise OutcropError(f"k-means with k={k} needs between 1 and {n} (the number of tiles) clusters")
    km = faiss.Kmeans(
        dim,
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,
    )
    km.train(sample, init_centroids=kmeans_plus_plus(sample, k, seed=seed))
    assert km.centroids is not None  # set by train
    return normalise_rows(km.centroids)


def size_order(sizes: np.ndarray) -> np.ndarray:
    """Centroid order by decreasing size, ties by centroid order: label i is the i-th largest."""
    return np.argsort(-np.asarray(sizes), kind="stable")


def assign_stream(source: VectorSource, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, similarity to it) of every vector of ``source``, read and assigned chunk by chunk.

    Memory holds one chunk of vectors and the two result columns, never the collection.
    """
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(source.count, dtype=np.int64)
    sims = np.empty(source.count, dtype=np.float32)
    for start, block in source.chunks():
        for s in range(0, len(block), SEARCH_BATCH):
            d, ids = index.search(block[s : s + SEARCH_BATCH], 1)
            labels[start + s : start + s + len(ids)] = ids[:, 0]
            sims[start + s : start + s + len(ids)] = d[:, 0]
    return labels, sims


def kmeans_plus_plus(
    vectors: np.ndarray, k: int, *, seed: int = 0, sample: int = 50_000, per_seed: int = 16
) -> np.ndarray:
    """Greedy k-means++ seeds (Arthur & Vassilvitskii, 2007) from a seeded sample, by cosine distance.

    FAISS starts from k random points, which often puts two seeds in one cluster and none in
    another, a local optimum k-means does not leave. Here each seed is drawn with probability
    proportional to its squared distance from the seeds so far, best of 2 + log k candidates (the
    greedy variant), which spreads the seeds over the clusters.

    Seeding costs k · pool · (2 + log k) · D, so the pool is ``per_seed`` points per seed (at least
    10 000, at most ``sample``): at k = 1000 a pool of 50 000 made seeding cost more than all of
    FAISS's training, for seeds no better spread (benchmarks/index_scale.py).
    """
    rng = np.random.default_rng(seed)
    n = len(vectors)
    size = min(n, max(4 * k, min(sample, max(10_000, per_seed * k))))
    pool = vectors[np.sort(rng.choice(n, size, replace=False))].astype(np.float32)
    trials = 2 + int(np.log(k))
    seeds = np.empty((k, pool.shape[1]), dtype=np.float32)
    seeds[0] = pool[rng.integers(len(pool))]
    dist = np.maximum(2.0 - 2.0 * pool @ seeds[0], 0.0).astype(np.float64)  # squared chord distance
    for i in range(1, k):
        total = dist.sum()
        if total <= 0:
            cand = rng.integers(len(pool), size=trials)
        else:
            cand = np.searchsorted(np.cumsum(dist), rng.uniform(0, total, size=trials)).clip(0, len(pool) - 1)
        new = np.minimum(dist[None, :], np.maximum(2.0 - 2.0 * pool[cand] @ pool.T, 0.0))
        best = int(np.argmin(new.sum(axis=1)))
        seeds[i] = pool[cand[best]]
        dist = new[best]
    return seeds


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the most similar centroid of each vector (inner product), in batches."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), SEARCH_BATCH):
        _, ids = index.search(np.ascontiguousarray(vectors[start : start + SEARCH_BATCH]), 1)
        labels[start : start + SEARCH_BATCH] = ids[:, 0]
    return labels


def weighted_ward(centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Ward linkage of weighted points, as a SciPy linkage matrix (k−1, 4).

    Merge heights are ``sqrt(2·nA·nB/(nA+nB))·|cA−cB|``, SciPy's Ward distance, so that with unit
    sizes this equals ``scipy.cluster.hierarchy.ward``. The fourth column counts centroids (leaves),
    as SciPy expects; tile counts are in ``sizes``.
    """
    k = len(centroids)
    if k < 2:
        return np.zeros((0, 4))
    cent = np.asarray(centroids, dtype=np.float64).copy()
    w = np.asarray(sizes, dtype=np.float64).copy()
    if np.any(w <= 0):
        raise OutcropError("weighted Ward linkage needs positive cluster sizes")
    alive = np.ones(k, dtype=bool)
    node = np.arange(k)  # SciPy node id of each active slot
    leaves = np.ones(k, dtype=np.int64)
    cost = _ward_costs(cent, w, cent, w)
    np.fill_diagonal(cost, np.inf)
    out = np.zeros((k - 1, 4))
    for step in range(k - 1):
        a, b = np.unravel_index(np.argmin(cost), cost.shape)
        a, b = (a, b) if node[a] < node[b] else (b, a)
        out[step] = (node[a], node[b], np.sqrt(2.0 * cost[a, b]), leaves[a] + leaves[b])
        # The merged cluster takes slot a; slot b retires.
        cent[a] = (w[a] * cent[a] + w[b] * cent[b]) / (w[a] + w[b])
        w[a] += w[b]
        leaves[a] += leaves[b]
        node[a] = k + step
        alive[b] = False
        cost[b, :] = cost[:, b] = np.inf
        row = _ward_costs(cent[a : a + 1], w[a : a + 1], cent, w)[0]
        row[~alive] = np.inf
        row[a] = np.inf
        cost[a, :] = cost[:, a] = row
    return out


def _ward_costs(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """Ward merge costs nA·nB/(nA+nB)·|cA−cB|² between the rows of ``a`` and of ``b``."""
    sq = np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)
    return wa[:, None] * wb[None, :] / (wa[:, None] + wb[None, :]) * sq


def cut_hierarchy(linkage: np.ndarray, n_leaves: int, clusters: int) -> np.ndarray:
    """Leaf → cluster (0..clusters−1) when the hierarchy is cut into ``clusters`` groups.

    Groups are numbered by their smallest leaf, so with leaves numbered by size the group holding
    the largest k-means cluster is 0.
    """
    from scipy.cluster.hierarchy import fcluster

    if not 1 <= clusters <= n_leaves:
        raise OutcropError(f"cannot cut a hierarchy of {n_leaves} clusters into {clusters}")
    if n_leaves == 1:
        return np.zeros(1, dtype=np.int64)
    raw = fcluster(linkage, t=clusters, criterion="maxclust")
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(first)
    remap = np.empty(raw.max() + 1, dtype=np.int64)
    remap[np.unique(raw)[order]] = np.arange(len(order))
    return remap[raw]


def palette(n: int) -> np.ndarray:
    """n distinct RGBA colours (uint8): the tab20 families first, then evenly spaced hues."""
    import matplotlib

    base: list[tuple[float, ...]] = []
    for name in ("tab20", "tab20b", "tab20c"):
        listed = matplotlib.colormaps[name]
        assert isinstance(listed, matplotlib.colors.ListedColormap)  # the tab20 maps are lists of colours
        base.extend(tuple(c) for c in np.asarray(listed.colors, dtype=np.float64))
    # tab20 interleaves dark and light pairs; take darks first so small k gets strong colours.
    ordered = base[0:20:2] + base[1:20:2] + base[20:]
    if n > len(ordered):
        hues = (np.arange(n - len(ordered)) * 0.618034) % 1.0
        extra = matplotlib.colors.hsv_to_rgb(np.stack([hues, np.full_like(hues, 0.65), np.full_like(hues, 0.85)], 1))
        ordered = ordered + [tuple(c) for c in extra]
    rgb = np.array(ordered[:n], dtype=np.float64).reshape(-1, 3)
    return np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)


def tile_spectra(tiles_path: str | os.PathLike[str], tile_ids: np.ndarray) -> np.ndarray:
    """Mean reflectance per band of the given tiles (M, C), read in batches from the memory map."""
    from outcrop.raster.tile_store import open_tiles

    tiles = open_tiles(tiles_path)
    if tiles.ndim != 4:
        raise OutcropError(f"{tiles_path}: expected (N, C, H, W) tiles, got shape {tiles.shape}")
    out = np.empty((len(tile_ids), tiles.shape[1]), dtype=np.float64)
    order = np.argsort(tile_ids)
    for start in range(0, len(order), SPECTRUM_BATCH):
        sel = order[start : start + SPECTRUM_BATCH]
        if len(sel) and tile_ids[sel].max() >= len(tiles):
            raise OutcropError(f"{tiles_path}: fewer tiles ({len(tiles)}) than the index table expects")
        out[sel] = np.asarray(tiles[tile_ids[sel]], dtype=np.float64).mean(axis=(2, 3))
    return out


def group_means(labels: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """Mean of each column of ``values`` per label 0..n−1 (NaN for an empty label)."""
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(labels, weights=values[:, j], minlength=n) for j in range(values.shape[1])], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


@dataclass(frozen=True)
class Clustering:
    """What :func:`cluster_tiles` found, for the figures drawn from it (:mod:`outcrop.figures.cluster_maps`)."""

    table: Any  # the index table
    levels: dict[str, np.ndarray]  # level name (k8, h3) -> label per table row
    similarity: np.ndarray  # of each table row to its centroid of the largest k (not the vectors: they may not fit)
    centroids: np.ndarray  # of the largest k
    linkage: np.ndarray  # Ward hierarchy of those centroids
    sizes: np.ndarray  # tiles per cluster of the largest k
    cuts: list[int]
    bands: list[str]
    exemplar_tiles: list[list[tuple[str, int]]] | None = None  # (scene, tile id) nearest each centroid
    drawn: tuple[str, ...] | None = None  # the scenes whose maps change (None: every scene given)
    layout: TileLayout | None = None  # the tile grid the label rasters are laid on, as the index table records it
    # (None: inferred from ``table``)
    counts: dict[str, int] | None = None  # clusters per level (None: from the labels of ``levels``)

    def level_counts(self) -> dict[str, int]:
        """Clusters per level: the colours and class names of every map and raster depend on it."""
        if self.counts is not None:
            return dict(self.counts)
        return {name: int(labels.max()) + 1 for name, labels in self.levels.items()}

    @property
    def finest(self) -> str:
        """The level of the largest k (the one the label rasters hold)."""
        return f"k{len(self.sizes)}"


def _check_k_values(kmax: int, cuts: Sequence[int], n_tiles: int) -> None:
    """Refuse a largest k above the indexed tiles, or a hierarchy cut above that k, before any training starts."""
    if kmax > n_tiles:
        raise OutcropError(f"clusters: k={kmax} is more than the {n_tiles} indexed tiles")
    if cuts and cuts[-1] > kmax:
        raise OutcropError(f"clusters: hierarchy cut {cuts[-1]} is more than the largest k ({kmax})")


def _new_tile_drift(
    source: VectorSource, kept: dict[int, np.ndarray], distances: dict[str, float], new_mask: np.ndarray
) -> float | None:
    """How far the new tiles sit from the kept finest centroids, as a multiple of the training distance.

    None when no tile is new. Above ``clusters.drift_max`` the coast has changed enough that the kept
    centroids no longer describe it, and the caller retrains.
    """
    kk = max(kept)
    _, sims = assign_stream(source, kept[kk])
    if not new_mask.any():
        return None
    return float(np.mean(1.0 - sims[new_mask])) / max(distances[f"k{kk}"], 1e-12)


def _train_level(
    source: VectorSource, sample_vectors: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train k centroids on the sample, assign every tile, and number clusters by size (0 the largest).

    Returns (labels, similarities, centroids). Numbering by size keeps cluster 0 the commonest ground
    at every k, so maps and tables read the same way from run to run.
    """
    if k > len(sample_vectors):
        raise OutcropError(f"clusters: k={k} is more than the {len(sample_vectors)} sampled tiles (clusters.sample)")
    centroids = train_centroids(sample_vectors, k, seed=seed)
    labels, sims = assign_stream(source, centroids)
    order = size_order(np.bincount(labels, minlength=k))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels], sims, centroids[order]


def _check_no_empty_cluster(labels: np.ndarray, k: int, n_tiles: int) -> None:
    """Refuse a k that leaves clusters without a tile: an empty cluster has no centroid to map or explain."""
    empty = k - len(np.unique(labels))
    if empty:
        # Fewer distinct tiles than k (identical snow or sea tiles): some clusters get no tile.
        raise OutcropError(
            f"clusters: k={k} leaves {empty} cluster(s) empty: the {n_tiles} indexed tiles "
            f"hold fewer than {k} distinct groups; give smaller values of clusters.k"
        )


def spectrum_sample(n_tiles: int, sample: int, seed: int) -> np.ndarray:
    """The sorted, seeded rows whose pixels give the per-cluster band means.

    A sample, not every tile: reading every indexed tile's pixels (10 million tiles: 290 GB) each time
    a scene is added would cost the whole coast, for a table of per-cluster means.
    """
    return np.sort(np.random.default_rng(seed).choice(n_tiles, min(sample, n_tiles), replace=False))


def _k_values(ks: Sequence[int], cuts: Sequence[int]) -> tuple[list[int], list[int]]:
    """The distinct values of k and of the hierarchy cuts, ascending, so the last k is the finest level."""
    ks_sorted = sorted({int(k) for k in ks})
    if not ks_sorted:
        raise OutcropError("clusters: no k given")
    return ks_sorted, sorted({int(c) for c in cuts})


def _fit_levels(
    source: VectorSource,
    ks: Sequence[int],
    kept: dict[int, np.ndarray],
    distances: dict[str, float],
    drift: float | None,
    sample: int,
    seed: int,
    n_tiles: int,
    log: Callable[[str], Any],
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray], np.ndarray]:
    """Label every tile at each k (ascending): with the kept centroids where there are some, else trained anew.

    Returns the labels by level name (``k{k}``), the centroids by k and the similarities at the last
    (finest) k. ``distances`` gains the mean training distance of each k trained here, which the next
    run's drift is measured against. The sample is read once, and only if some k is trained.
    """
    levels: dict[str, np.ndarray] = {}
    cents: dict[int, np.ndarray] = {}
    sample_vectors: np.ndarray | None = None
    for k in ks:
        if k in kept:
            centroids = kept[k]
            labels, sims = assign_stream(source, centroids)
            log(
                f"k-means k={k}: kept centroids, {n_tiles} tiles assigned"
                + (f" (drift {drift:.3f})" if drift is not None else "")
            )
        else:
            if sample_vectors is None:
                _, sample_vectors = source.sample(sample, seed)
            labels, sims, centroids = _train_level(source, sample_vectors, k, seed)
            distances[f"k{k}"] = float(np.mean(1.0 - sims))
        _check_no_empty_cluster(labels, k, n_tiles)
        levels[f"k{k}"] = labels
        cents[k] = centroids
        log(f"k-means k={k}: cluster sizes {np.bincount(labels, minlength=k).tolist()[:12]}{'…' if k > 12 else ''}")
    return levels, cents, sims


def _add_hierarchy(
    levels: dict[str, np.ndarray], centroids: np.ndarray, kmax: int, cuts: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Ward linkage over the finest centroids (weighted by size), and a level ``h{c}`` in ``levels`` per cut.

    Returns (cluster sizes at the finest k, linkage). Cutting the linkage of centroids, not of tiles,
    keeps the hierarchy's cost independent of the number of tiles.
    """
    finest = levels[f"k{kmax}"]
    sizes = np.bincount(finest, minlength=kmax)
    linkage = weighted_ward(centroids, sizes)
    for c in cuts:
        levels[f"h{c}"] = cut_hierarchy(linkage, kmax, c)[finest]
    return sizes, linkage


def _prior_state(
    state_dir: Path | None, scenes: np.ndarray, embeddings_of: Callable[[str], Path]
) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, str]]:
    """The kept clustering state (None without ``state_dir``), its file cache and the digest of each scene's embeddings.

    A kept scene's embeddings keep their size and mtime: their digest comes from the state, unread,
    so adding a scene does not re-read the whole coast's embeddings.
    """
    from outcrop.search import incremental

    prior = incremental.read_state(Path(state_dir) / "state.json") if state_dir is not None else None
    files = incremental.file_cache(prior)
    digests = (
        {s: cached_digest(embeddings_of(s), files) for s in dict.fromkeys(scenes)} if state_dir is not None else {}
    )
    return prior, files, digests


def _keep_unless_drifted(
    source: VectorSource,
    kept: dict[int, np.ndarray],
    distances: dict[str, float],
    new_mask: np.ndarray,
    drift_max: float,
    log: Callable[[str], Any],
) -> tuple[dict[int, np.ndarray], dict[str, float], float | None]:
    """The kept centroids and training distances, or none of them when the new tiles drift past ``drift_max``.

    Returns (kept, distances, drift); emptied kept centroids make every k train anew.
    """
    drift = _new_tile_drift(source, kept, distances, new_mask)
    if drift is not None and drift > drift_max:
        log(f"drift {drift:.3f} of the new tiles passes clusters.drift_max {drift_max}: retraining")
        return {}, {}, drift
    return kept, distances, drift


def _usable_kept_centroids(
    source: VectorSource,
    scenes: np.ndarray,
    ks: list[int],
    state_dir: Path | None,
    kept_state: tuple[dict[str, Any] | None, dict[str, str], dict[str, Any]],
    *,
    retrain: bool,
    drift_max: float,
    log: Callable[[str], Any],
) -> tuple[dict[int, np.ndarray], dict[str, float], float | None]:
    """The kept centroids by k still to use, their training distances and the new tiles' drift.

    None kept (every k trains anew) when retraining is asked, when there is no kept state or it does
    not hold (:func:`outcrop.search.incremental.kept_centroids`), or when the new tiles drift past
    ``drift_max``. ``kept_state``: the prior state, the scenes' digests and the run's settings.
    """
    from outcrop.search import incremental

    if retrain:
        log("retraining the centroids, as asked (clusters.retrain)")
        return {}, {}, None
    if state_dir is None:
        return {}, {}, None
    prior, digests, settings = kept_state
    kept, state, new_scenes = incremental.kept_centroids(Path(state_dir), prior, digests, settings, ks, log)
    if not kept:
        return {}, {}, None
    distances = dict(state.get("train_distance", {}))
    return _keep_unless_drifted(source, kept, distances, np.isin(scenes, new_scenes), drift_max, log)


def cluster_tiles(
    index_table: Path,
    embedding_paths: Sequence[Path],
    tiles_paths: Sequence[Path],
    prepared_paths: Sequence[Path],
    out_gpkg: Path,
    out_parquet: Path,
    out_summary: Path,
    rasters_dir: Path,
    *,
    ks: Sequence[int],
    cuts: Sequence[int] = (),
    seed: int = default("clusters.seed"),
    sample: int = default("clusters.sample"),
    state_dir: Path | None = None,
    retrain: bool = default("clusters.retrain"),
    drift_max: float = default("clusters.drift_max"),
    log: Callable[[str], Any] = print,
) -> Clustering:
    """Cluster the indexed tiles at each k, build the hierarchy and write labels, summary and rasters.

    The per-scene lists are aligned. Centroids are trained on a seeded sample of ``sample`` tiles,
    then every tile is assigned chunk by chunk: memory holds the sample, not the collection. With
    ``state_dir`` the centroids and outputs are kept there, and a later call with new scenes labels
    and writes their tiles alone (:func:`_add_scenes`) unless ``retrain`` is asked or their drift
    passes ``drift_max``. Label rasters: ``rasters_dir/{scene}.tif`` (the largest k, with a colour
    table and class names) and ``rasters_dir/{level}/{scene}.tif``, for every scene given (all
    nodata where no tile was indexed). Figures are drawn from the returned :class:`Clustering`
    (:func:`outcrop.figures.cluster_maps.write_cluster_figures`).
    """
    from outcrop.search import incremental

    ks, cuts = _k_values(ks, cuts)
    if not (len(embedding_paths) == len(tiles_paths) == len(prepared_paths)):
        raise OutcropError("clusters: embeddings, tiles and prepared scenes must be given per scene, aligned")
    outs = (out_gpkg, out_parquet, out_summary, Path(rasters_dir))
    per_scene = (embedding_paths, tiles_paths, prepared_paths)
    if state_dir is not None and not retrain:
        added = _add_scenes(Path(index_table), per_scene, outs, ks, cuts, seed, Path(state_dir), drift_max, log)
        if added is not None:
            return added
    table = read_geoparquet(index_table)
    embeddings_of = embeddings_lookup(embedding_paths)
    scenes = table["scene"].astype(str).to_numpy()
    source = table_source(scenes, table["tile_id"].to_numpy(), embeddings_of)
    kmax = ks[-1]
    _check_k_values(kmax, cuts, len(table))
    prior, files, digests = _prior_state(state_dir, scenes, embeddings_of)
    settings = {"seed": seed, "sample": sample, "dim": source.dim}
    kept, distances, drift = _usable_kept_centroids(
        source, scenes, ks, state_dir, (prior, digests, settings), retrain=retrain, drift_max=drift_max, log=log
    )
    levels, cents, finest_sims = _fit_levels(source, ks, kept, distances, drift, sample, seed, len(table), log)
    sizes, linkage = _add_hierarchy(levels, cents[kmax], kmax, cuts)
    layout = table_layout(Path(index_table), table)  # the grid the tiles were cut on, as the index table records it
    clustering = Clustering(table, levels, finest_sims, cents[kmax], linkage, sizes, cuts, [], layout=layout)
    kept_outputs = Path(state_dir) if state_dir is not None else None
    spectrum_rows = spectrum_sample(len(table), sample, seed)
    clustering, summary = _write_whole(clustering, outs, tiles_paths, prepared_paths, spectrum_rows, kept_outputs)
    if kept_outputs is not None:  # the summary's sums and the centroids kept for an add
        summary.save(kept_outputs / "summary.npz")
        incremental.save_cluster_state(
            kept_outputs,
            cents,
            distances,
            digests,
            settings,
            incremental.given_files(files, [embeddings_of(s) for s in digests]),
            outputs=_outputs_record(Path(index_table), clustering, summary, len(spectrum_rows) / len(table)),
        )
    log(f"clustered {len(table)} tiles at k={ks}, hierarchy cuts {cuts}")
    return clustering


def _write_whole(
    clustering: Clustering,
    outs: tuple[Path, Path, Path, Path],
    tiles_paths: Sequence[Path],
    prepared_paths: Sequence[Path],
    spectrum_rows: np.ndarray,
    kept_outputs: Path | None,
) -> tuple[Clustering, Summary]:
    """Write every tile's labels, the summary and the label rasters of the whole run (into
    ``kept_outputs`` and linked into place, when given). Returns ``clustering`` with the band names,
    exemplars and clusters per level filled in, and the summary's sums, which an add extends."""
    out_gpkg, out_parquet, out_summary, rasters_dir = outs
    table, levels, kmax = clustering.table, clustering.levels, len(clustering.sizes)
    _write_labels(labels_frame(table, levels), out_parquet, out_gpkg, kept_outputs)
    bands, summary = _summarise(table, levels, clustering.similarity, spectrum_rows, tiles_paths, prepared_paths, kmax)
    write_csv(summary.table(bands), out_summary, float_format="%.6g")
    clustering = replace(clustering, bands=bands, exemplar_tiles=summary.exemplars(), counts=summary.levels)
    _write_label_rasters(clustering, prepared_paths, kept_outputs / "rasters" if kept_outputs else rasters_dir)
    if kept_outputs is not None:
        link_tree(kept_outputs / "rasters", Path(rasters_dir), [scene_of(p) for p in prepared_paths])
    return clustering, summary


def _summarise(
    table: Any,
    levels: dict[str, np.ndarray],
    finest_sims: np.ndarray,
    spectrum_rows: np.ndarray,
    tiles_paths: Sequence[Path],
    prepared_paths: Sequence[Path],
    kmax: int,
) -> tuple[list[str], Summary]:
    """The band names and the per-cluster sums of every labelled tile (band means from the sampled
    ``spectrum_rows``), from which the summary table is written and an add updates it."""
    bands, spectra = _indexed_spectra(table, tiles_paths, prepared_paths, spectrum_rows)
    summary = Summary.empty({name: int(labels.max()) + 1 for name, labels in levels.items()}, len(bands))
    _add_rows(summary, table, levels, spectrum_rows, spectra, kmax, finest_sims)
    return bands, summary


def _add_rows(
    summary: Summary,
    table: Any,
    levels: dict[str, np.ndarray],
    sampled: np.ndarray,
    spectra: np.ndarray,
    kmax: int,
    sims: np.ndarray,
) -> None:
    """Add the labelled rows of ``table`` to ``summary``'s sums (band means from the ``sampled`` rows'
    ``spectra``; exemplars from the similarity to the finest level's centroid)."""
    summary.add(
        levels,
        table["scene"].astype(str).to_numpy(),
        table[list(FRACTIONS)].to_numpy(dtype=np.float64),
        sampled,
        spectra,
        f"k{kmax}",
        sims,
        table["tile_id"].to_numpy(),
    )


def _outputs_record(index_table: Path, clustering: Clustering, summary: Summary, sample_rate: float) -> dict[str, Any]:
    """What the kept outputs hold, for an add to check them against and extend: the index rows
    labelled and their fingerprint, the levels, the hierarchy, the grid and the spectrum sample's rate."""
    count = len(clustering.table)
    layout = clustering.layout
    assert layout is not None  # the whole way always records the grid it laid the rasters on
    return {
        "count": int(count),
        "fingerprint": fingerprint(IndexTable.open(index_table).groups_meta(), count),
        "levels": summary.levels,
        "cuts": list(clustering.cuts),
        "layout": [layout.size, layout.stride],
        "scenes": summary.scenes,
        "bands": clustering.bands,
        "linkage": clustering.linkage.tolist(),
        "sample_rate": sample_rate,
    }


def _summarise_added(
    kept: _KeptClustering,
    new: Any,
    levels: dict[str, np.ndarray],
    sims: np.ndarray,
    tiles_paths: Sequence[Path],
    prepared_paths: Sequence[Path],
    seed: int,
) -> None:
    """Add the new rows to the kept summary, their band means sampled at the rate of the kept sample
    (seeded by the scenes added)."""
    bands, kmax = list(kept.outputs["bands"]), max(kept.centroids)
    rate = float(kept.outputs.get("sample_rate", 1.0))
    rng = np.random.default_rng([seed, len(kept.summary.scenes), len(new)])
    picked = np.sort(rng.choice(len(new), min(len(new), int(round(rate * len(new)))), replace=False))
    spectra = np.zeros((0, len(bands)))
    if len(picked):
        got_bands, spectra = _indexed_spectra(new, tiles_paths, prepared_paths, picked)
        if got_bands != bands:
            raise OutcropError(f"clusters: the new scenes' bands {got_bands} differ from the run's {bands}")
    _add_rows(kept.summary, new, levels, picked, spectra, kmax, sims)


def _write_labels(out: Any, out_parquet: Path, out_gpkg: Path, kept_outputs: Path | None) -> None:
    """The labels table as GeoParquet and GeoPackage: written into ``kept_outputs`` (the state
    folder) and linked into place when given (:mod:`outcrop.search.cluster_outputs`), else in place."""
    if kept_outputs is None:
        write_geodataframe(out_parquet, out)
        write_geodataframe(out_gpkg, out, layer="clusters")
        return
    for name in ("rasters", "maps"):
        shutil.rmtree(kept_outputs / name, ignore_errors=True)
    write_geodataframe(kept_outputs / "labels.parquet", out)
    write_geodataframe(kept_outputs / "labels.gpkg", out, layer="clusters")
    link_or_copy(kept_outputs / "labels.parquet", out_parquet)
    link_or_copy(kept_outputs / "labels.gpkg", out_gpkg)


@dataclass
class _KeptClustering:
    """A kept clustering that an add can extend: its record, summary and centroids, the index rows
    it labelled (``count``), and the scenes given now, kept or new."""

    prior: dict[str, Any]
    outputs: dict[str, Any]
    levels_n: dict[str, int]  # clusters per level, in the order the whole way writes them
    by_scene: dict[str, Path]  # embeddings file of each scene given
    files: dict[str, Any]
    digests: dict[str, str]
    kept_scenes: dict[str, str]
    new_scenes: list[str]
    opened: IndexTable
    groups: list[list[float]]
    summary: Summary
    centroids: dict[int, np.ndarray]

    @property
    def count(self) -> int:
        return int(self.outputs["count"])


def _open_kept_clustering(
    state_dir: Path,
    index_table: Path,
    embedding_paths: Sequence[Path],
    ks: list[int],
    cuts: list[int],
    log: Callable[[str], Any],
) -> _KeptClustering | None:
    """The kept clustering, when an add can extend it: same levels and cuts, every kept scene the
    same, the kept labels as many as the index's kept rows; else None (the whole way)."""
    import pyarrow.parquet as pq
    import pyogrio

    from outcrop.parquet_append import restore
    from outcrop.search import incremental

    prior = incremental.read_state(state_dir / "state.json")
    outputs = (prior or {}).get("outputs")
    if prior is None or not isinstance(outputs, dict) or outputs.get("cuts") != cuts:
        return None
    stored = {str(k): int(v) for k, v in (outputs.get("levels") or {}).items()}
    names = [f"k{k}" for k in ks] + [f"h{c}" for c in cuts]
    if set(stored) != set(names):
        return None
    by_scene = {scene_of(p): Path(p) for p in embedding_paths}
    files = incremental.file_cache(prior)
    digests = {s: cached_digest(p, files) for s, p in by_scene.items()}
    kept_scenes = prior.get("scenes", {})
    if any(digests.get(s) != d for s, d in kept_scenes.items()):
        return None  # a kept scene is gone or changed: the whole way
    restore(state_dir / "labels.parquet")  # an add that did not finish
    count = int(outputs["count"])
    try:
        opened = IndexTable.open(index_table)
        groups = opened.groups_meta()
        kept_gpkg = int(pyogrio.read_info(state_dir / "labels.gpkg", layer="clusters")["features"])
        kept_parquet = pq.ParquetFile(state_dir / "labels.parquet").metadata.num_rows
    except Exception:  # noqa: BLE001 - a missing or damaged kept output: the whole way
        return None
    if fingerprint(groups, count) != outputs.get("fingerprint") or kept_gpkg != count or kept_parquet != count:
        log("kept cluster outputs do not match the index (rebuilt since, or damaged): clustering the whole way")
        return None
    levels_n = {name: stored[name] for name in names}
    summary = Summary.load(state_dir / "summary.npz", levels_n, list(outputs.get("scenes", [])))
    centroids = {
        k: np.load(state_dir / f"centroids_k{k}.npy", allow_pickle=False)
        for k in ks
        if (state_dir / f"centroids_k{k}.npy").is_file()
    }
    if summary is None or set(centroids) != set(ks):
        return None
    new_scenes = [s for s in by_scene if s not in kept_scenes]
    return _KeptClustering(
        prior, outputs, levels_n, by_scene, files, digests, kept_scenes, new_scenes, opened, groups, summary, centroids
    )


def _rows_past(opened: IndexTable, count: int) -> Any:
    """The index table's rows past the first ``count`` (an add appends them), as a GeoDataFrame,
    read from the row groups that hold them only."""
    from geopandas.io.arrow import _arrow_to_geopandas

    first = int(np.searchsorted(opened.starts, count, side="right")) - 1
    part = (
        opened.file.read_row_groups(list(range(max(first, 0), opened.file.num_row_groups)))
        if opened.count > count
        else opened.file.read_row_group(0).slice(0, 0)
    )
    new = _arrow_to_geopandas(part.replace_schema_metadata(opened.file.schema_arrow.metadata))
    return new[new["id"].to_numpy() >= count].reset_index(drop=True)


def _label_added(
    kept: _KeptClustering, new: Any, linkage: np.ndarray, cuts: list[int], drift_max: float, log: Callable[[str], Any]
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """The new rows' labels at every level and similarity to their finest centroid, from the kept
    centroids and hierarchy; None when they do not fit them (another dimension, or drift past
    ``drift_max``)."""
    ks = sorted(kept.centroids)
    kmax = ks[-1]
    source = table_source(new["scene"].astype(str).to_numpy(), new["tile_id"].to_numpy(), lambda s: kept.by_scene[s])
    if source.dim != kept.centroids[kmax].shape[1]:
        return None
    levels: dict[str, np.ndarray] = {}
    sims = np.empty(0, np.float32)
    for k in ks:
        labels, sim = assign_stream(source, kept.centroids[k])
        levels[f"k{k}"] = labels
        if k == kmax:
            sims = sim
    distance = (kept.prior.get("train_distance") or {}).get(f"k{kmax}")
    drift = float(np.mean(1.0 - sims)) / max(float(distance or 0.0), 1e-12)
    if drift > drift_max:
        log(f"drift {drift:.3f} of the new tiles passes clusters.drift_max {drift_max}: clustering the whole way")
        return None
    for c in cuts:
        levels[f"h{c}"] = cut_hierarchy(linkage, kmax, c)[levels[f"k{kmax}"]]
    return levels, sims


def _append_labels(state_dir: Path, out: Any) -> None:
    """Append the new rows' labels to the kept GeoParquet (in place, undoable until committed) and
    GeoPackage (an SQLite append)."""
    import pyarrow.parquet as pq
    import pyogrio
    from geopandas.io.arrow import _geopandas_to_arrow

    from outcrop.parquet_append import append_table

    arrow = _geopandas_to_arrow(out, index=False)
    kept_schema = pq.ParquetFile(state_dir / "labels.parquet").schema_arrow
    append_table(
        state_dir / "labels.parquet",
        arrow.select(kept_schema.names).cast(
            kept_schema.with_metadata(_merged_geo(kept_schema.metadata, arrow.schema.metadata))
        ),
        keep_tail=True,
    )
    pyogrio.write_dataframe(out, state_dir / "labels.gpkg", layer="clusters", append=True)


def _add_scenes(
    index_table: Path,
    per_scene: tuple[Sequence[Path], Sequence[Path], Sequence[Path]],
    outs: tuple[Path, Path, Path, Path],
    ks: list[int],
    cuts: list[int],
    seed: int,
    state_dir: Path,
    drift_max: float,
    log: Callable[[str], Any],
) -> Clustering | None:
    """Label only the tiles of scenes added since the kept clustering (:mod:`outcrop.search.cluster_outputs`):
    their rows are appended to the kept labels, their rasters written, every other output linked as
    it is, the summary updated from the kept sums. ``per_scene``: the embeddings, tiles and prepared
    scenes; ``outs``: the labels GeoPackage and GeoParquet, the summary and the rasters folder.
    None when the kept state cannot be extended (then :func:`cluster_tiles` goes the whole way,
    which decides whether the centroids still hold).
    """
    embedding_paths, tiles_paths, prepared_paths = per_scene
    out_gpkg, out_parquet, out_summary, rasters_dir = outs
    kept = _open_kept_clustering(state_dir, index_table, embedding_paths, ks, cuts, log)
    if kept is None:
        return None
    kmax, count, summary, outputs = ks[-1], kept.count, kept.summary, kept.outputs
    linkage = np.asarray(outputs["linkage"], dtype=np.float64).reshape(-1, 4)
    bands = list(outputs["bands"])
    new = _rows_past(kept.opened, count)
    new_rows = len(new)
    if new_rows and not set(new["scene"].astype(str)) <= set(kept.new_scenes):
        log("the index's new rows are not all of new scenes: clustering the whole way")
        return None
    levels: dict[str, np.ndarray] = {n: np.empty(0, np.int64) for n in kept.levels_n}
    sims = np.empty(0, np.float32)
    if new_rows:
        labelled = _label_added(kept, new, linkage, cuts, drift_max, log)
        if labelled is None:
            return None
        levels, sims = labelled
        _summarise_added(kept, new, levels, sims, tiles_paths, prepared_paths, seed)
        _append_labels(state_dir, labels_frame(new, levels))
    else:  # nothing appended: the tables' time is this job's, as Snakemake expects of its outputs
        for name in ("labels.parquet", "labels.gpkg"):
            os.utime(state_dir / name)
    link_or_copy(state_dir / "labels.parquet", out_parquet)
    link_or_copy(state_dir / "labels.gpkg", out_gpkg)
    write_csv(summary.table(bands), out_summary, float_format="%.6g")
    clustering = Clustering(
        new,
        levels,
        sims,
        kept.centroids[kmax],
        linkage,
        summary.size[f"k{kmax}"],
        cuts,
        bands,
        exemplar_tiles=summary.exemplars(),
        drawn=tuple(kept.new_scenes),
        layout=TileLayout(*outputs["layout"]),
        counts=kept.levels_n,
    )
    _write_label_rasters(
        clustering, [p for p in prepared_paths if scene_of(p) in set(kept.new_scenes)], state_dir / "rasters"
    )
    link_tree(state_dir / "rasters", rasters_dir, list(kept.by_scene))
    total = count + new_rows
    _save_added(state_dir, kept, total)
    log(
        f"clusters: {new_rows} tiles of {len(kept.new_scenes)} added scene(s) assigned to the kept centroids "
        f"({', '.join(kept.new_scenes) or 'none'}); {total} tiles labelled, kept outputs linked"
    )
    return clustering


def _save_added(state_dir: Path, kept: _KeptClustering, total: int) -> None:
    """Record the kept clustering grown to ``total`` labelled rows (its summary, scenes and files),
    then drop the labels table's undo record: the add is complete."""
    from outcrop.parquet_append import commit
    from outcrop.search import incremental

    kept.summary.save(state_dir / "summary.npz")
    kept.outputs.update(count=total, fingerprint=fingerprint(kept.groups, total), scenes=kept.summary.scenes)
    incremental.save_cluster_state(
        state_dir,
        kept.centroids,
        dict(kept.prior.get("train_distance") or {}),
        {**kept.kept_scenes, **{s: kept.digests[s] for s in kept.new_scenes}},
        kept.prior["settings"],
        incremental.given_files(kept.files, list(kept.by_scene.values())),
        outputs=kept.outputs,
    )
    commit(state_dir / "labels.parquet")


def _merged_geo(kept: dict | None, new: dict | None) -> dict:
    """The kept file's schema metadata with its GeoParquet bounding box grown by the new rows'."""
    import json

    meta = dict(kept or {})
    geo = json.loads(meta[b"geo"])
    box = json.loads((new or {}).get(b"geo", b"{}") or b"{}").get("columns", {}).get("geometry", {}).get("bbox")
    old = geo["columns"]["geometry"].get("bbox")
    if box and old:
        geo["columns"]["geometry"]["bbox"] = [
            min(old[0], box[0]),
            min(old[1], box[1]),
            max(old[2], box[2]),
            max(old[3], box[3]),
        ]
    meta[b"geo"] = json.dumps(geo).encode()
    return meta


def labels_frame(table: Any, levels: dict[str, np.ndarray]) -> Any:
    """The labels table: id, scene, tile_id, row, col, size, a column per level, fractions, footprint."""
    out = table[["id", "scene", "tile_id", "row", "col", "size"]].copy()
    for name, labels in levels.items():
        out[name] = np.asarray(labels).astype(np.int64)
    for col in FRACTIONS:
        out[col] = table[col].to_numpy()
    return out.set_geometry(table.geometry.values, crs=table.crs)


def _indexed_spectra(
    table: Any, tiles_paths: Sequence[Path], prepared_paths: Sequence[Path], rows: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Mean spectrum (len(rows), C) of the indexed tiles at table positions ``rows``, and the band names
    (every scene's checked, read or not)."""
    by_scene = {scene_of(p): (t, p) for t, p in zip(tiles_paths, prepared_paths)}
    scenes = table["scene"].to_numpy()
    tile_ids = table["tile_id"].to_numpy()
    picked = np.zeros(len(table), dtype=bool)
    picked[rows] = True
    position = np.cumsum(picked) - 1  # row of the table -> row of the result
    bands: list[str] | None = None
    spectra: np.ndarray | None = None
    for scene in np.unique(scenes):
        if scene not in by_scene:
            raise OutcropError(f"clusters: index has tiles of scene {scene!r} but no tiles/{scene}.npy was given")
        tiles_path, prepared_path = by_scene[scene]
        mine = np.flatnonzero((scenes == scene) & picked)
        values = tile_spectra(tiles_path, tile_ids[mine])
        names = scene_band_names(prepared_path) or [f"band{i + 1}" for i in range(values.shape[1])]
        if len(names) != values.shape[1]:
            raise OutcropError(f"{tiles_path}: {values.shape[1]} bands but {prepared_path} names {len(names)}")
        if bands is None:
            bands = names
            spectra = np.empty((len(rows), len(names)))
        elif names != bands:
            raise OutcropError(f"{prepared_path}: bands {names} differ from the run's {bands}")
        assert spectra is not None  # made with the first scene's bands
        spectra[position[mine]] = values
    assert bands is not None and spectra is not None
    return bands, spectra


def exemplars(vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray, per_cluster: int = 6) -> list[np.ndarray]:
    """Row positions of the ``per_cluster`` tiles most similar to each centroid, best first."""
    return exemplars_by_similarity(
        np.einsum("ij,ij->i", vectors, centroids[labels]), labels, len(centroids), per_cluster
    )


def label_nodata(clustering: Clustering) -> tuple[Any, int]:
    """The integer type and nodata value that hold every level's labels."""
    top = max(clustering.level_counts().values()) - 1
    return (np.uint8, 255) if top < 255 else (np.uint16, 65535)


def scene_label_rasters(clustering: Clustering, prepared_paths: Sequence[Path]) -> Any:
    """Per scene: (scene, grid, raster, transform) of every level's labels (a band per level, in
    the order of ``clustering.levels``) at tile cells; scenes with no indexed tile are all nodata."""
    table = clustering.table
    layout = clustering.layout or infer_layout(
        table["scene"].to_numpy(), table["row"].to_numpy(), table["col"].to_numpy(), table["size"].to_numpy()
    )
    stacked = np.stack(list(clustering.levels.values()), 1)
    dtype, nodata = label_nodata(clustering)
    yield from scene_rasters(prepared_paths, table, layout, stacked, nodata, dtype)


def _write_label_rasters(clustering: Clustering, prepared_paths: Sequence[Path], rasters_dir: Path) -> None:
    """Label rasters (COG, one band each, with a colour table) of every scene.

    ``rasters_dir/{scene}.tif`` holds ``raster_level`` (what the web map shows) and
    ``rasters_dir/{level}/{scene}.tif`` every level. One file per level, each with one band,
    because a TIFF colour table only applies to a one-band image (GDAL turns the other bands of a
    paletted image into alpha). Each names its classes ("cluster 7") beside it, see
    :func:`outcrop.io.write_categories`.
    """
    raster_level = clustering.finest
    names = list(clustering.levels)
    _, nodata = label_nodata(clustering)
    counts = clustering.level_counts()
    colours = palette(max(counts.values()))
    colormaps: dict[str, dict[int, tuple[int, int, int, int]]] = {}
    categories: dict[str, dict[int, dict[int, str]]] = {}
    for name in names:
        n = counts[name]
        colormaps[name] = {i: (r, g, b, a) for i, (r, g, b, a) in enumerate(colours[:n].tolist())}
        colormaps[name][nodata] = (0, 0, 0, 0)
        categories[name] = {1: {i: f"cluster {i}" for i in range(n)}}
    for scene, grid, raster, transform in scene_label_rasters(clustering, prepared_paths):
        profile = {"crs": grid.crs, "transform": transform, "nodata": nodata}
        for band, name in enumerate(names):
            targets = [Path(rasters_dir) / name / f"{scene}.tif"]
            if name == raster_level:
                targets.append(Path(rasters_dir) / f"{scene}.tif")
            for target in targets:
                write_cog(
                    target,
                    raster[band : band + 1],
                    profile,
                    band_names=[name],
                    tags={"level": name},
                    colormap=colormaps[name],
                    categories=categories[name],
                )
