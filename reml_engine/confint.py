"""Confidence intervals: profile likelihood, Wald and parametric bootstrap.

Profile intervals (``method="profile"``) invert the likelihood-ratio test, as lme4's
``confint(profile(m))``: a value ``v`` of a parameter is inside when the deviance
minimized over every other parameter with the parameter held at ``v`` exceeds the
global minimum by at most ``chi2_1(level)``. As in lme4 the deviance is the ML one (a
REML fit is profiled at its ML optimum, found globally from the same statistics). With
``f(tau, sigma2) = log|H| + n log(2 pi sigma2) + pwrss(tau) / sigma2``:

* ``icc`` (and tau): sigma2 and beta profile out in closed form, the profile is the
  criterion itself, ``criterion(tau)``;
* ``sigma``: ``min_tau f(tau, sigma^2)``;
* ``sd_group``: ``min_tau f(tau, sd^2 / tau)``; at ``sd = 0`` it is ``criterion(0)``, and
  the lower limit is 0 when that is inside the interval (the boundary);
* a coefficient ``l'beta`` held at ``v``: generalized least squares under one linear
  constraint adds ``(l'beta_hat(tau) - v)^2 / (l' A(tau)^{-1} l)`` to ``pwrss(tau)``, so
  the profile is ``min_tau log|H| + n log(2 pi e pwrss_v(tau) / n)``.

Every inner minimum over tau is found on a log grid and refined by bounded Brent; every
limit by Brent's root finder between bracketing points stepped out from the estimate.
When the criterion has another local minimum the profile is not monotone, and the
result says so (and whether the other minimum is inside the confidence region, which
then is not an interval).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize

from .criterion import batch_length
from .ddf import user_transform
from .lazy_imports import scipy_stats as sps
from .optimizer import SCAN_TAU_LARGE, SCAN_TAU_SMALL, find_optima

#: Grid points per unit of log(tau) for the inner minimizations.
PROFILE_POINTS_PER_UNIT = 8
#: Relative tolerance of the inner Brent refinement in log(tau).
INNER_XATOL = 1e-9
#: Relative tolerance of the limits.
LIMIT_RTOL = 1e-10
#: Step-out: first step in units of the scale, multiplied by this at each step.
STEP_GROWTH = 1.6
#: Steps before giving up on finding where the profile crosses the cut-off.
MAX_STEPS = 80


class ProfileWarning(UserWarning):
    """The profile is not monotone (the criterion has another local minimum)."""


class _Profile:
    """Profiled ML deviance of one fit, in the centred parametrization of its stats."""

    def __init__(self, fit, REML: bool = False):
        self.stats = stats = fit.stats
        self.REML = REML
        self.p = stats.p
        self.n = stats.nobs
        self.dof = self.n - self.p if REML else self.n
        self.summary = find_optima(stats, REML)
        best = self.summary.global_optimum
        self.tau_hat = best.tau
        self.dmin = best.criterion
        lo = math.log(SCAN_TAU_SMALL / stats.max_size)
        hi = math.log(SCAN_TAU_LARGE / stats.min_size)
        k = int(math.ceil((hi - lo) * PROFILE_POINTS_PER_UNIT)) + 1
        self.grid = np.r_[0.0, np.exp(np.linspace(lo, hi, k))]
        self.T = user_transform(fit)
        self.on_grid = self.pieces(self.grid)
        at_hat = self.pieces(np.array([self.tau_hat]))
        self.sigma2_hat = float(at_hat["pwrss"][0] / self.dof)
        beta_int = at_hat["beta"][0]
        # beta_user = T beta + offset: the fit's own map.
        self.offset = fit.parametrization.offset
        self.beta_hat = self.T @ beta_int + self.offset

    def pieces(self, taus: np.ndarray) -> dict:
        """log-determinants, pwrss, beta and each user coefficient's ``l' A^-1 l`` at
        taus, in batches of bounded memory (see :func:`reml_engine.criterion.batch_length`)."""
        step = batch_length(self.stats.q)
        parts = [self._pieces(taus[start:start + step]) for start in range(0, len(taus), step)]
        if len(parts) == 1:
            return parts[0]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _pieces(self, taus: np.ndarray) -> dict:
        s = self.stats
        p = self.p
        denom = 1.0 + np.outer(taus, s.sizes)
        M = s.within[None] + np.einsum("ku,uab->kab", 1.0 / denom, s.between)
        L = np.linalg.cholesky(M)
        diag = np.diagonal(L, axis1=1, axis2=2)
        Lxx = L[:, :p, :p]
        beta = np.linalg.solve(np.swapaxes(Lxx, 1, 2), L[:, p, :p][..., None])[..., 0]
        # l' A^-1 l = |L^-1 l|^2 for every user coefficient's row l of T at once.
        half = np.linalg.solve(Lxx, np.broadcast_to(self.T.T, (len(taus), p, p)))
        ld = np.log(denom) @ s.groups_per_size
        if self.REML:
            ld = ld + 2.0 * np.log(diag[:, :p]).sum(axis=1)
        return {"ld": ld, "pwrss": diag[:, p] ** 2, "beta": beta, "var": (half**2).sum(axis=1)}

    # -- the objective of each profile, over tau, given the parameter value -------------
    def _deviance(self, ld, pwrss, s2):
        return ld + self.dof * np.log(2.0 * np.pi * s2) + pwrss / s2

    def _profiled(self, ld, pwrss):
        return ld + self.dof * (1.0 + np.log(2.0 * np.pi * pwrss / self.dof))

    def objective(self, kind: str, value: float, taus: np.ndarray, pc: dict) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "sigma":
                return self._deviance(pc["ld"], pc["pwrss"], value**2)
            if kind == "sd_group":
                s2 = value**2 / taus
                return np.where(taus > 0, self._deviance(pc["ld"], pc["pwrss"], s2), np.inf)
            j = kind
            est = pc["beta"] @ self.T[j] + self.offset[j]
            return self._profiled(pc["ld"], pc["pwrss"] + (est - value) ** 2 / pc["var"][:, j])

    def profile(self, kind, value: float) -> float:
        """Minimum over tau of the objective: the profiled deviance at ``value``."""
        if kind == "tau":
            return float(self._profiled(*self._ld_pwrss(np.array([value])))[0])
        if kind == "sd_group" and value == 0.0:
            return float(self._profiled(*self._ld_pwrss(np.zeros(1)))[0])
        values = self.objective(kind, value, self.grid, self.on_grid)
        values = np.where(np.isfinite(values), values, np.inf)
        i = int(np.argmin(values))
        best = float(values[i])
        lo, hi = self.grid[max(i - 1, 0)], self.grid[min(i + 1, len(self.grid) - 1)]

        def f(tau):
            return float(self.objective(kind, value, np.array([tau]), self.pieces(np.array([tau])))[0])

        if lo > 0:
            res = optimize.minimize_scalar(lambda t: f(math.exp(t)), bounds=(math.log(lo), math.log(hi)),
                                           method="bounded", options={"xatol": INNER_XATOL})
        else:
            res = optimize.minimize_scalar(f, bounds=(0.0, hi), method="bounded",
                                           options={"xatol": INNER_XATOL * hi})
        return min(best, float(res.fun))

    def _ld_pwrss(self, taus):
        pc = self.pieces(taus)
        return pc["ld"], pc["pwrss"]

    # -- limits -------------------------------------------------------------------------
    def limit(self, kind, estimate: float, scale: float, direction: int, cutoff: float, floor=None) -> float:
        """Where the profile first exceeds ``dmin + cutoff`` going ``direction`` from the estimate."""
        def excess(v):
            return self.profile(kind, v) - self.dmin - cutoff

        inside = estimate
        step = scale
        for _ in range(MAX_STEPS):
            trial = estimate + direction * step
            if floor is not None and direction < 0 and trial <= floor:
                if excess(floor) <= 0:
                    return floor
                trial = 0.5 * (inside + floor) if inside > floor else floor
                while excess(trial) <= 0:
                    inside, trial = trial, 0.5 * (trial + floor)
                return optimize.brentq(excess, trial, inside, rtol=LIMIT_RTOL, xtol=1e-300)
            if excess(trial) > 0:
                a, b = sorted((inside, trial))
                return optimize.brentq(excess, a, b, rtol=LIMIT_RTOL, xtol=1e-300)
            inside = trial
            step *= STEP_GROWTH
        return math.inf * direction


def profile_intervals(fit, level: float = 0.95, REML: bool = False) -> pd.DataFrame:
    """Profile-likelihood intervals for sd_group, sigma, icc and the fixed effects.

    Parameters
    ----------
    fit : LmerFit
    level : float
    REML : bool
        Profile the REML criterion instead of the ML deviance (variance parameters
        only; the fixed effects are then left out). Default ML, as lme4.

    Returns
    -------
    pandas.DataFrame with ``lower`` and ``upper``; notes in ``.attrs["notes"]``.
    """
    prof = _Profile(fit, REML)
    cutoff = float(sps.chi2.ppf(level, 1))
    rows, notes = {}, []
    s2 = prof.sigma2_hat
    tau = prof.tau_hat
    sd_hat = math.sqrt(tau * s2)
    sigma_hat = math.sqrt(s2)

    # tau (the criterion itself), then icc = tau / (1 + tau).
    tau_scale = max(tau, 1.0 / prof.stats.max_size) * 0.5
    tau_lo = prof.limit("tau", tau, tau_scale, -1, cutoff, floor=0.0)
    tau_hi = prof.limit("tau", tau, tau_scale, +1, cutoff)
    sd_scale = max(sd_hat, 0.1 * sigma_hat) * 0.25
    rows["sd_group"] = (prof.limit("sd_group", sd_hat, sd_scale, -1, cutoff, floor=0.0),
                        prof.limit("sd_group", sd_hat, sd_scale, +1, cutoff))
    rows["sigma"] = (prof.limit("sigma", sigma_hat, 0.1 * sigma_hat, -1, cutoff, floor=0.0),
                     prof.limit("sigma", sigma_hat, 0.1 * sigma_hat, +1, cutoff))
    rows["icc"] = (tau_lo / (1.0 + tau_lo), tau_hi / (1.0 + tau_hi) if math.isfinite(tau_hi) else 1.0)
    if not REML:
        se = _ml_se(prof)
        for j, name in enumerate(fit.fixef.index):
            est = prof.beta_hat[j]
            rows[name] = (prof.limit(j, est, se[j], -1, cutoff), prof.limit(j, est, se[j], +1, cutoff))
    shape_notes = _monotonicity_notes(prof, cutoff, tau_lo, tau_hi)
    for note in shape_notes:
        warnings.warn(note, ProfileWarning, stacklevel=3)
    notes.extend(shape_notes)
    if fit.REML and not REML:
        basin = _basin_note(fit, prof)
        if basin:
            warnings.warn(basin, ProfileWarning, stacklevel=3)
            notes.append(basin)
        notes.append("profiled the ML deviance (as lme4): the intervals are centred on the ML estimates")
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])
    table.attrs["notes"] = tuple(notes)
    return table


def _ml_se(prof: _Profile) -> np.ndarray:
    return np.sqrt(prof.sigma2_hat * prof.pieces(np.array([prof.tau_hat]))["var"][0])


def _monotonicity_notes(prof: _Profile, cutoff: float, tau_lo: float, tau_hi: float) -> list[str]:
    notes = []
    for opt in prof.summary.optima:
        if abs(opt.tau - prof.tau_hat) <= 1e-9 * max(prof.tau_hat, 1.0):
            continue
        excess = opt.criterion - prof.dmin
        icc = opt.tau / (1.0 + opt.tau)
        if excess <= cutoff and not (tau_lo <= opt.tau <= tau_hi):
            notes.append(
                f"the profile is not monotone: another local minimum at ICC = {icc:.4g} "
                f"({excess:.4g} above the minimum) is also inside the confidence region, which "
                "is therefore not an interval; the limits given bound the part around the estimate"
            )
        else:
            notes.append(
                f"the profile is not monotone: the criterion has another local minimum at ICC = {icc:.4g} "
                f"({excess:.4g} above the minimum, outside the confidence region)"
            )
    return notes


def _basin_note(fit, prof: _Profile) -> str | None:
    """Say so when the ML optimum lies in another basin than the REML estimate."""
    from .criterion import evaluate
    from .optimizer import descent_optimum

    if len(prof.summary.optima) < 2:
        return None
    slope = float(evaluate([fit.tau], prof.stats, prof.REML)["derivative"][0])
    nearest = descent_optimum(prof.summary.optima, slope, start_tau=fit.tau)
    if abs(nearest.tau - prof.tau_hat) <= 1e-9 * max(prof.tau_hat, 1.0):
        return None
    return (
        f"the ML optimum (ICC = {prof.tau_hat / (1 + prof.tau_hat):.4g}) is not in the basin of the REML "
        f"estimate (ICC = {fit.icc:.4g}), where the ML deviance has another local minimum "
        f"({nearest.criterion - prof.dmin:.4g} higher): the intervals describe the ML optimum"
    )


def wald_intervals(fit, level: float = 0.95) -> pd.DataFrame:
    """Normal-quantile intervals for the fixed effects (lme4's ``method = "Wald"``).

    sd_group and sigma get NaN: a Wald interval on a variance parameter near its boundary
    is not meaningful (lme4 gives NA too).
    """
    z = float(sps.norm.ppf(0.5 + level / 2.0))
    est, se = fit.fixef.to_numpy(), fit.se.to_numpy()
    table = pd.DataFrame({"lower": est - z * se, "upper": est + z * se}, index=fit.fixef.index)
    nan = pd.DataFrame({"lower": [np.nan, np.nan], "upper": [np.nan, np.nan]}, index=["sd_group", "sigma"])
    return pd.concat([nan, table])


def confint(fit, method: str = "profile", level: float = 0.95, n_boot: int | None = None,
            seed: int | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Confidence intervals for sd_group, sigma and the fixed effects (and the ICC).

    Parameters
    ----------
    fit : LmerFit
    method : {"profile", "wald", "boot"}
    level : float
    n_boot, seed, progress
        For ``"boot"``: replicates (default 1000), seed, progress on stderr.

    Returns
    -------
    pandas.DataFrame indexed by parameter with ``lower`` and ``upper``.

    Examples
    --------
    >>> import reml_engine as rl
    >>> ci = rl.confint(rl.lmer("y ~ x + (1|f)", data=rl.load_seed()), method="wald")
    >>> list(ci.columns)
    ['lower', 'upper']
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    key = method.strip().lower()
    if key == "profile":
        return profile_intervals(fit, level)
    if key == "wald":
        return wald_intervals(fit, level)
    if key in ("boot", "bootstrap"):
        from .bootstrap import BOOT_DEFAULT, parametric_bootstrap

        result = parametric_bootstrap(fit, n_boot or BOOT_DEFAULT, seed=seed, progress=progress)
        return result.percentile_intervals(level)
    raise ValueError(f"method must be 'profile', 'wald' or 'boot'; got {method!r}")
