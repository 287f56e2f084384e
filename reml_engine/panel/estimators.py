"""The classical panel estimators, from a fit's sufficient statistics: no dummies, no refit.

For ``y = X beta + b_g + e`` the three least-squares estimators people compare with the
random-intercept fit use three parts of the same cross-products:

* **within** (fixed effects; ``lm(y ~ x + factor(g))``): the within-group
  cross-product ``W`` of ``[X | y]`` alone. Columns that are constant within every group
  (the intercept, group-level predictors) are absorbed by the group dummies and have no
  within estimate. ``beta_W = W_xx^-1 W_xy``, residual variance
  ``(W_yy - W_yx beta_W) / (n - G - k)`` with ``k`` within-varying columns.
* **between** (``lm(ybar ~ xbar)`` on one row per group): the group means.
* **pooled** (``lm(y ~ x)``): the total cross-product ``W + sum_u B_u``, which is the
  generalized least squares of the model at ``tau = 0``.

The random-intercept GLS estimate is a matrix-weighted mix of within and between:
``X'H^-1X = W + sum_u B_u / (1 + n_u tau)``, from pooled at ``tau = 0`` to within as
``tau -> infinity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.criterion import fixed_effects
from ..core.identifiability import RANK_TOL, select_full_rank_columns
from ..core.parametrization import standard_errors

#: A column varies within groups when its within-group sum of squares exceeds this
#: fraction of its total sum of squares about the column mean (the one-pass formula
#: leaves rounding noise of order machine epsilon for constant columns).
WITHIN_VARYING_TOL = 1e-10


@dataclass(frozen=True)
class LeastSquaresFit:
    """One least-squares estimator.

    Attributes
    ----------
    name : str
        ``"pooled"``, ``"between"`` or ``"within"``.
    fixef, se : pandas.Series
        Coefficients it estimates (the within estimator has no intercept and no
        group-level columns).
    vcov : pandas.DataFrame
    sigma2 : float
        Residual variance of the regression (for ``between``: of the group means).
    df_resid : int
    nobs : int
        Rows of the regression (groups for ``between``).
    """

    name: str
    fixef: pd.Series
    vcov: pd.DataFrame
    sigma2: float
    df_resid: int
    nobs: int

    @property
    def se(self) -> pd.Series:
        return standard_errors(self.vcov)


def _solve(gram: np.ndarray, rhs: np.ndarray, yy: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Normal equations: coefficients, (X'X)^-1 and the residual sum of squares."""
    inverse = np.linalg.inv(gram)
    inverse = 0.5 * (inverse + inverse.T)
    beta = inverse @ rhs
    rss = max(float(yy - rhs @ beta), 0.0)
    return beta, inverse, rss


def within_varying_columns(fit) -> list[int]:
    """Columns of the fit's design that vary within groups, full rank among themselves."""
    gs = fit.group_stats
    p = gs.q - 1
    W = gs.within_cross()
    W = 0.5 * (W + W.T)
    # Sum of squares about the column mean: total cross-product minus n * mean^2.
    about_mean = np.diag(gs.cross) - gs.sums.sum(axis=0) ** 2 / gs.nobs
    varying = [j for j in range(p) if W[j, j] > WITHIN_VARYING_TOL * max(about_mean[j], 0.0)]
    kept = select_full_rank_columns(W[np.ix_(varying, varying)], np.diag(W)[varying], RANK_TOL)
    return [varying[i] for i in kept]


def within_estimator(fit) -> LeastSquaresFit:
    """The fixed-effects (within) estimator: OLS with one dummy per group.

    Computed from the within cross-product ``W`` of the fit's statistics.

    Raises
    ------
    ValueError
        When no column varies within groups, or there are no residual degrees of
        freedom left.
    """
    columns = within_varying_columns(fit)
    names = [fit.fixef.index[j] for j in columns]
    if not columns:
        raise ValueError(
            "no fixed-effect column varies within groups: the within (fixed-effects) estimator has nothing "
            "to estimate"
        )
    # The user's columns (the fit's own statistics may be in another basis).
    W = fit.group_stats.within_cross()
    W = 0.5 * (W + W.T)
    y = W.shape[0] - 1
    df_resid = fit.nobs - fit.ngroups - len(columns)
    if df_resid <= 0:
        raise ValueError(
            f"{fit.nobs} observations in {fit.ngroups} groups leave no residual degrees of freedom for "
            f"{len(columns)} within-group slopes"
        )
    beta, inverse, rss = _solve(W[np.ix_(columns, columns)], W[columns, y], W[y, y])
    sigma2 = rss / df_resid
    return LeastSquaresFit(
        "within",
        pd.Series(beta, index=names, name="fixef"),
        pd.DataFrame(sigma2 * inverse, index=names, columns=names),
        sigma2,
        df_resid,
        fit.nobs,
    )


def pooled_estimator(fit) -> LeastSquaresFit:
    """Ordinary least squares ignoring the groups (the model at var_group = 0)."""
    beta, vcov, sigma2 = fixed_effects(0.0, fit.stats, REML=True)
    to_user = fit.parametrization
    return LeastSquaresFit(
        "pooled", to_user.coefficients(beta), to_user.covariance(vcov), sigma2, fit.nobs - fit.stats.p, fit.nobs
    )


def between_estimator(fit) -> LeastSquaresFit:
    """OLS of the group means of y on the group means of X, one row per group.

    Columns whose group means are linearly dependent on earlier ones (a
    ``within(x)`` column has all group means zero) are left out.
    """
    gs = fit.group_stats
    counts = gs.counts.astype(np.float64)
    means = gs.sums / counts[:, None] + gs.shift[None, :]
    Xm, ym = means[:, :-1], means[:, -1]
    gram = Xm.T @ Xm
    kept = select_full_rank_columns(gram, np.diag(gram), RANK_TOL)
    names = [fit.fixef.index[j] for j in kept]
    df_resid = fit.ngroups - len(kept)
    if df_resid <= 0:
        raise ValueError(
            f"{fit.ngroups} groups for {len(kept)} between-group coefficients: the between estimator has no "
            "residual degrees of freedom"
        )
    # QR of the (G, p) matrix of means rather than its cross-product: no squared condition number.
    Q, R = np.linalg.qr(Xm[:, kept])
    beta = np.linalg.solve(R, Q.T @ ym)
    resid = ym - Xm[:, kept] @ beta
    R_inv = np.linalg.inv(R)
    inverse = R_inv @ R_inv.T
    sigma2 = float(resid @ resid) / df_resid
    return LeastSquaresFit(
        "between",
        pd.Series(beta, index=names, name="fixef"),
        pd.DataFrame(sigma2 * inverse, index=names, columns=names),
        sigma2,
        df_resid,
        fit.ngroups,
    )


__all__ = [
    "LeastSquaresFit",
    "between_estimator",
    "pooled_estimator",
    "within_estimator",
    "within_varying_columns",
]
