"""The fast design path (reml_engine.frontend.fast_design) and the general one (formulaic, called
directly) give the same matrix, the same column names and a model spec that encodes new
data the same way, on every input: the reference cases in every row order and dtype."""

from __future__ import annotations

import pytest

from .relations import (
    assert_same_design,
    factor_variants,
    numeric_variants,
    reference_cases,
    row_orders,
    slow_unless,
)


def _orders():
    for case in reference_cases():
        for order, data in row_orders(case.data).items():
            yield pytest.param(case, order, data, id=f"{case.name}, {order}")


def _dtypes():
    for case in reference_cases():
        for variant in factor_variants(case, case.factors) + numeric_variants(case, case.numeric):
            # sorted as well: the fast path once read the first rows
            for label, data in (("", variant.data), (", sorted", variant.data.sort_values([*case.factors, *case.numeric]))):
                yield pytest.param(case, variant.name + label, data, id=f"{case.name}, {variant.name}{label}")


@pytest.mark.parametrize("case, name, data", list(_orders()) + slow_unless(_dtypes(), ("sim_negative_icc",)))
def test_fast_design_is_formulaics(case, name, data):
    assert_same_design(case, data, f"{case.name}, {name}")
