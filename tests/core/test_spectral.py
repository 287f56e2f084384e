"""The spectral form of the criterion (core/spectral.py) and the scan built on it.

Two kinds of checks: the spectral form against the dense brute-force criterion (it is the
same function of tau), and ``find_optima``'s spectral scan against its direct scan on the
same inputs (the same optima, the same record), on generated data (balanced and not,
group-level covariates, negative intra-class correlation, two local minima), on the seed
data and on every reference case.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import dense_criterion
from reference_data import CASE_NAMES, fit_case

import reml_engine as rl
from reml_engine.core import criterion, optimizer
from reml_engine.core.criterion import evaluate
from reml_engine.core.optimizer import SCAN_LIMIT_GAP, find_optima, scan_grid
from reml_engine.core.spectral import (
    derivative_bounds,
    spectral_evaluate,
    spectral_form,
    spectral_pays,
    spectral_rank,
)

#: The spectral criterion against the dense one (both are rounding apart).
ORACLE_RTOL = 1e-9
#: The two scans' optima: the same criterion (the brief's 1e-10) and the same tau.
SAME_RTOL = 1e-10
#: At the scan's closest approach to the positive-definite limit (``1 + tau max n_g =
#: SCAN_LIMIT_GAP``) the criterion's matrix has a condition number of about
#: ``1 / SCAN_LIMIT_GAP``: two roundings of the criterion and its slope there (numpy's
#: path and the compiled loop) differ by up to that many times eps, and more.
LIMIT_RTOL = 1e3 * np.finfo(float).eps / SCAN_LIMIT_GAP


@st.composite
def datasets(draw, units: bool = True):
    """Balanced or unbalanced groups, p = 1 to 6 with a group-level covariate sometimes,
    a group variance that is positive, zero or negative (compound symmetry with a
    negative intra-class correlation), or data with two local minima (group means of x
    far apart, y centred within groups); with ``units``, y in other units and x far from 0
    too."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    balanced = draw(st.booleans())
    n_groups = draw(st.integers(3, 25))
    sizes = np.full(n_groups, draw(st.integers(2, 8))) if balanced else rng.integers(1, 9, size=n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    n = len(groups)
    kind = draw(st.sampled_from(["ordinary", "negative", "contextual"]))
    p = draw(st.integers(1, 6))
    columns = [np.ones(n)]
    if kind == "contextual":
        centres = rng.normal(scale=8, size=n_groups)
        x = centres[groups] + rng.normal(size=n)
        columns.append(x)
        y = 0.5 * (x - centres[groups]) + rng.normal(scale=0.2, size=n)
    else:
        for j in range(1, p):
            if j == 1 and draw(st.booleans()):
                columns.append(rng.normal(size=n_groups)[groups])  # constant within groups
            else:
                columns.append(rng.normal(size=n) * rng.uniform(0.1, 10))
        X = np.column_stack(columns)
        noise = rng.normal(size=n)
        if kind == "negative":
            # Within-group deviations only, scaled up: residuals of one group are
            # negatively correlated.
            means = np.bincount(groups, noise) / np.bincount(groups)
            noise = noise - 0.9 * means[groups]
            effects = np.zeros(n_groups)
        else:
            effects = rng.normal(scale=draw(st.sampled_from([0.0, 0.3, 1.0, 3.0])), size=n_groups)
        y = X @ rng.normal(size=X.shape[1]) + effects[groups] + noise
    X = np.column_stack(columns)
    if n <= X.shape[1] + 2:
        return None
    if units:
        # y in units 1e8 times larger or smaller than x, x far from 0.
        y = y * draw(st.sampled_from([1.0, 1.0, 1e-6, 1e8]))
        if X.shape[1] > 1 and draw(st.booleans()):
            X[:, 1] += 1e6
    perm = rng.permutation(n)
    return X[perm], y[perm], groups[perm]


def _stats(X, y, groups):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.fit(X, y, groups).stats


def assert_same_record(direct, other):
    """The record of two scans: the same minima (kind, tau, criterion), the same
    brackets refined, the same boundary slope and limit."""
    assert other.REML == direct.REML
    assert other.n_scan == direct.n_scan
    assert other.scan_range == direct.scan_range
    assert other.derivative_at_zero == pytest.approx(direct.derivative_at_zero, rel=SAME_RTOL, abs=1e-300)
    # (The limit slope is a difference of terms of the size of counts, so it may cancel
    # to near 0: compared absolutely too, against the threshold's units.)
    assert other.limit_slope == pytest.approx(direct.limit_slope, rel=LIMIT_RTOL, abs=LIMIT_RTOL)
    assert other.notes == direct.notes
    for mine, theirs in ((other.optima, direct.optima), (other.extended_optima, direct.extended_optima)):
        assert [o.kind for o in mine] == [o.kind for o in theirs]
        for a, b in zip(mine, theirs, strict=True):
            assert a.tau == pytest.approx(b.tau, rel=SAME_RTOL, abs=1e-300)
            rtol = LIMIT_RTOL if a.kind == "limit" else SAME_RTOL
            assert a.criterion == pytest.approx(b.criterion, rel=rtol, abs=rtol)
    assert other.brackets == direct.brackets
    assert other.refined == pytest.approx(direct.refined, rel=SAME_RTOL)
    assert other.global_optimum.tau == pytest.approx(direct.global_optimum.tau, rel=SAME_RTOL, abs=1e-300)


def _both_scans(stats, REML):
    direct = find_optima(stats, REML, scan="direct")
    for scan in ("spectral", "auto"):
        assert_same_record(direct, find_optima(stats, REML, scan=scan))
    # The spectral scan itself, without the fall-back to the direct one (which would
    # make the comparison above hold trivially): it must vouch for every decision here.
    assert_same_record(direct, optimizer._find_optima(stats, REML, spectral_form(stats)))
    return direct


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(units=False), st.booleans())
def test_spectral_criterion_equals_dense_oracle(data, REML):
    """(Without the shifted x: the dense oracle builds X'V^-1X uncentred and loses the
    digits a finite difference needs; the scans are compared on those data below.)"""
    if data is None:
        return
    X, y, groups = data
    stats = _stats(X, y, groups)
    form = spectral_form(stats)
    assert form is not None
    max_size = np.bincount(groups).max()
    taus = np.array([-0.9 / max_size, -0.3 / max_size, 0.0, 0.05, 1.0, 40.0])
    ours = spectral_evaluate(taus, form, REML)
    for k, tau in enumerate(taus):
        dense = dense_criterion(X, y, groups, tau, REML)
        assert ours["criterion"][k] == pytest.approx(dense["criterion"], rel=ORACLE_RTOL, abs=ORACLE_RTOL)
        assert ours["pwrss"][k] == pytest.approx(dense["pwrss"], rel=1e-8)
        # The derivative against a central difference of the dense criterion.
        h = 1e-5 * max(abs(tau), 1.0 / max_size)
        up = dense_criterion(X, y, groups, tau + h, REML)["criterion"]
        down = dense_criterion(X, y, groups, tau - h, REML)["criterion"]
        assert ours["derivative"][k] == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-4 * ours["derivative_scale"][k])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.booleans())
