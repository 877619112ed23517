"""Training tiles straight from the memory-mapped tile arrays of several scenes.

Each scene's ``tiles/{scene}.npy`` is opened once, memory-mapped; a batch is gathered with one
fancy-indexed read per scene it touches, so there is no per-tile file access and no copy of the
whole training set in memory (the page cache does the caching). Only the ``rock`` column of each
tile table is read, to choose the training rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import OutcropError
from outcrop.raster.spectra import tile_spectra
from outcrop.raster.tile_store import open_tiles
from outcrop.runtime.pages import release_pages


@dataclass
class TrainingTiles:
    """The chosen rows of several scenes' tile arrays, addressed as one sequence 0..N-1."""

    arrays: list[Any]  # per scene: (N_s, C, H, W) float32 tiles, memory-mapped (outcrop.raster.tile_store)
    scene_of: np.ndarray  # (N,) index into ``arrays``
    row_of: np.ndarray  # (N,) row within that scene's array

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        return tuple(self.arrays[0].shape[1:])

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Tiles ``index`` as one float32 (B, C, H, W) array, in the order given."""
        index = np.asarray(index)
        out = np.empty((len(index), *self.tile_shape), dtype=np.float32)
        scenes = self.scene_of[index]
        rows = self.row_of[index]
        for s in np.unique(scenes):
            pos = np.flatnonzero(scenes == s)
            pos = pos[np.argsort(rows[pos], kind="stable")]  # sequential reads from the file
            out[pos] = self.arrays[s][rows[pos]]
            release_pages(self.arrays[s])  # random batches would map the whole array in time
        return out


def read_rock(table_path: Path, expected_rows: int) -> np.ndarray:
    """The ``rock`` fraction of every tile of a tile table, checked against the array's row count."""
    import pyarrow.parquet as pq

    try:
        from outcrop.raster.surfaces import ground_fraction

        names = pq.read_schema(table_path).names
        table = pq.read_table(table_path, columns=["rock", *(["unknown"] if "unknown" in names else [])])
        rock = ground_fraction(
            table.column("rock").to_numpy(), table.column("unknown").to_numpy() if "unknown" in names else None
        )
    except FileNotFoundError:
        raise OutcropError(f"{table_path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds (missing column, damaged file)
        raise OutcropError(f"{table_path}: cannot read the rock column of the tile table ({exc})") from None
    if len(rock) != expected_rows:
        raise OutcropError(f"{table_path}: {len(rock)} rows, but its tile array has {expected_rows} tiles")
    return np.asarray(rock, dtype=np.float64)


def open_training_tiles(
    tile_paths: Sequence[Path], table_paths: Sequence[Path], min_rock: float = 0.0
) -> TrainingTiles:
    """Memory-map each scene's tiles and keep the rows whose rock fraction is at least ``min_rock``."""
    if len(tile_paths) != len(table_paths):
        raise OutcropError(f"{len(tile_paths)} tile arrays but {len(table_paths)} tile tables given")
    if not tile_paths:
        raise OutcropError("no training scenes given")
    arrays, scene_of, row_of = [], [], []
    shape = None
    for s, (tile_path, table_path) in enumerate(zip(tile_paths, table_paths)):
        array = open_tiles(tile_path, table_path)
        if array.ndim != 4 or array.dtype != np.float32:
            raise OutcropError(f"{tile_path}: expected float32 tiles (N, C, H, W), got {array.dtype} {array.shape}")
        if shape is None:
            shape = array.shape[1:]
        elif array.shape[1:] != shape:
            raise OutcropError(f"{tile_path}: tiles of shape {array.shape[1:]}, but {tile_paths[0]} has {shape}")
        keep = np.flatnonzero(read_rock(Path(table_path), array.shape[0]) >= min_rock)
        arrays.append(array)
        scene_of.append(np.full(len(keep), s, dtype=np.int32))
        row_of.append(keep.astype(np.int64))
    return TrainingTiles(arrays, np.concatenate(scene_of), np.concatenate(row_of))


def evenly_spaced(n: int, max_tiles: int) -> np.ndarray:
    """Indices of at most ``max_tiles`` tiles evenly spaced over ``n``: the sample the statistics use."""
    return np.unique(np.linspace(0, n - 1, min(n, max_tiles)).round().astype(np.int64))


def band_mean_and_std(
    tiles: TrainingTiles, max_tiles: int = 20_000, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation (float32) over the training tiles.

    Beyond ``max_tiles`` an evenly spaced subset is used: the statistics only set the scale of the
    inputs, and a pass over millions of tiles would cost more than it tells. Accumulated in float64.
    """
    index = evenly_spaced(len(tiles), max_tiles)
    channels = tiles.tile_shape[0]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, len(index), chunk):
        x = tiles.gather(index[start : start + chunk]).astype(np.float64)
        total += x.sum(axis=(0, 2, 3))
        total_sq += np.square(x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def spectral_statistics(
    tiles: TrainingTiles, max_tiles: int = 20_000, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the training tiles of each feature of :func:`tile_spectra`.

    Stored with the encoder, they standardise the spectral part of every embedding the same way
    months later, as band statistics are standardised over a set of tiles before a cosine search.
    """
    index = evenly_spaced(len(tiles), max_tiles)
    feats = np.concatenate(
        [tile_spectra(tiles.gather(index[start : start + chunk])) for start in range(0, len(index), chunk)]
    )
    return (feats.mean(axis=0).astype(np.float32), np.maximum(feats.std(axis=0), 1e-6).astype(np.float32))
