"""Added scenes cost only their own work: the trained index and centroids are kept and extended.

The workflow reruns the index and clusters jobs whenever a scene is added (their inputs changed),
and Snakemake removes a job's outputs before it runs. So the state that makes adding possible
lives next to the outputs, in a ``state/`` folder that is no rule's output:

- index: ``index.faiss`` (the populated index), ``trained.faiss`` (the trained, empty index, never
  rewritten by an add: its bytes prove nothing was retrained) and ``state.json`` (kind, parameters,
  the settings that chose them, and every scene already added, in id order, with the SHA-256 of its
  embeddings and tile table and its count of indexed tiles);
- clusters: ``centroids_k{k}.npy`` per k and ``state.json`` (settings, scenes with the SHA-256 of
  their embeddings, the training sample's mean distance to its centroid).

A call whose scenes are the state's scenes, unchanged, plus new ones adds the new ones: their
vectors go into the index, their tiles are assigned to the kept centroids. Anything else (a scene
gone or changed, other settings, a count that needs another kind of index, missing or inconsistent
state, a recall under the floor) trains afresh. So does a **drift**: the new vectors' mean cosine
distance to their nearest coarse centroid (or k-means centroid) divided by the training sample's;
past ``drift_max`` (1.5 by default: half as far again as the data the centroids were fitted to) the
centroids no longer describe the data. Both the drift and what was done are written to info.json
and the log.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop import OutcropError
from outcrop.io import atomic_path, write_json

DRIFT_SAMPLE = 100_000


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's content, or None when it is missing or unreadable (then everything is retrained)."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a file with ``src``'s bytes, atomically: a hard link where possible."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def file_sha256(path: Path) -> str:
    from outcrop.search.index import file_digest

    return file_digest(path)


def add_to_index(state_dir: Path, parts: Sequence[Any], settings: dict[str, Any], *, drift_max: float,
                 recall_floor: float, log: Callable[[str], Any]) -> tuple[Any, list[Any], dict[str, Any]] | None:
    """Add the scenes of ``parts`` that the kept index lacks; None when it must be trained afresh.

    Returns (BuiltIndex, parts in id order: kept scenes first, then the new ones, info fields).
    """
    from outcrop.search.faiss_file import read_index
    from outcrop.search.index import (BuiltIndex, choose_kind, coarse_distance, measure_recall, parts_source)

    state = read_state(state_dir / "state.json")
    if state is None:
        log("no kept index state: training")
        return None
    if state.get("settings") != settings:
        log("index settings changed since the kept index was trained: training afresh")
        return None
    by_scene = {p.scene: p for p in parts}
    kept = state.get("scenes", [])
    for entry in kept:
        part = by_scene.get(entry.get("scene"))
        if part is None:
            log(f"scene {entry.get('scene')!r} of the kept index is gone: training afresh")
            return None
        if part.digest != entry.get("digest") or len(part.rows) != entry.get("count"):
            log(f"scene {part.scene!r} changed since it was indexed: training afresh")
            return None
    names = {e["scene"] for e in kept}
    new = [p for p in parts if p.scene not in names]
    ordered = [by_scene[e["scene"]] for e in kept] + new
    try:
        index = read_index(state_dir / "index.faiss")
    except OutcropError as exc:
        log(f"kept index unusable ({exc}): training afresh")
        return None
    if index.ntotal != sum(e["count"] for e in kept):
        log("kept index does not hold the scenes its state lists: training afresh")
        return None
    kind = state["kind"]
    total = sum(len(p.rows) for p in ordered)
    wanted = choose_kind(total, settings["dim"], exact_max=settings["exact_max"], memory_gb=settings["memory_gb"])
    if wanted != kind:
        log(f"{total} tiles call for a {wanted} index, the kept one is {kind}: training afresh")
        return None
    params = state.get("params", {})
    if not new:
        log(f"no new scene: the kept {kind} index stands")
        built = BuiltIndex(index, kind, params, state["recall"], state["recall_queries"], state.get("train_distance"))
        return built, ordered, {"built": "kept", "added": [], "drift": None}
    new_source = parts_source(new)
    drift = None
    if kind != "flat" and new_source.count:
        _, sample = new_source.sample(DRIFT_SAMPLE, settings["seed"] + 2)
        reference = state.get("train_distance") or 0.0
        drift = coarse_distance(index, sample) / reference if reference > 0 else float("inf")
        if drift > drift_max:
            log(f"drift {drift:.3f} of the new scenes passes index.drift_max {drift_max}: retraining")
            return None
    for _, block in new_source.chunks():
        index.add(block)
    if kind == "flat":
        recall, queries = 1.0, state["recall_queries"]
    else:
        recall, queries = measure_recall(index, parts_source(ordered), settings["seed"] + 3)
        if recall < recall_floor:
            log(f"recall@10 {recall:.3f} after adding is under the floor {recall_floor}: retraining")
            return None
    scenes = [p.scene for p in new]
    log(f"added {len(scenes)} scene(s) ({new_source.count} tiles) to the kept {kind} index"
        + (f", drift {drift:.3f}" if drift is not None else "") + f": {', '.join(scenes)}")
    built = BuiltIndex(index, kind, params, recall, queries, state.get("train_distance"))
    info = {"built": "added", "added": scenes, "drift": None if drift is None else round(drift, 4)}
    return built, ordered, info


def save_index_state(state_dir: Path, out_index: Path, built: Any, parts: Sequence[Any], settings: dict[str, Any],
                     *, retrained: bool) -> None:
    """Keep what a later call needs to add to this index (the index file is linked, not copied)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    old = read_state(state_dir / "state.json") or {}
    _link_or_copy(out_index, state_dir / "index.faiss")
    trained_sha = old.get("trained_sha256")
    if retrained:
        trained = state_dir / "trained.faiss"
        if built.trained is not None:
            with atomic_path(trained) as tmp:
                tmp.write_bytes(built.trained.tobytes())
            trained_sha = file_sha256(trained)
        else:
            trained.unlink(missing_ok=True)
            trained_sha = None
    write_json(state_dir / "state.json", {
        "kind": built.kind, "params": built.params, "settings": settings,
        "recall": built.recall, "recall_queries": built.recall_queries, "train_distance": built.train_distance,
        "trained_sha256": trained_sha,
        "scenes": [{"scene": p.scene, "digest": p.digest, "count": int(len(p.rows))} for p in parts],
    })


