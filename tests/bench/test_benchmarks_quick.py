"""The benchmark harness's core, small: every engine agrees with reml_engine where both
reach the same optimum, and reml_engine reaches the global optimum found by a dense scan.

The peers (statsmodels, mixedlm, interlace-lme: the ``bench`` extra; lme4: R) are
outside engines and optional: each check runs for those installed, and a missing one
must be recorded as skipped with the reason, never silently absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import engines as E  # noqa: E402
from benchmarks import harness, optimum_study, report  # noqa: E402
from benchmarks.simulate import Config  # noqa: E402

# Several seconds (tens with R, which starts once per data set and once for the study).
pytestmark = pytest.mark.slow

INSTALLED = tuple(p for p in E.PEERS if E.peer_version(p) is not None)
# Both group layouts, and a wide design (a 30-level fixed factor: every engine names
# and orders its indicator columns its own way).
CONFIGS = [Config(1_000, 100, 2, True), Config(2_000, 200, 4, False), Config(600, 20, 31, False, 30)]


@pytest.fixture(scope="module")
def grid_table():
    settings = harness.Settings(repeats=1, budget=0.5, max_seconds=60.0, peers=E.PEERS, memory_gb=4.0)
    return harness.run_grid(CONFIGS, settings, log=lambda line: None)


def test_every_engine_ran_or_says_why_not(grid_table):
    ran = grid_table[grid_table.skipped == ""]
    assert set(ran.engine) == {E.FLOOR, E.REML_ARRAYS, E.REML_FORMULA, *INSTALLED}
    assert (ran.median_s > 0).all()
    missing = grid_table[~grid_table.engine.isin(ran.engine)]
    assert set(missing.engine) == set(E.PEERS) - set(INSTALLED)
    assert missing.skipped.str.contains("not installed").all()


def test_formula_and_arrays_give_the_same_fit(grid_table):
    formula = grid_table[grid_table.engine == E.REML_FORMULA]
    assert len(formula) == len(CONFIGS)
    assert (formula.criterion_diff.abs() < 1e-9).all()
    # Including the wide design, whose formula names (f[T.L0001], ...) are matched to X's columns.
    assert (formula.max_rel_fixef_diff < 1e-9).all()


@pytest.mark.parametrize("peer", E.PEERS)
def test_peers_agree_where_they_reach_the_same_optimum(grid_table, peer):
    if peer not in INSTALLED:
        pytest.skip(E.missing_reason(peer))
    rows = grid_table[grid_table.engine == peer]
    same = rows[rows.same_optimum.astype(bool)]
    # These data have one optimum, well inside: every peer reaches it.
    assert len(same) == len(CONFIGS)
    assert (same.verdict == "same optimum").all()
    # Nobody beats the global optimum on reml_engine's exact criterion.
    assert (rows.criterion_diff > -1e-8).all()
    # Each peer's fixed effects, whatever its names for the factor's columns, are matched
    # column by column (a name not matched would be NaN and fail here).
    assert (same.max_rel_fixef_diff < harness.PEER_FIXEF_TOL[peer]).all()


def test_disagreement_check_passes_here_and_catches_a_wrong_estimate(grid_table):
    assert harness.disagreements(grid_table) == []
    for engine in (E.REML_FORMULA, *INSTALLED):
        broken = grid_table.copy()
        row = broken.index[broken.engine == engine][0]
        broken.loc[row, "max_rel_fixef_diff"] = 0.5
        assert len(harness.disagreements(broken)) == 1
        broken.loc[row, "max_rel_fixef_diff"] = np.nan  # a column the engine did not name
        assert len(harness.disagreements(broken)) == 1
        broken.loc[row, "criterion_diff"] = -1e-3
        assert any("below reml_engine's optimum" in p for p in harness.disagreements(broken))


def test_ratios_are_relative_to_the_same_run(grid_table):
    floor = grid_table[grid_table.engine == E.FLOOR]
    assert np.allclose(floor.ratio_to_floor, 1.0)
    for peer in INSTALLED:
        rows = grid_table[grid_table.engine == peer].set_index(harness.KEYS)
        formula = grid_table[grid_table.engine == E.REML_FORMULA].set_index(harness.KEYS)
        assert np.allclose(rows.ratio_to_reml_formula, rows.median_s / formula.median_s)


def test_markdown_and_plot(grid_table, tmp_path):
    for text in (report.grid_markdown(grid_table), report.agreement_markdown(grid_table)):
        assert text.count("\n") == len(CONFIGS) + 1
    assert "31 (30-level factor)" in report.grid_markdown(grid_table)
    full = report.grid_report(grid_table)
    for peer in E.PEERS:
        assert peer in full
    pytest.importorskip("matplotlib")
    report.plot_time_vs_n(grid_table, tmp_path / "time.png")
    assert (tmp_path / "time.png").stat().st_size > 0


def test_markdown_of_results_written_before_the_new_columns():
    """The committed full-run grid.csv predates the wide designs and verdicts."""
    import pandas as pd

    old = pd.read_csv(Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "grid.csv")
    assert report.grid_markdown(old).count("\n") == old.groupby(["nobs", "ngroups", "p", "balanced"]).ngroups + 1


@pytest.fixture(scope="module")
def study():
    return optimum_study.run_study(4, seed=1, peers=E.PEERS, log=lambda line: None)


def test_reml_engine_reaches_the_dense_scan_optimum(study):
    ours = study[study.engine == "reml_engine"]
    assert ours.reml_engine_below_scan.all()
    assert ours.reached_global.all()


def test_study_has_multiple_optima_and_verdicts_for_every_peer(study):
    contextual = study[(study.kind == "contextual") & (study.engine == "reml_engine")]
    assert (contextual.n_local_optima > 1).any()
    assert set(study.engine) == {"reml_engine", *INSTALLED}
    for peer in INSTALLED:
        rows = study[study.engine == peer]
        assert len(rows) == 16
        # A peer's verdict is one of: reached, stopped short, other optimum, failed.
        verdicts = rows.reached_global.astype(int) + rows.stopped_short.astype(int) + rows.other_optimum.astype(int)
        assert ((verdicts == 1) | (rows.error != "")).all()


def test_dense_scan_finds_both_optima_of_the_seed():
    import reml_engine as rl

    fit = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    taus, values = optimum_study.dense_scan(fit.stats, True)
    edges = optimum_study.basin_edges(fit.optima, taus, values)
    assert len(edges) == len(fit.optima) - 1 == 1
    assert fit.optima[0].tau < edges[0] < fit.optima[1].tau
    assert np.nanmin(values) >= fit.criterion - 1e-9
