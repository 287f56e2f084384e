"""What fails today: the issue 10 items that some variants hit, and the bugs this suite
found that the issue does not list. Each test of such a variant carries a strict xfail
(:func:`xfail_marks`) naming the item; the generated-data tests skip those variants
(:func:`.test_generated.issues_hit`). Once an item is fixed its tests pass, the strict
xfails fail, and the entry is to be removed here, which also lets the generated data
cover the area again.

The predicates say when a variant hits an item; they are checked on every run, since a
predicate too wide makes a strict xfail pass (a failure) and one too narrow a test fail.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from .relations import Case

#: Issue 10's items by number (item 10 by its parts), the bugs found here by letter.
KNOWN_ISSUES = {
    1: "issue 10 item 1: the fast design path builds its columns from the first 16 rows and drops a factor "
       "that has one level there",
    2: "issue 10 item 2: x*f with x far from 0: the centring misses the interaction columns",
    3: "issue 10 item 3: group ids whose type changes between chunks or files split groups (5 and '5')",
    4: "issue 10 item 4: pandas string dtypes in a factor are taken for numbers",
    5: "issue 10 item 5: a failed predict mutates the model spec's encoder state",
    7: "issue 10 item 7: (1|a:b) labels containing ':' collide, and newdata with int a finds no group of a "
       "fit whose a was float",
    8: "issue 10 item 8: uint64 ids at or above 2**63",
    "10 unused": "issue 10 item 10: unused categories are kept (lme4 drops them, so the reference level differs)",
    "10 dotted": "issue 10 item 10: dotted names (Sepal.Length) are reported missing",
    "10 Intercept": "issue 10 item 10: a non-constant column named Intercept is dropped",
    "10 one": "issue 10 item 10: a column named `1` becomes the intercept",
    "errors: chunk": "issue 10, errors that must name the problem: a chunk missing a column, or an empty chunk "
                     "without columns, raises a bare KeyError",
    "errors: lists": "issue 10, errors that must name the problem: Python lists in fit_arrays (AttributeError: "
                     "'list' object has no attribute 'ndim')",
    # Found by this suite, in no item of issue 10:
    "A": "not in issue 10: with as few groups as fixed columns, a predictor far from 0 is called constant "
         "within groups (check_identifiable scales by the raw, not the centred, norm) and the fit refuses",
    "B": "not in issue 10: a chunked fit misses an exact collinearity that the in-memory fit drops (one-pass "
         "statistics about the first chunk's means), and crashes in lme4_default_optimum (max() of no optima) "
         "or in the optimizer (NaN criterion)",
    "C": "not in issue 10: a grouping column whose name needs backticks ((1|`subject id`)) is looked up with its "
         "backticks and reported missing",
    "D": "not in issue 10: predict(newdata) of an intercept-only model (y ~ 1 + (1|g)) crashes: 'assignment "
         "destination is read-only' (new_fixed_design writes NaN rows into formulaic's read-only matrix)",
}


def intercept_only(case: Case) -> bool:
    """``y ~ 1 + (1|g)``: no predictor (issue "D" for predict(newdata))."""
    return not case.predictors


def xfail_marks(items) -> list:
    """Strict xfail marks for the known issue items a test hits (none: no marks)."""
    items = sorted(set(i for i in items if i in KNOWN_ISSUES), key=str)
    if not items:
        return []
    return [pytest.mark.xfail(strict=True, reason="; ".join(KNOWN_ISSUES[i] for i in items))]


def fast_path_drops_a_factor(case: Case, data: pd.DataFrame) -> bool:
    """Item 1: an additive formula whose numeric columns are plain NumPy numbers (the fast
    path's condition) and a text (not categorical) factor with one level in the first 16
    complete rows."""
    if case.interactions or not case.factors or re.search(r"[()]", case.fixed):
        return False
    numbers = (case.response, *case.numeric)
    if not all(isinstance(data[c].dtype, np.dtype) and data[c].dtype.kind in "iuf" for c in numbers):
        return False
    complete = case.complete(data)
    head = complete.iloc[:16]
    text = [c for c in case.factors if not isinstance(data[c].dtype, pd.CategoricalDtype)]
    return len(complete) > 16 and any(head[c].nunique() < 2 for c in text)


#: Item 2: a predictor of an interaction whose mean is this many standard deviations
#: from 0 loses about eps * ratio**2 of the criterion today (the x:f columns are not
#: centred): 3e-10 at a ratio of 860, 1e-6 at 1.3e5. Below it the relations hold.
FAR_FROM_ZERO = 300.0


def far_from_zero(values: pd.Series, ratio: float = FAR_FROM_ZERO) -> bool:
    """The column's mean is ``ratio`` standard deviations or more from 0."""
    values = values.astype(np.float64).dropna()
    spread = float(values.std()) if len(values) > 1 else 0.0
    return abs(float(values.mean())) >= ratio * spread


def in_interaction(case: Case, column: str) -> bool:
    """True when ``column`` is part of an interaction term of the fixed part."""
    rhs = case.fixed.split("~", 1)[1]
    terms = [t for t in re.split(r"\+", rhs) if "*" in t or ":" in t]
    return any(column in [p.strip() for p in re.split(r"[*:]", t)] for t in terms)


#: Issue "A" shows from about this ratio of a predictor's mean to its spread (the
#: check's tolerance, 1e-10, is on the squared ratio).
FAR_FOR_THE_CHECKS = 1e4


def few_groups_far_from_zero(case: Case, data: pd.DataFrame) -> bool:
    """Issue "A": the intercept and the numeric predictors whose mean is
    FAR_FOR_THE_CHECKS standard deviations from 0 (which the check takes for constant
    within groups) are at least as many as the groups."""
    complete = case.complete(data)
    far = sum(far_from_zero(complete[c], FAR_FOR_THE_CHECKS) for c in case.numeric)
    return far > 0 and complete[case.group].nunique() <= 1 + far


def is_nullable_string(dtype) -> bool:
    """``string[python]`` or ``string[pyarrow]`` (missing values pd.NA), as
    ``convert_dtypes()`` and ``read_csv(dtype_backend=...)`` give them; not pandas 3's
    default ``str``."""
    return isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA


def string_factor(data: pd.DataFrame, case: Case) -> bool:
    """Item 4: a factor of the fixed part in a nullable pandas string dtype."""
    return any(is_nullable_string(data[c].dtype) for c in case.predictors)
