"""rl.lmer's front end for several random-intercept terms: which engine fits what, the
model being the one written whatever the row order, dtypes or index, the refusals, and
the immutability of the fit."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from varcomp.lmer_terms_cases import multi_data, multi_fit

import reml_engine as rl
from reml_engine.core.fitting import fit_design
from reml_engine.core.terms_results import TermsFit
from reml_engine.frontend.design import build_design
from reml_engine.frontend.formula import count_random_terms, random_term_specs
from reml_engine.scaleout.chunked import lmer_chunks

# -- which formulas go where ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "names"),
    [
        ("y ~ x + (1|a) + (1|b)", ["a", "b"]),
        ("y ~ (1|a/b)", ["b:a", "a"]),
        ("y ~ (1|a/b/c)", ["c:(b:a)", "b:a", "a"]),
        ("y ~ (1|a/b/c) + (1|d)", ["c:(b:a)", "b:a", "a", "d"]),
        ("y ~ x + (1|a:b) + (1|c)", ["a:b", "c"]),
        ("y ~ (1|school/class) + (1 | rater) + x", ["class:school", "school", "rater"]),
        ("y ~ (1|factor(a)) + (1||b)", ["a", "b"]),
    ],
)
def test_term_names_as_lme4(formula, names):
    """lme4 names (1|a/b/c) 'c:(b:a)', 'b:a', 'a', in findbars' order (checked with R,
    lme4 1.1-31: ``findbars(y ~ (1|a/b/c) + (1|d))``)."""
    assert [t.name for t in random_term_specs(formula)] == names
    assert count_random_terms(formula) == len(names)


def _tied_levels_data() -> pd.DataFrame:
    """a and b with 6 levels, c with 4 (crossed); vr constant within school (vr:school
    has as many levels as school)."""
    rows = np.arange(48)
    school = np.array([f"s{i}" for i in rows // 8 + 1])
    return pd.DataFrame({
        "a": rows // 8, "b": rows % 6, "c": rows % 4, "school": school,
        "vr": np.where((rows // 8) % 2 == 0, "hi", "lo"),
        "y": np.sin(rows * 1.3) + np.cos(rows // 8 * 2.1) + 0.5 * np.cos(rows % 6 * 0.7),
    })


@pytest.mark.parametrize(
    ("formula", "names"),
    [
        # lme4 1.1-31 (getME(m, "theta") names): a term with more levels after a smaller one
        # makes mkReTrms take rev(order(nl)), so the tied a and b come in reverse order.
        ("y ~ (1|c) + (1|a) + (1|b)", ["b", "a", "c"]),
        ("y ~ (1|a) + (1|c) + (1|b)", ["b", "a", "c"]),
        ("y ~ (1|a) + (1|b) + (1|c)", ["a", "b", "c"]),
        # Already non-increasing in findbars' order: kept.
        ("y ~ (1|school/vr)", ["vr:school", "school"]),
        ("y ~ (1|vr:school) + (1|school)", ["vr:school", "school"]),
        ("y ~ (1|school) + (1|vr:school)", ["school", "vr:school"]),
    ],
)
def test_terms_tied_in_levels_are_in_lme4s_order(formula, names):
    """Regression: ties were kept in the formula's order with a/b expanded a, b:a, where
    lme4 expands b:a, a and reverses ties when it reorders (found on mlmRev's Exam with
    (1|school/vr), vr a school-level factor)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = rl.lmer(formula, _tied_levels_data().astype({"a": str, "b": str, "c": str}))
    assert list(m.term_names) == names
    assert list(m.variances.index) == names


def test_terms_grouping_the_rows_alike_are_named_in_a_warning():
    """Regression: (1|school/vr) with vr constant within school fitted a split of one
    identified variance silently (found on mlmRev's Exam; lme4 warns of a degenerate
    Hessian). Terms that only tie in levels, or differ in one row, give no warning."""
    data = _tied_levels_data()
    with pytest.warns(rl.ModelDataWarning, match=r"'vr:school' and 'school' group the rows the same way "
                                                 r"\(6 levels each"):
        rl.lmer("y ~ (1|school/vr)", data)
    # From chunks, the statistics' contingency tables tell the same.
    with pytest.warns(rl.ModelDataWarning, match=r"'vr:school' and 'school' group the rows the same way"):
        lmer_chunks("y ~ (1|school/vr)", [data.iloc[:20], data.iloc[20:]], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rl.ModelDataWarning)
        rl.lmer("y ~ (1|a) + (1|b) + (1|c)", data.astype({"a": str, "b": str, "c": str}))
        one_row_moved = data.assign(vr=data["vr"].where(data.index != 0, "lo"))
        rl.lmer("y ~ (1|school/vr)", one_row_moved)


