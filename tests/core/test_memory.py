"""Memory stays proportional to the design, not to evaluations x p^2.

A fixed factor with many levels makes p large; the optimizer's scan evaluates the
criterion at ~1,400 values of tau, each needing a few (p + 1) x (p + 1) matrices. Stacked
in one batch that was 35 times the design here (10 GB for 1000 levels at n = 20,000);
in batches of ``EVALUATION_MEMORY_BUDGET`` bytes it is the design's own copies plus the
budget.
"""

from __future__ import annotations

import importlib
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl

#: The module, not the function of the same name the package exports.
criterion = importlib.import_module("reml_engine.core.criterion")

#: The design matrix is held by the fit and copied once while it is built (formulaic's
#: frame and the float64 matrix); allow three copies besides the evaluation budget.
DESIGN_COPIES = 3


@pytest.fixture
def wide():
    rng = np.random.default_rng(0)
    n, levels, groups = 8000, 60, 80
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "a": rng.integers(0, levels, n).astype(str),
        "g": np.repeat(np.arange(groups), n // groups),
    })


def test_wide_fit_memory_is_the_design_plus_a_bounded_budget(wide, monkeypatch):
    budget = 2 * 2**20
    monkeypatch.setattr(criterion, "EVALUATION_MEMORY_BUDGET", budget)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rl.lmer("y ~ a + (1|g)", wide.iloc[:400])  # compile and import outside the trace
        tracemalloc.start()
        try:
            m = rl.lmer("y ~ a + (1|g)", wide)
            m.bootstrap(4, seed=1, progress=False)
            m.profile_criterion(tau=0.5)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    design_bytes = m.design.X.nbytes
    assert len(m.fixef) == 60
    assert peak <= DESIGN_COPIES * design_bytes + budget, (peak / 1e6, design_bytes / 1e6)
