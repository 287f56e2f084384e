"""The wide-design paths (issue 13, p in the hundreds) give the general paths' answers.

* :func:`reml_engine.core.criterion._lower_inverse` calls LAPACK's ``dtrtri`` from
  ``LAPACK_INVERSE_MIN_P`` on; below, the compiled forward substitution. Both are compared
  with each other and with ``numpy.linalg.inv`` on the same factors.
* :func:`reml_engine.core.identifiability.rank_decisions` grows its Cholesky factor in place
  and solves with it by forward substitution; the decisions are compared with a direct
  statement of the same rule (a least-squares residual of each column on the kept ones).
"""

from __future__ import annotations

import numpy as np
import pytest

from reml_engine.core import criterion
from reml_engine.core.identifiability import ROUNDING_TOL, rank_decisions
from reml_engine.core.kernels import lower_inverse_batched

#: Two inverses of the same well-conditioned factor differ by rounding only.
SAME_INVERSE_RTOL = 1e-10


def _factors(k: int, p: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, p, 3 * p))
    return np.linalg.cholesky(A @ A.transpose(0, 2, 1) / (3 * p) + np.eye(p))


@pytest.mark.parametrize("p", [criterion.LAPACK_INVERSE_MIN_P - 1, criterion.LAPACK_INVERSE_MIN_P, 150])
def test_lower_inverse_equals_the_kernel_and_numpy(p):
    L = _factors(3, p)
    inverse = criterion._lower_inverse(L[:, :, :])
    np.testing.assert_allclose(inverse, lower_inverse_batched(L), rtol=SAME_INVERSE_RTOL, atol=SAME_INVERSE_RTOL)
    np.testing.assert_allclose(inverse, np.linalg.inv(L), rtol=1e-9, atol=1e-12)
    assert np.all(np.triu(inverse, 1) == 0)


def test_lower_inverse_of_a_strided_view_and_a_singular_factor():
    p = criterion.LAPACK_INVERSE_MIN_P + 10
    L = _factors(2, p + 1, seed=1)
    view = L[:, :p, :p]  # as _evaluate_batch passes it: not contiguous
    np.testing.assert_allclose(criterion._lower_inverse(view), np.linalg.inv(view), rtol=1e-9, atol=1e-12)
    singular = L[:, :p, :p].copy()
    singular[1, 5, 5] = 0.0
    inverse = criterion._lower_inverse(singular)
    assert np.isfinite(inverse[0]).all()
    assert not np.isfinite(inverse[1]).all()  # flagged, as the kernel's inf would be


def _kept_by_least_squares(X: np.ndarray, tol: float) -> list[int]:
    """The sequential rule stated on the rows: keep a column when its residual on the
    kept earlier columns is above tol times its norm."""
    kept: list[int] = []
    for j in range(X.shape[1]):
        column = X[:, j]
        if kept:
            coef = np.linalg.lstsq(X[:, kept], column, rcond=None)[0]
            resid2 = float(np.sum((column - X[:, kept] @ coef) ** 2))
        else:
            resid2 = float(column @ column)
        norm2 = float(column @ column)
        if resid2 > max(tol**2, ROUNDING_TOL**2) * norm2:
            kept.append(j)
    return kept


@pytest.mark.parametrize("p", [5, 80])
def test_rank_decisions_equal_the_rule_on_the_rows(p):
    rng = np.random.default_rng(p)
    X = rng.normal(size=(400, p))
    X[:, 3] = X[:, 0] - 2 * X[:, 1]           # exactly collinear: dropped
    X[:, p - 1] = X[:, 2] + 1e-3 * rng.normal(size=400)  # nearly, far above the tolerance: kept
    if p > 10:
        X[:, 40] = X[:, 10:20].sum(axis=1)
    gram = X.T @ X
    kept, undecided = rank_decisions(gram, np.diag(gram).copy(), tol=1e-7)
    assert kept == _kept_by_least_squares(X, 1e-7)
    assert undecided == []
    assert 3 not in kept and p - 1 in kept and (p <= 10 or 40 not in kept)


