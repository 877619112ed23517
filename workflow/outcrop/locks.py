"""One writer at a time for files that a long job keeps rewriting (the training checkpoint).

Snakemake's lock keeps two runs of one workflow apart, but not two `outcrop train` started by hand
(or by two workflows whose results folders differ only in spelling) on one checkpoint: each would
overwrite the other's checkpoint and delete its temporaries as stale. A kernel lock (`flock`) on the
folder that holds the file is released when its holder exits, however it exits, so a killed
trainer never leaves a lock behind, and no lock file is left beside the outputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from outcrop.errors import OutcropError


@contextlib.contextmanager
def exclusive_writer(path: str | os.PathLike[str], what: str = "file") -> Iterator[None]:
    """Hold the only writer's lock on ``path`` (through its folder) for the body of the block.

    A second holder is refused at once with one line naming the file, before it writes or deletes
    anything.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutcropError(
                f"{final}: another process is writing this {what} (it holds the lock on "
                f"{final.parent}); wait for it to finish, or write elsewhere"
            ) from None
        yield
    finally:
        os.close(fd)
