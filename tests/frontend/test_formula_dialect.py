"""The formula dialects (reml_engine.frontend.formula_dialect, reml_engine.frontend.r_syntax) and contrasts=.

Each R construct is checked against what R defines it to be (numpy written from R's
documentation: R's poly() by QR, scale() with the n - 1 standard deviation, as.numeric()
of a factor its level codes), each refused construct for its message, and the terms R
makes of formula-level syntax against R's own ``terms()`` (dialect_reference.json).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import REFERENCE

import reml_engine as rl
from reml_engine.errors import ModelDataError, ModelDataWarning
from reml_engine.frontend.design import build_design, new_fixed_design
from reml_engine.frontend.formula import parse_formula
from reml_engine.frontend.formula_dialect import check_contrasts, check_dialect
from reml_engine.frontend.r_syntax import RSyntaxError, parse_r, tokenize_r
from reml_engine.frontend.r_translate import translate_r
from reml_engine.frontend.transforms import formula_context


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(20_241)
    n = 72
    return pd.DataFrame({
        "y": rng.normal(10.0, 1.0, n),
        "x": rng.integers(1, 9, n),  # integers: where ^ as XOR would go unnoticed
        "z": rng.normal(size=n),
        "w": rng.uniform(0.5, 3.0, n),
        "f": rng.choice(["a", "b", "c"], n),
        "o": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"], ordered=True),
        "Sepal.Length": rng.normal(5.0, 1.0, n),
        "g": np.repeat(np.arange(12), 6),
    })


def _column(data, rhs: str, dialect: str = "R") -> np.ndarray:
    """The single design column (besides the intercept) that ``y ~ rhs`` makes."""
    design = build_design(f"y ~ {rhs} + (1|g)", data, dialect=dialect)
    assert design.column_names[0] == "(Intercept)" and design.X.shape[1] == 2, design.column_names
    return design.X[:, 1]


def _r_poly(x: np.ndarray, degree: int) -> np.ndarray:
    """R's poly(x, degree): QR of the centred powers, columns scaled by R's diagonal and
    normalized (stats::poly's own construction, not formulaic's recurrence)."""
    powers = np.vander(x - x.mean(), degree + 1, increasing=True)
    q, r = np.linalg.qr(powers)
    z = q * np.diag(r)
    z /= np.sqrt((z**2).sum(axis=0))
    return z[:, 1:]


# -- R constructs and their values -------------------------------------------------------


@pytest.mark.parametrize(
    ("rhs", "expected"),
    [
        ("I(x^2)", lambda d: d.x.to_numpy(float) ** 2),
        ("I(x**3)", lambda d: d.x.to_numpy(float) ** 3),
        ("I(-x^2)", lambda d: -(d.x.to_numpy(float) ** 2)),
        ("I(2^x^2)", lambda d: 2.0 ** (d.x.to_numpy(float) ** 2)),  # ^ groups from the right
        ("I(x^-1)", lambda d: 1.0 / d.x.to_numpy(float)),  # R's ^ gives doubles on integers
        ("I((x + 1)^2/2)", lambda d: (d.x.to_numpy(float) + 1) ** 2 / 2),
        ("I(x %% 3)", lambda d: np.mod(d.x, 3)),
        ("I(-x %% 3)", lambda d: np.mod(-d.x, 3)),  # unary minus binds tighter than %%
        ("I(x %/% 3)", lambda d: np.floor_divide(d.x, 3)),
        ("I(x > 2 & z < 0)", lambda d: ((d.x > 2) & (d.z < 0)).astype(float)),
        ("I(!(x > 2))", lambda d: (d.x <= 2).astype(float)),
        ("I(2L * x)", lambda d: 2.0 * d.x),
        ("I(pi * z)", lambda d: np.pi * d.z),
        ("I(x * TRUE + F)", lambda d: d.x.astype(float)),
        ("log(w)", lambda d: np.log(d.w)),
        ("log(w, 2)", lambda d: np.log2(d.w)),
        ("log(w, base = 10)", lambda d: np.log10(d.w)),
        ("log10(w)", lambda d: np.log10(d.w)),
        ("log1p(w)", lambda d: np.log1p(d.w)),
        ("exp(z/10)", lambda d: np.exp(d.z / 10)),
        ("sqrt(w)", lambda d: np.sqrt(d.w)),
        ("abs(z)", lambda d: np.abs(d.z)),
        ("floor(w)", lambda d: np.floor(d.w)),
        ("ceiling(w)", lambda d: np.ceil(d.w)),
        ("trunc(z)", lambda d: np.trunc(d.z)),
        ("sign(z)", lambda d: np.sign(d.z)),
        ("pmin(x, 3)", lambda d: np.minimum(d.x, 3)),
        ("pmax(z, w, 1)", lambda d: np.maximum(np.maximum(d.z, d.w), 1)),
        ("ifelse(x > 4, z, w)", lambda d: np.where(d.x > 4, d.z, d.w)),
        ("as.numeric(o)", lambda d: d.o.cat.codes + 1.0),  # a factor's level codes, as R
        ("as.numeric(z)", lambda d: d.z),
        ("as.integer(z * 3)", lambda d: np.trunc(d.z * 3)),
        ("scale(z)", lambda d: (d.z - d.z.mean()) / d.z.std(ddof=1)),
        ("scale(z, scale = FALSE)", lambda d: d.z - d.z.mean()),
        ("scale(w, center = FALSE)", lambda d: d.w / np.sqrt((d.w**2).sum() / (len(d) - 1))),
        ("Sepal.Length", lambda d: d["Sepal.Length"]),
        ("I(Sepal.Length^2)", lambda d: d["Sepal.Length"] ** 2),
    ],
)
def test_r_expression_values(data, rhs, expected):
    np.testing.assert_allclose(_column(data, rhs), np.asarray(expected(data), dtype=float), rtol=1e-12)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_r_poly_is_rs_orthogonal_polynomial(data, degree):
    design = build_design(f"y ~ poly(w, {degree}) + (1|g)", data, dialect="R")
    np.testing.assert_allclose(design.X[:, 1:], _r_poly(data.w.to_numpy(), degree), rtol=1e-10, atol=1e-12)
    spelled = build_design(f"y ~ poly(w, degree = {degree}) + (1|g)", data, dialect="R")
    np.testing.assert_array_equal(spelled.X, design.X)


def test_r_poly_raw_is_the_powers(data):
    design = build_design("y ~ poly(x, 3, raw = TRUE) + (1|g)", data, dialect="R")
    x = data.x.to_numpy(float)
    np.testing.assert_allclose(design.X[:, 1:], np.column_stack([x, x**2, x**3]))


def test_poly_degree_must_be_below_distinct_values(data):
    with pytest.raises(ModelDataError, match=r"degree 8 must be less than the number of distinct values \(8\)"):
        build_design("y ~ poly(x, 8) + (1|g)", data, dialect="R")


def test_response_expression(data):
    design = build_design("log(y) ~ x + (1|g)", data, dialect="R")
    np.testing.assert_allclose(design.y, np.log(data.y))


@pytest.mark.parametrize(
    ("rhs", "fixed"),
    [
        ("factor(x)", "y ~ C(x)"),
        ("as.factor(f)", "y ~ C(f)"),
        ("ordered(x)", "y ~ C(x, contr.poly)"),
        ("o", "y ~ C(o, contr.poly)"),  # an ordered categorical: R's contr.poly
        ("factor(o)", "y ~ C(o, contr.poly)"),  # factor() keeps an ordered factor ordered
        ("f", "y ~ f"),
        ("C(f, sum)", "y ~ C(f, contr.sum)"),
        ("C(f, contr.helmert)", "y ~ C(f, contr.helmert)"),
        ("C(f, 'contr.SAS')", "y ~ C(f, contr.SAS)"),
        ("C(f, contr = poly)", "y ~ C(f, contr.poly)"),
        ("o:x + f %in% o", "y ~ C(o, contr.poly) : x + f : C(o, contr.poly)"),
        ("(x + z)^2 - 1", "y ~ (x + z)^2 - 1"),
        ("0 + x", "y ~ 0 + x"),
        ("`my var` + Sepal.Length", "y ~ `my var` + `Sepal.Length`"),
        ("within(x) + between(x)", "y ~ within(x) + between(x)"),
    ],
)
def test_r_translation(data, rhs, fixed):
    assert parse_formula(f"y ~ {rhs} + (1|g)", dialect="R", dtypes=data.dtypes).fixed == fixed


def test_ordered_factor_gets_contr_poly_in_r_and_treatment_in_python(data):
    """Same model, two codings: the variances and fitted values agree; the coefficients
    of the R fit are R's contr.poly (linear, quadratic) contrasts of the level means."""
    r = rl.lmer("y ~ o + (1|g)", data, dialect="R")
    python = rl.lmer("y ~ o + (1|g)", data)
    assert list(r.fixef.index) == ["(Intercept)", "C(o, contr.poly)[.L]", "C(o, contr.poly)[.Q]"]
    assert list(python.fixef.index) == ["(Intercept)", "o[T.mid]", "o[T.hi]"]
    assert r.sigma2 == pytest.approx(python.sigma2, rel=1e-9)
    assert r.var_group == pytest.approx(python.var_group, rel=1e-9)
    np.testing.assert_allclose(r.fitted, python.fitted, rtol=1e-10)
    means = np.array([0.0, python.fixef["o[T.mid]"], python.fixef["o[T.hi]"]])
    linear = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0)
    quadratic = np.array([1.0, -2.0, 1.0]) / np.sqrt(6.0)
    assert r.fixef["C(o, contr.poly)[.L]"] == pytest.approx(linear @ means, rel=1e-8)
    assert r.fixef["C(o, contr.poly)[.Q]"] == pytest.approx(quadratic @ means, rel=1e-8)


