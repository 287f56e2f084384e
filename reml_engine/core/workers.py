"""Python threads for independent pieces of work in compiled kernels.

A many-response fit (:mod:`reml_engine.core.many`) splits its pass over the rows into
segments of whole groups and its batched scan into blocks of responses; each piece runs
a compiled kernel that releases the GIL (``nogil``), so on a machine with two free cores
two pieces run at once. The pieces are cut the same way whatever the number of threads
(by the size of the data only) and their results are combined in their order, so the
numbers do not depend on how many threads ran them (``tests/core/test_many.py`` checks
one thread against several).

Unlike BLAS's or numba's own thread pools (see :mod:`reml_engine.varcomp.threads`),
these threads never spin while they wait: on a loaded machine a piece simply waits for a
core, and each thread has a large piece of work, never a small call to wake up for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

#: Threads at most (None: as many as the cores this process may run on).
MAX_THREADS: int | None = None

T = TypeVar("T")
R = TypeVar("R")


def available_threads() -> int:
    """The threads :func:`run_pieces` may use: ``MAX_THREADS``, or the cores this
    process may run on."""
    if MAX_THREADS is not None:
        return max(1, int(MAX_THREADS))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def run_pieces(function: Callable[[T], R], pieces: Sequence[T]) -> list[R]:
    """``[function(piece) for piece in pieces]``, on up to :func:`available_threads`
    threads; the results in the order of the pieces. An exception in a piece is raised
    here."""
    threads = min(available_threads(), len(pieces))
    if threads <= 1:
        return [function(piece) for piece in pieces]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="reml_engine") as pool:
        return list(pool.map(function, pieces))
