"""Checks on the data's values, with messages in the user's words (as lme4's ``checkNlevels``).

Each check is a small named function that raises :class:`~reml_engine.errors.ModelDataError`
naming the column, level or count at fault and what to do about it: the response's type
and values, the predictors' values, the numbers of groups and rows.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..core.kernels import column_ranges
from ..errors import ModelDataError, warn
from ..progress import logger
from .columns import column_values, is_number_dtype

#: Rows from which the data checks read the columns in one compiled pass.
KERNEL_CHECK_ROWS = 100_000
#: Close column names suggested when a formula names a column the data do not have.
MAX_SUGGESTIONS = 3
#: Values beyond this magnitude, or spreads below its inverse, risk overflow or
#: underflow in the cross-products (sums of n squares must stay below 1.8e308 and above
#: 2.2e-308, with room for n up to 1e100). Within these bounds (1e12 and 1e-12 included)
#: scale and offset cost no accuracy: the engine centres each column and, where the
#: centred columns are still nearly collinear, recomputes the statistics in a
#: well-conditioned basis (:func:`reml_engine.core.statistics.conditioning_transform`).
MAGNITUDE_LIMIT = 1e100

def check_response(y: np.ndarray, name: str) -> None:
    """The response must be numbers, finite and not constant."""
    check_response_dtype(y.dtype, name)
    # One pass for range and finiteness (the messages below recount what they report).
    lo, hi, nonfinite = _column_ranges(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    if nonfinite[0]:
        check_response_finite(y, name)
    if len(y):
        check_response_varies(float(lo[0]), float(hi[0]), len(y), name)
        check_range(float(lo[0]), float(hi[0]), f"response {name!r}")


def check_response_dtype(dtype, name: str) -> None:
    """The response's dtype must be real numbers (any backend): not text, booleans,
    categories or complex numbers. Judged from the dtype alone, so that a chunked or Dask
    fit can check it before reading a row."""
    if is_number_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return
    raise ModelDataError(f"response {name!r} is not numeric (dtype {dtype}); convert it to numbers first")


def check_response_finite(y: np.ndarray, name: str) -> None:
    """No infinite (or NaN) response among the rows fitted (missing ones were dropped before)."""
    bad = ~np.isfinite(y)
    if bad.any():
        raise ModelDataError(
            f"response {name!r} has {int(bad.sum())} non-finite values (inf or NaN), first at row "
            f"{int(np.flatnonzero(bad)[0])} of the rows fitted; remove those rows (missing values, NaN, are "
            "dropped by lmer's na_action='omit', infinite ones are not)"
        )


def check_response_varies(lo: float, hi: float, nobs: int, name: str) -> None:
    """A constant response (smallest value equal to the largest) has nothing to fit."""
    if lo == hi:
        raise ModelDataError(
            f"response {name!r} is constant ({lo:g} in all {nobs} rows): there is no variation to fit"
        )


def missing_rows(data: pd.DataFrame, used: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
    """The rows with a missing value in a used column (a boolean mask), and the number of
    missing values per column (only the columns that have some)."""
    used = list(used)
    if not data.columns.is_unique:
        missing = data[used].isna()
        bad = missing.to_numpy().any(axis=1)
        return (bad, {}) if not bad.any() else (bad, {c: int(v) for c, v in missing.sum().items() if v})
    # Column by column: selecting the columns first would copy them all (millions of
    # rows per chunk in a chunked fit) only to test them.
    bad = np.zeros(len(data), dtype=bool)
    masks = {}
    for c in dict.fromkeys(used):
        values = column_values(data, c)
        if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
            continue  # numpy integers and booleans have no missing value
        mask = np.isnan(values) if isinstance(values, np.ndarray) and values.dtype.kind == "f" else \
            np.asarray(pd.isna(values), dtype=bool)
        masks[c] = mask
        bad |= mask
    if not bad.any():
        return bad, {}
    return bad, {c: int(mask.sum()) for c, mask in masks.items() if mask.any()}


def _missing_detail(per_column: dict[str, int]) -> str:
    return ", ".join(f"{c!r}: {v}" for c, v in per_column.items())


def refuse_missing(n_bad: int, per_column: dict[str, int], hint: str = "") -> None:
    """``na_action="raise"``: the error counting the rows and the missing values per column."""
    raise ModelDataError(
        f"missing values in {n_bad} rows ({_missing_detail(per_column)}); drop them or use na_action='omit'"
        + (f"; {hint}" if hint else "")
    )


def warn_dropped(n_bad: int, n_rows: int, per_column: dict[str, int]) -> None:
    """``na_action="omit"`` (lme4's default): one warning counting the rows dropped (and
    the same line in the engine's log, :mod:`reml_engine.progress`)."""
    message = f"dropped {n_bad} of {n_rows} rows with missing values ({_missing_detail(per_column)})"
    logger.info(message)
    warn(message)


def check_range(lo: float, hi: float, what: str) -> None:
    """Values and their spread must stay within ``MAGNITUDE_LIMIT`` of 1, judged from the
    smallest and largest value of a column."""
    largest = max(abs(lo), abs(hi))
    spread = hi - lo
    if largest > MAGNITUDE_LIMIT:
        raise ModelDataError(
            f"{what} has values up to {largest:.3g}, too large for double-precision cross-products; "
            f"rescale it (divide by a power of ten) to bring its values within {MAGNITUDE_LIMIT:.0e}"
        )
    if 0 < spread < 1.0 / MAGNITUDE_LIMIT:
        raise ModelDataError(
            f"{what} varies by only {spread:.3g}, too little for double-precision cross-products; "
            "rescale it (multiply by a power of ten)"
        )


def check_response_column(values: pd.Series, name: str) -> None:
    """The response column must hold numbers (not text, booleans or categories).

    The message shows the first value that is not a number, so that a stray ``"n/a"``
    or ``"1,5"`` in a CSV file can be found.
    """
    if pd.api.types.is_bool_dtype(values):
        raise ModelDataError(
            f"response {name!r} is boolean (True/False); reml_engine fits a continuous response "
            "(convert it with .astype(float) if that is what you mean)"
        )
    if is_number_dtype(values.dtype):
        return
    # As objects: Arrow strings coerce to NaN that isna() does not see.
    as_numbers = pd.to_numeric(values.astype(object), errors="coerce")
    bad = as_numbers.isna() & values.notna()
    if bad.any():
        first = bad.to_numpy().nonzero()[0][0]
        raise ModelDataError(
            f"response {name!r} is not numeric (dtype {values.dtype}): {int(bad.sum())} of {len(values)} values "
            f"are not numbers, the first {values.iloc[first]!r} in row {values.index[first]!r}; "
            "convert the column to numbers first"
        )
    raise ModelDataError(
        f"response {name!r} holds numbers stored as {values.dtype}; convert it with pd.to_numeric first"
    )


def suggest_columns(name: str, columns) -> str:
    """`` (did you mean 'x1'?)`` for a misspelt column name, or an empty string."""
    close = difflib.get_close_matches(name, [str(c) for c in columns], n=MAX_SUGGESTIONS)
    if not close:
        return ""
    return f" (did you mean {' or '.join(map(repr, close))}?)"


def _column_ranges(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest and largest value and count of non-finite values, per column (the
    ranges are meaningful only for columns without non-finite values).

    Large arrays take one compiled pass over the rows (numpy would read a C-ordered X
    once per column and statistic); small ones stay in numpy, which needs no kernel.
    """
    if X.shape[0] >= KERNEL_CHECK_ROWS:
        return column_ranges(X)
    nonfinite = (~np.isfinite(X)).sum(axis=0)
    if nonfinite.any() or X.shape[0] == 0:
        # The ranges are only read when every value is finite.
        return np.full(X.shape[1], np.inf), np.full(X.shape[1], -np.inf), nonfinite
    return X.min(axis=0), X.max(axis=0), nonfinite


def check_design_finite(X: np.ndarray, names: Sequence[str]) -> None:
    """Every predictor value must be finite, and within the magnitude limits."""
    if X.shape[0] == 0:
        return
    lo, hi, nonfinite = _column_ranges(np.asarray(X, dtype=np.float64))
    if nonfinite.any():
        finite = np.isfinite(X)
        bad_cols = [names[j] for j in np.flatnonzero(~finite.all(axis=0))]
        n_bad = int((~finite.all(axis=1)).sum())
        raise ModelDataError(
            f"predictor column(s) {', '.join(map(repr, bad_cols))} have non-finite values (inf or NaN) "
            f"in {n_bad} rows; remove or impute them"
        )
    for j, name in enumerate(names):
        check_range(float(lo[j]), float(hi[j]), f"predictor column {name!r}")


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


def check_values(stats, X: np.ndarray, y: np.ndarray, names: Sequence[str], response_name: str) -> None:
    """The data checks of :func:`check_response` and :func:`check_design_finite`, read
    off the statistics of the one pass instead of a pass of their own.

    A non-finite value makes the sums or the ranges non-finite; only then are the rows
    read again, to name the columns and count the rows in the message.
    """
    finite = (
        np.isfinite(stats.cross).all()
        and np.isfinite(stats.sums).all()
        and np.isfinite(stats.lo).all()
        and np.isfinite(stats.hi).all()
    )
    if not finite:
        check_response(y, response_name)
        check_design_finite(X, names)
        raise ModelDataError(
            "the cross-products of the data overflow double precision; rescale the response and predictors"
        )
    lo, hi = stats.lo, stats.hi
    if len(y):
        check_response_varies(float(lo[-1]), float(hi[-1]), len(y), response_name)
        check_range(float(lo[-1]), float(hi[-1]), f"response {response_name!r}")
    for j, name in enumerate(names):
        check_range(float(lo[j]), float(hi[j]), f"predictor column {name!r}")


def check_responses_finite(Y: np.ndarray, names: tuple[str, ...]) -> None:
    """A :class:`ModelDataError` naming the responses with non-finite values. The fit
    calls it only when a response's sum of squares from its one pass is not finite
    (a non-finite value makes it so; one that overflowed only costs this element-wise
    test), so a finite Y is not read an extra time."""
    bad = ~np.isfinite(Y)
    if bad.any():
        per_column = bad.sum(axis=0)
        shown = ", ".join(f"{names[j]!r}: {int(per_column[j])}" for j in np.flatnonzero(per_column)[:10])
        raise ModelDataError(
            f"Y has non-finite values (inf or NaN) in {int((per_column > 0).sum())} of its {len(names)} responses "
            f"({shown}); rl.fit does not drop rows: remove them, or fit from a DataFrame with "
            "rl.lmer('cbind(y1, y2) ~ ...', data), which fits each response on its own complete rows"
        )
