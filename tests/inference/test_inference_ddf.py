"""Satterthwaite and Kenward-Roger df, coefficient tables, contrasts and type III tables.

Reference values: lmerTest 3.1-3 and pbkrtest 0.5.2 (tests/data/reference/*.json).
"""

from __future__ import annotations

import numpy as np
import pytest
from reference_data import (
    CASE_NAMES,
    NLME_AT_A_LOCAL_OPTIMUM,
    as_list,
    fit_case,
    lme4_name,
    load_extra_reference,
    load_reference,
)

from reml_engine.core.criterion import evaluate
from reml_engine.inference.ddf import deviance_hessian, tau_pieces
from reml_engine.inference.fixed_tests import anova_type3, coef_table, contrast_t, contrast_test
from reml_engine.inference.type3 import type3_hypotheses

#: lmerTest's df come from numerical derivatives (about 1e-8 relative at the optimum).
DF_RTOL = 1e-4
#: KR SEs and df are closed forms on both sides.
KR_RTOL = 1e-4
#: Reference L matrices are rounded to 7 digits by lmerTest (0.3333333).
L_ATOL = 1e-7
#: Analytic against central finite differences of the closed-form criterion.
FD_RTOL = 1e-5

REFERENCE = load_reference()
EXTRA = load_extra_reference()


def _fit(name, REML=True):
    return fit_case(name, REML)


def _by_name(fit, values):
    names = [lme4_name(c) for c in fit.fixef.index]
    if isinstance(values, dict):
        return np.array([values[n] for n in names])
    return np.array(as_list(values))


@pytest.mark.reference
@pytest.mark.parametrize("name", CASE_NAMES)
def test_satterthwaite_matches_lmertest(name):
    m = _fit(name)
    ref = REFERENCE[name]["reml"]
    table = coef_table(m, ddf="satterthwaite")
    np.testing.assert_allclose(table["df"], _by_name(m, ref["df_satterthwaite"]), rtol=DF_RTOL)
    np.testing.assert_allclose(table["p"], _by_name(m, ref["p_satterthwaite"]), rtol=DF_RTOL)


@pytest.mark.reference
@pytest.mark.parametrize("name", CASE_NAMES)
def test_kenward_roger_matches_pbkrtest(name):
    m = _fit(name)
    ref = REFERENCE[name]["reml"]
    table = coef_table(m, ddf="kenward-roger")
    np.testing.assert_allclose(table["df"], _by_name(m, ref["df_kenward_roger"]), rtol=KR_RTOL)
    np.testing.assert_allclose(table["se"], _by_name(m, ref["se_kenward_roger"]), rtol=KR_RTOL)


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(EXTRA["ml_fits"]))
def test_satterthwaite_ml_fits(name):
    m = _fit(name, REML=False)
    rows = {r["term"]: r for r in EXTRA["ml_fits"][name]["coefficients"]}
    table = coef_table(m)
    for coef, row in table.iterrows():
        r = rows[lme4_name(coef)]
        assert row["df"] == pytest.approx(r["df"], rel=DF_RTOL)
        assert row["p"] == pytest.approx(r["p_value"], rel=DF_RTOL)
        assert row["t"] == pytest.approx(r["t_value"], rel=DF_RTOL)


def test_residual_df_is_n_minus_p():
    m = _fit("sleepstudy")
    table = coef_table(m, ddf="residual")
    assert (table["df"] == m.nobs - 2).all()
    np.testing.assert_allclose(table["t"], m.fixef / m.se)


def test_kenward_roger_needs_reml():
    with pytest.raises(ValueError, match="REML"):
        coef_table(_fit("sleepstudy", REML=False), ddf="kenward-roger")
    with pytest.raises(ValueError, match="ddf must be"):
        coef_table(_fit("sleepstudy"), ddf="containment")


@pytest.mark.parametrize("name", ["sleepstudy", "sim_unbalanced", "seed_x"])
@pytest.mark.parametrize("REML", [True, False])
def test_deviance_hessian_matches_finite_differences(name, REML):
    m = _fit(name, REML)
    stats = m.stats
    p = stats.p
    dof = stats.nobs - p if REML else stats.nobs

    def f(tau, s2):
        out = evaluate([tau], stats, REML)
        ld = out.logdet_V[0] + (out.logdet_XtVinvX[0] if REML else 0.0)
        return ld + dof * np.log(2 * np.pi * s2) + out.pwrss[0] / s2

    tau, s2 = max(m.tau, 0.3), m.sigma2
    hess, grad = deviance_hessian(stats, tau, s2, REML)
    ht, hs = 1e-4 * tau, 1e-4 * s2
    fd_t = (f(tau + ht, s2) - f(tau - ht, s2)) / (2 * ht)
    fd_tt = (f(tau + ht, s2) - 2 * f(tau, s2) + f(tau - ht, s2)) / ht**2
    fd_ss = (f(tau, s2 + hs) - 2 * f(tau, s2) + f(tau, s2 - hs)) / hs**2
    fd_ts = (f(tau + ht, s2 + hs) - f(tau + ht, s2 - hs) - f(tau - ht, s2 + hs) + f(tau - ht, s2 - hs)) / (4 * ht * hs)
    assert grad[0] == pytest.approx(fd_t, rel=FD_RTOL, abs=1e-6)
    assert hess[0, 0] == pytest.approx(fd_tt, rel=1e-4)
    assert hess[1, 1] == pytest.approx(fd_ss, rel=1e-4)
    assert hess[0, 1] == pytest.approx(fd_ts, rel=1e-4)


