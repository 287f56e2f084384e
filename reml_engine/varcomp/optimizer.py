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
the reduction to that term: unchanged.

**Several terms, the grid search** (``search="grid"``). One term ``j*`` is solved exactly,
the others are sampled:

1. *Inner term.* ``j*`` is the term whose reduction is cheapest (fewest levels: the
   reduction costs an eigendecomposition of an ``m_j* x m_j*`` matrix). At every node of
   the outer grid, ``reduce_to_term(j*, tau)`` and the one-dimensional scan find *every*
   local minimum in ``tau_j*`` over ``[0, inf)`` with the 1-D guarantee (below).
2. *Outer grid.* Each other ratio takes the value 0 (the face) and the values
   ``exp(s)``, ``s`` on a uniform grid of ``points_per_unit`` points per unit of
   ``log(tau)`` from ``log(OUTER_TAU_SMALL / max size)`` to ``log(OUTER_TAU_LARGE / min
   size)``, where the sizes are the term's (weighted) level sizes.
   ``OUTER_POINTS_PER_UNIT`` is the density for one outer term; with more, the density is
   lowered until the grid has at most ``MAX_OUTER_NODES`` nodes (the record states the
   density used).
3. *Branches.* At each node, every inner minimum is evaluated with its gradient: since
   the inner derivative vanishes there (or the inner term is at 0 with a non-negative
   slope), the outer components of the gradient are the derivatives of the profile
   ``g(tau_out) = f(tau_out, t*(tau_out))`` along the branch of inner minima ``t*``
   (envelope theorem). Inner minima at neighbouring nodes are matched into branches
   (order-preserving, nearest in ``log t``); a local minimum of ``f`` is exactly a local
   minimum of ``g`` along a branch.
4. *Candidates.* A node is a candidate when, along every outer axis, descent is blocked
   within one grid step: the derivative changes sign between the node and its
   neighbour on the descent side, or the node is on the face ``tau = 0`` with a
   non-negative one-sided derivative, or at the top of the range with a negative one,
   or the branch ends there, or the sampled derivative has a local extremum towards zero
   there (a minimum and a maximum may hide between two nodes, as in the 1-D scan); and
   also when its criterion is a discrete local minimum among its matched neighbours.
   Adjacent candidates count once (the lowest). The exact minima on the k edges of the
   box (all ratios but one at 0, each an exact 1-D scan) are candidates too.
5. *Refinement.* Each candidate is refined by a bounded quasi-Newton descent (L-BFGS-B)
   on the full criterion with the analytic gradient, in the ratios scaled by their start
   values; a ratio at its bound 0 is a boundary optimum because the one-sided derivative
   there is non-negative (the KKT condition, checked). Each end point is verified (the
   projected gradient is zero to ``STATIONARY_ATOL``; the Hessian over the free ratios,
   from differences of the analytic gradient, has no eigenvalue below
   ``-HESSIAN_ATOL``), the duplicates are merged, and the lowest is the estimate.

**Several terms, the budgeted search** (``search="budgeted"``, chosen by ``"auto"``
when a grid node would cost too much: the inner term has more than
``GRID_MAX_INNER_LEVELS`` levels or the terms more than ``GRID_MAX_TOTAL_LEVELS``
levels together). Reductions are used only for terms of at most
``SWEEP_MAX_LEVELS`` levels (the "sweepable" terms):

1. the exact minima on the edges of the sweepable terms (cheap: with the other ratios at
   0 the reduction is diagonal);
2. a local descent from lme4's start (the imitation of its BOBYQA run, then the
   refinement below), which also gives the prediction of lme4's answer;
3. every exact 1-D minimum known (the edges', then those of exact sweeps through the best
   optimum along every sweepable term) that is lower than the best optimum restarts a
   descent there; the scans give their values, so a point costs a descent only when it
   is lower. This repeats until the sweeps through the best optimum find nothing lower
   (at most ``BUDGET_MAX_ROUNDS`` descents and sweeps).

