"""compare_fe_re: every row against lm, lmer, nlme::gls values computed in R."""

from __future__ import annotations

import pytest
from reference_data import case_data, case_formula, load_extra_reference, load_reference

import reml_engine as rl

#: lme4's and nlme's optimizers stop at a relative precision around 1e-7.
RTOL_R = 1e-6
#: lm values (closed form in R and here).
RTOL_LM = 1e-10

CASES = [("seed", "seed_x"), ("sim_contextual", "sim_contextual")]


@pytest.fixture(scope="module")
def tables():
    return {case: rl.compare_fe_re(case_formula(case), case_data(case)).set_index("estimator")
            for _, case in CASES}


@pytest.mark.parametrize(("key", "case"), CASES)
def test_least_squares_rows_match_lm(tables, key, case):
    ref = load_extra_reference()["within_fe"][key]
    table = tables[case]
    for row, name in (("pooled OLS", "pooled"), ("between", "between"), ("within (fixed effects)", "within")):
        assert table.loc[row, "coef"] == pytest.approx(ref[name]["coef"], rel=RTOL_LM)
        assert table.loc[row, "se"] == pytest.approx(ref[name]["se"], rel=RTOL_LM)
    assert table.loc["within (fixed effects)", "sigma2"] == pytest.approx(ref["within"]["sigma"] ** 2, rel=RTOL_LM)


@pytest.mark.parametrize(("key", "case"), CASES)
def test_random_intercept_rows_match_lmer_and_mark_lme4s_optimum(tables, key, case):
    ref = load_reference()[case]
    table = tables[case]
    best = table.loc["random intercept, global optimum"]
    assert best["coef"] == pytest.approx(ref["reml"]["fixef"]["x"], rel=RTOL_R)
    assert best["se"] == pytest.approx(ref["reml"]["se"]["x"], rel=RTOL_R)
    assert best["var_group"] == pytest.approx(ref["reml"]["var_group"], rel=1e-4)
    assert best["sigma2"] == pytest.approx(ref["reml"]["sigma2"], rel=1e-4)
    assert best["criterion"] == pytest.approx(ref["reml"]["criterion"], rel=RTOL_R)
    assert not best["lme4_default"]
    default = table.loc["random intercept, local optimum"]
    assert default["lme4_default"]
    assert default["coef"] == pytest.approx(ref["reml_lme4_default"]["fixef"]["x"], rel=RTOL_R)
    assert default["se"] == pytest.approx(ref["reml_lme4_default"]["se"]["x"], rel=RTOL_R)
    assert default["criterion"] == pytest.approx(ref["reml_lme4_default"]["criterion"], rel=RTOL_R)
    # The pooled fit is the model at var_group = 0: same slope and criterion as lme4's boundary fit.
    assert table.loc["pooled OLS", "criterion"] == pytest.approx(ref["reml_lme4_default"]["criterion"], rel=RTOL_R)


def test_compound_symmetry_row_matches_gls():
    ref = load_reference()["seed_x"]["gls_cs"]
    row = rl.compare_fe_re("y ~ x + (1|f)", case_data("seed_x")).set_index("estimator").loc["compound symmetry"]
    assert row["coef"] == pytest.approx(ref["coef"]["x"], rel=1e-5)
    assert row["se"] == pytest.approx(ref["se"]["x"], rel=1e-5)
    assert row["icc"] == pytest.approx(ref["rho"], rel=1e-5)
    assert row["var_group"] + row["sigma2"] == pytest.approx(ref["sigma2"], rel=1e-5)
    assert row["criterion"] == pytest.approx(-2 * ref["loglik"], rel=RTOL_R)


def test_compound_symmetry_row_is_no_worse_than_gls():
    # nlme's optimizer stops at a local optimum here (rho -0.19); ours is the global one.
    ref = load_reference()["sim_contextual"]["gls_cs"]
    row = rl.compare_fe_re("y ~ x + (1|g)", case_data("sim_contextual")).set_index("estimator")
    assert row.loc["compound symmetry", "criterion"] <= -2 * ref["loglik"]


@pytest.mark.parametrize(("key", "case"), CASES)
def test_within_between_row_has_the_within_slope(tables, key, case):
    ref = load_extra_reference()
    row = tables[case].loc["within-between"]
    assert row["coef"] == pytest.approx(ref["within_fe"][key]["within"]["coef"], rel=RTOL_R)
    if key == "seed":
        wb = load_reference()["seed_within_between"]["reml"]
        assert row["se"] == pytest.approx(wb["se"]["x_w"], rel=RTOL_R)
        assert row["criterion"] == pytest.approx(wb["criterion"], rel=RTOL_R)
    else:
        x_w = next(r for r in ref["mundlak"]["sim_contextual_within_between"]["coefficients"] if r["term"] == "x_w")
        assert row["se"] == pytest.approx(x_w["se"], rel=RTOL_R)


def test_term_must_vary_within_groups():
    data = case_data("seed_x")
    with pytest.raises(ValueError, match="varies within groups|vary within groups"):
        rl.compare_fe_re("y ~ x + x_b + (1|f)", data, term="x_b")


def test_readme_quotes_the_librarys_numbers():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = rl.compare_fe_re("y ~ x + (1|f)", rl.load_seed())[["estimator", "coef", "se"]].round(4)
    assert table.to_string(index=False) + "\n```" in readme
    seed = rl.load_seed()
    assert f"chi2(1) = {rl.hausman('y ~ x + (1|f)', seed).statistic:.4g}" in readme
    mundlak = rl.mundlak("y ~ x + (1|f)", seed)
    assert f"F(1, {mundlak.den_df:.4g}) = {mundlak.f_statistic:.4g}, p = {mundlak.p_value:.4g}" in readme
    assert "p = 0.03775" in str(rl.hausman("y ~ x + (1|f)", seed))