def test_derivative_bounds_hold_between_points(data, REML):
    """On each interval the derivative stays within the bounds the scan uses to skip
    searches for hidden minima (each term of the spectral derivative is monotone in tau),
    and the direct form agrees with the spectral one to a small fraction of its scale."""
    if data is None:
        return
    X, y, groups = data
    stats = _stats(X, y, groups)
    form = spectral_form(stats)
    taus = scan_grid(stats)[::40]
    out = spectral_evaluate(taus, form, REML)
    lower, upper, scale = derivative_bounds(out, stats.nobs - stats.p if REML else stats.nobs)
    inner = taus[:-1] + np.array([0.1, 0.5, 0.9])[:, None] * np.diff(taus)
    for row in inner:
        slopes = spectral_evaluate(row, form, REML)["derivative"]
        slack = 1e-12 * scale
        assert np.all(slopes >= lower - slack)
        assert np.all(slopes <= upper + slack)
        direct = evaluate(row, stats, REML).derivative
        assert np.all(np.abs(direct - slopes) <= 1e-6 * scale)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.booleans())
def test_spectral_scan_finds_the_direct_scans_optima(data, REML):
    if data is None:
        return
    X, y, groups = data
    _both_scans(_stats(X, y, groups), REML)


@pytest.mark.parametrize("REML", [True, False])
def test_seed_two_optima_and_negative_icc(REML):
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed(), REML=REML)
    direct = _both_scans(m.stats, REML)
    # The premise: two local minima over tau >= 0 and a negative-ICC optimum in the
    # extension (the seed data's point).
    assert len(direct.optima) == 2
    assert min(o.tau for o in direct.extended_optima) < 0
    # The fit itself (scan="auto") reports the direct scan's optima.
    assert_same_record(direct, m.opt_summary)


