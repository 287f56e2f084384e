"""The fixed-effect design of numeric and factor terms without formulaic's materialization.

formulaic's ``model_matrix`` costs a few milliseconds whatever the number of rows (it
parses the formula and builds a pandas object per term), which on a thousand rows is as
much as the whole fit. Most formulas need none of that work per row: in
``y ~ x1 + x2 + f + C(h, contr.sum)`` each term reads one column, and formulaic makes of
it either the column itself (a plain numeric column) or, for a factor, columns that are a
function of the level alone, given the set of levels (treatment, sum, Helmert or
polynomial contrasts alike). So formulaic is shown only a *sample* of the rows holding
every level of every factor, and its output there, a *recipe*, says everything:

* the names and order of the columns, and the model spec kept for new data;
* per numeric term, the data column copied as floats;
* per factor term, a table of the term's columns for each level, from which the full
  columns are read off by the rows' level codes.

The recipe is cached, keyed by everything formulaic's work depends on besides the rows:
the fixed formula, the dtype of every column it reads, and the set of levels of every
factor column (the categories and their order for a pandas categorical); a fit of other
rows with the same key reuses it without calling formulaic at all. It is checked when
it is made: on the sample the columns it gives must equal formulaic's, value for value.

Any other term goes the general way (:func:`reml_engine.frontend.fast_design.model_matrices`):
an interaction, a transform (``np.log(x)``, ``I(x**2)``, ``poly(x, 2)``, ``center(x)``,
``within(x)``), or a column whose dtype is not a numpy number, numpy boolean, text or
categorical. The tests compare both paths on the same data.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import formulaic
import numpy as np
import pandas as pd

from .columns import column_values
from .fast_design import SPEC_ROWS, FastMatrices, _Matrix
from .formula import FORMULAIC_INTERCEPT

#: Recipes kept in memory (the least recently used is dropped first).
RECIPE_CACHE_SIZE = 128
#: Bytes of level tables the kept recipes may hold together (a factor of L levels has
#: a table of about L x L floats: 8 MB at L = 1000); a recipe with more is used for its
#: own fit and not kept.
RECIPE_CACHE_BYTES = 64 * 2**20
#: The sample shown to formulaic may hold at most this share of the rows (a factor
#: with a level on most rows, such as ``C(x)`` of a continuous x, goes the general way:
#: a sample that large would save nothing).
MAX_SAMPLE_SHARE = 0.5

#: ``C(name)`` or ``C(name, ...)``: a factor term read from one column.
_C_CALL = re.compile(r"^C\(\s*(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_.]*))\s*(?:,.*)?\)$", re.DOTALL)

_NUMERIC = "numeric"
_LEVELS = "levels"


@dataclass(frozen=True)
class _TermPlan:
    """What the formula's terms read, from its text alone: the response column, and
    for each column read by a term whether a plain term reads it (numbers or levels,
    by its dtype) or a ``C()`` term does (levels whatever its dtype)."""

    response: str
    plain_columns: frozenset[str]
    factor_columns: frozenset[str]


@dataclass(frozen=True)
class _Part:
    """How a run of X's columns (``start:stop``, one formula term) is made from the rows."""

    kind: str  # "intercept", _NUMERIC or _LEVELS
    start: int
    stop: int
    column: str | None = None
    #: (columns of the term, levels of ``column``): the term's columns on each level, the
    #: levels in the order of ``_Recipe.labels[column]``.
    table: np.ndarray | None = None


@dataclass(frozen=True)
class _Recipe:
    """formulaic's design of a formula and a column layout, as learnt from a sample."""

    response: str
    columns: tuple[str, ...]
    parts: tuple[_Part, ...]
    #: The level labels (:class:`_Levels`) of each factor column, in the order of the
    #: columns of the parts' tables.
    labels: dict
    lhs_spec: object
    rhs_spec: object


class _RecipeCache:
    """A small least-recently-used cache, bounded in entries and in the bytes of their
    tables, safe for fits run in threads."""

    def __init__(self, size: int, nbytes: int) -> None:
        self.size = size
        self.nbytes = nbytes
        self._items: OrderedDict = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key, recipe) -> None:
        nbytes = _table_bytes(recipe)
        if nbytes > self.nbytes:
            return
        with self._lock:
            if key in self._items:
                self._held -= self._items.pop(key)[1]
            self._items[key] = (recipe, nbytes)
            self._held += nbytes
            while len(self._items) > self.size or self._held > self.nbytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._held -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._held = 0

    def __len__(self) -> int:
        return len(self._items)


