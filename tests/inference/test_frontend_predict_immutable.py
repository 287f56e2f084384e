"""A fit does not change, whatever ``predict`` is given: bad newdata is an error naming
the column, and afterwards every prediction and table is exactly as before.

formulaic updates the encoder state of a model spec it materializes with: a numeric
column given as text once made the fit's spec record text categories, and every later
``predict`` and ``anova`` failed. Factor levels in newdata are matched to the fitted
ones by their text, as R matches factor levels (an integer level 1 given as "1").
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(21)
    n = 90
    g = np.repeat(np.arange(15), 6)
    return pd.DataFrame({
        "y": rng.normal(size=n) + rng.normal(size=15)[g],
        "x": rng.normal(size=n),
        "c": rng.choice(["a", "b", "c"], size=n),
        "k": rng.integers(1, 4, size=n),
        "g": g,
    })


FORMULAS = [
    "y ~ x + c + C(k) + (1|g)",
    "y ~ x * c + (1|g)",
    "y ~ within(x) + between(x) + c + (1|g)",
    "y ~ np.log(x * x + 1) + C(k) + (1|g)",
]

# (label, column, replacement values for the 6 newdata rows, error pattern)
BAD_NEWDATA = [
    ("numeric column as text", "x", ["a"] * 6, r"column 'x' of newdata holds str values \(dtype object.*where the fit had numbers \(float64\)"),
    ("numeric column as digits", "x", ["1.5"] * 6, r"column 'x' of newdata holds str values"),
    ("text factor as floats", "c", [1.5] * 6, r"column 'c' of newdata has level\(s\) 1.5 \(float\) not seen"),
    ("text factor as ints", "c", [1, 2, 3, 1, 2, 3], r"column 'c' of newdata has level\(s\) 1, 2, 3 \(int\)"),
    ("unseen text level", "c", ["a", "b", "zz", "a", "b", "c"], r"level\(s\) 'zz' \(str\) not seen.*'a', 'b', 'c'"),
    ("unseen int level as text", "k", ["7"] * 6, r"column 'k' of newdata has level\(s\) '7' \(str\).*1, 2, 3, int"),
    ("complex numbers", "x", [1 + 1j] * 6, r"column 'x' of newdata (is|holds) complex"),
    ("lists", "x", [[1.0]] * 6, r"column 'x' of newdata"),
]


def _anova(m):
    """The type III table, or the message of its error (within() has no type III table)."""
    try:
        return m.anova()
    except rl.ModelDataError as err:
        return pd.DataFrame({"error": [str(err)]})


def _state(m) -> bytes:
    """Everything of the fit that later calls read, byte for byte."""
    spec = m.design.model_spec
    return pickle.dumps((spec.encoder_state, spec.transform_state, m.design.X, m.fixef, m.vcov))


@pytest.mark.parametrize("formula", FORMULAS)
def test_failed_predict_leaves_the_fit_unchanged(data, formula):
    m = rl.lmer(formula, data)
    new = data.iloc[:6].copy()
    before = (m.predict(new), m.predict(new, re=False), m.predict(), _anova(m), _state(m))
    used = m.design.model_spec.required_variables
    for label, column, values, pattern in BAD_NEWDATA:
        if column not in used and not (column == "k" and "C(k)" in formula):
            continue
        bad = new.copy()
        bad[column] = pd.Series(values, index=bad.index, dtype=object)
        with pytest.raises(rl.ModelDataError, match=pattern):
            m.predict(bad)
        after = (m.predict(new), m.predict(new, re=False), m.predict(), _anova(m), _state(m))
        pd.testing.assert_series_equal(after[0], before[0], check_exact=True, obj=label)
        pd.testing.assert_series_equal(after[1], before[1], check_exact=True, obj=label)
        np.testing.assert_array_equal(after[2], before[2], err_msg=label)
        pd.testing.assert_frame_equal(after[3], before[3], check_exact=True, obj=label)
        assert after[4] == before[4], label
    for missing in (new.drop(columns="x"), new.iloc[:0], pd.DataFrame({"x": [1.0]})):
        try:
            m.predict(missing)
        except rl.ModelDataError:
            pass
        assert _state(m) == before[4]


def test_int_levels_given_as_text_match_as_in_r(data):
    """R matches factor levels by their text: a level 1 given as "1" (or 1.0) is level 1."""
    m = rl.lmer("y ~ x + C(k) + (1|g)", data)
    new = data.iloc[:9]
    expected = m.predict(new)
    for values in (new["k"].astype(str), new["k"].astype(float), new["k"].astype(str).astype("string[pyarrow]")):
        np.testing.assert_array_equal(m.predict(new.assign(k=values)), expected)


def test_text_dtypes_and_nullable_numbers_in_newdata(data):
    m = rl.lmer("y ~ x + c + (1|g)", data)
    new = data.iloc[:8]
    expected = m.predict(new).to_numpy()
    for dtype in ["str", "string[python]", "string[pyarrow]", "category"]:
        np.testing.assert_array_equal(m.predict(new.astype({"c": dtype})), expected, err_msg=dtype)
    nullable = new.astype({"x": "Float64"})
    nullable.loc[nullable.index[2], "x"] = pd.NA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)  # 1 of 8 rows has a missing predictor
        got = m.predict(nullable).to_numpy()
    assert np.isnan(got[2])
    np.testing.assert_array_equal(np.delete(got, 2), np.delete(expected, 2))
    # A column of None is missing, not text: every prediction is NaN, with the warning.
    with pytest.warns(rl.ModelDataWarning, match="8 of 8 rows of newdata have missing predictors"):
        assert m.predict(new.assign(x=None)).isna().all()
