"""The benchmark harness's core, small: every engine agrees with reml_engine where both
reach the same optimum, and reml_engine reaches the global optimum found by a dense scan.

statsmodels is an outside engine (installed with the ``bench`` extra); lme4 parts run
only where Rscript with lme4 is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import engines as E  # noqa: E402
from benchmarks import harness, optimum_study, report  # noqa: E402
from benchmarks.simulate import Config  # noqa: E402

pytest.importorskip("statsmodels")
# Several seconds (tens with R, which starts once per data set and once for the study).
pytestmark = pytest.mark.slow

HAVE_R = E.rscript() is not None
PEERS = (E.STATSMODELS, E.LME4) if HAVE_R else (E.STATSMODELS,)
CONFIGS = [Config(1_000, 100, 2, True), Config(2_000, 200, 4, False)]


@pytest.fixture(scope="module")
def grid_table():
    settings = harness.Settings(repeats=1, budget=0.5, max_seconds=60.0, peers=PEERS)
    return harness.run_grid(CONFIGS, settings, log=lambda line: None)


def test_every_engine_ran(grid_table):
    ran = grid_table[grid_table.skipped == ""]
    assert set(ran.engine) == {E.FLOOR, E.REML_ARRAYS, E.REML_FORMULA, *PEERS}
    assert (ran.median_s > 0).all()


def test_formula_and_arrays_give_the_same_fit(grid_table):
    formula = grid_table[grid_table.engine == E.REML_FORMULA]
    assert (formula.criterion_diff.abs() < 1e-9).all()
    assert (formula.max_rel_fixef_diff < 1e-9).all()


@pytest.mark.parametrize("peer", PEERS)
def test_peers_agree_where_they_reach_the_same_optimum(grid_table, peer):
    rows = grid_table[grid_table.engine == peer]
    same = rows[rows.same_optimum.astype(bool)]
    # These data have one optimum, well inside: the peers reach it.
    assert len(same) == len(CONFIGS)
    # Nobody beats the global optimum on reml_engine's exact criterion.
    assert (rows.criterion_diff > -1e-8).all()
    assert (same.max_rel_fixef_diff < harness.FIXEF_AGREEMENT_TOL).all()


def test_disagreement_check_passes_here_and_catches_a_wrong_estimate(grid_table):
    assert harness.disagreements(grid_table) == []
    broken = grid_table.copy()
    row = broken.index[broken.engine == E.STATSMODELS][0]
    broken.loc[row, "max_rel_fixef_diff"] = 0.5
    assert len(harness.disagreements(broken)) == 1


def test_ratios_are_relative_to_the_same_run(grid_table):
    floor = grid_table[grid_table.engine == E.FLOOR]
    assert np.allclose(floor.ratio_to_floor, 1.0)


def test_skip_rule_reports_its_reason():
    reason = harness._predicted_skip((1_000, 2.0), 1_000_000, max_seconds=60.0)
    assert "predicted 2000 s" in reason and "limit 60 s" in reason
    assert harness._predicted_skip((1_000, 0.001), 10_000, max_seconds=60.0) == ""


def test_markdown_and_plot(grid_table, tmp_path):
    text = report.grid_markdown(grid_table)
    assert text.count("\n") == len(CONFIGS) + 1
    pytest.importorskip("matplotlib")
    report.plot_time_vs_n(grid_table, tmp_path / "time.png")
    assert (tmp_path / "time.png").stat().st_size > 0


@pytest.fixture(scope="module")
def study():
    return optimum_study.run_study(4, seed=1, with_lme4=HAVE_R, log=lambda line: None)


def test_reml_engine_reaches_the_dense_scan_optimum(study):
    ours = study[study.engine == "reml_engine"]
    assert ours.reml_engine_below_scan.all()
    assert ours.reached_global.all()


def test_study_has_multiple_optima_and_verdicts_for_every_peer(study):
    contextual = study[(study.kind == "contextual") & (study.engine == "reml_engine")]
    assert (contextual.n_local_optima > 1).any()
    for peer in PEERS:
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
