"""Global minimization of the profiled criterion over k variance ratios, every local minimum reported.

The model has k random-intercept terms with ratios ``tau_j = var_j / sigma2`` in the box
``[0, inf)^k`` (faces and edges included: several terms may sit at 0 at once). The
criterion (REML criterion or ML deviance, lme4's constants) is read through the engine's
:class:`VCProblem` only: ``evaluate`` (value and analytic gradient; at ``tau_j = 0`` the
one-sided derivative) and ``reduce_to_term`` (the exact one-dimensional problem in one
ratio, the others held). The search is a pure function of the problem.

The search
----------
**One term (k = 1)** is today's exact scan (:func:`reml_engine.optimizer.find_optima`) on
the reduction to that term; its minima are verified, not refined.

**Several terms, the grid search** (``search="grid"``). One term ``j*`` is solved exactly,
the others are sampled:

1. *Inner term.* ``j*`` is the term whose reduction is cheapest (fewest levels: the
   reduction costs an eigendecomposition of an ``m_j* x m_j*`` matrix). At every node of
   the outer grid, ``reduce_to_term(j*, tau)`` and the 1-D scan find *every* local
   minimum in ``tau_j*`` over ``[0, inf)`` with the 1-D guarantee (below).
2. *Outer grid* (:mod:`~reml_engine.varcomp.optimizer_grid`). Each other ratio takes the
   value 0 (the face) and ``points_per_unit`` values per unit of ``log(tau)`` from
   ``OUTER_TAU_SMALL / max size`` to ``OUTER_TAU_LARGE / min size`` (the term's weighted
   level sizes, from the exact scan of its edge). ``OUTER_POINTS_PER_UNIT`` = 4 is the
   density with one outer ratio; with more, the density is lowered until the grid has at
   most ``MAX_OUTER_NODES`` nodes (about 1 per unit for three terms; the record states
   it), and ``search="auto"`` takes the budgeted search below ``OUTER_MIN_POINTS_PER_UNIT``.
3. *Branches.* Every inner minimum is evaluated with its gradient. The inner derivative
   vanishes there (or the inner ratio is at 0 with a non-negative slope), so the outer
   components of the gradient are the derivatives of the profile
   ``g(tau_out) = f(tau_out, t*(tau_out))`` along the branch of inner minima ``t*``
   (envelope theorem). Inner minima at neighbouring nodes are matched into branches
   (order-preserving, nearest in ``log t``). A local minimum of ``f`` is exactly a local
   minimum of ``g`` along a branch.
4. *Candidates.* A node is a candidate when, along every outer axis, descent is blocked
   within one grid step: the derivative changes sign between the node and its
   neighbour on the descent side, or the node is on the face ``tau = 0`` with a
   non-negative one-sided derivative, or at the top of the range with a negative one, or
   the branch ends there, or the sampled derivative has a local extremum towards zero
   there (a minimum and a maximum may hide between two nodes, as in the 1-D scan); and
   when its criterion is a discrete local minimum among its matched neighbours. Adjacent
   candidates count once (the lowest). The exact minima on the k edges of the box (all
   ratios but one at 0, each a 1-D scan) are candidates too, and so is the end of the
   imitation of lme4's run (:mod:`~reml_engine.varcomp.lme4_start`).
5. *Refinement.* Each candidate is refined by L-BFGS-B on the full criterion with the
   analytic gradient, in ``x_j = asinh(tau_j / unit_j)`` (``unit_j`` = 1 / the term's
   largest level size): linear near 0, where the bound ``x_j >= 0`` is ``tau_j >= 0`` and
   the KKT condition is the one in tau (a ratio stays at 0 only if its one-sided
   derivative there is non-negative), and logarithmic above, where the criterion is close
   to quadratic and a descent crosses decades in a few steps. Each end point is verified:
   the gradient in ``log tau`` of the free ratios is zero and the one-sided derivatives at
   0 non-negative, to ``STATIONARY_ATOL + STATIONARY_RTOL * nobs`` (the rounding of the
   gradient grows with the rows; up to ``NEWTON_POLISH_STEPS`` Newton steps polish a point
   short of it); and the Hessian over the free ratios (differences of the analytic
   gradient) has no eigenvalue below ``-HESSIAN_ATOL``. Duplicates are merged.
6. *Sweeps.* Exact 1-D scans through the estimate along every term; a lower 1-D minimum
   (a miss of the grid: none on the designs tested) restarts a descent there, until a
   round of sweeps finds nothing lower.

**Several terms, the budgeted search** (``search="budgeted"``; ``"auto"`` takes it when
a grid node would cost too much: the inner term has more than ``GRID_MAX_INNER_LEVELS``
levels, or all terms more than ``GRID_MAX_TOTAL_LEVELS`` together). Its cost is about one
local descent, plus a reduction per cheap term and round:

1. a descent (step 5) from lme4's start;
2. the exact scans of the edges of the terms with at most ``EDGE_SWEEP_MAX_LEVELS``
   levels, and the sweeps (step 6) along the terms with at most ``SWEEP_MAX_LEVELS``: any
   1-D minimum lower than the best optimum restarts a descent there (the scans give the
   values, so a point costs a descent only when it is lower), until a round of sweeps
   finds nothing lower (at most ``BUDGET_MAX_ROUNDS`` rounds);
3. when that leaves several optima, the imitation of lme4's run decides which one lme4
   returns; with one, lme4 is predicted to return it.

For InstEval (2972, 1128 and 14 levels) that is one descent and the scans of ``dept``; for
subjects x items (1e4 x 1e3 levels) one descent and a sweep along the items.

What is guaranteed
------------------
*In every regime*: each reported optimum is a local minimum of the criterion over the box
(the first- and second-order checks of step 5), and the estimate is the lowest of them.
The record lists every start, refinement and evaluation count.

*The 1-D guarantee* (k = 1, the inner term at every node, the edges, the sweeps): every
local minimum in one ratio, the others held, is found. The criterion in one ratio t is a
smooth function of the weights ``1 / (1 + kappa_i t)``, logistic curves of unit width in
``log t``; the scan samples the derivative at 20 points per unit, brackets every sign
change, and searches every extremum of the sampled derivative towards zero (where a
minimum and a maximum squeezed between two scan points would show); outside the scanned
range the criterion is monotone (see :mod:`reml_engine.optimizer`). In particular the
estimate is the lowest point of every line through it along a term of ``swept_terms``
(the record), and the minima of every edge of ``edge_terms`` are known.

*The grid search, at density D points per unit of log(tau) on the outer ratios*, adds:
every local minimum whose branch of inner minima exists over at least one outer grid
step, and whose profile along the branch has no minimum-maximum pair narrower than a
grid step that the sampled derivative does not show, is found. At a fixed inner ratio
each outer ratio enters through logistic weights of unit width in ``log tau`` (the
reduction to that ratio has the same form), so the profile's features have widths of
order one. For two terms (one outer ratio, D = 4) this is the 1-D argument at a fifth of
its density, with the derivative test at every node: a minimum is missed only if a fold
of its branch, or a minimum-maximum pair of its profile, is narrower than a quarter of a
unit of ``log tau`` (a factor 1.3 in the ratio). For three terms (D about 1) the same
statement holds at a grid step of one unit, a factor e: a heuristic, with the density in
the record. Below the outer range (``tau * size <= OUTER_TAU_SMALL``) the criterion is
linear in the outer ratio to relative order ``OUTER_TAU_SMALL`` and the sign test between
the face node and the first node brackets a minimum there; above it
(``tau * size >= OUTER_TAU_LARGE``) every weight is in its tail, and a negative
derivative at the top node makes that node a candidate.

*The budgeted search* adds nothing beyond the first two paragraphs: the estimate is a
verified local minimum, the lowest point of its lines along the swept terms and lower
than every minimum of the scanned edges. A lower minimum away from those lines, reached
from no start, would be missed: the regime trades that for speed, and the record says
``search="budgeted"``.

Examples
--------
>>> summary = find_optima_terms(problem, REML=True)       # doctest: +SKIP
>>> summary.global_optimum.tau, summary.global_optimum.criterion   # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from ..core.optimizer import OptSummary, find_optima
from ..core.statistics import PooledStats
from ..errors import DegenerateCriterionError
from .lme4_start import LME4_START_THETA, lme4_default_descent
from .optimizer_grid import (
    MAX_OUTER_NODES,
    OUTER_MIN_POINTS_PER_UNIT,
    OUTER_POINTS_PER_UNIT,
    OUTER_TAU_LARGE,
    OUTER_TAU_SMALL,
    grid_density,
    grid_search,
)
from .scan import scan_pooled
from .threads import engine_threads

#: The grid search is chosen by ``search="auto"`` only when the inner term has at most
#: this many levels (a node costs an eigendecomposition of that size) ...
GRID_MAX_INNER_LEVELS = 500
#: ... and the terms at most this many levels together (a node costs a reduction, about
#: one evaluation of the criterion, which grows with the levels).
GRID_MAX_TOTAL_LEVELS = 2000
#: Terms with at most this many levels are swept exactly through the best point in the
#: budgeted search (a reduction then costs an eigendecomposition of this size, a few
#: evaluations' worth at the scale where the budgeted search is used).
SWEEP_MAX_LEVELS = 1000
#: ... and with at most this many, their edge of the box is scanned first (a reduction
#: to a term with the others at 0 is diagonal in exact arithmetic, but an engine may
#: still decompose it).
EDGE_SWEEP_MAX_LEVELS = 300
#: Rounds of descents and sweeps in the budgeted search.
BUDGET_MAX_ROUNDS = 6
#: Refinements in the grid search, in order of the candidates' criteria (a cap that the
#: record reports when reached; it is not reached on the designs tested).
MAX_REFINEMENTS = 60
#: L-BFGS-B stopping rules of a refinement: relative reduction of the criterion (about
#: the rounding of its value, which sums terms much larger than their differences) and
#: the projected gradient in the scaled ratios (about d criterion / d log tau). Below
#: these the value's rounding, not the data, drives the line search; the verification's
#: Newton polish, on the analytic gradient alone, does the last digits.
REFINE_FTOL = 1e-12
REFINE_GTOL = 1e-5
#: Most evaluations of one L-BFGS-B line search: a longer one is lost in that rounding.
REFINE_MAX_LINE_SEARCH = 8
REFINE_MAX_ITER = 500
#: A refinement keeps tau_j * (largest level size) below this: far above, the residual
#: variance is not identified and H is singular to rounding (the 1-D scans raise
#: DegenerateCriterionError before a criterion can keep falling there).
REFINE_TAU_SIZE_MAX = 1e12
#: A refined point is stationary when every free component of the gradient in log(tau)
#: (tau_j d criterion / d tau_j) is at most STATIONARY_ATOL + STATIONARY_RTOL * nobs, in
#: criterion units, and every ratio at 0 has a one-sided derivative of at least minus
#: that per unit of tau * max size. The relative part is the rounding of the gradient,
#: a sum of terms of the order of the number of rows.
STATIONARY_ATOL = 1e-5
STATIONARY_RTOL = 1e-9
#: Newton steps (with the verification's Hessian) that polish a refined point while its
#: gradient in log tau is above NEWTON_POLISH_ATOL + NEWTON_POLISH_RTOL * nobs ...
NEWTON_POLISH_STEPS = 3
NEWTON_POLISH_ATOL = 1e-8
NEWTON_POLISH_RTOL = 1e-12
#: ... each at most NEWTON_POLISH_MAX_STEP in log tau, accepted when the gradient shrinks
#: and the criterion does not rise by more than this relative amount (its rounding).
NEWTON_POLISH_MAX_STEP = 0.1
POLISH_CRITERION_SLACK = 1e-10
#: Step (in log tau) of the differences of the analytic gradient that give the Hessian.
HESSIAN_STEP = 1e-4
#: A stationary point is a minimum when the Hessian over its free ratios (in log tau,
#: criterion units) has no eigenvalue below -HESSIAN_ATOL (flat directions pass).
HESSIAN_ATOL = 1e-3
#: Two optima are the same when their criteria differ by at most CRITERION_ATOL and every
#: ratio is 0 in both or equal to SAME_LOG_TAU in log(tau).
SAME_LOG_TAU = 1e-3
CRITERION_ATOL = 1e-7
#: A ratio whose weight on every level is below this (``tau_j * largest level size``) is
#: taken to 0 when the criterion there is no higher (to ``POLISH_CRITERION_SLACK``): at such
#: a ratio the gradient in log(tau) and the curvature vanish with tau, so the interior
#: checks pass trivially and the same optimum would be listed twice, once at 0.
SNAP_TO_ZERO = 1e-10
#: Two criteria closer than this are a tie; the estimate is then the first in tau order.
TIE_ATOL = 1e-9
#: A 1-D sweep minimum lower than the best point by more than this restarts a descent.
SWEEP_IMPROVEMENT_ATOL = 1e-7


def _frozen(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class VCOptimum:
    """A local minimum of the criterion over the box of variance ratios.

    Attributes
    ----------
    tau : ndarray (k,)
        ``var_j / sigma2`` per term.
    criterion : float
    gradient : ndarray (k,)
        d criterion / d tau_j there (the one-sided derivative for a ratio at 0).
    at_zero : tuple of bool
        Which ratios sit at the boundary 0.
    min_curvature : float
        Smallest eigenvalue of the Hessian over the free ratios, in log(tau) (NaN when
        every ratio is at 0).
    """

    tau: np.ndarray
    criterion: float
    gradient: np.ndarray
    at_zero: tuple[bool, ...]
    min_curvature: float

    @property
    def theta(self) -> np.ndarray:
        """lme4's theta: sqrt(tau) per term."""
        return np.sqrt(self.tau)

    @property
    def kind(self) -> str:
        """``"interior"`` when every ratio is positive, ``"boundary"`` otherwise."""
        return "boundary" if any(self.at_zero) else "interior"


