"""Fits from Dask DataFrames and Parquet files: one aggregation, then an instant fit.

``rl.lmer(formula, data=ddf)`` with a ``dask.dataframe.DataFrame``, or
``rl.lmer(formula, data="path/*.parquet")``, runs the chunked pipeline of
:mod:`reml_engine.scaleout.chunked` with Dask partitions as the chunks: the per-partition
function (:meth:`~reml_engine.scaleout.encoding.ChunkEncoding.partial_stats`, numba kernels
inside) runs where the partition lives, and the partial statistics are merged in a tree
(:data:`~reml_engine.scaleout.chunked.MERGE_FANOUT` at a time, as on one machine) before
the small final fit on the client. The same code runs on the threaded scheduler, a
``LocalCluster`` or a multi-machine cluster: whatever scheduler is active
(``dask.config`` or a ``distributed.Client``) does the work.

A Parquet path (a file, a directory or a glob) is read by :func:`parquet_source`: every
file's footer is checked first (a readable Parquet file, holding the formula's columns,
with types that agree across files or can be unified: integers and floats, or text and
categoricals, and for grouping columns numbers and text), then one Dask partition reads
about :data:`~reml_engine.scaleout.chunked.CHUNK_ROWS` rows (whole row groups) of one file, only
the formula's columns, and checks the numbers against the ranges the footer records.
Errors name the file. Local files fitted with a formula of plain numeric columns and one
random intercept, on the threaded scheduler, skip Dask and pandas: see
:mod:`reml_engine.scaleout.parquet_numeric` (the same checks and the same fit).

Dask is optional: this module imports it only when a Dask fit is asked for, and
:func:`require_dask` says how to install it when it is missing.

Examples
--------
>>> import dask.dataframe as dd, reml_engine as rl     # doctest: +SKIP
>>> m = rl.lmer("y ~ x + (1|g)", data="data/part-*.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from os import PathLike

import numpy as np
import pandas as pd

from ..core.results import LmerFit
from ..core.statistics import PILOT_ROWS
from ..core.terms_results import TermsFit
from ..errors import ModelDataError
from ..frontend.formula import parse_formula
from ..progress import PROGRESS_AFTER_SECONDS, check_progress
from .chunked import CHUNK_ROWS, MERGE_FANOUT, ChunkSource, IteratorSource, fit_source
from .encoding import FormulaColumns, PartialStats, drop_incomplete, located, require_columns
from .parquet_numeric import fit_numeric, numeric_plan

#: The message when Dask is needed but missing.
INSTALL_HINT = (
    "fitting a Dask DataFrame or Parquet files needs Dask: pip install 'reml_engine[dask]' "
    "(dask[dataframe], distributed, pyarrow)"
)


#: Rows of a Parquet file read for the sample (the encoding and its shift are fixed from
#: it) before the fit's pass: enough for the shift's ``PILOT_ROWS`` complete rows in most
#: files; when fewer are complete, the whole first piece is read, as before.
SAMPLE_ROWS = 65_536


def require_dask():
    """``dask.dataframe``, or a clear ImportError saying how to install it."""
    try:
        import dask.dataframe as dd
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return dd


def is_dask_dataframe(data) -> bool:
    """True for a Dask DataFrame, without importing Dask when it is not loaded already."""
    if sys.modules.get("dask.dataframe") is None:
        return False
    import dask.dataframe as dd

    return isinstance(data, dd.DataFrame)


class DaskSource(ChunkSource):
    """The partitions of a Dask DataFrame as chunks; each pass is one Dask computation.

    ``names`` names each partition in messages (a Parquet file and its row groups);
    by default "partition k of n".
    """

    def __init__(self, ddf, progress="auto", scheduler=None, names: list[str] | None = None, head=None):
        self.ddf = ddf
        #: ``head(i)``: the first rows of partition ``i`` and whether they are all of it
        #: (a Parquet source reads them without the rest); None reads whole partitions.
        self.head = head
        self.columns = ddf.columns
        self.dtypes = ddf.dtypes
        self.progress = check_progress(progress)
        self.scheduler = scheduler
        count = ddf.npartitions
        self.names = list(names) if names is not None else [f"partition {i + 1} of {count}" for i in range(count)]

    def first_complete(self, used):
        frame = self.ddf[list(used)]
        for i in range(frame.npartitions):
            if self.head is not None:
                part, whole = self.head(i)
                clean = drop_incomplete(part[list(used)], used)[0]
                # The sample's first PILOT_ROWS complete rows (which give the shift) are then
                # those of the whole partition: the fit is the one the whole read gives.
                if whole or len(clean) >= PILOT_ROWS:
                    if len(clean):
                        return clean, self.names[i]
                    continue
            part = frame.get_partition(i).compute(scheduler=self.scheduler)
            clean = drop_incomplete(part, used)[0]
            if len(clean):
                return clean, self.names[i]
        return None

    def map_reduce(self, per_chunk, merge_all, what):
        import dask

        columns = list(self.columns) if what == "statistics" else None
        frame = self.ddf if columns is None else self.ddf[columns]
        parts = frame.to_delayed()
        results = [dask.delayed(per_chunk, pure=False)(part, name) for part, name in zip(parts, self.names, strict=True)]
        while len(results) > 1:
            results = [
                dask.delayed(merge_all, pure=False)(results[i:i + MERGE_FANOUT])
                for i in range(0, len(results), MERGE_FANOUT)
            ]
        if not results:
            return merge_all([])
        result = _compute(results[0], self.progress, self.scheduler, what)
        if callable(self.progress) and isinstance(result, PartialStats):
            # Dask runs the partitions out of sight: the function hears once per pass.
            self.progress(result.n_rows, len(self.names))
        return result


# -- Parquet files ---------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetPiece:
    """Row groups ``row_groups`` of one Parquet file: one partition of the fit."""

    path: str
    row_groups: tuple[int, ...]
    file_row_groups: int

    @property
    def name(self) -> str:
        if len(self.row_groups) == self.file_row_groups:
            return f"file {self.path!r}"
        first, last = self.row_groups[0] + 1, self.row_groups[-1] + 1
        return f"file {self.path!r} (row groups {first}-{last} of {self.file_row_groups})"


def parquet_files(path) -> tuple[object, list[str]]:
    """The filesystem and the Parquet files of a path, a directory (searched recursively,
    skipping names that start with ``_`` or ``.`` as Dask does) or a glob."""
    import fsspec

    text = str(path)
    fs, _, paths = fsspec.core.get_fs_token_paths(text)
    files: list[str] = []
    for entry in paths:
        if fs.isdir(entry):
            files.extend(f for f in sorted(fs.find(entry)) if not _hidden(f))
        else:
            files.append(entry)
    if not files:
        raise ModelDataError(f"no file matches {text!r}: check the path (and the pattern) of the Parquet files")
    return fs, files


def _hidden(path: str) -> bool:
    return path.rstrip("/").rsplit("/", 1)[-1].startswith(("_", "."))


def _footer(fs, path: str):
    """A file's Parquet metadata, or an error naming the file."""
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as handle:
            return pq.read_metadata(handle)
    except FileNotFoundError:
        raise ModelDataError(f"no Parquet file at {path!r}") from None
    except Exception as err:  # ArrowInvalid, OSError: an empty, truncated or foreign file
        raise ModelDataError(
            f"file {path!r} is not a readable Parquet file ({_one_line(err)}); it may be empty, truncated or of "
            "another format: rewrite it, or leave it out of the pattern"
        ) from None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _unified_dtypes(formula: str, dtypes_by_file: dict[str, pd.Series], used: tuple[str, ...],
                    dialect: str = "python", several_terms: bool = False) -> dict:
    """One dtype per used column when the files disagree (schema drift), or a refusal.

    Integers and floats in different files are floats; text, categoricals and mixed
    labels are object (their labels then follow the canonical label rule); a grouping
    column may mix numbers and text (compared as text), a column of the fixed part may
    not: it would be a number in some files and a factor in others.
    """
    group_columns = set(parse_formula(formula, dialect=dialect, several_terms=several_terms).group_columns)
    target: dict = {}
    for column in used:
        seen = {}
        for path, dtypes in dtypes_by_file.items():
            seen.setdefault(str(dtypes[column]), (path, dtypes[column]))
        if len(seen) == 1:
            continue
        kinds = {name: _dtype_kind(dtype) for name, (_, dtype) in seen.items()}
        if set(kinds.values()) == {"number"}:
            both = [dtype for _, dtype in seen.values()]
            target[column] = np.float64 if any(d.kind == "f" for d in both) else np.int64
        elif set(kinds.values()) == {"categorical"}:
            continue  # categories differ: gathered from the data like Dask's unknown ones
        elif "number" not in kinds.values() or column in group_columns:
            target[column] = object
        else:
            shown = "; ".join(f"{name} in {path!r}" for name, (path, _) in seen.items())
            raise ModelDataError(
                f"column {column!r} has different types in different files ({shown}): as numbers it is a slope, as "
                "text a factor; write it with one type in every file"
            )
    return target


