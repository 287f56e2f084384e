"""Chunked and distributed fits of several random-intercept terms, weights and offsets.

The several-terms engine (:mod:`reml_engine.varcomp`) reads the rows only through
:class:`~reml_engine.varcomp.VCStats`: per term and level the number of rows, the prior
weight and the weighted sums of ``[X | y - offset]``; per pair of terms the weighted
contingency table (the sparse ``Z_a' W Z_b``); and ``[X | y - offset]' W [X | y - offset]``.
All of them are sums over the rows, so a chunk's statistics
(:func:`~reml_engine.varcomp.compute_vc_stats`, the function an in-memory fit calls on
all its rows) merge into those of the whole data
(:func:`~reml_engine.varcomp.merge_vc_stats`: each term's levels unioned by the canonical
label rule, cells summed). Nested models (``(1|school/class)``) and crossed ones
(``(1|subj) + (1|item)``) alike: the crossed fit is then made in memory from the merged
sparse system, whose size is that of the levels and occupied cells, not of the rows.

Besides the engine's statistics a chunk gives what the in-memory path reads from its
design (:class:`TermsChunkStats`): the unweighted cross-products of X (lme4's rank check,
:func:`~reml_engine.frontend.terms_design.full_rank_columns_from_moments`) and the raw
response's sums per level (lme4's start, which tells which optimum ``lmer()`` returns).

The chunks are encoded, read and merged by :mod:`reml_engine.scaleout.chunked` as for one
term (:class:`TermsPass` is the per-chunk function); :func:`fit_terms_total` turns the
merged result into the same :class:`~reml_engine.core.terms_results.TermsFit` as
:func:`reml_engine.lmer` on the concatenated chunks, without the rows: ``fitted`` and
``resid`` are None; ``predict(newdata)``, ``simulate(newdata=)`` and ``anova()`` read the
encoding and the statistics the fit keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..core.identifiability import warn_dropped_columns
from ..core.terms_fitting import TermsModel, fit_terms_statistics
from ..core.terms_results import TermsFit
from ..errors import ModelDataError
from ..frontend.data_checks import check_response_varies, warn_dropped
from ..frontend.groups import group_labels
from ..frontend.terms_design import (
    TermsEncoding,
    check_levels,
    check_offset,
    check_weights,
    full_rank_columns_from_moments,
    lme4_term_order,
    warn_same_grouping,
)
from ..varcomp import RandomTerms, VCStats, compute_vc_stats, lme4_start_theta, merge_vc_stats
from ..varcomp.statistics import pilot_shift, union_levels
from .encoding import ChunkEncoding, PartialStats, check_label_kinds, located


@dataclass(frozen=True, eq=False)
class TermsChunkStats:
    """What one chunk (or a merge of chunks) gives a several-terms fit.

    Attributes
    ----------
    stats : VCStats
        The engine's statistics, terms in the formula's order.
    response_sums : tuple of float arrays (m_j,)
        Per term, the sum of the raw response over the rows of each level of
        ``stats.levels[j]`` (no weights, no offset: lme4's start reads ``model.response``).
    response_sum, response_sumsq : float
        Sum and sum of squares of the raw response.
    response_lo, response_hi : float
        Its smallest and largest value.
    column_sums : float (p,)
        ``sum (x - shift)`` over the rows, unweighted.
    gram : float (p, p)
        ``sum (x - shift)(x - shift)'``, unweighted (lme4's rank check reads X itself).
    """

    stats: VCStats
    response_sums: tuple[np.ndarray, ...]
    response_sum: float
    response_sumsq: float
    response_lo: float
    response_hi: float
    column_sums: np.ndarray
    gram: np.ndarray

    @staticmethod
    def merge_all(parts: list[TermsChunkStats]) -> TermsChunkStats:
        """The statistics of the union of disjoint chunks."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        stats = merge_vc_stats([part.stats for part in parts])
        response_sums = []
        for j, levels in enumerate(stats.levels):
            union, where = union_levels([part.stats.levels[j] for part in parts])
            if not union.equals(levels):  # the same rule as merge_vc_stats: a broken invariant
                raise AssertionError(f"levels of term {stats.names[j]!r} merged in two different orders")
            sums = np.zeros(len(union))
            for part, pos in zip(parts, where, strict=True):
                sums[pos] += part.response_sums[j]
            response_sums.append(sums)
        return TermsChunkStats(
            stats, tuple(response_sums),
            float(sum(p.response_sum for p in parts)), float(sum(p.response_sumsq for p in parts)),
            float(min(p.response_lo for p in parts)), float(max(p.response_hi for p in parts)),
            np.sum([p.column_sums for p in parts], axis=0), np.sum([p.gram for p in parts], axis=0),
        )


