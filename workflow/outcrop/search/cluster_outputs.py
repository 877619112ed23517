"""The clusters stage's outputs kept between runs, so that an added scene writes only its own.

Snakemake deletes a job's outputs before it runs it; the clusters job reruns whenever a scene is
added. So, like the centroids (:mod:`outcrop.search.incremental`), the outputs live in the state
folder (``clusters/state``, no rule's output) and the job hard-links them into place:

- ``labels.parquet`` and ``labels.gpkg``: every labelled tile; an add appends the new scene's rows
  in place (:mod:`outcrop.parquet_append`; a GeoPackage is appended to in SQLite);
- ``rasters/`` and ``maps/``: a label raster per scene and level and a map per scene; an add
  writes the new scenes' files and links the others as they are;
- ``summary.npz``: what the per-cluster summary is made of, summed per cluster (tiles, surface
  fractions, band means of a sample, which scenes), so that an add adds the new tiles' share
  instead of reading every tile again; with the exemplar tiles (the most central of each cluster
  of the largest k) and the Ward hierarchy, which is kept with the centroids it was fitted to (so
  that a kept tile's hierarchy labels never change).

``outputs`` in ``state.json`` records the labelled tile count, the index table's row-group records
of those tiles (their fingerprint: an index rebuilt since, with its ids in another order, makes the
clusters start afresh), the levels, the tile layout and the scenes in summary order.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.io import atomic_path
from outcrop.raster.tiles import FRACTION_COLUMNS

FRACTIONS = ("valid", *FRACTION_COLUMNS)
EXEMPLARS = 6


def link_tree(source: Path, target: Path, names: Sequence[str] | None = None) -> int:
    """Hard-link every file under ``source`` (or only those whose stem is in ``names``) to the same
    place under ``target``; returns how many. A file already there with the same inode is left."""
    count = 0
    wanted = set(names) if names is not None else None
    for root, _, files in os.walk(source):
        for name in files:
            path = Path(root) / name
            if wanted is not None and name.split(".")[0] not in wanted:
                continue
            dest = Path(target) / path.relative_to(source)
            try:
                if dest.stat().st_ino == path.stat().st_ino:
                    count += 1
                    continue
            except FileNotFoundError:
                pass
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                try:
                    os.link(path, tmp)
                except OSError:
                    shutil.copyfile(path, tmp)
            count += 1
    return count


def fingerprint(groups: list[list[float]], count: int) -> str:
    """SHA-256 of the index table's row-group records (first id, rows, bounds) of its first ``count`` rows."""
    kept = [g for g in groups if g[0] < count]
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()


