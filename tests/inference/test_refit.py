"""update() and drop1() against lme4 (issue 14): R's update.formula and lme4's update()
and drop1(test = "Chisq") values, from tests/data/r/make_names_reference.R and
tests/data/r/make_update_reference.R."""

from __future__ import annotations

import json
from pathlib import Path

import formulaic
import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.frontend.formula import _random_terms
from reml_engine.frontend.formula_update import droppable_terms, fixed_term_labels, update_formula

REFERENCE_DIR = Path(__file__).parents[1] / "data" / "reference"
NAMES = json.loads((REFERENCE_DIR / "names_reference.json").read_text())
UPDATE = json.loads((REFERENCE_DIR / "update_reference.json").read_text())
#: lme4 stops its optimizer at ~1e-6 relative in theta; criteria agree much closer.
CRITERION_RTOL = 1e-7
LME4_RTOL = 2e-5
SLEEP = "Reaction ~ Days + (1|Subject)"


def _lme4_names(names) -> list[str]:
    return [n.replace("[T.", "").replace("]", "") for n in names]


def _structure(formula: str) -> tuple:
    """What a formula fits: response, intercept, fixed terms (as factor sets) and random terms."""
    lhs, rhs = formula.split("~")
    randoms = frozenset(inside.replace(" ", "") for _, _, inside in _random_terms(rhs, formula))
    labels = fixed_term_labels(formula)
    fixed = rhs
    for start, end, _ in reversed(_random_terms(rhs, formula)):
        fixed = fixed[:start] + "0" + fixed[end:]
    intercept = "1" in [str(t) for t in formulaic.Formula(fixed)]
    return lhs.strip(), intercept, frozenset(frozenset(label.split(":")) for label in labels), randoms


@pytest.mark.parametrize("case", UPDATE["update_formula"], ids=[c["new"] for c in UPDATE["update_formula"]])
def test_update_formula_fits_what_r_update_fits(case):
    ours = update_formula(case["old"], case["new"])
    assert _structure(ours) == _structure(case["result"])


def test_update_formula_writes_terms_as_r():
    assert update_formula(SLEEP, ". ~ . - Days") == "Reaction ~ (1|Subject)"
    assert update_formula("distance ~ age * Sex + (1|Subject)", ". ~ . - age:Sex") == \
        "distance ~ age + Sex + (1|Subject)"
    # A full formula replaces the old one as written.
    assert update_formula(SLEEP, "Reaction ~ Days + I(Days**2) + (1|Subject)") == \
        "Reaction ~ Days + I(Days**2) + (1|Subject)"
    assert update_formula("y ~ `a b` + Sepal.Length + (1|g)", ". ~ . - Sepal.Length") == "y ~ `a b` + (1|g)"


@pytest.mark.parametrize("new, pattern", [
    (". ~ . - Dayz", "removes 'Dayz', which is not a fixed term .* \\(its terms: Days\\)"),
    (". ~ . - (1|Item)", "removes the random term \\(1\\|Item\\)"),
    (". ~ - .", "removes every term"),
    ("Reaction ~ Days ~ x", "one '~'"),
])
def test_update_formula_errors_name_the_term(new, pattern):
    with pytest.raises(rl.ModelDataError, match=pattern):
        update_formula(SLEEP, new)


def test_droppable_terms_respect_marginality():
    assert droppable_terms("distance ~ age * Sex + (1|Subject)") == ["age:Sex"]
    assert droppable_terms("y ~ a * b + c + (1|g)") == ["c", "a:b"]
    assert droppable_terms("y ~ 1 + (1|g)") == []


@pytest.fixture(scope="module")
def sleep():
    return rl.lmer(SLEEP, rl.datasets.sleepstudy())


def _check(fit, ref) -> None:
    expected_criterion = ref["criterion"]
    assert fit.criterion == pytest.approx(expected_criterion, rel=CRITERION_RTOL)
    assert _lme4_names(fit.fixef.index) == list(ref["params"])
    np.testing.assert_allclose(fit.fixef, list(ref["params"].values()), rtol=LME4_RTOL)


def test_update_refits_as_lme4(sleep):
    ref = NAMES["update"]
    ml = sleep.update(REML=False)
    assert not ml.REML
    _check(ml, ref["REML_false"])
    _check(sleep.update(". ~ . - Days"), ref["drop_days"])
    data = rl.datasets.sleepstudy()
    later = sleep.update(data=data[data["Days"] >= 2])
    _check(later, ref["days_ge_2"])
    assert later.nobs == ref["days_ge_2"]["nobs"]


