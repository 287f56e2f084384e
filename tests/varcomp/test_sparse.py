"""The sparse path for crossed terms with many coupled levels (reml_engine/varcomp/sparse.py).

The compiled sparse Cholesky factor, its selected inverse and the triangular solves agree
with numpy's dense algebra on random positive definite matrices with fill; the sparse
solver gives the dense oracle's criterion and the dense-block solver's gradient, ranef
and reductions on the same designs (weights, several terms, ratios at 0); the automatic
choice takes it where dense blocks would be too large.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import dense_criterion_terms

from reml_engine.checks import ModelDataError
from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
from reml_engine.varcomp import crossed as crossed_module
from reml_engine.varcomp.sparse_kernels import (
    lower_pattern,
    lower_rows,
    lower_solve_sparse,
    numeric_cholesky,
    pattern_positions,
    selected_inverse,
    symbolic_factor,
    upper_solve_sparse,
)

ORACLE_RTOL = 1e-9


def _random_spd(n: int, rng: np.random.Generator) -> np.ndarray:
    B = np.zeros((n, n))
    for _ in range(int(rng.integers(0, 2 * n + 1))):
        i, j = rng.integers(0, n, 2)
        B[i, j] += rng.normal()
    return B @ B.T + np.diag(rng.uniform(0.5, 2.0, n))


@pytest.mark.parametrize("seed", range(12))
def test_factor_inverse_and_solves_agree_with_dense_algebra(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    A = _random_spd(n, rng)
    rows, cols = np.nonzero(np.tril(A))
    colptr, rowidx = lower_pattern(n, rows.astype(np.int64), cols.astype(np.int64))
    parent, L_colptr, L_rowidx = symbolic_factor(n, colptr, rowidx)
    L_col = np.repeat(np.arange(n), np.diff(L_colptr))
    A_values = A[L_rowidx, L_col]
    row_ptr, row_col, row_pos = lower_rows(n, L_colptr, L_rowidx)
    L_values = np.empty(len(L_rowidx))
    assert numeric_cholesky(n, A_values, L_colptr, L_rowidx, parent, row_ptr, row_col, row_pos, L_values,
                            np.zeros(n), np.empty(n, np.int64), np.empty(n, np.int64))
    L = np.zeros((n, n))
    L[L_rowidx, L_col] = L_values
    dense = np.linalg.cholesky(A)
    np.testing.assert_allclose(L, dense, atol=1e-12 * np.abs(dense).max())
    # The pattern holds every entry of the dense factor that is not zero.
    assert np.all(np.abs(dense[np.abs(L) == 0]) < 1e-12)
    Z = selected_inverse(n, L_colptr, L_rowidx, L_values)
    np.testing.assert_allclose(Z, np.linalg.inv(A)[L_rowidx, L_col], atol=1e-12 * np.abs(np.linalg.inv(A)).max())
    B = rng.normal(size=(n, 3))
    np.testing.assert_allclose(lower_solve_sparse(n, L_colptr, L_rowidx, L_values, B.copy()),
                               np.linalg.solve(dense, B), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(upper_solve_sparse(n, L_colptr, L_rowidx, L_values, B.copy()),
                               np.linalg.solve(dense.T, B), rtol=1e-10, atol=1e-12)
    assert np.array_equal(pattern_positions(L_colptr, L_rowidx, L_rowidx, L_col), np.arange(len(L_rowidx)))


def test_not_positive_definite_is_flagged():
    A = np.array([[1.0, 2.0], [2.0, 1.0]])
    colptr, rowidx = lower_pattern(2, np.array([0, 1, 1]), np.array([0, 0, 1]))
    parent, L_colptr, L_rowidx = symbolic_factor(2, colptr, rowidx)
    row_ptr, row_col, row_pos = lower_rows(2, L_colptr, L_rowidx)
    values = A[L_rowidx, np.repeat(np.arange(2), np.diff(L_colptr))]
    assert not numeric_cholesky(2, values, L_colptr, L_rowidx, parent, row_ptr, row_col, row_pos, np.empty(3),
                                np.zeros(2), np.empty(2, np.int64), np.empty(2, np.int64))


def _design(seed: int, k: int, weighted: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 140))
    sizes = [int(s) for s in rng.integers(3, 14, k)]
    factors = {f"t{i}": rng.integers(0, s, n) for i, s in enumerate(sizes)}
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = X[:, 1] + sum(rng.normal(size=s)[c] for s, c in zip(sizes, factors.values(), strict=True)) + rng.normal(size=n)
    w = rng.uniform(0.4, 2.5, n) if weighted else None
    return X, y, factors, w


@pytest.mark.parametrize("seed", range(8))
def test_sparse_solver_agrees_with_the_oracle_and_the_dense_blocks(seed):
    k = 2 + seed % 2
    X, y, factors, w = _design(seed, k, weighted=seed % 3 == 1)
    stats = compute_vc_stats(X, y, RandomTerms.from_labels(factors), w)
    rng = np.random.default_rng(100 + seed)
    for e in range(k):
        sparse = VCProblem(stats, method="sparse", eliminate=e)
        dense = VCProblem(stats, method="crossed", eliminate=e, fast_paths=False)
        assert "sparse Cholesky" in sparse.plan
        for _ in range(5):
            tau = np.exp(rng.uniform(-6, 5, k))
            tau[rng.uniform(size=k) < 0.3] = 0.0
            for REML in (True, False):
                a = sparse.evaluate(tau, REML)
                b = dense.evaluate(tau, REML)
                ref = dense_criterion_terms(X, y, list(factors.values()), tau, REML, w)
                assert a.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
                assert a.criterion == pytest.approx(b.criterion, rel=1e-12)
                np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-9 * np.abs(b.gradient).max())
            ra, rb = sparse.ranef(tau), dense.ranef(tau)
            for name in ra:
                np.testing.assert_allclose(ra[name].to_numpy(), rb[name].to_numpy(), rtol=1e-8, atol=1e-12)
            for j in range(k):
                xa, xb = sparse.reduce_to_term(j, tau), dense.reduce_to_term(j, tau)
                t = np.array([0.0, 0.05, 2.0, 90.0])
                np.testing.assert_allclose(xa.criterion(t), xb.criterion(t), rtol=1e-12)
                np.testing.assert_allclose(xa.kappa, xb.kappa, rtol=1e-9, atol=1e-12 * xb.kappa.max())


def _panel(units: int, periods: int, window: int, seed: int = 0):
    """Units observed over a window of consecutive periods starting at random (a staggered
    panel): after eliminating the periods, units are coupled only to nearby starts."""
    rng = np.random.default_rng(seed)
    start = np.sort(rng.integers(0, periods - window + 1, units))
    length = rng.integers(window // 2, window + 1, units)
    unit = np.repeat(np.arange(units), length)
    period = np.repeat(start, length) + np.arange(len(unit)) - np.repeat(np.cumsum(length) - length, length)
    x = rng.normal(size=len(unit))
    y = 0.3 * x + rng.normal(size=units)[unit] + 0.5 * rng.normal(size=periods)[period] + rng.normal(size=len(unit))
    return np.column_stack([np.ones(len(unit)), x]), y, {"unit": unit, "period": period}


def test_too_large_dense_blocks_take_the_sparse_path(monkeypatch):
    X, y, factors = _panel(300, 240, 8)
    stats = compute_vc_stats(X, y, RandomTerms.from_labels(factors))
    with pytest.raises(ModelDataError, match="max_dense_block"):
        monkeypatch.setattr("reml_engine.varcomp.sparse.MAX_ROW_PAIRS", 10)
        VCProblem(stats, max_dense_block=50)
    monkeypatch.undo()
    auto = VCProblem(stats, max_dense_block=50)
    assert "sparse Cholesky" in auto.plan
    dense = VCProblem(stats, fast_paths=False)
    assert "dense block" in dense.plan
    for tau in ([0.4, 0.2], [3.0, 0.0], [0.0, 1.5]):
        a, b = auto.evaluate(tau), dense.evaluate(tau)
        assert a.criterion == pytest.approx(b.criterion, rel=1e-12)
        np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-8 * np.abs(b.gradient).max())


def test_a_cheaper_sparse_factor_is_chosen_over_a_large_dense_block(monkeypatch):
    monkeypatch.setattr(crossed_module, "SPARSE_CONSIDER_BLOCK", 100)
    X, y, factors = _panel(400, 300, 6, seed=2)
    stats = compute_vc_stats(X, y, RandomTerms.from_labels(factors))
    problem = VCProblem(stats)
    assert "sparse Cholesky" in problem.plan
    monkeypatch.setattr(crossed_module, "SPARSE_CONSIDER_BLOCK", 10**9)
    assert "dense block" in VCProblem(stats).plan
