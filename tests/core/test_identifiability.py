"""Models the core cannot fit raise a clear error instead of returning a number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from reference_data import load_closure_reference

import reml_engine as rl


def test_group_level_predictors_saturating_groups_raise():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=9), "g": np.repeat([0, 1, 2], 3)})
    df["gb"] = df["g"].map({0: 0.0, 1: 1.0, 2: 3.0})
    df["gb2"] = df["gb"] ** 2
    with pytest.raises(rl.ModelDataError, match="3 directions constant within groups.*3 levels of 'g'"):
        rl.lmer("y ~ gb + gb2 + (1|g)", df)
    # One group-level predictor fewer is identified.
    m = rl.lmer("y ~ gb + (1|g)", df)
    assert np.isfinite(m.criterion)


def test_residual_variance_not_identified_raises():
    g = np.repeat(np.arange(4), 3)
    y = np.repeat([1.0, 2.0, 5.0, 0.0], 3) + np.tile([0.0, 1.0, 2.0], 4)
    x = np.tile([0.0, 1.0, 2.0], 4)
    with pytest.raises(ValueError, match="not identified"):
        rl.fit(np.column_stack([np.ones(12), x]), y, g)


@pytest.mark.parametrize("shift", [0.0, 1e4, 1e6, 1e9])
def test_a_predictor_far_from_0_with_as_few_groups_as_columns_is_not_a_constant(shift):
    """Two groups, x = 0, 1, 2 in each: x varies within groups wherever it sits. Judged by
    its raw norm, x + 1e6 was called constant within groups and the fit refused. A shift
    of x leaves the REML criterion as it is (X changes by a unit-triangular map), so
    every shift gives lme4's criterion of the unshifted data."""
    df = pd.DataFrame({"y": [1.0, 2.0, 4.0, 3.0, 6.0, 5.0], "x": [0.0, 1.0, 2.0] * 2, "g": list("aaabbb")})
    m = rl.lmer("y ~ x + (1|g)", df.assign(x=df["x"] + shift))
    lme4 = load_closure_reference()["two_groups"]
    assert m.criterion == pytest.approx(lme4["criterion"], abs=1e-6)
    assert m.fixef["x"] == pytest.approx(lme4["fixef"]["x"], rel=1e-6)


def _raises(call) -> bool:
    try:
        call()
    except rl.ModelDataError:
        return True
    return False


@pytest.mark.parametrize("case", ["clear", "exact", "exact_wide", "near", "dependent"])
def test_residual_check_decides_as_least_squares(case, monkeypatch):
    # The Cholesky shortcut only vouches for a residual clearly above the threshold; every
    # other case is decided by the least-squares solution, as without it.
    from reml_engine.core import identifiability as I

    rng = np.random.default_rng(4)
    n, n_groups, p = 600, 30, 120 if case == "exact_wide" else 12
    groups = np.repeat(np.arange(n_groups), n // n_groups)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 2)), rng.normal(size=n_groups)[groups]])
    if case == "dependent":
        X[:, 5] = X[:, 4] + 1e-7 * rng.normal(size=n)
    between = rng.normal(size=n_groups)[groups]
    y = X[:, 1:4].sum(axis=1) + between + {"clear": 1.0, "near": 1e-5}.get(case, 0.0) * rng.normal(size=n)
    if case == "dependent":
        y = y + rng.normal(size=n)
    Z = np.column_stack([X, y])
    means = np.zeros((n_groups, Z.shape[1]))
    np.add.at(means, groups, Z)
    means /= np.bincount(groups)[:, None]
    within = (Z - means[groups]).T @ (Z - means[groups])
    within[0, :] = within[:, 0] = 0.0  # the intercept and the group-level column: no within part
    within[p - 1, :] = within[:, p - 1] = 0.0
    total = float(np.sum((y - y.mean()) ** 2))
    threshold = I.EXACT_FIT_TOL * total
    if case == "near":
        # The residual just above the threshold: the shortcut declines, least squares decides.
        total = float(within[-1, -1] - within[-1, :-1] @ np.linalg.lstsq(within[:-1, :-1], within[:-1, -1],
                                                                          rcond=None)[0]) / (2 * I.EXACT_FIT_TOL)
        threshold = I.EXACT_FIT_TOL * total
    check = lambda: I.check_residual_variance(within, total, "y", "g")  # noqa: E731
    with_shortcut = _raises(check)
    shortcut = I._clearly_left(within[:-1, :-1], within[:-1, -1], within[-1, -1], threshold)
    monkeypatch.setattr(I, "_clearly_left", lambda *args: False)
    assert with_shortcut == _raises(check)
    assert with_shortcut == case.startswith("exact")
    assert shortcut == (case == "clear")
