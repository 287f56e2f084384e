"""The canonical label rule (reml_engine.frontend.groups): which labels are one group, in memory,
across chunks and in predict.

The outside facts: lme4's sleepstudy fit (``reference.json``), whose grouping factor R
reads as text, must come out whatever type the ids are given in; and for interactions
the groups pandas' ``groupby`` forms from the pairs of values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, case_formula, load_reference

import reml_engine as rl
from reml_engine.frontend.groups import (
    encode_labels,
    factorize_groups,
    label_kinds,
    label_text,
    level_positions,
)

#: lme4's criterion is stored to about 1e-8; the fits agree with it to this absolute tolerance.
LME4_CRITERION_ATOL = 1e-6
#: Two fits of the same rows in different dtypes differ only by summation order.
SAME_FIT_RTOL = 1e-10

SLEEP = case_data("sleepstudy")
SLEEP_REF = load_reference()["sleepstudy"]["reml"]


def _subject_as(kind: str) -> pd.Series:
    """sleepstudy's Subject ids (308 ... 372) in another dtype, same partition of rows."""
    subject = SLEEP["Subject"]
    rank = subject.rank(method="dense").astype(int).to_numpy()  # 1 .. 18
    return {
        "int8": subject.astype(np.int64).sub(300).astype(np.int8),
        "int16": subject.astype(np.int16),
        "uint8": subject.sub(300).astype(np.uint8),
        "uint64_above_2_63": pd.Series(np.uint64(2**63) + subject.to_numpy().astype(np.uint64)),
        "uint64_top": pd.Series(np.uint64(2**64 - 100) + rank.astype(np.uint64)),
        "float": subject.astype(float),
        "object_mixed": pd.Series([v if i % 2 else str(v) for i, v in enumerate(subject)], dtype=object),
        "datetime": pd.Series(pd.Timestamp("2020-01-01") + pd.to_timedelta(rank, "D")),
        "categorical_unused": pd.Series(pd.Categorical(subject, categories=list(range(300, 400)))),
        "string_python": subject.astype(str).astype("string[python]"),
        "string_pyarrow": subject.astype(str).astype("string[pyarrow]"),
        "str": subject.astype(str).astype("str"),
        "Int64": subject.astype("Int64"),
    }[kind]


@pytest.mark.parametrize("kind", [
    "int8", "int16", "uint8", "uint64_above_2_63", "uint64_top", "float", "object_mixed", "datetime",
    "categorical_unused", "string_python", "string_pyarrow", "str", "Int64",
])
def test_sleepstudy_fits_as_lme4_whatever_the_id_dtype(kind):
    data = SLEEP.assign(Subject=_subject_as(kind).to_numpy() if kind != "categorical_unused"
                        else _subject_as(kind).array)
    m = rl.lmer(case_formula("sleepstudy"), data)
    assert m.ngroups == 18
    assert m.criterion == pytest.approx(SLEEP_REF["criterion"], abs=LME4_CRITERION_ATOL)
    # ranef rows are the ids themselves (no wrap to negative numbers, no text for numbers)
    # and lme4's modes, level by level.
    first_label = _subject_as(kind).iloc[0]
    if kind == "object_mixed":
        first_label = "308"
    assert m.ranef["mode"][first_label] == pytest.approx(SLEEP_REF["ranef"]["308"], rel=1e-5)
    # predict finds every group: with re=True it is the fitted value of the row.
    fitted = m.predict(data.iloc[:30])
    np.testing.assert_allclose(fitted, np.asarray(m.fitted)[:30], rtol=1e-12)


def test_uint64_labels_at_and_above_2_63_keep_their_values():
    ids = SLEEP["Subject"].to_numpy().astype(np.uint64) + np.uint64(2**63)
    m = rl.lmer(case_formula("sleepstudy"), SLEEP.assign(Subject=ids))
    assert m.ranef.index.dtype == np.uint64
    assert int(m.ranef.index.min()) == 2**63 + 308 and int(m.ranef.index.max()) == 2**63 + 372
    new = pd.DataFrame({"Days": [0.0, 0.0], "Subject": np.array([2**63 + 308, 5], dtype=np.uint64)})
    p = m.predict(new)
    assert p.iloc[0] == pytest.approx(m.fixef["(Intercept)"] + SLEEP_REF["ranef"]["308"], rel=1e-6)
    assert p.iloc[1] == pytest.approx(m.fixef["(Intercept)"], rel=1e-12)


