"""The poses of a tile whose representations an embedding averages.

The ground has no orientation relative to the pixel grid: bedding that strikes north-south in one
scene strikes east-west in the next, and a reprojection turns a whole scene. Training teaches the
encoder flips and quarter turns only approximately; averaging over poses makes an embedding exactly
invariant to them, and leaves the rest of the representation to describe what the ground is rather
than which way it lies.

``c4``, the default, averages the four quarter turns. A sensor looking down turns the ground (another
orbit, another projection) but never mirrors it, so the flips of ``d4`` (all eight poses of the
dihedral group) buy invariance to a change no scene shows, at twice the cost: on the demo ``c4``
scores as ``d4`` does (benchmarks/embedding_cost.py), and on real ground it keeps the turned and
reprojected re-identification (benchmarks/reidentification_real.py).
"""

from __future__ import annotations

import torch

from outcrop.errors import OutcropError

# (quarter turns, mirror) of every pose, the identity first.
POSES: dict[str, tuple[tuple[int, bool], ...]] = {
    "c4": tuple((turns, False) for turns in range(4)),
    "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
    "none": ((0, False),),
}


def orientations(symmetry: str) -> tuple[tuple[int, bool], ...]:
    """The (quarter turns, mirror) poses of ``symmetry``, the identity first."""
    try:
        return POSES[symmetry]
    except KeyError:
        raise OutcropError(f"unknown embedding symmetry {symmetry!r} (known: {', '.join(POSES)})") from None


def posed(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """``x`` (N, C, H, W) turned by ``turns`` quarter turns, then mirrored left-right if ``flip``."""
    y = torch.rot90(x, turns, (2, 3)) if turns else x
    return torch.flip(y, (3,)) if flip else y
