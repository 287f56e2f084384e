"""R's functions as the formulas of ``dialect="R"`` call them (:mod:`reml_engine.frontend.r_translate`).

They join the formula context of every fit (:func:`reml_engine.frontend.transforms.formula_context`),
so that the fit, ``predict`` on new data, the type III grid and chunked fits evaluate a
translated formula the same way. Each follows R's definition: ``log(x, base)``,
``as.numeric`` of a factor is its level codes, ``poly`` is R's orthogonal polynomial basis
(formulaic's recurrence, which gives R's columns) with R's check of the degree, and keeps
its fitted coefficients for new data as R's ``predict`` does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic.utils.stateful_transforms import stateful_transform

from ..errors import ModelDataError


def r_log(x, base=None):
    """R's ``log(x, base)``: the natural logarithm, or ``log(x) / log(base)``."""
    if base is None:
        return np.log(x)
    return np.log(x) / np.log(base)


def _extremes(reduce):
    def parallel(*values):
        result = values[0]
        for value in values[1:]:
            result = reduce(result, value)
        return result

    return parallel


def ifelse(test, yes, no):
    """R's ``ifelse``: ``yes`` where ``test`` holds, ``no`` elsewhere."""
    return np.where(np.asarray(test, dtype=bool), yes, no)


def _r_numbers(x, name: str) -> np.ndarray:
    """R's ``as.numeric`` of a column: level codes (1, 2, ...) of a factor, numbers as they are."""
    values = getattr(x, "__wrapped__", x)
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.float64)
        codes[codes < 0] = np.nan
        return codes + 1.0
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ModelDataError(
            f"{name}() of a text column: R gives a factor's level codes but parses a character vector as numbers; "
            "make the column categorical (codes) or numeric (pd.to_numeric) first"
        )
    return array.astype(np.float64)


def as_numeric(x) -> np.ndarray:
    """R's ``as.numeric``: a factor's level codes (1, 2, ...), numbers as doubles."""
    return _r_numbers(x, "as.numeric")


def as_integer(x) -> np.ndarray:
    """R's ``as.integer``: a factor's level codes, numbers truncated towards zero."""
    return np.trunc(_r_numbers(x, "as.integer"))


@stateful_transform
def poly(x, degree: int = 1, raw: bool = False, _state: dict | None = None):
    """R's ``poly(x, degree, raw)``: formulaic's orthogonal polynomials (the same
    recurrence and normalization as R's), with R's check that the degree is less than
    the number of distinct values when they are fitted; new data reuse the fitted
    coefficients (``_state``), as R's ``predict`` does."""
    from formulaic.transforms.poly import poly as formulaic_poly

    state = {} if _state is None else _state
    if not raw and not state:
        values = np.asarray(x, dtype=np.float64)
        distinct = len(np.unique(values[~np.isnan(values)]))
        if degree >= distinct:
            raise ModelDataError(
                f"poly(): degree {degree} must be less than the number of distinct values ({distinct}), as in R"
            )
    return formulaic_poly(x, degree, raw, _state=state)


#: Names a translated formula calls that formulaic does not provide (or provides with
#: fewer arguments: log's base); they join the formula context of every fit.
R_FUNCTIONS = {
    "log": r_log, "sqrt": np.sqrt, "abs": np.abs, "log1p": np.log1p, "expm1": np.expm1,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "floor": np.floor, "ceiling": np.ceil,
    "trunc": np.trunc, "sign": np.sign, "pmin": _extremes(np.minimum), "pmax": _extremes(np.maximum),
    "ifelse": ifelse, "as_numeric": as_numeric, "as_integer": as_integer, "poly": poly,
}


__all__ = ["R_FUNCTIONS", "as_integer", "as_numeric", "ifelse", "poly", "r_log"]
