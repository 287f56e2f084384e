"""Designs of many responses on one design: ``rl.fit(X, Y, groups)`` with Y (n, k), and
the formula forms ``cbind(y1, y2) ~ x + (1|g)`` and ``y1 + y2 ~ x + (1|g)``.

Formula forms
-------------
``cbind(y1, y2, ...)`` is R's way to write several responses of one model (``lm``'s
multivariate form), read the same in both dialects. ``y1 + y2 ~ ...`` is formulaic's
(several terms on the left are several responses) and is read so in the ``"python"``
dialect only: in R it is the sum of the two columns, so in the ``"R"`` dialect it stays
an error (write ``cbind(y1, y2)``). Each response is a column name: an expression such
as ``np.log(y1)`` is refused (compute the column first), so that every response is fitted
on the same design.

Missing values
--------------
From arrays, a non-finite value in Y is an error naming the response, as it is for
``rl.fit(X, y, groups)``: the array form never drops rows. From a formula with
``na_action="omit"``, each response is fitted on the rows lmer would use for it alone,
``lmer("y_j ~ x + (1|g)", data)``: the responses without missing values (where the
predictors and groups are present) share one pass; a response with missing values there
has rows of its own, so it is fitted on its own (its own design and pass over the data),
with a warning that names it and counts its missing values. With ``na_action="raise"``
any missing value is an error, as for one response.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd

from ..core.many import ManyDesign
from ..errors import ModelDataError, warn
from .columns import float_array
from .data_checks import check_response_column, suggest_columns
from .design import Design, build_design, design_from_arrays
from .formula import parse_formula, rhs_variables

_CBIND = re.compile(r"^\s*cbind\s*\((?P<inside>.*)\)\s*$", re.DOTALL)
_NAME = re.compile(r"^\s*(`[^`]+`|[A-Za-z_.][A-Za-z0-9_.]*)\s*$")


def response_columns(formula: str, dialect: str = "python") -> list[str] | None:
    """The response columns of a formula with several responses, or None for one.

    Examples
    --------
    >>> response_columns("cbind(y1, y2) ~ x + (1|g)")
    ['y1', 'y2']
    >>> response_columns("y1 + `y 2` ~ x + (1|g)")
    ['y1', 'y 2']
    >>> response_columns("y ~ x + (1|g)") is None
    True
    """
    if not isinstance(formula, str) or "~" not in formula:
        return None
    lhs = formula.split("~", 1)[0]
    match = _CBIND.match(lhs)
    if match:
        parts = _split_top_level(match.group("inside"), ",")
    elif dialect == "python" and len(_split_top_level(lhs, "+")) > 1:
        parts = _split_top_level(lhs, "+")
    else:
        return None
    names = []
    for part in parts:
        name = _NAME.match(part)
        if name is None:
            raise ModelDataError(
                f"formula {formula!r}: each of several responses must be a column name, not {part.strip()!r}; "
                "compute that response as a column of the data first"
            )
        names.append(name.group(1).strip("`"))
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelDataError(f"formula {formula!r} names response {duplicated[0]!r} more than once")
    return names


def _split_top_level(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses and backticks."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def response_formula(name: str, formula: str) -> str:
    """The formula of one response: ``name ~ <the formula's right-hand side>``."""
    lhs = name if re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]*", name) else f"`{name}`"
    return f"{lhs} ~{formula.split('~', 1)[1]}"


def check_response_names(names, k: int) -> tuple[str, ...]:
    """``k`` distinct response names (``y0, y1, ...`` by default)."""
    if names is None:
        return tuple(f"y{j}" for j in range(k))
    if isinstance(names, str):
        raise ModelDataError(f"response_names must be a sequence of names, one per column of Y, got the string "
                             f"{names!r}")
    names = tuple(str(name) for name in names)
    if len(names) != k:
        raise ModelDataError(f"{len(names)} response names for {k} columns of Y")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelDataError(f"response name {duplicated[0]!r} is given to more than one column of Y")
    return names


