"""statsmodels', broom's and lme4's names of a fit (issue 14), against lme4/lmerTest
(tests/data/reference/names_reference.json, written by tests/data/r/make_names_reference.R)
and statsmodels' MixedLM run on the same data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "reference" / "names_reference.json").read_text())
#: lme4 stops its optimizer at ~1e-6 relative in theta; the estimates agree to this.
LME4_RTOL = 2e-5
#: Satterthwaite df and p-values go through numerical derivatives in lmerTest.
DF_RTOL = 1e-4
#: statsmodels' MixedLM optimizer tolerance.
STATSMODELS_RTOL = 1e-4

CASES = {
    "sleepstudy_reml": ("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy, True),
    "sleepstudy_ml": ("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy, False),
    "dyestuff_reml": ("Yield ~ 1 + (1|Batch)", rl.datasets.dyestuff, True),
    "orthodont_reml": ("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont, True),
}


def _lme4_names(names) -> list[str]:
    """formulaic's ``Sex[T.Female]`` is lme4's ``SexFemale``."""
    return [n.replace("[T.", "").replace("]", "") for n in names]


@pytest.fixture(scope="module")
def fits():
    return {name: rl.lmer(formula, data(), REML=REML) for name, (formula, data, REML) in CASES.items()}


def _series(values: dict) -> pd.Series:
    return pd.Series(values, dtype=float)


def _values(values) -> np.ndarray:
    """R's named vector (a dict in the JSON) or its one unnamed value."""
    return np.atleast_1d(np.asarray(list(values.values()) if isinstance(values, dict) else values, dtype=float))


@pytest.mark.parametrize("name", list(CASES))
def test_statsmodels_names_match_lme4_and_lmertest(fits, name):
    m, ref = fits[name], REFERENCE[name]
    assert _lme4_names(m.params.index) == list(ref["params"])
    np.testing.assert_allclose(m.params, _series(ref["params"]), rtol=LME4_RTOL)
    np.testing.assert_allclose(m.bse, _series(ref["bse"]), rtol=LME4_RTOL)
    np.testing.assert_allclose(m.tvalues, _series(ref["tvalues"]), rtol=LME4_RTOL)
    np.testing.assert_allclose(m.pvalues, _series(ref["pvalues"]), rtol=DF_RTOL * 10)
    np.testing.assert_allclose(m.llf, ref["logLik"], rtol=1e-8)
    np.testing.assert_allclose(m.sigma, ref["sigma"], rtol=LME4_RTOL)
    np.testing.assert_allclose(m.scale, ref["sigma"] ** 2, rtol=2 * LME4_RTOL)
    group = next(g for g in ref["variance"] if g != "Residual")
    np.testing.assert_allclose(m.cov_re.to_numpy(), [[ref["variance"][group]]], rtol=10 * LME4_RTOL)
    np.testing.assert_allclose(m.fittedvalues, ref["fitted"], rtol=LME4_RTOL)
    modes = {level: s["Group"] for level, s in m.random_effects.items()}
    np.testing.assert_allclose(_series(modes)[list(ref["ranef"])], _series(ref["ranef"]),
                               rtol=10 * LME4_RTOL, atol=1e-6 * ref["sigma"])


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("alpha", [0.05, 0.10])
def test_conf_int_is_lmertest_t_interval_on_satterthwaite_df(fits, name, alpha):
    m, ref = fits[name], REFERENCE[name]["conf_int_t"][f"{alpha:g}"]
    ci = m.conf_int(alpha)
    assert list(ci.columns) == [0, 1] and list(ci.index) == list(m.fixef.index)
    width = float(np.min(_values(ref["upper"]) - _values(ref["lower"])))
    np.testing.assert_allclose(ci[0], _values(ref["lower"]), rtol=0, atol=1e-4 * width)
    np.testing.assert_allclose(ci[1], _values(ref["upper"]), rtol=0, atol=1e-4 * width)


