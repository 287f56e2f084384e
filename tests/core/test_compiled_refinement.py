"""The compiled paths of the optimizer against numpy's general path, on the same inputs:
the compiled Brent refinement (``COMPILED_REFINE_MAX_Q``) against scipy's ``brentq``, and
the compiled criterion of small designs (``COMPILED_CRITERION_MAX_Q``) against
:func:`reml_engine.core.criterion.evaluate`.

The compiled loop only places the root; the optimizer's criterion evaluates it, tests its
stationarity and reports it. So the runs must give the same record (the same optima
of the same kinds, the same brackets; tau and the criterion to rounding), on generated
data (balanced and not, negative intra-class correlation, two local minima, y in other
units, x far from 0), the seed data (two minima and a negative-ICC optimum) and every
reference case; and each refined root must be a minimum of the dense brute-force
criterion (tests/oracle.py), which shares none of the engine's algebra.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import dense_criterion
from reference_data import CASE_NAMES, fit_case
from test_spectral import SAME_RTOL, _stats, assert_same_record, datasets

import reml_engine as rl
from reml_engine.core import criterion, optimizer
from reml_engine.core.criterion import evaluate, evaluate_compiled
from reml_engine.core.optimizer import find_optima


def _numpy_refinement(stats, REML, scan, monkeypatch):
    """``find_optima`` with every refinement by scipy's ``brentq`` (on the same criterion)."""
    with monkeypatch.context() as patch:
        patch.setattr(optimizer, "COMPILED_REFINE_MAX_Q", 0)
        return find_optima(stats, REML, scan=scan)


def _numpy_path(stats, REML, scan, monkeypatch):
    """``find_optima`` on numpy's path throughout (the general path): every evaluation by
    :func:`~reml_engine.core.criterion.evaluate`, every refinement by ``brentq``."""
    with monkeypatch.context() as patch:
        patch.setattr(optimizer, "COMPILED_REFINE_MAX_Q", 0)
        patch.setattr(criterion, "COMPILED_CRITERION_MAX_Q", 0)
        return find_optima(stats, REML, scan=scan)


def _compiled_roots(monkeypatch) -> list:
    """Spy on the compiled loop: the roots it returns (None: it gave up)."""
    roots = []
    original = optimizer._CountingCriterion.compiled_root

    def spy(self, a, b, fa, fb):
        root = original(self, a, b, fa, fb)
        roots.append(root)
        return root

    monkeypatch.setattr(optimizer._CountingCriterion, "compiled_root", spy)
    return roots


def _same_optima(stats, REML, monkeypatch):
    """Both refinements, on both criteria, on both scans; returns the compiled run of
    the automatic scan."""
    for scan in ("direct", "auto"):
        fast = find_optima(stats, REML, scan=scan)
        assert_same_record(_numpy_refinement(stats, REML, scan, monkeypatch), fast)
        assert_same_record(_numpy_path(stats, REML, scan, monkeypatch), fast)
    return fast


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.booleans())
def test_compiled_refinement_gives_numpys_record(data, REML):
    if data is None:
        return
    X, y, groups = data
    with pytest.MonkeyPatch.context() as monkeypatch:
        _same_optima(_stats(X, y, groups), REML, monkeypatch)


@pytest.mark.parametrize("REML", [True, False])
def test_seed_two_minima_and_negative_icc(REML, monkeypatch):
    """The seed data: two local minima over tau >= 0 and a negative-ICC optimum, each
    refined by the compiled loop (the spy sees a root for every bracket) and accepted."""
    stats = rl.lmer("y ~ x + (1|f)", rl.load_seed(), REML=REML).stats
    _same_optima(stats, REML, monkeypatch)
    roots = _compiled_roots(monkeypatch)
    fast = find_optima(stats, REML)
    assert len(fast.optima) == 2
    assert min(o.tau for o in fast.extended_optima) < 0
    assert roots and all(root is not None for root in roots)
    assert set(fast.refined) <= set(roots)


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("REML", [True, False])
def test_reference_cases(name, REML, monkeypatch):
    _same_optima(fit_case(name, REML).stats, REML, monkeypatch)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(units=False), st.booleans())
