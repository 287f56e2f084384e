"""R's expression syntax, as far as model formulas use it: tokens and a parse tree.

A formula pasted from an R script is read here as R reads it, with R's operator
precedence (``?Syntax``), into a small tree of :class:`Name`, :class:`Number`,
:class:`String`, :class:`Call`, :class:`UnaryOp`, :class:`BinaryOp` and
:class:`Paren` nodes. What the tree means (formula operators at the top level,
arithmetic inside ``I()`` and calls) is decided by :mod:`reml_engine.frontend.formula_dialect`,
which writes it out in formulaic's syntax.

Only the syntax formulas use is read: indexing (``x[1]``, ``d$x``), assignment,
braces, namespaces (``splines::ns``) and the pipe are refused with the position at
fault.

Examples
--------
>>> parse_r("age + I(age^2)")
BinaryOp(op='+', left=Name(name='age', quoted=False), right=Call(function='I', \
args=(BinaryOp(op='^', left=Name(name='age', quoted=False), right=Number(text='2')),), keywords=()))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ModelDataError

# -- tokens ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)[Li]?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<backticked>`[^`]+`)
  | (?P<name>(?:[^\W\d]|\.(?!\d))[\w.]*)
  | (?P<op>%[^%\s]*%|:::|::|<<-|->>|<-|->|<=|>=|==|!=|&&|\|\||\*\*|\|>|[-+*/^:<>!&|~(),=$@\[\]{}?;])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One token: its kind (``number``, ``string``, ``name``, ``op``), text and offset."""

    kind: str
    text: str
    start: int


class RSyntaxError(ModelDataError):
    """The text is not R syntax that a model formula can hold."""


def tokenize_r(text: str) -> list[Token]:
    """The tokens of ``text`` (whitespace dropped); a backticked name is a ``name``.

    Examples
    --------
    >>> [t.text for t in tokenize_r("log(y) ~ `a b` + x^2L")]
    ['log', '(', 'y', ')', '~', '`a b`', '+', 'x', '^', '2L']
    """
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise RSyntaxError(f"unexpected character {text[position]!r} at position {position + 1} of {text!r}")
        kind = match.lastgroup
        if kind != "space":
            tokens.append(Token("name" if kind == "backticked" else kind, match.group(), position))
        position = match.end()
    return tokens


# -- the tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A variable: ``age``, ``Sepal.Length`` or backticked ```my var```."""

    name: str
    quoted: bool = False


@dataclass(frozen=True)
class Number:
    """A numeric literal as written in R (``2``, ``2L``, ``1e-3``)."""

    text: str


@dataclass(frozen=True)
class String:
    """A string literal, with its quotes."""

    text: str


@dataclass(frozen=True)
class Call:
    """``function(args..., key = value...)``."""

    function: str
    args: tuple = ()
    keywords: tuple = ()  # ((name, node), ...)


@dataclass(frozen=True)
class UnaryOp:
    """``-x``, ``+x`` or ``!x``."""

    op: str
    operand: object


@dataclass(frozen=True)
class BinaryOp:
    """``left op right``; ``op`` as written (``**`` is kept apart from ``^``)."""

    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Paren:
    """A parenthesized expression."""

    inner: object


# -- precedence (R's ?Syntax, higher binds tighter) -----------------------------------

#: Binding power of each binary operator; ``%any%`` operators share SPECIAL_POWER.
BINARY_POWER = {
    "~": 5, "||": 6, "|": 6, "&&": 7, "&": 7,
    "==": 9, "!=": 9, "<": 9, ">": 9, "<=": 9, ">=": 9,
    "+": 10, "-": 10, "*": 11, "/": 11, ":": 13, "^": 15, "**": 15,
}
SPECIAL_POWER = 12
#: Comparisons do not chain in R (``a < b < c`` is a syntax error).
_COMPARISONS = frozenset({"==", "!=", "<", ">", "<=", ">="})
#: ``^`` groups from the right: ``2^3^2`` is ``2^(3^2)``.
_RIGHT_ASSOCIATIVE = frozenset({"^", "**"})
#: Binding power of unary minus and plus (below ``^``: ``-x^2`` is ``-(x^2)``) and of ``!``.
UNARY_SIGN_POWER = 14
UNARY_NOT_POWER = 8
#: Syntax a formula has no use for, with what it is.
_REFUSED = {
    "$": "'$' (list element)", "@": "'@' (slot)", "[": "'[' (indexing)", "]": "']'",
    "::": "'::' (namespace)", ":::": "':::' (namespace)", "<-": "'<-' (assignment)",
    "<<-": "'<<-' (assignment)", "->": "'->' (assignment)", "->>": "'->>' (assignment)",
    "{": "'{' (braces)", "}": "'}'", "?": "'?'", ";": "';'", "|>": "'|>' (pipe)",
}


