"""Sufficient statistics: the numba kernels against plain numpy, merging, group coding."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from reml_engine.core.statistics import GroupStats, compute_group_stats, distinct_sizes, pilot_shift
from reml_engine.frontend.groups import factorize_groups


def _data(n=2000, p=4, G=57, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1)) * 3 + 100])
    y = rng.normal(size=n) + 1e3
    labels = rng.integers(0, G, size=n) * 13 + 5
    return X, y, labels


def _brute(X, y, labels, shift):
    Z = np.column_stack([X, y]) - shift
    df = pd.DataFrame(Z)
    df["g"] = labels
    sums = df.groupby("g").sum().to_numpy()
    counts = df.groupby("g").size().to_numpy()
    return counts, sums, Z.T @ Z


def test_kernel_matches_numpy():
    X, y, labels = _data()
    groups = factorize_groups(labels)
    shift = pilot_shift(X, y, 0)
    stats = compute_group_stats(X, y, groups, shift)
    counts, sums, cross = _brute(X, y, labels, shift)
    assert np.array_equal(stats.counts, counts)
    assert np.allclose(stats.sums, sums, rtol=1e-12, atol=1e-9)
    assert np.allclose(stats.cross, cross, rtol=1e-12)
    assert stats.nobs == len(y) and stats.ngroups == len(counts)


def test_fortran_order_gives_same_statistics():
    X, y, labels = _data()
    groups = factorize_groups(labels)
    shift = pilot_shift(X, y, 0)
    a = compute_group_stats(X, y, groups, shift)
    b = compute_group_stats(np.asfortranarray(X), y, groups, shift)
    assert np.allclose(a.cross, b.cross, rtol=1e-13) and np.allclose(a.sums, b.sums, rtol=1e-13)


def test_merge_of_halves_equals_whole_with_split_groups():
    X, y, labels = _data()
    whole_groups = factorize_groups(labels)
    shift = pilot_shift(X, y, 0)
    whole = compute_group_stats(X, y, whole_groups, shift, exact_within=False)
    cut = 777  # groups appear on both sides of the cut
    a = compute_group_stats(X[:cut], y[:cut], factorize_groups(labels[:cut]), shift, exact_within=False)
    # The second half uses a different shift: the merge rebases it exactly.
    b = compute_group_stats(X[cut:], y[cut:], factorize_groups(labels[cut:]), shift + 3.0, exact_within=False)
    merged = a + b
    assert list(merged.levels) == list(whole.levels)
    assert np.array_equal(merged.counts, whole.counts)
    assert np.allclose(merged.sums, whole.sums, rtol=1e-11, atol=1e-8)
    assert np.allclose(merged.cross, whole.cross, rtol=1e-11)
    assert np.allclose(merged.within_cross(), whole.within_cross(), rtol=1e-9, atol=1e-7)


def test_pooled_statistics_equal_per_group_sums():
    X, y, labels = _data(n=300, G=40)
    groups = factorize_groups(labels)
    shift = pilot_shift(X, y, 0)
    pooled = compute_group_stats(X, y, groups, shift).pooled(shift)
    Z = np.column_stack([X, y]) - shift
    for u, size in enumerate(pooled.sizes):
        members = [g for g in np.unique(labels) if (labels == g).sum() == size]
        expected = sum(np.outer(Z[labels == g].sum(0), Z[labels == g].sum(0)) / size for g in members)
        assert np.allclose(pooled.between[u], expected, rtol=1e-11, atol=1e-9)
        assert pooled.groups_per_size[u] == len(members)
    within = sum(
        (Z[labels == g] - Z[labels == g].mean(0)).T @ (Z[labels == g] - Z[labels == g].mean(0))
        for g in np.unique(labels)
    )
    assert np.allclose(pooled.within, within, rtol=1e-9, atol=1e-8)


def test_exact_second_pass_for_column_constant_within_groups():
    """A between-only column (constant within groups, large offset) keeps an exact zero
    within part: the second pass replaces the cancelling one-pass formula."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(50), 20)
    between_only = (rng.normal(size=50) + 1e7)[labels]
    X = np.column_stack([np.ones(1000), between_only, rng.normal(size=1000)])
    y = rng.normal(size=1000)
    groups = factorize_groups(labels)
    stats = compute_group_stats(X, y, groups, pilot_shift(X, y, 0))
    assert stats.within is not None
    assert np.all(stats.within[1] == 0.0) and np.all(stats.within[:, 1] == 0.0)


