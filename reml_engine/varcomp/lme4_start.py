"""Where lme4's ``lmer()`` stops from its default start, predicted.

``lmer()`` minimizes the same profiled criterion over ``theta_j = sqrt(tau_j) >= 0`` with a
local, derivative-free optimizer (``nloptwrap``: NLopt's BOBYQA), and returns the local
minimum whose basin its path ends in. Two facts decide that basin:

* **The start.** For a model whose random terms are all intercepts, lme4 1.1's
  ``mkLmerDevfun`` does not start at ``theta = 1``: with ``v_j = var(ave(y, f_j))`` (the
  sample variance of each row's level mean of the raw response, ignoring weights and
  offset) and ``v_e = var(y) - sum_j v_j``, it starts at ``theta_j = sqrt(v_j / v_e)`` when
  ``v_e > 0``, and at ``theta = 1`` otherwise (:func:`lme4_start_theta`).
* **The scale of its first steps.** NLopt's default initial step for a start ``x > 0``
  with lower bound 0 is ``0.75 x``; BOBYQA rescales each coordinate by it and starts with a
  trust region of radius 1 in those units, a quadratic model interpolating the start and
  the ``2k`` points ``x_j +/- 0.75 x_j``. Its first moves therefore follow the criterion
  at that scale, not its local gradient (which can point to another basin).

:func:`lme4_default_descent` imitates this: a trust-region descent in the same scaled
theta coordinates, each model a separable quadratic through the centre and the two
points ``+/- radius`` along every coordinate (BOBYQA's initial model, rebuilt at every
centre instead of updated point by point), the same radius rules (Powell's), handing
over to the analytic-gradient refinement once the radius is below
``LME4_HANDOVER_RADIUS``. It is a prediction, not a replica of BOBYQA; it is checked
against ``lmer()`` on the reference cases and on the simulated designs of
``tests/data/multi/lme4_default.json``.
"""

from __future__ import annotations

import math

import numpy as np

#: lme4's start for a random-intercept term when its moment start does not apply.
LME4_START_THETA = 1.0
#: NLopt's default initial step, as a fraction of a positive start (lower bound 0).
LME4_INITIAL_STEP = 0.75
#: The imitation hands over to the local refinement below this radius (scaled units).
LME4_HANDOVER_RADIUS = 0.05
#: Most trust-region iterations of the imitation.
LME4_MAX_ITERATIONS = 200
#: Powell's radius rules: a step whose actual reduction is at most RATIO_POOR of the
#: model's shrinks the radius, above RATIO_GOOD it may double.
RATIO_POOR = 0.1
RATIO_GOOD = 0.7


def lme4_start_theta(nobs: int, y_sum: float, y_sumsq: float, level_counts, level_sums) -> np.ndarray:
    """lme4's start for random-intercept terms, from per-level sums of the raw response.

    Parameters
    ----------
    nobs : int
    y_sum, y_sumsq : float
        Sum and sum of squares of the raw response (no offset, no weights: lme4 uses
        ``model.response``).
    level_counts, level_sums : sequences of k arrays
        Per term, the rows and the sum of the raw response at each level.

    Returns
    -------
    ndarray (k,)
        ``sqrt(v_j / v_e)`` when ``v_e > 0`` (and every ratio non-negative), else ones.
    """
    n = float(nobs)
    mean = y_sum / n
    var_y = (y_sumsq - n * mean**2) / (n - 1.0)
    v = []
    for counts, sums in zip(level_counts, level_sums, strict=True):
        counts = np.asarray(counts, dtype=np.float64)
        sums = np.asarray(sums, dtype=np.float64)
        # var(ave(y, f)): each row carries its level mean.
        v.append(((sums**2 / counts).sum() - n * mean**2) / (n - 1.0))
    v = np.array(v)
    v_e = var_y - v.sum()
    if v_e > 0 and np.all(v >= 0):
        return np.sqrt(v / v_e)
    return np.full(len(v), LME4_START_THETA)


def lme4_start_theta_from_data(y, factors) -> np.ndarray:
    """:func:`lme4_start_theta` from the raw response and one label array per term."""
    y = np.asarray(y, dtype=np.float64)
    counts, sums = [], []
    for labels in factors:
        _, codes = np.unique(np.asarray(labels), return_inverse=True)
        counts.append(np.bincount(codes).astype(np.float64))
        sums.append(np.bincount(codes, weights=y))
    return lme4_start_theta(len(y), float(y.sum()), float(y @ y), counts, sums)


