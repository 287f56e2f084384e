"""Benchmarks of reml_engine against lme4, statsmodels' MixedLM, mixedlm, interlace-lme,
FLASH-MM (many responses) and the numpy floor.

Run ``python -m benchmarks`` (full, an hour or more) or ``python -m benchmarks --quick``
(every part at a tiny size, for CI); results go to ``benchmarks/results/``
(``results/quick/`` for the quick run). See ``docs/benchmarks.md`` for the figures, how to
run each part and how to read them.

Modules: :mod:`~benchmarks.simulate` (data), :mod:`~benchmarks.engines` (one timed
runner per engine, caps), :mod:`~benchmarks.harness` (the configuration grid, ratios and
agreement), :mod:`~benchmarks.headline` (the target figures, the stage breakdown),
:mod:`~benchmarks.optimum_study` (the global-optimum study), :mod:`~benchmarks.many`
(many responses on one design), :mod:`~benchmarks.terms` (several random terms),
:mod:`~benchmarks.bench_parquet` (fits from Parquet on disk), :mod:`~benchmarks.report`
(CSV, Markdown, PNG).
"""
