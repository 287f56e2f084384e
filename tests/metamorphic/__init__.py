"""Metamorphic tests: the fit is the model the user wrote, whatever the row order, dtypes,
input form or parametrization (issue 10)."""
