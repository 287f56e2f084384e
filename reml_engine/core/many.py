"""Many responses, one design: k random-intercept models ``y_j ~ X + (1|g)`` from one pass.

Simulation studies, bootstrap, genomics and imaging fit thousands of outcomes on the same
design and groups. Everything a fit reads from the data is the :class:`GroupStats` of
``[X | y_j]``: group sums and the cross-product. Their X part is shared, so one pass over
the rows (:func:`reml_engine.core.many_kernels.many_sums_and_cross`) computes the group
sums of X and of all k responses, ``X'X``, ``X'Y`` and each response's sum of squares;
the statistics of response j are then assembled from those (:meth:`ManyStatistics.group_stats`).
On large data the pass runs in segments of whole groups and the batched scan in blocks of
responses, on the free cores (:mod:`reml_engine.core.workers`); the pieces are cut by the
size of the data alone, so the numbers do not depend on the number of threads.
The first response runs the ordinary single-response chain
(``criterion_problem -> find_optima -> build_fit``), which decides what depends only on
X (columns kept, the intercept, no conditioning transform); the others go through the
batched scan (:mod:`reml_engine.core.many_scan`), which shares the X-only work of the
scan and takes each response's decisions where they are certain, and any response it
cannot decide runs the single chain too. Each response gets its own global optimum,
every local optimum and its boundary diagnosis, as ``rl.fit(X, Y[:, j], groups)`` would
give them (the same statistics up to the order of the floating-point sums;
``tests/core/test_many.py`` and ``tests/core/test_many_scan.py`` check the equality).

The same choices as the single fit are made per response, from the same numbers: the
pilot shift of each column, and the second, exact pass for the within-group
cross-product when the one-pass formula would cancel too many digits of a column of X
or of that response. A response whose centred columns are nearly collinear reads its
rows again in a better-conditioned basis, as the single fit does.

The result keeps the statistics (``O(G k + p k)`` numbers), never the rows: Y is read
once and not copied. The batched responses are kept as arrays (estimates, the global
optimum, the scan's brackets and roots), the others as their criterion problems and
optimizer records; each :class:`~reml_engine.core.results.LmerFit` (with its random
effects and the compound-symmetry fit) is built from the statistics when it is first
asked for, as a fit from chunks is: ``fitted`` and ``resid`` are None and ``predict``
needs the rows. ``keep_data=True`` keeps a private copy of the rows for them (as large
as Y). Either way nothing done to the caller's arrays later changes a fit.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import ModelDataError
from ..frontend.data_checks import check_groups, check_responses_finite, check_values
from ..frontend.design import Design, FixedEncoding
from ..frontend.formula import ParsedFormula
from ..frontend.groups import GroupCodes, factorize_groups
from .criterion import fixed_effects
from .diagnosis import boundary_reason
from .fitting import build_fit
from .many_kernels import group_segments, many_sums_and_cross, many_within
from .many_scan import BatchedFits, batched_optima
from .optimizer import OptSummary, find_optima
from .parametrization import standard_errors
from .problem import CriterionProblem, criterion_problem
from .results import SINGULAR_TOL, LmerFit
from .statistics import (
    PILOT_ROWS,
    WITHIN_CANCELLATION_TOL,
    GroupStats,
    SufficientStatistics,
    compute_group_stats,
)
from .workers import run_pieces

#: Segments of whole groups the pass over the rows is cut into (run on two threads
#: where two cores are free, :mod:`reml_engine.core.workers`) ...
PASS_SEGMENTS = 2
#: ... from this many values of ``[X | Y]`` on (below, one segment: a thread costs more
#: than it saves).
PASS_SEGMENT_VALUES = 2**22


@dataclass(frozen=True)
class ManyDesign:
    """The arrays of k models that share their design: X (n, p), Y (n, k), the groups.

    ``template`` is the design of the first response (its formula, model spec and rows
    serve every response); :meth:`design` is the design of response j.

    Attributes
    ----------
    template : Design
    Y : float64 (n, k), or None
        None in what a fit keeps without ``keep_data`` (the template has no rows then).
    response_names : tuple of str
    formulas : tuple of str or None
        Each response's formula (``"y_j ~ ..."``), for a fit from a formula.
    """

    template: Design
    Y: np.ndarray = field(repr=False)
    response_names: tuple[str, ...]
    formulas: tuple[str, ...] | None = None

    @property
    def k(self) -> int:
        return len(self.response_names)

    def formula(self, j: int) -> ParsedFormula | None:
        """Response j's parsed formula (None for arrays)."""
        parsed = self.template.formula
        if parsed is not None and self.formulas is not None:
            name = self.response_names[j]
            lhs = name if name.isidentifier() else f"`{name}`"
            parsed = replace(parsed, formula=self.formulas[j], response=name,
                             fixed=f"{lhs} ~{parsed.fixed.split('~', 1)[1]}")
        return parsed

    def design(self, j: int) -> Design:
        """The design of response j alone (what ``build_design`` or ``design_from_arrays``
        would return for it)."""
        return replace(self.template, y=np.ascontiguousarray(self.Y[:, j]), response_name=self.response_names[j],
                       formula=self.formula(j))

    def encoding(self, j: int) -> FixedEncoding | None:
        """How new rows become response j's fixed-effect design, for its fit kept without
        rows (``predict(newdata)``, ``simulate(newdata=)``, the type III table, as a fit
        from chunks); None for arrays."""
        parsed, spec = self.formula(j), self.template.model_spec
        if parsed is None or spec is None:
            return None
        return FixedEncoding(parsed, spec, self.template.numeric_columns)


