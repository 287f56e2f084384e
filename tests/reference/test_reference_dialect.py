"""Formulas from R scripts (dialect="R"), contrasts= and type III tables against lme4/lmerTest.

The reference values are written by ``tests/data/r/make_dialect_reference.R`` from R's
own data objects (the same data ``rl.datasets`` ships) and Loblolly read from CSV, where
``age`` is an integer column: formulaic would read ``I(age^2)`` as a bitwise XOR there.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import REFERENCE

import reml_engine as rl
from reml_engine.errors import ModelDataError

#: REML fits at the optimum: criterion, coefficients and variances agree closely.
RTOL = 1e-6
#: Satterthwaite and Kenward-Roger df come from lmerTest's numerical derivatives.
DF_RTOL = 1e-5

with open(REFERENCE / "dialect_reference.json") as fh:
    REF = json.load(fh)
FITS = {label: case for label, case in REF["fits"].items() if not label.startswith("_")}
#: lme4 keys contrasts by the model frame's variable ("factor(nitro)"); reml_engine by column.
CONTRAST_KEYS = {"factor(nitro)": "nitro"}
#: The large data set runs only in its own test.
SMALL = sorted(label for label, case in FITS.items() if case["data"] != "insteval")


def _data(name: str) -> pd.DataFrame:
    if name == "loblolly":
        return pd.read_csv(REFERENCE / "loblolly.csv")
    return getattr(rl.datasets, name)()


def _fit(case: dict, contrasts: dict | None = None):
    if contrasts is None:
        contrasts = {CONTRAST_KEYS.get(k, k): v for k, v in (case.get("contrasts") or {}).items()} or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scale warnings (InstEval's many rows)
        return rl.lmer(case["formula"], _data(case["data"]), dialect="R", contrasts=contrasts)


def _check_fit(m, case: dict) -> None:
    assert m.criterion == pytest.approx(case["criterion"], rel=RTOL, abs=1e-6)
    # lme4's column order, coefficient by coefficient (names are formulaic's).
    assert len(m.fixef) == len(case["coef_names"])
    np.testing.assert_allclose(m.fixef.to_numpy(), case["fixef"], rtol=RTOL, atol=1e-8)
    np.testing.assert_allclose(m.se.to_numpy(), case["se"], rtol=RTOL)
    assert m.sigma2 == pytest.approx(case["sigma2"], rel=RTOL)
    assert m.var_group == pytest.approx(case["var_group"], rel=RTOL)
    assert m.nobs == case["nobs"]


def _check_type3(m, case: dict) -> None:
    for ddf, method in (("satterthwaite", "satterthwaite"), ("kenward-roger", "kenward_roger")):
        ours = m.anova(ddf=ddf)
        rows = case["anova_type3"][method]
        assert len(ours) == len(rows)
        for (_, row), ref in zip(ours.iterrows(), rows, strict=True):
            assert row["num_df"] == ref["num_df"], (method, ref["term"])
            assert row["f_value"] == pytest.approx(ref["f_value"], rel=DF_RTOL), (method, ref["term"])
            assert row["den_df"] == pytest.approx(ref["den_df"], rel=DF_RTOL), (method, ref["term"])
            assert row["p_value"] == pytest.approx(ref["p_value"], rel=1e-4, abs=1e-12), (method, ref["term"])
            assert row["sum_sq"] == pytest.approx(ref["sum_sq"], rel=DF_RTOL), (method, ref["term"])


@pytest.mark.reference
@pytest.mark.parametrize("label", SMALL)
def test_fit_matches_lme4(label):
    _check_fit(_fit(FITS[label]), FITS[label])


@pytest.mark.reference
@pytest.mark.parametrize("label", [label for label in SMALL if "anova_type3" in FITS[label]])
def test_type3_matches_lmertest(label):
    _check_type3(_fit(FITS[label]), FITS[label])


@pytest.mark.reference
@pytest.mark.parametrize("label", [label for label in SMALL if "newdata" in FITS[label]])
def test_predict_on_new_data_matches_lme4(label):
    """poly() and scale() keep the fitting data's coefficients, centre and scale on new
    rows, as R's predict() does (makepredictcall); recomputing them on the new rows
    would give other numbers."""
    case = FITS[label]
    m = _fit(case)
    newdata = pd.DataFrame(case["newdata"])
    np.testing.assert_allclose(np.asarray(m.predict(newdata, re=False)), case["predict_re_form_na"], rtol=1e-9)
    # One row at a time: nothing is learnt from the new rows.
    one_by_one = [float(np.asarray(m.predict(newdata.iloc[[i]], re=False))[0]) for i in range(len(newdata))]
    np.testing.assert_allclose(one_by_one, case["predict_re_form_na"], rtol=1e-9)


@pytest.mark.reference
def test_loblolly_square_is_a_power_not_xor():
    """The issue's case: REML criterion 290.98 in R; formulaic's XOR gave 400.37."""
    case = FITS["loblolly_I"]
    data = _data("loblolly")
    assert data["age"].dtype.kind == "i"
    with pytest.raises(ModelDataError, match=r"XOR.*dialect='R'"):
        rl.lmer(case["formula"], data)
    m = rl.lmer(case["formula"], data, dialect="R")
    assert m.criterion == pytest.approx(290.9795, abs=1e-4)
    # The same model written in formulaic's syntax.
    python = rl.lmer("height ~ age + I(age**2) + (1|Seed)", data)
    assert python.criterion == pytest.approx(case["criterion"], rel=RTOL)


@pytest.mark.reference
@pytest.mark.slow
def test_insteval_ordered_factors_match_lme4_and_lmertest():
    """InstEval's studage and lectage are ordered: R codes them with contr.poly."""
    case = FITS["insteval_ordered"]
    m = _fit(case)
    _check_fit(m, case)
    _check_type3(m, case)
    assert "C(studage, contr.poly)[.L]" in m.fixef.index


@pytest.mark.reference
def test_type3_is_the_same_under_every_coding():
    """lmerTest's type III F-tests do not depend on the coding: each coding's table is
    lmerTest's (above), and they agree with each other and with the default coding."""
    labels = [label for label in SMALL if label.startswith("oats_") and label != "oats_ordered"]
    tables = [_fit(FITS[label]).anova() for label in labels]
    default = rl.lmer("yield ~ C(nitro) * Variety + (1|Block)", _data("oats")).anova()
    for table in tables:
        np.testing.assert_allclose(table["f_value"].to_numpy(), default["f_value"].to_numpy(), rtol=1e-9)
        np.testing.assert_allclose(table["den_df"].to_numpy(), default["den_df"].to_numpy(), rtol=1e-7)


@pytest.mark.reference
def test_contrasts_in_python_dialect_give_r_coefficients():
    """contrasts= works in formulaic's syntax too: lme4's sum-coded coefficients."""
    case = FITS["orthodont_age_by_sex_sum"]
    m = rl.lmer("distance ~ age * Sex + (1|Subject)", _data("orthodont"), contrasts={"Sex": "contr.sum"})
    np.testing.assert_allclose(m.fixef.to_numpy(), case["fixef"], rtol=RTOL)
    assert list(m.fixef.index) == ["(Intercept)", "age", "C(Sex, contr.sum)[S.Male]", "age:C(Sex, contr.sum)[S.Male]"]
