"""Numeric formulas from local Parquet files: Arrow buffers straight into the kernel.

``rl.lmer("y ~ x1 + x2 + (1|g)", data="data/*.parquet")`` with every fixed term a plain
numeric column and one grouping column needs neither pandas nor Dask between the file
and the one-pass kernel: each piece (the row groups of :func:`~reml_engine.scaleout.dask._pieces`,
the partitions of the general path) is decoded by pyarrow on a small thread pool,
its columns are read as NumPy arrays (Arrow's buffers, not copied), and the
single-threaded kernel (which releases the GIL) reduces them on the same thread, where
they are: no design matrix and no array of group codes is built for it. Integer group
ids whose range the footers record (and which is at most
:data:`~reml_engine.frontend.groups.DENSE_SPAN_FACTOR` times the rows) are coded against
one table for all files, ``id - smallest id`` (by the kernel, block by block), so that
merging the pieces is adding arrays; other ids and text labels are coded per piece by
the canonical label rule and merged as in the general path.

Everything the general path (:func:`~reml_engine.scaleout.dask.parquet_source` and
:func:`~reml_engine.scaleout.chunked.fit_source`) checks is checked here in the same
words (unreadable pieces, the footer ranges, missing values dropped with one warning
or refused, non-finite values named), the sample and its shift are the same rows,
the kernel sees the same rows in the same order, and the pieces' statistics are added
in the same tree as Dask's (:data:`~reml_engine.scaleout.chunked.MERGE_FANOUT` at a
time): the fit is the general path's, to the last bit. What this path does not take
(see :func:`numeric_plan`) goes through the general path.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice

import numpy as np
import pandas as pd

from ..core.fitting import fit_statistics
from ..core.kernels import group_sums_and_cross_of_columns
from ..core.results import LmerFit
from ..core.statistics import PILOT_ROWS, GroupStats, compute_group_stats, merge_ranges
from ..errors import ModelDataError
from ..frontend.data_checks import check_design_finite, check_response_finite, refuse_missing
from ..frontend.fast_design import simple_terms
from ..frontend.formula import FORMULAIC_INTERCEPT
from ..frontend.groups import DENSE_SPAN_FACTOR, EXACT_FLOAT_INTEGER, GroupCodes, factorize_groups
from ..progress import ReadProgress
from .chunked import MERGE_FANOUT
from .encoding import (
    ChunkEncoding,
    FormulaColumns,
    PartialStats,
    _checked_from_ranges,
    located,
    merged_statistics,
    numeric_design_columns,
)

#: Pieces decoded and reduced at once: one per core (pyarrow and the kernel both
#: release the GIL, so the threads overlap).
READ_THREADS = os.cpu_count() or 1

#: Pieces submitted ahead of the one being merged, per thread.
PIECES_AHEAD = 2


@dataclass(frozen=True)
class DenseIds:
    """Integer group ids coded as ``id - low`` against one table of ``span`` slots, shared
    by every piece (``low`` and ``span`` from the footers' statistics)."""

    low: int
    span: int


@dataclass(frozen=True)
class NumericPlan:
    """What the fast path reads: the pieces, the formula's columns and how to code the groups.

    ``numeric``: the fixed part's columns (in ``used``), ``group``: the grouping column,
    ``dense``: the shared table of integer ids, or None (ids coded per piece).
    """

    pieces: tuple
    used: tuple[str, ...]
    response: str
    group: str
    group_name: str
    dense: DenseIds | None
    dtypes: pd.Series
    rows: int
    #: Each file's footer (``pyarrow.parquet.FileMetaData``), by path.
    footers: dict


def numeric_plan(plan, columns: FormulaColumns) -> NumericPlan | None:
    """The fast path's plan for a checked Parquet plan (see
    :func:`~reml_engine.scaleout.dask.parquet_plan`), or None when it cannot take it.

    It takes local files whose used columns have one Arrow type in every file; a formula
    of plain names (``y ~ x1 + x2``, ``0``/``1``/``-1`` allowed) of integer or float
    columns; one random intercept ``(1|g)`` of an integer or text column; no weights
    and no offset. Anything else (categorical or boolean columns, transforms,
    interactions, ``a:b`` groups, several random terms, types that differ between
    files, remote files) goes through the general path.
    """
    import pyarrow as pa

    from .dask import _is_local

    parsed = columns.parsed
    if not _is_local(plan.fs) or columns.several_terms or plan.casts or len(parsed.group_columns) != 1:
        return None
    terms = simple_terms(parsed.fixed)
    if terms is None:
        return None
    response, names = terms
    group = parsed.group_columns[0]
    if set(columns.used) != {response, *names, group} or group in {response, *names}:
        return None
    schemas = [footer.schema.to_arrow_schema() for footer in plan.footers.values()]
    types = {c: {str(schema.field(c).type) for schema in schemas} for c in columns.used}
    if any(len(found) != 1 for found in types.values()):
        return None
    first = schemas[0]
    for column in (response, *names):
        kind = first.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)) or pa.types.is_float16(kind):
            return None
    group_type = first.field(group).type
    if pa.types.is_integer(group_type):
        dense = _dense_ids(plan, group)
    elif pa.types.is_string(group_type) or pa.types.is_large_string(group_type):
        dense = None
    else:
        return None
    rows = sum(footer.num_rows for footer in plan.footers.values())
    return NumericPlan(tuple(plan.pieces), tuple(columns.used), response, group, parsed.group_name, dense,
                       plan.dtypes, rows, plan.footers)


