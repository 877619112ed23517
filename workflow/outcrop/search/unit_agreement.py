"""The ``map_agreement`` block of ``metrics.json``: every feature set of a run against a unit map.

Which tiles: the indexed tiles whose footprints reach into a map's extent, a seeded sample of at
most :data:`UNIT_SAMPLE` of them (seed ``clusters.seed``), each given its unit by
:func:`outcrop.search.unit_map.tile_units`; tiles without a clear unit are left out. Every feature
set is computed for those tiles only (so memory holds the sample's vectors and pixels, never the
run's), and scored by :mod:`outcrop.search.map_agreement`; the workflow's own clusters
(clusters/labels.parquet) are scored on the same tiles.

The demo's planted units go through this same code: when no map is configured, the demo's truth
rasters are its unit maps (one per scene), so the demo's ARI and a user's are computed alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.search.map_agreement import (
    BLOCK_TILES,
    FOLDS,
    GAP_TILES,
    KNN_K,
    agreement,
    cluster_levels,
    knn_scores,
    spatial_knn,
)
from outcrop.search.unit_map import UnitMap, extent_in, tile_units

UNIT_SAMPLE = 20_000  # indexed tiles read against the map at most (a seeded sample past this)
MIN_UNIT_TILES = 20  # fewer tiles with a unit make no honest score


def map_agreement(
    run: Any,
    maps: Sequence[UnitMap],
    *,
    min_share: float,
    ks: Sequence[int],
    cuts: Sequence[int],
    labels: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score ``run`` (a :class:`outcrop.search.quality._Run`) against ``maps``."""
    t0 = time.perf_counter()
    table = run.table
    block: dict[str, Any] = {
        "maps": [m.path.name for m in maps],
        "kind": sorted({m.kind for m in maps}),
        "rule": f"majority unit under the tile's footprint, covering at least {min_share:g} of its pixels "
        "(unit at each run pixel's centre); tiles without one are left out",
        "min_share": min_share,
        "sample_max": UNIT_SAMPLE,
        "seed": run.seed,
        "split": {"folds": FOLDS, "block_tiles": BLOCK_TILES, "gap_tiles": GAP_TILES, "k": KNN_K, "seed": run.seed},
    }
    candidates = _within_maps(table, maps)
    rng = np.random.default_rng(run.seed)
    sample = (
        np.sort(rng.choice(candidates, UNIT_SAMPLE, replace=False)) if len(candidates) > UNIT_SAMPLE else candidates
    )
    log(f"quality: map agreement: {len(candidates)} indexed tiles within the unit map, {len(sample)} read")
    names, shares = tile_units(
        table.geometry.iloc[sample], table["size"].to_numpy()[sample], maps, min_share=min_share, log=log
    )
    has = np.array([n is not None for n in names], dtype=bool)
    lab = sample[has]
    units = sorted({str(n) for n in names[has]})
    block.update(
        {
            "tiles_read": int(len(sample)),
            "tiles_with_unit": int(len(lab)),
            "units": {u: int(sum(1 for n in names[has] if n == u)) for u in units},
        }
    )
    if len(lab) < MIN_UNIT_TILES or len(units) < 2:
        block["skipped"] = (
            f"{len(lab)} tiles with a clear unit in {len(units)} unit(s); map agreement needs "
            f"{MIN_UNIT_TILES} tiles and two units"
        )
        log(f"quality: map agreement skipped: {block['skipped']}")
        block["seconds"] = round(time.perf_counter() - t0, 3)
        return block
    code_of = {u: i for i, u in enumerate(units)}
    codes = np.array([code_of[str(n)] for n in names[has]], dtype=np.int64)
    boxes = table.geometry.iloc[lab].bounds.to_numpy()
    scenes = table.scene.to_numpy()[lab]
    parts = [(s, table.tile_id.to_numpy()[lab[scenes == s]]) for s in run.present if (scenes == s).any()]
    sets = run.features(parts)
    for name, vecs in sets.items():
        block[name] = scores = set_scores(vecs, codes, units, boxes, ks=ks, cuts=cuts, seed=run.seed)
        log(
            f"quality: map agreement: {name}: "
            + " ".join(f"{lv} ARI {s['ari']:.3f}" for lv, s in scores.items() if isinstance(s, dict) and "ari" in s)
            + f" kNN macro-F1 {scores['knn_macro_f1']:.3f}"
        )
    if labels is not None and Path(labels).exists():
        block["workflow_clusters"] = _workflow_clusters(Path(labels), table.iloc[lab], codes)
        log(
            "quality: map agreement: workflow clusters: "
            + " ".join(f"{lv} ARI {s['ari']:.3f}" for lv, s in block["workflow_clusters"].items())
        )
    block["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"quality: map agreement took {block['seconds']:.1f}s")
    return block


def set_scores(
    vectors: np.ndarray,
    codes: np.ndarray,
    units: Sequence[str],
    boxes: np.ndarray,
    *,
    ks: Sequence[int],
    cuts: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    """One feature set against the units: ARI, NMI and purity at each level (``k4``, ``h3``, ...),
    and the spatial kNN's macro-F1, per-unit recall and number of tiles predicted.

    ``codes`` index ``units`` (one per row of ``vectors``); ``boxes`` are the tiles' footprint bounds.
    """
    scores: dict[str, Any] = {
        level: agreement(codes, found) for level, found in cluster_levels(vectors, ks, cuts, seed=seed).items()
    }
    knn = knn_scores(codes, spatial_knn(vectors, codes, boxes, seed=seed), units)
    scores.update(knn_macro_f1=knn["macro_f1"], knn_recall=knn["recall"], knn_predicted=knn["predicted"])
    return scores


def _within_maps(table: Any, maps: Sequence[UnitMap]) -> np.ndarray:
    """Rows of the tiles whose footprint's box reaches into any map's extent (in the run CRS)."""
    bounds = table.geometry.bounds.to_numpy() if len(table) else np.zeros((0, 4))
    keep = np.zeros(len(bounds), dtype=bool)
    for umap in maps:
        left, bottom, right, top = extent_in(umap, table.crs)
        keep |= (bounds[:, 2] > left) & (bounds[:, 0] < right) & (bounds[:, 3] > bottom) & (bounds[:, 1] < top)
    return np.flatnonzero(keep)


def _workflow_clusters(labels: Path, tiles: Any, codes: np.ndarray) -> dict[str, dict[str, float]]:
    """ARI, NMI and purity of the clusters stage's own labels at every level, on the same tiles."""
    import pyarrow.parquet as pq

    columns = [c for c in pq.read_schema(labels).names if c[:1] in "kh" and c[1:].isdigit()]
    found = pq.read_table(labels, columns=["scene", "tile_id", *columns]).to_pandas()
    merged = tiles[["scene", "tile_id"]].merge(found, on=["scene", "tile_id"], how="left")
    out = {}
    for col in sorted(columns, key=lambda c: (c[0] != "k", int(c[1:]))):
        values = merged[col].to_numpy()
        ok = ~np.isnan(values.astype(float))
        if ok.sum() >= MIN_UNIT_TILES:
            out[col] = agreement(codes[ok], values[ok].astype(np.int64))
    return out