What is guaranteed
------------------
*Exact (to rounding)*, in every regime: each reported optimum is a local minimum of the
criterion over the box (KKT conditions and second-order check above); the criterion at
the estimate is the lowest of those found.

*The 1-D guarantee* (k = 1, the inner term, the edges, the sweeps): every local minimum
in one ratio is found. The criterion of one ratio t is a smooth function of the weights
``1 / (1 + kappa_i t)``, logistic curves of unit width in ``log t``; the scan samples the
derivative at 20 points per unit and brackets every sign change, and every minimum and
maximum squeezed between two scan points (the sampled derivative then has an extremum
towards zero); outside the scanned range the criterion is monotone (see
:mod:`reml_engine.optimizer`).

*The grid search, at density D points per unit of log(tau) on the outer ratios*:
every local minimum whose branch of inner minima exists over at least one outer grid step
(a fold narrower than ``1/D`` in ``log tau_out`` can be missed) and whose profile along
the branch has no minimum-maximum pair narrower than a grid step that the sampled
derivative does not show. At fixed inner ratio, each outer ratio enters through logistic
weights of unit width in ``log tau``, so the features of the profile have widths of order
one: for one outer ratio (k = 2, D = ``OUTER_POINTS_PER_UNIT`` = 4) this is the 1-D
argument with a fifth of its density, backed by the derivative test at every node; for
two or more outer ratios the density is lower (about 1 per unit for k = 3) and the claim
is a heuristic one, stated with the density in the record. Below the outer range
(``tau * size <= OUTER_TAU_SMALL``) the criterion is linear in the outer ratio to
relative order ``OUTER_TAU_SMALL``, and the sign test between the face node and the first
node brackets a minimum there; above it (``tau * size >= OUTER_TAU_LARGE``) every weight
is in its tail and a negative derivative at the top node makes that node a candidate (its
refinement follows the criterion up).

*The budgeted search*: the estimate is a verified local minimum; it is the global
minimum along every line through it parallel to a sweepable ratio, and along every edge
of the box of a sweepable ratio, with the 1-D guarantee. Anything beyond that (minima
away from those lines, reached from no start) is a heuristic: it is what the regime
trades for speed, and the record says ``search="budgeted"``.

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

from ..optimizer import DegenerateCriterionError, OptSummary, find_optima
from ..stats import PooledStats
from .lme4_start import LME4_START_THETA, lme4_default_descent

