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
    by :func:`translate_r` (parsed by :mod:`reml_engine.r_syntax`): ``I(x^2)`` is a
    power (in doubles, as R's: ``I(x ** 2.0)``), ``a %in% b`` is ``a:b``, ``log(x, base)``, ``sqrt``, ``exp``, ``abs``,
    ``floor``/``ceiling``, ``pmin``/``pmax``, ``ifelse``, ``as.numeric``/``as.integer``
    (level codes of a factor, as R), ``factor(x)``/``as.factor``/``ordered``,
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
>>> from reml_engine.design import parse_formula
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
import keyword
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from formulaic.utils.stateful_transforms import stateful_transform

from .checks import ModelDataError, warn
from .r_syntax import BinaryOp, Call, Name, Number, Paren, RSyntaxError, String, UnaryOp, parse_r

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


class _Contrasts:
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


# -- formulaic's syntax: refuse what R would read differently ---------------------------

#: R syntax that Python cannot parse (so formulaic's error would not say what it is).
_R_ONLY_SYNTAX = (
    (re.compile(r"%%"), "'%%' (R's remainder; Python writes %)"),
    (re.compile(r"%/%"), "'%/%' (R's integer division; Python writes //)"),
    (re.compile(r"&&|\|\|"), "'&&'/'||' (R's scalar and/or)"),
    (re.compile(r"<-"), "'<-' (R's assignment)"),
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
    from formulaic.parser.algos.tokenize import tokenize

    try:
        tokens = list(tokenize(fixed))
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
    codings = _Contrasts(contrasts, dtypes, formula)
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


# -- R's syntax, translated -------------------------------------------------------------

#: R's elementwise functions of one argument, written under R's name (formulaic has
#: exp, log2 and log10; the others are in :data:`R_FUNCTIONS`).
MATH_FUNCTIONS = (
    "exp", "expm1", "log1p", "log2", "log10", "sqrt", "abs", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "tanh", "floor", "ceiling", "trunc", "sign",
)
#: R functions that make a factor of their argument, and whether the result is ordered
#: (None: ordered when the argument is, as R's factor() keeps an ordered factor ordered).
_FACTOR_CALLS = {"factor": None, "as.factor": None, "ordered": True, "as.ordered": True}
#: R's names of codings in C(f, name).
_C_CODINGS = {"poly": "contr.poly", "helmert": "contr.helmert", "sum": "contr.sum",
              "treatment": "contr.treatment", "SAS": "contr.SAS"}
#: Binary operators inside R expressions, as Python writes them (``^`` is handled apart).
_CODE_OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", "%%": "%", "%/%": "//", "==": "==", "!=": "!=",
                   "<": "<", ">": ">", "<=": "<=", ">=": ">=", "&": "&", "|": "|"}
#: Formula operators (``%in%`` is R's interaction, written ``:``).
_FORMULA_OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", ":": ":", "%in%": ":", "^": "^", "**": "^"}
#: Precedence of the operators written out, as formulaic's parser has them: the tree
#: holds R's grouping, and parentheses keep it where formulaic would group otherwise.
_FORMULAIC_PRECEDENCE = {"+": 100, "-": 100, "*": 200, "/": 200, ":": 300, "^": 500}
#: R functions users put in formulas that have no translation, with what to do.
_UNTRANSLATED = {
    "ns": "natural splines", "bs": "B-splines", "cut": "cut()", "interaction": "interaction()",
    "relevel": "relevel()", "offset": "offset()", "s": "mgcv smooths", "strata": "strata()",
}


def formula_name(name: str) -> str:
    """A column name as formulaic reads it: plain, or backticked (``Sepal.Length``)."""
    return name if name.isidentifier() and not keyword.iskeyword(name) else f"`{name}`"


def _literal(text: str) -> str:
    """An R numeric literal as Python writes it (``2L`` is ``2``)."""
    if text.endswith("i"):
        raise ModelDataError(f"complex number {text} in a formula")
    return text[:-1] if text.endswith("L") else text


def _numeric_literal(node) -> float | None:
    """The value of a number, possibly signed (``2``, ``-1``, ``2L``, ``0x10``), else None."""
    sign = 1.0
    if isinstance(node, UnaryOp) and node.op in ("-", "+"):
        sign = -1.0 if node.op == "-" else 1.0
        node = node.operand
    if not isinstance(node, Number) or node.text.endswith("i"):
        return None
    text = _literal(node.text)
    return sign * (float(int(text, 16)) if text.lower().startswith("0x") else float(text))


def _float_literal(node) -> str:
    value = _numeric_literal(node)
    return f"({value!r})" if value < 0 else repr(value)


def _logical(node, what: str) -> bool:
    if isinstance(node, Name) and node.name in ("TRUE", "T", "FALSE", "F"):
        return node.name in ("TRUE", "T")
    raise ModelDataError(f"{what} must be TRUE or FALSE")


def _integer(node, what: str) -> int:
    if isinstance(node, Number) and re.fullmatch(r"\d+(?:\.0*)?L?", node.text) and int(float(_literal(node.text))) >= 1:
        return int(float(_literal(node.text)))
    raise ModelDataError(f"{what} must be a whole number of at least 1")


class _RTranslator:
    """Writes an R formula's parse tree in formulaic's syntax."""

    def __init__(self, formula: str, dtypes: Mapping | None, contrasts):
        self.formula = formula
        self.columns = set(dtypes) if dtypes is not None else set()
        self.contrasts = _Contrasts(contrasts, dtypes, formula)

    def error(self, message: str) -> ModelDataError:
        return ModelDataError(f"formula {self.formula!r} (dialect='R'): {message}")

    # formula level: + - * / : ^ %in%, variables and terms

    def term(self, node) -> str:
        if isinstance(node, Name):
            return self.variable(node.name, as_factor=False)
        if isinstance(node, Number):
            value = _literal(node.text)
            if value in ("0", "1"):
                return value
            raise self.error(f"the number {node.text} is not a term (0 and 1 are the intercept)")
        if isinstance(node, Paren):
            return f"({self.term(node.inner)})"
        if isinstance(node, UnaryOp):
            if node.op == "+":
                return self.term(node.operand)
            if node.op == "-":
                return f"-{self.term_operand(node.operand, '-', left=False)}"
            raise self.error("'!' is not a formula operator: write I(!x) for a logical column")
        if isinstance(node, BinaryOp):
            if node.op not in _FORMULA_OPERATORS:
                raise self.error(
                    f"{node.op!r} is not a formula operator; for an expression, write it inside I(), as in I(x {node.op} 2)"
                )
            op = _FORMULA_OPERATORS[node.op]
            if op == "^":
                power = _integer(node.right, f"the power of {node.op!r} in a formula (interactions up to that order)")
                return f"{self.term_operand(node.left, op, left=True)}^{power}"
            return f"{self.term_operand(node.left, op, left=True)} {op} {self.term_operand(node.right, op, left=False)}"
        if isinstance(node, Call):
            return self.term_call(node)
        raise self.error(f"a string ({node.text}) is not a term")

    def term_operand(self, node, parent: str, left: bool) -> str:
        """A term as an operand of ``parent``, in parentheses where formulaic would
        otherwise group it differently from R."""
        text = self.term(node)
        if not isinstance(node, BinaryOp):
            return text
        inner = _FORMULAIC_PRECEDENCE[_FORMULA_OPERATORS.get(node.op, "+")]
        outer = _FORMULAIC_PRECEDENCE[parent]
        needs = inner < outer or (inner == outer and (not left or parent == "^"))
        return f"({text})" if needs else text

    def variable(self, name: str, as_factor: bool, ordered: bool | None = None) -> str:
        """A column at the formula level, with its coding when it is not treatment."""
        coding = self.contrasts.coding(name, as_factor)
        if coding is None and (ordered or (ordered is None and is_ordered_dtype(self.contrasts.dtype(name)))):
            coding = ORDERED_CONTRAST
        if coding is None:
            return f"C({formula_name(name)})" if as_factor else formula_name(name)
        return f"C({formula_name(name)}, {coding})"

    def term_call(self, node: Call) -> str:
        name = node.function
        if name in _FACTOR_CALLS:
            return self.factor_call(node, _FACTOR_CALLS[name])
        if name == "C":
            return self.c_call(node)
        if name == "poly":
            return self.poly_call(node)
        if name == "scale":
            return self.scale_call(node)
        if name in ("I", "within", "between"):
            return f"{name}({self.code(self.one_argument(node))})"
        return self.code_call(node)

    def one_argument(self, node: Call):
        if len(node.args) != 1 or node.keywords:
            raise self.error(f"{node.function}() takes one argument here")
        return node.args[0]

    def factor_call(self, node: Call, ordered: bool | None) -> str:
        if node.keywords or len(node.args) != 1:
            raise self.error(
                f"{node.function}() with arguments other than the variable is not translated; set the levels in "
                "pandas first (df[col] = pd.Categorical(df[col], categories=[...], ordered=...))"
            )
        argument = node.args[0]
        if isinstance(argument, Name):
            return self.variable(argument.name, as_factor=True, ordered=ordered)
        return f"C({self.code(argument)}{', ' + ORDERED_CONTRAST if ordered else ''})"

    def c_call(self, node: Call) -> str:
        keywords = dict(node.keywords)
        if set(keywords) - {"contr"} or len(node.args) + len(keywords) not in (1, 2) or not node.args:
            raise self.error("C() is translated as C(f) or C(f, contr) (how.many is not)")
        contr = node.args[1] if len(node.args) == 2 else keywords.get("contr")
        if contr is None:
            return self.factor_call(Call("factor", node.args[:1]), None)
        spelled = contr.text.strip("\"'") if isinstance(contr, String) else getattr(contr, "name", None)
        coding = CONTRASTS.get(spelled) or _C_CODINGS.get(spelled)
        if coding is None:
            raise self.error(f"C(): unknown coding {spelled or contr!r}; use one of {', '.join(_C_CODINGS.values())}")
        argument = node.args[0]
        if isinstance(argument, Name) and argument.name in self.contrasts.codings:
            raise self.error(f"{argument.name!r} has a coding in C() and in contrasts=; give one")
        target = formula_name(argument.name) if isinstance(argument, Name) else self.code(argument)
        return f"C({target}, {coding})"

    def poly_call(self, node: Call) -> str:
        keywords = dict(node.keywords)
        unknown = set(keywords) - {"degree", "raw"}
        if unknown or not node.args or len(node.args) > 3:
            raise self.error(
                "poly() is translated for one variable, poly(x, degree, raw = FALSE)"
                + (f"; {', '.join(sorted(unknown))} is not" if unknown else "")
            )
        if len(node.args) >= 2 and _numeric_literal(node.args[1]) is None:
            raise self.error("poly() of several variables (R's polym) is not translated")
        positional = dict(zip(("x", "degree", "raw"), node.args, strict=False))
        degree_node = keywords.get("degree", positional.get("degree"))
        degree = 1 if degree_node is None else _integer(degree_node, "poly()'s degree")
        raw_node = keywords.get("raw", positional.get("raw"))
        raw = raw_node is not None and _logical(raw_node, "poly()'s raw")
        return f"poly({self.code(node.args[0])}, {degree}{', raw=True' if raw else ''})"

    def scale_call(self, node: Call) -> str:
        keywords = dict(node.keywords)
        if set(keywords) - {"center", "scale"} or not node.args or len(node.args) > 3:
            raise self.error("scale() is translated as scale(x, center = TRUE, scale = TRUE)")
        positional = dict(zip(("x", "center", "scale"), node.args, strict=False))
        options = ""
        for option in ("center", "scale"):
            value = keywords.get(option, positional.get(option))
            if value is not None and not _logical(value, f"scale()'s {option} (numbers are not translated)"):
                options += f", {option}=False"
        return f"scale({self.code(node.args[0])}{options})"

    # inside I() and function calls: R arithmetic written as Python

    def code(self, node) -> str:
        if isinstance(node, Name):
            return self.code_name(node)
        if isinstance(node, Number):
            return _literal(node.text)
        if isinstance(node, String):
            return node.text
        if isinstance(node, Paren):
            return f"({self.code(node.inner)})"
        if isinstance(node, UnaryOp):
            if node.op == "!":
                return f"np.logical_not({self.code(node.operand)})"
            operand = self.code_operand(node.operand)
            return operand if node.op == "+" else f"-{operand}"
        if isinstance(node, BinaryOp):
            if node.op in ("^", "**"):
                return self.power(node)
            if node.op not in _CODE_OPERATORS:
                raise self.error(f"the operator {node.op!r} inside an expression is not translated")
            python_op = _CODE_OPERATORS[node.op]
            return f"{self.code_operand(node.left)} {python_op} {self.code_operand(node.right)}"
        return self.code_call(node)

    def code_operand(self, node) -> str:
        text = self.code(node)
        return f"({text})" if isinstance(node, (BinaryOp, UnaryOp)) else text

    def power(self, node: BinaryOp) -> str:
        """R's ``a^b``, which is always a double: a number written as a float makes
        numpy compute in floats too (integer columns would otherwise wrap around without
        an error, ``2^x^2`` at x = 8, or refuse negative powers)."""
        if _numeric_literal(node.right) is not None:
            return f"{self.code_operand(node.left)} ** {_float_literal(node.right)}"
        if _numeric_literal(node.left) is not None:
            return f"{_float_literal(node.left)} ** {self.code_operand(node.right)}"
        return f"np.float_power({self.code(node.left)}, {self.code(node.right)})"

    def code_name(self, node: Name) -> str:
        name = node.name
        if not node.quoted and name not in self.columns:
            if name in ("TRUE", "T"):
                return "True"
            if name in ("FALSE", "F"):
                return "False"
            if name == "pi":
                return "np.pi"
            if name == "Inf":
                return "np.inf"
            if name in ("NA", "NaN", "NULL", "NA_real_", "NA_integer_"):
                raise self.error(f"{name} in a formula is not translated")
        return formula_name(name)

    def code_call(self, node: Call) -> str:
        name = node.function
        if name == "log":
            keywords = dict(node.keywords)
            if set(keywords) - {"base"} or not 1 <= len(node.args) + len(keywords) <= 2 or not node.args:
                raise self.error("log() is translated as log(x) or log(x, base)")
            base = node.args[1] if len(node.args) == 2 else keywords.get("base")
            return f"log({self.code(node.args[0])}{'' if base is None else ', ' + self.code(base)})"
        if name in MATH_FUNCTIONS:
            return f"{name}({self.code(self.one_argument(node))})"
        if name in ("pmin", "pmax"):
            if node.keywords or not node.args:
                raise self.error(f"{name}() is translated for its values only (na.rm is not)")
            return f"{name}({', '.join(self.code(a) for a in node.args)})"
        if name == "ifelse":
            arguments = list(node.args) + [value for key, value in node.keywords]
            if len(arguments) != 3 or set(dict(node.keywords)) - {"test", "yes", "no"}:
                raise self.error("ifelse() takes test, yes and no")
            return f"ifelse({', '.join(self.code(a) for a in arguments)})"
        if name in ("as.numeric", "as.double", "as.integer"):
            helper = "as_integer" if name == "as.integer" else "as_numeric"
            return f"{helper}({self.code(self.one_argument(node))})"
        if name == "I":
            return f"I({self.code(self.one_argument(node))})"
        if name in _FACTOR_CALLS or name in ("poly", "scale", "C"):
            raise self.error(f"{name}() is a term of its own; it cannot be used inside an expression")
        if name in _UNTRANSLATED:
            raise self.error(
                f"{name}() ({_UNTRANSLATED[name]}) is not translated; compute the column(s) beforehand and use them"
            )
        hint = " (this looks like Python: use dialect='python')" if "." in name and name.split(".")[0] in (
            "np", "numpy", "pd") else ""
        raise self.error(f"the R function {name}() is not translated{hint}; compute the column beforehand")


def translate_r(response: str, rhs: str, formula: str, dtypes: Mapping | None = None, contrasts=()) -> str:
    """The fixed part of an R formula, ``response ~ rhs``, in formulaic's syntax.

    Parameters
    ----------
    response, rhs : str
        The two sides of the fixed part (the random term already taken out).
    formula : str
        The user's formula, for messages.
    dtypes : mapping of column to dtype, optional
        The data's columns: ordered categoricals get ``contr.poly``, and ``T``, ``F``
        and ``pi`` are R's constants unless they are columns.
    contrasts : tuple of (column, coding) pairs, from :func:`check_contrasts`.

    Examples
    --------
    >>> translate_r("height", "age + I(age^2)", "height ~ age + I(age^2) + (1|Seed)")
    'height ~ age + I(age ** 2.0)'
    >>> translate_r("y", "a %in% b + log(x, 2)", "y ~ a %in% b + log(x, 2) + (1|g)")
    'y ~ a : b + log(x, 2)'
    """
    translator = _RTranslator(formula, dtypes, contrasts)
    try:
        lhs = translator.code(parse_r(response))
        fixed = f"{lhs} ~ {translator.term(parse_r(rhs))}"
    except RSyntaxError as err:
        raise ModelDataError(f"formula {formula!r} is not R syntax that dialect='R' reads: {err}") from None
    translator.contrasts.warn_unused()
    return fixed


# -- R's functions, as the translated formulas call them -------------------------------


def r_log(x, base=None):
    """R's ``log(x, base)``: the natural logarithm, or ``log(x) / log(base)``."""
    if base is None:
        return np.log(x)
    return np.log(x) / np.log(base)


def _extremes(reduce):
    def parallel(*values):
        result = values[0]
        for value in values[1:]:
            result = reduce(result, value)
        return result

    return parallel


def ifelse(test, yes, no):
    """R's ``ifelse``: ``yes`` where ``test`` holds, ``no`` elsewhere."""
    return np.where(np.asarray(test, dtype=bool), yes, no)


def _r_numbers(x, name: str) -> np.ndarray:
    """R's ``as.numeric`` of a column: level codes (1, 2, ...) of a factor, numbers as they are."""
    values = getattr(x, "__wrapped__", x)
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.float64)
        codes[codes < 0] = np.nan
        return codes + 1.0
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ModelDataError(
            f"{name}() of a text column: R gives a factor's level codes but parses a character vector as numbers; "
            "make the column categorical (codes) or numeric (pd.to_numeric) first"
        )
    return array.astype(np.float64)


