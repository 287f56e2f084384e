"""The engine against the dense oracle (V built explicitly) on generated designs.

Nested, crossed, partially crossed and mixed designs with prior weights and offsets,
singletons and empty cells, some tau at 0, tiny and large tau: criterion and its parts,
beta, its covariance, the conditional modes and variances of every term agree with
``tests/oracle.py::dense_criterion_terms`` to 1e-9. The analytic gradient agrees with
finite differences, ``reduce_to_term`` with ``evaluate``, and the closed form for
nested terms with the general dense-block path on the same data.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle import dense_criterion_terms

from reml_engine.core.statistics import compute_group_stats
from reml_engine.frontend.groups import factorize_groups
from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
from reml_engine.varcomp import crossed as crossed_module

#: Agreement with the dense oracle (relative).
ORACLE_RTOL = 1e-9

TAU_VALUES = [0.0, 1e-9, 1e-4, 0.05, 0.7, 3.0, 40.0, 800.0]


def _factors(kind: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Grouping factors of one kind of design (labels as drawn; empty cells and
    singleton levels come with small n)."""
    if kind == "nested2":
        outer = rng.integers(0, 4, n)
        return {"inner": outer * 10 + rng.integers(0, 3, n), "outer": outer}
    if kind == "nested3":
        top = rng.integers(0, 2, n)
        mid = top * 10 + rng.integers(0, 3, n)
        return {"low": mid * 10 + rng.integers(0, 3, n), "mid": mid, "top": top}
    if kind == "crossed2":
        return {"a": rng.integers(0, 6, n), "b": rng.integers(0, 4, n)}
    if kind == "crossed3":
        return {"a": rng.integers(0, 5, n), "b": rng.integers(0, 4, n), "c": rng.integers(0, 3, n)}
    if kind == "mixed":
        # (1|a/b) + (1|c): a hierarchy crossed with a third factor.
        a = rng.integers(0, 3, n)
        return {"b:a": a * 10 + rng.integers(0, 3, n), "a": a, "c": rng.integers(0, 4, n)}
    if kind == "mixed_deep":
        # (1|top/a/b) + (1|c): a three-level hierarchy crossed with a fourth factor.
        top = rng.integers(0, 2, n)
        a = top * 10 + rng.integers(0, 3, n)
        return {"b": a * 10 + rng.integers(0, 2, n), "a": a, "top": top, "c": rng.integers(0, 3, n)}
    if kind == "blocks":
        # Two crossed factors that only meet within groups: several dense blocks.
        g = rng.integers(0, 3, n)
        return {"a": g * 10 + rng.integers(0, 3, n), "b": g * 10 + rng.integers(0, 2, n)}
    if kind == "one":
        return {"g": rng.integers(0, 7, n)}
    raise KeyError(kind)


KINDS = ["nested2", "nested3", "crossed2", "crossed3", "mixed", "mixed_deep", "blocks", "one"]


@st.composite
def designs(draw, kinds=tuple(KINDS)):
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(8, 45))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    factors = _factors(kind, n, rng)
    p = draw(st.integers(0, 2))
    columns = [np.ones(n)] + [rng.normal(size=n) * 3 + 50 * rng.normal() for _ in range(p)]
    if draw(st.booleans()):
        # A column constant within the first factor's levels (a level-level covariate).
        first = next(iter(factors.values()))
        columns.append(rng.normal(size=first.max() + 1)[first])
    X = np.column_stack(columns)
    assume(np.linalg.matrix_rank(X) == X.shape[1] and n > X.shape[1] + 1)
    y = rng.normal(size=n) * 2 + 100
    for labels in factors.values():
        y = y + rng.normal(size=labels.max() + 1)[labels]
    weights = rng.uniform(0.2, 5.0, n) if draw(st.booleans()) else None
    offset = rng.normal(size=n) * 3 if draw(st.booleans()) else None
    tau = np.array([draw(st.sampled_from(TAU_VALUES)) for _ in factors])
    return kind, X, y, factors, weights, offset, tau


def _problem(X, y, factors, weights, offset, **kwargs):
    return VCProblem(compute_vc_stats(X, y, RandomTerms.from_labels(factors), weights, offset), **kwargs)


def _close(a, b, rtol=ORACLE_RTOL):
    return np.allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(b)))))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans())
