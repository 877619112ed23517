"""Collars without a nodata tag: a constant border around the ground that must not be kept as ground.

Reprojected or mosaicked products often pad the ground with a fill value (0, 1, 255) that the file
does not declare as nodata. Left alone, the padding becomes tiles of flat "ground" that train the
encoder and fill the index. A collar is recognised by its shape: one value that holds most of the
image's outer ring and whose pixels are nearly all connected to the edge through pixels of the same
value. Interior pixels that happen to share the value are few, so treating the value as nodata costs
little ground; when they are not few the value is left alone and nothing is masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# The value must hold at least this share of the outer ring: a collar surrounds the ground.
RING_SHARE = 0.25
# At least this share of all pixels: a few constant edge pixels are ground, not a collar.
MIN_COLLAR_SHARE = 0.01
# At most this share of the image: a file that is nearly all one value is flat ground, not padding.
MAX_COLLAR_SHARE = 0.95
# At most this share of the value's pixels may lie away from the edge-connected region.
MAX_INTERIOR_SHARE = 0.01
# Detection reads the band at most this many pixels on a side (nearest neighbour keeps values exact).
PREVIEW_SIDE = 2048


@dataclass(frozen=True)
class Collar:
    """A detected collar: its fill ``value`` and the share of the image it covers."""

    value: float
    share: float


def find_collar(band: np.ndarray) -> Collar | None:
    """The collar of a 2-D band, or None when it has none (see module docstring for the rule)."""
    from scipy import ndimage

    if band.ndim != 2 or min(band.shape) < 3:
        return None
    ring = np.concatenate([band[0], band[-1], band[1:-1, 0], band[1:-1, -1]])
    ring = ring[np.isfinite(ring)] if ring.dtype.kind == "f" else ring
    if ring.size == 0:
        return None
    values, counts = np.unique(ring, return_counts=True)
    value = values[np.argmax(counts)]
    if counts.max() < RING_SHARE * ring.size:
        return None
    same = band == value
    labels, _ = ndimage.label(same)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels > 0]
    connected = np.isin(labels, edge_labels)
    collar = int(connected.sum())
    interior = int(same.sum()) - collar
    if (
        not MIN_COLLAR_SHARE * band.size <= collar <= MAX_COLLAR_SHARE * band.size
        or interior > MAX_INTERIOR_SHARE * max(1, int(same.sum()))
    ):
        return None
    return Collar(float(value), collar / band.size)


def detect_collar(src: Any, index: int = 1) -> Collar | None:
    """The collar of band ``index`` of an open rasterio dataset, read at most :data:`PREVIEW_SIDE` px."""
    from rasterio.enums import Resampling

    factor = max(1.0, max(src.width, src.height) / PREVIEW_SIDE)
    shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
    band = src.read(index, out_shape=shape, resampling=Resampling.nearest)
    return find_collar(band)
