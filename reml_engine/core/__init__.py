"""Stages 2 to 5: sufficient statistics -> the criterion -> every optimum -> the fit.

* :mod:`~reml_engine.core.kernels`: the numba passes over the rows;
* :mod:`~reml_engine.core.statistics`: mergeable per-group sums and their pooling by group size;
* :mod:`~reml_engine.core.identifiability`: what the statistics must show before a fit (rank,
  identifiability, a residual variance, scales);
* :mod:`~reml_engine.core.criterion`: the profiled REML criterion and ML deviance in closed
  form, with their named parts;
* :mod:`~reml_engine.core.optimizer`: the global scan that finds every local minimum;
* :mod:`~reml_engine.core.lme4_path`: where lme4's ``lmer()`` would stop;
* :mod:`~reml_engine.core.parametrization`: the map from the engine's centred columns to the
  user's;
* :mod:`~reml_engine.core.diagnosis`: why the estimate is where it is;
* :mod:`~reml_engine.core.fitting`: the stages as functions, from statistics to the fit;
* :mod:`~reml_engine.core.results`: the immutable fit.
"""
