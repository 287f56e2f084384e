"""emmeans' ``by =`` (means of a factor within the levels of another) and Holm's adjustment,
against R.

The reference values were written by ``tests/data/r/make_emmeans_by_reference.R`` (lme4,
lmerTest, emmeans, pbkrtest): Oats with the nitrogen x variety interaction (one random term
and two), Exam's sex by school gender, Milk's diets, REML and ML, Satterthwaite and
Kenward-Roger df; pairs() with every adjustment and a custom contrast family with Holm's,
each level of ``by`` a family of its own. Tolerances as in ``test_ranova_emmeans.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.errors import ModelDataError

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "emmeans_by_reference.json").read_text())["emmeans"]
ESTIMATE_RTOL = 1e-6
DF_P_RTOL = 1e-4
#: R's qtukey is accurate to about 4 digits, so are Tukey's intervals; R's ptukey far in
#: the tail to about 1e-12 in absolute terms.
TUKEY_INTERVAL_RTOL = 1e-4
TUKEY_P_ATOL = 1e-11


def _by(ref):
    return ref.get("by") or None  # jsonlite writes R's NULL as {}


def _close(actual, expected, rtol, what, atol=0.0):
    expected = np.array([np.nan if x is None else x for x in expected], dtype=float)
    np.testing.assert_allclose(np.asarray(actual, dtype=float), expected, rtol=rtol, atol=atol, err_msg=what)


def _level_text(level) -> str:
    return str(level).removesuffix(".0")


@pytest.fixture(scope="module")
def fits():
    cache = {}

    def get(ref):
        key = (ref["data"], ref["formula"], ref["REML"])
        if key not in cache:
            cache[key] = rl.lmer(ref["formula"], getattr(rl.datasets, ref["data"])(), REML=ref["REML"])
        return cache[key]

    return get


def _check_contrasts(table: pd.DataFrame, ref: dict, by, what: str, tukey: bool) -> None:
    if by is None:
        assert list(table.index) == ref["contrast"], what
    else:
        assert table.index.names == [by, "contrast"], what
        assert [_level_text(b) for b in table.index.get_level_values(0)] == ref["by"], what
        assert list(table.index.get_level_values(1)) == ref["contrast"], what
    _close(table["estimate"], ref["estimate"], ESTIMATE_RTOL, f"{what} estimate")
    _close(table["se"], ref["se"], ESTIMATE_RTOL, f"{what} se")
    _close(table["df"], ref["df"], DF_P_RTOL, f"{what} df")
    _close(table["p"], ref["p"], DF_P_RTOL, f"{what} p", TUKEY_P_ATOL if tukey else 0.0)
    estimate = np.asarray(ref["estimate"], dtype=float)
    rtol = TUKEY_INTERVAL_RTOL if tukey else ESTIMATE_RTOL
    _close(table["upper"] - table["estimate"], np.asarray(ref["upper"]) - estimate, rtol, f"{what} upper")
    _close(table["estimate"] - table["lower"], estimate - np.asarray(ref["lower"]), rtol, f"{what} lower")


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_emmeans_by_and_holm_equal_R(key, fits):
    ref = REFERENCE[key]
    m = fits(ref)
    np.testing.assert_allclose(m.criterion, ref["criterion"], rtol=ESTIMATE_RTOL)
    by = _by(ref)
    emm = m.emmeans(ref["spec"], ddf=ref["ddf"], by=by)
    table = emm.table
    if by is None:
        assert [_level_text(level) for level in table.index] == ref["level"]
    else:
        assert table.index.names == [by, ref["spec"]]
        assert [_level_text(b) for b in table.index.get_level_values(0)] == ref["by_level"]
        assert [_level_text(level) for level in table.index.get_level_values(1)] == ref["level"]
    _close(table["emmean"], ref["emmean"], ESTIMATE_RTOL, f"{key} emmean")
    _close(table["se"], ref["se"], ESTIMATE_RTOL, f"{key} se")
    _close(table["df"], ref["df"], DF_P_RTOL, f"{key} df")
    _close(table["upper"] - table["emmean"], np.asarray(ref["upper"]) - np.asarray(ref["emmean"]),
           ESTIMATE_RTOL, f"{key} upper")
    for adjust, values in ref["pairs"].items():
        _check_contrasts(emm.pairs(adjust=adjust).table, values, by, f"{key} pairs {adjust}", adjust == "tukey")
    custom = ref["custom"]
    result = emm.contrast(custom["weights"], adjust=custom["adjust"])
    _check_contrasts(result.table, custom, by, f"{key} custom {custom['adjust']}", False)


def test_the_bar_spelling_is_by(fits):
    ref = REFERENCE["oats_int/reml/Variety|nitro/satterthwaite"]
    m = fits(ref)
    spelled = m.emmeans("Variety | nitro")
    pd.testing.assert_frame_equal(spelled.table, m.emmeans("Variety", by="nitro").table)
    pd.testing.assert_frame_equal(m.emmeans("~ Variety | nitro").pairs().table, spelled.pairs().table)
    assert spelled.by == "nitro" and spelled.spec == "Variety"


def test_holm_between_none_and_bonferroni_and_notes(fits):
    m = fits(REFERENCE["milk/reml/Diet/satterthwaite"])
    emm = m.emmeans("Diet")
    none, holm, bonferroni = (emm.pairs(adjust=a).table["p"] for a in ("none", "holm", "bonferroni"))
    assert (none <= holm + 1e-15).all() and (holm <= bonferroni + 1e-15).all()
    # Holm's intervals are Bonferroni's (emmeans'), and the notes say so.
    pd.testing.assert_series_equal(emm.pairs(adjust="holm").table["lower"], emm.pairs(adjust="bonferroni").table["lower"])
    assert any("bonferroni" in note for note in emm.pairs(adjust="holm").notes)
    by_notes = m.emmeans("Diet", by=None).pairs().notes
    assert not any("within each level" in note for note in by_notes)
    oats = fits(REFERENCE["oats_int/reml/Variety|nitro/satterthwaite"])
    assert any("within each level of nitro" in note for note in oats.emmeans("Variety", by="nitro").pairs().notes)


def test_by_does_not_depend_on_row_order_or_coding():
    data = rl.datasets.oats()
    m = rl.lmer("yield ~ C(nitro) * Variety + (1|Block/Variety)", data)
    shuffled = data.sample(frac=1.0, random_state=3)
    m2 = rl.lmer("yield ~ C(nitro, Sum) * C(Variety, Sum) + (1|Block/Variety)", shuffled)
    a = m.emmeans("Variety", by="nitro").pairs(adjust="holm").table
    b = m2.emmeans("Variety", by="nitro").pairs(adjust="holm").table
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)


@pytest.mark.parametrize(("spec", "by", "message"), [
    ("Variety", "Variety", "the variable of the means itself"),
    ("Variety", "yield", "not a variable of the fixed part"),
    ("Variety", 3, "as a string"),
])
def test_bad_by_is_refused(spec, by, message):
    m = rl.lmer("yield ~ C(nitro) * Variety + (1|Block)", rl.datasets.oats())
    with pytest.raises(ModelDataError, match=message):
        m.emmeans(spec, by=by)
    with pytest.raises(ModelDataError, match="give one of them"):
        m.emmeans("Variety | nitro", by="nitro")


def test_contrast_weights_per_level_of_by_are_checked():
    m = rl.lmer("yield ~ C(nitro) * Variety + (1|Block)", rl.datasets.oats())
    emm = m.emmeans("Variety", by="nitro")
    with pytest.raises(ModelDataError, match="has 2 weights"):
        emm.contrast({"c": [1, -1]})
    with pytest.raises(ValueError, match="'holm'"):
        emm.contrast({"c": [1, -1, 0]}, adjust="tukey")
