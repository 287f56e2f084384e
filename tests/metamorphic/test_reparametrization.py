"""Reparametrization: shifting a numeric predictor by a constant (inside interactions
too, and to ~1e6) or rescaling it is the same model in other coordinates. The ML
criterion and the fitted values do not move, the REML criterion moves by
2 log|det M| (M maps the old columns to the new), and the coefficients map as M says.

One thing may move with a shift, as in lme4: an interaction with a predictor shifted far
enough (sim_unbalanced's x1 + 1e8 or + 1.7e9) keeps less than lme4's rank tolerance of
its centred norm and is dropped. The relation then says so: each fit drops exactly what
lme4's rule says, computed from exactly centred data, and the two fits agree on the
columns both keep (:func:`.relations.on_common_columns`).
"""

from __future__ import annotations

import pandas as pd
import pytest

import reml_engine as rl

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
#: to the generated data.
SHIFTS = (-37.25, 1e6, 1.7e9)
#: Scales: a change of unit both ways, and one not a power of ten.
SCALES = (1e-3, 7.3, 1e6)


def _shifts():
    for case in reference_cases():
        for column in case.numeric:
            for shift in SHIFTS:
                yield pytest.param(case, column, shift, id=f"{case.name}, {column} + {shift:g}")


#: Two groups, x = 0, 1, 2 in each: as many groups as fixed columns (x + 1e6 was once
#: called constant within groups).
TWO_GROUPS = Case("two groups", "y ~ x + (1|g)", pd.DataFrame({
    "y": [1.0, 2.0, 4.0, 3.0, 6.0, 5.0], "x": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0], "g": ["a", "a", "a", "b", "b", "b"]}))


@pytest.mark.parametrize("shift", [1e4, 1e6, 1.7e9], ids=lambda s: f"x + {s:g}")
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
    assert_reparametrized(variant, base, rep, f"{case.name}, {what}{'' if REML else ', ML'}", case)


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
