"""Exact oracles: the dense brute-force REML/ML (V built explicitly) and closed forms.

These compare the engine's closed-form criterion (Woodbury, pooling by group size,
profiling) with direct linear algebra on small data, over random unbalanced designs with
singletons and tau on both sides of 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import dense_criterion
from reference_data import case_data

import reml_engine as rl
from reml_engine.core.criterion import evaluate, fixed_effects
from reml_engine.core.statistics import compute_group_stats, pilot_shift
from reml_engine.frontend.groups import factorize_groups

RTOL = 1e-9


def _pooled(X, y, groups, intercept_index=0):
    codes = factorize_groups(groups)
    shift = pilot_shift(X, y, intercept_index)
    stats = compute_group_stats(X, y, codes, shift)
    model_shift = shift if intercept_index is not None else np.zeros(len(shift))
    return stats.pooled(model_shift), model_shift


@st.composite
def designs(draw):
    """Random unbalanced designs: 2-8 groups of sizes 1-6 (singletons included), p = 1-3."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=8))
    if sum(sizes) <= len(sizes) + 3:
        sizes = [*sizes, 4]
    groups = np.repeat(np.arange(len(sizes)), sizes)
    n = len(groups)
    p = draw(st.integers(1, 3))
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1)) * rng.uniform(0.1, 10)])
    y = X @ rng.normal(size=p) + rng.normal(size=len(sizes))[groups] + rng.normal(size=n)
    perm = rng.permutation(n)
    # tau on both sides of 0, down to just above -1/max(n_g).
    frac = draw(st.floats(-0.95, 50.0))
    tau = frac / max(sizes) if frac < 0 else frac
    return X[perm], y[perm], groups[perm], tau


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans())
def test_criterion_equals_dense_oracle(design, REML):
    X, y, groups, tau = design
    pooled, model_shift = _pooled(X, y, groups)
    ours = evaluate([tau], pooled, REML)
    dense = dense_criterion(X, y, groups, tau, REML)
    assert ours.criterion[0] == pytest.approx(dense["criterion"], rel=RTOL, abs=RTOL)
    assert ours.logdet_V[0] == pytest.approx(dense["logdet_V"], rel=RTOL, abs=RTOL)
    assert ours.logdet_XtVinvX[0] == pytest.approx(dense["logdet_XtVinvX"], rel=RTOL, abs=1e-8)
    assert ours.pwrss[0] == pytest.approx(dense["pwrss"], rel=1e-8)
    # beta in the centred parametrization: slopes equal, intercept shifted.
    beta = ours.beta[0]
    assert np.allclose(beta[1:], dense["beta"][1:], rtol=1e-7, atol=1e-9)
    intercept = beta[0] + model_shift[-1] - model_shift[1:-1] @ beta[1:]
    assert intercept == pytest.approx(dense["beta"][0], rel=1e-7, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(designs(), st.booleans())
def test_derivative_equals_finite_difference_of_oracle(design, REML):
    X, y, groups, tau = design
    pooled, _ = _pooled(X, y, groups)
    lower = -1.0 / np.bincount(groups).max()
    h = 1e-6 * max(1.0, abs(tau))
    if tau - h <= lower * (1 - 1e-3):
        tau = tau + 2 * h
    numeric = (
        dense_criterion(X, y, groups, tau + h, REML)["criterion"]
        - dense_criterion(X, y, groups, tau - h, REML)["criterion"]
    ) / (2 * h)
    analytic = evaluate([tau], pooled, REML).derivative[0]
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-5 * max(1.0, abs(numeric)))