def _dtype_kind(dtype) -> str:
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_string_dtype(dtype):
        return "text"
    return "other"


@dataclass(frozen=True)
class _ReadPiece:
    """Picklable reader of one :class:`ParquetPiece`: the used columns, with the unified
    dtypes, after checking the values against the ranges the file's footer records."""

    fs: object
    columns: tuple[str, ...]
    casts: dict

    def __call__(self, piece: ParquetPiece) -> pd.DataFrame:
        return self._load(piece, lambda parquet: parquet.read_row_groups(list(piece.row_groups),
                                                                          columns=list(self.columns)))

    def head(self, piece: ParquetPiece, rows: int | None = None) -> tuple[pd.DataFrame, bool]:
        """The first ``rows`` rows (default :data:`SAMPLE_ROWS`) of the piece (checked and
        typed as by a whole read), and whether they are the whole piece."""
        import pyarrow as pa

        rows = SAMPLE_ROWS if rows is None else rows

        total = []

        def first_rows(parquet):
            total.append(sum(parquet.metadata.row_group(g).num_rows for g in piece.row_groups))
            batches = parquet.iter_batches(batch_size=rows, row_groups=list(piece.row_groups),
                                           columns=list(self.columns))
            first = next(iter(batches), None)
            if first is None:
                return parquet.schema_arrow.empty_table().select(list(self.columns))
            return pa.Table.from_batches([first])

        frame = self._load(piece, first_rows)
        return frame, len(frame) >= total[0]

    def _load(self, piece: ParquetPiece, read) -> pd.DataFrame:
        """``read(parquet_file)``'s table as a DataFrame of the unified dtypes, after the
        footer range check; errors name the piece."""
        import pyarrow.parquet as pq

        try:
            if _is_local(self.fs):
                # Arrow's own file reader: it reads without the GIL, where a Python file
                # object calls back into Python for every read and Dask's threads take turns.
                parquet = pq.ParquetFile(piece.path, memory_map=False)
                table, metadata = read(parquet), parquet.metadata
            else:
                with self.fs.open(piece.path, "rb") as handle:
                    parquet = pq.ParquetFile(handle)
                    table, metadata = read(parquet), parquet.metadata
            _check_footer_ranges(metadata, table, piece)
        except ModelDataError:
            raise
        except Exception as err:
            raise ModelDataError(f"{piece.name} cannot be read ({_one_line(err)}); the file may be corrupted") from None
        frame = table.to_pandas()
        return frame.astype(self.casts) if self.casts else frame