def test_compiled_roots_are_minima_of_the_dense_criterion(data, REML):
    """Each interior optimum refined by the compiled loop is a minimum of the dense
    criterion: it is not above the dense criterion a relative step of 1e-4 to either side,
    and its value is the dense value at the root."""
    if data is None:
        return
    X, y, groups = data
    summary = find_optima(_stats(X, y, groups), REML)
    for optimum in summary.extended_optima:
        if optimum.kind != "interior":
            continue
        tau = optimum.tau
        at = dense_criterion(X, y, groups, tau, REML)["criterion"]
        assert optimum.criterion == pytest.approx(at, rel=1e-9, abs=1e-9)
        step = 1e-4 * abs(tau)
        lower = -1.0 / np.bincount(groups).max()
        for other in (tau - step, tau + step):
            if other > lower:
                assert dense_criterion(X, y, groups, other, REML)["criterion"] >= at - 1e-9 * max(abs(at), 1.0)


def test_a_refinement_the_compiled_loop_cannot_finish_is_redone_on_numpys_path(monkeypatch):
    """When the loop gives up (here: forced), numpy's brentq refines as without it."""
    stats = rl.lmer("y ~ x + (1|f)", rl.load_seed()).stats
    general = _numpy_refinement(stats, True, "auto", monkeypatch)
    monkeypatch.setattr(optimizer._CountingCriterion, "compiled_root", lambda self, a, b, fa, fb: None)
    assert find_optima(stats, True) == general


def test_a_root_numpys_path_does_not_accept_is_refined_again(monkeypatch):
    """A compiled root that is not stationary on numpy's path (here: the bracket's left
    end) is not reported: the refinement is redone on numpy's path."""
    stats = rl.lmer("y ~ x + (1|f)", rl.load_seed()).stats
    general = _numpy_refinement(stats, True, "auto", monkeypatch)
    monkeypatch.setattr(optimizer._CountingCriterion, "compiled_root", lambda self, a, b, fa, fb: a)
    redone = find_optima(stats, True)
    # (The root turned down is the bracket's end, evaluated already: the criterion
    # remembers single evaluations, so it costs no new one.)
    assert redone.n_evaluations >= general.n_evaluations
    assert replace(redone, n_evaluations=general.n_evaluations) == general


