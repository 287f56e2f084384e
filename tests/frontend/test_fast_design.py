"""The fast design path gives formulaic's design, bit for bit, and steps aside otherwise.

The reference is formulaic's general materialization of the whole data (the general
path), on generated data of every dtype the front end accepts, in any row order: data
sorted by a text column once made the fast path drop that factor (it decided the
columns from the first rows).
"""

from __future__ import annotations

from unittest import mock

import formulaic
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reml_engine as rl
from reml_engine.frontend import fast_design
from reml_engine.frontend.design import build_design
from reml_engine.frontend.fast_design import SPEC_ROWS, FastMatrices, is_simple, model_matrices


@pytest.fixture
def frame():
    rng = np.random.default_rng(3)
    n = 200
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x1": rng.normal(size=n),
        "k": rng.integers(0, 5, n),
        "flag": rng.random(n) > 0.5,
        "cat": rng.choice(["a", "b"], n),
        "g": rng.integers(0, 20, n),
    })


@pytest.mark.parametrize("fixed", ["y ~ x1 + k", "y ~ 0 + x1 + k", "y ~ k + x1 - 1", "y ~ 1", "y ~ x1 + x1"])
def test_same_matrix_names_and_spec_as_formulaic(frame, fixed):
    fast = model_matrices(fixed, frame)
    slow = formulaic.model_matrix(fixed, frame, na_action="ignore")
    assert isinstance(fast, FastMatrices)
    assert list(fast.rhs.columns) == [str(c) for c in slow.rhs.columns]
    np.testing.assert_array_equal(fast.rhs.to_numpy(dtype=np.float64), slow.rhs.to_numpy(dtype=np.float64))
    np.testing.assert_array_equal(fast.lhs.to_numpy(dtype=np.float64), slow.lhs.to_numpy(dtype=np.float64)[:, 0])
    new = frame.iloc[:7]
    np.testing.assert_array_equal(fast.rhs.model_spec.get_model_matrix(new).to_numpy(),
                                  slow.rhs.model_spec.get_model_matrix(new).to_numpy())


@pytest.mark.parametrize("fixed", ["y ~ x1 * k", "y ~ np.log(k + 1)", "y ~ cat + x1", "y ~ flag", "y ~ C(k)"])
def test_other_formulas_go_through_formulaic(frame, fixed):
    assert not isinstance(model_matrices(fixed, frame), FastMatrices)


def test_is_simple():
    assert is_simple("y ~ a + b_2 - 1")
    assert not is_simple("y ~ a:b")
    assert not is_simple("np.log(y) ~ a")


def test_lmer_fit_unchanged_by_the_fast_path(frame):
    m = rl.lmer("y ~ x1 + k + (1|g)", frame)
    X = np.column_stack([np.ones(len(frame)), frame.x1, frame.k])
    ref = rl.fit(X, frame.y.to_numpy(), frame.g.to_numpy(), names=["(Intercept)", "x1", "k"])
    assert m.criterion == pytest.approx(ref.criterion, rel=1e-13)
    np.testing.assert_allclose(m.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-11)


def test_factor_with_one_level_in_the_first_rows_is_kept():
    """Sorted by a text column, the first SPEC_ROWS rows hold one level."""
    rng = np.random.default_rng(5)
    n = 3 * SPEC_ROWS
    data = pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n),
        "cat": np.repeat(["a", "b", "c"], SPEC_ROWS), "g": np.tile(np.arange(6), n // 6),
    })
    fast = model_matrices("y ~ x + cat", data)
    slow = formulaic.model_matrix("y ~ x + cat", data, na_action="ignore")
    assert list(map(str, fast.rhs.columns)) == ["Intercept", "x", "cat[T.b]", "cat[T.c]"]
    np.testing.assert_array_equal(fast.rhs.to_numpy(dtype=np.float64), slow.rhs.to_numpy(dtype=np.float64))
    assert rl.lmer("y ~ x + cat + (1|g)", data).fixef.index[-1] == "cat[T.c]"


