"""Reparametrization: shifting a numeric predictor by a constant (inside interactions
too, and to ~1e6) or rescaling it is the same model in other coordinates. The ML
criterion and the fitted values do not move, the REML criterion moves by
2 log|det M| (M maps the old columns to the new), and the coefficients map as M says."""

from __future__ import annotations

import pandas as pd
import pytest

import reml_engine as rl

from .known_issues import (
    far_from_zero,
    in_interaction,
    xfail_marks,
)
from .relations import (
    Case,
    assert_reparametrized,
    fit_quietly,
    reference_cases,
    scale_variant,
    shift_variant,
    slow_unless,
)

#: Shifts: small, ~1e6 (the issue's example) and epoch seconds. A calendar year is left
#: to the generated data: on the reference cases it sits at the edge of item 2.
SHIFTS = (-37.25, 1e6, 1.7e9)
#: Scales: a change of unit both ways, and one not a power of ten.
SCALES = (1e-3, 7.3, 1e6)


def shift_fails_today(case, column: str, shift: float) -> bool:
    """Item 2: a predictor of an interaction moved far from 0."""
    return in_interaction(case, column) and far_from_zero(case.data[column] + shift)


def _shifts():
    for case in reference_cases():
        for column in case.numeric:
            for shift in SHIFTS:
                issues = [2] if shift_fails_today(case, column, shift) else []
                yield pytest.param(case, column, shift, marks=xfail_marks(issues),
                                   id=f"{case.name}, {column} + {shift:g}")


#: Two groups, x = 0, 1, 2 in each: as many groups as fixed columns (issue "A").
TWO_GROUPS = Case("two groups", "y ~ x + (1|g)", pd.DataFrame({
    "y": [1.0, 2.0, 4.0, 3.0, 6.0, 5.0], "x": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0], "g": ["a", "a", "a", "b", "b", "b"]}))


@pytest.mark.parametrize("shift", [1e4, pytest.param(1e6, marks=xfail_marks(["A"]))], ids=lambda s: f"x + {s:g}")
def test_shifted_predictor_with_as_few_groups_as_columns(shift):
    _check(TWO_GROUPS, shift_variant(TWO_GROUPS.data, "x", shift), True, f"x + {shift:g}")


def _scales():
    for case in reference_cases():
        for column in case.numeric:
            for scale in SCALES:
                yield pytest.param(case, column, scale, id=f"{case.name}, {column} * {scale:g}")


def _check(case, rep, REML, what):
    base = fit_quietly(rl.lmer, case.formula, rep.base, REML=REML)
    variant = fit_quietly(rl.lmer, case.formula, rep.variant, REML=REML)
    assert_reparametrized(variant, base, rep, f"{case.name}, {what}{'' if REML else ', ML'}")


@pytest.mark.parametrize("case, column, shift", list(_shifts()))
def test_shifted_predictor_is_the_same_reml_model(case, column, shift):
    _check(case, shift_variant(case.data, column, shift), True, f"{column} + {shift:g}")


@pytest.mark.parametrize("case, column, scale", slow_unless(_scales()))
def test_rescaled_predictor_is_the_same_reml_model(case, column, scale):
    _check(case, scale_variant(case.data, column, scale), True, f"{column} * {scale:g}")


@pytest.mark.slow
@pytest.mark.parametrize("case, column, shift", list(_shifts()))
def test_shifted_predictor_is_the_same_ml_model(case, column, shift):
    _check(case, shift_variant(case.data, column, shift), False, f"{column} + {shift:g}")


@pytest.mark.slow
@pytest.mark.parametrize("case, column, scale", list(_scales()))
def test_rescaled_predictor_is_the_same_ml_model(case, column, scale):
    _check(case, scale_variant(case.data, column, scale), False, f"{column} * {scale:g}")
