"""Added scenes cost only their own work: the trained index and centroids are kept and extended.

The workflow reruns the index and clusters jobs whenever a scene is added (their inputs changed),
and Snakemake removes a job's outputs before it runs. So the state that makes adding possible
lives next to the outputs, in a ``state/`` folder that is no rule's output:

- index: ``index.faiss`` (the populated index), ``trained.faiss`` (the trained, empty index, never
  rewritten by an add: its bytes prove nothing was retrained), ``tiles.parquet`` (the id table, a
  hard link to the output: an add appends to it), ``rows/{scene}.npy`` (the embedding rows indexed
  per scene) and ``state.json`` (kind, parameters, the settings that chose them, every scene
  already added, in id order, with the SHA-256 of its embeddings and tile table and its count of
  indexed tiles, and ``files``: each input's size, mtime and SHA-256, so that a file whose size and
  mtime are unchanged is neither checksummed nor read again);
- clusters: ``centroids_k{k}.npy`` per k and ``state.json`` (settings, scenes with the SHA-256 of
  their embeddings, the training sample's mean distance to its centroid, and ``files`` as the
  index keeps it).

The index's own state is read and written by :mod:`outcrop.search.index` (it needs the index's
kinds and recall), with the helpers here; the clusters' by the functions here.

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

from outcrop.io import atomic_path, write_json

DRIFT_SAMPLE = 100_000


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, streamed: the identity of an input that was already added."""
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def cached_digest(path: str | os.PathLike[str], cache: dict[str, Any]) -> str:
    """SHA-256 of ``path``, taken from ``cache`` while the file keeps the size and mtime (in ns) recorded
    there with it (as rsync and make trust them): a kept scene's files are not read again on an add.

    ``cache`` maps an absolute path to ``[size, mtime_ns, sha256]``; it is updated in place.
    """
    if unchanged(path, cache):
        return str(cache[os.path.abspath(path)][2])
    st = os.stat(path)
    digest = file_digest(path)
    cache[os.path.abspath(path)] = [st.st_size, st.st_mtime_ns, digest]
    return digest


def unchanged(path: str | os.PathLike[str], cache: dict[str, Any]) -> bool:
    """Whether ``path`` has the size and mtime that ``cache`` recorded with its digest."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    hit = cache.get(os.path.abspath(path))
    return isinstance(hit, list) and len(hit) == 3 and hit[0] == st.st_size and hit[1] == st.st_mtime_ns


def file_cache(state: dict[str, Any] | None) -> dict[str, Any]:
    """The ``files`` a state recorded (:func:`cached_digest`'s cache), empty for none or an older state."""
    files = (state or {}).get("files")
    return dict(files) if isinstance(files, dict) else {}


def given_files(cache: dict[str, Any], paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The entries of ``cache`` for ``paths``: what a state keeps, so that removed inputs drop out."""
    given = {os.path.abspath(p) for p in paths}
    return {path: entry for path, entry in cache.items() if path in given}


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's content, or None when it is missing or unreadable (then everything is retrained)."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a file with ``src``'s bytes, atomically: a hard link where possible."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def kept_centroids(
    state_dir: Path,
    state: dict[str, Any] | None,
    scene_digests: dict[str, str],
    settings: dict[str, Any],
    ks: Sequence[int],
    log: Callable[[str], Any],
) -> tuple[dict[int, np.ndarray], dict[str, Any], list[str]]:
    """Centroids kept from an earlier clustering that still hold, the state, and the new scenes.

    Kept only when the settings are the same and every scene clustered before is given unchanged;
    a k without kept centroids is trained (returned dict lacks it). ``state`` is the content of
    ``state_dir/state.json`` (:func:`read_state`), read once by the caller.
    """
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


def save_cluster_state(
    state_dir: Path,
    centroids: dict[int, np.ndarray],
    train_distance: dict[str, float],
    scene_digests: dict[str, str],
    settings: dict[str, Any],
    files: dict[str, Any] | None = None,
) -> None:
    """Keep the centroids (in label order), what they were fitted to, and ``files`` (each embeddings
    file's size, mtime and SHA-256: :func:`cached_digest`)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for k, c in centroids.items():
        with atomic_path(state_dir / f"centroids_k{k}.npy") as tmp:
            np.save(tmp, np.asarray(c, dtype=np.float32))
    write_json(
        state_dir / "state.json",
        {"settings": settings, "scenes": scene_digests, "train_distance": train_distance, "files": files or {}},
    )
