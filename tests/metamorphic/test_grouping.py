"""Grouping by a pair: ``(1|a:b)`` is ``(1|g)`` when the pairs (a, b) name the groups g,
whatever the labels hold (':' included) and whatever their dtypes; predictions for the
fitting rows give the fitted values with a and b in any dtype."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl

from .known_issues import (
    intercept_only,
    xfail_marks,
)
from .relations import (
    CRITERION_RTOL,
    FITTED_RTOL,
    LabelMatch,
    assert_coefficients,
    assert_same_fit,
    fit_quietly,
    reference_cases,
    reference_fit,
)


def pair_case(case, kind: str):
    """The case's groups as pairs (a, b), in labels of ``kind``; the formula grouping by
    ``a:b``; and each group's label as ``a:b`` text."""
    codes = pd.factorize(case.data[case.group], sort=True)[0]
    a, b = codes // 3, codes % 3
    if kind == "int":
        a_labels, b_labels = a, b
    elif kind == "text":
        a_labels = np.array([f"p{v}" for v in a], dtype=object)
        b_labels = np.array([f"q{v}" for v in b], dtype=object)
    elif kind == "text with ':'":
        # groups 0 and 1 become ("u:v", "w") and ("u", "v:w"): two groups, one text "u:v:w"
        a_labels = np.array([{0: "u:v", 1: "u"}.get(c, f"p{v}") for c, v in zip(codes, a, strict=True)], dtype=object)
        b_labels = np.array([{0: "w", 1: "v:w"}.get(c, f"q{v}") for c, v in zip(codes, b, strict=True)], dtype=object)
    else:
        raise ValueError(kind)
    data = case.data.drop(columns=[case.group]).assign(a=a_labels, b=b_labels)
    formula = case.formula.replace(f"(1|{case.group})", "(1|a:b)")
    by_group = dict(zip(case.data[case.group], zip(a_labels, b_labels, strict=True), strict=True))
    return formula, data, by_group


KINDS = {"int": [], "text": [], "text with ':'": [7]}


def _pairs():
    for case in reference_cases():
        if f"(1|{case.group})" not in case.formula:
            continue
        for kind, issues in KINDS.items():
            yield pytest.param(case, kind, marks=xfail_marks(issues), id=f"{case.name}, {kind} pairs")


@pytest.mark.parametrize("case, kind", list(_pairs()))
def test_pair_grouping_is_the_group(case, kind):
    formula, data, by_group = pair_case(case, kind)
    fit = fit_quietly(rl.lmer, formula, data)
    expected = reference_fit(case.name)
    what = f"{case.name}, (1|a:b) with {kind} labels"
    if kind == "text with ':'":
        # how such pairs are to be labelled is open; that they are distinct groups is not
        assert fit.ngroups == expected.ngroups, f"{what}: {fit.ngroups} groups instead of {expected.ngroups}"
        assert fit.criterion == pytest.approx(expected.criterion, rel=CRITERION_RTOL), f"{what}: criterion"
        assert_coefficients(fit, expected.fixef.to_numpy(), expected.se.to_numpy(), what)
        return
    # the pair fit labels its groups by the pair's text
    labels = LabelMatch(actual=str, expected=lambda g: ":".join(map(str, by_group[g])))
    assert_same_fit(fit, expected, what, labels=labels, fitted=True)


def _with_group_effects():
    """Cases whose groups have effects (var_group > 0): with none, every prediction is
    the population one, lost group or not."""
    for case in reference_cases():
        issues = ([7] if reference_fit(case.name).var_group > 0 else []) + (["D"] if intercept_only(case) else [])
        yield pytest.param(case, marks=xfail_marks(issues), id=case.name)


@pytest.mark.parametrize("case", list(_with_group_effects()))
def test_pair_predictions_with_int_newdata_after_a_missing_label(case):
    """``a`` read as float because one label is missing (that row is dropped); newdata
    with the same labels as int must still find every group."""
    formula, data, _ = pair_case(case, "int")
    with_missing = pd.concat([data, data.iloc[:1].assign(a=np.nan)], ignore_index=True)
    fit = fit_quietly(rl.lmer, formula, with_missing)
    predicted = np.asarray(fit_quietly(fit.predict, data), dtype=float)
    spread = float(np.std(fit.design.y))
    np.testing.assert_allclose(predicted, np.asarray(fit.fitted), rtol=0, atol=FITTED_RTOL * spread,
                               err_msg=f"{case.name}: predict with int a after fitting float a")
