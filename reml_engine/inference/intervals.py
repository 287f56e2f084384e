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
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from ..core.criterion import batch_length, residual_dof
from ..core.optimizer import SCAN_TAU_LARGE, SCAN_TAU_SMALL, Optimum, find_optima, optimum_reached_from
from ..errors import ProfileWarning
from ..frontend.arguments import check_count
from .bootstrap import BOOT_DEFAULT, parametric_bootstrap
from .lazy_imports import scipy_stats as sps

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
#: Points at which the profile is sampled between two local minima, to find where it
#: rises above the cut-off (a gap in the confidence set).
GAP_SAMPLES = 32
#: Two optima whose tau (or criteria) agree to this relative tolerance are the same.
BASIN_TIE_RTOL = 1e-9


class _Profile:
    """Profiled ML deviance of one fit, in the centred parametrization of its stats."""

    def __init__(self, fit, REML: bool = False):
        self.stats = stats = fit.stats
        self.REML = REML
        self.p = stats.p
        self.n = stats.nobs
        self.dof = residual_dof(stats, REML)
        self.summary = find_optima(stats, REML)
        best = self.summary.global_optimum
        self.tau_hat = best.tau
        self.dmin = best.criterion
        lo = math.log(SCAN_TAU_SMALL / stats.max_size)
        hi = math.log(SCAN_TAU_LARGE / stats.min_size)
        k = int(math.ceil((hi - lo) * PROFILE_POINTS_PER_UNIT)) + 1
        self.grid = np.r_[0.0, np.exp(np.linspace(lo, hi, k))]
        self.T = fit.parametrization.T
        self.on_grid = self.pieces(self.grid)
        at_hat = self.pieces(np.array([self.tau_hat]))
        self.sigma2_hat = float(at_hat["pwrss"][0] / self.dof)
        beta_int = at_hat["beta"][0]
        # beta_user = T beta + offset: the fit's own map.
        self.offset = fit.parametrization.offset
        self.beta_hat = self.T @ beta_int + self.offset

    def pieces(self, taus: np.ndarray) -> dict:
        """log-determinants, pwrss, beta and each user coefficient's ``l' A^-1 l`` at
        taus, in batches of bounded memory (see :func:`reml_engine.core.criterion.batch_length`)."""
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


@dataclass(frozen=True)
class _Centre:
    """A local minimum of the profiled criterion, as a centre to step out from: the
    parameters there (user scale) and step scales."""

    optimum: Optimum
    excess: float
    sd_group: float
    sigma: float
    beta: np.ndarray
    se: np.ndarray


def _centres(prof: _Profile, cutoff: float) -> list[_Centre]:
    """Every local minimum whose criterion is within ``cutoff`` of the global one: each is
    the centre of one piece of the confidence set (a piece of ``{D - D_min <= q}``
    holds a local minimum of the profile, and those are the criterion's local minima)."""
    centres = []
    for opt in prof.summary.optima:
        excess = opt.criterion - prof.dmin
        if excess > cutoff:
            continue
        pc = prof.pieces(np.array([opt.tau]))
        sigma2 = float(pc["pwrss"][0] / prof.dof)
        beta = prof.T @ pc["beta"][0] + prof.offset
        se = np.sqrt(sigma2 * pc["var"][0])
        centres.append(_Centre(opt, max(excess, 0.0), math.sqrt(opt.tau * sigma2), math.sqrt(sigma2), beta, se))
    return centres


def _confidence_set(prof: _Profile, kind, starts, cutoff: float, floor=None) -> list[tuple[float, float]]:
    """The pieces of ``{v : profile(v) - D_min <= cutoff}``.

    Every piece holds a local minimum of the profile, and those are at the criterion's
    local minima: the ``starts`` ``(value, scale)``. The set runs from the first crossing
    below the lowest start to the first above the highest; between two neighbouring
    starts it has a gap when the profile rises above the cut-off there (:func:`_gap`).
    """
    starts = sorted(starts)
    lower = prof.limit(kind, starts[0][0], starts[0][1], -1, cutoff, floor=floor)
    upper = prof.limit(kind, starts[-1][0], starts[-1][1], +1, cutoff)
    pieces, current = [], lower
    for (a, _), (b, _) in zip(starts[:-1], starts[1:], strict=True):
        gap = _gap(prof, kind, a, b, cutoff) if b > a else None
        if gap is not None:
            pieces.append((current, gap[0]))
            current = gap[1]
    pieces.append((current, upper))
    return pieces


