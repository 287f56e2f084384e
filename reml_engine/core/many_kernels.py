"""Compiled kernels for many responses on one design: one pass over the rows of ``X``
(n, p) and ``Y`` (n, k) together.

Per response ``j`` the fit needs the statistics of ``[X | y_j]``
(:mod:`reml_engine.core.statistics`): group sums, the cross-product and column ranges.
All k of them share the X part, so the pass computes, about the shifts ``shift_x`` and
``shift_y``:

* per group: the count, the sums of X (G, p) and of Y (G, k);
* ``X'X`` (p, p), ``X'Y`` (p, k) and the k sums of squares ``y_j'y_j`` (never the
  k x k matrix ``Y'Y``: its size would grow with the square of the responses);
* each column's smallest and largest raw value.

Memory is ``O(G (p + k) + p k)``, whatever n. As in :mod:`reml_engine.core.kernels`,
the kernels take plain arrays, never raise, and leave NaN in the sums for the caller to
flag.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Doubles per block buffer of shifted rows: the block of ``[X | Y]`` (rows x (p + k))
#: stays within about 4 MB (L2/L3 cache) however many responses there are.
BLOCK_DOUBLES = 2**19
#: Rows per block at most (as ``reml_engine.core.kernels.BLOCK_ROWS``).
MAX_BLOCK_ROWS = 2048


@njit(cache=True, nogil=True)
def block_rows(width):
    """Rows per block for ``width`` columns (at least 1)."""
    return max(1, min(MAX_BLOCK_ROWS, BLOCK_DOUBLES // max(width, 1)))


@njit(cache=True, nogil=True)
def _group_order(codes, n_groups):
    """Row indices sorted by group, each group's rows in their order (a counting sort)."""
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(codes.shape[0]):
        starts[codes[i] + 1] += 1
    for g in range(n_groups):
        starts[g + 1] += starts[g]
    order = np.empty(codes.shape[0], dtype=np.int64)
    for i in range(codes.shape[0]):
        g = codes[i]
        order[starts[g]] = i
        starts[g] += 1
    return order


@njit(cache=True, nogil=True)
def many_sums_and_cross(X, Y, codes, n_groups, shift_x, shift_y):
    """Group counts and sums of ``X - shift_x`` and ``Y - shift_y``, ``X'X``, ``X'Y`` and
    the sums of squares of Y's columns (all of the shifted values), and the raw ranges.

    Parameters
    ----------
    X : float64[:, :] (n, p)
    Y : float64[:, :] (n, k)
    codes : int64[:] (n,), group codes in ``0 .. n_groups - 1``
    n_groups : int
    shift_x : float64[:] (p,)
    shift_y : float64[:] (k,)

    Returns
    -------
    counts (G,), sums_x (G, p), sums_y (G, k), cross_xx (p, p), cross_xy (p, k),
    squares_y (k,), lo_x, hi_x (p,), lo_y, hi_y (k,)
    """
    n, p = X.shape
    k = Y.shape[1]
    counts = np.zeros(n_groups, dtype=np.int64)
    sums_x = np.zeros((n_groups, p), dtype=np.float64)
    sums_y = np.zeros((n_groups, k), dtype=np.float64)
    cross_xx = np.zeros((p, p), dtype=np.float64)
    squares_y = np.zeros(k, dtype=np.float64)
    lo_x = np.full(p, np.inf)
    hi_x = np.full(p, -np.inf)
    lo_y = np.full(k, np.inf)
    hi_y = np.full(k, -np.inf)
    # Rows in group order (stable: each group's rows in their own order, so each group
    # sum adds the same numbers in the same order as a pass in row order): a group's
    # k sums stay in cache while its rows are read, where rows in data order would
    # visit a random group's k sums at every row.
    order = _group_order(codes, n_groups)
    # X'Y accumulated row by row, in the same pass as the sums (for p of a few columns,
    # BLAS on (p x rows) blocks ran at a fraction of the memory speed): each row's
    # shifted Y values once into ``y``, then p contiguous multiply-adds over the k
    # responses, loops the compiler vectorizes (branch-free ranges for the same reason).
    cross_xy = np.zeros((p, k), dtype=np.float64)
    x = np.empty(p, dtype=np.float64)
    y = np.empty(k, dtype=np.float64)
    for r in range(n):
        row = order[r]
        g = codes[row]
        counts[g] += 1
        for j in range(p):
            v = X[row, j]
            lo_x[j] = min(lo_x[j], v)
            hi_x[j] = max(hi_x[j], v)
            v -= shift_x[j]
            x[j] = v
            sums_x[g, j] += v
        for a in range(p):
            for b in range(p):
                cross_xx[a, b] += x[a] * x[b]
        for j in range(k):
            v = Y[row, j]
            lo_y[j] = min(lo_y[j], v)
            hi_y[j] = max(hi_y[j], v)
            v -= shift_y[j]
            y[j] = v
            sums_y[g, j] += v
            squares_y[j] += v * v
        for a in range(p):
            xa = x[a]
            for j in range(k):
                cross_xy[a, j] += xa * y[j]
    return counts, sums_x, sums_y, cross_xx, cross_xy, squares_y, lo_x, hi_x, lo_y, hi_y


@njit(cache=True, nogil=True)
def many_within(X, Y, codes, means_x, means_y, shift_x, shift_y):
    """Exact within-group cross-products, in a second pass: ``W_xx`` (p, p), ``W_xy``
    (p, k) and the k within sums of squares of Y, of the rows of ``X - shift_x`` and
    ``Y - shift_y`` less their group means ``means_x`` (G, p) and ``means_y`` (G, k)
    (:func:`reml_engine.core.kernels.within_cross` for many responses)."""
    n, p = X.shape
    k = Y.shape[1]
    within_xx = np.zeros((p, p), dtype=np.float64)
    within_xy = np.zeros((p, k), dtype=np.float64)
    within_yy = np.zeros(k, dtype=np.float64)
    rows = block_rows(p + k)
    bx = np.empty((rows, p), dtype=np.float64)
    by = np.empty((rows, k), dtype=np.float64)
    for start in range(0, n, rows):
        m = min(rows, n - start)
        for i in range(m):
            row = start + i
            g = codes[row]
            for j in range(p):
                bx[i, j] = (X[row, j] - shift_x[j]) - means_x[g, j]
            for j in range(k):
                v = (Y[row, j] - shift_y[j]) - means_y[g, j]
                by[i, j] = v
                within_yy[j] += v * v
        block_x = bx[:m]
        within_xx += np.dot(block_x.T, block_x)
        within_xy += np.dot(block_x.T, by[:m])
    return within_xx, within_xy, within_yy