def test_r_constants_yield_to_columns_of_the_same_name(data):
    shadowed = data.assign(T=data.z, pi=data.w)
    assert parse_formula("y ~ I(T + pi) + (1|g)", dialect="R", dtypes=shadowed.dtypes).fixed == "y ~ I(T + pi)"
    assert parse_formula("y ~ I(T + pi) + (1|g)", dialect="R", dtypes=data.dtypes).fixed == "y ~ I(True + np.pi)"


# -- formula-level syntax against R's terms() --------------------------------------------

TERMS = json.loads((REFERENCE / "dialect_reference.json").read_text())["terms"]


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.reference
@pytest.mark.parametrize("case", TERMS, ids=[case["formula"] for case in TERMS])
def test_formula_operators_make_rs_terms(case):
    """%in%, /, ^, -, *, 0/-1: the same terms (as sets of variables) and the same rank of
    the model matrix as R's terms() and model.matrix() on the same data."""
    import formulaic

    data = pd.read_csv(REFERENCE / "dialect_terms.csv").assign(y=1.0)
    rhs = case["formula"].split("~", 1)[1]
    fixed = translate_r("y", rhs, case["formula"], data.dtypes)
    matrices = formulaic.model_matrix(fixed, data, context=formula_context())
    spec = matrices.rhs.model_spec
    ours = {frozenset(str(f) for f in term.factors) for term in spec.terms if str(term) != "1"}

    def formulaic_name(variable):  # R's I(x^2) is formulaic's I(x ** 2)
        model = formulaic.model_matrix(translate_r("y", variable, variable, data.dtypes), data)
        return str(model.rhs.model_spec.terms[-1])

    theirs = {frozenset(formulaic_name(v) for v in _as_list(vs)) for vs in case["term_variables"]}
    assert ours == theirs
    assert ("1" in [str(t) for t in spec.terms]) == bool(case["intercept"])
    assert np.linalg.matrix_rank(matrices.rhs.to_numpy()) == case["rank"]


