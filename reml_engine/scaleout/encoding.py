"""One encoding for every chunk, and the mergeable statistics each chunk gives.

A chunked or distributed fit (:mod:`reml_engine.scaleout.chunked`, :mod:`reml_engine.scaleout.dask`)
must turn every chunk into ``X`` the same way, or the columns would not mean the same
thing from one chunk to the next. :class:`FormulaColumns` finds which variables the
formula uses as categories (from a sample of complete rows); :class:`ChunkEncoding`
fixes their level sets, the formulaic ``ModelSpec`` built from the sample with those
levels, and one common ``shift`` (pilot means of the sample) for all chunks, so that
merging needs no re-centring. :meth:`ChunkEncoding.partial_stats` is the per-chunk
function; its :class:`PartialStats` merge in any order and any tree shape.

The within-group cross-product comes from the one-pass formula ``cross - sum s s'/n``
about the common shift: accurate while the shift is near the data's centre, which the
pilot means ensure. A column that varies very little within groups compared with its
spread between groups loses digits here that an in-memory fit recovers with its exact
second pass. Nearly collinear columns (a rank decision within the rounding of the
cross-products, an interaction of a predictor far from 0) are read again in another
basis (:class:`TransformedPass`) when the chunks can be read again.
"""

from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import formulaic
import numpy as np
import pandas as pd

from ..core.statistics import (
    GroupStats,
    Reread,
    SufficientStatistics,
    compute_group_stats,
    merge_group_stats,
    pilot_shift,
)
from ..errors import ModelDataError
from ..frontend.data_checks import (
    check_design_finite,
    check_range,
    check_response_dtype,
    check_response_finite,
    check_response_varies,
    missing_rows,
    refuse_missing,
    warn_dropped,
)
from ..frontend.design import FixedEncoding, check_columns_exist
from ..frontend.fast_design import plain_numeric_columns, simple_terms
from ..frontend.formula import (
    FORMULAIC_INTERCEPT,
    ParsedFormula,
    intercept_position,
    lme4_column_names,
    parse_formula,
    required_variables,
)
from ..frontend.groups import encode_labels, factorize_groups, group_labels, label_kinds, level_positions
from ..frontend.terms_design import uses_terms_engine
from ..frontend.transforms import formula_context
from .group_means import GroupSums, chunk_group_sums, group_mean_transforms, is_group_mean_transform

# -- mergeable partial results ---------------------------------------------------------


@dataclass(frozen=True)
class PartialStats:
    """What one chunk (or a merge of chunks) contributes to the fit.

    Attributes
    ----------
    group_stats : GroupStats, TermsChunkStats or None
        Statistics of the complete rows (a :class:`~reml_engine.scaleout.terms.TermsChunkStats`
        for a model fitted by the several-terms engine); None when the chunk has none.
    n_rows : int
        Rows read, complete or not.
    missing : dict
        Per used column, the number of rows where it is missing.
    n_dropped : int
        Rows dropped because a used column is missing.
    seen : dict
        Per categorical variable, a boolean array over its levels: seen in a complete row.
    kinds : dict
        Per grouping or categorical column, the kinds of label seen (see
        :func:`reml_engine.frontend.groups.label_kinds`), each with the first chunk that held it
        and an example: ``{column: {kind: (where, example)}}``.
    """

    group_stats: GroupStats | None
    n_rows: int
    missing: dict = field(default_factory=dict)
    n_dropped: int = 0
    seen: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)

    @staticmethod
    def merge_all(parts: list[PartialStats]) -> PartialStats:
        """Merge the partial statistics of disjoint chunks (given in reading order)."""
        parts = list(parts)
        stats = [p.group_stats for p in parts if p.group_stats is not None]
        missing: dict = {}
        seen: dict = {}
        kinds: dict = {}
        for part in parts:
            for column, count in part.missing.items():
                missing[column] = missing.get(column, 0) + count
            for name, flags in part.seen.items():
                seen[name] = flags if name not in seen else seen[name] | flags
            for column, found in part.kinds.items():
                first_seen = kinds.setdefault(column, {})
                for kind, origin in found.items():
                    first_seen.setdefault(kind, origin)
        return PartialStats(
            group_stats=_merge_statistics(stats) if stats else None,
            n_rows=sum(p.n_rows for p in parts),
            missing=missing,
            n_dropped=sum(p.n_dropped for p in parts),
            seen=seen,
            kinds=kinds,
        )


