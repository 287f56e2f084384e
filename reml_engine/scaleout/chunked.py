"""Fits from data that never sit in memory at once: chunk by chunk, one encoding for all.

A random-intercept fit needs only the mergeable :class:`~reml_engine.core.statistics.GroupStats`
(per-group sums and a global cross-product). So the rows can be read in chunks, each
chunk reduced to its statistics, and the statistics added up; peak memory is bounded by
the chunk size, not by the number of rows. This module does it on one machine, from an
iterator of DataFrames or a memory-mapped NumPy array; :mod:`reml_engine.scaleout.dask`
runs the same per-chunk function on Dask partitions.

Every chunk is encoded the same way (:mod:`reml_engine.scaleout.encoding`):

1. the first chunk with a complete row is the *sample*: it tells which variables the
   formula uses as categorical factors;
2. the levels of those variables are gathered in a first pass (only when they are not
   declared: a pandas ``Categorical`` column or ``levels=`` keeps the order of its
   categories, as in an in-memory fit), and the design is fixed from the sample with
   those levels;
3. if the formula has ``within()``/``between()`` terms, a pass gathers their group
   means (:mod:`reml_engine.scaleout.group_means`);
4. each chunk gives a :class:`~reml_engine.scaleout.encoding.PartialStats`; they are
   merged in a tree (:func:`~reml_engine.scaleout.encoding.merged_statistics`), and the
   fit is the in-memory chain from there (:func:`~reml_engine.core.fitting.fit_statistics`);
5. if a level turns out to occur in no complete row (an unused category, or a value
   seen only in rows dropped for missing values), the statistics pass is run again
   without it, as an in-memory fit (and lme4) never has it.

Labels (group ids, factor levels) are matched across chunks by the canonical label
rule of :mod:`reml_engine.frontend.groups`: a reader that types a column as integers in one
chunk and as text in the next (``read_csv(chunksize=)``), or as floats where a chunk
has a missing value, still gives one group per id, as reading the whole file would.
What cannot be matched is refused with the chunks named (``check_label_kinds``).

Examples
--------
>>> import pandas as pd, reml_engine as rl
>>> from reml_engine.scaleout.chunked import lmer_chunks
>>> df = rl.load_seed()
>>> m = lmer_chunks("y ~ x + (1|f)", [df.iloc[:5], df.iloc[5:]])
>>> round(m.criterion, 4)
16.1726
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..core.fitting import fit_statistics
from ..core.results import LmerFit
from ..core.statistics import PILOT_ROWS, GroupStats, SufficientStatistics, compute_group_stats, pilot_shift
from ..core.terms_results import TermsFit
from ..errors import ModelDataError
from ..frontend.data_checks import check_response_varies
from ..frontend.design import check_array_shapes
from ..frontend.groups import factorize_groups
from ..progress import ReadProgress, check_progress
from .encoding import (
    ChunkEncoding,
    FormulaColumns,
    PartialStats,
    TransformedPass,
    drop_incomplete,
    merge_levels,
    merged_statistics,
    observed_levels,
    require_columns,
    sorted_levels,
)
from .group_means import GroupSums
from .terms import TermsPass, fit_terms_total

#: Rows per chunk when a memory-mapped array is read chunk by chunk: about 8 MB per
#: float64 column, small next to any machine's memory, large enough for the kernels.
CHUNK_ROWS = 1_000_000

#: Statistics of this many chunks (or Dask partitions) are merged together in one step of
#: the tree.
MERGE_FANOUT = 8



# -- the driver, shared with Dask --------------------------------------------------------


class ChunkSource:
    """Where chunks come from. Subclasses: :class:`IteratorSource`, Dask's source.

    ``columns``/``dtypes`` describe the data; :meth:`first_complete` finds the sample
    and names the chunk it came from; :meth:`map_reduce` applies a per-chunk function
    ``per_chunk(chunk, where)`` to every chunk (``where`` names the chunk in messages)
    and merges the results in reading order; ``rereadable`` says whether the data can be
    read more than once.
    """

    rereadable: bool = True
    columns: pd.Index
    dtypes: pd.Series

    def first_complete(self, used: tuple[str, ...]) -> tuple[pd.DataFrame, str] | None:
        raise NotImplementedError

    def map_reduce(self, per_chunk: Callable, merge_all: Callable, what: str):
        raise NotImplementedError


def fit_source(formula: str, source: ChunkSource, REML: bool = True, na_action: str = "omit",
               levels: dict | None = None, *, dialect: str = "python", contrasts: dict | None = None,
               weights: str | None = None, offset: str | None = None) -> LmerFit | TermsFit:
    """Fit ``formula`` from a :class:`ChunkSource`: levels pass, encoding, statistics, fit.

    ``dialect`` and ``contrasts`` are those of :func:`reml_engine.lmer`: every chunk is
    encoded from the one translated formula. Several random terms, ``weights`` or an
    offset (``offset(z)`` or ``offset``, column names) are fitted by the several-terms
    engine from the chunks' :class:`~reml_engine.scaleout.terms.TermsChunkStats`
    (:mod:`reml_engine.scaleout.terms`) into a ``TermsFit``.
    """
    if na_action not in ("omit", "raise"):
        raise ValueError(f"na_action must be 'omit' or 'raise', got {na_action!r}")
    # The columns used do not depend on the contrasts: they are checked (and warned
    # about) once, with the sample.
    columns = FormulaColumns.from_sample(formula, source.columns, None, source.dtypes, dialect=dialect,
                                         weights=weights, offset=offset)
    found_sample = source.first_complete(columns.used)
    if found_sample is None:
        raise ModelDataError(f"no complete observations in the variables {list(columns.used)}: nothing to fit")
    sample, sample_where = found_sample
    columns = FormulaColumns.from_sample(formula, source.columns, sample, source.dtypes, dialect=dialect,
                                         contrasts=contrasts, weights=weights, offset=offset)
    given = {c: tuple(v) for c, v in (levels or {}).items()}
    declared = {**columns.declared, **{c: v for c, v in given.items() if c in columns.categorical}}
    columns = replace(columns, declared=declared)
    gathered: dict = {}
    if columns.undeclared:
        if not source.rereadable:
            raise ModelDataError(
                f"categorical column(s) {', '.join(map(repr, columns.undeclared))} need their levels before the "
                "chunks are encoded, and a one-shot iterator cannot be read twice: pass levels={column: [...]}, "
                "make them pandas Categoricals, or pass a function that returns a fresh iterator"
            )
        found = source.map_reduce(_LevelsOf(columns.undeclared), merge_levels, "levels")
        gathered = {c: sorted_levels(found.get(c, pd.Index([]))) for c in columns.undeclared}
        # Categoricals whose categories Dask has not read keep their order, that of the
        # partitions, as pandas reading the whole file would.
        gathered.update({c: tuple(found[c]) for c in columns.undeclared if _is_categorical(source.dtypes[c])})
    all_levels = {**declared, **gathered}
    encoding = ChunkEncoding.from_sample(columns, all_levels, sample, na_action, sample_where)
    group_means = _group_means(encoding, source)
    encoding = encoding.with_group_means(group_means)
    total = source.map_reduce(_per_chunk(encoding, sample), PartialStats.merge_all, "statistics")
    # A level no complete row uses is not a level of the in-memory fit: it drops the
    # incomplete rows first, and unused categories as lme4 does. Encode again without it.
    if any(not flags.all() for flags in total.seen.values()):
        kept = {c: tuple(np.asarray(all_levels[c], dtype=object)[total.seen[c]]) for c in columns.categorical}
        encoding = encoding.with_levels({**all_levels, **kept}, sample).with_group_means(group_means)
        total = source.map_reduce(_per_chunk(encoding, sample), PartialStats.merge_all, "statistics")
    if columns.several_terms:
        return fit_terms_total(encoding, total, REML, source.dtypes)
    reread = None
    if source.rereadable:
        # The rank check and the conditioning may ask for the statistics in another basis
        # (nearly collinear columns: x*f with x far from 0), as an in-memory fit does.
        def reread(shift: np.ndarray, transform: np.ndarray):
            again = source.map_reduce(TransformedPass(encoding, shift, transform), PartialStats.merge_all,
                                      "statistics")
            return again.group_stats
    fit = fit_statistics(merged_statistics(encoding, total, reread), REML)
    # The rows are gone; how they were encoded stays, for predict, simulate and anova.
    return replace(fit, fixed_encoding=encoding.fixed_encoding(source.dtypes))


def _group_means(encoding: ChunkEncoding, source: ChunkSource) -> dict:
    """The states of ``within()``/``between()`` from a first pass over all chunks (none
    when the formula has no such term); see :mod:`reml_engine.scaleout.group_means`."""
    transforms = encoding.group_mean_transforms
    if not transforms:
        return {}
    if not source.rereadable:
        raise ModelDataError(
            f"{', '.join(transforms)} need the group means of all rows before the chunks are encoded, a first pass "
            "that a one-shot iterator cannot give: pass a list of chunks or a function that returns a fresh "
            "iterator, or compute the columns beforehand"
        )
    return source.map_reduce(encoding.group_sums, GroupSums.merge_all, "group means").states()


def _per_chunk(encoding: ChunkEncoding, sample: pd.DataFrame) -> Callable:
    """The function mapped over the chunks: one term's statistics, or the several-terms
    engine's (:class:`~reml_engine.scaleout.terms.TermsPass`)."""
    if encoding.columns.several_terms:
        return TermsPass.from_sample(encoding, sample)
    return encoding.partial_stats


