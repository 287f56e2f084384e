"""Every part of the benchmark harness runs at a tiny size and reports what it measured.

Issue 11: the stage breakdown was broken for a while (it passed an argument the kernel no
longer takes) and nobody saw it, because CI's ``--quick`` did not run it. Each part's tiny
version is exercised here; peers and R are optional (a part runs with whatever is
installed and records the others as skipped).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import headline  # noqa: E402


def test_stage_breakdown_runs_every_stage():
    stages = headline.stage_breakdown(headline.QUICK_STAGES, repeats=1)
    assert (stages.error == "").all(), stages[stages.error != ""].to_dict("records")
    assert np.isfinite(stages.median_ms).all()
    whole = stages.set_index("stage").median_ms
    # The kernel is one of the stages of the whole fit from arrays.
    assert whole["  compute_group_stats (kernel)"] < whole["whole fit from arrays"]


def test_stage_breakdown_reports_a_stage_it_cannot_find(monkeypatch):
    import reml_engine as rl

    monkeypatch.delattr(rl, "fit_stats", raising=False)
    monkeypatch.setitem(headline.STAGE_HOMES, "fit_stats", ("reml_engine.no_such_module",))
    stages = headline.stage_breakdown(headline.QUICK_STAGES, repeats=1).set_index("stage")
    assert "fit_stats" in stages.loc["  fit_stats (after the statistics)", "error"]
    assert np.isnan(stages.loc["  fit_stats (after the statistics)", "median_ms"])
