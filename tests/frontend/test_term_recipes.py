"""The recipe path gives formulaic's design of the whole data, and steps aside otherwise.

The reference is formulaic's ``model_matrix`` on all the rows fitted (missing rows
dropped, unused categories dropped, text as object columns: what the front end hands
formulaic), computed here independently of the front end; and the front end's own general
path (the recipe path switched off) on the same data. Both must equal the recipe path
value for value, in any row order, whether the recipe is made by the call or taken from
the cache made by another call.
"""

from __future__ import annotations

import warnings
from unittest import mock

import formulaic
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reml_engine as rl
from reml_engine.frontend import design as design_module
from reml_engine.frontend import term_recipes
from reml_engine.frontend.design import build_design
from reml_engine.frontend.fast_design import FastMatrices
from reml_engine.frontend.formula import formula_variables
from reml_engine.frontend.term_recipes import clear_recipes, recipe_matrices
from reml_engine.frontend.transforms import formula_context

TEXT_DTYPES = ["object", "str", "string[python]", "category"]


def _reference(fixed: str, data: pd.DataFrame, used: list[str]) -> tuple[list[str], np.ndarray]:
    """formulaic on the complete rows of ``used``, categories and text as the front end
    hands them over (unused categories dropped, pandas' string dtypes as objects)."""
    plain = data.dropna(subset=used).copy()
    for column in plain.columns:
        values = plain[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            plain[column] = values.cat.remove_unused_categories()
        elif pd.api.types.is_string_dtype(values.dtype) and values.dtype != "str":
            plain[column] = values.astype(object)
    mm = formulaic.model_matrix(fixed, plain, na_action="ignore", context=formula_context())
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.rhs.columns]
    return names, mm.rhs.to_numpy(dtype=np.float64)


def _general(formula: str, data: pd.DataFrame, **kwargs):
    """The front end's design with the recipe path switched off."""
    with mock.patch.object(design_module, "recipe_matrices", return_value=None):
        return build_design(formula, data, **kwargs)


def _check_same(formula: str, data: pd.DataFrame, **kwargs):
    design = build_design(formula, data, **kwargs)
    general = _general(formula, data, **kwargs)
    assert design.column_names == general.column_names
    np.testing.assert_array_equal(design.X, general.X)
    np.testing.assert_array_equal(design.y, general.y)
    assert design.model_spec.encoder_state == general.model_spec.encoder_state
    assert [s.columns for s in design.model_spec.structure] == [s.columns for s in general.model_spec.structure]
    return design


@pytest.fixture
def frame():
    rng = np.random.default_rng(11)
    n = 240
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "k": rng.integers(0, 4, n),
        "flag": rng.random(n) < 0.4,
        "txt": rng.choice(["p", "q", "r"], n).astype(object),
        "cat": pd.Categorical(rng.choice(["u", "v", "w"], n), categories=["z", "w", "u", "v"]),
        "g": rng.integers(0, 12, n),
    })


RECIPE_FORMULAS = [
    "y ~ x + txt", "y ~ x + cat", "y ~ 0 + cat + x", "y ~ txt + cat + flag + k", "y ~ C(k) + x",
    "y ~ C(txt, contr.sum) + x", "y ~ C(cat, contr.helmert)", "y ~ 0 + C(k, contr.poly)", "y ~ 1",
    "y ~ C(cat, levels=['v', 'u', 'w']) + x", "y ~ x + txt - 1",
]
GENERAL_FORMULAS = ["y ~ x * txt", "y ~ np.log(x * x + 1) + cat", "y ~ I(x**2) + txt", "y ~ poly(x, 2) + cat",
                    "y ~ center(x) + txt", "y ~ within(x) + between(x) + cat", "y ~ txt:cat", "y ~ x + C(x > 0)",
                    "y ~ C(txt, levels=np.unique(other)) + x"]


@pytest.mark.parametrize("fixed", RECIPE_FORMULAS)
def test_recipe_formulas_equal_formulaic_on_all_rows(frame, fixed):
    clear_recipes()
    data = frame.assign(cat=frame["cat"].cat.remove_unused_categories())
    assert isinstance(recipe_matrices(fixed, data), FastMatrices)
    for rows in (data, data.iloc[::-1], data.sample(frac=1, random_state=4)):
        design = _check_same(f"{fixed} + (1|g)", rows)
        names, X = _reference(fixed, rows, list(rows.columns))
        assert list(design.column_names) == names
        np.testing.assert_array_equal(design.X, X)


@pytest.mark.parametrize("fixed", GENERAL_FORMULAS)
def test_other_formulas_take_the_general_path(frame, fixed):
    # other: levels read from another column, whose values the recipe's sample may miss.
    data = frame.assign(cat=frame["cat"].cat.remove_unused_categories(), other=frame["txt"][::-1].to_numpy())
    assert recipe_matrices(fixed, data) is None
    _check_same(f"{fixed} + (1|g)", data)