def _is_categorical(dtype) -> bool:
    return isinstance(dtype, pd.CategoricalDtype)


@dataclass(frozen=True)
class _LevelsOf:
    """Picklable per-chunk function of the levels pass."""

    columns: tuple[str, ...]

    def __call__(self, chunk: pd.DataFrame, where: str = "a chunk") -> dict[str, pd.Index]:
        if len(chunk) == 0:
            return {}
        require_columns(chunk, self.columns, where)
        return observed_levels(chunk, self.columns)


def tree_merge(results: Iterable, merge_all: Callable, fanout: int = MERGE_FANOUT):
    """Merge a stream of partial results in a tree, holding ``O(fanout log k)`` of them.

    Each level of the tree keeps at most ``fanout`` results; when a level fills up, they
    are merged into one result of the next level (as carries in a counter).
    """
    levels: list[list] = []
    for result in results:
        carry = result
        depth = 0
        while True:
            if depth == len(levels):
                levels.append([])
            levels[depth].append(carry)
            if len(levels[depth]) < fanout:
                break
            carry = merge_all(levels[depth])
            levels[depth] = []
            depth += 1
    rest = [r for level in levels for r in level]
    if not rest:
        return merge_all([])
    return rest[0] if len(rest) == 1 else merge_all(rest)


