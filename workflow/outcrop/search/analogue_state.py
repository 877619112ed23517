"""The analogues stage's scores kept between runs, so that an added scene scores only its own tiles.

Every tile's score is its best cosine over the queries, and the queries are the deposits' tiles
(and the negatives'): while the deposits, their buffer and the exclusion radius stay as they were
and an added scene's tiles select no positive or negative, every kept tile's score, the query it
came from and whether it lies in an exclusion zone stay as they were too. ``analogues/state`` (no
rule's output: Snakemake leaves it when the job reruns) keeps them, aligned with the index ids:

- ``score.bin`` (float32), ``which.bin`` (int16), ``excluded.bin`` (uint8): raw arrays, appended to by an add;
- ``queries.npz``: the query vectors (the set, then one per distinct group of positives), the
  ``which`` each gives, and the deposits that matched tiles;
- ``similarity/{scene}.tif``: the similarity rasters, linked into the output folder;
- ``state.json``: the query key (the deposits and negatives files' SHA-256, buffer and exclusion),
  the scored tile count, the index table's fingerprint of those tiles (an index rebuilt since
  makes the stage start afresh), the tile layout, and the embeddings' digests as the index keeps them.

An add scores the new rows alone, then ranks over every kept score: the ranking needs the footprints
of its candidates only, read from the index table by id (:class:`CandidateRows`), not the whole
table. Anything else (other deposits, a new positive, a changed or missing scene) is the whole way.

This module keeps the state (open, append, record); :func:`outcrop.search.analogues.find_analogues`
does the scoring and ranking over it. The arrays are appended to in place, fsynced, and the count
recorded last, so that a stopped add leaves only bytes past the record, cut off by the next one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.io import atomic_path
from outcrop.search.cluster_outputs import fingerprint, link_tree
from outcrop.search.incremental import cached_digest, file_cache, file_digest, given_files, read_state
from outcrop.search.index import scene_of

ARRAYS = (("score", np.float32), ("which", np.int16), ("excluded", np.uint8))


def query_key(deposits: Path, negatives: Path | None, buffer_m: float, exclusion_km: float) -> dict[str, Any]:
    """What the kept scores depend on besides the vectors: the deposits' and negatives' bytes and the distances."""
    return {
        "deposits": file_digest(deposits),
        "negatives": file_digest(negatives) if negatives else None,
        "buffer_m": float(buffer_m),
        "exclusion_km": float(exclusion_km),
    }


class _Column:
    def __init__(self, rows: CandidateRows, name: str) -> None:
        self.rows, self.name = rows, name

    def take(self, ids: np.ndarray) -> Any:
        from types import SimpleNamespace

        got = self.rows.opened.rows(np.asarray(ids, dtype=np.int64), geometry=False)
        values = np.asarray(got.scenes if self.name == "scene" else got.tile_ids)
        return SimpleNamespace(to_numpy=lambda: values)


class _Footprints:
    def __init__(self, rows: CandidateRows) -> None:
        self.rows = rows

    def __getitem__(self, ids: Any) -> np.ndarray:
        return self.rows.opened.rows(np.asarray(ids, dtype=np.int64)).footprints


class CandidateRows:
    """An index table read by id for the few rows a ranking touches (``geometry.values[ids]``,
    ``["scene"].take(ids)``, ``crs``), as :func:`outcrop.search.analogues.rank_masked` reads a table."""

    def __init__(self, opened: Any) -> None:
        from types import SimpleNamespace

        self.opened = opened
        self.crs = opened.crs
        self.geometry = SimpleNamespace(values=_Footprints(self))

    def __getitem__(self, name: str) -> _Column:
        return _Column(self, name)


def save(
    state_dir: Path,
    key: dict[str, Any],
    table_path: Path,
    embedding_paths: Sequence[Path],
    queries: np.ndarray,
    labels: np.ndarray,
    matched: np.ndarray,
    score: np.ndarray,
    which: np.ndarray,
    excluded: np.ndarray,
    layout: Any,
    rasters: Path,
    similarity_dir: Path,
    scenes: Sequence[str],
) -> None:
    """Keep what a whole-way run scored, and link its similarity rasters into ``similarity_dir``."""
    from outcrop.search.index_table import IndexTable

    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").unlink(missing_ok=True)  # no record while the arrays change
    for (name, dtype), values in zip(ARRAYS, (score, which, excluded)):
        with atomic_path(state_dir / f"{name}.bin") as tmp:
            tmp.write_bytes(np.ascontiguousarray(values, dtype=dtype).tobytes())
    with atomic_path(state_dir / "queries.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            queries=np.asarray(queries, dtype=np.float32),
            labels=np.asarray(labels, dtype=np.int64),
            matched=np.asarray(matched, dtype=np.int64),
        )
    link_tree(rasters, similarity_dir, list(scenes))
    cache: dict[str, Any] = {}
    digests = {scene_of(p): cached_digest(p, cache) for p in embedding_paths}
    groups = IndexTable.open(Path(table_path)).groups_meta()
    record(state_dir, key, len(score), fingerprint(groups, len(score)), layout, digests, cache)


def record(
    state_dir: Path,
    key: dict[str, Any],
    count: int,
    print_: str,
    layout: Any,
    digests: dict[str, str],
    cache: dict[str, Any],
) -> None:
    from outcrop.io import write_json

    write_json(
        state_dir / "state.json",
        {
            "key": key,
            "count": int(count),
            "fingerprint": print_,
            "layout": [int(layout.size), int(layout.stride)],
            "scenes": digests,
            "files": cache,
        },
    )


def read_queries(state_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept queries, the ``which`` each gives, and the deposits that matched tiles (the others
    are excluded around, not searched with)."""
    with np.load(state_dir / "queries.npz", allow_pickle=False) as data:
        return data["queries"], data["labels"], data["matched"]