def test_tau_pieces_derivative_of_A():
    m = _fit("sim_unbalanced")
    p = m.stats.p
    tau, h = m.tau, 1e-5
    up, down, mid = tau_pieces(m.stats, tau + h), tau_pieces(m.stats, tau - h), tau_pieces(m.stats, tau)
    dA = (up.M[:p, :p] - down.M[:p, :p]) / (2 * h)
    np.testing.assert_allclose(-dA, mid.D[:p, :p], rtol=1e-6, atol=1e-8)


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(EXTRA["anova_type3"]))
def test_type3_hypotheses_match_lmertest(name):
    entry = EXTRA["anova_type3"][name]
    m = _fit(name)
    H = type3_hypotheses(m)
    assert sorted(k.replace(" ", "") for k in H) == sorted(entry["hypotheses"])
    for term, rows in entry["hypotheses"].items():
        np.testing.assert_allclose(H[term], np.array(rows), atol=L_ATOL)


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(EXTRA["anova_type3"]))
@pytest.mark.parametrize("method", ["satterthwaite", "kenward_roger"])
def test_type3_table_matches_lmertest(name, method):
    entry = EXTRA["anova_type3"][name]
    table = anova_type3(_fit(name), ddf=method)
    for row in entry[method]:
        got = table.loc[row["term"]]
        assert got["num_df"] == row["num_df"]
        for key in ("den_df", "f_value", "p_value", "sum_sq", "mean_sq"):
            assert got[key] == pytest.approx(row[key], rel=DF_RTOL), key


@pytest.mark.reference
@pytest.mark.parametrize("contrast", sorted(EXTRA["contest"]["contrasts"]))
@pytest.mark.parametrize("method", ["satterthwaite", "kenward_roger"])
def test_contrast_tests_match_lmertest(contrast, method):
    entry = EXTRA["contest"]["contrasts"][contrast]
    m = _fit(EXTRA["contest"]["case"])
    L = np.array(entry["L"], dtype=float)
    ref = entry[method]
    test = contrast_test(m, L, ddf=method)
    assert test.num_df == ref["num_df"]
    for key in ("den_df", "f_value", "p_value", "sum_sq", "mean_sq"):
        assert getattr(test, key) == pytest.approx(ref[key], rel=DF_RTOL), key
    if "t_test" in ref:
        t = contrast_t(m, L, ddf=method)
        for key in ("estimate", "se", "df", "t_value", "p_value", "lower", "upper"):
            assert getattr(t, key) == pytest.approx(ref["t_test"][key], rel=DF_RTOL), key


def test_contrast_by_names_equals_matrix():
    m = _fit("sim_unbalanced")
    names = list(m.fixef.index)
    by_name = contrast_test(m, {names[5]: 1.0, names[6]: -1.0})
    L = np.zeros(len(names))
    L[5], L[6] = 1.0, -1.0
    assert by_name.f_value == pytest.approx(contrast_test(m, L).f_value, rel=1e-12)


def test_one_row_f_is_t_squared():
    m = _fit("sleepstudy")
    table = coef_table(m)
    test = contrast_test(m, [0.0, 1.0])
    assert test.f_value == pytest.approx(table.loc["Days", "t"] ** 2, rel=1e-10)
    assert test.den_df == pytest.approx(table.loc["Days", "df"], rel=1e-10)


@pytest.mark.reference
@pytest.mark.parametrize("name", [c for c in CASE_NAMES if c not in NLME_AT_A_LOCAL_OPTIMUM])
def test_compound_symmetry_table_matches_gls(name):
    """(The cases where nlme stops at a local optimum are compared in test_reference_core.)"""
    m = _fit(name)
    ref = REFERENCE[name]["gls_cs"]
    cs = m.compound_symmetry
    assert cs.criterion == pytest.approx(-2 * ref["loglik"], rel=1e-6)
    from reml_engine.inference.fixed_tests import compound_symmetry_coef_table

    table = compound_symmetry_coef_table(cs)
    np.testing.assert_allclose(table["se"], _by_name(m, ref["se"]), rtol=1e-4)
    assert (table["df"] == m.nobs - len(m.fixef)).all()