@pytest.mark.parametrize("formula", ["y ~ x + (x|f) + (1|g)", "y ~ (0 + x|f) + (1|g)", "y ~ (1 + x|f/g)",
                                     "y ~ x + (x|f)"])
def test_random_slopes_are_refused_with_the_alternatives(formula):
    data = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [1.0, 2, 3, 5], "f": [1, 1, 2, 2], "g": [1, 2, 1, 2]})
    with pytest.raises(rl.ModelDataError, match="random slopes are out of scope") as err:
        rl.lmer(formula, data)
    assert "within(x) + between(x)" in str(err.value) and "lme4" in str(err.value)


def test_duplicate_grouping_is_refused():
    data = multi_data("pastes")
    with pytest.raises(rl.ModelDataError, match="groups by batch twice"):
        rl.lmer("strength ~ (1|batch) + (1|batch/cask)", data)


def test_one_term_formulas_keep_the_single_term_fit():
    """Same object type and the very same numbers as the one-term chain run by hand."""
    seed = rl.load_seed()
    m = rl.lmer("y ~ x + (1|f)", seed)
    assert type(m) is rl.LmerFit
    by_hand = fit_design(build_design("y ~ x + (1|f)", seed))
    assert m.criterion == by_hand.criterion and m.tau == by_hand.tau
    pd.testing.assert_series_equal(m.fixef, by_hand.fixef)
    assert round(m.criterion, 4) == 16.1726  # the package docstring's value
    # (1|a:b) is one term too.
    seed2 = seed.assign(h=seed["f"] % 2)
    assert type(rl.lmer("y ~ x + (1|f:h)", seed2)) is rl.LmerFit


def test_several_terms_from_chunks_go_through_the_engine():
    """Chunks of a nested model are fitted from merged statistics (no longer refused):
    the in-memory fit without the rows (tests/scaleout/test_terms_chunked.py in full)."""
    data = multi_data("pastes")
    chunked = rl.lmer("strength ~ 1 + (1|batch/cask)", [data.iloc[:30], data.iloc[30:]])
    memory = rl.lmer("strength ~ 1 + (1|batch/cask)", data)
    assert isinstance(chunked, TermsFit) and chunked.fitted is None
    assert chunked.criterion == pytest.approx(memory.criterion, rel=1e-10)


def test_within_between_refused_with_several_terms():
    data = multi_data("sim_crossed_seedlike")
    with pytest.raises(rl.ModelDataError, match="within\\(\\), which centres on the model's one grouping factor"):
        rl.lmer("y ~ within(x) + (1|subj) + (1|item)", data)


# -- the same model whatever the form of the data --------------------------------------------


