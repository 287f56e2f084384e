"""The shortcuts of the crossed solver's evaluation and set-up give the general path's
numbers bit for bit: the sorted pair table against the hashed one, the CSR of an
already ordered table against the counting sorts, the four-chain quadratic forms and
the four-row pooled combinations against one at a time, the fused symmetrize-and-scale
of the inverse against the two passes, and the identity block's factor against LAPACK's.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from numba import njit

from reml_engine.varcomp import blocks as B
from reml_engine.varcomp import crossed as C
from reml_engine.varcomp.kernels import (
    _row_quadratic,
    counting_sort_order,
    pair_table_hashed,
    pair_table_sorted,
    pooled_combinations_into,
    scale_blocks_in_place,
    symmetrize_lower,
    symmetrize_lower_scaled,
)


@njit(cache=True)
def _quadratic_one_at_a_time(S, base, size, idx, val, start, stop):
    total = 0.0
    for p in range(start, stop):
        row = base + idx[p] * size
        off = 0.0
        for p2 in range(start, p):
            off += S[row + idx[p2]] * val[p2]
        total += val[p] * (2.0 * off + S[row + idx[p]] * val[p])
    return total


def _combination_one_row_at_a_time(pooled, coefs):
    out = np.zeros((coefs.shape[0], pooled.shape[1]))
    for u in range(pooled.shape[0]):
        for o in range(coefs.shape[0]):
            out[o] += coefs[o, u] * pooled[u].astype(np.float64)
    return out


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sorted_pair_table_is_the_hashed_one(seed, weighted):
    rng = np.random.default_rng(seed)
    n, m_a, m_b = int(rng.integers(1, 20_000)), int(rng.integers(1, 900)), int(rng.integers(1, 900))
    a = np.sort(rng.integers(0, m_a, n)).astype(np.int64)
    b = rng.integers(0, m_b, n).astype(np.int64)
    w = rng.random(n) * 3 if weighted else np.zeros(0)
    fast = pair_table_sorted(a, b, w, m_a, m_b)
    general = pair_table_hashed(a, b, w, m_a, m_b, 10, False)
    for x, y in zip(fast, general, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_csr_of_ordered_entries_is_the_counting_sort():
    rng = np.random.default_rng(4)
    n_rows, n_cols = 300, 120
    cells = np.unique(rng.integers(0, n_rows * n_cols, 5000))
    rows, cols = (cells // n_cols).astype(np.int64), (cells % n_cols).astype(np.int64)
    data = rng.random(len(cells))
    fast = C._csr(rows, cols, data, n_rows, n_cols)
    by_col, _ = counting_sort_order(cols, n_cols)
    by_row, indptr = counting_sort_order(rows[by_col], n_rows)
    order = by_col[by_row]
    for x, y in zip(fast, (indptr, cols[order], data[order]), strict=True):
        np.testing.assert_array_equal(x, y)
    shuffled = rng.permutation(len(cells))  # not ordered: the counting sorts
    again = C._csr(rows[shuffled], cols[shuffled], data[shuffled], n_rows, n_cols)
    for x, y in zip(again, fast, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("unit", [True, False])
def test_four_chain_quadratic_forms(unit):
    rng = np.random.default_rng(5)
    size = 90
    X = rng.standard_normal((size, size))
    S = np.zeros(7 + size * size)
    S[7:] = (X @ X.T).reshape(-1)
    for length in range(0, 23):
        idx = np.sort(rng.choice(size, length, replace=False)).astype(np.int64)
        val = np.ones(length) if unit else rng.random(length) * 2
        assert _row_quadratic(S, 7, size, idx, val, 0, length) == _quadratic_one_at_a_time(
            S, 7, size, idx, val, 0, length)


@pytest.mark.parametrize("n_groups", [1, 3, 4, 7, 9])
def test_pooled_combinations_four_rows_a_pass(n_groups):
    rng = np.random.default_rng(n_groups)
    pooled = rng.integers(0, 200, (n_groups, 5000)).astype(np.uint8)
    coefs = rng.random((2, n_groups))
    out = np.full((2, 5000), np.nan)
    pooled_combinations_into(pooled, coefs, 777, out)
    np.testing.assert_array_equal(out, _combination_one_row_at_a_time(pooled, coefs))


def test_symmetrize_and_scale_in_one_pass():
    rng = np.random.default_rng(6)
    n = 70
    M = np.asfortranarray(rng.standard_normal((n, n)))
    lam = rng.random(n) * 3
    lam[::5] = 0.0
    two = M.copy(order="F")
    symmetrize_lower(two)
    two_buffer = two.T.reshape(-1).copy()
    scale_blocks_in_place(two_buffer, lam, np.zeros(1, np.int64), np.array([n]), np.zeros(1, np.int64))
    one = M.copy(order="F")
    diagonal = np.empty(n)
    symmetrize_lower_scaled(one, lam, diagonal)
    np.testing.assert_array_equal(one.T.reshape(-1), two_buffer)
    np.testing.assert_array_equal(diagonal, np.diag(M))


def test_identity_block_is_its_own_factor():
    n = B.SMALL_BLOCK + 20
    A = np.eye(n)
    A[3, 5] = A[5, 3] = -0.0
    L = B.cholesky_stack(A.copy()[None])[0]
    reference, info = sla.lapack.dpotrf(np.eye(n), lower=1, clean=1)
    assert info == 0
    np.testing.assert_array_equal(L, reference)
    A[3, 5] = A[5, 3] = 1e-300  # not the identity: factored by LAPACK
    np.testing.assert_array_equal(B.cholesky_stack(A.copy()[None])[0],
                                  sla.lapack.dpotrf(A.T.copy(order="F"), lower=1, clean=1)[0])
