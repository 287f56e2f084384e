"""One BLAS thread for the single-term engine's small dense algebra.

The global scan factorizes matrices of order ``q`` to a few hundred. On a machine whose
cores are shared, OpenBLAS's extra threads cost far more than they bring at that size:
measured on the 2-core benchmark machine under load, the eigendecomposition of a 50 x 50
matrix took 0.17 ms on one thread and 38 ms on two (the threads spin waiting for a
core). :func:`single_threaded_blas` limits every loaded OpenBLAS to ``SCAN_BLAS_THREADS``
for the duration of a block and restores the previous count after it.

The several-terms engine has the same limit, with numba's threads as well
(:mod:`reml_engine.varcomp.threads`); this module is the part of it the single-term
path needs, without importing the several-terms engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator

import numpy as np
from scipy.linalg.lapack import dtrtrs as _dtrtrs

#: BLAS threads inside the single-term optimizer; None leaves the process's setting.
SCAN_BLAS_THREADS: int | None = 1

#: (set, get) symbol names of the thread count in the OpenBLAS builds numpy and scipy
#: ship (64-bit and 32-bit integer interfaces) and in a system OpenBLAS.
_OPENBLAS_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)

_controls: list[tuple] | None = None


def openblas_controls() -> list[tuple]:
    """(set, get) ctypes functions of every OpenBLAS loaded in this process, numpy's and
    scipy's (found once; none on other platforms than Linux or with other BLAS
    libraries). The several-terms engine's thread limits use the same ones."""
    global _controls
    if _controls is not None:
        return _controls
    import numpy.linalg  # noqa: F401  (loads numpy's BLAS)
    import scipy.linalg  # noqa: F401  (loads scipy's)

    found: list[tuple] = []
    paths: list[str] = []
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.split()[-1] if "/" in line else ""
                    if "openblas" in os.path.basename(path).lower() and path not in paths:
                        paths.append(path)
        except OSError:
            pass
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.restype = None
                setter.argtypes = [ctypes.c_int]
                getter.restype = ctypes.c_int
                getter.argtypes = []
                found.append((setter, getter))
                break
    _controls = found
    return found


#: Blocks inside :func:`single_threaded_blas` now (all threads), and the counts to restore
#: when the last one leaves; guarded by ``_limit_lock``.
_limit_depth = 0
_limit_previous: list[int] = []
_limit_lock = threading.Lock()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit every loaded OpenBLAS to ``SCAN_BLAS_THREADS`` threads inside the block.

    The limit is process-wide while it lasts (OpenBLAS has no per-thread setting), so the
    blocks of all threads share it: the first block to enter saves the counts and sets
    the limit, the last to leave restores them, whatever the order in which concurrent
    blocks (a threaded scheduler's fits) enter and leave."""
    global _limit_depth, _limit_previous
    controls = openblas_controls() if SCAN_BLAS_THREADS is not None else []
    if not controls:
        yield
        return
    with _limit_lock:
        if _limit_depth == 0:
            _limit_previous = [int(get()) for _, get in controls]
            for (setter, _), before in zip(controls, _limit_previous, strict=True):
                if before != SCAN_BLAS_THREADS:
                    setter(int(SCAN_BLAS_THREADS))
        _limit_depth += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_depth -= 1
            if _limit_depth == 0:
                for (setter, get), before in zip(controls, _limit_previous, strict=True):
                    if int(get()) != before:
                        setter(before)


def solve_lower(L: np.ndarray, b: np.ndarray, check_finite: bool = False) -> np.ndarray:
    """``L^{-1} b`` for a lower-triangular ``L`` with a positive diagonal: exactly
    ``scipy.linalg.solve_triangular(L, b, lower=True, check_finite=check_finite)``.

    The same LAPACK call as scipy makes for a C-ordered ``L`` (``trtrs`` on ``L'``,
    transposed), without its wrapper's argument handling, which cost about 25 us a
    call against 3 us for the solve at the orders of the fit's rank check. The caller
    guarantees the positive diagonal (no singularity to report).
    """
    if check_finite:
        L, b = np.asarray_chkfinite(L), np.asarray_chkfinite(b)
    if L.flags.f_contiguous:
        x, _ = _dtrtrs(L, b, lower=1, trans=0)
    else:
        x, _ = _dtrtrs(L.T, b, lower=0, trans=1)
    return x
