"""lmerTest's ranova() and emmeans' marginal means and contrasts, against R (issue 14).

The reference values were written by ``tests/data/r/make_ranova_emmeans_reference.R``
(lme4, lmerTest, emmeans, pbkrtest) on the data sets bundled in ``rl.datasets``, one random
term and several, REML and ML, with prior weights and with a variance estimated at 0.
Tolerances: estimates and standard errors 1e-6 relative, df and p-values 1e-4 relative;
interval half-widths 1e-6 relative, 1e-4 for Tukey's (R's ``qtukey`` is accurate to about
four digits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.errors import ModelDataError
from reml_engine.inference.emmeans import _kenward_roger_by_ftest, _kenward_roger_rows

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "ranova_emmeans_reference.json").read_text())
ESTIMATE_RTOL = 1e-6
DF_P_RTOL = 1e-4
#: R's qtukey is accurate to about 4 digits (its documentation), so Tukey's intervals are too.
TUKEY_INTERVAL_RTOL = 1e-4
#: R's ptukey gives the upper tail as 1 minus the lower one: far in the tail (p below 1e-9)
#: it is accurate to about 1e-12 in absolute terms only.
TUKEY_P_ATOL = 1e-11


def _values(v) -> np.ndarray:
    """jsonlite writes a vector of length 1 as a scalar and NA as null."""
    v = v if isinstance(v, list) else [v]
    return np.array([np.nan if x is None else x for x in v], dtype=float)


def _names(v) -> list[str]:
    return v if isinstance(v, list) else [v]


def _fit(ref):
    data = getattr(rl.datasets, ref["data"])()
    weights = ref.get("weights") or None
    if weights:
        return rl.lmer(ref["formula"], data, REML=ref["REML"], weights=weights)
    return rl.lmer(ref["formula"], data, REML=ref["REML"])


def _close(actual, expected, rtol, what, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), expected, rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture(scope="module")
def fits():
    cache = {}

    def get(ref):
        key = (ref["data"], ref["formula"], ref["REML"], ref.get("weights") or None)
        if key not in cache:
            cache[key] = _fit(ref)
        return cache[key]

    return get


# -- ranova ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(REFERENCE["ranova"]))
def test_ranova_equals_lmerTest(key, fits):
    ref = REFERENCE["ranova"][key]
    m = fits(ref)
    np.testing.assert_allclose(m.criterion, ref["criterion"], rtol=ESTIMATE_RTOL)
    result = m.ranova()
    assert list(result.index) == ref["row"]  # lmerTest's order: the formula's
    table = result.table
    assert table["npar"].tolist() == _values(ref["npar"]).astype(int).tolist()
    for column in ("logLik", "AIC"):
        _close(table[column], _values(ref[column]), ESTIMATE_RTOL, f"{key} {column}")
    _close(table["LRT"].iloc[1:], _values(ref["LRT"])[1:], ESTIMATE_RTOL, f"{key} LRT")
    _close(table["Df"].iloc[1:], _values(ref["Df"])[1:], 0, f"{key} Df")
    _close(table["Pr(>Chisq)"].iloc[1:], _values(ref["p"])[1:], DF_P_RTOL, f"{key} p")
    assert table.iloc[0][["LRT", "Df", "Pr(>Chisq)", "p_mixture"]].isna().all()
    # The boundary-correct p-value halves lmerTest's chi-square(1) tail (1 at LRT = 0).
    lrt, p = _values(ref["LRT"])[1:], _values(ref["p"])[1:]
    _close(table["p_mixture"].iloc[1:], np.where(lrt > 0, 0.5 * p, 1.0), DF_P_RTOL, f"{key} p_mixture")


def test_ranova_one_term_agrees_with_the_variance_test():
    m = rl.lmer("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont())
    table = m.ranova().table
    test = m.test_random_intercept("mixture")
    assert table.loc["(1 | Subject)", "LRT"] == pytest.approx(test.statistic, rel=1e-12)
    assert table.loc["(1 | Subject)", "p_mixture"] == pytest.approx(test.p_value, rel=1e-12)


def test_ranova_result_reads_like_a_table_and_says_how():
    m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())
    result = m.ranova()
    text = repr(result)
    assert text.startswith("ANOVA-like table for random-effects")
    assert "(1 | Subject)" in text and "Pr(>Chisq)" in text and "p_mixture" in text
    assert "test_random_intercept" in text  # where the exact RLRT lives
    assert "REML likelihood" in text
    assert list(result.columns) == ["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)", "p_mixture"]
    assert result["npar"].tolist() == [4, 3]
    assert result.models[0] is m and result.models[1] is None
    assert result.loc["<none>", "AIC"] == pytest.approx(m.aic)
    column = result["AIC"]
    column.iloc[0] = 0.0  # a copy: the result does not change
    assert result.table.loc["<none>", "AIC"] == pytest.approx(m.aic)


def test_ranova_several_terms_returns_the_reduced_fits():
    m = rl.lmer("score ~ Machine + (1|Worker) + (1|Worker:Machine)", rl.datasets.machines())
    fixef = m.fixef
    result = m.ranova()
    assert list(result.index) == ["<none>", "(1 | Worker)", "(1 | Worker:Machine)"]  # the formula's order
    reduced = dict(zip(result.index[1:], result.models[1:], strict=True))
    assert reduced["(1 | Worker)"].term_names == ("Worker:Machine",)
    assert reduced["(1 | Worker:Machine)"].criterion == pytest.approx(-2 * result.loc["(1 | Worker:Machine)", "logLik"])
    assert "test_random_intercept" not in str(result)
    pd.testing.assert_series_equal(m.fixef, fixef)


# -- emmeans --------------------------------------------------------------------------------
def _check_contrasts(table, ref, what, interval_rtol, p_atol=0.0):
    assert list(table.index) == _names(ref["contrast"]), what
    _close(table["estimate"], _values(ref["estimate"]), ESTIMATE_RTOL, f"{what} estimate")
    _close(table["se"], _values(ref["se"]), ESTIMATE_RTOL, f"{what} se")
    _close(table["t"], _values(ref["t"]), ESTIMATE_RTOL, f"{what} t")
    _close(table["df"], _values(ref["df"]), DF_P_RTOL, f"{what} df")
    _close(table["p"], _values(ref["p"]), DF_P_RTOL, f"{what} p", p_atol)
    estimate = _values(ref["estimate"])
    _close(table["upper"] - table["estimate"], _values(ref["upper"]) - estimate, interval_rtol, f"{what} upper")
    _close(table["estimate"] - table["lower"], estimate - _values(ref["lower"]), interval_rtol, f"{what} lower")


@pytest.mark.parametrize("key", sorted(REFERENCE["emmeans"]))
def test_emmeans_equal_R(key, fits):
    ref = REFERENCE["emmeans"][key]
    m = fits(ref)
    emm = m.emmeans(ref["spec"], ddf=ref["ddf"])  # Kenward-Roger for several terms too (machines)
    table = emm.table
    assert [str(level).removesuffix(".0") for level in table.index] == _names(ref["level"])
    _close(table["emmean"], _values(ref["emmean"]), ESTIMATE_RTOL, f"{key} emmean")
    _close(table["se"], _values(ref["se"]), ESTIMATE_RTOL, f"{key} se")
    _close(table["df"], _values(ref["df"]), DF_P_RTOL, f"{key} df")
    half = _values(ref["upper"]) - _values(ref["emmean"])
    _close(table["upper"] - table["emmean"], half, ESTIMATE_RTOL, f"{key} upper")
    _close(table["emmean"] - table["lower"], half, ESTIMATE_RTOL, f"{key} lower")
    for adjust, values in ref["pairs"].items():
        tukey = adjust == "tukey"
        _check_contrasts(emm.pairs(adjust=adjust).table, values, f"{key} pairs {adjust}",
                         TUKEY_INTERVAL_RTOL if tukey else ESTIMATE_RTOL, TUKEY_P_ATOL if tukey else 0.0)
    if "custom" in ref:
        custom = ref["custom"]
        result = emm.contrast({name: w for name, w in custom["weights"].items()}, adjust=custom["adjust"])
        _check_contrasts(result.table, custom, f"{key} contrast", ESTIMATE_RTOL)


def test_pairs_default_is_tukey_and_two_means_need_no_adjustment():
    m = rl.lmer("protein ~ Time + Diet + (1|Cow)", rl.datasets.milk())
    emm = m.emmeans("Diet")
    pd.testing.assert_frame_equal(emm.pairs().table, emm.pairs(adjust="tukey").table)
    assert emm.pairs().adjust == "tukey"
    two = rl.lmer("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont()).emmeans("Sex")
    pd.testing.assert_frame_equal(two.pairs("tukey").table, two.pairs("none").table, rtol=1e-6)


def test_emmeans_do_not_depend_on_the_coding_or_row_order():
    milk = rl.datasets.milk()
    m = rl.lmer("protein ~ Time + Diet + (1|Cow)", milk)
    expected = m.emmeans("Diet").table
    summed = rl.lmer("protein ~ Time + Diet + (1|Cow)", milk, contrasts={"Diet": "contr.sum"})
    pd.testing.assert_frame_equal(summed.emmeans("Diet").table, expected, rtol=1e-8)
    shuffled = milk.sample(frac=1.0, random_state=7)
    pd.testing.assert_frame_equal(rl.lmer("protein ~ Time + Diet + (1|Cow)", shuffled).emmeans("Diet").table,
                                  expected, rtol=1e-8)


def test_kenward_roger_through_the_fit_f_test_equals_the_closed_form():
    """The several-terms path (the fit's one-row F-test) gives the closed form's numbers."""
    m = rl.lmer("protein ~ Time + Diet + (1|Cow)", rl.datasets.milk())
    L = m.emmeans("Diet").grid.weights.to_numpy()
    L = np.vstack([L, L[0] - L[1], np.zeros_like(L[0]) + np.eye(len(L[0]))[1]])
    estimate = L @ m.fixef.to_numpy()
    var_closed, df_closed = _kenward_roger_rows(m, L, estimate)
    var_ftest, df_ftest = _kenward_roger_by_ftest(m, L, estimate)
    np.testing.assert_allclose(var_ftest, var_closed, rtol=1e-10)
    np.testing.assert_allclose(df_ftest, df_closed, rtol=1e-10)


def test_emmeans_notes_and_immutability():
    m = rl.lmer("distance ~ age * Sex + (1|Subject)", rl.datasets.orthodont())
    fixef = m.fixef
    emm = m.emmeans("Sex")
    text = str(emm)
    assert "age = 11" in text and "interaction" in text and "satterthwaite" in text
    assert repr(emm) == text
    table = emm.table
    table.loc["Male", "emmean"] = 0.0
    assert emm.table.loc["Male", "emmean"] != 0.0
    pairs = emm.pairs()
    assert "tukey" in str(pairs) or "adjust" in str(pairs)
    pd.testing.assert_series_equal(m.fixef, fixef)


# -- arguments ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def orthodont_fit():
    return rl.lmer("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont())


@pytest.mark.parametrize(("spec", "words"), [
    ("sex", ["'sex'", "'Sex'"]),          # a typo: the model's factors are listed
    ("age", ["'age'", "numeric"]),
    ("Subject", ["'Subject'", "fixed part"]),  # the grouping factor
    (3, ["spec", "int"]),
])
def test_emmeans_names_the_variable_at_fault(orthodont_fit, spec, words):
    with pytest.raises(ModelDataError) as err:
        orthodont_fit.emmeans(spec)
    for word in words:
        assert word in str(err.value)


def test_emmeans_refuses_bad_arguments(orthodont_fit):
    with pytest.raises(ValueError, match="ddf"):
        orthodont_fit.emmeans("Sex", ddf="wald")
    with pytest.raises(ValueError, match="level"):
        orthodont_fit.emmeans("Sex", level=95)
    emm = orthodont_fit.emmeans("Sex")
    with pytest.raises(ValueError, match="'holm'"):  # the names are emmeans'
        emm.pairs(adjust="hommel")
    with pytest.raises(ValueError, match="adjust"):
        emm.pairs(adjust=None)
    with pytest.raises(ValueError, match="pairs"):
        emm.contrast({"d": [1, -1]}, adjust="tukey")
    with pytest.raises(ModelDataError, match="2 levels"):
        emm.contrast({"d": [1, -1, 0]})
    with pytest.raises(ModelDataError, match="'Boy'"):
        emm.contrast({"d": {"Boy": 1, "Female": -1}})
    with pytest.raises(ModelDataError, match="non-empty"):
        emm.contrast({})


def test_emmeans_needs_a_formula_fit_and_no_offset():
    data = rl.datasets.orthodont()
    X = np.column_stack([np.ones(len(data)), data["age"]])
    with pytest.raises(ModelDataError, match="formula"):
        rl.fit(X, data["distance"].to_numpy(), data["Subject"]).emmeans("Sex")
    data["z"] = 0.1
    with pytest.raises(ModelDataError, match="offset"):
        rl.lmer("distance ~ age + Sex + offset(z) + (1|Subject)", data).emmeans("Sex")


def test_emmeans_several_terms_needs_the_covariate_as_a_column():
    m = rl.lmer("yield ~ np.log(nitro + 1) + Variety + (1|Block/Variety)", rl.datasets.oats())
    with pytest.raises(ModelDataError, match="'nitro'"):
        m.emmeans("Variety")


def test_emmeans_refuses_a_rank_deficient_fit():
    data = rl.datasets.orthodont()
    data["boy"] = (data["Sex"] == "Male").astype(float)
    with pytest.warns(rl.ModelDataWarning):
        m = rl.lmer("distance ~ age + Sex + boy + (1|Subject)", data)
    with pytest.raises(ModelDataError, match="'boy'"):
        m.emmeans("Sex")


def test_ranova_of_a_fit_from_arrays_equals_the_formula_fit():
    data = rl.datasets.sleepstudy()
    X = np.column_stack([np.ones(len(data)), data["Days"]])
    arrays = rl.fit(X, data["Reaction"].to_numpy(), data["Subject"], names=["(Intercept)", "Days"])
    formula = rl.lmer("Reaction ~ Days + (1|Subject)", data)
    np.testing.assert_allclose(arrays.ranova().table.to_numpy(dtype=float),
                               formula.ranova().table.to_numpy(dtype=float), rtol=1e-9)