# -- what dialect="R" refuses, and why ----------------------------------------------------


@pytest.mark.parametrize(
    ("rhs", "message"),
    [
        ("ns(w, 3)", r"ns\(\) \(natural splines\) is not translated"),
        ("bs(w)", r"bs\(\) \(B-splines\) is not translated"),
        ("cut(w, 3)", r"cut\(\) \(cut\(\)\) is not translated"),
        ("np.log(w)", r"np\.log\(\) is not translated \(this looks like Python: use dialect='python'\)"),
        ("splines::ns(w, 3)", r"namespace 'splines::'"),
        ("x[1]", r"'\[' \(indexing\)"),
        ("factor(f, levels = c('b', 'a'))", r"factor\(\) with arguments other than the variable is not translated"),
        ("poly(w, 2.5)", r"poly\(\)'s degree must be a whole number"),
        ("poly(w, z, 2)", r"poly\(\) of several variables \(R's polym\) is not translated"),
        ("poly(w, 2, 3)", r"poly\(\)'s raw must be TRUE or FALSE"),
        ("poly(w, coefs = 2)", r"poly\(\) is translated for one variable.*coefs is not"),
        ("scale(w, center = 2)", r"scale\(\)'s center \(numbers are not translated\) must be TRUE or FALSE"),
        ("I(NA)", r"NA in a formula is not translated"),
        ("x > 2", r"'>' is not a formula operator.*I\(x > 2\)"),
        ("2", r"the number 2 is not a term"),
        ("'a'", r"a string \('a'\) is not a term"),
        ("log(w, 2, 3)", r"log\(\) is translated as log\(x\) or log\(x, base\)"),
        ("I(x > 1 && z > 0)", r"the operator '&&' inside an expression is not translated"),
        ("I(x %in% c(1, 2))", r"the operator '%in%' inside an expression is not translated"),
        ("C(f, foo)", r"C\(\): unknown coding 'foo'"),
        ("I(poly(w, 2))", r"poly\(\) is a term of its own"),
        ("I(1i * x)", r"complex number 1i"),
        ("I(a < b < c)", r"comparisons do not chain in R"),
        ("I(x <- 2)", r"'<-' \(assignment\)"),
        ("{x}", r"'\{' \(braces\)"),
    ],
)
def test_r_dialect_refuses(data, rhs, message):
    with pytest.raises(ModelDataError, match=message):
        build_design(f"y ~ {rhs} + (1|g)", data, dialect="R")


