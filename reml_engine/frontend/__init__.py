"""Stage 1, formula and data -> :class:`~reml_engine.frontend.design.Design` (lme4's ``lFormula``).

* :mod:`~reml_engine.frontend.design`: the design (X, y, group labels) of a formula and a
  DataFrame, or of arrays; the design of new data for predictions;
* :mod:`~reml_engine.frontend.formula_dialect`, :mod:`~reml_engine.frontend.r_syntax`,
  :mod:`~reml_engine.frontend.r_translate`, :mod:`~reml_engine.frontend.r_functions`: formulas
  written in Python's or R's dialect;
* :mod:`~reml_engine.frontend.columns`: pandas dtypes brought to those formulaic reads;
* :mod:`~reml_engine.frontend.term_recipes`: X of numeric and factor terms from a
  cached recipe, formulaic shown only a sample of the rows;
* :mod:`~reml_engine.frontend.fast_design`: X without formulaic when every term is a
  numeric column;
* :mod:`~reml_engine.frontend.transforms`: ``within(x)`` and ``between(x)``;
* :mod:`~reml_engine.frontend.groups`: group labels coded by the canonical label rule;
* :mod:`~reml_engine.frontend.arguments`: checks on the public functions' arguments.
"""
