"""Group codes from any labels: strings, integers of any size, categoricals.

Levels are returned in sorted order, as R's ``factor()`` orders them, so that ``ranef``
rows come out in the order lme4 users expect. Unused categories are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .kernels import dense_integer_codes

#: Integer labels whose range (max - min + 1) is at most this many times the number of
#: rows are coded by a direct table lookup instead of hashing.
DENSE_SPAN_FACTOR = 4


@dataclass(frozen=True)
class GroupCodes:
    """Integer codes ``0 .. ngroups - 1`` per row, and the label of each code."""

    codes: np.ndarray
    levels: pd.Index

    @property
    def ngroups(self) -> int:
        return len(self.levels)


def factorize_groups(groups, name: str = "group") -> GroupCodes:
    """Code group labels as ``0 .. G - 1`` in sorted label order.

    Parameters
    ----------
    groups : array-like or pandas Series
        One label per row. Missing labels are an error: drop those rows first.
    name : str
        The grouping variable's name, used in error messages.

    Examples
    --------
    >>> factorize_groups(["b", "a", "b"]).codes
    array([1, 0, 1])
    """
    if isinstance(groups, (pd.Series, pd.Index, pd.Categorical)):
        values = groups.array if not isinstance(groups, pd.Categorical) else groups
    else:
        values = np.asarray(groups)
        if values.ndim != 1:
            raise ValueError(f"groups ({name}) must be one-dimensional, got shape {values.shape}")
    if isinstance(values, pd.Categorical) or isinstance(
        getattr(values, "dtype", None), pd.CategoricalDtype
    ):
        cat = pd.Categorical(values)
        if (cat.codes < 0).any():
            raise ValueError(f"grouping variable {name!r} has {int((cat.codes < 0).sum())} missing labels")
        cat = cat.remove_unused_categories()
        return GroupCodes(cat.codes.astype(np.int64), pd.Index(cat.categories, name=name))

    arr = np.asarray(values)
    if arr.dtype.kind in "iu" and arr.size:
        lo = int(arr.min())
        hi = int(arr.max())
        span = hi - lo + 1
        if span <= DENSE_SPAN_FACTOR * arr.size + 1024:
            codes, level_pos = dense_integer_codes(arr.astype(np.int64, copy=False), lo, span)
            return GroupCodes(codes, pd.Index(level_pos + lo, name=name))
    if pd.isna(pd.Series(arr)).any() if arr.dtype.kind in "fOUSM" else False:
        n_missing = int(pd.isna(pd.Series(arr)).sum())
        raise ValueError(f"grouping variable {name!r} has {n_missing} missing labels; drop those rows first")
    codes, uniques = pd.factorize(arr, sort=True)
    return GroupCodes(codes.astype(np.int64, copy=False), pd.Index(uniques, name=name))