def test_a_cached_recipe_calls_no_formulaic_and_reorders_levels(frame):
    clear_recipes()
    first = build_design("y ~ x + txt + cat + (1|g)", frame)
    # Other rows, levels first seen in another order: the recipe maps them back.
    other = frame.iloc[::-1].reset_index(drop=True)
    with mock.patch.object(term_recipes.formulaic, "model_matrix", side_effect=AssertionError("not cached")):
        again = build_design("y ~ x + txt + cat + (1|g)", other)
    assert again.column_names == first.column_names
    np.testing.assert_array_equal(again.X, first.X[::-1])
    names, X = _reference("y ~ x + txt + cat", other, list(other.columns))
    np.testing.assert_array_equal(again.X, X)


def test_the_key_holds_levels_categories_order_and_types(frame):
    """The same formula on other level sets, category orders or value types makes a
    recipe of its own: each design is formulaic's."""
    clear_recipes()
    variants = [
        frame,
        frame[frame["txt"] != "p"],                                     # a level fewer
        frame.assign(cat=frame["cat"].cat.reorder_categories(["v", "u", "w", "z"])),  # another reference
        frame.assign(cat=frame["cat"].cat.as_ordered()),
        frame.assign(txt=frame["k"].astype(object)),                     # integers as objects
        frame.assign(txt=frame["k"].astype(float).astype(object)),       # the same values as floats
        frame.assign(txt=frame["flag"].astype(object)),                  # booleans as objects
        frame.assign(k=frame["k"].astype(np.uint8)),
        frame.assign(k=frame["k"].astype(float)),
    ]
    seen = set()
    for data in variants:
        design = _check_same("y ~ txt + cat + C(k) + (1|g)", data)
        names, X = _reference("y ~ txt + cat + C(k)", data, list(data.columns))
        assert list(design.column_names) == names
        np.testing.assert_array_equal(design.X, X)
        seen.add(design.column_names)
    assert len(term_recipes._RECIPES) == len(variants)
    assert len(seen) >= 5  # the variants do name different columns


def test_rows_with_missing_values_and_unused_categories(frame):
    data = frame.copy()
    data.loc[data.index[:7], "x"] = np.nan
    data["txt"] = data["txt"].where(np.arange(len(data)) % 9 != 0, None)
    # A level only on rows dropped for a missing x is not a level of the fit (lme4 drops it).
    data.loc[data.index[:7], "txt"] = "only-dropped"
    with pytest.warns(UserWarning, match="dropped"):
        design = _check_same("y ~ x + txt + cat + (1|g)", data)
    names, X = _reference("y ~ x + txt + cat", data, ["y", "x", "txt", "cat", "g"])
    assert list(design.column_names) == names and not any("only-dropped" in n for n in names)
    np.testing.assert_array_equal(design.X, X)


@pytest.mark.parametrize("group_dtype", ["int64", "str", "object", "category", "float64"])
def test_group_column_dtypes(frame, group_dtype):
    data = frame.assign(g=frame["g"].astype(group_dtype))
    fit = rl.lmer("y ~ x + txt + cat + (1|g)", data)
    with mock.patch.object(design_module, "recipe_matrices", return_value=None):
        general = rl.lmer("y ~ x + txt + cat + (1|g)", data)
    assert fit.criterion == general.criterion
    np.testing.assert_array_equal(fit.fixef.to_numpy(), general.fixef.to_numpy())


def test_predictions_from_the_recipe_spec_equal_the_general_ones(frame):
    clear_recipes()
    data = frame.assign(cat=frame["cat"].cat.remove_unused_categories())
    fit = rl.lmer("y ~ x + C(txt, contr.sum) + cat + (1|g)", data)
    with mock.patch.object(design_module, "recipe_matrices", return_value=None):
        general = rl.lmer("y ~ x + C(txt, contr.sum) + cat + (1|g)", data)
    new = data.iloc[:25].sample(frac=1, random_state=1)
    np.testing.assert_array_equal(fit.predict(new), general.predict(new))
    np.testing.assert_array_equal(fit.predict(new, re=False), general.predict(new, re=False))


def test_r_dialect_ordered_factor(frame):
    data = frame.assign(cat=pd.Categorical(frame["txt"], categories=["r", "p", "q"], ordered=True))
    design = _check_same("y ~ x + cat + factor(k) + (1|g)", data, dialect="R")
    assert any(".L" in name for name in design.column_names)  # contr.poly, as R


def test_a_factor_with_nearly_one_level_per_row_goes_the_general_way(frame):
    assert recipe_matrices("y ~ C(x)", frame) is None
    _check_same("y ~ C(k) + (1|g)", frame.iloc[:30])


def test_the_cache_is_bounded(frame):
    clear_recipes()
    for j in range(term_recipes.RECIPE_CACHE_SIZE + 5):
        recipe_matrices("y ~ x + C(k)", frame.assign(k=frame["k"] + j))  # other levels: another key
    assert len(term_recipes._RECIPES) == term_recipes.RECIPE_CACHE_SIZE


