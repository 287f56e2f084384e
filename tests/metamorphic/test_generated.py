"""The relations on generated data: unbalanced groups with singletons, labels as text,
integers or digit strings, text factors, interactions, predictors far from 0, missing
values (see generated.py). A few reproducible examples run by default, more in the slow
suite."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import reml_engine as rl

from .generated import FAST_VARIANTS, FULL_EXAMPLES, fast_settings, full_settings, generated_cases
from .relations import (
    BY_TEXT,
    DASK_FORMS,
    FITTED_RTOL,
    INPUT_FORMS,
    ONE_PASS_FORMS,
    assert_reparametrized,
    assert_same_design,
    assert_same_fit,
    expected_data_for_form,
    expected_fit,
    factor_variants,
    far_from_zero,
    fit_quietly,
    form_applies,
    numeric_variants,
    one_pass_expectation,
    row_orders,
    scale_variant,
    shift_variant,
)


def base_fit(case, data=None):
    """The in-memory fit, or a rejected example when the generated data cannot be fitted
    (too few complete rows, a constant response: the library says so)."""
    data = case.data if data is None else data
    try:
        return fit_quietly(rl.lmer, case.formula, data, REML=case.REML)
    except rl.ModelDataError:
        reject()


# -- the relations, one function each, run at two sizes below ------------------------------
#
# Each takes ``pick``: given the names of the variants of an example, the ones to check
# (all of them in the slow suite, a few drawn by hypothesis by default).


def everything(names: list[str]) -> list[str]:
    return names


def drawn(data, most: int = FAST_VARIANTS):
    """A ``pick`` that lets hypothesis draw up to ``most`` variants of the example."""
    def pick(names: list[str]) -> list[str]:
        if not names:
            return names
        return data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=most, unique=True), label="variants")
    return pick


def row_order_relation(case, pick=everything):
    expected = base_fit(case)
    orders = row_orders(case.data, seed=1)
    for order in pick(list(orders)):
        data = orders[order]
        fit = fit_quietly(rl.lmer, case.formula, data, REML=case.REML)
        assert_same_fit(fit, expected, f"{case.name}, rows {order}", fitted=True)


def dtype_relation(case, pick=everything):
    base_fit(case)
    variants = {v.name: v for v in factor_variants(case, (case.group, *case.factors)) + numeric_variants(
        case, (case.response, *case.numeric))}
    for name in pick(list(variants)):
        variant = variants[name]
        expected = expected_fit(case.formula, variant.expected, REML=case.REML)
        fit = fit_quietly(rl.lmer, case.formula, variant.data, REML=case.REML)
        assert_same_fit(fit, expected, f"{case.name}, {variant.name}", labels=variant.labels, fitted=True)


def prediction_relation(case, pick=everything):
    """Predicting the fitting rows, with newdata in any dtype, gives the fitted values."""
    fit = base_fit(case)
    # The fitting rows only: fitted is NaN on rows dropped for missing values (API.md).
    fitted = np.asarray(fit.fitted.dropna())
    spread = float(np.std(fit.design.y))
    rows = case.with_data(case.complete())
    # uint64 codes are new labels: groups the fit never saw
    variants = {v.name: v for v in factor_variants(rows, (case.group, *case.factors)) if "uint64" not in v.name}
    for name in pick(list(variants)):
        variant = variants[name]
        predicted = np.asarray(fit_quietly(fit.predict, variant.data), dtype=float)
        np.testing.assert_allclose(predicted, fitted, rtol=0, atol=FITTED_RTOL * spread,
                                   err_msg=f"{case.name}, predict with {variant.name}")


def input_form_relation(case, tmp_path, dask: bool, pick=everything, pieces: int = 3):
    base_fit(case)
    forms = [f for f in INPUT_FORMS if (f in DASK_FORMS) == dask and form_applies(f, case, case.data)]
    for form in pick(forms):
        folder = tmp_path / re.sub(r"\W+", "_", form)
        folder.mkdir(exist_ok=True)
        data = expected_data_for_form(form, case.data, folder)
        expected = expected_fit(case.formula, data, REML=case.REML)
        fit = INPUT_FORMS[form](case, case.data, folder, REML=case.REML, pieces=pieces)
        digits = None
        if form in ONE_PASS_FORMS:
            expected, digits = one_pass_expectation(fit, expected, case, data)
        assert_same_fit(fit, expected, f"{case.name}, {form} in {pieces} pieces", labels=BY_TEXT, digits=digits)


def reparametrization_relation(case, pick=everything):
    base_fit(case)
    centre = float(np.round(case.data["x"].mean()))
    reps = {f"x - {centre:g}": shift_variant(case.data, "x", -centre),
            "x + 1e6": shift_variant(case.data, "x", 1e6),
            "x * 2**-7": scale_variant(case.data, "x", 2.0**-7)}
    if not far_from_zero(case.data["x"]):  # else rounding x * 7.3 changes the data (see scale_variant)
        reps["x * 7.3"] = scale_variant(case.data, "x", 7.3)
    for name in pick(list(reps)):
        rep = reps[name]
        base = fit_quietly(rl.lmer, case.formula, rep.base, REML=case.REML)
        variant = fit_quietly(rl.lmer, case.formula, rep.variant, REML=case.REML)
        assert_reparametrized(variant, base, rep, f"{case.name}, {name}", case)


def design_relation(case, pick=everything):
    if not len(case.complete()):
        reject()
    orders = {"as generated": case.data, **row_orders(case.data, seed=2)}
    for order in pick(list(orders)):
        data = orders[order]
        assert_same_design(case, data, f"{case.name}, rows {order}")


# -- a few examples by default ---------------------------------------------------------------

#: Models with x, for the reparametrizations.
WITH_X = ("y ~ x + (1|g)", "y ~ x * f + (1|g)", "y ~ x + k + f + (1|g)")


@fast_settings()
@given(case=generated_cases(), data=st.data())
def test_row_order(case, data):
    row_order_relation(case, drawn(data))


@fast_settings()
@given(case=generated_cases(), data=st.data())
def test_dtypes(case, data):
    dtype_relation(case, drawn(data))


@fast_settings()
@given(case=generated_cases(), data=st.data())
def test_prediction_of_the_fitting_rows(case, data):
    prediction_relation(case, drawn(data))


@fast_settings()
@given(case=generated_cases(), data=st.data(), pieces=st.integers(1, 9))
def test_input_forms(case, data, pieces, tmp_path_factory):
    input_form_relation(case, tmp_path_factory.mktemp("forms"), dask=False, pick=drawn(data), pieces=pieces)


@fast_settings()
@given(case=generated_cases(formulas=WITH_X), data=st.data())
def test_reparametrization(case, data):
    reparametrization_relation(case, drawn(data))


@fast_settings()
@given(case=generated_cases(), data=st.data())
def test_design(case, data):
    design_relation(case, drawn(data))


# -- every variant of more examples in the slow suite ------------------------------------------


@pytest.mark.slow
@full_settings()
@given(case=generated_cases())
def test_row_order_full(case):
    row_order_relation(case)


@pytest.mark.slow
@full_settings()
@given(case=generated_cases())
def test_dtypes_full(case):
    dtype_relation(case)


@pytest.mark.slow
@full_settings()
@given(case=generated_cases())
def test_prediction_of_the_fitting_rows_full(case):
    prediction_relation(case)


@pytest.mark.slow
@full_settings()
@given(case=generated_cases(), pieces=st.integers(1, 9))
def test_input_forms_full(case, pieces, tmp_path_factory):
    input_form_relation(case, tmp_path_factory.mktemp("forms"), dask=False, pieces=pieces)


@pytest.mark.slow
@full_settings(FULL_EXAMPLES // 4)
@given(case=generated_cases(), pieces=st.integers(1, 9))
def test_dask_input_forms_full(case, pieces, tmp_path_factory):
    input_form_relation(case, tmp_path_factory.mktemp("dask"), dask=True, pieces=pieces)


@pytest.mark.slow
@full_settings()
@given(case=generated_cases(formulas=WITH_X))
def test_reparametrization_full(case):
    reparametrization_relation(case)


@pytest.mark.slow
@full_settings()
@given(case=generated_cases())
def test_design_full(case):
    design_relation(case)
