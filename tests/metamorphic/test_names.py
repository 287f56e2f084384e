"""Column names: renaming a column (and the formula with it) is the same model. Dotted
names as R data sets have them, names that need backticks, names formulaic or the
formula namespace also use: the same criterion, coefficients and random effects."""

from __future__ import annotations

import re

import pytest

import reml_engine as rl

from .known_issues import (
    xfail_marks,
)
from .relations import (
    FAST_CASES,
    assert_coefficients,
    assert_same_ranef,
    fit_quietly,
    reference_cases,
    reference_fit,
    slow_unless,
)

#: New names: dotted (R's Sepal.Length), needing backticks, or shared with the names a
#: formula can use (numpy, pandas, formulaic's C and I, within).
NEW_NAMES = ("Sepal.Length", "Intercept", "1", "x y", "été", "class", "np", "C", "I", "within", "T")

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def quoted(name: str) -> str:
    """The name as a formula writes it: plain, or in backticks."""
    return name if _PLAIN.match(name) else f"`{name}`"


def renamed_formula(formula: str, old: str, new: str) -> str:
    return re.sub(rf"(?<![\w.`]){re.escape(old)}(?![\w.`])", lambda _: quoted(new), formula)


def known_name_issues(case, column: str, new: str) -> list:
    role = "group" if column == case.group else "response" if column == case.response else (
        "factor" if column in case.factors else "numeric")
    issues = []
    if "." in new and role != "group":
        issues.append("10 dotted")
    if new == "Intercept" and role == "numeric":
        issues.append("10 Intercept")
    if new == "1" and role != "group":
        issues.append("10 one")
    if role == "group" and not _PLAIN.match(new):
        issues.append("C")
    return issues


def _renames():
    for case in reference_cases():
        for column in case.used:
            for new in NEW_NAMES:
                if new in case.data.columns:
                    continue
                yield pytest.param(case, column, new, marks=xfail_marks(known_name_issues(case, column, new)),
                                   id=f"{case.name}, {column} as {new}")


@pytest.mark.parametrize("case, column, new", slow_unless(_renames(), FAST_CASES[:2]))
def test_renamed_column_is_the_same_model(case, column, new):
    _check(case, column, new)


def _check(case, column, new):
    expected = reference_fit(case.name)
    formula = renamed_formula(case.formula, column, new)
    fit = fit_quietly(rl.lmer, formula, case.data.rename(columns={column: new}))
    what = f"{case.name}, {column} renamed {new!r}: {formula}"
    assert len(fit.fixef) == len(expected.fixef), f"{what}: coefficients {list(fit.fixef.index)}"
    assert fit.criterion == pytest.approx(expected.criterion, rel=1e-12), f"{what}: criterion"
    assert_coefficients(fit, expected.fixef.to_numpy(), expected.se.to_numpy(), what)
    assert_same_ranef(fit.ranef, expected.ranef, (expected.sigma2 + expected.var_group) ** 0.5, what)