def kept_centroids(state_dir: Path, scene_digests: dict[str, str], settings: dict[str, Any], ks: Sequence[int],
                   log: Callable[[str], Any]) -> tuple[dict[int, np.ndarray], dict[str, Any], list[str]]:
    """Centroids kept from an earlier clustering that still hold, the state, and the new scenes.

    Kept only when the settings are the same and every scene clustered before is given unchanged;
    a k without kept centroids is trained (returned dict lacks it).
    """
    state = read_state(state_dir / "state.json")
    if state is None:
        log("no kept clusters state: training")
        return {}, {}, list(scene_digests)
    if state.get("settings") != settings:
        log("clusters settings changed: training afresh")
        return {}, {}, list(scene_digests)
    for scene, digest in state.get("scenes", {}).items():
        if scene_digests.get(scene) != digest:
            log(f"scene {scene!r} is gone or changed since it was clustered: training afresh")
            return {}, {}, list(scene_digests)
    centroids: dict[int, np.ndarray] = {}
    for k in ks:
        path = state_dir / f"centroids_k{k}.npy"
        try:
            c = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            continue
        if c.shape == (k, settings["dim"]) and np.all(np.isfinite(c)) and f"k{k}" in state.get("train_distance", {}):
            centroids[k] = c.astype(np.float32)
    new = [s for s in scene_digests if s not in state.get("scenes", {})]
    return centroids, state, new


def save_cluster_state(state_dir: Path, centroids: dict[int, np.ndarray], train_distance: dict[str, float],
                       scene_digests: dict[str, str], settings: dict[str, Any]) -> None:
    """Keep the centroids (in label order) and what they were fitted to."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for k, c in centroids.items():
        with atomic_path(state_dir / f"centroids_k{k}.npy") as tmp:
            np.save(tmp, np.asarray(c, dtype=np.float32))
    write_json(state_dir / "state.json", {"settings": settings, "scenes": scene_digests,
                                          "train_distance": train_distance})
