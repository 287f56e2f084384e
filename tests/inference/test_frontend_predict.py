"""predict() and simulate(): seeds, moments against the fitted model, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, case_formula

import reml_engine as rl
from reml_engine.inference.predict import level_positions

#: Draws for the moment checks: with 2000 simulations of sleepstudy (180 rows, 18
#: groups) the relative standard errors of the variance moments are below 1%.
NSIM_MOMENTS = 2000
#: Moment checks pass within this many standard errors (the seed is fixed, so the test
#: is deterministic; the bound says how far from the truth the draws may be).
Z_BOUND = 5.0


@pytest.fixture(scope="module")
def sleep():
    return rl.lmer(case_formula("sleepstudy"), case_data("sleepstudy"))


def test_simulate_reproduces_its_seed(sleep):
    a = sleep.simulate(5, seed=11)
    b = sleep.simulate(5, seed=11)
    c = sleep.simulate(5, seed=12)
    assert a.shape == (sleep.nobs, 5)
    assert list(a.columns) == [f"sim_{k}" for k in range(1, 6)]
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    gen = sleep.simulate(5, seed=np.random.default_rng(11))
    pd.testing.assert_frame_equal(a, gen)


def test_simulate_moments_match_the_fit(sleep):
    """Within-group variance of y - X beta has mean sigma2; group means of y - X beta
    have variance var_group + sigma2 / n_g; the mean of each row is x' beta."""
    sims = sleep.simulate(NSIM_MOMENTS, seed=2024).to_numpy()
    X = sleep.design.X
    u = sims - (X @ sleep.fixef.to_numpy())[:, None]
    codes = sleep.group_codes
    G, n = sleep.ngroups, sleep.nobs
    counts = np.bincount(codes, minlength=G).astype(float)
    group_means = np.zeros((G, sims.shape[1]))
    np.add.at(group_means, codes, u)
    group_means /= counts[:, None]
    within = ((u - group_means[codes]) ** 2).sum(axis=0) / (n - G)
    # Unbiased per draw; chi-square with n - G df scaled by sigma2.
    se_within = sleep.sigma2 * np.sqrt(2.0 / ((n - G) * sims.shape[1]))
    assert abs(within.mean() - sleep.sigma2) < Z_BOUND * se_within
    expected_between = sleep.var_group + sleep.sigma2 / counts  # per group
    between = (group_means**2 / expected_between[:, None]).mean()
    assert abs(between - 1.0) < Z_BOUND * np.sqrt(2.0 / (G * sims.shape[1]))
    row_means = u.mean(axis=1)
    se_row = np.sqrt((sleep.var_group + sleep.sigma2) / sims.shape[1])
    assert np.max(np.abs(row_means)) < Z_BOUND * se_row


def test_simulate_conditional_on_modes_centres_on_fitted(sleep):
    sims = sleep.simulate(NSIM_MOMENTS, seed=5, re=True).to_numpy()
    resid = sims - sleep.fitted.to_numpy()[:, None]
    se = np.sqrt(sleep.sigma2 / sims.shape[1])
    assert np.max(np.abs(resid.mean(axis=1))) < Z_BOUND * se
    assert abs(resid.var(axis=1, ddof=1).mean() / sleep.sigma2 - 1) < 0.02


@pytest.mark.parametrize("nsim", [0, -1, 2.5, True])
def test_simulate_rejects_bad_nsim(sleep, nsim):
    with pytest.raises(ValueError, match="nsim"):
        sleep.simulate(nsim)


def test_predict_without_newdata_is_fitted(sleep):
    np.testing.assert_array_equal(sleep.predict(), sleep.fitted)
    np.testing.assert_allclose(sleep.predict(re=False), sleep.design.X @ sleep.fixef.to_numpy())


def test_predict_missing_predictor_gives_nan_with_warning(sleep):
    new = pd.DataFrame({"Days": [1.0, np.nan], "Subject": [308, 308]})
    with pytest.warns(rl.ModelDataWarning, match="1 of 2 rows"):
        p = sleep.predict(new)
    assert np.isfinite(p.iloc[0]) and np.isnan(p.iloc[1])


def test_predict_missing_group_label_gets_population(sleep):
    new = pd.DataFrame({"Days": [3.0, 3.0], "Subject": [308, None]})
    p = sleep.predict(new)
    assert p.iloc[1] == pytest.approx(sleep.fixef["(Intercept)"] + 3 * sleep.fixef["Days"], rel=1e-12)


def test_predict_newdata_of_an_intercept_only_model():
    """y ~ 1 + (1|g): newdata has no fixed-effect column to read, and the design of new
    data was formulaic's read-only matrix (predict crashed writing into it)."""
    data = case_data("dyestuff")
    fit = rl.lmer(case_formula("dyestuff"), data)
    np.testing.assert_allclose(fit.predict(data), fit.fitted, rtol=1e-12)
    population = fit.predict(data.assign(Batch=None), re=False)
    np.testing.assert_allclose(population, np.full(len(data), fit.fixef["(Intercept)"]), rtol=1e-12)


