"""Fits from chunks, Dask and Parquet do what in-memory fits do with the same information.

A fit from merged statistics keeps no rows, but ``predict(newdata)``,
``simulate(newdata=)``, the likelihood-ratio ``anova`` (ML refit) and the type III table
need only the estimates, the statistics and the encoding of the formula. Each is checked
against the in-memory fit of the same rows (itself tested against lme4 elsewhere), and
simulation against the model's closed-form moments.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core.fitting import refit_statistics
from reml_engine.scaleout.chunked import lmer_chunks

#: In-memory and chunked fits differ only in the order of floating-point sums; the
#: tables derived from them (ML refit, Satterthwaite df) agree to this.
SAME_TABLE_RTOL = 1e-8

FORMULA = "y ~ x * c + z + (1|g)"


def _frame(seed: int = 20261130) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, n_groups = 900, 30
    g = rng.permutation(np.repeat(np.arange(n_groups), n // n_groups))
    c = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n)
    z = rng.uniform(10.0, 20.0, n)
    b = rng.normal(scale=0.8, size=n_groups)
    y = 1.0 + 0.5 * x + 0.1 * z + (c == "b") * 0.4 + 0.3 * x * (c == "c") + b[g] + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "c": c, "z": z, "g": g})
    df.loc[df.index[5:8], "x"] = np.nan  # dropped by every fit, with the same warning
    return df


FRAME = _frame()


def _pieces(df: pd.DataFrame, rows: int = 200) -> list[pd.DataFrame]:
    shuffled = df.sample(frac=1.0, random_state=3)  # groups straddle the chunks
    return [shuffled.iloc[i:i + rows] for i in range(0, len(shuffled), rows)]


def _quietly(fitter, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return fitter(*args, **kwargs)


def _newdata() -> pd.DataFrame:
    """Rows to predict: fitted groups, two groups never seen, a missing group label,
    a missing predictor, and the factor read as a Categorical."""
    new = FRAME.sample(40, random_state=1).copy()
    new.loc[new.index[:2], "g"] = [1000, 1001]
    new["g"] = new["g"].astype("float64")
    new.loc[new.index[2], "g"] = np.nan
    new.loc[new.index[3], "z"] = np.nan
    new["c"] = pd.Categorical(new["c"], categories=["c", "b", "a"])
    return new


@pytest.fixture(scope="module")
def in_memory():
    return _quietly(rl.lmer, FORMULA, FRAME)


@pytest.fixture(scope="module", params=["chunks", "dask", "parquet"])
def rowless(request, tmp_path_factory):
    """The fit of FRAME from a chunk list, a Dask frame and a Parquet file."""
    if request.param == "chunks":
        return _quietly(lmer_chunks, FORMULA, _pieces(FRAME))
    dd = pytest.importorskip("dask.dataframe")
    import dask

    if request.param == "dask":
        data = dd.from_pandas(FRAME, npartitions=4)
    else:
        data = str(tmp_path_factory.mktemp("parquet") / "rows.parquet")
        FRAME.to_parquet(data)
    with dask.config.set(scheduler="synchronous"):
        return _quietly(rl.lmer, FORMULA, data)


def _predict(fit, newdata, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = fit.predict(newdata, **kwargs)
    return values, [str(w.message) for w in caught]


def test_the_fit_keeps_no_rows(rowless):
    assert rowless.design is None and rowless.fitted is None
    assert rowless.encoding is not None


@pytest.mark.parametrize("re", [True, False])
def test_predict_newdata_equals_in_memory_predict(in_memory, rowless, re):
    new = _newdata()
    expected, expected_warnings = _predict(in_memory, new, re=re)
    got, got_warnings = _predict(rowless, new, re=re)
    assert got.index.equals(new.index) and got.name == expected.name
    assert got_warnings == expected_warnings and any("missing predictors" in w for w in got_warnings)
    scale = np.abs(expected.dropna()).max()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * scale)
    assert np.isnan(got.iloc[3])


def test_predict_new_groups_get_the_population_prediction(rowless):
    new = _newdata()
    conditional, _ = _predict(rowless, new)
    population, _ = _predict(rowless, new, re=False)
    # Rows 0-2: groups 1000, 1001 never seen and a missing label; the others are fitted groups.
    np.testing.assert_array_equal(conditional.iloc[:3], population.iloc[:3])
    rest = new.iloc[4:].index[population.iloc[4:].notna()]  # rows without a missing predictor
    modes = rowless.ranef["mode"].reindex(new.loc[rest, "g"].astype(int)).to_numpy()
    np.testing.assert_allclose(conditional[rest] - population[rest], modes, rtol=1e-10, atol=1e-12)


def test_predict_refuses_a_factor_level_not_fitted(in_memory, rowless):
    new = FRAME.iloc[:3].assign(c=["a", "zz", "b"])
    messages = []
    for fit in (in_memory, rowless):
        with pytest.raises(rl.ModelDataError, match="'zz'") as err:
            fit.predict(new)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_predict_without_newdata_asks_for_it(rowless):
    with pytest.raises(rl.ModelDataError, match="newdata="):
        rowless.predict()


def test_predict_leaves_the_fit_as_it_was(rowless):
    before = rowless.predict(FRAME.iloc[:20].dropna())
    with pytest.raises(rl.ModelDataError):
        rowless.predict(FRAME.iloc[:3].assign(x=["a", "b", "c"]))
    pd.testing.assert_series_equal(rowless.predict(FRAME.iloc[:20].dropna()), before)


def test_likelihood_ratio_anova_equals_in_memory(rowless):
    smaller = "y ~ x + z + (1|g)"
    expected = rl.anova(_quietly(rl.lmer, smaller, FRAME), _quietly(rl.lmer, FORMULA, FRAME))
    small_rowless = _quietly(lmer_chunks, smaller, _pieces(FRAME, 150))
    got = rl.anova(small_rowless, rowless)
    pd.testing.assert_frame_equal(got.table, expected.table, rtol=SAME_TABLE_RTOL)
    assert got.notes == expected.notes
    # One fit in memory and one without rows compare as well: same rows, same response.
    mixed = rl.anova(_quietly(rl.lmer, smaller, FRAME), rowless)
    pd.testing.assert_frame_equal(mixed.table, expected.table, rtol=SAME_TABLE_RTOL)


def test_ml_refit_from_statistics_equals_the_ml_fit(rowless):
    ml = _quietly(rl.lmer, FORMULA, FRAME, REML=False)
    refit = refit_statistics(rowless, REML=False)
    assert not refit.REML and refit.encoding is rowless.encoding
    assert refit.criterion == pytest.approx(ml.criterion, rel=1e-10)
    for name in ("tau", "sigma2"):
        assert getattr(refit, name) == pytest.approx(getattr(ml, name), rel=SAME_TABLE_RTOL)
    np.testing.assert_allclose(refit.fixef, ml.fixef, rtol=SAME_TABLE_RTOL)
    np.testing.assert_allclose(refit.vcov, ml.vcov, rtol=SAME_TABLE_RTOL)


def test_anova_refuses_rowless_fits_of_other_rows(rowless):
    other = FRAME.assign(y=FRAME["y"] + np.random.default_rng(0).normal(size=len(FRAME)))
    with pytest.raises(ValueError, match="different response"):
        rl.anova(_quietly(lmer_chunks, "y ~ x + z + (1|g)", _pieces(other)), rowless)


@pytest.mark.parametrize("contrasts", [None, {"c": "contr.sum"}])
def test_type3_table_equals_in_memory(contrasts, tmp_path):
    expected = _quietly(rl.lmer, FORMULA, FRAME, contrasts=contrasts).anova()
    fit = _quietly(lmer_chunks, FORMULA, _pieces(FRAME), contrasts=contrasts)
    got = fit.anova()
    pd.testing.assert_frame_equal(got, expected, rtol=SAME_TABLE_RTOL)
    assert list(got.index) == list(expected.index) and len(got) == 4


def test_type3_table_of_a_parquet_fit(in_memory, rowless):
    pd.testing.assert_frame_equal(rowless.anova(), in_memory.anova(), rtol=SAME_TABLE_RTOL)


def test_simulate_without_newdata_names_the_argument(rowless):
    with pytest.raises(rl.ModelDataError, match="newdata="):
        rowless.simulate(2, seed=1)


@pytest.mark.parametrize("re", [False, True])
def test_simulate_newdata_draws_as_the_in_memory_fit(in_memory, rowless, re):
    # The fitting rows, in the order of the in-memory fit: the same seed gives the same
    # draws, as the fits' groups are in the same (sorted) order.
    rows = FRAME.dropna()
    assert list(rowless.ranef.index) == list(in_memory.ranef.index)
    expected = in_memory.simulate(4, seed=11, re=re)
    got = rowless.simulate(4, seed=11, re=re, newdata=rows)
    assert got.index.equals(expected.index)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * np.abs(expected.to_numpy()).max())


def test_simulate_new_groups_have_the_model_moments(rowless):
    # Four rows: two in a new group, one in another new group, one in a fitted group.
    # Unconditionally (re=False) each response is N(x'beta, var_group + sigma2), rows of
    # a group share covariance var_group, rows of different groups are independent.
    new = FRAME.dropna().iloc[:4].copy()
    new["g"] = [500, 500, 501, new["g"].iloc[3]]
    nsim = 40_000
    draws = rowless.simulate(nsim, seed=5, newdata=new).to_numpy()
    mean = rowless.predict(new, re=False).to_numpy()
    total = rowless.var_group + rowless.sigma2
    expected_cov = np.diag(np.full(4, rowless.sigma2)) + rowless.var_group * np.array(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    # Standard errors of the sample moments of normal draws.
    np.testing.assert_allclose(draws.mean(axis=1), mean, atol=5 * np.sqrt(total / nsim))
    np.testing.assert_allclose(np.cov(draws), expected_cov, atol=5 * total * np.sqrt(2 / nsim))
    # With re=True a fitted group is held at its mode; a new group is still drawn.
    held = rowless.simulate(nsim, seed=6, re=True, newdata=new).to_numpy()
    mode = rowless.ranef["mode"].loc[new["g"].iloc[3]]
    assert held[3].mean() == pytest.approx(mean[3] + mode, abs=5 * np.sqrt(rowless.sigma2 / nsim))
    assert held[3].var() == pytest.approx(rowless.sigma2, rel=5 * np.sqrt(2 / nsim))
    assert held[0].var() == pytest.approx(total, rel=5 * np.sqrt(2 / nsim))


def test_simulate_refuses_rows_without_a_group_or_a_predictor(rowless):
    rows = FRAME.dropna().iloc[:5].copy()
    with pytest.raises(rl.ModelDataError, match="1 of 5 rows of newdata have no label in grouping column"):
        rowless.simulate(2, seed=1, newdata=rows.assign(g=[1.0, np.nan, 2.0, 3.0, 4.0]))
    with pytest.raises(rl.ModelDataError, match="1 of 5 rows of newdata have missing predictors"):
        rowless.simulate(2, seed=1, newdata=rows.assign(z=[1.0, np.nan, 2.0, 3.0, 4.0]))


@pytest.mark.parametrize("method", ["profile", "wald"])
def test_intervals_equal_in_memory(in_memory, method):
    # Intervals read the statistics only; checked here so that they stay so.
    fit = _quietly(lmer_chunks, FORMULA, _pieces(FRAME))
    expected, got = in_memory.confint(method), fit.confint(method)
    numbers = ["lower", "upper"]
    pd.testing.assert_frame_equal(got[numbers], expected[numbers], rtol=SAME_TABLE_RTOL)
