"""Sufficient statistics of a model with several random-intercept terms.

With prior weights ``w`` (residual variance ``sigma2 / w_i``), an offset ``o`` and the
augmented matrix ``Z = [X | y - o]`` (q = p + 1 columns), everything the profiled
criterion needs from the rows is:

* per term j and level l: the number of rows, the weight ``sum w`` and the sums
  ``sum w (z - shift)`` over the rows of the level;
* per pair of terms: the weighted contingency table (sum of w over the rows of each
  pair of levels that occurs), sparse;
* globally: ``sum w (z - shift)(z - shift)'``, ``sum w``, ``sum log w`` and n.

The shift (column means of the first rows, zero for columns that are constant there,
such as the intercept) keeps the cross-product from cancelling when a column sits far
from zero. :class:`VCStats` holds these; its size is proportional to the numbers of
levels and occupied cells, never to the rows. Two of them from disjoint sets of rows
add up to the statistics of the union (levels unioned, tables summed cell by cell):
``stats(A) + stats(B) == stats(A | B)``, the basis of chunked and distributed fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import ModelDataError
from ..frontend.groups import encode_labels
from .kernels import (
    is_nondecreasing,
    pair_table_dense,
    pair_table_hashed,
    pair_table_sorted,
    run_breaks,
    term_sums_and_cross,
    term_sums_and_cross_parallel,
)
from .terms import RandomTerms, TermStructure

#: Pairs of factors with at most this many level combinations get their contingency
#: table through a dense array (8 bytes per combination, so at most 16 MB); larger ones
#: through a hash table over the occupied cells.
DENSE_TABLE_MAX_CELLS = 1 << 21

#: Rows read to see which factor of a pair the rows are sorted by (fewer changes of
#: level between consecutive rows).
RUN_SAMPLE_ROWS = 1 << 16

#: Rows used to estimate the column shift (a pilot mean) before the one-pass kernel.
PILOT_ROWS = 1024

#: Rows per thread below which the one-pass kernel runs on one thread.
PARALLEL_CHUNK_ROWS = 250_000


@dataclass(frozen=True)
class PairTable:
    """Weighted contingency table of two terms a < b: the occupied cells only.

    Attributes
    ----------
    shape : (m_a, m_b)
    rows, cols : int64 (nnz,)
        Level codes of the cell in term a and term b, sorted by (row, col).
    weights : float64 (nnz,)
        Sum of the prior weights over the rows of the cell (the number of rows for unit
        weights).
    """

    shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray

    @property
    def nnz(self) -> int:
        return len(self.rows)

    def row_nonzeros(self) -> np.ndarray:
        """Per level of term a, the number of levels of term b it occurs with."""
        return np.bincount(self.rows, minlength=self.shape[0])

    def col_nonzeros(self) -> np.ndarray:
        """Per level of term b, the number of levels of term a it occurs with."""
        return np.bincount(self.cols, minlength=self.shape[1])

    def transposed(self) -> PairTable:
        """The same table with the terms swapped (cells sorted by the new rows)."""
        order = np.lexsort((self.rows, self.cols))
        return PairTable((self.shape[1], self.shape[0]), self.cols[order], self.rows[order], self.weights[order])

    def csr(self):
        """The weights as a ``scipy.sparse.csr_array`` (m_a x m_b)."""
        from scipy import sparse

        indptr = np.zeros(self.shape[0] + 1, dtype=np.int64)
        np.cumsum(self.row_nonzeros(), out=indptr[1:])
        return sparse.csr_array((self.weights, self.cols, indptr), shape=self.shape)


def _merge_tables(shape, parts) -> PairTable:
    """Cells of several tables (codes already in the union's numbering) summed."""
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    weights = np.concatenate([p[2] for p in parts])
    keys = rows * np.int64(shape[1]) + cols
    unique, inverse = np.unique(keys, return_inverse=True)
    return PairTable(shape, unique // shape[1], unique % shape[1],
                     np.bincount(inverse, weights=weights, minlength=len(unique)))


@dataclass(frozen=True, eq=False)
class VCStats:
    """Mergeable sufficient statistics of k random-intercept terms with prior weights.

    Attributes
    ----------
    names : tuple of str
        Term names.
    levels : tuple of pandas.Index
        Level labels per term.
    counts : tuple of int64 arrays (m_j,)
        Rows per level.
    level_weights : tuple of float64 arrays (m_j,)
        Sum of prior weights per level (the counts for unit weights).
    sums : tuple of float64 arrays (m_j, q)
        ``sum w (z - shift)`` per level, ``z = [x, y - offset]``; the response last.
    pairs : mapping (a, b) -> PairTable, a < b
        Weighted contingency table of each pair of terms.
    cross : float64 (q, q)
        ``sum w (z - shift)(z - shift)'``.
    shift : float64 (q,)
    nobs : int
    sum_weights, sum_log_weights : float
    lo, hi : float64 (q,)
        Smallest and largest raw value of each column of ``[X | y - offset]``.
    """

    names: tuple[str, ...]
    levels: tuple[pd.Index, ...]
    counts: tuple[np.ndarray, ...]
    level_weights: tuple[np.ndarray, ...]
    sums: tuple[np.ndarray, ...]
    pairs: Mapping[tuple[int, int], PairTable]
    cross: np.ndarray
    shift: np.ndarray
    nobs: int
    sum_weights: float
    sum_log_weights: float
    lo: np.ndarray
    hi: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def q(self) -> int:
        return self.cross.shape[0]

    @property
    def p(self) -> int:
        return self.q - 1

    @property
    def nlevels(self) -> tuple[int, ...]:
        return tuple(len(levels) for levels in self.levels)

    @property
    def level_offsets(self) -> np.ndarray:
        """Start of each term's levels in the numbering shared by all terms (k + 1,)."""
        return np.concatenate([[0], np.cumsum(self.nlevels)]).astype(np.int64)

    def pair(self, a: int, b: int) -> PairTable:
        """The contingency table with term a's levels as rows (either order of a, b)."""
        if a < b:
            return self.pairs[a, b]
        key = ("transposed", b, a)
        if key not in self._cache:
            self._cache[key] = self.pairs[b, a].transposed()
        return self._cache[key]

    @cached_property
    def structure(self) -> TermStructure:
        """Nesting and crossing of the terms, from the contingency tables."""
        return TermStructure.from_tables(
            self.names, self.nlevels,
            {key: table.row_nonzeros() for key, table in self.pairs.items()},
            {key: table.col_nonzeros() for key, table in self.pairs.items()},
        )

    @property
    def total(self) -> np.ndarray:
        """``sum w (z - shift)`` over all rows (q,)."""
        return self.sums[0].sum(axis=0)

    def rebase(self, shift) -> VCStats:
        """The same statistics about another shift (exact algebra, no data needed)."""
        shift = np.asarray(shift, dtype=np.float64)
        delta = self.shift - shift
        total = self.total
        cross = (self.cross + np.outer(delta, total) + np.outer(total, delta)
                 + self.sum_weights * np.outer(delta, delta))
        sums = tuple(s + w[:, None] * delta[None, :] for s, w in zip(self.sums, self.level_weights, strict=True))
        return VCStats(self.names, self.levels, self.counts, self.level_weights, sums, self.pairs,
                       0.5 * (cross + cross.T), shift, self.nobs, self.sum_weights, self.sum_log_weights,
                       self.lo, self.hi)

    def merge(self, other: VCStats) -> VCStats:
        """Statistics of the union of two disjoint sets of rows (levels unioned)."""
        return merge_vc_stats([self, other])

    def select_columns(self, kept) -> VCStats:
        """The statistics of the columns ``kept`` of X (and the response): what the rows
        give once the other columns are dropped (rank-deficient ones, for example)."""
        index = np.append(np.asarray(kept, dtype=np.int64), self.q - 1)
        return VCStats(self.names, self.levels, self.counts, self.level_weights,
                       tuple(np.ascontiguousarray(s[:, index]) for s in self.sums), self.pairs,
                       np.ascontiguousarray(self.cross[np.ix_(index, index)]), self.shift[index], self.nobs,
                       self.sum_weights, self.sum_log_weights, self.lo[index], self.hi[index])

    def reordered(self, order) -> VCStats:
        """The same statistics with the terms in another order (``order[i]`` is the term
        that comes i-th), the contingency tables transposed where needed."""
        order = [int(j) for j in order]
        if sorted(order) != list(range(self.k)):
            raise ValueError(f"order must be a permutation of 0 .. {self.k - 1}, got {order}")
        pairs = {(a, b): self.pair(order[a], order[b]) for a in range(self.k) for b in range(a + 1, self.k)}
        return VCStats(tuple(self.names[j] for j in order), tuple(self.levels[j] for j in order),
                       tuple(self.counts[j] for j in order), tuple(self.level_weights[j] for j in order),
                       tuple(self.sums[j] for j in order), pairs, self.cross, self.shift, self.nobs,
                       self.sum_weights, self.sum_log_weights, self.lo, self.hi)

    __add__ = merge


def union_levels(indexes) -> tuple[pd.Index, list[np.ndarray]]:
    """One level set for the levels of several row sets, and each set's positions in it.

    Labels match by the canonical label rule of :mod:`reml_engine.frontend.groups` (a
    level read as ``5`` in one chunk and as ``"5"`` in another is one level), and the
    union is sorted as :func:`~reml_engine.frontend.groups.factorize_groups` sorts the
    levels of all rows at once.
    """
    indexes = list(indexes)
    first = indexes[0]
    coded = encode_labels(first.append(indexes[1:]) if len(indexes) > 1 else first)
    levels = coded.levels
    if not isinstance(levels, pd.MultiIndex):
        levels = levels.rename(first.name)
    bounds = np.cumsum([0, *(len(index) for index in indexes)])
    return levels, [np.asarray(coded.codes[a:b], dtype=np.int64) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def merge_vc_stats(parts) -> VCStats:
    """Statistics of the union of disjoint sets of rows, in one step per term.

    Each term's levels are unioned once (:func:`union_levels`), the per-level arrays and
    the contingency tables (cells summed) are carried over to the union's numbering, and
    the cross-products are added about the first part's shift. Equal, up to the order of
    the floating-point sums, to :func:`compute_vc_stats` of all the rows at once, in any
    order of the parts.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge_vc_stats needs at least one VCStats")
    first = parts[0]
    for part in parts[1:]:
        if part.names != first.names:
            raise ValueError(f"cannot merge statistics of terms {list(first.names)} and {list(part.names)}")
        if part.q != first.q:
            raise ValueError(f"cannot merge statistics with {first.q} and {part.q} columns")
    if len(parts) == 1:
        return first
    parts = [first] + [part.rebase(first.shift) for part in parts[1:]]
    levels, counts, weights, sums, positions = [], [], [], [], []
    for j in range(first.k):
        union, where = union_levels([part.levels[j] for part in parts])
        c = np.zeros(len(union), dtype=np.int64)
        w = np.zeros(len(union))
        s = np.zeros((len(union), first.q))
        for part, pos in zip(parts, where, strict=True):
            # Positions are distinct within a part (its levels are distinct labels).
            c[pos] += part.counts[j]
            w[pos] += part.level_weights[j]
            s[pos] += part.sums[j]
        levels.append(union)
        counts.append(c)
        weights.append(w)
        sums.append(s)
        positions.append(where)
    pairs = {}
    for (a, b) in first.pairs:
        cells = [(positions[a][i][part.pairs[a, b].rows], positions[b][i][part.pairs[a, b].cols],
                  part.pairs[a, b].weights) for i, part in enumerate(parts)]
        pairs[a, b] = _merge_tables((len(levels[a]), len(levels[b])), cells)
    cross = np.sum([part.cross for part in parts], axis=0)
    return VCStats(tuple(first.names), tuple(levels), tuple(counts), tuple(weights), tuple(sums), pairs, cross,
                   first.shift.copy(), sum(part.nobs for part in parts),
                   float(sum(part.sum_weights for part in parts)), float(sum(part.sum_log_weights for part in parts)),
                   np.min([part.lo for part in parts], axis=0), np.max([part.hi for part in parts], axis=0))


def pilot_shift(X: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """Column means of the first rows: a cheap shift that removes large offsets.

    A column constant over those rows (the intercept, or a dummy) keeps shift 0, so that
    a column of ones stays one and can absorb the others' shifts.
    """
    m = min(PILOT_ROWS, X.shape[0])
    head = np.asarray(X[:m], dtype=np.float64)
    shift = np.empty(X.shape[1] + 1)
    shift[:-1] = head.mean(axis=0) if m else 0.0
    if m:
        constant = (head == head[:1]).all(axis=0)
        shift[:-1][constant] = 0.0
    response = np.asarray(y[:m], dtype=np.float64)
    if offset is not None:
        response = response - np.asarray(offset[:m], dtype=np.float64)
    shift[-1] = response.mean() if m else 0.0
    if not np.isfinite(shift).all():
        shift[~np.isfinite(shift)] = 0.0
    return shift


def _validate_rows(X, y, terms: RandomTerms, weights, offset):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ModelDataError(f"X must be a two-dimensional array (rows x columns), got shape {X.shape}")
    if not (X.flags.c_contiguous or X.flags.f_contiguous):
        X = np.ascontiguousarray(X)
    y = np.ascontiguousarray(y, dtype=np.float64)
    n = X.shape[0]
    if y.shape != (n,):
        raise ModelDataError(f"y has shape {y.shape}; it needs one value per row of X ({n} rows)")
    if terms.nobs != n:
        raise ModelDataError(f"the grouping factors have {terms.nobs} rows, X has {n}")
    if weights is None:
        w = np.empty(0)
    else:
        w = np.ascontiguousarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ModelDataError(f"weights have shape {w.shape}; they need one value per row ({n} rows)")
        bad = ~(np.isfinite(w) & (w > 0))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ModelDataError(
                f"prior weights must be positive and finite: {int(bad.sum())} are not, first at row {first} "
                f"(value {w[first]!r}); drop those rows (lmer drops rows of weight 0 only through na_action)"
            )
    if offset is None:
        o = np.empty(0)
    else:
        o = np.ascontiguousarray(offset, dtype=np.float64)
        if o.shape != (n,):
            raise ModelDataError(f"offset has shape {o.shape}; it needs one value per row ({n} rows)")
        bad = ~np.isfinite(o)
        if bad.any():
            raise ModelDataError(
                f"offset has {int(bad.sum())} non-finite values, first at row {int(np.flatnonzero(bad)[0])}"
            )
    return X, y, w, o


def _pair_table(codes_a, codes_b, weights, m_a, m_b) -> PairTable:
    if m_a * m_b <= DENSE_TABLE_MAX_CELLS:
        rows, cols, cell_w = pair_table_dense(codes_a, codes_b, weights, m_a, m_b)
    elif is_nondecreasing(codes_a):
        # Rows sorted by the first factor (long data sorted by subject): one dense row
        # of the table at a time, in the cells' order; no hashing.
        rows, cols, cell_w = pair_table_sorted(codes_a, codes_b, weights, m_a, m_b)
    else:
        # Every level occurs in some cell: start with room for the larger factor's levels.
        bits = max(10, int(np.ceil(np.log2(2 * max(m_a, m_b)))))
        # Cells of the factor the rows are sorted by (if any) are kept together.
        swapped = run_breaks(codes_b, RUN_SAMPLE_ROWS) < run_breaks(codes_a, RUN_SAMPLE_ROWS)
        if swapped:
            rows, cols, cell_w = pair_table_hashed(codes_b, codes_a, weights, m_b, m_a, bits, True)
        else:
            rows, cols, cell_w = pair_table_hashed(codes_a, codes_b, weights, m_a, m_b, bits, False)
    return PairTable((int(m_a), int(m_b)), rows, cols, cell_w)


def _one_pass(X, y, w, o, codes, level_offsets, shift):
    import numba

    n_chunks = min(numba.get_num_threads(), X.shape[0] // PARALLEL_CHUNK_ROWS)
    if n_chunks > 1:
        return term_sums_and_cross_parallel(X, y, w, o, codes, level_offsets, shift, n_chunks)
    return term_sums_and_cross(X, y, w, o, codes, level_offsets, shift)


def compute_vc_stats(X, y, terms: RandomTerms, weights=None, offset=None, shift=None) -> VCStats:
    """One pass over the rows: :class:`VCStats` of ``[X | y - offset]``.

    Parameters
    ----------
    X : float (n, p)
        Fixed-effect design, intercept column included when the model has one.
    y : float (n,)
    terms : RandomTerms
    weights : float (n,), optional
        Prior weights (lme4's ``weights=``), positive; None for ones.
    offset : float (n,), optional
        Known part of the linear predictor; None for zeros.
    shift : float (p + 1,), optional
        Centre of the statistics; by default :func:`pilot_shift`. Chunks of one data set
        may use different shifts: :meth:`VCStats.merge` rebases.

    Examples
    --------
    >>> import numpy as np
    >>> terms = RandomTerms.from_labels({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1]})
    >>> stats = compute_vc_stats(np.ones((4, 1)), np.array([1.0, 2.0, 3.0, 5.0]), terms)
    >>> stats.pairs[0, 1].nnz
    4
    """
    X, y, w, o = _validate_rows(X, y, terms, weights, offset)
    if shift is None:
        shift = pilot_shift(X, y, None if o.size == 0 else o)
    shift = np.ascontiguousarray(shift, dtype=np.float64)
    if shift.shape != (X.shape[1] + 1,):
        raise ValueError(f"shift must have {X.shape[1] + 1} entries (columns of X and the response)")
    codes = terms.code_matrix()
    nlevels = terms.nlevels
    level_offsets = np.concatenate([[0], np.cumsum(nlevels)]).astype(np.int64)
    pair_keys = [(a, b) for a in range(terms.k) for b in range(a + 1, terms.k)]
    # The contingency tables read only the codes; they run on a second thread while the
    # main pass reads X (all kernels release the GIL).
    with ThreadPoolExecutor(max_workers=2) as pool:
        tables = {key: pool.submit(_pair_table, codes[key[0]], codes[key[1]], w,
                                   nlevels[key[0]], nlevels[key[1]]) for key in pair_keys}
        counts, level_weights, sums, cross, totals, lo, hi = _one_pass(X, y, w, o, codes, level_offsets, shift)
        pairs = {key: future.result() for key, future in tables.items()}
    if not (np.isfinite(cross).all() and np.isfinite(sums).all()):
        bad = [j for j in range(X.shape[1] + 1) if not np.isfinite(cross[j, j])]
        what = ", ".join("the response" if j == X.shape[1] else f"column {j} of X" for j in bad)
        raise ModelDataError(f"non-finite values (NaN or inf) in {what or 'the data'}; remove those rows first")
    split = [slice(level_offsets[j], level_offsets[j + 1]) for j in range(terms.k)]
    return VCStats(
        names=terms.names,
        levels=terms.levels,
        counts=tuple(counts[s] for s in split),
        level_weights=tuple(level_weights[s] for s in split),
        sums=tuple(sums[s] for s in split),
        pairs=pairs,
        cross=0.5 * (cross + cross.T),
        shift=shift,
        nobs=int(X.shape[0]),
        sum_weights=float(totals[0]),
        sum_log_weights=float(totals[1]),
        lo=lo,
        hi=hi,
    )