@pytest.mark.parametrize("name", list(CASES))
def test_conf_int_normal_is_lme4_wald(fits, name):
    m, ref = fits[name], REFERENCE[name]["wald_normal"]
    ci = m.conf_int(0.05, ddf="normal")
    np.testing.assert_allclose(ci[0], ref["2.5 %"], rtol=LME4_RTOL)
    np.testing.assert_allclose(ci[1], ref["97.5 %"], rtol=LME4_RTOL)


@pytest.mark.parametrize("alpha", [0, 1, -0.1, "0.05", True, np.nan])
def test_conf_int_rejects_bad_alpha(fits, alpha):
    with pytest.raises(ValueError, match="alpha"):
        fits["sleepstudy_reml"].conf_int(alpha)


def test_conf_int_rejects_unknown_ddf(fits):
    with pytest.raises(ValueError):
        fits["sleepstudy_reml"].conf_int(ddf="none")


@pytest.mark.parametrize("name", list(CASES))
def test_tidy_is_broom_mixed_layout_with_lmertest_values(fits, name):
    m, ref = fits[name], REFERENCE[name]
    t = m.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std.error", "statistic", "df", "p.value"]
    p = len(ref["params"])
    assert list(t["effect"]) == ["fixed"] * p + ["ran_pars"] * 2
    fixed, ran = t.iloc[:p], t.iloc[p:]
    assert fixed["group"].isna().all()
    assert _lme4_names(fixed["term"]) == list(ref["params"])
    np.testing.assert_allclose(fixed["estimate"], _values(ref["params"]), rtol=LME4_RTOL)
    np.testing.assert_allclose(fixed["std.error"], _values(ref["bse"]), rtol=LME4_RTOL)
    np.testing.assert_allclose(fixed["statistic"], _values(ref["tvalues"]), rtol=LME4_RTOL)
    np.testing.assert_allclose(fixed["df"], _values(ref["df"]), rtol=DF_RTOL)
    np.testing.assert_allclose(fixed["p.value"], _values(ref["pvalues"]), rtol=DF_RTOL * 10)
    assert list(ran["group"]) == list(ref["sd"])
    assert list(ran["term"]) == ["sd__(Intercept)", "sd__Observation"]
    np.testing.assert_allclose(ran["estimate"], list(ref["sd"].values()), rtol=LME4_RTOL)
    assert ran[["std.error", "statistic", "df", "p.value"]].isna().all().all()


@pytest.mark.parametrize("name", list(CASES))
def test_glance_is_broom_mixed_layout_with_lme4_values(fits, name):
    m, ref = fits[name], REFERENCE[name]
    g = m.glance()
    crit = "REMLcrit" if ref["REML"] else "deviance"
    assert list(g.columns) == ["nobs", "sigma", "logLik", "AIC", "BIC", crit, "df.residual"]
    assert len(g) == 1
    row = g.iloc[0]
    assert row["nobs"] == ref["nobs"] and row["df.residual"] == ref["df_residual"]
    for column, key in [("sigma", "sigma"), ("logLik", "logLik"), ("AIC", "AIC"), ("BIC", "BIC"), (crit, crit)]:
        np.testing.assert_allclose(row[column], ref[key], rtol=LME4_RTOL, err_msg=column)


@pytest.mark.parametrize("name", list(CASES))
def test_coef_is_lme4_coef(fits, name):
    m, ref = fits[name], REFERENCE[name]
    c = m.coef()
    # One row per level; R's rows follow its factor's level order, ours the data's.
    assert sorted(str(level) for level in c.index) == sorted(ref["coef_levels"])
    c = c.set_axis([str(level) for level in c.index]).loc[ref["coef_levels"]]
    assert _lme4_names(c.columns) == list(ref["coef"])
    scale = np.abs(np.asarray(_values(ref["params"]))).max()
    np.testing.assert_allclose(c.to_numpy(), np.column_stack(list(ref["coef"].values())), rtol=LME4_RTOL,
                               atol=1e-6 * scale)


