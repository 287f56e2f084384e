"""The fast design path (reml_engine.fast_design) and the general one (formulaic, called
directly) give the same matrix, the same column names and a model spec that encodes new
data the same way, on every input: the reference cases in every row order and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from reml_engine.design import build_design
from reml_engine.fast_design import model_matrices

from .relations import (
    factor_variants,
    fast_path_drops_a_factor,
    fit_quietly,
    general_design,
    numeric_variants,
    reference_cases,
    row_orders,
    slow_unless,
    string_factor,
    xfail_marks,
)


def assert_same_design(case, data, what: str) -> None:
    """``model_matrices`` and ``build_design`` against formulaic on the complete rows."""
    complete = case.complete(data)
    general = general_design(case.fixed, complete)
    names = [str(c) for c in general.rhs.columns]
    X = general.rhs.to_numpy(dtype=np.float64)

    fast = model_matrices(case.fixed, complete)
    assert [str(c) for c in fast.rhs.columns] == names, f"{what}: model_matrices columns"
    np.testing.assert_array_equal(fast.rhs.to_numpy(dtype=np.float64), X, err_msg=f"{what}: model_matrices values")
    np.testing.assert_array_equal(np.ravel(fast.lhs.to_numpy(dtype=np.float64)),
                                  general.lhs.to_numpy(dtype=np.float64)[:, 0], err_msg=f"{what}: response")
    # The spec that later encodes new data (predict) must know every level.
    new = complete.iloc[::-1]
    np.testing.assert_array_equal(
        np.asarray(fast.rhs.model_spec.get_model_matrix(new, na_action="ignore").to_numpy(dtype=np.float64)),
        np.asarray(general.rhs.model_spec.get_model_matrix(new, na_action="ignore").to_numpy(dtype=np.float64)),
        err_msg=f"{what}: model spec on new data")

    design = fit_quietly(build_design, case.formula, data)
    assert list(design.column_names) == ["(Intercept)" if n == "Intercept" else n for n in names], (
        f"{what}: build_design columns")
    np.testing.assert_array_equal(design.X, X, err_msg=f"{what}: build_design values")


def _orders():
    for case in reference_cases():
        for order, data in row_orders(case.data).items():
            issues = [1] if fast_path_drops_a_factor(case, data) else []
            yield pytest.param(case, order, data, marks=xfail_marks(issues), id=f"{case.name}, {order}")


def _dtypes():
    for case in reference_cases():
        for variant in factor_variants(case, case.factors) + numeric_variants(case, case.numeric):
            issues = [4] if string_factor(variant.data, case) else []
            # sorted as well: the fast path reads the first rows
            for label, data in (("", variant.data), (", sorted", variant.data.sort_values([*case.factors, *case.numeric]))):
                marks = issues + ([1] if fast_path_drops_a_factor(case, data) else [])
                yield pytest.param(case, variant.name + label, data, marks=xfail_marks(marks),
                                   id=f"{case.name}, {variant.name}{label}")


@pytest.mark.parametrize("case, name, data", list(_orders()) + slow_unless(_dtypes(), ("sim_negative_icc",)))
def test_fast_design_is_formulaics(case, name, data):
    assert_same_design(case, data, f"{case.name}, {name}")
