"""Showing a fit, never recomputing it: the lme4-style text and HTML summary
(:mod:`~reml_engine.report.render`), the criterion against the ICC with every optimum
marked (:mod:`~reml_engine.report.criterion_curve`) and the plots
(:mod:`~reml_engine.report.plots`)."""
