"""The harness's own logic, without running the peers: names, caps, verdicts, detection.

Fast unit tests; the peers themselves are exercised in test_benchmarks_quick.py and
test_benchmarks_parts.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl  # noqa: E402
from benchmarks import engines as E  # noqa: E402
from benchmarks import harness, many, simulate, terms  # noqa: E402
from benchmarks.simulate import Config  # noqa: E402

WIDE = Config(400, 10, 6, True, 4)  # intercept, x1, x2, and a 4-level factor: p = 6


def test_wide_design_matches_its_frame():
    data = simulate.simulate(WIDE)
    assert data.column_names == ["(Intercept)", "x1", "x2", "f[T.L0001]", "f[T.L0002]", "f[T.L0003]"]
    frame = data.frame()
    assert list(frame.f.cat.categories) == ["L0000", "L0001", "L0002", "L0003"]
    # Every level occurs, and the indicator columns are the treatment coding of f.
    assert frame.f.value_counts().min() == 100
    dummies = pd.get_dummies(frame.f, dtype=float).to_numpy()[:, 1:]
    np.testing.assert_array_equal(data.X[:, 3:], dummies)
    np.testing.assert_array_equal(data.X[:, 1], frame.x1)
    assert WIDE.formula() == "y ~ x1 + x2 + f + (1|g)"
    assert WIDE.fixed_formula() == "y ~ x1 + x2 + f"


def test_a_config_without_factor_is_the_data_it_always_was():
    """Wide designs draw after everything else: the grid's data do not change."""
    config = Config(500, 50, 3, False)
    data = simulate.simulate(config)
    assert data.factor is None
    rng = np.random.default_rng(0)
    groups = simulate.group_labels(config, rng)
    x1, x2 = rng.standard_normal(500), rng.standard_normal(500)
    np.testing.assert_array_equal(data.groups, groups)
    np.testing.assert_array_equal(data.X[:, 1:], np.column_stack([x1, x2]))


def test_every_engines_names_for_a_factor_are_matched():
    values = {"(Intercept)": 1.0, "x1": 2.0, "x2": 3.0}
    expected = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    spellings = {
        "reml_engine / interlace-lme / statsmodels": ["f[T.L0001]", "f[T.L0002]", "f[T.L0003]"],
        "patsy with C()": ["C(f)[T.L0001]", "C(f)[T.L0002]", "C(f)[T.L0003]"],
        "lme4": ["fL0001", "fL0002", "fL0003"],
        "mixedlm": ["f.1", "f.2", "f.3"],
    }
    for names in spellings.values():
        # In any order: statsmodels (patsy) puts the factor's columns before x1.
        named = dict(reversed(list({**values, **dict(zip(names, [4.0, 5.0, 6.0], strict=True))}.items())))
        np.testing.assert_array_equal(E.align_fixef(named, WIDE), expected)
    intercept = E.align_fixef({"Intercept": 1.0}, WIDE)
    assert intercept[0] == 1.0


def test_a_name_no_engine_uses_leaves_a_gap_that_fails_the_check():
    aligned = E.align_fixef({"(Intercept)": 1.0, "x1": 2.0, "x2": 3.0, "f_L0001": 4.0}, WIDE)
    assert np.isnan(aligned[3:]).all()
    fit = rl.fit(simulate.simulate(WIDE).X, simulate.simulate(WIDE).y, simulate.simulate(WIDE).groups)
    assert np.isnan(harness._relative_fixef_diff(aligned, fit))
    table = pd.DataFrame([{"engine": E.MIXEDLM, "nobs": 400, "ngroups": 10, "p": 6, "criterion_diff": 0.0,
                           "same_optimum": True, "max_rel_fixef_diff": np.nan}])
    assert len(harness.disagreements(table)) == 1


