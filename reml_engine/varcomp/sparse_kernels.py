"""Sparse Cholesky factorization and selected inversion, compiled.

For crossed terms whose coupled levels are too many for a dense block (:mod:`.sparse`):
a symmetric positive definite matrix A of fixed pattern is factored ``A = L L'`` in a
fill-reducing order chosen once, and the entries of ``A^-1`` on the pattern of L (which
holds A's) are computed from the factor, which is what the gradient needs.

Matrices are lower triangles in compressed sparse columns: ``colptr``, ``rowidx`` (rows
ascending within a column, the diagonal first), values alongside. The steps:

* :func:`symbolic_factor`: the elimination tree and the pattern of L from A's, once;
* :func:`numeric_cholesky`: the values of L from values of A given on L's pattern
  (zero at the fill). Up-looking, as in Davis' CSparse: row k of L solves
  ``L[:k, :k] x = A[:k, k]`` over the nodes the row reaches in the elimination tree,
  taken in topological order;
* :func:`selected_inverse`: ``Z = A^-1`` on L's pattern, from the last column back
  (Takahashi's recurrence): with ``l_kj = L_kj / L_jj`` and R the rows below the
  diagonal of column j, ``Z_ij = -sum_{k in R} Z_ik l_kj`` (i in R) and
  ``Z_jj = 1 / L_jj^2 - sum_{k in R} l_kj Z_kj``. The rows of a column form a clique of
  the filled graph, so every ``Z_ik`` needed lies on the pattern (column min(i, k));
* :func:`lower_solve_sparse`, :func:`upper_solve_sparse`: ``L^-1 B`` and ``L'^-1 B``.

Plain arrays in and out, no exceptions; :func:`numeric_cholesky` returns False when A is
not numerically positive definite.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def lower_rows(n, colptr, rowidx):
    """The strict lower triangle by rows: for row i, the columns j < i with an entry and
    the entry's position in the column storage (``row_ptr``, ``row_col``, ``row_pos``)."""
    row_ptr = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        for p in range(colptr[j], colptr[j + 1]):
            if rowidx[p] > j:
                row_ptr[rowidx[p] + 1] += 1
    for i in range(n):
        row_ptr[i + 1] += row_ptr[i]
    fill = row_ptr[:-1].copy()
    row_col = np.empty(row_ptr[n], dtype=np.int64)
    row_pos = np.empty(row_ptr[n], dtype=np.int64)
    for j in range(n):
        for p in range(colptr[j], colptr[j + 1]):
            i = rowidx[p]
            if i > j:
                row_col[fill[i]] = j
                row_pos[fill[i]] = p
                fill[i] += 1
    return row_ptr, row_col, row_pos


@njit(cache=True, nogil=True)
def elimination_tree(n, row_ptr, row_col):
    """Parent of each node in the elimination tree (-1 at a root), from the strict lower
    triangle by rows (Liu's algorithm with path compression)."""
    parent = np.full(n, -1, dtype=np.int64)
    ancestor = np.full(n, -1, dtype=np.int64)
    for k in range(n):
        for p in range(row_ptr[k], row_ptr[k + 1]):
            i = row_col[p]
            while i != -1 and i < k:
                nxt = ancestor[i]
                ancestor[i] = k
                if nxt == -1:
                    parent[i] = k
                i = nxt
    return parent


@njit(cache=True, nogil=True)
def row_reach(k, parent, row_ptr, row_col, mark, stack):
    """The columns j < k with ``L_kj != 0``, as ``stack[top:n]`` in topological order
    (every node before its ancestors); returns top. ``mark`` entries equal to k are
    visited (the caller never reuses a k)."""
    n = stack.shape[0]
    top = n
    mark[k] = k
    for p in range(row_ptr[k], row_ptr[k + 1]):
        i = row_col[p]
        length = 0
        while mark[i] != k:
            stack[length] = i
            length += 1
            mark[i] = k
            i = parent[i]
        # The path (node first, then its ancestors) goes in front of the paths found
        # before it, which hold its end's ancestors.
        while length > 0:
            top -= 1
            length -= 1
            stack[top] = stack[length]
    return top