def _same_fit(a: TermsFit, b: TermsFit) -> None:
    assert a.term_names == b.term_names
    assert a.criterion == pytest.approx(b.criterion, abs=1e-8)
    np.testing.assert_allclose(a.tau, b.tau, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(a.fixef, b.fixef.loc[a.fixef.index], rtol=1e-6, atol=1e-10)
    assert len(a.optima) == len(b.optima)
    for name in a.term_names:
        ra, rb = a.ranef[name], b.ranef[name]
        assert list(map(str, ra.index)) == list(map(str, rb.index))
        np.testing.assert_allclose(ra.to_numpy(), rb.to_numpy(), rtol=1e-5, atol=1e-8)


def test_shuffled_rows_and_other_dtypes_give_the_same_fit():
    """The seed-like case (two optima) with its rows shuffled, a non-default index, the
    grouping columns as categorical and object: the same fit, both optima."""
    data = multi_data("sim_crossed_seedlike")
    reference = multi_fit("sim_crossed_seedlike", True)
    rng = np.random.default_rng(12)
    order = rng.permutation(len(data))
    shuffled = data.iloc[order].copy()
    shuffled.index = pd.Index([f"row{i}" for i in rng.permutation(len(data))])
    shuffled["subj"] = shuffled["subj"].astype("category")
    shuffled["item"] = shuffled["item"].astype(object)
    m = rl.lmer("y ~ x + (1|subj) + (1|item)", shuffled)
    _same_fit(reference, m)
    assert m.fitted.index.equals(shuffled.index)
    np.testing.assert_allclose(m.fitted.to_numpy(), reference.fitted.to_numpy()[order], rtol=1e-6)


def test_fitted_follow_the_rows_given():
    data = multi_data("pastes")
    order = np.random.default_rng(3).permutation(len(data))
    shuffled = data.iloc[order]
    m0 = multi_fit("pastes", True)
    m1 = rl.lmer("strength ~ 1 + (1 | batch/cask)", shuffled)
    _same_fit(m0, m1)
    np.testing.assert_allclose(m1.fitted.to_numpy(), m0.fitted.to_numpy()[order], rtol=1e-9)
    assert m1.fitted.index.equals(shuffled.index)


def test_integer_labels_and_interaction_written_out():
    """Grouping columns as integers, and (1|batch) + (1|cask:batch) written out, are
    the model (1|batch/cask) on text labels."""
    data = multi_data("pastes")
    codes = data.assign(batch=data["batch"].map(ord), cask=data["cask"].map(ord))
    m = rl.lmer("strength ~ 1 + (1|batch) + (1|cask:batch)", codes)
    ref = multi_fit("pastes", True)
    assert set(m.term_names) == {"cask:batch", "batch"}
    assert m.term_names == ref.term_names  # lme4's order: decreasing levels
    assert m.criterion == pytest.approx(ref.criterion, abs=1e-8)
    np.testing.assert_allclose(m.variances, ref.variances, rtol=1e-6)


# -- missing values ---------------------------------------------------------------------------


def test_missing_values_drop_rows_with_the_single_term_wording():
    data = multi_data("pastes").copy()
    data.loc[3, "strength"] = np.nan
    data.loc[7, "cask"] = None
    with pytest.warns(rl.ModelDataWarning) as several:
        m = rl.lmer("strength ~ 1 + (1|batch/cask)", data)
    with pytest.warns(rl.ModelDataWarning) as one:
        rl.lmer("strength ~ 1 + (1|cask)", data)
    text = [str(w.message) for w in several if "dropped" in str(w.message)]
    assert text == ["dropped 2 of 60 rows with missing values ('cask': 1, 'strength': 1)"]
    assert text == [str(w.message) for w in one if "dropped" in str(w.message)]
    assert m.nobs == 58
    assert m.fitted.index.equals(data.index) and m.fitted.isna().sum() == 2
    with pytest.raises(rl.ModelDataError, match="missing values in 2 rows"):
        rl.lmer("strength ~ 1 + (1|batch/cask)", data, na_action="raise")


def test_grouping_factor_with_one_level_is_refused():
    data = multi_data("pastes").assign(one="z")
    with pytest.raises(rl.ModelDataError, match="grouping factor 'one' has 1 level"):
        rl.lmer("strength ~ 1 + (1|batch) + (1|one)", data)


def test_rank_deficient_columns_are_dropped_as_lme4():
    data = multi_data("sim_crossed_seedlike").copy()
    data["x2"] = 2.0 * data["x"] + 1.0
    with pytest.warns(rl.ModelDataWarning, match="dropping 1 column: 'x2'"):
        m = rl.lmer("y ~ x + x2 + (1|subj) + (1|item)", data)
    assert m.dropped_columns == ("x2",)
    ref = multi_fit("sim_crossed_seedlike", True)
    assert m.criterion == pytest.approx(ref.criterion, abs=1e-8)


# -- immutability ---------------------------------------------------------------------------


def test_nothing_handed_out_changes_the_fit():
    m = multi_fit("sim_crossed_seedlike", True)
    before = (m.criterion, m.fixef.copy(), m.ranef["subj"].copy(), m.vcov.copy(), m.ngroups.copy())
    fixef, ranef, vcov, ngroups, other = m.fixef, m.ranef, m.vcov, m.ngroups, m.optima[1].fixef
    fixef.iloc[0] = 99.0
    ranef["subj"].iloc[0, 0] = 99.0
    ranef.pop("item")
    vcov.iloc[0, 0] = 99.0
    ngroups.iloc[0] = 0
    other.iloc[0] = 99.0
    with pytest.raises(ValueError):
        m.tau[0] = 1.0
    with pytest.raises(AttributeError):
        m.sigma2 = 1.0
    pd.testing.assert_series_equal(m.fixef, before[1])
    pd.testing.assert_frame_equal(m.ranef["subj"], before[2])
    pd.testing.assert_frame_equal(m.vcov, before[3])
    pd.testing.assert_series_equal(m.ngroups, before[4])
    assert m.optima[1].fixef.iloc[0] != 99.0 and "item" in m.ranef
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.predict(pd.DataFrame({"x": [0.0], "subj": ["s1"], "item": ["i9"]}))
    assert m.criterion == before[0]


def test_coef_is_fixef_plus_modes():
    m = multi_fit("sim_crossed_seedlike", True)
    coef = m.coef()["subj"]
    np.testing.assert_allclose(coef["(Intercept)"], m.fixef["(Intercept)"] + m.ranef["subj"]["mode"])
    assert (coef["x"] == m.fixef["x"]).all()
    assert re.search(r"subj\s+\(Intercept\)", m.summary())


def test_simulate_has_the_model_covariance():
    """Rows in one cask share var(cask:batch) + var(batch), rows of one batch in two casks
    var(batch), rows of two batches nothing; each row has that plus sigma2 / w."""
    m = multi_fit("pastes", True)
    data = multi_data("pastes")
    sims = m.simulate(20000, seed=1).to_numpy()
    assert sims.shape == (60, 20000)
    cov = np.cov(sims)
    var_cask, var_batch = m.variances["cask:batch"], m.variances["batch"]
    total = var_cask + var_batch + m.sigma2
    same_cask = np.flatnonzero((data["batch"] == data["batch"][0]) & (data["cask"] == data["cask"][0]))
    other_cask = np.flatnonzero((data["batch"] == data["batch"][0]) & (data["cask"] != data["cask"][0]))
    other_batch = np.flatnonzero(data["batch"] != data["batch"][0])
    # Monte Carlo error of a covariance from 20000 draws: about total * sqrt(2 / 20000) = 0.01 total.
    tol = 0.05 * total
    assert np.diag(cov).mean() == pytest.approx(total, abs=tol / 5)
    assert cov[same_cask[0], same_cask[1]] == pytest.approx(var_cask + var_batch, abs=tol)
    assert cov[same_cask[0], other_cask[0]] == pytest.approx(var_batch, abs=tol)
    assert cov[same_cask[0], other_batch[0]] == pytest.approx(0.0, abs=tol)
    np.testing.assert_allclose(sims.mean(axis=1), m.fixef["(Intercept)"], atol=0.05 * total)
    held = m.simulate(3, seed=1, re=True)
    assert held.index.equals(data.index)
    with pytest.raises(ValueError, match="nsim"):
        m.simulate(0)
    pd.testing.assert_frame_equal(m.simulate(2, seed=7), m.simulate(2, seed=7))


def test_simulate_with_weights_and_offset():
    """Row i has variance var(cask:batch) + var(batch) + sigma2 / w_i and mean the fixed
    part plus its offset."""
    from varcomp.lmer_terms_cases import front_data, front_fit

    m = front_fit("pastes_wz", True)
    data = front_data("pastes_wz")
    sims = m.simulate(20000, seed=3).to_numpy()
    expected_var = m.variances.sum() + m.sigma2 / data["w"].to_numpy()
    np.testing.assert_allclose(sims.var(axis=1), expected_var, rtol=0.06)
    np.testing.assert_allclose(sims.mean(axis=1), m.fixef["(Intercept)"] + data["z"], atol=0.1)


def test_statsmodels_names_are_the_same_quantities():
    m = multi_fit("pastes", True)
    pd.testing.assert_series_equal(m.params, m.fixef)
    pd.testing.assert_series_equal(m.bse, m.se)
    assert m.llf == m.loglik and m.scale == m.sigma2
    np.testing.assert_allclose(m.tvalues, m.fixef / m.se)
    pd.testing.assert_series_equal(m.fittedvalues, m.fitted)
    # As the one-term fits' mixin (core/result_names.py): the modes per term, by level.
    pd.testing.assert_series_equal(m.random_effects["batch"], m.ranef["batch"]["mode"])
