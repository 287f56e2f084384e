"""The global search against a much denser brute-force scan of the whole box.

On small hypothesis-generated designs (nested, crossed and mixed terms, two or three of
them, some variances 0, seed-like designs built to have several local minima, prior
weights and offsets), the criterion is evaluated on a tensor grid of every ratio in
log(tau), 0 included (faces and edges): 600 values per ratio for two terms, 80 for
three, over a wider range than the search's. Nothing on it may be lower than the
estimate; and (two terms) every local minimum that an independent descent reaches from a
local minimum of the grid must be one the search listed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import dense_criterion_terms
from scipy import optimize
from varcomp.dense_problem import DenseProblem
from varcomp.optimizer_designs import KINDS, random_design, usable

from reml_engine.core.criterion import evaluate as single_term_evaluate
from reml_engine.varcomp.lme4_start import lme4_start_theta_from_data
from reml_engine.varcomp.optimizer import find_optima_terms

#: The brute-force grid spans tau * size from BRUTE_SMALL to BRUTE_LARGE (wider than the
#: search's outer grid, 1e-4 to 1e6), plus 0.
BRUTE_SMALL = 1e-6
BRUTE_LARGE = 1e8
POINTS_2 = 600
POINTS_3 = 80
#: Nothing on the grid may be lower than the estimate by more than this (relative).
LOWER_RTOL = 1e-10
#: A local minimum reached from the grid is the search's when the ratios agree to this
#: in log (0 with 0) and the criteria to CRITERION_ATOL.
LOG_TAU_ATOL = 1e-2
CRITERION_ATOL = 1e-6
#: Seed-like designs (random_design(seed, "seedlike", 2)) whose REML criterion has
#: several local minima by the brute force itself.
SEEDLIKE_SEEDS = [0, 1, 2, 4]


def _problem(d):
    return DenseProblem(d["X"], d["y"], d["factors"], d["weights"], d["offset"], term_names=d["terms"])


def _axes(P, points):
    axes = []
    for j in range(P.k):
        kappa = P.reduce_to_term(j, np.zeros(P.k)).kappa
        grid = np.geomspace(BRUTE_SMALL / kappa.max(), BRUTE_LARGE / kappa.min(), points)
        axes.append(np.concatenate([[0.0], grid]))
    return axes


def brute_force(P, REML, points):
    """Criterion on the tensor grid of every ratio: the last ratio through the exact
    reduction at each point of the others (vectorized along it)."""
    axes = _axes(P, points)
    shape = tuple(len(a) for a in axes)
    values = np.empty(shape)
    last = P.k - 1
    for index in np.ndindex(*shape[:-1]):
        tau = np.array([axes[j][i] for j, i in enumerate(index)] + [0.0])
        red = P.reduce_to_term(last, tau)
        values[index] = single_term_evaluate(axes[last], red.pooled_stats(), REML).criterion + red.constant
    return axes, values


def _grid_minima(values):
    """Indices of the discrete local minima (axis neighbours, faces included)."""
    mask = np.isfinite(values)
    for axis in range(values.ndim):
        for shift in (1, -1):
            rolled = np.roll(values, shift, axis=axis)
            edge = [slice(None)] * values.ndim
            edge[axis] = 0 if shift == 1 else -1
            rolled[tuple(edge)] = np.inf
            mask &= values <= rolled
    return np.argwhere(mask)


def _descend(P, REML, start, unit):
    """An independent local descent (L-BFGS-B on tau / unit, analytic gradient) and a
    first- and second-order check of where it ends; None when not a minimum."""
    def fun(x):
        ev = P.evaluate(x * unit, REML)
        return ev.criterion, ev.gradient * unit

    res = optimize.minimize(fun, start / unit, jac=True, method="L-BFGS-B", bounds=[(0, 1e12)] * P.k,
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
    tau = res.x * unit
    ev = P.evaluate(tau, REML)
    free = tau > 0
    if np.any(np.abs(tau[free] * ev.gradient[free]) > 1e-4) or np.any(ev.gradient[~free] * unit[~free] < -1e-4):
        return None
    # Second order along the free ratios: no descent direction at a small step in log tau.
    for direction in np.vstack([np.eye(P.k), -np.eye(P.k)]):
        step = np.where(free, tau * np.exp(1e-3 * direction), 0.0)
        if P.evaluate(step, REML).criterion < ev.criterion - 1e-9:
            return None
    return tau, ev.criterion


def _listed(summary, tau, criterion):
    for o in summary.optima:
        same_zero = np.array_equal(o.tau > 0, tau > 0)
        if same_zero and abs(o.criterion - criterion) <= CRITERION_ATOL:
            free = tau > 0
            if np.all(np.abs(np.log(o.tau[free]) - np.log(tau[free])) <= LOG_TAU_ATOL):
                return True
    return False


def _design(seed, kind, k, weights, offset):
    d = random_design(seed, kind, k, weights, offset)
    return d if usable(d) else None


design_2 = st.tuples(st.integers(0, 100_000), st.sampled_from(KINDS), st.just(2), st.booleans(), st.booleans())
design_3 = st.tuples(st.integers(0, 100_000), st.sampled_from(KINDS), st.just(3), st.booleans(), st.booleans())


def _check(d, REML, points, every_minimum):
    P = _problem(d)
    summary = find_optima_terms(P, REML, lme4_start=lme4_start_theta_from_data(d["y"], d["factors"]))
    best = summary.global_optimum.criterion
    assert not any("sweeps" in note for note in summary.notes)
    axes, values = brute_force(P, REML, points)
    assert np.nanmin(values) >= best - LOWER_RTOL * max(1.0, abs(best))
    reached = set()
    if every_minimum:
        unit = np.array([1.0 / P.reduce_to_term(j, np.zeros(P.k)).kappa.max() for j in range(P.k)])
        for index in _grid_minima(values):
            start = np.array([axes[j][i] for j, i in enumerate(index)])
            found = _descend(P, REML, start, unit)
            if found is not None:
                assert _listed(summary, *found), (found, [(o.tau, o.criterion) for o in summary.optima])
                reached.add(round(found[1], 6))
    return summary, reached


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(design_2, st.booleans())
def test_two_terms_nothing_lower_and_every_minimum_listed(args, REML):
    d = _design(*args)
    if d is not None:
        _check(d, REML, POINTS_2, every_minimum=True)


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(design_3, st.booleans())
def test_three_terms_nothing_lower(args, REML):
    d = _design(*args)
    if d is not None:
        _check(d, REML, POINTS_3, every_minimum=False)


@pytest.mark.parametrize("seed", SEEDLIKE_SEEDS)
def test_seedlike_several_minima_against_the_brute_force(seed):
    """Seed-like crossed designs (few subjects, contextual x, small noise) with several
    local minima: all found, none lower on the grid (a quick, fixed version of the
    hypothesis test above)."""
    d = random_design(seed, "seedlike", 2)
    assert usable(d)
    _, reached = _check(d, True, POINTS_2, every_minimum=True)
    # The design does what it is for: the brute force itself reaches several minima.
    assert len(reached) >= 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 100_000), st.sampled_from(KINDS), st.booleans())
def test_boundary_reason_against_the_oracle(seed, kind, REML):
    """A term at 0: its one-sided slope is >= 0, and the extended minimum (negative ratio
    allowed, the others held) is the dense oracle's value there and no higher than the
    estimate; a "negative" reason means the criterion falls below 0 from the boundary."""
    d = _design(seed, kind, 2, False, False)
    if d is None:
        return
    P = _problem(d)
    summary = find_optima_terms(P, REML)
    best = summary.global_optimum
    for b in summary.boundary:
        j = summary.term_names.index(b.term)
        assert best.at_zero[j] and b.derivative_at_zero >= -1e-6
        assert b.reason == ("negative" if b.derivative_at_zero > 0 else "flat")
        tau = best.tau.copy()
        tau[j] = b.extended_tau
        oracle = dense_criterion_terms(d["X"], d["y"], d["factors"], tau, REML)["criterion"]
        # Towards the limit where H stops being positive definite (1 + kappa t -> 0) both
        # computations lose the digits its condition number takes.
        gap = 1.0 + P.reduce_to_term(j, best.tau).kappa.max() * b.extended_tau
        assert b.extended_criterion == pytest.approx(oracle, rel=1e-9 / gap, abs=1e-9 / gap)
        assert b.extended_criterion <= best.criterion + 1e-9
        if b.reason == "negative":
            # Rising into positive values, so falling into negative ones.
            assert b.extended_tau < 0 and b.extended_criterion < best.criterion
    assert len(summary.boundary) == sum(best.at_zero)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(design_2, st.booleans())
def test_budgeted_estimate_is_lowest_on_every_line_through_it_and_every_edge(args, REML):
    """The budgeted search's stated guarantee, against fine 1-D brute-force scans."""
    d = _design(*args)
    if d is None:
        return
    P = _problem(d)
    summary = find_optima_terms(P, REML, search="budgeted")
    best = summary.global_optimum
    axes = _axes(P, 4000)
    for j in range(P.k):
        for through in (best.tau, np.zeros(P.k)):
            red = P.reduce_to_term(j, through)
            line = single_term_evaluate(axes[j], red.pooled_stats(), REML).criterion + red.constant
            assert line.min() >= best.criterion - LOWER_RTOL * max(1.0, abs(best.criterion))
