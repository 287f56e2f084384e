"""What a fit says about the population: tests, intervals, degrees of freedom, predictions.

* :mod:`~reml_engine.inference.ddf`: Satterthwaite and Kenward-Roger degrees of freedom;
* :mod:`~reml_engine.inference.fixed_tests`: coefficient tables, contrasts, type III tables
  (:mod:`~reml_engine.inference.type3` builds their hypotheses);
* :mod:`~reml_engine.inference.variance_tests`: tests of ``var_group = 0`` (mixture, exact
  (R)LRT, with :mod:`~reml_engine.inference.rlrt_kernels`);
* :mod:`~reml_engine.inference.intervals`: profile, Wald and bootstrap intervals;
* :mod:`~reml_engine.inference.bootstrap`: the parametric bootstrap;
* :mod:`~reml_engine.inference.model_comparison`: likelihood-ratio tests of nested models;
* :mod:`~reml_engine.inference.predict`: predictions and simulated responses.
"""
