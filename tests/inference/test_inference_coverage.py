"""Coverage simulation (slow): intervals cover the truth near 95 %, tests hold their size.

Data sets come from a known random-intercept model; the truth is known, so this checks
the inference against the model itself, not against another program.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import reml_engine as rl
from reml_engine.errors import ProfileWarning
from reml_engine.inference.intervals import profile_intervals
from reml_engine.inference.variance_tests import boundary_statistic, simulate_null

#: Data sets per coverage check and per size check.
N_COVERAGE = 300
N_SIZE = 600
#: Nominal level and test size.
LEVEL = 0.95
ALPHA = 0.05
#: Accept a rate within this many binomial standard errors of the nominal one.
BINOMIAL_SIGMAS = 3.0
#: Design: groups x rows per group.
N_GROUPS, PER_GROUP = 20, 5
TRUE_BETA = np.array([1.0, 0.5])
TRUE_SD_GROUP, TRUE_SIGMA = 0.7, 1.0


def _design(rng):
    groups = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    # x varies within and between groups.
    x = rng.normal(size=N_GROUPS)[groups] + rng.normal(size=len(groups))
    return np.column_stack([np.ones(len(groups)), x]), groups


def _simulate(rng, X, groups, sd_group):
    return X @ TRUE_BETA + sd_group * rng.normal(size=N_GROUPS)[groups] + TRUE_SIGMA * rng.normal(size=len(groups))


def _within(rate: float, nominal: float, n: int) -> bool:
    return abs(rate - nominal) <= BINOMIAL_SIGMAS * math.sqrt(nominal * (1 - nominal) / n)


@pytest.mark.slow
def test_satterthwaite_and_profile_intervals_cover_the_truth():
    rng = np.random.default_rng(2024)
    X, groups = _design(rng)
    hits = {"satt_intercept": 0, "satt_x": 0, "profile_x": 0, "profile_sd": 0, "profile_sigma": 0}
    from scipy import stats as sps

    for _ in range(N_COVERAGE):
        y = _simulate(rng, X, groups, TRUE_SD_GROUP)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = rl.fit(X, y, groups, names=["(Intercept)", "x"])
            table = m.coef_table()
            ci = profile_intervals(m, LEVEL)
        half = sps.t.ppf(0.5 + LEVEL / 2, table["df"]) * table["se"]
        inside = (table["estimate"] - half <= TRUE_BETA) & (TRUE_BETA <= table["estimate"] + half)
        hits["satt_intercept"] += bool(inside.iloc[0])
        hits["satt_x"] += bool(inside.iloc[1])
        hits["profile_x"] += bool(ci.loc["x", "lower"] <= TRUE_BETA[1] <= ci.loc["x", "upper"])
        hits["profile_sd"] += bool(ci.loc["sd_group", "lower"] <= TRUE_SD_GROUP <= ci.loc["sd_group", "upper"])
        hits["profile_sigma"] += bool(ci.loc["sigma", "lower"] <= TRUE_SIGMA <= ci.loc["sigma", "upper"])
    rates = {k: v / N_COVERAGE for k, v in hits.items()}
    print("coverage", rates)
    for key, rate in rates.items():
        assert _within(rate, LEVEL, N_COVERAGE), (key, rates)


@pytest.mark.slow
def test_mixture_and_exact_tests_hold_their_size_at_the_boundary():
    rng = np.random.default_rng(77)
    X, groups = _design(rng)
    null = None
    rejections = {"mixture": 0, "exact": 0}
    for _ in range(N_SIZE):
        y = _simulate(rng, X, groups, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = rl.fit(X, y, groups)
        if null is None:
            # The exact null depends on the design only: simulate it once.
            null = simulate_null(m.stats, True, 100_000, seed=5)
        stat = boundary_statistic(m)
        p_exact = float(np.mean(null >= stat)) if stat > 0 else 1.0
        rejections["exact"] += p_exact < ALPHA
        rejections["mixture"] += rl.test_random_intercept(m, method="mixture").p_value < ALPHA
    rates = {k: v / N_SIZE for k, v in rejections.items()}
    print("size", rates)
    assert _within(rates["exact"], ALPHA, N_SIZE), rates
    # The mixture is asymptotic and conservative in small samples: it must not exceed
    # the nominal size, and must not collapse.
    assert rates["mixture"] <= ALPHA + BINOMIAL_SIGMAS * math.sqrt(ALPHA * (1 - ALPHA) / N_SIZE), rates
    assert rates["mixture"] >= ALPHA / 4, rates


def test_profile_warning_is_a_user_warning():
    assert issubclass(ProfileWarning, UserWarning)
