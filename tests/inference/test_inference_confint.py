"""Confidence intervals: profile (lme4 confint), Wald, parametric bootstrap.

Profile limits are compared with lme4's ``confint(method = "profile")``
(reference.json), the ICC limits with the root of lme4's own ML deviance function
(inference_reference.json), and every limit is checked exactly by refitting the model
with the parameter held at the limit (an independent route through the fitting engine).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference_data import (
    CASE_NAMES,
    case_data,
    fit_case,
    lme4_name,
    load_extra_reference,
    load_inference_reference,
    load_reference,
)
from scipy import stats as sps

import reml_engine as rl
from reml_engine.core.statistics import compute_group_stats
from reml_engine.errors import ProfileWarning
from reml_engine.frontend.groups import factorize_groups
from reml_engine.inference.bootstrap import (
    ReplicateDraws,
    _fixed_parts,
    fit_replicates,
    parametric_bootstrap,
    replicate_stats,
)
from reml_engine.inference.intervals import confint, profile_intervals

#: lme4 interpolates its profile with splines: 1e-3 of the interval's scale.
PROFILE_RTOL = 1e-3
#: Our limits solve the profile equation to this (deviance units).
LIMIT_ATOL = 1e-7
#: Wald limits are closed forms on both sides.
WALD_RTOL = 1e-6

REF = load_reference()
EXTRA = load_extra_reference()
INFERENCE = load_inference_reference()


def _fit(name, REML=True):
    return fit_case(name, REML)


def _profile(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileWarning)
        return profile_intervals(_fit(name))


def _row(table, fit, key):
    if key.startswith("sd_"):
        return table.loc["sd_group"]
    if key == "sigma":
        return table.loc["sigma"]
    return table.loc[next(c for c in fit.fixef.index if lme4_name(c) == key)]


@pytest.mark.reference
@pytest.mark.parametrize("name", [n for n in CASE_NAMES if REF[n]["reml"].get("profile_ci")])
def test_profile_matches_lme4(name):
    m = _fit(name)
    table = _profile(name)
    for key, (lo, hi) in REF[name]["reml"]["profile_ci"].items():
        row = _row(table, m, key)
        scale = max(abs(lo), abs(hi))
        assert row["lower"] == pytest.approx(lo, abs=PROFILE_RTOL * scale), key
        assert row["upper"] == pytest.approx(hi, abs=PROFILE_RTOL * scale), key


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(INFERENCE["profile_icc"]))
def test_profile_icc_matches_lme4_deviance_roots(name):
    ref = INFERENCE["profile_icc"][name]
    table = _profile(name)
    assert table.loc["icc", "lower"] == pytest.approx(ref["lower"], rel=1e-6, abs=1e-12)
    assert table.loc["icc", "upper"] == pytest.approx(ref["upper"], rel=1e-6)


@pytest.mark.parametrize("name", ["seed_within_between", "dyestuff2", "sleepstudy", "sim_unbalanced"])
def test_fixed_effect_limits_solve_the_profile_equation(name):
    """Refit by ML with the coefficient held at a limit (offset): deviance = min + chi2."""
    data = case_data(name)
    m = _fit(name)
    ml = _fit(name, REML=False)
    table = _profile(name)
    cut = sps.chi2.ppf(0.95, 1)
    X, y, groups = m.design.X, m.design.y, m.design.groups
    for j, coef in enumerate(m.fixef.index):
        for side in ("lower", "upper"):
            v = table.loc[coef, side]
            rest = np.delete(X, j, axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = rl.fit(rest, y - v * X[:, j], groups, REML=False)
            assert f.criterion - ml.criterion == pytest.approx(cut, abs=LIMIT_ATOL), (coef, side)
    assert len(data) == m.nobs


def test_variance_limits_solve_the_profile_equation():
    """sigma and sd_group limits: the deviance minimized over tau at the limit is min + chi2."""
    from reml_engine.core.criterion import evaluate

    m = _fit("sleepstudy")
    ml = _fit("sleepstudy", REML=False)
    table = _profile("sleepstudy")
    cut = sps.chi2.ppf(0.95, 1)
    taus = np.exp(np.linspace(np.log(1e-3), np.log(1e3), 200001))
    out = evaluate(taus, m.stats, REML=False)
    n = m.nobs
    for side in ("lower", "upper"):
        s = table.loc["sigma", side]
        dev = out.logdet_V + n * np.log(2 * np.pi * s**2) + out.pwrss / s**2
        assert dev.min() - ml.criterion == pytest.approx(cut, abs=1e-5)
        b = table.loc["sd_group", side]
        s2 = b**2 / taus
        dev = out.logdet_V + n * np.log(2 * np.pi * s2) + out.pwrss / s2
        assert dev.min() - ml.criterion == pytest.approx(cut, abs=1e-5)


def test_boundary_lower_limit_is_zero():
    table = _profile("dyestuff2")
    assert table.loc["sd_group", "lower"] == 0.0
    assert table.loc["icc", "lower"] == 0.0


def test_non_monotone_profile_is_reported():
    with pytest.warns(ProfileWarning) as record:
        table = profile_intervals(_fit("seed_x"))
    messages = [str(w.message) for w in record]
    assert any("not monotone" in m for m in messages)
    # The seed data's ML optimum is the boundary, the REML one the other basin.
    assert any("lies in another basin than the REML estimate" in m for m in messages)
    assert any("another local minimum" in n for n in table.attrs["notes"])


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(EXTRA["confint_wald"]))
def test_wald_matches_lme4(name):
    entry = EXTRA["confint_wald"][name]
    m = _fit(name)
    table = confint(m, method="wald", level=entry["level"])
    for row in entry["intervals"]:
        key = row["parameter"]
        if key in (".sig01", ".sigma"):
            label = "sd_group" if key == ".sig01" else "sigma"
            assert np.isnan(table.loc[label]).all()
            continue
        got = _row(table, m, key)
        assert got["lower"] == pytest.approx(row["lower"], rel=WALD_RTOL)
        assert got["upper"] == pytest.approx(row["upper"], rel=WALD_RTOL)


# -- parametric bootstrap --------------------------------------------------------------
def _draws_from_rows(m, b, e):
    """The shortcut's random parts computed from row-level draws (b per group, e per row)."""
    codes = m.group_codes
    counts = np.bincount(codes)
    ebar = np.bincount(codes, weights=e) / counts
    e_w = e - ebar[codes]
    X = m.design.X - np.concatenate([m.stats.model_shift[:-1]])[None, :]
    X_w = X - (np.stack([np.bincount(codes, weights=X[:, k]) for k in range(X.shape[1])], axis=1) / counts[:, None])[codes]
    return ReplicateDraws(b[None, :], ebar[None, :], (X_w.T @ e_w)[None, :], np.array([e_w @ e_w]))


