"""Figures of the clusters stage: a map per scene (a panel per level), the Ward dendrogram with its
cuts, and thumbnails of the tiles nearest each cluster centre.

:func:`outcrop.search.clusters.cluster_tiles` clusters and writes the labels; this module only draws
what it returns, so the search layer holds no plotting and a figure can be redrawn on its own.

A scene's cluster map has a panel per level (each k and each hierarchy cut), each a map one can
place (graticule, north arrow, scale bar, CRS; :mod:`outcrop.figures.map_furniture`) with its own
legend, since colours identify clusters only within a level. Panels sit in a grid of at most three
columns, so that a run with many levels gives a taller figure, not an unreadable strip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.figures.map_furniture import furnish, raster_extent
from outcrop.io import atomic_path, load_npy
from outcrop.search.clusters import Clustering, exemplars_by_similarity, label_nodata, palette, scene_label_rasters
from outcrop.search.index import scene_of

COLUMNS = 3
PANEL_INCHES = 4.6
DPI = 110


def write_cluster_figures(
    clustering: Clustering,
    prepared_paths: Sequence[Path],
    tiles_paths: Sequence[Path],
    out_dendrogram: Path,
    maps_dir: Path,
    out_exemplars: Path | None = None,
) -> None:
    """The dendrogram, a map ``maps_dir/{scene}.png`` for every scene given (all nodata where none of
    its tiles were indexed) and, with ``out_exemplars``, a PNG grid of the tiles nearest each
    centroid of the largest k."""
    _write_dendrogram(out_dendrogram, clustering.linkage, clustering.sizes, clustering.cuts)
    names = list(clustering.levels)
    _, nodata = label_nodata(clustering)
    colours = palette(int(max(labels.max() for labels in clustering.levels.values())) + 1)
    for scene, grid, raster, transform in scene_label_rasters(clustering, prepared_paths):
        write_cluster_map(Path(maps_dir) / f"{scene}.png", scene, raster, transform, grid.crs, names, nodata, colours)
    if out_exemplars is not None:
        picks = exemplars_by_similarity(
            clustering.similarity, clustering.levels[clustering.finest], len(clustering.sizes)
        )
        _write_exemplars(out_exemplars, clustering.table, picks, tiles_paths, clustering.bands)


def _write_exemplars(
    path: Path, table: Any, picks: list[np.ndarray], tiles_paths: Sequence[Path], bands: list[str]
) -> None:
    """A grid of true-colour (or first-three-band) thumbnails: one row per cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = (
        [bands.index(b) for b in ("red", "green", "blue")]
        if {"red", "green", "blue"} <= set(bands)
        else list(range(min(3, len(bands))))
    )
    by_scene = {scene_of(p): p for p in tiles_paths}
    scenes, tile_ids = table["scene"].to_numpy(), table["tile_id"].to_numpy()
    thumbs: dict[int, np.ndarray] = {}
    opened: dict[str, np.ndarray] = {}
    for row in np.concatenate(picks):
        if scenes[row] not in opened:
            opened[scenes[row]] = load_npy(by_scene[scenes[row]])
        tiles = opened[scenes[row]]
        img = np.asarray(tiles[tile_ids[row]])[rgb]
        thumbs[int(row)] = np.moveaxis(np.repeat(img, 3 // len(rgb), axis=0) if len(rgb) < 3 else img, 0, -1)
    stack = np.stack(list(thumbs.values()))
    lo, hi = np.percentile(stack, [2, 98])  # one stretch for all, so brightness compares across clusters
    cols = max(len(p) for p in picks)
    fig, axes = plt.subplots(len(picks), cols, figsize=(1.1 * cols + 0.6, 1.1 * len(picks)), squeeze=False)
    for c, rows in enumerate(picks):
        for j in range(cols):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(rows):
                ax.imshow(np.clip((thumbs[int(rows[j])] - lo) / max(hi - lo, 1e-6), 0, 1), interpolation="nearest")
            else:
                ax.axis("off")
        axes[c, 0].set_ylabel(str(c), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Tiles nearest each cluster centre", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _write_dendrogram(path: Path, linkage: np.ndarray, sizes: np.ndarray, cuts: Sequence[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    k = len(sizes)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * k + 2), 4.5))
    if k >= 2:
        dendrogram(
            linkage,
            ax=ax,
            labels=[f"{i} (n={s})" for i, s in enumerate(sizes)],
            leaf_rotation=90,
            color_threshold=0,
            above_threshold_color="0.3",
        )
        heights = linkage[:, 2]
        for c in cuts:
            if 1 < c <= k:
                # A cut into c groups lies between the (k-c)-th and (k-c+1)-th merge heights.
                y = (heights[k - c - 1] + heights[k - c]) / 2 if c < k else heights[0] / 2
                ax.axhline(y, ls="--", lw=0.8, color="tab:red")
                ax.text(ax.get_xlim()[1], y, f" h{c}", va="center", color="tab:red", fontsize=8)
    else:
        ax.text(0.5, 0.5, "one cluster: no hierarchy", ha="center", transform=ax.transAxes)
    ax.set_ylabel("Ward distance (size-weighted)")
    ax.set_title(f"Hierarchy of the k={k} clusters")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_cluster_map(
    path: Path,
    scene: str,
    raster: np.ndarray,
    transform: Any,
    crs: Any,
    names: list[str],
    nodata: int,
    colours: np.ndarray,
) -> None:
    """Write the PNG of ``raster`` (levels, rows, cols) of labels, level ``names[i]`` in band i."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    height, width = raster.shape[1:]
    extent = raster_extent(transform, width, height)
    cols = min(COLUMNS, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * (PANEL_INCHES + 1.3), rows * (PANEL_INCHES + 0.7)), squeeze=False
    )
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name, band in zip(axes.ravel(), names, raster):
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        valid = band != nodata
        rgba[valid] = colours[band[valid]]
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        furnish(ax, crs, extent)
        present = np.unique(band[valid])
        handles = [Patch(color=colours[c] / 255, label=f"cluster {c}") for c in present[:40]]
        if handles:
            ax.legend(
                handles=handles,
                title=name,
                fontsize=8,
                title_fontsize=9,
                loc="upper left",
                bbox_to_anchor=(1.12, 1.0),
                ncol=1 + len(handles) // 16,
                frameon=False,
                handlelength=1.2,
                borderaxespad=0,
            )
        ax.set_title(f"{scene}: {name}" + ("" if valid.any() else " (no indexed tiles)"), fontsize=10, pad=14)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)


def cluster_and_map(
    index_table: Path,
    embeddings: Sequence[Path],
    tiles: Sequence[Path],
    prepared: Sequence[Path],
    out_gpkg: Path,
    out_parquet: Path,
    out_summary: Path,
    out_dendrogram: Path,
    maps_dir: Path,
    rasters_dir: Path,
    *,
    out_exemplars: Path | None = None,
    k: Sequence[int] = default("clusters.k"),
    cuts: Sequence[int] = default("clusters.cuts"),
    seed: int = default("clusters.seed"),
    sample: int = default("clusters.sample"),
    retrain: bool = default("clusters.retrain"),
    drift_max: float = default("clusters.drift_max"),
    state_dir: Path | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    """The ``cluster`` stage: :func:`outcrop.search.clusters.cluster_tiles` at each ``k``, then its
    figures (dendrogram, a map per scene, exemplar tiles) drawn from the result."""
    from outcrop.search.clusters import cluster_tiles

    clustering = cluster_tiles(
        index_table,
        embeddings,
        tiles,
        prepared,
        out_gpkg,
        out_parquet,
        out_summary,
        rasters_dir,
        ks=k,
        cuts=cuts,
        seed=seed,
        sample=sample,
        retrain=retrain,
        drift_max=drift_max,
        state_dir=state_dir,
        log=log,
    )
    write_cluster_figures(clustering, prepared, tiles, out_dendrogram, maps_dir, out_exemplars=out_exemplars)
