"""A dense stand-in for the k-term engine (``VCProblem``), for the optimizer's tests.

It implements the contract of ``notes/varcomp_interface.md`` with the relative covariance
``H = W^-1 + sum_j tau_j Z_j Z_j'`` built explicitly (:func:`oracle.dense_covariance_terms`)
and direct linear algebra, so it is only for small data. It is checked against the dense
oracle in ``test_optimizer_stand_in.py``; the optimizer reads nothing else from a problem,
so switching to the engine's ``VCProblem`` is a one-line change in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from oracle import dense_covariance_terms

from reml_engine.core.statistics import PooledStats

LOG_2PI = float(np.log(2.0 * np.pi))
#: Eigenvalues of K = Z_j' H_-j^-1 Z_j at or below this fraction of the largest are zero
#: (directions of Z_j that H_-j^-1 does not see: their vectors v_i vanish too).
KAPPA_RTOL = 1e-10


@dataclass(frozen=True)
class VCEvaluation:
    """The criterion at one tau with its parts (the contract's record)."""

    tau: np.ndarray
    criterion: float
    gradient: np.ndarray | None
    logdet_V: float
    logdet_XtVinvX: float
    pwrss: float
    beta: np.ndarray
    sigma2: float
    REML: bool


@dataclass(frozen=True)
class DenseTermReduction:
    """The exact one-dimensional problem in t = tau_j, the other ratios held fixed.

    ``log|H(t)| = constant + sum_i log(1 + kappa_i t)`` and
    ``[X|y]' H(t)^-1 [X|y] = base - sum_i t / (1 + kappa_i t) v_i v_i'``.
    """

    term: int
    tau: np.ndarray
    constant: float
    base: np.ndarray
    kappa: np.ndarray
    vectors: np.ndarray
    nobs: int

    @property
    def p(self) -> int:
        return self.base.shape[0] - 1

    def pooled_stats(self) -> PooledStats:
        """The single-term statistics of the reduction (groups of 'size' kappa_i)."""
        between = self.vectors[:, :, None] * self.vectors[:, None, :] / self.kappa[:, None, None]
        within = self.base - between.sum(axis=0)
        return PooledStats(
            nobs=self.nobs,
            within=0.5 * (within + within.T),
            sizes=self.kappa.copy(),
            groups_per_size=np.ones(len(self.kappa)),
            between=between,
            model_shift=np.zeros(self.base.shape[0]),
        )

    def criterion(self, t, REML: bool = True) -> np.ndarray:
        """The full criterion at tau_j = t (vectorized), from the reduction alone."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        out = np.empty(len(t))
        p = self.p
        dof = self.nobs - p if REML else self.nobs
        for i, ti in enumerate(t):
            w = ti / (1.0 + self.kappa * ti)
            M = self.base - (self.vectors.T * w) @ self.vectors
            L = np.linalg.cholesky(M)
            logdet_V = self.constant + np.log1p(self.kappa * ti).sum()
            pwrss = L[p, p] ** 2
            out[i] = logdet_V + dof * (1.0 + LOG_2PI + np.log(pwrss / dof))
            if REML:
                out[i] += 2.0 * np.log(np.diag(L)[:p]).sum()
        return out


class DenseProblem:
    """``VCProblem`` by brute force, for small data.

    Two dense routes to the same numbers: ``explicit=True`` builds the n x n matrix H
    itself (:func:`oracle.dense_covariance_terms`) and solves with it; the default works in
    the M = sum_j m_j columns of ``Z = [Z_1 ... Z_k]`` with ``H^-1 = W - W Z L A^-1 L Z' W``,
    ``L = diag(sqrt(tau))``, ``A = I + L Z'WZ L`` and ``log|H| = log|A| - log|W|`` (lme4's
    form, dense), which is fast enough for the reference cases (hundreds of rows). The
    two agree to 1e-9 (``test_optimizer_stand_in.py``).

    Parameters
    ----------
    X : (n, p) fixed-effects design (full column rank)
    y : (n,) response
    factors : sequence of k label arrays of length n, one per random-intercept term
    weights : (n,) prior weights or None
    offset : (n,) offset or None (subtracted from y)
    term_names : names of the terms
    explicit : bool
        Build H explicitly (n x n).
    """

    def __init__(self, X, y, factors, weights=None, offset=None, term_names=None, explicit=False):
        self.X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        self.y = y if offset is None else y - np.asarray(offset, dtype=float)
        self.factors = [np.asarray(f) for f in factors]
        n = len(self.y)
        self.weights = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        self.explicit = explicit
        blocks = []
        for labels in self.factors:
            levels, codes = np.unique(labels, return_inverse=True)
            Z = np.zeros((n, len(levels)))
            Z[np.arange(n), codes] = 1.0
            blocks.append(Z)
        self.k = len(self.factors)
        self.nobs = n
        self.p = self.X.shape[1]
        self.nlevels = tuple(Z.shape[1] for Z in blocks)
        self.term_names = tuple(term_names) if term_names is not None else tuple(f"term{j}" for j in range(self.k))
        self.XY = np.column_stack([self.X, self.y])
        self.Z = np.hstack(blocks)
        self.columns = np.repeat(np.arange(self.k), self.nlevels)
        self.slices = [np.flatnonzero(self.columns == j) for j in range(self.k)]
        WZ = self.Z * self.weights[:, None]
        self.ZtWZ = self.Z.T @ WZ
        self.ZtWXY = WZ.T @ self.XY
        self.XYtWXY = (self.XY * self.weights[:, None]).T @ self.XY
        self.logdet_W = float(np.log(self.weights).sum())
        self.n_evaluations = 0
        self.n_reductions = 0

    def _solve_parts(self, tau):
        """log|H|, Z'H^-1 Z, Z'H^-1 [X|y] and [X|y]'H^-1 [X|y] at tau (every tau_j >= 0)."""
        tau = np.asarray(tau, dtype=float)
        if self.explicit:
            H = dense_covariance_terms(self.factors, tau, self.weights)
            C = np.linalg.cholesky(H)
            logdet = 2.0 * np.log(np.diag(C)).sum()
            HinvZ = np.linalg.solve(H, self.Z)
            HinvXY = np.linalg.solve(H, self.XY)
            return logdet, self.Z.T @ HinvZ, self.Z.T @ HinvXY, self.XY.T @ HinvXY
        lam = np.sqrt(tau)[self.columns]
        A = np.eye(len(lam)) + lam[:, None] * self.ZtWZ * lam[None, :]
        C = np.linalg.cholesky(A)
        logdet = 2.0 * np.log(np.diag(C)).sum() - self.logdet_W
        # H^-1 = W - W Z L A^-1 L Z' W.
        LZtWZ = lam[:, None] * self.ZtWZ
        LZtWXY = lam[:, None] * self.ZtWXY
        AinvLZtWZ = np.linalg.solve(A, LZtWZ)
        AinvLZtWXY = np.linalg.solve(A, LZtWXY)
        ZtHZ = self.ZtWZ - LZtWZ.T @ AinvLZtWZ
        ZtHXY = self.ZtWXY - LZtWZ.T @ AinvLZtWXY
        XYtHXY = self.XYtWXY - LZtWXY.T @ AinvLZtWXY
        return logdet, ZtHZ, ZtHXY, XYtHXY

    def evaluate(self, tau, REML: bool = True, gradient: bool = True) -> VCEvaluation:
        tau = np.asarray(tau, dtype=float).copy()
        self.n_evaluations += 1
        p = self.p
        dof = self.nobs - p if REML else self.nobs
        logdet_V, ZtHZ, ZtHXY, M = self._solve_parts(tau)
        M = 0.5 * (M + M.T)
        L = np.linalg.cholesky(M)
        logdet_A = 2.0 * np.log(np.diag(L)[:p]).sum()
        pwrss = L[p, p] ** 2
        beta = np.linalg.solve(M[:p, :p], M[:p, p])
        crit = logdet_V + dof * (1.0 + LOG_2PI + np.log(pwrss / dof)) + (logdet_A if REML else 0.0)
        grad = None
        if gradient:
            Ainv = np.linalg.inv(M[:p, :p])
            Zr = ZtHXY[:, p] - ZtHXY[:, :p] @ beta  # Z' H^-1 (y - X beta)
            grad = np.empty(self.k)
            for j, idx in enumerate(self.slices):
                d = np.trace(ZtHZ[np.ix_(idx, idx)]) - dof * (Zr[idx] @ Zr[idx]) / pwrss
                if REML:
                    B = ZtHXY[idx, :p]
                    d -= np.trace(Ainv @ B.T @ B)
                grad[j] = d
        return VCEvaluation(tau, float(crit), grad, float(logdet_V), float(logdet_A), float(pwrss), beta,
                            float(pwrss / dof), REML)

    def fixed_effects(self, tau, REML: bool = True):
        ev = self.evaluate(tau, REML, gradient=False)
        _, _, _, M = self._solve_parts(np.asarray(tau, dtype=float))
        vcov = ev.sigma2 * np.linalg.inv(M[:self.p, :self.p])
        return ev.beta, 0.5 * (vcov + vcov.T), ev.sigma2

    def reduce_to_term(self, j: int, tau) -> DenseTermReduction:
        tau = np.asarray(tau, dtype=float).copy()
        self.n_reductions += 1
        held = tau.copy()
        held[j] = 0.0
        constant, ZtHZ, ZtHXY, base = self._solve_parts(held)
        idx = self.slices[j]
        K = ZtHZ[np.ix_(idx, idx)]
        kappa, Q = np.linalg.eigh(0.5 * (K + K.T))
        keep = kappa > KAPPA_RTOL * kappa.max()
        kappa, Q = kappa[keep], Q[:, keep]
        vectors = Q.T @ ZtHXY[idx]
        return DenseTermReduction(j, tau, float(constant), 0.5 * (base + base.T), kappa, vectors, self.nobs)