def test_as_numeric_of_text_is_refused(data):
    """R's answer depends on whether the column is a factor (codes) or character."""
    with pytest.raises(ModelDataError, match=r"as.numeric\(\) of a text column"):
        build_design("y ~ as.numeric(f) + (1|g)", data, dialect="R")


def test_offset_keeps_its_own_message(data):
    with pytest.raises(ModelDataError, match="offset term"):
        build_design("y ~ x + offset(z) + (1|g)", data, dialect="R")


def test_r_parser_positions():
    assert [t.text for t in tokenize_r("y ~ x^2L + `a b`")] == ["y", "~", "x", "^", "2L", "+", "`a b`"]
    with pytest.raises(RSyntaxError, match=r"unexpected '\)' at position 5"):
        parse_r("a + )")
    with pytest.raises(RSyntaxError, match="ends too early"):
        parse_r("log(x")


# -- what dialect="python" refuses: R syntax formulaic would read otherwise --------------


@pytest.mark.parametrize(
    ("rhs", "message"),
    [
        ("I(x^2)", r"'\^' in 'I\(x\^2\)' is Python's bitwise XOR.*'I\(x\*\*2\)'.*dialect='R'"),
        ("I(z^2)", r"bitwise XOR"),  # floats: formulaic's TypeError would not say why
        ("np.exp(x^2)", r"bitwise XOR"),
        ("{x^2}", r"bitwise XOR"),
        ("f %in% o", r"'a %in% b' means b/a \(b \+ b:a\) in formulaic.*a:b in R"),
        ("I(x %% 2)", r"'%%' \(R's remainder"),
        ("I(x %/% 2)", r"'%/%' \(R's integer division"),
        ("I(!(x > 2))", r"'!' \(R's not"),
        ("I(2L * x)", r"R integer literal"),
        ("as.numeric(o)", r"R function such as as.numeric"),
        ("factor(x)", r"factor\(\).*formulaic writes C\(x\)"),
        ("poly(x, 2, raw = TRUE)", r"'TRUE'.*Python writes True"),
        ("I(x > 1 && z > 0)", r"'&&'/'\|\|'"),
    ],
)
def test_python_dialect_refuses_r_syntax(data, rhs, message):
    with pytest.raises(ModelDataError, match=message):
        build_design(f"y ~ {rhs} + (1|g)", data)