def test_coef_without_fixed_intercept_has_the_modes_first():
    """lme4 adds an (Intercept) column holding the modes when the fixed part has none."""
    d = rl.datasets.sleepstudy()
    m = rl.lmer("Reaction ~ 0 + Days + (1|Subject)", d)
    c = m.coef()
    assert list(c.columns) == ["(Intercept)", "Days"]
    np.testing.assert_array_equal(c["(Intercept)"], m.ranef["mode"])
    np.testing.assert_array_equal(c["Days"], m.fixef["Days"])


def test_coef_of_an_array_fit_adds_the_modes_to_its_column_of_ones():
    d = rl.datasets.sleepstudy()
    X = np.column_stack([d["Days"], np.ones(len(d))])
    m = rl.fit(X, d["Reaction"], d["Subject"], names=["Days", "one"])
    formula_fit = rl.lmer("Reaction ~ Days + (1|Subject)", d)
    np.testing.assert_allclose(m.coef()["one"], formula_fit.coef()["(Intercept)"], rtol=1e-10)


def test_fitted_and_resid_are_na_exclude_series():
    """R's na.exclude: fitted() and resid() on every row of the data, NA where dropped."""
    ref = REFERENCE["sleepstudy_na"]
    d = rl.datasets.sleepstudy()
    d.index = pd.RangeIndex(1000, 1000 + len(d))  # labels that are not positions
    rows = [r - 1 for r in ref["na_rows_1based"]]
    d.loc[d.index[rows[:2]], "Reaction"] = np.nan
    d.loc[d.index[rows[2]], "Days"] = np.nan
    with pytest.warns(rl.ModelDataWarning, match="dropped 3 of 180"):
        m = rl.lmer("Reaction ~ Days + (1|Subject)", d)
    np.testing.assert_allclose(m.criterion, ref["REMLcrit"], rtol=1e-8)
    for got, want in [(m.fitted, ref["fitted"]), (m.resid, ref["resid"])]:
        assert isinstance(got, pd.Series) and got.index.equals(d.index)
        want = np.array([np.nan if v is None else v for v in want])
        np.testing.assert_array_equal(np.isnan(got.to_numpy()), np.isnan(want))
        np.testing.assert_allclose(got.dropna(), want[~np.isnan(want)], rtol=LME4_RTOL)


def test_fitted_with_repeated_index_labels():
    """The dropped rows are found by position, not label: repeated labels still align."""
    d = rl.datasets.sleepstudy()
    d.index = pd.Index([0] * len(d))
    d.loc[:, "Reaction"] = d["Reaction"].where(np.arange(len(d)) != 5)
    with pytest.warns(rl.ModelDataWarning):
        m = rl.lmer("Reaction ~ Days + (1|Subject)", d)
    assert np.flatnonzero(m.fitted.isna().to_numpy()).tolist() == [5]
    np.testing.assert_allclose((m.fitted + m.resid).to_numpy(), d["Reaction"].to_numpy(), rtol=1e-12)


def test_returned_objects_do_not_change_the_fit(fits):
    m = fits["sleepstudy_reml"]
    before = (m.fixef.copy(), m.se.copy(), m.fitted.copy(), m.ranef.copy())
    for value in (m.params, m.bse, m.fitted, m.resid, m.fittedvalues):
        value.iloc[0] = -1.0e9
    for frame in (m.cov_re, m.coef(), m.tidy(), m.conf_int()):
        frame.iloc[0, -1] = -1.0e9
    effects = m.random_effects
    effect = effects[next(iter(effects))]
    effect.iloc[0] = -1.0e9
    pd.testing.assert_series_equal(m.fixef, before[0])
    pd.testing.assert_series_equal(m.se, before[1])
    pd.testing.assert_series_equal(m.fitted, before[2])
    pd.testing.assert_frame_equal(m.ranef, before[3])