@dataclass(frozen=True)
class TermBoundary:
    """Why a term of the estimate sits at var_j = 0.

    Attributes
    ----------
    term : str
    derivative_at_zero : float
        One-sided d criterion / d tau_j at 0, the other ratios at the estimate
        (non-negative at a boundary optimum).
    reason : str
        ``"negative"`` when the criterion rises into positive values, so that it falls
        towards negative values of the ratio (a negative correlation the term cannot
        express); ``"flat"`` when the slope is zero (the data cannot tell a small
        variance from none).
    extended_tau, extended_criterion : float
        The lowest minimum of the criterion in that ratio alone (others held) when
        negative values are allowed down to where H stops being positive definite (NaN
        when the term was not scanned: too many levels in the budgeted search).
    unbounded_at_limit : bool
        The extended criterion falls without bound towards that limit.
    """

    term: str
    derivative_at_zero: float
    reason: str
    extended_tau: float
    extended_criterion: float
    unbounded_at_limit: bool


@dataclass(frozen=True)
class Refinement:
    """One local descent: where it started, where it ended, at what cost."""

    start: np.ndarray
    end: np.ndarray
    criterion: float
    evaluations: int
    source: str
    accepted: bool


@dataclass(frozen=True)
class VCOptSummary:
    """The record of one global optimization over k variance ratios.

    Attributes
    ----------
    REML : bool
    term_names : tuple of str
    search : str
        ``"exact"`` (k = 1), ``"grid"`` or ``"budgeted"``.
    inner_term : int or None
        The term solved exactly at every grid node (grid search).
    points_per_unit : float
        Outer grid density (grid search; NaN otherwise).
    outer_grid : tuple of ndarray
        The values of each outer ratio (0 first), in term order with the inner term's
        entry empty.
    n_evaluations, n_reductions : int
        Criterion evaluations and reductions to one term, the whole search.
    n_nodes : int
        Outer grid nodes (grid search).
    candidates : tuple of ndarray
        Start points of the refinements.
    refinements : tuple of Refinement
    optima : tuple of VCOptimum
        Every local minimum found, sorted by criterion (the first is the estimate).
    boundary : tuple of TermBoundary
        One per term of the estimate at 0.
    lme4_default : VCOptimum
        The optimum lme4's ``lmer()`` is predicted to return from its default start:
        where the imitation of its run (:mod:`reml_engine.varcomp.lme4_start`) ends,
        refined; in the budgeted search with a single optimum found, that optimum.
    lme4_descent_end : ndarray
        Where the imitation handed over (tau), or the end of the descent from lme4's
        start when no imitation was made.
    edge_minima : tuple of (int, float, float)
        Every exact 1-D minimum on the edges of the box: (term, tau_j, criterion).
    edge_terms : tuple of str
        The terms whose edge was scanned.
    swept_terms : tuple of str
        The terms along which the estimate is the lowest point of its line (an exact 1-D
        scan through it found nothing lower).
    notes : tuple of str
    """

    REML: bool
    term_names: tuple[str, ...]
    search: str
    inner_term: int | None
    points_per_unit: float
    outer_grid: tuple[np.ndarray, ...]
    n_evaluations: int
    n_reductions: int
    n_nodes: int
    candidates: tuple[np.ndarray, ...]
    refinements: tuple[Refinement, ...]
    optima: tuple[VCOptimum, ...]
    boundary: tuple[TermBoundary, ...]
    lme4_default: VCOptimum
    lme4_descent_end: np.ndarray
    edge_minima: tuple[tuple[int, float, float], ...]
    edge_terms: tuple[str, ...]
    swept_terms: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def global_optimum(self) -> VCOptimum:
        """The estimate: the lowest local minimum found."""
        return self.optima[0]

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("VCOptSummary", REML=self.REML, terms=", ".join(self.term_names), search=self.search,
                          n_evaluations=self.n_evaluations, optima=len(self.optima),
                          global_criterion=self.global_optimum.criterion)

    @property
    def k(self) -> int:
        return len(self.term_names)