def _dense_ids(plan, group: str) -> DenseIds | None:
    """One table for the integer ids of every file, when every row group's footer records
    their range and it is small (as the in-memory coding's table lookup asks)."""
    low = high = None
    rows = 0
    for footer in plan.footers.values():
        index = footer.schema.names.index(group)
        for g in range(footer.num_row_groups):
            row_group = footer.row_group(g)
            rows += row_group.num_rows
            if row_group.num_rows == 0:
                continue
            stats = row_group.column(index).statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == row_group.num_rows:
                    continue  # only missing ids: nothing to code
                return None
            low = stats.min if low is None else min(low, stats.min)
            high = stats.max if high is None else max(high, stats.max)
    if low is None:
        return None
    # Ids past 2**53 are coded per piece, as in the general path (where a missing id
    # turns the column into floats, as here): no table for them.
    if max(abs(low), abs(high)) >= EXACT_FLOAT_INTEGER:
        return None
    span = int(high) - int(low) + 1
    if span > DENSE_SPAN_FACTOR * rows + 1024:
        return None
    return DenseIds(int(low), span)


@dataclass(frozen=True)
class _Piece:
    """One piece's complete rows as arrays, and its bookkeeping.

    ``columns`` are the design's columns as float64 arrays (Arrow's buffers when they
    are float64 already: no design matrix is built), without the intercept's ones when
    ``intercept`` says where they go (the kernel
    :func:`~reml_engine.core.kernels.group_sums_and_cross_of_columns` needs none);
    :meth:`design` is the whole design. The group code of row ``i`` is
    ``ids[i] - id_low`` against ``levels`` (see :meth:`NumericParquetPass.coded`).
    """

    columns: tuple
    y: np.ndarray
    ids: np.ndarray
    id_low: int
    levels: pd.Index
    n_rows: int
    missing: dict
    n_dropped: int
    name: str
    intercept: int | None = None

    def design(self) -> np.ndarray:
        """The design with its intercept column (Fortran order, as the general path's)."""
        X = np.empty((len(self.y), len(self.columns) + (self.intercept is not None)), dtype=np.float64, order="F")
        kept = [j for j in range(X.shape[1]) if j != self.intercept]
        for j, values in zip(kept, self.columns, strict=True):
            X[:, j] = values
        if self.intercept is not None:
            X[:, self.intercept] = 1.0
        return X


