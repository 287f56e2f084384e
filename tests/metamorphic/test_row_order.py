"""Row order: a permutation, and the rows sorted by each column (ascending and
descending), give the fit of the rows as stored, and lme4's criterion."""

from __future__ import annotations

import pytest

import reml_engine as rl

from .relations import (
    assert_matches_lme4,
    assert_same_fit,
    fit_quietly,
    reference_cases,
    reference_fit,
    row_orders,
)


def _orders():
    for case in reference_cases():
        for order, data in row_orders(case.data).items():
            yield pytest.param(case, order, data, id=f"{case.name}, {order}")


ORDERS = list(_orders())


@pytest.mark.parametrize("case, order, data", ORDERS)
def test_row_order_gives_the_same_reml_fit(case, order, data):
    fit = fit_quietly(rl.lmer, case.formula, data)
    what = f"{case.name}, rows {order}"
    assert_same_fit(fit, reference_fit(case.name), what, fitted=True)
    assert_matches_lme4(fit, case, what)


@pytest.mark.slow
@pytest.mark.parametrize("case, order, data", ORDERS)
def test_row_order_gives_the_same_ml_fit(case, order, data):
    fit = fit_quietly(rl.lmer, case.formula, data, REML=False)
    what = f"{case.name}, rows {order}, ML"
    assert_same_fit(fit, reference_fit(case.name, REML=False), what, fitted=True)
    assert_matches_lme4(fit, case, what)
