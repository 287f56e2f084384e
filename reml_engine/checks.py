"""Data checks with messages in the user's words (as lme4's ``checkNlevels``,
``chkRank.drop.cols`` and ``checkScaleX``).

Each check is a small named function that raises :class:`ModelDataError` (a
``ValueError``) or warns with :class:`ModelDataWarning`, naming the column, level or
count at fault and what to do about it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

#: lme4's default tolerance for rank deficiency of the fixed-effect design (qr tol).
RANK_TOL = 1e-7
#: Warn when predictor standard deviations differ by more than this factor (lme4's
#: checkScaleX uses 1e3 too).
SCALE_RATIO_TOL = 1e3


class ModelDataError(ValueError):
    """The data cannot be fitted as given; the message says why and what to do."""


class ModelDataWarning(UserWarning):
    """The fit goes on, but the data were changed or may be a problem (rows dropped,
    columns dropped, scales far apart)."""


def warn(message: str) -> None:
    warnings.warn(message, ModelDataWarning, stacklevel=4)


def check_response(y: np.ndarray, name: str) -> None:
    """The response must be finite and not constant."""
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ModelDataError(f"response {name!r} is not numeric (dtype {y.dtype}); convert it to numbers first")
    bad = ~np.isfinite(y)
    if bad.any():
        raise ModelDataError(
            f"response {name!r} has {int(bad.sum())} non-finite values (inf or NaN), first at row "
            f"{int(np.flatnonzero(bad)[0])}; remove those rows or pass na_action='omit' for NaN"
        )
    if len(y) and np.all(y == y[0]):
        raise ModelDataError(f"response {name!r} is constant ({y[0]!r} in all {len(y)} rows): nothing to fit")


def check_design_finite(X: np.ndarray, names: Sequence[str]) -> None:
    """Every predictor value must be finite."""
    finite = np.isfinite(X)
    if not finite.all():
        bad_cols = [names[j] for j in np.flatnonzero(~finite.all(axis=0))]
        n_bad = int((~finite.all(axis=1)).sum())
        raise ModelDataError(
            f"predictor column(s) {', '.join(map(repr, bad_cols))} have non-finite values (inf or NaN) "
            f"in {n_bad} rows; remove or impute them"
        )


def check_groups(nobs: int, ngroups: int, group_name: str) -> None:
    """At least two groups, and fewer groups than observations (lme4's checkNlevels)."""
    if nobs == 0:
        raise ModelDataError("no observations to fit (empty data, or every row had missing values)")
    if ngroups < 2:
        raise ModelDataError(
            f"grouping factor {group_name!r} has {ngroups} level; a random intercept needs at least 2 groups"
        )
    if ngroups >= nobs:
        raise ModelDataError(
            f"grouping factor {group_name!r} has {ngroups} levels for {nobs} observations: every group is a "
            "single observation, so the group variance cannot be told apart from the residual variance"
        )


def check_dof(nobs: int, p: int, REML: bool) -> None:
    """Enough observations for the fixed effects and a residual variance."""
    if nobs <= p:
        raise ModelDataError(
            f"{nobs} observations for {p} fixed effects: the residual variance is not identified"
            + (" under REML" if REML else "")
        )


def select_full_rank_columns(gram: np.ndarray, raw_norm2: np.ndarray, tol: float = RANK_TOL) -> list[int]:
    """Columns kept by a pivot-free sequential QR, as R's ``qr(X, LAPACK = FALSE)``.

    A column is dropped when the norm of its residual, after projecting it on the kept
    earlier columns, is at most ``tol`` times its own norm; later columns are dropped in
    favour of earlier ones, as lme4 does.

    Parameters
    ----------
    gram : (p, p) cross-product of the columns, possibly about a shift absorbed by an
        earlier kept intercept column (Schur complements are unchanged by it).
    raw_norm2 : (p,) squared norms of the original columns.
    """
    kept: list[int] = []
    chol = np.zeros((0, 0))
    for j in range(gram.shape[0]):
        if raw_norm2[j] <= 0:
            continue
        if kept:
            g = gram[np.ix_(kept, [j])][:, 0]
            w = np.linalg.solve(chol, g) if len(kept) else g
            resid2 = gram[j, j] - w @ w
        else:
            w = np.zeros(0)
            resid2 = gram[j, j]
        if resid2 > (tol**2) * raw_norm2[j]:
            d = np.sqrt(resid2)
            new = np.zeros((len(kept) + 1, len(kept) + 1))
            new[: len(kept), : len(kept)] = chol
            new[len(kept), : len(kept)] = w
            new[len(kept), len(kept)] = d
            chol = new
            kept.append(j)
    return kept


def warn_dropped_columns(dropped: Sequence[str]) -> None:
    if dropped:
        warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(map(repr, dropped))} "
            "(a linear combination of earlier columns)"
        )


def check_scales(sd: np.ndarray, names: Sequence[str], intercept_index: int | None) -> None:
    """Warn when predictors are on very different scales (lme4's checkScaleX)."""
    idx = [j for j in range(len(sd)) if j != intercept_index and sd[j] > 0]
    if len(idx) < 2:
        return
    sds = sd[idx]
    ratio = sds.max() / sds.min()
    if ratio > SCALE_RATIO_TOL:
        big = names[idx[int(np.argmax(sds))]]
        small = names[idx[int(np.argmin(sds))]]
        warn(
            f"predictors are on very different scales: sd of {big!r} is {ratio:.3g} times that of "
            f"{small!r}; the fit is exact, but consider rescaling for interpretable coefficients"
        )