def _merge_statistics(stats: list):
    """One term's :class:`GroupStats`, or statistics that merge themselves (``merge_all``)."""
    if isinstance(stats[0], GroupStats):
        return merge_group_stats(stats)
    return type(stats[0]).merge_all(stats)


def check_label_kinds(kinds: dict) -> None:
    """Refuse columns whose labels cannot be matched across chunks.

    Numbers in one chunk and text in another are one set of labels compared as text (the
    canonical label rule), as reading the whole file at once would give. Two cases have
    no such answer: a chunk read as numbers lost the text its values had in the file, so
    text elsewhere that spells numbers otherwise ("05", "5.0") may or may not be the same
    label; and booleans, dates or other objects next to another kind have no agreed text.
    """
    for column, found in kinds.items():
        if "numbers" in found and "numerals" in found:
            (num_where, number), (text_where, text) = found["numbers"], found["numerals"]
            raise ModelDataError(
                f"column {column!r} holds numbers in {num_where} (e.g. {number!r}) and numbers written as text in "
                f"{text_where} (e.g. {text!r}): read whole, the column would be text, and whether {text!r} is the "
                f"label of those numbers depends on how they were written in the file; read {column!r} as text in "
                f"every chunk (e.g. read_csv(..., dtype={{{column!r}: str}}))"
            )
        plain = sorted(set(found) - {"numerals"})
        if len(plain) > 1 and not set(plain) <= {"numbers", "text"}:
            shown = "; ".join(f"{kind} in {found[kind][0]} (e.g. {found[kind][1]!r})" for kind in plain)
            raise ModelDataError(
                f"column {column!r} holds different kinds of value in different chunks: {shown}; give it one type "
                "in every chunk"
            )