def test_fast_path_is_chosen_from_dtypes_not_values():
    rng = np.random.default_rng(6)
    n = 40
    numeric = pd.DataFrame({"y": rng.normal(size=n), "x": rng.integers(0, 3, n).astype(np.uint8)})
    assert isinstance(model_matrices("y ~ x", numeric), FastMatrices)
    for dtype in ["object", "str", "category", "bool"]:
        other = numeric.assign(x=numeric["x"].astype(str).astype(dtype) if dtype != "bool" else numeric["x"] > 0)
        assert not isinstance(model_matrices("y ~ x", other), FastMatrices), dtype


# -- the fast and the general path on generated data -------------------------------------

#: Terms a generated formula draws from: numeric columns (the fast path's), text,
#: boolean and categorical columns, an interaction and a transform.
TERMS = ["a", "k", "u8", "f32", "flag", "txt", "cat", "code", "a:txt", "np.log(f32 * f32 + 1)"]
TEXT_DTYPES = ["object", "str", "string[python]", "string[pyarrow]", "category"]


@st.composite
def frames_and_formulas(draw):
    n = draw(st.integers(2 * SPEC_ROWS, 5 * SPEC_ROWS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.integers(1, 4))
    data = pd.DataFrame({
        "y": rng.normal(size=n),
        "a": rng.normal(size=n),
        "k": rng.integers(-3, 4, size=n),
        "u8": rng.integers(0, 5, size=n).astype(np.uint8),
        "f32": rng.normal(size=n).astype(np.float32),
        "flag": rng.random(n) < 0.5,
        "txt": rng.choice(list("pqrs")[:levels], size=n),
        # 'z' is never used: lme4 drops it (the general path below does too).
        "cat": pd.Categorical(rng.choice(["u", "v", "w"], size=n), categories=["z", "u", "v", "w"]),
        "code": rng.choice(["1", "2", "10"], size=n),
        "g": rng.integers(0, 6, size=n),
    })
    data["txt"] = data["txt"].astype(draw(st.sampled_from(TEXT_DTYPES)))
    data["code"] = data["code"].astype(draw(st.sampled_from(TEXT_DTYPES)))
    sort_by = draw(st.sampled_from([None, *data.columns]))
    if sort_by is not None:
        data = data.sort_values(sort_by, ascending=draw(st.booleans()), kind="stable")
    terms = draw(st.lists(st.sampled_from(TERMS), min_size=1, max_size=4, unique=True))
    intercept = draw(st.sampled_from(["", "0 + ", "1 + "]))
    return data, f"y ~ {intercept}{' + '.join(terms)}"


def _general_reference(fixed: str, data: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """formulaic on the whole data, with text as object columns and unused categories
    dropped: the general path, independent of the front end's code."""
    plain = data.copy()
    for column in ["txt", "code"]:
        if not isinstance(plain[column].dtype, pd.CategoricalDtype):
            plain[column] = plain[column].astype(object)
    plain["cat"] = plain["cat"].cat.remove_unused_categories()
    for column in ["txt", "code"]:
        if isinstance(plain[column].dtype, pd.CategoricalDtype):
            plain[column] = plain[column].cat.remove_unused_categories()
    mm = formulaic.model_matrix(fixed, plain, na_action="ignore")
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.rhs.columns]
    return names, mm.rhs.to_numpy(dtype=np.float64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_and_formulas())
def test_design_equals_the_general_path(case):
    data, fixed = case
    formula = f"{fixed} + (1|g)"
    names, X = _general_reference(fixed, data)
    design = build_design(formula, data)
    assert list(design.column_names) == names
    np.testing.assert_array_equal(design.X, X)
    np.testing.assert_array_equal(design.y, data["y"].to_numpy())
    with mock.patch.object(fast_design, "simple_terms", return_value=None):
        general = build_design(formula, data)
    assert general.column_names == design.column_names
    np.testing.assert_array_equal(general.X, design.X)
