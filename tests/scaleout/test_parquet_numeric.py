"""The Parquet fast path (numeric formulas, Arrow buffers into the kernel) gives the
general path's fit, and the in-memory fit of the same rows.

The general path (Dask partitions, pandas frames, formulaic's encoding) is run on the
same pieces of the same files: every estimate must be equal to the last bit, since the
kernel sees the same rows in the same order and the pieces are added in the same tree.
The in-memory ``rl.lmer`` on the concatenated rows (itself tested against lme4) agrees
to ``SAME_FIT_RTOL``, as every chunked fit does. What the fast path does not take goes
through the general path, with the same answer.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import reml_engine as rl

dask = pytest.importorskip("dask")

from reml_engine.scaleout import dask as dask_module  # noqa: E402
from reml_engine.scaleout import parquet_numeric  # noqa: E402
from reml_engine.scaleout.chunked import MERGE_FANOUT, fit_source  # noqa: E402
from reml_engine.scaleout.dask import lmer_dask, parquet_plan, parquet_source  # noqa: E402
from reml_engine.scaleout.parquet_numeric import _DaskTree, fit_numeric, numeric_plan  # noqa: E402

#: Agreement with the in-memory fit: only the order of the floating-point sums differs.
SAME_FIT_RTOL = 1e-10

FORMULA = "y ~ x1 + x2 + (1|g)"


def _frame(n: int = 3000, n_groups: int = 60, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    x1 = rng.normal(size=n)
    x2 = rng.integers(0, 20, n)  # an integer column of the fixed part
    b = rng.normal(scale=0.7, size=n_groups)
    y = 2.0 + 0.5 * x1 - 0.2 * x2 + b[g] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": g, "unused": rng.normal(size=n)})


def _write(folder, parts: list[pd.DataFrame], row_groups: list[int], types: dict | None = None) -> str:
    """Each part to its own file with its own row-group size (Arrow types from ``types``)."""
    for i, (part, size) in enumerate(zip(parts, row_groups, strict=True)):
        table = pa.Table.from_pandas(part, preserve_index=False)
        if types:
            table = table.cast(pa.schema([pa.field(c, types.get(c, table.schema.field(c).type))
                                          for c in table.column_names]))
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=size)
    return str(folder / "*.parquet")


def _with_missing(df: pd.DataFrame) -> pd.DataFrame:
    """NaN in a float column, nulls in the integer columns (Arrow keeps them integers)."""
    df = df.copy()
    df["x2"] = df["x2"].astype("Int64")
    df["g"] = df["g"].astype("Int64")
    df.loc[df.index[5:9], "x1"] = np.nan
    df.loc[df.index[100:103], "x2"] = pd.NA
    df.loc[df.index[700:702], "g"] = pd.NA
    df.loc[df.index[1500], "y"] = np.nan
    return df


def _fit(fitter, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fitter(*args, **kwargs)
    return fit, [str(w.message) for w in caught if issubclass(w.category, rl.ModelDataWarning)]


def _both_paths(path: str, rows_per_piece: int, na_action: str = "omit", formula: str = FORMULA):
    """The fast path's and the general path's fits of the same pieces of the same files."""
    plan = parquet_plan(formula, path, rows_per_piece)
    numeric = numeric_plan(plan, plan.columns)
    assert numeric is not None
    fast = _fit(fit_numeric, formula, plan.columns, numeric, na_action=na_action, progress=False)
    source = parquet_source(formula, path, progress=False, scheduler="threads", plan=plan)
    general = _fit(fit_source, formula, source, na_action=na_action)
    return fast, general, numeric


def assert_identical(fit, reference) -> None:
    """Every estimate equal to the last bit."""
    assert fit.nobs == reference.nobs and fit.ngroups == reference.ngroups
    for name in ("criterion", "tau", "sigma2", "var_group"):
        assert getattr(fit, name) == getattr(reference, name), name
    pd.testing.assert_series_equal(fit.fixef, reference.fixef, check_exact=True)
    pd.testing.assert_frame_equal(fit.vcov, reference.vcov, check_exact=True)
    # Dask reads text as Arrow strings (missing value pd.NA), the fast path as pandas does
    # without Dask (NaN): the labels are the same, their Index dtype is not.
    pd.testing.assert_frame_equal(fit.ranef, reference.ranef, check_exact=True, check_index_type=False)


def assert_same_fit(fit, reference) -> None:
    """Every estimate and the random effects, to SAME_FIT_RTOL (labels as text)."""
    assert list(fit.fixef.index) == list(reference.fixef.index)
    assert fit.nobs == reference.nobs and fit.ngroups == reference.ngroups
    for name in ("criterion", "tau", "sigma2", "var_group"):
        assert getattr(fit, name) == pytest.approx(getattr(reference, name), rel=SAME_FIT_RTOL), name
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=SAME_FIT_RTOL, atol=SAME_FIT_RTOL * reference.se.min())
    ranef = fit.ranef.set_axis(fit.ranef.index.map(str), axis=0)
    expected = reference.ranef.set_axis(reference.ranef.index.map(str), axis=0)
    assert sorted(ranef.index) == sorted(expected.index)
    np.testing.assert_allclose(ranef.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=SAME_FIT_RTOL,
                               atol=SAME_FIT_RTOL * np.abs(expected.to_numpy()).max())


# -- the same fit as the general path and as in memory ------------------------------------


@pytest.mark.parametrize("rows_per_piece", [250, 700, 10_000])
def test_integer_ids_with_missing_values_in_files_of_different_row_groups(tmp_path, rows_per_piece):
    df = _with_missing(_frame())
    parts = [df.iloc[:900], df.iloc[900:1000], df.iloc[1000:2400], df.iloc[2400:]]
    path = _write(tmp_path, parts, [128, 1000, 333, 50])
    (fast, fast_warned), (general, general_warned), numeric = _both_paths(path, rows_per_piece)
    assert numeric.dense is not None  # the ids share one table
    assert_identical(fast, general)
    assert fast_warned == general_warned
    memory, memory_warned = _fit(rl.lmer, FORMULA, df)
    assert_same_fit(fast, memory)
    # The rows dropped, counted per column, as lme4 (and the in-memory fit) reports them
    # (the columns in the order the pieces met them).
    [expected] = [w for w in memory_warned if "missing" in w]
    assert _dropped(fast_warned[0]) == _dropped(expected) == (10, 3000, {"x1": 4, "x2": 3, "g": 2, "y": 1})


def _dropped(message: str) -> tuple[int, int, dict]:
    found = re.fullmatch(r"dropped (\d+) of (\d+) rows with missing values \((.*)\)", message)
    counts = dict((name.strip("'"), int(count)) for name, count in (item.split(": ") for item in found[3].split(", ")))
    return int(found[1]), int(found[2]), counts


def test_text_labels(tmp_path):
    df = _frame(seed=8).assign(g=lambda d: "s" + d["g"].astype(str))
    df.loc[df.index[40:44], "x1"] = np.nan
    path = _write(tmp_path, [df.iloc[:1700], df.iloc[1700:]], [400, 1000])
    (fast, _), (general, _), numeric = _both_paths(path, 900)
    assert numeric.dense is None
    assert_identical(fast, general)
    assert_same_fit(fast, _fit(rl.lmer, FORMULA, df)[0])


def test_sparse_integer_ids_are_coded_per_piece(tmp_path):
    # Ids far apart (no shared table): each piece is coded by the canonical label rule.
    df = _frame(seed=9).assign(g=lambda d: d["g"] * 10**12 + 3)
    path = _write(tmp_path, [df.iloc[:1000], df.iloc[1000:]], [300, 2000])
    (fast, _), (general, _), numeric = _both_paths(path, 500)
    assert numeric.dense is None
    assert_identical(fast, general)
    assert_same_fit(fast, _fit(rl.lmer, FORMULA, df)[0])


def test_narrow_integer_types_and_an_empty_piece(tmp_path):
    df = _frame(seed=10)
    parts = [df.iloc[:1200], df.iloc[:0], df.iloc[1200:]]
    path = _write(tmp_path, parts, [500, 10, 700], types={"g": pa.int16(), "x2": pa.uint8(), "x1": pa.float32()})
    (fast, _), (general, _), _ = _both_paths(path, 600)
    assert_identical(fast, general)
    expected = df.astype({"x1": np.float32, "x2": np.uint8, "g": np.int16})
    assert_same_fit(fast, _fit(rl.lmer, FORMULA, expected)[0])


def test_first_piece_without_complete_rows(tmp_path):
    # The sample (and the shift) comes from the first piece that has complete rows.
    df = _frame(seed=11)
    df.loc[df.index[:600], "y"] = np.nan
    path = _write(tmp_path, [df.iloc[:600], df.iloc[600:]], [600, 500])
    (fast, fast_warned), (general, general_warned), _ = _both_paths(path, 600)
    assert_identical(fast, general)
    assert fast_warned == general_warned


@pytest.mark.parametrize("formula", ["y ~ 0 + x1 + x2 + (1|g)", "y ~ 1 + (1|g)", "y ~ x2 + x1 + (1|g)",
                                     "y ~ x2 - 1 + (1|g)"])
def test_formulas_with_and_without_an_intercept(tmp_path, formula):
    df = _with_missing(_frame(seed=22))
    path = _write(tmp_path, [df.iloc[:1300], df.iloc[1300:]], [300, 900])
    (fast, fast_warned), (general, general_warned), _ = _both_paths(path, 600, formula=formula)
    assert_identical(fast, general)
    assert fast_warned == general_warned
    assert_same_fit(fast, _fit(rl.lmer, formula, df)[0])


def test_lmer_takes_the_fast_path_for_a_numeric_formula(tmp_path, monkeypatch):
    df = _frame(seed=12)
    path = _write(tmp_path, [df.iloc[:1500], df.iloc[1500:]], [700, 700])

    def no_dask(*args, **kwargs):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(dask_module, "parquet_source", no_dask)
    fast = rl.lmer(FORMULA, data=path)
    assert_same_fit(fast, rl.lmer(FORMULA, df))
    # predict and simulate read new rows with the encoding the fit keeps.
    np.testing.assert_allclose(fast.predict(df.iloc[:5]), rl.lmer(FORMULA, df).predict(df.iloc[:5]),
                               rtol=1e-9)


# -- what the fast path leaves to the general path --------------------------------------


@pytest.mark.parametrize("formula", ["y ~ x1 * x2 + (1|g)", "y ~ np.log(x2 + 1) + (1|g)", "y ~ c + x1 + (1|g)",
                                     "y ~ x1 + (1|g) + (1|c)", "y ~ x1 + (1|g:c)"])
def test_other_formulas_go_through_the_general_path(tmp_path, formula):
    df = _frame(seed=13).assign(c=lambda d: np.where(d["x1"] > 0, "u", "v"))
    path = _write(tmp_path, [df.iloc[:1500], df.iloc[1500:]], [700, 700])
    plan = parquet_plan(formula, path)
    assert numeric_plan(plan, plan.columns) is None
    fit = rl.lmer(formula, data=path)
    reference = rl.lmer(formula, df)
    assert fit.criterion == pytest.approx(reference.criterion, rel=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=1e-8, atol=1e-10)


def test_a_group_that_is_an_int_in_one_file_and_text_in_another_is_one_group(tmp_path):
    # Types differ between files: the general path unifies them by the canonical label
    # rule (5 and "5" are one group), as reading the whole column as text would.
    df = _frame(seed=14)
    first, second = df.iloc[:1500], df.iloc[1500:].astype({"g": str})
    path = _write(tmp_path, [first, second], [700, 700])
    plan = parquet_plan(FORMULA, path)
    assert numeric_plan(plan, plan.columns) is None
    fit = rl.lmer(FORMULA, data=path)
    assert fit.ngroups == df["g"].nunique()
    assert_same_fit(fit, rl.lmer(FORMULA, df.astype({"g": str})))


def test_categorical_group_column_goes_through_the_general_path(tmp_path):
    df = _frame(seed=15).assign(g=lambda d: pd.Categorical("s" + d["g"].astype(str)))
    path = _write(tmp_path, [df.iloc[:1500], df.iloc[1500:]], [700, 700])
    plan = parquet_plan(FORMULA, path)
    assert numeric_plan(plan, plan.columns) is None


@pytest.mark.parametrize("options", [{"scheduler": "synchronous"}, {"progress": True}])
def test_a_scheduler_or_progress_bar_asked_for_gets_dask(tmp_path, monkeypatch, options):
    df = _frame(seed=16)
    path = _write(tmp_path, [df], [1000])

    def no_fast_path(*args, **kwargs):
        raise AssertionError("the fast path was taken")

    monkeypatch.setattr(dask_module, "fit_numeric", no_fast_path)
    fit, _ = _fit(lmer_dask, FORMULA, path, **options)
    assert_same_fit(fit, rl.lmer(FORMULA, df))


# -- checks, in the general path's words ------------------------------------------------


def test_missing_values_refused_with_na_action_raise_name_the_file(tmp_path):
    df = _with_missing(_frame(seed=17))
    path = _write(tmp_path, [df.iloc[:1000], df.iloc[1000:]], [1000, 1000])
    with pytest.raises(rl.ModelDataError, match=r"file '.*part-0.parquet': missing values in 9 rows "
                                                r"\('g': 2, 'x1': 4, 'x2': 3\)"):
        rl.lmer(FORMULA, data=path, na_action="raise")


def test_an_infinite_value_is_named_with_its_file(tmp_path):
    df = _frame(seed=18)
    df.loc[df.index[1700], "x1"] = np.inf
    path = _write(tmp_path, [df.iloc[:1500], df.iloc[1500:]], [700, 700])
    with pytest.raises(rl.ModelDataError, match=r"file '.*part-1.parquet'.*predictor column\(s\) 'x1'"):
        rl.lmer(FORMULA, data=path)
    plan = parquet_plan(FORMULA, path)
    source = parquet_source(FORMULA, path, progress=False, scheduler="threads", plan=plan)
    with pytest.raises(rl.ModelDataError, match=r"file '.*part-1.parquet'.*predictor column\(s\) 'x1'"):
        fit_source(FORMULA, source)


def test_no_complete_row(tmp_path):
    df = _frame(seed=19).assign(y=np.nan)
    path = _write(tmp_path, [df], [1000])
    with pytest.raises(rl.ModelDataError, match=r"no complete observations in the variables"):
        rl.lmer(FORMULA, data=path)


def test_progress_callable_hears_once_per_pass(tmp_path):
    df = _frame(seed=20)
    path = _write(tmp_path, [df.iloc[:1000], df.iloc[1000:]], [1000, 1000])
    heard = []
    rl.lmer(FORMULA, data=path, progress=lambda rows, pieces: heard.append((rows, pieces)))
    assert heard == [(3000, 2)]


# -- the merge tree is Dask's ------------------------------------------------------------


def _dask_rounds(results: list):
    """The tree of :meth:`DaskSource.map_reduce`: rounds of MERGE_FANOUT consecutive results."""
    while len(results) > 1:
        results = [tuple(results[i:i + MERGE_FANOUT]) for i in range(0, len(results), MERGE_FANOUT)]
    return results[0]


@pytest.mark.parametrize("count", [1, 2, 7, 8, 9, 17, 64, 65, 70, 513])
def test_the_merge_tree_is_dasks(count):
    tree = _DaskTree(tuple)
    for i in range(count):
        tree.add(i)
    expected = _dask_rounds(list(range(count)))
    assert tree.result() == expected


def test_read_threads_is_a_positive_count():
    assert parquet_numeric.READ_THREADS >= 1


@pytest.mark.parametrize(("column", "value", "shown"), [("x1", 3e293, "3e+293"), ("x1", 1e4, "10000"),
                                                         ("g", 10**6, "1e+06"), ("x2", 555, "555")])
def test_corrupted_values_are_caught_by_the_footer_ranges(tmp_path, column, value, shown):
    """A value overwritten inside a data page: huge (the kernel's sums overflow), or
    finite (the check reads the kernel's ranges), in a float, an id or an integer column."""
    df = _frame(n=400, seed=21)
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, compression="none", use_dictionary=False)
    raw = bytearray(path.read_bytes())
    values = df[column].to_numpy()
    start = bytes(raw).index(values[100:102].tobytes())  # plain-encoded values of the column
    raw[start:start + 8] = np.array([value], dtype=values.dtype).tobytes()
    path.write_bytes(bytes(raw))
    assert pd.read_parquet(path)[column].max() == value  # pyarrow reads the damage silently
    message = rf"file '.*a.parquet': column '{column}' holds values from .* to {re.escape(shown)}, outside the range"
    plan = parquet_plan(FORMULA, str(path))
    assert numeric_plan(plan, plan.columns) is not None
    with pytest.raises(rl.ModelDataError, match=message):
        rl.lmer(FORMULA, data=str(path))
    source = parquet_source(FORMULA, str(path), progress=False, scheduler="threads", plan=plan)
    with pytest.raises(rl.ModelDataError, match=message):
        fit_source(FORMULA, source)


def test_na_action_is_validated(tmp_path):
    path = _write(tmp_path, [_frame(seed=23)], [1000])
    with pytest.raises(ValueError, match="na_action must be 'omit' or 'raise', got 'drop'"):
        lmer_dask(FORMULA, path, na_action="drop")