class IteratorSource(ChunkSource):
    """Chunks from an iterable of DataFrames, or from a function returning such an iterator.

    A list, a function or a structured (memory-mapped) array can be read several times;
    a generator or a ``read_csv(..., chunksize=...)`` reader only once: the chunks read
    while looking for the sample are kept and replayed in the statistics pass. Chunks
    are named in messages by their number and rows ("chunk 3 (rows 2001-3000)").
    """

    def __init__(self, chunks, progress="auto", chunk_rows: int = CHUNK_ROWS):
        self.progress = check_progress(progress)
        self._buffer: list[pd.DataFrame] = []
        #: Rows per pass, when known before reading (progress lines give the time left).
        self.total_rows: int | None = None
        if isinstance(chunks, np.ndarray):
            array = chunks
            self._fresh = lambda: array_chunks(array, chunk_rows)
            self.total_rows = len(array)
        elif callable(chunks):
            self._fresh = chunks
        elif isinstance(chunks, (list, tuple)):
            self._fresh = lambda: iter(chunks)
            self.total_rows = sum(len(chunk) for chunk in chunks if hasattr(chunk, "__len__")) or None
        else:
            self._iterator = iter(chunks)
            self._fresh = self._replay
            self.rereadable = False
        first = self._first_rows()
        self.columns = first.columns
        self.dtypes = first.dtypes

    def _first_rows(self) -> pd.DataFrame:
        """The first chunk with rows (empty chunks say nothing about the columns)."""
        for chunk in self._look_ahead():
            if len(chunk):
                return chunk
        raise ModelDataError("the chunks hold no rows: no observations to fit")

    def _replay(self) -> Iterator[pd.DataFrame]:
        while self._buffer:
            yield self._buffer.pop(0)
        for chunk in self._iterator:
            yield _as_frame(chunk)

    def _look_ahead(self) -> Iterator[pd.DataFrame]:
        """Chunks for the sample search; a one-shot iterator's are kept for later."""
        if self.rereadable:
            for chunk in self._fresh():
                yield _as_frame(chunk)
            return
        yield from list(self._buffer)
        for chunk in self._iterator:
            chunk = _as_frame(chunk)
            self._buffer.append(chunk)
            yield chunk

    def first_complete(self, used):
        for where, chunk in _named(self._look_ahead()):
            if not len(chunk):
                continue
            require_columns(chunk, used, where)
            clean = drop_incomplete(chunk, used)[0]
            if len(clean):
                return clean, where
        return None

    def map_reduce(self, per_chunk, merge_all, what):
        tracker = ReadProgress(self.progress, what, self.total_rows)

        def results() -> Iterator:
            for where, chunk in _named(self._fresh()):
                yield per_chunk(chunk, where)
                tracker.update(len(chunk))

        total = tree_merge(results(), merge_all)
        tracker.close()
        return total


