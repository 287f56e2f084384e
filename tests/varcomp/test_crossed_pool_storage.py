"""The crossed solver's pooled matrices in a narrow integer type (``POOL_COMPACT``) give
the general float64 path's numbers, bit for bit, and both are checked against the dense
brute-force REML (:func:`oracle.dense_criterion_terms`) and numpy's sums.

The compact storage is a fast path: unit (or integer) table weights make every pooled
entry an integer, stored in uint8/16/32 and read back exactly as float64 by the same
kernels, which add in the same order whatever the dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import dense_criterion_terms

from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
from reml_engine.varcomp import crossed as C
from reml_engine.varcomp.kernels import (
    pack_lower,
    packed_inner_product,
    pooled_combination,
    pooled_combinations,
    pooled_storage_bound,
    subtract_packed,
)

#: The dense oracle's agreement (as in test_criterion_oracle).
ORACLE_RTOL = 1e-9
#: Agreement with numpy's sums of the same products in another order.
SUM_RTOL = 1e-13


def _random_pooled(rng, n_groups, size, high):
    return rng.integers(0, high, (n_groups, size * (size + 1) // 2))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("chunk", [1, 5, C.POOL_CHUNK, 10**7])
def test_combination_is_the_same_in_every_dtype(dtype, chunk):
    rng = np.random.default_rng(chunk)
    G = _random_pooled(rng, 7, 23, min(np.iinfo(dtype).max, 10**6))
    coef = rng.random(7)
    narrow = pooled_combination(G.astype(dtype), coef, chunk)
    general = pooled_combination(G.astype(np.float64), coef, C.POOL_CHUNK)
    np.testing.assert_array_equal(narrow, general)
    np.testing.assert_allclose(general, coef @ G.astype(np.float64), rtol=SUM_RTOL)


@pytest.mark.parametrize("kind", ["counts", "fractional", "negative"])
def test_storage_bound_is_the_largest_diagonal_entry(kind):
    """Against numpy's dense sums of outer products per group (whose diagonal bounds every
    entry), and the integrality of the weights."""
    rng = np.random.default_rng(len(kind))
    size, n_rows = 29, 50
    lengths = rng.integers(0, size + 1, n_rows)
    local_index = np.concatenate([np.sort(rng.choice(size, k, replace=False)) for k in lengths]).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = rng.integers(1, 6, len(local_index)).astype(np.float64)
    if kind == "fractional":
        data[len(data) // 2] += 0.5
    elif kind == "negative":
        data[0] = -1.0
    rows = rng.permutation(n_rows).astype(np.int64)
    group_ptr = np.array([0, 20, 20, 50], dtype=np.int64)
    integral, largest = pooled_storage_bound(indptr, local_index, data, rows, group_ptr, size)
    sums = []
    for g in range(3):
        dense = np.zeros((size, size))
        for lv in rows[group_ptr[g]:group_ptr[g + 1]]:
            n = np.zeros(size)
            n[local_index[indptr[lv]:indptr[lv + 1]]] = data[indptr[lv]:indptr[lv + 1]]
            dense += np.outer(n, n)
        sums.append(dense)
    assert integral == (kind == "counts")
    assert largest == max(float(np.diag(d).max()) for d in sums)
    assert all(np.abs(d).max() <= largest for d in sums)


def test_combinations_in_one_pass_are_each_alone():
    """The factorization's and the gradient's combinations read the matrices once: each
    is the number it would be alone, bit for bit."""
    rng = np.random.default_rng(2)
    G = _random_pooled(rng, 9, 40, 200).astype(np.uint8)
    coefs = rng.random((2, 9))
    both = pooled_combinations(G, coefs, C.POOL_CHUNK)
    for o in range(2):
        np.testing.assert_array_equal(both[o], pooled_combination(G, coefs[o], C.POOL_CHUNK))


@pytest.mark.parametrize("tile", [1, 3, C.POOL_WRITE_TILE, 1000])
def test_packed_updates_match_numpy(tile):
    rng = np.random.default_rng(tile)
    size, base = 31, 5
    M = rng.standard_normal((size, size))
    P = M + M.T
    packed = pack_lower(P)
    K = np.zeros(base + size * size)
    S = rng.standard_normal((size, size))
    S = S + S.T
    K[base:] = S.reshape(-1)
    before = K.copy()
    subtract_packed(K, base, size, packed, tile)
    np.testing.assert_array_equal(K[base:].reshape(size, size), S - P)
    np.testing.assert_array_equal(K[:base], before[:base])
    expected = float((S * P).sum())
    assert packed_inner_product(before, base, size, packed) == pytest.approx(expected, rel=SUM_RTOL)


def _crossed(rng, n_subjects=150, n_items=70, share=0.4):
    subj, item = np.nonzero(rng.random((n_subjects, n_items)) < share)
    keep = rng.random(len(subj)) < np.where(subj % 3 == 0, 0.6, 1.0)
    subj, item = subj[keep], item[keep]
    n = len(subj)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    y = X[:, 1] + rng.standard_normal(n_subjects)[subj] + rng.standard_normal(n_items)[item] + rng.standard_normal(n)
    return X, y, {"subj": subj, "item": item}


def _pooled_problem(monkeypatch, X, y, factors, weights, compact):
    monkeypatch.setattr(C, "POOL_GAIN", 0.0)
    monkeypatch.setattr(C, "POOL_MIN_BLOCK", 1)
    monkeypatch.setattr(C, "POOL_COMPACT", compact)
    problem = VCProblem(compute_vc_stats(X, y, RandomTerms.from_labels(factors), weights, None))
    assert problem._solver.kind == "crossed" and problem._solver.pooled, problem.plan
    return problem


@pytest.mark.parametrize("dense_ratio", [0.0, np.inf])  # the sparse kernel, or BLAS's D'D
def test_compact_storage_is_the_float64_path(monkeypatch, dense_ratio):
    """Unit weights: uint8 storage, the same criterion, gradient, beta and reduction as
    float64 storage on the same data (bit for bit), and the dense oracle's criterion."""
    monkeypatch.setattr(C, "DENSE_POOL_RATIO", dense_ratio)
    X, y, factors = _crossed(np.random.default_rng(4))
    compact = _pooled_problem(monkeypatch, X, y, factors, None, True)
    general = _pooled_problem(monkeypatch, X, y, factors, None, False)
    assert {G.dtype for _, _, G in compact._solver.pooled} == {np.dtype(np.uint8)}
    assert {G.dtype for _, _, G in general._solver.pooled} == {np.dtype(np.float64)}
    for (_, values, G), (_, values_ref, G_ref) in zip(compact._solver.pooled, general._solver.pooled, strict=True):
        np.testing.assert_array_equal(values, values_ref)
        np.testing.assert_array_equal(G.astype(np.float64), G_ref)
    for tau in ([0.7, 0.2], [0.0, 1.5], [3.0, 0.0]):
        a, b = compact.evaluate(tau), general.evaluate(tau)
        assert a.criterion == b.criterion
        np.testing.assert_array_equal(a.gradient, b.gradient)
        np.testing.assert_array_equal(a.beta, b.beta)
        ref = dense_criterion_terms(X, y, [factors["subj"], factors["item"]], np.asarray(tau))
        assert a.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
    ra, rb = compact.reduce_to_term(1, [0.7, 0.0]), general.reduce_to_term(1, [0.7, 0.0])
    np.testing.assert_array_equal(ra.kappa, rb.kappa)
    np.testing.assert_array_equal(ra.vectors, rb.vectors)


def test_storage_widens_with_the_entries(monkeypatch):
    """Integer weights whose pooled diagonal exceeds 255 take uint16; fractional weights
    keep float64 (and still match the dense oracle)."""
    rng = np.random.default_rng(8)
    X, y, factors = _crossed(rng)
    n = len(y)
    repeated = np.full(n, 20.0)  # every pooled diagonal entry is a multiple of 400
    problem = _pooled_problem(monkeypatch, X, y, factors, repeated, True)
    assert {G.dtype for _, _, G in problem._solver.pooled} == {np.dtype(np.uint16)}
    general = _pooled_problem(monkeypatch, X, y, factors, repeated, False)
    tau = [0.5, 0.3]
    assert problem.evaluate(tau).criterion == general.evaluate(tau).criterion
    fractional = rng.uniform(0.5, 2.0, n)
    problem = _pooled_problem(monkeypatch, X, y, factors, fractional, True)
    assert {G.dtype for _, _, G in problem._solver.pooled} == {np.dtype(np.float64)}
    ref = dense_criterion_terms(X, y, [factors["subj"], factors["item"]], np.asarray(tau), weights=fractional)
    assert problem.evaluate(tau).criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
