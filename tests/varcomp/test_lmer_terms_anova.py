"""Likelihood-ratio tests between nested fits with several random terms, against lme4's
``anova()`` (tests/data/terms_front/anova.json, from make_terms_front_reference.R)."""

from __future__ import annotations

import json

import pytest
from varcomp.lmer_terms_cases import TERMS_FRONT, multi_data, multi_fit

import reml_engine as rl


def anova_reference() -> dict:
    with open(TERMS_FRONT / "anova.json") as fh:
        return json.load(fh)


def check_table(result, expected) -> None:
    table = result.table
    assert list(table["npar"]) == expected["npar"]
    for column in ("AIC", "BIC", "logLik", "deviance"):
        assert list(table[column]) == pytest.approx(expected[column], abs=1e-5)
    assert table["Chisq"].iloc[1] == pytest.approx(expected["Chisq"], abs=1e-5)
    assert table["Df"].iloc[1] == expected["Df"]
    assert table["p_value"].iloc[1] == pytest.approx(expected["p"], rel=1e-4)


def test_adding_a_crossed_term():
    """(1|subj) (the one-term fit) against (1|subj) + (1|item), both ML."""
    data = multi_data("sim_subjects_items")
    expected = anova_reference()["add_item"]
    one = rl.lmer(expected["models"][0], data, REML=False)
    both = multi_fit("sim_subjects_items", False)
    result = rl.anova(both, one)
    check_table(result, expected)
    # The added variance is on the boundary under the null: the mixture p-value too.
    assert result.table["p_mixture"].iloc[1] == pytest.approx(0.5 * expected["p"], rel=1e-4)
    assert any("adds only the random term item" in n for n in result.notes)


def test_dropping_a_fixed_effect():
    data = multi_data("sim_subjects_items")
    expected = anova_reference()["drop_cond"]
    reduced = rl.lmer(expected["models"][0], data, REML=False)
    result = rl.anova(reduced, multi_fit("sim_subjects_items", False))
    check_table(result, expected)
    assert "p_mixture" not in result.table.columns


def test_reml_fits_are_refitted_by_ml_at_the_global_optimum():
    data = multi_data("pastes")
    result = rl.anova(rl.lmer("strength ~ 1 + (1|batch)", data), multi_fit("pastes", True))
    refit = result.models[1]
    assert not refit.REML
    assert refit.criterion == pytest.approx(multi_fit("pastes", False).criterion, abs=1e-9)
    assert "refitting 2 REML fit(s) with ML" in result.notes[0]
