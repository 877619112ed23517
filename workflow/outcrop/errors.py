"""The package's one error type, in a module of its own.

Why apart from ``outcrop/__init__.py``: the package root re-exports it (``from outcrop import
OutcropError`` works everywhere) and also offers :func:`outcrop.open_run`, which reaches
:mod:`outcrop.results` and through it :mod:`outcrop.io`; those two take the error from here, so
that no import cycle runs back through the package root.
"""


class OutcropError(Exception):
    """Bad input or a broken contract between stages.

    Raised with one message that names the file (or config key) and the problem; the command line
    prints it alone, without a traceback, and exits non-zero.
    """