#: Outer grid density for one outer ratio, in points per unit of log(tau). The 1-D scan
#: uses 20; here each point costs a reduction and a 1-D scan, and the derivative test at
#: every node, not the density alone, brackets the minima.
OUTER_POINTS_PER_UNIT = 4.0
#: Lowest density the grid search accepts (for several outer ratios); below it the
#: budgeted search is used.
OUTER_MIN_POINTS_PER_UNIT = 0.5
#: Most nodes of the outer grid (faces included); the density is lowered to fit.
MAX_OUTER_NODES = 600
#: The outer grid starts at tau = OUTER_TAU_SMALL / max(size): below, the criterion is
#: linear in that ratio to relative order OUTER_TAU_SMALL.
OUTER_TAU_SMALL = 1e-4
#: The outer grid ends at tau = OUTER_TAU_LARGE / min(size): above, every weight of that
#: ratio is in its 1/(size tau) tail.
OUTER_TAU_LARGE = 1e6
#: Inner minima at neighbouring nodes further apart than this in log(tau_j*) are not the
#: same branch (a branch that seems to end there makes its end a candidate, so a wrong
#: split costs a refinement, never a minimum).
BRANCH_MAX_JUMP = 3.0
#: The grid search is chosen by ``search="auto"`` only when the inner term has at most
#: this many levels (a node costs an eigendecomposition of that size) ...
GRID_MAX_INNER_LEVELS = 500
#: ... and the terms at most this many levels together (a node costs a reduction, about
#: one evaluation of the criterion, which grows with the levels).
GRID_MAX_TOTAL_LEVELS = 2000
#: Terms with at most this many levels are swept exactly in the budgeted search (an
#: eigendecomposition of this size costs about as much as a few evaluations at scale).
SWEEP_MAX_LEVELS = 1000
#: Rounds of descents and sweeps in the budgeted search.
BUDGET_MAX_ROUNDS = 6
#: Refinements in the grid search, in order of the candidates' criteria (a cap that the
#: record reports when reached; it is not reached on the designs tested).
MAX_REFINEMENTS = 60
#: L-BFGS-B stopping rules of a refinement: relative reduction of the criterion and the
#: projected gradient in the scaled ratios (about d criterion / d log tau).
REFINE_FTOL = 1e-15
REFINE_GTOL = 1e-9
REFINE_MAX_ITER = 500
#: A refinement keeps tau_j * (largest level size) below this: far above, the residual
#: variance is not identified and H is singular to rounding (the 1-D scans raise
#: DegenerateCriterionError before a criterion can keep falling there).
REFINE_TAU_SIZE_MAX = 1e12
#: A refined point is stationary when every free component of the gradient in log(tau)
#: (tau_j d criterion / d tau_j) is at most this, in criterion units, and every ratio at
#: 0 has a one-sided derivative of at least -STATIONARY_ATOL per unit of tau * max size.
STATIONARY_ATOL = 1e-5
#: Step (in log tau) of the differences of the analytic gradient that give the Hessian.
HESSIAN_STEP = 1e-4
#: A stationary point is a minimum when the Hessian over its free ratios (in log tau,
#: criterion units) has no eigenvalue below -HESSIAN_ATOL (flat directions pass).
HESSIAN_ATOL = 1e-3
#: Two optima are the same when their criteria differ by at most CRITERION_ATOL and every
#: ratio is 0 in both or equal to SAME_LOG_TAU in log(tau).
SAME_LOG_TAU = 1e-3
CRITERION_ATOL = 1e-7
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
        The optimum lme4's ``lmer()`` is predicted to return from its default start
        (a local descent from theta = 1 in theta coordinates; see
        :mod:`reml_engine.varcomp.lme4_start`).
    lme4_descent_end : ndarray
        Where that descent stopped (tau).
    edge_minima : tuple of (int, float, float)
        Every exact 1-D minimum on the edges of the box: (term, tau_j, criterion).
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
    notes: tuple[str, ...] = field(default=())

    @property
    def global_optimum(self) -> VCOptimum:
        """The estimate: the lowest local minimum found."""
        return self.optima[0]

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
    """The exact 1-D scan of one term at fixed other ratios."""

    term: int
    tau: np.ndarray
    constant: float
    summary: OptSummary
    kappa_max: float
    kappa_min: float

    def minima(self) -> list[tuple[float, float]]:
        """(t, criterion) of every local minimum over t >= 0."""
        return [(o.tau, o.criterion + self.constant) for o in self.summary.optima]


def _scan_term(counted: _Counted, j: int, tau, term_name: str) -> _Scan:
    reduction = counted.reduce(j, tau)
    stats = term_stats(reduction, counted.problem.nobs)
    try:
        summary = find_optima(stats, counted.REML)
    except DegenerateCriterionError as err:
        raise DegenerateCriterionError(f"term {term_name}: {err}") from err
    return _Scan(j, _frozen(tau), float(reduction.constant), summary,
                 float(stats.max_size), float(stats.min_size))


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
        options={"ftol": REFINE_FTOL, "gtol": REFINE_GTOL, "maxiter": REFINE_MAX_ITER},
    )
    tau = np.maximum(unit * np.sinh(res.x), 0.0)
    ev = counted.evaluate(tau)
    return Refinement(_frozen(start), _frozen(tau), float(ev.criterion),
                      counted.n_evaluations - before, source, False)


