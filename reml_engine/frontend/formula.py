"""lme4's formula, read: the fixed part for formulaic and the grouping factor.

``"y ~ x + cat + (1|g)"`` splits into the fixed part ``y ~ x + cat``, built by formulaic
(categoricals, interactions, transforms, intercept removal), and the grouping term
``(1|g)``; ``(1|a:b)`` groups by the combination of columns a and b, and lme4's
``(1|factor(g))`` and ``(1||g)`` mean ``(1|g)``. R's dotted column names
(``Sepal.Length``) are quoted for formulaic; a formula in R's dialect is translated
(:mod:`reml_engine.frontend.formula_dialect`). The columns the formula reads
(:func:`required_variables`) and the names of the design's columns as lme4 prints them
(:func:`lme4_column_names`) are read here too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import formulaic
from formulaic.transforms import TRANSFORMS

from ..errors import ModelDataError
from .formula_dialect import check_contrasts, check_dialect, check_python
from .r_functions import R_FUNCTIONS
from .r_translate import translate_r
from .transforms import TRANSFORM_NAMES

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
#: Names a formula may use that are functions or modules, not columns.
_FORMULA_NAMESPACE = ("np", "numpy", "pd", "C", "I", "Q", *TRANSFORM_NAMES)
#: A grouping factor written as R's ``factor(g)`` means the grouping by column g.
_FACTOR_CALL = re.compile(r"^(?:factor|as\.factor|as_factor)\s*\(\s*(.+?)\s*\)$")
#: One column name in a grouping term: a plain (possibly dotted) name, or backticked.
_GROUP_COLUMN = re.compile(r"^(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_.]*))$")
#: Pieces of a formula that are left as they are when names are quoted: backticked
#: names and string literals.
_QUOTED_OR_STRING = r"`[^`]*`|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
#: A dotted name (R's ``Sepal.Length``) that is not a call (``np.log(``).
_DOTTED_NAME = re.compile(
    rf"({_QUOTED_OR_STRING})|(?<![\w.`])([A-Za-z_]\w*(?:\.\w+)+)(?![\w.]*\s*\()"
)
#: A backticked name in a formula.
_BACKTICKED = re.compile(r"`([^`]+)`")
#: R's ``.`` (every other column) as a term of the fixed part.
_DOT_TERM = re.compile(r"(?:^|[\s~+*:(-])\.(?:$|[\s+*:)-])")
#: An offset term, ``offset(z)``.
_OFFSET_TERM = re.compile(r"(?<![\w.])offset\s*\(")

#: Name of the intercept column, as lme4 prints it.
INTERCEPT_NAME = "(Intercept)"
#: Name formulaic gives the intercept column (a data column of that name would be
#: confused with it).
FORMULAIC_INTERCEPT = "Intercept"


def _random_slope_message(term: str, effect: str, group: str) -> str:
    """Why a random slope is refused, and what to use instead."""
    x = effect.replace(" ", "").replace("1+", "").replace("0+", "").replace("+1", "") or effect.strip()
    return (
        f"random term '{term}' has a random slope ({effect.strip()}); random slopes are out of scope: "
        f"reml_engine fits random intercepts such as '(1|{group})'. For the within-group effect of {x} use the "
        f"fixed terms within({x}) + between({x}) ('y ~ within({x}) + between({x}) + (1|{group})'); for random "
        "slopes use lme4 (R) or statsmodels' MixedLM"
    )


@dataclass(frozen=True)
class ParsedFormula:
    """An lmer formula split into its fixed part and its grouping factor(s).

    ``fixed`` is the fixed part as formulaic reads it: dotted names such as
    ``Sepal.Length`` are backticked, a formula in R's dialect is translated and
    ``contrasts`` are written in (:mod:`reml_engine.frontend.formula_dialect`).
    """

    formula: str
    fixed: str
    response: str
    group_columns: tuple[str, ...]
    dialect: str = "python"
    contrasts: tuple[tuple[str, str], ...] = ()
    #: Several random terms (``parse_formula(..., several_terms=True)``): one entry per
    #: term after lme4's expansion of ``a/b``, in the formula's order; ``group_columns``
    #: then lists every grouping column once.
    random_terms: tuple[RandomTermSpec, ...] = ()
    #: The columns of the formula's ``offset(z)`` terms (several-terms formulas only).
    offset_columns: tuple[str, ...] = ()

    @property
    def group_name(self) -> str:
        return ":".join(self.group_columns)


@dataclass(frozen=True)
class RandomTermSpec:
    """One random-intercept term: lme4's name and the columns whose combination groups.

    ``columns`` are in the order of lme4's name: ``(1|a/b)`` gives the terms
    ``b:a`` with columns ``("b", "a")`` and ``a``; ``(1|a/b/c)`` gives ``c:(b:a)``
    with columns ``("c", "b", "a")``.
    """

    name: str
    columns: tuple[str, ...]


def _random_terms(rhs: str, formula: str) -> list[tuple[int, int, str]]:
    """``(start, end, inside)`` of each parenthesized term with a ``|`` at its top level."""
    terms = []
    depth = 0
    start = 0
    for i, char in enumerate(rhs):
        if char == "(":
            if depth == 0:
                start = i
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ModelDataError(f"formula {formula!r} has a ')' without its '('")
            if depth == 0:
                inside = rhs[start + 1:i]
                if "|" in re.sub(r"\([^()]*\)", "", inside):
                    terms.append((start, i + 1, inside))
    if depth:
        raise ModelDataError(f"formula {formula!r} has a '(' without its ')'")
    return terms


def _group_columns(group: str, term: str) -> tuple[str, ...]:
    """The columns of a grouping factor ``g``, ``a:b`` or ``factor(g)``."""
    if "/" in group:
        raise ModelDataError(f"nested grouping '{term}' is not supported; use one factor or a:b")
    columns = []
    for part in group.split(":"):
        part = part.strip()
        call = _FACTOR_CALL.match(part)
        if call:
            part = call.group(1)
        name = _GROUP_COLUMN.match(part)
        if not name:
            raise ModelDataError(
                f"grouping factor '{group.strip()}' of random term '{term}' must be a column, factor(column) "
                "or an interaction a:b of columns"
            )
        columns.append(name.group(1) or name.group(2))
    return tuple(columns)


def _quote_dotted_names(fixed: str) -> str:
    """Backtick R-style dotted names (``Sepal.Length``), which formulaic would read as an
    attribute; ``np.log(`` and other calls, and names of modules such as ``np.pi``, are
    left alone."""

    def quote(match: re.Match) -> str:
        if match.group(1) is not None:
            return match.group(1)
        name = match.group(2)
        if name.split(".", 1)[0] in _formula_namespace():
            return name
        return f"`{name}`"

    return _DOTTED_NAME.sub(quote, fixed)


def functions_called(parsed: ParsedFormula) -> frozenset[str]:
    """Names the fixed part reads as functions, not columns: modules, formulaic's C/I/Q,
    within/between, and R's functions (:mod:`reml_engine.frontend.r_functions`) where they are
    called (a variable named ``sign`` is still a column the data must have)."""
    return _functions_called(parsed.fixed)


@functools.lru_cache(maxsize=256)
def _functions_called(fixed: str) -> frozenset[str]:
    called = {name for name in R_FUNCTIONS if re.search(rf"(?<![\w.`]){name}\s*\(", fixed)}
    return frozenset((*_FORMULA_NAMESPACE, *called))


def _formula_namespace() -> frozenset[str]:
    return frozenset((*_FORMULA_NAMESPACE, *TRANSFORMS))


def parse_formula(formula: str, columns=None, *, dialect: str = "python", contrasts=None,
                  dtypes=None, several_terms: bool = False) -> ParsedFormula:
    """Split ``"y ~ fixed + (1|g)"`` into the fixed formula and the grouping columns.

    Parameters
    ----------
    formula : str
        lme4-style formula with one random-intercept term: ``(1|g)``, ``(1|a:b)``,
        ``(1|factor(g))`` or ``(1||g)`` (the same model for a random intercept).
    columns : sequence of str, optional
        The data's columns, listed when the formula uses ``.``.
    dialect : {"python", "R"}
        The language of the fixed part (:mod:`reml_engine.frontend.formula_dialect`).
    contrasts : dict, optional
        ``{column: coding}``, written into the fixed part.
    dtypes : mapping of column to dtype, optional
        The data's column types (ordered categoricals get ``contr.poly`` in R's dialect).
    several_terms : bool
        Read any number of random-intercept terms (:func:`random_term_specs`: ``a/b``
        expanded as lme4 does) and ``offset(z)`` terms of the fixed part, for the
        several-terms engine (:mod:`reml_engine.frontend.terms_design`).

    Examples
    --------
    >>> parse_formula("y ~ x + (1|g)").fixed
    'y ~ x'
    >>> parse_formula("y ~ (1 | a:b) + x").group_columns
    ('a', 'b')
    >>> parse_formula("y ~ Sepal.Length + (1|factor(g))").fixed
    'y ~ `Sepal.Length`'
    """
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelDataError(f"formula must be a string like 'y ~ x + (1|g)', got {formula!r}")
    dialect = check_dialect(dialect)
    contrasts = check_contrasts(contrasts)
    dtypes = None if dtypes is None else dict(dtypes.items())
    lhs, rhs = formula.split("~", 1)
    response = lhs.strip()
    if not response:
        raise ModelDataError(f"formula {formula!r} has no response on the left of '~'")
    terms = _random_terms(rhs, formula)
    if not terms:
        if "|" in rhs:
            raise ModelDataError(
                f"formula {formula!r}: write the random term in parentheses, as in 'y ~ x + (1|g)'"
            )
        raise ModelDataError(
            f"formula {formula!r} has no random-intercept term; add one such as '(1|group)'"
        )
    specs: tuple[RandomTermSpec, ...] = ()
    offset_columns: tuple[str, ...] = ()
    if several_terms:
        specs = _term_specs(terms, formula)
        group_columns = tuple(dict.fromkeys(c for spec in specs for c in spec.columns))
        fixed_rhs = rhs
        for start, end, _ in reversed(terms):
            fixed_rhs = fixed_rhs[:start] + fixed_rhs[end:]
        fixed_rhs, offset_columns = _split_offsets(fixed_rhs, formula)
        while re.search(r"\+\s*\+", fixed_rhs):
            fixed_rhs = re.sub(r"\+\s*\+", "+", fixed_rhs)
    else:
        if len(terms) > 1:
            shown = ", ".join(f"({inside.strip()})" for _, _, inside in terms)
            raise ModelDataError(
                f"formula {formula!r} has {len(terms)} random terms ({shown}); this path fits one random "
                "intercept '(1|g)' (rl.lmer fits several terms, from a DataFrame, chunks, Dask or Parquet)"
            )
        start, end, inside = terms[0]
        term = f"({inside.strip()})"
        effect, group = _effect_and_group(inside, term)
        group_columns = _group_columns(group, term)
        fixed_rhs = rhs[:start] + rhs[end:]
    if "|" in fixed_rhs:
        raise ModelDataError(f"formula {formula!r}: only one random term, in parentheses, is supported")
    fixed_rhs = re.sub(r"\+\s*\+", "+", fixed_rhs).strip()
    fixed_rhs = re.sub(r"^\+|\+$", "", fixed_rhs).strip()
    fixed_rhs = re.sub(r"^\+|\+$", "", fixed_rhs).strip()
    if not fixed_rhs:
        fixed_rhs = "1"
    elif fixed_rhs in ("0", "-1", "- 1", "0 +", "+ 0"):
        fixed_rhs = "0"
    if _OFFSET_TERM.search(fixed_rhs):
        raise ModelDataError(
            f"formula {formula!r} has an offset term: offsets are not supported yet; subtract the offset "
            "from the response instead (y - z ~ ...) when its coefficient is 1"
        )
    if _DOT_TERM.search(f" {_strip_quoted(fixed_rhs)} "):
        listing = "" if columns is None else ": " + ", ".join(
            str(c) for c in columns if str(c) != response and str(c) not in group_columns
        )
        raise ModelDataError(
            f"formula {formula!r} uses '.', R's 'every other column', which is not supported; "
            f"name the predictors instead{listing}"
        )
    if dialect == "R":
        fixed = translate_r(response, fixed_rhs, formula, dtypes, contrasts)
    else:
        fixed = check_python(_quote_dotted_names(f"{response} ~ {fixed_rhs}"), formula, dtypes, contrasts)
    return ParsedFormula(formula, fixed, response, group_columns, dialect, contrasts, specs, offset_columns)


def _effect_and_group(inside: str, term: str) -> tuple[str, str]:
    """The two sides of a random term's ``|``; a random slope is refused."""
    effect, group = inside.split("|", 1)
    # lme4's (1||g) (uncorrelated terms) is (1|g) for a random intercept alone.
    group = group[1:] if group.startswith("|") else group
    if effect.replace(" ", "") not in ("1", "1+0", "0+1", ""):
        raise ModelDataError(_random_slope_message(term, effect, group.strip()))
    return effect, group


