"""``within()``/``between()`` in chunked, Dask and Parquet fits: a first pass for the group means."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.scaleout.chunked import lmer_chunks
from reml_engine.scaleout.group_means import GroupSums

#: Chunked and in-memory fits differ only in the order of floating-point sums.
SAME_FIT_RTOL = 1e-10

FORMULA = "y ~ within(x) + between(x) + c + (1|g)"


def _frame(seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, n_groups = 800, 40
    g = rng.integers(0, n_groups, n)
    x = rng.normal(size=n) + 2.0 * rng.normal(size=n_groups)[g]  # x varies between groups too
    c = rng.choice(["a", "b"], n)
    y = 1.0 + 0.5 * x + 0.8 * rng.normal(size=n_groups)[g] + (c == "b") + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "c": c, "g": g, "h": rng.integers(0, 3, n)})
    # Rows with a missing c are left out of the group means, as in memory.
    df.loc[df.index[::37], "c"] = None
    return df


FRAME = _frame()


def _pieces(df: pd.DataFrame, rows: int = 150) -> list[pd.DataFrame]:
    shuffled = df.sample(frac=1.0, random_state=8)  # each group in several chunks
    return [shuffled.iloc[i:i + rows] for i in range(0, len(shuffled), rows)]


def _quietly(fitter, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return fitter(*args, **kwargs)


def _assert_same_fit(fit, reference):
    assert list(fit.fixef.index) == list(reference.fixef.index)
    assert fit.nobs == reference.nobs
    assert fit.criterion == pytest.approx(reference.criterion, rel=SAME_FIT_RTOL)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=SAME_FIT_RTOL, atol=SAME_FIT_RTOL * reference.se.min())
    # within and between columns are orthogonal: their covariance is 0 up to rounding.
    np.testing.assert_allclose(fit.vcov, reference.vcov, rtol=1e-8, atol=1e-12 * np.abs(reference.vcov.to_numpy()).max())


def test_merged_group_sums_give_the_group_means_of_all_rows():
    # Against pandas' groupby mean of the whole column.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 300)
    values = rng.normal(size=300)
    parts = []
    for a, b in [(0, 50), (50, 51), (51, 200), (200, 300)]:
        frame = pd.DataFrame({"g": labels[a:b], "v": values[a:b]})
        stats = frame.groupby("g", sort=False)["v"].agg(["sum", "count"])
        parts.append(GroupSums({"between(v)": (list(stats.index), stats[["sum"]].to_numpy(),
                                               stats["count"].to_numpy(float))}))
    state = GroupSums.merge_all(parts).states()["between(v)"]
    expected = pd.Series(values).groupby(labels).mean()
    got = pd.Series([m[0] for m in state["means"]], index=[int(level) for level in state["levels"]])
    np.testing.assert_allclose(got.sort_index(), expected, rtol=1e-12)


@pytest.mark.parametrize("formula", [FORMULA, "y ~ x + between(x) + (1|g)", "y ~ within(np.exp(x / 4)) * c + (1|g)",
                                     "y ~ within(x) + between(x) + (1|g:h)"])
def test_chunk_list_fit_equals_in_memory(formula):
    _assert_same_fit(_quietly(lmer_chunks, formula, _pieces(FRAME)), _quietly(rl.lmer, formula, FRAME))


@pytest.mark.parametrize("form", ["dask", "parquet"])
def test_dask_and_parquet_fits_equal_in_memory(form, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    if form == "dask":
        data = dd.from_pandas(FRAME, npartitions=5)
    else:
        data = str(tmp_path / "rows.parquet")
        FRAME.to_parquet(data)
    with dask.config.set(scheduler="synchronous"):
        fit = _quietly(rl.lmer, FORMULA, data)
    _assert_same_fit(fit, _quietly(rl.lmer, FORMULA, FRAME))


def test_predict_uses_the_group_means_of_all_rows(tmp_path):
    reference = _quietly(rl.lmer, FORMULA, FRAME)
    fit = _quietly(lmer_chunks, FORMULA, _pieces(FRAME))
    new = FRAME.dropna().iloc[:12].copy()
    new.loc[new.index[:3], "g"] = 1000  # a new group: the mean of its own rows
    np.testing.assert_allclose(fit.predict(new), reference.predict(new), rtol=1e-10)


def test_one_shot_iterator_is_refused_with_the_reason():
    with pytest.raises(rl.ModelDataError, match=r"between\(x\), within\(x\) need the group means of all rows"):
        _quietly(lmer_chunks, FORMULA, iter(_pieces(FRAME)), levels={"c": ["a", "b"]})
