"""Grouping by a pair: ``(1|a:b)`` is ``(1|g)`` when the pairs (a, b) name the groups g,
whatever the labels hold (':' included) and whatever their dtypes; predictions for the
fitting rows give the fitted values with a and b in any dtype. A pair fit labels its
groups by the pairs themselves (a MultiIndex of the random effects): ``("u:v", "w")``
and ``("u", "v:w")`` are two groups, as their text ``"u:v:w"`` could not say."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl

from .relations import (
    FITTED_RTOL,
    LabelMatch,
    assert_same_fit,
    fit_quietly,
    reference_cases,
    reference_fit,
)


def pair_case(case, kind: str):
    """The case's groups as pairs (a, b), in labels of ``kind``; the formula grouping by
    ``a:b``; and each group's pair of labels."""
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


KINDS = ("int", "text", "text with ':'")


def _pairs():
    for case in reference_cases():
        if f"(1|{case.group})" not in case.formula:
            continue
        for kind in KINDS:
            yield pytest.param(case, kind, id=f"{case.name}, {kind} pairs")


@pytest.mark.parametrize("case, kind", list(_pairs()))
def test_pair_grouping_is_the_group(case, kind):
    formula, data, by_group = pair_case(case, kind)
    fit = fit_quietly(rl.lmer, formula, data)
    expected = reference_fit(case.name)
    what = f"{case.name}, (1|a:b) with {kind} labels"
    assert isinstance(fit.ranef.index, pd.MultiIndex), f"{what}: ranef labels {type(fit.ranef.index).__name__}"
    assert list(fit.ranef.index.names) == ["a", "b"], f"{what}: ranef label names {fit.ranef.index.names}"
    # the pair fit labels its groups by the pairs: compared as tuples of plain values
    labels = LabelMatch(actual=_plain_pair, expected=lambda g: _plain_pair(by_group[g]))
    assert_same_fit(fit, expected, what, labels=labels, fitted=True)


def _plain_pair(pair) -> tuple:
    """A pair of labels as Python values (numpy integers as int)."""
    return tuple(v.item() if isinstance(v, np.generic) else v for v in pair)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in reference_cases()])
def test_pair_predictions_with_int_newdata_after_a_missing_label(case):
    """``a`` read as float because one label is missing (that row is dropped); newdata
    with the same labels as int must still find every group (where var_group is 0 every
    prediction is the population one, found or not: the cases with group effects bite)."""
    formula, data, _ = pair_case(case, "int")
    with_missing = pd.concat([data, data.iloc[:1].assign(a=np.nan)], ignore_index=True)
    fit = fit_quietly(rl.lmer, formula, with_missing)
    predicted = np.asarray(fit_quietly(fit.predict, data), dtype=float)
    spread = float(np.std(fit.design.y))
    # fitted is NaN on the row dropped for its missing label (API.md); predict has no such row.
    np.testing.assert_allclose(predicted, np.asarray(fit.fitted.dropna()), rtol=0, atol=FITTED_RTOL * spread,
                               err_msg=f"{case.name}: predict with int a after fitting float a")