def _term_specs(terms: list[tuple[int, int, str]], formula: str) -> tuple[RandomTermSpec, ...]:
    """Each random term, ``a/b/c`` expanded as lme4's ``findbars`` expands it, in its order:
    ``c:(b:a)``, ``b:a``, ``a`` (the innermost factor first in the name; an interaction
    inside is parenthesized). The order matters where terms tie in their number of levels
    (:func:`~reml_engine.frontend.terms_design.lme4_term_order`), and lmerTest's ``ranova``
    lists the terms in it."""
    specs: list[RandomTermSpec] = []
    for _, _, inside in terms:
        term = f"({inside.strip()})"
        _, group = _effect_and_group(inside, term)
        name, columns = "", ()
        nested: list[RandomTermSpec] = []
        for part in group.split("/"):
            if not part.strip():
                raise ModelDataError(f"random term '{term}' of formula {formula!r} has an empty grouping factor")
            part_columns = _group_columns(part, term)
            part_name = ":".join(part_columns)
            if not columns:
                name, columns = part_name, part_columns
            else:
                name = f"{part_name}:{f'({name})' if ':' in name else name}"
                columns = part_columns + columns
            nested.append(RandomTermSpec(name, columns))
        specs.extend(reversed(nested))
    seen: dict[frozenset, str] = {}
    for spec in specs:
        key = frozenset(spec.columns)
        if key in seen or len(set(spec.columns)) != len(spec.columns):
            raise ModelDataError(
                f"formula {formula!r} groups by {':'.join(spec.columns)} twice (terms {seen.get(key, spec.name)!r} "
                f"and {spec.name!r}): two terms with the same grouping factor have variances that cannot be "
                "told apart; keep one"
            )
        seen[key] = spec.name
    return tuple(specs)


