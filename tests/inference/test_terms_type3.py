"""Type III tables of fits with several random-intercept terms (issue 12).

Reference: lmerTest's ``anova(m, type = 3)`` with Satterthwaite's and Kenward-Roger's df
(``tests/data/multi/type3_reference.json``, ``tests/data/r/make_terms_type3_reference.R``)
for nlme's Oats (a factor x factor and a factor x numeric interaction), lme4's cake (an
ordered factor, coded by contr.poly in R), mlmRev's ScotsSec (crossed schools, one term at
variance 0), the school x intake x sex cells of mlmRev's Exam (a numeric x factor
interaction, unbalanced; the example of docs/several_terms.md; and weighted by the cells'
sizes, Satterthwaite only) and a simulated crossed subjects x items design, REML and ML. Each table is
compared only after checking that lme4 stopped at the engine's optimum (criterion and
theta), so that the two tables are of the same fit.

Invariances that hold whatever the reference: the order of the rows, the coding of the
factors (treatment, sum or polynomial contrasts give the same type III table), and a model
with one random term gives the same table on the several-term path (``TermsFit``, reached
with prior weights) as on the one-term path (``LmerFit``).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core.results import LmerFit
from reml_engine.core.terms_results import TermsFit

MULTI = Path(__file__).parent.parent / "data" / "multi"
REFERENCE = json.loads((MULTI / "type3_reference.json").read_text())
CASES = sorted(name for name in REFERENCE if not name.startswith("_"))
#: Grouping and factor columns of the case files, read as text.
TEXT_COLUMNS = ("Block", "Variety", "replicate", "recipe", "sex", "primary", "second", "school", "intake", "subj",
                "item", "A", "B")
COLUMNS = ["sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value"]

#: lme4's REML criterion (deviance for ML) against the engine's: the R script fits with
#: tight optimizer tolerances, and lme4 lands within 1e-10 of the engine's optimum.
SAME_OPTIMUM_ATOL = 1e-8
#: theta (sd_j / sigma) of lme4 against the engine's, at the same optimum (they agree to
#: a few 1e-8).
THETA_ATOL = 1e-6
#: The tables: F, df and sums of squares agree to 2e-7 relative, p-values to 3e-6 (both
#: sides take the df from numerical derivatives of the criterion).
TABLE_RTOL = 1e-5
#: p-values below this are compared absolutely (ScotsSec's verbal: 0 in R's double).
P_ATOL = 1e-12
#: Two fits of the same model and rows that differ only in how the rows were given (row
#: order, chunks): their optima agree to the optimizer's refinement, and the df take
#: numerical derivatives there.
SAME_TABLE_RTOL = 1e-6
#: The same fit in two codings: F, df and p do not depend on the coding at all.
CODING_RTOL = 1e-7


def _terms(label: str) -> str:
    """R's and formulaic's labels of one term, spelled alike (``factor(x)`` is ``C(x)``,
    ``C(x, contr.poly)`` is ``x``)."""
    return re.sub(r"factor\(|C\(|, contr\.\w+\)|\)", "", label)


def _data(name: str) -> pd.DataFrame:
    file = REFERENCE[name]["file"]
    return pd.read_csv(MULTI / file, dtype={c: str for c in TEXT_COLUMNS})


def _lmer(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ScotsSec's second-school term sits at 0
        return rl.lmer(formula, data, **kwargs)


_FITS: dict = {}


def _fit(name: str, REML: bool = True):
    key = (name, REML)
    if key not in _FITS:
        case = REFERENCE[name]
        _FITS[key] = _lmer(case["python_formula"], _data(name), REML=REML, contrasts=case.get("python_contrasts"),
                           weights=case.get("weights"))
    return _FITS[key]


def _reference_table(rows: dict) -> pd.DataFrame:
    table = pd.DataFrame(rows).set_index("term")
    table.index = [_terms(t) for t in table.index]
    return table


def _check_table(got: pd.DataFrame, expected: pd.DataFrame, rtol: float) -> None:
    got = got.rename(index=_terms)
    assert sorted(got.index) == sorted(expected.index)
    for term, row in expected.iterrows():
        assert got.loc[term, "num_df"] == row["num_df"], term
        for column in ("sum_sq", "mean_sq", "den_df", "f_value"):
            assert got.loc[term, column] == pytest.approx(row[column], rel=rtol), (term, column)
        assert got.loc[term, "p_value"] == pytest.approx(row["p_value"], rel=rtol, abs=P_ATOL), term


def _fits_and_methods():
    for name in CASES:
        slow = [pytest.mark.slow] if REFERENCE[name]["reml"]["nobs"] > 1000 else []
        for side in ("reml", "ml"):
            if side not in REFERENCE[name]:
                continue
            for method in ("satterthwaite", "kenward_roger"):
                if method in REFERENCE[name][side]:
                    yield pytest.param(name, side, method, id=f"{name}-{side}-{method}", marks=slow)


@pytest.mark.reference
@pytest.mark.parametrize(("name", "side", "method"), list(_fits_and_methods()))
def test_type3_table_matches_lmertest(name, side, method):
    ref = REFERENCE[name][side]
    m = _fit(name, REML=side == "reml")
    assert isinstance(m, TermsFit)
    # The same fit first: lme4's default start reached the engine's optimum.
    assert m.criterion == pytest.approx(ref["criterion"], abs=SAME_OPTIMUM_ATOL)
    np.testing.assert_allclose(np.sqrt(m.tau), ref["theta"], atol=THETA_ATOL)
    _check_table(m.anova(method), _reference_table(ref[method]), TABLE_RTOL)


def test_type3_table_does_not_depend_on_the_order_of_the_rows():
    data = _data("sim_crossed")
    formula = REFERENCE["sim_crossed"]["python_formula"]
    shuffled = data.sample(frac=1.0, random_state=3)
    for ddf in ("satterthwaite", "kenward-roger"):
        pd.testing.assert_frame_equal(_lmer(formula, shuffled).anova(ddf), _fit("sim_crossed").anova(ddf),
                                      rtol=SAME_TABLE_RTOL)


@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward-roger"])
def test_type3_table_does_not_depend_on_the_coding_of_the_factors(ddf):
    formula = REFERENCE["sim_crossed"]["python_formula"]
    treatment = _fit("sim_crossed").anova(ddf)
    summed = _lmer(formula, _data("sim_crossed"), contrasts={"A": "contr.sum", "B": "contr.sum"})
    assert not np.allclose(summed.fixef.to_numpy(), _fit("sim_crossed").fixef.to_numpy())  # another coding
    table = summed.anova(ddf).rename(index=_terms)  # C(A, contr.sum) is A
    pd.testing.assert_frame_equal(table[["num_df", "den_df", "f_value", "p_value"]],
                                  treatment[["num_df", "den_df", "f_value", "p_value"]], rtol=CODING_RTOL)


def test_cake_in_treatment_coding_gives_rs_polynomial_table():
    """R codes the ordered temperature by contr.poly; the engine's treatment coding of the
    same factor gives lmerTest's table (another REML criterion: log|X'V^-1X| depends on
    the coding, the optimum in theta does not)."""
    ref = REFERENCE["cake"]["reml"]
    treatment = _lmer(REFERENCE["cake"]["python_formula"], _data("cake"))
    np.testing.assert_allclose(np.sqrt(treatment.tau), ref["theta"], atol=THETA_ATOL)
    for method in ("satterthwaite", "kenward_roger"):
        _check_table(treatment.anova(method), _reference_table(ref[method]), TABLE_RTOL)


@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward-roger", "residual"])
def test_one_term_on_the_several_term_path_gives_the_one_term_table(ddf):
    """Unit prior weights send a one-term model to the several-term engine (TermsFit, df
    from numerical derivatives or a dense V); without them it is an LmerFit (closed
    forms). Both give the same table."""
    data = _data("oats_numeric")
    formula = "yield ~ Variety * nitro + (1|Block)"
    one = _lmer(formula, data)
    several = _lmer(formula, data, weights=np.ones(len(data)))
    assert isinstance(one, LmerFit) and isinstance(several, TermsFit)
    pd.testing.assert_frame_equal(several.anova(ddf), one.anova(ddf), rtol=SAME_TABLE_RTOL)


def test_ddf_is_validated_also_without_terms():
    m = _fit("oats_numeric")
    with pytest.raises(ValueError, match="ddf must be one of satterthwaite, kenward-roger, residual; got 'KR2'"):
        m.anova("KR2")
    empty = _lmer("yield ~ 1 + (1|Block/Variety)", _data("oats_numeric"))
    assert empty.anova().shape == (0, len(COLUMNS)) and list(empty.anova().columns) == COLUMNS
    with pytest.raises(ValueError, match="ddf must be one of"):
        empty.anova("between-within")
    assert m.anova("KR").equals(m.anova("kenward-roger"))  # lmerTest's spellings are aliases


def test_kenward_roger_is_refused_for_ml_and_for_too_many_rows(monkeypatch):
    with pytest.raises(ValueError, match="needs a REML fit"):
        _fit("oats_numeric", REML=False).anova("kenward-roger")
    from reml_engine.inference import terms_kenward_roger

    monkeypatch.setattr(terms_kenward_roger, "KR_MAX_NOBS", 50)
    fresh = _lmer(REFERENCE["oats_numeric"]["python_formula"], _data("oats_numeric"))
    with pytest.raises(ValueError, match="this fit has 72 rows, more than KR_MAX_NOBS = 50"):
        fresh.anova("kenward-roger")
    assert len(fresh.anova("satterthwaite")) == 3


def test_anova_leaves_the_fit_as_it_was():
    m = _lmer(REFERENCE["oats_factor"]["python_formula"], _data("oats_factor"))
    fixef, vcov = m.fixef, m.vcov
    table = m.anova()
    table.iloc[:, :] = 0.0
    pd.testing.assert_series_equal(m.fixef, fixef)
    pd.testing.assert_frame_equal(m.vcov, vcov)
    assert (m.anova()["f_value"] > 0).all()
