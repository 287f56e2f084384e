"""Within/between/pooled estimators, the Hausman test and the Mundlak test.

Against R (extra_reference.json: ``within_fe`` from lm, ``hausman`` from lm and lmer values,
``mundlak`` from lmerTest), dense least squares with explicit group dummies, the dense REML
oracle, and simulation (size and power of the Mundlak test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from oracle import dense_criterion
from reference_data import case_data, case_formula, load_extra_reference

import reml_engine as rl

#: lme4's optimizer stops at a relative precision around 1e-7 on these fits.
RTOL_LME4 = 1e-6
#: The Hausman statistic divides by V_FE - V_RE, a difference of nearly equal numbers
#: (1/56 of V_FE on seed, 1/130 on sim_contextual), which amplifies lme4's optimizer
#: tolerance on V_RE by that factor.
RTOL_HAUSMAN = 2e-5
#: Equal algebra in another order (explicit dummies, dense V).
RTOL_DENSE = 1e-8

CASES = [("seed", "seed_x"), ("sim_contextual", "sim_contextual")]


@pytest.fixture(scope="module")
def extra():
    return load_extra_reference()


def _fit(case):
    return rl.lmer(case_formula(case), case_data(case))


@pytest.mark.parametrize(("key", "case"), CASES)
@pytest.mark.parametrize("estimator", ["within", "between", "pooled"])
def test_least_squares_estimators_match_lm(extra, key, case, estimator):
    ref = extra["within_fe"][key][estimator]
    fn = {"within": rl.within_estimator, "between": rl.between_estimator, "pooled": rl.pooled_estimator}
    est = fn[estimator](_fit(case))
    assert est.fixef["x"] == pytest.approx(ref["coef"], rel=1e-10)
    assert est.se["x"] == pytest.approx(ref["se"], rel=1e-10)
    assert est.df_resid == ref["df_resid"]
    assert np.sqrt(est.sigma2) == pytest.approx(ref["sigma"], rel=1e-10)
    if "intercept" in ref:
        assert est.fixef["(Intercept)"] == pytest.approx(ref["intercept"], rel=1e-10)


def test_seed_within_slope_is_the_issue_value():
    est = rl.within_estimator(_fit("seed_x"))
    assert round(est.fixef["x"], 4) == 0.4625
    assert round(est.se["x"], 5) == 0.04128


def _dummy_ols(X: np.ndarray, y: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """OLS with explicit group dummies: coefficients and covariance of the X columns."""
    D = pd.get_dummies(pd.Series(groups).astype(str)).to_numpy(dtype=float)
    full = np.hstack([X, D])
    beta, *_ = np.linalg.lstsq(full, y, rcond=None)
    resid = y - full @ beta
    rank = np.linalg.matrix_rank(full)
    sigma2 = resid @ resid / (len(y) - rank)
    cov = sigma2 * np.linalg.pinv(full.T @ full)
    k = X.shape[1]
    return beta[:k], cov[:k, :k]


def test_within_estimator_equals_dummy_regression_with_several_columns():
    m = _fit("sim_unbalanced")
    est = rl.within_estimator(m)
    names = list(est.fixef.index)
    cols = [m.design.column_names.index(n) for n in names]
    beta, cov = _dummy_ols(m.design.X[:, cols], m.design.y, m.design.groups)
    np.testing.assert_allclose(est.fixef.to_numpy(), beta, rtol=RTOL_DENSE)
    np.testing.assert_allclose(est.vcov.to_numpy(), cov, rtol=RTOL_DENSE, atol=1e-14)


@pytest.mark.parametrize(("key", "case"), CASES)
@pytest.mark.parametrize(("optimum", "ref_key"), [("global", "reml_global"), ("lme4_default", "reml_lme4_default")])
def test_hausman_matches_r_values(extra, key, case, optimum, ref_key):
    ref = extra["hausman"][key]
    h = rl.hausman(case_formula(case), case_data(case), optimum=optimum)
    assert h.b_within["x"] == pytest.approx(ref["b_fe"], rel=1e-10)
    assert h.v_within.loc["x", "x"] == pytest.approx(ref["v_fe"], rel=1e-10)
    assert h.b_random["x"] == pytest.approx(ref[ref_key]["b_re"], rel=RTOL_LME4)
    assert h.v_random.loc["x", "x"] == pytest.approx(ref[ref_key]["v_re"], rel=RTOL_LME4)
    assert h.statistic == pytest.approx(ref[ref_key]["stat"], rel=RTOL_HAUSMAN)
    assert h.df == ref[ref_key]["df"]
    assert h.p_value == pytest.approx(ref[ref_key]["p_value"], rel=10 * RTOL_HAUSMAN)
    assert h.positive_definite


def test_hausman_accepts_a_fit():
    m = _fit("seed_x")
    assert rl.hausman(m).statistic == rl.hausman(case_formula("seed_x"), case_data("seed_x")).statistic


def test_hausman_random_part_equals_dense_gls():
    m = _fit("sim_unbalanced")
    h = rl.hausman(m)
    dense = dense_criterion(m.design.X, m.design.y, np.asarray(m.design.groups), m.tau, REML=True)
    cols = [m.design.column_names.index(n) for n in h.b_random.index]
    np.testing.assert_allclose(h.b_random.to_numpy(), dense["beta"][cols], rtol=RTOL_DENSE)
    np.testing.assert_allclose(h.v_random.to_numpy(), dense["vcov"][np.ix_(cols, cols)], rtol=RTOL_DENSE)


def _indefinite_data() -> pd.DataFrame:
    """Six groups of three where V_FE - V_RE has a negative eigenvalue (found by search)."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(6), 3)
    x, x2 = rng.normal(size=18), rng.normal(size=18)
    y = 0.5 * x + 0.3 * x2 + rng.normal(size=6)[g] + rng.normal(size=18)
    return pd.DataFrame({"y": y, "x": x, "x2": x2, "g": g})


