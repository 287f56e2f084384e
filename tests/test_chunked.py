"""Chunk-by-chunk fits on one machine: merging, memory bound, arrays, iterators, errors."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.chunk_encoding import merge_group_stats
from reml_engine.chunked import fit_arrays, lmer_chunks, tree_merge
from reml_engine.groups import factorize_groups
from reml_engine.stats import compute_group_stats

#: Chunked and in-memory fits differ only in the order of floating-point sums.
SAME_FIT_RTOL = 1e-10


def _frame(n: int = 900, n_groups: int = 30, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    x = rng.normal(size=n)
    b = rng.normal(size=n_groups)
    return pd.DataFrame({"y": 3.0 + 0.7 * x + b[g] + rng.normal(size=n), "x": x, "g": g})


def _chunks(df: pd.DataFrame, rows: int) -> list[pd.DataFrame]:
    return [df.iloc[i:i + rows] for i in range(0, len(df), rows)]


def test_merged_statistics_equal_those_of_all_rows():
    rng = np.random.default_rng(3)
    n, q = 500, 3
    X = rng.normal(size=(n, q - 1)) + 5.0
    y = rng.normal(size=n)
    labels = rng.choice(np.array(["u", "v", "w", "z"], dtype=object), n)
    shift = np.array([5.0, 5.0, 0.0])
    whole = compute_group_stats(X, y, factorize_groups(labels), shift, exact_within=False)
    cuts = [0, 90, 91, 300, n]
    parts = [compute_group_stats(X[a:b], y[a:b], factorize_groups(labels[a:b]), shift, exact_within=False)
             for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    merged = merge_group_stats(parts)
    assert list(merged.levels) == list(whole.levels)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.cross, whole.cross, rtol=1e-12)


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 64, 100])
def test_tree_merge_combines_every_item_once(count):
    merges = []

    def merge_all(items):
        merges.append(len(items))
        return sum(items)

    assert tree_merge(iter(range(1, count + 1)), merge_all, fanout=4) == count * (count + 1) // 2
    assert all(m <= 4 or m == len(merges) for m in merges[:-1])


@pytest.mark.parametrize("REML", [True, False])
def test_chunk_list_matches_in_memory_fit(REML):
    df = _frame()
    reference = rl.lmer("y ~ x + (1|g)", df, REML=REML)
    fit = lmer_chunks("y ~ x + (1|g)", _chunks(df, 128), REML=REML)
    assert fit.criterion == pytest.approx(reference.criterion, rel=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.se, reference.se, rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.ranef.loc[reference.ranef.index], reference.ranef, rtol=1e-9, atol=1e-12)


def test_memory_mapped_record_array(tmp_path):
    df = _frame()
    records = df.to_records(index=False)
    path = tmp_path / "rows.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=records.dtype, shape=records.shape)
    array[:] = records
    array.flush()
    mapped = np.load(path, mmap_mode="r")
    fit = rl.lmer("y ~ x + (1|g)", mapped)
    reference = rl.lmer("y ~ x + (1|g)", df)
    assert fit.criterion == pytest.approx(reference.criterion, rel=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=SAME_FIT_RTOL)


def test_fit_arrays_matches_fit_and_stays_within_a_chunk_of_memory(tmp_path):
    rng = np.random.default_rng(11)
    n, chunk_rows = 400_000, 5_000
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64, shape=(n, 3))
    X[:, 0] = 1.0
    X[:, 1:] = rng.normal(size=(n, 2)) + 100.0
    groups = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.int64, shape=(n,))
    # Equal group sizes keep the optimizer's own memory (per distinct size) negligible.
    groups[:] = rng.permutation(np.arange(n) % 500)
    y = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.float64, shape=(n,))
    y[:] = X[:, 1] * 0.2 + rng.normal(size=500)[groups] + rng.normal(size=n)
    for array in (X, groups, y):
        array.flush()
    X, groups, y = (np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in ("X", "g", "y"))
    data_bytes = X.nbytes + y.nbytes + groups.nbytes
    # Compile (or load from cache) every kernel first: numba's compiler allocates far more
    # than the fit, and a fresh machine has no cache.
    fit_arrays(X[:20_000], y[:20_000], groups[:20_000], names=["(Intercept)", "a", "b"], chunk_rows=chunk_rows)
    tracemalloc.start()
    fit = fit_arrays(X, y, groups, names=["(Intercept)", "a", "b"], chunk_rows=chunk_rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Only a chunk (and per-group sums) is ever in memory: far below the data's size.
    assert peak < 0.1 * data_bytes
    reference = rl.fit(np.asarray(X), np.asarray(y), np.asarray(groups), names=["(Intercept)", "a", "b"])
    assert fit.criterion == pytest.approx(reference.criterion, rel=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=1e-9)
    assert fit.fitted is None


def test_progress_callback_sees_every_row():
    df = _frame()
    seen = []
    lmer_chunks("y ~ x + (1|g)", _chunks(df, 100), progress=lambda rows, chunks: seen.append((rows, chunks)))
    assert seen[-1] == (len(df), 9)


def test_progress_line_on_request(capsys):
    lmer_chunks("y ~ x + (1|g)", _chunks(_frame(), 300), progress=True)
    assert "rows in 3 chunks" in capsys.readouterr().err


def test_one_shot_iterator_needs_levels_for_text_columns():
    df = _frame().assign(c=lambda d: np.where(d.x > 0, "hi", "lo"))
    with pytest.raises(rl.ModelDataError, match=r"'c' need their levels.*levels=\{column"):
        lmer_chunks("y ~ x + c + (1|g)", iter(_chunks(df, 100)))


def test_unknown_level_in_a_later_chunk_is_named():
    df = _frame().assign(c="lo")
    df.loc[df.index[-1], "c"] = "new"
    with pytest.raises(rl.ModelDataError, match=r"column 'c' has 1 values outside its 1 known levels \(e.g. 'new'\)"):
        lmer_chunks("y ~ x + c + (1|g)", iter(_chunks(df, 100)), levels={"c": ["lo"]})


def test_stateful_transform_is_refused_with_the_reason():
    with pytest.raises(rl.ModelDataError, match="learn from the data"):
        lmer_chunks("y ~ center(x) + (1|g)", _chunks(_frame(), 300))


def test_constant_response_and_all_missing_are_named():
    df = _frame().assign(y=2.5)
    with pytest.raises(rl.ModelDataError, match="response 'y' is constant"):
        lmer_chunks("y ~ x + (1|g)", _chunks(df, 300))
    df = _frame().assign(x=np.nan)
    with pytest.raises(rl.ModelDataError, match="no complete observations"):
        lmer_chunks("y ~ x + (1|g)", _chunks(df, 300))


def test_missing_rows_are_counted_over_all_chunks():
    df = _frame()
    df.loc[df.index[[5, 400, 899]], "x"] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lmer_chunks("y ~ x + (1|g)", _chunks(df, 100))
    messages = [str(w.message) for w in caught if issubclass(w.category, rl.ModelDataWarning)]
    assert messages == ["dropped 3 of 900 rows with missing values ('x': 3)"]


def test_data_of_another_kind_is_refused():
    with pytest.raises(rl.ModelDataError, match="a chunk must be a pandas DataFrame"):
        rl.lmer("y ~ x + (1|g)", [{"y": 1.0}])
    with pytest.raises(rl.ModelDataError, match="must be structured"):
        rl.lmer("y ~ x + (1|g)", np.zeros((10, 3)))
    with pytest.raises(rl.ModelDataError, match="data must be"):
        rl.lmer("y ~ x + (1|g)", None)
