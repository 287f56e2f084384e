"""How many threads the engine's dense algebra and compiled kernels use.

The engine's work per evaluation is a few dense factorizations and passes over sparse
tables. On a machine whose cores are shared (the benchmark machine has 2), extra
threads cost far more than they bring: measured there with one other busy process,
OpenBLAS with 2 threads took 17 ms for the eigendecomposition of a 40 x 40 matrix that
one thread does in 0.15 ms, and 200 ms for a 1142 x 1142 Cholesky factorization that
one thread does in 16 ms; a small crossed evaluation whose numba kernels ran their
``prange`` loops on 2 threads took 13 ms, on one 0.5 ms. Threads that wait for a core
spin instead of working, and every small call pays for waking them.

:func:`engine_threads` therefore limits, for the duration of a call into the engine,

* BLAS (numpy's and scipy's OpenBLAS) to ``ENGINE_BLAS_THREADS`` threads (1 by default;
  None leaves the process's setting alone), and
* numba's parallel kernels to one thread unless the caller says the work is large enough
  to share (``parallel=True``: the solvers decide by their size, see
  ``PARALLEL_MIN_WORK`` in :mod:`.crossed`).

Both settings are restored on exit. The BLAS limit is process-wide while it lasts
(OpenBLAS has no per-thread setting): another thread calling BLAS at the same time runs
single-threaded too. Libraries other than OpenBLAS (MKL, Accelerate) are left alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numba

from ..core.blas import openblas_controls

#: BLAS threads inside the engine's calls; None leaves the process's setting.
ENGINE_BLAS_THREADS: int | None = 1


#: Per thread, the ``parallel`` flag of the innermost active :func:`engine_threads`:
#: a nested call with the same flag changes nothing and costs nothing (numba's
#: thread-count calls take a lock, about 10 microseconds each).
_active = threading.local()


def blas_thread_counts() -> list[int]:
    """The current thread count of every OpenBLAS found (empty when none is)."""
    return [int(get()) for _, get in openblas_controls()]


@contextlib.contextmanager
def engine_threads(parallel: bool = False) -> Iterator[None]:
    """Limit BLAS to ``ENGINE_BLAS_THREADS`` and numba's kernels to one thread (all of
    numba's threads when ``parallel``) for the duration of the block; the previous
    settings are restored."""
    outer = getattr(_active, "parallel", None)
    if outer is not None and outer == parallel:
        yield
        return
    controls = openblas_controls() if ENGINE_BLAS_THREADS is not None else []
    previous = [int(get()) for _, get in controls]
    numba_previous = numba.get_num_threads()
    try:
        for (setter, _), before in zip(controls, previous, strict=True):
            if before != ENGINE_BLAS_THREADS:
                setter(int(ENGINE_BLAS_THREADS))
        wanted = numba.config.NUMBA_NUM_THREADS if parallel else 1
        if numba_previous != wanted:
            numba.set_num_threads(wanted)
        _active.parallel = parallel
        yield
    finally:
        _active.parallel = outer
        for (setter, get), before in zip(controls, previous, strict=True):
            if int(get()) != before:
                setter(before)
        if numba.get_num_threads() != numba_previous:
            numba.set_num_threads(numba_previous)