def _gap(prof: _Profile, kind, a: float, b: float, cutoff: float) -> tuple[float, float] | None:
    """Where the profile rises above the cut-off between two values inside the set: the
    two crossings around its highest point (sampled at ``GAP_SAMPLES`` points, the
    highest refined by bounded Brent), or None when it stays below."""
    def excess(v):
        return prof.profile(kind, v) - prof.dmin - cutoff

    grid = np.linspace(a, b, GAP_SAMPLES + 2)
    values = np.array([excess(v) for v in grid[1:-1]])
    k = int(np.argmax(values)) + 1
    top, value = grid[k], values[k - 1]
    if not value > 0:
        res = optimize.minimize_scalar(lambda v: -excess(v), bounds=(grid[k - 1], grid[k + 1]), method="bounded",
                                       options={"xatol": LIMIT_RTOL * max(abs(a), abs(b))})
        top, value = float(res.x), -float(res.fun)
        if not value > 0:
            return None
    return (optimize.brentq(excess, a, top, rtol=LIMIT_RTOL, xtol=1e-300),
            optimize.brentq(excess, top, b, rtol=LIMIT_RTOL, xtol=1e-300))


def _piece_with(pieces, value: float) -> tuple[float, float]:
    """The piece that holds ``value`` (the profiled estimate is in one by construction)."""
    for lo, hi in pieces:
        if lo <= value <= hi:
            return lo, hi
    return min(pieces, key=lambda piece: min(abs(piece[0] - value), abs(piece[1] - value)))


def _format_set(pieces) -> str:
    return " U ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in pieces)


def profile_intervals(fit, level: float = 0.95, REML: bool = False) -> pd.DataFrame:
    """Profile-likelihood confidence sets for sd_group, sigma, icc and the fixed effects.

    The set for a parameter is ``{v : profile(v) - D_min <= chi2_1(level)}``, with
    ``D_min`` the global minimum of the profiled criterion. When the criterion has more
    than one local minimum within the cut-off, the set can be a union of intervals: every
    piece is given. As lme4, a REML fit is profiled on the ML deviance; when its
    estimate lies outside the set (the ML deviance's lowest minimum in another basin),
    the row says so and why.

    Parameters
    ----------
    fit : LmerFit
    level : float
    REML : bool
        Profile the REML criterion instead of the ML deviance (variance parameters
        only; the fixed effects are then left out). Default ML, as lme4.

    Returns
    -------
    pandas.DataFrame indexed by parameter, with

    * ``lower``, ``upper``: the piece of the set that holds the profiled estimate (what
      lme4's ``confint(profile(m))`` reports when it can);
    * ``pieces``: every piece, a tuple of ``(lower, upper)`` pairs in increasing order;
    * ``note``: why the set is not one interval, or why it excludes the fit's own
      estimate ("" when neither).

    The notes are also in ``.attrs["notes"]`` and raised as :class:`ProfileWarning`.
    """
    prof = _Profile(fit, REML)
    cutoff = float(sps.chi2.ppf(level, 1))
    centres = _centres(prof, cutoff)
    best = min(centres, key=lambda c: c.excess)
    sets: dict[str, list[tuple[float, float]]] = {}
    estimates: dict[str, float] = {}

    def tau_scale(tau):
        return max(tau, 1.0 / prof.stats.max_size) * 0.5

    tau_pieces = _confidence_set(prof, "tau", [(c.optimum.tau, tau_scale(c.optimum.tau)) for c in centres],
                                 cutoff, floor=0.0)
    sets["sd_group"] = _confidence_set(
        prof, "sd_group", [(c.sd_group, max(c.sd_group, 0.1 * c.sigma) * 0.25) for c in centres], cutoff, floor=0.0)
    estimates["sd_group"] = best.sd_group
    sets["sigma"] = _confidence_set(prof, "sigma", [(c.sigma, 0.1 * c.sigma) for c in centres], cutoff, floor=0.0)
    estimates["sigma"] = best.sigma
    sets["icc"] = [(lo / (1.0 + lo), hi / (1.0 + hi) if math.isfinite(hi) else 1.0) for lo, hi in tau_pieces]
    estimates["icc"] = prof.tau_hat / (1.0 + prof.tau_hat)
    if not REML:
        for j, name in enumerate(fit.fixef.index):
            sets[name] = _confidence_set(prof, j, [(c.beta[j], c.se[j]) for c in centres], cutoff)
            estimates[name] = best.beta[j]

    own = _own_estimates(fit) if (fit.REML and not REML) else {}
    basin = _basin_reason(fit, prof, cutoff) if own else ""
    rows, notes = {}, []
    for name, pieces in sets.items():
        lower, upper = _piece_with(pieces, estimates[name])
        parts = []
        if len(pieces) > 1:
            parts.append(
                f"the {level:.0%} confidence set of {name} is a union of {len(pieces)} intervals, "
                f"{_format_set(pieces)} (the profiled criterion has local minima within the cut-off "
                f"{cutoff:.3g} in each); lower/upper give the one around the estimate"
            )
        if name in own and not any(lo <= own[name] <= hi for lo, hi in pieces):
            parts.append(f"the set excludes the REML estimate {own[name]:.4g}: {basin}")
        note = "; ".join(parts)
        rows[name] = (lower, upper, tuple(pieces), note)
        if note:
            notes.append(f"{name}: {note}")
    notes.extend(_other_minima_notes(prof, cutoff))
    for note in notes:
        warnings.warn(note, ProfileWarning, stacklevel=3)
    if fit.REML and not REML:
        notes.append("profiled the ML deviance (as lme4): the intervals are centred on the ML estimates")
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper", "pieces", "note"])
    table.attrs["notes"] = tuple(notes)
    return table