class _Counted:
    """The problem's evaluate and reduce_to_term with counters and a small cache."""

    def __init__(self, problem, REML: bool):
        self.problem = problem
        self.REML = REML
        self.n_evaluations = 0
        self.n_reductions = 0
        self._cache: dict[bytes, object] = {}

    def evaluate(self, tau):
        tau = np.asarray(tau, dtype=np.float64)
        key = tau.tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self.n_evaluations += 1
        ev = self.problem.evaluate(tau.copy(), REML=self.REML, gradient=True)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = ev
        return ev

    def value(self, tau) -> float:
        """The criterion alone (no gradient): what a derivative-free search sees."""
        tau = np.asarray(tau, dtype=np.float64)
        hit = self._cache.get(tau.tobytes())
        if hit is not None:
            return float(hit.criterion)
        self.n_evaluations += 1
        return float(self.problem.evaluate(tau.copy(), REML=self.REML, gradient=False).criterion)

    def reduce(self, j: int, tau):
        self.n_reductions += 1
        return self.problem.reduce_to_term(j, np.asarray(tau, dtype=np.float64).copy())


def term_stats(reduction, nobs: int) -> PooledStats:
    """The single-term statistics of a reduction to one term: 'groups' of size kappa_i
    with between-matrices ``v_i v_i' / kappa_i`` and within ``C_-j - sum_i v_i v_i' / kappa_i``,
    so that :func:`reml_engine.optimizer.find_optima` applies (the constant log|H_-j| apart)."""
    kappa = np.asarray(reduction.kappa, dtype=np.float64)
    vectors = np.asarray(reduction.vectors, dtype=np.float64)
    base = np.asarray(reduction.base, dtype=np.float64)
    between = vectors[:, :, None] * vectors[:, None, :] / kappa[:, None, None]
    within = base - between.sum(axis=0)
    return PooledStats(
        nobs=nobs,
        within=0.5 * (within + within.T),
        sizes=kappa,
        groups_per_size=np.ones(len(kappa)),
        between=between,
        model_shift=np.zeros(base.shape[0]),
    )


