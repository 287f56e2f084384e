"""benchmarks/formula_overhead.py runs, and its formula and arrays fits agree."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import formula_overhead

ROOT = Path(__file__).resolve().parents[2]


def test_one_child_times_every_design_and_the_fits_agree():
    result = formula_overhead._child(repeats=1, peers=False)
    assert set(result["designs"]) == {label for label, *_ in formula_overhead.DESIGNS}
    for timings in result["designs"].values():
        assert timings["formula_equals_arrays"]
        assert set(timings["cpu_ms"]) == {"arrays", "design X", "formula"}
        assert all(value > 0 for value in timings["wall_ms"].values())


def test_the_documented_table_is_the_committed_run():
    rounds = json.loads((ROOT / "benchmarks" / "results" / "formula_overhead.json").read_text())
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    section = doc[doc.index("### The formula path"):doc.index("## Several random terms")]
    for line in formula_overhead.table(rounds).splitlines()[2:]:
        assert line in section, line