def test_predict_needs_the_columns(sleep):
    with pytest.raises(rl.ModelDataError, match="'Days'"):
        sleep.predict(pd.DataFrame({"Subject": [308]}))
    with pytest.raises(rl.ModelDataError, match="grouping column.*'Subject'.*re=False"):
        sleep.predict(pd.DataFrame({"Days": [1.0]}))
    p = sleep.predict(pd.DataFrame({"Days": [1.0]}), re=False)
    assert p.iloc[0] == pytest.approx(sleep.fixef.sum(), rel=1e-12)


def test_predict_unseen_categorical_level_is_an_error():
    m = rl.lmer(case_formula("sim_unbalanced"), case_data("sim_unbalanced"))
    new = case_data("sim_unbalanced").head(2).assign(cat=["a", "zz"])
    with pytest.raises(rl.ModelDataError, match="'cat'.*'zz'"):
        m.predict(new)


def test_predict_after_dropped_column_uses_the_kept_ones():
    data = case_data("sleepstudy").assign(Days2=lambda d: 2 * d["Days"])
    with pytest.warns(rl.ModelDataWarning, match="Days2"):
        m = rl.lmer("Reaction ~ Days + Days2 + (1|Subject)", data)
    new = pd.DataFrame({"Days": [4.0], "Days2": [8.0], "Subject": [999]})
    assert m.predict(new).iloc[0] == pytest.approx(m.fixef["(Intercept)"] + 4 * m.fixef["Days"], rel=1e-12)


def test_predict_for_an_array_fit():
    data = case_data("sleepstudy")
    X = np.column_stack([np.ones(len(data)), data["Days"].to_numpy(float)])
    m = rl.fit(X, data["Reaction"].to_numpy(float), data["Subject"].to_numpy(), names=["(Intercept)", "Days"])
    Xnew = np.array([[1.0, 0.0], [1.0, 5.0]])
    modes = m.ranef["mode"]
    p = m.predict(X=Xnew, groups=[308, "unknown"])
    np.testing.assert_allclose(p, [m.fixef["(Intercept)"] + modes.loc[308], m.fixef.sum() + 4 * m.fixef["Days"]])
    with pytest.raises(rl.ModelDataError, match="groups="):
        m.predict(X=Xnew)
    with pytest.raises(rl.ModelDataError, match="2 columns"):
        m.predict(X=np.ones((2, 3)), groups=[1, 2])
    with pytest.raises(rl.ModelDataError, match="arrays"):
        m.predict(data)


def test_level_positions_match_by_value_then_text():
    levels = pd.Index([308, 309, 310])
    np.testing.assert_array_equal(level_positions(levels, [309, "310", 308.0, "x", None]), [1, 2, 0, -1, -1])
    text = pd.Index(["1", "2"])
    np.testing.assert_array_equal(level_positions(text, [2, 1.0, "3"]), [1, 0, -1])


def test_predict_interaction_groups_from_ids_of_another_type():
    """(1|a:b) fitted with a float `a` (it had a missing value) finds its groups in new
    data whose `a` is int or text: every row gets its group's mode."""
    data = case_data("sleepstudy").assign(a=lambda d: (d["Subject"] % 3).astype(float), b=lambda d: d["Subject"] % 7)
    data.loc[data.index[0], "a"] = np.nan
    with pytest.warns(rl.ModelDataWarning, match="dropped 1"):
        m = rl.lmer("Reaction ~ Days + (1|a:b)", data)
    assert m.ngroups == data.dropna().groupby(["a", "b"]).ngroups
    rows = data.dropna().iloc[[0, 50, 100]]
    modes = [m.ranef["mode"][(int(a), int(b))] for a, b in zip(rows["a"], rows["b"], strict=True)]
    population = m.fixef["(Intercept)"] + m.fixef["Days"] * rows["Days"].to_numpy()
    for a in (rows["a"].astype(int), rows["a"].astype(int).astype(str)):
        p = m.predict(rows.assign(a=a.to_numpy()))
        np.testing.assert_allclose(p, population + modes, rtol=1e-12)
    new_pair = rows.iloc[:1].assign(a=2, b=99)
    assert m.predict(new_pair).iloc[0] == pytest.approx(population[0], rel=1e-12)


def test_predict_matches_factor_levels_of_another_type():
    """A factor fitted from text "1", "2", "3" takes 1, 1.0 or "1" in new data (R reads
    them all as the level "1"); a level never seen is still an error that names it."""
    data = case_data("sim_unbalanced").assign(cat=lambda d: d["cat"].map({"a": "1", "b": "2", "c": "3"}))
    m = rl.lmer(case_formula("sim_unbalanced"), data)
    rows = data.iloc[:6]
    expected = m.predict(rows)
    codes = rows["cat"].astype(int)
    for cat in (codes.to_numpy(), codes.astype(float).to_numpy(), codes.astype("Int64").array):
        np.testing.assert_allclose(m.predict(rows.assign(cat=cat)), expected, rtol=1e-12)
    with pytest.raises(rl.ModelDataError, match=r"'cat' of newdata has level\(s\) 5 \(int\) not seen in fitting \(levels: '1', '2', '3', str\)"):
        m.predict(rows.assign(cat=[1, 5, 2, 1, 1, 1]))
