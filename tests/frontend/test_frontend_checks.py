"""Bad and awkward inputs: every one gives a named error or warning, or a sensible fit.

The table covers NaN and inf in y and X, missing group labels, a string response, one
group, all singletons, collinear columns, a constant y, an empty frame, missing columns,
and formula errors. Extreme scales (y at 1e12 and 1e-12, x shifted by 1e12, x scaled by
1e6) are checked against the fit of the unscaled data transformed by the closed-form
rules (fixed effects scale with y, the criterion shifts by dof * log(c^2)).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data

import reml_engine as rl

#: Agreement of a fit with the fit of the same numbers rescaled exactly.
SCALE_RTOL = 1e-8
#: Agreement after a shift by 1e12: the shifted x keeps only about 4 of its digits, and
#: both fits use the same stored (rounded) numbers, so they agree to the engine's
#: precision on centred data.
SHIFT_RTOL = 1e-7
#: x shifted by 1e12 loses digits below the spacing of doubles there (1.2e-4), so the
#: fit moves by about that much relative to the fit of the exact x.
SHIFT_DATA_RTOL = 1e-3


def _base() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(10), 6)
    x = rng.normal(size=60)
    y = 1.0 + 2.0 * x + rng.normal(size=10)[g] + rng.normal(size=60)
    return pd.DataFrame({"y": y, "x": x, "g": g, "label": np.where(np.arange(60) % 2, "odd", "even")})


BASE = _base()
FORMULA = "y ~ x + (1|g)"


def _with(**columns) -> pd.DataFrame:
    data = BASE.copy()
    for name, values in columns.items():
        data[name] = values
    return data


def _set_row(column: str, row: int, value) -> pd.Series:
    values = BASE[column].astype(object if value is None else BASE[column].dtype).copy()
    values.iloc[row] = value
    return values


ERROR, WARNING = "error", "warning"

# (case id, data, formula, kwargs, kind, pattern)
BAD_INPUTS = [
    ("nan_y_omit", _with(y=_set_row("y", 3, np.nan)), FORMULA, {}, WARNING, r"dropped 1 of 60 rows.*'y': 1"),
    ("nan_y_raise", _with(y=_set_row("y", 3, np.nan)), FORMULA, {"na_action": "raise"}, ERROR,
     r"missing values in 1 rows \('y': 1\)"),
    ("inf_y", _with(y=_set_row("y", 3, np.inf)), FORMULA, {}, ERROR, r"response 'y' has 1 non-finite"),
    ("neg_inf_y", _with(y=_set_row("y", 0, -np.inf)), FORMULA, {}, ERROR, r"response 'y' has 1 non-finite"),
    ("nan_x_omit", _with(x=_set_row("x", 5, np.nan)), FORMULA, {}, WARNING, r"dropped 1 of 60 rows.*'x': 1"),
    ("nan_x_raise", _with(x=_set_row("x", 5, np.nan)), FORMULA, {"na_action": "raise"}, ERROR, r"'x': 1"),
    ("inf_x", _with(x=_set_row("x", 5, np.inf)), FORMULA, {}, ERROR, r"predictor column\(s\) 'x' .*non-finite.*1 rows"),
    ("log_of_negative", _with(z=BASE["x"]), "y ~ np.log(z) + (1|g)", {}, ERROR,
     r"'np.log\(z\)' have non-finite"),
    ("missing_group_label", _with(g=_set_row("g", 2, None)), FORMULA, {}, WARNING, r"dropped 1 of 60 rows.*'g': 1"),
    ("missing_group_label_raise", _with(g=_set_row("g", 2, None)), FORMULA, {"na_action": "raise"}, ERROR,
     r"'g': 1"),
    ("string_response", _with(y=BASE["y"].round(2).astype(str).where(BASE.index != 4, "n/a")), FORMULA, {},
     ERROR, r"response 'y' is not numeric.*'n/a' in row 4"),
    ("text_response", _with(y=BASE["label"]), FORMULA, {}, ERROR, r"response 'y' is not numeric"),
    ("boolean_response", _with(y=BASE["y"] > 0), FORMULA, {}, ERROR, r"response 'y' is boolean"),
    ("one_group", _with(g=0), FORMULA, {}, ERROR, r"'g' has 1 level; .*at least 2 groups"),
    ("all_singletons", _with(g=np.arange(60)), FORMULA, {}, ERROR, r"'g' has 60 levels for 60 observations"),
    ("collinear", _with(x2=2 * BASE["x"] + 1), "y ~ x + x2 + (1|g)", {}, WARNING,
     r"rank deficient so dropping 1 column: 'x2'"),
    ("shifted_copy", _with(x2=BASE["x"] + 1e12), "y ~ x + x2 + (1|g)", {}, WARNING,
     r"rank deficient so dropping 1 column: 'x2'"),
    ("constant_y", _with(y=3.5), FORMULA, {}, ERROR, r"response 'y' is constant \(3.5 in all 60 rows\)"),
    ("empty_frame", BASE.iloc[:0], FORMULA, {}, ERROR, r"empty"),
    ("all_rows_missing", _with(x=np.nan), FORMULA, {}, ERROR, r"no observations left"),
    ("missing_response", BASE, "yy ~ x + (1|g)", {}, ERROR, r"response column 'yy'.*did you mean 'y'"),
    ("missing_predictor", BASE, "y ~ xx + (1|g)", {}, ERROR, r"'xx' of formula .*not columns.*did you mean 'x'"),
    ("missing_group", BASE, "y ~ x + (1|grp)", {}, ERROR, r"grouping column 'grp'"),
    ("no_random_term", BASE, "y ~ x", {}, ERROR, r"no random-intercept term"),
    ("random_slope", BASE, "y ~ x + (x|g)", {}, ERROR,
     r"random slope \(x\); random slopes are out of scope.*within\(x\).*lme4"),
    ("same_random_term_twice", BASE, "y ~ x + (1|g) + (1|g)", {}, ERROR, r"groups by g twice"),
    ("bad_fixed_syntax", BASE, "y ~ x +* z + (1|g)", {}, ERROR, r"cannot parse the fixed part"),
    ("not_a_formula", BASE, "y x (1|g)", {}, ERROR, r"formula must be"),
    ("numbers_as_text", _with(x=BASE["x"].astype(str)), FORMULA, {}, ERROR,
     r"text columns are treated as categorical: 'x' has 60 levels"),
    ("too_few_rows", BASE.head(3).assign(g=[0, 0, 1]), "y ~ x + label + (1|g)", {}, ERROR,
     r"3 observations for 3 fixed-effect columns"),
    ("y_at_1e200", _with(y=BASE["y"] * 1e200), FORMULA, {}, ERROR, r"response 'y' has values up to .*e\+200.*rescale"),
    ("y_at_1e-200", _with(y=BASE["y"] * 1e-200), FORMULA, {}, ERROR, r"response 'y' varies by only .*rescale"),
    ("x_at_1e200", _with(x=BASE["x"] * 1e200), FORMULA, {}, ERROR, r"predictor column 'x' has values up to"),
    ("x_at_1e-200", _with(x=BASE["x"] * 1e-200), FORMULA, {}, ERROR, r"predictor column 'x' varies by only"),
    ("x_far_from_unit_scale", _with(x=BASE["x"] * 1e6), FORMULA, {}, WARNING, r"'x' has standard deviation"),
    ("scales_far_apart", _with(x2=BASE["x"] * 1e-3 + np.sin(np.arange(60)) * 1e-4, x=BASE["x"] * 10), "y ~ x + x2 + (1|g)",
     {}, WARNING, r"very different scales: sd of 'x' is"),
]


@pytest.mark.parametrize(
    "data, formula, kwargs, kind, pattern",
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_table(data, formula, kwargs, kind, pattern):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", RuntimeWarning)  # no unexplained numpy warnings
        if kind == ERROR:
            with pytest.raises(rl.ModelDataError) as info:
                rl.lmer(formula, data, **kwargs)
            message = str(info.value)
            assert re.search(pattern, message), message
            assert "\n" not in message and "\x1b" not in message
            return
        m = rl.lmer(formula, data, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, rl.ModelDataWarning)]
    assert any(re.search(pattern, msg) for msg in messages), messages
    assert np.isfinite(m.fixef).all() and np.isfinite(m.se).all()
    assert np.isfinite([m.sigma2, m.var_group, m.criterion]).all()


def test_omitted_rows_fit_as_if_dropped_by_hand():
    data = _with(y=_set_row("y", 3, np.nan), x=_set_row("x", 7, np.nan))
    with pytest.warns(rl.ModelDataWarning, match="dropped 2 of 60"):
        m = rl.lmer(FORMULA, data)
    ref = rl.lmer(FORMULA, data.dropna())
    assert m.nobs == 58
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-12)
    assert m.criterion == pytest.approx(ref.criterion, rel=1e-12)


def test_unrelated_missing_columns_are_ignored():
    data = _with(unused=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rl.ModelDataWarning)
        m = rl.lmer(FORMULA, data)
    assert m.nobs == 60


# -- extreme scales --------------------------------------------------------------------
def _dof(m) -> int:
    return m.nobs - len(m.fixef) if m.REML else m.nobs


@pytest.mark.parametrize("factor", [1e12, 1e-12])
@pytest.mark.parametrize("REML", [True, False])
def test_response_scaled_by_extreme_factor(factor, REML):
    base = rl.lmer(FORMULA, BASE, REML=REML)
    m = rl.lmer(FORMULA, _with(y=BASE["y"] * factor), REML=REML)
    np.testing.assert_allclose(m.fixef, base.fixef * factor, rtol=SCALE_RTOL)
    np.testing.assert_allclose(m.se, base.se * factor, rtol=SCALE_RTOL)
    assert m.sigma2 == pytest.approx(base.sigma2 * factor**2, rel=SCALE_RTOL)
    assert m.var_group == pytest.approx(base.var_group * factor**2, rel=SCALE_RTOL)
    # Closed form: y -> c y multiplies sigma2 by c^2 and leaves tau, H and X alone.
    assert m.criterion == pytest.approx(base.criterion + _dof(m) * np.log(factor**2), rel=SCALE_RTOL)
    np.testing.assert_allclose(m.ranef["mode"], base.ranef["mode"] * factor, rtol=1e-6, atol=1e-9 * factor)
    assert np.isfinite(m.summary().count("NaN")) and "NaN" not in m.summary()


def test_response_shifted_by_1e12_only_moves_the_intercept():
    shifted = BASE["y"] + 1e12
    m = rl.lmer(FORMULA, _with(y=shifted))
    ref = rl.lmer(FORMULA, _with(y=shifted - 1e12))  # the same stored numbers, unshifted
    assert m.fixef["x"] == pytest.approx(ref.fixef["x"], rel=SHIFT_RTOL)
    assert m.fixef["(Intercept)"] == pytest.approx(ref.fixef["(Intercept)"] + 1e12, rel=1e-15)
    assert m.var_group == pytest.approx(ref.var_group, rel=SHIFT_RTOL)
    assert m.criterion == pytest.approx(ref.criterion, rel=SHIFT_RTOL)


def test_predictor_shifted_by_1e12_is_kept_and_fits_like_the_unshifted():
    shifted = BASE["x"] + 1e12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no rank-deficiency or scale warning
        m = rl.lmer(FORMULA, _with(x=shifted))
    ref = rl.lmer(FORMULA, _with(x=shifted - 1e12))  # exact: the stored numbers, unshifted
    assert m.fixef["x"] == pytest.approx(ref.fixef["x"], rel=SHIFT_RTOL)
    assert m.se["x"] == pytest.approx(ref.se["x"], rel=SHIFT_RTOL)
    assert m.var_group == pytest.approx(ref.var_group, rel=SHIFT_RTOL)
    assert m.sigma2 == pytest.approx(ref.sigma2, rel=SHIFT_RTOL)
    assert m.criterion == pytest.approx(ref.criterion, rel=SHIFT_RTOL)
    # The intercept is the value at x = 0, 1e12 away: b0 - 1e12 b1.
    expected_intercept = ref.fixef["(Intercept)"] - 1e12 * ref.fixef["x"]
    assert m.fixef["(Intercept)"] == pytest.approx(expected_intercept, rel=SHIFT_RTOL)
    # And close to the fit of the exact x, up to the digits the shift destroyed.
    exact = rl.lmer(FORMULA, BASE)
    assert m.fixef["x"] == pytest.approx(exact.fixef["x"], rel=SHIFT_DATA_RTOL)
    np.testing.assert_allclose(m.fitted, ref.fitted, rtol=1e-9)


def test_predictor_scaled_by_1e6_scales_its_slope():
    with pytest.warns(rl.ModelDataWarning, match="standard deviation"):
        m = rl.lmer(FORMULA, _with(x=BASE["x"] * 1e6))
    base = rl.lmer(FORMULA, BASE)
    assert m.fixef["x"] == pytest.approx(base.fixef["x"] / 1e6, rel=SCALE_RTOL)
    assert m.fixef["(Intercept)"] == pytest.approx(base.fixef["(Intercept)"], rel=SCALE_RTOL)
    assert m.criterion == pytest.approx(base.criterion + 2 * np.log(1e6), rel=SCALE_RTOL)


def test_indicator_columns_do_not_trigger_the_scale_warning():
    rare = np.zeros(60)
    rare[0] = 1.0  # sd 0.13, far below 1, but a 0/1 indicator
    with warnings.catch_warnings():
        warnings.simplefilter("error", rl.ModelDataWarning)
        rl.lmer("y ~ x + rare + (1|g)", _with(rare=rare, x=BASE["x"] * 100))


# -- formula features, against designs built by hand ----------------------------------
def _by_hand(columns: dict, groups, y=None):
    X = np.column_stack(list(columns.values()))
    return rl.fit(X, BASE["y"].to_numpy() if y is None else y, groups, names=list(columns))


def test_random_term_may_stand_anywhere():
    a = rl.lmer("y ~ x + (1|g)", BASE)
    for formula in ["y ~ (1|g) + x", "y ~ (1 | g)+x", "y~x+( 1 |g )"]:
        b = rl.lmer(formula, BASE)
        np.testing.assert_allclose(b.fixef, a.fixef, rtol=1e-12)


def test_group_by_combination_of_columns():
    data = _with(h=np.arange(60) % 2)
    m = rl.lmer("y ~ x + (1|g:h)", data)
    combined = data["g"].astype(str) + "_" + data["h"].astype(str)
    ref = _by_hand({"(Intercept)": np.ones(60), "x": BASE["x"].to_numpy()}, combined.to_numpy())
    assert m.ngroups == 20 and m.group_name == "g:h"
    np.testing.assert_allclose(m.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-10)
    assert m.criterion == pytest.approx(ref.criterion, rel=1e-12)


@pytest.mark.parametrize("formula", ["y ~ 0 + x + (1|g)", "y ~ x - 1 + (1|g)", "y ~ -1 + x + (1|g)"])
def test_no_intercept(formula):
    m = rl.lmer(formula, BASE)
    ref = _by_hand({"x": BASE["x"].to_numpy()}, BASE["g"].to_numpy())
    assert list(m.fixef.index) == ["x"]
    assert m.fixef["x"] == pytest.approx(ref.fixef["x"], rel=1e-10)
    assert m.criterion == pytest.approx(ref.criterion, rel=1e-12)


def test_categorical_interaction_transforms():
    data = _with(c=np.arange(60) % 3, z=np.exp(BASE["x"] / 2))
    x = BASE["x"].to_numpy()
    is1, is2 = (data["c"] == 1).to_numpy(float), (data["c"] == 2).to_numpy(float)
    hand = {
        "(Intercept)": np.ones(60), "C(c)[T.1]": is1, "C(c)[T.2]": is2, "x": x, "I(x ** 2)": x**2,
        "np.log(z)": x / 2, "C(c)[T.1]:x": is1 * x, "C(c)[T.2]:x": is2 * x,
    }
    # np.log(z) = x / 2 is collinear with x: the engine drops it, as lme4 would.
    with pytest.warns(rl.ModelDataWarning, match="np.log"):
        m = rl.lmer("y ~ C(c) * x + I(x**2) + np.log(z) + (1|g)", data)
    del hand["np.log(z)"]
    ref = _by_hand(hand, BASE["g"].to_numpy())
    np.testing.assert_allclose(m.fixef[list(hand)].to_numpy(), ref.fixef.to_numpy(), rtol=1e-8, atol=1e-12)
    assert m.criterion == pytest.approx(ref.criterion, rel=1e-10)


def test_transformed_response():
    data = _with(pos=np.exp(BASE["y"] / 4))
    m = rl.lmer("np.log(pos) ~ x + (1|g)", data)
    ref = rl.lmer(FORMULA, _with(y=np.log(data["pos"])))
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-10)


def test_seed_case_errors_are_in_the_users_words():
    seed = case_data("seed_x")
    with pytest.raises(rl.ModelDataError, match="'f' has 4 levels for 4 observations"):
        rl.lmer("y ~ 1 + (1|f)", seed.groupby("f", as_index=False).first())
