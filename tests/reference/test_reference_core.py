"""The core fit against lme4 and nlme on every reference case, REML and ML.

Reference values: ../shared/reference/reference.json (copied to tests/data/reference), the
global optimum of lme4's own criterion (grid scan, then lmer restarted from the best point).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import (
    CASE_NAMES,
    NLME_AT_A_LOCAL_OPTIMUM,
    as_list,
    case_data,
    case_formula,
    lme4_name,
    load_reference,
)

import reml_engine as rl

REF = load_reference()
METHODS = ["reml", "ml"]

pytestmark = pytest.mark.reference


def _fit(case: str, method: str) -> rl.LmerFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return rl.lmer(case_formula(case), case_data(case), REML=(method == "reml"))


@pytest.fixture(scope="module")
def fits() -> dict:
    return {(c, m): _fit(c, m) for c in CASE_NAMES for m in METHODS}


def _by_lme4_name(series: pd.Series) -> pd.Series:
    return series.rename(lme4_name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_criterion_is_global_optimum(fits, case, method):
    m, ref = fits[case, method], REF[case][method]
    # Never worse than lme4's global optimum, and equal to it within 1e-6.
    assert m.criterion <= ref["criterion"] + 1e-6
    assert m.criterion == pytest.approx(ref["criterion"], abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_estimates_match_lme4(fits, case, method):
    m, ref = fits[case, method], REF[case][method]
    fixef = _by_lme4_name(m.fixef)
    se = _by_lme4_name(m.se)
    for name, value in ref["fixef"].items():
        assert fixef[name] == pytest.approx(value, rel=1e-4, abs=1e-10), name
        assert se[name] == pytest.approx(ref["se"][name], rel=1e-3), name
    assert m.var_group == pytest.approx(ref["var_group"], rel=1e-3, abs=1e-8)
    assert m.sigma2 == pytest.approx(ref["sigma2"], rel=1e-3)
    assert m.theta == pytest.approx(ref["theta"], rel=1e-3, abs=1e-6)
    assert m.icc == pytest.approx(ref["icc"], rel=1e-3, abs=1e-8)
    vcov = np.asarray(ref["vcov"], dtype=float)
    assert np.allclose(m.vcov.to_numpy(), vcov, rtol=1e-3, atol=1e-3 * np.abs(vcov).max())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_likelihood_summaries_and_counts(fits, case, method):
    m, ref = fits[case, method], REF[case][method]
    assert m.loglik == pytest.approx(ref["loglik"], abs=1e-6)
    assert m.aic == pytest.approx(ref["aic"], abs=1e-6)
    assert m.bic == pytest.approx(ref["bic"], abs=1e-6)
    assert m.singular == ref["singular"]
    assert m.nobs == ref["nobs"]
    assert m.ngroups == ref["ngroups"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_number_of_optima_matches_reference_scan(fits, case, method):
    m, ref = fits[case, method], REF[case][method]
    ref_thetas = as_list(ref["local_optima"]["theta"])
    ref_crits = as_list(ref["local_optima"]["criterion"])
    assert len(m.optima) == len(ref_thetas)
    # The reference scan has grid precision; ours is refined, so never worse.
    ordered = sorted(zip(ref_thetas, ref_crits, strict=True))
    for o, (theta, crit) in zip(m.optima, ordered, strict=True):
        assert o.theta == pytest.approx(theta, rel=1e-2, abs=1e-6)
        assert o.criterion <= crit + 1e-9
        assert o.criterion == pytest.approx(crit, abs=1e-3)
    assert [o.tau for o in m.optima] == sorted(o.tau for o in m.optima)
    assert sum(o.is_global for o in m.optima) == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_boundary_cases_are_negative_icc(fits, case, method):
    m, ref = fits[case, method], REF[case][method]
    if ref["var_group"] == 0:
        assert m.boundary is not None
        assert m.boundary.reason == "negative_icc"
        assert m.boundary.derivative > 0
        assert m.boundary.extended_icc < 0
        assert m.boundary.extended_criterion < m.criterion
        assert m.compound_symmetry.icc < 0
    else:
        assert m.boundary is None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_lme4_default_start_prediction(fits, case, method):
    """The optimum we say lme4 would return is the one lme4 returned from its default start."""
    m, ref = fits[case, method], REF[case][f"{method}_lme4_default"]
    assert m.lme4_default.criterion == pytest.approx(ref["criterion"], abs=1e-5)
    fixef = _by_lme4_name(m.lme4_default.fixef)
    for name, value in ref["fixef"].items():
        assert fixef[name] == pytest.approx(value, rel=1e-4, abs=1e-10)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_compound_symmetry_against_nlme(fits, case):
    m = fits[case, "reml"]
    gls = REF[case]["gls_cs"]
    cs = m.compound_symmetry
    nlme_criterion = -2 * gls["loglik"]
    if case in NLME_AT_A_LOCAL_OPTIMUM:
        # Ours is lower, and nlme's answer is one of the local optima we report.
        assert cs.criterion < nlme_criterion - 1e-4
        local = next(o for o in cs.optima if o.criterion == pytest.approx(nlme_criterion, rel=1e-6))
        assert local.tau / (1 + local.tau) == pytest.approx(gls["rho"], abs=1e-4)
    else:
        assert cs.criterion == pytest.approx(nlme_criterion, abs=1e-6)
        assert cs.icc == pytest.approx(gls["rho"], abs=1e-4)
        assert cs.sigma2 == pytest.approx(gls["sigma2"], rel=1e-3)
        for name, value in gls["coef"].items():
            assert _by_lme4_name(cs.fixef)[name] == pytest.approx(value, rel=1e-4, abs=1e-10)
            assert _by_lme4_name(cs.se)[name] == pytest.approx(gls["se"][name], rel=1e-3)
        assert cs.loglik == pytest.approx(gls["loglik"], abs=1e-6)
        assert cs.aic == pytest.approx(gls["aic"], abs=1e-6)
        assert cs.bic == pytest.approx(gls["bic"], abs=1e-6)


def test_nlme_stopped_at_local_optimum_on_sim_contextual(fits):
    """nlme's gls stops at rho = -0.19 on sim_contextual; the global CS optimum is far lower."""
    m = fits["sim_contextual", "reml"]
    assert m.compound_symmetry.criterion < -2 * REF["sim_contextual"]["gls_cs"]["loglik"] - 40


def test_seed_example_story(fits):
    """The classic example: two local minima over var_group >= 0 and a lower negative-ICC one."""
    m = fits["seed_x", "reml"]
    boundary, interior = m.optima
    assert boundary.kind == "boundary" and boundary.criterion == pytest.approx(20.593, abs=1e-3)
    assert interior.var_group == pytest.approx(27.33, abs=1e-2)
    assert interior.fixef["x"] == pytest.approx(0.451, abs=1e-3)
    assert interior.criterion == pytest.approx(16.173, abs=1e-3)
    assert m.compound_symmetry.icc == pytest.approx(-0.4955, abs=1e-4)
    assert m.compound_symmetry.criterion == pytest.approx(12.644, abs=1e-3)
    assert m.lme4_default.kind == "boundary"
    text = m.summary()
    assert "lme4" in text and "20.5934" in text and "12.6438" in text
