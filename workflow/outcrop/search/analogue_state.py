"""The analogues stage's scores kept between runs, so that an added scene scores only its own tiles.

Every tile's score is its best cosine over the queries, and the queries are the deposits' tiles
(and the negatives'): while the deposits, their buffer and the exclusion radius stay as they were
and an added scene's tiles select no positive or negative, every kept tile's score, the query it
came from and whether it lies in an exclusion zone stay as they were too. ``analogues/state`` (no
rule's output: Snakemake leaves it when the job reruns) keeps them, aligned with the index ids:

- ``score.bin`` (float32), ``which.bin`` (int16), ``excluded.bin`` (uint8): raw arrays, appended to by an add;
- ``queries.npy``: the query vectors (the set, then one per deposit);
- ``similarity/{scene}.tif``: the similarity rasters, linked into the output folder;
- ``state.json``: the query key (the deposits and negatives files' SHA-256, buffer and exclusion),
  the scored tile count, the index table's fingerprint of those tiles (an index rebuilt since
  makes the stage start afresh), the tile layout, and the embeddings' digests as the index keeps them.

An add scores the new rows alone, then ranks over every kept score: the ranking needs the footprints
of its candidates only, read from the index table by id (:class:`CandidateRows`), not the whole
table. Anything else (other deposits, a new positive, a changed or missing scene) is the whole way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.io import atomic_path, write_geodataframe
from outcrop.search.cluster_outputs import fingerprint, link_tree
from outcrop.search.incremental import cached_digest, file_cache, file_digest, given_files, read_state
from outcrop.search.index import scene_of

ARRAYS = (("score", np.float32), ("which", np.int16), ("excluded", np.uint8))


def query_key(deposits: Path, negatives: Path | None, buffer_m: float, exclusion_km: float) -> dict[str, Any]:
    """What the kept scores depend on besides the vectors: the deposits' and negatives' bytes and the distances."""
    return {"deposits": file_digest(deposits), "negatives": file_digest(negatives) if negatives else None,
            "buffer_m": float(buffer_m), "exclusion_km": float(exclusion_km)}


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


def _append(path: Path, values: np.ndarray, dtype: Any) -> None:
    with open(path, "ab") as fh:
        fh.write(np.ascontiguousarray(values, dtype=dtype).tobytes())


def save(state_dir: Path, key: dict[str, Any], table_path: Path, embedding_paths: Sequence[Path], queries: np.ndarray,
         score: np.ndarray, which: np.ndarray, excluded: np.ndarray, layout: Any, rasters: Path, similarity_dir: Path,
         scenes: Sequence[str]) -> None:
    """Keep what a whole-way run scored, and link its similarity rasters into ``similarity_dir``."""
    from outcrop.search.index_table import IndexTable

    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").unlink(missing_ok=True)  # no record while the arrays change
    for (name, dtype), values in zip(ARRAYS, (score, which, excluded)):
        with atomic_path(state_dir / f"{name}.bin") as tmp:
            tmp.write_bytes(np.ascontiguousarray(values, dtype=dtype).tobytes())
    with atomic_path(state_dir / "queries.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(queries, dtype=np.float32))
    link_tree(rasters, similarity_dir, list(scenes))
    cache: dict[str, Any] = {}
    digests = {scene_of(p): cached_digest(p, cache) for p in embedding_paths}
    groups = IndexTable.open(Path(table_path)).groups_meta()
    _record(state_dir, key, len(score), fingerprint(groups, len(score)), layout, digests, cache)


def _record(state_dir: Path, key: dict[str, Any], count: int, print_: str, layout: Any, digests: dict[str, str],
            cache: dict[str, Any]) -> None:
    from outcrop.io import write_json

    write_json(state_dir / "state.json", {"key": key, "count": int(count), "fingerprint": print_,
                                          "layout": [int(layout.size), int(layout.stride)], "scenes": digests,
                                          "files": cache})


def add_scenes(state_dir: Path, key: dict[str, Any] | None, index_path: Path, table_path: Path,
               embedding_paths: Sequence[Path], deposits_path: Path, prepared_paths: Sequence[Path], out_gpkg: Path,
               out_csv: Path, similarity_dir: Path, *, buffer_m: float, exclusion_m: float, top: int,
               negatives_path: Path | None, site_overlap: float | None, log: Callable[[str], Any]) -> bool:
    """Score the tiles of scenes added since the kept scores and rank over all; False when the kept
    state does not hold (the caller goes the whole way)."""
    from geopandas.io.arrow import _arrow_to_geopandas

    from outcrop.raster.geo import TileLayout
    from outcrop.search.analogues import (analogue_table, analogues_csv, best_scores, excluded_ids, rank_masked,
                                          read_deposits, write_similarity)
    from outcrop.search.faiss_file import read_index
    from outcrop.search.index_table import IndexTable
    from outcrop.search.vectors import table_source

    state = read_state(state_dir / "state.json")
    if state is None or state.get("key") != key:
        return False
    count = int(state["count"])
    sizes = [os.path.getsize(state_dir / f"{name}.bin") if (state_dir / f"{name}.bin").exists() else -1
             for name, _ in ARRAYS]
    if sizes != [count * np.dtype(d).itemsize for _, d in ARRAYS]:
        return False
    files = file_cache(state)
    by_scene = {scene_of(p): Path(p) for p in embedding_paths}
    digests = {s: cached_digest(p, files) for s, p in by_scene.items()}
    kept = state.get("scenes", {})
    if any(digests.get(s) != d for s, d in kept.items()):
        return False
    opened = IndexTable.open(Path(table_path))
    if fingerprint(opened.groups_meta(), count) != state.get("fingerprint") or opened.count < count:
        return False
    if read_index(Path(index_path)).ntotal != opened.count:
        return False
    first = int(np.searchsorted(opened.starts, count, side="right")) - 1
    part = opened.file.read_row_groups(list(range(max(first, 0), opened.file.num_row_groups))) \
        if opened.count > count else opened.file.read_row_group(0).slice(0, 0)
    new = _arrow_to_geopandas(part.replace_schema_metadata(opened.file.schema_arrow.metadata))
    new = new[new["id"].to_numpy() >= count].reset_index(drop=True)
    new_scenes = [s for s in by_scene if s not in kept]
    if len(new) and not set(new["scene"].astype(str)) <= set(new_scenes):
        return False
    deposits = read_deposits(deposits_path, opened.crs)
    marks = [deposits] + ([read_deposits(negatives_path, opened.crs, role="negatives")] if negatives_path else [])
    if len(new) and any(_meets(new, m, buffer_m) for m in marks):
        log("analogues: an added scene holds tiles of the deposits or negatives: ranking the whole way")
        return False
    queries = np.load(state_dir / "queries.npy", allow_pickle=False)
    geoms = deposits.geometry.to_numpy()
    if len(new):
        source = table_source(new["scene"].astype(str).to_numpy(), new["tile_id"].to_numpy(), lambda s: by_scene[s])
        score = np.empty(source.count, np.float32)
        which = np.empty(source.count, np.int64)
        for start, block in source.chunks():
            score[start:start + len(block)], which[start:start + len(block)] = best_scores(block, queries)
        excluded = excluded_ids(new, geoms, [], exclusion_m)
        for (name, dtype), values in zip(ARRAYS, (score, which, excluded)):
            _append(state_dir / f"{name}.bin", values, dtype)
    total = opened.count
    arrays = [np.fromfile(state_dir / f"{name}.bin", dtype=dtype, count=total) for name, dtype in ARRAYS]
    masked = np.where(arrays[2].astype(bool), -np.inf, arrays[0])
    ranked = rank_masked(masked, arrays[1].astype(np.int64), CandidateRows(opened), geoms, deposits["name"].tolist(),
                         top=top, site_overlap=site_overlap)
    ranked = analogue_table(ranked, CandidateRows(opened))
    write_geodataframe(out_gpkg, ranked, layer="analogues")
    with atomic_path(out_csv) as tmp:
        tmp.write_text(analogues_csv(ranked), encoding="utf-8")
    layout = TileLayout(*state["layout"])
    drawn = [p for p in prepared_paths if scene_of(p) in set(new_scenes)]
    write_similarity(drawn, new, layout, arrays[0][count:], state_dir / "similarity")
    link_tree(state_dir / "similarity", similarity_dir, [scene_of(p) for p in prepared_paths])
    _record(state_dir, key or {}, total, fingerprint(opened.groups_meta(), total), layout,
            {**kept, **{s: digests[s] for s in new_scenes}}, given_files(files, list(by_scene.values())))
    log(f"analogues: {len(new)} tiles of {len(new_scenes)} added scene(s) scored, {total} ranked from kept scores; "
        f"wrote {len(ranked)} analogues")
    return True


def _meets(table: Any, marks: Any, buffer_m: float) -> bool:
    """Whether any of ``marks`` (deposits or negatives) selects a tile of ``table``, as select_positives would."""
    import shapely

    geoms = np.asarray(marks.geometry.values, dtype=object)
    areal = np.isin(shapely.get_type_id(geoms), [3, 6])
    if buffer_m > 0:
        geoms = np.where(areal, geoms, shapely.buffer(geoms, buffer_m, quad_segs=16))
    _, ids = table.sindex.query(geoms, predicate="intersects")
    return bool(len(ids))


__all__ = ["CandidateRows", "add_scenes", "query_key", "save"]
