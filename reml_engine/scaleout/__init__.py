"""Fits from data that do not sit in memory: chunks, memory-mapped arrays, Dask, Parquet.

Every chunk is encoded the same way (:mod:`~reml_engine.scaleout.encoding`) and reduced to
mergeable statistics; the merged statistics go through the same core stages as an
in-memory fit. :mod:`~reml_engine.scaleout.chunked` reads chunks on one machine,
:mod:`~reml_engine.scaleout.dask` runs the same per-chunk function on Dask partitions and
Parquet files.
"""