def _is_local(fs) -> bool:
    """The local filesystem (fsspec's ``file`` protocol), whose paths Arrow opens itself."""
    protocol = getattr(fs, "protocol", None)
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return "file" in protocols or "local" in protocols


def _check_footer_ranges(metadata, table, piece: ParquetPiece, ranges: dict | None = None) -> None:
    """Numbers outside the minimum and maximum the footer records are corrupted data.

    A damaged data page often decodes without error into absurd values (1e+293); the
    writer's statistics, kept in the footer, show they were never written. ``ranges``:
    ``{column: (min, max)}`` known already for some columns (the Parquet fast path's
    kernel gives them), which are then not computed again.
    """
    import pyarrow as pa

    names = metadata.schema.names
    for column in table.column_names:
        values = table.column(column)
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)) or column not in names:
            continue
        index = names.index(column)
        bounds = []
        for group in piece.row_groups:
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                return
            bounds.append((stats.min, stats.max))
        low, high = min(b[0] for b in bounds), max(b[1] for b in bounds)
        known = (ranges or {}).get(column)
        found = _min_max(values) if known is None else {"min": known[0], "max": known[1]}
        if found["min"] is None:
            continue
        if found["min"] < low or found["max"] > high:
            raise ModelDataError(
                f"{piece.name}: column {column!r} holds values from {found['min']:.6g} to {found['max']:.6g}, "
                f"outside the range {low:.6g} to {high:.6g} its footer records: the file is corrupted; "
                "rewrite it from its source"
            )


