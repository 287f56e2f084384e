"""The sparse path for crossed terms with many coupled levels (reml_engine/varcomp/sparse.py).

The compiled sparse Cholesky factor, its selected inverse and the triangular solves agree
with numpy's dense algebra on random positive definite matrices with fill; the sparse
solver gives the dense oracle's criterion and the dense-block solver's gradient, ranef
and reductions on the same designs (weights, several terms, ratios at 0); the automatic
choice takes it where dense blocks would be too large.

Forced onto small data (the automatic choice with its thresholds at 0), the sparse path
gives the oracle's criterion, parts, beta, covariance, ranef and gradient (V built
explicitly: ``oracle.dense_criterion_terms``, ``DenseProblem(explicit=True)``, central
differences), the same as the general dense-block path, on unbalanced levels with a
level of every term seen in one row only; and the global search on it finds the
estimates the search finds on the dense-block path and on the dense stand-in.
"""

from __future__ import annotations

import numpy as np
import pytest
from oracle import dense_criterion_terms
from varcomp.dense_problem import DenseProblem

from reml_engine.errors import ModelDataError
from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats, find_optima_terms
from reml_engine.varcomp import blocks as blocks_module
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
#: Sparse and dense-block paths: the same exact quantities, different rounding.
PATH_RTOL = 1e-9
#: Central differences of the oracle's criterion (relative step): truncation and
#: rounding both stay below GRADIENT_FD_RTOL of the gradient's scale.
GRADIENT_FD_STEP = 1e-5
GRADIENT_FD_RTOL = 1e-5
#: Estimates found on different paths: the searches refine the same function, so the
#: minima agree far inside the optimizer's own tolerance for "the same point".
ESTIMATE_LOG_TAU_ATOL = 1e-5


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


# -- the sparse path forced onto small data --------------------------------------------