@dataclass(frozen=True)
class _Scan:
    """The exact 1-D scan of one term at fixed other ratios.

    ``t_minima``/``criteria`` are every local minimum over ``t >= 0`` (the compiled scan
    of :mod:`.scan`, or find_optima's when that one hands over); :meth:`summary` is
    find_optima's whole record (negative t included), made when asked for.
    """

    term: int
    tau: np.ndarray
    constant: float
    stats: PooledStats
    REML: bool
    term_name: str
    t_minima: tuple[float, ...]
    criteria: tuple[float, ...]
    kappa_max: float
    kappa_min: float

    def minima(self) -> list[tuple[float, float]]:
        """(t, criterion) of every local minimum over t >= 0."""
        return [(t, c + self.constant) for t, c in zip(self.t_minima, self.criteria, strict=True)]

    def summary(self) -> OptSummary:
        return _find_optima(self.stats, self.REML, self.term_name)


def _find_optima(stats: PooledStats, REML: bool, term_name: str) -> OptSummary:
    try:
        return find_optima(stats, REML)
    except DegenerateCriterionError as err:
        raise DegenerateCriterionError(f"term {term_name}: {err}") from err


def _scan_term(counted: _Counted, j: int, tau, term_name: str) -> _Scan:
    reduction = counted.reduce(j, tau)
    stats = term_stats(reduction, counted.problem.nobs)
    fast = scan_pooled(stats, counted.REML)
    if fast is not None:
        t_minima, criteria = tuple(float(t) for t in fast[0]), tuple(float(c) for c in fast[1])
    else:
        optima = _find_optima(stats, counted.REML, term_name).optima
        t_minima, criteria = tuple(o.tau for o in optima), tuple(o.criterion for o in optima)
    return _Scan(j, _frozen(tau), float(reduction.constant), stats, counted.REML, term_name,
                 t_minima, criteria, float(stats.max_size), float(stats.min_size))


