"""Every local minimum in one variance ratio, the others held: the compiled fast path of
the exact 1-D scan.

The search over k ratios scans the criterion along one ratio at every grid node, edge
and sweep (:mod:`.optimizer`): the reduction to that term
(:class:`~reml_engine.varcomp.reduction.TermReduction`) is a single-term criterion with
"groups" of size kappa_i, and :func:`reml_engine.optimizer.find_optima` finds its every
local minimum with the 1-D guarantee. :func:`scan_pooled` does the same scan over
``t >= 0`` in one compiled call (:mod:`.scan_kernels`): the same scan points (0 and
``SCAN_POINTS_PER_UNIT`` points per unit of log t from ``SCAN_TAU_SMALL / max kappa`` to
``SCAN_TAU_LARGE / min kappa``), the same brackets (sign changes of the sampled
derivative, and every local extremum of it towards zero searched by Brent's bounded
minimization over its two intervals), Brent's root finding to ``REFINE_RTOL`` and the
stationarity test ``|derivative| <= STATIONARY_RTOL * scale``.

What it leaves out is find_optima's scan of negative t (the compound-symmetry extension),
which plays no part in the minima over ``t >= 0`` but for a root closer to 0 than the
first scan point (``t < SCAN_TAU_SMALL / max kappa``, where the criterion is linear and
the sign at 0 decides, the 1-D guarantee's own argument). Whenever the fast path meets
anything unusual (a non-finite value, a derivative still negative at the top of the
scan, a solver out of iterations, no minimum passing the test) it returns None and the
caller takes find_optima, which extends the scan, raises for a degenerate criterion, or
reports its fallback.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.optimizer import (
    REFINE_RTOL,
    SCAN_POINTS_PER_UNIT,
    SCAN_TAU_LARGE,
    SCAN_TAU_SMALL,
    STATIONARY_RTOL,
)
from ..core.statistics import PooledStats
from .scan_kernels import SCAN_OK, scan_minima


def scan_points(max_size: float, min_size: float) -> np.ndarray:
    """0, then find_optima's positive scan points (:func:`reml_engine.optimizer.scan_grid`)."""
    step = 1.0 / SCAN_POINTS_PER_UNIT
    s_lo = math.log(SCAN_TAU_SMALL / max_size)
    s_hi = math.log(SCAN_TAU_LARGE / min_size)
    return np.concatenate([np.zeros(1), np.exp(np.arange(s_lo, s_hi + step, step))])


def scan_pooled(stats: PooledStats, REML: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(t, criterion) of every local minimum over t >= 0 of the single-term criterion of
    ``stats`` (one group per size), ascending in t; None when the general path must
    decide (module docstring).

    Equal to the minima of ``find_optima(stats, REML).optima`` (checked in
    ``tests/varcomp/test_scan.py``).
    """
    if not np.all(stats.groups_per_size == 1.0):
        return None
    taus = scan_points(stats.max_size, stats.min_size)
    status, t, criterion, _ = scan_minima(
        taus, np.ascontiguousarray(stats.sizes, dtype=np.float64),
        np.ascontiguousarray(stats.between, dtype=np.float64),
        np.ascontiguousarray(stats.within, dtype=np.float64),
        int(stats.nobs), bool(REML), float(REFINE_RTOL), float(STATIONARY_RTOL))
    if status != SCAN_OK:
        return None
    return t, criterion
