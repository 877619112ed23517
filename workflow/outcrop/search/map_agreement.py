"""How well an embedding agrees with a geological map: its clusters against the map's units, and
the units predicted from nearest neighbours across a spatial split.

- **Clusters.** Spherical k-means of the vectors at each ``clusters.k`` (seeded, as the clusters
  stage runs it) and the Ward hierarchy over the finest k's centroids cut at each ``clusters.cuts``;
  each level against the units: adjusted Rand index, normalised mutual information and purity (the
  share of tiles whose cluster's most common unit is their own).
- **kNN with a spatial split.** Tiles overlap (stride < size) and units are large, so a tile's
  nearest neighbour is often a tile sharing its pixels. The plane is cut into square blocks of
  :data:`BLOCK_TILES` tile widths, the blocks dealt at random (seeded) into :data:`FOLDS` folds;
  each fold's tiles are predicted from the other folds' tiles, less every training tile that comes
  within :data:`GAP_TILES` tile width of a test tile (so no window overlaps across the split, and
  a whole tile fits between the two sides). A test tile takes the unit of the cosine-weighted
  vote of its :data:`KNN_K` most similar training tiles. Reported: macro-F1 over the units and
  each unit's recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

KNN_K = 10  # neighbours that vote
FOLDS = 5  # folds of blocks
BLOCK_TILES = 4  # side of a block of the split, in tile widths
GAP_TILES = 1.0  # least gap between a training and a test footprint, in tile widths
SEARCH_ROWS = 1024  # test rows scored at once (memory: rows x training tiles floats)


def box_separation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gap between axis-aligned boxes (minx, miny, maxx, maxy), rows of ``a`` against rows of ``b``:
    the larger of the x and y gaps, 0 where they touch or overlap. (Na, Nb)."""
    a, b = np.asarray(a, dtype=np.float64)[:, None, :], np.asarray(b, dtype=np.float64)[None, :, :]
    gx = np.maximum(0.0, np.maximum(b[..., 0] - a[..., 2], a[..., 0] - b[..., 2]))
    gy = np.maximum(0.0, np.maximum(b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]))
    return np.maximum(gx, gy)


def spatial_folds(
    boxes: np.ndarray, *, folds: int = FOLDS, block_tiles: float = BLOCK_TILES, seed: int = 0
) -> np.ndarray:
    """The fold (0..folds-1) of each tile: its centre's block, blocks dealt to folds in a seeded order."""
    boxes = np.asarray(boxes, dtype=np.float64)
    width = float(np.max(boxes[:, 2] - boxes[:, 0]))
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    keys = np.floor(centres / (block_tiles * width)).astype(np.int64)
    _, block = np.unique(keys, axis=0, return_inverse=True)
    block = block.ravel()
    order = np.random.default_rng(seed).permutation(block.max() + 1)
    return order[block] % folds


