"""A fast path to the model matrices when every fixed term is a plain numeric column.

``y ~ x1 + x2 + (1|g)`` needs no formula machinery to build its design: X is the
intercept and the columns themselves. At millions of rows formulaic's general
materialization (a DataFrame per term, then a copy to one array) costs more than the
fit, so here X is assembled once, column by column, straight from the data.

The fast path is taken from the formula and the dtypes alone, never from the values:
every term must be a plain name (or ``0``, ``1``, ``-1``) of a column whose dtype is a
numpy integer or float, and so must the response. For such a column formulaic makes
exactly one column, its values as floats, whatever the values are; a text, boolean or
categorical column (whose columns depend on the levels present), a transform or an
interaction goes through formulaic unchanged.

formulaic still names the columns, orders them and makes the model spec used later to
build the design of new data: it materializes the same formula on the first
``SPEC_ROWS`` rows, which for numeric columns gives the same columns as on all rows.
That this holds is checked on each fit (the columns formulaic names are the formula's
columns), and the tests compare both paths on generated data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from .formula import FORMULAIC_INTERCEPT

#: Rows formulaic materializes to name the columns and make the model spec.
SPEC_ROWS = 16

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE_TERM = re.compile(rf"^\s*(?:{_NAME}|0|1|-\s*1)\s*$")
_SIMPLE_RESPONSE = re.compile(rf"^\s*{_NAME}\s*$")
_CONSTANT_TERM = re.compile(r"^\s*(?:0|1|-\s*1)\s*$")


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
    return simple_terms(fixed) is not None


def simple_terms(fixed: str) -> tuple[str, tuple[str, ...]] | None:
    """The response and the column names of ``name ~ name + name ...`` (``0``, ``1``
    and ``-1`` allowed), or None for any other formula.

    Examples
    --------
    >>> simple_terms("y ~ 0 + x1 + x2")
    ('y', ('x1', 'x2'))
    """
    if fixed.count("~") != 1:
        return None
    lhs, rhs = fixed.split("~")
    if not _SIMPLE_RESPONSE.match(lhs):
        return None
    terms = [term for term in re.split(r"\+|(?=-)", rhs) if term.strip()]
    if not all(_SIMPLE_TERM.match(term) for term in terms):
        return None
    names = tuple(dict.fromkeys(term.strip() for term in terms if not _CONSTANT_TERM.match(term)))
    return lhs.strip(), names


def plain_numeric_columns(data: pd.DataFrame) -> set[str]:
    """The columns of the data, each the only one of its name, with a numpy integer or
    float dtype (not bool, which formulaic reads on a path of its own)."""
    names = data.columns
    once = names if names.is_unique else names[~names.duplicated(keep=False)]
    return {
        str(name) for name, dtype in zip(names, data.dtypes, strict=True)
        if name in once and name != FORMULAIC_INTERCEPT and isinstance(dtype, np.dtype) and dtype.kind in "iuf"
    }


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
    def general(frame):
        return formulaic.model_matrix(fixed, frame, na_action="ignore", context=context)

    terms = simple_terms(fixed)
    if terms is None or len(data) <= SPEC_ROWS:
        return general(data)
    response, names = terms
    if not {response, *names} <= plain_numeric_columns(data):
        return general(data)
    head = general(data.iloc[:SPEC_ROWS])
    columns = tuple(str(c) for c in head.rhs.columns)
    # formulaic makes one column per numeric term, and the intercept: anything else
    # (a name formulaic resolves elsewhere) goes the general way.
    if sorted(c for c in columns if c != FORMULAIC_INTERCEPT) != sorted(names):
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
