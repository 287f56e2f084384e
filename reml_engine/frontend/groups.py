"""Group labels and their codes: one rule for when two labels are the same group.

R reads every grouping factor as text, so ``5``, ``5.0`` and ``"5"`` name one group
there. A fit must not depend on how a reader happened to type a column (``read_csv``
gives integers in one chunk, text in the next; a missing value turns integers into
floats; one Parquet file stores ids as int64, another as strings), so reml_engine uses
one rule, :func:`encode_labels`, wherever labels are compared: grouping in memory, the
levels of categorical columns and the groups of every chunk of a chunked or Dask fit,
the merging of chunks, and the lookup of new rows in ``predict``.

**The canonical label rule.**

* Missing values (``None``, ``NaN``, ``pd.NA``, ``NaT``) are no label.
* A number of any type is its value: integers of every width (``uint64`` above
  ``2**63`` included) and floats with an integral value are the same integer, so
  ``5``, ``np.int8(5)`` and ``5.0`` are one label, shown as ``5``.
* Text is itself; booleans, dates and other objects are themselves.
* When one set of labels mixes kinds (numbers and text, in one object column or across
  chunks), every label is compared as its text, :func:`label_text`: ``5`` and ``5.0`` as
  ``"5"``, ``0.5`` as ``"0.5"``, ``True`` as ``"True"``. So ``5`` and ``"5"`` are one
  group, ``"05"`` another (as in R, which would read both columns as text).
* A categorical keeps the order of its categories and loses the unused ones (as lme4
  drops unused factor levels); other labels are sorted, as R's ``factor()`` sorts them.
* The interaction ``a:b`` of several columns is a label per *tuple* of component labels
  (each component under the rule above), never a joined string, so ``("x:y", "z")`` and
  ``("x", "y:z")`` stay two groups. Its levels are a ``pandas.MultiIndex``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.kernels import dense_integer_codes, integer_range

#: Integer labels whose range (max - min + 1) is at most this many times the number of
#: rows are coded by a direct table lookup instead of hashing.
DENSE_SPAN_FACTOR = 4

#: Largest label an int64 holds; larger unsigned labels keep a uint64 index.
INT64_MAX = np.iinfo(np.int64).max

#: Floats whose magnitude is below this hold their integer exactly (2**53) and become it.
EXACT_FLOAT_INTEGER = 2.0**53

#: pandas' names (``infer_dtype``) for object arrays holding one kind of label only.
_SINGLE_KIND = {"string", "integer", "floating", "mixed-integer-float", "decimal", "boolean",
                "datetime", "datetime64", "date", "timedelta", "timedelta64", "time", "period",
                "bytes", "empty", "categorical"}


@dataclass(frozen=True)
class GroupCodes:
    """Integer codes ``0 .. ngroups - 1`` per row (``-1`` for a missing label), and the
    label of each code."""

    codes: np.ndarray
    levels: pd.Index

    @property
    def ngroups(self) -> int:
        return len(self.levels)


# -- the rule for one label ------------------------------------------------------------


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _kind(value) -> str:
    if _is_bool(value):
        return "booleans"
    if _is_number(value):
        return "numbers"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (pd.Timestamp, np.datetime64)) or hasattr(value, "isoformat"):
        return "dates"
    return "other"


def _canonical_number(value):
    """An integral number as a Python int (exact at any size), any other as a float."""
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


def label_text(value) -> str:
    """A label as text, the form in which labels of mixed kinds are compared.

    Integral numbers are written as integers, other floats by their shortest repr.

    Examples
    --------
    >>> [label_text(v) for v in (5, 5.0, np.uint64(2**63), 0.5, "05", True)]
    ['5', '5', '9223372036854775808', '0.5', '05', 'True']
    """
    if _is_bool(value):
        return str(bool(value))
    if _is_number(value):
        number = _canonical_number(value)
        return str(number) if isinstance(number, int) else repr(number)
    return str(value)


def _canonical_values(uniques) -> list:
    """Distinct raw labels in canonical form (see the module docstring): numbers by value,
    everything as text when the kinds are mixed."""
    kinds = {_kind(value) for value in uniques}
    if len(kinds) > 1:
        return [label_text(value) for value in uniques]
    if kinds == {"numbers"}:
        return [_canonical_number(value) for value in uniques]
    if kinds == {"booleans"}:
        return [bool(value) for value in uniques]
    return list(uniques)


def _as_index(values: list) -> pd.Index:
    """An Index of canonical labels with the natural dtype (int64, uint64, float, str)."""
    if values and all(isinstance(v, int) for v in values):
        low, high = min(values), max(values)
        if low >= -INT64_MAX - 1 and high <= INT64_MAX:
            return pd.Index(np.array(values, dtype=np.int64))
        if low >= 0 and high <= np.iinfo(np.uint64).max:
            return pd.Index(np.array(values, dtype=np.uint64))
        return pd.Index(values, dtype=object)
    return pd.Index(values)


# -- coding arrays of labels -------------------------------------------------------------


def _sorted_codes(codes: np.ndarray, levels: pd.Index, sort: bool) -> GroupCodes:
    """Renumber ``codes`` so that their levels come sorted (when they can be)."""
    if sort and len(levels) > 1:
        try:
            order = np.asarray(levels.argsort(kind="stable"), dtype=np.int64)
        except TypeError:  # labels that do not compare keep their order of appearance
            order = np.arange(len(levels))
        rank = np.empty(len(levels), dtype=np.int64)
        rank[order] = np.arange(len(levels))
        codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
        levels = levels[order]
    return GroupCodes(np.asarray(codes, dtype=np.int64), levels)


def _from_uniques(codes: np.ndarray, uniques, sort: bool) -> GroupCodes:
    """Codes of raw labels, given their raw uniques: canonicalize the (few) uniques,
    merge those that become equal, and sort."""
    canonical = _as_index(_canonical_values(list(uniques)))
    merged, levels = pd.factorize(canonical, sort=False)
    # Code -1 (missing) picks the -1 appended last, also when every label is missing.
    codes = np.append(merged, -1)[codes]
    return _sorted_codes(codes, levels, sort)


def _integer_codes(values: np.ndarray, sort: bool) -> GroupCodes:
    """Integer labels of any width: a table lookup when their range is small."""
    lo, hi = integer_range(values) if values.dtype == np.int64 else (int(values.min()), int(values.max()))
    dtype = np.uint64 if hi > INT64_MAX else np.int64
    span = hi - lo + 1
    if sort and span <= DENSE_SPAN_FACTOR * values.size + 1024:
        if values.dtype == np.uint64 and hi > INT64_MAX:
            # Offsets from the minimum fit in int64 although the labels do not.
            offsets, base = (values - np.uint64(lo)).astype(np.int64), 0
        else:
            offsets, base = values.astype(np.int64, copy=False), lo
        codes, level_pos = dense_integer_codes(offsets, base, span)
        if hi > INT64_MAX:
            levels = pd.Index(level_pos.astype(np.uint64) + np.uint64(lo))
        else:
            levels = pd.Index(level_pos + lo)
        return GroupCodes(codes, levels)
    codes, uniques = pd.factorize(values, sort=sort)
    return GroupCodes(codes.astype(np.int64, copy=False), pd.Index(np.asarray(uniques).astype(dtype)))


def _with_missing(present: np.ndarray, inner: GroupCodes) -> GroupCodes:
    codes = np.full(len(present), -1, dtype=np.int64)
    codes[present] = inner.codes
    return GroupCodes(codes, inner.levels)


def _float_codes(values: np.ndarray, sort: bool) -> GroupCodes:
    """Float labels: integral ones (the usual: integer ids with a missing value) are the
    integers they hold."""
    present = ~np.isnan(values)
    finite = values[present]
    if finite.size and np.all(np.abs(finite) < EXACT_FLOAT_INTEGER) and np.all(finite == np.round(finite)):
        return _with_missing(present, _integer_codes(finite.astype(np.int64), sort))
    codes, uniques = pd.factorize(values, sort=False)
    return _from_uniques(codes, uniques, sort)


def _object_codes(values: np.ndarray, sort: bool) -> GroupCodes:
    """Labels of any Python types."""
    if pd.api.types.infer_dtype(values, skipna=True) not in _SINGLE_KIND:
        # Hashing makes True and 1 one value; the labels are compared as text anyway.
        is_bool = np.fromiter(map(_is_bool, values), dtype=bool, count=len(values))
        if is_bool.any():
            values = values.copy()
            values[is_bool] = [label_text(v) for v in values[is_bool]]
    codes, uniques = pd.factorize(values, sort=False)
    return _from_uniques(codes, uniques, sort)


def _categorical_codes(values: pd.Categorical) -> GroupCodes:
    """A categorical: its categories' order, unused ones dropped.

    Only the used categories are canonicalized: an unused text category next to numeric
    ones is no level, so it does not turn the numbers into text.
    """
    raw = np.asarray(values.codes, dtype=np.int64)
    used = np.zeros(len(values.categories), dtype=bool)
    used[raw[raw >= 0]] = True
    kept = np.flatnonzero(used)
    # The used categories in their order; canonical duplicates share a code.
    inner = _from_uniques(np.arange(len(kept)), values.categories[kept], sort=False)
    position = np.full(len(values.categories), -1, dtype=np.int64)
    position[kept] = np.arange(len(kept))
    codes = np.where(raw >= 0, inner.codes[position[np.maximum(raw, 0)]], -1)
    return GroupCodes(codes, inner.levels)


def _tuple_labels(values: np.ndarray) -> pd.MultiIndex | None:
    """Labels given as tuples (an interaction's levels as a list), as a MultiIndex."""
    present = [v for v in values[:64] if isinstance(v, tuple)]
    if not present:
        return None
    width = len(present[0])
    rows = [v if isinstance(v, tuple) else (np.nan,) * width for v in values]
    return pd.MultiIndex.from_tuples(rows)


def _interaction_codes(labels: pd.MultiIndex, sort: bool) -> GroupCodes:
    """Codes of tuples: each component coded by the rule, then the combinations."""
    parts = [encode_labels(level, sort=sort) for level in labels.levels]
    codes = None
    level_parts: list[np.ndarray] = []
    for part, raw in zip(parts, labels.codes, strict=True):
        component = np.where(raw >= 0, part.codes[np.maximum(raw, 0)], -1)
        if codes is None:
            codes, level_parts = component, [np.arange(part.ngroups)]
            continue
        present = (codes >= 0) & (component >= 0)
        key = codes[present] * part.ngroups + component[present]
        inner, keys = pd.factorize(key, sort=sort)
        codes = np.full(len(component), -1, dtype=np.int64)
        codes[present] = inner
        level_parts = [p[keys // part.ngroups] for p in level_parts] + [keys % part.ngroups]
    arrays = [part.levels[positions] for part, positions in zip(parts, level_parts, strict=True)]
    levels = pd.MultiIndex.from_arrays(arrays, names=labels.names)
    return GroupCodes(np.asarray(codes, dtype=np.int64), levels)


def encode_labels(labels, sort: bool = True) -> GroupCodes:
    """Code labels by the canonical label rule (module docstring); ``-1`` marks a missing one.

    Parameters
    ----------
    labels : array-like, pandas Series, Index, Categorical or MultiIndex
        One label per row; a MultiIndex (or tuples) for an interaction of columns.
    sort : bool
        Sort the levels (default, as R's ``factor()``); otherwise they keep their order
        of first appearance. A categorical always keeps its categories' order.

    Returns
    -------
    GroupCodes
        ``codes`` per row and the canonical ``levels``.

    Examples
    --------
    >>> g = encode_labels(pd.Series([5, "5", 7.0, None], dtype=object))
    >>> g.codes.tolist(), g.levels.tolist()
    ([0, 0, 1, -1], ['5', '7'])
    """
    if isinstance(labels, pd.MultiIndex):
        return _interaction_codes(labels, sort)
    if isinstance(labels, (pd.Series, pd.Index)):
        values = labels.array
        if isinstance(values, pd.arrays.NumpyExtensionArray):
            values = values.to_numpy()
    elif isinstance(labels, pd.Categorical):
        values = labels
    else:
        values = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
        if values.ndim == 2 and values.dtype == object:  # a list of tuples
            values = np.fromiter(map(tuple, values), dtype=object, count=len(values))
        if values.ndim != 1:
            raise ValueError(f"labels must be one-dimensional, got shape {values.shape}")
    if isinstance(values, pd.Categorical) or isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        return _categorical_codes(pd.Categorical(values))
    if isinstance(values, pd.api.extensions.ExtensionArray):
        dtype = values.dtype
        if pd.api.types.is_string_dtype(dtype):
            codes, uniques = pd.factorize(values, sort=sort)  # text needs no canonical form
            return GroupCodes(codes.astype(np.int64, copy=False), pd.Index(uniques))
        if dtype.kind in "iuf":  # nullable numbers: the numpy rule on the present values
            present = ~np.asarray(values.isna())
            inner = values[present].to_numpy(dtype=dtype.numpy_dtype)
            return _with_missing(present, encode_labels(inner, sort=sort))
        if dtype.kind not in "mM":
            codes, uniques = pd.factorize(values, sort=False)
            return _from_uniques(codes, np.asarray(uniques, dtype=object), sort)
    if isinstance(values, np.ndarray):
        kind = values.dtype.kind
        if kind in "iu":
            return _integer_codes(values, sort) if values.size else GroupCodes(np.zeros(0, np.int64), pd.Index([]))
        if kind == "f":
            return _float_codes(values.astype(np.float64, copy=False), sort)
        if kind == "O":
            tuples = _tuple_labels(values)
            if tuples is not None:
                return _interaction_codes(tuples, sort)
            return _object_codes(values, sort)
    codes, uniques = pd.factorize(values, sort=sort)
    return GroupCodes(codes.astype(np.int64, copy=False), pd.Index(uniques))


def factorize_groups(groups, name: str = "group") -> GroupCodes:
    """Code group labels as ``0 .. G - 1`` (sorted, by the canonical label rule).

    Parameters
    ----------
    groups : array-like, pandas Series, Categorical or MultiIndex
        One label per row. Missing labels are an error: drop those rows first.
    name : str
        The grouping variable's name, used in error messages.

    Examples
    --------
    >>> factorize_groups(["b", "a", "b"]).codes
    array([1, 0, 1])
    """
    try:
        coded = encode_labels(groups)
    except ValueError as err:
        raise ValueError(f"groups ({name}): {err}") from None
    # The smallest code first (one pass, no temporary): missing labels are rare.
    n_missing = int((coded.codes < 0).sum()) if coded.codes.size and coded.codes.min() < 0 else 0
    if n_missing:
        raise ValueError(f"grouping variable {name!r} has {n_missing} missing labels; drop those rows first")
    levels = coded.levels
    if not isinstance(levels, pd.MultiIndex):
        levels = levels.rename(name)
    return GroupCodes(coded.codes, levels)


def _concat(first, second):
    """Two label collections as one, without losing digits or the tuple structure."""
    if isinstance(first, pd.MultiIndex) or isinstance(second, pd.MultiIndex):
        first = first if isinstance(first, pd.MultiIndex) else _tuple_labels(np.asarray(first, dtype=object))
        second = second if isinstance(second, pd.MultiIndex) else _tuple_labels(_object_array(second))
        if first is None or second is None or first.nlevels != second.nlevels:
            return None
        return first.append(second)
    a, b = pd.Series(first), pd.Series(second)
    if a.dtype == b.dtype:
        return pd.concat([a, b], ignore_index=True)
    if isinstance(a.dtype, np.dtype) and isinstance(b.dtype, np.dtype) and a.dtype.kind in "iuf" \
            and b.dtype.kind in "iuf":
        common = np.result_type(a.dtype, b.dtype)
        # Integers past 2**53 would lose digits as floats (and uint64 with int64 gives floats).
        exact = common.kind != "f" or all(
            s.dtype.kind == "f" or not len(s) or np.abs(s.to_numpy(dtype=np.float64)).max() < EXACT_FLOAT_INTEGER
            for s in (a, b))
        if exact:
            return np.concatenate([a.to_numpy(dtype=common), b.to_numpy(dtype=common)])
    return np.concatenate([_object_array(a), _object_array(b)])


def _object_array(values) -> np.ndarray:
    values = pd.Series(values) if not isinstance(values, (pd.Series, pd.Index)) else values
    return np.asarray(values.astype(object) if not isinstance(values, pd.MultiIndex) else values, dtype=object)


def level_positions(levels: pd.Index, labels) -> np.ndarray:
    """Position of each label among ``levels``, ``-1`` for a missing or unknown one.

    Labels match by the canonical label rule, so ``308``, ``308.0`` and ``"308"`` find
    the level ``308`` (and ``"308"`` finds 308 too).

    Examples
    --------
    >>> level_positions(pd.Index([308, 309]), [309, "308", 308.0, "x", None]).tolist()
    [1, 0, 0, -1, -1]
    """
    if not isinstance(labels, (pd.Series, pd.Index, pd.Categorical, np.ndarray)):
        labels = np.asarray(labels, dtype=object) if not _all_tuples(labels) else _tuple_labels(
            np.fromiter(labels, dtype=object, count=len(labels)))
    if isinstance(getattr(labels, "dtype", None), pd.CategoricalDtype):
        # Match the categories once, not every row.
        categorical = pd.Categorical(labels)
        of_category = level_positions(levels, categorical.categories)
        codes = np.asarray(categorical.codes, dtype=np.int64)
        return np.where(codes >= 0, of_category[np.maximum(codes, 0)] if len(of_category) else -1, -1)
    combined = _concat(levels, labels)
    if combined is None:
        raise ValueError("labels of an interaction grouping (a:b) must be given as tuples, one per row")
    coded = encode_labels(combined, sort=False)
    level_codes, label_codes = coded.codes[:len(levels)], coded.codes[len(levels):]
    position_of = np.full(coded.ngroups, -1, dtype=np.int64)
    known = level_codes >= 0
    position_of[level_codes[known]] = np.flatnonzero(known)
    return np.where(label_codes >= 0, position_of[np.maximum(label_codes, 0)], -1)


def _all_tuples(values) -> bool:
    return len(values) > 0 and all(isinstance(v, tuple) for v in values)


def group_labels(data: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series | pd.MultiIndex:
    """The grouping factor's labels: the column, or for ``a:b`` a MultiIndex of the columns.

    A MultiIndex keeps each component apart (no joined text that two different pairs
    could share) and is coded by :func:`encode_labels` without building a tuple per row.
    """
    if len(columns) == 1:
        return data[columns[0]]
    return pd.MultiIndex.from_arrays([data[c] for c in columns], names=list(columns))


def label_kinds(values) -> dict[str, object]:
    """The kinds of label a column holds (``numbers``, ``text``, ``booleans``, ``dates``,
    ``other``), each with an example; ``numerals`` for text that spells a number otherwise
    than :func:`label_text` would ("05", "5.0"), with an example.

    A chunked fit compares kinds across chunks: when a reader typed a column as numbers in
    one chunk, the text its values had in the file is lost, and a text chunk holding
    "05" cannot be matched to it.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        # The first number is the example: no copy of the column without its NaN.
        found = series.notna().to_numpy()
        return {"numbers": series.iloc[int(found.argmax())]} if found.any() else {}
    present = series.dropna()
    if not len(present):
        return {}
    if isinstance(dtype, pd.CategoricalDtype):
        uniques = pd.Series(present.cat.remove_unused_categories().cat.categories)
    elif dtype.kind in "iuf":
        return {"numbers": present.iloc[0]}
    elif dtype.kind == "b":
        return {"booleans": present.iloc[0]}
    elif dtype.kind in "mM":
        return {"dates": present.iloc[0]}
    else:
        uniques = pd.Series(pd.unique(present.to_numpy(dtype=object)))
    kinds: dict[str, object] = {}
    for value in uniques:
        kinds.setdefault(_kind(value), value)
    if "text" in kinds:
        spelled = _numerals_spelled_otherwise(uniques[[isinstance(v, str) for v in uniques]])
        if spelled is not None:
            kinds["numerals"] = spelled
    return kinds


def _numerals_spelled_otherwise(text: pd.Series):
    """The first text that reads as a number whose :func:`label_text` differs ("05")."""
    text = text.astype(object).reset_index(drop=True)
    numbers_read = pd.to_numeric(text, errors="coerce")
    readable = numbers_read.notna().to_numpy()
    if not readable.any():
        return None
    text, numbers_read = text[readable], numbers_read[readable].to_numpy(dtype=np.float64)
    # Integers (the usual ids) are spelled by numpy at once; other numbers one by one.
    simple = (np.abs(numbers_read) < EXACT_FLOAT_INTEGER) & (numbers_read == np.round(numbers_read))
    spelled = np.empty(len(text), dtype=object)
    spelled[simple] = numbers_read[simple].astype(np.int64).astype(str)
    spelled[~simple] = [label_text(v) for v in numbers_read[~simple]]
    differs = np.flatnonzero(spelled != text.to_numpy())
    return text.iloc[differs[0]] if differs.size else None


__all__ = ["GroupCodes", "encode_labels", "factorize_groups", "group_labels", "label_kinds", "label_text",
           "level_positions"]
