"""Sufficient statistics of the random-intercept model.

Everything the criterion needs from the data is, for the augmented matrix ``Z = [X | y]``:

* per group g: the size ``n_g`` and the column sums ``s_g = Z_g' 1``;
* globally: the cross-product ``Z'Z``.

:class:`GroupStats` holds these, computed in one pass by a numba kernel. Two of them,
from disjoint sets of rows, add up to the statistics of the union
(``stats(A) + stats(B) == stats(A | B)``), groups split across both included: the basis
for chunked and distributed fits.

:class:`PooledStats` is what the criterion reads: the within-group cross-product ``W``
and, per distinct group size ``n_u``, the pooled between-group cross-product
``B_u = sum_{g: n_g = n_u} s_g s_g' / n_u``. Its size is ``O(U q^2)`` for ``U`` distinct
sizes, independent of the number of rows and groups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numba
import numpy as np
import pandas as pd
from scipy.linalg.blas import dsyrk

from ..frontend.data_checks import check_groups, check_values
from ..frontend.design import Design
from ..frontend.groups import GroupCodes, encode_labels, factorize_groups
from .blas import single_threaded_blas
from .kernels import (
    BLOCK_ROWS,
    group_sums_and_cross,
    group_sums_and_cross_parallel,
    group_sums_and_cross_transformed,
    pool_by_size,
    wide_block_into,
    within_cross,
    within_cross_transformed,
)

#: Within-group sums of squares at or below this fraction of the column's total sum of
#: squares are rounding noise of the one-pass formula: the column is taken as constant
#: within groups.
WITHIN_ZERO_TOL = 64 * np.finfo(float).eps

#: Rows per thread below which the one-pass kernel runs on one thread: smaller chunks
#: gain less than starting the threads and adding their group sums costs.
PARALLEL_CHUNK_ROWS = 250_000
#: Work (rows x q^2) of the one-pass kernel below which it runs with one BLAS thread: the
#: cross-products of its 2048-row blocks are too small to share (at N = 3000, p = 57 two
#: threads on the shared 2-core machine took 216 ms where one takes about 2 ms).
SINGLE_THREAD_BLAS_WORK = 10**9
#: Columns of ``[X | y]`` from which the one-pass statistics hand each block's
#: cross-product to BLAS's symmetric rank-k update (:func:`_wide_pass`) instead of the
#: kernels' column dot products. Measured per 2048-row block, one thread: at q = 32 the
#: update takes 103 us against the dot products' 186 us (equal at q = 24), at q = 1002
#: 30 ms against 280 ms.
WIDE_PASS_COLUMNS = 32

#: Rows used to estimate the column shift (a pilot mean) before the one-pass kernel.
PILOT_ROWS = 1024

#: When a column's within-group sum of squares, computed in one pass as
#: ``Z'Z - sum s s' / n``, is below this fraction of its total sum of squares, too
#: many digits may have cancelled: the within cross-product is recomputed exactly in a
#: second pass (only possible while the raw data are at hand).
WITHIN_CANCELLATION_TOL = 1e-6


#: :func:`distinct_sizes` tallies the sizes (instead of sorting them) when the largest is
#: at most this many times the number of groups (plus :data:`TALLY_SLACK`): the tally
#: then costs no more memory than a few copies of the counts.
TALLY_SPAN_FACTOR = 8
TALLY_SLACK = 1024


def distinct_sizes(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(counts, return_inverse=True, return_counts=True)`` for group sizes
    (non-negative integers): by a tally instead of a sort when the sizes are small
    enough (see :data:`TALLY_SPAN_FACTOR`), as they are when there are many groups."""
    counts = np.asarray(counts, dtype=np.int64)
    if not len(counts) or counts.min() < 0 or counts.max() > TALLY_SPAN_FACTOR * len(counts) + TALLY_SLACK:
        return np.unique(counts, return_inverse=True, return_counts=True)
    tally = np.bincount(counts)
    sizes = np.flatnonzero(tally)
    rank = np.zeros(len(tally), dtype=np.int64)
    rank[sizes] = np.arange(len(sizes))
    return sizes, rank[counts], tally[sizes]


