"""What a solver returns at one tau, and the profiling of beta and sigma2 from it.

Every solver (:mod:`.nested`, :mod:`.crossed`) reduces the data at a given tau to

* ``logdet_H = log|H|``, ``H = W^-1 + sum_j tau_j Z_j Z_j'`` (lme4's ``ldL2 - ldW``);
* ``C = [X|y]' H^-1 [X|y]`` ((p + 1) x (p + 1));

and, for the gradient, per term j

* ``trace_G[j] = tr(Z_j' H^-1 Z_j) = d log|H| / d tau_j``;
* ``RtR[j] = R_j' R_j`` with ``R_j = Z_j' H^-1 [X|y]``, since ``dC / d tau_j = -R_j' R_j``.

:func:`profile` turns these into the criterion (lme4's ``REMLcrit()`` or ``deviance()``),
beta, sigma2 and the gradient, for a batch of tau at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.criterion import batched_cholesky

LOG_2PI = float(np.log(2.0 * np.pi))

#: A column whose within-level sum of squares is at most this fraction of its total
#: (weighted) sum of squares is constant within the levels: what the one-pass formula
#: leaves there is rounding, set to zero (the intercept column is the usual case).
WITHIN_ZERO_TOL = 64 * np.finfo(float).eps


@dataclass(frozen=True)
class Solution:
    """The data reduced at one tau (see the module docstring)."""

    logdet_H: float
    C: np.ndarray
    trace_G: np.ndarray | None = None
    RtR: np.ndarray | None = None


def within_cross(cross: np.ndarray, sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted within-level cross-product ``cross - sum_l s_l s_l' / w_l``, with the
    columns constant within every level set exactly to zero."""
    scaled = sums / np.sqrt(weights)[:, None]
    within = cross - scaled.T @ scaled
    within = 0.5 * (within + within.T)
    scale = np.maximum(np.diag(cross), np.finfo(float).tiny)
    constant = np.diag(within) <= WITHIN_ZERO_TOL * scale
    within[constant, :] = 0.0
    within[:, constant] = 0.0
    return within


def profile(logdet_H, C, nobs: int, REML: bool, d_logdet=None, d_C=None) -> dict[str, np.ndarray]:
    """Profile beta and sigma2 out, for a batch of B evaluations.

    Parameters
    ----------
    logdet_H : (B,)
    C : (B, q, q)
        ``[X|y]' H^-1 [X|y]``, the response last.
    nobs : int
    REML : bool
    d_logdet : (B, k), optional
        Derivatives of ``log|H|`` in each of k parameters.
    d_C : (B, k, q, q), optional
        Derivatives of C.

    Returns
    -------
    dict of arrays: ``criterion``, ``logdet_V`` (= logdet_H), ``logdet_XtVinvX``,
    ``pwrss``, ``beta`` (B, p), ``sigma2``, ``L`` (the Cholesky factors of C) and, with
    the derivatives, ``gradient`` (B, k). Where C is not numerically positive definite
    the entries are NaN.
    """
    logdet_H = np.asarray(logdet_H, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    q = C.shape[-1]
    p = q - 1
    L, ok = batched_cholesky(C)
    diag = np.diagonal(L, axis1=1, axis2=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        logdet_X = 2.0 * np.log(diag[:, :p]).sum(axis=1)
        pwrss = diag[:, p] ** 2
        beta = np.zeros((len(C), p))
        if p:
            import scipy.linalg as sla

            for i in range(len(C)):
                if ok[i]:
                    beta[i] = sla.solve_triangular(L[i, :p, :p], L[i, p, :p], lower=True, trans="T")
        dof = nobs - p if REML else nobs
        sigma2 = pwrss / dof
        criterion = logdet_H + dof * (1.0 + LOG_2PI + np.log(sigma2)) + (logdet_X if REML else 0.0)
    out = {"criterion": criterion, "logdet_V": logdet_H, "logdet_XtVinvX": logdet_X, "pwrss": pwrss,
           "beta": beta, "sigma2": sigma2, "L": L}
    if d_logdet is not None:
        v = np.concatenate([-beta, np.ones((len(C), 1))], axis=1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d_pwrss = np.einsum("ba,bkac,bc->bk", v, d_C, v)
            gradient = np.asarray(d_logdet, dtype=np.float64) + dof * d_pwrss / pwrss[:, None]
            if REML and p:
                # d log|A| = tr(A^-1 dA) = sum of (Lx^-1 dA Lx^-T) diagonal.
                Lx_inv = np.linalg.inv(np.where(ok[:, None, None], L[:, :p, :p], np.eye(p)))
                gradient = gradient + np.einsum("bij,bkjl,bil->bk", Lx_inv, d_C[:, :, :p, :p], Lx_inv)
        out["gradient"] = gradient
    if not ok.all():
        for key in ("criterion", "logdet_XtVinvX", "pwrss", "sigma2"):
            out[key][~ok] = np.nan
        out["beta"][~ok] = np.nan
        if "gradient" in out:
            out["gradient"][~ok] = np.nan
    return out