def _table_bytes(recipe) -> int:
    if not isinstance(recipe, _Recipe):
        return 0
    return sum(part.table.nbytes for part in recipe.parts if part.table is not None)


#: The recipes made so far (``_RECIPES.clear()`` empties it).
_RECIPES = _RecipeCache(RECIPE_CACHE_SIZE, RECIPE_CACHE_BYTES)
#: Recorded for a key whose formula formulaic does not build as the recipe expects.
_NOT_A_RECIPE = "not a recipe"


@functools.lru_cache(maxsize=RECIPE_CACHE_SIZE)
def _term_plan(fixed: str) -> _TermPlan | None:
    """The plan of a fixed formula whose every term is the intercept, a plain column or
    ``C(column, ...)``; None for any other formula (interactions, transforms)."""
    try:
        formula = formulaic.Formula(fixed)
        lhs, rhs = list(formula.lhs), list(formula.rhs)
    except Exception:  # formulaic's parse errors are reported by the general path
        return None
    if len(lhs) != 1 or len(lhs[0].factors) != 1 or lhs[0].factors[0].eval_method.value != "lookup":
        return None
    plain, factors = set(), set()
    for term in rhs:
        if _is_intercept(term):
            continue
        if len(term.factors) > 1:
            return None
        factor = term.factors[0]
        if factor.eval_method.value == "lookup":
            plain.add(factor.expr)
            continue
        call = _C_CALL.match(factor.expr) if factor.eval_method.value == "python" else None
        if call is None:
            return None
        column = call.group(1) or call.group(2)
        # C(x, levels=...) must read nothing but x: levels taken from another variable's
        # values would depend on rows the sample does not hold.
        if {str(name) for name in formulaic.Formula(factor.expr).required_variables} != {column}:
            return None
        factors.add(column)
    return _TermPlan(lhs[0].factors[0].expr, frozenset(plain), frozenset(factors))


def _is_intercept(term) -> bool:
    """formulaic's intercept term, the literal ``1``."""
    return len(term.factors) == 1 and term.factors[0].eval_method.value == "literal" and term.factors[0].expr == "1"