@pytest.mark.parametrize("name", ["sleepstudy", "sim_unbalanced"])
def test_bootstrap_statistics_equal_those_of_simulated_rows(name):
    """Replicate statistics from the shortcut == statistics of the simulated rows, exactly."""
    m = _fit(name)
    fixed = _fixed_parts(m)
    rng = np.random.default_rng(3)
    b = rng.normal(0, np.sqrt(m.var_group), m.ngroups)
    e = rng.normal(0, np.sqrt(m.sigma2), m.nobs)
    within, between = replicate_stats(fixed, _draws_from_rows(m, b, e))
    # The same replicate built from rows, in the user's columns.
    y_star = m.design.X @ m.fixef.to_numpy() + b[m.group_codes] + e
    refit = rl.fit(m.design.X, y_star, m.design.groups, REML=True, names=list(m.fixef.index))
    tau, sigma2, beta = fit_replicates(within, between, fixed.stats, True)
    assert tau[0] == pytest.approx(refit.tau, rel=1e-7, abs=1e-12)
    assert sigma2[0] == pytest.approx(refit.sigma2, rel=1e-9)
    groups = factorize_groups(m.design.groups, "g")
    direct = compute_group_stats(m.design.X, y_star, groups, np.r_[m.stats.model_shift[:-1], 0.0]).pooled(
        m.stats.model_shift
    )
    np.testing.assert_allclose(within[0], direct.within, rtol=1e-9, atol=1e-8 * np.abs(direct.within).max())
    np.testing.assert_allclose(between[0], direct.between, rtol=1e-9, atol=1e-8 * np.abs(direct.between).max())


def test_bootstrap_replicate_fixed_effects_equal_refit():
    m = _fit("sim_unbalanced")
    rng = np.random.default_rng(8)
    b = rng.normal(0, np.sqrt(m.var_group), m.ngroups)
    e = rng.normal(0, np.sqrt(m.sigma2), m.nobs)
    fixed = _fixed_parts(m)
    within, between = replicate_stats(fixed, _draws_from_rows(m, b, e))
    tau, sigma2, beta = fit_replicates(within, between, fixed.stats, True)
    y_star = m.design.X @ m.fixef.to_numpy() + b[m.group_codes] + e
    refit = rl.fit(m.design.X, y_star, m.design.groups, REML=True, names=list(m.fixef.index))
    T = m.parametrization.T
    offset = m.fixef.to_numpy() - T @ fixed.beta
    np.testing.assert_allclose(T @ beta[0] + offset, refit.fixef.to_numpy(), rtol=1e-7, atol=1e-10)