def split(
    boxes: np.ndarray, fold_of: np.ndarray, fold: int, *, gap_tiles: float = GAP_TILES
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) of one fold: the test rows are the fold's tiles; training rows
    are the other folds' tiles whose footprints keep at least ``gap_tiles`` tile widths from
    every test footprint (a neighbour search on the centres, Chebyshev distance)."""
    from scipy.spatial import cKDTree

    boxes = np.asarray(boxes, dtype=np.float64)
    test = np.flatnonzero(fold_of == fold)
    others = np.flatnonzero(fold_of != fold)
    if len(test) == 0 or len(others) == 0:
        return others, test
    half = np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]]) / 2
    width = float(2 * half.max())
    centres = np.column_stack([boxes[:, 0] + half[:, 0], boxes[:, 1] + half[:, 1]])
    # Two footprints at most ``width`` wide keep a gap g when their centres are width + g apart or more.
    reach = width * (1.0 + gap_tiles)
    near = cKDTree(centres[test]).query_ball_point(centres[others], r=reach * (1 - 1e-9), p=np.inf, return_length=True)
    return others[np.asarray(near) == 0], test


def knn_votes(
    vectors: np.ndarray, codes: np.ndarray, train: np.ndarray, test: np.ndarray, *, k: int = KNN_K
) -> np.ndarray:
    """The unit code each test row gets from the cosine-weighted vote of its k most similar training rows."""
    out = np.full(len(test), -1, dtype=np.int64)
    if len(train) == 0:
        return out
    n_codes = int(codes.max()) + 1
    gallery = np.ascontiguousarray(vectors[train], dtype=np.float32)
    labels = codes[train]
    kk = min(k, len(train))
    for start in range(0, len(test), SEARCH_ROWS):
        rows = test[start : start + SEARCH_ROWS]
        sims = np.asarray(vectors[rows], dtype=np.float32) @ gallery.T
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        weights = np.maximum(np.take_along_axis(sims, top, 1), 0.0) + 1e-6
        votes = np.zeros((len(rows), n_codes))
        np.add.at(votes, (np.repeat(np.arange(len(rows)), kk), labels[top].ravel()), weights.ravel())
        out[start : start + len(rows)] = votes.argmax(axis=1)
    return out


def spatial_knn(
    vectors: np.ndarray,
    codes: np.ndarray,
    boxes: np.ndarray,
    *,
    seed: int = 0,
    folds: int = FOLDS,
    block_tiles: float = BLOCK_TILES,
    gap_tiles: float = GAP_TILES,
) -> np.ndarray:
    """Every tile's predicted unit code across the spatial split (-1 where its fold had no training tile)."""
    fold_of = spatial_folds(boxes, folds=folds, block_tiles=block_tiles, seed=seed)
    pred = np.full(len(codes), -1, dtype=np.int64)
    for fold in range(folds):
        train, test = split(boxes, fold_of, fold, gap_tiles=gap_tiles)
        if len(test):
            pred[test] = knn_votes(vectors, codes, train, test)
    return pred


def knn_scores(codes: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Macro-F1 over the units present and each unit's recall, over the tiles that were predicted."""
    from sklearn.metrics import f1_score, recall_score

    done = pred >= 0
    truth, guess = codes[done], pred[done]
    present = np.unique(truth)
    if len(present) == 0:
        return {"macro_f1": None, "recall": {}, "predicted": 0}
    recall = recall_score(truth, guess, labels=present, average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(truth, guess, labels=present, average="macro", zero_division=0)),
        "recall": {names[c]: float(r) for c, r in zip(present, recall)},
        "predicted": int(done.sum()),
    }


def purity(truth: np.ndarray, labels: np.ndarray) -> float:
    """Share of tiles whose cluster's most common unit is their own unit."""
    _, t = np.unique(truth, return_inverse=True)
    _, c = np.unique(labels, return_inverse=True)
    table = np.zeros((c.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (c.ravel(), t.ravel()), 1)
    return float(table.max(axis=1).sum() / len(truth))


def agreement(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ARI, NMI and purity of one labelling against the units."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "purity": purity(truth, labels),
    }


def cluster_levels(
    vectors: np.ndarray, ks: Sequence[int], cuts: Sequence[int], *, seed: int = 0
) -> dict[str, np.ndarray]:
    """Labels of the vectors at each k (spherical k-means) and hierarchy cut (Ward over the finest
    k's centroids weighted by size), as the clusters stage makes them; levels with more clusters
    than tiles are left out."""
    from outcrop.search.clusters import cut_hierarchy, spherical_kmeans, weighted_ward

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    levels: dict[str, np.ndarray] = {}
    ks = sorted(k for k in {int(k) for k in ks} if k <= len(vectors))
    finest = None
    for k in ks:
        labels, centroids = spherical_kmeans(vectors, k, seed=seed)
        levels[f"k{k}"] = labels
        finest = (labels, centroids)
    if finest is not None:
        labels, centroids = finest
        sizes = np.bincount(labels, minlength=len(centroids))
        used = int((sizes > 0).sum())  # labels are numbered by size: empty clusters come last
        linkage = weighted_ward(centroids[:used], sizes[:used])
        for c in sorted({int(c) for c in cuts}):
            if c <= used:
                levels[f"h{c}"] = cut_hierarchy(linkage, used, c)[labels]
    return levels
