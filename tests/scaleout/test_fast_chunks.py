"""The fast per-chunk path (numeric design without formulaic, the single-threaded kernel on
Dask's worker threads) gives the general path's answer on the same inputs.

The general path (formulaic's model matrix, numba's parallel kernel) is the one the
in-memory tests and the lme4 references check; here each fast step is compared with it,
on Parquet files whose numeric columns change dtype between files and hold missing
values, and on factor formulas, which keep the general path.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core.statistics import compute_group_stats
from reml_engine.frontend.groups import factorize_groups
from reml_engine.scaleout import encoding
from reml_engine.scaleout.encoding import ChunkEncoding, FormulaColumns

pytest.importorskip("dask.dataframe")
pytest.importorskip("pyarrow")

from reml_engine.scaleout.dask import lmer_dask  # noqa: E402

#: Fast and general paths differ at most in the order of floating-point sums.
SAME_FIT_RTOL = 1e-10

NUMERIC_FORMULA = "y ~ x1 + x2 + (1|g)"
FACTOR_FORMULA = "y ~ x1 + f + (1|g)"


def _frame(n: int = 900, n_groups: int = 30, seed: int = 20261130) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    x1 = rng.integers(-5, 6, n)  # integers: formulaic makes floats of them
    x2 = rng.uniform(100.0, 110.0, n)  # far from 0: the shift matters
    f = rng.choice(["a", "b", "c", "d"], n)
    effects = rng.normal(scale=0.7, size=n_groups)
    y = 2.0 + 0.3 * x1 - 0.1 * x2 + 0.5 * (f == "b") + effects[g] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "f": f, "g": g})


FRAME = _frame()


def _write_files(folder, frame: pd.DataFrame) -> str:
    """Three files: x1 int64 in the first and float64 (with missing values) in the
    second, missing values in y and x2, the factor categorical in the first (with an
    unused category), text in the others, level 'd' absent from the third."""
    parts = [frame.iloc[:300].copy(), frame.iloc[300:600].copy(), frame.iloc[600:].copy()]
    parts[1] = parts[1].astype({"x1": float})
    parts[1].loc[parts[1].index[:5], "x1"] = np.nan
    parts[1].loc[parts[1].index[5:8], "y"] = np.nan
    parts[2].loc[parts[2].index[:3], "x2"] = np.nan
    parts[2] = parts[2][parts[2]["f"] != "d"]
    parts[0] = parts[0].astype({"f": pd.CategoricalDtype(["d", "c", "b", "a", "unused"])})
    for i, part in enumerate(parts):
        part.to_parquet(folder / f"part-{i}.parquet", row_group_size=100)
    return str(folder / "*.parquet")


def _fit(formula: str, data, **kwargs) -> rl.LmerFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return lmer_dask(formula, data, **kwargs)


def _general_only(monkeypatch) -> None:
    """Every chunk through formulaic (the numeric path never chosen)."""
    monkeypatch.setattr(encoding, "numeric_design_columns", lambda *args: None)


def assert_same_fit(fit: rl.LmerFit, reference: rl.LmerFit) -> None:
    assert list(fit.fixef.index) == list(reference.fixef.index)
    assert fit.nobs == reference.nobs and fit.ngroups == reference.ngroups
    for name in ("criterion", "tau", "sigma2", "var_group"):
        assert getattr(fit, name) == pytest.approx(getattr(reference, name), rel=SAME_FIT_RTOL), name
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=SAME_FIT_RTOL, atol=SAME_FIT_RTOL * reference.se.min())
    np.testing.assert_allclose(fit.se, reference.se, rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.ranef.to_numpy(), reference.ranef.to_numpy(), rtol=SAME_FIT_RTOL,
                               atol=SAME_FIT_RTOL * np.abs(reference.ranef.to_numpy()).max())


def _encoding(formula: str, sample: pd.DataFrame, levels: dict | None = None) -> ChunkEncoding:
    columns = FormulaColumns.from_sample(formula, sample.columns, sample, sample.dtypes)
    return ChunkEncoding.from_sample(columns, levels or {}, sample)


def test_numeric_formula_takes_the_numeric_design_and_it_equals_formulaic():
    enc = _encoding("y ~ 0 + x2 + x1 + (1|g)", FRAME)
    assert enc.numeric_columns == ("x2", "x1")
    enc = _encoding(NUMERIC_FORMULA, FRAME)
    assert enc.numeric_columns == ("Intercept", "x1", "x2")
    for chunk in (FRAME.iloc[:400], FRAME.iloc[400:].astype({"x1": float, "x2": np.float32})):
        X_fast, y_fast, _ = enc.design(chunk)
        X_general, y_general, _ = enc.design(chunk, fast=False)
        np.testing.assert_allclose(X_fast, X_general, rtol=SAME_FIT_RTOL, atol=0)
        np.testing.assert_array_equal(y_fast, y_general)
        fast = enc.partial_stats(chunk).group_stats
        assert fast.cross == pytest.approx(compute_group_stats(
            X_general, y_general, factorize_groups(chunk["g"]), enc.shift, exact_within=False).cross,
            rel=SAME_FIT_RTOL)


@pytest.mark.parametrize("formula", [
    FACTOR_FORMULA,              # a factor: its columns depend on the levels
    "y ~ x1 + np.log(x2) + (1|g)",  # a transform
    "y ~ x1 * x2 + (1|g)",        # an interaction
])
def test_other_formulas_keep_formulaic(formula):
    assert _encoding(formula, FRAME.astype({"f": "category"})).numeric_columns is None


def test_chunk_with_text_in_a_numeric_column_goes_the_general_way():
    enc = _encoding(NUMERIC_FORMULA, FRAME)
    chunk = FRAME.iloc[:50].astype({"x1": object})
    X, _, _ = enc.design(chunk)
    np.testing.assert_array_equal(X, enc.design(chunk, fast=False)[0])


@pytest.mark.parametrize("formula", [NUMERIC_FORMULA, FACTOR_FORMULA])
def test_parquet_fit_fast_equals_general_and_in_memory(tmp_path, monkeypatch, formula):
    """Both formulas, threads (single-threaded kernel per worker) and synchronous
    (numba's parallel kernel on the main thread), against formulaic on every chunk and
    the in-memory fit of the same rows."""
    path = _write_files(tmp_path, FRAME)
    fast = _fit(formula, path, scheduler="threads")
    on_main_thread = _fit(formula, path, scheduler="synchronous")
    rows = pd.concat([pd.read_parquet(f) for f in sorted(tmp_path.glob("*.parquet"))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        in_memory = rl.lmer(formula, rows.astype({"f": str}))
    _general_only(monkeypatch)
    general = _fit(formula, path, scheduler="threads")
    used = [c for c in rows.columns if c in formula]
    assert fast.nobs == in_memory.nobs == len(rows[used].dropna()) < len(FRAME) - 8
    assert_same_fit(fast, general)
    assert_same_fit(on_main_thread, general)
    assert fast.criterion == pytest.approx(in_memory.criterion, rel=1e-9)
    np.testing.assert_allclose(fast.fixef, in_memory.fixef, rtol=1e-8, atol=1e-8 * in_memory.se.min())


def test_single_threaded_kernel_equals_the_parallel_one():
    rng = np.random.default_rng(7)
    n = 600_000  # above the parallel kernel's threshold on two threads
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.uniform(50, 60, n)])
    y = rng.normal(size=n)
    groups = factorize_groups(rng.integers(0, 5_000, n))
    shift = np.array([0.0, 0.0, 55.0, 0.0])
    one = compute_group_stats(X, y, groups, shift, exact_within=False, threads=1)
    default = compute_group_stats(X, y, groups, shift, exact_within=False)
    np.testing.assert_array_equal(one.counts, default.counts)
    np.testing.assert_allclose(one.sums, default.sums, rtol=SAME_FIT_RTOL, atol=1e-9)
    np.testing.assert_allclose(one.cross, default.cross, rtol=SAME_FIT_RTOL)
    np.testing.assert_array_equal(one.lo, default.lo)
    np.testing.assert_array_equal(one.hi, default.hi)
    with pytest.raises(ValueError, match="threads must be None or 1"):
        compute_group_stats(X, y, groups, shift, threads=2)


def test_merge_adds_group_sums_as_np_add_at_whether_or_not_levels_repeat():
    from reml_engine.core.statistics import GroupStats, merge_group_stats

    rng = np.random.default_rng(3)

    def part(levels):
        k = len(levels)
        return GroupStats(pd.Index(levels, dtype=object), rng.integers(1, 9, k), rng.normal(size=(k, 2)),
                          np.eye(2), np.zeros(2), None, np.zeros(2), np.ones(2))

    # 5 and "5" are one label (the canonical label rule): the first part repeats a group.
    parts = [part([5, "5", "a"]), part(["a", "b", 5])]
    merged = merge_group_stats(parts)
    assert list(merged.levels) == ["5", "a", "b"]
    expected_counts = np.zeros(3, dtype=np.int64)
    expected_sums = np.zeros((3, 2))
    for p, positions in zip(parts, ([0, 0, 1], [1, 2, 0]), strict=True):
        np.add.at(expected_counts, positions, p.counts)
        np.add.at(expected_sums, positions, p.sums)
    np.testing.assert_array_equal(merged.counts, expected_counts)
    np.testing.assert_array_equal(merged.sums, expected_sums)


@pytest.mark.parametrize("chunks", [
    [[1.5, -2.0, 3.25], [7.0]],  # floats over two chunks
    [[np.nan, 2.0, -1.0], [5.0]],  # NaN first: Arrow skips it, so must the check
    [[4.0, 2.0], [np.nan]],  # NaN in the last chunk
    [[1.0, None, 3.0], [-8.0]],  # a null
    [[], [2.0, 9.0]],  # an empty chunk
    [[np.nan], [np.nan]],  # nothing but NaN
    [[None, None]],  # nothing but nulls
])
def test_footer_range_min_max_equals_arrows(chunks):
    """The footer check's numpy minimum and maximum are Arrow's ``min_max`` (which skips
    NaN and nulls), on floats and on integers of several widths."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from reml_engine.scaleout.dask import _min_max

    for kind in (pa.float64(), pa.float32(), pa.int64(), pa.int32(), pa.uint16()):
        if kind.id != pa.float64().id and kind.id != pa.float32().id:
            if any(isinstance(v, float) and np.isnan(v) for c in chunks for v in c):
                continue  # integers hold no NaN
            data = [[None if v is None else abs(int(v)) for v in c] for c in chunks]
        else:
            data = chunks
        values = pa.chunked_array(data, type=kind)
        ours, arrows = _min_max(values), pc.min_max(values).as_py()
        # nan != nan: compare the reprs (all-NaN gives NaN in both)
        assert repr(ours) == repr(arrows), (kind, chunks)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("x2", np.inf, r"predictor column\(s\) 'x2' have non-finite values \(inf or NaN\) in 1 rows"),
    ("x1", -np.inf, r"predictor column\(s\) 'x1' have non-finite values \(inf or NaN\) in 1 rows"),
    ("y", np.inf, r"response 'y' has 1 non-finite values"),
    ("x2", 1e120, r"predictor column 'x2' has values up to 1e\+120, too large"),  # squares still finite
    ("x2", 1e200, r"predictor column 'x2' has values up to 1e\+200, too large"),  # squares overflow
])
def test_values_checked_after_the_kernel_give_the_in_memory_errors(tmp_path, column, value, message):
    """The chunk's finiteness and magnitude checks, read from the kernel's sums and
    ranges, refuse what the in-memory fit refuses, with its message."""
    frame = FRAME.astype({"x1": float})
    frame.loc[frame.index[400], column] = value
    with pytest.raises(rl.ModelDataError, match=message):
        rl.lmer(NUMERIC_FORMULA, frame)
    with pytest.raises(rl.ModelDataError, match=message):
        rl.lmer(NUMERIC_FORMULA, [frame.iloc[:300], frame.iloc[300:]])
    frame.iloc[:300].to_parquet(tmp_path / "a.parquet")
    frame.iloc[300:].to_parquet(tmp_path / "b.parquet")
    with pytest.raises(rl.ModelDataError, match=message):
        lmer_dask(NUMERIC_FORMULA, str(tmp_path / "*.parquet"), scheduler="threads")


