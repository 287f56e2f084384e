"""The pipeline: design -> sufficient statistics -> global optimum -> diagnosis -> result.

:func:`fit_design` is what :func:`reml_engine.lmer` and :func:`reml_engine.fit` call
after building the design; :func:`fit_stats` starts from statistics alone (chunked and
distributed fits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from .checks import (
    ONE_PASS_RANK_TOL,
    ROUNDING_TOL,
    binary_columns_from_stats,
    check_dof,
    check_groups,
    check_identifiable,
    check_residual_variance,
    check_scales,
    check_values,
    intercept_from_stats,
    rank_decisions,
    undecided_columns_message,
    warn,
    warn_dropped_columns,
)
from .criterion import fixed_effects
from .design import Design
from .diagnosis import boundary_diagnosis, optimum_notes
from .groups import factorize_groups
from .lme4_path import lme4_start_from_stats
from .optimizer import Optimum, OptSummary, find_optima, lme4_default_optimum
from .parametrization import UserParametrization, standard_errors
from .results import CompoundSymmetryFit, LmerFit, LocalOptimum
from .stats import (
    MAX_CONDITIONING_PASSES,
    GroupStats,
    PooledStats,
    compute_group_stats,
    conditioning_transform,
    digits_lost,
    needs_conditioning,
    pilot_shift,
)

#: Rereads the rows in another basis: ``reread(shift, transform)`` returns the
#: :class:`GroupStats` of ``([X | y] - shift) transform`` over the statistics' original
#: columns (``transform`` has a zero row for every column the rank check dropped).
Reread = Callable[[np.ndarray, np.ndarray], GroupStats]


def fit_design(design: Design, REML: bool = True) -> LmerFit:
    """Fit the random-intercept model to a validated :class:`~reml_engine.design.Design`."""
    groups = factorize_groups(design.groups, design.group_name)
    check_groups(len(design.y), groups.ngroups, design.group_name)
    shift = pilot_shift(design.X, design.y, design.intercept_index)
    group_stats = compute_group_stats(design.X, design.y, groups, shift)
    check_values(group_stats, design.X, design.y, design.column_names, design.response_name)

    def reread(shift: np.ndarray, transform: np.ndarray) -> GroupStats:
        return compute_group_stats(design.X, design.y, groups, shift, transform=transform)

    fit = fit_stats(
        group_stats,
        design.column_names,
        design.intercept_index,
        REML=REML,
        response_name=design.response_name,
        group_name=design.group_name,
        formula=design.formula.formula if design.formula is not None else None,
        design=design,
        reread=reread,
    )
    return replace(fit, group_codes=groups.codes)


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
    """Fit from sufficient statistics: rank check, global optimization, result.

    ``intercept_index=None`` means "not known": a column of ones is then found from the
    statistics' column ranges, and the model is centred on it (an exact
    reparametrization).

    ``reread`` (see :data:`Reread`), when the rows can be read again, lets the fit
    recompute the statistics in a well-conditioned basis when the centred columns are
    still nearly collinear (:func:`reml_engine.stats.needs_conditioning`). Without it
    such a fit warns how many digits the statistics may have lost.

    ``lme4_start`` is lme4's starting theta if the caller has it (e.g. from the rows with
    R's arithmetic, :func:`reml_engine.lme4_path.lme4_start_from_rows`); by default it is
    computed from the statistics, equal to R's to rounding.
    """
    check_groups(group_stats.nobs, group_stats.ngroups, group_name)
    if intercept_index is None:
        group_stats, intercept_index = _centre_on_ones_column(group_stats)
        if design is not None and intercept_index is not None:
            design = replace(design, intercept_index=intercept_index)
    kept, undecided = _full_rank_columns(group_stats, intercept_index, reread)
    dropped = [column_names[j] for j in range(len(column_names)) if j not in kept]
    undecided_names = [column_names[j] for j in undecided]
    warn_dropped_columns([name for name in dropped if name not in undecided_names])
    rank_notes = [undecided_columns_message(undecided_names)] if undecided else []
    for note in rank_notes:
        warn(note)
    names = [column_names[j] for j in kept]
    n_columns = group_stats.q
    if len(kept) < len(column_names):
        group_stats = group_stats.select(kept)
        intercept_index = kept.index(intercept_index) if intercept_index in kept else None
        if design is not None:
            design = _select_design_columns(design, kept)
    p = len(kept)
    check_dof(group_stats.nobs, p, REML)

    model_shift = group_stats.shift.copy() if intercept_index is not None else np.zeros(group_stats.q)
    internal, transform, conditioning_notes = _well_conditioned(
        group_stats, model_shift, reread, kept, n_columns, names, response_name
    )
    check_identifiable(
        internal.within_cross()[:p, :p],
        _centred_norm2(internal)[:p],
        group_stats.ngroups,
        group_name,
    )
    check_residual_variance(
        internal.within_cross(),
        float(group_stats.cross[-1, -1] - group_stats.sums[:, -1].sum() ** 2 / group_stats.nobs),
        response_name,
        group_name,
    )
    binary = binary_columns_from_stats(group_stats)
    check_scales(_column_sd(group_stats), names, intercept_index, binary)

    pooled = internal.pooled(model_shift if transform is None else None)
    summary = find_optima(pooled, REML)

    to_original = UserParametrization(model_shift, intercept_index, names, transform)
    if lme4_start is None:
        lme4_start = lme4_start_from_stats(group_stats)
    lme4_pick = lme4_default_optimum(summary.optima, pooled, REML, lme4_start)
    best = summary.global_optimum
    optima = tuple(
        _local_optimum(o, pooled, REML, to_original, o is best, o is lme4_pick) for o in summary.optima
    )
    estimate = next(o for o in optima if o.is_global)
    beta, vcov, sigma2 = fixed_effects(best.tau, pooled, REML)
    fixef, vcov_df = to_original(beta, vcov)

    cs = _compound_symmetry(summary, pooled, REML, to_original)
    boundary = boundary_diagnosis(summary, cs) if best.kind == "boundary" else None
    notes = (optimum_notes(optima, estimate, cs, boundary, REML, lme4_start) + list(summary.notes) + rank_notes
             + conditioning_notes)
    ranef = _ranef(group_stats, to_original.internal_sums(group_stats), best.tau, beta, sigma2)
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
        ranef=ranef,
        opt_summary=summary,
        stats=pooled,
        group_stats=group_stats,
        response_name=response_name,
        group_name=group_name,
        formula=formula,
        dropped_columns=tuple(dropped),
        notes=tuple(notes),
        design=design,
        parametrization=to_original,
        lme4_start_theta=lme4_start,
    )


def _well_conditioned(
    group_stats: GroupStats,
    model_shift: np.ndarray,
    reread: Reread | None,
    kept: list[int],
    n_columns: int,
    names: list[str],
    response_name: str,
) -> tuple[GroupStats, np.ndarray | None, list[str]]:
    """Statistics of the model's columns in a basis where the criterion keeps its digits.

    Centring by ``model_shift`` removes an offset of each column on its own, not one a
    column carries through another (``x:f`` with x far from 0 is ``1e6 f`` plus a small
    part). What the centred columns still share shows in their cross-product: a column
    that keeps a fraction ``f`` of its squared norm after projecting out the earlier ones
    lost ``-log10 f`` digits there. Then the rows are read again in the Gram-Schmidt
    basis of that cross-product, whose columns are nearly orthogonal, and the results
    mapped back exactly (:class:`UserParametrization`).

    Returns the statistics to pool (the internal columns when reparametrized: shift 0),
    the unit upper-triangular transform (None: the centred columns are used as they are)
    and notes for the summary.
    """
    centred = group_stats.rebase(model_shift)
    if not needs_conditioning(centred.cross):
        return group_stats, None, []
    lost = digits_lost(centred.cross)
    if reread is None:
        message = (
            f"the model's columns are nearly collinear even after centring (one keeps only 1e-{lost:.0f} of its "
            f"squared norm after projecting out the earlier ones), so up to {lost:.0f} of the 16 digits of the "
            "cross-products cancel; these statistics were read in one pass and cannot be recomputed in a better "
            "basis, so the estimates may keep only about "
            f"{max(16 - lost, 0):.0f} digits. Centre the predictors (also inside interactions) or fit from data "
            "that can be read twice"
        )
        warn(message)
        return group_stats, None, [message]
    q = group_stats.q
    rows = np.r_[kept, n_columns - 1]
    shift = np.zeros(n_columns)
    shift[rows] = model_shift
    transform = np.eye(q)
    internal = None
    for _ in range(MAX_CONDITIONING_PASSES):
        step = conditioning_transform(centred.cross if internal is None else internal.cross)
        if step is None:
            break
        transform = transform @ step
        embedded = np.zeros((n_columns, q))
        embedded[rows] = transform
        internal = reread(shift, embedded)
        if not needs_conditioning(internal.cross):
            return internal, transform, []
    if internal is None:
        message = (
            f"the model's columns are nearly collinear even after centring: up to {lost:.0f} of the 16 digits of the "
            f"cross-products cancel, so the estimates may keep only about {max(16 - lost, 0):.0f} digits"
        )
        warn(message)
        return group_stats, None, [message]
    remaining = digits_lost(internal.cross)
    message = (
        "the model's columns are nearly collinear even after centring; recomputed in a better-conditioned basis, "
        f"the cross-products still lose up to {remaining:.0f} of their 16 digits"
    )
    warn(message)
    return internal, transform, [message]


def _local_optimum(opt: Optimum, pooled, REML, to_original, is_global, is_default) -> LocalOptimum:
    beta, vcov, sigma2 = fixed_effects(opt.tau, pooled, REML)
    fixef, vcov_df = to_original(beta, vcov)
    se = standard_errors(vcov_df)
    return LocalOptimum(opt.tau, opt.criterion, opt.kind, sigma2, fixef, se, is_global, is_default)


def _compound_symmetry(summary: OptSummary, pooled: PooledStats, REML: bool, to_original) -> CompoundSymmetryFit:
    best = summary.extended_global_optimum
    beta, vcov, sigma2 = fixed_effects(best.tau, pooled, REML)
    fixef, vcov_df = to_original(beta, vcov)
    return CompoundSymmetryFit(
        tau=best.tau,
        fixef=fixef,
        vcov=vcov_df,
        # nlme's sigma^2 is the total variance of one response: sigma2 (1 + tau).
        sigma2=sigma2 * (1.0 + best.tau),
        criterion=best.criterion,
        REML=REML,
        nobs=pooled.nobs,
        at_limit=best.kind == "limit" or summary.unbounded_at_limit,
        optima=summary.extended_optima,
    )


def _ranef(group_stats: GroupStats, sums: np.ndarray, tau, beta, sigma2) -> pd.DataFrame:
    """Conditional modes and variances of the random intercepts (lme4's ranef(condVar=TRUE)).

    ``b_g = tau n_g / (1 + n_g tau) * mean_g(y - X beta)`` and
    ``Var(b_g | y) = sigma2 tau / (1 + n_g tau)`` (given beta, as lme4 reports it); ``sums``
    are the group sums of the internal columns, in which ``beta`` is.
    """
    counts = group_stats.counts.astype(np.float64)
    resid_mean = (sums[:, -1] - sums[:, :-1] @ beta) / counts
    shrink = tau * counts / (1.0 + tau * counts)
    return pd.DataFrame(
        {"mode": shrink * resid_mean, "condvar": sigma2 * tau / (1.0 + tau * counts)},
        index=group_stats.levels,
    )


def _centre_on_ones_column(group_stats: GroupStats) -> tuple[GroupStats, int | None]:
    """The statistics with a column of ones (if any) unshifted, and its index.

    The intercept column must keep shift 0 to stay a column of ones in the centred
    parametrization; rebasing is exact algebra on the statistics.
    """
    intercept = intercept_from_stats(group_stats)
    if intercept is None or group_stats.shift[intercept] == 0.0:
        return group_stats, intercept
    zero_shift = group_stats.shift.copy()
    zero_shift[intercept] = 0.0
    return group_stats.rebase(zero_shift), intercept


def _full_rank_columns(group_stats: GroupStats, intercept_index, reread: Reread | None) -> tuple[list[int], list[int]]:
    """The columns kept by lme4's rank rule (:func:`reml_engine.checks.rank_decisions`),
    and those dropped undecided.

    A column whose residual the one-pass cross-products cannot resolve (it keeps at most
    ``ONE_PASS_RANK_TOL`` of its squared norm) is decided on statistics read again from
    the rows in a basis where each column is first reduced by its projection on the
    columns decided before it (computed from the cross-products, which are accurate for
    those): its residual is then computed row by row and keeps its digits. A column
    still undecided after ``MAX_CONDITIONING_PASSES`` such passes, or when the rows
    cannot be read again, is dropped and returned as undecided.
    """
    p = group_stats.q - 1
    raw = group_stats.raw_cross[:p, :p]
    raw_norm2 = np.diag(raw)
    shift = np.zeros(group_stats.q)
    if intercept_index == 0:
        # Shifts of later columns are multiples of the intercept column, which comes first
        # and is kept: the residual norms are the same, and computed without cancellation.
        gram = group_stats.cross[:p, :p]
        shift = group_stats.shift
    else:
        gram = raw
    centred = None
    if intercept_index == 0:
        # Relative to the centred columns: a shifted x is not collinear with the intercept.
        centred = (_column_sd(group_stats) ** 2) * max(group_stats.nobs - 1, 1)
        centred[0] = group_stats.nobs
    kept, undecided = rank_decisions(gram, raw_norm2, centred_norm2=centred, noise_tol=ONE_PASS_RANK_TOL)
    if not undecided or reread is None:
        return kept, undecided
    transform = np.eye(group_stats.q)
    for _ in range(MAX_CONDITIONING_PASSES):
        transform[:p, :p] = transform[:p, :p] @ _reduction_on(gram, kept)
        gram = reread(shift, transform).cross[:p, :p]
        kept, undecided = rank_decisions(gram, raw_norm2, centred_norm2=centred, noise_tol=ONE_PASS_RANK_TOL)
        if not undecided:
            break
    return kept, undecided


def _reduction_on(gram: np.ndarray, basis: list[int]) -> np.ndarray:
    """Unit upper-triangular ``T``: column j of ``Z T`` is column j of ``Z`` minus its
    least-squares projection on the columns of ``basis`` before j (coefficients from
    ``gram = Z'Z``). The residual of each column on all the earlier ones is unchanged."""
    p = gram.shape[0]
    T = np.eye(p)
    for j in range(p):
        earlier = [k for k in basis if k < j]
        if earlier:
            T[earlier, j] = -np.linalg.solve(gram[np.ix_(earlier, earlier)], gram[earlier, j])
    return T


def _centred_norm2(group_stats: GroupStats) -> np.ndarray:
    """Squared norms of the columns about their means; a column constant to rounding
    (the intercept) keeps its raw squared norm."""
    total = group_stats.sums.sum(axis=0)
    centred = np.diag(group_stats.cross) - total**2 / group_stats.nobs
    raw = np.diag(group_stats.raw_cross)
    return np.where(centred > ROUNDING_TOL**2 * raw, centred, raw)


def _column_sd(group_stats: GroupStats) -> np.ndarray:
    n = group_stats.nobs
    total = group_stats.sums.sum(axis=0)
    var = (np.diag(group_stats.cross) - total**2 / n) / max(n - 1, 1)
    return np.sqrt(np.maximum(var[:-1], 0.0))


def _select_design_columns(design: Design, kept: list[int]) -> Design:
    intercept = design.intercept_index
    return replace(
        design,
        X=design.X[:, kept],
        column_names=tuple(design.column_names[j] for j in kept),
        intercept_index=kept.index(intercept) if intercept in kept else None,
    )
