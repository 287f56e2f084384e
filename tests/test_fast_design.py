"""The fast design path gives formulaic's design, bit for bit, and steps aside otherwise."""

from __future__ import annotations

import formulaic
import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.fast_design import FastMatrices, is_simple, model_matrices


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