def test_criterion_matches_dense_oracle(design, REML):
    kind, X, y, factors, weights, offset, tau = design
    problem = _problem(X, y, factors, weights, offset)
    ev = problem.evaluate(tau, REML=REML)
    ref = dense_criterion_terms(X, y, list(factors.values()), tau, REML, weights, offset)
    assert ev.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
    assert ev.logdet_V == pytest.approx(ref["logdet_V"], rel=ORACLE_RTOL, abs=ORACLE_RTOL)
    assert ev.pwrss == pytest.approx(ref["pwrss"], rel=ORACLE_RTOL)
    assert ev.sigma2 == pytest.approx(ref["sigma2"], rel=ORACLE_RTOL)
    if REML:
        assert ev.logdet_XtVinvX == pytest.approx(ref["logdet_XtVinvX"], rel=ORACLE_RTOL, abs=1e-8)
    assert _close(ev.beta, ref["beta"])
    beta, vcov, sigma2 = problem.fixed_effects(tau, REML=REML)
    assert _close(beta, ref["beta"]) and _close(vcov, ref["vcov"], 1e-8)
    ranef = problem.ranef(tau, REML=REML)
    for (name, frame), (levels, mode, condvar) in zip(ranef.items(), ref["ranef"], strict=True):
        assert np.array_equal(frame.index.to_numpy(), levels), name
        assert _close(frame["mode"].to_numpy(), mode, 1e-8)
        assert _close(frame["condvar"].to_numpy(), condvar, 1e-8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(kinds=("nested2", "nested3")))
def test_nested_closed_form_equals_dense_blocks(design):
    """The fast path (closed form per level) gives the general path's answer."""
    kind, X, y, factors, weights, offset, tau = design
    fast = _problem(X, y, factors, weights, offset)
    general = _problem(X, y, factors, weights, offset, method="crossed")
    assert fast.plan.startswith("nested") and general.plan.startswith("crossed")
    a, b = fast.evaluate(tau), general.evaluate(tau)
    assert a.criterion == pytest.approx(b.criterion, rel=1e-10)
    assert _close(a.gradient, b.gradient, 1e-7)
    for j in range(fast.k):
        ra, rb = fast.reduce_to_term(j, tau), general.reduce_to_term(j, tau)
        t = np.array([0.0, 0.4, 7.0])
        assert _close(ra.criterion(t), rb.criterion(t), 1e-10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(kinds=("mixed", "mixed_deep", "nested3", "crossed3")))
def test_every_elimination_chain_gives_the_same_problem(design):
    """Whatever chain of nested terms is eliminated before the dense blocks (one term, or
    a hierarchy innermost first), criterion, gradient, conditional modes and variances
    and the one-dimensional reductions agree with the dense oracle and each other."""
    kind, X, y, factors, weights, offset, tau = design
    stats = compute_vc_stats(X, y, RandomTerms.from_labels(factors), weights, offset)
    ref = dense_criterion_terms(X, y, list(factors.values()), tau, True, weights, offset)
    reference_gradient = VCProblem(stats).evaluate(tau).gradient
    for chain in crossed_module.nesting_chains(stats.structure):
        problem = VCProblem(stats, method="crossed", eliminate=chain)
        ev = problem.evaluate(tau)
        assert ev.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL), chain
        assert _close(ev.gradient, reference_gradient, 1e-7), chain
        for (_, mode, condvar), frame in zip(ref["ranef"], problem.ranef(tau).values(), strict=True):
            assert _close(frame["mode"].to_numpy(), mode, 1e-8) and _close(frame["condvar"].to_numpy(), condvar, 1e-8)
        for j in range(problem.k):
            reduction = problem.reduce_to_term(j, tau)
            assert reduction.criterion([0.7])[0] == pytest.approx(
                problem.evaluate(reduction.taus(0.7), gradient=False).criterion, rel=1e-9)


def test_eliminate_must_be_a_chain():
    rng = np.random.default_rng(4)
    factors = _factors("mixed", 40, rng)
    stats = compute_vc_stats(np.ones((40, 1)), rng.normal(size=40), RandomTerms.from_labels(factors))
    assert VCProblem(stats, method="crossed", eliminate=(0, 1)).plan.startswith("crossed: eliminate 'b:a'")
    with pytest.raises(ValueError, match="nested in the next"):
        VCProblem(stats, method="crossed", eliminate=(1, 0))
    with pytest.raises(ValueError, match="leaving one out"):
        VCProblem(stats, method="crossed", eliminate=(0, 1, 2))