def _is_number(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def _has_levels(dtype) -> bool:
    """Dtypes whose values formulaic reads as levels, or (numpy booleans) as 0/1: a
    function of the value either way."""
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if isinstance(dtype, np.dtype):
        return dtype.kind in "bO"
    return dtype == "str"


def _dtype_key(dtype):
    """A dtype as part of the cache key: a categorical's categories in their order (the
    reference level), which pandas' dtype equality does not compare."""
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories
        # to_numpy first: iterating an Arrow-backed Index takes a call per element.
        return ("category", str(categories.dtype), tuple(categories.to_numpy()), bool(dtype.ordered))
    return dtype  # numpy and pandas' other dtypes compare and hash by what they are


@dataclass(frozen=True)
class _Levels:
    """A factor column's rows as level codes, and the level each code stands for."""

    #: (n,) ``0 .. len(labels) - 1``.
    codes: np.ndarray
    #: The level of each code: a categorical's category position (its categories are in
    #: the cache key), else ``(type, value)``, as ``1``, ``1.0`` and ``True`` are equal
    #: values but name different columns.
    labels: tuple
    #: What the cache key holds of the levels: the categories present, or the set of labels.
    key: object


def _code_levels(values) -> _Levels | None:
    """The level codes of a column (None with a missing value, which the caller drops
    before)."""
    if isinstance(values, pd.Categorical):
        codes = values.codes
        if len(codes) and codes.min() < 0:
            return None
        ncategories = len(values.categories)
        present = np.bincount(codes, minlength=ncategories) > 0
        return _Levels(codes.astype(np.intp), tuple(range(ncategories)), present.tobytes())
    codes, uniques = pd.factorize(values, sort=False)
    if len(codes) and codes.min() < 0:
        return None
    objects = np.asarray(uniques, dtype=object)
    labels = tuple(zip(map(type, objects), objects, strict=True))
    return _Levels(codes, labels, frozenset(labels))


def _columns_by_name(data: pd.DataFrame, names) -> dict | None:
    """The values of the named columns (None if one is absent, repeated or named as the
    intercept: the general path reports those)."""
    names = list(names)
    present = data.columns
    if FORMULAIC_INTERCEPT in names or not all(name in present for name in names):
        return None
    if not present.is_unique and present[present.isin(names)].duplicated().any():
        return None
    return {name: column_values(data, name) for name in names}


def recipe_matrices(fixed: str, data: pd.DataFrame, context=None) -> FastMatrices | None:
    """The fixed part's model matrices from a recipe, or None when the formula or the
    dtypes need formulaic's general materialization.

    Parameters
    ----------
    fixed : str
        The fixed part of the formula as formulaic reads it, ``"y ~ x1 + f"``.
    data : pandas.DataFrame
        Rows with missing values already dropped, columns in the dtypes formulaic reads
        (:func:`reml_engine.frontend.columns.design_frame`).
    context : dict, optional
        Extra names for formulaic (used only when a recipe is made).

    Returns
    -------
    FastMatrices or None
        What ``formulaic.model_matrix(fixed, data, na_action="ignore")`` returns, with
        the same column names, values and model spec.
    """
    plan = _term_plan(fixed)
    if plan is None or len(data) == 0:
        return None
    columns = _columns_by_name(data, {plan.response, *plan.plain_columns, *plan.factor_columns})
    if columns is None or not _is_number(columns[plan.response].dtype):
        return None
    numeric, factors = [], []
    for name in sorted(plan.plain_columns | plan.factor_columns):
        dtype = columns[name].dtype
        if name in plan.plain_columns and _is_number(dtype):
            numeric.append(name)
        elif not (_has_levels(dtype) or (name in plan.factor_columns and _is_number(dtype))):
            return None
        if name in plan.factor_columns or not _is_number(dtype):
            factors.append(name)
    coded = {}
    for name in factors:
        levels = _code_levels(columns[name])
        if levels is None:
            return None
        coded[name] = levels
    key = (
        fixed,
        _dtype_key(columns[plan.response].dtype),
        tuple((name, _dtype_key(columns[name].dtype)) for name in numeric),
        tuple((name, _dtype_key(columns[name].dtype), coded[name].key) for name in factors),
    )
    recipe = _RECIPES.get(key)
    if recipe is None:
        recipe = _make_recipe(fixed, data, columns, plan, coded, context)
        _RECIPES.put(key, recipe)
    if recipe is _NOT_A_RECIPE:
        return None
    # y as formulaic's fast path reads it: a read-only view of the column, which pandas
    # copies before the data are changed (the raw column values are not tracked so).
    return _apply(recipe, columns, coded, data[recipe.response].to_numpy(dtype=np.float64))


def _make_recipe(fixed: str, data: pd.DataFrame, columns: dict, plan: _TermPlan, coded: dict, context):
    """formulaic on the first rows and the first row of every level, read as a recipe
    (or ``_NOT_A_RECIPE`` when its output is not what the recipe can rebuild)."""
    n = len(data)
    # The first row of each level present (np.unique: first occurrences, in code order).
    firsts = {name: np.unique(levels.codes, return_index=True) for name, levels in coded.items()}
    sample = np.unique(np.concatenate([np.arange(min(n, SPEC_ROWS)), *(rows for _, rows in firsts.values())]))
    if len(sample) > SPEC_ROWS and len(sample) > MAX_SAMPLE_SHARE * n:
        return _NOT_A_RECIPE
    try:
        matrices = formulaic.model_matrix(fixed, data.iloc[sample], na_action="ignore", context=context)
    except Exception:  # the general path reports formulaic's errors on all the rows
        return _NOT_A_RECIPE
    rhs, lhs = matrices.rhs, matrices.lhs
    names = tuple(str(c) for c in rhs.columns)
    if lhs.shape[1] != 1 or str(lhs.columns[0]) != plan.response:
        return _NOT_A_RECIPE
    values = np.asarray(rhs.to_numpy(dtype=np.float64))
    row_in_sample = {name: (present, np.searchsorted(sample, rows)) for name, (present, rows) in firsts.items()}
    parts, start = [], 0
    for structure in rhs.model_spec.structure:
        stop = start + len(structure.columns)
        part = _recipe_part(structure.term, start, stop, names, plan, coded, values, row_in_sample)
        if part is None:
            return _NOT_A_RECIPE
        parts.append(part)
        start = stop
    if start != len(names):
        return _NOT_A_RECIPE
    labels = {name: levels.labels for name, levels in coded.items()}
    recipe = _Recipe(plan.response, names, tuple(parts), labels, lhs.model_spec, rhs.model_spec)
    # The recipe must give formulaic's columns on the sample, value for value.
    sampled = {name: replace(levels, codes=levels.codes[sample]) for name, levels in coded.items()}
    read = {name: np.asarray(columns[name])[sample] for name in _read_columns(recipe)}
    rebuilt = _apply(recipe, read, sampled, read[plan.response]).rhs
    if not np.array_equal(rebuilt.values, values):
        return _NOT_A_RECIPE
    return recipe


def _recipe_part(term, start: int, stop: int, names, plan: _TermPlan, coded: dict, values: np.ndarray,
                 row_in_sample: dict) -> _Part | None:
    """The part of one term of formulaic's structure (None if it is not one the recipe
    rebuilds)."""
    if _is_intercept(term):
        ok = stop - start == 1 and names[start] == FORMULAIC_INTERCEPT
        return _Part("intercept", start, stop) if ok else None
    if len(term.factors) != 1:
        return None
    factor = term.factors[0]
    expr, method = factor.expr, factor.eval_method.value
    if method == "lookup" and expr in plan.plain_columns and expr not in coded:
        ok = stop - start == 1 and names[start] == expr
        return _Part(_NUMERIC, start, stop, expr) if ok else None
    call = _C_CALL.match(expr) if method == "python" else None
    column = (call.group(1) or call.group(2)) if call else (expr if method == "lookup" else None)
    if column not in coded:
        return None
    # Column k of the table: the term's columns on the first row of level k (zeros for
    # a category absent from the rows, which the cache key says is absent).
    present, rows = row_in_sample[column]
    table = np.zeros((stop - start, len(coded[column].labels)))
    table[:, present] = values[rows, start:stop].T
    return _Part(_LEVELS, start, stop, column, table)


def _read_columns(recipe: _Recipe) -> set[str]:
    return {recipe.response} | {part.column for part in recipe.parts if part.kind == _NUMERIC}


def _apply(recipe: _Recipe, columns: dict, coded: dict, y: np.ndarray) -> FastMatrices:
    """X from the rows' columns and level codes, by the recipe, and y."""
    nrows = len(y)
    X = np.empty((nrows, len(recipe.columns)), dtype=np.float64, order="F")
    level_rows = {}
    for part in recipe.parts:
        if part.kind == "intercept":
            X[:, part.start] = 1.0
        elif part.kind == _NUMERIC:
            X[:, part.start] = columns[part.column]
        else:
            levels = coded[part.column]
            if part.column not in level_rows:
                # The recipe's levels may be in another order (of appearance in other rows).
                known = recipe.labels[part.column]
                if known == levels.labels:
                    level_rows[part.column] = None
                else:
                    position = {label: k for k, label in enumerate(known)}
                    level_rows[part.column] = np.array([position[label] for label in levels.labels], dtype=np.intp)
            rows = level_rows[part.column]
            by_level = part.table if rows is None else np.ascontiguousarray(part.table[:, rows])
            # X is column-major: its columns start:stop, transposed, are one C-ordered block.
            # Codes are valid (checked in recipe_matrices): "wrap" spares numpy a buffer.
            np.take(by_level, levels.codes, axis=1, out=X[:, part.start:part.stop].T, mode="wrap")
    return FastMatrices(lhs=_Matrix(y, (recipe.response,), recipe.lhs_spec),
                        rhs=_Matrix(X, recipe.columns, recipe.rhs_spec))


def clear_recipes() -> None:
    """Forget every recipe (the next fit of each formula asks formulaic again)."""
    _RECIPES.clear()


__all__ = ["MAX_SAMPLE_SHARE", "RECIPE_CACHE_BYTES", "RECIPE_CACHE_SIZE", "clear_recipes", "recipe_matrices"]
