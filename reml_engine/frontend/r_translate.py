"""A formula from an R script, written in formulaic's syntax (``dialect="R"``).

:func:`translate_r` reads each side of the fixed part with R's grammar
(:mod:`reml_engine.frontend.r_syntax`) and writes it out for formulaic. At the formula level the
operators keep R's meaning (``a %in% b`` is the interaction ``a:b``, which formulaic would
read as ``b/a``), and parentheses keep R's grouping where formulaic's precedence differs.
A variable that is an ordered categorical gets R's ``contr.poly`` and one named in
``contrasts=`` its coding, both written as ``C(f, contr.poly)``. Inside ``I()`` and
function calls, R arithmetic becomes Python: ``^`` is a power computed in doubles as R's
(``x ** 2.0``), ``%%`` and ``%/%`` are ``%`` and ``//``, ``!`` is ``np.logical_not``,
``TRUE``/``T``/``pi``/``Inf`` are Python's constants (unless a column has that name), and
R's functions are called under their R names, provided by
:mod:`reml_engine.frontend.r_functions`. What has no translation is an error that says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import ModelDataError
from .formula_dialect import CONTRASTS, ORDERED_CONTRAST, Contrasts, formula_name, is_ordered_dtype
from .r_syntax import BinaryOp, Call, Name, Number, Paren, RSyntaxError, String, UnaryOp, parse_r

#: R's elementwise functions of one argument, written under R's name (formulaic has
#: exp, log2 and log10; the others are in :data:`reml_engine.frontend.r_functions.R_FUNCTIONS`).
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
        self.contrasts = Contrasts(contrasts, dtypes, formula)

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


__all__ = ["MATH_FUNCTIONS", "translate_r"]
