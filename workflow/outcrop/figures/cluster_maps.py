"""Cluster maps of one scene: a panel per level (each k and each hierarchy cut), each a map one can
place (graticule, north arrow, scale bar, CRS; :mod:`outcrop.figures.map_furniture`) with its own
legend, since colours identify clusters only within a level.

Panels sit in a grid of at most three columns, so that a run with many levels gives a taller
figure, not an unreadable strip.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.figures.map_furniture import furnish, raster_extent
from outcrop.io import atomic_path

COLUMNS = 3
PANEL_INCHES = 4.6
DPI = 110


def write_cluster_map(path: Path, scene: str, raster: np.ndarray, transform: Any, crs: Any, names: list[str],
                      nodata: int, colours: np.ndarray) -> None:
    """Write the PNG of ``raster`` (levels, rows, cols) of labels, level ``names[i]`` in band i."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    height, width = raster.shape[1:]
    extent = raster_extent(transform, width, height)
    cols = min(COLUMNS, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (PANEL_INCHES + 1.3), rows * (PANEL_INCHES + 0.7)),
                             squeeze=False)
    for ax in axes.ravel()[len(names):]:
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
            ax.legend(handles=handles, title=name, fontsize=8, title_fontsize=9, loc="upper left",
                      bbox_to_anchor=(1.12, 1.0), ncol=1 + len(handles) // 16, frameon=False,
                      handlelength=1.2, borderaxespad=0)
        ax.set_title(f"{scene}: {name}" + ("" if valid.any() else " (no indexed tiles)"), fontsize=10, pad=14)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
