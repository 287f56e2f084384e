"""Compiled kernel of the exact (R)LRT null: the supremum over lambda of each draw.

Plain arrays in, an array out; no checks, no exceptions (:mod:`reml_engine.inference.variance_tests`
validates and interprets).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def sup_over_grid(w, rest, weights, penalty, m):
    """``sup_lambda m log(T / D(lambda)) - penalty(lambda)`` for each draw.

    Parameters
    ----------
    w : float64[:, :] (k, K)
        Chi-square draws, one column per distinct eigenvalue.
    rest : float64[:] (k,)
        Chi-square draw of the residual directions with zero eigenvalue.
    weights : float64[:, :] (L, K)
        ``1 / (1 + lambda_l mu_k)`` on the grid (``lambda_0 = 0``, the others
        equally spaced in log lambda).
    penalty : float64[:] (L,)
        ``sum_s log(1 + lambda_l xi_s)``.
    m : float
        ``n - p`` (REML) or ``n`` (ML).

    Returns
    -------
    float64[:] (k,): the grid maximum, refined by a parabola in log(lambda) through
    the best interior grid point and its two neighbours; never below 0 (lambda = 0).
    """
    k, K = w.shape
    L = weights.shape[0]
    out = np.empty(k)
    values = np.empty(L)
    for i in range(k):
        total = rest[i]
        for j in range(K):
            total += w[i, j]
        log_total = np.log(total)
        best = 0.0
        best_g = 0
        for g in range(1, L):
            d = rest[i]
            for j in range(K):
                d += w[i, j] * weights[g, j]
            v = m * (log_total - np.log(d)) - penalty[g]
            values[g] = v
            if v > best:
                best = v
                best_g = g
        if 1 < best_g < L - 1:
            y0 = values[best_g - 1]
            y1 = values[best_g]
            y2 = values[best_g + 1]
            curv = y0 - 2.0 * y1 + y2
            if curv < 0.0:
                peak = y1 - (y2 - y0) * (y2 - y0) / (8.0 * curv)
                if peak > best:
                    best = peak
        out[i] = best
    return out