def as_numeric(x) -> np.ndarray:
    """R's ``as.numeric``: a factor's level codes (1, 2, ...), numbers as doubles."""
    return _r_numbers(x, "as.numeric")


def as_integer(x) -> np.ndarray:
    """R's ``as.integer``: a factor's level codes, numbers truncated towards zero."""
    return np.trunc(_r_numbers(x, "as.integer"))


@stateful_transform
def poly(x, degree: int = 1, raw: bool = False, _state: dict | None = None):
    """R's ``poly(x, degree, raw)``: formulaic's orthogonal polynomials (the same
    recurrence and normalization as R's), with R's check that the degree is less than
    the number of distinct values when they are fitted; new data reuse the fitted
    coefficients (``_state``), as R's ``predict`` does."""
    from formulaic.transforms.poly import poly as formulaic_poly

    state = {} if _state is None else _state
    if not raw and not state:
        values = np.asarray(x, dtype=np.float64)
        distinct = len(np.unique(values[~np.isnan(values)]))
        if degree >= distinct:
            raise ModelDataError(
                f"poly(): degree {degree} must be less than the number of distinct values ({distinct}), as in R"
            )
    return formulaic_poly(x, degree, raw, _state=state)


#: Names a translated formula calls that formulaic does not provide (or provides with
#: fewer arguments: log's base); they join the formula context of every fit.
R_FUNCTIONS = {
    "log": r_log, "sqrt": np.sqrt, "abs": np.abs, "log1p": np.log1p, "expm1": np.expm1,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "floor": np.floor, "ceiling": np.ceil,
    "trunc": np.trunc, "sign": np.sign, "pmin": _extremes(np.minimum), "pmax": _extremes(np.maximum),
    "ifelse": ifelse, "as_numeric": as_numeric, "as_integer": as_integer, "poly": poly,
}


__all__ = [
    "CONTRASTS", "DEFAULT_DIALECT", "DIALECTS", "R_FUNCTIONS", "check_contrasts", "check_dialect", "check_python",
    "translate_r",
]
