"""Marks made while looking, kept in a GeoPackage that the next run reads as its deposits.

A mark is a place (a point, a drawn polygon, a result's tile footprint, a known deposit) said to be
right (``positive``) or wrong (``negative``). The file has two layers, ``positives`` and
``negatives``, in the run's CRS, with the fields ``name``, ``source`` (place, polygon, result,
deposit), ``scene`` and ``tile_id`` (of a marked result), ``created`` (UTC) and ``seq`` (the order
the marks were made in). The deposits reader picks the layer by role
(:func:`outcrop.search.analogues.read_deposits`), so the one file works unchanged as ``deposits:``
and as ``negatives:`` in a run's config.

Nothing is lost: every change rewrites the whole file to a temporary sibling, flushes it to disk
and renames it over the old one (:func:`outcrop.io.atomic_path`), so a killed server leaves the
file as it was after the last change, never half-written. Undo steps back through this server's
own changes (adding, removing, clearing); the file itself holds only the current marks.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from outcrop.errors import OutcropError
from outcrop.search.analogues import MARK_LAYERS

KINDS = ("positive", "negative")
SOURCES = ("place", "polygon", "result", "deposit")
FIELDS = ("name", "source", "scene", "tile_id", "created", "seq")
MAX_MARKS = 10_000
UNDO_DEPTH = 200


@dataclass(frozen=True)
class Mark:
    """One mark: its kind, name, where it came from and its geometry (run CRS)."""

    kind: str
    name: str
    source: str
    geometry: Any
    scene: str = ""
    tile_id: int = -1
    created: str = ""
    seq: int = 0


class MarksFile:
    """The marks of one server, saved to ``path`` on every change (thread-safe)."""

    def __init__(self, path: Path, crs: Any) -> None:
        self.path = Path(path)
        self.crs = crs
        self._lock = threading.Lock()
        self._history: list[list[Mark]] = []
        self.marks: list[Mark] = self._read() if self.path.exists() else []

    def _read(self) -> list[Mark]:
        import pyogrio

        try:
            layers = {str(name) for name, _ in pyogrio.list_layers(self.path)}
        except Exception as exc:
            raise OutcropError(
                f"{self.path}: not a readable GeoPackage ({str(exc).splitlines()[0]}); choose another --marks file"
            ) from None
        if not set(MARK_LAYERS) <= layers:
            raise OutcropError(
                f"{self.path}: not a marks file (it has layers {sorted(layers)}, not "
                f"{' and '.join(MARK_LAYERS)}); choose another --marks file, this one is left as it is"
            )
        marks = []
        for layer, kind in zip(MARK_LAYERS, KINDS):
            frame = pyogrio.read_dataframe(self.path, layer=layer)
            missing = [f for f in FIELDS if f not in frame.columns]
            if missing:
                raise OutcropError(f"{self.path}: layer {layer} has no {', '.join(missing)} field")
            if frame.crs is None:
                raise OutcropError(f"{self.path}: layer {layer} has no CRS")
            frame = frame.to_crs(self.crs)
            for row in frame.itertuples():
                if row.geometry is None or row.geometry.is_empty:
                    raise OutcropError(f"{self.path}: layer {layer}: mark {row.seq} has no geometry")
                marks.append(
                    Mark(
                        kind,
                        str(row.name),
                        str(row.source),
                        row.geometry,
                        str(row.scene or ""),
                        int(row.tile_id),
                        str(row.created),
                        int(row.seq),
                    )
                )
        return sorted(marks, key=lambda m: m.seq)

    def _write(self, marks: list[Mark]) -> None:
        import geopandas as gpd
        import pyogrio

        from outcrop.io import atomic_path

        with atomic_path(self.path) as tmp:
            for layer, kind in zip(MARK_LAYERS, KINDS):
                chosen = [m for m in marks if m.kind == kind]
                frame = gpd.GeoDataFrame(
                    {
                        "name": [m.name for m in chosen],
                        "source": [m.source for m in chosen],
                        "scene": [m.scene for m in chosen],
                        "tile_id": [m.tile_id for m in chosen],
                        "created": [m.created for m in chosen],
                        "seq": [m.seq for m in chosen],
                    },
                    geometry=gpd.GeoSeries([m.geometry for m in chosen], crs=self.crs),
                    crs=self.crs,
                )
                frame = frame.astype(
                    {"name": str, "source": str, "scene": str, "tile_id": "int64", "created": str, "seq": "int64"}
                )
                pyogrio.write_dataframe(frame, tmp, layer=layer, driver="GPKG", geometry_type="Unknown")
            with open(tmp, "rb+") as fh:  # on disk before the rename: a crash leaves the old or the new file
                os.fsync(fh.fileno())

    def _change(self, marks: list[Mark]) -> None:
        self._write(marks)
        self._history = (self._history + [self.marks])[-UNDO_DEPTH:]
        self.marks = marks

    def add(self, new: list[Mark]) -> list[Mark]:
        """Add marks (numbered after the last one) and save; returns them as saved."""
        with self._lock:
            if len(self.marks) + len(new) > MAX_MARKS:
                raise OutcropError(f"at most {MAX_MARKS} marks; clear some first")
            start = max((m.seq for m in self.marks), default=0) + 1
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            numbered = [replace(m, seq=start + i, created=stamp) for i, m in enumerate(new)]
            self._change(self.marks + numbered)
            return numbered

    def remove(self, seq: int) -> None:
        with self._lock:
            kept = [m for m in self.marks if m.seq != seq]
            if len(kept) == len(self.marks):
                raise KeyError(seq)
            self._change(kept)

    def clear(self) -> None:
        with self._lock:
            if self.marks:
                self._change([])

    def undo(self) -> bool:
        """Step back one change of this server's; False when there is none."""
        with self._lock:
            if not self._history:
                return False
            previous = self._history[-1]
            self._write(previous)
            self._history.pop()
            self.marks = previous
            return True

    def snapshot(self) -> tuple[list[Mark], bool]:
        """The marks now, and whether a change can be undone."""
        with self._lock:
            return list(self.marks), bool(self._history)