def _verify(counted: _Counted, tau: np.ndarray, unit: np.ndarray) -> VCOptimum | None:
    """The optimum at ``tau`` when it passes the first- and second-order checks."""
    ev = counted.evaluate(tau)
    gradient = np.asarray(ev.gradient, dtype=np.float64)
    at_zero = tau <= 0.0
    free = ~at_zero
    if np.any(np.abs(tau[free] * gradient[free]) > STATIONARY_ATOL):
        return None
    if np.any(gradient[at_zero] * unit[at_zero] < -STATIONARY_ATOL):
        return None
    curvature = math.nan
    idx = np.flatnonzero(free)
    if len(idx):
        # Hessian in u = log tau over the free ratios: d/du_j (tau_i g_i), by forward
        # differences of the analytic gradient.
        base = tau[idx] * gradient[idx]
        H = np.empty((len(idx), len(idx)))
        for c, j in enumerate(idx):
            stepped = _with(tau, j, tau[j] * math.exp(HESSIAN_STEP))
            g = np.asarray(counted.evaluate(stepped).gradient)
            H[:, c] = (stepped[idx] * g[idx] - base) / HESSIAN_STEP
        curvature = float(np.linalg.eigvalsh(0.5 * (H + H.T)).min())
        if curvature < -HESSIAN_ATOL:
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
# The grid search


@dataclass
class _Node:
    index: tuple[int, ...]   # position on the outer grid (one index per outer axis)
    tau: np.ndarray
    criterion: float
    gradient: np.ndarray     # outer components, d criterion / d tau


def _outer_axis(size_max: float, size_min: float, density: float) -> np.ndarray:
    lo = math.log(OUTER_TAU_SMALL / size_max)
    hi = math.log(OUTER_TAU_LARGE / size_min)
    count = max(int(math.ceil((hi - lo) * density)) + 1, 2)
    return np.concatenate([[0.0], np.exp(np.linspace(lo, hi, count))])


def _grid_density(spans: list[float], max_nodes: int, density: float) -> float:
    """The highest density up to ``density`` whose grid has at most ``max_nodes`` nodes."""
    def nodes(d):
        return math.prod(max(int(math.ceil(s * d)) + 1, 2) + 1 for s in spans)

    if nodes(density) <= max_nodes:
        return density
    lo, hi = 0.0, density
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if nodes(mid) <= max_nodes else (lo, mid)
    return lo


def _match(a: list[_Node], b: list[_Node], inner: int, floor: float) -> list[tuple[int, int]]:
    """Order-preserving matching of the inner minima at two neighbouring nodes."""
    ua = [math.log(max(n.tau[inner], floor)) for n in a]
    ub = [math.log(max(n.tau[inner], floor)) for n in b]
    INF = math.inf
    # cost[i][j]: best cost aligning a[:i] with b[:j]; a gap costs BRANCH_MAX_JUMP.
    cost = [[INF] * (len(b) + 1) for _ in range(len(a) + 1)]
    move = [[None] * (len(b) + 1) for _ in range(len(a) + 1)]
    cost[0][0] = 0.0
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            c = cost[i][j]
            if c == INF:
                continue
            if i < len(a) and c + BRANCH_MAX_JUMP < cost[i + 1][j]:
                cost[i + 1][j], move[i + 1][j] = c + BRANCH_MAX_JUMP, (i, j, False)
            if j < len(b) and c + BRANCH_MAX_JUMP < cost[i][j + 1]:
                cost[i][j + 1], move[i][j + 1] = c + BRANCH_MAX_JUMP, (i, j, False)
            if i < len(a) and j < len(b):
                d = abs(ua[i] - ub[j])
                if d <= BRANCH_MAX_JUMP and c + d < cost[i + 1][j + 1]:
                    cost[i + 1][j + 1], move[i + 1][j + 1] = c + d, (i, j, True)
    pairs = []
    i, j = len(a), len(b)
    while (i, j) != (0, 0):
        pi, pj, matched = move[i][j]
        if matched:
            pairs.append((pi, pj))
        i, j = pi, pj
    return pairs