def test_time_cap_scales_by_rows_and_p_squared_and_says_why():
    caps = harness.TimeCaps(max_seconds=60.0)
    assert caps.reason(E.LME4, "s", 1e6) == ""  # nothing measured yet: no prediction
    caps.record(E.LME4, "s", Config(1_000, 10, 2, True).work, 2.0, "N=1e+03, p=2")
    reason = caps.reason(E.LME4, "s", Config(1_000_000, 10, 2, True).work)
    assert "predicted 2000 s" in reason and "took 2 s at N=1e+03, p=2" in reason and "limit 60 s" in reason
    assert caps.reason(E.LME4, "s", Config(10_000, 10, 2, True).work) == ""
    # Ten times the columns is a hundred times the work.
    assert "predicted 200 s" in caps.reason(E.LME4, "s", Config(1_000, 10, 20, True).work)
    assert caps.reason(E.MIXEDLM, "s", 1e12) == ""  # per engine
    caps.record(E.MIXEDLM, "s", 1.0, float("nan"), "")  # a skipped run is no measurement
    assert caps.reason(E.MIXEDLM, "s", 1e12) == ""


def test_verdicts_on_the_seed_with_two_local_optima():
    fit = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    other = next(o for o in fit.optima if o.tau != fit.tau)

    def verdict(tau):
        run = E.Run("peer", seconds=(1.0,), tau=tau)
        crit_diff, _ = harness.agreement(run, fit)
        return harness.verdict(run, fit, crit_diff)

    assert verdict(fit.tau) == "same optimum"
    assert verdict(other.tau) == "other local optimum"
    assert verdict(0.5 * (fit.tau + other.tau)) == "stopped short"
    assert verdict(-0.1) == "negative variance"
    assert harness.verdict(E.Run("peer", skipped="not installed"), fit, np.nan) == "skipped"
    below = E.Run("peer", seconds=(1.0,), tau=fit.tau)
    assert harness.verdict(below, fit, -1.0) == "below reml_engine's optimum"


