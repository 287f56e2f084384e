"""Compiled kernels: one pass over the rows, per-group sums and global cross-products.

The kernels take plain arrays and return arrays. They never raise, print or allocate
per row: the Python layer (:mod:`reml_engine.core.statistics`, :mod:`reml_engine.frontend.groups`) checks
the inputs before the call and interprets the outputs after it.

The design matrix and the response are processed together as the augmented matrix
``Z = [X | y]`` with ``q = p + 1`` columns, shifted by a vector ``shift`` so that the
cross-products do not cancel catastrophically when a column has a large offset
(x shifted by 1e6, y measured around 1e12). Rows are handled in blocks: each block
is copied, shifted, into a small buffer that stays in cache, the group sums are
accumulated from it, and its cross-product goes to BLAS. The data are read once.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Rows per block in the cross-product kernels: small enough for the block buffer
#: (BLOCK_ROWS x q doubles) to stay in L2 cache, large enough for BLAS to be efficient.
BLOCK_ROWS = 2048


@njit(cache=True, nogil=True)
def _scatter_and_cross(codes, block_start, block, counts, sums, cross):
    """Add a block of rows to the group counts and sums and to the cross-product (the
    transformed pass; the ordinary one does it inline, which compiles faster)."""
    m, r = block.shape
    for i in range(m):
        g = codes[block_start + i]
        counts[g] += 1
        for j in range(r):
            sums[g, j] += block[i, j]
    cross += np.dot(block.T, block)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(a, b):
    """``a . b``, the order of the additions left to the compiler (so that it vectorizes
    the sum: a different rounding of the same sum, as BLAS's own blocking is)."""
    total = 0.0
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@njit(cache=True, nogil=True)
def _shifted_column(values, shift_j, start, m, out, lo, hi, j):
    """``values[start:start + m] - shift_j`` into ``out``, widening ``lo[j]``/``hi[j]`` to
    the raw values' range (a NaN fails both comparisons: the ranges do not see it).

    The range is kept in four lanes (rows ``i`` mod 4), which the compiler turns into
    vector minima and maxima (a single running minimum waits on the previous row). The
    result is the row-by-row scan's: equal doubles have the same bits except 0.0 and
    -0.0, where the scan keeps the first it meets; a block whose range ends at zero is
    scanned again row by row (:func:`_column_range_in_order`) so that it keeps that one.
    """
    low0 = low1 = low2 = low3 = np.inf
    high0 = high1 = high2 = high3 = -np.inf
    whole = m - m % 4
    for i in range(0, whole, 4):
        a = values[start + i]
        b = values[start + i + 1]
        c = values[start + i + 2]
        d = values[start + i + 3]
        low0 = a if a < low0 else low0
        low1 = b if b < low1 else low1
        low2 = c if c < low2 else low2
        low3 = d if d < low3 else low3
        high0 = a if a > high0 else high0
        high1 = b if b > high1 else high1
        high2 = c if c > high2 else high2
        high3 = d if d > high3 else high3
        out[i] = a - shift_j
        out[i + 1] = b - shift_j
        out[i + 2] = c - shift_j
        out[i + 3] = d - shift_j
    for i in range(whole, m):
        a = values[start + i]
        low0 = a if a < low0 else low0
        high0 = a if a > high0 else high0
        out[i] = a - shift_j
    low = min(min(low0, low1), min(low2, low3))
    high = max(max(high0, high1), max(high2, high3))
    if low == 0.0 or high == 0.0:
        _column_range_in_order(values, start, m, lo, hi, j)
        return
    if low < lo[j]:
        lo[j] = low
    if high > hi[j]:
        hi[j] = high


@njit(cache=True, nogil=True)
def _column_range_in_order(values, start, m, lo, hi, j):
    """Widen ``lo[j]``/``hi[j]`` to ``values[start:start + m]`` row by row (of two equal
    values, the first met is kept)."""
    low, high = lo[j], hi[j]
    for i in range(m):
        v = values[start + i]
        if v < low:
            low = v
        if v > high:
            high = v
    lo[j], hi[j] = low, high


@njit(cache=True, nogil=True)
def _accumulate_rows(X, y, codes, shift, start, stop, counts, sums, cross, lo, hi, buf):
    """Add rows ``start .. stop - 1`` to ``counts``, ``sums`` and ``cross``, and widen the
    column ranges ``lo``/``hi`` of the raw values (all in place).

    Each block is first copied, shifted, column by column into ``buf`` (q, BLOCK_ROWS)
    (streaming loops that also track the ranges, so the data checks need no pass of
    their own), then scattered into the group sums; keeping the two apart lets the copy
    run without waiting on the scattered updates. The block's cross-product is the
    dot products of its columns, contiguous in ``buf``: for the few columns of a
    random-intercept design this is faster than a BLAS call per block. A NaN escapes
    the ranges but not the sums: the caller checks both.
    """
    p = X.shape[1]
    q = p + 1
    for block_start in range(start, stop, BLOCK_ROWS):
        m = min(block_start + BLOCK_ROWS, stop) - block_start
        for j in range(p):
            _shifted_column(X[:, j], shift[j], block_start, m, buf[j], lo, hi, j)
        _shifted_column(y, shift[p], block_start, m, buf[p], lo, hi, p)
        for i in range(m):
            g = codes[block_start + i]
            counts[g] += 1
            for j in range(q):
                sums[g, j] += buf[j, i]
        _add_block_cross(buf, m, cross)


@njit(cache=True, nogil=True)
def _add_block_cross(buf, m, cross):
    """Add the cross-product of the block's ``m`` rows (the columns of ``buf``) to
    ``cross``, by column dot products (no BLAS call per block), the lower triangle
    mirrored."""
    q = cross.shape[0]
    for a in range(q):
        for b in range(a + 1):
            value = _dot(buf[a, :m], buf[b, :m])
            cross[a, b] += value
            if b != a:
                cross[b, a] += value


#: Columns per tile in :func:`wide_block_into`: eight doubles, one cache line of a row.
WIDE_TILE_COLUMNS = 8


@njit(cache=True, nogil=True)
def wide_block_into(X, y, codes, shift, start, m, buf, counts, sums, lo, hi):
    """The row-side work of one block of a wide design's pass: rows ``start .. start + m
    - 1`` of ``[X | y] - shift`` into the columns of ``buf`` (q, at least m), the rest of
    ``buf`` zeroed (so that its whole cross-product is the block's), the rows added to
    ``counts`` and ``sums`` and the ranges ``lo``/``hi`` widened, in place. The caller
    adds ``buf buf'`` to the cross-product by BLAS.

    The counts, sums and ranges are those of :func:`_accumulate_rows` to the last bit
    (each sum takes its rows in row order, each range meets its values in row order).
    The copy reads ``X`` in tiles of ``WIDE_TILE_COLUMNS`` columns, row after row: a
    C-ordered row of a wide design spans many cache lines, and a column at a time would
    reload each of them once per column.
    """
    p = X.shape[1]
    for j0 in range(0, p, WIDE_TILE_COLUMNS):
        j1 = min(j0 + WIDE_TILE_COLUMNS, p)
        for i in range(m):
            row = start + i
            for j in range(j0, j1):
                v = X[row, j]
                if v < lo[j]:
                    lo[j] = v
                if v > hi[j]:
                    hi[j] = v
                buf[j, i] = v - shift[j]
    _column_range_in_order(y, start, m, lo, hi, p)
    for i in range(m):
        buf[p, i] = y[start + i] - shift[p]
        counts[codes[start + i]] += 1
    for j in range(p + 1):
        for i in range(m):
            sums[codes[start + i], j] += buf[j, i]
    buf[:, m:] = 0.0


@njit(cache=True, nogil=True)
def _shifted_block(X, y, shift, block_start, m, buf):
    """Rows ``block_start .. block_start + m - 1`` of ``[X | y] - shift``, into ``buf``."""
    p = X.shape[1]
    for i in range(m):
        row = block_start + i
        for j in range(p):
            buf[i, j] = X[row, j] - shift[j]
        buf[i, p] = y[row] - shift[p]


@njit(cache=True, nogil=True)
def _accumulate_rows_transformed(X, y, codes, shift, transform, start, stop, counts, sums, cross, lo, hi,
                                 buf, out):
    """:func:`_accumulate_rows` for the columns ``([X | y] - shift) transform``: each
    shifted block is multiplied by ``transform`` (``q x r``) into ``out`` first, and the
    ranges are those of the new columns. A separate kernel, so that the ordinary pass
    neither carries nor compiles the product."""
    r = out.shape[1]
    for block_start in range(start, stop, BLOCK_ROWS):
        block_stop = min(block_start + BLOCK_ROWS, stop)
        m = block_stop - block_start
        _shifted_block(X, y, shift, block_start, m, buf)
        block = out[:m]
        np.dot(buf[:m], transform, block)
        for i in range(m):
            for j in range(r):
                v = block[i, j]
                if v < lo[j]:
                    lo[j] = v
                if v > hi[j]:
                    hi[j] = v
        _scatter_and_cross(codes, block_start, block, counts, sums, cross)


@njit(cache=True, nogil=True)
def group_sums_and_cross(X, y, codes, n_groups, shift):
    """Per-group counts and sums of ``[X | y] - shift``, and their global cross-product.

    Parameters
    ----------
    X : float64[:, :] (n, p), any memory layout
    y : float64[:] (n,)
    codes : int64[:] (n,), group codes in ``0 .. n_groups - 1``
    n_groups : int
    shift : float64[:] (p + 1,)

    Returns
    -------
    counts : int64[:] (n_groups,)
    sums : float64[:, :] (n_groups, p + 1)
    cross : float64[:, :] (p + 1, p + 1), sum over rows of z z' with z = [x, y] - shift
    lo, hi : float64[:] (p + 1,), smallest and largest raw value of each column of
        ``[X | y]`` (NaN values are not seen: they show as NaN in ``sums``/``cross``)
    """
    n, p = X.shape
    q = p + 1
    counts = np.zeros(n_groups, dtype=np.int64)
    sums = np.zeros((n_groups, q), dtype=np.float64)
    cross = np.zeros((q, q), dtype=np.float64)
    lo = np.full(q, np.inf)
    hi = np.full(q, -np.inf)
    buf = np.empty((q, BLOCK_ROWS), dtype=np.float64)
    _accumulate_rows(X, y, codes, shift, 0, n, counts, sums, cross, lo, hi, buf)
    return counts, sums, cross, lo, hi


@njit(cache=True, nogil=True)
def _block_codes(ids, id_low, block_start, m, out):
    """``ids[block_start:block_start + m] - id_low`` into ``out``; their smallest and
    largest value."""
    low = high = ids[block_start] - id_low
    for i in range(m):
        code = ids[block_start + i] - id_low
        if code < low:
            low = code
        if code > high:
            high = code
        out[i] = code
    return low, high


@njit(cache=True, nogil=True)
def group_sums_and_cross_of_columns(columns, ids, id_low, n_groups, shift, intercept):
    """:func:`group_sums_and_cross` of ``X`` = the columns with a column of ones (shift 0)
    at position ``intercept``, reading the columns where they are and coding the groups
    on the way: the same arithmetic, the same results to the last bit, with less memory
    traffic. The ones are not stored, read or copied (one block of them serves every
    block), and the counts are read off their group sums (each a sum of ones, exact below
    2**53 rows) instead of a second scattered update per row.

    ``columns``: the columns of ``[X | y]`` but the intercept's (a tuple of float64
    arrays of ``n`` rows, ``y`` last; Arrow's buffers as they are, no design matrix is
    built). ``ids``: int64, the group code of row ``i`` is ``ids[i] - id_low`` (ids on a
    shared table, or codes with ``id_low`` 0), coded block by block instead of by a pass
    and an array of their own.

    Returns the five outputs of :func:`group_sums_and_cross` on ``X`` and ``code_range``,
    int64 (2,): the smallest and largest code. A code outside ``0 .. n_groups - 1``
    stops the pass before its block is added (the statistics are then partial):
    ``code_range`` shows it, and the caller refuses the data.
    """
    n = ids.shape[0]
    q = len(columns) + 1
    sums = np.zeros((n_groups, q), dtype=np.float64)
    cross = np.zeros((q, q), dtype=np.float64)
    lo = np.full(q, np.inf)
    hi = np.full(q, -np.inf)
    code_range = np.zeros(2, dtype=np.int64)
    buf = np.empty((q, BLOCK_ROWS), dtype=np.float64)
    codes = np.empty(BLOCK_ROWS, dtype=np.int64)
    buf[intercept, :] = 1.0
    if n > 0:
        lo[intercept] = 1.0
        hi[intercept] = 1.0
    for block_start in range(0, n, BLOCK_ROWS):
        m = min(block_start + BLOCK_ROWS, n) - block_start
        low, high = _block_codes(ids, id_low, block_start, m, codes)
        if block_start == 0 or low < code_range[0]:
            code_range[0] = low
        if block_start == 0 or high > code_range[1]:
            code_range[1] = high
        if low < 0 or high >= n_groups:
            break
        for j in range(q):
            if j != intercept:
                _shifted_column(columns[j if j < intercept else j - 1], shift[j], block_start, m, buf[j], lo, hi, j)
        for i in range(m):
            g = codes[i]
            for j in range(q):
                sums[g, j] += buf[j, i]
        _add_block_cross(buf, m, cross)
    counts = sums[:, intercept].astype(np.int64)
    return counts, sums, cross, lo, hi, code_range


@njit(cache=True, nogil=True)
def group_sums_and_cross_transformed(X, y, codes, n_groups, shift, transform):
    """:func:`group_sums_and_cross` of the ``r`` columns ``([X | y] - shift) transform``
    (``transform`` float64 (p + 1, r), C order; a reparametrization, see
    :func:`reml_engine.core.statistics.compute_group_stats`). The ranges are those of the new
    columns."""
    n, p = X.shape
    q = p + 1
    r = transform.shape[1]
    counts = np.zeros(n_groups, dtype=np.int64)
    sums = np.zeros((n_groups, r), dtype=np.float64)
    cross = np.zeros((r, r), dtype=np.float64)
    lo = np.full(r, np.inf)
    hi = np.full(r, -np.inf)
    buf = np.empty((BLOCK_ROWS, q), dtype=np.float64)
    out = np.empty((BLOCK_ROWS, r), dtype=np.float64)
    _accumulate_rows_transformed(X, y, codes, shift, transform, 0, n, counts, sums, cross, lo, hi, buf, out)
    return counts, sums, cross, lo, hi


@njit(cache=True, parallel=True)
def group_sums_and_cross_parallel(X, y, codes, n_groups, shift, transform, n_chunks):
    """:func:`group_sums_and_cross` (or, with a non-empty ``transform``,
    :func:`group_sums_and_cross_transformed`) with the rows split into ``n_chunks``
    contiguous chunks, one per thread, each with its own sums; the chunks' sums are added
    at the end (the statistics are additive over rows). Costs ``n_chunks`` copies of the
    ``(n_groups, r)`` sums. ``transform`` is (0, 0) for none.
    """
    n, p = X.shape
    q = p + 1
    transformed = transform.shape[0] > 0
    r = transform.shape[1] if transformed else q
    counts = np.zeros((n_chunks, n_groups), dtype=np.int64)
    sums = np.zeros((n_chunks, n_groups, r), dtype=np.float64)
    cross = np.zeros((n_chunks, r, r), dtype=np.float64)
    lo = np.full((n_chunks, r), np.inf)
    hi = np.full((n_chunks, r), -np.inf)
    step = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        start = c * step
        stop = min(n, start + step)
        if transformed:
            buf = np.empty((BLOCK_ROWS, q), dtype=np.float64)
            out = np.empty((BLOCK_ROWS, r), dtype=np.float64)
            _accumulate_rows_transformed(X, y, codes, shift, transform, start, stop, counts[c], sums[c], cross[c],
                                         lo[c], hi[c], buf, out)
        else:
            block = np.empty((q, BLOCK_ROWS), dtype=np.float64)
            _accumulate_rows(X, y, codes, shift, start, stop, counts[c], sums[c], cross[c], lo[c], hi[c], block)
    total_counts = counts[0].copy()
    total_sums = sums[0].copy()
    total_cross = cross[0].copy()
    total_lo = lo[0].copy()
    total_hi = hi[0].copy()
    for c in range(1, n_chunks):
        total_counts += counts[c]
        total_sums += sums[c]
        total_cross += cross[c]
        total_lo = np.minimum(total_lo, lo[c])
        total_hi = np.maximum(total_hi, hi[c])
    return total_counts, total_sums, total_cross, total_lo, total_hi


@njit(cache=True, nogil=True)
def _add_within_block(codes, start, block, means, cross):
    m, r = block.shape
    for i in range(m):
        g = codes[start + i]
        for j in range(r):
            block[i, j] -= means[g, j]
    cross += np.dot(block.T, block)


@njit(cache=True, nogil=True)
def within_cross(X, y, codes, means, shift):
    """Exact within-group cross-product: sum of (z - mean_g)(z - mean_g)'.

    ``z`` is a row of ``[X | y] - shift`` and ``means`` (G, p + 1) are the group means of
    the same columns. A second pass used only when the one-pass formula
    ``cross - sum_g s_g s_g' / n_g`` would lose too many digits (a column nearly constant
    within groups).
    """
    n, p = X.shape
    q = p + 1
    cross = np.zeros((q, q), dtype=np.float64)
    buf = np.empty((BLOCK_ROWS, q), dtype=np.float64)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        m = stop - start
        _shifted_block(X, y, shift, start, m, buf)
        _add_within_block(codes, start, buf[:m], means, cross)
    return cross


@njit(cache=True, nogil=True)
def within_cross_transformed(X, y, codes, means, shift, transform):
    """:func:`within_cross` of the columns ``([X | y] - shift) transform`` (``means``
    (G, r) their group means)."""
    n, p = X.shape
    q = p + 1
    r = transform.shape[1]
    cross = np.zeros((r, r), dtype=np.float64)
    buf = np.empty((BLOCK_ROWS, q), dtype=np.float64)
    out = np.empty((BLOCK_ROWS, r), dtype=np.float64)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        m = stop - start
        _shifted_block(X, y, shift, start, m, buf)
        block = out[:m]
        np.dot(buf[:m], transform, block)
        _add_within_block(codes, start, block, means, cross)
    return cross


@njit(cache=True)
def pool_by_size(counts, sums, size_index, n_sizes):
    """Pool groups of equal size: ``B_u = sum over groups of size n_u of s_g s_g' / n_u``.

    ``size_index[g]`` is the index u of group g's size. Returns float64 (n_sizes, q, q).
    """
    n_groups, q = sums.shape
    pooled = np.zeros((n_sizes, q, q), dtype=np.float64)
    for g in range(n_groups):
        u = size_index[g]
        inv_n = 1.0 / counts[g]
        for a in range(q):
            sa = sums[g, a] * inv_n
            for b in range(q):
                pooled[u, a, b] += sa * sums[g, b]
    return pooled


@njit(cache=True)
def dense_integer_codes(labels, offset, span):
    """Codes for integer labels in a small range, in sorted label order.

    ``labels - offset`` must lie in ``0 .. span - 1``. Returns the codes (int64, one per
    row) and, per code, the position in ``0 .. span - 1`` of its label.
    """
    present = np.zeros(span, dtype=np.int64)
    for i in range(labels.shape[0]):
        present[labels[i] - offset] = 1
    code_of = np.empty(span, dtype=np.int64)
    n_levels = 0
    for k in range(span):
        if present[k]:
            code_of[k] = n_levels
            n_levels += 1
    level_pos = np.empty(n_levels, dtype=np.int64)
    for k in range(span):
        if present[k]:
            level_pos[code_of[k]] = k
    codes = np.empty(labels.shape[0], dtype=np.int64)
    for i in range(labels.shape[0]):
        codes[i] = code_of[labels[i] - offset]
    return codes, level_pos


@njit(cache=True, nogil=True)
def integer_range(values):
    """Smallest and largest of int64 ``values`` (at least one), in one pass (numpy's
    ``min`` and ``max`` take one each)."""
    low = high = values[0]
    for i in range(1, values.shape[0]):
        low = min(low, values[i])
        high = max(high, values[i])
    return low, high


@njit(cache=True)
def column_ranges(X):
    """Per column of ``X`` (n, p): smallest and largest finite value, and the number of
    values that are not finite (inf or NaN). One pass over the rows, for the data checks.

    A column without finite values has ``lo = inf`` and ``hi = -inf``.
    """
    n, p = X.shape
    lo = np.full(p, np.inf)
    hi = np.full(p, -np.inf)
    nonfinite = np.zeros(p, dtype=np.int64)
    for i in range(n):
        for j in range(p):
            v = X[i, j]
            if not np.isfinite(v):
                nonfinite[j] += 1
            else:
                if v < lo[j]:
                    lo[j] = v
                if v > hi[j]:
                    hi[j] = v
    return lo, hi, nonfinite


@njit(cache=True)
def lower_inverse_batched(L):
    """Inverses of a stack of lower-triangular matrices ``L`` (K, p, p), by forward
    substitution (``p^3 / 6`` operations each, against ``2 p^3 / 3`` for a general
    solve). A zero or NaN on a diagonal gives inf or NaN, which the caller flags.
    """
    K, p, _ = L.shape
    inverse = np.zeros((K, p, p), dtype=np.float64)
    for k in range(K):
        for j in range(p):
            inverse[k, j, j] = 1.0 / L[k, j, j]
            for i in range(j + 1, p):
                total = 0.0
                for m in range(j, i):
                    total += L[k, i, m] * inverse[k, m, j]
                inverse[k, i, j] = -total / L[k, i, i]
    return inverse
