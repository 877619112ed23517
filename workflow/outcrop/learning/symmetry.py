"""The poses of a tile whose representations an embedding averages.

The ground has no orientation relative to the pixel grid: bedding that strikes north-south in one
scene strikes east-west in the next, and a reprojection turns a whole scene. Training teaches the
encoder flips and quarter turns only approximately; averaging over all eight poses of the dihedral
group D4 makes an embedding exactly invariant to them, and leaves the rest of the representation to
describe what the ground is rather than which way it lies.
"""

from __future__ import annotations

import torch

from outcrop.errors import OutcropError

# (quarter turns, mirror) of every pose, the identity first.
POSES: dict[str, tuple[tuple[int, bool], ...]] = {
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