def test_wide_designs_refine_on_numpys_path(monkeypatch):
    """Above COMPILED_REFINE_MAX_Q the loop is not used."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(30), 40)
    X = np.column_stack([np.ones(len(groups)), rng.normal(size=(len(groups), optimizer.COMPILED_REFINE_MAX_Q))])
    y = X @ rng.normal(size=X.shape[1]) + rng.normal(size=30)[groups] + rng.normal(size=len(groups))
    stats = rl.fit(X, y, groups).stats
    roots = _compiled_roots(monkeypatch)
    summary = find_optima(stats)
    assert summary.global_optimum.kind == "interior"
    assert roots == [None]


def test_refined_root_is_stationary_on_both_paths():
    """The reported derivative at the root is the optimizer's criterion's (the compiled
    loop's, for this narrow design) and passes the test; numpy's path agrees there."""
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    assert m.stats.q <= criterion.COMPILED_CRITERION_MAX_Q
    for optimum in m.opt_summary.optima:
        if optimum.kind == "interior":
            point = evaluate_compiled(np.array([optimum.tau]), m.stats, True)
            assert optimum.derivative == point["derivative"][0]
            assert optimum.criterion == point["criterion"][0]
            for path in (point, evaluate([optimum.tau], m.stats, True).__dict__):
                assert abs(path["derivative"][0]) <= optimizer.STATIONARY_RTOL * path["derivative_scale"][0]
            assert optimum.criterion == pytest.approx(evaluate([optimum.tau], m.stats, True).criterion[0], rel=1e-14)


# -- the fit's lazy and shared parts -------------------------------------------------------


def test_ranef_is_computed_once_and_equals_its_formula():
    """ranef (lazy) against its closed form from the rows: b_g = tau n_g / (1 + n_g tau)
    mean_g(y - X beta), Var(b_g | y) = sigma2 tau / (1 + n_g tau)."""
    df = rl.load_seed()
    m = rl.lmer("y ~ x + (1|f)", df)
    assert "ranef" not in m.__dict__  # not built by the fit
    ranef = m.ranef
    assert m.ranef is ranef
    X = np.column_stack([np.ones(len(df)), df["x"].to_numpy()])
    resid = df["y"].to_numpy() - X @ m.fixef.to_numpy()
    for level, rows in df.groupby("f").groups.items():
        n = len(rows)
        mean = resid[df.index.get_indexer(rows)].mean()
        assert ranef.loc[level, "mode"] == pytest.approx(m.tau * n / (1 + n * m.tau) * mean, rel=1e-9, abs=1e-12)
        assert ranef.loc[level, "condvar"] == pytest.approx(m.sigma2 * m.tau / (1 + n * m.tau), rel=1e-12)
    assert list(ranef.columns) == ["mode", "condvar"]


def test_ranef_read_from_several_threads_at_once():
    X, y, groups = _seed_arrays()
    m = rl.fit(X, y, groups)
    expected = rl.fit(X, y, groups).ranef
    frames = []
    barrier = threading.Barrier(4)

    def read():
        barrier.wait()
        frames.append(m.ranef)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for frame in frames:
        assert frame.equals(expected)


def test_fit_and_its_optima_do_not_share_what_a_caller_may_change():
    """The fit, its global optimum and its compound-symmetry fit are computed once at the
    same tau but are distinct pandas objects: changing one leaves the others."""
    m = rl.fit(*_seed_arrays())
    estimate = m.global_optimum
    assert m.fixef.equals(estimate.fixef)
    before = m.fixef.copy()
    estimate.fixef.iloc[0] = 1e9
    m.compound_symmetry.vcov.iloc[0, 0] = 1e9
    assert m.fixef.equals(before)
    assert m.vcov.iloc[0, 0] != 1e9


def _seed_arrays():
    df = rl.load_seed()
    X = np.column_stack([np.ones(len(df)), df["x"].to_numpy()])
    return X, df["y"].to_numpy(), df["f"].to_numpy()


def test_same_fit_with_either_refinement(monkeypatch):
    """The whole fit (fixed effects, variances, every optimum) on numpy's path and with
    the compiled loops: the same to rounding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = rl.lmer("y ~ x + (1|f)", rl.load_seed())
        monkeypatch.setattr(optimizer, "COMPILED_REFINE_MAX_Q", 0)
        monkeypatch.setattr(criterion, "COMPILED_CRITERION_MAX_Q", 0)
        general = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    assert fast.tau == pytest.approx(general.tau, rel=SAME_RTOL)
    np.testing.assert_allclose(fast.fixef, general.fixef, rtol=1e-10)
    np.testing.assert_allclose(fast.vcov, general.vcov, rtol=1e-9)
    np.testing.assert_allclose(fast.ranef, general.ranef, rtol=1e-9, atol=1e-12)
    assert [o.kind for o in fast.optima] == [o.kind for o in general.optima]
    assert [o.is_lme4_default for o in fast.optima] == [o.is_lme4_default for o in general.optima]


# -- scipy's triangular solve without its wrapper, and the scan's slopes alone -------------


@pytest.mark.parametrize("order", ["C", "F", "slice"])
@pytest.mark.parametrize("columns", [None, 1, 7])
def test_solve_lower_is_scipys_solve_triangular_bit_for_bit(order, columns):
    """The rank check and the spectral form call LAPACK's trtrs themselves: the same
    bits as scipy.linalg.solve_triangular(L, b, lower=True), whatever the layout."""
    from scipy.linalg import solve_triangular

    from reml_engine.core.blas import solve_lower

    rng = np.random.default_rng(11)
    for n in (1, 2, 5, 12, 40):
        A = rng.normal(size=(n + 3, n + 3)) * 10.0 ** rng.uniform(-6, 6, size=n + 3)
        L = np.tril(A)
        np.fill_diagonal(L, np.abs(np.diag(L)) + 1e-3)
        if order == "F":
            L = np.asfortranarray(L)[:n, :n].copy(order="F")
        elif order == "C":
            L = np.ascontiguousarray(L[:n, :n])
        else:
            L = L[:n, :n]  # a view of a larger C array, neither C nor F contiguous
        b = rng.normal(size=n if columns is None else (n, columns))
        assert np.array_equal(solve_lower(L, b), solve_triangular(L, b, lower=True, check_finite=False))
        assert np.array_equal(solve_lower(L, b, check_finite=True), solve_triangular(L, b, lower=True))
    with pytest.raises(ValueError):
        solve_lower(np.eye(2), np.array([1.0, np.nan]), check_finite=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(), st.booleans())
def test_spectral_slopes_without_the_criterion_are_the_same(data, REML):
    """The scan's spectral_evaluate(with_criterion=False): the same slopes, scales and
    pwrss bit for bit, the criterion left NaN."""
    from reml_engine.core.optimizer import scan_grid
    from reml_engine.core.spectral import spectral_evaluate, spectral_form

    if data is None:
        return
    X, y, groups = data
    stats = _stats(X, y, groups)
    form = spectral_form(stats)
    taus = scan_grid(stats)
    full = spectral_evaluate(taus, form, REML)
    slopes = spectral_evaluate(taus, form, REML, with_criterion=False)
    for key in ("derivative", "derivative_scale", "logdet_slope", "curvature_sum", "pwrss"):
        np.testing.assert_array_equal(slopes[key], full[key])
    assert np.isnan(slopes["criterion"]).all()


def test_wide_refinement_from_the_spectral_root_is_the_general_refinement(monkeypatch):
    """From SPECTRAL_REFINE_MIN_Q on, a bracket is refined from the spectral form's root:
    the same optima as Brent on the whole bracket (both to REFINE_RTOL in tau), every
    value the direct form's, in fewer direct evaluations over several data sets. (Not on
    each one: the last steps of either refinement meet derivatives at rounding level,
    whose signs, and so the steps Brent takes there, vary with the machine's BLAS.)"""
    started = []
    original = optimizer._refine_from_spectral
    monkeypatch.setattr(optimizer, "_refine_from_spectral", lambda *a: started.append(1) or original(*a))
    spent = {"fast": 0, "general": 0}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n_groups = 60
        groups = np.repeat(np.arange(n_groups), 25)
        X = np.column_stack([np.ones(len(groups)),
                             rng.normal(size=(len(groups), optimizer.SPECTRAL_REFINE_MIN_Q + 4))])
        y = X @ rng.normal(size=X.shape[1]) + 0.7 * rng.normal(size=n_groups)[groups] + rng.normal(size=len(groups))
        stats = rl.fit(X, y, groups).stats
        assert stats.q >= optimizer.SPECTRAL_REFINE_MIN_Q
        for REML in (True, False):
            fast = find_optima(stats, REML, scan="spectral")
            assert started
            started.clear()
            with monkeypatch.context() as patch:
                patch.setattr(optimizer, "SPECTRAL_REFINE_MIN_Q", 10**9)
                general = find_optima(stats, REML, scan="spectral")
            assert not started
            spent["fast"] += fast.n_evaluations - fast.n_scan
            spent["general"] += general.n_evaluations - general.n_scan
            assert len(fast.extended_optima) == len(general.extended_optima)
            for a, b in zip(fast.extended_optima, general.extended_optima, strict=True):
                assert a.kind == b.kind
                assert a.tau == pytest.approx(b.tau, rel=64 * np.finfo(float).eps, abs=1e-300)
                assert a.criterion == pytest.approx(b.criterion, rel=1e-13)
                point = evaluate([a.tau], stats, REML)
                assert a.criterion == point.criterion[0] and a.derivative == point.derivative[0]
    assert spent["fast"] < spent["general"], spent
