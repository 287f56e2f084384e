"""The exact restricted LRT of one variance with the other random terms as nuisance
(Greven, Crainiceanu, Kuechenhoff and Peters 2008), ``test_random_intercept(m, mA=, m0=)``.

Against RLRsim 3.1-8's ``exactRLRT(m, mA, m0)`` (nsim = 1e5, seed 1) in
``tests/data/multi/rlrt_reference.json`` (``tests/data/r/make_terms_rlrt_reference.R``):
Pastes (casks with the batches as nuisance, and the reverse), Oats, Penicillin and three
simulated designs (subjects x items at 840 and 45 rows, classes in schools in regions with
two nuisance terms). The statistic is a difference of REML criteria on both sides; the
p-values are simulated on both sides, so they agree to a Monte Carlo tolerance.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from varcomp.lmer_terms_cases import MULTI, grouping_columns, read_case_csv

import reml_engine as rl
from reml_engine.inference.variance_tests import simulate_null

#: Both criteria are the global optimum's on both sides (lme4 reaches it for these
#: models): the statistic agrees to the criteria's accuracy.
STAT_ABS = 1e-5
#: Standard errors of the difference of two simulated p-values allowed (4: one false alarm
#: in ~16,000 comparisons).
MC_SIGMAS = 4.0
N_SIM = 100_000


@functools.cache
def rlrt_reference() -> dict:
    with open(MULTI / "rlrt_reference.json") as fh:
        cases = json.load(fh)
    cases.pop("_about")
    return cases


CASES = sorted(rlrt_reference())


#: lme4's lmer() stops at a local optimum of both mA and m0 here (criteria 73.27 and 75.45;
#: the global ones are 11.84 and 42.70), so RLRsim tests other fits than the engine's.
LME4_LOCAL = ("sim_crossed_item",)


@functools.cache
def case_fits(case: str):
    ref = rlrt_reference()[case]
    data = read_case_csv(MULTI / ref["file"], grouping_columns(ref["mA"]))
    return tuple(rl.lmer(ref[role], data) for role in ("m", "mA", "m0"))


def mc_tolerance(p: float, n1: int, n2: int) -> float:
    var = max(p * (1 - p), 1.0 / min(n1, n2))
    return MC_SIGMAS * math.sqrt(var / n1 + var / n2)


@pytest.mark.reference
@pytest.mark.parametrize("case", [c for c in CASES if c not in LME4_LOCAL])
def test_exact_rlrt_with_nuisance_as_rlrsim(case):
    ref = rlrt_reference()[case]
    m, mA, m0 = case_fits(case)
    assert mA.criterion == pytest.approx(ref["criterion_mA"], abs=STAT_ABS)
    assert m0.criterion == pytest.approx(ref["criterion_m0"], abs=STAT_ABS)
    test = rl.test_random_intercept(m, mA=mA, m0=m0, n_sim=N_SIM, seed=7)
    assert test.method == "exact" and test.REML
    assert test.statistic == pytest.approx(ref["statistic"], abs=STAT_ABS)
    assert abs(test.p_value - ref["p_value"]) < mc_tolerance(ref["p_value"], N_SIM, ref["nsim"])
    assert set(test.nuisance) | {test.term} == set(mA.term_names)


@pytest.mark.reference
def test_rlrsim_at_lme4s_local_optima():
    """On sim_crossed_seedlike lme4 returns a local optimum for mA and for m0: RLRsim's
    statistic is theirs (2.18, p = 0.041). The engine's null gives RLRsim's p-value at
    that statistic; its own statistic, from the global optima, is 30.86 (p < 1e-5)."""
    ref = rlrt_reference()["sim_crossed_item"]
    m, mA, m0 = case_fits("sim_crossed_item")
    assert mA.lme4_default.criterion == pytest.approx(ref["criterion_mA"], abs=STAT_ABS)
    m0_lme4 = next(o for o in m0.optima if o.is_lme4_default)
    assert m0_lme4.criterion == pytest.approx(ref["criterion_m0"], abs=STAT_ABS)
    sample = simulate_null(m.stats, True, N_SIM, 7)
    p_at_theirs = float(np.mean(sample >= ref["statistic"]))
    assert abs(p_at_theirs - ref["p_value"]) < mc_tolerance(ref["p_value"], N_SIM, ref["nsim"])
    test = rl.test_random_intercept(m, mA=mA, m0=m0, n_sim=N_SIM, seed=7)
    assert test.statistic == pytest.approx(m0.criterion - mA.criterion, rel=1e-12)
    assert test.statistic > 30 and test.p_value == 0.0


def test_mixture_with_nuisance():
    m, mA, m0 = case_fits("pastes_batch")
    test = rl.test_random_intercept(m, "mixture", mA=mA, m0=m0)
    stat = rlrt_reference()["pastes_batch"]["statistic"]
    assert test.statistic == pytest.approx(stat, abs=STAT_ABS)
    assert test.p_value == pytest.approx(0.5 * sps.chi2.sf(stat, 1), rel=1e-4)
    assert test.term == "batch" and test.nuisance == ("cask:batch",)
    assert "var(batch) = 0" in str(test) and "nuisance terms cask:batch" in str(test)


def test_zero_statistic_gives_p_one():
    """m0 nested in mA at its optimum: the statistic is 0 when the tested variance is 0."""
    data = read_case_csv(MULTI / "pastes.csv", ("batch", "cask"))
    # A response without any cask effect beyond batch: each cask's mean equals its batch's.
    centred = data["strength"] - data.groupby(["batch", "cask"])["strength"].transform("mean")
    data = data.assign(y=centred + data.groupby("batch")["strength"].transform("mean"))
    mA = rl.lmer("y ~ 1 + (1|batch/cask)", data)
    m0 = rl.lmer("y ~ 1 + (1|batch)", data)
    m = rl.lmer("y ~ 1 + (1|batch:cask)", data)
    assert mA.variances["cask:batch"] == 0.0
    test = rl.test_random_intercept(m, mA=mA, m0=m0, n_sim=1000)
    assert test.statistic == 0.0 and test.p_value == 1.0


# -- what is refused ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pastes():
    return read_case_csv(MULTI / "pastes.csv", ("batch", "cask"))


def test_refusals(pastes):
    m, mA, m0 = case_fits("pastes_cask")
    with pytest.raises(ValueError, match="both mA"):
        rl.test_random_intercept(m, mA=mA)
    with pytest.raises(ValueError, match="must be the one mA has and m0 lacks"):
        rl.test_random_intercept(rl.lmer("strength ~ 1 + (1|batch)", pastes), mA=mA, m0=m0)
    with pytest.raises(ValueError, match="and one more"):
        rl.test_random_intercept(m, mA=m0, m0=mA)
    with pytest.raises(ValueError, match="REML=True"):
        rl.test_random_intercept(m, mA=rl.lmer("strength ~ 1 + (1|batch/cask)", pastes, REML=False), m0=m0)
    other = pastes.assign(x=np.arange(len(pastes), dtype=float))
    with pytest.raises(ValueError, match="different fixed-effects designs"):
        rl.test_random_intercept(m, mA=rl.lmer("strength ~ x + (1|batch/cask)", other), m0=m0)
    with pytest.raises(ValueError, match="different responses"):
        shifted = pastes.assign(strength=pastes["strength"] * 2)
        rl.test_random_intercept(m, mA=rl.lmer("strength ~ 1 + (1|batch/cask)", shifted), m0=m0)
    weighted = rl.lmer("strength ~ 1 + (1|batch/cask)", pastes.assign(w=1.0), weights="w")
    with pytest.raises(ValueError, match="prior weights"):
        rl.test_random_intercept(m, mA=weighted, m0=m0)
    with pytest.raises(ValueError, match="method"):
        rl.test_random_intercept(m, "bogus", mA=mA, m0=m0)
