"""From an lme4-style formula and a DataFrame to the arrays the engine fits.

``"y ~ x + cat + (1|g)"`` splits into the fixed part ``y ~ x + cat``, built by formulaic
(categoricals, interactions, transforms, intercept removal), and the grouping term
``(1|g)``; ``(1|a:b)`` groups by the combination of columns a and b. Rows with missing
values in any variable used are dropped with a warning (``na_action="omit"``, lme4's
default) or make the fit fail (``na_action="raise"``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .checks import (
    ModelDataError,
    check_design_finite,
    check_response,
    check_response_column,
    suggest_columns,
    warn,
)
from .groups import group_labels, level_positions
from .within_between import TRANSFORM_NAMES, formula_context

_RANDOM_TERM = re.compile(r"\(\s*([^()|]*?)\s*\|\s*([^()]+?)\s*\)")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
#: Names a formula may use that are functions or modules, not columns.
_FORMULA_NAMESPACE = ("np", "numpy", "pd", "C", "I", "Q", *TRANSFORM_NAMES)

#: Name of the intercept column, as lme4 prints it.
INTERCEPT_NAME = "(Intercept)"


@dataclass(frozen=True)
class ParsedFormula:
    """An lmer formula split into its fixed part and its grouping factor(s)."""

    formula: str
    fixed: str
    response: str
    group_columns: tuple[str, ...]

    @property
    def group_name(self) -> str:
        return ":".join(self.group_columns)


def parse_formula(formula: str) -> ParsedFormula:
    """Split ``"y ~ fixed + (1|g)"`` into the fixed formula and the grouping columns.

    Examples
    --------
    >>> parse_formula("y ~ x + (1|g)").fixed
    'y ~ x'
    >>> parse_formula("y ~ (1 | a:b) + x").group_columns
    ('a', 'b')
    """
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelDataError(f"formula must be a string like 'y ~ x + (1|g)', got {formula!r}")
    lhs, rhs = formula.split("~", 1)
    response = lhs.strip()
    if not response:
        raise ModelDataError(f"formula {formula!r} has no response on the left of '~'")
    terms = _RANDOM_TERM.findall(rhs)
    if not terms:
        raise ModelDataError(
            f"formula {formula!r} has no random-intercept term; add one such as '(1|group)'"
        )
    if len(terms) > 1:
        raise ModelDataError(
            f"formula {formula!r} has {len(terms)} random terms; reml_engine fits one random intercept '(1|g)'"
        )
    effect, group = terms[0]
    if effect.replace(" ", "") not in ("1", "1+0", "0+1", ""):
        raise ModelDataError(
            f"random term '({effect}|{group})' is not a random intercept; reml_engine fits '(1|{group})' only"
        )
    if "/" in group:
        raise ModelDataError(f"nested grouping '({effect}|{group})' is not supported; use one factor or a:b")
    group_columns = tuple(part.strip() for part in group.split(":"))
    fixed_rhs = _RANDOM_TERM.sub("", rhs)
    fixed_rhs = re.sub(r"\+\s*\+", "+", fixed_rhs).strip()
    fixed_rhs = re.sub(r"^\+|\+$", "", fixed_rhs).strip()
    fixed_rhs = re.sub(r"^\+|\+$", "", fixed_rhs).strip()
    if not fixed_rhs:
        fixed_rhs = "1"
    elif fixed_rhs in ("0", "-1", "- 1", "0 +", "+ 0"):
        fixed_rhs = "0"
    return ParsedFormula(formula, f"{response} ~ {fixed_rhs}", response, group_columns)


@dataclass(frozen=True)
class Design:
    """The arrays of a model: X (n, p), y (n,), group labels, and how they were made."""

    X: np.ndarray
    y: np.ndarray
    groups: pd.Series | pd.MultiIndex
    column_names: tuple[str, ...]
    response_name: str
    group_name: str
    intercept_index: int | None
    formula: ParsedFormula | None = None
    model_spec: object | None = None
    row_index: pd.Index | None = None
    n_dropped_rows: int = 0


def _required_variables(parsed: ParsedFormula) -> list[str]:
    import formulaic

    names = set(formulaic.Formula(parsed.fixed).required_variables)
    names.update(parsed.group_columns)
    return sorted(str(n) for n in names)


def _one_line(err: Exception) -> str:
    """formulaic's error text on one line, without its terminal colour codes."""
    text = _ANSI_ESCAPE.sub("", str(err))
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _columns_listing(data: pd.DataFrame) -> str:
    shown = ", ".join(map(str, data.columns[:20]))
    return shown + (" ..." if len(data.columns) > 20 else "")