def _grid_candidates(nodes_at: dict, axes: list[int], inner: int, floor: float,
                     shape: tuple[int, ...]) -> list[_Node]:
    """The nodes where descent along every outer axis is blocked within one grid step,
    and the discrete local minima along the branches (module docstring, step 4)."""
    # Neighbours along each axis: prev[d][id(node)], next[d][id(node)].
    prev = [dict() for _ in axes]
    nxt = [dict() for _ in axes]
    for index, here in nodes_at.items():
        for d in range(len(axes)):
            if index[d] + 1 >= shape[d]:
                continue
            other_index = index[:d] + (index[d] + 1,) + index[d + 1:]
            there = nodes_at.get(other_index, [])
            for ia, ib in _match(here, there, inner, floor):
                nxt[d][id(here[ia])] = there[ib]
                prev[d][id(there[ib])] = here[ia]

    def log_slope(n: _Node, d: int) -> float:
        # Derivative in log(tau) (in tau at the face), whose sign is the descent's.
        t = n.tau[axes[d]]
        return n.gradient[d] * (t if t > 0 else 1.0)

    def hidden(n: _Node, d: int) -> bool:
        a, b = prev[d].get(id(n)), nxt[d].get(id(n))
        if a is None or b is None or a.tau[axes[d]] == 0:
            return False
        s, sa, sb = log_slope(n, d), log_slope(a, d), log_slope(b, d)
        return (np.sign(s) == np.sign(sa) == np.sign(sb) != 0
                and abs(s) <= abs(sa) and abs(s) <= abs(sb))

    candidates = []
    for index, here in nodes_at.items():
        for n in here:
            blocked = True
            lowest = True
            for d in range(len(axes)):
                g = n.gradient[d]
                a, b = prev[d].get(id(n)), nxt[d].get(id(n))
                for m in (a, b):
                    if m is not None and m.criterion < n.criterion:
                        lowest = False
                # Descent goes towards the previous node when g >= 0, the next otherwise;
                # it is blocked by the face, the top, a branch end, or a sign change.
                if g >= 0:
                    ok = index[d] == 0 or a is None or a.gradient[d] < 0
                else:
                    ok = index[d] == shape[d] - 1 or b is None or b.gradient[d] >= 0
                if not (ok or hidden(n, d)):
                    blocked = False
            if blocked or lowest:
                candidates.append(n)
    # Adjacent candidates (matched neighbours) count once: the lowest of each cluster.
    neighbours = {}
    for d in range(len(axes)):
        for key, m in list(prev[d].items()) + list(nxt[d].items()):
            neighbours.setdefault(key, []).append(m)
    chosen = []
    ids = {id(c) for c in candidates}
    for c in sorted(candidates, key=lambda n: n.criterion):
        if any(id(m) in ids and id(m) in {id(x) for x in chosen} for m in neighbours.get(id(c), [])):
            continue
        chosen.append(c)
    return chosen