def _with(tau, j: int, value: float) -> np.ndarray:
    out = np.array(tau, dtype=np.float64)
    out[j] = value
    return out


# ---------------------------------------------------------------------------------------
# Refinement and verification


def _refine(counted: _Counted, start, unit: np.ndarray, source: str) -> Refinement:
    """Bounded quasi-Newton descent (L-BFGS-B) on the full criterion from ``start``.

    The variables are ``x_j = asinh(tau_j / unit_j)``, ``unit_j`` the ratio at which term j
    starts to matter: linear near 0, where the bound ``x_j >= 0`` is ``tau_j >= 0`` and
    the derivative keeps its sign (so the KKT condition at 0 is the one in tau), and
    ``log(2 tau_j / unit_j)`` above, where a descent crosses decades in a few steps and
    the criterion is close to quadratic (the weights are logistic in log tau).
    """
    start = np.asarray(start, dtype=np.float64)
    before = counted.n_evaluations

    def fun(x):
        tau = unit * np.sinh(x)
        ev = counted.evaluate(tau)
        if not np.isfinite(ev.criterion):
            return np.inf, np.zeros_like(x)
        return ev.criterion, np.asarray(ev.gradient) * unit * np.cosh(x)

    upper = np.arcsinh(REFINE_TAU_SIZE_MAX)
    res = optimize.minimize(
        fun, np.minimum(np.arcsinh(start / unit), upper), jac=True, method="L-BFGS-B",
        bounds=[(0.0, upper)] * len(start),
        options={"ftol": REFINE_FTOL, "gtol": REFINE_GTOL, "maxiter": REFINE_MAX_ITER,
                 "maxls": REFINE_MAX_LINE_SEARCH},
    )
    tau = np.maximum(unit * np.sinh(res.x), 0.0)
    ev = counted.evaluate(tau)
    return Refinement(_frozen(start), _frozen(tau), float(ev.criterion),
                      counted.n_evaluations - before, source, False)


