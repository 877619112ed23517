"""Pass Ctrl-C, SIGINT and SIGTERM from Snakemake on to the jobs it runs (see :mod:`outcrop.runtime.stopping`).

Runs in Snakemake's own process, from the Snakefile's ``onstart``; no rule imports it. ``psutil``
finds the processes below Snakemake (it is one of Snakemake's own dependencies).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from outcrop.runtime.stopping import STOP_SIGNALS


def descendants(pid: int | None = None) -> list[Any]:
    """Every process below ``pid`` (this process by default), children first (psutil processes)."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def signal_descendants(signum: int, pid: int | None = None) -> int:
    """Send ``signum`` to every process below ``pid``; returns how many were signalled."""
    import psutil

    sent = 0
    for proc in descendants(pid):
        try:
            proc.send_signal(signum)
            sent += 1
        except psutil.Error:  # ended meanwhile, or not ours to signal
            pass
    return sent


def forward_stop_signals(log: Callable[[str], Any] = lambda text: print(text, file=sys.stderr)) -> None:
    """Make SIGINT and SIGTERM to this process (Snakemake) reach every process below it first.

    Each handler in place (Snakemake's) is kept and called after the forwarding, so Snakemake still
    stops scheduling, reports the killed jobs as failed and leaves no lock behind. Call it from the
    main thread after Snakemake installed its handlers: the Snakefile's ``onstart``.
    """
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)

        def forward(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            count = signal_descendants(signum)
            if count:
                log(f"outcrop: {signal.Signals(signum).name} passed on to {count} running job process(es)")
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, forward)