class NumericParquetPass:
    """Read, check and reduce the pieces of a :class:`NumericPlan` (see the module docstring)."""

    def __init__(self, plan: NumericPlan, na_action: str, progress):
        self.plan = plan
        self.na_action = na_action
        self.progress = progress
        if plan.dense is not None:
            self.dense_levels = pd.Index(np.arange(plan.dense.low, plan.dense.low + plan.dense.span, dtype=np.int64),
                                         name=plan.group_name)

    # -- reading ------------------------------------------------------------------

    def read(self, index: int, check: bool = True):
        """Piece ``index`` as an Arrow table of the used columns, after the footer range
        check (``check=False``: the caller checks, see :meth:`check_footer`); errors
        name the piece (as the general path's reader)."""
        import pyarrow.parquet as pq

        from .dask import _one_line

        piece = self.plan.pieces[index]
        try:
            # The footer read by the plan: not parsed again for every piece. Memory-mapped:
            # the pages are decompressed from the page cache where they are, without a
            # copy into buffers first (a fifth less CPU for the read; the mapped pages
            # are the kernel's to evict, so files larger than memory still read).
            parquet = pq.ParquetFile(piece.path, memory_map=True, metadata=self.plan.footers[piece.path])
            # One thread per piece: the pieces themselves run on READ_THREADS threads.
            table = parquet.read_row_groups(list(piece.row_groups), columns=list(self.plan.used), use_threads=False)
        except Exception as err:
            raise ModelDataError(f"{piece.name} cannot be read ({_one_line(err)}); the file may be corrupted") from None
        if check:
            self.check_footer(table, index)
        return table

    def check_footer(self, table, index: int, ranges: dict | None = None) -> None:
        """The general path's footer range check of a piece (``ranges``: the
        ``{column: (min, max)}`` known already)."""
        from .dask import _check_footer_ranges

        piece = self.plan.pieces[index]
        _check_footer_ranges(self.plan.footers[piece.path], table, piece, ranges)

    def known_ranges(self, table, group_range: tuple[int, int] | None, names: tuple[str, ...],
                     stats: GroupStats) -> dict:
        """The raw ranges the kernel found (``stats.lo``/``hi``, of the float columns: an
        integer column past 2**53 would not be its floats' range) and the group ids'
        (``group_range``, see :meth:`checked_range`)."""
        import pyarrow as pa

        columns = [*names, self.plan.response]
        ranges = {column: (float(stats.lo[j]), float(stats.hi[j])) for j, column in enumerate(columns)
                  if column != FORMULAIC_INTERCEPT and pa.types.is_floating(table.column(column).type)}
        if group_range is not None:
            ranges[self.plan.group] = group_range
        return ranges

    def complete_rows(self, table, names: tuple[str, ...], index: int, nan: bool = True) -> _Piece:
        """The table's complete rows: the design's columns (formulaic's ``names``, as the
        general path's numeric design, without the intercept's ones), ``y`` and the group
        ids.

        ``nan=False`` drops the rows with nulls only, not those with NaN: for a first try
        whose statistics, when finite, prove there was no NaN (see :meth:`statistics`).
        """
        plan = self.plan
        name = plan.pieces[index].name
        arrays = {c: _numpy(table.column(c)) for c in plan.used}
        masks = {c: _missing(table.column(c), arrays[c], nan) for c in plan.used}
        found = {c: m for c, m in masks.items() if m is not None and m.any()}
        n_rows = table.num_rows
        n_bad, missing = 0, {}
        if found:
            bad = np.zeros(n_rows, dtype=bool)
            for mask in found.values():
                bad |= mask
            n_bad = int(bad.sum())
            missing = {c: int(m.sum()) for c, m in found.items()}
            if self.na_action == "raise":
                with located(name):
                    refuse_missing(n_bad, missing)
            keep = ~bad
            arrays = {c: None if values is None else values[keep] for c, values in arrays.items()}
        intercept = names.index(FORMULAIC_INTERCEPT) if FORMULAIC_INTERCEPT in names else None
        columns = tuple(_kernel_column(arrays[column]) for column in names if column != FORMULAIC_INTERCEPT)
        ids, id_low, levels = self._group_ids(arrays[plan.group], table, None if not found else ~bad)
        return _Piece(columns, _kernel_column(arrays[plan.response]), ids, id_low, levels, n_rows, missing, n_bad,
                      name, intercept)

    def _group_ids(self, values, table, keep) -> tuple[np.ndarray, int, pd.Index]:
        """The rows' group ids (int64), the id of code 0 and the levels: the shared
        table's, or codes and levels of the piece's own."""
        dense = self.plan.dense
        if dense is not None:
            # Ids with a missing one among them were read as floats (integral, below 2**53).
            return np.ascontiguousarray(values, dtype=np.int64), dense.low, self.dense_levels
        if values is None:  # text: coded per piece by the canonical label rule
            # As the general path reads them: the table with its pandas metadata.
            labels = table.select([self.plan.group]).to_pandas()[self.plan.group]
            labels = labels if keep is None else labels[keep]
            groups = factorize_groups(labels.reset_index(drop=True), self.plan.group_name)
        else:
            groups = factorize_groups(values, self.plan.group_name)
        return np.ascontiguousarray(groups.codes, dtype=np.int64), 0, groups.levels

    def group_codes(self, piece: _Piece, table, index: int) -> tuple[GroupCodes, tuple[int, int] | None]:
        """The piece's group codes, checked (see :meth:`checked_range`), and the range of
        its ids on the shared table."""
        codes = np.subtract(piece.ids, piece.id_low, dtype=np.int64)
        if not len(codes):
            return GroupCodes(codes, piece.levels), None
        return GroupCodes(codes, piece.levels), self.checked_range(table, index, int(codes.min()), int(codes.max()))

    def checked_range(self, table, index: int, low: int, high: int) -> tuple[int, int] | None:
        """The smallest and largest id of a piece whose codes run from ``low`` to
        ``high``, when the shared table codes them (else None); an error when the table
        does not cover them."""
        dense = self.plan.dense
        if dense is None:
            return None
        if low < 0 or high >= dense.span:
            # The kernel would write outside the table: the footer check names the
            # column and the range; this guards against ids it does not cover.
            self.check_footer(table, index)
            raise ModelDataError(f"{self.plan.pieces[index].name}: column {self.plan.group!r} holds ids outside "
                                 "the range its footer records: the file is corrupted; rewrite it from its source")
        return low + dense.low, high + dense.low

    # -- the passes -----------------------------------------------------------------

    def sample(self, first_table) -> tuple[pd.DataFrame, str] | None:
        """The general path's sample: the first :data:`PILOT_ROWS` complete rows of the
        first piece that has any (``first_table``: the first piece, read already)."""
        for index, piece in enumerate(self.plan.pieces):
            table = first_table if index == 0 else self.read(index)
            frame = table.to_pandas() if table.num_rows <= PILOT_ROWS else _head_frame(table, self.plan.used)
            clean = frame.dropna()
            if len(clean):
                return clean.iloc[:PILOT_ROWS], piece.name
        return None

    def statistics(self, encode, shift=None, transform=None) -> tuple[ChunkEncoding | None, PartialStats | None]:
        """The encoding and the merged :class:`PartialStats` of every piece.

        ``encode(first_table)`` gives the encoding (or None to stop: the general path
        then fits); it runs on this thread while the pool reads the first pieces, whose
        reduction waits for it. ``shift``/``transform``: a second pass, as
        :class:`~reml_engine.scaleout.encoding.TransformedPass`.
        """
        pieces = self.plan.pieces
        ready = threading.Event()
        fixed: list = [None]

        def reduce(index: int, table=None) -> PartialStats | None:
            if table is None:
                table = self.read(index, check=False)
            name = pieces[index].name
            if table.num_rows == 0:
                return PartialStats(None, 0)
            ready.wait()
            encoding = fixed[0]
            if encoding is None:
                return None
            # On a worker thread the single-threaded kernel releases the GIL: the
            # threads overlap (as on Dask's threaded scheduler).
            threads = None if threading.current_thread() is threading.main_thread() else 1

            pass_shift = encoding.shift if shift is None else shift
            intercept = encoding.intercept_index
            # compute_group_stats' kernel to the last bit, without the ones, the counts'
            # scatter, a design matrix or an array of codes (see
            # group_sums_and_cross_of_columns).
            ones_free = transform is None and threads == 1 and intercept is not None and pass_shift[intercept] == 0.0

            def reduced(piece: _Piece, table) -> tuple[GroupStats | None, tuple[int, int] | None]:
                """The piece's statistics, and the range of its ids on the shared table."""
                if len(piece.y) == 0:
                    return None, None
                if ones_free:
                    # Its codes are checked by the kernel, which stops at the first block
                    # holding one outside the table (its statistics are then not used).
                    counts, sums, cross, lo, hi, code_range = group_sums_and_cross_of_columns(
                        (*piece.columns, piece.y), piece.ids, piece.id_low, len(piece.levels), pass_shift,
                        piece.intercept)
                    group_range = self.checked_range(table, index, int(code_range[0]), int(code_range[1]))
                    return GroupStats(piece.levels, counts, sums, cross, pass_shift, None, lo, hi), group_range
                groups, group_range = self.group_codes(piece, table, index)
                return compute_group_stats(piece.design(), piece.y, groups, pass_shift, exact_within=False,
                                           transform=transform, threads=threads), group_range

            names = encoding.numeric_columns
            # The footer check comes first, as in the general path's reader. Without nulls
            # (no rows dropped) and without a transform, it reads the ranges the kernel
            # finds, after it, instead of passing over the columns itself.
            from_kernel = transform is None and not any(table.column(c).null_count for c in self.plan.used)
            if not from_kernel:
                self.check_footer(table, index)
            # First without looking for NaN: finite statistics prove there is none (a NaN
            # makes its column's sums and cross-products NaN), saving a pass per column.
            piece = self.complete_rows(table, names, index, nan=False)
            stats, group_range = reduced(piece, table)
            if stats is not None and not (np.isfinite(stats.cross).all() and np.isfinite(stats.sums).all()):
                if from_kernel:
                    self.check_footer(table, index)
                    from_kernel = False
                piece = self.complete_rows(table, names, index)
                stats, group_range = reduced(piece, table)
            if from_kernel and stats is not None:
                self.check_footer(table, index, self.known_ranges(table, group_range, names, stats))
            del table
            if stats is None:
                return PartialStats(None, piece.n_rows, piece.missing, piece.n_dropped)
            with located(name):
                if transform is not None or not _checked_from_ranges(stats, encoding.column_names):
                    check_design_finite(piece.design(), encoding.column_names)
                    check_response_finite(piece.y, encoding.columns.parsed.response)
            return PartialStats(stats, piece.n_rows, piece.missing, piece.n_dropped)

        # A callable hears once per pass, as from the general path's Dask computation.
        tracker = ReadProgress(False if callable(self.progress) else self.progress, "statistics", self.plan.rows)
        merger = _DaskTree(self._merge_all)
        workers = min(READ_THREADS, len(pieces))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # A few pieces in flight at a time: memory holds a few pieces and their
            # statistics, however many files there are.
            upcoming = iter(range(1, len(pieces)))
            pending = deque()
            try:
                # Checked by its reduction, as every piece.
                first = pool.submit(self.read, 0, False)
                pending.extend(pool.submit(reduce, index) for index in islice(upcoming, PIECES_AHEAD * workers))
                try:
                    fixed[0] = encode(first.result())
                finally:
                    # The workers waiting for the encoding go on (or stop, without one).
                    ready.set()
                if fixed[0] is None:
                    return None, None
                pending.appendleft(pool.submit(reduce, 0, first.result()))
                del first
                while pending:
                    result = pending.popleft().result()
                    following = next(upcoming, None)
                    if following is not None:
                        pending.append(pool.submit(reduce, following))
                    merger.add(result)
                    tracker.update(result.n_rows)
            finally:
                # An error (or the general path taking over) stops the pieces not started.
                for future in pending:
                    future.cancel()
        tracker.close()
        total = merger.result()
        if callable(self.progress):
            self.progress(total.n_rows, len(pieces))
        return fixed[0], total

    def _merge_all(self, parts: list[PartialStats]) -> PartialStats:
        """:meth:`PartialStats.merge_all`, adding the shared table's arrays directly."""
        if self.plan.dense is None:
            return PartialStats.merge_all(parts)
        stats = [p.group_stats for p in parts if p.group_stats is not None]
        missing: dict = {}
        for part in parts:
            for column, count in part.missing.items():
                missing[column] = missing.get(column, 0) + count
        return PartialStats(_merge_dense(stats) if stats else None, sum(p.n_rows for p in parts), missing,
                            sum(p.n_dropped for p in parts))


