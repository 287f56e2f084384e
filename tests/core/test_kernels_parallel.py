"""The one-pass kernel, serial and split across threads, against plain numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core import statistics as S
from reml_engine.core.kernels import (
    BLOCK_ROWS,
    group_sums_and_cross,
    group_sums_and_cross_of_columns,
    group_sums_and_cross_parallel,
)

#: Sums over a few thousand rows in a different order agree to this relative precision.
SUM_ORDER_RTOL = 1e-12


def _numpy_reference(X, y, codes, n_groups, shift):
    Z = np.column_stack([X, y]) - shift
    counts = np.bincount(codes, minlength=n_groups)
    sums = np.zeros((n_groups, Z.shape[1]))
    np.add.at(sums, codes, Z)
    raw = np.column_stack([X, y])
    return counts, sums, Z.T @ Z, raw.min(axis=0), raw.max(axis=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    n, p, n_groups = 3 * BLOCK_ROWS + 17, 4, 50
    X = np.column_stack([np.ones(n), rng.normal(5.0, 2.0, (n, p - 1))])
    y = rng.normal(size=n)
    codes = rng.integers(0, n_groups, n).astype(np.int64)
    shift = np.r_[0.0, X[:100, 1:].mean(axis=0), y[:100].mean()]
    return X, y, codes, n_groups, shift


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("n_chunks", [1, 2, 3, 5])
def test_parallel_and_serial_match_numpy(data, layout, n_chunks):
    X, y, codes, n_groups, shift = data
    X = np.asarray(X, order=layout)
    expected = _numpy_reference(X, y, codes, n_groups, shift)
    none = np.zeros((0, 0))
    for got in (group_sums_and_cross(X, y, codes, n_groups, shift),
                group_sums_and_cross_parallel(X, y, codes, n_groups, shift, none, n_chunks)):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=SUM_ORDER_RTOL, atol=1e-9)
        np.testing.assert_allclose(got[2], expected[2], rtol=SUM_ORDER_RTOL)
        np.testing.assert_array_equal(got[3], expected[3])  # column ranges of the raw values
        np.testing.assert_array_equal(got[4], expected[4])


def test_fit_through_the_parallel_path_is_the_same_fit(data, monkeypatch):
    X, y, codes, _, _ = data
    serial = rl.fit(X, y, codes)
    monkeypatch.setattr(S, "PARALLEL_CHUNK_ROWS", 1000)
    monkeypatch.setattr("numba.get_num_threads", lambda: 3)
    parallel = rl.fit(X, y, codes)
    assert parallel.criterion == pytest.approx(serial.criterion, rel=SUM_ORDER_RTOL)
    np.testing.assert_allclose(parallel.fixef, serial.fixef, rtol=1e-10)
    assert parallel.tau == pytest.approx(serial.tau, rel=1e-9)


def test_column_ranges_match_numpy():
    from reml_engine.core.kernels import column_ranges

    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 4))
    X[3, 1] = np.nan
    X[9, 1] = np.inf
    X[:, 3] = -np.inf
    lo, hi, nonfinite = column_ranges(X)
    np.testing.assert_array_equal(nonfinite, [0, 2, 0, 500])
    np.testing.assert_array_equal(lo[[0, 2]], X[:, [0, 2]].min(axis=0))
    np.testing.assert_array_equal(hi[[0, 2]], X[:, [0, 2]].max(axis=0))
    finite = X[:, 1][np.isfinite(X[:, 1])]
    assert (lo[1], hi[1]) == (finite.min(), finite.max())
    assert (lo[3], hi[3]) == (np.inf, -np.inf)


def test_lower_inverse_batched_matches_numpy():
    from reml_engine.core.kernels import lower_inverse_batched

    rng = np.random.default_rng(9)
    A = rng.normal(size=(20, 6, 6))
    L = np.linalg.cholesky(A @ np.swapaxes(A, 1, 2) + 6 * np.eye(6))
    np.testing.assert_allclose(lower_inverse_batched(L), np.linalg.inv(L), rtol=1e-12, atol=1e-14)
    # Works on a strided slice, as the criterion passes it.
    big = np.zeros((20, 7, 7))
    big[:, :6, :6] = L
    np.testing.assert_allclose(lower_inverse_batched(big[:, :6, :6]), np.linalg.inv(L), rtol=1e-12, atol=1e-14)


def test_lower_inverse_batched_is_the_textbook_substitution_to_the_last_bit():
    """The kernel solves each column in a work vector (for speed at large p); the
    arithmetic must stay that of the column-by-column forward substitution, so that no
    estimate moves."""
    from reml_engine.core.kernels import lower_inverse_batched

    rng = np.random.default_rng(5)
    A = rng.standard_normal((3, 23, 23))
    L = np.linalg.cholesky(A @ A.transpose(0, 2, 1) + 23 * np.eye(23))
    expected = np.zeros_like(L)
    for k in range(L.shape[0]):
        for j in range(L.shape[1]):
            expected[k, j, j] = 1.0 / L[k, j, j]
            for i in range(j + 1, L.shape[1]):
                total = 0.0
                for m in range(j, i):
                    total += L[k, i, m] * expected[k, m, j]
                expected[k, i, j] = -total / L[k, i, i]
    np.testing.assert_array_equal(lower_inverse_batched(L), expected)


def _read_only(values: np.ndarray) -> np.ndarray:
    """A contiguous read-only float64 copy (as Arrow's buffers reach the kernel)."""
    values = np.array(values, dtype=np.float64)
    values.flags.writeable = False
    return values


@pytest.mark.parametrize("intercept", [0, 2, 3])
@pytest.mark.parametrize("n_groups", [1, 50, 5000])
def test_kernel_of_columns_is_the_serial_kernel_to_the_last_bit(intercept, n_groups):
    # The columns read where they are and the groups coded block by block (ids minus
    # the smallest one): every output the serial kernel's on the design with its ones.
    rng = np.random.default_rng(n_groups + intercept)
    n = 3 * BLOCK_ROWS + 5
    X = np.asfortranarray(rng.normal(3.0, 2.0, (n, 4)))
    X[:, intercept] = 1.0
    y = rng.normal(size=n)
    codes = rng.integers(0, n_groups, n).astype(np.int64)
    id_low = 1_000_003
    shift = np.r_[X[:100].mean(axis=0), y[:100].mean()]
    shift[intercept] = 0.0
    columns = tuple(_read_only(X[:, j]) for j in range(4) if j != intercept) + (_read_only(y),)
    *fast, code_range = group_sums_and_cross_of_columns(columns, codes + id_low, id_low, n_groups, shift, intercept)
    serial = group_sums_and_cross(X, y, codes, n_groups, shift)
    for name, a, b in zip(("counts", "sums", "cross", "lo", "hi"), fast, serial, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert list(code_range) == [codes.min(), codes.max()]


@pytest.mark.parametrize("bad_id", [-1, 50])
def test_kernel_of_columns_stops_at_a_code_outside_the_table(bad_id):
    # A code the table has no slot for is not written anywhere: the pass stops and
    # the code range shows it (the caller refuses the data).
    rng = np.random.default_rng(3)
    n = 2 * BLOCK_ROWS + 9
    codes = rng.integers(0, 50, n).astype(np.int64)
    codes[BLOCK_ROWS + 4] = bad_id
    columns = (_read_only(rng.normal(size=n)), _read_only(rng.normal(size=n)))
    *_, code_range = group_sums_and_cross_of_columns(columns, codes, 0, 50, np.zeros(3), 0)
    assert code_range[0] < 0 or code_range[1] >= 50


def test_column_ranges_are_the_row_by_row_scans():
    # The ranges are kept in lanes: a NaN is still not seen, and of 0.0 and -0.0 the
    # first in the rows is kept, as the row-by-row scan keeps it.
    n = BLOCK_ROWS + 7
    for first, second, where in ((-0.0, 0.0, 5), (0.0, -0.0, 6), (-0.0, 0.0, BLOCK_ROWS + 2)):
        values = np.full(n, 2.0)
        values[where] = first
        values[where + 3] = second
        values[11] = np.nan
        X = np.column_stack([np.ones(n), values, -values])
        *_, lo, hi = group_sums_and_cross(X, np.arange(n, dtype=np.float64), np.zeros(n, dtype=np.int64), 1,
                                          np.zeros(4))
        assert lo[1] == 0.0 and np.signbit(lo[1]) == np.signbit(first)
        assert hi[2] == 0.0 and np.signbit(hi[2]) == np.signbit(-first)
        assert (hi[1], lo[2], lo[3], hi[3]) == (2.0, -2.0, 0.0, n - 1.0)


# --- the wide pass: BLAS's rank-k update for the cross-product ---------------------------------


def _wide_data(n, p, n_groups, layout, seed=3):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(3.0, 2.0, (n, p - 1))])
    if n:
        X[rng.integers(0, n, 40), rng.integers(1, p, 40)] = 0.0
        X[rng.integers(0, n, 40), rng.integers(1, p, 40)] = -0.0
    y = rng.normal(size=n)
    codes = rng.integers(0, n_groups, n).astype(np.int64)
    shift = np.r_[0.0, rng.normal(3.0, 0.1, p - 1), 0.1]
    return np.asarray(X, order=layout), y, codes, shift


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("n", [0, 5, BLOCK_ROWS, 2 * BLOCK_ROWS + 31])
def test_wide_pass_is_the_general_kernel(layout, n):
    # The wide path of the one-pass statistics against the general kernel on the same
    # rows: counts, sums and ranges to the last bit (signs of zero included), the
    # cross-product to rounding, and both against numpy.
    from reml_engine.frontend.groups import GroupCodes

    p, n_groups = S.WIDE_PASS_COLUMNS + 9, 23
    X, y, codes, shift = _wide_data(n, p, n_groups, layout)
    groups = GroupCodes(codes=codes, levels=pd.Index(range(n_groups)))
    wide = S._wide_pass(X, y, groups, shift)
    general = group_sums_and_cross(X, y, codes, n_groups, shift)
    np.testing.assert_array_equal(wide[0], general[0])
    np.testing.assert_array_equal(wide[1], general[1])
    for got, want in zip(wide[3:], general[3:], strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_allclose(wide[2], general[2], rtol=SUM_ORDER_RTOL, atol=1e-9)
    assert np.array_equal(wide[2], wide[2].T) and wide[2].flags.c_contiguous
    if n:
        expected = _numpy_reference(X, y, codes, n_groups, shift)
        np.testing.assert_allclose(wide[2], expected[2], rtol=SUM_ORDER_RTOL, atol=1e-9)


def test_wide_pass_keeps_a_nan_out_of_the_ranges_but_not_the_sums():
    from reml_engine.frontend.groups import GroupCodes

    X, y, codes, shift = _wide_data(300, S.WIDE_PASS_COLUMNS, 7, "C")
    X[17, 4] = np.nan
    groups = GroupCodes(codes=codes, levels=pd.Index(range(7)))
    counts, sums, cross, lo, hi = S._one_pass(X, y, groups, shift, S._NO_TRANSFORM)
    general = group_sums_and_cross(X, y, codes, 7, shift)
    assert np.isnan(sums[codes[17], 4]) and np.isnan(cross[4, 4])
    assert np.isfinite(lo[4]) and np.isfinite(hi[4])
    np.testing.assert_array_equal(lo, general[3])
    np.testing.assert_array_equal(np.isnan(cross), np.isnan(general[2]))


_WIDE_PASS = S._wide_pass


def test_fit_through_the_wide_pass_is_the_fit_through_the_kernel(monkeypatch):
    # The same fit of a wide design with the wide pass and with the general kernel.
    rng = np.random.default_rng(11)
    n, n_groups = 3 * BLOCK_ROWS + 5, 60
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 40))])
    codes = rng.integers(0, n_groups, n)
    y = X[:, 1:6].sum(axis=1) + rng.normal(size=n_groups)[codes] + rng.normal(size=n)
    calls = []
    monkeypatch.setattr(S, "_wide_pass", lambda *args: calls.append(1) or _WIDE_PASS(*args))
    wide = rl.fit(X, y, codes)
    assert calls
    monkeypatch.setattr(S, "WIDE_PASS_COLUMNS", 10**9)
    general = rl.fit(X, y, codes)
    assert wide.criterion == pytest.approx(general.criterion, rel=1e-12)
    np.testing.assert_allclose(wide.fixef, general.fixef, rtol=1e-9, atol=1e-12)
    assert wide.tau == pytest.approx(general.tau, rel=1e-8)