def _grid_search(counted: _Counted, inner: int, axes: list[int], sizes, density: float, names):
    """Nodes, candidates and the outer grid of the grid search."""
    grids = [_outer_axis(sizes[i][0], sizes[i][1], density) for i in axes]
    shape = tuple(len(g) for g in grids)
    nodes_at: dict[tuple[int, ...], list[_Node]] = {}
    k = counted.problem.k
    floor = OUTER_TAU_SMALL / sizes[inner][0] * 1e-4
    for index in np.ndindex(*shape):
        tau = np.zeros(k)
        for d, i in enumerate(axes):
            tau[i] = grids[d][index[d]]
        scan = _scan_term(counted, inner, tau, names[inner])
        here = []
        for t, _value in scan.minima():
            point = _with(tau, inner, t)
            ev = counted.evaluate(point)
            here.append(_Node(tuple(index), point, float(ev.criterion),
                              np.asarray(ev.gradient, dtype=np.float64)[axes]))
        nodes_at[tuple(index)] = here
    candidates = _grid_candidates(nodes_at, axes, inner, floor, shape)
    n_nodes = int(np.prod(shape))
    return grids, n_nodes, candidates


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
            ext = scan.summary.extended_global_optimum
            ext_tau, ext_crit = float(ext.tau), float(ext.criterion + scan.constant)
            unbounded = bool(scan.summary.unbounded_at_limit)
        out.append(TermBoundary(names[j], slope, reason, ext_tau, ext_crit, unbounded))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# The search


