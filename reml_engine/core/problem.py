"""Stage 3: the criterion of one model as a function of tau (lme4's ``mkLmerDevfun``).

:func:`criterion_problem` takes the sufficient statistics of a model, checks what they
must show before anything is minimized (at least two groups; linearly independent
columns, dropping those that are not, as lme4 does; enough rows; an identified random
intercept and residual variance; readable scales), centres the columns on the intercept
and, when the centred columns are still nearly collinear, reads the rows again in a
well-conditioned basis. What it returns, a :class:`CriterionProblem`, is the profiled
criterion as a function of tau with the map back to the user's columns: what lme4's
``devFunOnly = TRUE`` hands out, and what :func:`reml_engine.find_optima` minimizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import warn
from ..frontend.arguments import check_bool
from ..frontend.data_checks import check_groups
from ..frontend.design import Design
from ..progress import logger
from .criterion import (
    CriterionBatch,
    CriterionParts,
    criterion,
    criterion_parts,
    evaluate_minimized,
    fixed_effects,
    tau_lower_limit,
)
from .identifiability import (
    ONE_PASS_RANK_TOL,
    ROUNDING_TOL,
    binary_columns_from_stats,
    check_dof,
    check_identifiable,
    check_residual_variance,
    check_scales,
    intercept_from_stats,
    rank_decisions,
    undecided_columns_message,
    warn_dropped_columns,
)
from .lme4_start import lme4_start_from_stats
from .parametrization import UserParametrization
from .statistics import (
    MAX_CONDITIONING_PASSES,
    GroupStats,
    PooledStats,
    Reread,
    SufficientStatistics,
    conditioning_transform,
    digits_lost,
    needs_conditioning,
)


@dataclass(frozen=True)
class CriterionProblem:
    """The profiled REML criterion (or ML deviance) of one model, as a function of tau.

    Everything the optimizer reads is ``pooled`` and ``REML``; the rest maps its answers
    back to the user's columns and names the model for the result.

    Attributes
    ----------
    REML : bool
    pooled : PooledStats
        The statistics the criterion reads, in the engine's internal columns.
    group_stats : GroupStats
        The statistics of the user's columns that were kept (for the random effects and
        lme4's start).
    parametrization : UserParametrization
        The map from the internal columns to the user's.
    column_names : tuple of str
        The fixed effects kept.
    dropped_columns : tuple of str
        Columns dropped as linear combinations of earlier ones.
    response_name, group_name : str
    formula : str or None
    design : Design or None
        The design of the kept columns, when the rows are at hand.
    group_codes : ndarray or None
        Each row's group, when the rows are at hand.
    lme4_start : float
        lme4's starting theta (:mod:`reml_engine.core.lme4_start`).
    notes : tuple of str
        What the statistics' conditioning cost (printed with the fit).

    Examples
    --------
    >>> import reml_engine as rl
    >>> design = rl.build_design("y ~ x + (1|f)", rl.load_seed())
    >>> problem = rl.criterion_problem(rl.sufficient_statistics(design), REML=True)
    >>> round(problem.criterion(0.0), 3)    # the boundary, var_group = 0
    20.593
    """

    REML: bool
    pooled: PooledStats = field(repr=False)
    group_stats: GroupStats = field(repr=False)
    parametrization: UserParametrization = field(repr=False)
    column_names: tuple[str, ...]
    dropped_columns: tuple[str, ...] = ()
    response_name: str = "y"
    group_name: str = "group"
    formula: str | None = None
    design: Design | None = field(default=None, repr=False)
    group_codes: np.ndarray | None = field(default=None, repr=False)
    lme4_start: float = float("nan")
    notes: tuple[str, ...] = ()

    @property
    def nobs(self) -> int:
        return self.pooled.nobs

    @property
    def ngroups(self) -> int:
        return self.pooled.ngroups

    @property
    def tau_lower_limit(self) -> float:
        """``-1/max(n_g)``: the criterion is defined above it (negative tau: compound symmetry)."""
        return tau_lower_limit(self.pooled)

    def criterion(self, tau: float) -> float:
        """The criterion at ``tau`` (the function the optimizer minimizes)."""
        return criterion(tau, self.pooled, self.REML)

    def parts(self, tau: float) -> CriterionParts:
        """The criterion at ``tau`` with its named parts (``beta`` in the internal columns)."""
        return criterion_parts(tau, self.pooled, self.REML)

    def evaluate(self, taus) -> CriterionBatch:
        """The criterion, its parts and derivative at many tau at once, as the optimizer
        evaluates them (:func:`reml_engine.core.criterion.evaluate_minimized`)."""
        return evaluate_minimized(taus, self.pooled, self.REML)

    def fixed_effects(self, tau: float):
        """``beta_hat``, its covariance and ``sigma2`` at ``tau``, in the user's columns."""
        beta, vcov, sigma2 = fixed_effects(tau, self.pooled, self.REML)
        fixef, vcov_user = self.parametrization(beta, vcov)
        return fixef, vcov_user, sigma2