@dataclass(frozen=True)
class GroupStats:
    """Mergeable per-group sums and global cross-products of ``Z - shift``.

    Attributes
    ----------
    levels : pandas.Index
        Group labels, one per row of ``counts`` and ``sums``.
    counts : int64 array (G,)
    sums : float64 array (G, q)
        Per-group sums of ``Z - shift``; the last column is the response.
    cross : float64 array (q, q)
        ``sum over rows of (z - shift)(z - shift)'``.
    shift : float64 array (q,)
    within : float64 array (q, q) or None
        Exact within-group cross-product when a second pass computed it.
    lo, hi : float64 arrays (q,) or None
        Smallest and largest raw value of each column of ``[X | y]``, for the data checks
        (NaN values are not seen; they show as NaN in ``sums`` and ``cross``).
    """

    levels: pd.Index
    counts: np.ndarray
    sums: np.ndarray
    cross: np.ndarray
    shift: np.ndarray
    within: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    @cached_property
    def nobs(self) -> int:
        # Cached: the checks of criterion_problem read it a dozen times.
        return int(self.counts.sum())

    @property
    def ngroups(self) -> int:
        return len(self.levels)

    @property
    def q(self) -> int:
        return self.cross.shape[0]

    def rebase(self, shift: np.ndarray) -> GroupStats:
        """The same statistics about another shift (exact algebra, no data needed)."""
        shift = np.asarray(shift, dtype=np.float64)
        if np.array_equal(shift, self.shift):
            # Nothing moves (adding zeros): skip the passes over the groups, which a merge
            # of many pieces about one shift would pay for every piece.
            return self
        delta = self.shift - shift
        sums = self.sums + self.counts[:, None] * delta[None, :]
        return GroupStats(self.levels, self.counts, sums, self._cross_about(delta), shift, self.within, self.lo,
                          self.hi)

    def _cross_about(self, delta: np.ndarray) -> np.ndarray:
        """``cross`` of the columns shifted by ``delta`` less (the cross-product part of
        :meth:`rebase`)."""
        total = self.column_totals
        return self.cross + np.outer(delta, total) + np.outer(total, delta) + self.nobs * np.outer(delta, delta)

    @cached_property
    def column_totals(self) -> np.ndarray:
        """``sums.sum(axis=0)``: the column sums of ``Z - shift`` over all rows (computed
        once, read-only; the data checks and the rank decisions each need them, and with
        many groups each sum is a pass over the ``(G, q)`` sums)."""
        total = self.sums.sum(axis=0)
        total.setflags(write=False)
        return total

    def select(self, columns) -> GroupStats:
        """The statistics of a subset of the X columns (the response column is kept)."""
        keep = np.r_[np.asarray(columns, dtype=np.int64), self.q - 1]
        within = None if self.within is None else self.within[np.ix_(keep, keep)]
        lo = None if self.lo is None else self.lo[keep]
        hi = None if self.hi is None else self.hi[keep]
        return GroupStats(self.levels, self.counts, self.sums[:, keep],
                          self.cross[np.ix_(keep, keep)], self.shift[keep], within, lo, hi)

    def merge(self, other: GroupStats) -> GroupStats:
        """Statistics of the union of two disjoint sets of rows (:func:`merge_group_stats`)."""
        return merge_group_stats([self, other])

    __add__ = merge

    @cached_property
    def raw_cross(self) -> np.ndarray:
        """``Z'Z`` of the unshifted columns (computed once; read-only)."""
        # rebase's cross-product about a zero shift, without its sums (a copy: about a
        # zero shift already, these very statistics').
        shift = np.zeros(self.q)
        cross = np.array(self.cross if np.array_equal(shift, self.shift) else self._cross_about(self.shift - shift))
        cross.setflags(write=False)
        return cross

    def within_cross(self) -> np.ndarray:
        """Within-group cross-product ``sum_g sum_i (z_i - zbar_g)(z_i - zbar_g)'`` (read-only)."""
        if self.within is not None:
            return self.within
        return self._one_pass_within

    @cached_property
    def _one_pass_within(self) -> np.ndarray:
        within = self.cross - (self.sums / self.counts[:, None]).T @ self.sums
        # A column constant within every group has no within part; what the one-pass
        # formula leaves there is rounding, which could make W indefinite: zero it.
        scale = np.maximum(np.diag(self.cross), np.finfo(float).tiny)
        constant = np.diag(within) <= WITHIN_ZERO_TOL * scale
        within[constant, :] = 0.0
        within[:, constant] = 0.0
        within.setflags(write=False)
        return within

    def pooled(self, model_shift: np.ndarray | None = None) -> PooledStats:
        """Pool groups by size for the criterion.

        Parameters
        ----------
        model_shift : array (q,) or None
            The shift that defines the model's parametrization (see
            :class:`PooledStats`); ``None`` for the raw columns.
        """
        if model_shift is None:
            model_shift = np.zeros(self.q)
        model_shift = np.asarray(model_shift, dtype=np.float64)
        between_sums = self.sums + self.counts[:, None] * (self.shift - model_shift)[None, :]
        sizes, size_index, groups_per_size = distinct_sizes(self.counts)
        between = pool_by_size(self.counts, between_sums, size_index.astype(np.int64), len(sizes))
        within = self.within_cross()
        within = 0.5 * (within + within.T)
        return PooledStats(
            nobs=self.nobs,
            within=within,
            sizes=sizes.astype(np.float64),
            groups_per_size=groups_per_size.astype(np.float64),
            between=between,
            model_shift=model_shift,
        )


