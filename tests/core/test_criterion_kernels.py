"""The compiled loop of the direct criterion (core/criterion_kernels.py) against numpy's
batched path of the same formulas (which the dense-oracle tests checked first), and
against the dense oracle directly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import dense_criterion
from test_spectral import _stats, datasets

from reml_engine.core import criterion
from reml_engine.core.criterion import _evaluate_batch, evaluate_compiled

KEYS = ("logdet_V", "logdet_XtVinvX", "pwrss", "sigma2", "criterion")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.booleans())
def test_compiled_equals_numpy_path(data, REML):
    if data is None:
        return
    X, y, groups = data
    stats = _stats(X, y, groups)
    max_size = np.bincount(groups).max()
    taus = np.array([-0.999 / max_size, -0.5 / max_size, 0.0, 1e-6, 0.3, 7.0, 1e5])
    ours = evaluate_compiled(taus, stats, REML)
    numpy = _evaluate_batch(taus, stats, REML)
    for key in KEYS:
        assert np.allclose(ours[key], numpy[key], rtol=1e-10, atol=1e-10, equal_nan=True), key
    assert np.allclose(ours["beta"], numpy["beta"], rtol=1e-8, atol=1e-10 * np.abs(numpy["beta"]).max(), equal_nan=True)
    scale = numpy["derivative_scale"]
    assert np.all(np.abs(ours["derivative"] - numpy["derivative"]) <= 1e-9 * scale)
    if np.abs(X).max() > 1e3:
        return  # the dense oracle, uncentred, loses the digits of x far from 0
    for k in (2, 4):
        dense = dense_criterion(X, y, groups, taus[k], REML)
        assert ours["criterion"][k] == pytest.approx(dense["criterion"], rel=1e-9, abs=1e-9)


def test_not_positive_definite_is_nan_in_both():
    """A tau below -1/max(n_g) (outside evaluate's domain) makes M indefinite: both paths
    give NaN there, neither raises."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(6), 4)
    X = np.column_stack([np.ones(24), rng.normal(size=24)])
    y = rng.normal(size=24)
    stats = _stats(X, y, groups)
    taus = np.array([-0.5, 0.1])
    for REML in (True, False):
        ours = evaluate_compiled(taus, stats, REML)
        with np.errstate(all="ignore"):
            numpy = _evaluate_batch(taus, stats, REML)
        assert np.isnan(ours["criterion"][0]) and np.isnan(numpy["criterion"][0])
        assert np.isnan(ours["beta"][0]).all()
        assert ours["criterion"][1] == pytest.approx(numpy["criterion"][1], rel=1e-12)


def test_evaluate_is_one_path_whatever_the_batch():
    """evaluate() gives a tau alone and in a batch the same bits (the optimizer compares
    a bracket's ends evaluated both ways)."""
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(8), 5)
    X = np.column_stack([np.ones(40), rng.normal(size=(40, 3))])
    y = rng.normal(size=40) + rng.normal(size=8)[groups]
    stats = _stats(X, y, groups)
    taus = np.linspace(0.0, 3.0, 7)
    batch = criterion.evaluate(taus, stats)
    for k, tau in enumerate(taus):
        alone = criterion.evaluate([tau], stats)
        assert alone.criterion[0] == batch.criterion[k]
        assert alone.derivative[0] == batch.derivative[k]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("REML", [True, False])
def test_criterion_values_are_evaluates_criterion(monkeypatch, compiled, REML):
    """lme4's path reads criterion_values: evaluate's criterion to rounding by the
    compiled loop, the same bits by numpy's path."""
    if not compiled:
        monkeypatch.setattr(criterion, "DIRECT_KERNEL_MAX_Q", 0)
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(9), rng.integers(1, 6, size=9))
    n = len(groups)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    y = rng.normal(size=n) + rng.normal(size=9)[groups]
    stats = _stats(X, y, groups)
    taus = np.array([-0.9 / np.bincount(groups).max(), 0.0, 0.2, 5.0, 1e4])
    values = criterion.criterion_values(taus, stats, REML)
    expected = criterion.evaluate(taus, stats, REML).criterion
    if compiled:
        np.testing.assert_allclose(values, expected, rtol=1e-12)
    else:
        assert np.array_equal(values, expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.booleans(), st.integers(1, 70))
def test_slopes_alone_are_the_loops_slopes_bit_for_bit(data, REML, n_taus):
    """The slopes without the criterion (direct_slopes, several taus per vector
    instruction, any number of taus: whole lanes, a part of one, idle lanes) are
    direct_point's, to the last bit, with the same points flagged; a tau alone gives
    the numbers it gives in a batch (the optimizer reuses them)."""
    if data is None:
        return
    X, y, groups = data
    stats = _stats(X, y, groups)
    max_size = np.bincount(groups).max()
    rng = np.random.default_rng(n_taus)
    # From below the positive-definite limit (flagged) to far above the data's scale.
    taus = np.sort(np.concatenate([[-1.5 / max_size, 0.0], rng.uniform(-1.0 / max_size, 50.0, n_taus)]))
    full = evaluate_compiled(taus, stats, REML)
    alone = evaluate_compiled(taus, stats, REML, with_criterion=False)
    for key in ("pwrss", "beta", "derivative", "derivative_scale", "sigma2"):
        np.testing.assert_array_equal(alone[key], full[key], err_msg=key)
    for key in ("logdet_V", "logdet_XtVinvX", "criterion"):
        assert np.isnan(alone[key]).all()
    # (tau = -1.5 / max n_g is outside the domain: a weight is infinite or negative there;
    # whatever both give, they give the same, without raising.)
    for k in (1, len(taus) // 2, len(taus) - 1):
        single = evaluate_compiled(taus[k:k + 1], stats, REML, with_criterion=False)
        np.testing.assert_array_equal(single["derivative"], alone["derivative"][k:k + 1])
