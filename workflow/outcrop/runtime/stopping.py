"""Stopping a run: Ctrl-C, or SIGINT or SIGTERM to ``snakemake`` alone, ends every running job in seconds.

Two halves, because neither Snakemake nor a job can do it alone:

- **Snakemake's side.** Its local executor runs each shell job in a thread and, told to stop, waits
  for the running ones to finish: SIGINT to ``snakemake`` makes it print "Terminating processes on
  user request" and then wait (its ``cancel`` shuts the thread pool down, which waits); SIGTERM
  makes it "exit after finishing currently running jobs". Neither reaches the jobs, which run on to
  their end, a training for minutes. Only Ctrl-C in a terminal reaches them, because the terminal
  signals the whole process group. :func:`forward_stop_signals`, called from the Snakefile's
  ``onstart`` (after Snakemake has installed its own handlers), wraps both handlers: the signal goes
  to every process below Snakemake first (each job's shell and what it started, at any depth), then
  to Snakemake's own handler as before (:mod:`outcrop.runtime.forwarding`, which runs in Snakemake's
  process only).
- **The job's side.** A job killed at any moment loses nothing (outputs are written atomically,
  ``outcrop.io.atomic_path``), so most stages simply end on the signal. Training saves first:
  :class:`StopRequests` turns SIGINT and SIGTERM into a stop the training loop handles. During the
  part of a step that changes nothing saved (reading the batch, the views, forward and backward) the
  step is abandoned at once and what it touched is undone; during the short rest (the optimiser and
  EMA updates) the stop waits for the step's end. Either way the checkpoint is that of the end of
  the last whole step, saved before the job ends as the signal asks (KeyboardInterrupt for SIGINT,
  the end of the process for SIGTERM), and the next run resumes from that very step: how long a
  step takes does not delay the stop. A signal before the loop has begun ends the job at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A job stopped on a signal after saving what it needs to resume; the exit status is 128 + signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def status(self) -> int:
        return 128 + self.signum


class StepInterrupted(BaseException):
    """Raised into the part of a step that :meth:`StopRequests.interruptible` marks (a BaseException,
    so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopRequests:
    """SIGINT and SIGTERM as a stop the training loop handles, while :attr:`armed`.

    Used as a context manager around a loop of steps: the loop sets ``armed`` once it has something
    to save. Inside :meth:`interruptible` a signal raises :class:`StepInterrupted` at once; elsewhere
    it is recorded in :attr:`signum`, which the loop checks after each step. A signal while not armed
    goes to the handler that was there before, as it would without this (KeyboardInterrupt for
    SIGINT, the end of the process for SIGTERM). The previous handlers come back on exit. Outside the
    main thread nothing is installed (Python allows signal handlers there only) and :attr:`signum`
    stays None.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self._interruptible = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.signum = self.signum or signum
            if self._interruptible:
                self._interruptible = False  # one raise per stop: undoing the step is not interrupted
                raise StepInterrupted(self.signum)
            return
        _pass_on(self._previous.get(signum, signal.SIG_DFL), signum, frame)

    @contextmanager
    def interruptible(self, allowed: bool = True) -> Iterator[None]:
        """Mark work that a stop may abandon (it changes nothing that cannot be undone). A stop
        recorded before it raises at its start."""
        if allowed and self.armed and self.signum is not None:
            raise StepInterrupted(self.signum)
        self._interruptible = allowed
        try:
            yield
        finally:
            self._interruptible = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def __enter__(self) -> StopRequests:
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave the process's handlers alone
            self._previous.clear()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Put the previous handlers back; after a stop (:class:`Interrupted`), hand them the signal,
        so that the process does what it was asked once training has saved: SIGINT raises
        KeyboardInterrupt (a notebook or a test session stops), SIGTERM ends the process."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if isinstance(exc, Interrupted) and exc.signum in previous:
            _pass_on(previous[exc.signum], exc.signum, None)


def _pass_on(handler: Any, signum: int, frame: FrameType | None) -> None:
    """Do what ``handler`` (a handler as ``signal.getsignal`` gives it) does with ``signum``."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
