"""Progress of long fits, and the engine's log of what it decided.

Two channels, apart from the warnings (which stay as they are):

* **progress**, for a person waiting: lines on stderr while the data are read
  (:class:`ReadProgress`, chunk by chunk with the total and the time left when the total
  is known) and after each stage of an in-memory fit (:class:`StageProgress`), or calls
  to a function of the caller's. ``progress=`` of :func:`reml_engine.lmer` takes
  ``"auto"`` (default: nothing for fits shorter than ``PROGRESS_AFTER_SECONDS``), True
  (always), False (never) or a callable ``progress(rows, chunks)``.
* the **log**, for a program: the ``logging`` logger ``"reml_engine"`` (:data:`logger`)
  says at INFO which rows and columns were dropped and which optima were found (and
  which is global), and at DEBUG every optimum and the time of each pass. Like any
  library's logger it is silent until the application configures logging, e.g.
  ``logging.basicConfig(level=logging.INFO)``.

Examples
--------
>>> import logging, reml_engine as rl
>>> records = []
>>> class Keep(logging.Handler):
...     def emit(self, record):
...         records.append(record.getMessage())
>>> handler = Keep(level=logging.INFO)
>>> log = logging.getLogger("reml_engine")
>>> log.addHandler(handler); log.setLevel(logging.INFO)
>>> m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
>>> log.removeHandler(handler); log.setLevel(logging.NOTSET)
>>> for part in records[-1].split("; "):
...     print(part)
y ~ x + (1|f): 2 local optima of the REML criterion
global: interior, tau = 1990.21, criterion 16.1726
lme4's default start stops at the boundary optimum, criterion 20.5934
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import numpy as np

#: The engine's logger; silent unless the application configures logging.
logger = logging.getLogger("reml_engine")
logger.addHandler(logging.NullHandler())

#: In ``progress="auto"`` mode, nothing is shown for reads (and fits) shorter than this
#: (seconds).
PROGRESS_AFTER_SECONDS = 10.0

#: Seconds between two progress lines of a chunked read.
PROGRESS_INTERVAL_SECONDS = 5.0

#: What ``progress=`` accepts besides a callable.
PROGRESS_MODES = (True, False, "auto")


def check_progress(progress) -> bool | str | Callable:
    """``progress`` if it is True, False, ``"auto"`` or a callable; else a ValueError."""
    if callable(progress) or any(progress is mode for mode in (True, False)) or (
            isinstance(progress, str) and progress == "auto"):
        return progress
    raise ValueError(f"progress must be True, False, 'auto' or a function progress(rows, chunks), got {progress!r}")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


class ReadProgress:
    """Progress of a chunked read: rows and chunks so far, printed or passed to a callback.

    Parameters
    ----------
    progress : bool, "auto" or callable
        True prints a line every ``PROGRESS_INTERVAL_SECONDS``; "auto" does so only once
        the read has lasted ``PROGRESS_AFTER_SECONDS``; a callable is called as
        ``progress(rows, chunks)`` after every chunk; False shows nothing.
    what : str
        What the pass computes, for the printed line.
    total_rows : int, optional
        The rows the pass will read, when known (a list of chunks, an array): the line
        then gives the share done and the time left at the rate so far.
    """

    def __init__(self, progress, what: str = "statistics", total_rows: int | None = None):
        self.progress = check_progress(progress)
        self.what = what
        self.total_rows = total_rows
        self.start = time.monotonic()
        self.last_print = self.start
        self.rows = 0
        self.chunks = 0
        self.printed = False

    def update(self, rows: int) -> None:
        self.rows += rows
        self.chunks += 1
        if callable(self.progress):
            self.progress(self.rows, self.chunks)
            return
        if self.progress is False:
            return
        now = time.monotonic()
        wait = 0.0 if self.progress is True else PROGRESS_AFTER_SECONDS
        if now - self.start >= wait and now - self.last_print >= PROGRESS_INTERVAL_SECONDS:
            self._print(now)

    def close(self) -> None:
        now = time.monotonic()
        logger.debug("%s pass: %d rows in %d chunks, %.2f s", self.what, self.rows, self.chunks, now - self.start)
        if self.printed or self.progress is True:
            self._print(now)

    def line(self, now: float) -> str:
        """The progress line at time ``now`` (``time.monotonic()``)."""
        elapsed = max(now - self.start, np.finfo(float).tiny)
        done = f"{self.rows:,} rows"
        left = ""
        if self.total_rows:
            done = f"{self.rows:,} of {self.total_rows:,} rows ({100 * self.rows / self.total_rows:.0f}%)"
            if 0 < self.rows < self.total_rows:
                left = f", about {_seconds(elapsed * (self.total_rows - self.rows) / self.rows)} left"
        return (f"reml_engine: {self.what}: {done} in {self.chunks} chunks, {_seconds(elapsed)} "
                f"({self.rows / elapsed:,.0f} rows/s){left}")

    def _print(self, now: float) -> None:
        print(self.line(now), file=sys.stderr)
        self.last_print = now
        self.printed = True


class StageProgress:
    """Progress of an in-memory fit, stage by stage (the design, then the fit).

    ``progress`` is as for :class:`ReadProgress`. A line is printed after each stage:
    with True always, with ``"auto"`` once the fit has lasted ``PROGRESS_AFTER_SECONDS``
    (so a fit of a few seconds shows nothing). A callable is called once, as
    ``progress(rows, 1)``, when the rows are read (the data frame is one chunk).
    """

    def __init__(self, progress):
        self.progress = check_progress(progress)
        self.start = time.monotonic()
        self.last = self.start

    def rows_read(self, rows: int) -> None:
        if callable(self.progress):
            self.progress(rows, 1)

    def stage(self, what: str) -> None:
        now = time.monotonic()
        logger.debug("%s: %.2f s", what, now - self.last)
        took, self.last = now - self.last, now
        if callable(self.progress) or self.progress is False:
            return
        if self.progress is True or now - self.start >= PROGRESS_AFTER_SECONDS:
            print(f"reml_engine: {what}: {_seconds(took)} (total {_seconds(now - self.start)})", file=sys.stderr)


__all__ = ["PROGRESS_AFTER_SECONDS", "PROGRESS_INTERVAL_SECONDS", "ReadProgress", "StageProgress",
           "check_progress", "logger"]