@pytest.fixture(scope="module")
def wide_stats():
    import warnings

    import reml_engine as rl

    rng = np.random.default_rng(5)
    n, n_groups, p = 3000, 40, criterion.LAPACK_INVERSE_MIN_P + 6
    codes = rng.integers(0, n_groups, n)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))])
    y = X[:, 1:4].sum(axis=1) + rng.normal(size=n_groups)[codes] + rng.normal(size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return rl.fit(X, y, codes).stats


@pytest.mark.parametrize("REML", [True, False])
def test_wide_beta_and_derivative_equal_the_narrow_path(wide_stats, monkeypatch, REML):
    # From LAPACK_INVERSE_MIN_P on, beta comes from a triangular solve and the trace in
    # the derivative from A^{-1} (dpotri); below, from the explicit factor inverse. The
    # same numbers to rounding on the same statistics, and the derivative is the
    # criterion's slope (central difference).
    taus = np.array([-0.8 / wide_stats.max_size, 0.0, 0.07, 1.3, 40.0])
    assert wide_stats.p >= criterion.LAPACK_INVERSE_MIN_P
    wide = criterion.evaluate(taus, wide_stats, REML)
    monkeypatch.setattr(criterion, "LAPACK_INVERSE_MIN_P", 10**9)
    narrow = criterion.evaluate(taus, wide_stats, REML)
    np.testing.assert_array_equal(wide.criterion, narrow.criterion)
    np.testing.assert_allclose(wide.beta, narrow.beta, rtol=1e-10, atol=1e-12)
    assert np.all(np.abs(wide.derivative - narrow.derivative) <= 1e-10 * narrow.derivative_scale)
    np.testing.assert_allclose(wide.derivative_scale, narrow.derivative_scale, rtol=1e-9)
    h = 1e-6 * np.maximum(np.abs(taus[2:]), 1e-3)
    slope = (criterion.evaluate(taus[2:] + h, wide_stats, REML).criterion
             - criterion.evaluate(taus[2:] - h, wide_stats, REML).criterion) / (2 * h)
    assert np.all(np.abs(wide.derivative[2:] - slope) <= 1e-6 * wide.derivative_scale[2:])


def test_wide_beta_and_trace_flag_a_singular_factor():
    p = criterion.LAPACK_INVERSE_MIN_P
    L = _factors(2, p + 1, seed=4)
    L[1, 7, 7] = 0.0
    D = np.broadcast_to(np.eye(p + 1), (2, p + 1, p + 1))
    beta, trace = criterion._wide_beta_and_trace(L, D, p, True)
    assert np.isfinite(beta[0]).all() and np.isfinite(trace[0])
    assert not np.isfinite(beta[1]).all() and np.isnan(trace[1])
    Lxx = L[0, :p, :p]
    np.testing.assert_allclose(trace[0], np.trace(np.linalg.inv(Lxx @ Lxx.T)), rtol=1e-10)
    np.testing.assert_allclose(beta[0], np.linalg.solve(Lxx.T, L[0, p, :p]), rtol=1e-10)


@pytest.mark.parametrize("noise_tol", [0.0, 1e-12])
def test_blocked_rank_decisions_equal_the_column_by_column_ones(monkeypatch, noise_tol):
    # From RANK_BLOCKED_MIN_P columns on the rule runs block by block: the same columns
    # kept and undecided as column by column, and as the rule stated on the rows.
    from reml_engine.core import identifiability

    rng = np.random.default_rng(21)
    n, p = 900, identifiability.RANK_BLOCKED_MIN_P + 2 * identifiability.RANK_BLOCK_COLUMNS + 9
    X = rng.normal(size=(n, p))
    X[:, 3] = X[:, 0] - 2 * X[:, 1]                                   # dropped, first block
    X[:, 70] = X[:, 10:20].sum(axis=1)                               # on columns of an earlier block
    X[:, 100] = X[:, 66] + X[:, 90] - X[:, 5]                        # inside and before its block
    X[:, 150] = 0.0                                                  # a zero column
    X[:, 200] = X[:, 199] + 1e-4 * rng.normal(size=n)                # nearly, kept
    X[:, p - 1] = X[:, 130:140].sum(axis=1) + 1e-10 * rng.normal(size=n)  # below the tolerance
    gram = X.T @ X
    blocked = rank_decisions(gram, np.diag(gram).copy(), tol=1e-7, noise_tol=noise_tol)
    monkeypatch.setattr(identifiability, "RANK_BLOCKED_MIN_P", 10**9)
    single = rank_decisions(gram, np.diag(gram).copy(), tol=1e-7, noise_tol=noise_tol)
    assert blocked == single
    kept, undecided = blocked
    assert {3, 70, 100, 150, p - 1}.isdisjoint(kept) and {199, 200} <= set(kept)
    if noise_tol == 0.0:
        assert kept == _kept_by_least_squares(X, 1e-7) and undecided == []
    else:  # exactly collinear columns are within the noise band: undecided, not kept
        assert {3, 70, 100} <= set(undecided)
