"""Sufficient statistics of several terms: the kernels against plain numpy, both ways of
building the contingency tables, threads, and merging over any split of the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reml_engine.errors import ModelDataError
from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
from reml_engine.varcomp import statistics as statistics_module


def _data(n=3000, seed=0, weighted=True, offset=True):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=n) * 3 + 1e4, rng.integers(0, 2, n).astype(float)])
    y = rng.normal(size=n) + 1e6
    factors = {"a": rng.integers(0, 40, n) * 7, "b": np.array([f"b{i}" for i in rng.integers(0, 25, n)]),
               "c": rng.integers(0, 3, n)}
    w = rng.uniform(0.1, 3.0, n) if weighted else None
    o = rng.normal(size=n) * 5 if offset else None
    return X, y, factors, w, o


def _brute(X, y, factors, w, o, shift):
    n = len(y)
    w = np.ones(n) if w is None else w
    response = y if o is None else y - o
    Z = np.column_stack([X, response]) - shift
    out = {"cross": (Z * w[:, None]).T @ Z}
    for name, labels in factors.items():
        frame = pd.DataFrame(Z * w[:, None])
        frame["g"] = labels
        frame["w"] = w
        grouped = frame.groupby("g")
        out[name] = (grouped.size().to_numpy(), grouped["w"].sum().to_numpy(),
                     grouped[list(range(Z.shape[1]))].sum().to_numpy())
    return out


@pytest.mark.parametrize("weighted", [True, False])
def test_kernel_matches_numpy(weighted):
    X, y, factors, w, o = _data(weighted=weighted)
    terms = RandomTerms.from_labels(factors)
    stats = compute_vc_stats(X, y, terms, w, o)
    ref = _brute(X, y, factors, w, o, stats.shift)
    assert np.allclose(stats.cross, ref["cross"], rtol=1e-12, atol=1e-6)
    for j, name in enumerate(factors):
        counts, weights, sums = ref[name]
        assert np.array_equal(stats.counts[j], counts)
        assert np.allclose(stats.level_weights[j], weights, rtol=1e-12)
        assert np.allclose(stats.sums[j], sums, rtol=1e-10, atol=1e-6)
    assert stats.nobs == len(y)
    w_all = np.ones(len(y)) if w is None else w
    assert stats.sum_weights == pytest.approx(w_all.sum(), rel=1e-12)
    assert stats.sum_log_weights == pytest.approx(np.log(w_all).sum(), rel=1e-12, abs=1e-12)
    response = y - o
    assert stats.lo[-1] == response.min() and stats.hi[-1] == response.max()
    assert np.array_equal(stats.lo[:-1], X.min(axis=0)) and np.array_equal(stats.hi[:-1], X.max(axis=0))
    # The intercept keeps shift 0 so that it can absorb the others' shifts.
    assert stats.shift[0] == 0.0 and abs(stats.shift[1] - 1e4) < 1 and abs(stats.shift[-1] - 1e6) < 10


def test_contingency_tables_match_crosstab():
    X, y, factors, w, o = _data()
    stats = compute_vc_stats(X, y, RandomTerms.from_labels(factors), w, o)
    names = list(factors)
    for (a, b), table in stats.pairs.items():
        frame = pd.DataFrame({"a": factors[names[a]], "b": factors[names[b]], "w": w})
        expected = frame.groupby(["a", "b"])["w"].sum()
        levels_a, levels_b = stats.levels[a], stats.levels[b]
        got = pd.Series(table.weights, index=pd.MultiIndex.from_arrays([levels_a[table.rows], levels_b[table.cols]]))
        assert table.nnz == len(expected)
        assert np.allclose(got.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-12)
        keys = table.rows * table.shape[1] + table.cols
        assert (np.diff(keys) > 0).all()        # sorted by (row, col), no duplicates


def test_hashed_tables_equal_dense_tables(monkeypatch):
    X, y, factors, w, o = _data(n=20000, seed=4)
    terms = RandomTerms.from_labels(factors)
    dense = compute_vc_stats(X, y, terms, w, o)
    monkeypatch.setattr(statistics_module, "DENSE_TABLE_MAX_CELLS", 0)
    hashed = compute_vc_stats(X, y, terms, w, o)
    for key, table in dense.pairs.items():
        other = hashed.pairs[key]
        assert np.array_equal(table.rows, other.rows) and np.array_equal(table.cols, other.cols)
        assert np.allclose(table.weights, other.weights, rtol=1e-13)


def test_threads_give_the_same_statistics(monkeypatch):
    X, y, factors, w, o = _data(n=20000, seed=8)
    terms = RandomTerms.from_labels(factors)
    one = compute_vc_stats(X, y, terms, w, o)
    monkeypatch.setattr(statistics_module, "PARALLEL_CHUNK_ROWS", 1000)
    many = compute_vc_stats(X, y, terms, w, o)
    assert np.allclose(one.cross, many.cross, rtol=1e-12)
    for j in range(terms.k):
        assert np.array_equal(one.counts[j], many.counts[j])
        assert np.allclose(one.sums[j], many.sums[j], rtol=1e-11, atol=1e-8)


def test_fortran_order_and_integer_inputs():
    X, y, factors, w, o = _data(n=500)
    terms = RandomTerms.from_labels(factors)
    a = compute_vc_stats(X, y, terms, w, o)
    b = compute_vc_stats(np.asfortranarray(X), y, terms, w, o)
    assert np.allclose(a.cross, b.cross, rtol=1e-13)


def test_rebase_is_exact_algebra():
    X, y, factors, w, o = _data(n=800)
    terms = RandomTerms.from_labels(factors)
    stats = compute_vc_stats(X, y, terms, w, o)
    other_shift = np.array([0.0, 3.0, 0.5, -2.0])
    direct = compute_vc_stats(X, y, terms, w, o, shift=other_shift)
    rebased = stats.rebase(other_shift)
    assert np.allclose(rebased.cross, direct.cross, rtol=1e-9)
    for j in range(terms.k):
        assert np.allclose(rebased.sums[j], direct.sums[j], rtol=1e-9, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.booleans(), st.sampled_from(["crossed", "nested"]))
def test_merge_over_any_split_is_the_whole(seed, n_chunks, weighted, kind):
    """Statistics of chunks (each coded with its own levels and shift), merged, are those
    of all rows: same levels, tables, sums, and the same problem."""
    rng = np.random.default_rng(seed)
    n = 400
    if kind == "crossed":
        factors = {"a": rng.integers(0, 30, n), "b": np.array([f"l{i}" for i in rng.integers(0, 12, n)])}
    else:
        outer = rng.integers(0, 6, n)
        factors = {"inner": outer * 100 + rng.integers(0, 8, n), "outer": outer}
    X = np.column_stack([np.ones(n), rng.normal(size=n) * 2 + 30])
    y = rng.normal(size=n) + 50 + factors[next(iter(factors))] % 7
    w = rng.uniform(0.2, 4, n) if weighted else None
    o = rng.normal(size=n)
    whole = compute_vc_stats(X, y, RandomTerms.from_labels(factors), w, o)
    chunk_of = rng.integers(0, n_chunks, n)
    merged = None
    for c in range(n_chunks):
        rows = np.flatnonzero(chunk_of == c)
        if not len(rows):
            continue
        part = compute_vc_stats(X[rows], y[rows], RandomTerms.from_labels({k: v[rows] for k, v in factors.items()}),
                                None if w is None else w[rows], o[rows])
        merged = part if merged is None else merged + part
    assert merged.nobs == whole.nobs
    for j in range(whole.k):
        assert merged.levels[j].equals(whole.levels[j])
        assert np.array_equal(merged.counts[j], whole.counts[j])
        assert np.allclose(merged.level_weights[j], whole.level_weights[j], rtol=1e-12)
    merged_rebased = merged.rebase(whole.shift)
    assert np.allclose(merged_rebased.cross, whole.cross, rtol=1e-10, atol=1e-7)
    for key, table in whole.pairs.items():
        other = merged.pairs[key]
        assert np.array_equal(table.rows, other.rows) and np.array_equal(table.cols, other.cols)
        assert np.allclose(table.weights, other.weights, rtol=1e-12)
    assert merged.sum_log_weights == pytest.approx(whole.sum_log_weights, rel=1e-12, abs=1e-9)
    assert np.array_equal(merged.lo, whole.lo) and np.array_equal(merged.hi, whole.hi)
    tau = np.array([0.7, 0.3])
    a = VCProblem(whole).evaluate(tau)
    b = VCProblem(merged).evaluate(tau)
    assert a.criterion == pytest.approx(b.criterion, rel=1e-11)
    assert np.allclose(a.gradient, b.gradient, rtol=1e-8, atol=1e-10)
    assert np.allclose(a.beta, b.beta, rtol=1e-9)


def test_chunks_coded_with_the_whole_levels_drop_empty_levels():
    """A chunk may carry levels without rows (codes of the whole): the problem ignores them."""
    X, y, factors, w, o = _data(n=600, seed=3)
    terms = RandomTerms.from_labels(factors)
    whole = compute_vc_stats(X, y, terms, w, o)
    cut = 40
    first = compute_vc_stats(X[:cut], y[:cut], terms.take(np.arange(cut)), w[:cut], o[:cut])
    second = compute_vc_stats(X[cut:], y[cut:], terms.take(np.arange(cut, 600)), w[cut:], o[cut:])
    assert any((c == 0).any() for c in first.counts)
    tau = np.array([0.4, 0.8, 0.1])
    assert VCProblem(first + second).evaluate(tau).criterion == pytest.approx(
        VCProblem(whole).evaluate(tau).criterion, rel=1e-11)
    # A chunk alone is a smaller problem with its own levels.
    alone = VCProblem(first)
    assert alone.nlevels == tuple(int((c > 0).sum()) for c in first.counts)


def test_bad_rows_are_refused_with_a_reason():
    X, y, factors, w, o = _data(n=100)
    terms = RandomTerms.from_labels(factors)
    bad_w = w.copy()
    bad_w[7] = 0.0
    with pytest.raises(ModelDataError, match="positive and finite: 1 are not, first at row 7"):
        compute_vc_stats(X, y, terms, bad_w, o)
    bad_w[7] = np.nan
    with pytest.raises(ModelDataError, match="prior weights"):
        compute_vc_stats(X, y, terms, bad_w, o)
    bad_o = o.copy()
    bad_o[3] = np.inf
    with pytest.raises(ModelDataError, match="offset has 1 non-finite"):
        compute_vc_stats(X, y, terms, w, bad_o)
    bad_y = y.copy()
    bad_y[5] = np.nan
    with pytest.raises(ModelDataError, match="the response"):
        compute_vc_stats(X, bad_y, terms, w, o)
    with pytest.raises(ModelDataError, match="one value per row"):
        compute_vc_stats(X, y[:-1], terms, w, o)
    with pytest.raises(ModelDataError, match="one value per row"):
        compute_vc_stats(X, y, terms, w[:-1], o)
    with pytest.raises(ModelDataError, match="grouping factors have 100 rows"):
        compute_vc_stats(X[:50], y[:50], terms, None, None)


def test_merge_refuses_different_models():
    X, y, factors, w, o = _data(n=100)
    a = compute_vc_stats(X, y, RandomTerms.from_labels(factors), w, o)
    b = compute_vc_stats(X, y, RandomTerms.from_labels({"a": factors["a"], "c": factors["c"]}), w, o)
    with pytest.raises(ValueError, match="cannot merge statistics of terms"):
        a + b
    c = compute_vc_stats(X[:, :2], y, RandomTerms.from_labels(factors), w, o)
    with pytest.raises(ValueError, match="columns"):
        a + c


def test_rank_deficient_design_is_refused():
    X, y, factors, w, o = _data(n=100)
    X = np.column_stack([X, 2 * X[:, 1]])
    with pytest.raises(ModelDataError, match="linearly dependent"):
        VCProblem(compute_vc_stats(X, y, RandomTerms.from_labels(factors), w, o))
