"""outcrop: learn what coastal ground looks like in multispectral scenes, without labels.

Every workflow stage is a plain function in a module named after it (``scenes``, ``tiles``,
``encoder``, ``embeddings``, ``index``, ``clusters``, ``analogues``, ``report``); the command line
in :mod:`outcrop.cli` maps one subcommand to each, and the Snakemake rules call that command line.
"""

from typing import Any

from outcrop.errors import OutcropError

__version__ = "0.1.0"
__all__ = ["OutcropError", "open_run"]


def open_run(results: str = "results") -> Any:
    """A finished run's outputs as geopandas/numpy objects (see :mod:`outcrop.results`).

    Imported on call, so that ``import outcrop`` stays light for the command line.
    """
    from outcrop.results import open_run as _open_run

    return _open_run(results)