@dataclass(frozen=True)
class PooledStats:
    """What the profiled criterion needs: ``O(U q^2)`` numbers.

    With ``Z = [X | y] - 1 model_shift'`` (the model's parametrization; the shift is zero
    unless the design has an intercept column that absorbs it), the relative covariance
    ``H = V / sigma2 = I + tau Z_g Z_g'`` gives

    ``Z' H^{-1} Z = within + sum_u between[u] / (1 + sizes[u] * tau)``.

    Attributes
    ----------
    nobs : int
    within : (q, q) within-group cross-product of Z
    sizes : (U,) distinct group sizes n_u
    groups_per_size : (U,) number of groups of each size
    between : (U, q, q) pooled ``sum s_g s_g' / n_u`` over groups of size n_u
    model_shift : (q,) the shift of the parametrization
    """

    nobs: int
    within: np.ndarray
    sizes: np.ndarray
    groups_per_size: np.ndarray
    between: np.ndarray
    model_shift: np.ndarray

    # Cached (computed on first read, from fields that do not change): the criterion and
    # the optimizer read them at every evaluation, thousands of times per fit.
    @cached_property
    def q(self) -> int:
        return self.within.shape[0]

    @cached_property
    def p(self) -> int:
        return self.q - 1

    @cached_property
    def ngroups(self) -> int:
        return int(self.groups_per_size.sum())

    @cached_property
    def max_size(self) -> float:
        return float(self.sizes.max())

    @cached_property
    def min_size(self) -> float:
        return float(self.sizes.min())


def merge_ranges(parts) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Column ranges of a union of row sets (None unless every part has them)."""
    if any(part.lo is None or part.hi is None for part in parts):
        return None, None
    return (np.minimum.reduce([part.lo for part in parts]), np.maximum.reduce([part.hi for part in parts]))


def merge_group_stats(parts: list[GroupStats]) -> GroupStats:
    """Statistics of the union of disjoint row sets, in one step (levels sorted).

    Equivalent to ``parts[0] + parts[1] + ...`` but with a single union of the levels,
    so that merging ``k`` parts costs one pass over their groups rather than ``k``.
    Levels are matched by the canonical label rule of :mod:`reml_engine.frontend.groups`: a
    group read as ``5`` in one chunk and as ``"5"`` or ``5.0`` in another is one group.
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for part in parts[1:]:
        if part.q != first.q:
            raise ValueError(f"cannot merge statistics with {first.q} and {part.q} columns")
    parts = [part.rebase(first.shift) for part in parts]
    merged = encode_labels(first.levels.append([part.levels for part in parts[1:]]))
    levels = merged.levels
    if not isinstance(levels, pd.MultiIndex):
        levels = levels.rename(first.levels.name)
    counts = np.zeros(len(levels), dtype=np.int64)
    sums = np.zeros((len(levels), first.q))
    cross = np.zeros((first.q, first.q))
    start = 0
    for part in parts:
        pos = merged.codes[start:start + part.ngroups]
        start += part.ngroups
        if _distinct(pos, len(levels)):
            # A part's own levels are distinct, so each merged group appears once:
            # indexed addition gives np.add.at's sums at a fraction of its cost.
            counts[pos] += part.counts
            sums[pos] += part.sums
        else:
            np.add.at(counts, pos, part.counts)
            np.add.at(sums, pos, part.sums)
        cross += part.cross
    lo, hi = merge_ranges(parts)
    # The exact within part does not survive a merge of split groups; it is recomputed
    # from the merged sums (one-pass formula) by leaving it unset.
    return GroupStats(levels, counts, sums, cross, first.shift.copy(), None, lo, hi)


