"""Every part of the benchmark harness runs at a tiny size and reports what it measured.

Issue 11: the stage breakdown was broken for a while (it passed an argument the kernel no
longer takes) and nobody saw it, because CI's ``--quick`` did not run it. Each part's tiny
version is exercised here; peers and R are optional (a part runs with whatever is
installed and records the others as skipped).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from benchmarks import __main__ as cli  # noqa: E402
from benchmarks import bench_parquet, harness, headline, many, terms  # noqa: E402
from benchmarks import engines as E  # noqa: E402


def test_stage_breakdown_runs_every_stage():
    stages = headline.stage_breakdown(headline.QUICK_STAGES, repeats=1)
    assert (stages.error == "").all(), stages[stages.error != ""].to_dict("records")
    assert np.isfinite(stages.median_ms).all() and (stages.median_ms > 0).all()


def test_stage_breakdown_reports_a_stage_it_cannot_find(monkeypatch):
    import reml_engine as rl

    monkeypatch.delattr(rl, "build_fit", raising=False)
    monkeypatch.setitem(headline.STAGE_HOMES, "build_fit", ("reml_engine.no_such_module",))
    stages = headline.stage_breakdown(headline.QUICK_STAGES, repeats=1).set_index("stage")
    row = "  build_fit (optima as fits, lme4's pick, diagnosis)"
    assert "build_fit" in stages.loc[row, "error"]
    assert np.isnan(stages.loc[row, "median_ms"])


# --- many responses -------------------------------------------------------------------------

TINY_MANY = many.ManyConfig(600, 12, 3, 8, loop_columns=4)
SETTINGS = harness.Settings(repeats=1, budget=0.5, max_seconds=30.0, memory_gb=4.0)


@pytest.fixture(scope="module")
def many_table():
    return many.run_many(TINY_MANY, SETTINGS, log=lambda line: None).set_index("engine")


def test_many_responses_loop_is_extrapolated_and_says_so(many_table):
    loop = many_table.loc[many.REML_LOOP]
    assert loop.columns_timed == 4 and loop.extrapolated
    assert loop.seconds_for_k == pytest.approx(loop.seconds_timed * 8 / 4)
    assert "extrapolated from the first 4 of 8 columns" in loop.note


def test_many_response_api_is_measured_or_skipped_with_reml_engines_reason(many_table):
    row = many_table.loc[many.REML_MANY]
    reason = many.many_api_available()
    if reason:
        assert row.skipped == reason
    else:
        assert row.skipped == "" and row.seconds_for_k > 0


def test_flash_mm_agrees_with_the_looped_fits(many_table):
    if E.peer_version(E.FLASHMM) is None:
        assert many_table.loc[E.FLASHMM, "skipped"] == E.missing_reason(E.FLASHMM)
        return
    flash = many_table.loc[E.FLASHMM]
    assert flash.skipped == "" and flash.columns_timed == 8 and not flash.extrapolated
    # Interior optima on these data: FLASH-MM's Fisher scoring reaches reml_engine's.
    assert flash.compared_columns == 4 and flash.same_optimum == 4
    assert flash.max_rel_fixef_diff_same_optimum < harness.FIXEF_AGREEMENT_TOL
    assert many.disagreements(many_table.reset_index()) == []
    if E.peer_version(E.FLASHMM) == "0.1.0":
        # FLASH-MM 0.1.0 doubles the two-sided p-value of its own t statistic (lmm.py
        # multiplies by 2 twice); docs/benchmarks.md reports it.
        assert flash.p_value_over_two_sided_t == pytest.approx(2.0)


def test_many_responses_agreement_catches_a_wrong_estimate():
    X, Y, groups = many.simulate_many(TINY_MANY)
    import reml_engine as rl

    fits = [rl.fit(X, Y[:, j], groups) for j in range(3)]
    tau = np.array([f.tau for f in fits])
    fixef = np.array([f.fixef.to_numpy() for f in fits])
    good = many.compare(fits, tau, fixef)
    assert good["same_optimum"] == 3 and good["max_rel_fixef_diff_same_optimum"] < 1e-12
    wrong = many.compare(fits, tau, fixef + 1.0)
    table = pd.DataFrame([{"engine": E.FLASHMM, **wrong}])
    assert len(many.disagreements(table)) == 1


# --- several random terms -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def terms_table():
    specs = [terms.quick_datasets()[1]]  # subjects x items, simulated (InstEval needs R)
    return terms.run_terms(specs, SETTINGS, log=lambda line: None)


def test_several_terms_every_engine_ran_or_says_why(terms_table):
    rows = terms_table.set_index("engine")
    reason = terms.several_terms_available()
    assert rows.loc[terms.REML_ENGINE, "skipped"] == reason
    for peer in (E.LME4, E.MIXEDLM, E.INTERLACE):
        if E.peer_version(peer) is None:
            assert rows.loc[peer, "skipped"] == E.missing_reason(peer)
        else:
            assert rows.loc[peer, "skipped"] == "" and rows.loc[peer, "median_s"] > 0


def test_several_terms_peers_agree_with_each_other(terms_table):
    ran = terms_table[terms_table.skipped == ""]
    if len(ran) < 2:
        pytest.skip("fewer than two engines for several terms installed")
    # Independent implementations reach one optimum of one criterion (lme4's REMLcrit).
    assert (ran.criterion_diff.abs() < 1e-6).all()
    assert (ran.max_rel_fixef_diff < 1e-4).all()
    assert ran.reference.str.len().gt(0).all()


def test_several_terms_spec_can_name_its_engines():
    # The 1e7-row data set runs reml_engine alone; the peers' rows say why.
    spec = terms.quick_datasets()[2]
    assert spec.engines == (terms.REML_ENGINE,)
    table = terms.run_terms([spec], SETTINGS, log=lambda line: None).set_index("engine")
    for peer in (E.LME4, E.MIXEDLM, E.INTERLACE):
        assert table.loc[peer, "skipped"] == terms.ONLY_REML_ENGINE
        assert np.isnan(table.loc[peer, "median_s"])
    if not terms.several_terms_available():
        assert table.loc[terms.REML_ENGINE, "skipped"] == ""


def test_several_terms_child_process_reports_memory(monkeypatch):
    # Large data sets run in a child process; its peak (the data included) comes back.
    if terms.several_terms_available():
        pytest.skip(terms.several_terms_available())
    monkeypatch.setattr(terms, "ISOLATE_ROWS", 0)
    data = terms.crossed(60, 20, 0.5)
    run = terms._isolated(terms.REML_ENGINE, data, 1, SETTINGS)
    assert run.process_peak_mb > 0 and run.peak_mb >= 0
    assert run.process_peak_mb >= run.peak_mb
    assert run.first_call_s > 0 and len(run.seconds) == 1
    in_process = terms._reml_engine(data, 1, SETTINGS.budget)
    assert abs(run.criterion - in_process.criterion) < 1e-9


def test_time_calls_times_at_least_min_timed_calls_after_the_warm_up():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    first: list[float] = []
    # The warm-up alone is over the budget: by default it is the only timing ...
    _, seconds, _ = E.time_calls(slow, 5, 0.001)
    assert len(calls) == 1 and len(seconds) == 1
    # ... with min_timed=1 one more call is timed, and the warm-up is reported apart.
    calls.clear()
    _, seconds, _ = E.time_calls(slow, 5, 0.001, min_timed=1, first_call=first)
    assert len(calls) == 2 and len(seconds) == 1 and len(first) == 1 and first[0] >= 0.02
    calls.clear()
    _, seconds, _ = E.time_calls(slow, 5, 0.001, min_timed=3)
    assert len(calls) == 4 and len(seconds) == 3
    calls.clear()
    _, seconds, _ = E.time_calls(slow, 1, 0.001, min_timed=1)  # repeats=1: the warm-up only
    assert len(calls) == 1


def test_memory_text():
    from benchmarks import report

    assert report._memory_text(float("nan"), float("nan")) == "-"
    assert report._memory_text(12.4, float("nan")) == "+12 MB"
    assert report._memory_text(2048.0, 3072.0) == "+2.00 GB (3.00 GB in all)"


# --- Parquet, and the command line --------------------------------------------------------------


@pytest.mark.slow
def test_parquet_part_fits_from_disk_and_reads_with_pyarrow(tmp_path):
    if bench_parquet.missing_reason():
        pytest.skip(bench_parquet.missing_reason())
    result = bench_parquet.run_parquet(4_000, groups=40, rows_per_file=1_000, folder=tmp_path, log=lambda line: None)
    assert result["rows"] == 4_000 and result["groups"] == 40
    assert result["fit_over_read"] > 0
    assert abs(result["estimates"]["x1"] - bench_parquet.TRUTH["x1"]) < 0.1


def test_wide_part_records_memory_against_the_design_matrix(tmp_path):
    cli.main(["--quick", "--parts", "wide", "--out", str(tmp_path), "--no-statsmodels"])
    table = pd.read_csv(tmp_path / "wide.csv").set_index("engine")
    config = harness.QUICK_WIDE_TARGET
    assert (table.p == config.p).all() and (table.factor_levels == config.factor_levels).all()
    ours = table.loc["reml_engine (arrays)"]
    assert ours.design_mb == pytest.approx(config.nobs * config.p * 8 / 2**20)
    assert ours.peak_over_design == pytest.approx(ours.peak_extra_mb / ours.design_mb)
    assert "lme4" in table.index  # run, or skipped with the reason when R is missing
    assert (tmp_path / "wide.md").read_text().strip()


def test_every_part_has_a_runner_and_unknown_parts_are_refused():
    assert set(cli.PART_RUNNERS) == set(cli.PARTS)
    with pytest.raises(SystemExit, match="unknown part"):
        cli.main(["--quick", "--parts", "grid,nonsense"])
    with pytest.raises(SystemExit, match="unknown peer"):
        cli.main(["--quick", "--peers", "lme5"])


#: Parts no other test runs; grid and study: test_benchmarks_quick.py, stages, many, terms,
#: parquet and wide: above.
OTHER_PARTS = ("machine", "headline", "criterion", "memory", "import")


def test_every_part_is_run_by_a_test():
    """A part added to the harness must be added to a test here (or in test_benchmarks_quick)."""
    covered = {"grid", "study", "stages", "many", "terms", "parquet", "wide", *OTHER_PARTS}
    assert covered == set(cli.PARTS)


@pytest.mark.slow
def test_quick_command_line_runs_the_other_parts(tmp_path):
    """machine, headline, criterion, memory and import at CI size, without R: each writes
    its results and the run records its time."""
    cli.main(["--quick", "--no-lme4", "--parts", ",".join(OTHER_PARTS), "--out", str(tmp_path)])
    run = json.loads((tmp_path / "run.json").read_text())
    assert set(run["part_seconds"]) == set(OTHER_PARTS)
    headline_table = pd.read_csv(tmp_path / "headline.csv").set_index("engine")
    assert headline_table.loc["reml_engine (arrays)", "median_s"] > 0
    assert headline_table.loc["reml_engine (arrays)", "verdict"] == "same optimum"
    timing = pd.read_csv(tmp_path / "criterion_timing.csv")
    assert len(timing) and (timing.single_eval_us > 0).all() and (timing.scan_per_point_us > 0).all()
    memory = json.loads((tmp_path / "memory.json").read_text())
    assert memory["arrays_seconds"] > 0 and memory["formula_seconds"] > 0
    assert json.loads((tmp_path / "import.json").read_text())["first_fit_s"] > 0
    assert json.loads((tmp_path / "machine.json").read_text())


def test_quick_command_line_writes_each_parts_results(tmp_path):
    cli.main(["--quick", "--parts", "stages,many", "--out", str(tmp_path)])
    for name in ("stages.csv", "stages.md", "many.csv", "many.md", "run.json"):
        assert (tmp_path / name).stat().st_size > 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["quick"] and set(run["part_seconds"]) == {"stages", "many"}


def test_criterion_timing_legend_draws_dashed_series_dashed():
    """Colour is G, line style is balance: the legend has one entry each, and the
    unbalanced entry is drawn dashed (without a marker covering its dashes)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks import report

    table = pd.DataFrame({"nobs": [1000, 10000] * 4, "ngroups": [10, 100, 10, 100, 100, 1000, 100, 1000],
                          "balanced": [True, True, False, False] * 2, "distinct_sizes": [1, 1, 5, 9] * 2,
                          "single_eval_us": np.linspace(50, 90, 8), "scan_points": 100,
                          "scan_per_point_us": np.linspace(1, 3, 8)})
    fig = report.criterion_timing_figure(table)
    try:
        legend = fig.axes[0].get_legend()
        styles = {t.get_text(): (h.get_linestyle(), h.get_marker()) for t, h in
                  zip(legend.get_texts(), legend.get_lines(), strict=True)}
        assert styles["balanced"][0] == "-"
        unbalanced = next(v for k, v in styles.items() if k.startswith("unbalanced"))
        assert unbalanced[0] == "--" and unbalanced[1] in ("None", "", None)
        # The drawn series carry the same styles.
        drawn = {line.get_linestyle() for line in fig.axes[0].lines}
        assert drawn == {"-", "--"}
    finally:
        plt.close(fig)
