"""The exact one-dimensional problem in one term's variance ratio, the others held.

With every ``tau_i`` (i != j) fixed, ``H(t) = H_-j + t Z_j Z_j'``. Decomposing
``K = Z_j' H_-j^-1 Z_j = Q diag(kappa) Q'`` and writing ``v_i`` for the rows of
``Q' Z_j' H_-j^-1 [X|y]``::

    log|H(t)|            = log|H_-j| + sum_i log(1 + kappa_i t)
    [X|y]' H(t)^-1 [X|y] = C_-j - sum_i t / (1 + kappa_i t) v_i v_i'

This is the structure of one random-intercept term (:mod:`reml_engine.criterion`), with
group sizes kappa_i and between-group matrices ``v_i v_i' / kappa_i``, plus the constant
``log|H_-j|``: :meth:`TermReduction.pooled_stats` hands it to
:func:`reml_engine.optimizer.find_optima`, which finds every local minimum in t exactly.
For one term and unit weights, K is ``diag(n_g)``: today's pooled statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.statistics import PooledStats
from .solution import profile

#: Eigenvalues of a block of K at or below this fraction of the block's largest one are
#: rounding (K is positive definite in exact arithmetic): they and their vectors are
#: dropped.
KAPPA_TOL = 64 * np.finfo(float).eps


@dataclass(frozen=True)
class TermReduction:
    """The criterion as a function of ``t = tau_j`` alone (see the module docstring).

    Attributes
    ----------
    term : int
    name : str
    tau : ndarray (k,)
        The tau held (``tau[term]`` is 0 and stands for t).
    constant : float
        ``log|H_-j|``.
    base : ndarray (q, q)
        ``C_-j = [X|y]' H_-j^-1 [X|y]`` in the model's parametrization (columns shifted
        by a multiple of the intercept; the criterion does not depend on it).
    kappa : ndarray (r,)
        Positive eigenvalues of ``K``, ascending.
    vectors : ndarray (r, q)
        The matching ``v_i``.
    nobs : int
    """

    term: int
    name: str
    tau: np.ndarray
    constant: float
    base: np.ndarray
    kappa: np.ndarray
    vectors: np.ndarray
    nobs: int
    transform: tuple[np.ndarray, np.ndarray]

    @property
    def p(self) -> int:
        return self.base.shape[0] - 1

    @property
    def lower_limit(self) -> float:
        """The smallest t (negative) at which ``H(t)`` stays positive definite."""
        return -1.0 / float(self.kappa.max()) if len(self.kappa) else -np.inf

    def taus(self, t: float) -> np.ndarray:
        """The full tau vector with ``tau_j = t``."""
        tau = self.tau.copy()
        tau[self.term] = t
        return tau

    def evaluate(self, t, REML: bool = True) -> dict[str, np.ndarray]:
        """Criterion and its derivative in t at many t at once.

        Parameters
        ----------
        t : array-like (B,)
            Values above :attr:`lower_limit`.
        REML : bool

        Returns
        -------
        dict of arrays: ``t``, ``criterion``, ``derivative``, ``logdet_V``,
        ``logdet_XtVinvX``, ``pwrss``, ``sigma2`` (B,) and ``beta`` (B, p) in the columns
        of X as given. Equal to :meth:`VCProblem.evaluate` at ``taus(t)``.
        """
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        denom = 1.0 + t[:, None] * self.kappa[None, :]                       # (B, r)
        q = self.base.shape[0]
        outer = np.einsum("ia,ib->iab", self.vectors, self.vectors).reshape(len(self.kappa), q * q)
        with np.errstate(divide="ignore", invalid="ignore"):
            C = self.base[None] - ((t[:, None] / denom) @ outer).reshape(-1, q, q)
            d_C = -((1.0 / denom**2) @ outer).reshape(-1, 1, q, q)
            logdet = self.constant + np.log(denom).sum(axis=1)
            d_logdet = (self.kappa[None, :] / denom).sum(axis=1)
        out = profile(logdet, C, self.nobs, REML, d_logdet[:, None], d_C)
        J, c = self.transform
        return {
            "t": t,
            "criterion": out["criterion"],
            "derivative": out["gradient"][:, 0],
            "logdet_V": out["logdet_V"],
            "logdet_XtVinvX": out["logdet_XtVinvX"],
            "pwrss": out["pwrss"],
            "sigma2": out["sigma2"],
            "beta": out["beta"] @ J.T + c,
        }

    def criterion(self, t, REML: bool = True) -> np.ndarray:
        return self.evaluate(t, REML)["criterion"]

    def derivative(self, t, REML: bool = True) -> np.ndarray:
        return self.evaluate(t, REML)["derivative"]

    def pooled_stats(self) -> PooledStats:
        """The reduction as single-term statistics: ``criterion(t) = constant +
        reml_engine.criterion.criterion(t, pooled_stats())``.

        Sizes are kappa (one "group" each), between-group matrices ``v v' / kappa`` and
        the within-group matrix ``C_-j - sum v v' / kappa``.
        """
        between = np.einsum("ia,ib->iab", self.vectors, self.vectors) / self.kappa[:, None, None]
        within = self.base - between.sum(axis=0)
        return PooledStats(
            nobs=self.nobs,
            within=0.5 * (within + within.T),
            sizes=self.kappa.copy(),
            groups_per_size=np.ones(len(self.kappa)),
            between=between,
            model_shift=np.zeros(self.base.shape[0]),
        )


def reduction_from_blocks(term, name, tau, constant, base, R, blocks, nobs, transform) -> TermReduction:
    """Decompose each block of K and project R (the rows of term j) on its vectors."""
    kappas, vectors = [], []
    for levels, K in blocks:
        kappa, Q = np.linalg.eigh(K)
        keep = kappa > KAPPA_TOL * max(float(kappa.max()), 0.0)
        kappas.append(kappa[keep])
        vectors.append(Q[:, keep].T @ R[levels])
    kappa = np.concatenate(kappas) if kappas else np.zeros(0)
    vectors = np.concatenate(vectors) if vectors else np.zeros((0, base.shape[0]))
    order = np.argsort(kappa, kind="stable")
    return TermReduction(term=term, name=name, tau=tau, constant=float(constant), base=base,
                         kappa=kappa[order], vectors=vectors[order], nobs=nobs, transform=transform)