def many_design_from_arrays(X, Y, groups, names=None, response_names=None):
    """Validate ``X`` (n, p), ``Y`` (n, k) and the groups for :func:`reml_engine.fit`
    with many responses. A DataFrame Y names the responses by its columns."""
    if response_names is None and isinstance(Y, pd.DataFrame):
        response_names = list(Y.columns)
    Y = float_array(Y, "Y")
    if Y.ndim != 2:
        raise ModelDataError(f"Y must be a 2-d array (n, k) of k responses, got shape {Y.shape}")
    n, k = Y.shape
    if k == 0:
        raise ModelDataError("Y has no columns: give at least one response")
    response_names = check_response_names(response_names, k)
    template = design_from_arrays(X, Y[:, 0], groups, names)
    if template.X.shape[1] == 0:
        raise ModelDataError("X has no columns: give at least the intercept column")
    # Y (possibly the caller's array) is read by the fit and never kept: the fits keep
    # the statistics, or a private copy of the rows (``keep_data``). X is small: a
    # private copy, as the template's first response.
    if isinstance(X, np.ndarray) and np.shares_memory(template.X, X):
        template = replace(template, X=template.X.copy())
    template = replace(template, y=np.array(template.y, copy=True))
    return ManyDesign(template, Y, response_names)


def build_many_design(formula: str, responses: list[str], data: pd.DataFrame, na_action: str = "omit", *,
                      dialect: str = "python", contrasts=None) -> tuple[object | None, dict[str, str]]:
    """The shared design of the responses without missing values, and the formulas of
    those with missing values (fitted on their own).

    Returns
    -------
    many : ManyDesign or None
        The responses fitted from one pass (None when every response has missing values).
    apart : dict
        ``{response: its formula}`` for the responses with missing values where the
        predictors and groups are present.
    """
    for name in responses:
        if name not in data.columns:
            raise ModelDataError(f"response column {name!r} of formula {formula!r} is not in the data"
                                 f"{suggest_columns(name, data.columns)}")
        check_response_column(data[name], name)
    formulas = {name: response_formula(name, formula) for name in responses}
    parsed = parse_formula(formulas[responses[0]], data.columns, dialect=dialect, contrasts=contrasts,
                           dtypes=data.dtypes)
    try:
        variables = rhs_variables(parsed)
    except Exception:  # formulaic's parse errors: build_design words them below
        variables = set()
    predictors = sorted((variables | set(parsed.group_columns)) & set(data.columns))
    complete = ~data[predictors].isna().any(axis=1).to_numpy() if predictors else np.ones(len(data), bool)
    missing = {name: int(data[name].isna().to_numpy()[complete].sum()) for name in responses}
    apart = {name: formulas[name] for name in responses if missing[name] > 0}
    if apart and na_action == "raise":
        shown = ", ".join(f"{name!r}: {missing[name]}" for name in list(apart)[:10])
        raise ModelDataError(f"missing values in {len(apart)} of {len(responses)} responses ({shown}); drop them "
                             "or use na_action='omit' (each response is then fitted on its own complete rows)")
    if apart:
        shown = ", ".join(f"{name!r}: {missing[name]}" for name in list(apart)[:10])
        warn(f"{len(apart)} of {len(responses)} responses have missing values where the predictors are present "
             f"({shown}{' ...' if len(apart) > 10 else ''}); each is fitted on its own complete rows, as "
             "lmer would fit it alone")
    shared = [name for name in responses if missing[name] == 0]
    if not shared:
        return None, apart
    template: Design = build_design(formulas[shared[0]], data, na_action=na_action, dialect=dialect,
                                    contrasts=contrasts)
    # By position: the rows build_design kept are those complete in the predictors and
    # groups (the shared responses have no missing value there), whatever the index.
    Y = float_array(data.loc[:, shared], "the responses")[complete]
    if len(Y) != len(template.y) or not np.array_equal(Y[:, 0], template.y, equal_nan=True):
        raise RuntimeError("internal: the responses' rows do not match the design's rows")
    return ManyDesign(template, np.ascontiguousarray(Y), tuple(shared),
                      tuple(formulas[name] for name in shared)), apart