@settings(max_examples=40, deadline=None)
@given(designs(), st.booleans())
def test_vcov_equals_dense_oracle(design, REML):
    X, y, groups, tau = design
    pooled, _ = _pooled(X, y, groups)
    _, vcov, sigma2 = fixed_effects(tau, pooled, REML)
    dense = dense_criterion(X, y, groups, tau, REML)
    assert sigma2 == pytest.approx(dense["sigma2"], rel=1e-8)
    # Slopes' covariance is unchanged by the centring of the intercept.
    assert np.allclose(vcov[1:, 1:], dense["vcov"][1:, 1:], rtol=1e-7, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(designs(), st.booleans())
def test_global_optimum_beats_dense_grid(design, REML):
    """No tau on a dense grid (evaluated by the oracle) is better than the reported optimum."""
    X, y, groups, _ = design
    m = rl.fit(X, y, groups, REML=REML)
    grid = np.concatenate([[0.0], np.geomspace(1e-4, 1e4, 120)])
    best_grid = min(dense_criterion(X, y, groups, t, REML)["criterion"] for t in grid)
    assert m.criterion <= best_grid + 1e-9
    fit_dense = dense_criterion(X, y, groups, m.tau, REML)
    assert m.criterion == pytest.approx(fit_dense["criterion"], rel=1e-9, abs=1e-9)
    assert np.allclose(m.fixef.to_numpy(), fit_dense["beta"], rtol=1e-6, atol=1e-9)


def test_no_intercept_design_equals_oracle():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 6])
    X = rng.normal(size=(len(groups), 2)) + 5
    y = X @ [1.0, -2.0] + rng.normal(size=6)[groups] + rng.normal(size=len(groups))
    pooled, _ = _pooled(X, y, groups, intercept_index=None)
    for tau in (-0.1, 0.0, 0.7, 30.0):
        ours = evaluate([tau], pooled, True)
        dense = dense_criterion(X, y, groups, tau, True)
        assert ours.criterion[0] == pytest.approx(dense["criterion"], rel=RTOL)
        assert np.allclose(ours.beta[0], dense["beta"], rtol=1e-8)


def _anova_mean_squares(df):
    """Group size, between- and within-batch mean squares of balanced one-way data."""
    n = df.groupby("Batch").size().iloc[0]
    k = df["Batch"].nunique()
    means = df.groupby("Batch")["Yield"].mean()
    msb = n * ((means - df["Yield"].mean()) ** 2).sum() / (k - 1)
    msw = ((df["Yield"] - df["Batch"].map(means)) ** 2).sum() / (k * (n - 1))
    return n, msb, msw


def test_balanced_anova_estimator_equals_reml_dyestuff():
    """Balanced one-way data: REML's var_group is the ANOVA estimator (MSB - MSW) / n."""
    df = case_data("dyestuff")
    m = rl.lmer("Yield ~ 1 + (1|Batch)", df)
    n, msb, msw = _anova_mean_squares(df)
    assert m.sigma2 == pytest.approx(msw, rel=1e-10)
    assert m.var_group == pytest.approx((msb - msw) / n, rel=1e-9)
    assert m.fixef["(Intercept)"] == pytest.approx(df["Yield"].mean(), rel=1e-12)


def test_balanced_anova_boundary_dyestuff2():
    """When MSB < MSW the ANOVA estimator is negative: REML sits at 0 and the
    compound-symmetry ICC is the (negative) ANOVA intra-class correlation."""
    df = case_data("dyestuff2")
    m = rl.lmer("Yield ~ 1 + (1|Batch)", df)
    n, msb, msw = _anova_mean_squares(df)
    assert msb < msw
    assert m.var_group == 0 and m.boundary.reason == "negative_icc"
    tau_anova = (msb - msw) / n / msw
    assert m.compound_symmetry.tau == pytest.approx(tau_anova, rel=1e-7)
    assert m.sigma2 == pytest.approx(((df["Yield"] - df["Yield"].mean()) ** 2).sum() / (len(df) - 1), rel=1e-12)


def test_ml_and_reml_on_seed_agree_with_oracle_at_every_optimum():
    df = rl.load_seed()
    X = np.column_stack([np.ones(len(df)), df["x"]])
    for REML in (True, False):
        m = rl.lmer("y ~ x + (1|f)", df, REML=REML)
        for o in m.optima:
            dense = dense_criterion(X, df["y"].to_numpy(), df["f"].to_numpy(), o.tau, REML)
            assert o.criterion == pytest.approx(dense["criterion"], rel=1e-10)
        cs = m.compound_symmetry
        dense = dense_criterion(X, df["y"].to_numpy(), df["f"].to_numpy(), cs.tau, REML)
        assert cs.criterion == pytest.approx(dense["criterion"], rel=1e-10)


def test_singular_uses_lme4_tolerance():
    df = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0], "g": ["a", "a", "b", "b", "c", "c"]})
    m = rl.lmer("y ~ 1 + (1|g)", df)
    assert m.singular == (m.theta < 1e-4)
