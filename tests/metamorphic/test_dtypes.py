"""Dtypes: grouping and factor columns as object, category (with unused levels), pandas'
string dtypes, int codes; numeric columns as int, float32 (against the same rounded
values as float64), nullable Float64 and Int64: the same fit."""

from __future__ import annotations

import numpy as np
import pytest

import reml_engine as rl

from .known_issues import (
    intercept_only,
    string_factor,
    xfail_marks,
)
from .relations import (
    FITTED_RTOL,
    assert_matches_lme4,
    assert_same_fit,
    expected_fit,
    factor_variants,
    fit_quietly,
    numeric_variants,
    reference_cases,
    reference_fit,
)


def known_dtype_issues(case, variant) -> list:
    issues = []
    if string_factor(variant.data, case):
        issues.append(4)
    if variant.name.endswith("uint64 codes from 2**63"):
        issues.append(8)
    if any(variant.name == f"{c} as category, unused levels first" for c in case.factors):
        issues.append("10 unused")
    return issues


def _variants():
    for case in reference_cases():
        for variant in factor_variants(case, (case.group, *case.factors)) + numeric_variants(
                case, (case.response, *case.numeric)):
            yield pytest.param(case, variant, marks=xfail_marks(known_dtype_issues(case, variant)),
                               id=f"{case.name}, {variant.name}")


VARIANTS = list(_variants())


def _check(case, variant, REML):
    fit = fit_quietly(rl.lmer, case.formula, variant.data, REML=REML)
    expected = expected_fit(case.formula, variant.expected, REML=REML)
    what = f"{case.name}, {variant.name}{'' if REML else ', ML'}"
    assert_same_fit(fit, expected, what, labels=variant.labels, fitted=True)
    if "float32" not in variant.name:
        assert_matches_lme4(fit, case, what)


@pytest.mark.parametrize("case, variant", VARIANTS)
def test_dtype_gives_the_same_reml_fit(case, variant):
    _check(case, variant, REML=True)


@pytest.mark.slow
@pytest.mark.parametrize("case, variant", VARIANTS)
def test_dtype_gives_the_same_ml_fit(case, variant):
    _check(case, variant, REML=False)


def _newdata_variants():
    for case in reference_cases():
        rows = case.with_data(case.complete())
        for variant in factor_variants(rows, (case.group, *case.factors)):
            if "uint64" in variant.name:
                continue  # new labels: groups the fit never saw
            issues = (["D"] if intercept_only(case) else []) + known_newdata_issues(case, variant)
            yield pytest.param(case, variant, marks=xfail_marks(issues), id=f"{case.name}, newdata {variant.name}")


def known_newdata_issues(case, variant) -> list:
    issues = []
    if string_factor(variant.data, case):
        issues.append(4)
    return issues


@pytest.mark.parametrize("case, variant", list(_newdata_variants()))
def test_predicting_the_fitting_rows_in_any_dtype_gives_the_fitted_values(case, variant):
    fit = reference_fit(case.name)
    predicted = np.asarray(fit_quietly(fit.predict, variant.data), dtype=float)
    spread = float(np.std(fit.design.y))
    np.testing.assert_allclose(predicted, np.asarray(fit.fitted), rtol=0, atol=FITTED_RTOL * spread,
                               err_msg=f"{case.name}, predict with {variant.name}")