def _distinct(positions: np.ndarray, size: int) -> bool:
    """True when no position in ``positions`` (each in ``0 .. size - 1``) repeats."""
    marks = np.zeros(size, dtype=bool)
    marks[positions] = True
    return int(marks.sum()) == len(positions)


def pilot_shift(X: np.ndarray, y: np.ndarray, intercept_index: int | None) -> np.ndarray:
    """Column means of the first rows: a cheap shift that removes large offsets.

    The intercept column keeps shift 0 so that it stays a column of ones.
    """
    m = min(PILOT_ROWS, X.shape[0])
    shift = np.empty(X.shape[1] + 1)
    shift[:-1] = X[:m].mean(axis=0)
    shift[-1] = y[:m].mean()
    if intercept_index is not None:
        shift[intercept_index] = 0.0
    return shift


#: A column that keeps less than this fraction of its squared norm (about the model's
#: shift) after projecting out the earlier columns is nearly collinear with them: its
#: cross-products cancel ``-log10(fraction)`` of their digits in the criterion's
#: Cholesky factor. Above it (at most 4 of about 16 digits lost) the statistics are used
#: as they are; below it they are recomputed in a well-conditioned basis (see
#: :func:`conditioning_transform`).
COLLINEARITY_TOL = 1e-4

#: Passes over the rows in the well-conditioned basis, at most. Each pass squares the
#: fraction of digits still lost (CholeskyQR2): one suffices for every design the rank
#: check keeps; the second guards against a first basis read off badly cancelled sums.
MAX_CONDITIONING_PASSES = 2

_NO_TRANSFORM = np.zeros((0, 0))


def kept_fractions(cross: np.ndarray) -> np.ndarray:
    """Per column of a cross-product ``C = Z'Z``: the fraction of its squared norm left
    after projecting out the earlier columns, ``r_j^2 / C_jj``.

    ``r_j^2`` is the squared pivot of the Cholesky factor of ``C``; a column that keeps a
    fraction ``f`` of its norm has lost about ``-log10(f)`` digits to cancellation in any
    computation from ``C`` (its residual is the difference of two numbers ``1 / f``
    times larger). Zero columns keep 1 (nothing to lose); a factor that breaks down
    (numerically rank deficient) gives 0 from that column on.
    """
    q = cross.shape[0]
    diag = np.diag(cross).copy()
    fractions = np.ones(q)
    live = diag > 0
    if not live.any():
        return fractions
    scale = 1.0 / np.sqrt(diag[live])
    scaled = cross[np.ix_(live, live)] * np.outer(scale, scale)
    pivots = _cholesky_pivots(scaled)
    fractions[live] = pivots**2
    return fractions


def _cholesky_pivots(scaled: np.ndarray) -> np.ndarray:
    """Diagonal of the Cholesky factor of a unit-diagonal matrix, column by column;
    zero from the first column whose pivot is not positive."""
    q = scaled.shape[0]
    pivots = np.zeros(q)
    for k in range(q, 0, -1):
        try:
            L = np.linalg.cholesky(scaled[:k, :k])
        except np.linalg.LinAlgError:
            continue
        pivots[:k] = np.diag(L)
        break
    return pivots


def digits_lost(cross: np.ndarray) -> float:
    """Decimal digits the most collinear column of ``cross`` loses to cancellation."""
    fraction = float(kept_fractions(cross).min())
    return float(-np.log10(max(fraction, np.finfo(float).eps)))