def test_statsmodels_mixedlm_agrees_on_the_shared_names():
    sm = pytest.importorskip("statsmodels.formula.api")
    d = rl.datasets.sleepstudy()
    m = rl.lmer("Reaction ~ Days + (1|Subject)", d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sm.mixedlm("Reaction ~ Days", d, groups=d["Subject"].astype(str)).fit(reml=True)
    np.testing.assert_allclose(m.params, r.fe_params, rtol=STATSMODELS_RTOL)
    np.testing.assert_allclose(m.bse, r.bse[:2], rtol=STATSMODELS_RTOL)
    np.testing.assert_allclose(m.tvalues, r.tvalues[:2], rtol=STATSMODELS_RTOL)
    np.testing.assert_allclose(m.llf, r.llf, rtol=1e-7)
    np.testing.assert_allclose(m.scale, r.scale, rtol=STATSMODELS_RTOL)
    assert list(m.cov_re.index) == list(r.cov_re.index) == ["Group"]
    np.testing.assert_allclose(m.cov_re, r.cov_re, rtol=STATSMODELS_RTOL)
    np.testing.assert_allclose(m.fittedvalues, r.fittedvalues, rtol=STATSMODELS_RTOL)
    ci, ci_sm = m.conf_int(ddf="normal"), r.conf_int().iloc[:2]
    assert list(ci.columns) == list(ci_sm.columns)
    np.testing.assert_allclose(ci, ci_sm, rtol=STATSMODELS_RTOL)
    assert set(m.random_effects) == set(r.random_effects)
    for level, effect in r.random_effects.items():
        assert list(m.random_effects[level].index) == list(effect.index)
        np.testing.assert_allclose(m.random_effects[level], effect, rtol=1e-3)


def _section_tokens(text: str, title: str) -> list[list[str]]:
    """The whitespace-split lines of a summary section, from its title to a blank line."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.strip().startswith(title))
    # lme4 follows the last section with its "fit warnings:" without a blank line.
    end = next((k for k in range(start + 1, len(lines))
                if not lines[k].strip() or lines[k].startswith("fit warnings")), len(lines))
    return [_lme4_names(line.split()) for line in lines[start:end]]


SMALL_DAYS = "sleepstudy_small_reml"


@pytest.mark.parametrize("name", [*CASES, SMALL_DAYS])
def test_summary_prints_what_lmertest_prints(fits, name):
    """Sections, numbers and digits as R prints summary(lmerTest::lmer(...)) (the spacing
    of R's matrix print aside: lines are compared token by token)."""
    if name == SMALL_DAYS:
        d = rl.datasets.sleepstudy()
        d["Days"] = d["Days"] * 1000
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rl.ModelDataWarning)
            m = rl.lmer("Reaction ~ Days + (1|Subject)", d)
    else:
        m = fits[name]
    ours, theirs = m.summary(), REFERENCE[name]["summary_text"]
    assert "-0.0000" not in ours
    assert ours.splitlines()[0].startswith(
        f"Linear mixed model fit by {'REML' if m.REML else 'maximum likelihood'}. t-tests use Satterthwaite's method")
    assert "   Data: " in ours
    for title in ("REML criterion at convergence" if m.REML else "AIC", "Scaled residuals:", "Random effects:",
                  "Fixed effects:", "Correlation of Fixed Effects:"):
        if title not in theirs:
            continue
        assert _section_tokens(ours, title) == _section_tokens(theirs, title), title


def test_summary_data_line_comes_from_data_name_or_attrs():
    d = rl.datasets.dyestuff()
    assert "   Data: dyestuff\n" in rl.lmer("Yield ~ 1 + (1|Batch)", d).summary()
    assert "   Data: my_frame\n" in rl.lmer("Yield ~ 1 + (1|Batch)", d, data_name="my_frame").summary()
    d.attrs.clear()
    assert "Data:" not in rl.lmer("Yield ~ 1 + (1|Batch)", d).summary()
    with pytest.raises(TypeError, match="data_name"):
        rl.lmer("Yield ~ 1 + (1|Batch)", d, data_name=3)


def test_criterion_in_the_millions_keeps_its_decimal():
    from reml_engine.report.render import criterion_text

    assert criterion_text(57210345.24) == "57210345.2"
    assert criterion_text(1786.46508) == "1786.5"