@pytest.mark.parametrize(("missing", "expect_whole_read"), [
    (slice(0, 0), False),  # the first rows hold PILOT_ROWS complete ones: they are the sample
    (slice(100, 2500), True),  # too few complete first rows: the whole first piece is read
])
@pytest.mark.parametrize("formula", [NUMERIC_FORMULA, FACTOR_FORMULA])
def test_parquet_sample_from_the_first_rows_gives_the_whole_reads_fit(tmp_path, monkeypatch, missing,
                                                                      expect_whole_read, formula):
    """The sample read from a file's first rows gives the fit of the sample read from the
    whole first piece (and of the in-memory fit), with or without enough complete rows."""
    from reml_engine.scaleout import dask as dask_source

    frame = _frame(n=6000, n_groups=60)
    frame.loc[frame.index[missing], "y"] = np.nan
    frame.iloc[:4000].to_parquet(tmp_path / "a.parquet", row_group_size=4000)
    frame.iloc[4000:].to_parquet(tmp_path / "b.parquet")
    monkeypatch.setattr(dask_source, "SAMPLE_ROWS", 2500)  # below the first piece's 4000 rows
    samples = []
    first_complete = dask_source.DaskSource.first_complete
    monkeypatch.setattr(dask_source.DaskSource, "first_complete",
                        lambda self, used: samples.append(first_complete(self, used)) or samples[-1])
    fit = _fit(formula, str(tmp_path / "*.parquet"), scheduler="synchronous")
    # The first 2500 rows are the sample, or the whole piece's 1600 complete rows.
    assert len(samples[0][0]) == (1600 if expect_whole_read else 2500)
    monkeypatch.setattr(dask_source.DaskSource, "first_complete", _whole_first_complete)
    whole = _fit(formula, str(tmp_path / "*.parquet"), scheduler="synchronous")
    assert_same_fit(fit, whole)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        assert_same_fit(fit, rl.lmer(formula, frame))


