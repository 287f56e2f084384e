"""Data checks with messages in the user's words (as lme4's ``checkNlevels``,
``chkRank.drop.cols`` and ``checkScaleX``).

Each check is a small named function that raises :class:`ModelDataError` (a
``ValueError``) or warns with :class:`ModelDataWarning`, naming the column, level or
count at fault and what to do about it.
"""

from __future__ import annotations

import difflib
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .kernels import column_ranges

#: lme4's default tolerance for rank deficiency of the fixed-effect design (qr tol).
RANK_TOL = 1e-7
#: Warn when predictor standard deviations differ by more than this factor, or when one
#: is more than this factor away from 1 (lme4's checkScaleX uses 1e3 too).
SCALE_RATIO_TOL = 1e3
#: A column whose residual, after projecting out the kept columns, is at most this
#: fraction of its raw norm is rounding noise: each stored value carries a relative error
#: up to eps / 2, so no residual below a small multiple of eps * norm carries
#: information (used next to RANK_TOL, which is relative to the centred norm).
ROUNDING_TOL = 100 * np.finfo(float).eps
#: What a column's residual, computed from one-pass cross-products, may be off by, as a
#: fraction of its squared norm (about the statistics' shift). The rounding of the sums
#: and of the Cholesky factor reaches about 1e-13 of it (measured for 500 to 500,000
#: rows, shifted columns, chunks with a poor shift: 1.3e-14 to 1.0e-13 for exactly
#: collinear columns). lme4's tolerance (``RANK_TOL``, 1e-14 of the squared norm) lies
#: below that, so a column keeping no more than this much of its squared norm cannot be
#: told from a linear combination of the earlier columns from the cross-products alone:
#: it is decided on statistics read again from the rows in a basis where its residual is
#: computed row by row (:func:`reml_engine.model.fit_stats`), or, when the rows can be
#: read only once, dropped with a warning saying so.
ONE_PASS_RANK_TOL = 1e-12
#: Rows from which the data checks read the columns in one compiled pass.
KERNEL_CHECK_ROWS = 100_000
#: Close column names suggested when a formula names a column the data do not have.
MAX_SUGGESTIONS = 3
#: Values beyond this magnitude, or spreads below its inverse, risk overflow or
#: underflow in the cross-products (sums of n squares must stay below 1.8e308 and above
#: 2.2e-308, with room for n up to 1e100). Within these bounds (1e12 and 1e-12 included)
#: scale and offset cost no accuracy: the engine centres each column and, where the
#: centred columns are still nearly collinear, recomputes the statistics in a
#: well-conditioned basis (:func:`reml_engine.stats.conditioning_transform`).
MAGNITUDE_LIMIT = 1e100


class ModelDataError(ValueError):
    """The data cannot be fitted as given; the message says why and what to do."""


class ModelDataWarning(UserWarning):
    """The fit goes on, but the data were changed or may be a problem (rows dropped,
    columns dropped, scales far apart)."""


def check_bool(value, name: str) -> bool:
    """A True/False argument: a string such as ``"false"`` or a number is an error, not
    a value read by its truthiness."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ModelDataError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_count(value, name: str, minimum: int = 1) -> int:
    """A whole number of draws, replicates or simulations, at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ModelDataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed, name: str = "seed"):
    """A seed numpy's ``default_rng`` takes: None, a non-negative integer, a
    ``SeedSequence`` or a ``Generator``."""
    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)) and seed >= 0:
        return int(seed)
    raise ModelDataError(
        f"{name} must be None, a non-negative integer or a numpy Generator, got {seed!r} ({type(seed).__name__})"
    )


def warn(message: str) -> None:
    warnings.warn(message, ModelDataWarning, stacklevel=4)


