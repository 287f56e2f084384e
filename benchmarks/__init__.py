"""Benchmarks of reml_engine against statsmodels' MixedLM, lme4 and the numpy floor.

Run ``python -m benchmarks`` (full, tens of minutes) or ``python -m benchmarks --quick``
(under a minute, for CI); results go to ``benchmarks/results/`` (``results/quick/``
for the quick run). See ``docs/benchmarks.md`` for the figures and how to read them.

Modules: :mod:`~benchmarks.simulate` (data), :mod:`~benchmarks.engines` (one timed
runner per engine), :mod:`~benchmarks.harness` (the configuration grid, ratios and
agreement), :mod:`~benchmarks.headline` (the target figures),
:mod:`~benchmarks.optimum_study` (the global-optimum study), :mod:`~benchmarks.report`
(CSV, Markdown, PNG).
"""