def _whole_first_complete(self, used):
    """DaskSource.first_complete as it was: the whole first partition with complete rows."""
    from reml_engine.scaleout.encoding import drop_incomplete

    frame = self.ddf[list(used)]
    for i in range(frame.npartitions):
        clean = drop_incomplete(frame.get_partition(i).compute(scheduler=self.scheduler), used)[0]
        if len(clean):
            return clean, self.names[i]
    return None


def test_parquet_group_column_text_and_categorical_across_files_fast_equals_general(tmp_path, monkeypatch):
    """The group column as text in one file and as a categorical in another (unified to
    labels), x1 int64 in one file and float64 in another, and a group found only in the
    last file: the numeric path, formulaic on every chunk and the in-memory fit agree."""
    frame = FRAME.assign(g=[f"school {k}" for k in FRAME["g"]])
    frame.loc[frame.index[850:], "g"] = "only in the last file"
    parts = [frame.iloc[:400].copy(), frame.iloc[400:].copy()]
    parts[0] = parts[0].astype({"g": "category"})
    parts[1] = parts[1].astype({"x1": float})
    for i, part in enumerate(parts):
        part.to_parquet(tmp_path / f"part-{i}.parquet")
    path = str(tmp_path / "*.parquet")
    designs = []
    numeric_design = encoding._numeric_design
    monkeypatch.setattr(encoding, "_numeric_design", lambda *args: designs.append(1) or numeric_design(*args))
    fast = _fit(NUMERIC_FORMULA, path, scheduler="threads")
    assert len(designs) == 2  # one numeric design per file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        in_memory = rl.lmer(NUMERIC_FORMULA, frame)
    _general_only(monkeypatch)
    general = _fit(NUMERIC_FORMULA, path, scheduler="threads")
    assert fast.ngroups == in_memory.ngroups == frame["g"].nunique()
    assert "only in the last file" in set(fast.ranef.index)
    assert_same_fit(fast, general)
    assert_same_fit(fast, in_memory)
