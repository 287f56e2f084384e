"""Stages 4 and 5 put together: from the statistics to the immutable fit (lme4's ``mkMerMod``).

The whole chain, which :func:`reml_engine.lmer` and :func:`reml_engine.fit` run::

    design  = build_design(formula, data)          # frontend: parse, check, X, y, groups
    stats   = sufficient_statistics(design)        # one numba pass -> GroupStats
    problem = criterion_problem(stats, REML=True)  # checks, centring, rank -> the criterion in tau
    summary = find_optima(problem)                 # global scan, every local minimum
    fit     = build_fit(problem, summary)          # the immutable LmerFit

:func:`build_fit` is the last stage: the estimates at the global optimum, every local
optimum as a fit, the optimum lme4's default start would return, the compound-symmetry
fit, the boundary diagnosis and the random effects. :func:`fit_design` and
:func:`fit_statistics` run the chain from a design or from statistics.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from ..frontend.design import Design
from ..progress import logger
from .blas import single_threaded_blas
from .criterion import fixed_effects
from .diagnosis import boundary_diagnosis, optimum_notes
from .identifiability import check_dof
from .lme4_path import lme4_default_optimum
from .optimizer import Optimum, OptSummary, find_optima
from .problem import CriterionProblem, criterion_problem
from .results import CompoundSymmetryFit, LmerFit, LocalOptimum
from .statistics import GroupStats, PooledStats, Reread, SufficientStatistics, sufficient_statistics


def build_fit(problem: CriterionProblem, summary: OptSummary) -> LmerFit:
    """Stage 5: the fit at the global optimum of ``summary``, with everything around it.

    Parameters
    ----------
    problem : CriterionProblem
        From :func:`reml_engine.criterion_problem`.
    summary : OptSummary
        From :func:`reml_engine.find_optima` on the same problem.

    Returns
    -------
    LmerFit
    """
    if not isinstance(problem, CriterionProblem):
        raise TypeError(f"problem must be a CriterionProblem (from rl.criterion_problem), got {type(problem).__name__}")
    if not isinstance(summary, OptSummary) or summary.REML != problem.REML:
        raise ValueError("summary must be the OptSummary of find_optima(problem) on the same problem (and criterion)")
    pooled, REML, to_original = problem.pooled, problem.REML, problem.parametrization
    group_stats = problem.group_stats
    lme4_pick = lme4_default_optimum(summary.optima, pooled, REML, problem.lme4_start)
    best = summary.global_optimum
    at = _FixedEffectsAt(pooled, REML, to_original)
    optima = tuple(
        _local_optimum(o, at, o is best, o is lme4_pick) for o in summary.optima
    )
    estimate = next(o for o in optima if o.is_global)
    _log_optima(problem, optima)
    sigma2 = at.numbers(best.tau)[2]
    fixef, vcov_df = at.tables(best.tau)

    cs = _compound_symmetry(summary, at)
    boundary = boundary_diagnosis(summary, cs) if best.kind == "boundary" else None
    notes = (optimum_notes(optima, estimate, cs, boundary, REML, problem.lme4_start) + list(summary.notes)
             + list(problem.notes))
    return LmerFit(
        REML=REML,
        fixef=fixef,
        vcov=vcov_df,
        sigma2=sigma2,
        tau=best.tau,
        criterion=best.criterion,
        nobs=group_stats.nobs,
        ngroups=group_stats.ngroups,
        optima=optima,
        boundary=boundary,
        compound_symmetry=cs,
        opt_summary=summary,
        stats=pooled,
        group_stats=group_stats,
        response_name=problem.response_name,
        group_name=problem.group_name,
        formula=problem.formula,
        dropped_columns=problem.dropped_columns,
        notes=tuple(notes),
        design=problem.design,
        group_codes=problem.group_codes,
        parametrization=to_original,
        lme4_start_theta=problem.lme4_start,
    )


def _log_optima(problem: CriterionProblem, optima: tuple[LocalOptimum, ...]) -> None:
    """The optima found, and which is global (INFO), each one (DEBUG): the engine's log."""
    if not logger.isEnabledFor(logging.INFO):
        return
    best = next(o for o in optima if o.is_global)
    what = "REML criterion" if problem.REML else "ML deviance"
    count = f"{len(optima)} local optim{'um' if len(optima) == 1 else 'a'}"
    message = (f"{problem.formula or 'model'}: {count} of the {what}; global: {best.kind}, tau = {best.tau:.6g}, "
               f"criterion {best.criterion:.6g}")
    lme4 = next((o for o in optima if o.is_lme4_default), best)
    if lme4 is not best:
        message += f"; lme4's default start stops at the {lme4.kind} optimum, criterion {lme4.criterion:.6g}"
    logger.info(message)
    for number, optimum in enumerate(optima, start=1):
        logger.debug("optimum %d: %s, tau = %.10g, criterion %.10g%s", number, optimum.kind, optimum.tau,
                     optimum.criterion, " (global)" if optimum.is_global else "")


def fit_statistics(statistics: SufficientStatistics, REML: bool = True) -> LmerFit:
    """Stages 3 to 5: ``build_fit(problem, find_optima(problem))`` with
    ``problem = criterion_problem(statistics, REML)``."""
    # Small dense algebra throughout (order q): one BLAS thread (see reml_engine.core.blas).
    with single_threaded_blas():
        problem = criterion_problem(statistics, REML)
        return build_fit(problem, find_optima(problem))