def test_hausman_reports_an_indefinite_difference_and_uses_a_generalized_inverse():
    h = rl.hausman("y ~ x + x2 + (1|g)", _indefinite_data())
    assert not h.positive_definite
    assert h.eigenvalues.min() < 0
    assert "not positive definite" in h.message
    d = (h.b_within - h.b_random).to_numpy()
    expected = d @ np.linalg.pinv(h.v_diff.to_numpy()) @ d
    assert h.statistic == pytest.approx(expected, rel=1e-8)
    assert h.df == 2


@pytest.mark.parametrize(("key", "case"), CASES)
def test_mundlak_matches_lmertest(extra, key, case):
    row = next(r for r in extra["mundlak"][key]["coefficients"] if r["term"] == "xbar")
    test = rl.mundlak(case_formula(case), case_data(case))
    assert test.terms == ("between(x)",)
    assert test.estimates["between(x)"] == pytest.approx(row["estimate"], rel=RTOL_LME4)
    assert np.sqrt(test.vcov.iloc[0, 0]) == pytest.approx(row["se"], rel=RTOL_LME4)
    assert test.method == "F (Satterthwaite)"
    assert test.f_statistic == pytest.approx(row["t_value"] ** 2, rel=RTOL_LME4)
    assert test.den_df == pytest.approx(row["df"], rel=RTOL_LME4)
    assert test.p_value == pytest.approx(row["p_value"], rel=1e-4)
    assert test.statistic == pytest.approx(row["t_value"] ** 2, rel=RTOL_LME4)


def _simulate(rng, within_slope: float, between_slope: float, groups: int = 15, size: int = 4) -> pd.DataFrame:
    g = np.repeat(np.arange(groups), size)
    x_mean = rng.normal(size=groups)
    x = x_mean[g] + rng.normal(size=groups * size)
    y = (within_slope * (x - x_mean[g]) + between_slope * x_mean[g]
         + 0.7 * rng.normal(size=groups)[g] + rng.normal(size=groups * size))
    return pd.DataFrame({"y": y, "x": x, "g": g})


#: Simulated data sets for the size of the Mundlak test.
N_SIZE = 300
#: Nominal level.
ALPHA = 0.05
#: Accepted rejection rates: about +/- 3.3 binomial SDs around ALPHA for N_SIZE draws.
SIZE_RANGE = (0.02, 0.09)


@pytest.mark.slow
def test_mundlak_holds_its_size_when_effects_are_equal():
    rng = np.random.default_rng(20240601)
    rejections = [rl.mundlak("y ~ x + (1|g)", _simulate(rng, 0.5, 0.5)).p_value < ALPHA for _ in range(N_SIZE)]
    rate = float(np.mean(rejections))
    assert SIZE_RANGE[0] <= rate <= SIZE_RANGE[1]


def test_mundlak_has_power_when_effects_differ():
    rng = np.random.default_rng(7)
    p_values = [rl.mundlak("y ~ x + (1|g)", _simulate(rng, 0.5, -1.5)).p_value for _ in range(40)]
    assert np.mean(np.asarray(p_values) < ALPHA) >= 0.9
