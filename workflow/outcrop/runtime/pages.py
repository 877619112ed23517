"""Drop a memory-mapped array's pages from this process's resident set; the page cache keeps them.

Tiles and embeddings are read through memory maps so that no stage holds a scene, let alone a
coast, in memory. But every page a map has touched stays mapped, and counted in the process's
resident set, until the map is closed: a streamed pass over 10 million embeddings, or a training
run sampling a 6.6 GB tile array, ends up "using" the whole file. Nothing is lost by dropping
them (the kernel keeps the file's pages in its cache and maps them again on the next read), and
the resident set, which a scheduler's memory limit and Snakemake's benchmark files measure, then
shows what the step really holds.
"""

from __future__ import annotations

import mmap
from typing import Any


def release_pages(array: Any) -> None:
    """``madvise(MADV_DONTNEED)`` over the whole map behind ``array`` (a no-op for other arrays).

    Only read-only maps are released: on a private copy-on-write map the call would discard edits.
    It costs microseconds (the kernel walks only the pages that are mapped: 6 µs on a 6.6 GB tile
    array), so a reader calls it after every batch.
    """
    own = getattr(array, "release_pages", None)
    if callable(own):  # a view over maps of its own (outcrop.raster.tile_store.TileArray)
        own()
        return
    if getattr(array, "mode", None) != "r":
        return
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # a platform or map that refuses: only the accounting is lost
            pass
