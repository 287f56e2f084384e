"""Every compiled fast path gives the general path's answer on the same inputs.

* the compiled 1-D scan (:func:`reml_engine.varcomp.scan.scan_pooled`) finds the minima
  that :func:`reml_engine.optimizer.find_optima` finds, on reductions of the reference
  cases and of generated designs, REML and ML, at ratios from 0 to large;
* the one-call small crossed path and the compiled profiling
  (``VCProblem(fast_paths=True)``, the default) give the criterion, its parts, beta, the
  gradient and the reductions of ``VCProblem(fast_paths=False)``.

The general path itself is checked against the dense oracle and lme4 elsewhere
(test_criterion_oracle.py, test_criterion_reference.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from varcomp.engine_cases import WEIGHT_CASES, multi_design, weights_design

from reml_engine.core.optimizer import find_optima
from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
from reml_engine.varcomp.optimizer import term_stats
from reml_engine.varcomp.scan import scan_pooled

#: Fast and general paths agree to rounding: relative, on values of order one or more.
PATH_RTOL = 1e-9
#: The minima of the two scans: both refine a root of the derivative to 4 eps relative.
MINIMUM_RTOL = 1e-9

CASES = ["penicillin", "pastes", "oats", "sim_subjects_items", "sim_nested_boundary", "sim_crossed_seedlike"]


def _generated(kind: str, seed: int, weighted: bool) -> VCProblem:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 160))
    if kind == "crossed2":
        factors = {"a": rng.integers(0, 9, n), "b": rng.integers(0, 5, n)}
    elif kind == "crossed3":
        factors = {"a": rng.integers(0, 7, n), "b": rng.integers(0, 4, n), "c": rng.integers(0, 3, n)}
    elif kind == "sparse":
        # Few rows per cell: partially crossed, singletons.
        factors = {"a": rng.integers(0, 25, n), "b": rng.integers(0, 12, n)}
    else:
        outer = rng.integers(0, 4, n)
        factors = {"inner": outer * 10 + rng.integers(0, 3, n), "outer": outer}
    x = rng.normal(size=n)
    codes = list(factors.values())
    y = (0.5 * x + sum(rng.normal(size=c.max() + 1)[c] * rng.uniform(0.2, 2) for c in codes)
         + rng.normal(size=n))
    X = np.column_stack([np.ones(n), x, rng.integers(0, 2, n)])
    w = rng.uniform(0.3, 3.0, n) if weighted else None
    return VCProblem(compute_vc_stats(X, y, RandomTerms.from_labels(factors), w, None))


def _reference(case: str) -> VCProblem:
    return multi_design(case).problem()


def _taus(k: int, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    out = [np.zeros(k), np.full(k, 0.5)]
    for _ in range(count):
        tau = np.exp(rng.uniform(-9, 7, k))
        tau[rng.uniform(size=k) < 0.25] = 0.0
        out.append(tau)
    return out


def _problems():
    for case in CASES:
        yield case, _reference(case)
    for case in WEIGHT_CASES:
        yield case, weights_design(case).problem()
    for kind in ("crossed2", "crossed3", "sparse", "nested"):
        for seed in range(3):
            yield f"{kind}-{seed}", _generated(kind, seed, weighted=seed == 1)


PROBLEMS = list(_problems())


@pytest.mark.parametrize(("name", "problem"), PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_compiled_scan_finds_find_optimas_minima(name, problem):
    rng = np.random.default_rng(11)
    compared = 0
    for tau in _taus(problem.k, rng, 6):
        for j in range(problem.k):
            stats = term_stats(problem.reduce_to_term(j, tau), problem.nobs)
            for REML in (True, False):
                fast = scan_pooled(stats, REML)
                reference = find_optima(stats, REML).optima
                if fast is None:
                    continue
                compared += 1
                t, criterion = fast
                assert len(t) == len(reference), (name, j, tau, t, [o.tau for o in reference])
                np.testing.assert_allclose(t, [o.tau for o in reference], rtol=MINIMUM_RTOL, atol=0)
                np.testing.assert_allclose(criterion, [o.criterion for o in reference], rtol=1e-12, atol=1e-9)
    # The fast path is the one taken: it hands over only in unusual cases.
    assert compared >= 0.9 * (len(_taus(problem.k, rng, 6)) * problem.k * 2)


@pytest.mark.parametrize(("name", "problem"), PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_fast_evaluation_and_reduction_equal_the_general_path(name, problem):
    general = VCProblem(problem.stats, fast_paths=False, method=problem.method)
    assert general.plan == problem.plan
    rng = np.random.default_rng(5)
    for tau in _taus(problem.k, rng, 8):
        for REML in (True, False):
            a = problem.evaluate(tau, REML)
            b = general.evaluate(tau, REML)
            for key in ("criterion", "logdet_V", "pwrss", "sigma2"):
                assert getattr(a, key) == pytest.approx(getattr(b, key), rel=PATH_RTOL, abs=1e-12), key
            if REML:
                assert a.logdet_XtVinvX == pytest.approx(b.logdet_XtVinvX, rel=PATH_RTOL, abs=1e-8)
            np.testing.assert_allclose(a.beta, b.beta, rtol=1e-8, atol=1e-10 * (1 + np.abs(b.beta).max()))
            scale = np.abs(b.gradient) + 1e-6 * (1.0 + np.abs(b.criterion))
            assert np.all(np.abs(a.gradient - b.gradient) <= 1e-7 * scale), (a.gradient, b.gradient)
            no_gradient = problem.evaluate(tau, REML, gradient=False)
            assert no_gradient.gradient is None
            assert no_gradient.criterion == pytest.approx(a.criterion, rel=1e-13)
        for j in range(problem.k):
            ra, rb = problem.reduce_to_term(j, tau), general.reduce_to_term(j, tau)
            assert ra.constant == pytest.approx(rb.constant, rel=PATH_RTOL, abs=1e-9)
            np.testing.assert_allclose(ra.kappa, rb.kappa, rtol=1e-9, atol=1e-12 * rb.kappa.max())
            t = np.array([0.0, 1e-3, 0.3, 4.0, 200.0])
            np.testing.assert_allclose(ra.criterion(t), rb.criterion(t), rtol=PATH_RTOL)
            np.testing.assert_allclose(ra.derivative(t), rb.derivative(t), rtol=1e-7,
                                       atol=1e-7 * np.abs(rb.derivative(t)).max())


def test_the_small_crossed_path_is_taken_where_it_applies():
    assert _reference("penicillin")._small is not None
    assert _reference("sim_subjects_items")._small is not None
    assert _reference("pastes")._small is None            # nested: the closed form
    assert VCProblem(_reference("penicillin").stats, fast_paths=False)._small is None
