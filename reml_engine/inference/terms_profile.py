"""Profile intervals of the standard deviations of a several-term fit, as lme4's
``confint(m, parm = "theta_", method = "profile")``.

A value ``s`` of ``sd_j`` (or of sigma) is inside the interval when the deviance
minimized over every other variance parameter with ``sd_j`` held at ``s`` exceeds the
global minimum by at most ``chi2_1(level)``. As in lme4 the deviance is the ML one, so a
REML fit is profiled at its ML optimum (found globally from the same statistics by
:func:`reml_engine.varcomp.find_optima_terms`). With beta profiled out,

``f(tau, sigma2) = log|H(tau)| + n log(2 pi sigma2) + pwrss(tau) / sigma2``,

* ``sd_j = s``: ``min f(tau, sigma2)`` over ``sigma2`` and ``tau_i`` (``i != j``) with
  ``tau_j = s^2 / sigma2``; at ``s = 0`` that is the fit without term j, and the lower
  limit is 0 when it lies inside the interval (the boundary);
* ``sigma = s``: ``min_tau f(tau, s^2)``.

The inner minimizations are bounded quasi-Newton searches in ``(log sigma2, theta_i)``
started from the previous point of the profile and from the ML optimum (the lower of the
two is kept); each limit is Brent's root of ``f_profile - f_min - chi2_1(level)`` between
bracketing points stepped out from the estimate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

#: Relative tolerance of the limits (Brent's root finder).
LIMIT_RTOL = 1e-9
#: Step-out factor from the estimate towards a limit.
STEP_GROWTH = 1.5
#: Steps before giving up on bracketing a limit.
MAX_STEPS = 80
#: First trial value, relative to the residual sd, when an estimated sd is 0.
ZERO_SD_START = 0.1
#: Convergence tolerance of the inner minimizations (L-BFGS-B's ``ftol`` and ``gtol``).
INNER_TOL = 1e-12


class _TermsProfiler:
    """The ML deviance of a fit's problem and its profiles (one per parameter)."""

    def __init__(self, problem, tau_ml: np.ndarray, sigma2_ml: float, deviance_ml: float):
        self.problem = problem
        self.n = problem.nobs
        self.k = problem.k
        self.tau_ml = np.asarray(tau_ml, dtype=np.float64)
        self.sigma2_ml = float(sigma2_ml)
        self.f_min = float(deviance_ml)

    def deviance(self, tau: np.ndarray, sigma2: float) -> float:
        ev = self.problem.evaluate(tau, REML=False, gradient=False)
        value = ev.logdet_V + self.n * math.log(2.0 * math.pi * sigma2) + ev.pwrss / sigma2
        return float(value) if np.isfinite(value) else np.inf

    def _minimize(self, objective, starts: list[np.ndarray], bounds) -> tuple[float, np.ndarray]:
        best = (np.inf, starts[0])
        for start in starts:
            result = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds,
                                       options={"ftol": INNER_TOL, "gtol": INNER_TOL, "maxiter": 500})
            if result.fun < best[0]:
                best = (float(result.fun), result.x)
        return best

    def sd_profile(self, j: int):
        """``s -> min f`` with ``sd_j = s``, continued from the last point."""
        others = [i for i in range(self.k) if i != j]
        ml_start = np.r_[math.log(self.sigma2_ml), np.sqrt(self.tau_ml[others])]
        last = [ml_start]
        bounds = [(None, None)] + [(0.0, None)] * len(others)

        def profile(s: float) -> float:
            def objective(z):
                sigma2 = math.exp(z[0])
                tau = np.empty(self.k)
                tau[others] = z[1:] ** 2
                tau[j] = s * s / sigma2
                return self.deviance(tau, sigma2)

            value, z = self._minimize(objective, [last[0], ml_start], bounds)
            last[0] = z
            return value

        return profile

    def sigma_profile(self):
        """``s -> min_tau f(tau, s^2)``."""
        ml_start = np.sqrt(self.tau_ml)
        last = [ml_start]
        bounds = [(0.0, None)] * self.k

        def profile(s: float) -> float:
            value, z = self._minimize(lambda th: self.deviance(th**2, s * s), [last[0], ml_start], bounds)
            last[0] = z
            return value

        return profile


