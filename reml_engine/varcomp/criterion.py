"""The exact profiled REML criterion and ML deviance of k random-intercept terms.

Model: ``y - offset = X beta + sum_j Z_j b_j + e`` with ``b_j ~ N(0, var_j I)`` and
``e ~ N(0, sigma2 W^-1)`` (prior weights w). With ``tau_j = var_j / sigma2`` (lme4's
``theta_j = sqrt(tau_j)``), ``V = sigma2 H(tau)``, ``H = W^-1 + sum_j tau_j Z_j Z_j'``, and

    crit(tau) = log|H| + [REML] log|X'H^-1 X| + dof (1 + log(2 pi pwrss / dof))

with ``pwrss = min_beta (y - X beta)' H^-1 (y - X beta)`` and ``dof = n - p`` (REML) or
``n`` (ML): lme4's ``REMLcrit()`` and ``deviance()``, prior weights included.

:class:`VCProblem` evaluates it exactly from the sufficient statistics
(:class:`~reml_engine.varcomp.statistics.VCStats`), never from the rows. How depends on
the terms' structure (:meth:`VCProblem.plan`):

* a nesting hierarchy (one term included) has a closed form per level
  (:mod:`.nested`), cost proportional to the levels;
* otherwise a chain of nested terms (one term, or a hierarchy such as ``school/class``)
  is eliminated in closed form first, its blocks of ``T^-1 + Z'WZ`` being diagonal, and
  the Schur complement of the other terms is factored as dense blocks, one per connected
  component (:mod:`.crossed`, :mod:`.blocks`); the chain is the one that leaves the
  cheapest factorization;
* where a connected block would be larger than ``max_dense_block`` levels (or a sparse
  factor is much cheaper than a large dense block), one term is eliminated and the rest
  is factored by a sparse Cholesky factor in a fill-reducing order (:mod:`.sparse`).

The gradient is analytic: ``d crit / d tau_j`` from ``tr(Z_j' H^-1 Z_j)`` and
``R_j = Z_j' H^-1 [X|y]`` (:mod:`.solution`).

Examples
--------
>>> import numpy as np
>>> from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats
>>> rng = np.random.default_rng(1)
>>> subj, item = rng.integers(0, 8, 200), rng.integers(0, 5, 200)
>>> y = rng.normal(size=8)[subj] + rng.normal(size=5)[item] + rng.normal(size=200)
>>> terms = RandomTerms.from_labels({"subj": subj, "item": item})
>>> problem = VCProblem(compute_vc_stats(np.ones((200, 1)), y, terms))
>>> ev = problem.evaluate([1.0, 0.5])
>>> ev.gradient.shape
(2,)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.identifiability import RANK_TOL
from ..errors import ModelDataError
from .nested import NestedSolver
from .reduction import TermReduction, reduction_from_blocks
from .small import SmallCrossed
from .small_kernels import profile_one
from .solution import profile
from .statistics import VCStats
from .threads import engine_threads

#: Largest connected block of the Schur complement factored as a dense matrix (its
#: Cholesky factorization costs size^3 / 3 per evaluation).
MAX_DENSE_BLOCK = 5000


@dataclass(frozen=True)
class VCEvaluation:
    """The profiled criterion at one tau, with its named parts.

    Attributes
    ----------
    tau : ndarray (k,)
        ``var_j / sigma2`` per term.
    criterion : float
        REML criterion (lme4's ``REMLcrit()``) or ML deviance (``deviance()``).
    gradient : ndarray (k,) or None
        ``d criterion / d tau_j`` (one-sided at ``tau_j = 0``); None when not asked for.
    logdet_V : float
        ``log|H|``, ``H = V / sigma2`` (lme4's ``ldL2 - ldW``).
    logdet_XtVinvX : float
        ``log|X' H^-1 X|`` (lme4's ``ldRX2``), in REML only.
    pwrss : float
        ``min_beta (y - X beta)' H^-1 (y - X beta)``.
    beta : ndarray (p,)
        Generalized least squares at tau, in the columns of X as given.
    sigma2 : float
        ``pwrss / dof``.
    REML : bool
    """

    tau: np.ndarray
    criterion: float
    gradient: np.ndarray | None
    logdet_V: float
    logdet_XtVinvX: float
    pwrss: float
    beta: np.ndarray
    sigma2: float
    REML: bool


def _intercept_column(stats: VCStats) -> int | None:
    """A column of X constant and non-zero in every row (the intercept), or None."""
    for j in range(stats.p):
        if stats.lo[j] == stats.hi[j] and stats.lo[j] != 0 and np.isfinite(stats.lo[j]):
            return j
    return None


def _drop_empty_levels(stats: VCStats) -> VCStats:
    """Levels without rows (a chunk's share of a whole's levels) play no part."""
    if all((c > 0).all() for c in stats.counts):
        return stats
    from .statistics import PairTable

    keep = [np.flatnonzero(c > 0) for c in stats.counts]
    new_code = []
    for j, kept in enumerate(keep):
        code = np.full(len(stats.counts[j]), -1, dtype=np.int64)
        code[kept] = np.arange(len(kept))
        new_code.append(code)
    pairs = {}
    for (a, b), table in stats.pairs.items():
        pairs[a, b] = PairTable((len(keep[a]), len(keep[b])), new_code[a][table.rows], new_code[b][table.cols],
                                table.weights)
    return VCStats(stats.names, tuple(lv[kp] for lv, kp in zip(stats.levels, keep, strict=True)),
                   tuple(c[kp] for c, kp in zip(stats.counts, keep, strict=True)),
                   tuple(w[kp] for w, kp in zip(stats.level_weights, keep, strict=True)),
                   tuple(s[kp] for s, kp in zip(stats.sums, keep, strict=True)),
                   pairs, stats.cross, stats.shift, stats.nobs, stats.sum_weights, stats.sum_log_weights,
                   stats.lo, stats.hi)


class VCProblem:
    """The profiled criterion of k random-intercept terms as a function of tau.

    Built once from the statistics; every method is a pure function of tau (and
    REML), reading nothing but the statistics: the function the optimizer calls, and
    one a user can call to see how the criterion is built.

    Parameters
    ----------
    stats : VCStats
    max_dense_block : int
        Largest connected block of the Schur complement factored densely.
    method : {"auto", "nested", "crossed", "sparse"}
        ``"auto"`` takes the closed form when the terms are a nesting hierarchy, the
        dense blocks otherwise, and the sparse factor where dense blocks would be too
        large (:meth:`.crossed.CrossedSolver.best`); ``"crossed"`` forces the dense blocks
        (the general path, for checks), ``"sparse"`` the sparse factor with one term
        eliminated; ``"nested"`` requires a hierarchy.
    eliminate : int or tuple of int, optional
        With ``method="crossed"``: the term, or the chain of terms each nested in the
        next (innermost first), eliminated before the dense blocks (default: the
        cheapest); with ``method="sparse"``, the one term eliminated.
    fast_paths : bool
        Use the compiled fast paths where they apply (:mod:`.small`: one kernel call per
        evaluation or reduction of a small crossed design; :func:`.small_kernels.profile_one`
        for the profiling of one evaluation). They give the general path's numbers to
        rounding; False takes the general path everywhere (for checks).

    Attributes
    ----------
    k, nobs, p : int
    term_names : tuple of str
    nlevels : tuple of int
    structure : TermStructure
    """

    def __init__(self, stats: VCStats, max_dense_block: int = MAX_DENSE_BLOCK, method: str = "auto",
                 eliminate: int | tuple[int, ...] | None = None, fast_paths: bool = True):
        if method not in ("auto", "nested", "crossed", "sparse"):
            raise ValueError(f"method must be 'auto', 'nested', 'crossed' or 'sparse', got {method!r}")
        stats = _drop_empty_levels(stats)
        self.term_names = stats.names
        self.levels = stats.levels
        self.k = stats.k
        self.nobs = stats.nobs
        self.p = stats.p
        self.nlevels = stats.nlevels
        self.structure = stats.structure
        self.max_dense_block = int(max_dense_block)
        self.method = method
        self._eliminate = eliminate
        if self.nobs <= self.p:
            raise ModelDataError(f"{self.nobs} rows cannot estimate {self.p} fixed effects and a residual variance")
        # The model's parametrization: about the statistics' shift when a constant column
        # (the intercept) absorbs it, about zero otherwise. beta is reported in the
        # columns as given (see _to_user).
        intercept = _intercept_column(stats)
        model_shift = np.zeros(stats.q)
        if intercept is not None:
            model_shift = stats.shift.copy()
            model_shift[intercept] = 0.0
        if not np.array_equal(model_shift, stats.shift):
            stats = stats.rebase(model_shift)
        self._intercept = intercept
        self._model_shift = model_shift
        self._transform = self._user_transform(stats)
        self.stats = stats
        with engine_threads():
            self._solver = self._choose_solver(stats)
        self.fast_paths = bool(fast_paths)
        self._small = SmallCrossed.of(self._solver) if self.fast_paths and self._solver.kind == "crossed" else None
        with self._threads():
            self._check_rank()

    # -- set-up -------------------------------------------------------------------------

    def _user_transform(self, stats: VCStats) -> tuple[np.ndarray, np.ndarray]:
        """``beta = J beta_model + c``: the model's coefficients in the columns of X."""
        p = self.p
        J = np.eye(p)
        c = np.zeros(p)
        if self._intercept is not None and p:
            j0 = self._intercept
            value = stats.lo[j0]
            others = [j for j in range(p) if j != j0]
            J[j0, others] = -self._model_shift[others] / value
            c[j0] = self._model_shift[p] / value
        return J, c

    def _choose_solver(self, stats: VCStats):
        from .crossed import CrossedSolver

        chain = self.structure.nesting_chain()
        if self.method == "nested" and chain is None:
            raise ValueError(f"the terms {list(self.term_names)} are not a nesting hierarchy")
        if chain is not None and (self.method not in ("crossed", "sparse") or self.k == 1):
            return NestedSolver(stats, chain)
        if self.method == "sparse":
            from .sparse import SparseCrossedSolver, best_sparse

            if self._eliminate is None:
                solver = best_sparse(stats, candidates=self.k)
                if solver is None:
                    raise ModelDataError("every term couples too many pairs of levels for the sparse factorization")
                return solver
            e = int(self._eliminate)
            if not 0 <= e < self.k:
                raise ValueError(f"eliminate must name a term in 0 .. {self.k - 1}")
            return SparseCrossedSolver(stats, e)
        if self._eliminate is not None:
            chain = tuple(int(t) for t in np.atleast_1d(self._eliminate))
            if not all(0 <= t < self.k for t in chain) or len(set(chain)) != len(chain) or len(chain) >= self.k:
                raise ValueError(f"eliminate must name distinct terms in 0 .. {self.k - 1}, leaving one out")
            if not all(self.structure.is_nested_in(a, b) for a, b in zip(chain, chain[1:], strict=False)):
                raise ValueError(f"eliminate={chain}: each term must be nested in the next")
            return CrossedSolver(stats, chain)
        return CrossedSolver.best(stats, self.max_dense_block)

    def _check_rank(self) -> None:
        """X'WX must be of full rank (the front end drops redundant columns first): each
        column must keep more than ``RANK_TOL`` of its norm after the earlier ones."""
        C = self._solver.solve(np.zeros(self.k), gradient=False).C
        out = profile([0.0], C[None], self.nobs, True)
        p = self.p
        with np.errstate(divide="ignore", invalid="ignore"):
            kept = np.diagonal(out["L"][0])[:p] / np.sqrt(np.diag(C)[:p])
        bad = np.flatnonzero(~(kept > RANK_TOL))
        if len(bad) or not np.isfinite(out["criterion"][0]):
            which = f"column {int(bad[0])} of X depends on the earlier ones" if len(bad) else "X'WX is singular"
            raise ModelDataError(
                f"the fixed-effect columns are linearly dependent ({which}); drop the redundant columns"
            )

    @property
    def parallel(self) -> bool:
        """Whether numba's kernels share an evaluation's work among threads (the solver
        says so when its work is large, :mod:`.threads`)."""
        return bool(getattr(self._solver, "parallel", False))

    def _threads(self):
        """The thread limits of a call (:mod:`.threads`)."""
        return engine_threads(parallel=self.parallel)

    @property
    def plan(self) -> str:
        """How the criterion is computed: ``"nested: a in b in c"`` (innermost first) or
        ``"crossed: eliminate 'e' (m levels) [then ...], n dense block(s) of size ..."``."""
        return self._solver.describe(self.term_names)

    # -- evaluation ---------------------------------------------------------------------

    def _tau(self, tau) -> np.ndarray:
        # A copy: nothing the caller does to its array later may change a result.
        tau = np.array(tau, dtype=np.float64).reshape(-1)
        if tau.shape != (self.k,):
            raise ValueError(f"tau must have one value per term ({self.k}), got {tau.shape[0]}")
        if not (np.isfinite(tau).all() and (tau >= 0).all()):
            raise ValueError(f"tau must be finite and >= 0, got {tau.tolist()}")
        return tau

    def _profile(self, tau, REML: bool, gradient: bool):
        solution = self._solver.solve(tau, gradient)
        if gradient:
            return solution, profile([solution.logdet_H], solution.C[None], self.nobs, REML,
                                     solution.trace_G[None], -solution.RtR[None])
        return solution, profile([solution.logdet_H], solution.C[None], self.nobs, REML)

    def evaluate(self, tau, REML: bool = True, gradient: bool = True) -> VCEvaluation:
        """Criterion, its parts and (optionally) its gradient at tau.

        Parameters
        ----------
        tau : array-like (k,)
            ``var_j / sigma2`` per term, each >= 0.
        REML : bool
            REML criterion (default) or ML deviance.
        gradient : bool
            Compute the analytic gradient too (costs about as much again for crossed
            terms; nothing extra for a nested hierarchy).

        Returns
        -------
        VCEvaluation
            NaN parts where ``X' H^-1 X`` (or, at tau far beyond the data's scale, the
            factorization of the random-effects block) is not numerically positive
            definite.
        """
        tau = self._tau(tau)
        if self.fast_paths:
            with self._threads():
                return self._evaluate_fast(tau, REML, gradient)
        try:
            with self._threads():
                _, out = self._profile(tau, REML, gradient)
        except np.linalg.LinAlgError:
            # Rounding made the factorization fail (tau far beyond the data's scale): no
            # number rather than a wrong one, as the contract asks.
            return self._not_defined(tau, REML, gradient)
        J, c = self._transform
        return VCEvaluation(
            tau=tau,
            criterion=float(out["criterion"][0]),
            gradient=out["gradient"][0] if gradient else None,
            logdet_V=float(out["logdet_V"][0]),
            logdet_XtVinvX=float(out["logdet_XtVinvX"][0]),
            pwrss=float(out["pwrss"][0]),
            beta=J @ out["beta"][0] + c,
            sigma2=float(out["sigma2"][0]),
            REML=REML,
        )

    def _not_defined(self, tau, REML: bool, gradient: bool) -> VCEvaluation:
        nan = float("nan")
        return VCEvaluation(tau=tau, criterion=nan, gradient=np.full(self.k, nan) if gradient else None,
                            logdet_V=nan, logdet_XtVinvX=nan, pwrss=nan, beta=np.full(self.p, nan),
                            sigma2=nan, REML=REML)

    def _evaluate_fast(self, tau: np.ndarray, REML: bool, gradient: bool) -> VCEvaluation:
        """:meth:`evaluate` through the compiled paths: the small crossed kernel (or the
        solver) and :func:`profile_one`."""
        q = self.p + 1
        if self._small is not None:
            ok, logdet, C, traces, RtR = self._small.solve(tau, gradient)
            if not ok:
                return self._not_defined(tau, REML, gradient)
        else:
            try:
                solution = self._solver.solve(tau, gradient)
            except np.linalg.LinAlgError:
                return self._not_defined(tau, REML, gradient)
            logdet, C = solution.logdet_H, solution.C
            traces = solution.trace_G if gradient else np.zeros(self.k)
            RtR = solution.RtR if gradient else np.zeros((self.k, q, q))
        _, criterion, logdet_X, pwrss, sigma2, beta, grad = profile_one(
            float(logdet), np.ascontiguousarray(C), self.nobs, bool(REML), np.ascontiguousarray(traces),
            np.ascontiguousarray(RtR), bool(gradient))
        J, c = self._transform
        return VCEvaluation(tau=tau, criterion=float(criterion), gradient=grad if gradient else None,
                            logdet_V=float(logdet), logdet_XtVinvX=float(logdet_X), pwrss=float(pwrss),
                            beta=J @ beta + c, sigma2=float(sigma2), REML=REML)

    def fixed_effects(self, tau, REML: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
        """beta, its covariance ``sigma2 (X' H^-1 X)^-1`` and sigma2 at tau (columns of
        X as given)."""
        tau = self._tau(tau)
        with self._threads():
            solution, out = self._profile(tau, REML, False)
        p = self.p
        J, c = self._transform
        sigma2 = float(out["sigma2"][0])
        L = out["L"][0][:p, :p]
        L_inv = np.linalg.inv(L) if p else np.zeros((0, 0))
        vcov = sigma2 * J @ (L_inv.T @ L_inv) @ J.T
        return J @ out["beta"][0] + c, 0.5 * (vcov + vcov.T), sigma2

    def ranef(self, tau, REML: bool = True) -> dict[str, pd.DataFrame]:
        """Conditional modes and variances of each term's random effects at tau (and
        beta, sigma2 profiled at tau): lme4's ``ranef(m, condVar = TRUE)``.

        Returns
        -------
        dict term name -> DataFrame indexed by level with columns ``mode`` and
        ``condvar`` (``Var(b | y)`` at beta_hat, as lme4's ``condVar``).
        """
        tau = self._tau(tau)
        with self._threads():
            _, out = self._profile(tau, REML, False)
            R_terms, cond_terms = self._solver.level_parts(tau)
        v = np.append(-out["beta"][0], 1.0)
        sigma2 = float(out["sigma2"][0])
        result = {}
        for j, name in enumerate(self.term_names):
            result[name] = pd.DataFrame({"mode": tau[j] * (R_terms[j] @ v), "condvar": sigma2 * cond_terms[j]},
                                        index=self.levels[j])
        return result

    def reduce_to_term(self, j: int, tau) -> TermReduction:
        """The exact one-dimensional problem in ``t = tau_j`` with the other tau held.

        With ``H_-j = W^-1 + sum_{i != j} tau_i Z_i Z_i'`` and
        ``K = Z_j' H_-j^-1 Z_j = Q diag(kappa) Q'``::

            log|H(t)|            = log|H_-j| + sum_i log(1 + kappa_i t)
            [X|y]' H(t)^-1 [X|y] = C_-j - sum_i t / (1 + kappa_i t) v_i v_i'

        (``v_i`` the rows of ``Q' Z_j' H_-j^-1 [X|y]``): the single-term structure with
        group sizes kappa. K is block diagonal (levels of term j are coupled only
        through the other terms); each block is decomposed, so the cost is that of the
        largest block cubed. ``tau[j]`` is ignored.
        """
        if not 0 <= j < self.k:
            raise ValueError(f"term index must be in 0 .. {self.k - 1}, got {j}")
        tau = self._tau(tau)
        tau[j] = 0.0
        with self._threads():
            fast = None
            if self._small is not None:
                ok, logdet, C, kappa, vectors = self._small.reduction(j, tau)
                fast = (logdet, C, kappa, vectors) if ok else None
            elif self.fast_paths and self._solver.kind == "nested":
                fast = self._solver.reduction(j, tau)
            if fast is not None:
                logdet, C, kappa, vectors = fast
                return TermReduction(term=j, name=self.term_names[j], tau=tau, constant=float(logdet),
                                     base=C, kappa=kappa, vectors=vectors, nobs=self.nobs,
                                     transform=self._transform)
            logdet, C, R, blocks = self._solver.reduction_parts(j, tau, self.max_dense_block)
            return reduction_from_blocks(
                term=j, name=self.term_names[j], tau=tau, constant=logdet, base=C,
                R=R, blocks=blocks, nobs=self.nobs, transform=self._transform,
            )
