"""Where lme4's ``lmer()`` starts: the start rule, in one place.

For a model whose random terms are all intercepts, lme4 1.1's ``mkLmerDevfun`` starts at
``theta_j = sqrt(v_j / v_e)``, with ``v_j = var(ave(y, f_j))`` the sample variance of each
row's level mean of the raw response (weights and offset ignored) and
``v_e = var(y) - sum_j v_j``; at ``theta = 1`` when ``v_e <= 0``. Multiplied by ``n - 1``
the variances are sums of squares: ``theta_j = sqrt(between_j / residual)``, with
``between_j`` the between-level sum of squares of the response for term j and
``residual`` the total sum of squares minus all of them (for one term, the within-group
sum of squares). :func:`lme4_start_theta` is that rule; the functions below feed it from
the statistics of a fit (:func:`lme4_start_from_stats`) or, bit for bit as R computes it,
from the rows (:func:`lme4_start_from_rows`).

Where the search from there stops is :mod:`reml_engine.core.lme4_path` (one term) and
:mod:`reml_engine.varcomp.lme4_start` (several terms).
"""

from __future__ import annotations

import math

import numpy as np

#: lme4's start for a random-intercept term when its moment start does not apply.
LME4_START_THETA = 1.0


def lme4_start_theta(between_ss, residual_ss: float) -> np.ndarray:
    """lme4's start for random-intercept terms: ``sqrt(between_j / residual)``.

    Parameters
    ----------
    between_ss : float or array (k,)
        Per term, the between-level sum of squares of the raw response (``(n - 1)
        var(ave(y, f_j))``). A value that rounding made negative is 0: R's ``var`` of the
        level means never is.
    residual_ss : float
        The total sum of squares of the response minus every term's between part.

    Returns
    -------
    ndarray (k,)
        The start, or ``LME4_START_THETA`` for every term when ``residual_ss`` is not
        positive.
    """
    between = np.maximum(np.atleast_1d(np.asarray(between_ss, dtype=np.float64)), 0.0)
    if not residual_ss > 0 or not np.all(np.isfinite(between)):
        return np.full(len(between), LME4_START_THETA)
    return np.sqrt(between / residual_ss)


def lme4_start_from_stats(group_stats) -> float:
    """lme4's start for one ``(1|f)`` term, from the statistics of the user's columns
    (:class:`~reml_engine.core.statistics.GroupStats`, the response last): the between-
    and within-group sums of squares of the response. Equal to R's value to rounding (a
    fit from statistics alone has no rows to follow R's arithmetic with, see
    :func:`lme4_start_from_rows`)."""
    sums = group_stats.sums[:, -1]
    counts = group_stats.counts.astype(np.float64)
    between = float(sums @ (sums / counts) - sums.sum() ** 2 / counts.sum())
    within = float(group_stats.within_cross()[-1, -1])
    return float(lme4_start_theta(between, within)[0])


def lme4_start_from_rows(y: np.ndarray, codes: np.ndarray) -> float:
    """lme4's start computed as R computes it, from the response and the group codes.

    R's ``mean`` and ``var`` accumulate in long double (80-bit on x86-64, numpy's
    ``longdouble`` there), in row order, ``mean`` with a second correcting pass; ``ave``
    is the mean of each group's rows. Following the same arithmetic gives R's theta0 to
    the last bit, and with it BOBYQA's late ties (a point at exactly ten times the final
    trust radius) fall as in R: what it takes to reproduce lmer's evaluations one by one.
    Which minimum lmer ends in does not hinge on those bits, so fits use the cheaper
    :func:`lme4_start_from_stats` (this one costs two passes in long double).
    """
    y = np.asarray(y, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    means = _r_group_means(y, codes)
    between = _r_var(means[codes])
    return float(lme4_start_theta(between, _r_var(y) - between)[0])


def _r_mean(x: np.ndarray) -> float:
    return float(_r_group_means(x, np.zeros(len(x), dtype=np.int64))[0])


def _r_group_means(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """R's ``mean`` of each group: a long-double sum in row order divided by n, plus the
    mean of the residuals (a second pass, also in row order)."""
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    counts = np.bincount(codes, minlength=n_groups).astype(np.longdouble)
    wide = x.astype(np.longdouble)
    sums = np.zeros(n_groups, dtype=np.longdouble)
    np.add.at(sums, codes, wide)  # unbuffered: in row order, as R's loop
    first = sums / counts
    resid = np.zeros(n_groups, dtype=np.longdouble)
    np.add.at(resid, codes, wide - first[codes])
    return (first + resid / counts).astype(np.float64)


def _r_var(x: np.ndarray) -> float:
    """R's ``var`` of a vector: the mean as R's, then a long-double sum of the double
    products ``(x - mean)^2``, divided by ``n - 1``."""
    centred = x - _r_mean(x)
    squares = (centred * centred).astype(np.longdouble)
    return float(np.cumsum(squares)[-1] / (len(x) - 1)) if len(x) > 1 else math.nan