@dataclass(frozen=True)
class ManyStatistics:
    """The shared statistics of ``[X | Y]`` about the shifts ``shift_x`` and ``shift_y``.

    Attributes
    ----------
    levels : pandas.Index
    counts : int64 (G,)
    sums_x : (G, p), sums_y : (G, k)
        Group sums of ``X - shift_x`` and ``Y - shift_y``.
    cross_xx : (p, p), cross_xy : (p, k), squares_y : (k,)
        ``X'X``, ``X'Y`` and ``diag(Y'Y)`` of the shifted columns.
    shift_x : (p,), shift_y : (k,)
    lo_x, hi_x : (p,), lo_y, hi_y : (k,)
        Raw ranges of the columns.
    within_xx, within_xy, within_yy : arrays or None
        The exact within-group cross-products, when a second pass computed them.
    exact_within : bool (k,)
        Per response: whether its fit uses the exact within part (as the single fit
        would decide from the same numbers).
    """

    levels: pd.Index
    counts: np.ndarray
    sums_x: np.ndarray
    sums_y: np.ndarray
    cross_xx: np.ndarray
    cross_xy: np.ndarray
    squares_y: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray
    lo_x: np.ndarray
    hi_x: np.ndarray
    lo_y: np.ndarray
    hi_y: np.ndarray
    exact_within: np.ndarray
    within_xx: np.ndarray | None = None
    within_xy: np.ndarray | None = None
    within_yy: np.ndarray | None = None

    def group_stats(self, j: int) -> GroupStats:
        """The :class:`GroupStats` of ``[X | y_j]``: what one pass over X and ``Y[:, j]``
        alone computes."""
        p = self.cross_xx.shape[0]
        sums = np.empty((len(self.counts), p + 1))
        sums[:, :p] = self.sums_x
        sums[:, p] = self.sums_y[:, j]
        cross = _bordered(self.cross_xx, self.cross_xy[:, j], self.squares_y[j])
        within = None
        if self.exact_within[j]:
            within = _bordered(self.within_xx, self.within_xy[:, j], self.within_yy[j])
            within = 0.5 * (within + within.T)
        return GroupStats(
            self.levels, self.counts, sums, cross, np.r_[self.shift_x, self.shift_y[j]], within,
            np.r_[self.lo_x, self.lo_y[j]], np.r_[self.hi_x, self.hi_y[j]],
        )


def _bordered(corner: np.ndarray, column: np.ndarray, last: float) -> np.ndarray:
    p = corner.shape[0]
    out = np.empty((p + 1, p + 1))
    out[:p, :p] = corner
    out[:p, p] = column
    out[p, :p] = column
    out[p, p] = last
    return out


