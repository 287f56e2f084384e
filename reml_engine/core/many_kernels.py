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


#: Rows of one group read together by :func:`many_sums_and_cross`: each response's
#: running sums are loaded and stored once per this many rows instead of once per row
#: (the pass is bound by those loads and stores, not by reading Y). Four rows' values
#: and the accumulators stay in the vector registers.
ROWS_TOGETHER = 4


@njit(cache=True, nogil=True)
def group_segments(codes, n_groups, n_segments):
    """The rows in group order (:func:`_group_order`) and the bounds of ``n_segments``
    runs of whole groups of about equal rows: segment s is ``order[bounds[s]:bounds[s +
    1]]`` (empty segments when there are fewer groups)."""
    order = _group_order(codes, n_groups)
    n = codes.shape[0]
    bounds = np.empty(n_segments + 1, dtype=np.int64)
    bounds[0] = 0
    r = 0
    for s in range(1, n_segments):
        r = max(r, (n * s) // n_segments)
        while 0 < r < n and codes[order[r]] == codes[order[r - 1]]:
            r += 1
        bounds[s] = r
    bounds[n_segments] = n
    return order, bounds


@njit(cache=True, nogil=True)
def many_sums_and_cross(X, Y, codes, order, first, stop, shift_x, shift_y, counts, sums_x, sums_y):
    """One segment of whole groups, rows ``order[first:stop]``: their groups' counts and
    sums of ``X - shift_x`` and ``Y - shift_y`` (written into ``counts``, ``sums_x``,
    ``sums_y``: segments touch different groups), and the segment's ``X'X``, ``X'Y``,
    sums of squares of Y's columns (all of the shifted values) and raw ranges.

    Parameters
    ----------
    X : float64[:, :] (n, p)
    Y : float64[:, :] (n, k)
    codes : int64[:] (n,), group codes
    order : int64[:] (n,), the rows in group order (:func:`group_segments`)
    first, stop : int, the segment's bounds in ``order``
    shift_x : float64[:] (p,)
    shift_y : float64[:] (k,)
    counts : int64[:] (G,), sums_x : float64[:, :] (G, p), sums_y : float64[:, :] (G, k)
        zero on entry for this segment's groups

    Returns
    -------
    cross_xx (p, p), cross_xy (p, k), squares_y (k,), lo_x, hi_x (p,), lo_y, hi_y (k,)
    """
    p = X.shape[1]
    k = Y.shape[1]
    cross_xx = np.zeros((p, p), dtype=np.float64)
    cross_xy = np.zeros((p, k), dtype=np.float64)
    squares_y = np.zeros(k, dtype=np.float64)
    lo_x = np.full(p, np.inf)
    hi_x = np.full(p, -np.inf)
    lo_y = np.full(k, np.inf)
    hi_y = np.full(k, -np.inf)
    # Rows in group order (stable: each group's rows in their own order, so each group
    # sum adds the same numbers in the same order as a pass in row order): a group's
    # k sums stay in cache while its rows are read.
    x = np.empty((ROWS_TOGETHER, p), dtype=np.float64)
    y = np.empty((ROWS_TOGETHER, k), dtype=np.float64)
    r = first
    while r < stop:
        g = codes[order[r]]
        m = 1
        while m < ROWS_TOGETHER and r + m < stop and codes[order[r + m]] == g:
            m += 1
        for t in range(m):
            row = order[r + t]
            counts[g] += 1
            for j in range(p):
                v = X[row, j]
                lo_x[j] = min(lo_x[j], v)
                hi_x[j] = max(hi_x[j], v)
                v -= shift_x[j]
                x[t, j] = v
                sums_x[g, j] += v
            for a in range(p):
                for b in range(p):
                    cross_xx[a, b] += x[t, a] * x[t, b]
        group_sums = sums_y[g]
        if m == ROWS_TOGETHER:
            # Four rows at once, each sum still adding them one after the other (the
            # same numbers in the same order as row by row: the same rounding).
            y0, y1, y2, y3 = Y[order[r]], Y[order[r + 1]], Y[order[r + 2]], Y[order[r + 3]]
            s0, s1, s2, s3 = y[0], y[1], y[2], y[3]
            for j in range(k):
                a0, a1, a2, a3 = y0[j], y1[j], y2[j], y3[j]
                lo_y[j] = min(min(min(min(lo_y[j], a0), a1), a2), a3)
                hi_y[j] = max(max(max(max(hi_y[j], a0), a1), a2), a3)
                shift = shift_y[j]
                a0 -= shift
                a1 -= shift
                a2 -= shift
                a3 -= shift
                s0[j], s1[j], s2[j], s3[j] = a0, a1, a2, a3
                group_sums[j] = (((group_sums[j] + a0) + a1) + a2) + a3
                squares_y[j] = (((squares_y[j] + a0 * a0) + a1 * a1) + a2 * a2) + a3 * a3
            for c in range(p):
                x0, x1, x2, x3 = x[0, c], x[1, c], x[2, c], x[3, c]
                cross = cross_xy[c]
                for j in range(k):
                    cross[j] = (((cross[j] + x0 * s0[j]) + x1 * s1[j]) + x2 * s2[j]) + x3 * s3[j]
        else:
            for t in range(m):
                values = Y[order[r + t]]
                for j in range(k):
                    v = values[j]
                    lo_y[j] = min(lo_y[j], v)
                    hi_y[j] = max(hi_y[j], v)
                    v -= shift_y[j]
                    group_sums[j] += v
                    squares_y[j] += v * v
                    for c in range(p):
                        cross_xy[c, j] += x[t, c] * v
        r += m
    return cross_xx, cross_xy, squares_y, lo_x, hi_x, lo_y, hi_y


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
