"""Which language a formula is written in, and the contrasts of its categorical variables.

``rl.lmer(formula, data, dialect=...)`` reads the fixed part of a formula in one of two
dialects:

``"python"`` (the default)
    formulaic's syntax, as the rest of the documentation writes it: ``np.log(x)``,
    ``I(x**2)``, ``C(f)``, ``poly(x, 2)``, ``scale(x)``. Categorical columns are
    treatment-coded, ordered ones too. R syntax that formulaic would read *differently*
    is refused with an error naming it and ``dialect="R"``: ``^`` inside ``I()`` or any
    Python code (bitwise XOR in Python, a silently wrong design on integer columns),
    ``a %in% b`` (``b/a`` in formulaic, ``a:b`` in R), ``TRUE``, ``factor(x)``,
    ``as.numeric(x)``, ``2L``, ``%%``, ``!``.

``"R"``
    the formula as R's ``model.frame``/``model.matrix`` read it, translated to formulaic
    by :func:`reml_engine.frontend.r_translate.translate_r` (parsed by :mod:`reml_engine.frontend.r_syntax`,
    with R's functions from :mod:`reml_engine.frontend.r_functions`): ``I(x^2)`` is a power (in
    doubles, as R's: ``I(x ** 2.0)``), ``a %in% b`` is ``a:b``, ``log(x, base)``,
    ``sqrt``, ``exp``, ``abs``, ``floor``/``ceiling``, ``pmin``/``pmax``, ``ifelse``,
    ``as.numeric``/``as.integer`` (level codes of a factor, as R), ``factor(x)``/``as.factor``/``ordered``,
    ``C(f, contr.sum)``, ``poly(x, 2)`` (R's orthogonal polynomials, or ``raw = TRUE``)
    and ``scale(x)`` (R's centring and scaling, ``center =``/``scale =``); ``TRUE``,
    ``T``, ``pi``, ``Inf``; R's integer literals (``2L``), ``%%`` and ``%/%``. An
    *ordered* categorical column (``pd.Categorical(..., ordered=True)``, as nlme's
    grouping factors and InstEval's ``studage``/``lectage`` in :mod:`reml_engine.datasets`)
    gets R's ``contr.poly``, unordered ones treatment coding. R functions with no
    translation (``ns``, ``bs``, ``cut``, ...) and Python code (``np.log``) are errors
    that say so.

Both dialects end in one formulaic formula (``ParsedFormula.fixed``), from which the fit,
``predict`` on new data, the type III table and chunked fits build their designs: the
stateful transforms (``poly``, ``scale``) keep the fitting data's coefficients, centre
and scale for new rows, as R's ``predict`` does through ``makepredictcall``.

``contrasts={"f": "contr.sum"}`` (lmer's ``contrasts=`` argument) codes a categorical
column ``f`` with R's ``contr.treatment``, ``contr.sum``, ``contr.helmert``,
``contr.poly`` or ``contr.SAS`` (or formulaic's names ``"treatment"``, ``"sum"``,
``"helmert"``, ``"poly"``, ``"SAS"``, ``"diff"``), in both dialects. It is written into
the formula as ``C(f, contr.sum)``, so the coefficient names say which coding they are
in. The key is the column: it also codes ``factor(f)``, ``as.factor(f)`` and ``C(f)``
(lme4 would need the key ``"factor(f)"`` there). As lme4 does, a key the fixed part
does not use as a categorical variable is ignored with a warning.

Examples
--------
>>> import reml_engine as rl
>>> from reml_engine.frontend.formula import parse_formula
>>> parse_formula("Reaction ~ I(Days^2) + factor(Subject) + (1|Subject)", dialect="R").fixed
'Reaction ~ I(Days ** 2.0) + C(Subject)'
>>> insteval = rl.datasets.insteval()
>>> parse_formula("y ~ studage + service + (1|d)", dialect="R", dtypes=insteval.dtypes).fixed
'y ~ C(studage, contr.poly) + service'
>>> parse_formula("y ~ studage + service + (1|d)", dtypes=insteval.dtypes, contrasts={"service": "contr.sum"}).fixed
'y ~ studage + C(service, contr.sum)'
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
from collections.abc import Mapping

import pandas as pd

from ..errors import ModelDataError, warn

#: The dialects a formula can be written in.
DIALECTS = ("python", "R")
#: The dialect of ``rl.lmer`` when none is given: formulaic's syntax, which the
#: documentation writes; R syntax that formulaic would read differently is an error there.
DEFAULT_DIALECT = "python"

#: ``contrasts=`` names (R's and formulaic's) and the expression written into the formula
#: (``contr`` is formulaic's registry of codings).
CONTRASTS = {
    "contr.treatment": "contr.treatment", "treatment": "contr.treatment",
    "contr.sum": "contr.sum", "sum": "contr.sum",
    "contr.helmert": "contr.helmert", "helmert": "contr.helmert",
    "contr.poly": "contr.poly", "poly": "contr.poly",
    "contr.SAS": "contr.SAS", "SAS": "contr.SAS",
    "contr.diff": "contr.diff", "diff": "contr.diff",
}
#: R's coding of an ordered factor (``options("contrasts")[2]``).
ORDERED_CONTRAST = "contr.poly"


def check_dialect(dialect) -> str:
    """``"python"`` or ``"R"`` (``"r"`` accepted); anything else is an error."""
    if isinstance(dialect, str) and dialect.strip().lower() in ("python", "r"):
        return "R" if dialect.strip().lower() == "r" else "python"
    raise ModelDataError(
        f"dialect must be 'python' (formulaic's syntax: np.log(x), I(x**2)) or 'R' (a formula from an R script: "
        f"I(x^2), factor(g), poly(x, 2)), got {dialect!r}"
    )


def check_contrasts(contrasts) -> tuple[tuple[str, str], ...]:
    """``contrasts=`` as ``((column, formulaic expression), ...)``; None or ``{}`` is ``()``.

    Examples
    --------
    >>> check_contrasts({"Sex": "contr.sum", "f": "helmert"})
    (('Sex', 'contr.sum'), ('f', 'contr.helmert'))
    """
    if contrasts is None:
        return ()
    if not isinstance(contrasts, Mapping):
        raise ModelDataError(
            f"contrasts must be a dict {{column: coding}} such as {{'f': 'contr.sum'}}, got {type(contrasts).__name__}"
        )
    pairs = []
    for column, coding in contrasts.items():
        if not isinstance(column, str):
            raise ModelDataError(f"contrasts keys must be column names (str), got {column!r}")
        if not isinstance(coding, str) or coding not in CONTRASTS:
            names = ", ".join(repr(name) for name in CONTRASTS if name.startswith("contr."))
            raise ModelDataError(
                f"contrasts[{column!r}] must be one of {names} (or formulaic's 'treatment', 'sum', 'helmert', "
                f"'poly', 'SAS', 'diff'), got {coding!r}"
            )
        pairs.append((column, CONTRASTS[coding]))
    return tuple(pairs)


def is_categorical_dtype(dtype) -> bool:
    """Columns formulaic reads as categories: categoricals and text of any backend."""
    return isinstance(dtype, pd.CategoricalDtype) or (
        dtype is not None and not pd.api.types.is_bool_dtype(dtype) and pd.api.types.is_string_dtype(dtype)
    )


def is_ordered_dtype(dtype) -> bool:
    """An ordered categorical (R's ordered factor)."""
    return isinstance(dtype, pd.CategoricalDtype) and bool(dtype.ordered)


class Contrasts:
    """The ``contrasts=`` entries of one formula and which of them were used."""

    def __init__(self, pairs, dtypes: Mapping | None, formula: str):
        self.codings = dict(pairs)
        self.dtypes = dtypes
        self.formula = formula
        self.applied: set[str] = set()
        self.numeric: set[str] = set()
        if dtypes is not None:
            unknown = [c for c in self.codings if c not in dtypes]
            if unknown:
                raise ModelDataError(
                    f"contrasts names {', '.join(map(repr, unknown))}, which is not a column of the data; columns "
                    f"are: {', '.join(map(str, list(dtypes)[:20]))}"
                )

    def coding(self, column: str, as_factor: bool) -> str | None:
        """The contrasts= coding of ``column`` where it enters as a categorical variable."""
        if column not in self.codings:
            return None
        if as_factor or is_categorical_dtype(self.dtype(column)):
            self.applied.add(column)
            return self.codings[column]
        self.numeric.add(column)
        return None

    def dtype(self, column: str):
        return None if self.dtypes is None else self.dtypes.get(column)

    def warn_unused(self) -> None:
        """As lme4 (``model.matrix``) warns for contrasts it cannot apply."""
        if self.dtypes is None:
            return  # the formula is only being split (no data yet): nothing to judge
        for column in self.codings:
            if column in self.applied:
                continue
            if column in self.numeric:
                warn(
                    f"contrasts for {column!r} ignored: {column!r} enters formula {self.formula!r} as numbers "
                    f"(contrasts apply to categorical variables; write factor({column}) or C({column}))"
                )
            else:
                warn(
                    f"contrasts for {column!r} ignored: {column!r} is not a variable of the fixed part of formula "
                    f"{self.formula!r}"
                )


def formula_name(name: str) -> str:
    """A column name as formulaic reads it: plain, or backticked (``Sepal.Length``)."""
    return name if name.isidentifier() and not keyword.iskeyword(name) else f"`{name}`"


# -- formulaic's syntax: refuse what R would read differently ---------------------------

#: R syntax that Python cannot parse (so formulaic's error would not say what it is).
#: R's ``<-`` is left out: ``x<-2`` is a comparison in Python, and an assignment has no
#: place in an R formula.
_R_ONLY_SYNTAX = (
    (re.compile(r"%%"), "'%%' (R's remainder; Python writes %)"),
    (re.compile(r"%/%"), "'%/%' (R's integer division; Python writes //)"),
    (re.compile(r"&&|\|\|"), "'&&'/'||' (R's scalar and/or)"),
    (re.compile(r"!(?!=)"), "'!' (R's not; Python writes ~ on booleans)"),
    (re.compile(r"(?<![\w.])\d+(?:\.\d*)?L\b"), "an R integer literal such as 2L"),
    (re.compile(r"(?<![\w.])(?:as|is)\.\w+\s*\("), "an R function such as as.numeric()"),
)
#: R's constants, which Python spells otherwise (R's T and F are left out: as Python
#: names they are more often columns, and one that is not is reported as such).
_R_CONSTANTS = {"TRUE": "True", "FALSE": "False", "NA": "np.nan", "NULL": "None", "Inf": "np.inf", "NaN": "np.nan"}
#: R functions formulaic does not have, with formulaic's way of saying the same.
_R_ONLY_CALLS = {"factor": "C(x)", "ordered": "C(x, contr.poly)", "relevel": "C(x, contr.treatment('ref'))",
                 "c": "a list [...]"}
_STRING_LITERAL = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_BACKTICKED = re.compile(r"`[^`]*`")


def _python_tree(code: str):
    """The Python syntax tree of formulaic code (backticked names as placeholders), or None."""
    try:
        return ast.parse(_BACKTICKED.sub("_reml_quoted", code), mode="eval")
    except SyntaxError:
        return None


def _r_syntax_error(formula: str, what: str, code: str, fix: str) -> ModelDataError:
    return ModelDataError(
        f"formula {formula!r}: {what} in {code!r} is R syntax, which formulaic (dialect='python') {fix}; or pass "
        "dialect='R' to read the formula as R does"
    )


def _check_python_code(code: str, formula: str, columns) -> None:
    plain = _STRING_LITERAL.sub('""', code)
    for pattern, what in _R_ONLY_SYNTAX:
        if pattern.search(plain):
            raise _r_syntax_error(formula, what, code, "cannot read")
    tree = _python_tree(code)
    if tree is None:
        return  # formulaic's own error, where the design is built, says what is wrong
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
            raise ModelDataError(
                f"formula {formula!r}: '^' in {code!r} is Python's bitwise XOR in formulaic (dialect='python'), not a "
                f"power, and on integer columns it gives wrong numbers without an error; write ** for a power "
                f"({code.replace('^', '**')!r}), or pass dialect='R' to read the formula as R does"
            )
        if isinstance(node, ast.Name) and node.id in _R_CONSTANTS and node.id not in columns:
            raise _r_syntax_error(formula, f"{node.id!r}", code, f"does not know (Python writes {_R_CONSTANTS[node.id]})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _R_ONLY_CALLS:
            raise _r_syntax_error(formula, f"{node.func.id}()", code,
                                  f"does not have (formulaic writes {_R_ONLY_CALLS[node.func.id]})")


def _token_span(text: str, token) -> tuple[int, int]:
    """``[start, end)`` of a formulaic token in ``text`` (a backticked name with its quotes)."""
    start = token.source_start
    if text[start] == "`":
        return start, text.index("`", start + 1) + 1
    return start, token.source_end + 1


def _code_names(code: str) -> set[str]:
    tree = _python_tree(code)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} if tree is not None else set()
    return names | {name[1:-1] for name in _BACKTICKED.findall(code)}


#: Formulas whose tokens are remembered (formulaic's tokenizer costs a tenth of a
#: millisecond, a tenth of a small fit's whole design).
TOKEN_CACHE_SIZE = 256


@functools.lru_cache(maxsize=TOKEN_CACHE_SIZE)
def _tokens(fixed: str) -> tuple:
    """formulaic's tokens of a formula, cached by its text (only read, never changed)."""
    from formulaic.parser.algos.tokenize import tokenize

    return tuple(tokenize(fixed))


def check_python(fixed: str, formula: str, dtypes: Mapping | None = None, contrasts=()) -> str:
    """The fixed part in formulaic's syntax, checked for R syntax formulaic would read
    differently, with ``contrasts=`` written in as ``C(f, contr.sum)``.

    Parameters
    ----------
    fixed : str
        ``"y ~ terms"`` in formulaic's syntax (R's dotted names already backticked).
    formula : str
        The user's formula, for messages.
    dtypes : mapping of column to dtype, optional
        The data's columns (None when the formula is only being split).
    contrasts : tuple of (column, coding) pairs, from :func:`check_contrasts`.

    Examples
    --------
    >>> check_python("y ~ x * f", "y ~ x * f + (1|g)", {"y": float, "x": float, "f": object}, (("f", "contr.sum"),))
    'y ~ x * C(f, contr.sum)'
    """
    try:
        tokens = _tokens(fixed)
    except Exception:
        return fixed  # formulaic's parse error is reported where the design is built
    columns = set(dtypes) if dtypes is not None else set()
    for token in tokens:
        kind = token.kind.value
        if kind == "operator" and token.token == "in":
            raise ModelDataError(
                f"formula {formula!r}: 'a %in% b' means b/a (b + b:a) in formulaic (dialect='python') and the "
                "interaction a:b in R; write b/a or a:b, or pass dialect='R' to read the formula as R does"
            )
        if kind == "python":
            _check_python_code(token.token, formula, columns)
    if not contrasts:
        return fixed
    codings = Contrasts(contrasts, dtypes, formula)
    edits = []
    after_tilde = False
    for token in tokens:
        kind = token.kind.value
        if kind == "operator" and token.token == "~":
            after_tilde = True
        if not after_tilde:
            continue
        if kind == "name" and token.token in codings.codings:
            coding = codings.coding(token.token, as_factor=False)
            if coding:
                edits.append((*_token_span(fixed, token), f"C({formula_name(token.token)}, {coding})"))
        elif kind == "python":
            bare = re.fullmatch(r"C\(\s*(`[^`]+`|[A-Za-z_]\w*)\s*\)", token.token)
            column = bare.group(1).strip("`") if bare else None
            if column in codings.codings:
                edits.append((*_token_span(fixed, token), f"C({bare.group(1)}, {codings.coding(column, True)})"))
                continue
            for name in _code_names(token.token) & set(codings.codings):
                if is_categorical_dtype(codings.dtype(name)):
                    raise ModelDataError(
                        f"formula {formula!r}: contrasts for {name!r} cannot be written into {token.token!r}; give "
                        f"the coding there (as in C({name}, contr.sum)) and leave it out of contrasts="
                    )
    for start, end, text in sorted(edits, reverse=True):
        fixed = fixed[:start] + text + fixed[end:]
    codings.warn_unused()
    return fixed


__all__ = [
    "CONTRASTS", "DEFAULT_DIALECT", "DIALECTS", "ORDERED_CONTRAST", "check_contrasts", "check_dialect", "check_python",
    "formula_name", "is_categorical_dtype", "is_ordered_dtype",
]