def _merge_dense(stats: list[GroupStats]) -> GroupStats:
    """:func:`merge_group_stats` for statistics on one shared table of groups: the same
    additions in the same order (a group a part lacks adds its zeros), without matching
    labels."""
    if len(stats) == 1:
        return stats[0]
    first = stats[0]
    stats = [part.rebase(first.shift) for part in stats]
    counts = np.zeros(len(first.counts), dtype=np.int64)
    sums = np.zeros_like(first.sums)
    cross = np.zeros((first.q, first.q))
    for part in stats:
        counts += part.counts
        sums += part.sums
        cross += part.cross
    lo, hi = merge_ranges(stats)
    return GroupStats(first.levels, counts, sums, cross, first.shift.copy(), None, lo, hi)


def _compact(stats: GroupStats) -> GroupStats:
    """The shared table's groups that hold rows (the levels the general path has)."""
    held = stats.counts > 0
    return replace(stats, levels=stats.levels[held], counts=stats.counts[held], sums=stats.sums[held])


class _DaskTree:
    """Dask's merge tree (:meth:`~reml_engine.scaleout.dask.DaskSource.map_reduce`), fed in
    reading order: groups of :data:`MERGE_FANOUT` consecutive results are merged as soon
    as they are complete, and so on up; what is left is merged level by level at the
    end. The sums are added in the same order as there, so the fit is the same."""

    def __init__(self, merge_all):
        self.merge_all = merge_all
        self.levels: list[list] = []

    def add(self, result, depth: int = 0) -> None:
        if depth == len(self.levels):
            self.levels.append([])
        self.levels[depth].append(result)
        if len(self.levels[depth]) == MERGE_FANOUT:
            full, self.levels[depth] = self.levels[depth], []
            self.add(self.merge_all(full), depth + 1)

    def result(self):
        depth = 0
        while depth < len(self.levels):
            items = self.levels[depth]
            higher = any(self.levels[depth + 1:])
            if not higher and len(items) == 1:
                return items[0]
            if items:
                self.levels[depth] = []
                self.add(self.merge_all(items), depth + 1)
            depth += 1
        return self.merge_all([])