def choose_search(nlevels, inner: int) -> str:
    """``"grid"`` or ``"budgeted"`` for ``search="auto"`` (module docstring)."""
    if nlevels[inner] <= GRID_MAX_INNER_LEVELS and sum(nlevels) <= GRID_MAX_TOTAL_LEVELS:
        return "grid"
    return "budgeted"


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
    if search not in ("auto", "grid", "budgeted"):
        raise ValueError(f"search must be 'auto', 'grid' or 'budgeted', not {search!r}")
    if points_per_unit is not None and not points_per_unit > 0:
        raise ValueError(f"points_per_unit must be positive, not {points_per_unit!r}")
    k = int(problem.k)
    names = tuple(problem.term_names)
    nlevels = tuple(int(m) for m in problem.nlevels)
    counted = _Counted(problem, REML)
    sweepable = [m <= SWEEP_MAX_LEVELS for m in nlevels]
    notes: list[str] = []

    # The edges of the box: each term alone, the others at 0 (exact 1-D scans; the
    # reduction is diagonal there). They also give each term's level sizes.
    zeros = np.zeros(k)
    edge_minima = []
    sizes = []
    for j in range(k):
        if sweepable[j] or k == 1:
            scan = _scan_term(counted, j, zeros, names[j])
            sizes.append((scan.kappa_max, scan.kappa_min))
            edge_minima += [(j, t, v) for t, v in scan.minima()]
        else:
            mean = problem.nobs / nlevels[j]
            sizes.append((mean, mean))
    unit = np.array([1.0 / s[0] for s in sizes])

    inner = min(range(k), key=lambda j: (nlevels[j], j))
    if k == 1:
        mode = "exact"
    elif search == "auto":
        mode = choose_search(nlevels, inner)
    else:
        mode = search

    candidates: list[tuple[np.ndarray, str]] = []
    grids: tuple[np.ndarray, ...] = tuple(np.zeros(0) for _ in range(k))
    density = math.nan
    n_nodes = 0
    if mode == "exact":
        candidates = [(np.array([t]), "exact scan") for _, t, _ in edge_minima]
    else:
        candidates = [(_with(zeros, j, t), f"edge {names[j]}") for j, t, _ in edge_minima]
    if mode == "grid":
        axes = [i for i in range(k) if i != inner]
        spans = [math.log(OUTER_TAU_LARGE / sizes[i][1]) - math.log(OUTER_TAU_SMALL / sizes[i][0]) for i in axes]
        density = _grid_density(spans, max_nodes, points_per_unit or OUTER_POINTS_PER_UNIT)
        if density < OUTER_MIN_POINTS_PER_UNIT and search == "auto":
            mode = "budgeted"
            notes.append(f"the outer grid would have had {density:.2g} points per unit of log(tau) "
                         f"within {max_nodes} nodes: budgeted search")
        else:
            outer, n_nodes, grid_candidates = _grid_search(counted, inner, axes, sizes, density, names)
            full = [np.zeros(0)] * k
            for d, i in enumerate(axes):
                full[i] = _frozen(outer[d])
            grids = tuple(full)
            candidates += [(n.tau, "grid") for n in sorted(grid_candidates, key=lambda n: n.criterion)]

    # lme4's default start: where its local descent stops (also a start of ours).
    start_theta = np.full(k, LME4_START_THETA) if lme4_start is None else np.asarray(lme4_start, dtype=np.float64)
    if start_theta.shape != (k,) or not np.all(np.isfinite(start_theta)) or np.any(start_theta < 0):
        raise ValueError(f"lme4_start must be {k} non-negative numbers, not {lme4_start!r}")
    lme4_end = lme4_default_descent(counted.value, start_theta)
    refinements: list[Refinement] = []
    optima: list[VCOptimum] = []

    def refine_from(start, source):
        r = _refine(counted, start, unit, source)
        found = _verify(counted, r.end, unit)
        refinements.append(Refinement(r.start, r.end, r.criterion, r.evaluations, source, found is not None))
        if found is not None:
            _merge(optima, found)
        return found

    lme4_pick = refine_from(lme4_end, "lme4 start")

    if mode == "exact":
        # The scan's minima are exact already: verified, not refined.
        for start, source in candidates:
            found = _verify(counted, start, unit)
            if found is None:
                refine_from(start, source)
            else:
                _merge(optima, found)
    elif mode == "grid":
        if len(candidates) > MAX_REFINEMENTS:
            notes.append(f"{len(candidates)} candidates: only the {MAX_REFINEMENTS} lowest were refined")
        for start, source in candidates[:MAX_REFINEMENTS]:
            refine_from(start, source)
    else:
        # Every exact 1-D minimum known (edges, then sweeps through the best point) that
        # is lower than the best optimum restarts a descent there; the values are known
        # from the scans, so a point costs a descent only when it is lower.
        known = [(c, v, source) for (c, source), (_, _, v) in zip(candidates, edge_minima, strict=True)]
        for _ in range(BUDGET_MAX_ROUNDS):
            best = min(optima, key=lambda o: o.criterion) if optima else None
            lower = [item for item in known if best is None or item[1] < best.criterion - SWEEP_IMPROVEMENT_ATOL]
            if lower:
                start, _, source = min(lower, key=lambda item: item[1])
                known = [item for item in known if item[0] is not start]
                refine_from(start, source)
                continue
            if best is None:
                break
            known = []
            for j in range(k):
                if sweepable[j]:
                    scan = _scan_term(counted, j, best.tau, names[j])
                    known += [(_with(best.tau, j, t), v, f"sweep {names[j]}") for t, v in scan.minima()]
            if not any(v < best.criterion - SWEEP_IMPROVEMENT_ATOL for _, v, _ in known):
                break
        candidates = candidates + [(r.start, r.source) for r in refinements if r.source.startswith("sweep")]

    if not optima:
        raise RuntimeError("no refinement ended at a verified local minimum")  # pragma: no cover
    ordered = _sorted_optima(optima)
    if lme4_pick is None:
        notes.append("the descent from lme4's start did not end at a verified minimum; the nearest "
                     "optimum is listed as lme4's")
    # The listed optimum nearest (in theta) to where that descent ended (the same point
    # when it was verified: merging keeps optima apart by more than SAME_LOG_TAU).
    end = lme4_end if lme4_pick is None else lme4_pick.tau
    lme4_pick = min(ordered, key=lambda o: float(np.abs(np.sqrt(o.tau) - np.sqrt(end)).max()))
    boundary = _boundary(counted, ordered[0], names, sweepable if k > 1 else [True])
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
        refinements=tuple(refinements),
        optima=ordered,
        boundary=boundary,
        lme4_default=lme4_pick,
        lme4_descent_end=_frozen(lme4_end),
        edge_minima=tuple(edge_minima),
        notes=tuple(notes),
    )


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