def _binary_power(op: str) -> int | None:
    if op in BINARY_POWER:
        return BINARY_POWER[op]
    if len(op) >= 2 and op.startswith("%") and op.endswith("%"):
        return SPECIAL_POWER
    return None


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize_r(text)
        self.position = 0

    def peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise RSyntaxError(f"{self.text!r} ends too early")
        self.position += 1
        return token

    def fail(self, token: Token, what: str | None = None) -> RSyntaxError:
        shown = what or repr(token.text)
        return RSyntaxError(f"unexpected {shown} at position {token.start + 1} of {self.text!r}")

    def expect(self, text: str) -> Token:
        token = self.take()
        if token.text != text:
            raise self.fail(token)
        return token

    def expression(self, min_power: int = 0):
        left = self.prefix()
        while True:
            token = self.peek()
            if token is None or token.kind != "op":
                return left
            if token.text in _REFUSED:
                raise self.fail(token, _REFUSED[token.text])
            power = _binary_power(token.text)
            if power is None or power <= min_power:
                return left
            self.take()
            if token.text in _COMPARISONS:
                right = self.expression(power)
                following = self.peek()
                if following is not None and following.text in _COMPARISONS:
                    raise self.fail(following, f"second comparison {following.text!r} (comparisons do not chain in R)")
            else:
                right = self.expression(power - 1 if token.text in _RIGHT_ASSOCIATIVE else power)
            left = BinaryOp(token.text, left, right)

    def prefix(self):
        token = self.take()
        if token.kind == "number":
            return Number(token.text)
        if token.kind == "string":
            return String(token.text)
        if token.kind == "name":
            quoted = token.text.startswith("`")
            name = token.text[1:-1] if quoted else token.text
            following = self.peek()
            if following is not None and following.text in ("::", ":::"):
                raise self.fail(following, f"namespace '{name}{following.text}' (write the function alone)")
            if following is not None and following.text == "(":
                self.take()
                return self.call(name)
            return Name(name, quoted)
        if token.text == "(":
            inner = self.expression()
            self.expect(")")
            return Paren(inner)
        if token.text in ("-", "+"):
            return UnaryOp(token.text, self.expression(UNARY_SIGN_POWER))
        if token.text == "!":
            return UnaryOp("!", self.expression(UNARY_NOT_POWER))
        if token.text in _REFUSED:
            raise self.fail(token, _REFUSED[token.text])
        raise self.fail(token)

    def call(self, function: str) -> Call:
        args, keywords = [], []
        if self.peek() is not None and self.peek().text == ")":
            self.take()
            return Call(function)
        while True:
            token = self.peek()
            after = self.tokens[self.position + 1] if self.position + 1 < len(self.tokens) else None
            if token is not None and token.kind in ("name", "string") and after is not None and after.text == "=":
                self.take()
                self.take()
                key = token.text[1:-1] if token.text[0] in "`\"'" else token.text
                keywords.append((key, self.expression()))
            else:
                if keywords:
                    raise self.fail(token or self.tokens[-1], "positional argument after a named one")
                args.append(self.expression())
            closing = self.take()
            if closing.text == ")":
                return Call(function, tuple(args), tuple(keywords))
            if closing.text != ",":
                raise self.fail(closing)


def parse_r(text: str):
    """The parse tree of one R expression (a formula side, or a whole formula).

    Raises
    ------
    RSyntaxError
        For text that is not R, or R syntax a formula has no use for, naming the
        position at fault.
    """
    parser = _Parser(text)
    if not parser.tokens:
        raise RSyntaxError("empty expression")
    tree = parser.expression()
    rest = parser.peek()
    if rest is not None:
        raise parser.fail(rest, _REFUSED.get(rest.text))
    return tree


__all__ = [
    "BinaryOp", "Call", "Name", "Number", "Paren", "RSyntaxError", "String", "Token", "UnaryOp",
    "parse_r", "tokenize_r",
]