@dataclass
class Summary:
    """Per level, per cluster sums that the summary table is made of, and the exemplar tiles."""

    levels: dict[str, int]  # level -> number of clusters
    scenes: list[str]  # the order of the ``seen`` columns
    size: dict[str, np.ndarray]  # (n,) tiles
    fractions: dict[str, np.ndarray]  # (n, F) sums of the surface fractions
    spectrum: dict[str, np.ndarray]  # (n, C) sums of the sampled tiles' band means
    sampled: dict[str, np.ndarray]  # (n,) sampled tiles
    seen: dict[str, np.ndarray]  # (n, S) whether scene s has a tile of the cluster
    exemplar_sims: np.ndarray  # (k, E) similarity to the centroid, -inf where fewer tiles
    exemplar_scenes: np.ndarray  # (k, E) index into ``scenes``
    exemplar_tiles: np.ndarray  # (k, E) tile id

    @classmethod
    def empty(cls, levels: dict[str, int], bands: int) -> Summary:
        return cls(
            dict(levels),
            [],
            {lv: np.zeros(n, np.int64) for lv, n in levels.items()},
            {lv: np.zeros((n, len(FRACTIONS))) for lv, n in levels.items()},
            {lv: np.zeros((n, bands)) for lv, n in levels.items()},
            {lv: np.zeros(n, np.int64) for lv, n in levels.items()},
            {lv: np.zeros((n, 0), bool) for lv, n in levels.items()},
            np.full((max(levels.values()), 0), -np.inf),
            np.zeros((max(levels.values()), 0), np.int64),
            np.zeros((max(levels.values()), 0), np.int64),
        )

    def add(
        self,
        levels: dict[str, np.ndarray],
        scenes: np.ndarray,
        fractions: np.ndarray,
        spectra_rows: np.ndarray,
        spectra: np.ndarray,
        finest: str,
        sims: np.ndarray,
        tile_ids: np.ndarray,
    ) -> None:
        """Add tiles: their label at each level, scene, fractions (N, F), the rows of them sampled
        for band means with those means (M, C), and their similarity to their finest centroid."""
        new_scenes = [s for s in dict.fromkeys(np.asarray(scenes).astype(str).tolist()) if s not in self.scenes]
        self.scenes += new_scenes
        code = {s: i for i, s in enumerate(self.scenes)}
        codes = np.array([code[s] for s in np.asarray(scenes).astype(str)], dtype=np.int64)
        for level, n in self.levels.items():
            labels = np.asarray(levels[level], dtype=np.int64)
            self.size[level] = self.size[level] + np.bincount(labels, minlength=n)
            self.fractions[level] = self.fractions[level] + np.stack(
                [np.bincount(labels, weights=fractions[:, j], minlength=n) for j in range(fractions.shape[1])], 1
            )
            picked = labels[spectra_rows]
            self.sampled[level] = self.sampled[level] + np.bincount(picked, minlength=n)
            self.spectrum[level] = self.spectrum[level] + np.stack(
                [np.bincount(picked, weights=spectra[:, j], minlength=n) for j in range(spectra.shape[1])], 1
            )
            seen = np.zeros((n, len(self.scenes)), bool)
            seen[:, : self.seen[level].shape[1]] = self.seen[level]
            seen[labels, codes] = True
            self.seen[level] = seen
        self._exemplars(
            np.asarray(levels[finest], dtype=np.int64),
            np.asarray(sims, dtype=np.float64),
            codes,
            np.asarray(tile_ids, dtype=np.int64),
        )

    def _exemplars(self, labels: np.ndarray, sims: np.ndarray, codes: np.ndarray, tile_ids: np.ndarray) -> None:

        k = self.exemplar_sims.shape[0]
        keep = np.isfinite(self.exemplar_sims)
        labels = np.concatenate([np.nonzero(keep)[0], labels])
        sims = np.concatenate([self.exemplar_sims[keep], sims])
        codes = np.concatenate([self.exemplar_scenes[keep], codes])
        tile_ids = np.concatenate([self.exemplar_tiles[keep], tile_ids])
        out_sims = np.full((k, EXEMPLARS), -np.inf)
        out_scenes = np.zeros((k, EXEMPLARS), np.int64)
        out_tiles = np.zeros((k, EXEMPLARS), np.int64)
        for c, rows in enumerate(exemplars_by_similarity(sims, labels, k, EXEMPLARS)):
            out_sims[c, : len(rows)], out_scenes[c, : len(rows)], out_tiles[c, : len(rows)] = (
                sims[rows],
                codes[rows],
                tile_ids[rows],
            )
        self.exemplar_sims, self.exemplar_scenes, self.exemplar_tiles = out_sims, out_scenes, out_tiles

    def exemplars(self) -> list[list[tuple[str, int]]]:
        """(scene, tile id) of each cluster's exemplars, most central first."""
        return [
            [(self.scenes[int(s)], int(t)) for v, s, t in zip(sims, scenes, tiles) if np.isfinite(v)]
            for sims, scenes, tiles in zip(self.exemplar_sims, self.exemplar_scenes, self.exemplar_tiles)
        ]

    def table(self, bands: Sequence[str]) -> Any:
        """The summary table, as :func:`outcrop.search.clusters.cluster_tiles` writes it."""
        import pandas as pd

        frames = []
        with np.errstate(invalid="ignore", divide="ignore"):
            for level, n in self.levels.items():
                size = self.size[level]
                frame = pd.DataFrame(
                    {"level": level, "cluster": np.arange(n), "size": size, "share": size / max(1, int(size.sum()))}
                )
                frame[[f"mean_{b}" for b in bands]] = self.spectrum[level] / self.sampled[level][:, None]
                frame[list(FRACTIONS)] = self.fractions[level] / size[:, None]
                frame["scenes"] = self.seen[level].sum(axis=1).astype(int)
                frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def save(self, path: Path) -> None:
        arrays = {
            "exemplar_sims": self.exemplar_sims,
            "exemplar_scenes": self.exemplar_scenes,
            "exemplar_tiles": self.exemplar_tiles,
        }
        for level in self.levels:
            for name in ("size", "fractions", "spectrum", "sampled", "seen"):
                arrays[f"{level}/{name}"] = getattr(self, name)[level]
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: Path, levels: dict[str, int], scenes: list[str]) -> Summary | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                parts = {
                    name: {lv: data[f"{lv}/{name}"] for lv in levels}
                    for name in ("size", "fractions", "spectrum", "sampled", "seen")
                }
                out = cls(
                    dict(levels),
                    list(scenes),
                    parts["size"],
                    parts["fractions"],
                    parts["spectrum"],
                    parts["sampled"],
                    parts["seen"],
                    data["exemplar_sims"],
                    data["exemplar_scenes"],
                    data["exemplar_tiles"],
                )
        except (OSError, KeyError, ValueError):
            return None
        if any(out.seen[lv].shape != (n, len(scenes)) for lv, n in levels.items()):
            return None
        return out


def exemplars_by_similarity(sims: np.ndarray, labels: np.ndarray, k: int, per_cluster: int = 6) -> list[np.ndarray]:
    """Row positions of the ``per_cluster`` tiles of highest ``sims`` (to their own centroid) per cluster."""
    order = np.lexsort((-sims, labels))  # by cluster, then by decreasing similarity
    starts = np.searchsorted(labels[order], np.arange(k + 1))
    return [order[starts[c] : min(starts[c] + per_cluster, starts[c + 1])] for c in range(k)]
