"""Where lme4's ``lmer()`` stops: its default optimizer path, followed on the exact criterion.

The engine reports every local minimum and estimates at the global one; lme4 runs a
local search and returns wherever it stops. To say which minimum that is, this module
follows lme4's path (lme4 1.1-31, the default ``lmerControl()``):

1. **Start.** For a model whose only random term is ``(1|f)`` (``mkLmerDevfun``), lme4
   starts at ``theta0 = sqrt(v / (var(y) - v))`` with ``v = var(ave(y, f))``, falling
   back to ``theta = 1`` when ``var(y) - v <= 0``. In sums of squares of the response,
   ``theta0 = sqrt(between / within)`` (:mod:`reml_engine.core.lme4_start`).
2. **Search.** ``nloptwrap``: NLopt's BOBYQA on ``theta >= 0`` (no upper bound) with
   lme4's ``xtol_abs = ftol_abs = 1e-8``, nloptr's default ``xtol_rel = 1e-4`` and NLopt's
   default initial step, three quarters of the distance to the bound
   (``0.75 theta0``; 1 from ``theta = 0``).
3. **Edge.** ``restart_edge``: a search that ends at exactly ``theta = 0`` where the
   forward difference ``(f(1e-5) - f(0)) / 1e-5`` is negative is run again from there;
   ``boundary.tol``: an end in ``(0, 1e-5)`` is moved to 0 when that is lower.

BOBYQA (Powell 2009, as NLopt 2.7 implements it) is a trust-region method on quadratic
models that interpolate ``2 n + 1`` points. In one variable the model interpolates three
points exactly, so it and the Lagrange functions are the quadratics through them, and
Powell's updating parameter ``beta`` vanishes; what remains is written out here for
``n = 1``: the initial points ``x0``, ``x0 + rhobeg``, ``x0 - rhobeg`` (``x0 + 2 rhobeg``
at the bound), the trust-region step (TRSBOX), the geometry step (ALTMOV), the choice of
the point to replace, and the radius updates. The criterion is the engine's, which
equals lme4's to rounding: the path agrees with ``lmer()`` on every fit of
``tests/data/lme4_start.json`` (``tests/core/test_lme4_path.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .criterion import criterion_values
from .optimizer import Optimum, optimum_reached_from

#: nloptr's default relative x tolerance, which lme4 does not override: BOBYQA's final
#: trust radius is ``max(LME4_XTOL_REL * rhobeg, LME4_XTOL_ABS)``.
LME4_XTOL_REL = 1e-4
#: lme4's ``nloptwrap`` defaults.
LME4_XTOL_ABS = 1e-8
LME4_FTOL_ABS = 1e-8
LME4_MAXEVAL = 100_000
#: NLopt's default initial step of a variable bounded on one side only: this fraction of
#: the distance to the bound.
INITIAL_STEP_FRACTION = 0.75
#: lme4's ``restart_edge`` forward-difference step, and its ``boundary.tol``.
LME4_EDGE_STEP = 1e-5
LME4_BOUNDARY_TOL = 1e-5

#: BOBYQA's constants (Powell's): the trust-radius updates by the ratio of actual to
#: predicted reduction, and the Cauchy-step test of the geometry step.
_RATIO_SHRINK = 0.1
_RATIO_KEEP = 0.7
_CAUCHY_LIMIT = 1.0 + math.sqrt(2.0)


@dataclass(frozen=True)
class Lme4Path:
    """Where lme4's default ``lmer()`` stops on a criterion.

    Attributes
    ----------
    theta0 : float
        lme4's start.
    theta : float
        Where the search ends (after ``restart_edge`` and ``boundary.tol``).
    criterion : float
        The criterion there.
    evaluations : int
        Criterion evaluations of the search(es).
    restarted : bool
        True when ``restart_edge`` ran the search again from ``theta = 0``.
    """

    theta0: float
    theta: float
    criterion: float
    evaluations: int
    restarted: bool


def lme4_path(deviance: Callable[[float], float], theta0: float, trace: list | None = None) -> Lme4Path:
    """Follow ``optimizeLmer`` with ``nloptwrap`` from ``theta0`` on ``deviance(theta)``.

    ``trace``, if given, receives the ``(theta, value)`` of every BOBYQA evaluation (what
    ``lmer(..., verbose = 3)`` prints; the edge checks are not BOBYQA's).
    """
    counter = _Counted(deviance)
    theta, value = bobyqa_1d(counter, theta0, lower=0.0, trace=trace)
    restarted = False
    if theta == 0.0:
        at_zero = counter(0.0)
        if (counter(LME4_EDGE_STEP) - at_zero) / LME4_EDGE_STEP < 0:
            restarted = True
            theta, value = bobyqa_1d(counter, 0.0, lower=0.0, trace=trace)
    if 0.0 < theta < LME4_BOUNDARY_TOL:
        at_zero = counter(0.0)
        if at_zero < value:
            theta, value = 0.0, at_zero
    return Lme4Path(theta0, theta, value, counter.count, restarted)


class _Counted:
    def __init__(self, f: Callable[[float], float]):
        self.f = f
        self.count = 0

    def __call__(self, x: float) -> float:
        self.count += 1
        return float(self.f(x))


def default_initial_step(x: float, lower: float) -> float:
    """NLopt's default initial step for a variable with only a lower bound."""
    if x > lower:
        return INITIAL_STEP_FRACTION * (x - lower)
    # At the bound: 1.1 times the (zero) distance, then x itself, then 1.
    return x if x != 0.0 else 1.0


def bobyqa_1d(f: Callable[[float], float], x0: float, lower: float = 0.0,
              trace: list | None = None) -> tuple[float, float]:
    """NLopt's BOBYQA in one variable on ``[lower, inf)``, with lme4's stopping rules.

    Returns the point where it stops and the value there; ``trace`` (a list) receives
    every evaluation ``(x, f(x))``.
    """
    return _Bobyqa1D(f, x0, lower, trace).run()


class _Bobyqa1D:
    """The state of one BOBYQA run in one variable (see the module docstring).

    Positions are offsets from ``base`` (Powell's XBASE), as in BOBYQA, so that the bound
    tests (``x == sl``) and the shifts of the base happen as there.
    """

    def __init__(self, f: Callable[[float], float], x0: float, lower: float, trace: list | None = None):
        self.f = f
        self.trace = trace
        self.lower = lower
        self.rhobeg = default_initial_step(x0, lower)
        self.rhoend = max(LME4_XTOL_REL * self.rhobeg, LME4_XTOL_ABS)
        x = x0
        # Keep the first points feasible: a start within rhobeg of the bound moves onto it
        # (if at or beyond it) or to rhobeg from it.
        if lower - x >= -self.rhobeg:
            x = lower if lower - x >= 0 else lower + self.rhobeg
        self.base = x
        self.sl = lower - x
        self.su = math.inf
        self.evaluations = 0

    # -- the criterion at an offset --------------------------------------------------
    def point(self, offset: float) -> float:
        if offset == self.sl:
            return self.lower
        return max(self.lower, self.base + offset)

    def evaluate(self, offset: float) -> float:
        self.evaluations += 1
        x = self.point(offset)
        value = self.f(x)
        if self.trace is not None:
            self.trace.append((x, value))
        return value

    # -- the quadratic through the three points, and its Lagrange functions ------------
    def model(self) -> tuple[float, float]:
        """Gradient at xopt and second derivative of the interpolating quadratic."""
        o = self.kopt
        a, b = (k for k in range(3) if k != o)
        xo, fo = self.pts[o], self.vals[o]
        da, db = self.pts[a] - xo, self.pts[b] - xo
        sa, sb = (self.vals[a] - fo) / da, (self.vals[b] - fo) / db
        h = 2.0 * (sa - sb) / (da - db)
        return sa - 0.5 * h * da, h

    def lagrange(self, k: int, x: float) -> float:
        value = 1.0
        for j in range(3):
            if j != k:
                value *= (x - self.pts[j]) / (self.pts[k] - self.pts[j])
        return value

    def lagrange_leading(self, k: int) -> float:
        """Leading coefficient of the k-th Lagrange quadratic."""
        value = 1.0
        for j in range(3):
            if j != k:
                value /= self.pts[k] - self.pts[j]
        return value

    def lagrange_slope(self, k: int, x: float) -> float:
        i, j = (m for m in range(3) if m != k)
        return self.lagrange_leading(k) * ((x - self.pts[i]) + (x - self.pts[j]))

    # -- the initial interpolation set -------------------------------------------------
    def initial_points(self) -> None:
        rho = self.rhobeg
        first = 0.0
        second = -rho if self.su == 0 else rho
        third = -rho
        if self.sl == 0:
            third = min(2.0 * rho, self.su)
        if self.su == 0:
            third = max(-2.0 * rho, self.sl)
        self.pts = [first, second, third]
        self.vals = [self.evaluate(first)]
        self.kopt = 0
        for offset in (second, third):
            value = self.evaluate(offset)
            self.vals.append(value)
            if value < self.vals[self.kopt]:
                self.kopt = len(self.vals) - 1
        # Points on both sides of the start: the better of the two goes second.
        if second * third < 0 and self.vals[2] < self.vals[1]:
            self.pts[1], self.pts[2] = third, second
            self.vals[1], self.vals[2] = self.vals[2], self.vals[1]
            if self.kopt == 2:
                self.kopt = 1

    # -- the trust-region step (TRSBOX in one variable) --------------------------------
    def trust_step(self, g: float, h: float, delta: float) -> tuple[float, float, float]:
        """Minimize the model within the trust region and the bound.

        Returns the new offset, the model's slope there and ``crvmin`` (the curvature
        when the step is a Newton step inside the region, 0 when it ends on the trust
        boundary, -1 when a bound stops it).
        """
        xopt = self.pts[self.kopt]
        crvmin = -1.0
        fixed = (xopt <= self.sl and g >= 0) or (xopt >= self.su and g <= 0)
        d, slope = 0.0, g
        if not fixed and g != 0.0:
            s = -g
            blen = delta / abs(s)
            length = blen
            if h * s * s > 0:
                length = min(blen, 1.0 / h)
            at_bound = False
            if s < 0:
                to_bound = (self.sl - xopt) / s
                if to_bound < length:
                    length, at_bound = to_bound, True
            if length > 0:
                if not at_bound and h > 0:
                    crvmin = h
                slope = g + length * h * s
                d = length * s
            if at_bound:
                fixed = True
                if delta * delta - d * d <= 0:
                    crvmin = 0.0
            elif not length < blen:
                crvmin = 0.0
        xnew = max(min(xopt + d, self.su), self.sl)
        if fixed and g >= 0:
            xnew = self.sl
        return xnew, slope, crvmin

    # -- the geometry step (ALTMOV in one variable) ------------------------------------
    def geometry_step(self, knew: int, adelt: float) -> tuple[float, float, float]:
        """A point that keeps the interpolation well posed when point ``knew`` goes.

        Returns ``xnew`` (best on the lines through xopt and the other points), ``xalt``
        (a constrained Cauchy step of the Lagrange function) and ``cauchy`` (the square of
        that function there).
        """
        xopt = self.pts[self.kopt]
        lead = self.lagrange_leading(knew)
        half_alpha = lead * lead
        glag = self.lagrange_slope(knew, xopt)
        best, best_step, best_k, best_side = 0.0, 0.0, None, 0
        for k in range(3):
            if k == self.kopt:
                continue
            along = self.pts[k] - xopt
            dderiv = glag * along
            distsq = along * along
            subd = adelt / math.sqrt(distsq)
            slbd = -subd
            ilbd = iubd = 0
            sumin = min(1.0, subd)
            if along > 0:
                if slbd * along < self.sl - xopt:
                    slbd, ilbd = (self.sl - xopt) / along, -1
                if subd * along > self.su - xopt:
                    subd, iubd = max(sumin, (self.su - xopt) / along), 1
            elif along < 0:
                if slbd * along > self.su - xopt:
                    slbd, ilbd = (self.su - xopt) / along, 1
                if subd * along < self.sl - xopt:
                    subd, iubd = max(sumin, (self.sl - xopt) / along), -1
            if k == knew:
                diff = dderiv - 1.0
                step, vlag, side = slbd, slbd * (dderiv - slbd * diff), ilbd
                other = subd * (dderiv - subd * diff)
                if abs(other) > abs(vlag):
                    step, vlag, side = subd, other, iubd
                tempd = 0.5 * dderiv
                if (tempd - diff * slbd) * (tempd - diff * subd) < 0:
                    peak = tempd * tempd / diff
                    if abs(peak) > abs(vlag):
                        step, vlag, side = tempd / diff, peak, 0
            else:
                step, vlag, side = slbd, slbd * (1.0 - slbd), ilbd
                other = subd * (1.0 - subd)
                if abs(other) > abs(vlag):
                    step, vlag, side = subd, other, iubd
                if subd > 0.5 and abs(vlag) < 0.25:
                    step, vlag, side = 0.5, 0.25, 0
                vlag *= dderiv
            spread = step * (1.0 - step) * distsq
            predicted = vlag * vlag * (vlag * vlag + half_alpha * spread * spread)
            if predicted > best:
                best, best_step, best_k, best_side = predicted, step, k, side
        if best_k is None:
            xnew = xopt
        else:
            xnew = max(self.sl, min(self.su, xopt + best_step * (self.pts[best_k] - xopt)))
            if best_side < 0:
                xnew = self.sl
            elif best_side > 0:
                xnew = self.su
        xalt, cauchy = self._cauchy_step(xopt, glag, 2.0 * lead, adelt)
        return xnew, xalt, cauchy

    def _cauchy_step(self, xopt: float, glag: float, curvature: float, adelt: float) -> tuple[float, float]:
        """The larger of the Cauchy steps of the Lagrange function and of its negative."""
        saved = None
        xalt = xopt
        for sign in (1.0, -1.0):
            g = sign * glag
            free = min(xopt - self.sl, g) > 0 or max(xopt - self.su, g) < 0
            if not free:
                return xalt if saved is None else saved[0], 0.0
            step = adelt / abs(g)
            trial = xopt - step * g
            if trial <= self.sl:
                w = self.sl - xopt
                xalt = self.sl
            elif trial >= self.su:
                w = self.su - xopt
                xalt = self.su
            else:
                w = -step * g
                xalt = max(self.sl, min(self.su, xopt + w))
            gw = g * w
            curv = sign * curvature * w * w
            if -gw < curv < -_CAUCHY_LIMIT * gw:
                scale = -gw / curv
                xalt = max(self.sl, min(self.su, xopt + scale * w))
                cauchy = (0.5 * gw * scale) ** 2
            else:
                cauchy = (gw + 0.5 * curv) ** 2
            if saved is None:
                saved = (xalt, cauchy)
        if saved[1] > cauchy:
            return saved
        return xalt, cauchy

    # -- which point a new one replaces ----------------------------------------------
    def replaced_point(self, xnew: float, centre: float, delta: float, skip: int | None) -> int | None:
        """The point whose replacement by ``xnew`` is best conditioned, weighted by its
        distance from ``centre`` (Powell's ``max(1, (dist / delta)^4) * sigma``)."""
        best, knew = 0.0, None
        for k in range(3):
            if k == skip:
                continue
            weight = max(1.0, ((self.pts[k] - centre) ** 2 / (delta * delta)) ** 2)
            score = weight * self.lagrange(k, xnew) ** 2
            if score > best:
                best, knew = score, k
        return knew

    def shift_base(self) -> None:
        """Move the base to xopt (Powell does so when steps become small against |xopt|)."""
        xopt = self.pts[self.kopt]
        self.base += xopt
        self.pts = [p - xopt for p in self.pts]
        self.sl -= xopt
        self.su -= xopt

    # -- the main loop (BOBYQB) -------------------------------------------------------
    def run(self) -> tuple[float, float]:
        self.initial_points()
        rho = delta = self.rhobeg
        ntrits = 0
        nfsav = self.evaluations
        diffs = [0.0, 0.0, 0.0]
        ratio = 0.0
        dnorm = 0.0
        knew = None
        xnew = self.pts[self.kopt]
        adelt = step_sq = distsq = 0.0
        label = "trust"
        while self.evaluations < LME4_MAXEVAL:
            if label == "trust":
                g, h = self.model()
                xnew, slope, crvmin = self.trust_step(g, h, delta)
                d = xnew - self.pts[self.kopt]
                dnorm = min(delta, abs(d))
                if dnorm < 0.5 * rho:
                    ntrits = -1
                    distsq = (10.0 * rho) ** 2
                    if self.evaluations <= nfsav + 2:
                        label = "far"
                        continue
                    errbig = max(diffs)
                    if crvmin > 0 and errbig > 0.125 * rho * rho * crvmin:
                        label = "far"
                        continue
                    bdtol = errbig / rho
                    bdtest = bdtol
                    if xnew == self.sl:
                        bdtest = slope
                    if xnew == self.su:
                        bdtest = -slope
                    if bdtest < bdtol:
                        bdtest += 0.5 * h * rho
                        if bdtest < bdtol:
                            label = "far"
                            continue
                    label = "reduce"
                    continue
                ntrits += 1
                step_sq = d * d
                label = "shift"
            if label == "shift":
                if step_sq <= 1e-3 * self.pts[self.kopt] ** 2:
                    xnew -= self.pts[self.kopt]
                    self.shift_base()
                if ntrits == 0:
                    xnew, xalt, cauchy = self.geometry_step(knew, adelt)
                    denom = self.lagrange(knew, xnew) ** 2
                    if denom < cauchy and cauchy > 0:
                        xnew = xalt
                else:
                    knew = self.replaced_point(xnew, self.pts[self.kopt], delta, skip=self.kopt)
                    if knew is None:
                        break
                label = "evaluate"
            if label == "evaluate":
                value = self.evaluate(xnew)
                if ntrits == -1:
                    if value < self.vals[self.kopt]:
                        return self.point(xnew), value
                    break
                fopt = self.vals[self.kopt]
                xopt = self.pts[self.kopt]
                g, h = self.model()
                d = xnew - xopt
                vquad = g * d + 0.5 * h * d * d
                diffs = [abs(value - fopt - vquad), diffs[0], diffs[1]]
                if dnorm > rho:
                    nfsav = self.evaluations
                if ntrits > 0:
                    if vquad >= 0:
                        break
                    ratio = (value - fopt) / vquad
                    if ratio <= _RATIO_SHRINK:
                        delta = min(0.5 * delta, dnorm)
                    elif ratio <= _RATIO_KEEP:
                        delta = max(0.5 * delta, dnorm)
                    else:
                        delta = max(0.5 * delta, 2.0 * dnorm)
                    if delta <= 1.5 * rho:
                        delta = rho
                    if value < fopt:
                        better = self.replaced_point(xnew, xnew, delta, skip=None)
                        knew = knew if better is None else better
                self.pts[knew] = xnew
                self.vals[knew] = value
                if value < fopt:
                    self.kopt = knew
                    if abs(value - fopt) < LME4_FTOL_ABS:
                        break
                if ntrits == 0 or value <= fopt + 0.1 * vquad:
                    label = "trust"
                    continue
                distsq = max((2.0 * delta) ** 2, (10.0 * rho) ** 2)
                label = "far"
            if label == "far":
                xopt = self.pts[self.kopt]
                knew = None
                for k in range(3):
                    sq = (self.pts[k] - xopt) ** 2
                    if sq > distsq:
                        knew, distsq = k, sq
                if knew is not None:
                    dist = math.sqrt(distsq)
                    if ntrits == -1:
                        delta = min(0.1 * delta, 0.5 * dist)
                        if delta <= 1.5 * rho:
                            delta = rho
                    ntrits = 0
                    adelt = max(min(0.1 * dist, delta), rho)
                    step_sq = adelt * adelt
                    label = "shift"
                    continue
                if ntrits != -1 and (ratio > 0 or max(delta, dnorm) > rho):
                    label = "trust"
                    continue
                label = "reduce"
            if label == "reduce":
                if rho > self.rhoend:
                    delta = 0.5 * rho
                    scale = rho / self.rhoend
                    if scale <= 16.0:
                        rho = self.rhoend
                    elif scale <= 250.0:
                        rho = math.sqrt(scale) * self.rhoend
                    else:
                        rho = 0.1 * rho
                    delta = max(delta, rho)
                    ntrits = 0
                    nfsav = self.evaluations
                    label = "trust"
                    continue
                if ntrits == -1:
                    label = "evaluate"
                    continue
                break
        xopt = self.pts[self.kopt]
        return self.point(xopt), self.vals[self.kopt]


def lme4_path_of_stats(stats, REML: bool, theta0: float, trace: list | None = None) -> Lme4Path:
    """:func:`lme4_path` on the profiled criterion of pooled statistics."""

    def deviance(theta: float) -> float:
        return float(criterion_values(np.array([theta * theta]), stats, REML)[0])

    return lme4_path(deviance, theta0, trace)


def lme4_default_optimum(optima, stats, REML: bool, theta0: float) -> Optimum:
    """The minimum lme4's ``lmer()`` returns with its default settings, started at ``theta0``.

    lme4's own path (BOBYQA from ``theta0``) is followed on the criterion; the optimum is
    the one whose basin it ends in (it stops within its tolerances of it). With a
    single optimum that is the one, wherever the path ends (:func:`~reml_engine.core.optimizer.descent_optimum`
    has nothing else to choose), so the path is not followed.
    """
    optima = tuple(optima)
    if len(optima) == 1:
        return optima[0]
    end = lme4_path_of_stats(stats, REML, theta0)
    return optimum_reached_from(optima, stats, REML, end.theta * end.theta)