def _check_columns_exist(data: pd.DataFrame, needed: list[str], parsed: ParsedFormula) -> list[str]:
    """The variables of the formula that are columns (others are functions like np)."""
    # The response may be an expression such as np.log(y): its variables are in needed.
    roles = [("response", parsed.response)] if _PLAIN_NAME.match(parsed.response) else []
    roles += [("grouping", name) for name in parsed.group_columns]
    for role, name in roles:
        if name not in data.columns:
            raise ModelDataError(
                f"{role} column {name!r} of formula {parsed.formula!r} is not in the data"
                f"{suggest_columns(name, data.columns)}; columns are: {_columns_listing(data)}"
            )
    missing = [name for name in needed if name not in data.columns]
    present = [name for name in needed if name in data.columns]
    # Names formulaic needs that are neither columns nor functions are typos.
    unknown = [m for m in missing if m not in _FORMULA_NAMESPACE]
    if unknown:
        hints = "".join(suggest_columns(m, data.columns) for m in unknown)
        raise ModelDataError(
            f"variable(s) {', '.join(map(repr, unknown))} of formula {parsed.formula!r} are not columns of "
            f"the data{hints}; columns are: {_columns_listing(data)}"
        )
    return present


def _many_levels_hint(clean: pd.DataFrame, used: list[str], response: str) -> str:
    """Text columns used as predictors, which formulaic turns into one column per level."""
    text = [
        c for c in used
        if c != response and not pd.api.types.is_numeric_dtype(clean[c]) and not pd.api.types.is_bool_dtype(clean[c])
    ]
    if not text:
        return ""
    levels = ", ".join(f"{c!r} has {clean[c].nunique()} levels" for c in text)
    return f" (text columns are treated as categorical: {levels}; convert numbers stored as text with pd.to_numeric)"


def _drop_missing(data: pd.DataFrame, used: list[str], na_action: str) -> tuple[pd.DataFrame, int]:
    missing = data[used].isna()
    bad_rows = missing.any(axis=1)
    n_bad = int(bad_rows.sum())
    if n_bad == 0:
        return data, 0
    per_column = {c: int(v) for c, v in missing.sum().items() if v}
    detail = ", ".join(f"{c!r}: {v}" for c, v in per_column.items())
    if na_action == "raise":
        raise ModelDataError(f"missing values in {n_bad} rows ({detail}); drop them or use na_action='omit'")
    warn(f"dropped {n_bad} of {len(data)} rows with missing values ({detail})")
    return data.loc[~bad_rows.to_numpy()], n_bad