@dataclass(frozen=True)
class TermsPass:
    """Picklable per-chunk function of a several-terms fit: a chunk's :class:`PartialStats`
    holding its :class:`TermsChunkStats`.

    Build it with :meth:`from_sample`: every chunk's statistics are taken about the same
    ``shift`` (pilot means of the sample), so that merging needs no re-centring.
    """

    encoding: ChunkEncoding
    shift: np.ndarray

    @classmethod
    def from_sample(cls, encoding: ChunkEncoding, sample: pd.DataFrame) -> TermsPass:
        """The pass with its shift read off complete sample rows."""
        with located(encoding.sample_where):
            X, y, data = encoding.design(sample)
            offset = _offset(data, encoding.columns.offsets)
        return cls(encoding, pilot_shift(X, y, offset))

    def __call__(self, chunk: pd.DataFrame, where: str = "a chunk") -> PartialStats:
        return self.encoding.reduce(chunk, where, self._statistics)

    def _statistics(self, X: np.ndarray, y: np.ndarray, data: pd.DataFrame) -> TermsChunkStats:
        columns = self.encoding.columns
        weights = None
        if columns.weights is not None:
            values = data[columns.weights]
            _require_numbers(values, f"weights ({columns.weights!r})")
            weights = values.to_numpy(dtype=np.float64)
            check_weights(weights, columns.weights, data.index)
        offset = _offset(data, columns.offsets)
        labels = {spec.name: group_labels(data, spec.columns) for spec in columns.parsed.random_terms}
        try:
            terms = RandomTerms.from_labels(labels)
        except ValueError as err:
            raise ModelDataError(str(err)) from None
        stats = compute_vc_stats(X, y, terms, weights, offset, shift=self.shift)
        response_sums = tuple(np.bincount(codes, weights=y, minlength=m)
                              for codes, m in zip(terms.codes, terms.nlevels, strict=True))
        centred = X - self.shift[:-1]
        return TermsChunkStats(stats, response_sums, float(y.sum()), float(y @ y), float(y.min()), float(y.max()),
                               centred.sum(axis=0), centred.T @ centred)


def _require_numbers(values: pd.Series, what: str) -> None:
    if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
        raise ModelDataError(f"{what} must be numbers, got dtype {values.dtype}")


def _offset(data: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray | None:
    """The total offset of the rows (the formula's ``offset()`` terms and ``offset=``)."""
    total = None
    for column in columns:
        values = data[column]
        _require_numbers(values, f"offset column {column!r}")
        values = values.to_numpy(dtype=np.float64)
        check_offset(values, column, data.index)
        total = values if total is None else total + values
    return total


def fit_terms_total(encoding: ChunkEncoding, total: PartialStats, REML: bool = True,
                    dtypes: pd.Series | None = None) -> TermsFit:
    """The fit from the merged statistics of every chunk: the checks that need all of
    them (rows dropped, labels matched, a response that varies, lme4's rank check and
    checkNlevels), lme4's order of the terms, then the in-memory stages 3 to 5
    (:func:`~reml_engine.core.terms_fitting.fit_terms_statistics`).

    The fit keeps how the rows were read (:class:`~reml_engine.frontend.terms_design.TermsEncoding`:
    the fixed part's encoding, with ``dtypes``, the data's, for the columns read as
    numbers; each term's grouping columns; the offset columns), for ``predict(newdata)``
    and ``simulate(newdata=)``, and the merged statistics (in ``fit.problem``) for the
    ML refit of ``anova()``."""
    columns = encoding.columns
    parsed = columns.parsed
    if total.n_dropped:
        warn_dropped(total.n_dropped, total.n_rows, total.missing)
    if total.group_stats is None:
        raise ModelDataError(f"no complete observations in {total.n_rows} rows of the variables {list(columns.used)}")
    check_label_kinds(total.kinds)
    merged: TermsChunkStats = total.group_stats
    stats = merged.stats
    check_response_varies(merged.response_lo, merged.response_hi, stats.nobs, parsed.response)
    names = encoding.column_names
    if len(names) >= stats.nobs:
        raise ModelDataError(f"{stats.nobs} observations for {len(names)} fixed-effect columns: the residual "
                             "variance is not identified")
    kept = full_rank_columns_from_moments(stats.nobs, merged.column_sums, merged.gram, stats.shift[:-1],
                                          encoding.intercept_index)
    dropped = tuple(name for j, name in enumerate(names) if j not in kept)
    if dropped:
        warn_dropped_columns(dropped)
        stats = stats.select_columns(kept)
    order = lme4_term_order(stats.nlevels)
    stats = stats.reordered(order)
    check_levels(stats.names, stats.nlevels, stats.nobs)
    warn_same_grouping(stats.names, stats.nlevels, lambda a, b: stats.pair(a, b).nnz)
    start = lme4_start_theta(stats.nobs, merged.response_sum, merged.response_sumsq, stats.counts,
                             [merged.response_sums[j] for j in order])
    model = TermsModel(tuple(names[j] for j in kept), parsed.formula, parsed.response, dropped,
                       columns.weights is not None, bool(columns.offsets))
    fit = fit_terms_statistics(stats, model, REML, start)
    specs = {spec.name: spec for spec in parsed.random_terms}
    kept_encoding = TermsEncoding(encoding.fixed_encoding(dtypes if dtypes is not None else pd.Series(dtype=object)),
                                  tuple(specs[name] for name in stats.names), parsed.offset_columns,
                                  columns.offset is not None, columns.weights)
    return replace(fit, terms_encoding=kept_encoding)


__all__ = ["TermsChunkStats", "TermsPass", "fit_terms_total"]
