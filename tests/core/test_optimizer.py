"""The global optimizer: every local minimum, compared with a much finer scan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference_data import REFERENCE

import reml_engine as rl
from reml_engine.core.criterion import evaluate
from reml_engine.core.optimizer import descent_optimum, find_optima
from reml_engine.errors import DegenerateCriterionError

FINE_POINTS = 200_000
#: Half-width (in fine-grid points) of the window a fine-scan minimum must dominate, and
#: the depth it must have on both sides: rounding ripples in flat tails are not minima.
WINDOW = 400
DEPTH = 1e-9


def _fine_scan_minima(stats, REML):
    """Local minima of the criterion on a grid 100 times finer than the optimizer's."""
    lower = -1.0 / stats.max_size
    positive = np.geomspace(1e-9 / stats.max_size, 1e9 / stats.min_size, FINE_POINTS)
    negative = lower + (0 - lower) * np.geomspace(1e-5, 1, FINE_POINTS // 4)
    taus = np.unique(np.concatenate([negative[negative < 0], [0.0], positive]))
    f = evaluate(taus, stats, REML).criterion
    minima = []
    for i in np.flatnonzero((f[1:-1] <= f[:-2]) & (f[1:-1] <= f[2:])) + 1:
        lo, hi = max(i - WINDOW, 0), min(i + WINDOW, len(f) - 1)
        if lo == 0 or hi == len(f) - 1:
            continue
        depth = DEPTH * max(1.0, abs(f[i]))
        if f[i] <= f[lo:hi + 1].min() and f[lo] - f[i] > depth and f[hi] - f[i] > depth:
            if not minima or i - minima[-1] > WINDOW:
                minima.append(i)
    return taus[minima], f[minima], taus


def _contextual(seed, groups=5, size=4):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    centres = rng.normal(scale=8, size=groups)
    x = centres[g] + rng.normal(size=len(g))
    y = 0.5 * (x - centres[g]) + rng.normal(scale=0.2, size=len(g))
    return np.column_stack([np.ones(len(g)), x]), y, g


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.booleans(), st.sampled_from(["contextual", "ordinary"]))
@example(87, False, "contextual")  # a minimum 2e-8 deep next to 0: too shallow for the fine scan
def test_optima_match_a_hundredfold_finer_scan(seed, REML, kind):
    if kind == "contextual":
        X, y, g = _contextual(seed)
    else:
        rng = np.random.default_rng(seed)
        g = rng.integers(0, 8, size=40)
        X = np.column_stack([np.ones(40), rng.normal(size=40)])
        y = X @ [1, 2] + rng.normal(scale=rng.uniform(0, 2), size=8)[g] + rng.normal(size=40)
    m = rl.fit(X, y, g, REML=REML)
    taus, values, grid = _fine_scan_minima(m.stats, REML)
    found = m.opt_summary.extended_optima
    interior = [o for o in found if o.kind == "interior"]
    for t, v in zip(taus, values, strict=True):
        # Every minimum of the fine scan is found: within the fine grid's own spacing
        # there, and never worse than the fine grid.
        spacing = np.diff(grid[np.searchsorted(grid, t) - 1: np.searchsorted(grid, t) + 2]).max()
        near = [o for o in interior if abs(o.tau - t) <= 2 * spacing]
        assert len(near) == 1, (t, interior)
        assert near[0].criterion <= v + 1e-10 * max(1.0, abs(v))
    for o in interior:
        if any(abs(o.tau - t) <= 1e-3 * max(abs(t), 1e-12) + 1e-12 for t in taus):
            continue
        # A minimum too shallow for the fine scan's depth rule (seed 87, ML: 2e-8 deep
        # next to tau = 0) must still be one: the derivative changes sign across it and
        # the criterion is higher on both sides.
        sides = o.tau + np.array([-1e-2, 1e-2]) * abs(o.tau)
        at = evaluate(sides, m.stats, REML)
        assert at.derivative[0] < 0 < at.derivative[1], o
        assert np.all(at.criterion > o.criterion), o


def test_hidden_pair_between_scan_points_is_found():
    """A minimum and a maximum squeezed between scan points (same derivative sign at every
    scan point) are bracketed through the search of the sampled derivative's extrema."""
    from reml_engine.core.optimizer import _hidden_sign_changes

    class DippingDerivative:
        """Derivative positive at every scan point, dipping below zero near t = 2.3."""

        def derivative(self, t):
            return 1.0 - 1.5 * np.exp(-(((t - 2.3) / 0.25) ** 2))

        def compiled_minimum(self, lo, hi, sign, xatol):
            return None  # (no compiled form: scipy's bounded search)

    crit = DippingDerivative()
    taus = np.arange(0.0, 6.0)
    slopes = np.array([crit.derivative(t) for t in taus])
    assert (slopes > 0).all()
    brackets = _hidden_sign_changes(crit, taus, slopes)
    assert len(brackets) == 1
    lo, hi = brackets[0]
    assert crit.derivative(lo) < 0 < crit.derivative(hi)  # a minimum inside
    root = 2.3 + 0.25 * np.sqrt(np.log(1.5))
    assert lo < root < hi