def _limit(profile, estimate: float, cut: float, direction: int, start: float, zero_allowed: bool = True) -> float:
    """Where ``profile - cut`` changes sign, stepping from the estimate (``direction`` -1:
    towards 0, where a value at 0 inside the interval gives 0 when ``zero_allowed``;
    +1: upwards)."""
    excess = lambda s: profile(s) - cut  # noqa: E731 - a one-line root function
    if direction < 0:
        if zero_allowed and excess(0.0) <= 0.0:
            return 0.0
        inside, s = estimate, estimate / STEP_GROWTH
        for _ in range(MAX_STEPS):
            if excess(s) > 0.0:
                return optimize.brentq(excess, s, inside, rtol=LIMIT_RTOL)
            inside, s = s, s / STEP_GROWTH
        return optimize.brentq(excess, 0.0, inside, rtol=LIMIT_RTOL) if zero_allowed else 0.0
    inside, s = estimate, max(estimate * STEP_GROWTH, start)
    for _ in range(MAX_STEPS):
        if excess(s) > 0.0:
            return optimize.brentq(excess, inside, s, rtol=LIMIT_RTOL)
        inside, s = s, s * STEP_GROWTH
    return math.inf


def profile_sd_intervals(fit, level: float = 0.95) -> pd.DataFrame:
    """Profile intervals of each term's sd and of sigma (lme4's ``.sig01, ..., .sigma``).

    Parameters
    ----------
    fit : TermsFit
    level : float
        Coverage, in (0, 1).

    Returns
    -------
    pandas.DataFrame indexed as ``fit.varcorr()`` (the terms, then ``Residual``), columns
    ``lower``, ``upper`` (sd scale) and ``lme4`` (lme4's parameter name).
    """
    from ..varcomp import find_optima_terms

    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1 (0.95 for 95% intervals), got {level!r}")
    problem = fit.problem
    if problem is None:
        raise ValueError("this fit holds no criterion (problem=None), so it cannot be profiled")
    if fit.REML:
        ml = find_optima_terms(problem, False).optima[0]
        tau_ml = np.asarray(ml.tau, dtype=np.float64)
        sigma2_ml = problem.evaluate(tau_ml, REML=False, gradient=False).sigma2
        deviance_ml = float(ml.criterion)
    else:
        tau_ml, sigma2_ml, deviance_ml = fit.tau, fit.sigma2, fit.criterion
    profiler = _TermsProfiler(problem, tau_ml, sigma2_ml, deviance_ml)
    cut = profiler.f_min + float(sps.chi2.ppf(level, 1))
    sigma_ml = math.sqrt(sigma2_ml)
    rows = []
    for j in range(problem.k):
        sd = math.sqrt(tau_ml[j] * sigma2_ml)
        start = ZERO_SD_START * sigma_ml
        lower = 0.0 if sd == 0.0 else _limit(profiler.sd_profile(j), sd, cut, -1, start)
        upper = _limit(profiler.sd_profile(j), sd, cut, +1, start)
        rows.append((lower, upper))
    rows.append((_limit(profiler.sigma_profile(), sigma_ml, cut, -1, sigma_ml, zero_allowed=False),
                 _limit(profiler.sigma_profile(), sigma_ml, cut, +1, sigma_ml)))
    names = [f".sig{j + 1:02d}" for j in range(problem.k)] + [".sigma"]
    lower, upper = zip(*rows, strict=True)
    return pd.DataFrame({"lower": lower, "upper": upper, "lme4": names},
                        index=pd.Index([*fit.term_names, "Residual"], name="group"))


__all__ = ["profile_sd_intervals"]