def _min_max(values) -> dict:
    """``pyarrow.compute.min_max(values)`` as Python numbers, by numpy where it gives the
    same answer: on the chunks without nulls, whose buffers numpy reads in place, and
    without NaN (numpy would return NaN, where Arrow skips it). numpy's reductions run
    about fifteen times faster than Arrow's on floats; the rest goes to Arrow."""
    import pyarrow.compute as pc

    if values.null_count == 0 and len(values) > 0:
        chunks = [chunk.to_numpy(zero_copy_only=True) for chunk in values.chunks if len(chunk)]
        # numpy's min and max propagate NaN (Python's min would depend on the order).
        low = np.min([chunk.min() for chunk in chunks])
        high = np.max([chunk.max() for chunk in chunks])
        if not (np.isnan(low) or np.isnan(high)):
            return {"min": low.item(), "max": high.item()}
    return pc.min_max(values).as_py()


@dataclass(frozen=True)
class ParquetPlan:
    """Checked Parquet files, before any data is read: the files and their footers, the
    formula's columns, the dtype casts that unify the files (:func:`_unified_dtypes`),
    the pieces (one partition each) and the dtypes of the used columns as read."""

    fs: object
    footers: dict
    columns: FormulaColumns
    casts: dict
    pieces: list
    #: An empty frame of the used columns, with the dtypes they are read with.
    meta: pd.DataFrame

    @property
    def dtypes(self) -> pd.Series:
        return self.meta.dtypes


def parquet_plan(formula: str, path, rows_per_piece: int = CHUNK_ROWS, dialect: str = "python", *,
                 weights: str | None = None, offset: str | None = None) -> ParquetPlan:
    """Every file of ``path`` checked from its footer: that it is a Parquet file, that it
    holds the columns the formula uses (and the ``weights`` and ``offset`` columns), and
    that the types of those columns agree across files (or can be unified: see
    :func:`_unified_dtypes`); and the pieces of about ``rows_per_piece`` rows (whole row
    groups) the files are read in."""
    fs, files = parquet_files(path)
    footers = {f: _footer(fs, f) for f in files}
    dtypes_by_file = {f: footer.schema.to_arrow_schema().empty_table().to_pandas().dtypes
                      for f, footer in footers.items()}
    first = files[0]
    with located(f"file {first!r}"):
        columns = FormulaColumns.from_sample(formula, dtypes_by_file[first].index, None, dtypes_by_file[first],
                                             dialect=dialect, weights=weights, offset=offset)
    used = columns.used
    for f, dtypes in dtypes_by_file.items():
        require_columns(pd.DataFrame(columns=dtypes.index), used, f"file {f!r}")
    casts = _unified_dtypes(formula, dtypes_by_file, used, dialect, columns.several_terms)
    pieces = [piece for f in files for piece in _pieces(f, footers[f], rows_per_piece)]
    if not pieces:
        raise ModelDataError(f"the Parquet files of {str(path)!r} hold no rows: no observations to fit")
    meta = footers[first].schema.to_arrow_schema().empty_table().select(list(used)).to_pandas()
    meta = meta.astype(casts) if casts else meta
    return ParquetPlan(fs, footers, columns, casts, pieces, meta)