@pytest.mark.parametrize(
    "rhs",
    ["I(x**2)", "np.log(w)", "C(f)", "x^2", "(x + z)**2", "poly(w, 2)", "scale(z)", "f/o", "np.power(x, 2)",
     "I(x != 2)", "I(z<-1)", "C(f, levels=['c', 'b', 'a'])"],
)
def test_python_dialect_keeps_formulaic_syntax(data, rhs):
    design = build_design(f"y ~ {rhs} + (1|g)", data)
    assert design.formula.dialect == "python"


def test_python_xor_is_refused_even_with_a_column_named_like_r(data):
    # The check reads Python's syntax tree, not the text: a ^ inside a string is no XOR.
    design = build_design("y ~ C(f, levels=['a^b', 'a', 'b', 'c']) + (1|g)", data)
    assert design.X.shape[1] == 4


def test_dialect_argument(data):
    assert check_dialect("r") == "R" and check_dialect("Python") == "python"
    with pytest.raises(ModelDataError, match="dialect must be 'python'.*or 'R'"):
        rl.lmer("y ~ x + (1|g)", data, dialect="lme4")


# -- contrasts= ---------------------------------------------------------------------------


def test_contrasts_argument_checks(data):
    assert check_contrasts(None) == ()
    with pytest.raises(ModelDataError, match="contrasts must be a dict"):
        rl.lmer("y ~ f + (1|g)", data, contrasts=["f"])
    with pytest.raises(ModelDataError, match=r"contrasts\['f'\] must be one of 'contr.treatment'"):
        rl.lmer("y ~ f + (1|g)", data, contrasts={"f": "contr.foo"})
    with pytest.raises(ModelDataError, match="contrasts names 'ff', which is not a column"):
        rl.lmer("y ~ f + (1|g)", data, contrasts={"ff": "contr.sum"})


@pytest.mark.parametrize("dialect", ["python", "R"])
def test_contrasts_that_do_not_apply_warn_as_lme4(data, dialect):
    with pytest.warns(ModelDataWarning, match="contrasts for 'z' ignored: 'z' enters formula .* as numbers"):
        rl.lmer("y ~ z + f + (1|g)", data, contrasts={"z": "contr.sum"}, dialect=dialect)
    with pytest.warns(ModelDataWarning, match="contrasts for 'o' ignored: 'o' is not a variable of the fixed part"):
        rl.lmer("y ~ z + f + (1|g)", data, contrasts={"o": "contr.sum"}, dialect=dialect)


@pytest.mark.filterwarnings("ignore:contrasts for 'o' ignored")
@pytest.mark.parametrize(
    ("rhs", "dialect", "fixed"),
    [
        ("x * f", "python", "y ~ x * C(f, contr.sum)"),
        ("C(f) + o", "python", "y ~ C(f, contr.sum) + C(o, contr.helmert)"),
        ("x * f", "R", "y ~ x * C(f, contr.sum)"),
        ("factor(f) + o", "R", "y ~ C(f, contr.sum) + C(o, contr.helmert)"),  # contrasts= beats contr.poly
    ],
)
def test_contrasts_are_written_into_the_formula(data, rhs, dialect, fixed):
    contrasts = {"f": "contr.sum", "o": "helmert"}
    parsed = parse_formula(f"y ~ {rhs} + (1|g)", dialect=dialect, contrasts=contrasts, dtypes=data.dtypes)
    assert parsed.fixed == fixed


