"""A 2-D picture of the embedding space: PCA of the indexed tiles, coloured by cluster and by surface.

PCA rather than t-SNE or UMAP: it is linear, deterministic, needs no extra dependency, and keeps
distances honest (two groups far apart in the picture are far apart in the embedding). It shows
less local structure than a neighbour embedding, which is the right trade for a check that the
encoder separates ground: clusters that overlap in the first two components may still separate in
the others, but clusters that separate here certainly do.

At most ``max_points`` tiles (a seeded sample) are drawn; the PCA is fitted on the same sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.figures.quicklook import SURFACE_PLOT_COLOURS
from outcrop.io import atomic_path, read_columns
from outcrop.raster.surfaces import CLASS_NAMES, NODATA

# Every surface class but nodata, by its tile-table column (the class name).
SURFACE_COLUMNS = {code: name for code, name in CLASS_NAMES.items() if code != NODATA}


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows onto their first two principal components: (N, 2) coordinates, explained ratios."""
    centred = np.asarray(vectors, dtype=np.float64) - np.mean(vectors, axis=0)
    if len(centred) < 2:
        return np.zeros((len(centred), 2)), np.zeros(2)
    # The components are the eigenvectors of the (D, D) scatter matrix: a 198 x 198 eigenproblem
    # instead of an SVD of the (N, D) sample, which took 30 s at 20 000 tiles on a shared machine.
    values, vectors_ = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1]
    var, vt = np.clip(values[order], 0.0, None), vectors_[:, order].T
    # Fix each component's sign (largest loading positive) so reruns draw the same picture.
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
    vt = vt * signs[:, None]
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return coords, np.pad(ratio, (0, 2 - len(ratio)))


def dominant_surface(table: Any) -> np.ndarray:
    """Surface class code (rock, snow/ice, water, cloud, unknown, vegetation) with the largest fraction in each tile."""
    present = {code: c for code, c in SURFACE_COLUMNS.items() if c in table}  # older tables lack later classes
    codes = np.array(list(present))
    fractions = np.stack([table[c].to_numpy(dtype=np.float64) for c in present.values()], axis=1)
    return codes[fractions.argmax(axis=1)]


def finest_level(columns: Sequence[str]) -> str:
    """The k-means level with the largest k among label columns (``k4``, ``k8`` → ``k8``)."""
    ks = [(int(m.group(1)), c) for c in columns if (m := re.fullmatch(r"k(\d+)", c))]
    if not ks:
        raise OutcropError("cluster labels hold no k-means level (columns k4, k8, …)")
    return max(ks)[1]


def write_projection(
    labels_path: Path,
    embedding_paths: Sequence[Path],
    out_clusters: Path,
    out_surfaces: Path,
    *,
    max_points: int = 20_000,
    seed: int = 0,
    log: Callable[[str], Any] = print,
) -> None:
    """Draw the PCA of the clustered tiles twice: coloured by cluster (largest k), and by surface."""
    from outcrop.search.clusters import palette
    from outcrop.search.index import table_vectors

    table = read_columns(labels_path)
    if len(table) == 0:
        raise OutcropError(f"{labels_path}: no clustered tiles to project")
    rng = np.random.default_rng(seed)
    rows = (
        np.sort(rng.choice(len(table), max_points, replace=False)) if len(table) > max_points else np.arange(len(table))
    )
    sample = table.iloc[rows].reset_index(drop=True)
    coords, ratio = pca_2d(table_vectors(sample, embedding_paths))
    level = finest_level(table.columns)
    labels = sample[level].to_numpy(dtype=np.int64)
    colours = palette(int(table[level].max()) + 1) / 255.0
    axis_names = (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})")
    _scatter(
        out_clusters,
        coords,
        colours[labels],
        axis_names,
        [(f"{c}", colours[c]) for c in np.unique(labels)][:40],
        f"Embeddings of {len(sample)} tiles, by cluster ({level})",
        level,
    )
    surface = dominant_surface(sample)
    _scatter(
        out_surfaces,
        coords,
        [SURFACE_PLOT_COLOURS[s] for s in surface],
        axis_names,
        [(CLASS_NAMES[s].replace("_", "/"), SURFACE_PLOT_COLOURS[s]) for s in SURFACE_COLUMNS if (surface == s).any()],
        f"Embeddings of {len(sample)} tiles, by dominant surface",
        "surface",
    )
    log(f"projection: {len(sample)} tiles, PC1+PC2 explain {ratio.sum():.0%}; wrote {out_clusters} and {out_surfaces}")


def _scatter(
    path: Path,
    coords: np.ndarray,
    colours: Any,
    axis_names: tuple[str, str],
    legend: list[tuple[str, Any]],
    title: str,
    legend_title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    size = float(np.clip(3000 / max(len(coords), 1), 2, 18))
    ax.scatter(coords[:, 0], coords[:, 1], c=colours, s=size, linewidths=0, alpha=0.8, rasterized=True)
    ax.set_xlabel(axis_names[0], fontsize=8)
    ax.set_ylabel(axis_names[1], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=n, markersize=6) for n, c in legend]
    ax.legend(
        handles=handles,
        title=legend_title,
        fontsize=7,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        ncol=1 + len(handles) // 20,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
