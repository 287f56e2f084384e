"""profile_criterion and criterion_profile: against the dense oracle (V built explicitly),
lm at tau = 0 and lme4's local optima."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import dense_criterion
from reference_data import case_data, case_formula, load_extra_reference

import reml_engine as rl

#: Dense linear algebra against the closed form.
RTOL_DENSE = 1e-9
#: lme4's optimizer precision.
RTOL_LME4 = 1e-6


@pytest.fixture(scope="module")
def seed_fit():
    return rl.lmer(case_formula("seed_x"), case_data("seed_x"))


@pytest.mark.parametrize("case", ["seed_x", "sim_contextual", "sim_negative_icc"])
@pytest.mark.parametrize("REML", [True, False])
def test_parts_equal_the_dense_oracle_over_the_extended_range(case, REML):
    m = rl.lmer(case_formula(case), case_data(case))
    lower = -1.0 / m.stats.max_size
    groups = np.asarray(m.design.groups)
    for tau in (0.999 * lower, 0.5 * lower, 0.0, 0.3, 7.0, 2000.0):
        point = m.profile_criterion(tau, REML=REML)
        dense = dense_criterion(m.design.X, m.design.y, groups, tau, REML=REML)
        assert point.criterion == pytest.approx(dense["criterion"], rel=RTOL_DENSE, abs=1e-9)
        assert point.logdet_V == pytest.approx(dense["logdet_V"], rel=RTOL_DENSE, abs=1e-9)
        assert point.logdet_XtVinvX == pytest.approx(dense["logdet_XtVinvX"], rel=RTOL_DENSE, abs=1e-9)
        assert point.pwrss == pytest.approx(dense["pwrss"], rel=1e-8)
        assert point.sigma2 == pytest.approx(dense["sigma2"], rel=1e-8)
        np.testing.assert_allclose(point.fixef.to_numpy(), dense["beta"], rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(point.vcov.to_numpy(), dense["vcov"], rtol=1e-7, atol=1e-14)
        assert point.var_group == pytest.approx(tau * point.sigma2)


def test_at_the_estimate_it_is_the_fit(seed_fit):
    point = seed_fit.profile_criterion(seed_fit.tau)
    assert point.criterion == pytest.approx(seed_fit.criterion, rel=1e-12)
    np.testing.assert_allclose(point.fixef, seed_fit.fixef, rtol=1e-12)
    np.testing.assert_allclose(point.vcov, seed_fit.vcov, rtol=1e-12)


def test_at_zero_it_is_pooled_least_squares(seed_fit):
    ref = load_extra_reference()["within_fe"]["seed"]["pooled"]
    point = seed_fit.profile_criterion(0.0)
    assert point.fixef["x"] == pytest.approx(ref["coef"], rel=1e-10)
    assert point.fixef["(Intercept)"] == pytest.approx(ref["intercept"], rel=1e-10)
    assert point.se["x"] == pytest.approx(ref["se"], rel=1e-10)


def test_icc_and_tau_give_the_same_point(seed_fit):
    by_icc = seed_fit.profile_criterion(icc=-0.2)
    by_tau = seed_fit.profile_criterion(-0.2 / 1.2)
    assert by_icc.criterion == pytest.approx(by_tau.criterion, rel=1e-13)
    assert by_icc.icc == pytest.approx(-0.2)


def test_below_the_positive_definite_limit_is_an_error(seed_fit):
    with pytest.raises(ValueError, match="positive definite"):
        seed_fit.profile_criterion(icc=-0.5)  # groups of 3: the limit is -1/(3 - 1)
    with pytest.raises(ValueError, match="exactly one"):
        seed_fit.profile_criterion()


def test_a_fit_from_statistics_maps_back_to_the_users_columns(seed_fit):
    from reml_engine.frontend.formula import INTERCEPT_NAME

    names = list(seed_fit.fixef.index)
    m = rl.fit_stats(seed_fit.group_stats, names, names.index(INTERCEPT_NAME))
    point = rl.profile_criterion(m, tau=0.5)
    expected = seed_fit.profile_criterion(0.5)
    np.testing.assert_allclose(point.fixef, expected.fixef, rtol=1e-12)


def test_profile_marks_the_fits_optima(seed_fit):
    profile = rl.criterion_profile(seed_fit)
    assert [(o.tau, o.criterion) for o in profile.optima] == [(o.tau, o.criterion) for o in seed_fit.optima]
    assert profile.icc_lower == pytest.approx(-0.5)
    assert profile.lme4_default.tau == seed_fit.lme4_default.tau
    assert profile.compound_symmetry.tau == seed_fit.compound_symmetry.tau


def test_ml_profile_of_a_reml_fit_finds_the_ml_optima(seed_fit):
    # README of tests/data/r: seed_x/ml has minima at theta 0 (10.997, global, lme4's default)
    # and about 40.7 (15.150).
    ref = load_extra_reference()["_fits"]["seed_x/ml"]
    profile = rl.criterion_profile(seed_fit, REML=False)
    assert len(profile.optima) == 2
    boundary, interior = profile.optima
    assert boundary.tau == 0.0 and boundary.is_global and boundary.is_lme4_default
    assert boundary.criterion == pytest.approx(ref["criterion_used"], rel=RTOL_LME4)
    grid_minimum = ref["grid_local_minima"][1]  # on lme4's theta grid, steps of 0.8%
    assert np.sqrt(interior.tau) == pytest.approx(grid_minimum["theta"], rel=1e-2)
    assert interior.criterion <= grid_minimum["criterion"] + 1e-12
    assert interior.criterion == pytest.approx(grid_minimum["criterion"], rel=1e-5)