@pytest.mark.parametrize(
    "labels,expected_levels",
    [
        (["b", "a", "b", "c"], ["a", "b", "c"]),
        ([30, 10, 30, 20], [10, 20, 30]),
        ([2**40 + 1, 5, 2**40 + 1], [5, 2**40 + 1]),
        (pd.Categorical(["x", "y", "x"], categories=["z", "y", "x"]), ["y", "x"]),
    ],
)
def test_factorize_groups_sorted_levels_and_codes(labels, expected_levels):
    codes = factorize_groups(labels)
    assert list(codes.levels) == expected_levels
    labels_back = np.asarray(codes.levels)[codes.codes]
    assert list(labels_back) == list(np.asarray(labels))


def test_missing_group_labels_raise_with_count():
    with pytest.raises(ValueError, match="2 missing"):
        factorize_groups(pd.Series(["a", None, "b", np.nan]))


def test_merging_leaves_the_parts_as_they_were():
    """A merge rebases the parts to one shift: it must work on copies, or statistics a fit
    holds would change when someone merges them."""
    X, y, labels = _data(n=50, G=5)
    first = compute_group_stats(X[:30], y[:30], factorize_groups(labels[:30]), pilot_shift(X, y, 0))
    second = compute_group_stats(X[30:], y[30:], factorize_groups(labels[30:]), pilot_shift(X[30:], y[30:], 0))
    fields = ("counts", "sums", "cross", "shift", "lo", "hi")
    before = [{name: getattr(part, name).copy() for name in fields} for part in (first, second)]
    merged = first + second
    assert isinstance(merged, GroupStats) and merged.nobs == 50
    for part, saved in zip((first, second), before, strict=True):
        for name in fields:
            np.testing.assert_array_equal(getattr(part, name), saved[name], err_msg=name)


def test_kernels_in_pure_python_mode():
    """The kernels run uncompiled too (NUMBA_DISABLE_JIT=1), with the same results."""
    code = (
        "import numpy as np, sys\n"
        "sys.path.insert(0, 'tests/core')\n"
        "from test_stats import _data, _brute\n"
        "from reml_engine.frontend.groups import factorize_groups\n"
        "from reml_engine.core.statistics import compute_group_stats, pilot_shift\n"
        "X, y, labels = _data(n=300, G=11)\n"
        "shift = pilot_shift(X, y, 0)\n"
        "s = compute_group_stats(X, y, factorize_groups(labels), shift)\n"
        "c, sums, cross = _brute(X, y, labels, shift)\n"
        "assert np.array_equal(s.counts, c) and np.allclose(s.sums, sums) and np.allclose(s.cross, cross)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_checks_read_off_the_one_pass_match_direct_checks():
    """Column ranges, indicator columns and the intercept, from the kernel's statistics,
    equal what direct numpy passes over the data find."""
    from reml_engine.core.identifiability import binary_columns_from_stats, intercept_from_stats

    rng = np.random.default_rng(5)
    n = 3000
    labels = rng.integers(0, 30, size=n)
    X = np.column_stack([
        rng.normal(size=n) + 50,              # continuous
        np.ones(n),                           # intercept, not first
        (rng.uniform(size=n) < 0.3) * 1.0,    # indicator
        rng.integers(0, 3, size=n) * 0.5,     # 0, 0.5, 1: in [0, 1] but not binary
    ])
    y = rng.normal(size=n)
    stats = compute_group_stats(X, y, factorize_groups(labels), pilot_shift(X, y, None))
    raw = np.column_stack([X, y])
    assert np.array_equal(stats.lo, raw.min(axis=0)) and np.array_equal(stats.hi, raw.max(axis=0))
    direct = np.all((X == 0.0) | (X == 1.0), axis=0)
    assert list(binary_columns_from_stats(stats)) == list(direct) == [False, True, True, False]
    assert intercept_from_stats(stats) == 1


def test_rebase_about_the_same_shift_is_the_statistics_and_raw_cross_leaves_them_writable():
    # Merging many pieces about one shift skips the passes over the groups; the cached
    # read-only raw cross-product must then be a copy, not the statistics' own array.
    stats = GroupStats(pd.Index([0, 1]), np.array([2, 3]), np.ones((2, 2)), 2 * np.eye(2), np.zeros(2))
    assert stats.rebase(np.zeros(2)) is stats
    assert not stats.raw_cross.flags.writeable and stats.cross.flags.writeable
    moved = stats.rebase(np.array([1.0, 0.0]))
    np.testing.assert_allclose(moved.rebase(np.zeros(2)).cross, stats.cross)


@pytest.mark.parametrize("counts", [[3, 1, 3, 7, 1, 1], [5], [0, 2, 0], list(range(40, 0, -3)) * 2, [10**7, 2, 2]])
def test_distinct_sizes_are_numpys_unique(counts):
    # A tally for small sizes, a sort for a huge one: the same three arrays either way.
    counts = np.asarray(counts, dtype=np.int64)
    for got, expected in zip(distinct_sizes(counts), np.unique(counts, return_inverse=True, return_counts=True),
                             strict=True):
        np.testing.assert_array_equal(got, expected)