def test_contrasts_cannot_reach_inside_python_code(data):
    with pytest.raises(ModelDataError, match=r"contrasts for 'f' cannot be written into .C\(f, levels="):
        rl.lmer("y ~ C(f, levels=['c', 'b', 'a']) + (1|g)", data, contrasts={"f": "contr.sum"})
    with pytest.raises(ModelDataError, match="has a coding in C\\(\\) and in contrasts="):
        rl.lmer("y ~ C(f, sum) + (1|g)", data, contrasts={"f": "contr.sum"}, dialect="R")


@pytest.mark.parametrize("coding", ["contr.treatment", "contr.sum", "contr.helmert", "contr.poly", "contr.SAS"])
def test_contrasts_code_columns_as_r_does(data, coding):
    """The columns of f are its level indicators times R's contrast matrix (written out
    here from R's definitions), and every coding is the same model."""
    r_matrices = {
        "contr.treatment": [[0, 0], [1, 0], [0, 1]],
        "contr.sum": [[1, 0], [0, 1], [-1, -1]],
        "contr.helmert": [[-1, -1], [1, -1], [0, 2]],
        "contr.poly": [[-np.sqrt(0.5), np.sqrt(1 / 6)], [0, -2 * np.sqrt(1 / 6)], [np.sqrt(0.5), np.sqrt(1 / 6)]],
        "contr.SAS": [[1, 0], [0, 1], [0, 0]],
    }
    m = rl.lmer("y ~ f + (1|g)", data, contrasts={"f": coding})
    indicators = pd.get_dummies(data["f"]).to_numpy(float)  # levels a, b, c
    np.testing.assert_allclose(m.design.X[:, 1:], indicators @ np.array(r_matrices[coding]), atol=1e-12)
    treatment = rl.lmer("y ~ f + (1|g)", data)
    assert m.sigma2 == pytest.approx(treatment.sigma2, rel=1e-9)
    np.testing.assert_allclose(m.fitted, treatment.fitted, rtol=1e-10)


# -- the same translated formula everywhere: predict, type III, chunks -------------------


@pytest.mark.parametrize("rhs", ["poly(w, 2) + scale(z)", "scale(x, scale = FALSE) * f", "I(x^2) + o"])
def test_new_data_reuses_the_fitted_transforms(data, rhs):
    """Rows of the fitting data given as new data get their fitted design rows: poly's
    coefficients and scale's centre and scale come from the fit, not from the new rows."""
    design = build_design(f"y ~ {rhs} + (1|g)", data, dialect="R")
    rows = data.iloc[[5, 0, 40]]
    X, complete = new_fixed_design(design, rows, design.column_names)
    assert complete.all()
    np.testing.assert_allclose(X, design.X[[5, 0, 40]], rtol=1e-12, atol=1e-12)


