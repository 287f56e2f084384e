"""Metamorphic tests (issue 10): the fit is the model the user wrote, whatever the row
order, dtypes, column names, input form or parametrization.

Each relation compares a variant of the data with the plain data it must fit like; the
plain fits of the reference cases are also held to lme4's stored criterion.

- ``relations.py``: the cases, the variants and the comparisons (with their tolerances);
- ``known_issues.py``: what fails today and when (each such test is a strict xfail);
- ``generated.py``: hypothesis data (unbalanced groups, singletons, factors,
  interactions, predictors far from 0, missing values);
- ``test_*.py``: one relation per file, on the reference cases, and all of them on
  generated data in ``test_generated.py``.

The default run (``-m "not slow"``) takes a few reference cases and a few generated
examples per relation; the slow tests take every case, ML fits and more examples
(``METAMORPHIC_EXAMPLES``, 20 by default, for a longer search).
"""