def _log_hessian(counted: _Counted, tau: np.ndarray, idx: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Hessian in u = log tau over the free ratios ``idx``: d/du_j (tau_i g_i), by forward
    differences of the analytic gradient (one evaluation per free ratio)."""
    H = np.empty((len(idx), len(idx)))
    for c, j in enumerate(idx):
        stepped = _with(tau, j, tau[j] * math.exp(HESSIAN_STEP))
        g = np.asarray(counted.evaluate(stepped).gradient)
        H[:, c] = (stepped[idx] * g[idx] - base) / HESSIAN_STEP
    return 0.5 * (H + H.T)


def _verify(counted: _Counted, tau: np.ndarray, unit: np.ndarray) -> VCOptimum | None:
    """The optimum at (or polished from) ``tau`` when it passes the first- and
    second-order checks; None otherwise.

    The Hessian over the free ratios is needed for the second-order check; it also
    gives up to ``NEWTON_POLISH_STEPS`` Newton steps (in log tau) while the gradient is
    above the polish target: the criterion's value, whose rounding stops a quasi-Newton
    descent first, plays no part in them.
    """
    tau = np.array(tau, dtype=np.float64)
    tol = STATIONARY_ATOL + STATIONARY_RTOL * counted.problem.nobs
    target = NEWTON_POLISH_ATOL + NEWTON_POLISH_RTOL * counted.problem.nobs
    ev = counted.evaluate(tau)
    negligible = (tau > 0) & (tau < SNAP_TO_ZERO * unit)
    if negligible.any():
        snapped = np.where(negligible, 0.0, tau)
        ev_snapped = counted.evaluate(snapped)
        if ev_snapped.criterion <= ev.criterion + POLISH_CRITERION_SLACK * max(1.0, abs(ev.criterion)):
            tau, ev = snapped, ev_snapped
    gradient = np.asarray(ev.gradient, dtype=np.float64)
    at_zero = tau <= 0.0
    if np.any(gradient[at_zero] * unit[at_zero] < -tol):
        return None
    curvature = math.nan
    idx = np.flatnonzero(~at_zero)
    if len(idx):
        base = tau[idx] * gradient[idx]
        H = _log_hessian(counted, tau, idx, base)
        eigenvalues = np.linalg.eigvalsh(H)
        curvature = float(eigenvalues.min())
        for _ in range(NEWTON_POLISH_STEPS):
            if np.abs(base).max() <= target or curvature <= 0:
                break
            step = np.clip(-np.linalg.solve(H, base), -NEWTON_POLISH_MAX_STEP, NEWTON_POLISH_MAX_STEP)
            trial = tau.copy()
            trial[idx] = tau[idx] * np.exp(step)
            ev_trial = counted.evaluate(trial)
            g_trial = np.asarray(ev_trial.gradient, dtype=np.float64)
            if not (np.abs(trial[idx] * g_trial[idx]).max() < np.abs(base).max()
                    and ev_trial.criterion <= ev.criterion + POLISH_CRITERION_SLACK * max(1.0, abs(ev.criterion))):
                break
            tau, ev, gradient = trial, ev_trial, g_trial
            base = tau[idx] * gradient[idx]
        if np.abs(base).max() > tol or curvature < -HESSIAN_ATOL:
            return None
    return VCOptimum(_frozen(tau), float(ev.criterion), _frozen(gradient),
                     tuple(bool(z) for z in at_zero), curvature)


def _same_point(a: np.ndarray, b: np.ndarray) -> bool:
    za, zb = a <= 0, b <= 0
    if np.any(za != zb):
        return False
    free = ~za
    return bool(np.all(np.abs(np.log(a[free]) - np.log(b[free])) <= SAME_LOG_TAU))


def _merge(optima: list[VCOptimum], new: VCOptimum) -> list[VCOptimum]:
    """Add ``new`` unless it is one already found (the lower of the two is kept)."""
    for i, o in enumerate(optima):
        if _same_point(o.tau, new.tau) and abs(o.criterion - new.criterion) <= CRITERION_ATOL:
            if new.criterion < o.criterion:
                optima[i] = new
            return optima
    optima.append(new)
    return optima


def _sorted_optima(optima: list[VCOptimum]) -> tuple[VCOptimum, ...]:
    """By criterion; ties (within TIE_ATOL) in order of tau, so the estimate is stable."""
    ordered = sorted(optima, key=lambda o: (o.criterion, tuple(o.tau)))
    best = ordered[0].criterion
    tied = sorted([o for o in ordered if o.criterion - best <= TIE_ATOL], key=lambda o: tuple(o.tau))
    return tuple(tied + [o for o in ordered if o.criterion - best > TIE_ATOL])


# ---------------------------------------------------------------------------------------
# Boundary diagnosis


def _boundary(counted: _Counted, optimum: VCOptimum, names, sweepable) -> tuple[TermBoundary, ...]:
    out = []
    for j, zero in enumerate(optimum.at_zero):
        if not zero:
            continue
        slope = float(optimum.gradient[j])
        reason = "negative" if slope > 0 else "flat"
        ext_tau = ext_crit = math.nan
        unbounded = False
        if sweepable[j]:
            scan = _scan_term(counted, j, optimum.tau, names[j])
            summary = scan.summary()
            ext = summary.extended_global_optimum
            ext_tau, ext_crit = float(ext.tau), float(ext.criterion + scan.constant)
            unbounded = bool(summary.unbounded_at_limit)
        out.append(TermBoundary(names[j], slope, reason, ext_tau, ext_crit, unbounded))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# The search


def choose_search(nlevels, inner: int) -> str:
    """``"grid"`` or ``"budgeted"`` for ``search="auto"`` (module docstring)."""
    if nlevels[inner] <= GRID_MAX_INNER_LEVELS and sum(nlevels) <= GRID_MAX_TOTAL_LEVELS:
        return "grid"
    return "budgeted"


def _edges(counted: _Counted, terms, names) -> tuple[list, dict]:
    """The exact minima on the edges of the box (term j alone, the others at 0) for the
    given terms, and each one's (largest, smallest) level size (the reduction's kappa
    there: its weighted level sizes)."""
    zeros = np.zeros(counted.problem.k)
    minima, sizes = [], {}
    for j in terms:
        scan = _scan_term(counted, j, zeros, names[j])
        sizes[j] = (scan.kappa_max, scan.kappa_min)
        minima += [(j, t, v) for t, v in scan.minima()]
    return minima, sizes


def find_optima_terms(problem, REML: bool = True, search: str = "auto",
                      points_per_unit: float | None = None, max_nodes: int = MAX_OUTER_NODES,
                      lme4_start=None) -> VCOptSummary:
    """Every local minimum of the criterion over the box of k variance ratios.

    Parameters
    ----------
    problem : VCProblem
        The engine's problem (``evaluate``, ``reduce_to_term``, ``k``, ``nobs``,
        ``nlevels``, ``term_names``).
    REML : bool
        REML criterion (default) or ML deviance.
    search : {"auto", "grid", "budgeted"}
        See the module docstring; ``"auto"`` chooses by the numbers of levels.
    points_per_unit : float, optional
        Outer grid density of the grid search (default ``OUTER_POINTS_PER_UNIT``,
        lowered to fit ``max_nodes``).
    max_nodes : int
        Most outer grid nodes.
    lme4_start : array (k,), optional
        The theta lme4 starts from (:func:`~reml_engine.varcomp.lme4_start.lme4_start_theta`,
        from the raw response); ``LME4_START_THETA`` for every term when not given.

    Returns
    -------
    VCOptSummary

    Raises
    ------
    DegenerateCriterionError
        When the criterion keeps decreasing as one ratio grows without bound.
    """
    # The engine's thread limits (:mod:`.threads`) once for the whole search.
    with engine_threads(parallel=bool(getattr(problem, "parallel", False))):
        return _find_optima_terms(problem, REML, search, points_per_unit, max_nodes, lme4_start)


def _find_optima_terms(problem, REML, search, points_per_unit, max_nodes, lme4_start) -> VCOptSummary:
    if search not in ("auto", "grid", "budgeted"):
        raise ValueError(f"search must be 'auto', 'grid' or 'budgeted', not {search!r}")
    if points_per_unit is not None and not points_per_unit > 0:
        raise ValueError(f"points_per_unit must be positive, not {points_per_unit!r}")
    if int(max_nodes) < 1:
        raise ValueError(f"max_nodes must be at least 1, not {max_nodes!r}")
    k = int(problem.k)
    start_theta = np.full(k, LME4_START_THETA) if lme4_start is None else np.asarray(lme4_start, dtype=np.float64)
    if start_theta.shape != (k,) or not np.all(np.isfinite(start_theta)) or np.any(start_theta < 0):
        raise ValueError(f"lme4_start must be {k} non-negative numbers, not {lme4_start!r}")
    names = tuple(problem.term_names)
    nlevels = tuple(int(m) for m in problem.nlevels)
    counted = _Counted(problem, REML)
    notes: list[str] = []
    inner = min(range(k), key=lambda j: (nlevels[j], j))
    if k == 1:
        mode = "exact"
    else:
        mode = choose_search(nlevels, inner) if search == "auto" else search

    # The edges of the box: every term in the exact and grid searches; in the budgeted
    # one, the terms cheap to reduce (the other terms' level sizes are their means).
    edge_terms = [j for j in range(k) if mode != "budgeted" or nlevels[j] <= EDGE_SWEEP_MAX_LEVELS]
    edge_minima, sizes = _edges(counted, edge_terms, names)
    density = math.nan
    if mode == "grid":
        axes = [i for i in range(k) if i != inner]
        spans = [math.log(OUTER_TAU_LARGE / sizes[i][1]) - math.log(OUTER_TAU_SMALL / sizes[i][0]) for i in axes]
        density = grid_density(spans, int(max_nodes), points_per_unit or OUTER_POINTS_PER_UNIT)
        if density < OUTER_MIN_POINTS_PER_UNIT and search == "auto":
            mode = "budgeted"
            notes.append(f"the outer grid would have had {density:.2g} points per unit of log(tau) "
                         f"within {max_nodes} nodes: budgeted search")
    for j in range(k):
        sizes.setdefault(j, (problem.nobs / nlevels[j],) * 2)
    unit = np.array([1.0 / sizes[j][0] for j in range(k)])

    state = _Search(counted, unit)
    candidates = [(_with(np.zeros(k), j, t), f"edge {names[j]}") for j, t, _ in edge_minima]
    grids: tuple[np.ndarray, ...] = tuple(np.zeros(0) for _ in range(k))
    n_nodes = 0
    lme4_end = None
    swept: tuple[int, ...] = ()
    if mode == "exact":
        lme4_end = lme4_default_descent(counted.value, start_theta)
        state.refine_from(lme4_end, "lme4 imitation")
        # The scan's minima are exact already: verified, not refined.
        for start, source in candidates:
            state.verify_or_refine(start, source)
        swept = (0,)
    elif mode == "grid":
        lme4_end = lme4_default_descent(counted.value, start_theta)
        state.refine_from(lme4_end, "lme4 imitation")
        outer, n_nodes, nodes = grid_search(
            lambda tau: _scan_term(counted, inner, tau, names[inner]).minima(), counted.evaluate,
            k, inner, axes, sizes, density)
        full = [np.zeros(0)] * k
        for d, i in enumerate(axes):
            full[i] = _frozen(outer[d])
        grids = tuple(full)
        candidates += [(n.tau, "grid") for n in sorted(nodes, key=lambda n: n.criterion)]
        if len(candidates) > MAX_REFINEMENTS:
            notes.append(f"{len(candidates)} candidates: only the {MAX_REFINEMENTS} lowest were refined")
        for start, source in candidates[:MAX_REFINEMENTS]:
            state.refine_from(start, source)
        # Exact sweeps through the estimate along every term: the line certificate, and a
        # check of the grid (a lower 1-D minimum restarts a descent, and is noted).
        before = len(state.refinements)
        swept = _improve(state, counted, [], list(range(k)), names)
        if len(state.refinements) > before:
            notes.append("the sweeps through the grid's estimate found a lower point")
    else:
        state.refine_from(start_theta**2, "lme4 start")
        known = [(c, v, source) for (c, source), (_, _, v) in zip(candidates, edge_minima, strict=True)]
        swept = _improve(state, counted, known, [j for j in range(k) if nlevels[j] <= SWEEP_MAX_LEVELS], names)
        if len(state.optima) > 1:
            # Which of several optima lme4 reaches: the imitation of its run decides.
            lme4_end = lme4_default_descent(counted.value, start_theta)
            state.refine_from(lme4_end, "lme4 imitation")
        else:
            notes.append("one optimum found: lme4's run from its start is predicted to end there "
                         "(the imitation of its run is made only when there are several)")
        candidates = [(r.start, r.source) for r in state.refinements]

    if not state.optima:
        raise RuntimeError("no refinement ended at a verified local minimum")  # pragma: no cover
    ordered = _sorted_optima(state.optima)
    # lme4's answer: the imitation of its run when made, else the descent from its start.
    first = next((r for r in state.refinements if r.source == "lme4 imitation"),
                 next((r for r in state.refinements if r.source == "lme4 start"), None))
    if lme4_end is None:
        lme4_end = state.refinements[0].end
    if first is not None and not first.accepted:
        notes.append("the descent from lme4's start did not end at a verified minimum; the nearest "
                     "optimum is listed as lme4's")
    # The listed optimum nearest (in theta) to where the descent from lme4's start ended.
    end = first.end if first is not None else ordered[0].tau
    lme4_pick = min(ordered, key=lambda o: float(np.abs(np.sqrt(o.tau) - np.sqrt(end)).max()))
    boundary = _boundary(counted, ordered[0], names,
                         [nlevels[j] <= SWEEP_MAX_LEVELS or k == 1 for j in range(k)])
    return VCOptSummary(
        REML=REML,
        term_names=names,
        search=mode,
        inner_term=inner if mode == "grid" else None,
        points_per_unit=density if mode == "grid" else math.nan,
        outer_grid=grids,
        n_evaluations=counted.n_evaluations,
        n_reductions=counted.n_reductions,
        n_nodes=n_nodes,
        candidates=tuple(_frozen(c) for c, _ in candidates),
        refinements=tuple(state.refinements),
        optima=ordered,
        boundary=boundary,
        lme4_default=lme4_pick,
        lme4_descent_end=_frozen(lme4_end),
        edge_minima=tuple(edge_minima),
        edge_terms=tuple(names[j] for j in edge_terms),
        swept_terms=tuple(names[j] for j in swept),
        notes=tuple(notes),
    )


class _Search:
    """The optima and refinements found so far."""

    def __init__(self, counted: _Counted, unit: np.ndarray):
        self.counted = counted
        self.unit = unit
        self.optima: list[VCOptimum] = []
        self.refinements: list[Refinement] = []

    def refine_from(self, start, source: str) -> VCOptimum | None:
        r = _refine(self.counted, start, self.unit, source)
        found = _verify(self.counted, r.end, self.unit)
        self.refinements.append(Refinement(r.start, r.end, r.criterion, r.evaluations, source, found is not None))
        if found is not None:
            _merge(self.optima, found)
        return found

    def verify_or_refine(self, start, source: str) -> VCOptimum | None:
        found = _verify(self.counted, np.asarray(start, dtype=np.float64), self.unit)
        if found is None:
            return self.refine_from(start, source)
        _merge(self.optima, found)
        return found

    @property
    def best(self) -> VCOptimum | None:
        return min(self.optima, key=lambda o: o.criterion) if self.optima else None


def _improve(state: _Search, counted: _Counted, known, sweep_terms, names) -> tuple[int, ...]:
    """Descents from every known exact 1-D minimum lower than the best optimum, then exact
    sweeps through the best along ``sweep_terms``, until a round finds nothing lower.

    ``known`` holds (tau, criterion, source) of 1-D minima whose values the scans gave,
    so a point costs a descent only when it is lower. Returns the terms along which the
    final estimate is the lowest point of its line (empty when the rounds ran out first).
    """
    for _ in range(BUDGET_MAX_ROUNDS):
        best = state.best
        lower = [item for item in known if best is None or item[1] < best.criterion - SWEEP_IMPROVEMENT_ATOL]
        if lower:
            start, _, source = min(lower, key=lambda item: item[1])
            known = [item for item in known if item[0] is not start]
            state.refine_from(start, source)
            continue
        if best is None:
            return ()
        known = []
        for j in sweep_terms:
            scan = _scan_term(counted, j, best.tau, names[j])
            known += [(_with(best.tau, j, t), v, f"sweep {names[j]}") for t, v in scan.minima()]
        if not any(v < best.criterion - SWEEP_IMPROVEMENT_ATOL for _, v, _ in known):
            return tuple(sweep_terms)
    return ()


__all__ = [
    "LME4_START_THETA",
    "DegenerateCriterionError",
    "Refinement",
    "TermBoundary",
    "VCOptSummary",
    "VCOptimum",
    "choose_search",
    "find_optima_terms",
    "term_stats",
]
