"""Invariance: row order, group labels, units of y and offsets of x leave the fit unchanged
up to the transformation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data

import reml_engine as rl


def _fit(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return rl.lmer(formula, df, **kw)


CASES = [
    ("y ~ x + (1|f)", rl.load_seed(), "f"),
    ("y ~ x1 * cat + x2 + (1|g)", case_data("sim_unbalanced"), "g"),
    ("y ~ x + (1|g)", case_data("sim_contextual"), "g"),
]


@pytest.mark.parametrize("formula,df,group", CASES)
def test_row_permutation(formula, df, group):
    base = _fit(formula, df)
    perm = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    other = _fit(formula, perm)
    assert other.criterion == pytest.approx(base.criterion, rel=1e-10)
    assert np.allclose(other.fixef, base.fixef, rtol=1e-8, atol=1e-10)
    assert other.var_group == pytest.approx(base.var_group, rel=1e-7)
    assert len(other.optima) == len(base.optima)


@pytest.mark.parametrize("formula,df,group", CASES)
@pytest.mark.parametrize("relabel", ["string", "int", "huge_int", "categorical"])
def test_group_relabelling(formula, df, group, relabel):
    base = _fit(formula, df)
    levels = pd.Index(sorted(df[group].astype(str).unique()))
    code = levels.get_indexer(df[group].astype(str))
    new = df.copy()
    if relabel == "string":
        new[group] = np.array([f"level-{c:04d}" for c in code])
    elif relabel == "int":
        new[group] = code * 7 + 3
    elif relabel == "huge_int":
        new[group] = (code.astype(np.int64) + 1) * 2**40
    else:
        new[group] = pd.Categorical(code, categories=list(range(code.max() + 5)))  # unused levels
    other = _fit(formula, new)
    assert other.criterion == pytest.approx(base.criterion, rel=1e-10)
    assert np.allclose(other.fixef, base.fixef, rtol=1e-8, atol=1e-10)
    assert other.ngroups == base.ngroups
    assert np.allclose(np.sort(other.ranef["mode"]), np.sort(base.ranef["mode"]), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("formula,df,group", CASES)
@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_scaling_y(formula, df, group, scale):
    base = _fit(formula, df)
    new = df.copy()
    new["y"] = new["y"] * scale
    other = _fit(formula, new)
    assert np.allclose(other.fixef, base.fixef * scale, rtol=1e-7, atol=1e-12 * scale)
    assert other.sigma2 == pytest.approx(base.sigma2 * scale**2, rel=1e-7)
    assert other.var_group == pytest.approx(base.var_group * scale**2, rel=1e-6)
    assert other.tau == pytest.approx(base.tau, rel=1e-6)
    # The criterion moves by (n - p) log(scale^2) under REML.
    dof = base.nobs - len(base.fixef)
    assert other.criterion - base.criterion == pytest.approx(dof * np.log(scale**2), abs=1e-6)


@pytest.mark.parametrize("formula,df,group", CASES[:1] + CASES[2:])
def test_shifting_x(formula, df, group):
    base = _fit(formula, df)
    new = df.copy()
    new["x"] = new["x"] + 1e6
    other = _fit(formula, new)
    assert other.fixef["x"] == pytest.approx(base.fixef["x"], rel=1e-6)
    expected_intercept = base.fixef["(Intercept)"] - 1e6 * base.fixef["x"]
    assert other.fixef["(Intercept)"] == pytest.approx(expected_intercept, rel=1e-6, abs=1e-6 * 1e6 * base.se["x"])
    assert other.se["x"] == pytest.approx(base.se["x"], rel=1e-6)
    assert other.criterion == pytest.approx(base.criterion, abs=1e-6)
    assert other.tau == pytest.approx(base.tau, rel=1e-6, abs=1e-12)
