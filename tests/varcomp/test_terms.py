"""Grouping factors of several terms and their nesting/crossing structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reml_engine.errors import ModelDataError
from reml_engine.varcomp import RandomTerms, compute_vc_stats


def _structure(factors):
    terms = RandomTerms.from_labels(factors)
    n = terms.nobs
    return compute_vc_stats(np.ones((n, 1)), np.arange(n, dtype=float), terms).structure


def test_codes_and_levels_in_sorted_order():
    terms = RandomTerms.from_labels({"subj": ["s2", "s1", "s2", "s10"], "item": [3, 1, 3, 2]})
    assert terms.names == ("subj", "item")
    assert list(terms.levels[0]) == ["s1", "s10", "s2"]
    assert terms.codes[0].tolist() == [2, 0, 2, 1]
    assert terms.codes[1].tolist() == [2, 0, 2, 1]
    assert terms.nlevels == (3, 3) and terms.k == 2 and terms.nobs == 4
    assert terms.code_matrix().shape == (2, 4)
    pairs = RandomTerms.from_labels([("a", pd.Categorical(["x", "y"])), ("b", [0, 0])])
    assert pairs.names == ("a", "b")


def test_bad_factors_are_refused():
    with pytest.raises(ModelDataError, match="one level per row"):
        RandomTerms.from_labels({"a": [1, 2, 3], "b": [1, 2]})
    with pytest.raises(ModelDataError, match="at least one grouping factor"):
        RandomTerms.from_labels({})
    with pytest.raises(ValueError, match="missing labels"):
        RandomTerms.from_labels({"a": ["x", None, "y"]})
    with pytest.raises(ValueError, match="outside"):
        RandomTerms(("a",), (np.array([0, 3]),), (pd.Index(["x", "y"]),))


def test_nested_hierarchy():
    school = np.repeat([0, 1, 2], 6)
    klass = school * 10 + np.tile([0, 0, 1, 1, 2, 2], 3)
    region = np.where(school < 2, 0, 1)
    s = _structure({"class": klass, "school": school, "region": region})
    assert s.relation(0, 1) == "nested" and s.relation(1, 0) == "contains"
    assert s.is_nested_in(0, 2) and s.is_nested_in(1, 2) and not s.is_nested_in(2, 1)
    assert s.nesting_chain() == (0, 1, 2)
    # Any order of the terms gives the chain innermost first.
    s = _structure({"region": region, "class": klass, "school": school})
    assert s.nesting_chain() == (1, 2, 0)


def test_fully_and_partially_crossed():
    a = np.repeat(np.arange(4), 3)
    b = np.tile(np.arange(3), 4)
    s = _structure({"a": a, "b": b})
    assert s.relation(0, 1) == "crossed" and s.nesting_chain() is None
    assert s.cells[0, 1] == 12
    s = _structure({"a": a[:-1], "b": b[:-1]})
    assert s.relation(0, 1) == "partially crossed" and s.cells[0, 1] == 11


def test_identical_grouping_is_flagged():
    g = np.array([0, 0, 1, 1, 2])
    s = _structure({"g": g, "copy": np.array(["x", "x", "y", "y", "z"])})
    assert s.relation(0, 1) == "same" and s.identical_pairs() == [(0, 1)]
    assert s.nesting_chain() is not None


def test_mixed_nested_and_crossed():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 60)
    s = _structure({"b:a": a * 10 + rng.integers(0, 3, 60), "a": a, "c": rng.integers(0, 4, 60)})
    assert s.relation(0, 1) == "nested" and s.relation(0, 2) != "nested" and s.nesting_chain() is None
