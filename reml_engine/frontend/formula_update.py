"""R's ``update.formula``: a new formula written with ``.`` for the old one's sides.

``update_formula("Reaction ~ Days + (1|Subject)", ". ~ . - Days")`` is
``"Reaction ~ (1|Subject)"``, as lme4's ``update(m, . ~ . - Days)``:

* a ``.`` on the left of ``~`` stands for the old response (``log(.) ~ .`` is allowed);
* a ``.`` on the right stands for the old right-hand side, random term included;
  ``+ term`` adds a term, ``- term`` removes one (``- age:Sex``, ``- (1|Subject)``,
  ``- 1`` for the intercept), and the fixed part is then written out term by term, as
  R's ``terms(simplify = TRUE)`` writes it (``age * Sex - age:Sex`` becomes
  ``age + Sex``);
* a formula without ``.`` on the right replaces the right-hand side as written.

The fixed terms are read by formulaic's parser (interactions and ``*`` expanded, function
calls kept as written); removing a term the model does not have is an error naming the
model's terms, where R ignores it silently.

Examples
--------
>>> update_formula("distance ~ age * Sex + (1|Subject)", ". ~ . - age:Sex")
'distance ~ age + Sex + (1|Subject)'
>>> update_formula("y ~ x + (1|g)", "log(.) ~ . + z")
'log(y) ~ x + z + (1|g)'
"""

from __future__ import annotations

import re

import formulaic
from formulaic.parser.types import Factor

from ..errors import ModelDataError
from .formula import _random_terms, is_plain_name

#: R's ``.`` as a name on its own (not a decimal point, a dotted name or ``np.log``).
_DOT = re.compile(r"(?<![\w.`])\.(?![\w.`(])")
#: Items of a right-hand side that remove or restore the intercept.
_INTERCEPT_ITEMS = ("0", "1", "-1")


def _split_sides(formula: str, what: str) -> tuple[str, str]:
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise ModelDataError(f"{what} must be a string with one '~', such as '. ~ . - x', got {formula!r}")
    lhs, rhs = formula.split("~")
    return lhs.strip(), rhs.strip()


def _top_level_items(rhs: str) -> list[tuple[str, str]]:
    """``(sign, text)`` of each item of a right-hand side at parenthesis depth 0, split
    at ``+`` and ``-``: ``"a*b - a:b + (1|g)"`` gives ``[("+", "a*b"), ("-", "a:b"), ("+", "(1|g)")]``."""
    items: list[tuple[str, str]] = []
    depth, sign, start = 0, "+", 0
    for i, char in enumerate(rhs):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char in "+-" and depth == 0 and rhs[start:i].strip():
            items.append((sign, rhs[start:i].strip()))
            sign, start = char, i + 1
        elif char in "+-" and depth == 0:
            # A leading sign, or one right after another (``- -x`` is not R either).
            sign, start = ("-" if (char == "-") != (sign == "-") else "+"), i + 1
    if rhs[start:].strip():
        items.append((sign, rhs[start:].strip()))
    return items


def _split_random(rhs: str, formula: str) -> tuple[str, list[str]]:
    """The fixed part of a right-hand side and its random terms, each as written."""
    terms = _random_terms(rhs, formula)
    random = [f"({' '.join(inside.split())})" for _, _, inside in terms]
    fixed = rhs
    for start, end, _ in reversed(terms):
        fixed = fixed[:start] + " " + fixed[end:]
    items = [(sign, text) for sign, text in _top_level_items(fixed)]
    return _join(items), random


def _join(items: list[tuple[str, str]]) -> str:
    text = " ".join(f"{sign} {item}" for sign, item in items).strip()
    return text[2:] if text.startswith("+ ") else text


def _factor_text(factor: Factor) -> str:
    """A factor as a formula writes it: a column name that is not a plain name is
    backticked again (formulaic drops the backticks)."""
    if factor.eval_method.name == "LOOKUP" and not is_plain_name(factor.expr):
        return f"`{factor.expr}`"
    return factor.expr