def check_response(y: np.ndarray, name: str) -> None:
    """The response must be finite and not constant."""
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ModelDataError(f"response {name!r} is not numeric (dtype {y.dtype}); convert it to numbers first")
    # One pass for range and finiteness (the messages below recount what they report).
    lo, hi, nonfinite = _column_ranges(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    if nonfinite[0]:
        bad = ~np.isfinite(y)
        raise ModelDataError(
            f"response {name!r} has {int(bad.sum())} non-finite values (inf or NaN), first at row "
            f"{int(np.flatnonzero(bad)[0])} of the rows fitted; remove those rows (missing values, NaN, are "
            "dropped by lmer's na_action='omit', infinite ones are not)"
        )
    if len(y) and lo[0] == hi[0]:
        raise ModelDataError(
            f"response {name!r} is constant ({float(y[0]):g} in all {len(y)} rows): there is no variation to fit"
        )
    if len(y):
        check_range(float(lo[0]), float(hi[0]), f"response {name!r}")


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
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
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


def check_dof(nobs: int, p: int, REML: bool) -> None:
    """Enough observations for the fixed effects and a residual variance."""
    if nobs <= p:
        raise ModelDataError(
            f"{nobs} observations for {p} fixed effects: the residual variance is not identified"
            + (" under REML" if REML else "")
        )


def select_full_rank_columns(
    gram: np.ndarray,
    raw_norm2: np.ndarray,
    tol: float = RANK_TOL,
    centred_norm2: np.ndarray | None = None,
) -> list[int]:
    """Columns kept by a pivot-free sequential QR, as R's ``qr(X, LAPACK = FALSE)``.

    A column is dropped when the norm of its residual, after projecting it on the kept
    earlier columns, is at most ``tol`` times its norm; later columns are dropped in
    favour of earlier ones, as lme4 does. See :func:`rank_decisions` for the parameters.
    """
    return rank_decisions(gram, raw_norm2, tol, centred_norm2)[0]


def rank_decisions(
    gram: np.ndarray,
    raw_norm2: np.ndarray,
    tol: float = RANK_TOL,
    centred_norm2: np.ndarray | None = None,
    noise_tol: float = 0.0,
) -> tuple[list[int], list[int]]:
    """The columns a pivot-free sequential QR keeps, and those it cannot decide.

    A column is dropped when the norm of its residual, after projecting it on the kept
    earlier columns, is at most ``tol`` times its norm; later columns are dropped in
    favour of earlier ones, as lme4 does.

    With an intercept (``centred_norm2`` given), ``tol`` is relative to the norm of the
    *centred* column: ``[1, x]`` and ``[1, x - c]`` span the same space, so a shift of x
    by 1e12 does not make x look collinear with the intercept (lme4 drops it). A residual
    at the level of the rounding of the stored values (``ROUNDING_TOL`` times the raw
    norm) is still taken as zero.

    The squared residual read off ``gram`` may be off by ``noise_tol`` times the
    column's diagonal entry of ``gram``: a column whose residual is that close to the
    threshold is *undecided* (:data:`ONE_PASS_RANK_TOL`), and left out of the
    projections of the later columns, as a dropped one.

    Parameters
    ----------
    gram : (p, p) cross-product of the columns, possibly about a shift absorbed by an
        earlier kept intercept column, or of the columns in another basis in which each
        column differs from the original one by a combination of earlier columns (Schur
        complements are unchanged by either).
    raw_norm2 : (p,) squared norms of the original columns.
    tol : float
        Relative rank tolerance (lme4's default 1e-7).
    centred_norm2 : (p,) or None
        Squared norms of the centred original columns (the intercept's own: n).
    noise_tol : float
        How far off the squared residuals may be, relative to ``diag(gram)``.

    Returns
    -------
    kept, undecided : lists of column indices
    """
    scale2 = raw_norm2 if centred_norm2 is None else centred_norm2
    kept: list[int] = []
    undecided: list[int] = []
    chol = np.zeros((0, 0))
    for j in range(gram.shape[0]):
        if raw_norm2[j] <= 0 or scale2[j] <= 0:
            continue
        if kept:
            g = gram[np.ix_(kept, [j])][:, 0]
            w = np.linalg.solve(chol, g)
            resid2 = gram[j, j] - w @ w
        else:
            w = np.zeros(0)
            resid2 = gram[j, j]
        threshold = max((tol**2) * scale2[j], (ROUNDING_TOL**2) * raw_norm2[j])
        noise = noise_tol * gram[j, j]
        if resid2 > threshold + noise:
            d = np.sqrt(resid2)
            new = np.zeros((len(kept) + 1, len(kept) + 1))
            new[: len(kept), : len(kept)] = chol
            new[len(kept), : len(kept)] = w
            new[len(kept), len(kept)] = d
            chol = new
            kept.append(j)
        elif resid2 + noise > threshold:
            undecided.append(j)
    return kept, undecided


def warn_dropped_columns(dropped: Sequence[str]) -> None:
    if dropped:
        warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(map(repr, dropped))} "
            "(a linear combination of earlier columns)"
        )


def undecided_columns_message(undecided: Sequence[str]) -> str:
    """Why columns were dropped that one pass over the rows could not decide on."""
    if not undecided:
        return ""
    return (
        f"dropping {len(undecided)} column{'s' if len(undecided) > 1 else ''} that the statistics cannot tell from a "
        f"linear combination of the earlier columns: {', '.join(map(repr, undecided))} keep at most "
        f"{ONE_PASS_RANK_TOL:.0e} of their squared norm after projecting those out, within the rounding of "
        "cross-products read in one pass, and these rows cannot be read again to decide at lme4's tolerance; fit "
        "from data that can be read twice (a list of chunks, a function returning the chunks, files, a DataFrame), "
        "or centre the predictors (also inside interactions)"
    )


