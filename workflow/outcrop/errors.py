"""The package's one error type, in a module of its own.

Why apart from ``outcrop/__init__.py``: the package root re-exports it (``from outcrop import
OutcropError`` works everywhere) and also offers :func:`outcrop.open_run`, which reaches
:mod:`outcrop.results` and through it :mod:`outcrop.io`; those two take the error from here, so
that no import cycle runs back through the package root.
"""

from __future__ import annotations

from collections.abc import Sized


class OutcropError(Exception):
    """Bad input or a broken contract between stages.

    Raised with one message that names the file (or config key) and the problem; the command line
    prints it alone, without a traceback, and exits non-zero.
    """


def check_one_per_scene(stage: str, scenes: Sized, **files: Sized) -> None:
    """Raise when a list of per-scene files (named by keyword, ``tile_tables=...``) does not hold one
    file per scene: the stages pair them with ``scenes`` by position."""
    for name, given in files.items():
        if len(given) != len(scenes):
            raise OutcropError(
                f"{stage}: {len(given)} {name.replace('_', ' ')} file(s) for {len(scenes)} scene(s); "
                "give one per scene, in the order of --scenes"
            )
