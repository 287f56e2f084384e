"""The fit is the model the user wrote, whatever the dtypes and spelling of the input.

pandas' text dtypes (``str``, ``string[python]``, ``string[pyarrow]``, Arrow strings),
nullable and Arrow numbers and booleans, complex and mixed columns, awkward column
names (dotted, ``Intercept``, ``1``, duplicated), lme4 spellings of the grouping term
(``(1|factor(g))``, ``(1||g)``) and what is not supported (``.``, random
slopes): each gives the design of the plain numpy/object data or a named error.

The reference for a design is formulaic's general materialization of the same data
with text as object columns (which the lme4 comparisons in
test_frontend_sorted_data.py tie to lme4); fits of real data read with every pandas
dtype backend are compared with lme4's values.
"""

from __future__ import annotations

import io
import json
import warnings

import formulaic
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from reference_data import REFERENCE, lme4_name

import reml_engine as rl
from reml_engine.frontend.design import build_design

with open(REFERENCE / "frontend_reference.json") as fh:
    LME4 = json.load(fh)

#: lme4 stops its optimizer at ~1e-6 in the criterion.
CRITERION_ATOL = 1e-6
#: Estimates at lme4's optimum and the engine's agree to ~1e-6 relative (flat cases:
#: see test_frontend_sorted_data.VARIANCE_RTOL).
ESTIMATE_RTOL = 2e-5

TEXT_DTYPES = [
    "str", "string[python]", "string[pyarrow]", pd.ArrowDtype(pa.string()), pd.ArrowDtype(pa.large_string()),
    "category",
]


