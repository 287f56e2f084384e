"""Front end against lme4: conditional modes and variances, fitted values, predictions.

Reference values are lme4's (``reference.json``: ``ranef``, ``ranef_condvar``,
``fitted_head``; ``extra_reference.json``: ``predict_new``), stored with the R scripts
that made them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from reference_data import CASE_NAMES, case_data, case_formula, load_extra_reference, load_reference

import reml_engine as rl

pytestmark = pytest.mark.reference

#: lme4 and the engine both optimize to ~1e-8 in theta; the issue asks 1e-4 relative.
RANEF_RTOL = 1e-4
#: Absolute floor for conditional modes and variances that are exactly 0 at a boundary
#: fit, relative to the scale of the response (sigma2).
RANEF_ATOL_REL = 1e-10
#: Fitted values, absolute (as the issue asks).
FITTED_ATOL = 1e-6
#: lme4's predictions from the same optimum.
PREDICT_ATOL = 1e-6

REFERENCE = load_reference()


@pytest.fixture(scope="module")
def fits() -> dict:
    return {name: rl.lmer(case_formula(name), case_data(name)) for name in CASE_NAMES}


def _by_level(values: dict) -> pd.Series:
    return pd.Series(values, dtype=float).rename(index=str)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_ranef_modes_and_condvar_match_lme4(fits, name):
    m = fits[name]
    ref = REFERENCE[name]["reml"]
    ours = m.ranef.rename(index=str)
    modes, condvar = _by_level(ref["ranef"]), _by_level(ref["ranef_condvar"])
    assert sorted(ours.index) == sorted(modes.index)
    atol = RANEF_ATOL_REL * ref["sigma2"]
    np.testing.assert_allclose(ours.loc[modes.index, "mode"], modes, rtol=RANEF_RTOL, atol=atol)
    np.testing.assert_allclose(ours.loc[condvar.index, "condvar"], condvar, rtol=RANEF_RTOL, atol=atol)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fitted_head_matches_lme4(fits, name):
    m = fits[name]
    head = np.asarray(REFERENCE[name]["reml"]["fitted_head"], dtype=float)
    np.testing.assert_allclose(m.fitted[: len(head)], head, rtol=0, atol=FITTED_ATOL)
    np.testing.assert_allclose(m.predict()[: len(head)], head, rtol=0, atol=FITTED_ATOL)
    y = case_data(name)[m.response_name].to_numpy()
    np.testing.assert_allclose(m.resid[: len(head)], y[: len(head)] - head, rtol=0, atol=FITTED_ATOL)


def test_predict_new_matches_lme4_allow_new_levels(fits):
    ref = load_extra_reference()["predict_new"]
    m = fits[ref["case"]]
    newdata = pd.DataFrame(ref["newdata"])  # Subject given as text; the fit's levels are integers
    np.testing.assert_allclose(m.predict(newdata), ref["re_form_null"], rtol=0, atol=PREDICT_ATOL)
    np.testing.assert_allclose(m.predict(newdata, re=False), ref["re_form_na"], rtol=0, atol=PREDICT_ATOL)


def test_predict_new_levels_equal_the_fixed_part(fits):
    m = fits["sim_unbalanced"]
    data = case_data("sim_unbalanced")
    newdata = data.head(8).copy()
    newdata["g"] = [f"unseen{k}" for k in range(8)]
    newdata.index = np.arange(100, 108)
    # The fixed part by hand from lme4's coefficients: x1 * cat + x2.
    coef = REFERENCE["sim_unbalanced"]["reml"]["fixef"]
    is_b = (newdata["cat"] == "b").to_numpy()
    is_c = (newdata["cat"] == "c").to_numpy()
    x1, x2 = newdata["x1"].to_numpy(), newdata["x2"].to_numpy()
    fixed = (
        coef["(Intercept)"] + coef["x1"] * x1 + coef["catb"] * is_b + coef["catc"] * is_c
        + coef["x2"] * x2 + coef["x1:catb"] * x1 * is_b + coef["x1:catc"] * x1 * is_c
    )
    predicted = m.predict(newdata)
    assert list(predicted.index) == list(newdata.index)
    np.testing.assert_allclose(predicted, fixed, rtol=1e-6)
    np.testing.assert_allclose(predicted, m.predict(newdata, re=False), rtol=0, atol=0)


def test_predict_known_levels_add_lme4_modes(fits):
    m = fits["sleepstudy"]
    ref = REFERENCE["sleepstudy"]["reml"]
    newdata = pd.DataFrame({"Days": [2.5, 7.0], "Subject": [331, 372]})
    expected = [
        ref["fixef"]["(Intercept)"] + ref["fixef"]["Days"] * d + ref["ranef"][str(s)]
        for d, s in zip(newdata["Days"], newdata["Subject"], strict=True)
    ]
    np.testing.assert_allclose(m.predict(newdata), expected, rtol=1e-6)
