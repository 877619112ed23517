"""The random encoder's vectors of a run's indexed tiles, kept by the demo's evaluation for the quality stage.

Both stages score an untrained network of the trained encoder's shape beside it (the baseline that
training must beat), over the same indexed tiles: embedding them costs as much as the embed stage's
work on those tiles, and the demo's evaluation has done it by the time the quality stage starts.
The file holds, per row, the tile's scene and id and its vector, and what made them: the model
file's digest and the seed. A reader with another model or seed gets nothing from it (the quality
stage then embeds the tiles itself), so a stale file can cost time, never a wrong figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from outcrop.errors import OutcropError
from outcrop.io import atomic_path


def save_random_vectors(
    path: Path, model: Path, seed: int, scenes: Sequence[str], tile_ids: np.ndarray, vectors: np.ndarray
) -> None:
    """Write the vectors of (``scenes[i]``, ``tile_ids[i]``) made by the random encoder of ``model`` and ``seed``."""
    from outcrop.search.incremental import file_digest

    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            scene=np.asarray(scenes, dtype=str),
            tile_id=np.asarray(tile_ids, dtype=np.int64),
            vectors=np.asarray(vectors, dtype=np.float32),
            model=np.array(file_digest(Path(model))),
            seed=np.array(int(seed)),
        )


def read_random_vectors(path: Path, model: Path, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scene, (tile ids, vectors) from ``path`` when they were made from ``model`` and ``seed``;
    empty when they were not. A file that is not such a record is refused naming it."""
    from outcrop.search.incremental import file_digest

    try:
        with np.load(Path(path), allow_pickle=False) as kept:
            made_by = (str(kept["model"]), int(kept["seed"]))
            scene, tile_id, vectors = kept["scene"], kept["tile_id"], kept["vectors"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one line naming it
        raise OutcropError(f"{path}: not a readable record of random-encoder vectors ({exc})") from None
    if not (scene.ndim == tile_id.ndim == 1 and vectors.ndim == 2 and len(scene) == len(tile_id) == len(vectors)):
        raise OutcropError(f"{path}: scene, tile id and vector rows do not line up")
    if made_by != (file_digest(Path(model)), int(seed)):
        return {}
    return {str(s): (tile_id[scene == s], vectors[scene == s]) for s in np.unique(scene)}
