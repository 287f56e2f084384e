"""From an lme4-style formula and a DataFrame to the arrays the engine fits.

``"y ~ x + cat + (1|g)"`` splits into the fixed part ``y ~ x + cat``, built by formulaic
(categoricals, interactions, transforms, intercept removal), and the grouping term
``(1|g)``; ``(1|a:b)`` groups by the combination of columns a and b, and lme4's
``(1|factor(g))`` and ``(1||g)`` mean ``(1|g)``. R's dotted column names
(``Sepal.Length``) are quoted for formulaic. Rows with missing values in any variable
used are dropped with a warning (``na_action="omit"``, lme4's default) or make the fit
fail (``na_action="raise"``). The columns' dtypes are brought to those formulaic reads
as R reads numbers and factors first (:mod:`reml_engine.frontend.columns`).

The design of new data (``predict``) is built from a copy of the fit's formulaic model
spec, after checks that name the column at fault: the fit never changes.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import ModelDataError, warn
from .arguments import check_na_action
from .columns import (
    NUMBERS_OR_NOTHING,
    column_dtypes,
    design_frame,
    drop_unused_categories,
    float_array,
    holds_numbers,
    is_number_dtype,
    na_text_hint,
    type_names,
)
from .data_checks import (
    check_design_finite,
    check_response,
    check_response_column,
    missing_rows,
    refuse_missing,
    suggest_columns,
    warn_dropped,
)
from .fast_design import model_matrices
from .formula import (
    FORMULAIC_INTERCEPT,
    INTERCEPT_NAME,
    ParsedFormula,
    backticked_names,
    fixed_variables,
    functions_called,
    intercept_position,
    is_plain_name,
    lme4_column_names,
    parse_formula,
    rhs_variables,
)
from .groups import group_labels, level_positions
from .term_recipes import recipe_matrices
from .transforms import formula_context

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


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
    #: The index of every row of the data, dropped ones included, and which of them were
    #: fitted (None: all): fitted values and residuals are laid out on it, NaN where a
    #: row was dropped (R's ``na.exclude``). A mask, not labels, as labels may repeat.
    data_index: pd.Index | None = None
    kept_rows: np.ndarray | None = None
    #: (name, dtype) of the data columns the fixed part read as numbers: new data must
    #: give numbers there too.
    numeric_columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FixedEncoding:
    """How rows become the fixed-effect design, without any rows: what ``predict``,
    ``simulate`` and the type III table need from a fit made chunk by chunk (a
    :class:`Design` carries the same three attributes for an in-memory fit).

    Attributes
    ----------
    formula : ParsedFormula
        The formula as fitted (after the dialect's translation).
    model_spec : formulaic.ModelSpec
        The fixed part's spec, with the fit's factor levels.
    numeric_columns : tuple of (str, str)
        ``(name, dtype)`` of the data columns the fixed part read as numbers.
    """

    formula: ParsedFormula
    model_spec: object = field(repr=False)
    numeric_columns: tuple[tuple[str, str], ...] = ()


def _one_line(err: Exception) -> str:
    """formulaic's error text on one line, without its terminal colour codes."""
    text = _ANSI_ESCAPE.sub("", str(err))
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _columns_listing(columns: pd.Index) -> str:
    shown = ", ".join(map(str, columns[:20]))
    return shown + (" ..." if len(columns) > 20 else "")


def check_columns_exist(columns: pd.Index, needed: list[str], parsed: ParsedFormula) -> list[str]:
    """The variables of the formula that are columns of the data (others are functions
    like np); an error naming the column (with close names) for the response, a grouping
    column or a variable the data do not have."""
    # The response may be an expression such as np.log(y): its variables are in needed.
    roles = [("response", parsed.response)] if is_plain_name(parsed.response) else []
    roles += [("grouping", name) for name in parsed.group_columns]
    roles += [("offset", name) for name in parsed.offset_columns]
    for role, name in roles:
        if name not in columns:
            raise ModelDataError(
                f"{role} column {name!r} of formula {parsed.formula!r} is not in the data"
                f"{suggest_columns(name, columns)}; columns are: {_columns_listing(columns)}"
            )
    missing = [name for name in needed if name not in columns]
    present = [name for name in needed if name in columns]
    # Names formulaic needs that are neither columns nor functions are typos.
    functions = functions_called(parsed)
    unknown = [m for m in missing if m not in functions]
    if unknown:
        hints = "".join(suggest_columns(m, columns) for m in unknown)
        raise ModelDataError(
            f"variable(s) {', '.join(map(repr, unknown))} of formula {parsed.formula!r} are not columns of "
            f"the data{hints}; columns are: {_columns_listing(columns)}"
        )
    _check_reserved_names(columns, present, parsed)
    return present


def _check_reserved_names(columns: pd.Index, used: list[str], parsed: ParsedFormula) -> None:
    """Columns the design would confuse with something else: a name that several
    columns share, or a name formulaic gives the intercept.

    A column named ``Intercept`` or `` `1` `` is refused where formulaic reads it, in the
    fixed part: its ``Intercept`` column would take the intercept's name, and `` `1` ``
    is formulaic's intercept. Renaming such a column through every path (in memory,
    chunks, Dask, predict, the anova's terms) would cost more than the error, which names
    the column and says how to rename it. The response and a grouping column of either
    name are read by name, not by formulaic, and fit.
    """
    duplicated = set() if columns.is_unique else set(columns[columns.duplicated()])
    for name in used:
        if name in duplicated:
            raise ModelDataError(
                f"the data have {int((columns == name).sum())} columns named {name!r}, which formula "
                f"{parsed.formula!r} uses; rename them so that each name is one column"
            )
    if FORMULAIC_INTERCEPT in used and FORMULAIC_INTERCEPT != parsed.response \
            and FORMULAIC_INTERCEPT in fixed_variables(parsed):
        raise ModelDataError(
            f"column {FORMULAIC_INTERCEPT!r} has the name formulaic gives the intercept column, so the two "
            f"would be confused; rename the column (data.rename(columns={{{FORMULAIC_INTERCEPT!r}: ...}}))"
        )
    for name in backticked_names(parsed.fixed):
        if name.strip() == "1" and name in columns:
            raise ModelDataError(
                f"formula {parsed.formula!r} names column {name!r} as `{name}`, which formulaic reads as "
                f"the intercept; rename the column (data.rename(columns={{{name!r}: ...}}))"
            )


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


def _drop_missing(data: pd.DataFrame, used: list[str], na_action: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The complete rows and the mask of the rows dropped (after the warning, or the
    error under ``na_action="raise"``)."""
    bad_rows, per_column = missing_rows(data, used)
    if not per_column:
        return data, bad_rows
    n_bad = int(bad_rows.sum())
    hint = na_text_hint(data, per_column)
    if na_action == "raise":
        refuse_missing(n_bad, per_column, hint)
    warn_dropped(n_bad, len(data), per_column)
    if hint:
        # A warning of its own: the row count above is worded as chunked fits word it.
        warn(hint)
    return data.loc[~bad_rows], bad_rows


def build_design(formula: str, data: pd.DataFrame, na_action: str = "omit", *, dialect: str = "python",
                 contrasts=None, several_terms: bool = False, extra_columns: tuple[str, ...] = ()) -> Design:
    """Parse the formula and build the fixed-effect design, response and groups.

    Parameters
    ----------
    formula : str
        ``"response ~ fixed terms + (1|group)"``.
    data : pandas.DataFrame
    na_action : {"omit", "raise"}
    dialect : {"python", "R"}
        The language of the formula (:mod:`reml_engine.frontend.formula_dialect`).
    contrasts : dict, optional
        ``{column: coding}`` of categorical columns (``"contr.sum"``, ...).
    several_terms : bool
        Read any number of random terms and ``offset(z)`` (``parse_formula``'s
        ``several_terms``); ``groups`` are then the labels of every grouping column
        together, and :mod:`reml_engine.frontend.terms_design` codes each term.
    extra_columns : tuple of str
        Further columns whose rows with missing values are dropped with the others (the
        offset and weights columns), checked by the caller.
    """
    check_na_action(na_action)
    if not isinstance(formula, str) and isinstance(data, str) and "~" in data:
        raise ModelDataError("the formula comes first: call lmer(formula, data), not lmer(data, formula)")
    if not isinstance(data, pd.DataFrame):
        raise ModelDataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    parsed = parse_formula(formula, data.columns, dialect=dialect, contrasts=contrasts, dtypes=data.dtypes,
                           several_terms=several_terms)
    if len(data) == 0:
        raise ModelDataError("the data frame is empty: no observations to fit")
    try:
        fixed_names = fixed_variables(parsed)
    except Exception as err:  # formulaic's parse errors
        raise ModelDataError(f"cannot parse the fixed part {parsed.fixed!r}: {_one_line(err)}") from None
    used = check_columns_exist(data.columns, sorted(fixed_names | set(parsed.group_columns)), parsed)
    fixed_columns = [c for c in used if c in fixed_names]
    used += [c for c in (*parsed.offset_columns, *extra_columns) if c not in used]
    if parsed.response in data.columns:
        check_response_column(data[parsed.response], parsed.response)
    dtypes = column_dtypes(data, fixed_columns)
    clean, dropped_rows = _drop_missing(data, used, na_action)
    n_dropped = int(dropped_rows.sum())
    if len(clean) == 0:
        raise ModelDataError(
            f"no observations left after dropping the rows with missing values in {', '.join(map(repr, used))}"
        )
    clean = drop_unused_categories(clean, dtypes)
    # The grouping columns keep their own dtype: groups.py codes any labels.
    frame = design_frame(clean, fixed_columns, dtypes=dtypes)
    try:
        groups = group_labels(clean, parsed.group_columns)
        context = formula_context(groups)
        # Invalid values (log of a negative number) become NaN or inf; the finiteness
        # checks below name the column, so numpy's own warning would only add noise.
        with np.errstate(all="ignore"):
            # Numeric and factor terms skip formulaic's materialization (see term_recipes),
            # plain numeric columns too on the general path (see fast_design).
            matrices = recipe_matrices(parsed.fixed, frame, context)
            if matrices is None:
                matrices = model_matrices(parsed.fixed, frame, context)
    except ModelDataError:
        raise
    except Exception as err:
        raise ModelDataError(
            f"cannot build the fixed-effect design from {parsed.fixed!r}: {_one_line(err)}"
        ) from None
    rhs = matrices.rhs
    names = lme4_column_names(rhs.columns)
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
    intercept = intercept_position(names)
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
        data_index=data.index,
        kept_rows=~dropped_rows if n_dropped else None,
        numeric_columns=tuple(
            (c, str(dtype)) for c, dtype in dtypes.items() if is_number_dtype(dtype)
        ),
    )


def check_array_shapes(X, y, groups, names=None) -> tuple:
    """The shapes of :func:`reml_engine.fit`'s arrays, which a chunked fit
    (:func:`reml_engine.scaleout.chunked.fit_arrays`) also reads without loading them.

    Returns ``X`` (a 1-d X is one column, as a view) and one name per column of X (by
    default ``x0, x1, ...``); an error names the array whose shape or length is wrong.
    """
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ModelDataError(f"X must be a 2-d array (n, p), got shape {X.shape}")
    if y.ndim != 1:
        raise ModelDataError(f"y must be a 1-d array, got shape {y.shape}")
    if np.ndim(groups) != 1:
        raise ModelDataError(f"groups must be 1-d, one label per row, got shape {np.shape(groups)}")
    n = len(y)
    if X.shape[0] != n:
        raise ModelDataError(f"X has {X.shape[0]} rows but y has {n}")
    if len(groups) != n:
        raise ModelDataError(f"groups has {len(groups)} labels but y has {n} rows")
    if isinstance(names, str):
        raise ModelDataError(f"names must be a sequence of column names, one per column of X, got the string {names!r}")
    names = tuple(f"x{j}" for j in range(X.shape[1])) if names is None else tuple(str(name) for name in names)
    if len(names) != X.shape[1]:
        raise ModelDataError(f"{len(names)} names for {X.shape[1]} columns of X")
    return X, names


def design_from_arrays(X, y, groups, names=None) -> Design:
    """Validate arrays for :func:`reml_engine.fit` and wrap them as a :class:`Design`."""
    X = float_array(X, "X", allow_bool=True)
    y = float_array(y, "y")
    groups = pd.Series(groups) if not isinstance(groups, pd.Series) else groups
    X, names = check_array_shapes(X, y, groups, names)
    # The values (finite, in range, y not constant) and the intercept column are checked
    # from the statistics of the one pass over the data (core.statistics.sufficient_statistics).
    return Design(X=X, y=y, groups=groups, column_names=names, response_name="y",
                  group_name=str(groups.name) if groups.name is not None else "group",
                  intercept_index=None)


def model_spec_copy(design: Design | FixedEncoding):
    """A copy of the fit's formulaic model spec, to build designs of other data with.

    formulaic updates a spec's encoder state while it materializes data (a numeric
    column given as text makes it record text categories), so the fit's own spec is
    never handed to it: a failed ``predict`` must leave the fit as it was.
    """
    if design.model_spec is None:
        return None
    return copy.deepcopy(design.model_spec)


def new_design_matrix(design: Design | FixedEncoding, newdata: pd.DataFrame, columns=None) -> np.ndarray:
    """The fixed-effect design for new data, with the fitting data's encoding.

    ``columns`` (coefficient names) selects and orders the columns, leaving out those a
    rank-deficient fit dropped; by default every column of the formula is returned.
    """
    if design.model_spec is None:
        raise ModelDataError("this fit was made from arrays: pass the design matrix of the new data instead")
    group_columns = design.formula.group_columns if design.formula is not None else ()
    has_groups = bool(group_columns) and all(c in newdata for c in group_columns)
    groups = group_labels(newdata, group_columns) if has_groups else None
    spec = model_spec_copy(design)
    mm = spec.get_model_matrix(newdata, na_action="ignore", context=formula_context(groups))
    if columns is not None:
        mm.columns = list(lme4_column_names(mm.columns))
        mm = mm.reindex(columns=list(columns))
    return np.asarray(mm.to_numpy(dtype=np.float64))


def encoded_column(variable: str, columns: pd.Index) -> str | None:
    """The data column an encoder-state entry reads: ``x`` or ``C(x, ...)`` (None for
    transforms such as ``np.log(x)``)."""
    name = str(variable)
    inner = re.fullmatch(r"C\(\s*(`[^`]+`|[A-Za-z_][A-Za-z0-9_.]*)\s*(,.*)?\)", name)
    if inner:
        name = inner.group(1)
    name = name[1:-1] if name.startswith("`") and name.endswith("`") else name
    return name if name in columns else None


def _align_to_encoding(design: Design | FixedEncoding, newdata: pd.DataFrame) -> pd.DataFrame:
    """New data in the fit's encoding, checked before formulaic sees it.

    A categorical column's values are matched to the fitted levels by value, then by
    text as R matches factor levels (a level 1 given as "1" is level 1); a value
    matching no level is an error naming it, with the known levels and their types.
    Any other column that held numbers in the fit must hold numbers.
    """
    categorical = set()
    for variable, (kind, state) in design.model_spec.encoder_state.items():
        column = encoded_column(variable, newdata.columns)
        if column is None or getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        categorical.add(column)  # C(k) of a numeric k: matched as levels, not as numbers
        values = newdata[column]
        categories = pd.Index(state["categories"])
        positions = level_positions(categories, values)
        unseen_rows = values.notna().to_numpy() & (positions < 0)
        if unseen_rows.any():
            levels = list(dict.fromkeys(values[unseen_rows].tolist()))
            shown = list(categories[:10])
            raise ModelDataError(
                f"column {column!r} of newdata has level(s) {', '.join(repr(v) for v in levels[:5])} "
                f"({type_names(levels)}) not seen in fitting (levels: "
                f"{', '.join(repr(c) for c in shown)}{' ...' if len(categories) > 10 else ''}, "
                f"{type_names(shown)}); its fixed effect cannot be predicted"
            )
        mapped = pd.Series(
            pd.Categorical.from_codes(positions, categories=categories), index=values.index
        ).astype(object)
        newdata = newdata.copy(deep=False)
        newdata[column] = mapped
    for column, fit_dtype in design.numeric_columns:
        if column not in newdata.columns or column in categorical or holds_numbers(newdata[column]):
            continue
        values = newdata[column]
        if pd.api.types.infer_dtype(values, skipna=True) in NUMBERS_OR_NOTHING:
            # Numbers or missing values in an object column (a column of None).
            newdata = newdata.copy(deep=False)
            newdata[column] = pd.to_numeric(values).astype(np.float64)
            continue
        shown = values.dropna().iloc[:3].tolist()
        raise ModelDataError(
            f"column {column!r} of newdata holds {type_names(shown)} values (dtype {values.dtype}, e.g. "
            f"{shown!r}) where the fit had numbers ({fit_dtype}); convert it with pd.to_numeric"
        )
    return newdata


def new_fixed_design(design: Design | FixedEncoding, newdata: pd.DataFrame, columns
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-effect design of new data, with the fitting data's encoding.

    The fit is left as it was whatever ``newdata`` holds (see :func:`model_spec_copy`).

    Parameters
    ----------
    design : Design or FixedEncoding
        The design of the fit (from :func:`build_design`), or the encoding of a fit
        made chunk by chunk.
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
    if design.model_spec is None or design.formula is None:
        raise ModelDataError("this fit was made from arrays: pass X= and groups= for new rows instead of newdata")
    if not isinstance(newdata, pd.DataFrame):
        raise ModelDataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    needed = sorted(rhs_variables(design.formula))
    functions = functions_called(design.formula)
    absent = [v for v in needed if v not in newdata.columns and v not in functions]
    if absent:
        raise ModelDataError(
            f"newdata has no column(s) {', '.join(map(repr, absent))}, which the fixed effects use"
            f"{suggest_columns(absent[0], newdata.columns)}"
        )
    present = [v for v in needed if v in newdata.columns]
    duplicated = sorted({v for v in present if not isinstance(newdata[v], pd.Series)})
    if duplicated:
        raise ModelDataError(f"newdata has several columns named {duplicated[0]!r}; rename them")
    frame = design_frame(newdata, present, where=" of newdata")
    complete = ~frame[present].isna().any(axis=1).to_numpy() if present else np.ones(len(frame), bool)
    if len(frame) == 0:
        return np.zeros((0, len(columns))), complete
    frame = _align_to_encoding(design, frame)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # unseen levels were checked above; NaN rows are flagged
            X = new_design_matrix(design, frame, columns)
    except ModelDataError:
        raise
    except Exception as err:
        raise ModelDataError(f"cannot build the fixed-effect design of newdata: {_one_line(err)}") from None
    if not complete.all():
        X = np.array(X)  # formulaic may hand out a read-only matrix
        X[~complete] = np.nan
    return X, complete


__all__ = ["Design", "FixedEncoding", "INTERCEPT_NAME", "ParsedFormula", "build_design", "design_from_arrays", "parse_formula"]
