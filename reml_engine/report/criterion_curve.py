"""The profiled criterion of a fit at any tau, in the user's parametrization (for teaching).

A fit keeps its sufficient statistics (``m.stats``), so the criterion the optimizer
minimized can be evaluated again anywhere, with its named parts:

* :func:`profile_criterion`: one point, ``tau`` or ``icc`` given, including the
  compound-symmetry range ``-1/max(n_g) < tau < 0`` (negative intra-class correlation);
* :func:`criterion_profile`: the whole curve against the ICC, from its lower limit
  ``-1/(max n_g - 1)`` up to 1, with every local optimum marked, for
  :func:`reml_engine.report.plots.plot_profile`.

The coefficients are given in the user's columns (the criterion module works in the
centred parametrization of ``m.stats``; the map back only changes the intercept).

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
>>> point = rl.profile_criterion(m, tau=0.0)          # the boundary var_group = 0
>>> round(point.criterion, 3), round(point.fixef["x"], 5)
(20.593, 0.00864)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.criterion import evaluate, tau_lower_limit, xtvinvx
from ..core.lme4_path import lme4_default_optimum
from ..core.optimizer import find_optima
from ..core.parametrization import UserParametrization, standard_errors

#: Points of the profile curve, uniform in the ICC between its limits.
PROFILE_POINTS = 801
#: Extra points between ICC 0.9 and 1, uniform in log(1 - ICC).
PROFILE_POINTS_NEAR_ONE = 200
#: Points of the curve against log10(tau) (tau > 0 only), for the panel that shows optima
#: crowded against ICC = 1.
LOG_TAU_POINTS = 400
#: That curve spans the positive optima's log10(tau) widened by this many decades each side
#: (and at least LOG_TAU_MIN_RANGE).
LOG_TAU_MARGIN = 2.0
LOG_TAU_MIN_RANGE = (-3.0, 3.0)
#: The curve stops this fraction of the ICC range short of either end (at the lower
#: limit V is singular, at ICC = 1 tau is infinite).
PROFILE_END_GAP = 1e-4


@dataclass(frozen=True)
class ProfilePoint:
    """The profiled criterion at one tau, its parts and the estimates there.

    Attributes
    ----------
    tau : float
        var_group / sigma2 (negative in the compound-symmetry range).
    REML : bool
    criterion : float
        REML criterion (or ML deviance) at tau.
    logdet_V : float
        log|V / sigma2| = sum_g log(1 + n_g tau).
    logdet_XtVinvX : float
        log|X' (V / sigma2)^-1 X|, in the user's columns (the REML term).
    pwrss : float
        Penalized (generalized) residual sum of squares at ``fixef``.
    sigma2 : float
        Profiled residual variance: pwrss / (n - p) (REML) or pwrss / n (ML).
    derivative : float
        d criterion / d tau.
    fixef : pandas.Series
        beta_hat(tau), generalized least squares, in the user's columns.
    vcov : pandas.DataFrame
        sigma2 (X' H^-1 X)^-1 at tau.
    """

    tau: float
    REML: bool
    criterion: float
    logdet_V: float
    logdet_XtVinvX: float
    pwrss: float
    sigma2: float
    derivative: float
    fixef: pd.Series
    vcov: pd.DataFrame

    @property
    def icc(self) -> float:
        """tau / (1 + tau)."""
        return self.tau / (1.0 + self.tau)

    @property
    def var_group(self) -> float:
        """tau * sigma2 (negative in the compound-symmetry range)."""
        return self.tau * self.sigma2

    @property
    def se(self) -> pd.Series:
        return standard_errors(self.vcov)

    def __repr__(self) -> str:
        from .notebook import short_repr

        return short_repr("ProfilePoint", tau=self.tau, REML=self.REML, criterion=self.criterion, sigma2=self.sigma2,
                          fixef=", ".join(f"{k}={v:.6g}" for k, v in self.fixef.items()))

    def _repr_html_(self) -> str:
        from .notebook import profile_point_html

        return profile_point_html(self)

    def parts(self) -> pd.Series:
        """The scalar parts as one Series (for printing and tables)."""
        return pd.Series(
            {
                "tau": self.tau,
                "icc": self.icc,
                "logdet_V": self.logdet_V,
                "logdet_XtVinvX": self.logdet_XtVinvX,
                "pwrss": self.pwrss,
                "sigma2": self.sigma2,
                "var_group": self.var_group,
                "criterion": self.criterion,
            },
            name="REML" if self.REML else "ML",
        )


def _check_tau(tau: float | None, icc: float | None, stats) -> float:
    if (tau is None) == (icc is None):
        raise ValueError("give exactly one of tau (var_group / sigma2) and icc")
    if icc is not None:
        if not icc < 1.0:
            raise ValueError(f"icc = {icc} must be below 1")
        tau = icc / (1.0 - icc)
    tau = float(tau)
    lower = tau_lower_limit(stats)
    if not tau > lower:
        icc_lower = lower / (1.0 + lower)
        raise ValueError(
            f"tau = {tau:.6g} (ICC {tau / (1.0 + tau) if tau != -1 else -math.inf:.6g}) is at or below the "
            f"limit tau = -1/max(n_g) = {lower:.6g} (ICC {icc_lower:.6g}), where V stops being positive definite"
        )
    return tau


def profile_criterion(fit, tau: float | None = None, *, icc: float | None = None, REML: bool | None = None) -> ProfilePoint:
    """The criterion of a fit and its named parts at any tau (or ICC).

    Parameters
    ----------
    fit : LmerFit
    tau : float, optional
        var_group / sigma2, above ``-1/max(n_g)``.
    icc : float, optional
        Intra-class correlation ``tau / (1 + tau)`` instead of tau, above
        ``-1/(max n_g - 1)``.
    REML : bool, optional
        REML criterion or ML deviance; default the fit's own.

    Returns
    -------
    ProfilePoint
        At ``fit.tau`` it reproduces the fit: ``criterion``, ``sigma2``, ``fixef``
        and ``vcov``.
    """
    REML = fit.REML if REML is None else bool(REML)
    tau = _check_tau(tau, icc, fit.stats)
    out = evaluate([tau], fit.stats, REML)
    to_user = fit.parametrization
    p = fit.stats.p
    A = xtvinvx(tau, fit.stats)[:p, :p]
    sigma2 = float(out.sigma2[0])
    return ProfilePoint(
        tau=tau,
        REML=REML,
        criterion=float(out.criterion[0]),
        logdet_V=float(out.logdet_V[0]),
        # log|T^-T A T^-1| = log|A| since T is unit triangular.
        logdet_XtVinvX=float(out.logdet_XtVinvX[0]),
        pwrss=float(out.pwrss[0]),
        sigma2=sigma2,
        derivative=float(out.derivative[0]),
        fixef=to_user.coefficients(out.beta[0]),
        vcov=to_user.covariance(sigma2 * np.linalg.inv(A)),
    )


@dataclass(frozen=True)
class MarkedOptimum:
    """A local minimum of the criterion as a profile plot marks it."""

    tau: float
    criterion: float
    kind: str
    is_global: bool = False
    is_lme4_default: bool = False

    @property
    def icc(self) -> float:
        return self.tau / (1.0 + self.tau)


@dataclass(frozen=True)
class CriterionProfile:
    """The criterion against the ICC, and the optima to mark on it.

    Attributes
    ----------
    REML : bool
    icc, tau, criterion : ndarray
        The curve (NaN where V is numerically singular).
    icc_lower : float
        ``-1/(max n_g - 1)``, where V stops being positive definite.
    optima : tuple of MarkedOptimum
        Every local minimum over var_group >= 0 (for the fit's own criterion, these
        are ``fit.optima``), sorted by tau.
    lme4_default : MarkedOptimum
        The one lme4's ``lmer()`` stops at from its default start (see
        :mod:`reml_engine.core.lme4_path`).
    compound_symmetry : MarkedOptimum
        The lowest minimum over the extended range (negative ICC allowed).
    boundary_criterion : float
        The criterion at var_group = 0.
    log_tau, log_tau_criterion : ndarray
        The curve against tau > 0, uniform in log10(tau) over the decades around the
        positive optima: where the ICC axis crowds large tau against 1.
    """

    REML: bool
    icc: np.ndarray
    tau: np.ndarray
    criterion: np.ndarray
    icc_lower: float
    optima: tuple[MarkedOptimum, ...]
    lme4_default: MarkedOptimum
    compound_symmetry: MarkedOptimum
    boundary_criterion: float
    log_tau: np.ndarray
    log_tau_criterion: np.ndarray

    @property
    def global_optimum(self) -> MarkedOptimum:
        return next(o for o in self.optima if o.is_global)

    def __repr__(self) -> str:
        from .notebook import short_repr

        return short_repr("CriterionProfile", REML=self.REML, points=len(self.icc), icc_lower=self.icc_lower,
                          optima=len(self.optima), global_tau=self.global_optimum.tau,
                          global_criterion=self.global_optimum.criterion)

    def _repr_html_(self) -> str:
        from .notebook import profile_html

        return profile_html(self)


def _optima_of(fit, REML: bool) -> tuple[tuple[MarkedOptimum, ...], MarkedOptimum]:
    """Local optima over tau >= 0 and the compound-symmetry optimum for one criterion."""
    if REML == fit.REML:
        optima = tuple(
            MarkedOptimum(o.tau, o.criterion, o.kind, o.is_global, o.is_lme4_default) for o in fit.optima
        )
        cs = fit.compound_symmetry
        return optima, MarkedOptimum(cs.tau, cs.criterion, "limit" if cs.at_limit else "interior")
    # The other criterion of the same statistics: its own global scan.
    summary = find_optima(fit.stats, REML)
    best = summary.global_optimum
    default = lme4_default_optimum(summary.optima, fit.stats, REML, fit.lme4_start_theta)
    optima = tuple(
        MarkedOptimum(o.tau, o.criterion, o.kind, o is best, o is default) for o in summary.optima
    )
    ext = summary.extended_global_optimum
    return optima, MarkedOptimum(ext.tau, ext.criterion, ext.kind)


def criterion_profile(fit, REML: bool | None = None, n_points: int = PROFILE_POINTS) -> CriterionProfile:
    """The criterion over the whole ICC range, with every optimum to mark.

    Parameters
    ----------
    fit : LmerFit
    REML : bool, optional
        Default the fit's own criterion; the other one is scanned for its own optima.
    n_points : int
        Points uniform in the ICC (the optima are added to them).
    """
    REML = fit.REML if REML is None else bool(REML)
    max_size = fit.stats.max_size
    icc_lower = -1.0 / (max_size - 1.0)
    gap = PROFILE_END_GAP * (1.0 - icc_lower)
    optima, cs = _optima_of(fit, REML)
    # Large tau crowds into ICC near 1: add points uniform in log(1 - ICC) there.
    near_one = 1.0 - np.logspace(np.log10(gap), -1.0, PROFILE_POINTS_NEAR_ONE)
    grid = np.concatenate([np.linspace(icc_lower + gap, 1.0 - gap, n_points), near_one])
    marks = [o.icc for o in optima] + [cs.icc, 0.0]
    grid = np.unique(np.concatenate([grid, [m for m in marks if icc_lower < m < 1.0]]))
    taus = grid / (1.0 - grid)
    values = evaluate(taus, fit.stats, REML).criterion
    default = next(o for o in optima if o.is_lme4_default)
    at_zero = float(evaluate([0.0], fit.stats, REML).criterion[0])
    decades = [math.log10(o.tau) for o in optima if o.tau > 0]
    low = min(LOG_TAU_MIN_RANGE[0], math.floor(min(decades, default=0.0) - LOG_TAU_MARGIN))
    high = max(LOG_TAU_MIN_RANGE[1], math.ceil(max(decades, default=0.0) + LOG_TAU_MARGIN))
    log_taus = np.unique(np.concatenate([np.logspace(low, high, LOG_TAU_POINTS), [o.tau for o in optima if o.tau > 0]]))
    log_values = evaluate(log_taus, fit.stats, REML).criterion
    return CriterionProfile(REML, grid, taus, values, icc_lower, optima, default, cs, at_zero, log_taus, log_values)


__all__ = [
    "CriterionProfile",
    "MarkedOptimum",
    "ProfilePoint",
    "UserParametrization",
    "criterion_profile",
    "profile_criterion",
]