def parquet_source(formula: str, path, progress="auto", scheduler=None, rows_per_piece: int = CHUNK_ROWS,
                   dialect: str = "python", *, weights: str | None = None, offset: str | None = None,
                   plan: ParquetPlan | None = None) -> DaskSource:
    """The Parquet files of ``path`` as a Dask source, one partition per ``rows_per_piece``
    rows (whole row groups), reading only the formula's columns (and the ``weights`` and
    ``offset`` columns).

    Every file is checked before any data is read (:func:`parquet_plan`; ``plan``: its
    result when the caller has it already).
    """
    dd = require_dask()
    from dask.dataframe.utils import clear_known_categories

    if plan is None:
        plan = parquet_plan(formula, path, rows_per_piece, dialect, weights=weights, offset=offset)
    used, pieces = plan.columns.used, plan.pieces
    meta = plan.meta
    categorical = [c for c in used if isinstance(meta[c].dtype, pd.CategoricalDtype)]
    meta = clear_known_categories(meta, cols=categorical) if categorical else meta
    reader = _ReadPiece(plan.fs, tuple(used), plan.casts)
    ddf = dd.from_map(reader, pieces, meta=meta, label="reml-read-parquet")
    return DaskSource(ddf, progress=progress, scheduler=scheduler, names=[p.name for p in pieces],
                      head=lambda i: reader.head(pieces[i]))


def _pieces(path: str, footer, rows_per_piece: int) -> list[ParquetPiece]:
    """Consecutive row groups of a file, about ``rows_per_piece`` rows each."""
    pieces, current, rows = [], [], 0
    count = footer.num_row_groups
    for group in range(count):
        group_rows = footer.row_group(group).num_rows
        if current and rows + group_rows > rows_per_piece:
            pieces.append(ParquetPiece(path, tuple(current), count))
            current, rows = [], 0
        current.append(group)
        rows += group_rows
    if current and rows:
        pieces.append(ParquetPiece(path, tuple(current), count))
    return pieces


def _distributed_client(scheduler):
    """The ``distributed.Client`` that would run a computation, or None (a local scheduler)."""
    from dask.base import get_scheduler

    client = getattr(get_scheduler(scheduler=scheduler), "__self__", None)
    return client if type(client).__name__ == "Client" else None


def _compute(task, progress, scheduler, what: str):
    """Compute a Delayed with the active scheduler, showing progress on long runs.

    On a ``distributed`` cluster the progress bar is ``distributed.progress`` (only when
    ``progress=True``: the dashboard shows it anyway); on the local schedulers it is
    Dask's ``ProgressBar``, shown at once for ``progress=True`` and after
    ``PROGRESS_AFTER_SECONDS`` for ``"auto"``.
    """
    import dask

    client = _distributed_client(scheduler)
    if client is not None:
        future = client.compute(task)
        if progress is True:
            from distributed import progress as show_progress

            print(f"reml_engine: {what}", file=sys.stderr)
            show_progress(future)
        return future.result()
    if progress is False or callable(progress):
        return dask.compute(task, scheduler=scheduler)[0]
    from dask.diagnostics import ProgressBar

    minimum = 0.0 if progress is True else PROGRESS_AFTER_SECONDS
    with ProgressBar(minimum=minimum, out=sys.stderr):
        return dask.compute(task, scheduler=scheduler)[0]