def _fit(path: Path, count: int, itemsize: int) -> bool:
    """Cut ``path`` back to ``count`` items: bytes past the recorded count are an append whose record
    was never written (the job stopped between the two), and are dropped. False if fewer are there."""
    if not path.exists() or os.path.getsize(path) < count * itemsize:
        return False
    if os.path.getsize(path) > count * itemsize:
        os.truncate(path, count * itemsize)
    return True


def append(state_dir: Path, score: np.ndarray, which: np.ndarray, excluded: np.ndarray) -> None:
    """Append an added scene's scores to the kept arrays in place (the kept bytes are not written again).

    Crash-safe by order: each array is appended and fsynced, and only then does :func:`record` write
    the new count (atomically). A job stopped in between leaves bytes past the recorded count, which
    :func:`open_kept` cuts off before the next add; what the record counts is always whole.
    """
    for (name, dtype), values in zip(ARRAYS, (score, which, excluded)):
        with open(state_dir / f"{name}.bin", "ab") as fh:
            fh.write(np.ascontiguousarray(values, dtype=dtype).tobytes())
            fh.flush()
            os.fsync(fh.fileno())


def read_scores(state_dir: Path, total: int) -> list[np.ndarray]:
    """The kept score, query and exclusion arrays of the first ``total`` tiles."""
    return [np.fromfile(state_dir / f"{name}.bin", dtype=dtype, count=total) for name, dtype in ARRAYS]


@dataclass
class Kept:
    """What an add starts from: the record, the index table opened, and the rows added since."""

    state: dict[str, Any]
    count: int
    files: dict[str, Any]
    by_scene: dict[str, Path]
    digests: dict[str, str]
    kept: dict[str, str]
    opened: Any
    new: Any
    new_scenes: list[str]


def open_kept(
    state_dir: Path, key: dict[str, Any] | None, index_path: Path, table_path: Path, embedding_paths: Sequence[Path]
) -> Kept | None:
    """The kept scores and the index rows added since, or None when they do not hold (other
    deposits, an index rebuilt, a kept scene changed, a new row of a kept scene): the stage then
    goes the whole way."""
    from geopandas.io.arrow import _arrow_to_geopandas

    from outcrop.search.faiss_file import read_index
    from outcrop.search.index_table import IndexTable

    state = read_state(state_dir / "state.json")
    if state is None or state.get("key") != key or not (state_dir / "queries.npz").exists():
        return None
    count = int(state["count"])
    if not all(_fit(state_dir / f"{name}.bin", count, np.dtype(d).itemsize) for name, d in ARRAYS):
        return None
    files = file_cache(state)
    by_scene = {scene_of(p): Path(p) for p in embedding_paths}
    digests = {s: cached_digest(p, files) for s, p in by_scene.items()}
    kept = state.get("scenes", {})
    if any(digests.get(s) != d for s, d in kept.items()):
        return None
    opened = IndexTable.open(Path(table_path))
    if fingerprint(opened.groups_meta(), count) != state.get("fingerprint") or opened.count < count:
        return None
    if read_index(Path(index_path)).ntotal != opened.count:
        return None
    first = int(np.searchsorted(opened.starts, count, side="right")) - 1
    part = (
        opened.file.read_row_groups(list(range(max(first, 0), opened.file.num_row_groups)))
        if opened.count > count
        else opened.file.read_row_group(0).slice(0, 0)
    )
    new = _arrow_to_geopandas(part.replace_schema_metadata(opened.file.schema_arrow.metadata))
    new = new[new["id"].to_numpy() >= count].reset_index(drop=True)
    new_scenes = [s for s in by_scene if s not in kept]
    if len(new) and not set(new["scene"].astype(str)) <= set(new_scenes):
        return None
    return Kept(state, count, files, by_scene, digests, kept, opened, new, new_scenes)


def finish(
    state_dir: Path, key: dict[str, Any] | None, kept: Kept, similarity_dir: Path, prepared_paths: Sequence[Path]
) -> None:
    """Link the similarity rasters and record the new count: the add's last step (see :func:`append`)."""
    total = kept.opened.count
    link_tree(state_dir / "similarity", similarity_dir, [scene_of(p) for p in prepared_paths])
    record(
        state_dir,
        key or {},
        total,
        fingerprint(kept.opened.groups_meta(), total),
        layout_of(kept),
        {**kept.kept, **{s: kept.digests[s] for s in kept.new_scenes}},
        given_files(kept.files, list(kept.by_scene.values())),
    )


def layout_of(kept: Kept) -> Any:
    """The tile layout the kept scores were drawn with."""
    from outcrop.raster.geo import TileLayout

    return TileLayout(*kept.state["layout"])


__all__ = [
    "CandidateRows",
    "Kept",
    "append",
    "finish",
    "layout_of",
    "open_kept",
    "query_key",
    "read_queries",
    "read_scores",
    "record",
    "save",
]
