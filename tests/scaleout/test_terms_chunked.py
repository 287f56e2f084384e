"""Chunked, Dask and Parquet fits of several random terms, weights and offsets (issue 12).

The same data are fitted in memory by ``rl.lmer`` (itself checked against lme4 in
``tests/varcomp/test_lmer_terms.py``) and from chunks: the six lme4 cases of
``tests/data/multi`` (crossed, nested, a three-level hierarchy, a boundary, two optima)
and the weighted cases of ``tests/data/multi_weights`` (lme4 with ``weights=`` and an
``offset()``), split in order, shuffled, sorted so that chunks lack levels, with an
empty chunk, and with categorical dtypes that differ from chunk to chunk. The fits must
agree to ``SAME_FIT_RTOL``; the chunked criterion is also checked against lme4's.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core.terms_results import TermsFit
from reml_engine.frontend.formula import random_term_specs
from reml_engine.scaleout.chunked import lmer_chunks
from reml_engine.varcomp import RandomTerms, compute_vc_stats, merge_vc_stats

DATA = Path(__file__).resolve().parent.parent / "data"

#: Agreement required between the in-memory and the chunked fits: only the order of the
#: floating-point sums differs (and the optimizer's last digits follow them).
SAME_FIT_RTOL = 1e-8

#: Agreement with lme4's criterion at the global optimum (its own convergence).
LME4_CRITERION_TOL = 1e-5


def _reference(folder: str) -> dict:
    with open(DATA / folder / "reference.json") as fh:
        cases = json.load(fh)
    cases.pop("_about", None)
    return cases


MULTI = _reference("multi")
WEIGHTED = _reference("multi_weights")


def _grouping(formula: str) -> list[str]:
    return list(dict.fromkeys(c for spec in random_term_specs(formula) for c in spec.columns))


def _data(folder: str, case: dict) -> pd.DataFrame:
    """The CSV with its grouping columns as text (R's factors)."""
    return pd.read_csv(DATA / folder / case["file"], dtype={c: str for c in _grouping(case["formula"])})


def _split(data: pd.DataFrame, how: str, formula: str) -> list[pd.DataFrame]:
    rng = np.random.default_rng(12)
    first_group = _grouping(formula)[0]
    if how == "halves":
        return [data.iloc[: len(data) // 2], data.iloc[len(data) // 2:]]
    if how == "shuffled":
        rows = rng.permutation(len(data))
        bounds = np.sort(rng.choice(np.arange(1, len(data)), 4, replace=False))
        return [data.iloc[part] for part in np.split(rows, bounds)]
    if how == "sorted_with_empty":
        # Sorted by a grouping column, descending: each chunk lacks most of its levels.
        ordered = data.sort_values(first_group, ascending=False, kind="stable")
        third = len(data) // 3
        return [ordered.iloc[:third], ordered.iloc[:0], ordered.iloc[third:2 * third], ordered.iloc[2 * third:]]
    if how == "own_categories":
        # Every chunk's grouping columns are categoricals of its own levels (in another
        # order each time): the dtypes differ from chunk to chunk.
        parts = []
        for k, part in enumerate(np.array_split(np.arange(len(data)), 3)):
            chunk = data.iloc[part].copy()
            for column in _grouping(formula):
                levels = sorted(chunk[column].unique(), reverse=bool(k % 2))
                chunk[column] = pd.Categorical(chunk[column], categories=levels)
            parts.append(chunk)
        return parts
    raise ValueError(how)


SPLITS = ["halves", "shuffled", "sorted_with_empty", "own_categories"]


def assert_same_fit(chunked: TermsFit, memory: TermsFit, rtol: float = SAME_FIT_RTOL) -> None:
    """Every number a fit from statistics can give, equal to the in-memory fit's."""
    assert isinstance(chunked, TermsFit)
    assert chunked.term_names == memory.term_names
    assert chunked.nobs == memory.nobs and chunked.REML == memory.REML
    assert (chunked.weighted, chunked.has_offset) == (memory.weighted, memory.has_offset)
    assert chunked.dropped_columns == memory.dropped_columns
    scale = max(1.0, abs(memory.criterion))
    assert chunked.criterion == pytest.approx(memory.criterion, rel=rtol, abs=rtol * scale)
    np.testing.assert_allclose(chunked.tau, memory.tau, rtol=rtol, atol=rtol)
    assert chunked.sigma2 == pytest.approx(memory.sigma2, rel=rtol)
    pd.testing.assert_series_equal(chunked.fixef, memory.fixef, rtol=rtol, atol=rtol)
    pd.testing.assert_frame_equal(chunked.vcov, memory.vcov, rtol=rtol, atol=rtol * 1e-2)
    pd.testing.assert_series_equal(chunked.ngroups, memory.ngroups)
    pd.testing.assert_frame_equal(chunked.varcorr(), memory.varcorr(), rtol=rtol, atol=rtol)
    assert [o.criterion for o in chunked.optima] == pytest.approx([o.criterion for o in memory.optima], rel=rtol)
    assert [o.is_lme4_default for o in chunked.optima] == [o.is_lme4_default for o in memory.optima]
    np.testing.assert_allclose(chunked.lme4_start_theta, memory.lme4_start_theta, rtol=1e-10)
    assert [b.term for b in chunked.boundary] == [b.term for b in memory.boundary]
    for name in memory.term_names:
        # Level order may differ (categoricals keep their own order): match by label.
        a, b = chunked.ranef[name], memory.ranef[name]
        assert sorted(map(str, a.index)) == sorted(map(str, b.index))
        a = a.set_axis([str(v) for v in a.index]).sort_index()
        b = b.set_axis([str(v) for v in b.index]).sort_index()
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-7, atol=1e-8 * np.abs(b.to_numpy()).max())


def _in_memory(formula, data, **kwargs) -> TermsFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return rl.lmer(formula, data, **kwargs)


# -- the six lme4 cases ------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("case", sorted(MULTI))
def test_multi_cases_from_chunks_equal_in_memory(case, how):
    formula = MULTI[case]["formula"]
    data = _data("multi", MULTI[case])
    memory = _in_memory(formula, data)
    chunked = lmer_chunks(formula, _split(data, how, formula), progress=False)
    assert_same_fit(chunked, memory)
    # And against lme4 (the global optimum of its own criterion).
    assert chunked.criterion == pytest.approx(MULTI[case]["reml"]["criterion"], abs=LME4_CRITERION_TOL)


@pytest.mark.parametrize("case", ["penicillin", "pastes", "sim_crossed_seedlike"])
def test_ml_fits_from_chunks(case):
    formula = MULTI[case]["formula"]
    data = _data("multi", MULTI[case])
    chunked = lmer_chunks(formula, _split(data, "shuffled", formula), REML=False, progress=False)
    assert_same_fit(chunked, _in_memory(formula, data, REML=False))
    assert chunked.criterion == pytest.approx(MULTI[case]["ml"]["criterion"], abs=LME4_CRITERION_TOL)


def test_seedlike_lists_lme4s_local_optimum_from_chunks():
    """lme4's default start stops at REML criterion 73.27; the global optimum is 11.84."""
    case = MULTI["sim_crossed_seedlike"]
    chunked = lmer_chunks(case["formula"], _split(_data("multi", case), "shuffled", case["formula"]), progress=False)
    assert len(chunked.optima) == 2
    assert chunked.criterion == pytest.approx(11.84, abs=0.01)
    assert chunked.lme4_default.criterion == pytest.approx(case["reml_lme4_default"]["criterion"], abs=1e-4)


def test_one_shot_iterator_and_record_array():
    """A generator is read once (grouping levels need no first pass); a structured array
    is read CHUNK_ROWS rows at a time."""
    case = MULTI["sim_nested_boundary"]
    formula, data = case["formula"], _data("multi", case)
    memory = _in_memory(formula, data)
    assert_same_fit(rl.lmer(formula, (part for part in _split(data, "shuffled", formula))), memory)
    records = data.assign(**{c: data[c].str.replace(r"\D", "", regex=True).astype(np.int64)
                             for c in _grouping(formula)})
    as_records = lmer_chunks(formula, records.to_records(index=False), chunk_rows=97, progress=False)
    assert_same_fit(as_records, _in_memory(formula, records))


# -- prior weights and offsets -----------------------------------------------------------


@pytest.mark.parametrize("how", ["shuffled", "sorted_with_empty", "own_categories"])
@pytest.mark.parametrize("case", sorted(WEIGHTED))
def test_weighted_cases_from_chunks_equal_in_memory(case, how):
    ref = WEIGHTED[case]
    formula, data = ref["formula"], _data("multi_weights", ref)
    memory = _in_memory(formula, data, weights=ref["weights"])
    chunked = lmer_chunks(formula, _split(data, how, formula), weights=ref["weights"], progress=False)
    assert_same_fit(chunked, memory)
    assert chunked.weighted and chunked.has_offset == ("offset(" in formula)
    assert chunked.criterion == pytest.approx(ref["reml"]["criterion"], abs=LME4_CRITERION_TOL)


def test_offset_argument_is_the_offset_term():
    ref = WEIGHTED["scotssec_offset"]
    data = _data("multi_weights", ref)
    formula = "attain ~ verbal + sex + (1 | primary) + (1 | second)"
    chunked = lmer_chunks(formula, _split(data, "shuffled", formula), weights="n", offset="social_offset",
                          progress=False)
    assert_same_fit(chunked, _in_memory(formula, data, weights="n", offset="social_offset"))
    assert chunked.criterion == pytest.approx(ref["reml"]["criterion"], abs=LME4_CRITERION_TOL)
    # Both at once are added up, as lme4 adds them.
    both = lmer_chunks(ref["formula"], [data.iloc[:200], data.iloc[200:]], weights="n", offset="social_offset",
                       progress=False)
    assert_same_fit(both, _in_memory(ref["formula"], data, weights="n", offset="social_offset"))


def test_rows_with_missing_weights_or_offsets_are_dropped_as_in_memory():
    ref = WEIGHTED["scotssec_offset"]
    data = _data("multi_weights", ref).copy()
    data.loc[[3, 40], "n"] = np.nan
    data.loc[[100], "social_offset"] = np.nan
    data.loc[[7], "verbal"] = np.nan
    with pytest.warns(rl.ModelDataWarning, match=r"dropped 4 of \d+ rows with missing values"):
        chunked = lmer_chunks(ref["formula"], _split(data, "shuffled", ref["formula"]), weights="n", progress=False)
    assert_same_fit(chunked, _in_memory(ref["formula"], data, weights="n"))
    assert chunked.nobs == len(data) - 4


# -- Dask and Parquet --------------------------------------------------------------------


def test_dask_and_parquet_fits_of_several_terms(tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    pytest.importorskip("pyarrow")
    ref = WEIGHTED["exam"]
    formula, data = ref["formula"], _data("multi_weights", ref)
    memory = _in_memory(formula, data, weights="n")
    ddf = dd.from_pandas(data, npartitions=4)
    assert_same_fit(rl.lmer(formula, ddf, weights="n"), memory)
    for k, part in enumerate(_split(data, "shuffled", formula)):
        part.to_parquet(tmp_path / f"part-{k}.parquet", index=False)
    from_files = rl.lmer(formula, str(tmp_path / "*.parquet"), weights="n")
    assert_same_fit(from_files, memory)
    assert from_files.criterion == pytest.approx(ref["reml"]["criterion"], abs=LME4_CRITERION_TOL)
    # Dictionary (categorical) grouping columns whose categories differ from file to file.
    (tmp_path / "categorical").mkdir()
    for k, part in enumerate(_split(data, "own_categories", formula)):
        part.to_parquet(tmp_path / "categorical" / f"part-{k}.parquet", index=False)
    assert_same_fit(rl.lmer(formula, str(tmp_path / "categorical"), weights="n"), memory)


def test_dask_crossed_fit_with_offset_term(tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    ref = WEIGHTED["scotssec_offset"]
    formula, data = ref["formula"], _data("multi_weights", ref)
    ddf = dd.from_pandas(data.sample(frac=1.0, random_state=3), npartitions=5)
    assert_same_fit(rl.lmer(formula, ddf, weights="n", REML=False), _in_memory(formula, data, weights="n",
                                                                                REML=False))


# -- what a fit from statistics can and cannot do --------------------------------------


@pytest.fixture(scope="module")
def pastes_pair():
    case = MULTI["pastes"]
    data = _data("multi", case)
    return (lmer_chunks(case["formula"], _split(data, "shuffled", case["formula"]), progress=False),
            _in_memory(case["formula"], data))


def test_inference_from_statistics(pastes_pair):
    chunked, memory = pastes_pair
    pd.testing.assert_frame_equal(chunked.coef_table(), memory.coef_table(), rtol=1e-6)
    expected_df = np.ravel(MULTI["pastes"]["reml"]["df_satterthwaite"])[0]  # lmerTest
    assert chunked.coef_table().loc["(Intercept)", "df"] == pytest.approx(expected_df, rel=1e-3)
    pd.testing.assert_frame_equal(chunked.confint(), memory.confint(), rtol=1e-6)
    text = chunked.summary()
    assert "Random effects:" in text and "Number of obs: 60, groups:  cask:batch, 30; batch, 10" in text
    assert "Scaled residuals" not in text  # the rows are not kept


def test_methods_needing_rows_refuse(pastes_pair):
    chunked, _ = pastes_pair
    assert chunked.fitted is None and chunked.resid is None and chunked.scaled_residuals is None
    # New rows are read with the encoding the fit keeps (tests/scaleout/test_terms_new_rows.py).
    with pytest.raises(rl.ModelDataError, match="keeps none: pass newdata="):
        chunked.predict()
    with pytest.raises(rl.ModelDataError, match="keeps no rows; pass newdata="):
        chunked.simulate(2)


def test_rank_deficient_columns_dropped_as_in_memory():
    case = MULTI["sim_subjects_items"]
    data = _data("multi", case).assign(x2=lambda d: 2.0 * d["x"] + 1.0)
    formula = "y ~ x + x2 + cond + (1 | subj) + (1 | item)"
    with pytest.warns(rl.ModelDataWarning, match="dropping 1 column"):
        chunked = lmer_chunks(formula, _split(data, "shuffled", formula), progress=False)
    assert chunked.dropped_columns == ("x2",)
    assert_same_fit(chunked, _in_memory(formula, data))


# -- errors name the chunk at fault ------------------------------------------------------


def test_bad_weight_names_the_chunk_and_row():
    ref = WEIGHTED["exam"]
    data = _data("multi_weights", ref).copy()
    data.loc[data.index[150], "n"] = -2.0
    parts = [data.iloc[:100], data.iloc[100:200], data.iloc[200:]]
    message = "chunk 2 (rows 101-200): prior weights ('n') must be positive and finite: 1 are not, first at row 150"
    with pytest.raises(rl.ModelDataError, match=re.escape(message)):
        lmer_chunks(ref["formula"], parts, weights="n", progress=False)


def test_infinite_offset_names_the_chunk():
    ref = WEIGHTED["scotssec_offset"]
    data = _data("multi_weights", ref).copy()
    data.loc[data.index[300], "social_offset"] = np.inf
    parts = [data.iloc[:250], data.iloc[250:]]
    with pytest.raises(rl.ModelDataError, match=re.escape("chunk 2 (rows 251-")) as err:
        lmer_chunks(ref["formula"], parts, weights="n", progress=False)
    assert "offset 'social_offset' has 1 infinite values, first at row 300" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": np.ones(465)}, "weights= of a chunked, Dask or Parquet fit must name a column"),
        ({"offset": [0.0] * 465}, "offset= of a chunked, Dask or Parquet fit must name a column"),
        ({"weights": "nn"}, "weights='nn' is not a column of the data"),
    ],
)
def test_weights_and_offset_must_be_columns(kwargs, message):
    ref = WEIGHTED["scotssec"]
    data = _data("multi_weights", ref)
    with pytest.raises(rl.ModelDataError, match=re.escape(message)):
        rl.lmer(ref["formula"], [data.iloc[:200], data.iloc[200:]], **kwargs)


def test_too_few_levels_over_all_chunks():
    """lme4's checkNlevels on the merged levels, as in memory."""
    case = MULTI["penicillin"]
    data = _data("multi", case)
    one_sample = data[data["sample"] == "A"].assign(plate=lambda d: d["plate"].isin(list("abcdef")))
    with pytest.raises(rl.ModelDataError, match="grouping factor 'sample' has 1 level") as in_memory:
        rl.lmer(case["formula"], one_sample)
    with pytest.raises(rl.ModelDataError) as chunked:
        lmer_chunks(case["formula"], [one_sample.iloc[:10], one_sample.iloc[10:]], progress=False)
    assert str(chunked.value) == str(in_memory.value)


# -- the merge itself --------------------------------------------------------------------


def test_merge_is_the_whole_in_any_order():
    """merge_vc_stats of chunks (each coded with its own levels, labels typed differently
    from chunk to chunk) equals compute_vc_stats of all rows."""
    rng = np.random.default_rng(5)
    n = 400
    a = rng.integers(0, 25, n)
    b = rng.integers(0, 9, n)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n) + a % 3
    w = rng.uniform(0.5, 2.0, n)
    whole = compute_vc_stats(X, y, RandomTerms.from_labels({"a": a.astype(str), "b": b}), w)
    cuts = [0, 90, 91, 250, n]
    parts = []
    for k, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        # Labels of 'a' as numbers in some chunks, as text in others: one level each.
        labels_a = a[lo:hi] if k % 2 else a[lo:hi].astype(str)
        terms = RandomTerms.from_labels({"a": labels_a, "b": b[lo:hi]})
        parts.append(compute_vc_stats(X[lo:hi], y[lo:hi], terms, w[lo:hi]))
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        merged = merge_vc_stats([parts[i] for i in order]).rebase(whole.shift)
        for j in range(2):
            assert list(map(str, merged.levels[j])) == list(map(str, whole.levels[j]))
            np.testing.assert_array_equal(merged.counts[j], whole.counts[j])
            np.testing.assert_allclose(merged.sums[j], whole.sums[j], rtol=1e-12, atol=1e-10)
        table, expected = merged.pairs[0, 1], whole.pairs[0, 1]
        np.testing.assert_array_equal(table.rows, expected.rows)
        np.testing.assert_array_equal(table.cols, expected.cols)
        np.testing.assert_allclose(table.weights, expected.weights, rtol=1e-13)
        np.testing.assert_allclose(merged.cross, whole.cross, rtol=1e-11, atol=1e-9)


def test_reordered_and_selected_statistics_are_those_computed_so():
    rng = np.random.default_rng(6)
    n = 200
    factors = {"a": rng.integers(0, 12, n), "b": rng.integers(0, 5, n), "c": rng.integers(0, 30, n)}
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    y = rng.normal(size=n)
    stats = compute_vc_stats(X, y, RandomTerms.from_labels(factors))
    order = [2, 0, 1]
    direct = compute_vc_stats(X[:, [0, 2]], y, RandomTerms.from_labels({k: factors[k] for k in ("c", "a", "b")}),
                              shift=stats.shift[[0, 2, 3]])
    derived = stats.reordered(order).select_columns([0, 2])
    assert derived.names == direct.names
    for key, table in direct.pairs.items():
        np.testing.assert_array_equal(derived.pairs[key].rows, table.rows)
        np.testing.assert_array_equal(derived.pairs[key].cols, table.cols)
        np.testing.assert_allclose(derived.pairs[key].weights, table.weights)
    for j in range(3):
        np.testing.assert_allclose(derived.sums[j], direct.sums[j], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(derived.cross, direct.cross, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="permutation"):
        stats.reordered([0, 0, 1])