def _finite_difference(problem, tau, j, REML):
    """Central difference inside, a second-order one-sided difference at 0."""
    def crit(t):
        x = tau.copy()
        x[j] = t
        return problem.evaluate(x, REML=REML, gradient=False).criterion

    if tau[j] == 0.0:
        h = 1e-6
        return (-3 * crit(0.0) + 4 * crit(h) - crit(2 * h)) / (2 * h)
    h = 1e-4 * tau[j]
    return (crit(tau[j] + h) - crit(tau[j] - h)) / (2 * h)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans())
def test_gradient_matches_finite_differences(design, REML):
    kind, X, y, factors, weights, offset, tau = design
    tau = np.where((tau > 0) & (tau < 1e-3), 1e-3, np.minimum(tau, 50.0))
    problem = _problem(X, y, factors, weights, offset)
    ev = problem.evaluate(tau, REML=REML)
    for j in range(problem.k):
        fd = _finite_difference(problem, tau, j, REML)
        scale = max(1.0, abs(fd), float(np.abs(ev.gradient).max()) * 1e-3)
        assert abs(ev.gradient[j] - fd) <= 1e-5 * scale, (j, ev.gradient, fd)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans())
def test_reduce_to_term_matches_evaluate(design, REML):
    kind, X, y, factors, weights, offset, tau = design
    problem = _problem(X, y, factors, weights, offset)
    t = np.array([0.0, 1e-6, 0.5, 200.0])
    for j in range(problem.k):
        reduction = problem.reduce_to_term(j, tau)
        assert (reduction.kappa > 0).all()
        out = reduction.evaluate(t, REML=REML)
        for i, ti in enumerate(t):
            ev = problem.evaluate(reduction.taus(ti), REML=REML)
            assert out["criterion"][i] == pytest.approx(ev.criterion, rel=1e-9)
            assert out["derivative"][i] == pytest.approx(ev.gradient[j], rel=1e-7, abs=1e-7 * (1 + abs(ev.gradient).max()))
            assert _close(out["beta"][i], ev.beta, 1e-8)


def test_reduction_pooled_stats_give_the_single_term_criterion():
    """``constant + reml_engine.criterion`` on the pooled statistics is the criterion."""
    from reml_engine.core.criterion import criterion as single_term_criterion

    rng = np.random.default_rng(3)
    factors = _factors("crossed3", 60, rng)
    X = np.column_stack([np.ones(60), rng.normal(size=60)])
    y = rng.normal(size=60) + factors["a"]
    problem = _problem(X, y, factors, rng.uniform(0.5, 2, 60), None)
    tau = np.array([0.3, 1.1, 0.05])
    for j in range(3):
        reduction = problem.reduce_to_term(j, tau)
        stats = reduction.pooled_stats()
        for t in (0.0, 0.2, 5.0):
            expected = problem.evaluate(reduction.taus(t), gradient=False).criterion
            assert reduction.constant + single_term_criterion(t, stats) == pytest.approx(expected, rel=1e-9)


def test_one_term_unit_weights_is_the_single_term_engine():
    """k = 1: the criterion, beta and the reduction's sizes are today's."""
    from reml_engine.core.criterion import criterion_parts

    rng = np.random.default_rng(5)
    g = rng.integers(0, 9, 70)
    X = np.column_stack([np.ones(70), rng.normal(size=70) + 3])
    y = rng.normal(size=70) + rng.normal(size=9)[g]
    problem = _problem(X, y, {"g": g}, None, None)
    groups = factorize_groups(g)
    pooled = compute_group_stats(X, y, groups, np.zeros(3)).pooled()
    for tau in (0.0, 0.4, 12.0):
        parts = criterion_parts(tau, pooled)
        ev = problem.evaluate([tau])
        assert ev.criterion == pytest.approx(parts.criterion, rel=1e-11)
        assert ev.gradient[0] == pytest.approx(parts.derivative, rel=1e-8, abs=1e-10)
        assert np.allclose(ev.beta, parts.beta, rtol=1e-10)
    reduction = problem.reduce_to_term(0, [0.0])
    assert np.allclose(np.sort(reduction.kappa), np.sort(np.bincount(g).astype(float)))