def random_term_specs(formula: str) -> tuple[RandomTermSpec, ...]:
    """The random-intercept terms of an lmer formula, ``a/b`` expanded as lme4 does.

    Random slopes are refused (a :class:`~reml_engine.errors.ModelDataError` naming the
    alternatives).

    Examples
    --------
    >>> [t.name for t in random_term_specs("y ~ x + (1|school/class) + (1|rater)")]
    ['class:school', 'school', 'rater']
    >>> random_term_specs("y ~ (1|a/b/c)")[0]
    RandomTermSpec(name='c:(b:a)', columns=('c', 'b', 'a'))
    """
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelDataError(f"formula must be a string like 'y ~ x + (1|g)', got {formula!r}")
    return _term_specs(_random_terms(formula.split("~", 1)[1], formula), formula)


def count_random_terms(formula: str) -> int:
    """How many random terms a formula has once ``a/b`` is expanded (0 when it cannot be
    read: the parser then says why). Nothing else is checked: this decides which engine
    fits the formula.

    Examples
    --------
    >>> count_random_terms("y ~ x + (1|g)"), count_random_terms("y ~ (1|a/b) + (1|c)")
    (1, 3)
    """
    if not isinstance(formula, str) or "~" not in formula:
        return 0
    try:
        terms = _random_terms(formula.split("~", 1)[1], formula)
    except ModelDataError:
        return 0
    return sum(inside.split("|", 1)[1].count("/") + 1 for _, _, inside in terms)