def lmer_dask(formula: str, data, REML: bool = True, na_action: str = "omit", levels: dict | None = None,
              progress="auto", scheduler=None, *, dialect: str = "python", contrasts: dict | None = None,
              weights: str | None = None, offset: str | None = None) -> LmerFit | TermsFit:
    """Fit ``formula`` from a Dask DataFrame or from Parquet file(s), reading lazily.

    Parameters
    ----------
    formula : str
        As for :func:`reml_engine.lmer`.
    data : dask.dataframe.DataFrame, str or path
        A Dask DataFrame, or a Parquet path, directory or glob (``"data/*.parquet"``),
        of which only the columns the formula uses are read.
    REML, na_action :
        As for :func:`reml_engine.lmer`; rows with missing values are dropped with one
        warning counting them over all partitions.
    levels : dict, optional
        ``{column: levels}`` for categorical columns; otherwise they are gathered in a
        first pass over those columns (unless they are Dask categoricals with known
        categories).
    progress : bool, "auto" or callable
        Progress bar on stderr (the share of Dask's tasks done): always, never, or only
        for passes longer than ``PROGRESS_AFTER_SECONDS`` on the local schedulers. A
        callable is called as ``progress(rows, partitions)`` after each pass over the
        data.
    scheduler : str, optional
        Dask scheduler for the computations (``"threads"``, ``"synchronous"``,
        ``"processes"``); by default the active one, e.g. a ``distributed.Client``.
    dialect, contrasts :
        As for :func:`reml_engine.lmer`.
    weights, offset : str, optional
        lmer's prior weights and offset, as column names.

    Returns
    -------
    LmerFit or TermsFit
        The same fit as :func:`reml_engine.lmer` on the whole data in memory, with
        ``ranef`` from the group statistics; ``fitted``/``resid`` are None.
        ``predict(newdata)``, ``simulate(newdata=)``, ``anova`` (ML refit and type III)
        and ``confint`` work from the statistics and the encoding. Several
        random terms, weights or an offset give a ``TermsFit``
        (:mod:`reml_engine.scaleout.terms`).
    """
    if isinstance(data, (str, PathLike)):
        check_progress(progress)
        require_dask()
        plan = parquet_plan(formula, data, dialect=dialect, weights=weights, offset=offset)
        numeric = numeric_plan(plan, plan.columns) if _local_threads(scheduler, progress) else None
        if numeric is not None:
            fit = fit_numeric(formula, plan.columns, numeric, REML=REML, na_action=na_action,
                              progress=progress, dialect=dialect, contrasts=contrasts)
            if fit is not None:
                return fit
        source = parquet_source(formula, data, progress=progress, scheduler=scheduler, dialect=dialect,
                                weights=weights, offset=offset, plan=plan)
    elif is_dask_dataframe(data):
        source = DaskSource(_used_columns(formula, data, dialect, weights, offset), progress=progress,
                            scheduler=scheduler)
    else:
        raise ModelDataError(f"data must be a Dask DataFrame or a Parquet path, got {type(data).__name__}")
    return fit_source(formula, source, REML=REML, na_action=na_action, levels=levels, dialect=dialect,
                      contrasts=contrasts, weights=weights, offset=offset)


def _local_threads(scheduler, progress) -> bool:
    """Whether Dask would run a Parquet fit on this machine's threads (the scheduler given,
    or else the active one, is the threaded one, and no ``distributed.Client`` is
    active), without a progress bar asked for: the Parquet fast path
    (:mod:`reml_engine.scaleout.parquet_numeric`) then reads the files on threads of its
    own. A scheduler asked for by name, processes or a cluster, gets Dask."""
    import dask

    chosen = scheduler if scheduler is not None else dask.config.get("scheduler", None)
    if chosen is not None and chosen not in ("threads", "threading"):
        return False
    return progress is not True and _distributed_client(scheduler) is None


def _used_columns(formula: str, ddf, dialect: str = "python", weights: str | None = None,
                  offset: str | None = None):
    """Project the frame on the formula's columns, so Parquet reads only those."""
    columns = FormulaColumns.from_sample(formula, ddf.columns, None, ddf.dtypes, dialect=dialect, weights=weights,
                                         offset=offset)
    return ddf[list(columns.used)]


def lmer_lazy(formula: str, data, REML: bool = True, na_action: str = "omit", *, dialect: str = "python",
              contrasts: dict | None = None, progress="auto", weights: str | None = None,
              offset: str | None = None) -> LmerFit | TermsFit:
    """What :func:`reml_engine.lmer` does with data that is not a pandas DataFrame.

    A Dask DataFrame or a Parquet path goes to :func:`lmer_dask`; an iterable of
    DataFrames, a function returning one, or a structured (memory-mapped) NumPy array
    goes to :func:`reml_engine.scaleout.chunked.lmer_chunks`.
    """
    if isinstance(data, (str, PathLike)) or is_dask_dataframe(data):
        return lmer_dask(formula, data, REML=REML, na_action=na_action, progress=progress, dialect=dialect,
                         contrasts=contrasts, weights=weights, offset=offset)
    if isinstance(data, (dict, pd.Series)) or not (callable(data) or hasattr(data, "__iter__")):
        raise ModelDataError(
            f"data must be a pandas DataFrame, a Dask DataFrame, a Parquet path, an iterable of DataFrames or a "
            f"structured NumPy array, got {type(data).__name__}"
        )
    return fit_source(formula, IteratorSource(data, progress=progress), REML=REML, na_action=na_action,
                      dialect=dialect, contrasts=contrasts, weights=weights, offset=offset)