def _named(chunks) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each chunk as a frame, with its name for messages: number and rows (from 1)."""
    start = 0
    for number, chunk in enumerate(chunks, start=1):
        chunk = _as_frame(chunk)
        rows = f"rows {start + 1}-{start + len(chunk)}" if len(chunk) else "no rows"
        start += len(chunk)
        yield f"chunk {number} ({rows})", chunk


def _as_frame(chunk) -> pd.DataFrame:
    if isinstance(chunk, pd.DataFrame):
        return chunk
    if isinstance(chunk, np.ndarray) and chunk.dtype.names:
        return pd.DataFrame(chunk)
    raise ModelDataError(f"a chunk must be a pandas DataFrame, got {type(chunk).__name__}")


def array_chunks(array: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """DataFrames of ``chunk_rows`` rows from a structured (e.g. memory-mapped) array."""
    if not array.dtype.names:
        raise ModelDataError(
            "a NumPy array given as data must be structured (named fields, e.g. a np.memmap with a record "
            "dtype); for plain X, y and group arrays use reml_engine.scaleout.chunked.fit_arrays"
        )
    for start in range(0, len(array), chunk_rows):
        yield pd.DataFrame(np.asarray(array[start:start + chunk_rows]))


def lmer_chunks(formula: str, chunks, REML: bool = True, na_action: str = "omit",
                levels: dict | None = None, progress="auto", chunk_rows: int = CHUNK_ROWS, *,
                dialect: str = "python", contrasts: dict | None = None, weights: str | None = None,
                offset: str | None = None) -> LmerFit | TermsFit:
    """Fit ``formula`` chunk by chunk; peak memory is that of one chunk.

    Parameters
    ----------
    formula : str
        As for :func:`reml_engine.lmer`.
    chunks : iterable of DataFrame, callable, or structured array
        A list of DataFrames; a function returning a fresh iterator of them (needed for
        categorical columns whose levels are not declared: they are gathered in a first
        pass); a one-shot iterator (e.g. ``pd.read_csv(path, chunksize=...)``); or a
        structured NumPy array such as a ``np.memmap`` with a record dtype, read
        ``chunk_rows`` rows at a time.
    REML, na_action :
        As for :func:`reml_engine.lmer`; rows with missing values are dropped with one
        warning that counts them over all chunks.
    levels : dict, optional
        ``{column: levels}`` for categorical columns, in the order wanted.
    progress : bool, "auto" or callable
        See :class:`~reml_engine.progress.ReadProgress`: lines on stderr with the
        rows read, and the share done and the time left when the rows are known
        beforehand (a list of chunks, an array).
    dialect, contrasts :
        As for :func:`reml_engine.lmer`.
    weights, offset : str, optional
        lmer's prior weights and offset, as the names of columns of every chunk.

    Returns
    -------
    LmerFit or TermsFit
        The same fit as :func:`reml_engine.lmer` on the concatenated chunks, with
        ``ranef`` from the group statistics; ``fitted``/``resid`` are None (the rows are
        not kept). ``predict(newdata)``, ``simulate(newdata=)``, ``anova`` (ML refit
        and type III) and ``confint`` work from the statistics and the encoding.
        Several random terms (nested or crossed), weights or an offset give a
        ``TermsFit`` (:mod:`reml_engine.scaleout.terms`).
    """
    source = IteratorSource(chunks, progress=progress, chunk_rows=chunk_rows)
    return fit_source(formula, source, REML=REML, na_action=na_action, levels=levels, dialect=dialect,
                      contrasts=contrasts, weights=weights, offset=offset)


@dataclass(frozen=True)
class _ArrayRows:
    """Picklable per-chunk function for :func:`fit_arrays`: rows ``start:stop`` of the arrays."""

    X: np.ndarray
    y: np.ndarray
    groups: object
    names: tuple[str, ...]
    group_name: str
    shift: np.ndarray
    #: A second pass: the statistics of ``([X | y] - shift) transform``.
    transform: np.ndarray | None = None

    def __call__(self, bounds: tuple[int, int]) -> PartialStats:
        start, stop = bounds
        X = np.asarray(self.X[start:stop], dtype=np.float64)
        y = np.asarray(self.y[start:stop], dtype=np.float64)
        _check_rows_finite(X, y, self.names, start)
        try:
            groups = factorize_groups(self.groups[start:stop], self.group_name)
        except ValueError as err:
            raise ModelDataError(f"rows {start + 1}-{stop}: {err}") from None
        stats = compute_group_stats(X, y, groups, self.shift, exact_within=False, transform=self.transform)
        return PartialStats(stats, stop - start)


def _check_rows_finite(X: np.ndarray, y: np.ndarray, names, start: int) -> None:
    """NaN and infinite values, counted and told apart, in the first column that has any.

    :func:`fit_arrays` fits every row it is given (it has no formula to say which
    variables matter), so a missing value is an error, not a dropped row.
    """
    for values, name in [(y, "y"), *((X[:, j], f"column {names[j]!r} of X") for j in range(X.shape[1]))]:
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        n_nan = int(np.isnan(values).sum())
        n_inf = int(bad.sum()) - n_nan
        counts = " and ".join(text for count, text in [(n_nan, f"{n_nan} missing (NaN)"), (n_inf, f"{n_inf} infinite")]
                              if count)
        first = start + int(np.flatnonzero(bad)[0]) + 1
        raise ModelDataError(
            f"{name} has {counts} value(s) in rows {start + 1}-{start + len(values)}, the first at row {first}; "
            "fit_arrays fits every row it is given: remove those rows first"
        )


def _as_rows(values, what: str):
    """An array-like that can be sliced by rows: arrays (memory-mapped ones stay lazy) as
    they are, pandas objects as their values, lists and tuples as NumPy arrays."""
    if isinstance(values, pd.DataFrame):
        return values.to_numpy()
    if isinstance(values, (pd.Series, pd.Index)):
        return values.array if what == "groups" else values.to_numpy()
    if isinstance(values, (np.ndarray, pd.Categorical)) or (hasattr(values, "ndim") and hasattr(values, "__getitem__")):
        return values
    try:
        return np.asarray(values, dtype=None if what == "groups" else np.float64)
    except (TypeError, ValueError) as err:
        raise ModelDataError(f"{what} must be an array (or a list of numbers), got {type(values).__name__}: {err}") \
            from None


def fit_arrays(X, y, groups, REML: bool = True, names=None, chunk_rows: int = CHUNK_ROWS,
               progress="auto") -> LmerFit:
    """:func:`reml_engine.fit` for arrays too large for memory (e.g. ``np.memmap``).

    The arrays are read ``chunk_rows`` rows at a time; only one chunk (converted to
    float64) and the per-group statistics are in memory at once.

    Parameters
    ----------
    X : array (n, p), e.g. ``np.memmap``, or a list of rows
        Fixed-effect design including the intercept column if wanted.
    y : array (n,) or list
    groups : array (n,) or list
        Group labels (integers are the cheapest), compared by the canonical label rule
        of :mod:`reml_engine.frontend.groups`.
    REML, names :
        As for :func:`reml_engine.fit`.
    chunk_rows : int
    progress : bool, "auto" or callable
        See :class:`~reml_engine.progress.ReadProgress`: lines on stderr with the
        rows read, and the share done and the time left when the rows are known
        beforehand (a list of chunks, an array).

    Examples
    --------
    >>> import numpy as np, reml_engine as rl
    >>> df = rl.load_seed()
    >>> X = np.column_stack([np.ones(len(df)), df["x"]])
    >>> m = fit_arrays(X, df["y"].to_numpy(), df["f"].to_numpy(), names=["(Intercept)", "x"], chunk_rows=5)
    >>> round(m.criterion, 4)
    16.1726
    """
    progress = check_progress(progress)
    group_name = str(getattr(groups, "name", None) or "group")
    X, y, groups = _as_rows(X, "X"), _as_rows(y, "y"), _as_rows(groups, "groups")
    X, names = check_array_shapes(X, y, groups, names)
    for values, what in ((X, "X"), (y, "y")):
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool) \
                or np.issubdtype(values.dtype, np.complexfloating):
            raise ModelDataError(f"{what} must hold real numbers, got dtype {values.dtype}")
    if not isinstance(chunk_rows, (int, np.integer)) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    n = len(y)
    if n == 0:
        raise ModelDataError("the arrays are empty: no observations to fit")
    head = slice(0, min(n, PILOT_ROWS))
    X_head = np.asarray(X[head], dtype=np.float64)
    # A column of ones, if any, is found by criterion_problem from the merged column ranges. (A
    # non-finite value in the head is reported by the first chunk, before the shift is used.)
    with np.errstate(invalid="ignore", over="ignore"):
        shift = pilot_shift(X_head, np.asarray(y[head], dtype=np.float64), None)
    per_chunk = _ArrayRows(X, y, groups, names, group_name, shift)

    def read(rows: _ArrayRows) -> GroupStats:
        tracker = ReadProgress(progress, "statistics", n)

        def results() -> Iterator[PartialStats]:
            for start in range(0, n, chunk_rows):
                stop = min(start + chunk_rows, n)
                yield rows((start, stop))
                tracker.update(stop - start)

        total = tree_merge(results(), PartialStats.merge_all)
        tracker.close()
        return total.group_stats

    def reread(shift: np.ndarray, transform: np.ndarray) -> GroupStats:
        return read(replace(per_chunk, shift=shift, transform=transform))

    stats = read(per_chunk)
    check_response_varies(float(stats.lo[-1]), float(stats.hi[-1]), stats.nobs, "y")
    statistics = SufficientStatistics(stats, names, None, group_name=group_name, reread=reread)
    return fit_statistics(statistics, REML)
