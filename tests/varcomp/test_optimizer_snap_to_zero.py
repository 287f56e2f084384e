"""Regression: a ratio at a negligible positive value (tau * size below SNAP_TO_ZERO) with
a positive derivative passed the interior checks trivially (its gradient and curvature in
log tau vanish with tau), so the same boundary optimum was listed twice, once as
"interior" at var = 7.5e-18 and once at 0, and the estimate was the former. Checked
against the dense oracle: the criterion at the estimate, and its rise into positive
values of the ratio at 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from oracle import dense_criterion_terms

import reml_engine as rl


@pytest.mark.parametrize("REML", [True, False], ids=["REML", "ML"])
def test_a_term_at_zero_is_one_boundary_optimum(REML):
    rng = np.random.default_rng(5)
    n = 120
    d = pd.DataFrame({"s": rng.integers(0, 10, n), "i": rng.integers(0, 6, n), "x": rng.normal(size=n)})
    d["y"] = d.x + rng.normal(size=10)[d.s] + rng.normal(size=n)
    m = rl.lmer("y ~ x + (1|s) + (1|i)", d, REML=REML)
    assert len(m.optima) == 1
    assert m.tau[1] == 0.0 and m.at_boundary.tolist() == [False, True]
    assert [b.term for b in m.boundary] == ["i"] and m.boundary[0].reason == "negative"
    X = np.column_stack([np.ones(n), d.x])
    factors = [d.s.to_numpy(), d.i.to_numpy()]
    at_estimate = dense_criterion_terms(X, d.y, factors, m.tau, REML)["criterion"]
    assert at_estimate == pytest.approx(m.criterion, rel=1e-9)
    # Into positive values of the ratio of i the criterion rises: 0 is the minimum there.
    for step in (1e-8, 1e-4, 1e-2):
        assert dense_criterion_terms(X, d.y, factors, [m.tau[0], step], REML)["criterion"] > m.criterion
