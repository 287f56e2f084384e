"""predict(newdata), simulate(newdata=) and anova() of several-term fits made from
chunks, Dask and Parquet (issue 14).

Such fits keep no rows, only the merged statistics and how the rows were encoded
(``TermsFit.encoding``). Each answer is compared with the in-memory fit of the same
rows (itself checked against lme4 in ``tests/varcomp``): predictions to
``SAME_PREDICTION_TOL``, simulations with the same seed draw for draw, the anova table
to ``SAME_ANOVA_RTOL``; the variance of simulated responses of unseen levels against
its closed form ``var_1 + var_2 + sigma2 / w``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from test_terms_chunked import WEIGHTED, _data, _in_memory, _split

import reml_engine as rl
from reml_engine.scaleout.chunked import lmer_chunks

#: Predictions of the chunked and in-memory fits: their estimates differ only by the
#: order of floating-point sums.
SAME_PREDICTION_TOL = 1e-10

#: The anova tables (deviances, Chisq, p-values) of the two kinds of fit.
SAME_ANOVA_RTOL = 1e-8

CROSSED = "attain ~ verbal + sex + (1 | primary) + (1 | second)"


@pytest.fixture(scope="module")
def scots():
    ref = WEIGHTED["scotssec_offset"]
    return ref["formula"], _data("multi_weights", ref)


def _new_rows(data: pd.DataFrame) -> pd.DataFrame:
    """Rows of the data, rows with an unseen level in one term or in both, and a row
    whose offset and predictors differ from every fitted row."""
    new = data.iloc[[0, 5, 17, 40]].copy()
    new.loc[new.index[1], "primary"] = "unseen"
    new.loc[new.index[2], ["primary", "second"]] = ["unseen", "unseen too"]
    new.loc[new.index[3], ["verbal", "social_offset"]] = [3.25, -0.7]
    return new


def _assert_same_predictions(chunked, memory, newdata, **kwargs):
    for re_form in (None, "~ (1 | second)", False):
        a = chunked.predict(newdata, re_form=re_form, **kwargs)
        b = memory.predict(newdata, re_form=re_form, **kwargs)
        pd.testing.assert_series_equal(a, b, rtol=0, atol=SAME_PREDICTION_TOL)


def test_predict_from_chunks_dask_and_parquet_equals_in_memory(scots, tmp_path):
    formula, data = scots
    memory = _in_memory(formula, data, weights="n")
    chunked = lmer_chunks(formula, _split(data, "sorted_with_empty", formula), weights="n", progress=False)
    for newdata in (data, _new_rows(data)):
        _assert_same_predictions(chunked, memory, newdata)
    # The fitted values are the predictions of the fitted rows.
    pd.testing.assert_series_equal(chunked.predict(data), memory.fitted.rename("predicted"), rtol=0,
                                   atol=SAME_PREDICTION_TOL)
    dd = pytest.importorskip("dask.dataframe")
    from_dask = rl.lmer(formula, dd.from_pandas(data, npartitions=4), weights="n")
    _assert_same_predictions(from_dask, memory, _new_rows(data))
    data.to_parquet(tmp_path / "scots.parquet", index=False)
    from_file = rl.lmer(formula, str(tmp_path / "scots.parquet"), weights="n")
    _assert_same_predictions(from_file, memory, _new_rows(data))


def test_unseen_levels_add_nothing(scots):
    formula, data = scots
    chunked = lmer_chunks(formula, _split(data, "shuffled", formula), weights="n", progress=False)
    new = _new_rows(data)
    fixef = chunked.fixef
    both_unseen = new.iloc[2]
    population = (fixef["(Intercept)"] + fixef["verbal"] * both_unseen["verbal"]
                  + fixef["sex[T.M]"] * (both_unseen["sex"] == "M") + both_unseen["social_offset"])
    assert chunked.predict(new).iloc[2] == pytest.approx(population, abs=SAME_PREDICTION_TOL)
    # One term unseen: the other term's mode still counts.
    one_unseen = new.iloc[1]
    mode = chunked.ranef["second"].loc[one_unseen["second"], "mode"]
    assert chunked.predict(new).iloc[1] == pytest.approx(chunked.predict(new, re_form=False).iloc[1] + mode,
                                                         abs=SAME_PREDICTION_TOL)


def test_predict_with_the_offset_argument(scots):
    _, data = scots
    memory = _in_memory(CROSSED, data, weights="n", offset="social_offset")
    chunked = lmer_chunks(CROSSED, _split(data, "shuffled", CROSSED), weights="n", offset="social_offset",
                          progress=False)
    new = _new_rows(data)
    _assert_same_predictions(chunked, memory, new, offset="social_offset")
    _assert_same_predictions(chunked, memory, new, offset=np.linspace(-1, 1, len(new)))
    with pytest.raises(rl.ModelDataError, match=r"pass predict\(newdata, offset=...\)"):
        chunked.predict(new)
    dd = pytest.importorskip("dask.dataframe")
    from_dask = rl.lmer(CROSSED, dd.from_pandas(data, npartitions=3), weights="n", offset="social_offset")
    _assert_same_predictions(from_dask, memory, new, offset="social_offset")


def test_simulate_needs_newdata_and_draws_as_in_memory(scots):
    formula, data = scots
    memory = _in_memory(formula, data, weights="n")
    chunked = lmer_chunks(formula, _split(data, "own_categories", formula), weights="n", progress=False)
    with pytest.raises(rl.ModelDataError, match="pass newdata="):
        chunked.simulate(2, seed=1)
    for re in (False, True):
        expected = memory.simulate(4, seed=7, re=re)
        pd.testing.assert_frame_equal(memory.simulate(4, seed=7, re=re, newdata=data), expected)
        pd.testing.assert_frame_equal(chunked.simulate(4, seed=7, re=re, newdata=data), expected, rtol=0,
                                      atol=SAME_PREDICTION_TOL)
    new = _new_rows(data)
    pd.testing.assert_frame_equal(chunked.simulate(3, seed=2, newdata=new), memory.simulate(3, seed=2, newdata=new),
                                  rtol=0, atol=SAME_PREDICTION_TOL)


def test_simulated_unseen_levels_have_the_model_variance(scots):
    formula, data = scots
    chunked = lmer_chunks(formula, _split(data, "halves", formula), weights="n", progress=False)
    new = _new_rows(data).iloc[[2]]
    nsim = 40_000
    draws = chunked.simulate(nsim, seed=3, re=True, newdata=new).iloc[0].to_numpy()
    mean = chunked.predict(new).iloc[0]
    variance = chunked.variances.sum() + chunked.sigma2 / new["n"].iloc[0]
    # Sample mean within 5 standard errors; sample variance within 5 of its standard
    # errors (sqrt(2 / nsim) var for normal draws).
    assert abs(draws.mean() - mean) < 5 * np.sqrt(variance / nsim)
    assert abs(draws.var() - variance) < 5 * np.sqrt(2 / nsim) * variance


def test_simulate_weights_of_new_rows(scots):
    formula, data = scots
    chunked = lmer_chunks(formula, [data], weights="n", progress=False)
    new = _new_rows(data).drop(columns="n")
    with pytest.raises(rl.ModelDataError, match="no column 'n' of prior weights"):
        chunked.simulate(1, newdata=new)
    with pytest.raises(rl.ModelDataError, match="must be positive"):
        chunked.simulate(1, newdata=new, weights=[1.0, 0.0, 1.0, 1.0])
    assert chunked.simulate(1, newdata=new, weights=np.ones(len(new))).shape == (len(new), 1)


@pytest.mark.parametrize("weights", [None, "n"])
def test_anova_of_chunked_fits_equals_in_memory(scots, weights):
    _, data = scots
    smaller = "attain ~ verbal + (1 | primary) + (1 | second)"
    parts = _split(data, "shuffled", CROSSED)
    kwargs = {} if weights is None else {"weights": weights}
    expected = rl.anova(_in_memory(CROSSED, data, **kwargs), _in_memory(smaller, data, **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        chunked = [lmer_chunks(f, parts, progress=False, **kwargs) for f in (CROSSED, smaller)]
    got = rl.anova(*chunked)
    pd.testing.assert_frame_equal(got.table, expected.table, rtol=SAME_ANOVA_RTOL)
    assert got.notes == expected.notes
    # The refit did not change the fits compared.
    assert all(m.REML for m in chunked)


def test_anova_of_chunked_fits_to_different_responses_refuses(scots):
    _, data = scots
    other = data.assign(attain=data["attain"] + np.linspace(0, 1, len(data)))
    m1 = lmer_chunks(CROSSED, [data], progress=False)
    m0 = lmer_chunks("attain ~ verbal + (1 | primary) + (1 | second)", [other], progress=False)
    with pytest.raises(ValueError, match="different response"):
        rl.anova(m1, m0)
