"""within() and between() in formulas: against lme4 fits of hand-made columns, and pandas.

The reference fits (reference.json seed_within_between, extra_reference.json mundlak) use
columns computed in R; the other expectations are group means computed here with pandas'
groupby, independently of the transforms.
"""

from __future__ import annotations

import warnings

import formulaic
import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, load_extra_reference, load_reference

import reml_engine as rl
from reml_engine.errors import ModelDataError
from reml_engine.frontend.design import new_design_matrix

#: lme4's optimizer stops at a relative precision around 1e-7 on these fits.
RTOL_LME4 = 1e-6
#: Algebraically equal computations in a different order.
RTOL_EXACT = 1e-10

WB_NAMES = {"(Intercept)": "(Intercept)", "x_w": "within(x)", "x_b": "between(x)"}


def test_transform_columns_equal_the_r_columns():
    data = case_data("seed_within_between")  # seed.csv with x_b, x_w made in R
    m = rl.lmer("y ~ within(x) + between(x) + (1|f)", data)
    X = pd.DataFrame(m.design.X, columns=m.design.column_names)
    np.testing.assert_allclose(X["within(x)"], data["x_w"], rtol=0, atol=1e-14)
    np.testing.assert_allclose(X["between(x)"], data["x_b"], rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", ["reml", "ml"])
def test_within_between_model_matches_lme4(kind):
    ref = load_reference()["seed_within_between"][kind]
    m = rl.lmer("y ~ within(x) + between(x) + (1|f)", case_data("seed_within_between"), REML=kind == "reml")
    for r_name, name in WB_NAMES.items():
        assert m.fixef[name] == pytest.approx(ref["fixef"][r_name], rel=RTOL_LME4, abs=1e-12)
        assert m.se[name] == pytest.approx(ref["se"][r_name], rel=RTOL_LME4)
    assert m.criterion == pytest.approx(ref["criterion"], rel=RTOL_LME4)
    assert m.sigma2 == pytest.approx(ref["sigma2"], rel=RTOL_LME4)
    assert m.var_group == pytest.approx(ref["var_group"], abs=1e-12)
    assert m.boundary is not None and m.boundary.reason == "negative_icc"


@pytest.mark.parametrize(
    ("case", "formula", "names"),
    [
        ("seed", "y ~ x + between(x) + (1|f)", {"x": "x", "xbar": "between(x)"}),
        ("sim_contextual", "y ~ x + between(x) + (1|g)", {"x": "x", "xbar": "between(x)"}),
        ("sim_contextual_within_between", "y ~ within(x) + between(x) + (1|g)",
         {"x_w": "within(x)", "x_b": "between(x)"}),
    ],
)
def test_mundlak_and_within_between_formulas_match_lmertest(case, formula, names):
    ref = load_extra_reference()["mundlak"][case]
    data = case_data(ref["data"])
    m = rl.lmer(formula, data)
    rows = {row["term"]: row for row in ref["coefficients"]}
    names = {"(Intercept)": "(Intercept)", **names}
    for r_name, name in names.items():
        assert m.fixef[name] == pytest.approx(rows[r_name]["estimate"], rel=RTOL_LME4, abs=1e-10)
        assert m.se[name] == pytest.approx(rows[r_name]["se"], rel=RTOL_LME4)


def _two_variable_data(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = np.repeat(list("abcdefgh"), [3, 5, 4, 6, 2, 5, 4, 3])
    n = len(groups)
    data = pd.DataFrame({
        "g": groups,
        "x1": rng.normal(size=n) + np.repeat(rng.normal(size=8) * 3, [3, 5, 4, 6, 2, 5, 4, 3]),
        "x2": rng.uniform(size=n),
    })
    data["y"] = 0.5 * data["x1"] - data["x2"] + rng.normal(size=n)
    return data


def _hand_made(data: pd.DataFrame, columns, group: str = "g") -> pd.DataFrame:
    out = data.copy()
    for c in columns:
        out[f"{c}_b"] = out.groupby(group)[c].transform("mean")
        out[f"{c}_w"] = out[c] - out[f"{c}_b"]
    return out


def test_several_variables_equal_hand_made_columns():
    data = _two_variable_data()
    m = rl.lmer("y ~ within(x1) + between(x1) + within(x2) + between(x2) + (1|g)", data)
    made = _hand_made(data, ["x1", "x2"])
    ref = rl.lmer("y ~ x1_w + x1_b + x2_w + x2_b + (1|g)", made)
    for c in ("x1", "x2"):
        for part, fn in (("w", "within"), ("b", "between")):
            assert m.fixef[f"{fn}({c})"] == pytest.approx(ref.fixef[f"{c}_{part}"], rel=RTOL_EXACT)
            assert m.se[f"{fn}({c})"] == pytest.approx(ref.se[f"{c}_{part}"], rel=RTOL_EXACT)
    assert m.criterion == pytest.approx(ref.criterion, rel=RTOL_EXACT)


def test_group_means_come_from_the_rows_used():
    data = _two_variable_data()
    data.loc[[0, 4, 9], "y"] = np.nan  # rows dropped: they must not enter the means
    data.loc[[13], "x2"] = np.nan
    with pytest.warns(rl.ModelDataWarning, match="dropped 4"):
        m = rl.lmer("y ~ within(x1) + between(x1) + x2 + (1|g)", data)
    used = data.dropna(subset=["y", "x1", "x2"])
    made = _hand_made(used, ["x1"])
    X = pd.DataFrame(m.design.X, columns=m.design.column_names)
    np.testing.assert_allclose(X["between(x1)"], made["x1_b"], rtol=RTOL_EXACT)
    np.testing.assert_allclose(X["within(x1)"], made["x1_w"], rtol=0, atol=1e-12)
    # The within column sums to zero in every group of the fit.
    sums = pd.Series(X["within(x1)"].to_numpy()).groupby(used["g"].to_numpy()).sum()
    np.testing.assert_allclose(sums, 0.0, atol=1e-12)


def test_interaction_grouping_uses_combined_levels():
    data = _two_variable_data()
    data["a"] = np.where(data.index % 2 == 0, "p", "q")
    m = rl.lmer("y ~ within(x1) + between(x1) + (1|g:a)", data)
    data["ga"] = data["g"] + ":" + data["a"]
    made = _hand_made(data, ["x1"], group="ga")
    X = pd.DataFrame(m.design.X, columns=m.design.column_names)
    np.testing.assert_allclose(X["between(x1)"], made["x1_b"], rtol=RTOL_EXACT)


def test_new_data_uses_stored_means_and_new_levels_their_own():
    data = case_data("seed_x")
    m = rl.lmer("y ~ within(x) + between(x) + (1|f)", data)
    stored = data.groupby("f")["x"].mean()
    new = pd.DataFrame({"x": [10.0, -2.0, 7.0, 1.0, 4.0], "f": [1, 3, 99, 99, 100]})
    X = pd.DataFrame(new_design_matrix(m.design, new), columns=m.design.column_names)
    expected_between = [stored[1], stored[3], 4.0, 4.0, 4.0]  # level 99: mean of its rows (7, 1)
    np.testing.assert_allclose(X["between(x)"], expected_between, rtol=RTOL_EXACT)
    np.testing.assert_allclose(X["within(x)"], new["x"] - np.asarray(expected_between), rtol=RTOL_EXACT)


def test_new_data_levels_given_as_text_match_numeric_levels():
    data = case_data("seed_x")
    m = rl.lmer("y ~ x + between(x) + (1|f)", data)
    new = pd.DataFrame({"x": [10.0], "f": ["2"]})
    X = pd.DataFrame(new_design_matrix(m.design, new), columns=m.design.column_names)
    assert X["between(x)"].iloc[0] == pytest.approx(data.loc[data["f"] == 2, "x"].mean())


def test_predict_on_new_data_uses_stored_means():
    data = case_data("seed_x")
    m = rl.lmer("y ~ within(x) + between(x) + (1|f)", data)
    stored = data.groupby("f")["x"].mean()
    new = pd.DataFrame({"x": [10.0, 3.0], "f": [2, 4]})
    between = stored[new["f"]].to_numpy()
    expected = (m.fixef["(Intercept)"] + m.fixef["within(x)"] * (new["x"] - between)
                + m.fixef["between(x)"] * between)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = np.asarray(m.predict(new, re=False), dtype=float)
    np.testing.assert_allclose(predicted, expected, rtol=RTOL_EXACT)


def test_non_numeric_variable_is_an_error():
    data = case_data("seed_x").assign(label=lambda d: d["f"].map({1: "a", 2: "b", 3: "c", 4: "d"}))
    with pytest.raises(ModelDataError, match="numeric"):
        rl.lmer("y ~ x + between(label) + (1|f)", data)


def test_outside_an_lmer_formula_says_what_is_missing():
    data = case_data("seed_x")
    with pytest.raises(Exception, match="grouping factor"):
        formulaic.model_matrix("y ~ within(x)", data, context={"within": rl.within})