def _one_pass_within_diagonal(squares: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Diagonal of the one-pass within cross-product ``Z'Z - sum_g s_g s_g' / n_g``."""
    return squares - ((sums / counts[:, None]) * sums).sum(axis=0)


def _lossy(within_diag, total, lo, hi) -> np.ndarray:
    """Columns whose one-pass within part cancelled too many digits
    (:func:`reml_engine.core.statistics.compute_group_stats`'s rule)."""
    return (within_diag < WITHIN_CANCELLATION_TOL * total) & (total > 0) & (lo < hi)


def many_statistics(X: np.ndarray, Y: np.ndarray, groups: GroupCodes, intercept_index: int | None) -> ManyStatistics:
    """One pass over the rows of X and Y: the statistics of every response.

    The shifts are the single fit's pilot shifts (the column means of the first
    ``PILOT_ROWS`` rows, 0 for a known intercept column), so that each response's
    statistics are those of its own fit.
    """
    # A temporary C-ordered copy only when Y comes in another layout (the kernel reads
    # rows); it is not kept.
    Y = np.ascontiguousarray(Y)
    m = min(PILOT_ROWS, X.shape[0])
    shift_x = X[:m].mean(axis=0)
    if intercept_index is not None:
        shift_x[intercept_index] = 0.0
    shift_y = Y[:m].mean(axis=0)
    counts, sums_x, sums_y, cross_xx, cross_xy, squares_y, lo_x, hi_x, lo_y, hi_y = _one_pass(
        X, Y, groups, shift_x, shift_y)
    finite_x = bool(np.isfinite(cross_xx).all())
    finite = finite_x & np.isfinite(cross_xy).all(axis=0) & np.isfinite(squares_y)
    total_x = np.diag(cross_xx)
    lossy_x = _lossy(_one_pass_within_diagonal(total_x, sums_x, counts), total_x, lo_x, hi_x).any()
    lossy_y = _lossy(_one_pass_within_diagonal(squares_y, sums_y, counts), squares_y, lo_y, hi_y)
    exact = finite & (lossy_x | lossy_y)
    stats = ManyStatistics(groups.levels, counts, sums_x, sums_y, cross_xx, cross_xy, squares_y, shift_x, shift_y,
                           lo_x, hi_x, lo_y, hi_y, exact)
    if not exact.any():
        return stats
    within_xx, within_xy, within_yy = many_within(
        X, Y, groups.codes, sums_x / counts[:, None], sums_y / counts[:, None], shift_x, shift_y
    )
    return replace(stats, within_xx=within_xx, within_xy=within_xy, within_yy=within_yy)


def _segment_count(X: np.ndarray, Y: np.ndarray) -> int:
    """Segments of the pass over the rows: ``PASS_SEGMENTS`` from ``PASS_SEGMENT_VALUES``
    values of ``[X | Y]`` on, else one (by the size of the data alone, so the sums are
    the same whatever the number of threads)."""
    return PASS_SEGMENTS if X.shape[0] * (X.shape[1] + Y.shape[1]) >= PASS_SEGMENT_VALUES else 1


def _one_pass(X: np.ndarray, Y: np.ndarray, groups: GroupCodes, shift_x: np.ndarray, shift_y: np.ndarray) -> tuple:
    """The pass over the rows, in segments of whole groups (on threads when there are
    cores for them): each segment's groups get their counts and sums, and the segments'
    cross-products, sums of squares and ranges are combined in their order."""
    G, p, k = groups.ngroups, X.shape[1], Y.shape[1]
    order, bounds = group_segments(groups.codes, G, _segment_count(X, Y))
    counts = np.zeros(G, dtype=np.int64)
    sums_x = np.zeros((G, p))
    sums_y = np.zeros((G, k))

    def segment(s: int) -> tuple:
        return many_sums_and_cross(X, Y, groups.codes, order, bounds[s], bounds[s + 1], shift_x, shift_y, counts,
                                   sums_x, sums_y)

    parts = run_pieces(segment, range(len(bounds) - 1))
    cross_xx, cross_xy, squares_y, lo_x, hi_x, lo_y, hi_y = parts[0]
    for part in parts[1:]:
        cross_xx = cross_xx + part[0]
        cross_xy = cross_xy + part[1]
        squares_y = squares_y + part[2]
        lo_x, hi_x = np.minimum(lo_x, part[3]), np.maximum(hi_x, part[4])
        lo_y, hi_y = np.minimum(lo_y, part[5]), np.maximum(hi_y, part[6])
    return counts, sums_x, sums_y, cross_xx, cross_xy, squares_y, lo_x, hi_x, lo_y, hi_y


@dataclass(frozen=True)
class _ResponseRows:
    """The :data:`~reml_engine.core.statistics.Reread` of response j: its rows, read
    again only when its columns need a better-conditioned basis."""

    X: np.ndarray = field(repr=False)
    Y: np.ndarray = field(repr=False)
    j: int
    groups: GroupCodes = field(repr=False)

    def __call__(self, shift: np.ndarray, transform: np.ndarray) -> GroupStats:
        y = np.ascontiguousarray(self.Y[:, self.j])
        return compute_group_stats(self.X, y, self.groups, shift, transform=transform)


def _response_statistics(design: ManyDesign, stats: ManyStatistics, groups: GroupCodes | None, j: int,
                         with_rows: bool) -> SufficientStatistics:
    """Response j's :class:`SufficientStatistics`, with its rows (for the fit's fitted
    values) or without (for the criterion alone); it can read its rows again in a better
    basis only when ``design`` holds them."""
    template = design.template
    group_stats = stats.group_stats(j)
    response_design = design.design(j) if with_rows else None
    formula = None if design.formulas is None else design.formulas[j]
    reread = None if design.Y is None else _ResponseRows(template.X, design.Y, j, groups)
    return SufficientStatistics(
        group_stats,
        tuple(template.column_names),
        template.intercept_index,
        response_name=design.response_names[j],
        group_name=template.group_name,
        formula=formula,
        design=response_design,
        groups=groups if with_rows else None,
        reread=reread,
    )


@dataclass(frozen=True)
class _OnePass:
    """What the responses fitted from one pass share: the statistics, and the rows only
    with ``keep_data`` (a private copy; else ``design`` has no rows, ``groups`` is None)."""

    design: ManyDesign
    statistics: ManyStatistics
    groups: GroupCodes | None
    REML: bool
    keep_data: bool


class _SharedResponse:
    """Response j of a one-pass fit, fitted by the single chain: its criterion problem
    (without rows) and optimizer record; its LmerFit is built when first asked for."""

    def __init__(self, source: _OnePass, j: int, problem: CriterionProblem, summary: OptSummary):
        self.source, self.j, self.problem, self.summary = source, j, problem, summary

    @property
    def optimum(self):
        return self.summary.global_optimum

    @property
    def n_optima(self) -> int:
        return len(self.summary.optima)

    def estimates(self) -> tuple[pd.Series, pd.Series, float]:
        """Fixed effects, standard errors and sigma2 at the global optimum, from the
        criterion problem (as :func:`~reml_engine.core.fitting.build_fit` computes them)."""
        beta, vcov, sigma2 = fixed_effects(self.optimum.tau, self.problem.pooled, self.problem.REML)
        fixef, vcov_user = self.problem.parametrization(beta, vcov)
        return fixef, standard_errors(vcov_user), sigma2

    def build(self) -> LmerFit:
        """The LmerFit. Without the rows, from the criterion problem of the fit; with
        them (``keep_data``), the criterion problem set up again with the rows at hand
        (the same numbers, so the warnings it gave the first time are not repeated)."""
        if not self.source.keep_data:
            return _without_rows(build_fit(self.problem, self.summary), self.source, self.j)
        return _build_with_rows(self.source, self.j, self.summary)


def _without_rows(fit: LmerFit, source: _OnePass, j: int) -> LmerFit:
    """A fit kept without rows, with its formula's encoding (see :meth:`ManyDesign.encoding`)."""
    return replace(fit, fixed_encoding=source.design.encoding(j))


def _build_with_rows(source: _OnePass, j: int, summary: OptSummary) -> LmerFit:
    statistics = _response_statistics(source.design, source.statistics, source.groups, j, with_rows=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem = criterion_problem(statistics, source.REML)
    return build_fit(problem, summary)


class _FittedResponse:
    """A response fitted on its own (its own rows: missing values in a formula fit)."""

    def __init__(self, fit: LmerFit):
        self.fit = fit

    @property
    def optimum(self):
        return self.fit.global_optimum

    @property
    def n_optima(self) -> int:
        return len(self.fit.optima)

    def estimates(self) -> tuple[pd.Series, pd.Series, float]:
        return self.fit.fixef, self.fit.se, self.fit.sigma2

    def build(self) -> LmerFit:
        return self.fit


@dataclass(frozen=True)
class _Batch:
    """The responses of a one-pass fit that the batched scan fitted (by their index j)."""

    source: _OnePass
    fits: BatchedFits
    names: tuple[str, ...]


class _BatchedResponse:
    """A response fitted by the batched scan, a view of the arrays of :class:`_Batch`:
    its optimizer record is built when asked for, its LmerFit when first asked for."""

    def __init__(self, batch: _Batch, j: int):
        self.batch, self.j = batch, j

    @property
    def summary(self) -> OptSummary:
        return self.batch.fits.summary(self.j)

    @property
    def optimum(self):
        return self.summary.global_optimum

    @property
    def n_optima(self) -> int:
        return int(self.batch.fits.n_optima[self.j])

    def estimates(self) -> tuple[pd.Series, pd.Series, float]:
        index = pd.Index(self.batch.names)
        fits = self.batch.fits
        return (pd.Series(fits.fixef[self.j], index=index, name="fixef"),
                pd.Series(fits.se[self.j], index=index, name="se"), float(fits.sigma2[self.j]))

    def build(self) -> LmerFit:
        source = self.batch.source
        if source.keep_data:
            return _build_with_rows(source, self.j, self.summary)
        # The batched scan takes only responses whose statistics need no better basis
        # (nor the exact within pass), so the criterion problem from the statistics
        # alone is the one the single chain sets up.
        statistics = _response_statistics(source.design, source.statistics, None, self.j, with_rows=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem = criterion_problem(statistics, source.REML)
        if problem.notes or problem.parametrization.transform is not None:
            raise RuntimeError(f"internal: batched response {self.j} needs its rows read again")
        return _without_rows(build_fit(problem, self.summary), source, self.j)


class ManyFits(Sequence):
    """The fits of k responses on one design: a sequence of
    :class:`~reml_engine.core.results.LmerFit`, one per response, and a table.

    ``fits[j]`` (or ``fits["name"]``) is response j's fit, equal to its own
    ``rl.fit(X, Y[:, j], groups)`` (or ``rl.lmer("y_j ~ ...", data)``): the global
    optimum, every local optimum, the boundary diagnosis. It is built on first access
    and kept, from the statistics: without ``keep_data=True`` (in ``rl.fit`` or
    ``rl.lmer``) its ``fitted`` and ``resid`` are None and ``predict`` is refused, as
    for a fit from chunks. :meth:`table` has one row per response; ``tau``, ``criterion``, ``fixef``
    and ``se`` are per-response Series and DataFrames, read without building the fits.

    Examples
    --------
    >>> import numpy as np, reml_engine as rl
    >>> rng = np.random.default_rng(1)
    >>> groups = np.repeat(np.arange(10), 5)
    >>> X = np.column_stack([np.ones(50), rng.standard_normal(50)])
    >>> Y = rng.standard_normal((50, 3)) + rng.standard_normal((10, 3))[groups]
    >>> fits = rl.fit(X, Y, groups)
    >>> len(fits), fits.responses
    (3, ('y0', 'y1', 'y2'))
    >>> bool(np.isclose(fits[1].criterion, rl.fit(X, Y[:, 1], groups).criterion, rtol=1e-12))
    True
    """

    def __init__(self, responses: Sequence[str], entries: Sequence, REML: bool, batch: _Batch | None = None,
                 batch_index: np.ndarray | None = None):
        # ``entries[j]`` is None where response j is row ``batch_index[j]`` of the batched
        # scan's arrays (no Python object per response until it is read).
        self._responses = tuple(responses)
        self._stored = tuple(entries)
        self._REML = REML
        self._batch = batch
        self._batch_index = (np.full(len(self._stored), -1, dtype=np.int64) if batch_index is None
                             else np.asarray(batch_index, dtype=np.int64))
        self._fits: dict[int, LmerFit] = {}
        self._estimates_cache = None
        self._lock = threading.Lock()
        # The estimates are part of the result (and of its timing): computed now, not
        # on first read.
        self._estimates()

    @classmethod
    def combine(cls, responses: Sequence[str], shared: ManyFits | None, separate: dict[str, LmerFit]) -> ManyFits:
        """The responses in the order given, from a one-pass fit and from fits of their own."""
        position = {} if shared is None else {name: j for j, name in enumerate(shared._responses)}
        entries, index = [], np.full(len(responses), -1, dtype=np.int64)
        for m, name in enumerate(responses):
            if name in separate:
                entries.append(_FittedResponse(separate[name]))
                continue
            j = position[name]
            entries.append(shared._stored[j])
            index[m] = shared._batch_index[j]
        REML = shared._REML if shared is not None else next(iter(separate.values())).REML
        return cls(responses, entries, REML, None if shared is None else shared._batch, index)

    @property
    def _entries(self) -> tuple:
        """Every response's entry (views of the batched arrays made now)."""
        return tuple(e if e is not None else _BatchedResponse(self._batch, int(self._batch_index[j]))
                     for j, e in enumerate(self._stored))

    def _entry(self, j: int):
        entry = self._stored[j]
        return entry if entry is not None else _BatchedResponse(self._batch, int(self._batch_index[j]))

    def _per_response(self, batched: np.ndarray | None, single, dtype=float) -> np.ndarray:
        """A number per response: from the batched arrays where they have it, else
        ``single(entry)``."""
        out = np.empty(len(self._stored), dtype=dtype)
        rows = self._batch_index
        mask = rows >= 0
        if mask.any():
            out[mask] = batched[rows[mask]]
        for j in np.flatnonzero(~mask):
            out[j] = single(self._stored[j])
        return out

    # --- the sequence ---------------------------------------------------------------------

    @property
    def responses(self) -> tuple[str, ...]:
        """The responses' names, in the order of the fits."""
        return self._responses

    @property
    def REML(self) -> bool:
        return self._REML

    def __len__(self) -> int:
        return len(self._stored)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[j] for j in range(len(self))[key]]
        return self._fit(self._position(key))

    def _position(self, key) -> int:
        if isinstance(key, str):
            if key not in self._responses:
                raise KeyError(f"no response named {key!r}; responses are {list(self._responses[:10])}"
                               + (" ..." if len(self) > 10 else ""))
            return self._responses.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            j = int(key)
            if not -len(self) <= j < len(self):
                raise IndexError(f"response {j} out of range for {len(self)} responses")
            return j % len(self)
        raise TypeError(f"index the fits by position or response name, not {type(key).__name__}")

    def _fit(self, j: int) -> LmerFit:
        with self._lock:
            if j not in self._fits:
                self._fits[j] = self._entry(j).build()
            return self._fits[j]

    # --- per-response numbers ---------------------------------------------------------------

    @property
    def tau(self) -> pd.Series:
        """var_group / sigma2 at each response's global optimum."""
        batched = None if self._batch is None else self._batch.fits.tau
        return pd.Series(self._per_response(batched, lambda e: e.optimum.tau), index=self._index(), name="tau")

    @property
    def criterion(self) -> pd.Series:
        """Each response's criterion (REML criterion or ML deviance) at its global optimum."""
        batched = None if self._batch is None else self._batch.fits.criterion
        return pd.Series(self._per_response(batched, lambda e: e.optimum.criterion), index=self._index(),
                         name="criterion")

    @property
    def sigma2(self) -> pd.Series:
        """Residual variance at each response's global optimum."""
        return pd.Series(self._estimates()[2], index=self._index(), name="sigma2", dtype=float)

    @property
    def n_optima(self) -> pd.Series:
        """How many local minima each response's criterion has over var_group >= 0."""
        return pd.Series([e.n_optima for e in self._entries], index=self._index(), name="n_optima", dtype=int)

    @property
    def fixef(self) -> pd.DataFrame:
        """Fixed effects, one row per response."""
        return self._estimates()[0].copy()

    @property
    def se(self) -> pd.DataFrame:
        """Standard errors of the fixed effects, one row per response."""
        return self._estimates()[1].copy()

    def _index(self) -> pd.Index:
        return pd.Index(self._responses, name="response")

    def _estimates(self) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        with self._lock:
            if self._estimates_cache is None:
                self._estimates_cache = self._all_estimates(self._index())
            return self._estimates_cache

    def _all_estimates(self, index: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        """The estimates as arrays: the batched responses' rows from the scan's arrays,
        the others from their fits or criterion problems."""
        rows = self._batch_index
        single = {j: self._stored[j].estimates() for j in np.flatnonzero(rows < 0)}
        names = self._batch.names if self._batch is not None else None
        if single:
            first = next(iter(single.values()))[0].index
            if names is None or list(first) == list(names):
                names = first
        if names is None or any(list(f.index) != list(names) for f, _, _ in single.values()):
            # Fits of their own may keep other columns (a formula fit that dropped one).
            fixef, se, sigma2 = zip(*(self._entry(j).estimates() for j in range(len(self))), strict=True)
            return (pd.DataFrame(list(fixef), index=index), pd.DataFrame(list(se), index=index),
                    np.asarray(sigma2, dtype=float))
        names = pd.Index(names)
        k, p = len(self), len(names)
        fixef, se, sigma2 = np.empty((k, p)), np.empty((k, p)), np.empty(k)
        mask = rows >= 0
        if mask.any():
            fits = self._batch.fits
            fixef[mask], se[mask], sigma2[mask] = fits.fixef[rows[mask]], fits.se[rows[mask]], fits.sigma2[rows[mask]]
        for j, (f, e, s2) in single.items():
            fixef[j], se[j], sigma2[j] = f.to_numpy(), e.to_numpy(), s2
        return (pd.DataFrame(fixef, index=index, columns=names), pd.DataFrame(se, index=index, columns=names),
                sigma2)

    def table(self) -> pd.DataFrame:
        """One row per response: ``tau``, ``theta``, ``var_group``, ``sigma2``, ``icc``,
        ``criterion``, ``singular``, ``boundary`` (the reason, as ``fit.boundary.reason``,
        or empty for an interior estimate), ``n_optima``, then each fixed effect and its
        standard error (``fixef[x]``, ``se[x]``).

        The columns come from the batched scan's arrays and the criterion problems, the
        boundary reason of a batched response from its record's slope of the criterion
        at tau = 0; only a response at the boundary that the single chain fitted builds
        its fit for its reason.
        """
        fixef, se, sigma2 = self._estimates()
        tau = self.tau.to_numpy()
        theta = np.sqrt(tau)
        frame = pd.DataFrame(
            {
                "tau": tau,
                "theta": theta,
                "var_group": tau * sigma2,
                "sigma2": sigma2,
                "icc": tau / (1.0 + tau),
                "criterion": self.criterion.to_numpy(),
                "singular": theta < SINGULAR_TOL,
                "boundary": self._boundary_reasons(),
                "n_optima": self._per_response(None if self._batch is None else self._batch.fits.n_optima,
                                               lambda e: e.n_optima, dtype=np.int64),
            },
            index=self._index(),
        )
        return pd.concat([frame, fixef.add_prefix("fixef[").add_suffix("]"), se.add_prefix("se[").add_suffix("]")],
                         axis=1)

    def _boundary_reasons(self) -> list[str]:
        at_zero = self._per_response(None if self._batch is None else self._batch.fits.at_zero,
                                     lambda e: e.optimum.kind == "boundary", dtype=bool)
        reasons = [""] * len(self)
        rows = self._batch_index
        for j in np.flatnonzero(at_zero):
            if rows[j] >= 0:
                # The reason its fit would give, from the record's slope at tau = 0
                # (the fit is not built for it).
                reasons[j] = boundary_reason(self._batch.fits.derivative_at_zero[rows[j]])
                continue
            boundary = self[int(j)].boundary
            reasons[j] = "" if boundary is None else boundary.reason
        return reasons

    def __repr__(self) -> str:
        method = "REML" if self._REML else "ML"
        shown = ", ".join(self._responses[:5]) + (", ..." if len(self) > 5 else "")
        return f"<ManyFits: {len(self)} responses ({shown}) by {method}; .table() for the estimates>"

    def _repr_html_(self) -> str:
        from ..report.notebook import many_fits_html

        return many_fits_html(self)


def fit_many_design(design: ManyDesign, REML: bool = True, keep_data: bool = False) -> ManyFits:
    """Fit every response of a :class:`ManyDesign`: one pass over the rows, then the
    batched scan (:mod:`reml_engine.core.many_scan`) for the responses it can decide,
    and each other response's criterion problem and global optimization from its own
    statistics.

    The result keeps the statistics, not the rows: each response's fit is built from
    them, as a chunked fit (``fitted``, ``resid`` None, ``predict`` refused). With
    ``keep_data`` it keeps a private copy of the rows (X, Y, the groups) and each fit has
    its fitted values. It never keeps a reference to ``design.Y``: nothing done to that
    array later changes the fits.

    Raises
    ------
    ModelDataError
        Naming the response, when one cannot be fitted (constant, non-finite, fitted
        exactly by the fixed effects); the groups and the design are checked once.
    """
    template = design.template
    groups = factorize_groups(template.groups, template.group_name)
    check_groups(len(template.y), groups.ngroups, template.group_name)
    # A column of ones found in X (as the single chain finds it from the column ranges)
    # keeps shift 0: the statistics are then those of the model's parametrization,
    # which the batched scan reads as they are.
    intercept_index = template.intercept_index
    if intercept_index is None and template.X.shape[1]:
        ones = np.flatnonzero((template.X.min(axis=0) == 1.0) & (template.X.max(axis=0) == 1.0))
        intercept_index = int(ones[0]) if len(ones) else None
    statistics = many_statistics(template.X, design.Y, groups, intercept_index)
    if not (np.isfinite(statistics.squares_y).all() and np.isfinite(statistics.cross_xy).all()):
        check_responses_finite(design.Y, design.response_names)
    source = _OnePass(_kept_design(design, keep_data), statistics, groups if keep_data else None, REML, keep_data)
    entries: list = [None] * design.k
    batch, batch_index = None, np.full(design.k, -1, dtype=np.int64)

    def single_chain(j: int) -> None:
        name = design.response_names[j]
        # The rows of the call (design.Y) while fitting: the criterion problem may read
        # them again in a better-conditioned basis; it keeps no reference to them.
        response = _response_statistics(design, statistics, groups, j, with_rows=False)
        try:
            check_values(response.group_stats, template.X, design.Y[:, j], template.column_names, name)
            problem = criterion_problem(response, REML)
            summary = find_optima(problem)
        except ModelDataError as err:
            raise ModelDataError(f"response {j} ({name!r}) of {design.k}: {err}") from None
        entries[j] = _SharedResponse(source, j, problem, summary)

    single_chain(0)
    rest = np.arange(1, design.k)
    if design.k > 1 and _batchable(entries[0].problem, template, intercept_index):
        # What depends only on X was decided on the first response: the others share it.
        fits = batched_optima(statistics, entries[0].problem.nobs, len(template.column_names), intercept_index, REML)
        if fits is not None:
            fits.fitted[0] = False
            batch = _Batch(source, fits, tuple(template.column_names))
            batch_index[fits.fitted] = np.flatnonzero(fits.fitted)
            rest = rest[~fits.fitted[1:]]
    for j in rest:
        single_chain(int(j))
    return ManyFits(design.response_names, entries, REML, batch, batch_index)


def _kept_design(design: ManyDesign, keep_data: bool) -> ManyDesign:
    """What the fits keep of the design: a private copy of the rows with ``keep_data``,
    else the names and formula alone (a template without rows)."""
    template = design.template
    if keep_data:
        Y = np.array(design.Y, order="C", copy=True)
        template = replace(template, X=np.array(template.X, copy=True), y=Y[:, 0].copy(),
                           groups=template.groups.copy())
        return replace(design, template=template, Y=Y)
    return replace(design, template=replace(template, X=None, y=None, groups=None), Y=None)


def _batchable(problem: CriterionProblem, template: Design, intercept_index: int | None) -> bool:
    """Whether the batched scan applies: an intercept column (the one the single chain
    found), no column dropped, no conditioning transform (what the single chain decided
    from X on the first response, the same for every response)."""
    return (
        intercept_index is not None
        and problem.parametrization.intercept_index == intercept_index
        and not problem.dropped_columns
        and problem.parametrization.transform is None
        and not problem.notes
        and problem.column_names == tuple(template.column_names)
    )