@pytest.mark.parametrize("y_scale", [1e-8, 1e8, 1e12])
@pytest.mark.parametrize("REML", [True, False])
def test_seed_in_other_units(y_scale, REML):
    """y in other units: the form is built in the basis of X'X's Cholesky factor, where
    no column's scale drowns another's digits. (Built from an eigendecomposition of the
    raw between cross-products it lost the interior minimum at y x 1e8.)"""
    df = rl.load_seed()
    df["y"] = df["y"] * y_scale
    df["x"] = df["x"] + 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = rl.lmer("y ~ x + (1|f)", df, REML=REML)
    direct = _both_scans(m.stats, REML)
    assert len(direct.optima) == 2


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("REML", [True, False])
def test_reference_cases(name, REML):
    m = fit_case(name, REML)
    direct = _both_scans(m.stats, REML)
    assert_same_record(direct, m.opt_summary)


def test_unsure_spectral_scan_is_redone_directly(monkeypatch):
    """With no margin at all, the first re-evaluated point disagrees with the spectral
    value by rounding: the scan must be redone by the direct form, with its record."""
    stats = rl.lmer("y ~ x + (1|f)", rl.load_seed()).stats
    direct = find_optima(stats, True, scan="direct")
    forms = []
    original = optimizer._find_optima

    def spy(stats, REML, form):
        forms.append(form is not None)
        return original(stats, REML, form)

    monkeypatch.setattr(optimizer, "SCAN_CERTIFY_RTOL", 0.0)
    monkeypatch.setattr(optimizer, "_find_optima", spy)
    redone = find_optima(stats, True, scan="spectral")
    assert forms == [True, False]
    assert redone == direct


def test_form_size_and_when_it_pays():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(40), 5)
    X = np.column_stack([np.ones(200), rng.normal(size=(200, 3))])
    y = rng.normal(size=200) + rng.normal(size=40)[groups]
    stats = _stats(X, y, groups)
    # One size, 40 groups, q = 5: five rows carry the data, 35 are n_u exactly.
    assert spectral_rank(stats) == 5
    form = spectral_form(stats)
    assert form.rank == 5 and form.phantom_counts.tolist() == [35.0]
    # Against the compiled direct scan at q = 5 the spectral scan's fixed cost does not
    # pay; on numpy's path (or at q = 11) the form does.
    assert not spectral_pays(stats, len(scan_grid(stats)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(criterion, "COMPILED_CRITERION_MAX_Q", 0)
        assert spectral_pays(stats, len(scan_grid(stats)))
    wide = _stats(np.column_stack([X, rng.normal(size=(200, 7))]), y, groups)
    assert wide.q == 12 and spectral_pays(wide, len(scan_grid(wide)))


def test_scan_argument_is_checked():
    stats = rl.lmer("y ~ x + (1|f)", rl.load_seed()).stats
    with pytest.raises(ValueError, match="scan must be one of"):
        find_optima(stats, True, scan="fast")
