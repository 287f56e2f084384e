"""Real data sets sorted by a fixed-effect factor, fitted in any row order, against lme4.

Data sorted by a factor are the norm (R's Machines, Orthodont, warpbreaks, Milk,
mlmRev's Exam): the first rows hold one level of the factor. The fast design path once
decided the design's columns from the first 16 rows and silently fitted without such a
factor (Machines: REML criterion 365.9 instead of lme4's 286.9).

Reference values: lme4 1.1-31 on the same CSV files
(``tests/data/r/make_frontend_reference.R`` -> ``frontend_reference.json``), text
columns as factors with levels in sorted order, as pandas reads them.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import REFERENCE, lme4_name

import reml_engine as rl

pytestmark = pytest.mark.reference

with open(REFERENCE / "frontend_reference.json") as fh:
    LME4 = json.load(fh)

#: lme4 stops its optimizer at ~1e-6 in the criterion; the engine finds the exact optimum.
CRITERION_ATOL = 1e-6
#: Estimates at the two optima agree to about 1e-6 relative.
ESTIMATE_RTOL = 2e-5
ESTIMATE_ATOL = 1e-8
#: Variance components and the SEs that depend on them: where the criterion is flat in
#: theta (warpbreaks has 3 groups), lme4's optimizer stops ~1e-5 (relative) from the
#: optimum in var_group (its criterion is 3e-9 above the engine's).
VARIANCE_RTOL = 2e-4
CASES = ["machines", "orthodont", "warpbreaks", "milk", "exam", "sim_negative_icc"]


def _data(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE / LME4[name]["file"])


def _orders(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows as stored (R's order), shuffled, and sorted by each column both ways."""
    orders = {"as stored": data, "shuffled": data.sample(frac=1.0, random_state=20240601)}
    for column in data.columns:
        for ascending in (True, False):
            key = f"sorted by {column} {'ascending' if ascending else 'descending'}"
            orders[key] = data.sort_values(column, ascending=ascending, kind="stable")
    return orders


def _fit(formula: str, data: pd.DataFrame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)  # Exam's rank-deficient 'type'
        return rl.lmer(formula, data)


def _assert_matches_lme4(m, ref: dict, label: str) -> None:
    assert m.criterion == pytest.approx(ref["criterion"], abs=CRITERION_ATOL), label
    assert [lme4_name(c) for c in m.fixef.index] == ref["coef_names"], label
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["fixef"], rtol=ESTIMATE_RTOL, atol=ESTIMATE_ATOL,
                               err_msg=label)
    np.testing.assert_allclose(m.se.to_numpy(), ref["se"], rtol=VARIANCE_RTOL, err_msg=label)
    assert m.var_group == pytest.approx(ref["var_group"], rel=VARIANCE_RTOL, abs=ESTIMATE_ATOL), label
    assert m.sigma2 == pytest.approx(ref["sigma2"], rel=VARIANCE_RTOL), label
    assert (m.nobs, m.ngroups) == (ref["nobs"], ref["ngroups"]), label


@pytest.mark.parametrize("name", CASES)
def test_sorted_and_shuffled_rows_give_lme4s_fit(name):
    ref = LME4[name]
    for label, data in _orders(_data(name)).items():
        _assert_matches_lme4(_fit(ref["formula"], data), ref, f"{name}, {label}")


def test_machines_sorted_by_machine_keeps_the_factor():
    """The issue's example: 286.9 (lme4), not 365.9 (the model without Machine)."""
    data = _data("machines").sort_values("Machine")
    m = rl.lmer("score ~ Machine + (1|Worker)", data)
    assert list(m.fixef.index) == ["(Intercept)", "Machine[T.B]", "Machine[T.C]"]
    assert m.criterion == pytest.approx(LME4["machines"]["criterion"], abs=CRITERION_ATOL)


@pytest.mark.parametrize("dtype", ["object", "str", "string[python]", "string[pyarrow]", "category"])
def test_machines_with_text_dtypes_give_lme4s_fit(dtype):
    """The factor as every pandas text dtype: the same levels, columns and fit as lme4's."""
    data = _data("machines")
    data["Machine"] = data["Machine"].astype(dtype)
    _assert_matches_lme4(rl.lmer("score ~ Machine + (1|Worker)", data), LME4["machines"], dtype)


def test_unused_category_is_dropped_as_lme4_does():
    """lme4 drops unused levels (model.frame(drop.unused.levels = TRUE)): with an unused
    first category 'Z' the reference level is still A."""
    data = _data("machines")
    data["Machine"] = pd.Categorical(data["Machine"], categories=["Z", "A", "B", "C"])
    ref = LME4["machines_unused_level"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", rl.ModelDataWarning)  # no zero column to drop
        m = rl.lmer(ref["formula"], data)
    _assert_matches_lme4(m, ref, "unused level")


def _level_only_in_incomplete_rows() -> pd.DataFrame:
    """sim_unbalanced with x2 missing wherever cat is 'a', cat a categorical a, b, c."""
    data = pd.read_csv(REFERENCE / "sim_unbalanced.csv")
    data.loc[data["cat"] == "a", "x2"] = np.nan
    return data.assign(cat=pd.Categorical(data["cat"], categories=["a", "b", "c"]))


@pytest.mark.parametrize("form", ["in memory", "chunks"])
def test_a_level_seen_only_in_rows_dropped_for_missing_values_is_unused(form):
    """model.frame drops the incomplete rows first, then the unused levels: 'a' is gone
    and 'b' is the reference level. The in-memory fit dropped the categories before the
    rows, kept 'a' as the reference and dropped cat[T.c] as collinear instead."""
    from reference_data import load_closure_reference

    from reml_engine.scaleout.chunked import lmer_chunks

    ref = load_closure_reference()["level_only_in_incomplete_rows"]
    data = _level_only_in_incomplete_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)  # the rows dropped
        if form == "chunks":
            m = lmer_chunks("y ~ x1 * cat + x2 + (1|g)", [data.iloc[:200], data.iloc[200:]])
        else:
            m = rl.lmer("y ~ x1 * cat + x2 + (1|g)", data)
    assert [lme4_name(c) for c in m.fixef.index] == list(ref["fixef"])
    assert m.dropped_columns == ()
    assert m.criterion == pytest.approx(ref["criterion"], abs=CRITERION_ATOL)
    np.testing.assert_allclose(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=ESTIMATE_RTOL)
    np.testing.assert_allclose(m.se.to_numpy(), list(ref["se"].values()), rtol=VARIANCE_RTOL)


def test_category_order_sets_the_reference_level_as_in_r():
    data = _data("machines")
    data["Machine"] = pd.Categorical(data["Machine"], categories=["C", "A", "B"])
    ref = LME4["machines_level_order"]
    _assert_matches_lme4(rl.lmer(ref["formula"], data.sort_values("Machine")), ref, "level order")
