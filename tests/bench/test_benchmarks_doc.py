"""docs/benchmarks.md quotes the numbers of the committed full run in benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOC = (ROOT / "docs" / "benchmarks.md").read_text()


def test_headline_figures_are_the_results_files():
    table = pd.read_csv(RESULTS / "headline.csv").set_index("engine")
    floor = table.loc["numpy floor", "median_s"]
    arrays = table.loc["reml_engine (arrays)", "median_s"]
    formula = table.loc["reml_engine (formula)", "median_s"]
    assert f"{1e3 * arrays:.1f} ms against {1e3 * floor:.1f} ms: **{arrays / floor:.1f}x**" in DOC
    for peer in ("lme4", "statsmodels"):
        seconds = table.loc[peer, "median_s"]
        assert f"{1e3 * formula:.1f} ms against {seconds:.2f} s: **{seconds / formula:.0f}x**" in DOC


def test_memory_and_import_figures_are_the_results_files():
    memory = json.loads((RESULTS / "memory.json").read_text())
    assert f"{memory['input_mb']:.0f} MB of arrays + {memory['arrays_extra_mb']:.0f} MB: " \
           f"**{memory['arrays_ratio']:.2f}x**" in DOC
    timing = json.loads((RESULTS / "import.json").read_text())
    assert f"**{timing['warm_wall_s']:.2f} s** wall" in DOC
    assert f"{timing['cold_wall_s']:.2f} s" in DOC


def test_study_shares_are_the_results_files():
    study = pd.read_csv(RESULTS / "study.csv")
    share = study.groupby(["kind", "REML", "engine"]).reached_global.mean() * 100
    assert share.xs("reml_engine", level="engine").eq(100).all()
    for kind in ("contextual", "ordinary"):
        for REML, name in ((True, "REML"), (False, "ML")):
            for engine in ("lme4", "statsmodels"):
                value = share[(kind, REML, engine)]
                shown = "100%" if value == 100 else f"{value:.1f}%"
                assert f"| {kind} | {name} | {engine} | {shown} |" in DOC


def test_every_part_and_peer_of_the_harness_is_documented():
    from benchmarks import __main__ as cli
    from benchmarks import engines as E

    for part in cli.PARTS:
        assert f"| `{part}` |" in DOC, f"part {part} missing from the table of docs/benchmarks.md"
    peers_table = DOC[DOC.index("## The peers"):DOC.index("## Caps")]
    for peer in (*E.PEERS, E.FLASHMM):
        assert f"| {peer} " in peers_table, f"peer {peer} missing from the peers table"
    for option in ("--peers", "--max-seconds-terms", "--memory-cap-gb", "--max-n", "--responses"):
        assert option in DOC


def test_several_terms_figures_are_the_results_files():
    table = pd.read_csv(RESULTS / "terms.csv")
    section = DOC[DOC.index("### Full run (issue 12's targets)"):DOC.index("**An earlier run**")]
    # (data set in terms.csv, its row in the doc's table, how the load sentence names it)
    for data, doc_name, load_name in (
            ("InstEval", "InstEval", "InstEval"),
            ("subjects x items (10000 x 1000)", "subjects x items", "subjects x items"),
            ("crossed at 1e7 rows (1e5 x 1e3)", "crossed at 1e7 rows", "1e7 rows")):
        rows = table[table.data == data].set_index("engine")
        line = next(line for line in section.splitlines() if line.startswith(f"| {doc_name} |"))
        ours = rows.loc["reml_engine (formula)"]
        assert f"| {ours.median_s:.2f} s |" in line
        for peer in ("lme4", "mixedlm", "interlace-lme"):
            row = rows.loc[peer]
            if not isinstance(row.skipped, str):  # it ran (an empty note reads as NaN)
                assert f"{row.median_s:.2f} s (" in line and f"{row.ratio_to_reml_engine:.1f}x" in line
        assert f"{ours.load_average:.1f} ({load_name})" in " ".join(section.split())
    memory = table.set_index(["data", "engine"]).loc[("crossed at 1e7 rows (1e5 x 1e3)", "reml_engine (formula)")]
    assert f"**{memory.peak_mb / 1024:.2f} GB**" in section
    assert f"**{memory.process_peak_mb / 1024:.2f} GB**" in section


def test_many_responses_figures_are_the_results_files():
    table = pd.read_csv(RESULTS / "many.csv").set_index("engine")
    section = DOC[DOC.index("### Full run (`--parts many"):DOC.index("## Small data: where the time goes")]
    many = table.loc["reml_engine (many)"]
    assert f"| reml_engine (many) | {many.seconds_for_k:.2f} s |" in section
    assert f"load average {many.load_average:.1f}" in section
    for engine in ("reml_engine (loop)", "FLASH-MM"):
        row = table.loc[engine]
        assert f"| {engine} | {row.seconds_for_k:.1f} s | {row.ratio_to_many_api:.1f}x |" in section
    loop = table.loc["reml_engine (loop)"]
    met = "met" if loop.ratio_to_many_api >= 100 else "missed"
    assert f"At least 100x faster than the loop: {met} ({loop.ratio_to_many_api:.1f}x)" in section
    assert f"{int(table.loc['FLASH-MM'].negative_variance)} of 200 negative variances" in section


def test_parquet_figures_are_the_results_files():
    """Issue 13's Parquet target: the run before this change's code and the run after, in
    the same harness (warm medians, their ratio to pyarrow's read, CPU time)."""
    section = " ".join(DOC[DOC.index("## Parquet"):].split())
    for name in ("parquet_before.json", "parquet.json"):
        run = json.loads((RESULTS / name).read_text())
        assert f"{run['fit_warm_seconds']:.2f} s" in section, name
        assert f"{run['pyarrow_warm_seconds']:.2f} s" in section, name
        assert f"**{run['fit_over_read']:.1f}x**" in section, name
        assert f"{run['fit_warm_cpu_seconds']:.1f} s CPU" in section, name
        assert f"{run['pyarrow_warm_cpu_seconds']:.1f} s CPU" in section, name
        assert f"{run['fit_peak_rss_mb']:.0f} MB" in section, name
        assert f"load average {run['load_average']:.1f}" in section, name


def test_wide_target_figures_are_the_results_files():
    """Issue 13's wide target (N = 2e4, a 1000-level factor): time and peak memory over the
    design matrix, before this change's code and after, and lme4's time or its time-out."""
    section = " ".join(DOC[DOC.index("### Issue 13's wide target"):DOC.index("## Many responses")].split())
    for name in ("wide_before.csv", "wide.csv"):
        table = pd.read_csv(RESULTS / name).set_index("engine")
        for engine in ("reml_engine (arrays)", "reml_engine (formula)"):
            row = table.loc[engine]
            design_mb = row.nobs * row.p * 8 / 2**20
            assert f"{row.median_s:.1f} s" in section, (name, engine)
            assert f"{row.peak_extra_mb:.0f} MB ({row.peak_extra_mb / design_mb:.2f}x)" in section, (name, engine)
        lme4 = table.loc["lme4"]
        if isinstance(lme4.skipped, str):
            assert lme4.skipped in section, name
        else:
            assert f"{lme4.median_s:.1f} s" in section, name