def build_design(formula: str, data: pd.DataFrame, na_action: str = "omit") -> Design:
    """Parse the formula and build the fixed-effect design, response and groups.

    Parameters
    ----------
    formula : str
        ``"response ~ fixed terms + (1|group)"``.
    data : pandas.DataFrame
    na_action : {"omit", "raise"}
    """
    from .fast_design import model_matrices

    if na_action not in ("omit", "raise"):
        raise ValueError(f"na_action must be 'omit' or 'raise', got {na_action!r}")
    if not isinstance(data, pd.DataFrame):
        raise ModelDataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    parsed = parse_formula(formula)
    if len(data) == 0:
        raise ModelDataError("the data frame is empty: no observations to fit")
    try:
        needed = _required_variables(parsed)
    except Exception as err:  # formulaic's parse errors
        raise ModelDataError(f"cannot parse the fixed part {parsed.fixed!r}: {_one_line(err)}") from None
    used = _check_columns_exist(data, needed, parsed)
    if parsed.response in data.columns:
        check_response_column(data[parsed.response], parsed.response)
    clean, n_dropped = _drop_missing(data, used, na_action)
    if len(clean) == 0:
        raise ModelDataError(
            f"no observations left after dropping the rows with missing values in {', '.join(map(repr, used))}"
        )
    try:
        context = formula_context(group_labels(clean, parsed.group_columns))
        # Invalid values (log of a negative number) become NaN or inf; the finiteness
        # checks below name the column, so numpy's own warning would only add noise.
        with np.errstate(all="ignore"):
            # Plain numeric columns skip formulaic's materialization (see fast_design).
            matrices = model_matrices(parsed.fixed, clean, context)
    except ModelDataError:
        raise
    except Exception as err:
        raise ModelDataError(
            f"cannot build the fixed-effect design from {parsed.fixed!r}: {_one_line(err)}"
        ) from None
    rhs = matrices.rhs
    names = tuple(INTERCEPT_NAME if c == "Intercept" else str(c) for c in rhs.columns)
    X = np.asarray(rhs.to_numpy(dtype=np.float64))
    y = np.asarray(matrices.lhs.to_numpy(dtype=np.float64))
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ModelDataError(f"response {parsed.response!r} must be one column, got {y.shape[1]}")
        y = y[:, 0]
    check_response(y, parsed.response)
    check_design_finite(X, names)
    if X.shape[1] >= len(y):
        raise ModelDataError(
            f"{len(y)} observations for {X.shape[1]} fixed-effect columns: the residual variance is not "
            f"identified{_many_levels_hint(clean, used, parsed.response)}"
        )
    intercept = names.index(INTERCEPT_NAME) if INTERCEPT_NAME in names else None
    groups = group_labels(clean, parsed.group_columns)
    return Design(
        X=X,
        y=y,
        groups=groups,
        column_names=names,
        response_name=parsed.response,
        group_name=parsed.group_name,
        intercept_index=intercept,
        formula=parsed,
        model_spec=rhs.model_spec,
        row_index=clean.index,
        n_dropped_rows=n_dropped,
    )


