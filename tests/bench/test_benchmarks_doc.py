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