def needs_conditioning(cross: np.ndarray) -> bool:
    """True when some column keeps less than ``COLLINEARITY_TOL`` of its squared norm."""
    return bool(kept_fractions(cross).min() < COLLINEARITY_TOL)


def conditioning_transform(cross: np.ndarray) -> np.ndarray | None:
    """A unit upper-triangular ``T`` for which ``Z T`` has (nearly) orthogonal columns.

    From the Cholesky factor ``C = R'R`` of ``C = Z'Z``, written ``R = D U`` with ``U``
    unit upper triangular, ``T = U^{-1}``: column j of ``Z T`` is column j of ``Z`` minus
    its projection on the earlier columns (Gram-Schmidt, coefficients read off ``C``).
    A unit-triangular map keeps ``log|X' V^{-1} X|`` and hence the REML criterion
    unchanged; ``Z T`` computed row by row from the data has condition number near 1
    even when the columns of ``Z`` are nearly collinear (a large offset carried into an
    interaction, ``x`` next to ``x^2``), so its cross-products keep their digits.
    Returns None when ``C`` is not numerically positive definite.
    """
    diag = np.diag(cross)
    if not np.all(diag > 0):
        return None
    scale = 1.0 / np.sqrt(diag)
    try:
        L = np.linalg.cholesky(cross * np.outer(scale, scale))
    except np.linalg.LinAlgError:
        return None
    # R = L' diag(1/scale); U = diag(R)^-1 R = diag(L)^-1 L' scaled back by columns.
    U = (L / np.diag(L)[None, :]).T * (scale[:, None] / scale[None, :])
    transform = np.linalg.inv(U)
    # U^{-1} of a unit upper triangular matrix is unit upper triangular: clean rounding.
    transform = np.triu(transform)
    np.fill_diagonal(transform, 1.0)
    return transform


