"""Rank-deficient fixed effects: later collinear columns are dropped, as lme4 does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import case_data

import reml_engine as rl


def test_collinear_column_dropped_with_named_warning():
    df = case_data("sim_unbalanced")
    df["x1_twice"] = 2 * df["x1"] - 1
    with pytest.warns(rl.ModelDataWarning, match=r"dropping 1 column.*'x1_twice'"):
        m = rl.lmer("y ~ x1 + x1_twice + x2 + (1|g)", df)
    base = rl.lmer("y ~ x1 + x2 + (1|g)", df)
    assert list(m.fixef.index) == ["(Intercept)", "x1", "x2"]
    assert m.dropped_columns == ("x1_twice",)
    # The criterion depends on the kept columns: equal to the model without the dropped one.
    assert m.criterion == pytest.approx(base.criterion, rel=1e-12)
    assert np.allclose(m.fixef, base.fixef, rtol=1e-10)


def test_earlier_column_kept_later_dropped():
    df = case_data("sim_unbalanced")
    df["z"] = df["x2"] * 3.0
    with pytest.warns(rl.ModelDataWarning, match="'x2'"):
        m = rl.lmer("y ~ z + x2 + (1|g)", df)
    assert list(m.fixef.index) == ["(Intercept)", "z"]


def test_empty_interaction_cell_dropped():
    """An interaction column that is all zero (a level never seen with x) is dropped."""
    df = case_data("sim_unbalanced")
    df.loc[df["cat"] == "c", "x1"] = 0.0
    with pytest.warns(rl.ModelDataWarning, match=r"x1:cat\[T.c\]"):
        m = rl.lmer("y ~ x1 * cat + (1|g)", df)
    assert "x1:cat[T.c]" not in m.fixef.index
    assert len(m.fixef) == 5


def test_arrays_path_drops_duplicate_column():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(10), 5)
    x = rng.normal(size=50)
    X = np.column_stack([np.ones(50), x, x])
    y = x + rng.normal(size=10)[g] + rng.normal(size=50)
    with pytest.warns(rl.ModelDataWarning, match="'b'"):
        m = rl.fit(X, y, g, names=["(Intercept)", "a", "b"])
    assert list(m.fixef.index) == ["(Intercept)", "a"]
    assert m.fixef["a"] == pytest.approx(rl.fit(X[:, :2], y, g, names=["(Intercept)", "a"]).fixef["a"], rel=1e-12)


def test_large_offset_column_is_not_mistaken_for_collinear():
    """x shifted by 1e5 is still far from collinear with the intercept (ratio 1e-5 > 1e-7)."""
    df = pd.DataFrame(rl.load_seed())
    df["x"] = df["x"] + 1e5
    m = rl.lmer("y ~ x + (1|f)", df)
    assert "x" in m.fixef.index