def _numpy(column) -> np.ndarray | None:
    """A numeric Arrow column as a NumPy array (missing values as NaN, integers then as
    floats, as pandas reads them); None for text."""
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    if column.null_count:
        return column.to_numpy()
    if column.num_chunks == 1:
        return column.chunk(0).to_numpy(zero_copy_only=True)
    return column.to_numpy()


def _kernel_column(values: np.ndarray) -> np.ndarray:
    """A column as the kernel reads it: float64, contiguous and read-only, as Arrow's
    own buffers are (so that every column of the kernel's tuple has one type); no copy
    when it is one already."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if values.flags.writeable:
        values = values.view()
        values.flags.writeable = False
    return values


def _missing(column, values: np.ndarray | None, nan: bool = True) -> np.ndarray | None:
    """Rows where the column is missing (null, or with ``nan`` NaN as pandas counts it);
    None when none."""
    if nan and values is not None and values.dtype.kind == "f":
        return np.isnan(values)
    if column.null_count:
        return column.is_null().to_numpy(zero_copy_only=False)
    return None


def _head_frame(table, used) -> pd.DataFrame:
    """The first rows of a table with at least :data:`PILOT_ROWS` complete ones (or all of
    it), as pandas: the sample without converting the whole piece."""
    rows = PILOT_ROWS
    while True:
        head = table.slice(0, rows).select(list(used)).to_pandas()
        if rows >= table.num_rows or len(head.dropna()) >= PILOT_ROWS:
            return head
        rows *= 4


def fit_numeric(formula: str, columns: FormulaColumns, numeric: NumericPlan, REML: bool = True,
                na_action: str = "omit", progress="auto", *, dialect: str = "python",
                contrasts: dict | None = None) -> LmerFit | None:
    """The fit of :func:`~reml_engine.scaleout.dask.lmer_dask` for a :class:`NumericPlan`,
    or None when the sample shows the formula needs formulaic after all (the general
    path then fits it)."""
    if na_action not in ("omit", "raise"):
        raise ValueError(f"na_action must be 'omit' or 'raise', got {na_action!r}")
    reader = NumericParquetPass(numeric, na_action, progress)

    def encode(first_table) -> ChunkEncoding | None:
        # The encoding of the general path, from the same sample rows.
        found = reader.sample(first_table)
        if found is None:
            raise ModelDataError(f"no complete observations in the variables {list(columns.used)}: nothing to fit")
        sample, sample_where = found
        sampled = FormulaColumns.from_sample(formula, pd.Index(numeric.used), sample, numeric.dtypes,
                                             dialect=dialect, contrasts=contrasts)
        encoding = ChunkEncoding.from_sample(sampled, {}, sample, na_action, sample_where)
        if sampled.categorical or encoding.group_mean_transforms:
            return None
        # pandas' metadata in the files may give nullable integers (Int64), for which the
        # general path asks formulaic for X: the same columns as floats.
        plain = sample.astype({c: np.float64 for c, dtype in sample.dtypes.items()
                               if not isinstance(dtype, np.dtype) and pd.api.types.is_numeric_dtype(dtype)})
        names = numeric_design_columns(sampled, encoding.model_spec, plain)
        return None if names is None else replace(encoding, numeric_columns=names)

    encoding, total = reader.statistics(encode)
    if encoding is None:
        return None
    if numeric.dense is not None and total.group_stats is not None:
        total = replace(total, group_stats=_compact(total.group_stats))

    def reread(shift: np.ndarray, transform: np.ndarray) -> GroupStats:
        again = reader.statistics(lambda _: encoding, shift, transform)[1].group_stats
        return _compact(again) if numeric.dense is not None else again

    fit = fit_statistics(merged_statistics(encoding, total, reread), REML)
    return replace(fit, fixed_encoding=encoding.fixed_encoding(numeric.dtypes))


__all__ = ["NumericPlan", "fit_numeric", "numeric_plan"]