def _one_pass(X, y, groups: GroupCodes, shift: np.ndarray, transform: np.ndarray, threads: int | None = None):
    """The one-pass kernel, on as many threads as numba has and the rows justify (or on
    the caller's thread alone, ``threads=1``)."""
    if threads == 1:
        # The single-threaded kernels release the GIL, so a caller's own thread pool
        # (Dask's) overlaps them; the BLAS limit below is process-wide and would race
        # between such threads, so it is left alone.
        if transform.shape[0] > 0:
            return group_sums_and_cross_transformed(X, y, groups.codes, groups.ngroups, shift, transform)
        return group_sums_and_cross(X, y, groups.codes, groups.ngroups, shift)
    q = X.shape[1] + 1
    if transform.shape[0] == 0 and q >= WIDE_PASS_COLUMNS:
        return _wide_pass(X, y, groups, shift)
    n_chunks = min(numba.get_num_threads(), X.shape[0] // PARALLEL_CHUNK_ROWS)
    if n_chunks > 1:
        return group_sums_and_cross_parallel(X, y, groups.codes, groups.ngroups, shift, transform, n_chunks)
    # The blocks' cross-products go to BLAS; below SINGLE_THREAD_BLAS_WORK its threads
    # only wait for each other (see reml_engine.core.blas).
    limit = single_threaded_blas() if X.shape[0] * q * q <= SINGLE_THREAD_BLAS_WORK else contextlib.nullcontext()
    with limit:
        if transform.shape[0] > 0:
            return group_sums_and_cross_transformed(X, y, groups.codes, groups.ngroups, shift, transform)
        return group_sums_and_cross(X, y, groups.codes, groups.ngroups, shift)


def _wide_pass(X, y, groups: GroupCodes, shift: np.ndarray):
    """The one-pass statistics of a wide design (``q >= WIDE_PASS_COLUMNS``): per block of
    rows, the compiled kernel copies the shifted rows and adds their counts, sums and
    ranges (:func:`reml_engine.core.kernels.wide_block_into`), and BLAS adds the block's
    cross-product ``B B'`` by a symmetric rank-k update (half the products of a general
    one; on as many threads as the work justifies, see ``SINGLE_THREAD_BLAS_WORK``).

    The same statistics as :func:`reml_engine.core.kernels.group_sums_and_cross`: counts,
    sums and ranges equal to the last bit, the cross-product the same sums of products
    added in BLAS's order instead of the kernel's (a different rounding, as any BLAS's).
    """
    n, p = X.shape
    q = p + 1
    counts = np.zeros(groups.ngroups, dtype=np.int64)
    sums = np.zeros((groups.ngroups, q), dtype=np.float64)
    lo = np.full(q, np.inf)
    hi = np.full(q, -np.inf)
    # Fortran order, updated in place by the BLAS call; its lower triangle is the result.
    cross = np.zeros((q, q), dtype=np.float64, order="F")
    # C order (q, rows of a block): its transpose is the Fortran array whose A'A is the
    # block's cross-product (no wider than the data, so that fewer rows than a block are
    # not padded with zeros).
    buf = np.zeros((q, min(BLOCK_ROWS, max(n, 1))), dtype=np.float64)
    limit = single_threaded_blas() if n * q * q <= SINGLE_THREAD_BLAS_WORK else contextlib.nullcontext()
    with limit:
        for start in range(0, n, BLOCK_ROWS):
            m = min(start + BLOCK_ROWS, n) - start
            wide_block_into(X, y, groups.codes, shift, start, m, buf, counts, sums, lo, hi)
            cross = dsyrk(1.0, buf.T, beta=1.0, c=cross, trans=1, lower=1, overwrite_c=1)
    lower = np.tril(cross)
    return counts, sums, np.ascontiguousarray(lower + np.tril(lower, -1).T), lo, hi


def compute_group_stats(
    X: np.ndarray,
    y: np.ndarray,
    groups: GroupCodes,
    shift: np.ndarray,
    exact_within: bool = True,
    transform: np.ndarray | None = None,
    threads: int | None = None,
) -> GroupStats:
    """One pass over the rows: :class:`GroupStats` of ``[X | y] - shift``.

    Parameters
    ----------
    X : float64 (n, p), C or Fortran order
    y : float64 (n,)
    groups : GroupCodes
    shift : float64 (p + 1,)
    exact_within : bool
        Recompute the within cross-product in a second pass when the one-pass formula
        would have cancelled more than ``WITHIN_CANCELLATION_TOL`` of a column's sum of
        squares (a column nearly constant within groups). A column constant overall
        (the intercept) is exact in one pass, as its range shows.
    transform : float64 (p + 1, r) or None
        A reparametrization: the statistics are then those of the ``r`` columns
        ``([X | y] - shift) transform``, computed row by row (so a transform that
        removes near-collinearity keeps every digit), with shift 0 and the ranges of
        the new columns. Statistics of chunks with the same shift and transform merge
        as usual.
    threads : int or None
        None: the kernel runs on as many threads as numba has and the rows justify. 1:
        on the calling thread alone, without holding the GIL, for callers that run
        chunks on a thread pool of their own (a Dask worker): numba's parallel kernel
        holds the GIL, so two such threads would take turns instead of overlapping.
    """
    if threads is not None and threads != 1:
        raise ValueError(f"threads must be None or 1, got {threads!r}")
    shift = np.asarray(shift, dtype=np.float64)
    matrix = _NO_TRANSFORM if transform is None else np.ascontiguousarray(transform, dtype=np.float64)
    counts, sums, cross, lo, hi = _one_pass(X, y, groups, shift, matrix, threads)
    own_shift = shift if transform is None else np.zeros(cross.shape[0])
    stats = GroupStats(groups.levels, counts, sums, cross, own_shift, None, lo, hi)
    if exact_within and np.isfinite(cross).all():
        within = stats.within_cross()
        total = np.diag(cross)
        lossy = np.diag(within) < WITHIN_CANCELLATION_TOL * total
        # A column of zeros (shifted constant) has nothing to lose, nor has a constant one.
        lossy &= total > 0
        lossy &= lo < hi
        if lossy.any():
            means = sums / counts[:, None]
            if transform is None:
                exact = within_cross(X, y, groups.codes, means, shift)
            else:
                exact = within_cross_transformed(X, y, groups.codes, means, shift, matrix)
            stats = replace(stats, within=0.5 * (exact + exact.T))
    return stats


@dataclass(frozen=True)
class SufficientStatistics:
    """Stage 2's result: everything the fit needs from the data, and what its columns are.

    The criterion and every estimate are functions of ``group_stats`` alone; the rows
    (``design`` and ``groups``), when they are at hand, serve the fitted values, and
    ``reread`` a second pass in a better-conditioned basis. A chunked or distributed fit
    builds this from merged statistics, without rows.

    Attributes
    ----------
    group_stats : GroupStats
        Per-group sums and the cross-product of ``[X | y]``.
    column_names : tuple of str
        The names of the columns of X.
    intercept_index : int or None
        The column of ones; None when it is not known (a fit from arrays or chunks: it is
        then found from the column ranges, see
        :func:`reml_engine.core.problem.criterion_problem`).
    response_name, group_name : str
    formula : str or None
        The formula as the user wrote it.
    design : Design or None
        The rows, for an in-memory fit.
    groups : GroupCodes or None
        Each row's group, for an in-memory fit.
    reread : Reread or None
        Reads the rows again in another basis (:data:`Reread`), when they can be: then
        nearly collinear columns are recomputed row by row instead of losing digits.
    lme4_start : float or None
        lme4's starting theta when the caller has it (e.g. from the rows with R's
        arithmetic, :func:`reml_engine.core.lme4_start.lme4_start_from_rows`); by default
        the fit computes it from the statistics.
    """

    group_stats: GroupStats
    column_names: tuple[str, ...]
    intercept_index: int | None
    response_name: str = "y"
    group_name: str = "group"
    formula: str | None = None
    design: Design | None = field(default=None, repr=False)
    groups: GroupCodes | None = field(default=None, repr=False)
    reread: Reread | None = field(default=None, repr=False)
    lme4_start: float | None = None

    @property
    def nobs(self) -> int:
        return self.group_stats.nobs

    @property
    def ngroups(self) -> int:
        return self.group_stats.ngroups


#: Reads the rows again in another basis: ``reread(shift, transform)`` returns the
#: :class:`GroupStats` of ``([X | y] - shift) transform`` over the statistics' original
#: columns (``transform`` has a zero row for every column the rank check dropped).
Reread = Callable[[np.ndarray, np.ndarray], GroupStats]


@dataclass(frozen=True)
class RowsAtHand:
    """The :data:`Reread` of an in-memory fit: its rows and their groups."""

    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    groups: GroupCodes = field(repr=False)

    def __call__(self, shift: np.ndarray, transform: np.ndarray) -> GroupStats:
        return compute_group_stats(self.X, self.y, self.groups, shift, transform=transform)


def sufficient_statistics(design: Design) -> SufficientStatistics:
    """Stage 2: one pass over the design's rows gives everything the fit needs.

    Codes the groups (:func:`reml_engine.frontend.groups.factorize_groups`), checks that
    there are at least two groups and fewer groups than rows, and computes the
    :class:`GroupStats` of ``[X | y]`` about a pilot shift (numba kernels); the values'
    checks (finite, within range, a response that varies) are read off those statistics.

    Parameters
    ----------
    design : Design
        From :func:`reml_engine.build_design` or :func:`reml_engine.design_from_arrays`.

    Returns
    -------
    SufficientStatistics

    Examples
    --------
    >>> import reml_engine as rl
    >>> stats = rl.sufficient_statistics(rl.build_design("y ~ x + (1|f)", rl.load_seed()))
    >>> stats.nobs, stats.ngroups
    (12, 4)
    """
    if not isinstance(design, Design):
        raise TypeError(f"design must be a Design (from rl.build_design or rl.design_from_arrays), got "
                        f"{type(design).__name__}")
    groups = factorize_groups(design.groups, design.group_name)
    check_groups(len(design.y), groups.ngroups, design.group_name)
    shift = pilot_shift(design.X, design.y, design.intercept_index)
    group_stats = compute_group_stats(design.X, design.y, groups, shift)
    check_values(group_stats, design.X, design.y, design.column_names, design.response_name)
    return SufficientStatistics(
        group_stats,
        tuple(design.column_names),
        design.intercept_index,
        response_name=design.response_name,
        group_name=design.group_name,
        formula=design.formula.formula if design.formula is not None else None,
        design=design,
        groups=groups,
        reread=RowsAtHand(design.X, design.y, groups),
    )
