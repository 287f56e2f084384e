"""The econometrician's view of the same statistics: within, between and pooled
estimators (:mod:`~reml_engine.panel.estimators`), the Hausman and Mundlak tests
(:mod:`~reml_engine.panel.hausman`), and one slope under every estimator
(:mod:`~reml_engine.panel.compare`)."""