def _unbalanced(seed: int, k: int, weighted: bool) -> dict:
    """Crossed terms with very unequal level counts, and for every term one extra row
    carrying a level of that term seen nowhere else (a level with one row)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(60, 110))
    sizes = [int(s) for s in rng.integers(4, 11, k)]
    codes = np.column_stack([rng.choice(s, size=n, p=rng.dirichlet(np.full(s, 0.5))) for s in sizes])
    lone = np.column_stack([rng.choice(codes[:, i], size=k) for i in range(k)])
    lone[np.arange(k), np.arange(k)] = sizes
    codes = np.vstack([codes, lone])
    factors = [np.unique(codes[:, i], return_inverse=True)[1] for i in range(k)]
    n = len(codes)
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = (0.4 * X[:, 1] + sum(rng.uniform(0.3, 1.5) * rng.normal(size=f.max() + 1)[f] for f in factors)
         + rng.normal(size=n))
    w = rng.uniform(0.4, 2.5, n) if weighted else None
    return {"X": X, "y": y, "factors": factors, "weights": w,
            "names": {f"t{i}": f for i, f in enumerate(factors)}}


UNBALANCED = [(seed, 2 + seed % 2, seed % 3 == 1) for seed in range(6)]


def _forced(d: dict, monkeypatch) -> tuple[VCProblem, VCProblem]:
    """The sparse path by the automatic choice with its thresholds at 0 (small data
    would never take it), and the general dense-block path, on the same statistics."""
    stats = compute_vc_stats(d["X"], d["y"], RandomTerms.from_labels(d["names"]), d["weights"])
    general = VCProblem(stats, fast_paths=False)
    assert "dense block" in general.plan
    with monkeypatch.context() as patch:
        patch.setattr(crossed_module, "SPARSE_CONSIDER_BLOCK", 0)
        patch.setattr(crossed_module, "SPARSE_COST_FACTOR", 0.0)
        forced = VCProblem(stats)
    assert "sparse Cholesky" in forced.plan
    return forced, general


def _oracle_ranef(d: dict, tau, REML: bool) -> list:
    return dense_criterion_terms(d["X"], d["y"], d["factors"], tau, REML, d["weights"])["ranef"]


@pytest.mark.parametrize(("seed", "k", "weighted"), UNBALANCED)
def test_the_designs_have_unbalanced_levels_and_levels_with_one_row(seed, k, weighted):
    d = _unbalanced(seed, k, weighted)
    for f in d["factors"]:
        counts = np.bincount(f)
        assert counts.min() == 1
        assert counts.max() >= 5 * counts.min()


@pytest.mark.parametrize(("seed", "k", "weighted"), UNBALANCED)
def test_forced_sparse_path_equals_the_oracle_and_the_dense_blocks(seed, k, weighted, monkeypatch):
    d = _unbalanced(seed, k, weighted)
    forced, general = _forced(d, monkeypatch)
    by_term = [VCProblem(forced.stats, method="sparse", eliminate=e) for e in range(k)]
    explicit = DenseProblem(d["X"], d["y"], d["factors"], d["weights"], explicit=True)
    rng = np.random.default_rng(seed)
    taus = [np.zeros(k), np.full(k, 0.7)]
    for _ in range(4):
        tau = np.exp(rng.uniform(-5, 4, k))
        tau[rng.uniform(size=k) < 0.3] = 0.0
        taus.append(tau)
    for tau in taus:
        for REML in (True, False):
            ref = dense_criterion_terms(d["X"], d["y"], d["factors"], tau, REML, d["weights"])
            dense_ev = explicit.evaluate(tau, REML)
            b = general.evaluate(tau, REML)
            for problem in (forced, *by_term):
                a = problem.evaluate(tau, REML)
                assert a.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
                assert a.logdet_V == pytest.approx(ref["logdet_V"], rel=ORACLE_RTOL, abs=1e-9)
                assert a.pwrss == pytest.approx(ref["pwrss"], rel=ORACLE_RTOL)
                assert a.sigma2 == pytest.approx(ref["sigma2"], rel=ORACLE_RTOL)
                if REML:
                    assert a.logdet_XtVinvX == pytest.approx(ref["logdet_XtVinvX"], rel=ORACLE_RTOL, abs=1e-9)
                np.testing.assert_allclose(a.beta, ref["beta"], rtol=1e-8, atol=1e-10)
                scale = np.abs(dense_ev.gradient).max()
                np.testing.assert_allclose(a.gradient, dense_ev.gradient, rtol=1e-7, atol=1e-9 * scale)
                assert a.criterion == pytest.approx(b.criterion, rel=PATH_RTOL)
                np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-10 * scale)
                beta, vcov, sigma2 = problem.fixed_effects(tau, REML)
                np.testing.assert_allclose(beta, ref["beta"], rtol=1e-8, atol=1e-10)
                np.testing.assert_allclose(vcov, ref["vcov"], rtol=1e-8, atol=1e-12 * np.abs(ref["vcov"]).max())
                assert sigma2 == pytest.approx(ref["sigma2"], rel=ORACLE_RTOL)
        ranef = forced.ranef(tau)
        for (levels, mode, condvar), name in zip(_oracle_ranef(d, tau, True), d["names"], strict=True):
            got = ranef[name].loc[levels]
            np.testing.assert_allclose(got["mode"], mode, rtol=1e-8, atol=1e-10 * (1 + np.abs(mode).max()))
            np.testing.assert_allclose(got["condvar"], condvar, rtol=1e-8, atol=1e-12 * (1 + condvar.max()))
        for j in range(k):
            xa, xb = forced.reduce_to_term(j, tau), general.reduce_to_term(j, tau)
            t = np.array([0.0, 0.05, 2.0, 90.0])
            np.testing.assert_allclose(xa.criterion(t), xb.criterion(t), rtol=1e-12)
            oracle = [dense_criterion_terms(d["X"], d["y"], d["factors"], np.where(np.arange(k) == j, ti, tau),
                                            True, d["weights"])["criterion"] for ti in t]
            np.testing.assert_allclose(xa.criterion(t), oracle, rtol=ORACLE_RTOL)


@pytest.mark.parametrize(("seed", "k", "weighted"), UNBALANCED[:3])
def test_forced_sparse_gradient_equals_differences_of_the_oracle(seed, k, weighted, monkeypatch):
    d = _unbalanced(seed, k, weighted)
    forced, _ = _forced(d, monkeypatch)
    tau = np.exp(np.random.default_rng(seed).uniform(-2, 2, k))
    for REML in (True, False):
        def crit(t, REML=REML):
            return dense_criterion_terms(d["X"], d["y"], d["factors"], t, REML, d["weights"])["criterion"]

        differences = np.empty(k)
        for j in range(k):
            h = GRADIENT_FD_STEP * tau[j]
            step = np.where(np.arange(k) == j, h, 0.0)
            differences[j] = (crit(tau + step) - crit(tau - step)) / (2 * h)
        gradient = forced.evaluate(tau, REML).gradient
        np.testing.assert_allclose(gradient, differences, rtol=0,
                                   atol=GRADIENT_FD_RTOL * np.abs(differences).max())


@pytest.mark.parametrize(("seed", "k", "weighted"), UNBALANCED[:4])
def test_forced_sparse_path_gives_the_same_estimates(seed, k, weighted, monkeypatch):
    d = _unbalanced(seed, k, weighted)
    forced, general = _forced(d, monkeypatch)
    stand_in = DenseProblem(d["X"], d["y"], d["factors"], d["weights"])
    for REML in (True, False):
        found = [find_optima_terms(problem, REML) for problem in (forced, general, stand_in)]
        reference = found[2].optima
        for summary in found[:2]:
            assert len(summary.optima) == len(reference)
            for a, b in zip(summary.optima, reference, strict=True):
                assert a.criterion == pytest.approx(b.criterion, rel=1e-11)
                assert np.array_equal(a.tau == 0, b.tau == 0), (a.tau, b.tau)
                positive = b.tau > 0
                np.testing.assert_allclose(np.log(a.tau[positive]), np.log(b.tau[positive]), rtol=0,
                                           atol=ESTIMATE_LOG_TAU_ATOL)
        tau = found[0].global_optimum.tau
        ref = dense_criterion_terms(d["X"], d["y"], d["factors"], tau, REML, d["weights"])
        assert found[0].global_optimum.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
        beta, vcov, sigma2 = forced.fixed_effects(tau, REML)
        np.testing.assert_allclose(beta, ref["beta"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(vcov, ref["vcov"], rtol=1e-8, atol=1e-12 * np.abs(ref["vcov"]).max())
        assert sigma2 == pytest.approx(ref["sigma2"], rel=ORACLE_RTOL)


def test_one_large_dense_block_among_small_ones_equals_the_oracle_and_the_sparse_path():
    """Dense blocks of mixed sizes, one above ``blocks.SMALL_BLOCK`` (LAPACK's inverse of
    that block is taken in place of its factor, the small ones in a batch): a staggered
    panel plus islands of units that share no period with it."""
    rng = np.random.default_rng(3)
    X, y, panel = _panel(70, 60, 8, seed=3)
    unit_extra, period_extra = [], []
    for island in range(10):
        for u in range(3):
            for p in range(2):
                for _ in range(int(rng.integers(1, 3))):
                    unit_extra.append(70 + 3 * island + u)
                    period_extra.append(60 + 2 * island + p)
    unit = np.concatenate([panel["unit"], unit_extra])
    period = np.concatenate([panel["period"], period_extra])
    n = len(unit)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = 0.3 * X[:, 1] + rng.normal(size=unit.max() + 1)[unit] + rng.normal(size=period.max() + 1)[period] \
        + rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    stats = compute_vc_stats(X, y, RandomTerms.from_labels({"unit": unit, "period": period}), w)
    for e in (0, 1):
        dense = VCProblem(stats, method="crossed", eliminate=e, fast_paths=False)
        sizes = [(g.size, g.count) for g in dense._solver.layout.groups]
        assert sizes[0][0] > blocks_module.SMALL_BLOCK and sizes[0][1] == 1 and len(sizes) > 1, sizes
        sparse = VCProblem(stats, method="sparse", eliminate=e)
        for tau in ([0.4, 0.2], [3.0, 0.0], [0.0, 1.5], [1e-4, 50.0]):
            a, b = dense.evaluate(tau), sparse.evaluate(tau)
            ref = dense_criterion_terms(X, y, [unit, period], np.array(tau), True, w)
            assert a.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
            assert b.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
            np.testing.assert_allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-10 * np.abs(b.gradient).max())
            ranef = dense.ranef(tau)
            for (levels, mode, condvar), name in zip(ref["ranef"], ("unit", "period"), strict=True):
                got = ranef[name].loc[levels]
                np.testing.assert_allclose(got["mode"], mode, rtol=1e-8, atol=1e-10 * (1 + np.abs(mode).max()))
                np.testing.assert_allclose(got["condvar"], condvar, rtol=1e-8, atol=1e-12 * (1 + condvar.max()))