def test_update_leaves_the_fit_and_the_data_alone(sleep):
    before = (sleep.fixef.copy(), sleep.criterion, sleep.call, sleep.formula, sleep.data_name)
    data = sleep.call.data.copy()
    reduced = sleep.update(". ~ . - Days", REML=False)
    assert reduced is not sleep and reduced.formula == "Reaction ~ (1|Subject)"
    pd.testing.assert_series_equal(sleep.fixef, before[0])
    assert (sleep.criterion, sleep.call, sleep.formula, sleep.data_name) == before[1:]
    pd.testing.assert_frame_equal(sleep.call.data, data)
    assert reduced.data_name == "sleepstudy" and reduced.call.REML is False


def test_update_with_no_change_is_the_same_fit(sleep):
    again = sleep.update()
    assert again.criterion == sleep.criterion
    pd.testing.assert_series_equal(again.fixef, sleep.fixef)


def test_update_carries_the_other_arguments():
    data = rl.datasets.orthodont()
    m = rl.lmer("distance ~ age + Sex + (1|Subject)", data, contrasts={"Sex": "contr.sum"})
    assert m.update(REML=False).call.contrasts == {"Sex": "contr.sum"}
    treatment = m.update(contrasts=None, REML=False)
    assert "Sex[T.Female]" in treatment.fixef.index and "Sex[T.Female]" not in m.fixef.index
    # The same model in another coding: the same deviance (a REML criterion depends on
    # the coding through log|X'V^-1 X|).
    assert treatment.criterion == pytest.approx(m.update(REML=False).criterion, rel=1e-10)


def test_update_argument_errors(sleep):
    with pytest.raises(TypeError, match="'weights'"):
        sleep.update(weights="w")
    with pytest.raises(rl.ModelDataError, match="REML must be True or False"):
        sleep.update(REML="no")
    with pytest.raises(rl.ModelDataError, match="data must be a pandas DataFrame"):
        sleep.update(data=[1, 2])
    seed = rl.load_seed()
    arrays = rl.fit(np.column_stack([np.ones(len(seed)), seed.x]), seed.y, seed.f)
    with pytest.raises(rl.ModelDataError, match="rl.lmer"):
        arrays.update(REML=False)
    with pytest.raises(rl.ModelDataError, match="rl.lmer"):
        arrays.drop1()


def _check_drop1(table: pd.DataFrame, ref: dict) -> None:
    assert list(table.index) == ref["term"]
    assert list(table.columns) == ["npar", "AIC", "LRT", "Pr(Chi)"]
    expected = pd.DataFrame({"npar": ref["npar"], "AIC": ref["AIC"], "LRT": ref["LRT"], "Pr(Chi)": ref["p"]},
                            index=ref["term"], dtype=float)
    np.testing.assert_allclose(table[["npar", "AIC"]], expected[["npar", "AIC"]], rtol=CRITERION_RTOL)
    # A difference of deviances loses a few digits; p follows it.
    np.testing.assert_allclose(table["LRT"], expected["LRT"], rtol=1e-6)
    np.testing.assert_allclose(table["Pr(Chi)"], expected["Pr(Chi)"], rtol=1e-5)


@pytest.mark.parametrize("name, formula, REML", [
    ("orthodont_reml", "distance ~ age + Sex + (1|Subject)", True),
    ("orthodont_ml", "distance ~ age + Sex + (1|Subject)", False),
    ("orthodont_interaction", "distance ~ age * Sex + (1|Subject)", True),
])
def test_drop1_matches_lme4(name, formula, REML):
    m = rl.lmer(formula, rl.datasets.orthodont(), REML=REML)
    criterion = m.criterion
    _check_drop1(m.drop1(), NAMES["drop1"][name])
    assert m.criterion == criterion and m.REML is REML


def test_drop1_fits_every_model_on_the_full_models_rows():
    ref = UPDATE["drop1_na"]
    data = rl.datasets.orthodont()
    data.loc[[i - 1 for i in ref["na_rows_1based"]["age"]], "age"] = np.nan
    data.loc[ref["na_rows_1based"]["distance"] - 1, "distance"] = np.nan
    with pytest.warns(rl.ModelDataWarning, match="dropped 3 of 108 rows"):
        m = rl.lmer("distance ~ age + Sex + (1|Subject)", data)
    assert m.nobs == ref["nobs"]
    _check_drop1(m.drop1(), ref)


def test_drop1_without_test_and_bad_test():
    m = rl.lmer("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont())
    assert list(m.drop1(test="none").columns) == ["npar", "AIC"]
    with pytest.raises(rl.ModelDataError, match="'Chisq'"):
        m.drop1(test="F")


def test_drop1_of_an_intercept_only_model_is_its_own_row():
    m = rl.lmer("Yield ~ 1 + (1|Batch)", rl.datasets.dyestuff(), REML=False)
    table = m.drop1()
    assert list(table.index) == ["<none>"]
    assert table.loc["<none>", "AIC"] == pytest.approx(m.aic)