def _terms(fixed: str, formula: str) -> tuple[bool, list[tuple[frozenset, str]]]:
    """(intercept, [(factor set, label)]) of a fixed right-hand side, read by formulaic."""
    try:
        parsed = formulaic.Formula(fixed or "1")
    except Exception as err:  # formulaic's parse errors
        raise ModelDataError(f"cannot read the fixed part {fixed!r} of {formula!r}: {' '.join(str(err).split())}") from None
    intercept, terms = False, []
    for term in parsed:
        if str(term) == "1":
            intercept = True
            continue
        terms.append((frozenset(f.expr for f in term.factors), ":".join(_factor_text(f) for f in term.factors)))
    return intercept, terms


def fixed_term_labels(formula: str) -> list[str]:
    """The fixed terms of an lmer formula, interactions expanded, intercept left out, as R's
    ``attr(terms(formula), "term.labels")`` (the terms ``drop1`` may drop).

    >>> fixed_term_labels("distance ~ age * Sex + (1|Subject)")
    ['age', 'Sex', 'age:Sex']
    """
    _, rhs = _split_sides(formula, "formula")
    fixed, _ = _split_random(rhs, formula)
    return [label for _, label in _terms(fixed, formula)[1]]


def droppable_terms(formula: str) -> list[str]:
    """The fixed terms no other term contains (R's ``drop.scope``): ``age:Sex`` but not
    ``age`` in ``age * Sex``."""
    _, rhs = _split_sides(formula, "formula")
    fixed, _ = _split_random(rhs, formula)
    terms = _terms(fixed, formula)[1]
    return [label for factors, label in terms if not any(factors < other for other, _ in terms)]


def update_formula(old: str, new: str) -> str:
    """The formula R's ``update(old, new)`` gives (see the module).

    Parameters
    ----------
    old : str
        The model's lmer formula.
    new : str
        The change, with ``.`` for the old sides (``". ~ . - x"``), or a whole formula.

    Returns
    -------
    str
    """
    old_lhs, old_rhs = _split_sides(old, "the model's formula")
    new_lhs, new_rhs = _split_sides(new, "formula")
    lhs = _DOT.sub(lambda _: old_lhs, new_lhs) if new_lhs else old_lhs
    if not _DOT.search(new_rhs):
        return f"{lhs} ~ {new_rhs}"
    old_fixed, old_random = _split_random(old_rhs, old)
    items = _top_level_items(new_rhs)
    random = list(old_random)
    fixed_items: list[tuple[str, str]] = []
    removed: list[str] = []
    for sign, item in items:
        if _random_terms(item, new) and item.startswith("(") and item.endswith(")"):
            term = f"({' '.join(item[1:-1].split())})"
            if sign == "+":
                random.append(term)
            elif term.replace(" ", "") in [r.replace(" ", "") for r in random]:
                random = [r for r in random if r.replace(" ", "") != term.replace(" ", "")]
            else:
                raise ModelDataError(f"formula {new!r} removes the random term {term}, which {old!r} does not have")
        elif item == ".":
            if sign == "-":
                raise ModelDataError(f"formula {new!r}: '- .' removes every term; write the new formula instead")
            fixed_items.extend(_top_level_items(old_fixed) or [("+", "1")])
        elif _DOT.search(item):
            fixed_items.append((sign, _DOT.sub(lambda _: f"({old_fixed or '1'})", item)))
        else:
            fixed_items.append((sign, item))
            if sign == "-" and item.replace(" ", "") not in _INTERCEPT_ITEMS:
                removed.append(item)
    kept = [(s, t) for s, t in fixed_items if not (s == "-" and t in removed)]
    _, present = _terms(_join(kept), new)
    present_sets = [factors for factors, _ in present]
    for item in removed:
        _, (term, *rest) = _terms(item, new)
        if rest or term[0] not in present_sets:
            listing = ", ".join(label for _, label in present) or "none besides the intercept"
            raise ModelDataError(f"formula {new!r} removes {item!r}, which is not a fixed term of {old!r} "
                                 f"(its terms: {listing})")
    intercept, terms = _terms(_join(fixed_items), new)
    labels = [label for _, label in terms]
    if not labels:
        # lme4 writes an intercept-only fixed part as nothing: ``Reaction ~ (1 | Subject)``.
        fixed = ("" if random else "1") if intercept else "0"
    else:
        fixed = " + ".join(labels) if intercept else "0 + " + " + ".join(labels)
    return f"{lhs} ~ {' + '.join(part for part in [fixed, *random] if part)}"


__all__ = ["droppable_terms", "fixed_term_labels", "update_formula"]