def test_nullable_ids_with_missing_labels_are_dropped_with_the_usual_warning():
    ids = SLEEP["Subject"].astype("Int64")
    ids.iloc[[0, 1, 2]] = pd.NA
    with pytest.warns(rl.ModelDataWarning, match=r"dropped 3 of 180 rows with missing values \('Subject': 3\)"):
        m = rl.lmer(case_formula("sleepstudy"), SLEEP.assign(Subject=ids))
    reference = rl.lmer(case_formula("sleepstudy"), SLEEP.iloc[3:])
    assert m.criterion == pytest.approx(reference.criterion, rel=SAME_FIT_RTOL)


def test_unused_categories_are_not_groups():
    data = SLEEP.assign(Subject=pd.Categorical(SLEEP["Subject"], categories=[999, *sorted(SLEEP["Subject"].unique())]))
    m = rl.lmer(case_formula("sleepstudy"), data)
    assert 999 not in m.ranef.index and m.ngroups == 18


def test_an_unused_text_category_does_not_turn_numeric_labels_into_text():
    """Ids read as floats (a missing one), as a categorical with an unused text category:
    the groups are the integers they hold, as for the object column (the unused category
    made every label text: '308' instead of 308)."""
    ids = SLEEP["Subject"].astype(float)
    data = SLEEP.assign(Subject=pd.Categorical(ids, categories=["none", *sorted(ids.unique())]))
    m = rl.lmer(case_formula("sleepstudy"), data)
    assert list(m.ranef.index) == sorted(SLEEP["Subject"].unique())
    assert m.criterion == pytest.approx(SLEEP_REF["criterion"], abs=LME4_CRITERION_ATOL)


# -- the rule itself ------------------------------------------------------------------


@pytest.mark.parametrize("labels,codes,levels", [
    ([5, "5", 5.0, np.int8(5)], [0, 0, 0, 0], ["5"]),
    (["05", 5, "5"], [0, 1, 1], ["05", "5"]),  # text "05" is not the number 5 (R: as.character)
    ([1.5, 1, "1.5"], [1, 0, 1], ["1", "1.5"]),  # sorted as text
    ([True, 1, "True"], [1, 0, 1], ["1", "True"]),  # a boolean is not the number 1
    ([3.0, 1.0, np.nan], [1, 0, -1], [1, 3]),  # integral floats are integers
    ([0.5, 2.0], [0, 1], [0.5, 2.0]),
    ([None, "b", pd.NA, "a"], [-1, 1, -1, 0], ["a", "b"]),
    ([None, np.nan], [-1, -1], []),  # no label at all (a chunk whose factor is missing)
])
def test_canonical_labels(labels, codes, levels):
    coded = encode_labels(pd.Series(labels, dtype=object))
    assert coded.codes.tolist() == codes
    assert coded.levels.tolist() == levels


def test_label_text_spells_numbers_as_r_reads_them():
    assert [label_text(v) for v in (5, 5.0, np.uint64(2**64 - 1), 0.1, True, "x")] == \
        ["5", "5", "18446744073709551615", "0.1", "True", "x"]


def test_interaction_levels_are_tuples_not_joined_text():
    a = pd.Series(["x:y", "x", "x:y", "x"])
    b = pd.Series(["z", "y:z", "z", "y:z"])
    coded = encode_labels(pd.MultiIndex.from_arrays([a, b]))
    assert coded.ngroups == 2 and coded.codes.tolist() == [1, 0, 1, 0]
    assert list(coded.levels) == [("x", "y:z"), ("x:y", "z")]


def test_interaction_components_follow_the_rule():
    # a float (it had a NaN) and an int column: the pairs (1.0, 2) and (1, 2) are one group.
    left = pd.MultiIndex.from_arrays([pd.Series([1.0, np.nan, 3.0]), pd.Series([2, 2, 4])])
    assert level_positions(encode_labels(left).levels, pd.MultiIndex.from_arrays([[3, 1], ["4", 2]])).tolist() == [1, 0]


