"""Models the core cannot fit raise a clear error instead of returning a number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
