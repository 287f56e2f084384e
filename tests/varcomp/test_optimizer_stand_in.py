"""The dense stand-in of the engine (tests/varcomp/dense_problem.py) against the dense oracle.

The optimizer's tests run on the stand-in, so it must be the contract exactly: the
criterion and its parts equal ``oracle.dense_criterion_terms`` (V built explicitly, the
definition) to 1e-9, the gradient equals differences of the oracle's criterion, and a
reduction to one term reproduces the criterion along that term, through its own formula
and through the single-term statistics the optimizer scans.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import dense_criterion_terms
from varcomp.dense_problem import DenseProblem
from varcomp.multi_cases import case_problem_data, load_multi_reference
from varcomp.optimizer_designs import KINDS, random_design, usable

from reml_engine.core.criterion import evaluate as single_term_evaluate
from reml_engine.varcomp.optimizer import term_stats

RTOL = 1e-9
#: Relative step of the central differences that check the analytic gradient.
FD_STEP = 1e-5


def _taus(rng, k, zeros):
    tau = rng.exponential(scale=rng.choice([0.1, 1.0, 30.0]), size=k)
    tau[zeros[:k]] = 0.0
    return tau


design_args = st.tuples(
    st.integers(0, 100_000), st.sampled_from(KINDS), st.integers(2, 3), st.booleans(), st.booleans(),
    st.lists(st.booleans(), min_size=3, max_size=3),
)


@settings(max_examples=30, deadline=None)
@given(design_args, st.booleans())
def test_stand_in_is_the_dense_oracle(args, REML):
    seed, kind, k, weights, offset, zeros = args
    d = random_design(seed, kind, k, weights, offset)
    if not usable(d):
        return
    rng = np.random.default_rng(seed + 1)
    tau = _taus(rng, k, np.array(zeros))
    for explicit in (False, True):
        P = DenseProblem(d["X"], d["y"], d["factors"], d["weights"], d["offset"], explicit=explicit)
        ev = P.evaluate(tau, REML)
        ref = dense_criterion_terms(d["X"], d["y"], d["factors"], tau, REML, d["weights"], d["offset"])
        for name in ("criterion", "logdet_V", "logdet_XtVinvX", "pwrss", "sigma2"):
            assert getattr(ev, name) == pytest.approx(ref[name], rel=RTOL, abs=RTOL), name
        np.testing.assert_allclose(ev.beta, ref["beta"], rtol=1e-8, atol=1e-10)
        # The gradient against differences of the oracle: central, or second-order
        # one-sided at tau_j = 0 (the contract's one-sided derivative).
        def oracle(t):
            return dense_criterion_terms(d["X"], d["y"], d["factors"], t, REML, d["weights"], d["offset"])["criterion"]

        def difference(j, h):
            if tau[j] > h:
                return (oracle(_with(tau, j, tau[j] + h)) - oracle(_with(tau, j, tau[j] - h))) / (2 * h)
            return (-3 * oracle(tau) + 4 * oracle(_with(tau, j, tau[j] + h)) - oracle(_with(tau, j, tau[j] + 2 * h))) / (2 * h)

        for j in range(k):
            # Both differences are second order: the gap between the step and its half
            # estimates their truncation error (Richardson), which sets the tolerance where
            # the curvature is large (tau_j just above 0).
            h = FD_STEP * max(tau[j], 1e-2)
            fd, fd_half = difference(j, h), difference(j, h / 2)
            tolerance = max(1e-5 * (1 + abs(fd_half)), 2 * abs(fd - fd_half))
            assert abs(ev.gradient[j] - fd_half) <= tolerance


def _with(tau, j, value):
    out = tau.copy()
    out[j] = value
    return out


@settings(max_examples=25, deadline=None)
@given(design_args, st.booleans())
def test_reduction_reproduces_the_criterion_along_a_term(args, REML):
    seed, kind, k, weights, offset, zeros = args
    d = random_design(seed, kind, k, weights, offset)
    if not usable(d):
        return
    rng = np.random.default_rng(seed + 2)
    tau = _taus(rng, k, np.array(zeros))
    P = DenseProblem(d["X"], d["y"], d["factors"], d["weights"], d["offset"])
    ts = np.array([0.0, 1e-3, 0.2, 3.0, 400.0])
    for j in range(k):
        red = P.reduce_to_term(j, tau)
        direct = np.array([P.evaluate(np.r_[tau[:j], t, tau[j + 1:]], REML).criterion for t in ts])
        np.testing.assert_allclose(red.criterion(ts, REML), direct, rtol=RTOL)
        stats = term_stats(red, P.nobs)
        pooled = single_term_evaluate(ts, stats, REML).criterion + red.constant
        np.testing.assert_allclose(pooled, direct, rtol=RTOL)
        # The derivative of the single-term form is the gradient's component j.
        slope = single_term_evaluate(ts, stats, REML).derivative
        grads = np.array([P.evaluate(np.r_[tau[:j], t, tau[j + 1:]], REML).gradient[j] for t in ts])
        np.testing.assert_allclose(slope, grads, rtol=1e-7, atol=1e-9 * np.abs(grads).max())


def test_stand_in_reproduces_lme4_on_the_reference_cases():
    """lme4's REMLcrit()/deviance() at its own theta, on the six reference cases."""
    for case in load_multi_reference():
        d = case_problem_data(case)
        P = DenseProblem(d["X"], d["y"], d["factors"])
        for key, REML in (("reml", True), ("ml", False), ("reml_lme4_default", True), ("ml_lme4_default", False)):
            ref = d["reference"][key]
            theta = np.array(list(ref["theta"].values()))
            assert P.evaluate(theta**2, REML).criterion == pytest.approx(ref["criterion"], rel=1e-10), (case, key)
