"""Column names: renaming a column (and the formula with it) is the same model. Dotted
names as R data sets have them, names that need backticks, names formulaic or the
formula namespace also use: the same criterion, coefficients and random effects.

Two names are formulaic's own: it names the intercept column ``Intercept`` and reads
`` `1` `` as the intercept. Where formulaic reads them (the fixed part, and `` `1` `` as a
response) the library refuses the column with a ModelDataError that names it and says
how to rename it, rather than rename it internally through every path (see
``reml_engine.design._check_reserved_names``); a grouping column (and a response named
``Intercept``) is read by name and fits.
"""

from __future__ import annotations

import re

import pytest

import reml_engine as rl

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


def role(case, column: str) -> str:
    if column == case.group:
        return "group"
    if column == case.response:
        return "response"
    return "factor" if column in case.factors else "numeric"


#: The roles in which a column of formulaic's own names is refused (see the docstring).
REFUSED = {"Intercept": ("numeric", "factor"), "1": ("response", "numeric", "factor")}


def _renames():
    for case in reference_cases():
        for column in case.used:
            for new in NEW_NAMES:
                if new in case.data.columns:
                    continue
                yield pytest.param(case, column, new, id=f"{case.name}, {column} as {new}")


@pytest.mark.parametrize("case, column, new", slow_unless(_renames(), FAST_CASES[:2]))
def test_renamed_column_is_the_same_model(case, column, new):
    _check(case, column, new)


def _check(case, column, new):
    expected = reference_fit(case.name)
    formula = renamed_formula(case.formula, column, new)
    data = case.data.rename(columns={column: new})
    what = f"{case.name}, {column} renamed {new!r}: {formula}"
    if role(case, column) in REFUSED.get(new, ()):
        with pytest.raises(rl.ModelDataError) as refusal:
            fit_quietly(rl.lmer, formula, data)
        message = str(refusal.value)
        assert repr(new) in message and "rename the column" in message, f"{what}: refused without naming it: {message}"
        return
    fit = fit_quietly(rl.lmer, formula, data)
    assert len(fit.fixef) == len(expected.fixef), f"{what}: coefficients {list(fit.fixef.index)}"
    assert fit.criterion == pytest.approx(expected.criterion, rel=1e-12), f"{what}: criterion"
    assert_coefficients(fit, expected.fixef.to_numpy(), expected.se.to_numpy(), what)
    assert_same_ranef(fit.ranef, expected.ranef, (expected.sigma2 + expected.var_group) ** 0.5, what)