def test_large_tables_are_used_but_not_kept(frame):
    clear_recipes()
    with mock.patch.object(term_recipes._RECIPES, "nbytes", 100):
        matrices = recipe_matrices("y ~ x + txt + cat", frame)  # tables of 3 x 2 and 4 x 3 floats: 144 bytes
        assert isinstance(matrices, FastMatrices) and len(term_recipes._RECIPES) == 0
        recipe_matrices("y ~ x + txt", frame)  # 48 bytes
        recipe_matrices("y ~ x + C(k)", frame)  # 96 bytes: the first is dropped
        assert len(term_recipes._RECIPES) == 1 and term_recipes._RECIPES._held == 96


# -- generated data ------------------------------------------------------------------------

TERMS = ["a", "k", "f32", "flag", "txt", "cat", "code", "C(k)", "C(txt, contr.sum)", "C(cat, contr.helmert)",
         "C(code, contr.poly)", "a:txt", "np.log(f32 * f32 + 1)", "I(a**2)"]


@st.composite
def frames_and_formulas(draw):
    n = draw(st.integers(20, 90))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 4))
    data = pd.DataFrame({
        "y": rng.normal(size=n),
        "a": rng.normal(size=n),
        "k": rng.integers(-2, 3, size=n),
        "f32": rng.normal(size=n).astype(np.float32),
        "flag": rng.random(n) < 0.5,
        "txt": rng.choice(list("pqrs")[:levels], size=n),
        "cat": pd.Categorical(rng.choice(["u", "v", "w"], size=n), categories=["z", "u", "v", "w"]),
        "code": rng.choice(["1", "2", "10"], size=n),
        "g": rng.integers(0, 6, size=n),
    })
    data["txt"] = data["txt"].astype(draw(st.sampled_from(TEXT_DTYPES)))
    data["code"] = data["code"].astype(draw(st.sampled_from(TEXT_DTYPES)))
    data["g"] = data["g"].astype(draw(st.sampled_from(["int64", "str", "category"])))
    if draw(st.booleans()):
        data.loc[rng.random(n) < 0.1, "a"] = np.nan
    if draw(st.booleans()):
        data["txt"] = data["txt"].astype(object).where(rng.random(n) > 0.1, None)
    sort_by = draw(st.sampled_from([None, "y", "txt", "cat", "code", "g"]))
    if sort_by is not None:
        data = data.sort_values(sort_by, ascending=draw(st.booleans()), kind="stable")
    terms = draw(st.lists(st.sampled_from(TERMS), min_size=1, max_size=4, unique=True))
    intercept = draw(st.sampled_from(["", "0 + ", "1 + "]))
    return data, f"y ~ {intercept}{' + '.join(terms)}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_and_formulas())
def test_recipe_path_equals_the_general_path_on_generated_data(case):
    data, fixed = case
    formula = f"{fixed} + (1|g)"
    used = sorted(formula_variables(fixed) | {"g"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            general = _general(formula, data)
        except rl.ModelDataError as err:
            with pytest.raises(rl.ModelDataError) as caught:
                build_design(formula, data)
            assert str(caught.value) == str(err)
            return
        design = build_design(formula, data)
        shuffled = build_design(formula, data.sample(frac=1, random_state=0))
    assert design.column_names == general.column_names
    np.testing.assert_array_equal(design.X, general.X)
    np.testing.assert_array_equal(design.y, general.y)
    names, X = _reference(fixed, data, [c for c in used if c in data.columns])
    assert list(design.column_names) == names
    np.testing.assert_array_equal(design.X, X)
    # Another row order: the same rows of X (the recipe, if cached, maps the levels).
    assert shuffled.column_names == design.column_names
    order = pd.Index(design.row_index).get_indexer(shuffled.row_index)
    np.testing.assert_array_equal(shuffled.X, design.X[order])


def test_categories_present_are_part_of_the_key(frame):
    """Called directly (build_design drops unused categories first), a categorical with
    an unused category and one where it occurs have the same dtype: the key tells them
    apart, and each matrix is formulaic's."""
    clear_recipes()
    absent = frame.assign(cat=frame["cat"].cat.reorder_categories(["u", "v", "w", "z"]))  # 'z' never used
    present = absent.assign(cat=absent["cat"].where(np.arange(len(frame)) % 5 != 0, "z"))
    assert absent["cat"].dtype == present["cat"].dtype
    for data in (absent, present, absent):
        matrices = recipe_matrices("y ~ x + cat", data)
        reference = formulaic.model_matrix("y ~ x + cat", data, na_action="ignore")
        assert list(matrices.rhs.columns) == list(reference.rhs.columns)
        np.testing.assert_array_equal(matrices.rhs.to_numpy(), reference.rhs.to_numpy(dtype=np.float64))
