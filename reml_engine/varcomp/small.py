"""The one-call fast path of the crossed solver for small designs (:mod:`.small_kernels`).

:class:`SmallCrossed` holds a :class:`~reml_engine.varcomp.crossed.CrossedSolver`'s
arrays in the dense form the kernels take. It applies when one term is eliminated and
the other terms' levels form one dense block of at most ``SMALL_MAX_CORE`` levels, with
no pooled weight groups: then :meth:`solve` and :meth:`reduction` give the solver's
``solve`` and ``reduction_parts`` (with the decomposition of K) to rounding, in one
kernel call each (checked against the general path on the same inputs in
``tests/varcomp/test_fast_paths.py``).
"""

from __future__ import annotations

import numpy as np

from .reduction import KAPPA_TOL
from .small_kernels import SMALL_OK, crossed_small_reduction, crossed_small_solve

#: Largest dense core block of the fast path: its algebra is written out in loops, which
#: beat the calls into LAPACK up to about this size.
SMALL_MAX_CORE = 96


class SmallCrossed:
    """Dense copies of a one-block crossed solver's arrays, in core-level order."""

    def __init__(self, solver):
        from .crossed import TRACE_SWITCH

        m = solver.m_core
        self.e = solver.e
        self.core = list(solver.core)
        self.k = solver.k
        self.K0 = np.ascontiguousarray(solver.K0.reshape(m, m))
        self.indptr = solver.indptr
        self.indices = solver.indices
        self.data = solver.data
        self.d = solver.d
        self.S_e = solver.S_e
        self.within = np.ascontiguousarray(solver.within)
        self.S_core = np.ascontiguousarray(solver.S_core)
        self.sum_log_weights = float(solver.stats.sum_log_weights)
        position = {t: i for i, t in enumerate(self.core)}
        self.term_of_core = np.array([position[t] for t in solver.term_of_core], dtype=np.int64)
        self.core_index = np.asarray(self.core, dtype=np.int64)
        self.trace_switch = float(TRACE_SWITCH)

    @classmethod
    def of(cls, solver) -> SmallCrossed | None:
        """The fast path of ``solver``, or None when it does not apply."""
        layout = solver.layout
        if (len(solver.chain) != 1 or len(layout.block_size) != 1 or solver.m_core > SMALL_MAX_CORE
                or solver.pooled):
            return None
        return cls(solver)

    def _lam(self, tau: np.ndarray) -> np.ndarray:
        return np.sqrt(tau[self.core_index][self.term_of_core])

    def solve(self, tau: np.ndarray, gradient: bool):
        """(ok, log|H|, C, traces (k,), RtR (k, q, q)) in term order."""
        status, logdet, C, traces, RtR = crossed_small_solve(
            float(tau[self.e]), self._lam(tau), np.ascontiguousarray(tau[self.core_index]), self.term_of_core,
            self.K0, self.indptr, self.indices, self.data, self.d, self.S_e, self.within, self.S_core,
            self.sum_log_weights, bool(gradient), self.trace_switch)
        order = np.empty(self.k, dtype=np.int64)
        order[self.e] = 0
        order[self.core_index] = np.arange(1, self.k)
        return status == SMALL_OK, logdet, C, traces[order], RtR[order]

    def reduction(self, j: int, tau: np.ndarray):
        """(ok, log|H_-j|, C_-j, kappa, vectors) at tau with ``tau_j = 0``."""
        j_core = -1 if j == self.e else self.core.index(j)
        status, logdet, C, kappa, vectors = crossed_small_reduction(
            j_core, float(tau[self.e]), self._lam(tau), self.K0, self.indptr, self.indices, self.data, self.d,
            self.S_e, self.within, self.S_core, self.sum_log_weights, self.term_of_core, float(KAPPA_TOL))
        return status == SMALL_OK, logdet, C, kappa, vectors
