"""Map agreement: the spatial split keeps a tile's width between training and test windows, and the
scores measure what the vectors hold (perfect vectors score 1, shuffled ones near chance)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from outcrop.search.map_agreement import (
    agreement,
    box_separation,
    cluster_levels,
    knn_scores,
    purity,
    spatial_folds,
    spatial_knn,
    split,
)


def _grid(n: int, width: float = 960.0, stride: float = 480.0, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """Footprint bounds of n x n tiles ``width`` wide every ``stride``: neighbours overlap by half."""
    starts = np.arange(n) * stride
    return np.array([(x0 + x, y0 + y, x0 + x + width, y0 + y + width) for y in starts for x in starts])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_spatial_split_never_puts_overlapping_windows_on_both_sides(seed):
    # Two scenes' grids a third of a tile apart, both overlapping their neighbours by half a tile.
    boxes = np.concatenate([_grid(48), _grid(30, x0=4000.0 + 320.0, y0=2000.0 + 320.0)])
    width = 960.0
    fold_of = spatial_folds(boxes, seed=seed)
    assert len(np.unique(fold_of)) == 5
    geoms = shapely.box(*boxes.T)
    for fold in range(5):
        train, test = split(boxes, fold_of, fold)
        assert len(test) > 30 and len(train) > 300
        # Without the gap, other folds' tiles do overlap this fold's: the split has work to do.
        others = np.flatnonzero(fold_of != fold)
        assert (box_separation(boxes[others], boxes[test]).min(axis=1) == 0).any()
        # With it: no training window overlaps a test window, and a whole tile fits between them.
        assert box_separation(boxes[train], boxes[test]).min() >= width - 1e-6
        grown = shapely.box(*(boxes[train] + np.array([-1, -1, 1, 1]) * (width - 1e-3)).T)
        assert not shapely.intersects(grown[:, None], geoms[test][None, :]).any()
        # And it drops no more than it must: every dropped tile is within reach of a test tile.
        dropped = np.setdiff1d(others, train)
        assert (box_separation(boxes[dropped], boxes[test]).min(axis=1) < width).all()


def test_box_separation_is_the_gap_along_the_wider_axis():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[3.0, 0.5, 4.0, 1.5], [0.5, 0.5, 2.0, 2.0], [2.0, 4.0, 3.0, 5.0]])
    np.testing.assert_allclose(box_separation(a, b)[0], [2.0, 0.0, 3.0])


def test_spatial_knn_finds_units_that_the_vectors_hold_and_not_shuffled_ones():
    boxes = _grid(30)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    codes = (np.floor(centres[:, 0] / 3000) + 2 * np.floor(centres[:, 1] / 5000)).astype(np.int64) % 4
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((4, 8))
    vectors = directions[codes] + 0.3 * rng.standard_normal((len(codes), 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = ["a", "b", "c", "d"]
    good = knn_scores(codes, spatial_knn(vectors, codes, boxes), names)
    assert good["macro_f1"] > 0.95 and set(good["recall"]) == set(names) and good["predicted"] > 0.8 * len(codes)
    bad = knn_scores(codes, spatial_knn(vectors[rng.permutation(len(codes))], codes, boxes), names)
    assert bad["macro_f1"] < 0.45


def test_cluster_agreement_measures_ari_nmi_and_purity():
    units = np.repeat([0, 1, 2], 40)
    assert agreement(units, units + 5) == {"ari": 1.0, "nmi": 1.0, "purity": 1.0}
    # Two units merged into one cluster: purity 2/3, ARI below 1.
    merged = np.where(units == 2, 1, units)
    scores = agreement(units, merged)
    assert scores["purity"] == pytest.approx(2 / 3) and scores["ari"] < 0.7
    assert purity(units, np.arange(len(units))) == 1.0  # one tile per cluster is pure, ARI says otherwise


def test_cluster_levels_are_the_k_means_and_hierarchy_cuts_of_the_clusters_stage():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((6, 10))
    vectors = np.repeat(centres, 30, axis=0) + 0.05 * rng.standard_normal((180, 10))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    levels = cluster_levels(vectors, [3, 6, 500], [2, 4, 9], seed=0)
    assert set(levels) == {"k3", "k6", "h2", "h4"}  # k above the tiles and cuts above k are left out
    truth = np.repeat(np.arange(6), 30)
    assert agreement(truth, levels["k6"])["ari"] == pytest.approx(1.0)
    assert len(np.unique(levels["h2"])) == 2 and len(np.unique(levels["h4"])) == 4
    # A cut joins whole clusters of the finest k.
    for c in np.unique(levels["k6"]):
        assert len(np.unique(levels["h4"][levels["k6"] == c])) == 1