def has_offset_term(formula: str) -> bool:
    """The formula's fixed part has an ``offset(...)`` term."""
    return isinstance(formula, str) and bool(_OFFSET_TERM.search(formula))


def _split_offsets(fixed_rhs: str, formula: str) -> tuple[str, tuple[str, ...]]:
    """The fixed part without its ``offset(z)`` terms, and the offset columns."""
    columns = []
    while match := _OFFSET_TERM.search(fixed_rhs):
        depth, end = 0, None
        for i in range(match.end() - 1, len(fixed_rhs)):
            depth += {"(": 1, ")": -1}.get(fixed_rhs[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            raise ModelDataError(f"formula {formula!r} has an 'offset(' without its ')'")
        inside = fixed_rhs[match.end():end - 1].strip()
        name = _GROUP_COLUMN.match(inside)
        if not name:
            raise ModelDataError(
                f"offset term 'offset({inside})' of formula {formula!r}: the offset must be a column of the data; "
                f"compute it first (data['z'] = ...) and write offset(z), or pass offset= an array"
            )
        columns.append(name.group(1) or name.group(2))
        fixed_rhs = fixed_rhs[:match.start()] + fixed_rhs[end:]
    return fixed_rhs, tuple(columns)


def _strip_quoted(text: str) -> str:
    """The text with backticked names and string literals blanked out."""
    return re.sub(_QUOTED_OR_STRING, "_", text)


def formula_variables(formula: str) -> set[str]:
    """The variables a formula (or one side of it) reads.

    formulaic reports only the part of a name before its first dot (``Sepal`` for
    ``Sepal.Length``, as for a method call ``x.fillna``), so backticked names, which
    include the dotted names :func:`parse_formula` quoted, are taken whole.
    """
    return set(_formula_variables(formula))


#: Formulas whose variables are remembered (parsing one costs formulaic a fraction of
#: a millisecond, as much as the rest of a small fit's design).
FORMULA_CACHE_SIZE = 256


@functools.lru_cache(maxsize=FORMULA_CACHE_SIZE)
def _formula_variables(formula: str) -> frozenset[str]:
    """:func:`formula_variables`, cached by the formula's text (they depend on nothing else)."""
    quoted = {}

    def placeholder(match: re.Match) -> str:
        name = match.group(1)
        if name.strip() == "1":  # formulaic reads `1` as the intercept (see reml_engine.frontend.design)
            return match.group(0)
        key = f"_reml_quoted_{len(quoted)}"
        quoted[key] = name
        return key

    names = {str(n) for n in formulaic.Formula(_BACKTICKED.sub(placeholder, formula)).required_variables}
    return frozenset(quoted.get(n, n) for n in names)


def fixed_variables(parsed: ParsedFormula) -> set[str]:
    """The variables of the fixed part (response included)."""
    return formula_variables(parsed.fixed)


def required_variables(parsed: ParsedFormula) -> list[str]:
    """The data columns (and namespace names) the formula reads: the fixed part's
    variables and the grouping columns."""
    return sorted(fixed_variables(parsed) | set(parsed.group_columns) | set(parsed.offset_columns))


def rhs_variables(parsed: ParsedFormula) -> set[str]:
    """The variables of the fixed part's right-hand side (what new data must hold)."""
    rhs = parsed.fixed.split("~", 1)[1]
    return formula_variables(rhs)


def is_plain_name(text: str) -> bool:
    """True for a plain (possibly dotted) name, such as a response written as a column."""
    return bool(_PLAIN_NAME.match(text))


def backticked_names(formula: str) -> list[str]:
    """The names a formula writes in backticks."""
    return _BACKTICKED.findall(formula)


def lme4_column_names(columns: Iterable) -> tuple[str, ...]:
    """The names of formulaic's design columns as lme4 prints them: its intercept column
    ``Intercept`` is ``(Intercept)``."""
    return tuple(INTERCEPT_NAME if str(c) == FORMULAIC_INTERCEPT else str(c) for c in columns)


def intercept_position(names: Sequence[str]) -> int | None:
    """The position of the intercept column among lme4's column names (None without one)."""
    return names.index(INTERCEPT_NAME) if INTERCEPT_NAME in names else None