def test_bootstrap_is_reproducible_and_sensible():
    m = _fit("sleepstudy")
    a = parametric_bootstrap(m, 400, seed=1, progress=False)
    b = parametric_bootstrap(m, 400, seed=1, progress=False)
    pd_equal = a.replicates.equals(b.replicates)
    assert pd_equal
    # The spread of the replicate coefficients estimates their standard errors.
    sd = a.replicates[list(m.fixef.index)].std()
    np.testing.assert_allclose(sd, m.se, rtol=0.15)
    ci = confint(m, method="boot", n_boot=400, seed=1, progress=False)
    assert (ci["lower"] < ci["upper"]).all()
    assert {"sd_group", "sigma", "icc", "Days"} <= set(ci.index)


def test_bootstrap_at_scale_is_fast():
    import time

    rng = np.random.default_rng(0)
    n, G = 100_000, 2_000
    g = rng.integers(0, G, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=G)[g] + rng.normal(size=n)
    m = rl.fit(np.column_stack([np.ones(n), x]), y, g)
    start = time.perf_counter()
    parametric_bootstrap(m, 1000, seed=2, progress=False)
    assert time.perf_counter() - start < 30.0


def test_confint_rejects_bad_arguments():
    m = _fit("sleepstudy")
    with pytest.raises(ValueError, match="method"):
        confint(m, method="bca")
    with pytest.raises(ValueError, match="level"):
        confint(m, level=95)
    # n_boot=0 ran the default 1000 replicates without a word
    for n_boot in (0, -5, 2.5, True, "100"):
        with pytest.raises(rl.ModelDataError, match=r"n_boot must be an integer >= 1, got"):
            confint(m, method="boot", n_boot=n_boot)
    with pytest.raises(ValueError, match="method"):
        confint(m, method=None)


def test_reml_profile_of_the_variance_parameters():
    """With REML=True the ICC limits solve criterion_REML(tau) = min + chi2 (fixed effects left out)."""
    from reml_engine.core.criterion import criterion

    m = _fit("sleepstudy")
    table = profile_intervals(m, REML=True)
    assert "Days" not in table.index
    cut = sps.chi2.ppf(0.95, 1)
    for side in ("lower", "upper"):
        icc = table.loc["icc", side]
        tau = icc / (1 - icc)
        assert criterion(tau, m.stats, REML=True) - m.criterion == pytest.approx(cut, abs=LIMIT_ATOL)


# -- the profile on a criterion with two local minima ------------------------------------
def _union_reference():
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parents[1] / "data" / "profile_union.json").read_text())


def _union_fit(name):
    from pathlib import Path

    import pandas as pd

    if name == "seed":
        return rl.lmer("y ~ x + (1|f)", data=case_data("seed_x"))
    data = pd.read_csv(Path(__file__).parents[1] / "data" / "profile_union.csv")
    return rl.lmer("y ~ x + (1|g)", data=data[data["set"] == name])


def _dense_profiles(m, taus=None):
    """The profiled ML deviance of sd_group, sigma and x from the dense oracle: at every
    tau of a fine grid, V built explicitly; the profile over a parameter is the minimum
    over that grid of the deviance with the parameter held (sigma2 = sd^2 / tau for
    sd_group; for a coefficient, generalized least squares under the constraint)."""
    from oracle import dense_criterion

    if taus is None:
        taus = np.r_[0.0, np.geomspace(1e-6, 1e6, 3001)]
    X, y, groups = m.design.X, m.design.y, m.design.groups
    n = len(y)
    j = list(m.fixef.index).index("x")
    parts = [dense_criterion(X, y, groups, t, REML=False) for t in taus]
    ld = np.array([p["logdet_V"] for p in parts])
    rss = np.array([p["pwrss"] for p in parts])
    bx = np.array([p["beta"][j] for p in parts])
    axx = np.array([p["vcov"][j, j] / p["sigma2"] for p in parts])

    def deviance(s2, rss_):
        return ld + n * np.log(2 * np.pi * s2) + rss_ / s2

    def sd_group(v):
        if v == 0:
            return ld[0] + n * (1 + np.log(2 * np.pi * rss[0] / n))
        with np.errstate(divide="ignore"):
            s2 = v * v / taus
        return np.min(np.where(taus > 0, deviance(s2, rss), np.inf))

    return {
        "sd_group": sd_group,
        "sigma": lambda v: np.min(deviance(v * v, rss)),
        "x": lambda v: np.min(ld + n * (1 + np.log(2 * np.pi * (rss + (bx - v) ** 2 / axx) / n))),
        "dmin": float(np.min(ld + n * (1 + np.log(2 * np.pi * rss / n)))),
    }