def criterion_problem(statistics: SufficientStatistics, REML: bool = True) -> CriterionProblem:
    """Stage 3: check the statistics and set up the criterion to minimize.

    Parameters
    ----------
    statistics : SufficientStatistics
        From :func:`reml_engine.sufficient_statistics`, or built from merged statistics
        (chunked and distributed fits). ``intercept_index=None`` means "not known": a
        column of ones is then found from the statistics' column ranges, and the model is
        centred on it (an exact reparametrization).
    REML : bool
        The REML criterion (default) or the ML deviance.

    Returns
    -------
    CriterionProblem

    Raises
    ------
    ModelDataError
        When the model cannot be fitted: one group, no residual degrees of freedom, a
        random intercept confounded with the fixed effects, a response fitted exactly.

    Notes
    -----
    When the rows can be read again (``statistics.reread``) and the centred columns
    are still nearly collinear (:func:`reml_engine.core.statistics.needs_conditioning`),
    the statistics are recomputed in a well-conditioned basis; otherwise the fit warns how
    many digits they may have lost.
    """
    if not isinstance(statistics, SufficientStatistics):
        raise TypeError(f"statistics must be SufficientStatistics (from rl.sufficient_statistics), got "
                        f"{type(statistics).__name__}")
    REML = check_bool(REML, "REML")
    group_stats = statistics.group_stats
    column_names = list(statistics.column_names)
    intercept_index = statistics.intercept_index
    design = statistics.design
    group_name, response_name = statistics.group_name, statistics.response_name
    check_groups(group_stats.nobs, group_stats.ngroups, group_name)
    if intercept_index is None:
        group_stats, intercept_index = _centre_on_ones_column(group_stats)
        if design is not None and intercept_index is not None:
            design = replace(design, intercept_index=intercept_index)
    kept, undecided = _full_rank_columns(group_stats, intercept_index, statistics.reread)
    dropped = [column_names[j] for j in range(len(column_names)) if j not in kept]
    undecided_names = [column_names[j] for j in undecided]
    warn_dropped_columns([name for name in dropped if name not in undecided_names])
    rank_notes = [undecided_columns_message(undecided_names)] if undecided else []
    for note in rank_notes:
        logger.info(note)
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
        group_stats, model_shift, statistics.reread, kept, n_columns, names, response_name
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

    lme4_start = statistics.lme4_start
    return CriterionProblem(
        REML=REML,
        pooled=internal.pooled(model_shift if transform is None else None),
        group_stats=group_stats,
        parametrization=UserParametrization(model_shift, intercept_index, names, transform),
        column_names=tuple(names),
        dropped_columns=tuple(dropped),
        response_name=response_name,
        group_name=group_name,
        formula=statistics.formula,
        design=design,
        group_codes=None if statistics.groups is None else statistics.groups.codes,
        lme4_start=lme4_start_from_stats(group_stats) if lme4_start is None else float(lme4_start),
        notes=tuple(rank_notes + conditioning_notes),
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
    """The columns kept by lme4's rank rule (:func:`reml_engine.core.identifiability.rank_decisions`),
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
    total = group_stats.column_totals
    centred = np.diag(group_stats.cross) - total**2 / group_stats.nobs
    raw = np.diag(group_stats.raw_cross)
    return np.where(centred > ROUNDING_TOL**2 * raw, centred, raw)


def _column_sd(group_stats: GroupStats) -> np.ndarray:
    n = group_stats.nobs
    total = group_stats.column_totals
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
