"""``progress=`` of rl.lmer (in memory, chunks, Dask) and the engine's ``logging`` log."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
import reml_engine.progress as progress_module
from reml_engine.progress import ReadProgress, check_progress


def _frame(n: int = 400, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 20, n)
    x = rng.normal(size=n)
    return pd.DataFrame({"y": 1.0 + x + rng.normal(size=20)[g] + rng.normal(size=n), "x": x, "g": g})


def _chunks(df: pd.DataFrame, rows: int = 100) -> list[pd.DataFrame]:
    return [df.iloc[i:i + rows] for i in range(0, len(df), rows)]


def test_read_progress_line_gives_the_share_done_and_the_time_left():
    tracker = ReadProgress(False, "statistics", total_rows=1000)
    tracker.start = 0.0
    tracker.rows, tracker.chunks = 250, 1
    # 250 rows in 10 s: 750 rows left at 25 rows/s take 30 s.
    assert tracker.line(10.0) == ("reml_engine: statistics: 250 of 1,000 rows (25%) in 1 chunks, 10.0 s "
                                  "(25 rows/s), about 30.0 s left")
    unknown = ReadProgress(False, "levels")
    unknown.start, unknown.rows, unknown.chunks = 0.0, 300, 3
    assert unknown.line(200.0) == "reml_engine: levels: 300 rows in 3 chunks, 3.3 min (2 rows/s)"


@pytest.mark.parametrize("bad", ["yes", 1, None, "Auto"])
def test_progress_argument_is_checked(bad):
    with pytest.raises(ValueError, match="progress must be True, False, 'auto' or a function"):
        rl.lmer("y ~ x + (1|g)", _frame(), progress=bad)
    with pytest.raises(ValueError, match="progress must be"):
        check_progress(bad)


def test_in_memory_fit_shows_its_stages_on_request(capsys):
    rl.lmer("y ~ x + (1|g)", _frame(), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["design of 400 rows", "statistics and fit"]


def test_in_memory_fit_is_silent_by_default_until_the_threshold(capsys, monkeypatch):
    rl.lmer("y ~ x + (1|g)", _frame())
    rl.lmer("y ~ x + (1|g)", _frame(), progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress_module, "PROGRESS_AFTER_SECONDS", 0.0)
    rl.lmer("y ~ x + (1|g)", _frame())
    assert "statistics and fit" in capsys.readouterr().err


def test_in_memory_fit_calls_the_function_once_with_the_rows(capsys):
    seen = []
    rl.lmer("y ~ x + (1|g)", _frame(), progress=lambda rows, chunks: seen.append((rows, chunks)))
    assert seen == [(400, 1)] and capsys.readouterr().err == ""


def test_chunked_fit_through_lmer_shows_the_total(capsys):
    df = _frame()
    rl.lmer("y ~ x + (1|g)", _chunks(df), progress=True)
    err = capsys.readouterr().err
    assert "statistics: 400 of 400 rows (100%) in 4 chunks" in err


def test_chunked_fit_through_lmer_calls_the_function_per_chunk():
    seen = []
    rl.lmer("y ~ x + (1|g)", _chunks(_frame()), progress=lambda rows, chunks: seen.append((rows, chunks)))
    assert seen == [(100, 1), (200, 2), (300, 3), (400, 4)]


def test_dask_fit_through_lmer_calls_the_function_per_pass():
    dd = pytest.importorskip("dask.dataframe")
    import dask

    seen = []
    data = dd.from_pandas(_frame(), npartitions=3)
    with dask.config.set(scheduler="synchronous"):
        rl.lmer("y ~ x + (1|g)", data, progress=lambda rows, chunks: seen.append((rows, chunks)))
    assert seen == [(400, 3)]


@pytest.fixture
def engine_log(caplog):
    caplog.set_level(logging.DEBUG, logger="reml_engine")
    return caplog


def _messages(caplog, level) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reml_engine" and r.levelno == level]


def test_log_says_which_rows_and_columns_were_dropped(engine_log):
    df = _frame()
    df["x2"] = 2.0 * df["x"]
    df.loc[df.index[:3], "x"] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = rl.lmer("y ~ x + x2 + (1|g)", df)
    warned = [str(w.message) for w in caught if issubclass(w.category, rl.ModelDataWarning)]
    info = _messages(engine_log, logging.INFO)
    # The log repeats the warnings, which stay.
    assert "dropped 3 of 400 rows with missing values ('x': 3)" in info
    dropped = next(line for line in info if "rank deficient" in line)
    assert "'x2'" in dropped and dropped in warned and "dropped 3 of 400" in " ".join(warned)
    assert list(m.fixef.index) == ["(Intercept)", "x"]


def test_log_names_the_optima_and_the_global_one(engine_log):
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    info = _messages(engine_log, logging.INFO)
    best = m.global_optimum
    assert info[-1].startswith(f"y ~ x + (1|f): {len(m.optima)} local optima of the REML criterion; "
                               f"global: {best.kind}, tau = {best.tau:.6g}")
    debug = [line for line in _messages(engine_log, logging.DEBUG) if line.startswith("optimum ")]
    assert len(debug) == len(m.optima) == 2
    assert [line.endswith("(global)") for line in debug] == [o.is_global for o in m.optima]


def test_log_of_a_chunked_fit_times_its_passes(engine_log):
    rl.lmer("y ~ x + (1|g)", _chunks(_frame()), progress=False)
    debug = _messages(engine_log, logging.DEBUG)
    assert any(line.startswith("statistics pass: 400 rows in 4 chunks") for line in debug)