def test_type3_under_sum_coding_equals_treatment_coding(data):
    treatment = rl.lmer("y ~ x * f + o + (1|g)", data, dialect="R")
    summed = rl.lmer("y ~ x * f + o + (1|g)", data, dialect="R", contrasts={"f": "contr.sum", "o": "contr.sum"})
    a, b = treatment.anova(), summed.anova()
    np.testing.assert_allclose(a["f_value"].to_numpy(), b["f_value"].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(a["den_df"].to_numpy(), b["den_df"].to_numpy(), rtol=1e-7)
    assert list(b.index) == ["x", "C(f, contr.sum)", "C(o, contr.sum)", "x:C(f, contr.sum)"]


def test_type3_leaves_the_fit_as_it_was(data):
    m = rl.lmer("y ~ poly(w, 2) * f + (1|g)", data, dialect="R", contrasts={"f": "contr.helmert"})
    before = (repr(m.design.model_spec.transform_state), repr(m.design.model_spec.encoder_state))
    new = data.iloc[:7]
    predicted = np.asarray(m.predict(new, re=False))
    m.anova()
    assert (repr(m.design.model_spec.transform_state), repr(m.design.model_spec.encoder_state)) == before
    np.testing.assert_array_equal(np.asarray(m.predict(new, re=False)), predicted)


def test_chunked_fit_reads_the_formula_as_the_in_memory_fit(data):
    formula = "y ~ I(x^2) + log(w) + o * f + (1|g)"
    contrasts = {"f": "contr.sum"}
    whole = rl.lmer(formula, data, dialect="R", contrasts=contrasts)
    chunks = [data.iloc[i:i + 20] for i in range(0, len(data), 20)]
    chunked = rl.lmer(formula, lambda: iter(chunks), dialect="R", contrasts=contrasts)
    assert list(chunked.fixef.index) == list(whole.fixef.index)
    np.testing.assert_allclose(chunked.fixef.to_numpy(), whole.fixef.to_numpy(), rtol=1e-8)
    assert chunked.criterion == pytest.approx(whole.criterion, rel=1e-9)


def test_chunked_fit_refuses_what_it_cannot_read(data):
    chunks = [data.iloc[:36], data.iloc[36:]]
    with pytest.raises(ModelDataError, match="bitwise XOR"):
        rl.lmer("y ~ I(x^2) + (1|g)", chunks)
    with pytest.raises(ModelDataError, match="learn from the data"):  # poly's coefficients, scale's centre
        rl.lmer("y ~ poly(w, 2) + (1|g)", chunks, dialect="R")
    # Was a KeyError from pandas: each chunk's response is read as a column.
    with pytest.raises(ModelDataError, match=r"response 'log\(y\)' .* is an expression; a chunked fit"):
        rl.lmer("log(y) ~ x + (1|g)", chunks, dialect="R")


def test_warnings_of_a_fit_are_not_repeated(data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks = [data.iloc[:36], data.iloc[36:]]
        rl.lmer("y ~ z + (1|g)", lambda: iter(chunks), contrasts={"z": "contr.sum"})
    assert sum("contrasts for 'z' ignored" in str(w.message) for w in caught) == 1


def test_python_dialect_reads_t_and_f_as_columns(data):
    """T and F are R's TRUE and FALSE, but in formulaic's syntax they are names: a column
    T (a temperature) is read, whether or not the data's columns are known yet."""
    frame = data.assign(T=data.z)
    assert parse_formula("y ~ I(T**2) + (1|g)").fixed == "y ~ I(T**2)"
    design = build_design("y ~ I(T**2) + (1|g)", frame)
    np.testing.assert_allclose(design.X[:, 1], data.z**2)


def test_names_of_r_functions_are_columns_unless_called(data):
    """sqrt, sign, floor, ... join the formula context for R's dialect; used as a
    variable, such a name is a column the data (and new data) must have."""
    with pytest.raises(ModelDataError, match=r"variable\(s\) 'sign' of formula .* are not columns of the data"):
        rl.lmer("y ~ sign + (1|g)", data)
    m = rl.lmer("y ~ sign + sqrt(w) + (1|g)", data.assign(sign=data.z), dialect="R")
    with pytest.raises(ModelDataError, match=r"newdata has no column\(s\) 'sign'"):
        m.predict(data.head(3))


def test_dask_and_parquet_fits_read_the_formula_as_the_in_memory_fit(data, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    formula = "y ~ I(x^2) + Sepal.Length + o * f + (1|g)"
    contrasts = {"f": "contr.helmert"}
    whole = rl.lmer(formula, data, dialect="R", contrasts=contrasts)
    frame = dd.from_pandas(data, npartitions=3)
    path = tmp_path / "data.parquet"
    data.to_parquet(path)
    for source in (frame, str(path)):
        lazy = rl.lmer(formula, source, dialect="R", contrasts=contrasts)
        assert list(lazy.fixef.index) == list(whole.fixef.index)
        np.testing.assert_allclose(lazy.fixef.to_numpy(), whole.fixef.to_numpy(), rtol=1e-8)
        assert lazy.criterion == pytest.approx(whole.criterion, rel=1e-9)
