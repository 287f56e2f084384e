"""Global minimization of the profiled criterion over tau, reporting every local minimum.

The criterion is a smooth function of one variable, tau = var_group / sigma2, cheap to
evaluate at any tau (``O(U p^2 + p^3)``) and with an analytic derivative. So instead of a
local search from one start (lme4 starts at ``theta0 = sqrt(between / within)`` sums of
squares of the response and can stop at the first minimum it meets, see
:mod:`reml_engine.core.lme4_path`), the whole range is scanned and every bracketed minimum
refined.

The scan
--------
``tau`` ranges over ``[0, inf)`` for the random-intercept model, and over
``(-1/max n_g, inf)`` for the compound-symmetry extension. The scan points are:

* ``tau = 0`` itself;
* ``tau = +/- exp(s)`` for ``s`` on a uniform grid from ``log(SCAN_TAU_SMALL / max n_g)``
  to ``log(SCAN_TAU_LARGE / min n_g)`` (positive side) or ``log(0.5 / max n_g)``
  (negative side);
* near the negative limit, ``1 + tau max n_g = exp(t)`` for ``t`` on a uniform grid from
  ``log(SCAN_LIMIT_GAP)`` to ``log(0.5)``.

Why no minimum is missed
------------------------
tau enters the criterion only through the weights ``1 / (1 + n_u tau)``; on the scan
variable ``s = log|tau|`` (or ``t`` near the negative limit) each weight is a logistic
curve of unit width, and ``log(1 + n_u tau)`` a softplus with slope between 0 and 1.
The criterion is a smooth (analytic) function of those weights, so its features in
``s`` have widths of order one; the grid takes ``SCAN_POINTS_PER_UNIT`` points per unit.

Every local minimum in the interior is a zero of the derivative where it changes sign
from negative to positive. The scan evaluates the *derivative* at each point, so:

1. a minimum between two scan points whose derivatives have opposite signs is
   bracketed, and refined to full precision by Brent's root finder on the derivative;
2. a minimum between two scan points whose derivatives have the *same* sign must come
   with a maximum in the same interval: the derivative dips through zero and back. It
   then has a local extremum of the wrong sign between the scan points, so the sampled
   derivative has a local extremum towards zero at or next to that interval. Every
   such local extremum of the sampled derivative is searched (bounded Brent on the
   derivative over its two neighbouring intervals), and a sign change found there is
   bracketed as in 1.
3. Outside the scanned range the criterion is monotone to rounding: below
   ``SCAN_TAU_SMALL / max n_g`` it is linear in tau to relative order
   ``SCAN_TAU_SMALL``, so the sign of the derivative at 0 decides; above
   ``SCAN_TAU_LARGE / min n_g`` every weight is in its ``1 / (n_u tau)`` tail, where
   ``logdet_V`` grows like ``G log tau`` against at most ``p log tau`` from
   ``logdet_XtVinvX`` and a bounded ``log pwrss``. If the derivative is still negative
   at the top of the scan the scan is extended; if it stays negative, the model is
   degenerate (residual variance not identified) and the fit raises.

4. Near the negative limit the scan stops at ``1 + tau max n_g = SCAN_LIMIT_GAP``:
   closer still, rounding (not the data) shapes the criterion. There it behaves like
   ``a + b log(1 + tau max n_g)``; a positive slope at the closest point is reported as
   a ``"limit"`` optimum, and a slope of at least ``LIMIT_UNBOUNDED_SLOPE`` as a criterion
   unbounded below (the compound-symmetry likelihood then has no maximum).

5. The scan points are evaluated by the spectral form of the criterion
   (:mod:`reml_engine.core.spectral`, ``O(r)`` per point after one eigendecomposition)
   when its set-up pays, and by the direct form wherever a decision could depend on the
   difference between the two: a slope within ``SCAN_CERTIFY_RTOL`` of the direct form's
   scale, the first and last points, both ends of every sign change, and the candidates
   of 2. (those whose neighbouring intervals the spectral form's monotone bounds do not
   keep sign-definite), which are then tested exactly. So every decision above is the
   one the direct form would take; a re-evaluated point farther from its spectral value
   than the margin sends the scan back to the direct form (``scan="direct"`` forces it).

A bracketed sign change is kept only if the refined root is a true stationary point
(derivative small against its cancelling terms, ``STATIONARY_RTOL``), which discards
rounding jumps. The boundary ``tau = 0`` is a local minimum of the constrained problem
when the derivative there is non-negative.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from ..errors import DegenerateCriterionError
from ..frontend.arguments import check_bool
from .blas import single_threaded_blas
from .criterion import (
    DIRECT_KERNEL_MAX_Q,
    CriterionBatch,
    batch_length,
    compiled_criterion,
    evaluate,
    evaluate_compiled,
    evaluate_minimized,
    residual_dof,
    tau_lower_limit,
)
from .criterion_kernels import bounded_minimum, brent_root, direct_workspace
from .problem import CriterionProblem
from .spectral import derivative_bounds, spectral_evaluate, spectral_form, spectral_pays
from .statistics import PooledStats

#: Scan points per unit of log(tau): every weight 1/(1 + n tau) is a logistic curve of
#: unit width in log(tau), so 20 points resolve each transition.
SCAN_POINTS_PER_UNIT = 20
#: The scan starts at tau = SCAN_TAU_SMALL / max(n_g): below, the criterion is linear.
SCAN_TAU_SMALL = 1e-8
#: The scan ends at tau = SCAN_TAU_LARGE / min(n_g): above, every weight is in its tail.
SCAN_TAU_LARGE = 1e8
#: Closest approach, in 1 + tau max(n_g), to the positive-definite limit of V. Closer
#: still, the matrix of the criterion has condition number beyond 1 / SCAN_LIMIT_GAP and
#: rounding, not the data, would shape the criterion.
SCAN_LIMIT_GAP = 1e-6
#: A refined root is accepted as a stationary point when the derivative there is at most
#: this fraction of the size of its cancelling terms; a sign change that does not pass
#: is a rounding jump, not a minimum.
STATIONARY_RTOL = 1e-6
#: Near the positive-definite limit the criterion behaves like ``a + b log(1 + tau max n_g)``
#: with ``b`` a difference of counts (groups of the largest size, ranks); a slope ``b`` of
#: at least this at the closest scanned point means the criterion is unbounded below there.
LIMIT_UNBOUNDED_SLOPE = 0.5
#: Relative tolerance on tau of the Brent refinement (the criterion is then exact to
#: rounding, since it is flat to second order at a minimum).
REFINE_RTOL = 4 * np.finfo(float).eps
#: Iterations of a Brent refinement, at most (it converges in about ten).
REFINE_MAX_ITER = 200
#: Up to this q = p + 1 the Brent refinement of a bracketed minimum runs as one compiled
#: loop on the compiled direct form (:func:`reml_engine.core.criterion_kernels.brent_root`),
#: where scipy's ``brentq`` paid a Python call per step (and, on numpy's path, a dozen
#: numpy calls, about 50 us). Only the root's place comes from it: the root is then
#: evaluated, tested for stationarity and reported by the optimizer's criterion
#: (:func:`reml_engine.core.criterion.evaluate_minimized`), and a refinement the compiled
#: loop cannot finish or whose root that criterion does not accept is redone by
#: ``brentq`` on it. 0 refines by ``brentq`` only.
COMPILED_REFINE_MAX_Q = DIRECT_KERNEL_MAX_Q
#: Iterations of the search for a minimum hidden between scan points, at most (scipy's
#: bounded ``minimize_scalar`` default).
HIDDEN_SEARCH_MAX_ITER = 500
#: How far from the spectral form's root of the derivative, relative to it, a wide
#: design's refinement looks first for the direct form's root (the two forms' slopes
#: differ by at most 2e-7 of their scale, see SCAN_CERTIFY_RTOL), and how much farther
#: at each further look (:func:`_refine_from_spectral`).
SPECTRAL_ROOT_RTOL = 1e-9
SPECTRAL_STEP_GROWTH = 100.0
#: From this q on (designs too wide for the compiled loop), a bracketed minimum found by
#: the spectral scan is refined from the spectral form's root (:func:`_refine_from_spectral`).
SPECTRAL_REFINE_MIN_Q = COMPILED_REFINE_MAX_Q + 1
#: Number of times the scan is extended upwards (by SCAN_TAU_LARGE each) while the
#: criterion still falls at its top.
SCAN_MAX_EXTENSIONS = 4
#: The spectral scan (:mod:`reml_engine.core.spectral`) trusts the sign of a derivative only
#: when it exceeds this fraction of the direct form's derivative scale (the sum of the
#: absolute values of the terms the direct form adds, which bounds its rounding); closer
#: to zero the point is evaluated again by the direct form. The two forms differ by at
#: most 2e-7 of that scale over the generated data of ``tests/core/test_spectral.py`` (300 data
#: sets, every scan point); a larger difference than this at any re-evaluated point sends
#: the whole scan to the direct form.
SCAN_CERTIFY_RTOL = 1e-3
#: Scan grids kept (one per largest and smallest group size met, about 11 kB each).
SCAN_GRID_CACHE_SIZE = 64
#: How the scan evaluates the criterion: ``"auto"`` (the spectral form when its set-up
#: pays, see :func:`reml_engine.core.spectral.spectral_pays`), ``"direct"`` (every scan
#: point by :func:`reml_engine.core.criterion.evaluate_minimized`) or ``"spectral"``.
SCAN_METHODS = ("auto", "direct", "spectral")


@dataclass(frozen=True)
class Optimum:
    """A local minimum of the profiled criterion.

    Attributes
    ----------
    tau : float
        var_group / sigma2 at the minimum (negative for a compound-symmetry optimum).
    criterion : float
        The criterion there.
    kind : str
        ``"boundary"`` (tau = 0, the constraint is active), ``"interior"``, or
        ``"limit"`` (the compound-symmetry criterion falls towards the
        positive-definite limit tau = -1/max n_g).
    derivative : float
        d criterion / d tau at the minimum (non-negative at the boundary, ~0 inside).
    """

    tau: float
    criterion: float
    kind: str
    derivative: float

    @property
    def theta(self) -> float:
        """sigma_b / sigma = sqrt(tau) (NaN for negative tau)."""
        return math.sqrt(self.tau) if self.tau >= 0 else math.nan

    @property
    def icc(self) -> float:
        """Intra-class correlation tau / (1 + tau)."""
        return self.tau / (1.0 + self.tau)


@dataclass(frozen=True)
class OptSummary:
    """The record of one global optimization run (printed with the fit).

    Attributes
    ----------
    REML : bool
    n_evaluations : int
        Criterion evaluations, scan and refinement together.
    n_scan : int
        Scan points.
    scan_range : (float, float)
        Lowest and highest tau scanned.
    brackets : tuple of (float, float)
        The tau intervals in which a minimum was bracketed and refined.
    refined : tuple of float
        The tau at which each refinement ended.
    optima : tuple of Optimum
        Local minima over tau >= 0, sorted by tau.
    extended_optima : tuple of Optimum
        Local minima over the extended range tau > -1/max n_g (compound symmetry).
    derivative_at_zero : float
        d criterion / d tau at tau = 0.
    """

    REML: bool
    n_evaluations: int
    n_scan: int
    scan_range: tuple[float, float]
    brackets: tuple[tuple[float, float], ...]
    refined: tuple[float, ...]
    optima: tuple[Optimum, ...]
    extended_optima: tuple[Optimum, ...]
    derivative_at_zero: float
    limit_slope: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("OptSummary", REML=self.REML, n_evaluations=self.n_evaluations, n_scan=self.n_scan,
                          optima=len(self.optima), global_tau=self.global_optimum.tau,
                          global_criterion=self.global_optimum.criterion)

    @property
    def unbounded_at_limit(self) -> bool:
        """True when the compound-symmetry criterion falls without bound towards the
        positive-definite limit of V (its likelihood has no maximum)."""
        return self.limit_slope >= LIMIT_UNBOUNDED_SLOPE

    @property
    def global_optimum(self) -> Optimum:
        """The estimate: the lowest minimum over tau >= 0."""
        return min(self.optima, key=lambda o: o.criterion)

    @property
    def extended_global_optimum(self) -> Optimum:
        """The compound-symmetry estimate: the lowest proper minimum over the extended
        range; the limit point only when there is no proper minimum."""
        proper = [o for o in self.extended_optima if o.kind != "limit"]
        return min(proper or self.extended_optima, key=lambda o: o.criterion)


class _CountingCriterion:
    """Vectorized criterion with an evaluation counter.

    It evaluates :func:`~reml_engine.core.criterion.evaluate_minimized` (up to
    ``COMPILED_CRITERION_MAX_Q`` by the compiled loop, above by numpy's batched path)
    and remembers every tau it evaluated alone (a call with one tau; any tau of the
    compiled loop, which evaluates each tau on its own; any call when
    :func:`~reml_engine.core.criterion.evaluate` takes the taus one per batch, as it does
    for wide designs): asked for one of those again (a bracket's ends, which the scan or
    the refinement has met, or Brent's first steps), it returns the same numbers without
    computing them again. The numbers are those a new evaluation would give, to the last
    bit (the same operations on the same single tau).
    """

    def __init__(self, stats: PooledStats, REML: bool):
        self.stats = stats
        self.REML = REML
        self.count = 0
        self._compiled = compiled_criterion(stats)
        self._alone = not self._compiled and batch_length(stats.q) == 1
        self._seen: dict[float, CriterionBatch] = {}
        # The compiled loop's batches (taus, values): each value is also that tau's alone;
        # and its batches of slopes alone (:meth:`slopes`), for the derivative.
        self._batches: list[tuple[np.ndarray, CriterionBatch]] = []
        self._slope_batches: list[tuple[np.ndarray, CriterionBatch]] = []
        self._seen_slopes: dict[float, float] = {}

    def __call__(self, taus) -> CriterionBatch:
        taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
        if len(taus) == 1:
            seen = self._seen.get(float(taus[0]))
            if seen is None and self._compiled:
                seen = self._from_batches(taus[0])
            if seen is not None:
                return seen
        self.count += len(taus)
        out = evaluate_minimized(taus, self.stats, self.REML)
        if self._compiled and len(taus) > 1:
            self._batches.append((taus, out))
        if len(taus) == 1:
            self._seen[float(taus[0])] = out
        elif self._alone:
            for k, tau in enumerate(taus):
                self._seen[float(tau)] = _one(out, k)
        return out

    def _from_batches(self, tau: float, batches=None) -> CriterionBatch | None:
        """The compiled loop's value at ``tau`` from an earlier batch, if it had tau."""
        for known, out in self._batches if batches is None else batches:
            hit = np.flatnonzero(known == tau)
            if len(hit):
                single = _one(out, int(hit[0]))
                if batches is None:
                    self._seen[float(tau)] = single
                return single
        return None

    def slopes(self, taus: np.ndarray, keep: bool = True) -> CriterionBatch:
        """The derivative (and its scale) at many tau. The compiled loop leaves out the
        criterion and the log-determinants (NaN), which cost a logarithm per group size
        and tau and which no decision of the scan reads; numpy's path computes all.
        ``keep``: remember the batch for :meth:`derivative`."""
        if not self._compiled:
            return self(taus)
        self.count += len(taus)
        out = CriterionBatch(**evaluate_compiled(taus, self.stats, self.REML, with_criterion=False))
        if keep:
            self._slope_batches.append((taus, out))
        return out

    def derivative(self, tau: float) -> float:
        """The derivative at ``tau``: remembered, or (compiled loop) by :meth:`slopes`."""
        tau = float(tau)
        if self._compiled and tau not in self._seen:
            slope = self._seen_slopes.get(tau)
            if slope is None:
                known = self._from_batches(tau)
                if known is None:
                    known = self._from_batches(tau, self._slope_batches)
                if known is None:
                    known = self.slopes(np.array([tau]), keep=False)
                slope = self._seen_slopes[tau] = float(known.derivative[0])
            return slope
        return float(self(tau).derivative[0])

    def compiled_minimum(self, lo: float, hi: float, sign: float, xatol: float) -> tuple[float, float] | None:
        """``(x, value)``: the minimum of ``sign`` times the derivative on ``[lo, hi]`` by the
        compiled bounded Brent search (:func:`~reml_engine.core.criterion_kernels.bounded_minimum`),
        for the compiled criterion; None otherwise, or when the search met a point it
        could not evaluate."""
        if not self._compiled:
            return None
        stats = self.stats
        x, value, evaluations, ok = bounded_minimum(
            lo, hi, sign, xatol, HIDDEN_SEARCH_MAX_ITER, stats.within, stats.between,
            np.asarray(stats.sizes, dtype=np.float64), np.asarray(stats.groups_per_size, dtype=np.float64),
            float(residual_dof(stats, self.REML)), bool(self.REML), direct_workspace(stats.q), np.zeros(stats.p),
        )
        self.count += evaluations
        return (float(x), float(value)) if ok else None

    def value(self, tau: float) -> float:
        return float(self(tau).criterion[0])

    def compiled_root(self, a: float, b: float, fa: float, fb: float) -> float | None:
        """The root of the derivative in ``[a, b]`` (``fa < 0 < fb``) by the compiled
        Brent loop (``COMPILED_REFINE_MAX_Q``); None when the design is too wide for it
        or the loop met a point it could not evaluate."""
        stats = self.stats
        if stats.q > COMPILED_REFINE_MAX_Q:
            return None
        root, evaluations, ok = brent_root(
            a, b, fa, fb, stats.within, stats.between, np.asarray(stats.sizes, dtype=np.float64),
            np.asarray(stats.groups_per_size, dtype=np.float64), float(residual_dof(stats, self.REML)),
            bool(self.REML), REFINE_RTOL, REFINE_MAX_ITER, direct_workspace(stats.q),
            np.zeros(stats.p),
        )
        self.count += evaluations
        return float(root) if ok else None


def _one(batch: CriterionBatch, k: int) -> CriterionBatch:
    """Point ``k`` of a batch, as a batch of one."""
    return CriterionBatch(**{name: getattr(batch, name)[k:k + 1] for name in CriterionBatch.__dataclass_fields__})


def scan_grid(stats: PooledStats, extended: bool = True, tau_large: float = SCAN_TAU_LARGE) -> np.ndarray:
    """The scan points in tau, sorted (see the module docstring)."""
    # A function of the largest and smallest group size alone: built once per design
    # shape (its aranges, exponentials and sort cost as much as the spectral scan
    # itself) and copied out, so that a caller may write into its own.
    return _scan_grid(stats.max_size, stats.min_size, bool(extended), float(tau_large)).copy()


@functools.lru_cache(maxsize=SCAN_GRID_CACHE_SIZE)
def _scan_grid(max_size: float, min_size: float, extended: bool, tau_large: float) -> np.ndarray:
    step = 1.0 / SCAN_POINTS_PER_UNIT
    s_lo = math.log(SCAN_TAU_SMALL / max_size)
    s_hi = math.log(tau_large / min_size)
    positive = np.exp(np.arange(s_lo, s_hi + step, step))
    parts = [np.zeros(1), positive]
    if extended:
        s_neg_hi = math.log(0.5 / max_size)
        negative = -np.exp(np.append(np.arange(s_lo, s_neg_hi, step), s_neg_hi))
        t = np.arange(math.log(SCAN_LIMIT_GAP), math.log(0.5), step)
        near_limit = -(1.0 - np.exp(t)) / max_size
        parts += [negative, near_limit]
    grid = np.unique(np.concatenate(parts))
    grid.setflags(write=False)
    return grid


def _refine(crit: _CountingCriterion, a: float, b: float) -> float:
    """Root of the derivative in [a, b], where it goes from negative to positive."""
    return optimize.brentq(crit.derivative, a, b, xtol=1e-300, rtol=REFINE_RTOL, maxiter=REFINE_MAX_ITER)


def _refine_from_spectral(crit: _CountingCriterion, form, a: float, b: float) -> float | None:
    """:func:`_refine` for a design too wide for the compiled loop, started from the
    spectral form's root: the same root (Brent on the direct form's derivative, to
    ``REFINE_RTOL``), in a fraction of the direct evaluations.

    The spectral form's derivative (``O(p)`` per tau) agrees with the direct one to a
    small fraction of its scale, so its root (found by Brent, free) is next to the
    direct one. The direct derivative there says on which side; a step of
    ``SPECTRAL_ROOT_RTOL`` of the root, growing ``SPECTRAL_STEP_GROWTH`` times while the
    sign stays, brackets it; Brent then refines that narrow bracket on the direct form,
    its ends already evaluated. Every value and decision is still the direct form's.
    Returns None (the caller refines the whole bracket) when the spectral slopes do not
    change sign on ``[a, b]``, a direct value is not finite or Brent fails.
    """

    def spectral_slope(tau: float) -> float:
        return float(spectral_evaluate([tau], form, crit.REML, with_criterion=False)["derivative"][0])

    try:
        guess = optimize.brentq(spectral_slope, a, b, xtol=1e-300, rtol=REFINE_RTOL, maxiter=REFINE_MAX_ITER)
    except (ValueError, RuntimeError):
        return None
    slope = crit.derivative(guess)
    if not np.isfinite(slope):
        return None
    if slope == 0.0:
        return guess
    # The direct root is in [lo, hi]: the derivative is negative at lo, positive at hi.
    lo, hi = (guess, b) if slope < 0 else (a, guess)
    step = SPECTRAL_ROOT_RTOL * max(abs(guess), np.finfo(float).tiny)
    while True:
        tau = guess + step if slope < 0 else guess - step
        if not lo < tau < hi:
            break
        value = crit.derivative(tau)
        if not np.isfinite(value):
            return None
        if value == 0.0:
            return tau
        if (value > 0) == (slope < 0):  # the sign changed between guess and tau
            lo, hi = (guess, tau) if slope < 0 else (tau, guess)
            break
        lo, hi = (tau, hi) if slope < 0 else (lo, tau)
        step *= SPECTRAL_STEP_GROWTH
    try:
        return _refine(crit, lo, hi)
    except (ValueError, RuntimeError):
        return None


def _towards_zero(slopes, margin=None) -> np.ndarray:
    """Scan points (interior indices ``1 .. K-2``) where the sampled derivative has a
    local extremum towards zero without changing sign. With ``margin`` (per point), the
    size comparisons are relaxed by the margins of both points: a superset, for slopes
    known only to within their margin."""
    sign = np.sign(slopes)
    size = np.abs(slopes)
    mid, before, after = sign[1:-1], sign[:-2], sign[2:]
    slack_before = slack_after = 0.0
    if margin is not None:
        slack_before = 2.0 * (margin[1:-1] + margin[:-2])
        slack_after = 2.0 * (margin[1:-1] + margin[2:])
    return (
        (mid != 0) & (before == mid) & (after == mid)
        & (size[1:-1] <= size[:-2] + slack_before) & (size[1:-1] <= size[2:] + slack_after)
    )


def _hidden_sign_changes(crit, taus, slopes, candidates=None) -> list[tuple[float, float]]:
    """Brackets of minima hidden between scan points (case 2 of the module docstring).

    ``candidates`` (bool, per scan point), when given, restricts the search to those
    points (the spectral scan's points whose neighbourhood was evaluated exactly)."""
    brackets = []
    sign = np.sign(slopes)
    # A local extremum of the sampled derivative towards zero, without a sign change
    # (found for all scan points at once; the loop below only visits these).
    towards_zero = _towards_zero(slopes)
    if candidates is not None:
        towards_zero &= candidates[1:-1]
    for i in np.flatnonzero(towards_zero) + 1:
        s = sign[i]
        lo, hi = float(taus[i - 1]), float(taus[i + 1])
        xatol = 1e-12 * max(abs(lo), abs(hi), 1e-300)
        # The same search as one compiled loop for the compiled criterion (each step a
        # Python call and a single evaluation otherwise).
        found = crit.compiled_minimum(lo, hi, float(s), xatol)
        if found is None:
            res = optimize.minimize_scalar(
                lambda t, s=s: s * crit.derivative(t), bounds=(lo, hi), method="bounded", options={"xatol": xatol},
            )
            found = (float(res.x), float(res.fun))
        if found[1] < 0:
            turn = found[0]
            # The derivative changes sign twice: lo -> turn and turn -> hi.
            if s > 0:
                brackets.append((turn, hi))  # negative at turn, positive at hi
            else:
                brackets.append((lo, turn))  # negative at lo... positive at turn
    return brackets


def find_optima(problem: CriterionProblem | PooledStats, REML: bool | None = None, scan: str = "auto") -> OptSummary:
    """Stage 4: every local minimum of the criterion, over tau >= 0 and over the extended
    range (lme4's ``optimizeLmer``, made global).

    Parameters
    ----------
    problem : CriterionProblem or PooledStats
        From :func:`reml_engine.criterion_problem`; or the pooled statistics the
        criterion reads (``m.stats``), with ``REML`` given.
    REML : bool, optional
        The criterion, for pooled statistics (default True); a problem carries its own.
    scan : {"auto", "direct", "spectral"}
        How the scan points are evaluated (``SCAN_METHODS``). The result is the same:
        the spectral form only decides signs it is sure of, and every reported value
        comes from the direct form (:func:`reml_engine.criterion_parts`).

    Returns
    -------
    OptSummary

    Raises
    ------
    DegenerateCriterionError
        When the criterion keeps decreasing as tau grows without bound.
    """
    if isinstance(problem, CriterionProblem):
        if REML is not None and check_bool(REML, "REML") != problem.REML:
            raise ValueError(f"REML={REML} disagrees with the problem's criterion (REML={problem.REML})")
        stats, REML = problem.pooled, problem.REML
    elif isinstance(problem, PooledStats):
        stats, REML = problem, True if REML is None else check_bool(REML, "REML")
    else:
        raise TypeError(f"find_optima takes a CriterionProblem or PooledStats, got {type(problem).__name__}")
    if scan not in SCAN_METHODS:
        raise ValueError(f"scan must be one of {SCAN_METHODS}, got {scan!r}")
    with single_threaded_blas():
        form = None
        if scan == "spectral" or (scan == "auto" and spectral_pays(stats, len(scan_grid(stats)))):
            form = spectral_form(stats)
        if form is not None:
            try:
                return _find_optima(stats, REML, form)
            except _SpectralUnsure:
                pass
        return _find_optima(stats, REML, None)


class _SpectralUnsure(Exception):
    """The spectral scan met a point it cannot vouch for: the scan is redone directly."""


def _scan(crit: _CountingCriterion, form, taus: np.ndarray):
    """Criterion and derivative at the scan points: the direct form's values, or the
    spectral form's where their sign is certain.

    Returns ``values``, ``slopes``, ``margin`` (how far a slope may be from the direct
    form's; 0 where it is the direct form's), ``exact`` (evaluated directly) and
    ``definite`` (per interval between scan points: the spectral form's bounds keep the
    derivative's sign there, by more than the margin; None for the direct scan). The
    first and last points are always direct (the extension test and the limit read them).
    """
    if form is None:
        # The slopes alone where the compiled loop evaluates (the criterion NaN, and the
        # points not "exact": their values are computed when read, see _with_values).
        out = crit.slopes(taus)
        zeros = np.zeros(len(taus))
        return out.criterion.copy(), out.derivative, zeros, ~np.isnan(out.criterion), None
    # The spectral criterion is not computed: no decision reads it, and every value the
    # scan reports (its first point, the optima, the limit) is the direct form's. A tau
    # where the spectral form is not defined has a NaN slope too.
    fast = spectral_evaluate(taus, form, crit.REML, with_criterion=False)
    crit.count += len(taus)
    values, slopes = fast["criterion"].copy(), fast["derivative"].copy()
    if not np.all(np.isfinite(slopes)):
        raise _SpectralUnsure
    margin = SCAN_CERTIFY_RTOL * fast["derivative_scale"]
    lower, upper, scale = derivative_bounds(fast, form.nobs - form.p if crit.REML else form.nobs)
    definite = (lower > SCAN_CERTIFY_RTOL * scale) | (upper < -SCAN_CERTIFY_RTOL * scale)
    unsure = np.abs(slopes) <= margin
    unsure[0] = unsure[-1] = True
    # Both ends of every sign change are evaluated directly too: the refinement reads
    # them anyway, and a spectral form that lost digits would show there first.
    change = np.flatnonzero(np.sign(slopes[:-1]) != np.sign(slopes[1:]))
    unsure[change] = unsure[change + 1] = True
    exact = np.zeros(len(taus), dtype=bool)
    _make_exact(crit, taus, values, slopes, margin, exact, unsure)
    return values, slopes, margin, exact, definite


def _make_exact(crit, taus, values, slopes, margin, exact, which) -> None:
    """Evaluate the points ``which`` directly, in place; a spectral slope that was
    farther from the direct one than its margin makes the whole spectral scan unsure."""
    todo = which & ~exact
    if not todo.any():
        return
    out = crit(taus[todo])
    fast = slopes[todo]
    known = np.isfinite(fast) & np.isfinite(out.derivative)
    if np.any(np.abs(fast - out.derivative)[known] > margin[todo][known]):
        raise _SpectralUnsure
    if not (np.all(np.isfinite(out.derivative)) and np.all(np.isfinite(out.criterion))):
        raise _SpectralUnsure
    values[todo] = out.criterion
    slopes[todo] = out.derivative
    margin[todo] = 0.0
    exact[todo] = True


def _find_optima(stats: PooledStats, REML: bool, form) -> OptSummary:
    """:func:`find_optima` on pooled statistics, with the spectral scan when ``form`` is
    given (raises ``_SpectralUnsure`` when it cannot vouch for a decision)."""
    crit = _CountingCriterion(stats, REML)
    tau_large = SCAN_TAU_LARGE
    for _ in range(SCAN_MAX_EXTENSIONS + 1):
        taus = scan_grid(stats, extended=True, tau_large=tau_large)
        values, slopes, margin, exact, definite = _scan(crit, form, taus)
        if not (slopes[-1] < 0):
            break
        tau_large *= SCAN_TAU_LARGE
    else:
        raise DegenerateCriterionError(
            "the criterion keeps decreasing as var_group / sigma2 grows without bound: the "
            "residual variance is not identified (the fixed effects fit every group's responses "
            "exactly, or there are as many between-group fixed effects as groups)"
        )
    # (The spectral scan has no invalid point: it would have been redone directly.)
    # (Points the spectral scan did not evaluate directly, or the compiled loop's slopes
    # alone, have no value: see _scan and _with_values.)
    valid = np.isfinite(slopes) & (np.isfinite(values) | ~exact)
    taus, slopes, values, exact = taus[valid], slopes[valid], values[valid], exact[valid]
    n_scan = len(taus)

    candidates = None
    if form is not None:
        # Every sign is now certain; the size comparisons of the search for hidden minima
        # are not. Points that pass them with the margins (a superset of those that pass
        # exactly) are evaluated directly with their neighbours, then tested exactly;
        # except where the derivative keeps its sign on both neighbouring intervals
        # (the spectral bounds), since no search there can find a sign change.
        loose = np.flatnonzero(_towards_zero(slopes, margin)) + 1
        loose = loose[~(definite[loose - 1] & definite[loose])]
        near = np.zeros(n_scan, dtype=bool)
        near[loose] = near[loose - 1] = near[loose + 1] = True
        _make_exact(crit, taus, values, slopes, margin, exact, near)
        candidates = np.zeros(n_scan, dtype=bool)
        candidates[loose] = True

    # A sign change from negative to non-negative (selected for all points at once).
    brackets = [
        (float(taus[i]), float(taus[i + 1])) for i in np.flatnonzero((slopes[:-1] < 0) & (slopes[1:] >= 0))
    ]
    brackets += _hidden_sign_changes(crit, taus, slopes, candidates)

    extended: list[Optimum] = []
    refined = []
    rejected: list[Optimum] = []
    for a, b in sorted(set(brackets)):
        fa = crit.derivative(a)
        fb = crit.derivative(b)
        point = None
        if fb == 0.0:
            root = b
        elif fa < 0 < fb:
            # The compiled loop places the root; the criterion evaluates and accepts it
            # (or the refinement is redone by brentq, as without the loop).
            root = crit.compiled_root(a, b, fa, fb)
            if root is not None:
                point = crit(root)
                if not _stationary(point):
                    root = point = None
            elif form is not None and stats.q >= SPECTRAL_REFINE_MIN_Q:
                root = _refine_from_spectral(crit, form, a, b)
        else:
            continue
        if root is None:
            try:
                root = _refine(crit, a, b)
            except ValueError:
                # The criterion is not finite somewhere inside (statistics that lost their
                # digits, next to the positive-definite limit): no stationary point can be
                # refined here; the better end stands for it, as a rejected refinement.
                ends = [crit(t) for t in (a, b)]
                best = min(range(2), key=lambda i: ends[i].criterion[0])
                point = ends[best]
                rejected.append(Optimum((a, b)[best], float(point.criterion[0]), "interior",
                                        float(point.derivative[0])))
                continue
        if point is None:
            point = crit(root)
        found = Optimum(root, float(point.criterion[0]), "interior", float(point.derivative[0]))
        if not _stationary(point):
            rejected.append(found)
            continue
        refined.append(root)
        extended.append(found)

    lower = tau_lower_limit(stats)
    limit_slope = 0.0
    if slopes[0] > 0:
        # The compound-symmetry criterion falls all the way to the positive-definite limit.
        first = float(values[0]) if exact[0] else crit.value(float(taus[0]))
        extended.append(Optimum(float(taus[0]), first, "limit", float(slopes[0])))
        # Its slope in log(1 + tau max n_g) there says whether it is bounded.
        limit_slope = float(slopes[0] * (1.0 + taus[0] * stats.max_size) / stats.max_size)

    at_zero = crit(0.0)
    slope_zero = float(at_zero.derivative[0])
    optima = [o for o in extended if o.tau > 0]
    if slope_zero >= 0:
        optima.append(Optimum(0.0, float(at_zero.criterion[0]), "boundary", slope_zero))
    notes = []
    if form is not None and (not optima or not extended):
        # The fall-backs below read the scan's values: those of the direct form.
        raise _SpectralUnsure
    if not optima:
        # The criterion falls from tau = 0 and rises at the top of the scan, so it has a
        # minimum; only rounding (statistics that lost their digits) can have made every
        # refined sign change fail the stationarity test. Report the lowest one found
        # rather than none, and say so.
        candidates = [o for o in rejected if o.tau > 0] or [
            Optimum(float(t), float(v), "interior", float(s))
            for t, v, s in zip(taus, _with_values(crit, taus, values, exact), slopes, strict=True) if t > 0
        ]
        lowest = min(candidates, key=lambda o: o.criterion)
        optima.append(lowest)
        extended.append(lowest)
        notes.append(
            f"the criterion is not smooth to rounding near var_group/sigma2 = {lowest.tau:.6g}: its minimum there "
            "could not be refined to a stationary point, so the estimate is the lowest point found (the "
            "statistics may have lost digits to cancellation)"
        )
    if not extended:
        # The same for the compound-symmetry extension (tau < 0 allowed): its minimum
        # next to the positive-definite limit could not be refined.
        candidates = rejected or [Optimum(float(t), float(v), "interior", float(sl))
                                  for t, v, sl in zip(taus, _with_values(crit, taus, values, exact), slopes,
                                                      strict=True)]
        lowest = min(candidates, key=lambda o: o.criterion)
        extended.append(lowest)
        notes.append(
            f"the compound-symmetry criterion is not smooth to rounding near var_group/sigma2 = {lowest.tau:.6g}: "
            "its minimum there could not be refined, so its estimate is the lowest point found (the statistics may "
            "have lost digits to cancellation)"
        )
    extended = _dedupe(extended)
    optima = _dedupe(optima)
    return OptSummary(
        REML=REML,
        n_evaluations=crit.count,
        n_scan=n_scan,
        scan_range=(max(float(taus[0]), lower), float(taus[-1])),
        brackets=tuple(sorted(set(brackets))),
        refined=tuple(refined),
        optima=tuple(optima),
        extended_optima=tuple(extended),
        derivative_at_zero=slope_zero,
        limit_slope=limit_slope,
        notes=tuple(notes),
    )


def _with_values(crit: _CountingCriterion, taus: np.ndarray, values: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """The criterion at every scan point: the scan's values, and those it left out (the
    compiled loop's slopes alone) evaluated now."""
    if exact.all():
        return values
    values = values.copy()
    values[~exact] = crit(taus[~exact]).criterion
    return values


def _stationary(point: CriterionBatch) -> bool:
    """True when the derivative at the (single) point is zero against its cancelling
    terms (``STATIONARY_RTOL``): a true stationary point, not a rounding jump."""
    return bool(abs(point.derivative[0]) <= STATIONARY_RTOL * point.derivative_scale[0])


def _dedupe(optima: list[Optimum]) -> list[Optimum]:
    """Sort by tau; two refinements that converged to the same root count once."""
    result: list[Optimum] = []
    for o in sorted(optima, key=lambda o: o.tau):
        if result and abs(o.tau - result[-1].tau) <= 1e-9 * max(abs(o.tau), 1e-300):
            continue
        result.append(o)
    return result


def descent_optimum(optima, slope_at_start: float, start_tau: float) -> Optimum:
    """The minimum a descent started at ``start_tau`` reaches.

    The criterion decreases from the start towards the nearest minimum on the downhill
    side: that is the basin a local optimizer started there stays in (if its steps do
    not jump the barrier, see :func:`reml_engine.core.lme4_path.lme4_default_optimum`).

    Raises
    ------
    ValueError
        When ``optima`` is empty.
    """
    optima = list(optima)
    if not optima:
        raise ValueError("no local optimum to choose from")
    if slope_at_start > 0:
        below = [o for o in optima if o.tau <= start_tau]
        if below:
            return max(below, key=lambda o: o.tau)
    above = [o for o in optima if o.tau >= start_tau]
    if above:
        return min(above, key=lambda o: o.tau)
    return max(optima, key=lambda o: o.tau)


def optimum_reached_from(optima, stats: PooledStats, REML: bool, tau: float) -> Optimum:
    """The local minimum a descent of the criterion started at ``tau`` ends in: the
    slope there says which way is downhill (see :func:`descent_optimum`).

    lme4's default fit (:func:`reml_engine.core.lme4_path.lme4_default_optimum`), an ML
    refit started at the REML estimate (:mod:`reml_engine.inference.model_comparison`)
    and lme4's profile (:mod:`reml_engine.inference.intervals`) stop there.
    """
    slope = float(evaluate([tau], stats, REML).derivative[0])
    return descent_optimum(optima, slope, tau)
