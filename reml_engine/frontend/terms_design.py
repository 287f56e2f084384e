"""From a formula with several random-intercept terms and a DataFrame to the arrays the
several-terms engine (:mod:`reml_engine.varcomp`) fits.

``"y ~ x + offset(z) + (1|subj) + (1|item)"``, ``(1|school/class)`` (lme4's
``school`` and ``class:school``) or ``(1|a:b)``: the fixed part is built exactly as for one
term (:func:`reml_engine.frontend.design.build_design`, same checks and the same warning
for rows dropped with missing values), then each term's grouping columns are coded
(:class:`~reml_engine.varcomp.RandomTerms`), in lme4's order: by decreasing number of
levels, ties in the formula's order. Prior weights (``weights=``, a column or an array)
and offsets (``offset(z)`` in the formula, ``offset=``, added up as lme4 adds them) are
validated here; a missing weight or offset drops its row with the others, as lme4's
``na.omit`` does (named ``(weights)`` and ``(offset)`` when given as arrays, as R's
model frame names them).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..core.identifiability import RANK_TOL, rank_decisions, warn_dropped_columns
from ..errors import ModelDataError, ModelDataWarning
from ..varcomp.terms import RandomTerms
from .design import Design, FixedEncoding, build_design
from .formula import RandomTermSpec, count_random_terms, has_offset_term, parse_formula
from .groups import group_labels
from .transforms import TRANSFORM_NAMES

#: Names of the weights and offset given as arrays among the data's columns (R's model
#: frame calls them so).
WEIGHTS_COLUMN = "(weights)"
OFFSET_COLUMN = "(offset)"


@dataclass(frozen=True)
class TermsEncoding:
    """How a fit with several random-intercept terms reads new rows (``predict``,
    ``simulate(newdata=)``): what its design keeps of the data's encoding, and all a fit
    made from chunks, Dask or Parquet keeps in its place.

    Attributes
    ----------
    fixed : Design or FixedEncoding
        The fixed part's encoding (formula, levels, contrasts) for
        :func:`~reml_engine.frontend.design.new_fixed_design`.
    specs : tuple of RandomTermSpec
        Each term's name and grouping columns, in lme4's order of the terms.
    offset_columns : tuple of str
        The formula's offset columns.
    offset_given : bool
        An ``offset=`` argument was given (new rows then need their own).
    weights_column : str or None
        The column ``weights=`` named, if it named one (``simulate(newdata=)`` of a
        weighted fit reads the new rows' weights there).
    """

    fixed: Design | FixedEncoding
    specs: tuple[RandomTermSpec, ...]
    offset_columns: tuple[str, ...] = ()
    offset_given: bool = False
    weights_column: str | None = None


@dataclass(frozen=True)
class TermsDesign:
    """The arrays of a model with several random-intercept terms.

    Attributes
    ----------
    design : Design
        X, y, the fixed part's names and encoding (for new data), the rows kept.
    terms : RandomTerms
        Integer codes per term, lme4's names and order (decreasing levels).
    specs : tuple of RandomTermSpec
        Each term's name and grouping columns, in the order of ``terms``.
    weights, offset : float arrays (n,) or None
        Prior weights and the total offset of the rows kept.
    data_index : pandas.Index
        The index of the data as given (for fitted values and residuals).
    rows : int array (n,)
        Positions in the data of the rows kept.
    offset_columns : tuple of str
        The formula's offset columns (read again from new data by ``predict``).
    offset_given : bool
        An ``offset=`` argument was given (``predict`` then needs one for new data).
    dropped_columns : tuple of str
        Fixed-effect columns dropped as linear combinations of earlier ones.
    weights_column : str or None
        The column ``weights=`` named, if it named one.
    """

    design: Design
    terms: RandomTerms
    specs: tuple[RandomTermSpec, ...]
    weights: np.ndarray | None
    offset: np.ndarray | None
    data_index: pd.Index
    rows: np.ndarray
    offset_columns: tuple[str, ...] = ()
    offset_given: bool = False
    dropped_columns: tuple[str, ...] = ()
    weights_column: str | None = None

    @property
    def encoding(self) -> TermsEncoding:
        """What new rows are read with (the same as a fit without rows keeps)."""
        return TermsEncoding(self.design, self.specs, self.offset_columns, self.offset_given, self.weights_column)


def _argument_column(value, name: str, column: str, data: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """``weights=``/``offset=`` as a column of the data: a column name, or an array added
    under ``column``. Values are checked after the rows with missing values are dropped."""
    if value is None:
        return data, None
    if isinstance(value, str):
        if value not in data.columns:
            raise ModelDataError(f"{name}={value!r} is not a column of the data")
        values = data[value]
        label = value
    else:
        if isinstance(value, pd.DataFrame) or np.ndim(value) != 1:
            raise ModelDataError(f"{name}= must be a column name or one number per row, got {type(value).__name__} "
                                 f"of shape {np.shape(value)}")
        if len(value) != len(data):
            raise ModelDataError(f"{name}= has {len(value)} values but the data have {len(data)} rows")
        if column in data.columns:
            raise ModelDataError(f"the data have a column named {column!r}; rename it to pass {name}= as an array")
        values = pd.Series(np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value), index=data.index)
        data = data.assign(**{column: values})
        label = column
    if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
        raise ModelDataError(f"{name} ({label!r}) must be numbers, got dtype {values.dtype}")
    return data, label


def check_weights(weights: np.ndarray, label: str, index: pd.Index) -> None:
    bad = ~(np.isfinite(weights) & (weights > 0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ModelDataError(
            f"prior weights ({label!r}) must be positive and finite: {int(bad.sum())} are not, first at row "
            f"{index[first]!r} (value {weights[first]!r}); drop those rows or fix the weights"
        )


def check_offset(offset: np.ndarray, label: str, index: pd.Index) -> None:
    bad = ~np.isfinite(offset)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ModelDataError(
            f"offset {label!r} has {int(bad.sum())} infinite values, first at row {index[first]!r}"
        )


def full_rank_columns(X: np.ndarray, intercept: int | None) -> list[int]:
    """The columns lme4 keeps (a pivot-free QR at its tolerance, later columns dropped in
    favour of earlier ones), relative to the centred norms when there is an intercept."""
    mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
    centred = X - mean
    return full_rank_columns_from_moments(len(X), centred.sum(axis=0), centred.T @ centred, mean, intercept)


def full_rank_columns_from_moments(nobs: int, column_sums: np.ndarray, gram: np.ndarray, shift: np.ndarray,
                                   intercept: int | None) -> list[int]:
    """:func:`full_rank_columns` from sums over the rows, which add up over row chunks.

    Parameters
    ----------
    nobs : int
    column_sums : (p,)
        ``sum (x - shift)`` over the rows.
    gram : (p, p)
        ``sum (x - shift)(x - shift)'`` over the rows (unweighted).
    shift : (p,)
        Any centre (near the column means, so that nothing cancels).
    intercept : int or None
        Position of the intercept column.
    """
    n = float(nobs)
    shift = np.asarray(shift, dtype=np.float64)
    raw_norm2 = np.diag(gram) + 2.0 * shift * column_sums + n * shift**2
    if intercept is None:
        raw = gram + np.outer(shift, column_sums) + np.outer(column_sums, shift) + n * np.outer(shift, shift)
        return rank_decisions(raw, raw_norm2, RANK_TOL)[0]
    # With the intercept first, centring the other columns changes each by a multiple
    # of an earlier column: the QR's residuals are the same, without the cancellation.
    order = [intercept] + [j for j in range(len(shift)) if j != intercept]
    about_mean = gram - np.outer(column_sums, column_sums) / n
    centred_gram = about_mean[np.ix_(order, order)]
    centred_gram[0, :] = 0.0
    centred_gram[:, 0] = 0.0
    centred_gram[0, 0] = n
    centred = np.diag(centred_gram).copy()
    kept = rank_decisions(centred_gram, raw_norm2[order], RANK_TOL, centred)[0]
    return sorted(order[k] for k in kept)


def uses_terms_engine(formula: str, weights=None, offset=None) -> bool:
    """A formula (with these arguments) is fitted by the several-terms engine: two or
    more random terms, prior weights, or an offset (in the formula or as an argument)."""
    return (count_random_terms(formula) > 1 or weights is not None or offset is not None
            or has_offset_term(formula))


def lme4_term_order(nlevels) -> list[int]:
    """lme4's order of the terms (``mkReTrms``), from their number of levels in the order of
    :func:`~reml_engine.frontend.formula.random_term_specs` (lme4's ``findbars``).

    Terms already in non-increasing order stay as they are; otherwise lme4 takes
    ``rev(order(nl))``: decreasing levels, ties in the reverse of the formula's order
    (``(1|c) + (1|a) + (1|b)`` with 4, 6 and 6 levels is ``b``, ``a``, ``c``).
    """
    n = len(nlevels)
    if all(nlevels[j + 1] <= nlevels[j] for j in range(n - 1)):
        return list(range(n))
    return sorted(range(n), key=lambda j: (-nlevels[j], -j))


def build_terms_design(formula: str, data: pd.DataFrame, na_action: str = "omit", *, weights=None, offset=None,
                       dialect: str = "python", contrasts=None) -> TermsDesign:
    """Parse a formula with random-intercept terms and build its arrays.

    Parameters
    ----------
    formula : str
        ``"y ~ fixed + (1|a) + (1|b/c) + offset(z)"``.
    data : pandas.DataFrame
    na_action : {"omit", "raise"}
    weights : str or array-like, optional
        Prior weights (lme4's ``weights=``): residual variance ``sigma2 / w``.
    offset : str or array-like, optional
        Known part of the linear predictor, added to the formula's ``offset()`` terms.
    dialect, contrasts
        As for :func:`reml_engine.frontend.design.build_design`.
    """
    if not isinstance(data, pd.DataFrame):
        raise ModelDataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    parsed = parse_formula(formula, data.columns, dialect=dialect, contrasts=contrasts, dtypes=data.dtypes,
                           several_terms=True)
    used_transforms = [t for t in TRANSFORM_NAMES if re.search(rf"(?<![\w.]){t}\s*\(", parsed.fixed)]
    if used_transforms and len(parsed.random_terms) > 1:
        raise ModelDataError(
            f"formula {formula!r} uses {used_transforms[0]}(), which centres on the model's one grouping factor; "
            f"with several random terms compute the group means of the factor you mean first "
            f"(data.groupby('g')['x'].transform('mean'))"
        )
    data_index = data.index
    # Positions, not labels, identify the rows kept (the index may repeat labels).
    frame = data.set_axis(pd.RangeIndex(len(data)), axis=0)
    frame, weights_label = _argument_column(weights, "weights", WEIGHTS_COLUMN, frame)
    frame, offset_label = _argument_column(offset, "offset", OFFSET_COLUMN, frame)
    extra = tuple(c for c in (weights_label, offset_label) if c is not None)
    design = build_design(formula, frame, na_action, dialect=dialect, contrasts=contrasts, several_terms=True,
                          extra_columns=extra)
    rows = np.asarray(design.row_index, dtype=np.int64)
    clean = frame.iloc[rows]
    kept_index = data_index[rows]
    w = None
    if weights_label is not None:
        w = clean[weights_label].to_numpy(dtype=np.float64)
        check_weights(w, weights_label, kept_index)
    total_offset = None
    for label in (*parsed.offset_columns, *([offset_label] if offset_label else [])):
        column = clean[label]
        if not (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
            raise ModelDataError(f"offset column {label!r} must hold numbers, got dtype {column.dtype}")
        values = column.to_numpy(dtype=np.float64)
        check_offset(values, label, kept_index)
        total_offset = values if total_offset is None else total_offset + values
    design, dropped = _drop_rank_deficient(design)
    labels = {spec.name: group_labels(clean, spec.columns) for spec in parsed.random_terms}
    try:
        terms = RandomTerms.from_labels(labels)
    except ValueError as err:
        raise ModelDataError(str(err)) from None
    order = lme4_term_order(terms.nlevels)
    terms = RandomTerms(tuple(terms.names[j] for j in order), tuple(terms.codes[j] for j in order),
                        tuple(terms.levels[j] for j in order))
    specs = tuple(parsed.random_terms[j] for j in order)
    check_levels(terms.names, terms.nlevels, design.y.shape[0])
    warn_same_grouping(terms.names, terms.nlevels, _occupied_cells(terms))
    return TermsDesign(design, terms, specs, w, total_offset, data_index, rows, parsed.offset_columns,
                       offset_label is not None, dropped, weights if isinstance(weights, str) else None)


def _drop_rank_deficient(design: Design) -> tuple[Design, tuple[str, ...]]:
    kept = full_rank_columns(design.X, design.intercept_index)
    if len(kept) == design.X.shape[1]:
        return design, ()
    dropped = tuple(design.column_names[j] for j in range(design.X.shape[1]) if j not in kept)
    warn_dropped_columns(dropped)
    names = tuple(design.column_names[j] for j in kept)
    intercept = names.index(design.column_names[design.intercept_index]) if design.intercept_index in kept else None
    return replace(design, X=np.ascontiguousarray(design.X[:, kept]), column_names=names,
                   intercept_index=intercept), dropped


def check_levels(names, nlevels, nobs: int) -> None:
    """lme4's checkNlevels: each factor needs at least 2 levels and fewer than the rows."""
    for name, m in zip(names, nlevels, strict=True):
        if m < 2:
            raise ModelDataError(
                f"grouping factor {name!r} has {m} level: a random intercept needs at least 2 levels"
            )
        if m >= nobs:
            raise ModelDataError(
                f"grouping factor {name!r} has {m} levels for {nobs} observations: its variance cannot be told "
                "apart from the residual variance (every level needs replicates)"
            )


def warn_same_grouping(names, nlevels, occupied_cells) -> None:
    """Warn about two terms that group the rows the same way under different names
    (``(1|school/vr)`` with ``vr`` constant within school: ``vr:school`` is ``school``).

    Only the sum of their variances is identified: the criterion is flat along it, so the
    split reported is one of many with the same criterion (lme4 goes on too, with
    convergence warnings). Two terms group alike when they have as many levels as they have
    occupied cells (pairs of levels seen together): ``occupied_cells(a, b)`` counts them
    for terms ``a < b``.
    """
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            m = nlevels[a]
            if nlevels[b] == m and occupied_cells(a, b) == m:
                warnings.warn(
                    f"random terms {names[a]!r} and {names[b]!r} group the rows the same way ({m} levels "
                    "each, every level of one is a single level of the other): only the sum of their "
                    "variances is identified, and the split reported is one of many with the same criterion; "
                    "keep one of the two terms",
                    ModelDataWarning, stacklevel=4)


def _occupied_cells(terms: RandomTerms):
    def count(a: int, b: int) -> int:
        return int(np.unique(terms.codes[a] * np.int64(terms.nlevels[b]) + terms.codes[b]).size)
    return count


__all__ = [
    "OFFSET_COLUMN",
    "TermsDesign",
    "TermsEncoding",
    "WEIGHTS_COLUMN",
    "build_terms_design",
    "check_levels",
    "check_offset",
    "check_weights",
    "full_rank_columns",
    "full_rank_columns_from_moments",
    "lme4_term_order",
    "uses_terms_engine",
    "warn_same_grouping",
]