def _frame(n: int = 48, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(8), n // 8)
    return pd.DataFrame({
        "y": rng.normal(size=n) + rng.normal(size=8)[g],
        "x": rng.normal(size=n),
        "code": rng.choice(["1", "2", "10"], size=n),
        "letter": rng.choice(["a", "b", "c"], size=n),
        "g": g,
    })


def _general(fixed: str, data: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    mm = formulaic.model_matrix(fixed, data, na_action="ignore")
    return ["(Intercept)" if c == "Intercept" else str(c) for c in mm.rhs.columns], mm.rhs.to_numpy(dtype=float)


def _quiet(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return rl.lmer(formula, data, **kwargs)


# -- pandas dtypes -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", TEXT_DTYPES, ids=str)
@pytest.mark.parametrize("column", ["code", "letter"])
def test_text_dtypes_are_factors_as_object_columns_are(dtype, column):
    """Digit codes are levels (not one slope), letters do not crash."""
    data = _frame()
    names, X = _general(f"y ~ x + {column}", data.astype({column: object}))
    assert len(names) == 4  # intercept, x and two level indicators
    design = build_design(f"y ~ x + {column} + (1|g)", data.astype({column: dtype}))
    assert list(design.column_names) == names
    np.testing.assert_array_equal(design.X, X)


@pytest.mark.parametrize("dtype", ["object", *TEXT_DTYPES], ids=str)
def test_text_response_is_an_error_naming_it(dtype):
    data = _frame()
    digits = data.assign(y=data["y"].round(3).astype(str).astype(dtype))
    with pytest.raises(rl.ModelDataError, match=r"response 'y' .*(numbers stored as|not numeric)"):
        rl.lmer("y ~ x + (1|g)", digits)
    letters = data.assign(y=data["letter"].astype(dtype))
    with pytest.raises(rl.ModelDataError, match=r"response 'y' .*not numeric"):
        rl.lmer("y ~ x + (1|g)", letters)


NUMERIC_DTYPES = ["Int64", "Float64", "Float32", "int64[pyarrow]", "double[pyarrow]", "float32"]


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_nullable_and_arrow_numbers_give_the_numpy_fit(dtype):
    data = _frame()
    data["x"] = np.round(data["x"] * 4)  # whole numbers, so that integer dtypes hold them
    with_missing = data.astype({"x": object, "y": object})
    with_missing.loc[[3, 17], "x"] = None
    with_missing.loc[[5], "y"] = None
    plain = with_missing.astype({"x": float, "y": float})
    if dtype == "float32":
        plain = plain.astype({"x": "float32"})
    # The response in a float dtype of the same precision as float64.
    response_dtype = {"Int64": "Float64", "Float32": "Float64", "int64[pyarrow]": "double[pyarrow]"}.get(dtype, dtype)
    converted = with_missing.astype({"x": dtype, "y": response_dtype if dtype != "float32" else float})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        expected = build_design("y ~ x + letter + (1|g)", plain)
    with pytest.warns(rl.ModelDataWarning, match=r"dropped 3 of 48 rows .*'x': 2, 'y': 1"):
        design = build_design("y ~ x + letter + (1|g)", converted)
    assert design.column_names == expected.column_names
    np.testing.assert_array_equal(design.X, expected.X)
    np.testing.assert_array_equal(design.y, expected.y)


@pytest.mark.parametrize("dtype", ["boolean", "bool[pyarrow]"])
def test_nullable_booleans_give_the_numpy_boolean_design(dtype):
    data = _frame()
    flag = data["x"] > 0
    expected = build_design("y ~ flag + (1|g)", data.assign(flag=flag).iloc[1:])
    nullable = pd.Series(flag, dtype=dtype)
    nullable.iloc[0] = pd.NA
    with pytest.warns(rl.ModelDataWarning, match=r"dropped 1 of 48 rows"):
        design = build_design("y ~ flag + (1|g)", data.assign(flag=nullable))
    assert design.column_names == expected.column_names
    np.testing.assert_array_equal(design.X, expected.X)


@pytest.mark.parametrize("name", ["machines", "orthodont", "milk", "exam", "sim_negative_icc"])
@pytest.mark.parametrize("reader", ["pyarrow", "numpy_nullable", "convert_dtypes", "pyarrow engine"])
def test_every_read_csv_backend_gives_lme4s_fit(name, reader):
    ref = LME4[name]
    path = REFERENCE / ref["file"]
    if reader == "convert_dtypes":
        data = pd.read_csv(path).convert_dtypes()
    elif reader == "pyarrow engine":
        data = pd.read_csv(path, engine="pyarrow", dtype_backend="pyarrow")
    else:
        data = pd.read_csv(path, dtype_backend=reader)
    m = _quiet(ref["formula"], data.sort_values(data.columns[2], kind="stable"))
    assert m.criterion == pytest.approx(ref["criterion"], abs=CRITERION_ATOL)
    assert [lme4_name(c) for c in m.fixef.index] == ref["coef_names"]
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["fixef"], rtol=ESTIMATE_RTOL)


def test_complex_columns_are_errors_naming_them():
    data = _frame()
    with pytest.raises(rl.ModelDataError, match=r"column 'x' is complex"):
        rl.lmer("y ~ x + (1|g)", data.assign(x=data["x"] + 1j))
    with pytest.raises(rl.ModelDataError, match=r"column 'y' is complex"):
        rl.lmer("y ~ x + (1|g)", data.assign(y=data["y"] + 0j))
    X = np.column_stack([np.ones(len(data)), data["x"]])
    with pytest.raises(rl.ModelDataError, match=r"X is complex"):
        rl.fit(X + 1j, data["y"], data["g"])
    with pytest.raises(rl.ModelDataError, match=r"y is complex"):
        rl.fit(X, data["y"] + 1j, data["g"])
    with pytest.raises(rl.ModelDataError, match=r"column 1 \('b'\) of X is not numeric"):
        rl.fit(pd.DataFrame({"a": 1.0, "b": data["letter"]}), data["y"], data["g"])


def test_text_and_numbers_in_one_column_are_an_error_naming_it():
    data = _frame()
    mixed = data["code"].astype(object)
    mixed.iloc[::2] = 7
    with pytest.raises(rl.ModelDataError, match=r"column 'code' holds values of several types \(int, str\)"):
        rl.lmer("y ~ code + (1|g)", data.assign(code=mixed))


def test_unused_categories_do_not_change_the_fit():
    """lme4 drops unused levels (test_frontend_sorted_data checks the values against R)."""
    data = _frame()
    plain = _quiet("y ~ x + letter + (1|g)", data)
    categorical = data.assign(letter=pd.Categorical(data["letter"], categories=["0", "a", "b", "zz", "c"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", rl.ModelDataWarning)  # no zero columns dropped
        m = rl.lmer("y ~ x + letter + (1|g)", categorical)
    assert list(m.fixef.index) == list(plain.fixef.index)
    np.testing.assert_allclose(m.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=1e-12)


def test_levels_read_as_missing_are_counted_with_a_read_csv_hint():
    """pandas.read_csv reads a level named "None" or "NA" as NaN."""
    data = _frame()
    data["letter"] = np.where(np.arange(len(data)) % 6 == 0, "None", data["letter"])
    text = data.to_csv(index=False)
    with pytest.warns(rl.ModelDataWarning) as caught:
        m = rl.lmer("y ~ x + letter + (1|g)", pd.read_csv(io.StringIO(text)))
    messages = [str(w.message) for w in caught]
    assert any("dropped 8 of 48 rows with missing values ('letter': 8)" in w for w in messages), messages
    assert any("'letter': 8" in w and "keep_default_na=False" in w and "'None'" in w for w in messages), messages
    assert m.nobs == 40
    full = rl.lmer("y ~ x + letter + (1|g)", pd.read_csv(io.StringIO(text), keep_default_na=False))
    assert full.nobs == 48 and len(full.fixef) == 5  # 'None' is the fourth level


# -- argument and formula checks -------------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "TRUE", 0, 1, None, 1.0])
def test_REML_must_be_a_bool(value):
    data = _frame()
    with pytest.raises(rl.ModelDataError, match=r"REML must be True or False"):
        rl.lmer("y ~ x + (1|g)", data, REML=value)
    with pytest.raises(rl.ModelDataError, match=r"REML must be True or False"):
        rl.fit(np.ones((len(data), 1)), data["y"], data["g"], REML=value)
    assert rl.lmer("y ~ x + (1|g)", data, REML=np.bool_(False)).REML is False


@pytest.mark.parametrize("value", ["exclude", "OMIT", None, True])
def test_na_action_must_be_one_of_the_names(value):
    with pytest.raises(rl.ModelDataError, match=r"na_action must be one of 'omit', 'raise'"):
        rl.lmer("y ~ x + (1|g)", _frame(), na_action=value)


def test_swapped_arguments_say_so():
    with pytest.raises(rl.ModelDataError, match=r"formula comes first"):
        rl.lmer(_frame(), "y ~ x + (1|g)")


@pytest.mark.parametrize("spelling", ["(1|factor(g))", "(1|as.factor(g))", "(1||g)", "( 1 | factor( g ) )"])
def test_lme4_spellings_of_the_grouping_term(spelling):
    data = _frame()
    reference = rl.lmer("y ~ x + (1|g)", data)
    m = rl.lmer(f"y ~ x + {spelling}", data)
    assert m.criterion == reference.criterion
    np.testing.assert_array_equal(m.fixef.to_numpy(), reference.fixef.to_numpy())


@pytest.mark.parametrize("term", ["(x|g)", "(1 + x|g)", "(0 + x|g)", "(x||g)"])
def test_random_slopes_are_refused_with_the_alternatives(term):
    with pytest.raises(rl.ModelDataError, match=r"random slopes are out of scope.*within\(x\) \+ between\(x\).*lme4"):
        rl.lmer(f"y ~ x + {term}", _frame())


def test_offset_goes_to_the_several_terms_engine():
    """A constant offset of 1 is the model without it, with the intercept 1 lower."""
    data = _frame().assign(z=1.0)
    m = rl.lmer("y ~ x + offset(z) + (1|g)", data)
    plain = rl.lmer("y ~ x + (1|g)", data)
    assert isinstance(m, rl.TermsFit) and m.has_offset
    assert m.fixef["(Intercept)"] == pytest.approx(plain.fixef["(Intercept)"] - 1.0, rel=1e-6)
    assert m.fixef["x"] == pytest.approx(plain.fixef["x"], rel=1e-6)
    assert m.variances["g"] == pytest.approx(plain.var_group, rel=1e-5)
    assert m.criterion == pytest.approx(plain.criterion, abs=1e-8)


def test_dot_is_explained_with_the_columns():
    with pytest.raises(rl.ModelDataError, match=r"uses '\.'.*not supported.*: x, code, letter$"):
        rl.lmer("y ~ . + (1|g)", _frame())


def test_column_named_intercept_is_not_confused_with_the_intercept():
    data = _frame()
    data["Intercept"] = data["x"] * 2 + 1
    with pytest.raises(rl.ModelDataError, match=r"column 'Intercept' has the name formulaic gives the intercept"):
        rl.lmer("y ~ x + Intercept + (1|g)", data)
    # Unused, it changes nothing.
    assert rl.lmer("y ~ x + (1|g)", data).criterion == rl.lmer("y ~ x + (1|g)", _frame()).criterion


@pytest.mark.parametrize("name, term", [("Intercept", "Intercept"), ("1", "`1`")])
def test_grouping_column_or_response_named_like_the_intercept_fits(name, term):
    """formulaic reads only the fixed part: a grouping column or a response named
    Intercept or `1` is read by name and fits (it was refused as a grouping column)."""
    from reml_engine.scaleout.chunked import lmer_chunks

    data = _frame()
    expected = rl.lmer("y ~ x + (1|g)", data)
    grouped = data.rename(columns={"g": name})
    for fit in (rl.lmer(f"y ~ x + (1|{term})", grouped), lmer_chunks(f"y ~ x + (1|{term})", [grouped[:20], grouped[20:]])):
        assert fit.criterion == pytest.approx(expected.criterion, rel=1e-12)
        assert list(fit.ranef.index) == list(expected.ranef.index)
    if name == "Intercept":
        fit = rl.lmer("Intercept ~ x + (1|g)", data.rename(columns={"y": name}))
        assert fit.criterion == pytest.approx(expected.criterion, rel=1e-12)


def test_column_named_1_is_not_the_intercept():
    data = _frame()
    data["1"] = data["x"] ** 2
    with pytest.raises(rl.ModelDataError, match=r"names column '1' as `1`, which formulaic reads as the intercept"):
        rl.lmer("y ~ x + `1` + (1|g)", data)


def test_duplicate_column_names_are_an_error_naming_the_column():
    data = _frame()
    doubled = pd.concat([data, data[["x"]] * 2], axis=1)
    with pytest.raises(rl.ModelDataError, match=r"the data have 2 columns named 'x'"):
        rl.lmer("y ~ x + (1|g)", doubled)
    # A duplicated column the formula does not use is no problem.
    unused = pd.concat([data, data[["code"]]], axis=1)
    assert rl.lmer("y ~ x + (1|g)", unused).criterion == rl.lmer("y ~ x + (1|g)", data).criterion


@pytest.mark.parametrize("formula", [
    "Sepal.Width ~ Sepal.Length + (1|Species)",
    "Sepal.Width ~ `Sepal.Length` + (1|Species)",
    "`Sepal.Width` ~ Sepal.Length + (1|Species)",
])
def test_dotted_names_work_as_in_r(formula):
    data = _frame().rename(columns={"y": "Sepal.Width", "x": "Sepal.Length", "g": "Species"})
    reference = rl.lmer("y ~ x + (1|g)", _frame())
    m = rl.lmer(formula, data)
    assert m.criterion == reference.criterion
    assert list(m.fixef.index) == ["(Intercept)", "Sepal.Length"]
    new = data.iloc[:4]
    np.testing.assert_array_equal(m.predict(new), reference.predict(_frame().iloc[:4]))


def test_dotted_names_inside_calls_and_interactions():
    data = _frame().rename(columns={"x": "x.1", "letter": "f.a"})
    data["x.1"] = data["x.1"].abs() + 1
    m = rl.lmer("y ~ np.log(x.1) * f.a + (1|g)", data)
    reference = rl.lmer("y ~ np.log(x) * letter + (1|g)", data.rename(columns={"x.1": "x", "f.a": "letter"}))
    assert m.criterion == reference.criterion
    np.testing.assert_array_equal(m.fixef.to_numpy(), reference.fixef.to_numpy())
    with pytest.raises(rl.ModelDataError, match=r"'x\.2' of formula .*not columns.*did you mean 'x\.1'"):
        rl.lmer("y ~ x.2 + (1|g)", data)


def test_fit_from_arrays_reads_pandas_dtypes_and_names_what_is_not_numbers():
    data = _frame()
    X = np.column_stack([np.ones(len(data)), data["x"] > 0])
    reference = rl.fit(X, data["y"].to_numpy(), data["g"].to_numpy())
    # Boolean indicator columns are 0/1; nullable and Arrow floats are floats.
    frame = pd.DataFrame({"one": np.ones(len(data)), "pos": (data["x"] > 0).astype("boolean")})
    m = rl.fit(frame, data["y"].astype("double[pyarrow]"), data["g"])
    assert m.criterion == reference.criterion
    with pytest.raises(rl.ModelDataError, match=r"y is not numeric \(dtype bool\); the response must be numbers"):
        rl.fit(X, data["y"].to_numpy() > 0, data["g"])
    with pytest.raises(rl.ModelDataError, match=r"names must be a sequence of column names"):
        rl.fit(X, data["y"], data["g"], names="ab")
