"""What the statistics must show before the criterion is minimized (as lme4's
``chkRank.drop.cols`` and ``checkScaleX``): which columns are linearly independent, that
the random intercept and the residual variance are identified, and that the predictors'
scales are readable.

Each check reads the sufficient statistics, not the rows, so it is the same for a fit in
memory and one from chunks; it raises :class:`~reml_engine.errors.ModelDataError` or warns
with :class:`~reml_engine.errors.ModelDataWarning`, naming the column or count at fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ModelDataError, warn
from ..progress import logger
from .blas import solve_lower

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
#: computed row by row (:func:`reml_engine.core.problem.criterion_problem`), or, when the
#: rows can be read only once, dropped with a warning saying so.
ONE_PASS_RANK_TOL = 1e-12


#: From this many columns on, :func:`rank_decisions` takes the columns in blocks of
#: ``RANK_BLOCK_COLUMNS``: each block is solved against the factor of the columns kept
#: before it in one call (BLAS-3), the columns kept inside the block are added one by
#: one. Below, each column is solved alone (the factor's leading block is copied for
#: LAPACK at every column: 0.33 s of copies at p = 1001).
RANK_BLOCKED_MIN_P = 128
RANK_BLOCK_COLUMNS = 64


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
    # The Cholesky factor of the kept columns' gram grows in place, one row per kept
    # column; each new column needs one forward substitution (O(k^2)), so p columns
    # cost O(p^3) in all (a general solve per column cost O(p^4): 38 s at p = 1001).
    chol = np.zeros(gram.shape)
    p = gram.shape[0]
    block = RANK_BLOCK_COLUMNS if p >= RANK_BLOCKED_MIN_P else max(p, 1)
    for start in range(0, p, block):
        columns = range(start, min(start + block, p))
        # The block's columns solved against the factor of the columns kept before it,
        # all at once (one triangular solve with many right-hand sides); the columns kept
        # inside the block are added one by one below.
        k0 = len(kept)
        before = solve_lower(chol[:k0, :k0], gram[np.ix_(kept, columns)]) if k0 and block < p else None
        for j in columns:
            if raw_norm2[j] <= 0 or scale2[j] <= 0:
                continue
            k = len(kept)
            if before is not None:
                w = np.empty(k)
                w[:k0] = before[:, j - start]
                if k > k0:
                    inside = gram[kept[k0:], j] - chol[k0:k, :k0] @ w[:k0]
                    w[k0:] = solve_lower(chol[k0:k, k0:k], inside)
                resid2 = gram[j, j] - w @ w
            elif kept:
                g = gram[kept, j]
                w = solve_lower(chol[:k, :k], g)
                resid2 = gram[j, j] - w @ w
            else:
                w = np.zeros(0)
                resid2 = gram[j, j]
            threshold = max((tol**2) * scale2[j], (ROUNDING_TOL**2) * raw_norm2[j])
            noise = noise_tol * gram[j, j]
            if resid2 > threshold + noise:
                chol[k, :k] = w
                chol[k, k] = np.sqrt(resid2)
                kept.append(j)
            elif resid2 + noise > threshold:
                undecided.append(j)
    return kept, undecided


def warn_dropped_columns(dropped: Sequence[str]) -> None:
    """lme4's warning for the columns its rank check drops (also logged, at INFO)."""
    if dropped:
        message = (
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''}: {', '.join(map(repr, dropped))} "
            "(a linear combination of earlier columns)"
        )
        logger.info(message)
        warn(message)


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


#: :func:`_clearly_left` vouches for a residual only when every pivot of the Cholesky
#: factor keeps at least this fraction of its column's squared norm (the factor's
#: rounding then stays far below the residual), and the residual is above this many
#: times the threshold; otherwise the least-squares solution decides.
CLEAR_PIVOT_TOL = 1e-8
CLEAR_RESIDUAL_FACTOR = 1e3


def _clearly_left(Wxx: np.ndarray, Wxy: np.ndarray, Wyy: float, threshold: float) -> bool:
    """True when the within-group regression surely leaves more than ``threshold``: the
    residual ``Wyy - Wxy' Wxx^+ Wxy`` from the Cholesky factor of ``Wxx`` over its columns
    with a within-group part (the others are zero), one ``p^3 / 3`` factorization where
    the least-squares solution (SVD) costs many times that (0.25 s at p = 1001). False
    decides nothing: a factor that fails or has a small pivot (nearly dependent columns),
    or a residual near the threshold, go to the least-squares solution."""
    live = np.flatnonzero(np.diag(Wxx) > 0)
    if not len(live):
        return Wyy > CLEAR_RESIDUAL_FACTOR * threshold
    sub = Wxx[np.ix_(live, live)]
    try:
        L = np.linalg.cholesky(sub)
    except np.linalg.LinAlgError:
        return False
    if not np.all(np.diag(L) ** 2 >= CLEAR_PIVOT_TOL * np.diag(sub)):
        return False
    z = solve_lower(L, Wxy[live])
    return bool(Wyy - z @ z > CLEAR_RESIDUAL_FACTOR * threshold)


def check_residual_variance(within: np.ndarray, total_yy: float, response_name: str, group_name: str) -> None:
    """The residual variance must be identified: the within-group regression of the
    response on the fixed effects must leave a residual."""
    p = within.shape[0] - 1
    Wxx, Wxy, Wyy = within[:p, :p], within[:p, p], within[p, p]
    if p and _clearly_left(Wxx, Wxy, Wyy, EXACT_FIT_TOL * total_yy):
        return
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


#: Tolerance, relative to the number of rows, on sum(x^2) = sum(x) for an indicator column.
BINARY_SUM_RTOL = 1e-9


def binary_columns_from_stats(stats) -> np.ndarray | None:
    """Which X columns hold only 0 and 1, from the statistics: values in [0, 1] with
    ``sum(x^2) == sum(x)``, which holds only for 0 and 1."""
    if stats.lo is None or stats.hi is None:
        return None
    squares = np.diag(stats.raw_cross)[:-1]
    totals = (stats.column_totals + stats.nobs * stats.shift)[:-1]
    in_unit = (stats.lo[:-1] >= 0.0) & (stats.hi[:-1] <= 1.0)
    return in_unit & (np.abs(squares - totals) <= BINARY_SUM_RTOL * max(stats.nobs, 1))


def intercept_from_stats(stats) -> int | None:
    """Index of the first X column that is all ones, from the column ranges."""
    if stats.lo is None:
        return None
    ones = np.flatnonzero((stats.lo[:-1] == 1.0) & (stats.hi[:-1] == 1.0))
    return int(ones[0]) if len(ones) else None
