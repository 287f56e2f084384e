"""The optimizer's record and arguments: immutable, honest counts, validated input, and
one term exactly today's single-term scan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from varcomp.dense_problem import DenseProblem
from varcomp.multi_cases import case_problem_data

import reml_engine as rl
from reml_engine.varcomp.lme4_start import lme4_start_theta, lme4_start_theta_from_data
from reml_engine.varcomp.optimizer import (
    GRID_MAX_INNER_LEVELS,
    OUTER_POINTS_PER_UNIT,
    choose_search,
    find_optima_terms,
)


def _seedlike():
    d = case_problem_data("sim_crossed_seedlike")
    return DenseProblem(d["X"], d["y"], d["factors"], term_names=d["terms"]), d


def test_record_is_immutable():
    P, _ = _seedlike()
    s = find_optima_terms(P)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.optima = ()
    best = s.global_optimum
    with pytest.raises(ValueError):
        best.tau[0] = 1.0
    with pytest.raises(ValueError):
        s.refinements[0].end[0] = 1.0


def test_counts_are_the_problems_and_the_search_is_deterministic():
    P, _ = _seedlike()
    s = find_optima_terms(P, REML=False)
    assert s.n_evaluations == P.n_evaluations
    assert s.n_reductions == P.n_reductions
    again = find_optima_terms(P, REML=False)
    assert [(tuple(o.tau), o.criterion) for o in again.optima] == [(tuple(o.tau), o.criterion) for o in s.optima]


def test_grid_record():
    P, _ = _seedlike()
    s = find_optima_terms(P)
    assert s.search == "grid" and s.points_per_unit == OUTER_POINTS_PER_UNIT
    inner = s.inner_term
    assert inner == int(np.argmin(P.nlevels))
    outer = [j for j in range(P.k) if j != inner]
    assert s.outer_grid[inner].size == 0
    assert all(s.outer_grid[j][0] == 0.0 for j in outer)  # the face
    assert s.n_nodes == np.prod([len(s.outer_grid[j]) for j in outer])
    # Every edge scanned; the estimate is the lowest point of its line along every term.
    assert s.edge_terms == P.term_names and s.swept_terms == P.term_names
    assert {j for j, _, _ in s.edge_minima} == set(range(P.k))
    # Every optimum is stationary with a one-sided derivative >= 0 at 0.
    for o in s.optima:
        assert np.all(np.abs(o.tau * o.gradient) < 1e-5)


def test_three_terms_lower_density_within_the_node_budget():
    d = case_problem_data("sim_nested_boundary")
    P = DenseProblem(d["X"], d["y"], d["factors"], term_names=d["terms"])
    s = find_optima_terms(P, search="grid", max_nodes=120)
    assert s.n_nodes <= 120
    assert 0 < s.points_per_unit < OUTER_POINTS_PER_UNIT


def test_arguments_are_validated():
    P, _ = _seedlike()
    with pytest.raises(ValueError, match="search"):
        find_optima_terms(P, search="dense")
    with pytest.raises(ValueError, match="points_per_unit"):
        find_optima_terms(P, points_per_unit=0)
    with pytest.raises(ValueError, match="lme4_start"):
        find_optima_terms(P, lme4_start=[1.0])
    with pytest.raises(ValueError, match="lme4_start"):
        find_optima_terms(P, lme4_start=[1.0, -1.0])


def test_choose_search_by_levels():
    assert choose_search((5, 3), 1) == "grid"
    # InstEval (s, d, dept) and subjects x items at 1e6 rows: budgeted.
    assert choose_search((2972, 1128, 14), 2) == "budgeted"
    assert choose_search((10_000, 1000), 1) == "budgeted"
    assert choose_search((GRID_MAX_INNER_LEVELS + 1, GRID_MAX_INNER_LEVELS + 1), 0) == "budgeted"


@pytest.mark.parametrize("REML", [True, False])
def test_one_term_is_the_single_term_scan(REML):
    """k = 1: the optima are today's (rl.lmer on the seed data), not refined."""
    df = rl.load_seed()
    X = np.column_stack([np.ones(len(df)), df["x"]])
    P = DenseProblem(X, df["y"], [df["f"].astype(str).to_numpy()])
    s = find_optima_terms(P, REML)
    fit = rl.lmer("y ~ x + (1|f)", data=df, REML=REML)
    mine = sorted((float(o.tau[0]), o.criterion) for o in s.optima)
    today = sorted((o.tau, o.criterion) for o in fit.optima)
    np.testing.assert_allclose(mine, today, rtol=1e-10, atol=1e-12)
    assert s.search == "exact"
    assert s.global_optimum.criterion == pytest.approx(fit.criterion, rel=1e-12)


def test_lme4_start_formula():
    """sqrt(var(ave(y, f)) / (var(y) - sum var(ave(y, f)))), and ones when that is not positive."""
    y = np.array([1.0, 2.0, 4.0, 7.0, 11.0, 16.0])
    f = np.array(["a", "a", "b", "b", "c", "c"])
    g = np.array(["u", "v", "u", "v", "u", "v"])
    ave_f = pd.Series(y).groupby(f).transform("mean")
    ave_g = pd.Series(y).groupby(g).transform("mean")
    v_e = y.var(ddof=1) - ave_f.var() - ave_g.var()
    expected = np.sqrt([ave_f.var() / v_e, ave_g.var() / v_e])
    np.testing.assert_allclose(lme4_start_theta_from_data(y, [f, g]), expected, rtol=1e-12)
    # Every row its own level: v_e <= 0, lme4 keeps theta = 1.
    np.testing.assert_array_equal(lme4_start_theta(3, 6.0, 14.0, [np.ones(3)], [np.array([1.0, 2.0, 3.0])]), [1.0])