def _own_estimates(fit) -> dict[str, float]:
    """The REML fit's own estimates, by row name."""
    own = {"sd_group": math.sqrt(fit.var_group), "sigma": math.sqrt(fit.sigma2), "icc": fit.icc}
    own.update({name: float(value) for name, value in fit.fixef.items()})
    return own


def _basin_reason(fit, prof: _Profile, cutoff: float) -> str:
    """Why the ML-based set can miss the REML estimate."""
    nearest = optimum_reached_from(prof.summary.optima, prof.stats, prof.REML, fit.tau)
    excess = nearest.criterion - prof.dmin
    if excess <= BASIN_TIE_RTOL * max(1.0, abs(prof.dmin)):
        return (
            "the ML deviance's lowest minimum is in the REML estimate's basin, but the ML estimates differ from "
            "the REML ones by more than the interval's half-width"
        )
    return (
        f"the ML deviance's lowest minimum (ICC = {prof.tau_hat / (1 + prof.tau_hat):.4g}) lies in another basin "
        f"than the REML estimate (ICC = {fit.icc:.4g}); the ML deviance's minimum in the REML estimate's basin "
        f"(ICC = {nearest.tau / (1 + nearest.tau):.4g}) is {excess:.4g} above it, "
        + ("beyond" if excess > cutoff else "within")
        + f" the cut-off {cutoff:.3g} (lme4's profile, which starts from that basin's minimum, can fail with 'profiling detected new, lower deviance')"
    )


def _other_minima_notes(prof: _Profile, cutoff: float) -> list[str]:
    """The other local minima of the profiled criterion, inside or outside the cut-off."""
    notes = []
    for opt in prof.summary.optima:
        if abs(opt.tau - prof.tau_hat) <= BASIN_TIE_RTOL * max(prof.tau_hat, 1.0):
            continue
        excess = opt.criterion - prof.dmin
        where = "outside the confidence region" if excess > cutoff else "inside the confidence region"
        notes.append(
            f"the profile is not monotone: the criterion has another local minimum at ICC = "
            f"{opt.tau / (1.0 + opt.tau):.4g} ({excess:.4g} above the minimum, {where})"
        )
    return notes


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
    if n_boot is not None:
        # 0 must not read as "the default" (1000 replicates run without a word).
        n_boot = check_count(n_boot, "n_boot")
    if not isinstance(method, str):
        raise ValueError(f"method must be 'profile', 'wald' or 'boot'; got {method!r}")
    key = method.strip().lower()
    if key == "profile":
        return profile_intervals(fit, level)
    if key == "wald":
        return wald_intervals(fit, level)
    if key in ("boot", "bootstrap"):

        result = parametric_bootstrap(fit, BOOT_DEFAULT if n_boot is None else n_boot, seed=seed, progress=progress)
        return result.percentile_intervals(level)
    raise ValueError(f"method must be 'profile', 'wald' or 'boot'; got {method!r}")
