"""Chunk-by-chunk fits on one machine: merging, memory bound, arrays, iterators, errors."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, case_formula, load_reference

import reml_engine as rl
from reml_engine.core.statistics import compute_group_stats, merge_group_stats
from reml_engine.frontend.groups import factorize_groups
from reml_engine.scaleout.chunked import fit_arrays, lmer_chunks, tree_merge

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
    assert "900 of 900 rows (100%) in 3 chunks" in capsys.readouterr().err  # the total is known: a list


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


# -- labels whose type changes from chunk to chunk (issue 10, items 3, 7, 8) -------------

UNBALANCED = case_data("sim_unbalanced")
UNBALANCED_FORMULA = case_formula("sim_unbalanced")
UNBALANCED_LME4 = load_reference()["sim_unbalanced"]["reml"]
#: lme4's criterion is stored to about 1e-8.
LME4_CRITERION_ATOL = 1e-6


def _assert_same_fit(fit: rl.LmerFit, reference: rl.LmerFit) -> None:
    """The input-form relation: criterion to 1e-9 relative, fixed effects to 1e-8."""
    assert fit.nobs == reference.nobs and fit.ngroups == reference.ngroups
    assert fit.criterion == pytest.approx(reference.criterion, rel=1e-9)
    assert list(fit.fixef.index) == list(reference.fixef.index)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=1e-8, atol=1e-8 * reference.se.min())


def _csv_with_numeric_ids_then_text(tmp_path):
    """sim_unbalanced as a CSV whose group ids are digits ("30") except one group ("G40"),
    whose rows all come last: read_csv(chunksize=) gives int64 ids in the first chunks
    and text ids (numbers among them) in the last, while one read gives text throughout."""
    data = UNBALANCED.assign(g=UNBALANCED["g"].str.slice(1).astype(int).astype(str))
    last = data["g"] == data["g"].iloc[0]
    data.loc[last, "g"] = "G" + data.loc[last, "g"]
    data = pd.concat([data[~last], data[last]])
    path = tmp_path / "unbalanced.csv"
    data.to_csv(path, index=False)
    return path


def test_csv_chunks_whose_ids_change_type_give_the_whole_read_fit(tmp_path):
    path = _csv_with_numeric_ids_then_text(tmp_path)
    chunk_types = [str(c["g"].dtype) for c in pd.read_csv(path, chunksize=100)]
    assert chunk_types[0] == "int64" and chunk_types[-1] != "int64"  # the data exercise the case
    whole = pd.read_csv(path)
    reference = rl.lmer(UNBALANCED_FORMULA, whole)
    assert reference.criterion == pytest.approx(UNBALANCED_LME4["criterion"], abs=LME4_CRITERION_ATOL)
    fit = rl.lmer(UNBALANCED_FORMULA, lambda: pd.read_csv(path, chunksize=100))
    _assert_same_fit(fit, reference)
    assert list(fit.ranef.index) == list(reference.ranef.index)  # the labels as the whole read gives them
    one_shot = lmer_chunks(UNBALANCED_FORMULA, pd.read_csv(path, chunksize=100), levels={"cat": ["a", "b", "c"]})
    _assert_same_fit(one_shot, reference)


def test_ids_read_as_floats_in_a_chunk_with_a_missing_id_are_the_integers():
    data = UNBALANCED.assign(g=UNBALANCED["g"].str.slice(1).astype(int))
    second = data.iloc[300:].astype({"g": float})
    second.iloc[0, second.columns.get_loc("g")] = np.nan
    chunks = [data.iloc[:300], second]
    with pytest.warns(rl.ModelDataWarning, match="dropped 1 of 553"):
        fit = lmer_chunks(UNBALANCED_FORMULA, chunks)
        reference = rl.lmer(UNBALANCED_FORMULA, pd.concat(chunks))
    _assert_same_fit(fit, reference)
    assert fit.ranef.index.dtype == np.int64


def test_factor_read_as_text_then_numbers_matches_the_whole_read(tmp_path):
    # cat is "1", "2", "3" except on a few rows "x"; put those first so that the sample
    # chunk is text (a factor) and later chunks read digits as int64.
    data = UNBALANCED.assign(cat=UNBALANCED["cat"].map({"a": "1", "b": "2", "c": "3"}))
    data.loc[data.index[:8], "cat"] = "x"
    path = tmp_path / "factor.csv"
    data.to_csv(path, index=False)
    assert [str(c["cat"].dtype) for c in pd.read_csv(path, chunksize=200)][1] == "int64"
    reference = rl.lmer(UNBALANCED_FORMULA, pd.read_csv(path))
    fit = lmer_chunks(UNBALANCED_FORMULA, lambda: pd.read_csv(path, chunksize=200))
    _assert_same_fit(fit, reference)


def test_factor_read_as_numbers_then_text_is_refused_naming_the_chunks(tmp_path):
    data = UNBALANCED.assign(cat=UNBALANCED["cat"].map({"a": "1", "b": "2", "c": "3"}))
    data.loc[data.index[-1], "cat"] = "x"
    path = tmp_path / "factor.csv"
    data.to_csv(path, index=False)
    with pytest.raises(rl.ModelDataError, match=r"chunk 3 \(rows 401-553\): column 'cat' enters the formula as "
                                                r"numbers \(as read in chunk 1 \(rows 1-200\)\) but holds text"):
        lmer_chunks(UNBALANCED_FORMULA, lambda: pd.read_csv(path, chunksize=200))


def test_numbers_next_to_text_spelling_numbers_otherwise_are_refused():
    data = UNBALANCED.assign(g=UNBALANCED["g"].str.slice(1).astype(int))
    text = data.iloc[300:].astype({"g": object})
    text.loc[text.index[0], "g"] = "0" + str(text["g"].iloc[0])  # "030": the number 30 as written in a file?
    with pytest.raises(rl.ModelDataError, match=r"column 'g' holds numbers in chunk 1 \(rows 1-300\).*"
                                                r"numbers written as text in chunk 2 \(rows 301-553\) \(e.g. '0\d+'\)"):
        lmer_chunks(UNBALANCED_FORMULA, [data.iloc[:300], text])


def test_uint64_ids_above_2_63_in_chunks():
    ids = UNBALANCED["g"].str.slice(1).astype(np.uint64) + np.uint64(2**63)
    data = UNBALANCED.assign(g=ids.to_numpy())
    fit = lmer_chunks(UNBALANCED_FORMULA, _chunks(data, 97))
    assert fit.criterion == pytest.approx(UNBALANCED_LME4["criterion"], abs=LME4_CRITERION_ATOL)
    assert fit.ranef.index.dtype == np.uint64 and int(fit.ranef.index.min()) >= 2**63
    _assert_same_fit(fit, rl.lmer(UNBALANCED_FORMULA, data))


def test_interaction_grouping_in_chunks_keeps_pairs_apart():
    rng = np.random.default_rng(5)
    n = 400
    a = rng.choice(np.array(["x:y", "x"], dtype=object), n)
    b = np.where(rng.random(n) < 0.5, np.where(a == "x", "y:z", "z"), "w")
    x = rng.normal(size=n)
    codes = pd.DataFrame({"a": a, "b": b}).groupby(["a", "b"]).ngroup().to_numpy()
    data = pd.DataFrame({"y": x + 2 * rng.normal(size=4)[codes] + rng.normal(size=n), "x": x, "a": a, "b": b})
    fit = lmer_chunks("y ~ x + (1|a:b)", _chunks(data, 150))
    assert fit.ngroups == 4
    _assert_same_fit(fit, rl.lmer("y ~ x + (1|k)", data.assign(k=codes)))


def test_memory_mapped_records_with_text_ids(tmp_path):
    data = UNBALANCED[["y", "x1", "x2", "cat", "g"]]
    records = data.to_records(index=False, column_dtypes={"cat": "U1", "g": "U5"})
    path = tmp_path / "rows.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=records.dtype, shape=records.shape)
    array[:] = records
    array.flush()
    fit = lmer_chunks(UNBALANCED_FORMULA, np.load(path, mmap_mode="r"), chunk_rows=100)
    assert fit.criterion == pytest.approx(UNBALANCED_LME4["criterion"], abs=LME4_CRITERION_ATOL)
    _assert_same_fit(fit, rl.lmer(UNBALANCED_FORMULA, UNBALANCED))


@pytest.mark.parametrize("form", ["list", "iterator", "function"])
def test_chunk_forms_match_in_memory(form):
    chunks = _chunks(UNBALANCED, 61)
    source = {"list": chunks, "iterator": iter(chunks), "function": lambda: iter(chunks)}[form]
    levels = {"cat": ["a", "b", "c"]} if form == "iterator" else None
    fit = lmer_chunks(UNBALANCED_FORMULA, source, levels=levels)
    _assert_same_fit(fit, rl.lmer(UNBALANCED_FORMULA, UNBALANCED))


# -- errors that name the chunk ----------------------------------------------------------


def test_a_chunk_whose_factor_is_all_missing_adds_nothing_but_its_count():
    """A chunk whose only row has no level (the levels pass coded no label at all and
    crashed with an IndexError) is dropped as in memory."""
    data = UNBALANCED.astype({"cat": object})
    data.loc[data.index[300], "cat"] = None
    chunks = [data.iloc[:300], data.iloc[300:301], data.iloc[301:]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        _assert_same_fit(lmer_chunks(UNBALANCED_FORMULA, chunks), rl.lmer(UNBALANCED_FORMULA, data))


def test_a_chunk_without_a_used_column_is_named():
    chunks = [UNBALANCED.iloc[:200], UNBALANCED.iloc[200:400].drop(columns="cat"), UNBALANCED.iloc[400:]]
    with pytest.raises(rl.ModelDataError, match=r"chunk 2 \(rows 201-400\) has no column\(s\) 'cat'.*"
                                                r"its columns: y, x1, x2, g"):
        lmer_chunks(UNBALANCED_FORMULA, chunks)


def test_empty_chunks_add_nothing():
    empty = [pd.DataFrame(), UNBALANCED.iloc[:0], UNBALANCED.iloc[:0][["y"]]]
    chunks = [empty[0], UNBALANCED.iloc[:250], empty[1], empty[2], UNBALANCED.iloc[250:]]
    _assert_same_fit(lmer_chunks(UNBALANCED_FORMULA, chunks), rl.lmer(UNBALANCED_FORMULA, UNBALANCED))
    with pytest.raises(rl.ModelDataError, match="the chunks hold no rows"):
        lmer_chunks(UNBALANCED_FORMULA, empty)


def test_infinite_values_in_a_chunk_are_named_with_the_chunk():
    data = UNBALANCED.copy()
    data.loc[data.index[420], "x2"] = np.inf
    with pytest.raises(rl.ModelDataError, match=r"chunk 3 \(rows 401-553\): predictor column\(s\) 'x2'"):
        lmer_chunks(UNBALANCED_FORMULA, _chunks(data, 200))


def test_fit_arrays_says_missing_for_nan_and_counts():
    X = np.column_stack([np.ones(len(UNBALANCED)), UNBALANCED["x1"]])
    y = UNBALANCED["y"].to_numpy().copy()
    y[[3, 9]] = np.nan
    y[20] = np.inf
    with pytest.raises(rl.ModelDataError, match=r"y has 2 missing \(NaN\) and 1 infinite value\(s\) in rows 1-100, "
                                                r"the first at row 4"):
        fit_arrays(X, y, UNBALANCED["g"].to_numpy(), chunk_rows=100)
    X[150, 1] = np.nan
    with pytest.raises(rl.ModelDataError, match=r"column 'x1' of X has 1 missing \(NaN\) value\(s\) in rows 101-200"):
        fit_arrays(X, UNBALANCED["y"].to_numpy(), UNBALANCED["g"].to_numpy(), names=["(Intercept)", "x1"],
                   chunk_rows=100)


def test_fit_arrays_takes_lists_as_arrays():
    X = np.column_stack([np.ones(len(UNBALANCED)), UNBALANCED["x1"]])
    y, g = UNBALANCED["y"], UNBALANCED["g"]
    reference = rl.fit(X, y.to_numpy(), g.to_numpy(), names=["(Intercept)", "x1"])
    fit = fit_arrays(X.tolist(), y.tolist(), g.tolist(), names=["(Intercept)", "x1"], chunk_rows=100)
    _assert_same_fit(fit, reference)
    with pytest.raises(rl.ModelDataError, match="X must be an array"):
        fit_arrays([["a", "b"]] * 3, [1.0, 2.0, 3.0], [1, 2, 3])


@pytest.mark.parametrize("path", ["compiled", "numpy"])
def test_one_pass_statistics_whose_criterion_is_not_finite_near_the_limit_still_fit(path, monkeypatch):
    """x ~ 1e6 with its interaction, read once in chunks of 11 rows (31 rows generated by
    the metamorphic suite, ``tests/data/one_pass_nan.csv``): the statistics lose 12 digits,
    and next to the positive-definite limit the compound-symmetry criterion is rounding
    noise. On numpy's path it is NaN inside the bracket of its minimum there: the
    refinement raised (brentq: "function value is NaN"); now the fit reports the lowest
    point found. On either path (the compiled criterion of small designs, or numpy's) the
    fit agrees with the in-memory fit to the 4 digits it says it keeps."""
    from reml_engine.core import criterion

    if path == "numpy":
        monkeypatch.setattr(criterion, "COMPILED_CRITERION_MAX_Q", 0)
    from reference_data import DATA

    path = DATA / "one_pass_nan.csv"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", rl.ModelDataWarning)
        fit = lmer_chunks("y ~ x * f + (1|g)", pd.read_csv(path, chunksize=11))
    assert any("may keep only about 4 digits" in str(w.message) for w in record)
    if path == "numpy":
        assert any("could not be refined" in note for note in fit.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        expected = rl.lmer("y ~ x * f + (1|g)", pd.read_csv(path))
    assert list(fit.fixef.index) == list(expected.fixef.index)
    assert fit.criterion == pytest.approx(expected.criterion, rel=1e-4)
    np.testing.assert_allclose(fit.fixef, expected.fixef, rtol=1e-3, atol=1e-3 * expected.se.min())
