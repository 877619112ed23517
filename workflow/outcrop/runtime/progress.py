"""Progress lines with rate and ETA for long steps, written to the job's log.

Snakemake sends each job's output to ``logs/``; a line every tenth of the work (or every few
seconds) tells a user watching ``tail -f`` how far a step is and when it will end.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class Progress:
    """Report ``done/total`` with items per second and ETA: the first step, then every ``every_s``, and the end."""

    def __init__(
        self, what: str, total: int, unit: str, log: Callable[[str], None] = print, every_s: float = 5.0
    ) -> None:
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


class RateWindow:
    """The rate of recent work, for an ETA that follows the machine's current load.

    A rate averaged since the start lags behind a change of load (other jobs starting or ending on
    the same cores) for as long as the work has run, so its ETA drifts for minutes: a training
    logged 9 minutes left, then 29, as the load grew. Over a window of the last ``window_s`` seconds
    the rate is the current one, smoothed over many steps; until the window has filled, it is the
    rate since the first point, which leaves out the set-up before the first step.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, float]] = deque()

    def add(self, t: float, done: float) -> None:
        """Record that ``done`` units were done by time ``t`` (seconds, increasing)."""
        self._points.append((t, done))
        # keep one point at or before the window's start, so the window is always spanned
        while len(self._points) > 2 and self._points[1][0] <= t - self.window_s:
            self._points.popleft()

    def rate(self) -> float:
        """Units per second over the window (0 until two points are in)."""
        if len(self._points) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._points[0], self._points[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def span_s(self) -> float:
        """Seconds the rate is measured over."""
        return self._points[-1][0] - self._points[0][0] if len(self._points) >= 2 else 0.0

    def eta(self, remaining: float) -> float:
        """Seconds for ``remaining`` units at the current rate (inf while no rate is known)."""
        rate = self.rate()
        return remaining / rate if rate > 0 else math.inf