@pytest.mark.parametrize("REML", [True, False])
def test_compiled_hidden_search_is_scipys_bounded_search(REML):
    """The compiled bounded Brent search of the sampled derivative's extrema
    (criterion_kernels.bounded_minimum) finds what scipy's minimize_scalar(method="bounded")
    finds on the same derivative: the same minimum, to the search's tolerance in tau."""
    from scipy import optimize

    from reml_engine.core import optimizer

    m = rl.lmer("y ~ x + (1|f)", rl.load_seed(), REML=REML)
    crit = optimizer._CountingCriterion(m.stats, REML)
    # Intervals around each optimum and across the derivative's dip between them.
    for lo, hi, sign in [(0.5, 200.0, 1.0), (1.0, 40.0, -1.0), (-0.2, 0.2, 1.0), (5.0, 80.0, 1.0)]:
        xatol = 1e-12 * max(abs(lo), abs(hi))
        x, value = crit.compiled_minimum(lo, hi, sign, xatol)
        ref = optimize.minimize_scalar(lambda t, sign=sign: sign * crit.derivative(t), bounds=(lo, hi), method="bounded",
                                       options={"xatol": xatol})
        assert lo <= x <= hi
        assert value == pytest.approx(ref.fun, rel=1e-9, abs=1e-9 * abs(crit.derivative(lo)))
        assert value == pytest.approx(sign * crit.derivative(x), rel=0, abs=0)
        if not (x - lo < 1e-6 * (hi - lo) or hi - x < 1e-6 * (hi - lo)):
            # An interior minimum: scipy's and ours agree on where.
            assert x == pytest.approx(ref.x, rel=1e-5)


def test_refinement_precision():
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    for o in m.opt_summary.extended_optima:
        h = 1e-6 * abs(o.tau)
        around = evaluate([o.tau - h, o.tau + h], m.stats).criterion
        assert o.criterion <= around.min() + 1e-12 * abs(o.criterion)
    record = m.opt_summary
    assert record.n_evaluations > record.n_scan > 100
    assert record.scan_range[0] < 0 < record.scan_range[1]
    assert len(record.refined) == len([o for o in record.extended_optima if o.kind == "interior"])


def test_exactly_fitted_groups_raise_degenerate():
    g = np.repeat(np.arange(4), 3)
    y = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="residual variance is not identified"):
        rl.fit(np.ones((12, 1)), y, g)


def test_degenerate_criterion_raises_from_statistics():
    """Without the data check, the optimizer itself refuses a criterion falling to -inf."""
    g = np.repeat(np.arange(4), 3)
    y = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0])
    from reml_engine.core.statistics import compute_group_stats
    from reml_engine.frontend.groups import factorize_groups

    stats = compute_group_stats(np.ones((12, 1)), y, factorize_groups(g), np.zeros(2))
    with pytest.raises(DegenerateCriterionError, match="residual variance is not identified"):
        find_optima(stats.pooled(), True)


def test_descent_basin():
    class StandIn:  # an optimum is only read for its tau here
        def __init__(self, tau):
            self.tau = tau

    optima = [StandIn(0.0), StandIn(50.0)]
    assert descent_optimum(optima, slope_at_start=+1.0, start_tau=1.0).tau == 0.0
    assert descent_optimum(optima, slope_at_start=-1.0, start_tau=1.0).tau == 50.0
    with pytest.raises(ValueError, match="no local optimum"):
        descent_optimum([], slope_at_start=1.0, start_tau=1.0)


def test_unbounded_compound_symmetry_ml_is_flagged():
    """sim_contextual under ML: one group of the largest size can be fitted exactly as V
    approaches singularity, so the compound-symmetry likelihood is unbounded there. The
    criterion falls by ~2 per unit of log(1 + tau max n_g) (checked on the closed form at
    points far closer to the limit than the scan goes)."""
    from reference_data import case_data

    m = rl.lmer("y ~ x + (1|g)", case_data("sim_contextual"), REML=False)
    lower = -1.0 / m.stats.max_size
    gaps = np.array([1e-9, 1e-10, 1e-11])
    values = evaluate(lower * (1 - gaps), m.stats, False).criterion
    assert np.all(np.diff(values) < -1.0)  # still falling by more than 1 per decade
    assert m.opt_summary.unbounded_at_limit
    assert m.compound_symmetry.at_limit
    assert m.compound_symmetry.criterion == pytest.approx(m.criterion, abs=1e-8)  # lowest proper minimum
    assert any("no maximum" in note for note in m.notes)
    assert "no maximum" in " ".join(m.summary().split())
    assert np.isfinite(m.compound_symmetry.icc)


