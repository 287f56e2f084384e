"""Dtypes: grouping and factor columns as object, category (with unused levels), pandas'
string dtypes, int codes; numeric columns as int, float32 (against the same rounded
values as float64), nullable Float64 and Int64: the same fit."""

from __future__ import annotations

import numpy as np
import pytest

import reml_engine as rl

from .relations import (
    FITTED_RTOL,
    as_factor_kind,
    assert_matches_lme4,
    assert_same_fit,
    expected_fit,
    factor_variants,
    fit_quietly,
    numeric_variants,
    reference_cases,
    reference_fit,
)


def _variants():
    for case in reference_cases():
        for variant in factor_variants(case, (case.group, *case.factors)) + numeric_variants(
                case, (case.response, *case.numeric)):
            yield pytest.param(case, variant, id=f"{case.name}, {variant.name}")


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
            yield pytest.param(case, variant, id=f"{case.name}, newdata {variant.name}")


@pytest.mark.parametrize("case, variant", list(_newdata_variants()))
def test_predicting_the_fitting_rows_in_any_dtype_gives_the_fitted_values(case, variant):
    fit = reference_fit(case.name)
    predicted = np.asarray(fit_quietly(fit.predict, variant.data), dtype=float)
    spread = float(np.std(fit.design.y))
    np.testing.assert_allclose(predicted, np.asarray(fit.fitted), rtol=0, atol=FITTED_RTOL * spread,
                               err_msg=f"{case.name}, predict with {variant.name}")


def _levels_only_in_incomplete_rows():
    """Each factor as a categorical whose first level occurs only in rows whose response
    is missing: model.frame drops those rows, then the level (the chunked fit did; the
    in-memory fit kept it as the reference level and dropped another column instead)."""
    for case in reference_cases():
        for column in case.factors:
            level = sorted(case.data[column].dropna().unique())[0]
            data = case.data.assign(**{case.response: case.data[case.response].where(case.data[column] != level)})
            yield pytest.param(case.with_data(data, f", no response where {column} is {level!r}"), column,
                               id=f"{case.name}, {column} {level!r} only in incomplete rows")


@pytest.mark.parametrize("case, column", list(_levels_only_in_incomplete_rows()))
def test_a_category_seen_only_in_incomplete_rows_is_no_level(case, column):
    plain = case.data.assign(**{column: as_factor_kind(case.data[column], "object")})
    expected = expected_fit(case.formula, plain)
    for kind in ("category", "category, unused levels first", "category, unused levels last"):
        data = case.data.assign(**{column: as_factor_kind(case.data[column], kind)})
        assert_same_fit(fit_quietly(rl.lmer, case.formula, data), expected, f"{case.name}, {column} as {kind}",
                        fitted=True)
        chunks = [data.iloc[: len(data) // 3], data.iloc[len(data) // 3:]]
        assert_same_fit(fit_quietly(rl.lmer, case.formula, chunks), expected, f"{case.name}, {column} as {kind}, chunks")