def design_from_arrays(X, y, groups, names=None) -> Design:
    """Validate arrays for :func:`reml_engine.fit` and wrap them as a :class:`Design`."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ModelDataError(f"X must be a 2-d array (n, p), got shape {X.shape}")
    if y.ndim != 1:
        raise ModelDataError(f"y must be a 1-d array, got shape {y.shape}")
    n = len(y)
    if X.shape[0] != n:
        raise ModelDataError(f"X has {X.shape[0]} rows but y has {n}")
    if names is None:
        names = tuple(f"x{j}" for j in range(X.shape[1]))
    names = tuple(str(n_) for n_ in names)
    if len(names) != X.shape[1]:
        raise ModelDataError(f"{len(names)} names for {X.shape[1]} columns of X")
    if not np.issubdtype(y.dtype, np.number):
        raise ModelDataError(f"y is not numeric (dtype {y.dtype})")
    y = y.astype(np.float64, copy=False)
    # The values (finite, in range, y not constant) and the intercept column are checked
    # from the statistics of the one pass over the data (model.fit_design).
    groups = pd.Series(groups) if not isinstance(groups, pd.Series) else groups
    if len(groups) != n:
        raise ModelDataError(f"groups has {len(groups)} labels but y has {n} rows")
    return Design(X=X, y=y, groups=groups, column_names=names, response_name="y",
                  group_name=str(groups.name) if groups.name is not None else "group",
                  intercept_index=None)


def new_design_matrix(design: Design, newdata: pd.DataFrame, columns=None) -> np.ndarray:
    """The fixed-effect design for new data, with the fitting data's encoding.

    ``columns`` (coefficient names) selects and orders the columns, leaving out those a
    rank-deficient fit dropped; by default every column of the formula is returned.
    """
    if design.model_spec is None:
        raise ModelDataError("this fit was made from arrays: pass the design matrix of the new data instead")
    group_columns = design.formula.group_columns if design.formula is not None else ()
    has_groups = bool(group_columns) and all(c in newdata for c in group_columns)
    groups = group_labels(newdata, group_columns) if has_groups else None
    mm = design.model_spec.get_model_matrix(newdata, na_action="ignore", context=formula_context(groups))
    if columns is not None:
        mm.columns = [INTERCEPT_NAME if c == "Intercept" else str(c) for c in mm.columns]
        mm = mm.reindex(columns=list(columns))
    return np.asarray(mm.to_numpy(dtype=np.float64))


def _match_new_levels(design: Design, newdata: pd.DataFrame) -> pd.DataFrame:
    """New data whose categorical predictors hold the fit's levels, matched by the
    canonical label rule (:mod:`reml_engine.groups`: 1, 1.0 and "1" are one level);
    a level not seen in fitting is an error."""
    matched = newdata
    for variable, (kind, state) in design.model_spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        inner = re.fullmatch(r"C\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(,.*)?\)", str(variable))
        column = inner.group(1) if inner else str(variable)
        if column not in newdata.columns:
            continue
        values = newdata[column]
        categories = pd.Index(state["categories"])
        positions = level_positions(categories, values)
        unseen = values.notna().to_numpy() & (positions < 0)
        if unseen.any():
            levels = sorted(map(str, pd.unique(values[unseen])))
            known = ", ".join(repr(str(c)) for c in state["categories"][:10])
            raise ModelDataError(
                f"column {column!r} of newdata has level(s) {', '.join(map(repr, levels[:5]))} not seen in "
                f"fitting (known: {known}); its fixed effect cannot be predicted"
            )
        if matched is newdata:
            matched = newdata.copy(deep=False)
        matched[column] = pd.Categorical.from_codes(positions, categories=categories)
    return matched


def new_fixed_design(design: Design, newdata: pd.DataFrame, columns) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-effect design of new data, with the fitting data's encoding.

    Parameters
    ----------
    design : Design
        The design of the fit (from :func:`build_design`).
    newdata : pandas.DataFrame
        Must hold every column the fixed part uses.
    columns : sequence of str
        The fit's coefficient names (columns dropped as rank deficient are left out).

    Returns
    -------
    X : float64 (m, p)
        Rows with missing predictors hold NaN.
    complete : bool (m,)
        Rows whose predictors are all present.
    """
    if design.model_spec is None:
        raise ModelDataError("this fit was made from arrays: pass X= and groups= for new rows instead of newdata")
    if not isinstance(newdata, pd.DataFrame):
        raise ModelDataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    needed = sorted(str(v) for v in design.model_spec.required_variables)
    absent = [v for v in needed if v not in newdata.columns and v not in _FORMULA_NAMESPACE]
    if absent:
        raise ModelDataError(
            f"newdata has no column(s) {', '.join(map(repr, absent))}, which the fixed effects use"
            f"{suggest_columns(absent[0], newdata.columns)}"
        )
    present = [v for v in needed if v in newdata.columns]
    complete = ~newdata[present].isna().any(axis=1).to_numpy() if present else np.ones(len(newdata), bool)
    if len(newdata) == 0:
        return np.zeros((0, len(columns))), complete
    newdata = _match_new_levels(design, newdata)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # unseen levels were checked above; NaN rows are flagged
            X = new_design_matrix(design, newdata, columns)
    except ModelDataError:
        raise
    except Exception as err:
        raise ModelDataError(f"cannot build the fixed-effect design of newdata: {_one_line(err)}") from None
    X[~complete] = np.nan
    return X, complete


__all__ = ["Design", "ParsedFormula", "build_design", "design_from_arrays", "parse_formula", "warn"]