def test_a_minimum_that_fails_the_stationarity_test_is_still_reported(monkeypatch):
    """Statistics that lost their digits can make every refined sign change look like a
    rounding jump; the criterion still has a minimum over tau >= 0 (it falls from 0 and
    rises at the top), so the optimizer reports the lowest point found, with a note,
    instead of no optimum at all (lme4_default_optimum crashed on the empty list)."""
    import reml_engine.core.optimizer as O

    m = rl.lmer("Reaction ~ Days + (1|Subject)", data=pd.read_csv(REFERENCE / "sleepstudy.csv"))
    monkeypatch.setattr(O, "STATIONARY_RTOL", -1.0)
    summary = find_optima(m.stats, True)
    assert len(summary.optima) == 1 and summary.optima[0].tau > 0
    assert summary.global_optimum.criterion == pytest.approx(m.criterion, abs=1e-9)
    assert any("could not be refined" in note for note in summary.notes)


@pytest.mark.parametrize("path", ["compiled", "numpy", "numpy-wide"])
def test_counting_criterion_remembers_single_evaluations_to_the_last_bit(path, monkeypatch):
    # A tau evaluated alone (or, when evaluate takes one tau per batch, in any call: as
    # for wide designs, here by a small memory budget; or by the compiled loop, which
    # evaluates each tau on its own) is not evaluated again: the numbers are those a new
    # evaluation gives, bit for bit.
    import dataclasses

    from reml_engine.core import criterion, optimizer
    from reml_engine.core.criterion import CriterionBatch, batch_length, evaluate, evaluate_compiled

    if path != "compiled":
        monkeypatch.setattr(criterion, "COMPILED_CRITERION_MAX_Q", 0)
    if path == "numpy-wide":
        monkeypatch.setattr(criterion, "EVALUATION_MEMORY_BUDGET", 1)

    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 15)
    p = 3
    X = np.column_stack([np.ones(len(groups)), rng.normal(size=(len(groups), p - 1))])
    y = X[:, :3].sum(axis=1) + rng.normal(size=20)[groups] + rng.normal(size=len(groups))
    stats = rl.fit(X, y, groups).stats
    assert (batch_length(stats.q) == 1) == (path == "numpy-wide")
    crit = optimizer._CountingCriterion(stats, True)
    taus = np.array([0.01, 0.5, 3.0])
    crit(taus)
    crit(0.5)
    expected_count = 4 if path == "numpy" else 3
    assert crit.count == expected_count
    for tau in taus:
        got = crit(tau)
        if path == "compiled":
            fresh = CriterionBatch(**evaluate_compiled(np.array([tau]), stats, True))
        else:
            fresh = evaluate([tau], stats, True)
        for field in dataclasses.fields(fresh):
            np.testing.assert_array_equal(getattr(got, field.name), getattr(fresh, field.name))
    assert crit.count == expected_count + (2 if path == "numpy" else 0)


def test_evaluations_reuse_their_working_arrays_without_changing_a_bit(monkeypatch):
    # The (taus, sizes) working arrays are kept per thread between batches: the same
    # numbers as with fresh arrays every time, whatever ran in between.
    import dataclasses

    from reml_engine.core import criterion
    from reml_engine.core.optimizer import scan_grid

    rng = np.random.default_rng(12)
    sizes = rng.integers(1, 60, 80)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    X = np.column_stack([np.ones(len(groups)), rng.normal(size=len(groups))])
    y = X[:, 1] + rng.normal(size=len(sizes))[groups] + rng.normal(size=len(groups))
    stats = rl.fit(X, y, groups).stats
    taus = scan_grid(stats)
    reused = [criterion.evaluate(part, stats, REML) for part in (taus, taus[:9], taus) for REML in (True, False)]
    monkeypatch.setattr(criterion, "SCRATCH_MAX_DOUBLES", -1)  # every array fresh
    fresh = [criterion.evaluate(part, stats, REML) for part in (taus, taus[:9], taus) for REML in (True, False)]
    for a, b in zip(reused, fresh, strict=True):
        for field in dataclasses.fields(a):
            np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))
