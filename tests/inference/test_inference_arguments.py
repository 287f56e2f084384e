"""Inference on awkward models and arguments: a correct result or an error naming the
problem, never a crash deep in numpy or a silently different computation.

* ``y ~ 0 + (1|g)`` (no fixed effects): lmerTest's type III table has no rows, and the
  exact (R)LRT's null uses the eigenvalues of ``Z'Z`` (``P0 = I``), checked against a
  dense eigendecomposition; lme4's criterion is the reference for the fit.
* ``bootstrap``/``test_random_intercept``: counts and seeds are validated.
* ``rl.anova`` compares models fitted to the same rows with the same grouping factor,
  or says what differs (it once printed Chisq 0 for different grouping factors).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import REFERENCE

import reml_engine as rl
from reml_engine.inference.variance_tests import projected_eigenvalues

with open(REFERENCE / "frontend_reference.json") as fh:
    LME4 = json.load(fh)


@pytest.fixture(scope="module")
def machines() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "machines.csv")


@pytest.fixture(scope="module")
def no_fixed(machines):
    return rl.lmer("score ~ 0 + (1|Worker)", machines)


def test_no_fixed_effects_fit_matches_lme4(no_fixed):
    ref = LME4["machines_no_fixed"]
    assert no_fixed.criterion == pytest.approx(ref["criterion"], abs=1e-6)
    assert no_fixed.var_group == pytest.approx(ref["var_group"], rel=1e-5)
    assert no_fixed.sigma2 == pytest.approx(ref["sigma2"], rel=1e-5)


def test_type3_table_without_terms_is_empty_as_lmertest(no_fixed, machines):
    ref = LME4["machines_no_fixed"]
    for m, rows in ((no_fixed, ref["anova_type3_rows"]),
                    (rl.lmer("score ~ 1 + (1|Worker)", machines), ref["anova_type3_rows_intercept_only"])):
        table = m.anova()
        assert table.shape == (rows, 6)
        assert list(table.columns) == ["sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value"]


def test_exact_test_without_fixed_effects(no_fixed, machines):
    """Z'P0Z = Z'Z: the null's eigenvalues are the group sizes, as a dense
    eigendecomposition gives them."""
    values, mults = projected_eigenvalues(no_fixed.stats)
    Z = pd.get_dummies(machines["Worker"]).to_numpy(dtype=float)
    dense = np.linalg.eigvalsh(Z.T @ Z)
    np.testing.assert_allclose(np.repeat(values, mults), np.sort(dense), rtol=1e-12)
    exact = no_fixed.test_random_intercept("exact", n_sim=2000)
    mixture = no_fixed.test_random_intercept("mixture")
    assert exact.statistic == mixture.statistic > 0
    assert 0.0 <= exact.p_value <= 1.0 and len(exact.null_sample) == 2000
    assert no_fixed.bootstrap(50, seed=3).replicates.shape == (50, 3)


@pytest.mark.parametrize("n_boot", [0, -1, 1.5, True, "10", None])
def test_bootstrap_count_is_validated(no_fixed, n_boot):
    with pytest.raises(rl.ModelDataError, match=r"n_boot must be an integer >= 1"):
        no_fixed.bootstrap(n_boot)


@pytest.mark.parametrize("seed", ["a", -1, 1.5, True])
def test_seeds_are_validated(no_fixed, seed):
    with pytest.raises(rl.ModelDataError, match=r"seed must be None, a non-negative integer or a numpy Generator"):
        no_fixed.bootstrap(10, seed=seed)
    with pytest.raises(rl.ModelDataError, match=r"seed must be"):
        no_fixed.test_random_intercept("exact", n_sim=10, seed=seed)


def test_seed_may_be_a_generator(no_fixed):
    a = no_fixed.bootstrap(5, seed=np.random.default_rng(4)).replicates
    b = no_fixed.bootstrap(5, seed=4).replicates
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("n_sim", [0, -5, 2.5])
def test_exact_test_count_is_validated(no_fixed, n_sim):
    """n_sim=0 once fell back silently to the default 100000 draws."""
    with pytest.raises(rl.ModelDataError, match=r"n_sim must be an integer >= 1"):
        no_fixed.test_random_intercept("exact", n_sim=n_sim)


@pytest.mark.parametrize("method", [None, 3, "bootstrap"])
def test_exact_test_method_is_validated(no_fixed, method):
    with pytest.raises(ValueError, match=r"method must be 'exact' or 'mixture'"):
        no_fixed.test_random_intercept(method)


# -- comparing models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    rng = np.random.default_rng(31)
    n = 80
    g = np.repeat(np.arange(10), 8)
    return pd.DataFrame({
        "y": rng.normal(size=n) + rng.normal(size=10)[g], "x": rng.normal(size=n), "z": rng.normal(size=n),
        "g": g, "h": np.tile(np.arange(8), 10),
    })


def _anova(*models):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return rl.anova(*models)


def test_anova_refuses_different_grouping_factors(panel):
    m0 = rl.lmer("y ~ 1 + (1|g)", panel)
    m1 = rl.lmer("y ~ x + (1|h)", panel)
    with pytest.raises(ValueError, match=r"groups by 'g' and model 2 \(y ~ x \+ \(1\|h\)\) by 'h'"):
        _anova(m0, m1)


def test_anova_refuses_a_grouping_factor_with_other_groups(panel):
    shuffled = panel.assign(g=panel["g"].sample(frac=1.0, random_state=2).to_numpy())
    with pytest.raises(ValueError, match=r"the groups of 'g' differ between model 1 .* and model 2"):
        _anova(rl.lmer("y ~ 1 + (1|g)", panel), rl.lmer("y ~ x + (1|g)", shuffled))


def test_anova_refuses_models_of_different_data(panel):
    other = panel.assign(x=panel["x"] * 2 + 1)
    with pytest.raises(ValueError, match=r"column 'x' has different values in model 1 .* and model 2"):
        _anova(rl.lmer("y ~ x + (1|g)", panel), rl.lmer("y ~ x + z + (1|g)", other))
    with pytest.raises(ValueError, match=r"column 'x' has different values"):
        _anova(rl.ols("y ~ x", panel), rl.lmer("y ~ x + (1|g)", other))


def test_anova_of_the_same_data_in_another_row_order_is_accepted(panel):
    """The checks compare sums, not rows in order: a shuffled copy is the same data."""
    shuffled = panel.sample(frac=1.0, random_state=5)
    table = _anova(rl.lmer("y ~ 1 + (1|g)", panel), rl.lmer("y ~ x + (1|g)", shuffled)).table
    direct = _anova(rl.lmer("y ~ 1 + (1|g)", panel), rl.lmer("y ~ x + (1|g)", panel)).table
    np.testing.assert_allclose(table["Chisq"].iloc[1], direct["Chisq"].iloc[1], rtol=1e-8)


def test_anova_arguments_are_validated(panel):
    m = rl.lmer("y ~ x + (1|g)", panel)
    with pytest.raises(TypeError, match=r"model 2 is a str"):
        rl.anova(m, "y ~ 1 + (1|g)")
    with pytest.raises(rl.ModelDataError, match=r"refit must be True or False"):
        rl.anova(m, m, refit="yes")
