"""Nested-model comparison against lme4's anova() on ML refits (extra_reference.json)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference_data import case_data, load_extra_reference

import reml_engine as rl
from reml_engine.inference.model_comparison import anova, ols

#: Likelihoods are closed forms on both sides.
RTOL = 1e-6

NESTED = load_extra_reference()["anova_nested"]


def _lmer(formula, data, REML=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.lmer(formula, data, REML=REML)


def _pair(key):
    entry = NESTED[key]
    data = case_data(entry["data"])
    return entry, data


def _check(result, ref):
    table = result.table
    for i, side in enumerate(("m0", "m1")):
        row = table.iloc[i]
        assert row["npar"] == ref[side]["npar"]
        for ours, theirs in (("AIC", "AIC"), ("BIC", "BIC"), ("logLik", "logLik"), ("deviance", "deviance")):
            assert row[ours] == pytest.approx(ref[side][theirs], rel=RTOL), (side, ours)
    last = table.iloc[1]
    assert last["Chisq"] == pytest.approx(ref["Chisq"], rel=RTOL, abs=1e-9)
    assert last["Df"] == ref["Df"]
    assert last["p_value"] == pytest.approx(ref["p_value"], rel=RTOL)


@pytest.mark.reference
@pytest.mark.parametrize("key", ["sleepstudy", "sim_unbalanced", "seed"])
def test_anova_of_reml_fits_matches_lme4_global_ml(key):
    entry, data = _pair(key)
    m0 = _lmer(entry["m0_formula"], data)
    m1 = _lmer(entry["m1_formula"], data)
    result = anova(m1, m0)  # order of arguments does not matter
    _check(result, entry["ml_global"])
    assert any("refitting 2 REML" in n for n in result.notes)


@pytest.mark.reference
def test_seed_refit_note_names_lme4s_local_optimum():
    entry, data = _pair("seed")
    result = anova(_lmer(entry["m0_formula"], data), _lmer(entry["m1_formula"], data))
    local = entry["lme4_refit_from_reml_global"]["m1"]["deviance"]
    note = next(n for n in result.notes if "local refit" in n)
    assert f"{local:.4f}" in note


@pytest.mark.reference
def test_anova_of_ml_fits_needs_no_refit():
    entry, data = _pair("sleepstudy")
    result = anova(_lmer(entry["m0_formula"], data, False), _lmer(entry["m1_formula"], data, False))
    _check(result, entry["ml_global"])
    assert not result.notes


@pytest.mark.reference
def test_ols_null_matches_lm():
    ref = NESTED["dyestuff_vs_lm"]
    data = case_data("dyestuff")
    null = ols("Yield ~ 1", data)
    assert null.loglik == pytest.approx(ref["lm"]["logLik"], rel=RTOL)
    assert null.aic == pytest.approx(ref["lm"]["AIC"], rel=RTOL)
    assert null.bic == pytest.approx(ref["lm"]["BIC"], rel=RTOL)
    result = anova(null, _lmer("Yield ~ 1 + (1|Batch)", data))
    row = result.table.iloc[1]
    assert row["Chisq"] == pytest.approx(ref["lrt"]["stat"], rel=RTOL)
    assert row["p_value"] == pytest.approx(ref["lrt"]["p_chisq1"], rel=RTOL)
    assert row["p_mixture"] == pytest.approx(ref["lrt"]["p_mixture_50_50"], rel=RTOL)
    assert result.table.iloc[1]["logLik"] == pytest.approx(ref["mixed_ml"]["logLik"], rel=RTOL)


def test_ols_ignores_the_random_term_and_matches_lstsq():
    data = rl.load_seed()
    a = ols("y ~ x + (1|f)", data)
    X = np.column_stack([np.ones(len(data)), data["x"]])
    beta = np.linalg.lstsq(X, data["y"], rcond=None)[0]
    np.testing.assert_allclose(a.fixef.to_numpy(), beta, rtol=1e-12)


def test_anova_rejects_different_data():
    data = rl.load_seed()
    other = data.assign(y=data["y"] * 2)
    with pytest.raises(ValueError, match="different response"):
        anova(_lmer("y ~ x + (1|f)", data, False), _lmer("y ~ x + (1|f)", other, False))
    with pytest.raises(ValueError, match="different numbers of rows"):
        anova(_lmer("y ~ x + (1|f)", data, False), _lmer("y ~ x + (1|f)", data.iloc[:-1], False))
    with pytest.raises(ValueError, match="at least two"):
        anova(_lmer("y ~ x + (1|f)", data))
