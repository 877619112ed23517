"""The poses of a tile whose representations an embedding averages.

The ground has no orientation relative to the pixel grid: bedding that strikes north-south in one
scene strikes east-west in the next, and a reprojection turns a whole scene. Training teaches the
encoder flips and quarter turns only approximately; averaging over poses makes an embedding exactly
invariant to them, and leaves the rest of the representation to describe what the ground is rather
than which way it lies.

``d4``, the default, averages all eight poses of the dihedral group: the quarter turns and their
mirror images. ``c4`` averages the four quarter turns alone, at half the cost. No scene mirrors the
ground, but a reprojection turns it by angles between quarter turns, and the eight-pose mean is the
smoother function of that angle: with the real-ground test's encoder ``c4`` loses 0.028 top-1 on
the most turned window (0.117 against 0.145, below band statistics), although the shipped-budget
encoders of benchmarks/reidentification_real.py lose at most 0.013 and nothing on the mean.
"""

from __future__ import annotations

import torch

from outcrop.errors import OutcropError

# (quarter turns, mirror) of every pose, the identity first.
POSES: dict[str, tuple[tuple[int, bool], ...]] = {
    "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
    "c4": tuple((turns, False) for turns in range(4)),
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
