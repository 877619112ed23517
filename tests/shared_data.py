"""Where the real scenes of ``shared/data`` are, found the same way by every test.

The repository is cloned beside ``shared/`` on a developer's machine, but a CI clone may live
anywhere: each test module guessing its own path made some of them skip and one fail outside the
usual place. The order: ``OUTCROP_SHARED_DATA``, then ``shared/data`` beside the repository or
beside any folder above it, then ``/work/shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def candidates() -> list[Path]:
    """Every place looked at, in order."""
    found = [Path(os.environ["OUTCROP_SHARED_DATA"])] if os.environ.get("OUTCROP_SHARED_DATA") else []
    found += [parent / "shared" / "data" for parent in REPO.parents]
    found.append(Path("/work/shared/data"))
    return found


def shared_data_or_none() -> Path | None:
    """The first candidate that is a folder, or None."""
    return next((path for path in candidates() if path.is_dir()), None)


SHARED_DATA = shared_data_or_none()
# The folder, or where it was looked for first (so that a test's path names what is missing).
DATA = SHARED_DATA or candidates()[0]
MISSING = f"the shared real scenes are not here (looked in {', '.join(map(str, candidates()))})"