@pytest.mark.parametrize("name", ["a", "b", "c", "seed"])
def test_profile_confidence_sets_are_the_dense_profile_sets(name):
    """Every piece's ends are crossings of the dense oracle's profile: just inside below the
    cut-off, just outside above; and the profile stays below it in the piece's middle."""
    m = _union_fit(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileWarning)
        table = profile_intervals(m)
    dense = _dense_profiles(m)
    cut = sps.chi2.ppf(0.95, 1)
    for param in ("sd_group", "sigma", "x"):
        pieces = table.loc[param, "pieces"]
        width = max(hi - lo for lo, hi in pieces)
        step = 2e-3 * width
        for lo, hi in pieces:
            for end, outward in ((lo, -1), (hi, +1)):
                if end == 0.0 and param == "sd_group":
                    continue
                assert dense[param](end - outward * step) - dense["dmin"] < cut, (param, end)
                if end - step >= 0:
                    assert dense[param](end + outward * step) - dense["dmin"] > cut, (param, end)
            assert dense[param](0.5 * (lo + hi)) - dense["dmin"] < cut or len(pieces) == 1


def test_profile_set_of_a_criterion_with_two_minima_is_a_union():
    """Set a: the ML deviance has minima 1.79 apart (both inside the cut-off): sd_group,
    sigma and x have two-piece sets, and the piece around the estimate is lme4's
    ``confint(profile(m, delta.cutoff = 1/128))`` (tests/data/r/make_profile_union.R)."""
    m = _union_fit("a")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", ProfileWarning)
        table = profile_intervals(m)
    assert any("union of 2 intervals" in str(w.message) for w in record)
    for param in ("sd_group", "sigma", "x"):
        assert len(table.loc[param, "pieces"]) == 2
        assert "union of 2 intervals" in table.loc[param, "note"]
    assert any("union" in note for note in table.attrs["notes"])


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_profile_piece_around_the_estimate_is_lme4s_fine_profile(name):
    """lme4 profiles from the REML estimate's basin; where its (fine) profile gives a
    finite limit, it is our piece around the estimate."""
    ref = _union_reference()[name]["fine"]["intervals"]
    m = _union_fit(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileWarning)
        table = profile_intervals(m)
    compared = 0
    for row in ref:
        key = {".sig01": "sd_group", ".sigma": "sigma"}.get(row["parameter"], row["parameter"])
        scale = table.loc[key, "upper"] - table.loc[key, "lower"]
        for side in ("lower", "upper"):
            value = row[side]
            if isinstance(value, str):  # NA or Inf: lme4's profile broke down on this side
                continue
            assert table.loc[key, side] == pytest.approx(value, abs=PROFILE_RTOL * scale), (key, side)
            compared += 1
    assert compared >= 6


def test_reml_estimate_outside_the_ml_profile_set_is_explained():
    """seed: the ML deviance's lowest minimum is at the boundary, 4.15 below its minimum in
    the REML estimate's basin (beyond the cut-off 3.84), so the 95% set excludes the REML
    estimate; lme4's profile of that fit stops with 'profiling detected new, lower
    deviance' (tests/data/profile_union.json). The row says so."""
    ref = _union_reference()["seed"]
    assert "lower deviance" in ref["default"]["error"]
    m = _union_fit("seed")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", ProfileWarning)
        table = profile_intervals(m)
    assert any("excludes the REML estimate" in str(w.message) for w in record)
    for param, own in (("sd_group", m.var_group**0.5), ("x", m.fixef["x"]), ("icc", m.icc)):
        assert not any(lo <= own <= hi for lo, hi in table.loc[param, "pieces"])
        note = table.loc[param, "note"]
        assert "excludes the REML estimate" in note and "another basin" in note and "4.154 above" in note
    # Every row that holds the estimate has no such note.
    assert table.loc["(Intercept)", "note"] == ""