def test_level_positions_match_numbers_and_text():
    levels = pd.Index([308, 309, 310])
    assert level_positions(levels, [309, "310", 308.0, "x", None]).tolist() == [1, 2, 0, -1, -1]
    assert level_positions(pd.Index(["1", "2"]), [2, 1.0, "3"]).tolist() == [1, 0, -1]
    assert level_positions(pd.Index([2**63 + 1], dtype=np.uint64), [2**63 + 1, -1]).tolist() == [0, -1]
    assert level_positions(levels, pd.Series(pd.Categorical([310, 999]))).tolist() == [2, -1]


def test_factorize_groups_names_missing_labels():
    with pytest.raises(ValueError, match="'g' has 2 missing labels"):
        factorize_groups(pd.Series([1.0, np.nan, 2.0, np.nan]), "g")


@pytest.mark.parametrize("values,kinds", [
    (pd.Series([1, 2]), {"numbers"}),
    (pd.Series(["a", "5"]), {"text"}),
    (pd.Series(["a", "05"]), {"text", "numerals"}),
    (pd.Series(["5.0"], dtype="string[pyarrow]"), {"text", "numerals"}),
    (pd.Series([True, False]), {"booleans"}),
    (pd.Series([1, "a"], dtype=object), {"numbers", "text"}),
    (pd.Series(pd.Categorical(["1", "x"])), {"text"}),
])
def test_label_kinds(values, kinds):
    assert set(label_kinds(values)) == kinds


def test_fit_with_interaction_grouping_matches_pandas_groups():
    """(1|a:b) with labels holding ':' : the groups are pandas' groupby groups of (a, b)."""
    rng = np.random.default_rng(4)
    n = 240
    a = rng.choice(["x:y", "x"], n)
    b = np.where(rng.random(n) < 0.5, np.where(a == "x", "y:z", "z"), "w")
    x = rng.normal(size=n)
    data = pd.DataFrame({"a": a, "b": b, "x": x})
    codes = data.groupby(["a", "b"]).ngroup().to_numpy()
    data["y"] = x + rng.normal(size=codes.max() + 1)[codes] * 2 + rng.normal(size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        m = rl.lmer("y ~ x + (1|a:b)", data)
        by_codes = rl.lmer("y ~ x + (1|k)", data.assign(k=codes))
    assert m.ngroups == 4
    assert m.criterion == pytest.approx(by_codes.criterion, rel=SAME_FIT_RTOL)
    np.testing.assert_allclose(m.fixef, by_codes.fixef, rtol=SAME_FIT_RTOL)
    assert m.ranef["mode"][("x", "y:z")] == pytest.approx(
        by_codes.ranef["mode"][codes[(a == "x") & (b == "y:z")][0]], rel=1e-9)


@pytest.mark.parametrize("labels", [[3, 1, 3, 2], [3.0, 1.0, np.nan, 2.0], ["c", "a", "c", "b"]])
def test_unsorted_coding_keeps_the_order_of_first_appearance(labels):
    # A Dask categorical's categories are gathered partition by partition in this order.
    levels = encode_labels(pd.Series(labels), sort=False).levels
    assert [label_text(v) for v in levels] == [label_text(v) for v in pd.unique(pd.Series(labels).dropna())]


def test_integer_range_is_numpys_min_and_max():
    from reml_engine.core.kernels import integer_range

    rng = np.random.default_rng(1)
    info = np.iinfo(np.int64)
    for values in (np.array([7]), rng.integers(-50, 50, 1001), np.array([3, info.max, info.min, 0]),
                   np.arange(10**5)[::-1].copy(), np.full(9, -4)):
        assert integer_range(values.astype(np.int64)) == (values.min(), values.max())


def test_missing_labels_are_counted_whatever_their_place():
    for labels in ([np.nan, 1.0, 2.0], [1.0, 2.0, np.nan, np.nan], [None, "a", None]):
        with pytest.raises(ValueError, match=f"has {sum(pd.isna(labels))} missing labels"):
            factorize_groups(labels)