def test_memory_cap_turns_an_oversized_allocation_into_a_recorded_skip():
    if not Path("/proc/self/status").exists():
        pytest.skip("the cap reads /proc")

    def greedy() -> E.Run:
        np.ones(2**31 // 8 * 4)  # 4 GB, well above the cap
        return E.Run("greedy", seconds=(1.0,))

    run = E.guarded("greedy", greedy, memory_gb=0.5)
    assert run.skipped.startswith("out of memory under the 0.5 GB cap")
    # The cap is lifted afterwards (np.empty reserves the address space without touching it).
    assert np.empty(2**30).size == 2**30


def test_a_failing_peer_is_recorded_not_fatal():
    def broken() -> E.Run:
        raise np.linalg.LinAlgError("Singular matrix")

    run = E.guarded(E.MIXEDLM, broken, memory_gb=None)
    assert run.skipped == "failed: LinAlgError: Singular matrix"
    assert np.isnan(run.median)


def test_many_response_api_is_detected(monkeypatch):
    monkeypatch.setattr(rl, "fit", lambda X, y, groups: (_ for _ in ()).throw(rl.ModelDataError("y must be 1-d")))
    reason = many.many_api_available()
    assert reason.startswith("rl.fit(X, Y, groups) with Y of shape (n, k) not available yet: ModelDataError")
    monkeypatch.setattr(rl, "fit", lambda X, y, groups: None)
    assert many.many_api_available() == ""


def test_many_response_results_are_read_in_the_forms_they_may_take():
    tau = np.array([0.5, 1.0, 2.0])
    fixef = np.arange(6.0).reshape(3, 2)

    class Table:
        def __init__(self, tau, fixef):
            self.tau, self.fixef = tau, fixef

    for form in (Table(tau, fixef), Table(pd.Series(tau), pd.DataFrame(fixef.T))):
        got_tau, got_fixef = many.many_estimates(form, 3)
        np.testing.assert_array_equal(got_tau, tau)
        np.testing.assert_array_equal(got_fixef, fixef)
    fits = [Table(t, f) for t, f in zip(tau, fixef, strict=True)]
    np.testing.assert_array_equal(many.many_estimates(fits, 3)[1], fixef)
    assert many.many_estimates(object(), 3) is None
    assert many.many_estimates(Table(tau[:2], fixef[:2]), 3) is None


def test_several_terms_are_detected(monkeypatch):
    terms.several_terms_available.cache_clear()
    try:
        def one_term_only(formula, data):
            raise rl.ModelDataError(f"formula {formula!r} has 2 random terms")

        monkeypatch.setattr(rl, "lmer", one_term_only)
        assert terms.several_terms_available().startswith("rl.lmer does not fit several random terms yet")
        terms.several_terms_available.cache_clear()
        monkeypatch.setattr(rl, "lmer", lambda formula, data: None)
        assert terms.several_terms_available() == ""
    finally:
        terms.several_terms_available.cache_clear()


def test_insteval_without_r_is_a_reason_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(terms, "TMP", tmp_path)
    monkeypatch.setattr(E, "rscript", lambda: None)
    reason = terms.insteval()
    assert isinstance(reason, str) and "Rscript with lme4 is not installed" in reason
    spec = terms.TermsSpec("InstEval", terms.INSTEVAL_ROWS, terms.insteval)
    table = terms.run_terms([spec], harness.Settings(), log=lambda line: None)
    assert table.skipped.iloc[0] == reason
    table = terms.run_terms([spec], harness.Settings(), max_rows=1e4, log=lambda line: None)
    assert table.skipped.iloc[0] == "about 73,421 rows, above the limit 10,000"


def test_terms_agreement_fails_only_against_reml_engine():
    rows = [
        {"data": "d", "engine": terms.REML_ENGINE, "reference": terms.REML_ENGINE, "criterion_diff": 0.0,
         "same_optimum": True, "max_rel_fixef_diff": 0.0},
        {"data": "d", "engine": E.LME4, "reference": terms.REML_ENGINE, "criterion_diff": 1e-6,
         "same_optimum": True, "max_rel_fixef_diff": 0.5},
        {"data": "d", "engine": E.MIXEDLM, "reference": terms.REML_ENGINE, "criterion_diff": -0.01,
         "same_optimum": False, "max_rel_fixef_diff": 0.5},
    ]
    problems = terms.disagreements(pd.DataFrame(rows))
    assert len(problems) == 2
    assert "lme4 on d: fixed effects differ" in problems[0] and "mixedlm on d: criterion" in problems[1]
    peers_only = pd.DataFrame(rows).assign(reference="lme4 (lowest criterion; reml_engine skipped)")
    assert terms.disagreements(peers_only) == []


def _boundary_fit():
    """Data without group variance whose REML optimum is at tau = 0 (seed 0)."""
    rng = np.random.default_rng(0)
    n = 200
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    y = X @ [1.0, 2.0] + rng.standard_normal(n)
    fit = rl.fit(X, y, np.arange(n) % 20)
    assert fit.tau == 0.0
    return X, y, fit


def test_a_negative_variance_is_not_the_same_optimum_even_where_tau_0_is():
    """Found at small sizes: FLASH-MM's negative variances evaluate as tau = 0, reml_engine's
    boundary optimum, so they passed as "same optimum" and their fixed effects (those of
    the negative tau) failed the run. They are another estimate, recorded, not failed."""
    _, _, fit = _boundary_fit()
    config = Config(200, 20, 2, True)
    run = E.Run(E.MIXEDLM, seconds=(1.0,), tau=-0.05, fixef=fit.fixef.to_numpy() + 0.1 * fit.se.to_numpy())
    crit_diff, fixef_diff = harness.agreement(run, fit)
    assert abs(crit_diff) < harness.SAME_OPTIMUM_TOL and fixef_diff > harness.FIXEF_AGREEMENT_TOL
    row = harness._row(config, fit, run, crit_diff, fixef_diff, harness.verdict(run, fit, crit_diff))
    assert row["verdict"] == "negative variance" and row["same_optimum"] is False
    assert harness.disagreements(pd.DataFrame([row])) == []


def test_many_responses_count_negative_variances_apart():
    X, y, fit = _boundary_fit()
    tau = np.array([-0.05, 0.0])
    fixef = np.array([fit.fixef.to_numpy() + 0.1 * fit.se.to_numpy(), fit.fixef.to_numpy()])
    result = many.compare([fit, fit], tau, fixef)
    assert result["negative_variance"] == 1 and result["same_optimum"] == 1
    assert result["max_rel_fixef_diff_same_optimum"] < 1e-12
    assert many.disagreements(pd.DataFrame([{"engine": E.FLASHMM, **result}])) == []