@pytest.mark.parametrize("pool", ["dense", "sparse", "visited"])
def test_pooled_schur_complement_equals_row_by_row(monkeypatch, pool):
    """Levels of equal weight pooled into dense matrices (summed by BLAS or as sparse
    outer products) give the same numbers as visiting every level's row of the table."""
    rng = np.random.default_rng(11)
    n = 900
    subj = rng.integers(0, 120, n)
    item = rng.integers(0, 70, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=120)[subj] + rng.normal(size=70)[item] + rng.normal(size=n)
    if pool == "visited":
        monkeypatch.setattr(crossed_module, "POOL_GAIN", np.inf)
    else:
        monkeypatch.setattr(crossed_module, "POOL_GAIN", 0.0)
        monkeypatch.setattr(crossed_module, "POOL_MIN_BLOCK", 1)
        monkeypatch.setattr(crossed_module, "DENSE_POOL_RATIO", np.inf if pool == "dense" else 0.0)
        monkeypatch.setattr(crossed_module, "DENSE_POOL_ROWS", 7)
    problem = _problem(X, y, {"subj": subj, "item": item}, None, None)
    assert ("0 pooled" in problem.plan) == (pool == "visited"), problem.plan
    tau = np.array([0.6, 0.25])
    ev = problem.evaluate(tau)
    ref = dense_criterion_terms(X, y, [subj, item], tau)
    assert ev.criterion == pytest.approx(ref["criterion"], rel=ORACLE_RTOL)
    h = 1e-6
    for j in range(2):
        step = np.eye(2)[j] * h
        fd = (problem.evaluate(tau + step).criterion - problem.evaluate(tau - step).criterion) / (2 * h)
        assert ev.gradient[j] == pytest.approx(fd, rel=1e-6)


def test_extreme_tau_stays_finite_and_continuous():
    """Very large and very small tau: finite, and the limits are approached smoothly."""
    rng = np.random.default_rng(2)
    for kind in ("nested3", "crossed2", "mixed"):
        factors = _factors(kind, 50, rng)
        X = np.column_stack([np.ones(50), rng.normal(size=50)])
        y = rng.normal(size=50) + 1e3
        problem = _problem(X, y, factors, rng.uniform(0.5, 2, 50), rng.normal(size=50))
        k = problem.k
        at_zero = problem.evaluate(np.zeros(k)).criterion
        near_zero = problem.evaluate(np.full(k, 1e-12)).criterion
        assert near_zero == pytest.approx(at_zero, rel=1e-9)
        for big in (1e6, 1e9):
            ev = problem.evaluate(np.full(k, big))
            assert np.isfinite(ev.criterion) and np.isfinite(ev.gradient).all()


def test_invalid_tau_is_refused():
    rng = np.random.default_rng(0)
    factors = _factors("crossed2", 30, rng)
    problem = _problem(np.ones((30, 1)), rng.normal(size=30), factors, None, None)
    with pytest.raises(ValueError, match="one value per term"):
        problem.evaluate([1.0])
    with pytest.raises(ValueError, match=">= 0"):
        problem.evaluate([1.0, -0.1])
    with pytest.raises(ValueError, match=">= 0"):
        problem.evaluate([np.nan, 1.0])
    with pytest.raises(ValueError, match="term index"):
        problem.reduce_to_term(2, [1.0, 1.0])


def test_uncompiled_kernels_give_the_same_numbers():
    """The kernels run as plain Python too (NUMBA_DISABLE_JIT=1): statistics through the
    hashed tables, a chain before a pooled dense block, and a nested hierarchy agree with
    the dense oracle there."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, sys, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "sys.path.insert(0, 'tests')\n"
        "from oracle import dense_criterion_terms\n"
        "from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats, crossed, statistics\n"
        "statistics.DENSE_TABLE_MAX_CELLS = 0\n"
        "crossed.POOL_MIN_BLOCK = 1\n"
        "crossed.POOL_GAIN = 0.0\n"
        "rng = np.random.default_rng(7)\n"
        "n = 60\n"
        "a = rng.integers(0, 3, n)\n"
        "factors = {'b:a': a * 10 + rng.integers(0, 3, n), 'a': a, 'c': rng.integers(0, 4, n)}\n"
        "X = np.column_stack([np.ones(n), rng.normal(size=n)])\n"
        "y = rng.normal(size=n) + a\n"
        "w = rng.uniform(0.5, 2, n)\n"
        "tau = np.array([0.4, 1.3, 0.6])\n"
        "for facs, method in ((factors, 'crossed'), ({'b:a': factors['b:a'], 'a': a}, 'auto')):\n"
        "    stats = compute_vc_stats(X, y, RandomTerms.from_labels(facs), w, None)\n"
        "    problem = VCProblem(stats, method=method)\n"
        "    t = tau[:len(facs)]\n"
        "    ev = problem.evaluate(t)\n"
        "    ref = dense_criterion_terms(X, y, list(facs.values()), t, True, w)\n"
        "    assert abs(ev.criterion - ref['criterion']) < 1e-9 * abs(ref['criterion']), (ev.criterion, ref)\n"
        "    assert np.isfinite(ev.gradient).all()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