def check_scales(
    sd: np.ndarray,
    names: Sequence[str],
    intercept_index: int | None,
    binary: np.ndarray | None = None,
) -> None:
    """Warn when predictors are on very different scales (as lme4's checkScaleX).

    Continuous predictors (not the intercept, not 0/1 indicators) warn when the ratio of
    two standard deviations, or one standard deviation itself, is beyond
    ``SCALE_RATIO_TOL`` or its inverse. Scales alone cost the fit no accuracy (the
    criterion's Cholesky factor does not depend on the scaling of the columns, and the
    engine centres them); digits lost to near-collinearity are reported by the fit
    itself. The warning is about coefficients too large or small to read.
    """
    idx = [
        j for j in range(len(sd))
        if j != intercept_index and sd[j] > 0 and (binary is None or not binary[j])
    ]
    if not idx:
        return
    sds = sd[idx]
    big = names[idx[int(np.argmax(sds))]]
    small = names[idx[int(np.argmin(sds))]]
    ratio = sds.max() / sds.min()
    if ratio > SCALE_RATIO_TOL:
        warn(
            f"predictors are on very different scales: sd of {big!r} is {ratio:.3g} times that of "
            f"{small!r}; scales alone do not affect the estimates, but consider rescaling for interpretable "
            "coefficients"
        )
    elif sds.max() > SCALE_RATIO_TOL or sds.min() < 1.0 / SCALE_RATIO_TOL:
        name, value = (big, sds.max()) if sds.max() > SCALE_RATIO_TOL else (small, sds.min())
        warn(
            f"predictor {name!r} has standard deviation {value:.3g}, far from 1; scales alone do not affect "
            "the estimates, but consider rescaling it for interpretable coefficients"
        )


#: Eigenvalues of the scaled within-group cross-product of X below this are zero: the
#: direction is constant within every group.
BETWEEN_ONLY_TOL = 1e-10


def check_identifiable(within_xx: np.ndarray, norm2: np.ndarray, ngroups: int, group_name: str) -> None:
    """The random intercept must not be confounded with the fixed effects.

    Directions of X constant within every group live in the span of the group
    indicators; when there are as many of them as groups, the fixed effects absorb every
    group mean and var_group is not identified.

    ``norm2`` are the columns' squared norms about their means (the intercept's, which is
    zero, replaced by its raw one): a column's within-group part is judged against its
    own variation, so that a predictor far from 0 (x ~ 1e6 varying by 1 within groups)
    is not taken for a constant.
    """
    scale = 1.0 / np.sqrt(np.maximum(norm2, np.finfo(float).tiny))
    scaled = within_xx * np.outer(scale, scale)
    between_only = int((np.linalg.eigvalsh(scaled) <= BETWEEN_ONLY_TOL).sum()) if len(scaled) else 0
    if between_only >= ngroups:
        raise ModelDataError(
            f"the fixed effects have {between_only} directions constant within groups, as many as the "
            f"{ngroups} levels of {group_name!r}: they fit every group mean exactly, so the random intercept "
            "is confounded with them; remove group-level predictors or the random term"
        )


#: A within-group residual sum of squares at or below this fraction of the response's
#: total sum of squares is rounding: the fixed effects fit the response exactly within groups.
EXACT_FIT_TOL = 1e-12


def check_residual_variance(within: np.ndarray, total_yy: float, response_name: str, group_name: str) -> None:
    """The residual variance must be identified: the within-group regression of the
    response on the fixed effects must leave a residual."""
    p = within.shape[0] - 1
    Wxx, Wxy, Wyy = within[:p, :p], within[:p, p], within[p, p]
    if p:
        coef, *_ = np.linalg.lstsq(Wxx, Wxy, rcond=None)
        resid = Wyy - Wxy @ coef
    else:
        resid = Wyy
    if resid <= EXACT_FIT_TOL * total_yy:
        raise ModelDataError(
            f"the fixed effects fit {response_name!r} exactly within every group of {group_name!r} "
            "(no residual variation left): the residual variance is not identified"
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
    if len(y) and lo[-1] == hi[-1]:
        raise ModelDataError(
            f"response {response_name!r} is constant ({float(lo[-1]):g} in all {len(y)} rows): "
            "there is no variation to fit"
        )
    if len(y):
        check_range(float(lo[-1]), float(hi[-1]), f"response {response_name!r}")
    for j, name in enumerate(names):
        check_range(float(lo[j]), float(hi[j]), f"predictor column {name!r}")


#: Tolerance, relative to the number of rows, on sum(x^2) = sum(x) for an indicator column.
BINARY_SUM_RTOL = 1e-9


def binary_columns_from_stats(stats) -> np.ndarray | None:
    """Which X columns hold only 0 and 1, from the statistics: values in [0, 1] with
    ``sum(x^2) == sum(x)``, which holds only for 0 and 1."""
    if stats.lo is None or stats.hi is None:
        return None
    squares = np.diag(stats.raw_cross)[:-1]
    totals = (stats.sums.sum(axis=0) + stats.nobs * stats.shift)[:-1]
    in_unit = (stats.lo[:-1] >= 0.0) & (stats.hi[:-1] <= 1.0)
    return in_unit & (np.abs(squares - totals) <= BINARY_SUM_RTOL * max(stats.nobs, 1))


def intercept_from_stats(stats) -> int | None:
    """Index of the first X column that is all ones, from the column ranges."""
    if stats.lo is None:
        return None
    ones = np.flatnonzero((stats.lo[:-1] == 1.0) & (stats.hi[:-1] == 1.0))
    return int(ones[0]) if len(ones) else None
