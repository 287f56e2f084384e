"""Dense brute-force REML and ML: builds V explicitly and uses direct linear algebra.

Independent of the engine's algebra (no Woodbury, no pooling, no profiling shortcuts):
the oracle the exact tests compare against. Only for small data.
"""

from __future__ import annotations

import numpy as np


def dense_covariance(groups: np.ndarray, tau: float) -> np.ndarray:
    """H = I + tau Z Z' built from the group labels."""
    same = (groups[:, None] == groups[None, :]).astype(float)
    return np.eye(len(groups)) + tau * same


def dense_criterion(X: np.ndarray, y: np.ndarray, groups: np.ndarray, tau: float, REML: bool = True) -> dict:
    """-2 x (restricted) log-likelihood maximized over beta and sigma2 at fixed tau.

    Computed from the definition: for V = sigma2 H,
    ML:   n log(2 pi sigma2) + log|H| + (y - X b)' H^-1 (y - X b) / sigma2
    REML: ML terms with n - p instead of n for sigma2, plus log|X' V^-1 X| - p log(sigma2)
          i.e. (n - p) log(2 pi sigma2) + log|H| + log|X' H^-1 X| + rss / sigma2
    minimized in closed form over sigma2.
    """
    n, p = X.shape
    H = dense_covariance(np.asarray(groups), tau)
    sign, logdet_H = np.linalg.slogdet(H)
    assert sign > 0
    Hinv = np.linalg.inv(H)
    A = X.T @ Hinv @ X
    beta = np.linalg.solve(A, X.T @ Hinv @ y)
    resid = y - X @ beta
    rss = float(resid @ Hinv @ resid)
    dof = n - p if REML else n
    sigma2 = rss / dof
    crit = dof * np.log(2 * np.pi * sigma2) + logdet_H + rss / sigma2
    if REML:
        crit += np.linalg.slogdet(A)[1]
    return {"criterion": float(crit), "beta": beta, "sigma2": sigma2, "vcov": sigma2 * np.linalg.inv(A),
            "logdet_V": logdet_H, "logdet_XtVinvX": np.linalg.slogdet(A)[1], "pwrss": rss}