def _trust_step(g: np.ndarray, h: np.ndarray, x: np.ndarray, radius: float) -> np.ndarray:
    """Minimize ``g's + 0.5 sum h_j s_j^2`` over ``||s|| <= radius``, ``x + s >= 0``.

    The model is separable: ``s_j(lam) = -g_j / (h_j + lam)``, clipped to the bound, with
    the smallest ``lam >= max(0, -min h)`` that keeps the step in the ball (bisection).
    """
    def step(lam):
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(h + lam > 0, -g / (h + lam), -np.sign(g) * np.inf)
        s = np.where(np.isnan(s), 0.0, s)
        return np.maximum(s, -x)

    lam_lo = max(0.0, -float(h.min())) + 1e-12 * (1.0 + float(np.abs(h).max()))
    s = step(lam_lo)
    if np.all(np.isfinite(s)) and np.linalg.norm(s) <= radius:
        return s
    lam_hi = lam_lo + float(np.linalg.norm(g)) / radius + float(np.abs(h).max()) + 1.0
    while np.linalg.norm(step(lam_hi)) > radius:
        lam_hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lam_lo + lam_hi)
        s = step(mid)
        if np.all(np.isfinite(s)) and np.linalg.norm(s) <= radius:
            lam_hi = mid
        else:
            lam_lo = mid
    return step(lam_hi)


def lme4_default_descent(criterion, start_theta) -> np.ndarray:
    """tau where the imitation of lme4's BOBYQA run hands over (module docstring).

    Parameters
    ----------
    criterion : callable
        ``tau -> float``, the criterion (NaN or inf where it is not defined).
    start_theta : array (k,)
        lme4's start (:func:`lme4_start_theta`).

    Returns
    -------
    ndarray (k,)
        The point reached, in tau = theta**2; the caller refines it.
    """
    theta0 = np.asarray(start_theta, dtype=np.float64)
    scale = np.where(theta0 > 0, LME4_INITIAL_STEP * theta0, 1.0)

    def f(x):
        value = criterion((np.maximum(x, 0.0) * scale) ** 2)
        return value if math.isfinite(value) else math.inf

    x = theta0 / scale
    fx = f(x)
    radius = 1.0
    k = len(x)
    for _ in range(LME4_MAX_ITERATIONS):
        if radius < LME4_HANDOVER_RADIUS:
            break
        # Separable quadratic through x and x +/- radius e_j (one-sided at the bound).
        g = np.zeros(k)
        h = np.zeros(k)
        best_x, best_f = x, fx
        for j in range(k):
            lo = min(radius, x[j])
            up = x.copy()
            up[j] += radius
            f_up = f(up)
            if lo > 0:
                down = x.copy()
                down[j] -= lo
                f_down = f(down)
            else:
                down, f_down = None, math.nan
            if down is None:
                # At the bound: a second point further in, for the curvature.
                far = x.copy()
                far[j] += 2.0 * radius
                f_far = f(far)
                g[j] = (4.0 * f_up - f_far - 3.0 * fx) / (2.0 * radius)
                h[j] = (f_far - 2.0 * f_up + fx) / radius**2
                candidates = ((up, f_up), (far, f_far))
            else:
                a, b = lo, radius
                # Parabola through (-a, f_down), (0, fx), (b, f_up).
                h[j] = 2.0 * (a * (f_up - fx) + b * (f_down - fx)) / (a * b * (a + b))
                g[j] = (a * a * (f_up - fx) - b * b * (f_down - fx)) / (a * b * (a + b))
                candidates = ((up, f_up), (down, f_down))
            for point, value in candidates:
                if value < best_f:
                    best_x, best_f = point, value
        if not np.all(np.isfinite(g)) or not np.all(np.isfinite(h)):
            radius *= 0.5
            continue
        # The step starts from the best point seen, as BOBYQA's from XOPT.
        g_best = g + h * (best_x - x)
        s = _trust_step(g_best, h, best_x, radius)
        predicted = -(g_best @ s + 0.5 * (h * s) @ s)
        trial = np.maximum(best_x + s, 0.0)
        f_trial = f(trial)
        norm = float(np.linalg.norm(s))
        ratio = (best_f - f_trial) / predicted if predicted > 0 else -1.0
        if f_trial < best_f:
            x, fx = trial, f_trial
        else:
            x, fx = best_x, best_f
        if ratio <= RATIO_POOR:
            radius = min(0.5 * radius, norm) if norm > 0 else 0.5 * radius
        elif ratio <= RATIO_GOOD:
            radius = max(0.5 * radius, norm)
        else:
            radius = max(0.5 * radius, 2.0 * norm)
    return (np.maximum(x, 0.0) * scale) ** 2
