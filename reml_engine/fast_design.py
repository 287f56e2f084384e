"""A fast path to the model matrices when every fixed term is a plain numeric column.

``y ~ x1 + x2 + (1|g)`` needs no formula machinery to build its design: X is the
intercept and the columns themselves. At millions of rows formulaic's general
materialization (a DataFrame per term, then a copy to one array) costs more than the
fit, so here X is assembled once, column by column, straight from the data.

formulaic still has the last word on what the design *is*: it materializes the same
formula on the first ``SPEC_ROWS`` rows, which fixes the column names, their order and
the model spec used later to build the design of new data. The fast path only fills
in the values, and only when each of formulaic's columns is the intercept or a
numeric (not boolean) column of the data under its own name; anything else (a
categorical, an interaction, a transform) goes through formulaic unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Rows formulaic materializes to name the columns and make the model spec.
SPEC_ROWS = 16
#: Name formulaic gives the intercept column.
FORMULAIC_INTERCEPT = "Intercept"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE_TERM = re.compile(rf"^\s*(?:{_NAME}|0|1|-\s*1)\s*$")
_SIMPLE_RESPONSE = re.compile(rf"^\s*{_NAME}\s*$")


@dataclass(frozen=True)
class _Matrix:
    """The parts of formulaic's model matrix that the design reads."""

    values: np.ndarray
    columns: tuple[str, ...]
    model_spec: object

    def to_numpy(self, dtype=np.float64) -> np.ndarray:
        return self.values if self.values.dtype == dtype else self.values.astype(dtype)


@dataclass(frozen=True)
class FastMatrices:
    """Left- and right-hand side, as formulaic's ``model_matrix`` returns them."""

    lhs: _Matrix
    rhs: _Matrix


def is_simple(fixed: str) -> bool:
    """True when the fixed formula is ``name ~ term + term ...`` with plain names only.

    Examples
    --------
    >>> is_simple("y ~ x1 + x2"), is_simple("y ~ x1 * cat"), is_simple("y ~ np.log(x)")
    (True, False, False)
    """
    if fixed.count("~") != 1:
        return False
    lhs, rhs = fixed.split("~")
    if not _SIMPLE_RESPONSE.match(lhs):
        return False
    terms = re.split(r"\+|(?=-)", rhs)
    return all(_SIMPLE_TERM.match(term) for term in terms if term.strip())


def _plain_numeric(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def model_matrices(fixed: str, data: pd.DataFrame, context=None):
    """``formulaic.model_matrix(fixed, data, na_action="ignore", context=context)``, fast
    when every fixed term is a plain numeric column.

    Parameters
    ----------
    fixed : str
        The fixed part of the formula, ``"y ~ x1 + x2"``.
    data : pandas.DataFrame
        Rows with missing values already dropped.
    context : dict, optional
        Extra names for formulaic (transforms such as ``within()``).
    """
    import formulaic

    def general(frame):
        return formulaic.model_matrix(fixed, frame, na_action="ignore", context=context)

    if not is_simple(fixed) or len(data) <= SPEC_ROWS:
        return general(data)
    head = general(data.iloc[:SPEC_ROWS])
    response = fixed.split("~")[0].strip()
    columns = tuple(str(c) for c in head.rhs.columns)
    plain = all(
        c == FORMULAIC_INTERCEPT or (c in data.columns and _plain_numeric(data[c])) for c in columns
    )
    if not (plain and response in data.columns and _plain_numeric(data[response])):
        return general(data)
    X = np.empty((len(data), len(columns)), dtype=np.float64, order="F")
    for j, name in enumerate(columns):
        if name == FORMULAIC_INTERCEPT:
            X[:, j] = 1.0
        else:
            X[:, j] = data[name].to_numpy()
    y = data[response].to_numpy(dtype=np.float64)
    lhs = _Matrix(y, (response,), head.lhs.model_spec)
    return FastMatrices(lhs=lhs, rhs=_Matrix(X, columns, head.rhs.model_spec))
