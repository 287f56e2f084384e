"""``within(x)`` and ``between(x)``: split a predictor into its within- and between-group parts.

In an lmer formula, ``between(x)`` is the mean of ``x`` in each row's group of the
model's grouping factor, and ``within(x) = x - between(x)`` the deviation from it::

    y ~ within(x) + between(x) + (1|g)     # within-between model (Bell and Jones)
    y ~ x + between(x) + (1|g)             # Mundlak: the between(x) slope is the
                                           # contextual effect, between minus within

With ``(1|a:b)`` the groups are the combinations of ``a`` and ``b``. Any numeric
expression can be split (``within(np.log(x))``), and several variables each get their
own pair of columns.

Which rows the means come from
------------------------------
* **Fitting.** Rows with a missing value in any variable of the formula are dropped
  first, so the group means are taken over the rows the model actually uses: the
  ``within`` column sums to zero in every group of the fit.
* **New data** (``predict``, or a model spec applied to other rows). A level seen in
  the fit keeps the group mean of the fitting data, stored in the model spec, so a new
  row of a known group is centred the way the model was estimated. A level the fit
  never saw has no stored mean; it uses the mean of its *own* rows in the new data
  (missing values ignored), so a new group described by several rows gets its own
  between part. A new group given by a single row therefore has ``within = 0``.
* **Chunks, Dask, Parquet.** A first pass adds up each group's sums and rows over all
  chunks, so the means are those of all the fit's rows, as in memory
  (:mod:`reml_engine.scaleout.group_means`).

How it works
------------
The two functions are formulaic *stateful transforms*: on the fitting data they store
the group means in ``_state`` (formulaic keeps it in the model spec's
``transform_state``), and on new data they read them back. The grouping labels reach
them through the formula context that :func:`formula_context` builds; that is the only
hook in :mod:`reml_engine.frontend.design`.

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ within(x) + between(x) + (1|f)", data=rl.load_seed())
>>> round(m.fixef["within(x)"], 4)
0.4625
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from formulaic.utils.stateful_transforms import stateful_transform

from ..errors import ModelDataError
from .groups import encode_labels, level_positions
from .r_functions import R_FUNCTIONS

#: Name under which the model's group labels (one per row) enter the formula context.
GROUPS_KEY = "__reml_engine_groups__"

#: Names of the transforms, as they are written in formulas.
TRANSFORM_NAMES = ("within", "between")


def formula_context(groups=None) -> dict:
    """Names an lmer formula can use besides the data columns.

    Parameters
    ----------
    groups : array-like, optional
        The model's group label of each row of the data the formula is evaluated on.
        Without it, ``within()`` and ``between()`` raise when used.

    Returns
    -------
    dict
        ``within``, ``between``, ``pd``, the R functions a formula in R's dialect is
        translated to (:data:`reml_engine.frontend.formula_dialect.R_FUNCTIONS`) and, with
        ``groups``, the labels.
    """
    context = {**R_FUNCTIONS, "within": within, "between": between, "pd": pd}
    if groups is not None:
        context[GROUPS_KEY] = groups
    return context


def _numeric_columns(data, name: str) -> tuple[np.ndarray, bool]:
    """The values as a float (n, k) array, and whether they came as one column."""
    values = data.to_numpy() if isinstance(data, (pd.Series, pd.DataFrame)) else np.asarray(data)
    if values.dtype.kind not in "biuf":
        raise ModelDataError(
            f"{name}() needs a numeric variable, got dtype {values.dtype}; it splits a numeric predictor "
            "into its group mean and the deviation from it"
        )
    values = values.astype(np.float64)
    if values.ndim == 1:
        return values[:, None], True
    return values.reshape(len(values), -1), False


def _group_labels(context: Mapping | None, n: int, name: str):
    if context is None or GROUPS_KEY not in context:
        raise ModelDataError(
            f"{name}() centres on the model's grouping factor, which is only known inside an lmer formula "
            f"such as 'y ~ within(x) + between(x) + (1|g)'; for new data, pass the grouping column too"
        )
    labels = context[GROUPS_KEY]
    if len(labels) != n:
        raise ModelDataError(f"{name}(): {n} values but {len(labels)} group labels")
    return labels


def _means_by_code(values: np.ndarray, codes: np.ndarray, ngroups: int) -> np.ndarray:
    """Mean of each column per group code, ignoring missing values (NaN when none)."""
    present = np.isfinite(values)
    means = np.empty((ngroups, values.shape[1]))
    for j in range(values.shape[1]):
        ok = present[:, j] & (codes >= 0)
        total = np.bincount(codes[ok], weights=values[ok, j], minlength=ngroups)
        count = np.bincount(codes[ok], minlength=ngroups)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, j] = total / count
    return means


def group_means(data, _state: dict, _context: Mapping | None, name: str) -> tuple[np.ndarray, bool]:
    """Each row's group mean of ``data``: stored means for known levels, own rows for new ones.

    On the first call (the fitting data) the means of every level are computed and
    stored in ``_state``; later calls look them up.
    """
    values, one_column = _numeric_columns(data, name)
    labels = _group_labels(_context, len(values), name)
    coded = encode_labels(labels, sort=False)
    codes, levels = coded.codes, coded.levels
    local = _means_by_code(values, codes, len(levels))
    if "levels" not in _state:
        _state["levels"] = list(levels)
        _state["means"] = local.tolist()
        row_means = local[codes]
    else:
        stored_levels = pd.Index(_state["levels"])
        stored = np.asarray(_state["means"], dtype=np.float64).reshape(len(stored_levels), -1)
        if stored.shape[1] != values.shape[1]:
            raise ModelDataError(
                f"{name}(): the new data give {values.shape[1]} columns, the fit had {stored.shape[1]}"
            )
        position = level_positions(stored_levels, levels)
        # Known levels take the fitting data's mean; new levels keep their own rows' mean.
        known = position >= 0
        local[known] = stored[position[known]]
        row_means = local[codes]
    row_means[codes < 0] = np.nan  # a missing group label
    return row_means, one_column


def _shape_like_input(values: np.ndarray, one_column: bool) -> np.ndarray:
    return values[:, 0] if one_column else values


@stateful_transform
def between(data, _state: dict | None = None, _context: Mapping | None = None) -> np.ndarray:
    """The group mean of ``data`` in each row's group (the between-group part).

    Use inside an lmer formula: ``y ~ x + between(x) + (1|g)``. See the module
    docstring for which rows the means come from on new data.
    """
    means, one_column = group_means(data, _state if _state is not None else {}, _context, "between")
    return _shape_like_input(means, one_column)


@stateful_transform
def within(data, _state: dict | None = None, _context: Mapping | None = None) -> np.ndarray:
    """``data`` minus its group mean (the within-group part).

    Use inside an lmer formula: ``y ~ within(x) + between(x) + (1|g)``.
    """
    values, _ = _numeric_columns(data, "within")
    means, one_column = group_means(data, _state if _state is not None else {}, _context, "within")
    return _shape_like_input(values - means, one_column)


def split_columns(X: np.ndarray, codes: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
    """Within and between parts of every column of a design matrix.

    Parameters
    ----------
    X : (n, p) float array
    codes : (n,) int group codes ``0 .. ngroups - 1``
    ngroups : int

    Returns
    -------
    within, between : (n, p) arrays with ``X = within + between``.
    """
    means = _means_by_code(np.asarray(X, dtype=np.float64), codes, ngroups)
    between_part = means[codes]
    return X - between_part, between_part


__all__ = ["GROUPS_KEY", "TRANSFORM_NAMES", "between", "formula_context", "split_columns", "within"]
