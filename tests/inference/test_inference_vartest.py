"""Tests of var_group = 0: the 50:50 mixture and the exact (R)LRT null.

Against RLRsim 3.1-8 (reference.json exact_rlrt; inference_reference.json null tails and
exactLRT on ML fits), lme4's anova against lm (extra_reference.json), and closed forms.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from reference_data import (
    fit_case,
    load_extra_reference,
    load_inference_reference,
    load_reference,
)
from scipy import stats as sps

from reml_engine.inference.variance_tests import (
    mixture_test,
    projected_eigenvalues,
    simulate_null,
    test_random_intercept,
)

#: Monte Carlo agreement: both sides simulate, so the standard errors add.
MC_SIGMAS = 3.0
#: For the 60 tail probabilities compared at once (10 nulls x 6 cut-offs), a family-wise
#: bound: 4 standard errors keep the chance of a false alarm below 0.5 %.
MC_SIGMAS_FAMILY = 4.0
#: Statistics are closed forms on both sides (REML criteria of lme4 and lm).
STAT_RTOL = 1e-6
#: Draws for the null-distribution checks.
N_SIM = 100_000

REF = load_reference()
EXTRA = load_extra_reference()
INFERENCE = load_inference_reference()


def _fit(name, REML=True):
    return fit_case(name, REML)


def _mc_tolerance(p: float, n1: int, n2: int, sigmas: float = MC_SIGMAS) -> float:
    var = max(p * (1 - p), 1.0 / min(n1, n2))
    return sigmas * math.sqrt(var / n1 + var / n2)


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(k for k in REF if not k.startswith("_")))
def test_exact_rlrt_matches_rlrsim(name):
    ref = REF[name]["exact_rlrt"]
    result = test_random_intercept(_fit(name), method="exact", n_sim=N_SIM, seed=7)
    if ref["stat"] < 1e-8:
        # RLRsim's statistic is lme4 rounding (5.7e-14 for dyestuff2): ours is exactly 0.
        assert result.statistic == 0.0 and result.p_value == 1.0
        if ref["p"] < 1.0:
            # Then RLRsim's p is P(T > 0) under the null.
            got = float(np.mean(result.null_sample > 0))
            assert abs(got - ref["p"]) < _mc_tolerance(ref["p"], N_SIM, N_SIM)
        return
    assert result.statistic == pytest.approx(ref["stat"], rel=STAT_RTOL)
    assert abs(result.p_value - ref["p"]) < _mc_tolerance(ref["p"], N_SIM, N_SIM)


@pytest.mark.reference
@pytest.mark.parametrize("key", sorted(INFERENCE["null_tails"]))
def test_null_distribution_matches_rlrsim(key):
    name, kind = key.split("/")
    entry = INFERENCE["null_tails"][key]
    m = _fit(name)
    sample = simulate_null(m.stats, REML=(kind == "REML"), n_sim=N_SIM, seed=11)
    for cut, tail in zip(entry["cuts"], entry["tail"], strict=True):
        got = float(np.mean(sample > cut))
        assert abs(got - tail) < _mc_tolerance(tail, N_SIM, entry["nsim"], MC_SIGMAS_FAMILY), (cut, got, tail)


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(INFERENCE["exact_lrt"]))
def test_exact_lrt_on_ml_fits_matches_rlrsim(name):
    ref = INFERENCE["exact_lrt"][name]
    m = _fit(name, REML=False)
    result = test_random_intercept(m, method="exact", n_sim=N_SIM, seed=3)
    assert result.statistic == pytest.approx(ref["stat"], rel=STAT_RTOL)
    assert abs(result.p_value - ref["p"]) < _mc_tolerance(ref["p"], N_SIM, N_SIM)


@pytest.mark.reference
def test_mixture_matches_lme4_against_lm():
    ref = EXTRA["anova_nested"]["dyestuff_vs_lm"]["lrt"]
    result = mixture_test(_fit("dyestuff", REML=False))
    assert result.statistic == pytest.approx(ref["stat"], rel=STAT_RTOL)
    assert result.p_value == pytest.approx(ref["p_mixture_50_50"], rel=STAT_RTOL)


def test_mixture_at_the_boundary_is_one():
    result = test_random_intercept(_fit("dyestuff2"), method="mixture")
    assert result.statistic == 0.0 and result.p_value == 1.0


def test_balanced_one_way_closed_form():
    """Balanced one-way data: the RLRT has a closed form in two chi-squares (C&R 2004)."""
    m = _fit("dyestuff")
    n, p, G = m.nobs, 1, m.ngroups
    mu, mult = projected_eigenvalues(m.stats)
    np.testing.assert_allclose(mu, [n / G])
    assert mult.tolist() == [G - 1]
    rng = np.random.default_rng(5)
    w_k = rng.chisquare(G - 1, N_SIM)
    w_n = rng.chisquare(n - p - G + 1, N_SIM)
    positive = (n - p - G + 1) / (G - 1) * w_k / w_n > 1
    closed = np.where(
        positive,
        (n - p) * np.log((w_k + w_n) / (n - p)) - (n - p - G + 1) * np.log(w_n / (n - p - G + 1))
        - (G - 1) * np.log(w_k / (G - 1)),
        0.0,
    )
    sample = simulate_null(m.stats, True, N_SIM, seed=6)
    for cut in (1e-10, 0.5, 1.0, 2.0, 4.0):
        a, b = np.mean(sample > cut), np.mean(closed > cut)
        assert abs(a - b) < _mc_tolerance(b, N_SIM, N_SIM), cut
    # P(T > 0) = P(Beta((G-1)/2, (n-p-G+1)/2) > (G-1)/(n-p)) exactly.
    exact = sps.beta.sf((G - 1) / (n - p), (G - 1) / 2, (n - p - G + 1) / 2)
    assert abs(np.mean(sample > 0) - exact) < MC_SIGMAS * math.sqrt(exact * (1 - exact) / N_SIM)


def test_eigenvalues_match_dense_projection():
    """The eigenvalues from the pooled statistics equal those of Z'P0Z built densely."""
    for name in ("sim_unbalanced", "seed_x", "sleepstudy"):
        m = _fit(name)
        X, codes = m.design.X, m.group_codes
        Z = np.zeros((len(codes), m.ngroups))
        Z[np.arange(len(codes)), codes] = 1.0
        Q, _ = np.linalg.qr(X)
        PZ = Z - Q @ (Q.T @ Z)
        dense = np.sort(np.linalg.eigvalsh(PZ.T @ PZ))
        dense = dense[dense > 1e-8 * dense.max()]
        mu, mult = projected_eigenvalues(m.stats)
        np.testing.assert_allclose(np.repeat(mu, mult), dense, rtol=1e-8)


def test_seeded_and_reproducible():
    m = _fit("seed_x")
    a = test_random_intercept(m, n_sim=2000, seed=42)
    b = test_random_intercept(m, n_sim=2000, seed=42)
    assert a.p_value == b.p_value
    with pytest.raises(ValueError, match="method"):
        test_random_intercept(m, method="bootstrap")


def test_exact_is_fast():
    m = _fit("sleepstudy")
    simulate_null(m.stats, True, 1000)  # compile
    start = time.perf_counter()
    simulate_null(m.stats, True, N_SIM)
    # One second on an idle core; the margin absorbs a shared CI machine.
    assert time.perf_counter() - start < 3.0
