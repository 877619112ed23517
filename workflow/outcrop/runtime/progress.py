"""Progress lines with rate and ETA for long steps, written to the job's log.

Snakemake sends each job's output to ``logs/``; a line every tenth of the work (or every few
seconds) tells a user watching ``tail -f`` how far a step is and when it will end.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Report ``done/total`` with items per second and ETA: the first step, then every ``every_s``, and the end."""

    def __init__(self, what: str, total: int, unit: str, log: Callable[[str], None] = print,
                 every_s: float = 5.0) -> None:
        self.what, self.total, self.unit, self.log, self.every_s = what, total, unit, log, every_s
        self.t0 = time.perf_counter()
        self._last = -float("inf")

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - done) / rate if rate > 0 else 0.0
        self.log(f"{self.what}: {done}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s, ETA {eta:.0f}s)")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
