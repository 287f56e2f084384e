"""The crossed solver's reuse of earlier solves (``CrossedSolver._factored`` and
``_level_inputs``) gives what a fresh factorization gives, bit for bit: beta, its
covariance and the random effects after the search's evaluations equal those of a
problem that never evaluated; the caches stay bounded and out of pickles. The sweep along
a core term whose block has every ratio at 0 (no triangular solve) matches the dense
brute-force REML.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from oracle import dense_criterion_terms

from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
from reml_engine.varcomp import crossed as C

#: The dense oracle's agreement (as in test_criterion_oracle).
ORACLE_RTOL = 1e-9


def _data(seed=3, n_subjects=120, n_items=60, share=0.4):
    rng = np.random.default_rng(seed)
    subj, item = np.nonzero(rng.random((n_subjects, n_items)) < share)
    n = len(subj)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    y = X[:, 1] + rng.standard_normal(n_subjects)[subj] + rng.standard_normal(n_items)[item] + rng.standard_normal(n)
    return X, y, {"subj": subj, "item": item}


def _problem(X, y, factors):
    problem = VCProblem(compute_vc_stats(X, y, RandomTerms.from_labels(factors), None, None), fast_paths=False)
    assert problem._solver.kind == "crossed", problem.plan
    return problem


@pytest.mark.parametrize("pool", [False, True])
def test_results_after_the_search_equal_a_fresh_factorization(monkeypatch, pool):
    if pool:
        monkeypatch.setattr(C, "POOL_GAIN", 0.0)
        monkeypatch.setattr(C, "POOL_MIN_BLOCK", 1)
    X, y, factors = _data()
    used, fresh = _problem(X, y, factors), _problem(X, y, factors)
    assert bool(used._solver.pooled) == pool
    tau = np.array([0.45, 0.3])
    # The search's last evaluations: the optimum, the Hessian's steps, a polish step.
    for t in (tau, tau * [1.0001, 1.0], tau * [1.0, 1.0001], tau * 1.01):
        used.evaluate(t)
    assert used._solver._level_inputs and used._solver._factored
    for a, b in zip(used.fixed_effects(tau), fresh.fixed_effects(tau), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not fresh._solver._level_inputs
    ranef_used, ranef_fresh = used.ranef(tau), fresh.ranef(tau)
    for name in ranef_fresh:
        pd.testing.assert_frame_equal(ranef_used[name], ranef_fresh[name], check_exact=True)
    # The kept arrays are not handed out: a caller changing a result changes nothing kept.
    kept = used._solver._level_inputs[tau.tobytes()]
    R_terms, cond_terms = used._solver.level_parts(tau)
    assert not any(np.shares_memory(a, b) for a in [*R_terms, *cond_terms] for b in kept[1:])


def test_caches_are_bounded_and_left_out_of_pickles():
    X, y, factors = _data(seed=5)
    problem = _problem(X, y, factors)
    before = pickle.dumps(problem)
    for t in np.linspace(0.1, 2.0, 3 * C.LEVEL_CACHE_ENTRIES):
        problem.evaluate([t, 0.5 * t])
    assert 0 < len(problem._solver._level_inputs) <= C.LEVEL_CACHE_ENTRIES
    assert pickle.dumps(problem) == before
    copy = pickle.loads(before)
    assert not copy._solver._level_inputs and not copy._solver._factored
    assert copy.evaluate([0.3, 0.2]).criterion == problem.evaluate([0.3, 0.2]).criterion


def test_no_level_inputs_kept_beyond_the_byte_limit(monkeypatch):
    monkeypatch.setattr(C, "LEVEL_CACHE_BYTES", 1)
    X, y, factors = _data(seed=6)
    problem = _problem(X, y, factors)
    problem.evaluate([0.4, 0.2])
    assert not problem._solver._level_inputs
    fresh = _problem(X, y, factors)
    pd.testing.assert_frame_equal(problem.ranef([0.4, 0.2])["subj"], fresh.ranef([0.4, 0.2])["subj"],
                                  check_exact=True)


@pytest.mark.parametrize("pool", [False, True])
def test_sweep_along_the_core_term_matches_the_oracle(monkeypatch, pool):
    """The reduction to the core term (its block's ratios all 0: the triangular solve is
    skipped) against the dense criterion along that line."""
    if pool:
        monkeypatch.setattr(C, "POOL_GAIN", 0.0)
        monkeypatch.setattr(C, "POOL_MIN_BLOCK", 1)
    X, y, factors = _data(seed=9, n_subjects=60, n_items=25)
    problem = _problem(X, y, factors)
    core = problem._solver.core
    assert core == [1], problem.plan
    reduction = problem.reduce_to_term(1, [0.6, 0.0])
    for t in (0.0, 0.05, 0.7, 9.0):
        expected = dense_criterion_terms(X, y, [factors["subj"], factors["item"]], np.array([0.6, t]))["criterion"]
        assert float(reduction.criterion([t])[0]) == pytest.approx(expected, rel=ORACLE_RTOL)