@njit(cache=True, nogil=True)
def symbolic_factor(n, colptr, rowidx):
    """Elimination tree and the pattern of L (``L_colptr``, ``L_rowidx``: the diagonal
    first, rows ascending) of the matrix with the given lower-triangle pattern."""
    row_ptr, row_col, _ = lower_rows(n, colptr, rowidx)
    parent = elimination_tree(n, row_ptr, row_col)
    mark = np.full(n, -1, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    counts = np.ones(n, dtype=np.int64)
    for k in range(n):
        top = row_reach(k, parent, row_ptr, row_col, mark, stack)
        for t in range(top, n):
            counts[stack[t]] += 1
    L_colptr = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        L_colptr[j + 1] = L_colptr[j] + counts[j]
    L_rowidx = np.empty(L_colptr[n], dtype=np.int64)
    fill = L_colptr[:-1].copy()
    for j in range(n):
        L_rowidx[fill[j]] = j
        fill[j] += 1
    mark[:] = -1
    for k in range(n):
        top = row_reach(k, parent, row_ptr, row_col, mark, stack)
        for t in range(top, n):
            j = stack[t]
            L_rowidx[fill[j]] = k
            fill[j] += 1
    # Rows were appended in increasing k: each column is sorted.
    return parent, L_colptr, L_rowidx


@njit(cache=True, nogil=True)
def numeric_cholesky(n, A_values, L_colptr, L_rowidx, parent, row_ptr, row_col, row_pos, L_values, x, mark, stack):
    """Values of L from A given on L's pattern (``A_values`` aligned with ``L_rowidx``;
    ``row_ptr/row_col/row_pos`` index L's strict lower triangle by rows). ``x``, ``mark``
    and ``stack`` are work arrays of length n (x zero on entry and exit). Returns False
    when a pivot is not positive (A not numerically positive definite)."""
    nxt = np.empty(n, dtype=np.int64)
    for j in range(n):
        nxt[j] = L_colptr[j] + 1
        mark[j] = -1
    for k in range(n):
        top = row_reach(k, parent, row_ptr, row_col, mark, stack)
        # Row k of A left of the diagonal (zero at the fill).
        for p in range(row_ptr[k], row_ptr[k + 1]):
            x[row_col[p]] = A_values[row_pos[p]]
        d = A_values[L_colptr[k]]
        for t in range(top, n):
            j = stack[t]
            lkj = x[j] / L_values[L_colptr[j]]
            x[j] = 0.0
            for p in range(L_colptr[j] + 1, nxt[j]):
                x[L_rowidx[p]] -= L_values[p] * lkj
            d -= lkj * lkj
            L_values[nxt[j]] = lkj
            nxt[j] += 1
        if not d > 0.0:
            for t in range(top, n):
                x[stack[t]] = 0.0
            return False
        L_values[L_colptr[k]] = math.sqrt(d)
    return True


@njit(cache=True, nogil=True)
def lower_solve_sparse(n, L_colptr, L_rowidx, L_values, B):
    """``L^-1 B`` (B: n x q, overwritten and returned)."""
    q = B.shape[1]
    for j in range(n):
        djj = L_values[L_colptr[j]]
        for c in range(q):
            B[j, c] /= djj
        for p in range(L_colptr[j] + 1, L_colptr[j + 1]):
            i = L_rowidx[p]
            v = L_values[p]
            for c in range(q):
                B[i, c] -= v * B[j, c]
    return B


@njit(cache=True, nogil=True)
def upper_solve_sparse(n, L_colptr, L_rowidx, L_values, B):
    """``L'^-1 B`` (B: n x q, overwritten and returned)."""
    q = B.shape[1]
    for j in range(n - 1, -1, -1):
        for p in range(L_colptr[j] + 1, L_colptr[j + 1]):
            i = L_rowidx[p]
            v = L_values[p]
            for c in range(q):
                B[j, c] -= v * B[i, c]
        djj = L_values[L_colptr[j]]
        for c in range(q):
            B[j, c] /= djj
    return B


@njit(cache=True, nogil=True)
def selected_inverse(n, L_colptr, L_rowidx, L_values):
    """``A^-1`` on the pattern of L (aligned with ``L_rowidx``), from ``A = L L'``."""
    Z = np.empty(L_values.shape[0])
    acc = np.empty(n)
    scaled = np.empty(n)
    for j in range(n - 1, -1, -1):
        start = L_colptr[j] + 1
        stop = L_colptr[j + 1]
        m = stop - start
        djj = L_values[L_colptr[j]]
        for b in range(m):
            acc[b] = 0.0
            scaled[b] = L_values[start + b] / djj
        for b in range(m):
            k = L_rowidx[start + b]
            lb = scaled[b]
            # Z_kk, then the rows of column k that are also rows of column j (those
            # after k: the clique property puts all of them in column k).
            acc[b] += Z[L_colptr[k]] * lb
            p = L_colptr[k] + 1
            p_end = L_colptr[k + 1]
            for c in range(b + 1, m):
                i = L_rowidx[start + c]
                while L_rowidx[p] < i:
                    p += 1
                z = Z[p]                    # Z_ik, i > k
                acc[c] += z * lb
                acc[b] += z * scaled[c]
            _ = p_end
        diag = 1.0 / (djj * djj)
        for b in range(m):
            Z[start + b] = -acc[b]
            diag += scaled[b] * acc[b]
        Z[L_colptr[j]] = diag
    return Z


@njit(cache=True, nogil=True)
def pattern_positions(L_colptr, L_rowidx, rows, cols):
    """Position in L's storage of each entry (rows[t], cols[t]) with rows >= cols
    (binary search in the column); -1 when the entry is not on the pattern."""
    out = np.empty(rows.shape[0], dtype=np.int64)
    for t in range(rows.shape[0]):
        i = rows[t]
        j = cols[t]
        lo = L_colptr[j]
        hi = L_colptr[j + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if L_rowidx[mid] < i:
                lo = mid + 1
            else:
                hi = mid
        out[t] = lo if lo < L_colptr[j + 1] and L_rowidx[lo] == i else -1
    return out


# ---------------------------------------------------------------------------------------
# The Schur complement of an eliminated term on a sparse pattern
# ---------------------------------------------------------------------------------------
#
# The eliminated term's table against the core levels is CSR with the core levels in the
# factor's (permuted) order, ascending within each row; the entries (a, b), b <= a, of
# row l's outer product n_l n_l' are visited in the order "for a: for b <= a", and
# ``pair_pos`` holds, in that order, the position of each in L's storage.


@njit(cache=True, nogil=True)
def count_pairs(indptr):
    """Start of each row's pairs (m_e + 1,)."""
    m_e = indptr.shape[0] - 1
    ptr = np.zeros(m_e + 1, dtype=np.int64)
    for lv in range(m_e):
        c = indptr[lv + 1] - indptr[lv]
        ptr[lv + 1] = ptr[lv] + c * (c + 1) // 2
    return ptr


@njit(cache=True, nogil=True)
def row_pair_entries(indptr, idx):
    """(row, col) of every pair of every row, row >= col (for the pattern and its
    positions)."""
    ptr = count_pairs(indptr)
    rows = np.empty(ptr[-1], dtype=np.int64)
    cols = np.empty(ptr[-1], dtype=np.int64)
    t = 0
    for lv in range(indptr.shape[0] - 1):
        for a in range(indptr[lv], indptr[lv + 1]):
            for b in range(indptr[lv], a + 1):
                rows[t] = idx[a]
                cols[t] = idx[b]
                t += 1
    return rows, cols


@njit(cache=True, nogil=True)
def subtract_row_products(K_values, indptr, data, pair_pos, coef):
    """``K -= sum_l coef_l n_l n_l'`` on L's pattern (lower triangle)."""
    t = 0
    for lv in range(indptr.shape[0] - 1):
        c = coef[lv]
        start = indptr[lv]
        stop = indptr[lv + 1]
        if c == 0.0:
            t += (stop - start) * (stop - start + 1) // 2
            continue
        for a in range(start, stop):
            va = c * data[a]
            for b in range(start, a + 1):
                K_values[pair_pos[t]] -= va * data[b]
                t += 1


@njit(cache=True, nogil=True)
def row_quadratic_forms(indptr, idx, data, pair_pos, lam, Z):
    """``n_l' Lambda Z Lambda n_l`` for every row l (Z symmetric, on L's pattern)."""
    m_e = indptr.shape[0] - 1
    out = np.zeros(m_e)
    t = 0
    for lv in range(m_e):
        s = 0.0
        for a in range(indptr[lv], indptr[lv + 1]):
            va = data[a] * lam[idx[a]]
            for b in range(indptr[lv], a + 1):
                v = va * data[b] * lam[idx[b]] * Z[pair_pos[t]]
                s += v if b == a else 2.0 * v
                t += 1
        out[lv] = s
    return out


@njit(cache=True, nogil=True)
def scaled_identity_plus(K_values, L_colptr, L_rowidx, lam):
    """``A = I + Lambda K Lambda`` on L's pattern."""
    n = L_colptr.shape[0] - 1
    A = np.empty(K_values.shape[0])
    for j in range(n):
        for p in range(L_colptr[j], L_colptr[j + 1]):
            A[p] = lam[L_rowidx[p]] * lam[j] * K_values[p]
        A[L_colptr[j]] += 1.0
    return A


@njit(cache=True, nogil=True)
def symmetric_times(K_values, L_colptr, L_rowidx, U):
    """``K U`` for K symmetric held by its lower triangle on L's pattern."""
    n, q = U.shape
    out = np.zeros((n, q))
    for j in range(n):
        for p in range(L_colptr[j], L_colptr[j + 1]):
            i = L_rowidx[p]
            v = K_values[p]
            for c in range(q):
                out[i, c] += v * U[j, c]
            if i != j:
                for c in range(q):
                    out[j, c] += v * U[i, c]
    return out


@njit(cache=True, nogil=True)
def scaled_inverse_traces(K_values, L_colptr, L_rowidx, lam, Z):
    """Per level i with lambda_i > 0: ``(I - A^-1)_ii / lambda_i^2`` written without
    cancellation as ``sum_a K_ia (lambda_a / lambda_i) Z_ai`` (``A = I + Lambda K
    Lambda``, ``Z = A^-1`` on L's pattern, which holds K's); 0 where lambda_i = 0."""
    n = L_colptr.shape[0] - 1
    out = np.zeros(n)
    for j in range(n):
        for p in range(L_colptr[j], L_colptr[j + 1]):
            i = L_rowidx[p]
            v = K_values[p] * Z[p]
            if v == 0.0:
                continue
            if i == j:
                if lam[j] > 0.0:
                    out[j] += v
            else:
                if lam[i] > 0.0:
                    out[i] += v * lam[j] / lam[i]
                if lam[j] > 0.0:
                    out[j] += v * lam[i] / lam[j]
    return out


@njit(cache=True, nogil=True)
def column_of_symmetric(K_values, L_colptr, L_rowidx, row_ptr, row_col, row_pos, i, out):
    """Column i of the symmetric K (lower triangle on L's pattern) into ``out`` (dense,
    zero elsewhere)."""
    for p in range(L_colptr[i], L_colptr[i + 1]):
        out[L_rowidx[p]] = K_values[p]
    for p in range(row_ptr[i], row_ptr[i + 1]):
        out[row_col[p]] = K_values[row_pos[p]]


@njit(cache=True, nogil=True)
def lower_pattern(n, rows, cols):
    """Distinct entries (rows[t], cols[t]), rows >= cols, with every diagonal entry, as a
    lower-triangle CSC pattern (rows ascending: the diagonal first)."""
    count = np.zeros(n + 1, dtype=np.int64)
    for t in range(rows.shape[0]):
        count[cols[t] + 1] += 1
    for j in range(n):
        count[j + 1] += count[j]
    fill = count[:-1].copy()
    by_col = np.empty(rows.shape[0], dtype=np.int64)
    for t in range(rows.shape[0]):
        by_col[fill[cols[t]]] = rows[t]
        fill[cols[t]] += 1
    seen = np.full(n, -1, dtype=np.int64)
    colptr = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(rows.shape[0] + n, dtype=np.int64)
    nnz = 0
    for j in range(n):
        start = nnz
        seen[j] = j
        out[nnz] = j
        nnz += 1
        for p in range(count[j], count[j + 1]):
            i = by_col[p]
            if seen[i] != j:
                seen[i] = j
                out[nnz] = i
                nnz += 1
        out[start:nnz] = np.sort(out[start:nnz])
        colptr[j + 1] = nnz
    return colptr, out[:nnz].copy()


@njit(cache=True, nogil=True)
def factor_column_counts(n, colptr, rowidx):
    """Entries per column of L (the diagonal included) and the elimination tree, without
    forming L's pattern: to compare orders."""
    row_ptr, row_col, _ = lower_rows(n, colptr, rowidx)
    parent = elimination_tree(n, row_ptr, row_col)
    mark = np.full(n, -1, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    counts = np.ones(n, dtype=np.int64)
    for k in range(n):
        top = row_reach(k, parent, row_ptr, row_col, mark, stack)
        for t in range(top, n):
            counts[stack[t]] += 1
    return counts