def fit_design(design: Design, REML: bool = True) -> LmerFit:
    """Stages 2 to 5: the fit of a validated :class:`~reml_engine.frontend.design.Design`."""
    return fit_statistics(sufficient_statistics(design), REML)


def fit_stats(
    group_stats: GroupStats,
    column_names,
    intercept_index: int | None,
    REML: bool = True,
    response_name: str = "y",
    group_name: str = "group",
    formula: str | None = None,
    design: Design | None = None,
    reread: Reread | None = None,
    lme4_start: float | None = None,
) -> LmerFit:
    """The fit from statistics alone: :func:`fit_statistics` of the
    :class:`~reml_engine.core.statistics.SufficientStatistics` these arguments make.
    ``reread`` (:data:`~reml_engine.core.statistics.Reread`), when the rows can be read
    again, recomputes nearly collinear columns in a better-conditioned basis."""
    statistics = SufficientStatistics(group_stats, tuple(column_names), intercept_index, response_name, group_name,
                                      formula, design, None, reread, lme4_start)
    return fit_statistics(statistics, REML)


def refit_statistics(fit: LmerFit, REML: bool) -> LmerFit:
    """The fit of the same statistics by the other criterion, without the rows.

    The criterion problem of ``fit`` (its pooled statistics, the columns kept by the
    rank check, the map to the user's columns) is the same for REML and ML, so a fit
    from chunks, Dask or Parquet is refitted from what it keeps, as an in-memory fit is
    refitted from its design (``anova`` refits REML fits by ML). The rank and
    conditioning notes of the first fit are not repeated.

    Parameters
    ----------
    fit : LmerFit
    REML : bool
        The criterion of the refit.

    Returns
    -------
    LmerFit
        With the encoding and data name of ``fit``.
    """
    problem = CriterionProblem(
        REML=REML,
        pooled=fit.stats,
        group_stats=fit.group_stats,
        parametrization=fit.parametrization,
        column_names=tuple(fit.fixef.index),
        dropped_columns=fit.dropped_columns,
        response_name=fit.response_name,
        group_name=fit.group_name,
        formula=fit.formula,
        design=fit.design,
        group_codes=fit.group_codes,
        lme4_start=fit.lme4_start_theta,
    )
    with single_threaded_blas():
        check_dof(problem.nobs, len(problem.column_names), REML)
        refit = build_fit(problem, find_optima(problem))
    return replace(refit, fixed_encoding=fit.fixed_encoding, data_name=fit.data_name)


class _FixedEffectsAt:
    """The fixed effects at an optimum, computed once per tau and shared by the fit, its
    optima and its compound-symmetry fit (the same optimum when the estimate is
    interior: one computation, where there were three).

    The fit's own ``fixef`` and ``vcov`` are the objects built (:meth:`tables`); the
    optima and the compound-symmetry fit call it on first read of their ``fixef`` and
    get shallow copies (pandas' copy-on-write keeps them apart if one is modified). A
    pure function of the statistics, kept by the fit.
    """

    def __init__(self, pooled: PooledStats, REML: bool, to_original):
        self.pooled, self.REML, self._to_original = pooled, REML, to_original
        self._numbers: dict[float, tuple] = {}
        self._tables: dict[float, tuple] = {}

    def numbers(self, tau: float) -> tuple[np.ndarray, np.ndarray, float]:
        """``beta``, ``vcov`` (internal columns) and ``sigma2`` at ``tau``."""
        if tau not in self._numbers:
            self._numbers[tau] = fixed_effects(tau, self.pooled, self.REML)
        return self._numbers[tau]

    def tables(self, tau: float) -> tuple[pd.Series, pd.DataFrame]:
        """The user's ``(fixef, vcov)`` at ``tau``, the objects kept (for the fit's own
        fields)."""
        tables = self._tables.get(tau)
        if tables is None:
            beta, vcov, _ = self.numbers(tau)
            tables = self._tables[tau] = self._to_original(beta, vcov)
        return tables

    def __call__(self, tau: float) -> tuple[pd.Series, pd.DataFrame]:
        """Shallow copies of :meth:`tables` (a caller's own objects)."""
        fixef, vcov_df = self.tables(tau)
        return fixef.copy(deep=False), vcov_df.copy(deep=False)

    # Pickled as what it computes from, so that a fit pickles the same before and after
    # a lazy value was read (tests/metamorphic/test_immutability.py compares the bytes).
    def __getstate__(self) -> dict:
        return {"pooled": self.pooled, "REML": self.REML, "to_original": self._to_original}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["pooled"], state["REML"], state["to_original"])


def _local_optimum(opt: Optimum, at: _FixedEffectsAt, is_global, is_default) -> LocalOptimum:
    sigma2 = at.numbers(opt.tau)[2]
    return LocalOptimum(opt.tau, opt.criterion, opt.kind, sigma2, is_global, is_default, at)


def _compound_symmetry(summary: OptSummary, at: _FixedEffectsAt) -> CompoundSymmetryFit:
    best = summary.extended_global_optimum
    sigma2 = at.numbers(best.tau)[2]
    return CompoundSymmetryFit(
        tau=best.tau,
        # nlme's sigma^2 is the total variance of one response: sigma2 (1 + tau).
        sigma2=sigma2 * (1.0 + best.tau),
        criterion=best.criterion,
        REML=at.REML,
        nobs=at.pooled.nobs,
        at_limit=best.kind == "limit" or summary.unbounded_at_limit,
        fixed_effects_at=at,
        optima=summary.extended_optima,
    )
