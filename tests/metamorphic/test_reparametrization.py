"""Reparametrization: shifting a numeric predictor by a constant (inside interactions
too, and to ~1e6) or rescaling it is the same model in other coordinates. The ML
criterion and the fitted values do not move, the REML criterion moves by
2 log|det M| (M maps the old columns to the new), and the coefficients map as M says."""

from __future__ import annotations

import pytest

import reml_engine as rl

from .relations import (
    FAR_FROM_ZERO,
    assert_reparametrized,
    fit_quietly,
    in_interaction,
    reference_cases,
    scale_variant,
    shift_variant,
    xfail_marks,
)

#: Shifts: small, a calendar year, epoch-like seconds and far beyond.
SHIFTS = (-37.25, 2024.0, 1e6, 1.7e9)
#: Scales: a change of unit both ways, and one not a power of ten.
SCALES = (1e-3, 7.3, 1e6)


def shift_fails_today(case, column: str, shift: float) -> bool:
    """Item 2: a predictor of an interaction moved far from 0."""
    return in_interaction(case, column) and abs(shift) >= FAR_FROM_ZERO


def _shifts():
    for case in reference_cases():
        for column in case.numeric:
            for shift in SHIFTS:
                issues = [2] if shift_fails_today(case, column, shift) else []
                yield pytest.param(case, column, shift, marks=xfail_marks(issues),
                                   id=f"{case.name}, {column} + {shift:g}")


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


@pytest.mark.parametrize("case, column, scale", list(_scales()))
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
