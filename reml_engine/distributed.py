"""Fits from Dask DataFrames and Parquet files: one aggregation, then an instant fit.

``rl.lmer(formula, data=ddf)`` with a ``dask.dataframe.DataFrame``, or
``rl.lmer(formula, data="path/*.parquet")``, runs the chunked pipeline of
:mod:`reml_engine.chunked` with Dask partitions as the chunks: the per-partition
function (:meth:`~reml_engine.chunk_encoding.ChunkEncoding.partial_stats`, numba kernels
inside) runs where the partition lives, and the partial statistics are merged in a tree
(:data:`SPLIT_EVERY` at a time) before the small final fit on the client. The same code
runs on the threaded scheduler, a ``LocalCluster`` or a multi-machine cluster: whatever
scheduler is active (``dask.config`` or a ``distributed.Client``) does the work.

Dask is optional: this module imports it only when a Dask fit is asked for, and
:func:`require_dask` says how to install it when it is missing.

Examples
--------
>>> import dask.dataframe as dd, reml_engine as rl     # doctest: +SKIP
>>> m = rl.lmer("y ~ x + (1|g)", data="data/part-*.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from os import PathLike

import pandas as pd

from .checks import ModelDataError
from .chunk_encoding import drop_incomplete
from .chunked import PROGRESS_AFTER_SECONDS, ChunkSource, IteratorSource, fit_source
from .results import LmerFit

#: Partial statistics merged together in one task of the reduction tree.
SPLIT_EVERY = 8

#: The message when Dask is needed but missing.
INSTALL_HINT = (
    "fitting a Dask DataFrame or Parquet files needs Dask: pip install 'reml_engine[dask]' "
    "(dask[dataframe], distributed, pyarrow)"
)


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


def read_parquet(path, columns=None, **options):
    """A lazy Dask DataFrame over Parquet file(s): a path, a directory or a glob."""
    dd = require_dask()
    return dd.read_parquet(path, columns=columns, **options)


class DaskSource(ChunkSource):
    """The partitions of a Dask DataFrame as chunks; each pass is one Dask computation."""

    def __init__(self, ddf, progress="auto", scheduler=None):
        self.ddf = ddf
        self.columns = ddf.columns
        self.dtypes = ddf.dtypes
        self.progress = progress
        self.scheduler = scheduler

    def first_complete(self, used):
        frame = self.ddf[list(used)]
        for i in range(frame.npartitions):
            part = frame.get_partition(i).compute(scheduler=self.scheduler)
            clean = drop_incomplete(part, used)[0]
            if len(clean):
                return clean
        return None

    def map_reduce(self, per_chunk, merge_all, what):
        import dask

        columns = list(self.columns) if what == "statistics" else None
        frame = self.ddf if columns is None else self.ddf[columns]
        parts = frame.to_delayed()
        results = [dask.delayed(per_chunk, pure=False)(part) for part in parts]
        while len(results) > 1:
            results = [
                dask.delayed(merge_all, pure=False)(results[i:i + SPLIT_EVERY])
                for i in range(0, len(results), SPLIT_EVERY)
            ]
        if not results:
            return merge_all([])
        return _compute(results[0], self.progress, self.scheduler, what)


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
    if progress is False:
        return dask.compute(task, scheduler=scheduler)[0]
    from dask.diagnostics import ProgressBar

    minimum = 0.0 if progress is True else PROGRESS_AFTER_SECONDS
    with ProgressBar(minimum=minimum, out=sys.stderr):
        return dask.compute(task, scheduler=scheduler)[0]


def lmer_dask(formula: str, data, REML: bool = True, na_action: str = "omit", levels: dict | None = None,
              progress="auto", scheduler=None) -> LmerFit:
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
    progress : bool or "auto"
        Progress bar on stderr: always, never, or only for passes longer than
        ``PROGRESS_AFTER_SECONDS`` on the local schedulers.
    scheduler : str, optional
        Dask scheduler for the computations (``"threads"``, ``"synchronous"``,
        ``"processes"``); by default the active one, e.g. a ``distributed.Client``.

    Returns
    -------
    LmerFit
        The same fit as :func:`reml_engine.lmer` on the whole data in memory, with
        ``ranef`` from the group statistics; ``fitted``/``resid`` are None.
    """
    if isinstance(data, (str, PathLike)):
        ddf = read_parquet(data)
    elif is_dask_dataframe(data):
        ddf = data
    else:
        raise ModelDataError(f"data must be a Dask DataFrame or a Parquet path, got {type(data).__name__}")
    source = DaskSource(_used_columns(formula, ddf), progress=progress, scheduler=scheduler)
    return fit_source(formula, source, REML=REML, na_action=na_action, levels=levels)


def _used_columns(formula: str, ddf):
    """Project the frame on the formula's columns, so Parquet reads only those."""
    from .chunk_encoding import FormulaColumns

    columns = FormulaColumns.from_sample(formula, ddf.columns, None, ddf.dtypes)
    return ddf[list(columns.used)]


def lmer_lazy(formula: str, data, REML: bool = True, na_action: str = "omit") -> LmerFit:
    """What :func:`reml_engine.lmer` does with data that is not a pandas DataFrame.

    A Dask DataFrame or a Parquet path goes to :func:`lmer_dask`; an iterable of
    DataFrames, a function returning one, or a structured (memory-mapped) NumPy array
    goes to :func:`reml_engine.chunked.lmer_chunks`.
    """
    if isinstance(data, (str, PathLike)) or is_dask_dataframe(data):
        return lmer_dask(formula, data, REML=REML, na_action=na_action)
    if isinstance(data, (dict, pd.Series)) or not (callable(data) or hasattr(data, "__iter__")):
        raise ModelDataError(
            f"data must be a pandas DataFrame, a Dask DataFrame, a Parquet path, an iterable of DataFrames or a "
            f"structured NumPy array, got {type(data).__name__}"
        )
    return fit_source(formula, IteratorSource(data), REML=REML, na_action=na_action)
