"""Regression: the dense oracle's conditional variances, ``sigma2 (tau - tau^2 diag(Z'H^-1 Z))``,
cancelled most digits at a large ratio (1e-8 relative at tau = 800), so
test_criterion_matches_dense_oracle failed on an exact engine. The oracle now inverts
``T^-1 + Z'WZ``; checked here against the closed form of one term,
``Var(b_g | y) = sigma2 tau / (1 + n_g tau)``."""

from __future__ import annotations

import numpy as np
from oracle import dense_criterion_terms


def test_condvar_of_one_term_at_a_large_ratio():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), [3, 5, 7, 4, 6, 9])
    n = len(groups)
    X = np.column_stack([np.ones(n), 100.0 + rng.normal(size=n)])
    y = X @ [1.0, 0.5] + rng.normal(size=6)[groups] * 3 + rng.normal(size=n)
    for tau in (800.0, 1e5):
        out = dense_criterion_terms(X, y, [groups], [tau], REML=True)
        levels, _, condvar = out["ranef"][0]
        sizes = np.bincount(groups)
        np.testing.assert_allclose(condvar, out["sigma2"] * tau / (1.0 + sizes * tau), rtol=1e-11)