def observed_levels(chunk: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, pd.Index]:
    """The levels of each column in one chunk (the levels pass), in canonical form.

    Distinct non-missing values, or for a categorical column all its categories in their
    order (Dask leaves the categories of a Parquet dictionary column unknown; they are
    gathered here, and those no complete row uses are dropped after the statistics pass).
    """
    levels = {}
    for column in columns:
        values = chunk[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            categories = values.cat.categories
            levels[column] = encode_labels(pd.Index(categories, dtype=object), sort=False).levels
        else:
            levels[column] = encode_labels(values).levels
    return levels


def merge_levels(parts: list[dict[str, pd.Index]]) -> dict[str, pd.Index]:
    """Union of the levels gathered from several chunks, in order of first appearance
    (labels matched by the canonical label rule)."""
    merged: dict[str, pd.Index] = {}
    for part in parts:
        for column, levels in part.items():
            both = levels if column not in merged else merged[column].append(levels)
            merged[column] = encode_labels(both, sort=False).levels
    return merged


def sorted_levels(levels: pd.Index) -> tuple:
    """Levels in the order an in-memory fit gives them (sorted when possible)."""
    return tuple(encode_labels(levels).levels)


# -- one encoding for every chunk ------------------------------------------------------


@dataclass(frozen=True)
class FormulaColumns:
    """The formula and the data columns it uses (known before any level is gathered)."""

    parsed: ParsedFormula
    used: tuple[str, ...]
    categorical: tuple[str, ...]
    declared: dict
    #: Fitted by the several-terms engine (several random terms, weights or an offset).
    several_terms: bool = False
    #: The column of prior weights (``weights=``), if any.
    weights: str | None = None
    #: The column given as ``offset=``, if any (added to the formula's ``offset()`` terms).
    offset: str | None = None

    @classmethod
    def from_sample(cls, formula: str, columns, sample: pd.DataFrame | None, dtypes, *, dialect: str = "python",
                    contrasts: dict | None = None, weights: str | None = None,
                    offset: str | None = None) -> FormulaColumns:
        """Check the formula against the columns and find its categorical variables.

        ``sample`` is a DataFrame of complete rows (or None if the caller has not found
        one yet: the categorical variables are then left empty). ``dialect`` and
        ``contrasts`` are those of :func:`reml_engine.lmer`: the formula is translated
        once, here, and every chunk is encoded from it. ``weights`` and ``offset`` are
        lmer's arguments, as column names (a chunk is read apart from the others: one
        value per row of the whole data cannot be split among them).
        """
        several = uses_terms_engine(formula, weights, offset)
        extra = tuple(dict.fromkeys(_argument_column(value, name, columns)
                                    for value, name in ((weights, "weights"), (offset, "offset"))
                                    if value is not None))
        parsed = parse_formula(formula, columns, dialect=dialect, contrasts=contrasts, dtypes=dtypes,
                               several_terms=several)
        try:
            needed = required_variables(parsed)
        except Exception as err:  # formulaic's parse errors
            raise ModelDataError(f"cannot parse the fixed part {parsed.fixed!r}: {err}") from None
        used = tuple(check_columns_exist(pd.Index(columns), needed, parsed))
        used += tuple(c for c in extra if c not in used)
        arguments = {"several_terms": several, "weights": weights, "offset": offset}
        if parsed.response not in dtypes:
            # Each chunk's y is read as a column (design): an expression would not be evaluated.
            raise ModelDataError(
                f"response {parsed.response!r} of formula {parsed.formula!r} is an expression; a chunked fit reads "
                "the response as a column: add it to the data as a column first"
            )
        check_response_dtype(dtypes[parsed.response], parsed.response)
        if sample is None:
            return cls(parsed, used, (), {}, **arguments)
        # Text columns are categories in an in-memory fit; formulaic may take Arrow
        # strings (as Dask and Parquet give them) for something else.
        text = {c for c in used if c != parsed.response and not _is_number_dtype(dtypes[c])}
        spec = _sample_spec(parsed, sample.astype({c: "category" for c in text}))
        categorical, numerical = set(), set()
        for factor, variables in spec.factor_variables.items():
            kind = spec.encoder_state.get(str(factor), (None, None))[0]
            target = categorical if kind is not None and kind.value == "categorical" else numerical
            target.update(v for v in variables if v in used)
        numerical -= text
        both = sorted(categorical & numerical)
        if both:
            raise ModelDataError(
                f"column(s) {', '.join(map(repr, both))} enter formula {parsed.formula!r} both as numbers and as "
                "categories; a chunked fit encodes each column one way: make a categorical copy of the column"
            )
        categorical_cols = tuple(c for c in used if c in categorical)
        declared = {}
        for column in categorical_cols:
            dtype = dtypes[column]
            if isinstance(dtype, pd.CategoricalDtype) and _known_categories(dtype):
                declared[column] = tuple(dtype.categories)
        return cls(parsed, used, categorical_cols, declared, **arguments)

    @property
    def offsets(self) -> tuple[str, ...]:
        """The offset columns, the formula's ``offset()`` terms then ``offset=``."""
        return (*self.parsed.offset_columns, *((self.offset,) if self.offset is not None else ()))

    @property
    def numeric(self) -> tuple[str, ...]:
        """Columns of the fixed part that enter it as numbers."""
        parsed = self.parsed
        return tuple(c for c in self.used
                     if c != parsed.response and c not in self.categorical and c not in parsed.group_columns)

    @property
    def undeclared(self) -> tuple[str, ...]:
        """Categorical variables whose levels must be gathered from the data."""
        return tuple(c for c in self.categorical if c not in self.declared)


def _argument_column(value, name: str, columns) -> str:
    """lmer's ``weights=``/``offset=`` for chunked data: the name of a column."""
    if not isinstance(value, str):
        raise ModelDataError(
            f"{name}= of a chunked, Dask or Parquet fit must name a column of the data (each chunk reads its own "
            f"rows), got {type(value).__name__}; add the values to the data as a column"
        )
    if value not in columns:
        raise ModelDataError(f"{name}={value!r} is not a column of the data; columns are: "
                             f"{', '.join(map(repr, list(columns)[:20]))}")
    return value


def _is_number_dtype(dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _known_categories(dtype: pd.CategoricalDtype) -> bool:
    # Dask marks categories it has not read yet with a placeholder.
    return dtype.categories is not None and "__UNKNOWN_CATEGORIES__" not in list(dtype.categories)


def _model_matrix(spec, data: pd.DataFrame, parsed: ParsedFormula):
    """``spec`` evaluated on complete rows, with the names an lmer formula may use (those
    of an in-memory fit) and the rows' groups (for ``within()``/``between()``)."""
    context = formula_context(group_labels(data, parsed.group_columns))
    return spec.get_model_matrix(data, na_action="ignore", context=context)


def _sample_spec(parsed: ParsedFormula, sample: pd.DataFrame):
    """formulaic's ``ModelSpec`` of the fixed part, built from complete sample rows."""
    context = formula_context(group_labels(sample, parsed.group_columns))
    try:
        with np.errstate(all="ignore"):
            spec = formulaic.model_matrix(parsed.fixed, sample, na_action="ignore", context=context).rhs.model_spec
    except ModelDataError:
        raise
    except Exception as err:
        raise ModelDataError(f"cannot build the fixed-effect design from {parsed.fixed!r}: {err}") from None
    _reject_stateful_transforms(spec, parsed)
    return spec


def _reject_stateful_transforms(spec, parsed: ParsedFormula) -> None:
    # within()/between() learn group means, which a first pass gathers (group_means.py).
    learning = [str(key) for key in spec.transform_state if not is_group_mean_transform(str(key))]
    if learning:
        names = ", ".join(learning)
        raise ModelDataError(
            f"formula {parsed.formula!r} uses transform(s) {names} that learn from the data (a mean, a scale, "
            "knots); a chunked fit would learn them from the first chunk only: compute them beforehand"
        )


def drop_incomplete(chunk: pd.DataFrame, used: tuple[str, ...]) -> tuple[pd.DataFrame, dict, int]:
    """The complete rows of a chunk, the missing count per column and the rows dropped."""
    bad, per_column = missing_rows(chunk, used)
    if not per_column:
        return chunk, {}, 0
    return chunk.loc[~bad], per_column, int(bad.sum())


def require_columns(chunk: pd.DataFrame, used, where: str) -> None:
    """Every column the formula uses must be in every chunk that has rows."""
    absent = [c for c in used if c not in chunk.columns]
    if absent:
        shown = ", ".join(map(str, chunk.columns[:20])) + (" ..." if len(chunk.columns) > 20 else "")
        raise ModelDataError(
            f"{where} has no column(s) {', '.join(map(repr, absent))}, which the formula uses "
            f"(its columns: {shown or 'none'}); every chunk and file must hold the columns the formula uses"
        )


@contextmanager
def located(where: str):
    """Prefix the data errors raised inside with the chunk (or file) they are about."""
    try:
        yield
    except ModelDataError as err:
        raise ModelDataError(f"{where}: {err}") from None


@dataclass(frozen=True)
class ChunkEncoding:
    """How every chunk becomes ``X``, ``y`` and group codes: fixed levels, spec and shift.

    Build it with :meth:`from_sample`; :meth:`partial_stats` is the per-chunk function
    (picklable, so Dask workers on other machines can run it).
    """

    columns: FormulaColumns
    levels: dict
    model_spec: object
    column_names: tuple[str, ...]
    intercept_index: int | None
    shift: np.ndarray
    na_action: str = "omit"
    sample_where: str = "the sample"
    #: formulaic's column names when every fixed term is a plain numeric column (see
    #: :func:`numeric_design_columns`): X is then assembled from the columns without
    #: formulaic; None otherwise.
    numeric_columns: tuple[str, ...] | None = None

    @classmethod
    def from_sample(cls, columns: FormulaColumns, levels: dict, sample: pd.DataFrame,
                    na_action: str = "omit", sample_where: str = "the sample") -> ChunkEncoding:
        """Fix the encoding from complete sample rows and the full level sets."""

        data = _with_levels(sample, levels)
        spec = _sample_spec(columns.parsed, data)
        names = lme4_column_names(spec.column_names)
        intercept = intercept_position(names)
        X = np.asarray(_model_matrix(spec, data, columns.parsed).to_numpy(dtype=np.float64))
        y = data[columns.parsed.response].to_numpy(dtype=np.float64)
        return cls(columns, dict(levels), spec, names, intercept, pilot_shift(X, y, intercept), na_action,
                   sample_where, numeric_design_columns(columns, spec, data))

    def fixed_encoding(self, dtypes: pd.Series) -> FixedEncoding:
        """What the fit keeps of this encoding for new rows (``predict``, ``simulate``,
        the type III table); ``dtypes`` are the data's, for the columns read as numbers."""
        numeric = tuple((c, str(dtypes[c])) for c in self.columns.numeric if c in dtypes)
        return FixedEncoding(self.columns.parsed, self.model_spec, numeric)

    @property
    def group_mean_transforms(self) -> tuple[str, ...]:
        """The ``within()``/``between()`` terms, whose group means need a first pass."""
        return group_mean_transforms(self.model_spec)

    def group_sums(self, chunk: pd.DataFrame, where: str = "a chunk") -> GroupSums:
        """Per chunk of the first pass: each transform's sums and rows by group, over the
        complete rows (see :mod:`reml_engine.scaleout.group_means`)."""
        if len(chunk) == 0:
            return GroupSums()
        require_columns(chunk, self.columns.used, where)
        with located(where):
            clean = drop_incomplete(chunk, self.columns.used)[0]
            if len(clean) == 0:
                return GroupSums()
            data = _with_levels(self._numbers_as_numbers(clean), self.levels)
            groups = group_labels(data, self.columns.parsed.group_columns)
            return chunk_group_sums(self.model_spec, data, groups, self.group_mean_transforms)

    def with_group_means(self, states: dict) -> ChunkEncoding:
        """The same encoding with the group means of all rows in the transforms' state."""
        spec = copy.deepcopy(self.model_spec)
        spec.transform_state.update(copy.deepcopy(states))
        return replace(self, model_spec=spec)

    def with_levels(self, levels: dict, sample: pd.DataFrame) -> ChunkEncoding:
        """The same encoding with other level sets (the spec and shift rebuilt for them)."""
        return ChunkEncoding.from_sample(self.columns, levels, sample, self.na_action, self.sample_where)

    def design(self, chunk: pd.DataFrame, fast: bool = True) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``X``, ``y`` and the (level-fixed) complete rows of a chunk without missing values.

        ``fast=False`` builds X with formulaic even when the numeric path applies (the
        tests compare the two).
        """
        data = _with_levels(self._numbers_as_numbers(chunk), self.levels)
        if fast and self.numeric_columns is not None and _numeric_chunk(data, self.numeric_columns):
            X = _numeric_design(data, self.numeric_columns)
        else:
            with np.errstate(all="ignore"):  # non-finite results are reported by the checks
                matrix = _model_matrix(self.model_spec, data, self.columns.parsed)
            X = np.asarray(matrix.to_numpy(dtype=np.float64))
        if X.shape[1] != len(self.column_names):
            raise ModelDataError(
                f"gave {X.shape[1]} design columns instead of {len(self.column_names)}; "
                "check that every chunk has the same columns and types"
            )
        response = self.columns.parsed.response
        check_response_dtype(data[response].dtype, response)
        y = data[response].to_numpy(dtype=np.float64)
        return X, y, data

    def _numbers_as_numbers(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """The columns the sample gave as numbers, checked (and converted from object)
        in this chunk: a reader may type a column differently from chunk to chunk."""
        data = chunk
        for column in self.columns.numeric:
            values = chunk[column]
            if _is_number_dtype(values.dtype):
                continue
            kinds = label_kinds(values)
            if set(kinds) <= {"numbers"}:
                data = data.copy(deep=False) if data is chunk else data
                data[column] = pd.to_numeric(values.astype(object))
                continue
            kind, example = next((k, v) for k, v in kinds.items() if k != "numbers")
            raise ModelDataError(
                f"column {column!r} enters the formula as numbers (as read in {self.sample_where}) but holds {kind} "
                f"here (e.g. {example!r}); give it one type in every chunk (convert it with pd.to_numeric, or make "
                "it text everywhere to use it as a factor)"
            )
        return data

    def partial_stats(self, chunk: pd.DataFrame, where: str = "a chunk", shift: np.ndarray | None = None,
                      transform: np.ndarray | None = None) -> PartialStats:
        """The statistics of one chunk (the function mapped over chunks and partitions).

        ``where`` names the chunk (or file) in error messages and in the kinds of label
        recorded for :func:`check_label_kinds`. ``shift`` and ``transform`` (a second
        pass, see :class:`TransformedPass`) give the statistics of
        ``([X | y] - shift) transform`` instead of those of ``[X | y] - self.shift``.
        """
        parsed = self.columns.parsed
        shift = self.shift if shift is None else shift

        def group_stats(X: np.ndarray, y: np.ndarray, data: pd.DataFrame) -> GroupStats:
            groups = factorize_groups(group_labels(data, parsed.group_columns), parsed.group_name)
            # On a worker thread (Dask's threaded scheduler) the scheduler's threads are the
            # parallelism: the single-threaded kernel releases the GIL, so they overlap.
            threads = None if threading.current_thread() is threading.main_thread() else 1
            return compute_group_stats(X, y, groups, shift, exact_within=False, transform=transform,
                                       threads=threads)

        # Without a transform the kernel's ranges are those of X and y: the finiteness and
        # magnitude checks read them instead of passing over the rows again.
        return self.reduce(chunk, where, group_stats, checked_by_ranges=transform is None)

    def reduce(self, chunk: pd.DataFrame, where: str, statistics, checked_by_ranges: bool = False) -> PartialStats:
        """One chunk's :class:`PartialStats`: its complete rows encoded, checked and
        reduced by ``statistics(X, y, data)`` (``data``: the complete rows, categorical
        columns on their full level sets), with the bookkeeping every fit needs (rows
        dropped, levels seen, kinds of label).

        ``checked_by_ranges``: ``statistics`` returns a :class:`GroupStats` of the raw
        ``[X | y]`` (ranges included) and copes with non-finite values (they show as
        non-finite sums); the values are then checked after it, from its ranges when its
        sums are finite (see :func:`_checked_from_ranges`), instead of in a pass of their
        own before it."""
        seen = {c: np.zeros(len(self.levels[c]), dtype=bool) for c in self.columns.categorical}
        if len(chunk) == 0:  # an empty chunk (even one without columns) adds nothing
            return PartialStats(None, 0, seen=seen)
        require_columns(chunk, self.columns.used, where)
        with located(where):
            return self._reduce(chunk, where, seen, statistics, checked_by_ranges)

    def _reduce(self, chunk: pd.DataFrame, where: str, seen: dict, statistics,
                checked_by_ranges: bool = False) -> PartialStats:
        parsed = self.columns.parsed
        clean, missing, n_bad = drop_incomplete(chunk, self.columns.used)
        if n_bad and self.na_action == "raise":
            refuse_missing(n_bad, missing)
        if len(clean) == 0:
            return PartialStats(None, len(chunk), missing, n_bad, seen=seen)
        labelled = dict.fromkeys((*parsed.group_columns, *self.columns.categorical))
        kinds = {c: {k: (where, v) for k, v in label_kinds(clean[c]).items()} for c in labelled}
        X, y, data = self.design(clean)
        if checked_by_ranges:
            stats = statistics(X, y, data)
            if not _checked_from_ranges(stats, self.column_names):
                check_design_finite(X, self.column_names)
                check_response_finite(y, parsed.response)
        else:
            check_design_finite(X, self.column_names)
            check_response_finite(y, parsed.response)
            stats = statistics(X, y, data)
        for column in self.columns.categorical:
            seen[column][np.unique(data[column].cat.codes.to_numpy())] = True
        return PartialStats(stats, len(chunk), missing, n_bad, seen, kinds)


@dataclass(frozen=True)
class TransformedPass:
    """Picklable per-chunk function of a second pass over the chunks: the statistics of
    ``([X | y] - shift) transform`` (the rank check and the conditioning of
    :func:`reml_engine.core.problem.criterion_problem` ask for them when the rows can be read again)."""

    encoding: ChunkEncoding
    shift: np.ndarray
    transform: np.ndarray

    def __call__(self, chunk: pd.DataFrame, where: str = "a chunk") -> PartialStats:
        return self.encoding.partial_stats(chunk, where, self.shift, self.transform)


def _checked_from_ranges(stats: GroupStats, names: tuple[str, ...]) -> bool:
    """True when the kernel's statistics prove ``X`` and ``y`` finite, after checking the
    magnitude of each column of X from the kernel's ranges (what
    :func:`~reml_engine.frontend.data_checks.check_design_finite` does from its own pass).

    Finite sums and cross-product mean finite values: an inf or NaN anywhere makes
    them non-finite (and so do squares that overflow). False sends the caller to the
    full checks, which name the column and count the rows at fault.
    """
    if not (np.isfinite(stats.cross).all() and np.isfinite(stats.sums).all()):
        return False
    for j, name in enumerate(names):
        check_range(float(stats.lo[j]), float(stats.hi[j]), f"predictor column {name!r}")
    return True


def numeric_design_columns(columns: FormulaColumns, spec, sample: pd.DataFrame) -> tuple[str, ...] | None:
    """formulaic's columns of the fixed part when X needs no formulaic: every term a
    plain name (or ``0``, ``1``, ``-1``) of a numeric column, as in the in-memory fast
    path (:mod:`reml_engine.frontend.fast_design`); None otherwise.

    Decided from the formula, the sample's dtypes and the spec's column names (one per
    numeric term, and the intercept), never from the values; each chunk is checked
    again for numeric dtypes (:func:`_numeric_chunk`) before the path is taken.
    """
    terms = simple_terms(columns.parsed.fixed)
    if terms is None or columns.categorical:
        return None
    response, names = terms
    if not {response, *names} <= plain_numeric_columns(sample):
        return None
    spec_columns = tuple(str(c) for c in spec.column_names)
    if sorted(c for c in spec_columns if c != FORMULAIC_INTERCEPT) != sorted(names):
        return None
    return spec_columns


def _numeric_chunk(data: pd.DataFrame, names: tuple[str, ...]) -> bool:
    """Every column of the fixed part has a numpy integer or float dtype in this chunk
    (a reader may type a column differently from chunk to chunk)."""
    return {n for n in names if n != FORMULAIC_INTERCEPT} <= plain_numeric_columns(data)


def _numeric_design(data: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """X column by column: the intercept, and each numeric column as floats (what
    formulaic makes of a plain numeric term)."""
    X = np.empty((len(data), len(names)), dtype=np.float64, order="F")
    for j, name in enumerate(names):
        if name == FORMULAIC_INTERCEPT:
            X[:, j] = 1.0
        else:
            X[:, j] = data[name].to_numpy()
    return X


def _with_levels(chunk: pd.DataFrame, levels: dict) -> pd.DataFrame:
    """The chunk with each categorical column as a ``Categorical`` of the full level set.

    Values are matched to the levels by the canonical label rule, so a chunk that reads
    a factor's values as numbers (5) still finds the levels gathered as text ("5").
    """
    if not levels:
        return chunk
    data = chunk.copy(deep=False)
    for column, column_levels in levels.items():
        values = chunk[column]
        categories = pd.Index(list(column_levels))
        positions = level_positions(categories, values)
        unknown = (positions < 0) & values.notna().to_numpy()
        if unknown.any():
            example = values[unknown].iloc[0]
            raise ModelDataError(
                f"column {column!r} has {int(unknown.sum())} values outside its {len(column_levels)} known levels "
                f"(e.g. {example!r}); pass every level in levels= or use a source that can be read twice"
            )
        data[column] = pd.Categorical.from_codes(positions, categories=categories)
    return data


def merged_statistics(encoding: ChunkEncoding, total: PartialStats, reread: Reread | None = None
                      ) -> SufficientStatistics:
    """Stage 2 of a chunked or distributed fit: the merged statistics of every chunk, after
    the checks that need all chunks (rows dropped, labels matched, a response that varies).

    The fit is then the same chain as an in-memory fit's
    (:func:`reml_engine.core.fitting.fit_statistics`). ``reread(shift, transform)``, for
    chunks that can be read again, returns the merged statistics of
    ``([X | y] - shift) transform`` (see :data:`reml_engine.core.statistics.Reread`).
    """
    parsed = encoding.columns.parsed
    if total.n_dropped:
        warn_dropped(total.n_dropped, total.n_rows, total.missing)
    if total.group_stats is None:
        raise ModelDataError(f"no complete observations in {total.n_rows} rows of the variables {list(encoding.columns.used)}")
    check_label_kinds(total.kinds)
    stats = total.group_stats
    check_response_varies(float(stats.lo[-1]), float(stats.hi[-1]), stats.nobs, parsed.response)
    return SufficientStatistics(
        stats,
        encoding.column_names,
        encoding.intercept_index,
        response_name=parsed.response,
        group_name=parsed.group_name,
        formula=parsed.formula,
        reread=reread,
    )

