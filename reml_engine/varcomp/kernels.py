"""Compiled kernels for several random-intercept terms.

Plain arrays in and out, no exceptions, no Python objects: the Python layer
(:mod:`.statistics`, :mod:`.nested`, :mod:`.crossed`) checks the inputs before a call and
reads the outputs after it. Every kernel releases the GIL (``nogil``) so that the
statistics of several tables, or of several chunks of rows, are computed on threads.

Levels of all terms share one numbering: term j's levels are
``level_offsets[j] .. level_offsets[j + 1] - 1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Rows per block in the one-pass kernel: the block buffer (BLOCK_ROWS x q doubles) stays
#: in cache and its cross-product goes to BLAS.
BLOCK_ROWS = 2048

#: Golden-ratio multiplier of the multiplicative hash of the contingency tables.
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


# ---------------------------------------------------------------------------------------
# Statistics: one pass over the rows
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _accumulate_term_rows(X, y, weights, offset, codes, level_offsets, shift, start, stop,
                          counts, level_weights, sums, cross, lo, hi, totals, buf, root_w):
    """Add rows ``start .. stop - 1`` to the per-level and global accumulators (in place).

    ``buf`` holds ``sqrt(w) (z - shift)`` for one block of rows, whose cross-product
    goes to BLAS; the level sums take ``w (z - shift) = sqrt(w) * buf``. ``totals`` is
    ``[sum w, sum log w]``. ``weights`` or ``offset`` of length 0 mean unit weights or no
    offset. Ranges ``lo``/``hi`` are those of the raw columns and of ``y - offset``; a
    NaN escapes them but not the sums, which the caller checks.
    """
    p = X.shape[1]
    k = codes.shape[0]
    weighted = weights.shape[0] > 0
    has_offset = offset.shape[0] > 0
    for block_start in range(start, stop, BLOCK_ROWS):
        block_stop = min(block_start + BLOCK_ROWS, stop)
        m = block_stop - block_start
        for i in range(m):
            row = block_start + i
            if weighted:
                w = weights[row]
                root_w[i] = np.sqrt(w)
                totals[0] += w
                totals[1] += np.log(w)
            else:
                root_w[i] = 1.0
                totals[0] += 1.0
            r = root_w[i]
            for j in range(p):
                v = X[row, j]
                if v < lo[j]:
                    lo[j] = v
                if v > hi[j]:
                    hi[j] = v
                buf[i, j] = r * (v - shift[j])
            v = y[row]
            if has_offset:
                v -= offset[row]
            if v < lo[p]:
                lo[p] = v
            if v > hi[p]:
                hi[p] = v
            buf[i, p] = r * (v - shift[p])
        for t in range(k):
            base = level_offsets[t]
            for i in range(m):
                g = base + codes[t, block_start + i]
                r = root_w[i]
                counts[g] += 1
                level_weights[g] += r * r
                for j in range(p + 1):
                    sums[g, j] += r * buf[i, j]
        block = buf[:m]
        cross += np.dot(block.T, block)


@njit(cache=True, nogil=True)
def term_sums_and_cross(X, y, weights, offset, codes, level_offsets, shift):
    """Per-level counts, weights and weighted sums of ``[X | y - offset] - shift`` for
    every term, and the global weighted cross-product, in one pass over the rows.

    Parameters
    ----------
    X : float64 (n, p), any layout
    y : float64 (n,)
    weights : float64 (n,) or (0,) for unit weights; positive
    offset : float64 (n,) or (0,) for none
    codes : int64 (k, n), level codes per term
    level_offsets : int64 (k + 1,)
    shift : float64 (p + 1,)

    Returns
    -------
    counts : int64 (M,), rows per level (M = level_offsets[k])
    level_weights : float64 (M,), sum of w per level
    sums : float64 (M, p + 1), sum of w (z - shift) per level
    cross : float64 (p + 1, p + 1), sum of w (z - shift)(z - shift)'
    totals : float64 (2,), sum w and sum log w
    lo, hi : float64 (p + 1,), smallest and largest raw value per column
    """
    n, p = X.shape
    q = p + 1
    n_levels = level_offsets[-1]
    counts = np.zeros(n_levels, dtype=np.int64)
    level_weights = np.zeros(n_levels, dtype=np.float64)
    sums = np.zeros((n_levels, q), dtype=np.float64)
    cross = np.zeros((q, q), dtype=np.float64)
    lo = np.full(q, np.inf)
    hi = np.full(q, -np.inf)
    totals = np.zeros(2, dtype=np.float64)
    buf = np.empty((BLOCK_ROWS, q), dtype=np.float64)
    root_w = np.empty(BLOCK_ROWS, dtype=np.float64)
    _accumulate_term_rows(X, y, weights, offset, codes, level_offsets, shift, 0, n,
                          counts, level_weights, sums, cross, lo, hi, totals, buf, root_w)
    return counts, level_weights, sums, cross, totals, lo, hi


@njit(cache=True, parallel=True)
def term_sums_and_cross_parallel(X, y, weights, offset, codes, level_offsets, shift, n_chunks):
    """:func:`term_sums_and_cross` on ``n_chunks`` contiguous chunks of rows, one per
    thread, each with its own accumulators (``n_chunks`` copies of the level sums),
    added at the end."""
    n, p = X.shape
    q = p + 1
    n_levels = level_offsets[-1]
    counts = np.zeros((n_chunks, n_levels), dtype=np.int64)
    level_weights = np.zeros((n_chunks, n_levels), dtype=np.float64)
    sums = np.zeros((n_chunks, n_levels, q), dtype=np.float64)
    cross = np.zeros((n_chunks, q, q), dtype=np.float64)
    lo = np.full((n_chunks, q), np.inf)
    hi = np.full((n_chunks, q), -np.inf)
    totals = np.zeros((n_chunks, 2), dtype=np.float64)
    step = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        buf = np.empty((BLOCK_ROWS, q), dtype=np.float64)
        root_w = np.empty(BLOCK_ROWS, dtype=np.float64)
        start = c * step
        stop = min(n, start + step)
        _accumulate_term_rows(X, y, weights, offset, codes, level_offsets, shift, start, stop,
                              counts[c], level_weights[c], sums[c], cross[c], lo[c], hi[c], totals[c],
                              buf, root_w)
    total_counts = counts[0].copy()
    total_weights = level_weights[0].copy()
    total_sums = sums[0].copy()
    total_cross = cross[0].copy()
    total_totals = totals[0].copy()
    total_lo = lo[0].copy()
    total_hi = hi[0].copy()
    for c in range(1, n_chunks):
        total_counts += counts[c]
        total_weights += level_weights[c]
        total_sums += sums[c]
        total_cross += cross[c]
        total_totals += totals[c]
        total_lo = np.minimum(total_lo, lo[c])
        total_hi = np.maximum(total_hi, hi[c])
    return total_counts, total_weights, total_sums, total_cross, total_totals, total_lo, total_hi


@njit(cache=True, nogil=True)
def pair_table_dense(codes_a, codes_b, weights, m_a, m_b):
    """Weighted contingency table of two factors through a dense ``m_a x m_b`` array
    (for small products of level counts). Returns the occupied cells in (row, col)
    order: rows, cols (int64) and weight sums (float64). A cell is occupied when a row
    falls in it (weights are positive)."""
    n = codes_a.shape[0]
    weighted = weights.shape[0] > 0
    table = np.zeros(m_a * m_b, dtype=np.float64)
    for i in range(n):
        table[codes_a[i] * m_b + codes_b[i]] += weights[i] if weighted else 1.0
    nnz = 0
    for cell in range(m_a * m_b):
        if table[cell] > 0.0:
            nnz += 1
    rows = np.empty(nnz, dtype=np.int64)
    cols = np.empty(nnz, dtype=np.int64)
    cell_w = np.empty(nnz, dtype=np.float64)
    pos = 0
    for cell in range(m_a * m_b):
        if table[cell] > 0.0:
            rows[pos] = cell // m_b
            cols[pos] = cell % m_b
            cell_w[pos] = table[cell]
            pos += 1
    return rows, cols, cell_w


@njit(cache=True, nogil=True)
def _hash_slot(major, minor, bits, mask):
    """Slot of cell (major, minor): a hash of the major level plus the minor one, so that
    the cells of one major level sit together (rows sorted by that factor, as data often
    are, then hit the same cache lines) while the major levels spread evenly."""
    return (np.int64((np.uint64(major) * _HASH_MULTIPLIER) >> np.uint64(64 - bits)) + minor) & mask


@njit(cache=True, nogil=True)
def pair_table_hashed(codes_major, codes_minor, weights, m_major, m_minor, initial_bits, swapped):
    """Weighted contingency table of two factors through an open-addressing hash table
    over the occupied cells (memory proportional to the cells, not to the product of
    the level counts nor to the rows). Same outputs as :func:`pair_table_dense` for the
    factors (a, b) = (major, minor), or (minor, major) when ``swapped``: cells in (a, b)
    order."""
    n = codes_major.shape[0]
    weighted = weights.shape[0] > 0
    bits = initial_bits
    capacity = 1 << bits
    mask = capacity - 1
    keys = np.full(capacity, -1, dtype=np.int64)
    table = np.zeros(capacity, dtype=np.float64)
    used = 0
    for i in range(n):
        major = codes_major[i]
        minor = codes_minor[i]
        key = major * m_minor + minor
        slot = _hash_slot(major, minor, bits, mask)
        while keys[slot] != key and keys[slot] != -1:
            slot = (slot + 1) & mask
        if keys[slot] == -1:
            keys[slot] = key
            used += 1
        table[slot] += weights[i] if weighted else 1.0
        if 4 * used > 3 * capacity:
            # Grow at three quarters full: rehash every cell into a table twice as large.
            new_bits = bits + 1
            new_capacity = 1 << new_bits
            new_mask = new_capacity - 1
            new_keys = np.full(new_capacity, -1, dtype=np.int64)
            new_table = np.zeros(new_capacity, dtype=np.float64)
            for s in range(capacity):
                if keys[s] != -1:
                    a = keys[s] // m_minor
                    t = _hash_slot(a, keys[s] - a * m_minor, new_bits, new_mask)
                    while new_keys[t] != -1:
                        t = (t + 1) & new_mask
                    new_keys[t] = keys[s]
                    new_table[t] = table[s]
            keys, table = new_keys, new_table
            bits, capacity, mask = new_bits, new_capacity, new_mask
    # Cells in (a, b) order: one counting pass by a straight from the table (the cells of
    # one major level sit together, so the writes are nearly sequential), then each row
    # of the output sorted by b (already in order, unless displaced by a collision,
    # when a is the major factor).
    m_a = m_minor if swapped else m_major
    a_start = np.zeros(m_a + 1, dtype=np.int64)
    for s in range(capacity):
        key = keys[s]
        if key != -1:
            a = key - (key // m_minor) * m_minor if swapped else key // m_minor
            a_start[a + 1] += 1
    for j in range(m_a):
        a_start[j + 1] += a_start[j]
    fill = a_start[:-1].copy()
    rows = np.empty(used, dtype=np.int64)
    cols = np.empty(used, dtype=np.int64)
    cell_w = np.empty(used, dtype=np.float64)
    for s in range(capacity):
        key = keys[s]
        if key != -1:
            hi = key // m_minor
            lo = key - hi * m_minor
            a, b = (lo, hi) if swapped else (hi, lo)
            pos = fill[a]
            fill[a] += 1
            rows[pos] = a
            cols[pos] = b
            cell_w[pos] = table[s]
    for a in range(m_a):
        lo_pos, hi_pos = a_start[a], a_start[a + 1]
        ordered = True
        for r in range(lo_pos + 1, hi_pos):
            if cols[r] < cols[r - 1]:
                ordered = False
                break
        if not ordered:
            # mergesort: with numba's default quicksort argsort, this row order came out
            # wrong once other kernels had run in the process (the weights of the a-c
            # table in tests/varcomp/test_statistics.py after any test of test_sparse.py).
            order = np.argsort(cols[lo_pos:hi_pos], kind="mergesort") + lo_pos
            cols[lo_pos:hi_pos] = cols[order]
            cell_w[lo_pos:hi_pos] = cell_w[order]
    return rows, cols, cell_w


@njit(cache=True, nogil=True)
def is_nondecreasing(codes):
    """Whether the codes never decrease from one row to the next (rows sorted by them)."""
    for i in range(1, codes.shape[0]):
        if codes[i] < codes[i - 1]:
            return False
    return True


@njit(cache=True, nogil=True)
def pair_table_sorted(codes_a, codes_b, weights, m_a, m_b):
    """Weighted contingency table of two factors when the rows are sorted by the first
    (``codes_a`` non-decreasing): the cells of one level of a are summed in a dense row
    of m_b numbers while its run of rows lasts. Same outputs as
    :func:`pair_table_dense` (each cell adds its rows' weights in row order, from 0),
    with memory of one row of the table: a first pass counts the cells."""
    n = codes_a.shape[0]
    weighted = weights.shape[0] > 0
    stamp = np.full(m_b, -1, dtype=np.int64)
    nnz = 0
    for i in range(n):
        a = codes_a[i]
        b = codes_b[i]
        if stamp[b] != a:
            stamp[b] = a
            nnz += 1
    rows = np.empty(nnz, dtype=np.int64)
    cols = np.empty(nnz, dtype=np.int64)
    cell_w = np.empty(nnz, dtype=np.float64)
    row = np.zeros(m_b, dtype=np.float64)
    touched = np.empty(m_b, dtype=np.int64)
    stamp[:] = -1
    pos = 0
    start = 0
    while start < n:
        a = codes_a[start]
        stop = start
        count = 0
        while stop < n and codes_a[stop] == a:
            b = codes_b[stop]
            if stamp[b] != a:
                stamp[b] = a
                touched[count] = b
                count += 1
            row[b] += weights[stop] if weighted else 1.0
            stop += 1
        if 16 * count < m_b:
            ordered = np.sort(touched[:count])
            for t in range(count):
                b = ordered[t]
                rows[pos] = a
                cols[pos] = b
                cell_w[pos] = row[b]
                row[b] = 0.0
                pos += 1
        else:
            for b in range(m_b):
                if stamp[b] == a:
                    rows[pos] = a
                    cols[pos] = b
                    cell_w[pos] = row[b]
                    row[b] = 0.0
                    pos += 1
        start = stop
    return rows, cols, cell_w


@njit(cache=True, nogil=True)
def run_breaks(codes, limit):
    """Number of changes of level between consecutive rows among the first ``limit``."""
    breaks = 0
    for i in range(1, min(limit, codes.shape[0])):
        if codes[i] != codes[i - 1]:
            breaks += 1
    return breaks


# ---------------------------------------------------------------------------------------
# Nested hierarchy: closed form per level
# ---------------------------------------------------------------------------------------
#
# Levels of a chain of nested terms are numbered innermost term first; ``parent[l]`` is
# the level of the next term containing level l (-1 for the outermost term), and
# ``term_of[l]`` the position of l's term in the chain. Children precede parents.


@njit(cache=True, nogil=True)
def nested_upward(inner_weights, inner_sums, parent, term_of, tau):
    """Eliminate the levels innermost first: effective weights and sums per level.

    With ``d_l`` the effective weight of level l (its weight for the innermost term) and
    ``s_l`` its effective sums, eliminating l passes ``omega_l = d_l / (1 + tau d_l)``
    and ``s_l / (1 + tau d_l)`` to its parent. Returns the effective weights ``d``
    (M,), sums ``s`` (M, q), ``omega`` (M,) and ``sum log(1 + tau d)``.
    """
    m_inner, q = inner_sums.shape
    n_levels = parent.shape[0]
    d = np.zeros(n_levels)
    s = np.zeros((n_levels, q))
    omega = np.empty(n_levels)
    d[:m_inner] = inner_weights
    s[:m_inner] = inner_sums
    logdet = 0.0
    for level in range(n_levels):
        t = tau[term_of[level]]
        one_plus = 1.0 + t * d[level]
        logdet += np.log1p(t * d[level])
        omega[level] = d[level] / one_plus
        up = parent[level]
        if up >= 0:
            d[up] += omega[level]
            for c in range(q):
                s[up, c] += s[level, c] / one_plus
    return d, s, omega, logdet


@njit(cache=True, nogil=True)
def nested_between(d, s, omega, parent):
    """Rows ``sqrt(omega_l) (mu_l - mu_parent)`` (``mu_parent = 0`` at the top), with
    ``mu = s / d``: their cross-product is the part of ``[X|y]' H^-1 [X|y]`` beyond the
    within-innermost-level one, as a sum of squares (nothing cancels)."""
    n_levels, q = s.shape
    rows = np.empty((n_levels, q))
    for level in range(n_levels):
        r = np.sqrt(omega[level])
        up = parent[level]
        for c in range(q):
            mu = s[level, c] / d[level]
            if up >= 0:
                mu -= s[up, c] / d[up]
            rows[level, c] = r * mu
    return rows


@njit(cache=True, nogil=True)
def nested_downward(d, s, omega, parent, term_of, tau, k, want_levels):
    """Outermost level first: per term the trace of ``Z_j' H^-1 Z_j`` and
    ``R_j' R_j`` with ``R_j = Z_j' H^-1 [X|y]``; per level (when ``want_levels``) the
    rows of R and ``diag((T^-1 + Z'WZ)^-1)`` (conditional variance / sigma2).

    With ``P_l`` the sum of the posterior covariance of level l and its ancestors and
    ``E_l = 1 - d_l P_l``, both kept in forms without cancellation:
    ``diag(Z'H^-1 Z)_l = d_l E_l``.
    """
    n_levels, q = s.shape
    trace = np.zeros(k)
    rtr = np.zeros((k, q, q))
    P = np.zeros(n_levels)
    E = np.zeros(n_levels)
    u_total = np.zeros((n_levels, q))   # sum of u over the level and its ancestors
    r = np.empty(q)
    if want_levels:
        R = np.empty((n_levels, q))
        cond = np.empty(n_levels)
    else:
        R = np.empty((0, q))
        cond = np.empty(0)
    for level in range(n_levels - 1, -1, -1):
        t = tau[term_of[level]]
        one_plus = 1.0 + t * d[level]
        f = t / one_plus
        up = parent[level]
        if up >= 0:
            P_up = P[up]
            base = E[up] + (d[up] - omega[level]) * P_up
        else:
            P_up = 0.0
            base = 1.0
        E[level] = base / one_plus
        P[level] = f + P_up / (one_plus * one_plus)
        trace[term_of[level]] += d[level] * E[level]
        for c in range(q):
            ancestors = u_total[up, c] if up >= 0 else 0.0
            r[c] = (s[level, c] - d[level] * ancestors) / one_plus
            u_total[level, c] = ancestors + t * r[c]
        j = term_of[level]
        for a in range(q):
            for b in range(q):
                rtr[j, a, b] += r[a] * r[b]
        if want_levels:
            R[level] = r
            cond[level] = f + f * f * d[level] * d[level] * P_up
    return trace, rtr, R, cond


# ---------------------------------------------------------------------------------------
# Crossed terms: one term eliminated, dense blocks for the others
# ---------------------------------------------------------------------------------------
#
# The other terms' ("core") levels are grouped into connected blocks; block b is a dense
# s_b x s_b matrix stored row-major at ``block_base[b]`` of one flat buffer. For core
# level c: ``level_base[c]`` is its block's base, ``level_size[c]`` the block's size and
# ``level_local[c]`` its row in the block. The eliminated term's table with the core
# levels is CSR: ``indptr``, ``indices`` (core levels), ``data`` (weights).


@njit(cache=True, nogil=True)
def table_times(indptr, indices, data, U, coef):
    """``coef[l] * (N U)[l]`` for every row l of the table (U: core levels x q)."""
    n_rows = indptr.shape[0] - 1
    q = U.shape[1]
    out = np.zeros((n_rows, q))
    for lv in range(n_rows):
        for p in range(indptr[lv], indptr[lv + 1]):
            a = indices[p]
            v = data[p]
            for c in range(q):
                out[lv, c] += v * U[a, c]
        for c in range(q):
            out[lv, c] *= coef[lv]
    return out


@njit(cache=True, nogil=True)
def table_transpose_times(indptr, indices, data, V, coef, n_core):
    """``N' diag(coef) V`` (V: rows of the table x q) as core levels x q."""
    q = V.shape[1]
    out = np.zeros((n_core, q))
    for lv in range(indptr.shape[0] - 1):
        c = coef[lv]
        if c == 0.0:
            continue
        for p in range(indptr[lv], indptr[lv + 1]):
            a = indices[p]
            v = c * data[p]
            for j in range(q):
                out[a, j] += v * V[lv, j]
    return out


@njit(cache=True, nogil=True)
def scale_blocks(K, lam, block_base, block_size, block_first):
    """``A = I + diag(lam) K diag(lam)`` per block (lam in block order: the levels of
    block b are ``block_first[b] .. block_first[b] + block_size[b] - 1``)."""
    A = np.empty_like(K)
    for b in range(block_base.shape[0]):
        base = block_base[b]
        s = block_size[b]
        first = block_first[b]
        for i in range(s):
            li = lam[first + i]
            for j in range(s):
                A[base + i * s + j] = li * lam[first + j] * K[base + i * s + j]
            A[base + i * s + i] += 1.0
    return A


@njit(cache=True, nogil=True)
def scale_blocks_in_place(M, lam, block_base, block_size, block_first):
    """``M = diag(lam) M diag(lam)`` per block, in place (layout as :func:`scale_blocks`)."""
    for b in range(block_base.shape[0]):
        base = block_base[b]
        s = block_size[b]
        first = block_first[b]
        for i in range(s):
            li = lam[first + i]
            for j in range(s):
                M[base + i * s + j] *= li * lam[first + j]


@njit(cache=True, nogil=True)
def lower_solve_batched(L, b):
    """``L^-1 b`` for a stack of lower-triangular L (B, s, s) and b (B, s, q)."""
    B, s, q = b.shape
    x = np.empty_like(b)
    for m in range(B):
        for c in range(q):
            for i in range(s):
                total = b[m, i, c]
                for j in range(i):
                    total -= L[m, i, j] * x[m, j, c]
                x[m, i, c] = total / L[m, i, i]
    return x


@njit(cache=True, nogil=True)
def upper_solve_batched(L, b):
    """``L'^-1 b`` for a stack of lower-triangular L (B, s, s) and b (B, s, q)."""
    B, s, q = b.shape
    x = np.empty_like(b)
    for m in range(B):
        for c in range(q):
            for i in range(s - 1, -1, -1):
                total = b[m, i, c]
                for j in range(i + 1, s):
                    total -= L[m, j, i] * x[m, j, c]
                x[m, i, c] = total / L[m, i, i]
    return x


# Row-oriented versions: the table is also held by column (core level a -> the rows of
# the eliminated term that contain a), so that each core level's row of the dense block
# is written (or read) while it sits in cache, and rows are shared out among threads.


@njit(cache=True, parallel=True)
def schur_subtract_by_row(K, col_ptr, col_rows, col_vals, indptr, local_index, data, coef,
                          level_base, level_local, level_size):
    """``K -= sum_l coef[l] n_l n_l'`` over the rows l listed by column in
    ``col_ptr/col_rows/col_vals`` (CSC of the table restricted to those rows);
    ``local_index`` is ``level_local`` of each CSR entry."""
    n_core = col_ptr.shape[0] - 1
    for a in prange(n_core):
        row = level_base[a] + level_local[a] * level_size[a]
        K_row = K[row:row + level_size[a]]
        for p in range(col_ptr[a], col_ptr[a + 1]):
            lv = col_rows[p]
            c = coef[lv] * col_vals[p]
            if c == 0.0:
                continue
            for p2 in range(indptr[lv], indptr[lv + 1]):
                K_row[local_index[p2]] -= c * data[p2]


@njit(cache=True, parallel=True)
def weighted_quadratic_sum(S, col_ptr, col_rows, col_vals, indptr, local_index, data, coef,
                           level_base, level_local, level_size):
    """``sum_l coef[l] n_l' S n_l`` over the rows listed by column (S in the block
    layout, symmetric)."""
    n_core = col_ptr.shape[0] - 1
    total = 0.0
    for a in prange(n_core):
        row = level_base[a] + level_local[a] * level_size[a]
        S_row = S[row:row + level_size[a]]
        part = 0.0
        for p in range(col_ptr[a], col_ptr[a + 1]):
            lv = col_rows[p]
            inner = 0.0
            for p2 in range(indptr[lv], indptr[lv + 1]):
                inner += S_row[local_index[p2]] * data[p2]
            part += coef[lv] * col_vals[p] * inner
        total += part
    return total


@njit(cache=True, nogil=True)
def dense_rows(indptr, local_index, data, rows, size):
    """The table rows ``rows`` as a dense (len(rows), size) array over one block's
    local positions."""
    out = np.zeros((rows.shape[0], size))
    for r in range(rows.shape[0]):
        lv = rows[r]
        for p in range(indptr[lv], indptr[lv + 1]):
            out[r, local_index[p]] = data[p]
    return out


def pooled_outer_sums(indptr, local_index, data, rows, group_ptr, size, tile):
    """Per group g, ``sum over rows l of n_l n_l'`` over one block's local positions,
    its lower triangle packed by rows ((i, j), j <= i, at i (i + 1) / 2 + j): out[g]
    (float64; :func:`pooled_outer_sums_into` writes the same numbers into any array)."""
    out = np.zeros((group_ptr.shape[0] - 1, size * (size + 1) // 2))
    pooled_outer_sums_into(indptr, local_index, data, rows, group_ptr, size, tile, out)
    return out


@njit(cache=True, parallel=True)
def pooled_outer_sums_into(indptr, local_index, data, rows, group_ptr, size, tile, out):
    """:func:`pooled_outer_sums` written into ``out`` (n_groups, size (size + 1) / 2),
    zeros on entry, of any dtype that holds the sums exactly (the caller checks).

    Group g's rows are ``rows[group_ptr[g]:group_ptr[g + 1]]``. Each row's local
    indices must be strictly ascending, so the entries at or before p1 are exactly the
    j <= i (no branch in the inner loop). The packed rows are done a band of about
    ``tile`` numbers at a time, summed in float64 in a buffer that stays in cache (the
    scattered updates) and then stored; each row keeps a cursor to its first entry in
    the band (its indices ascend). Every entry still adds its rows in their order,
    whatever the bands, the threads or the output's dtype: groups run in parallel, each
    writing only its own output row."""
    n_groups = group_ptr.shape[0] - 1
    for g in prange(n_groups):
        packed = out[g]
        # A band holds at most max(tile, one row) numbers, and never more than the
        # whole packed matrix (a tile larger than that is one band).
        band = np.zeros(min(max(tile, size), size * (size + 1) // 2))
        first_row = group_ptr[g]
        n_rows = group_ptr[g + 1] - first_row
        cursor = np.empty(n_rows, dtype=np.int64)
        for r in range(n_rows):
            cursor[r] = indptr[rows[first_row + r]]
        band_start = 0
        while band_start < size:
            band_end = band_start + 1
            while band_end < size and (band_end + 1) * (band_end + 2) // 2 - band_start * (band_start + 1) // 2 <= tile:
                band_end += 1
            offset = band_start * (band_start + 1) // 2
            count = band_end * (band_end + 1) // 2 - offset
            for r in range(n_rows):
                lv = rows[first_row + r]
                first = indptr[lv]
                last = indptr[lv + 1]
                p1 = cursor[r]
                while p1 < last and local_index[p1] < band_end:
                    i = local_index[p1]
                    base = i * (i + 1) // 2 - offset
                    v = data[p1]
                    for p2 in range(first, p1 + 1):
                        band[base + local_index[p2]] += v * data[p2]
                    p1 += 1
                cursor[r] = p1
            for t in range(count):
                packed[offset + t] = band[t]
                band[t] = 0.0
            band_start = band_end


@njit(cache=True, nogil=True)
def pooled_storage_bound(indptr, local_index, data, rows, group_ptr, size):
    """(whether every table weight of the groups' rows is a non-negative integer, the
    largest diagonal entry of their sums ``sum n_l n_l'``): what the pooled matrices'
    storage type depends on. One pass over the rows, memory of one block's diagonal."""
    diagonal = np.zeros(size)
    integral = True
    largest = 0.0
    for g in range(group_ptr.shape[0] - 1):
        diagonal[:] = 0.0
        for r in range(group_ptr[g], group_ptr[g + 1]):
            lv = rows[r]
            for p in range(indptr[lv], indptr[lv + 1]):
                v = data[p]
                if not (v >= 0.0 and v == np.floor(v)):
                    integral = False
                diagonal[local_index[p]] += v * v
        for a in range(size):
            if diagonal[a] > largest:
                largest = diagonal[a]
    return integral, largest


def pooled_combinations(pooled, coefs, chunk):
    """``out[o] = sum_u coefs[o, u] pooled[u]`` (float64), each entry summed in the order
    of u: the same numbers whatever the dtype of ``pooled`` when it holds the matrices
    exactly, and whatever the other combinations asked for in the same pass
    (:func:`pooled_combinations_into` a new array)."""
    out = np.empty((coefs.shape[0], pooled.shape[1]))
    pooled_combinations_into(pooled, np.ascontiguousarray(coefs, dtype=np.float64), chunk, out)
    return out


@njit(cache=True, nogil=True)
def pooled_combinations_into(pooled, coefs, chunk, out):
    """:func:`pooled_combinations` written into ``out`` (n_out, len), overwritten.

    ``chunk`` entries at a time, so that their sums stay in the first-level cache while
    each row's stretch streams through (vectorized loops, as BLAS's would be); several
    combinations read the rows once. Four rows are added per pass over a chunk (in order:
    ``((acc + c0 r0) + c1 r1) + ...``, the sums of one row at a time), so the partial sums
    are loaded and stored a quarter as often."""
    total = pooled.shape[1]
    n_out = coefs.shape[0]
    n_u = coefs.shape[1]
    out[:, :] = 0.0
    start = 0
    while start < total:
        stop = min(start + chunk, total)
        n = stop - start
        u = 0
        while u + 4 <= n_u:
            r0 = pooled[u, start:stop]
            r1 = pooled[u + 1, start:stop]
            r2 = pooled[u + 2, start:stop]
            r3 = pooled[u + 3, start:stop]
            for o in range(n_out):
                c0 = coefs[o, u]
                c1 = coefs[o, u + 1]
                c2 = coefs[o, u + 2]
                c3 = coefs[o, u + 3]
                acc = out[o, start:stop]
                for t in range(n):
                    total_t = acc[t] + c0 * r0[t]
                    total_t = total_t + c1 * r1[t]
                    total_t = total_t + c2 * r2[t]
                    acc[t] = total_t + c3 * r3[t]
            u += 4
        while u < n_u:
            row = pooled[u, start:stop]
            for o in range(n_out):
                c = coefs[o, u]
                acc = out[o, start:stop]
                for t in range(n):
                    acc[t] += c * row[t]
            u += 1
        start = stop


def pooled_combination(pooled, coef, chunk):
    """``sum_u coef[u] pooled[u]``: :func:`pooled_combinations` with one combination."""
    return pooled_combinations(pooled, np.ascontiguousarray(coef, dtype=np.float64)[None, :], chunk)[0]


@njit(cache=True, nogil=True)
def subtract_packed(K, base, size, packed, tile):
    """``K_block -= P`` for one block (base, size) with P symmetric, given by its packed
    lower triangle; ``tile`` x ``tile`` squares at a time, so that the writes to the
    upper triangle (down columns) stay in cache."""
    for bi in range(0, size, tile):
        for bj in range(0, bi + 1, tile):
            for i in range(bi, min(bi + tile, size)):
                row = i * (i + 1) // 2
                for j in range(bj, min(bj + tile, i + 1)):
                    v = packed[row + j]
                    K[base + i * size + j] -= v
                    if j != i:
                        K[base + j * size + i] -= v


@njit(cache=True, nogil=True)
def packed_inner_product(S, base, size, packed):
    """``<S_block, P>`` for one symmetric block (base, size) of S (its lower triangle
    read by rows) and a symmetric P given by its packed lower triangle."""
    out = 0.0
    for i in range(size):
        row = i * (i + 1) // 2
        S_row = base + i * size
        part = 0.0
        for j in range(i):
            part += packed[row + j] * S[S_row + j]
        out += 2.0 * part + packed[row + i] * S[S_row + i]
    return out


@njit(cache=True, nogil=True)
def row_entries(indptr, rows):
    """Positions in a CSR table of the entries of the given rows, and each one's row."""
    total = 0
    for r in range(rows.shape[0]):
        total += indptr[rows[r] + 1] - indptr[rows[r]]
    positions = np.empty(total, dtype=np.int64)
    owner = np.empty(total, dtype=np.int64)
    pos = 0
    for r in range(rows.shape[0]):
        lv = rows[r]
        for p in range(indptr[lv], indptr[lv + 1]):
            positions[pos] = p
            owner[pos] = lv
            pos += 1
    return positions, owner


@njit(cache=True, nogil=True)
def pack_lower(M):
    """The lower triangle of a square matrix packed by rows ((i, j), j <= i, at
    i (i + 1) / 2 + j)."""
    n = M.shape[0]
    out = np.empty(n * (n + 1) // 2)
    pos = 0
    for i in range(n):
        for j in range(i + 1):
            out[pos] = M[i, j]
            pos += 1
    return out


@njit(cache=True, parallel=True)
def symmetrize_lower(M):
    """Copy the lower triangle of a square matrix onto its upper one (in place)."""
    n = M.shape[0]
    for i in prange(n):
        for j in range(i + 1, n):
            M[i, j] = M[j, i]


@njit(cache=True, nogil=True)
def symmetrize_lower_scaled(M, lam, diagonal):
    """``diagonal = diag(M)``, then ``M = diag(lam) M diag(lam)`` with M's lower triangle
    copied onto its upper one (in place; M square, only its lower triangle read): one
    pass for :func:`symmetrize_lower` followed by a scaling, with the same products
    (``M[r, c] * (lam[r] * lam[c])``; multiplication commutes exactly)."""
    n = M.shape[0]
    for c in range(n):
        diagonal[c] = M[c, c]
        lam_c = lam[c]
        for r in range(c, n):
            v = M[r, c] * (lam_c * lam[r])
            M[r, c] = v
            M[c, r] = v


@njit(cache=True, nogil=True)
def is_identity(M):
    """Whether the square matrix M is exactly the identity (stops at the first entry
    that is not)."""
    n = M.shape[0]
    for i in range(n):
        for j in range(n):
            if M[i, j] != (1.0 if i == j else 0.0):
                return False
    return True


# ---------------------------------------------------------------------------------------
# Set-up of the crossed solver
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def counting_sort_order(keys, n_keys):
    """A stable order of ``keys`` (int64 in 0 .. n_keys - 1) by one counting pass, and
    the start of each key in it (n_keys + 1,): linear where a comparison sort is not."""
    start = np.zeros(n_keys + 1, dtype=np.int64)
    for i in range(keys.shape[0]):
        start[keys[i] + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    fill = start[:-1].copy()
    order = np.empty(keys.shape[0], dtype=np.int64)
    for i in range(keys.shape[0]):
        k = keys[i]
        order[fill[k]] = i
        fill[k] += 1
    return order, start


@njit(cache=True, nogil=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        up = parent[x]
        parent[x] = root
        x = up
    return root


@njit(cache=True, nogil=True)
def union_edges(parent, heads, tails, head_offset, tail_offset):
    """Join, in the union-find forest ``parent``, the nodes ``heads[i] + head_offset``
    and ``tails[i] + tail_offset`` of every edge i (the smaller root becomes the parent:
    each root is the smallest node of its tree, whatever the order of the edges)."""
    for i in range(heads.shape[0]):
        a = _find(parent, heads[i] + head_offset)
        b = _find(parent, tails[i] + tail_offset)
        if a != b:
            if a < b:
                parent[b] = a
            else:
                parent[a] = b


@njit(cache=True, nogil=True)
def component_labels(parent):
    """The root of every node of a union-find forest (the smallest node of its component)."""
    labels = np.empty(parent.shape[0], dtype=np.int64)
    for x in range(parent.shape[0]):
        labels[x] = _find(parent, x)
    return labels


@njit(cache=True, nogil=True)
def rows_then_columns_sorted(rows, cols):
    """Whether the entries are ordered by (row, column), ties allowed: a stable sort by
    that key leaves them in place."""
    for i in range(1, rows.shape[0]):
        if rows[i] < rows[i - 1] or (rows[i] == rows[i - 1] and cols[i] < cols[i - 1]):
            return False
    return True


# ---------------------------------------------------------------------------------------
# A nesting chain eliminated before the dense blocks
# ---------------------------------------------------------------------------------------
#
# Chain levels are numbered as in the nested hierarchy (innermost term first, children
# before parents). The innermost term's rows of the table against the core levels are
# the constant CSR ``indptr/local_index/data``; a level higher up the chain couples to
# the core through the sum of its children's rows, each divided by ``1 + tau d`` of the
# child: the "upper" CSR, whose values change with tau.


@njit(cache=True, nogil=True)
def upper_row_values(inner_data, inner_entry_level, inner_target, upper_entry_level, upper_target,
                     one_plus, n_upper_entries):
    """Values of the upper rows: each entry of a child row, divided by ``1 + tau d`` of
    the child, added to the entry of its parent's row for the same core level
    (``*_target``, -1 at the top). Entries are in level order, so children come first."""
    values = np.zeros(n_upper_entries)
    for p in range(inner_data.shape[0]):
        values[inner_target[p]] += inner_data[p] / one_plus[inner_entry_level[p]]
    for p in range(n_upper_entries):
        target = upper_target[p]
        if target >= 0:
            values[target] += values[p] / one_plus[upper_entry_level[p]]
    return values


@njit(cache=True, nogil=True)
def schur_subtract_rows(K, indptr, local_index, values, coef, row_base, row_size):
    """``K -= sum_l coef[l] k_l k_l'`` over the rows l of a CSR table whose values change
    with tau; row l's entries all lie in the block at ``row_base[l]`` of size
    ``row_size[l]``."""
    for lv in range(indptr.shape[0] - 1):
        c = coef[lv]
        if c == 0.0:
            continue
        base = row_base[lv]
        size = row_size[lv]
        for p1 in range(indptr[lv], indptr[lv + 1]):
            row = base + local_index[p1] * size
            v = c * values[p1]
            for p2 in range(indptr[lv], indptr[lv + 1]):
                K[row + local_index[p2]] -= v * values[p2]


@njit(cache=True, nogil=True)
def _row_quadratic(S, base, size, idx, val, start, stop):
    """``k' S k`` for one sparse row (local indices ascending) in one symmetric block of
    S: each pair once, from S's lower triangle read along its rows.

    Entry p's sum over the entries before it is a chain of dependent additions; four
    entries' chains run side by side over their common entries (then each adds its own
    last few), so the additions overlap instead of waiting for one another. Every sum,
    and the total, adds the same terms in the same order as one entry at a time."""
    total = 0.0
    p = start
    while p + 3 < stop:
        row_a = base + idx[p] * size
        row_b = base + idx[p + 1] * size
        row_c = base + idx[p + 2] * size
        row_d = base + idx[p + 3] * size
        off_a = 0.0
        off_b = 0.0
        off_c = 0.0
        off_d = 0.0
        for p2 in range(start, p):
            col = idx[p2]
            v = val[p2]
            off_a += S[row_a + col] * v
            off_b += S[row_b + col] * v
            off_c += S[row_c + col] * v
            off_d += S[row_d + col] * v
        col_a, col_b, col_c = idx[p], idx[p + 1], idx[p + 2]
        v_a, v_b, v_c, v_d = val[p], val[p + 1], val[p + 2], val[p + 3]
        off_b += S[row_b + col_a] * v_a
        off_c += S[row_c + col_a] * v_a
        off_c += S[row_c + col_b] * v_b
        off_d += S[row_d + col_a] * v_a
        off_d += S[row_d + col_b] * v_b
        off_d += S[row_d + col_c] * v_c
        total += v_a * (2.0 * off_a + S[row_a + col_a] * v_a)
        total += v_b * (2.0 * off_b + S[row_b + col_b] * v_b)
        total += v_c * (2.0 * off_c + S[row_c + col_c] * v_c)
        total += v_d * (2.0 * off_d + S[row_d + idx[p + 3]] * v_d)
        p += 4
    while p < stop:
        row = base + idx[p] * size
        off = 0.0
        for p2 in range(start, p):
            off += S[row + idx[p2]] * val[p2]
        total += val[p] * (2.0 * off + S[row + idx[p]] * val[p])
        p += 1
    return total


@njit(cache=True, nogil=True)
def chain_downward(d, s, parent, term_of, tau, n_pos, ku, m_inner,
                   indptr, local_index, data, up_indptr, up_local_index, up_values,
                   row_base, row_size, Sigma, want_traces, inner_quadratic, want_levels,
                   inner_target, upper_target):
    """Outermost chain level first: ``R_l = Z_l' H^-1 [X|y]`` and, when asked, the
    diagonal of ``Z' H^-1 Z`` and of the posterior covariance for every chain level.

    For level l with effective weight d and sums s, core row k (weights of the table,
    divided down the chain) and ``ku = k' U_core``::

        R_l    = (s_l - d_l U_ancestors - ku_l) / (1 + tau d_l)
        q_l    = k_l' Sigma_rest k_l = d^2 P_parent + 2 d X_l + k' Sigma_core k
        G_ll   = d / (1 + tau d) - q / (1 + tau d)^2          (diag of Z'H^-1 Z)
        cov_ll = f + f^2 q,  f = tau / (1 + tau d)               (posterior variance)

    with ``P`` the sum of the posterior covariance over a level and its ancestors and
    ``X_l`` the posterior covariance between the ancestors and the core levels, applied
    to k_l, from the recursion over the ancestors. ``k' Sigma_core k`` of the innermost
    levels is left out (and the caller adds its weighted sum, pooled) unless
    ``inner_quadratic``. Returns traces and ``R' R`` per chain position, and per level
    (when ``want_levels``) R and, with ``want_traces``, the posterior variance.

    The forms ``k_a' Sigma k_l`` with an ancestor a read ``w_a = Sigma k_a`` at the
    entries of a's row, computed once per upper level (a's row holds every core level
    of its descendants' rows; ``inner_target``/``upper_target`` give the entry of the
    parent's row for each entry of a row): visiting the ancestor's row of Sigma for
    every descendant would cost a cache miss per entry.
    """
    n_levels, q = s.shape
    trace = np.zeros(n_pos)
    rtr = np.zeros((n_pos, q, q))
    u_total = np.zeros((n_levels, q))
    P = np.zeros(n_levels)
    r = np.empty(q)
    ancestors = np.empty(n_pos, dtype=np.int64)
    V = np.empty(n_pos)
    bils = np.empty(n_pos)
    w_up = np.zeros(up_values.shape[0])
    if want_levels:
        R = np.empty((n_levels, q))
        cond = np.empty(n_levels)
    else:
        R = np.empty((0, q))
        cond = np.empty(0)
    for level in range(n_levels - 1, -1, -1):
        t = tau[term_of[level]]
        one_plus = 1.0 + t * d[level]
        f = t / one_plus
        up = parent[level]
        for c in range(q):
            above = u_total[up, c] if up >= 0 else 0.0
            r[c] = (s[level, c] - d[level] * above - ku[level, c]) / one_plus
            u_total[level, c] = above + t * r[c]
        pos = term_of[level]
        for a in range(q):
            for b in range(q):
                rtr[pos, a, b] += r[a] * r[b]
        if want_levels:
            R[level] = r
        if not want_traces:
            continue
        # This level's core row.
        if level < m_inner:
            idx, val, start, stop = local_index, data, indptr[level], indptr[level + 1]
        else:
            j = level - m_inner
            idx, val, start, stop = up_local_index, up_values, up_indptr[j], up_indptr[j + 1]
        base = row_base[level]
        size = row_size[level]
        # Ancestors, nearest first; their bilinear forms with this row through w_up
        # (entry targets composed up the chain); X from the top down.
        depth = 0
        a = up
        while a >= 0:
            ancestors[depth] = a
            bils[depth] = 0.0
            depth += 1
            a = parent[a]
        if depth:
            for p in range(start, stop):
                t = inner_target[p] if level < m_inner else upper_target[p]
                v = val[p]
                for i in range(depth):
                    bils[i] += v * w_up[t]
                    if i + 1 < depth:
                        t = upper_target[t]
        above_sum = 0.0
        for i in range(depth - 1, -1, -1):
            a = ancestors[i]
            ta = tau[term_of[a]]
            fa = ta / (1.0 + ta * d[a])
            V[i] = -fa * (d[a] * above_sum + bils[i])
            above_sum += V[i]
        X = above_sum
        P_up = P[up] if up >= 0 else 0.0
        if level >= m_inner:
            # w_a = Sigma k_a at the entries of this row (for the descendants), and Q.
            Q = 0.0
            for p in range(start, stop):
                row = base + idx[p] * size
                acc = 0.0
                for p2 in range(start, stop):
                    acc += Sigma[row + idx[p2]] * val[p2]
                w_up[p] = acc
                Q += val[p] * acc
        elif inner_quadratic:
            Q = _row_quadratic(Sigma, base, size, idx, val, start, stop)
        else:
            Q = 0.0
        quad = d[level] * d[level] * P_up + 2.0 * d[level] * X + Q
        trace[pos] += d[level] / one_plus - quad / (one_plus * one_plus)
        P[level] = P_up - 2.0 * f * (d[level] * P_up + X) + f + f * f * quad
        if want_levels:
            cond[level] = f + f * f * quad
    return trace, rtr, R, cond
