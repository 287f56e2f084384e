"""The type III table of several-term fits made from chunks, Dask and Parquet (issue 12).

Such a fit keeps the fixed part's encoding (the hypotheses) and the merged statistics
(the criterion whose derivatives give Satterthwaite's df), so its table is the in-memory
fit's (itself checked against lmerTest in ``tests/inference/test_terms_type3.py``).
Kenward-Roger's df of several terms are computed from the rows (a dense ``V``), which
such a fit does not keep: they are refused with a message that says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core.terms_results import TermsFit
from reml_engine.scaleout.chunked import lmer_chunks

DATA = Path(__file__).parent.parent / "data" / "multi" / "sim_crossed_type3.csv"
FORMULA = "y ~ A * B + x + (1|subj) + (1|item)"
#: The chunked and in-memory optima agree to the optimizer's refinement (their statistics
#: differ by the order of floating-point sums); the df take numerical derivatives there.
SAME_TABLE_RTOL = 1e-6


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(DATA, dtype={"subj": str, "item": str, "A": str, "B": str})


@pytest.fixture(scope="module")
def in_memory(data):
    return rl.lmer(FORMULA, data)


def _pieces(data: pd.DataFrame, n: int = 4) -> list[pd.DataFrame]:
    shuffled = data.sample(frac=1.0, random_state=7)
    return [shuffled.iloc[i::n] for i in range(n)]


@pytest.mark.parametrize("ddf", ["satterthwaite", "residual"])
def test_type3_table_from_chunks_equals_in_memory(data, in_memory, ddf):
    chunked = lmer_chunks(FORMULA, _pieces(data), progress=False)
    assert isinstance(chunked, TermsFit) and chunked.design is None
    pd.testing.assert_frame_equal(chunked.anova(ddf), in_memory.anova(ddf), rtol=SAME_TABLE_RTOL)


def test_type3_table_from_chunks_with_sum_contrasts(data):
    contrasts = {"A": "contr.sum", "B": "contr.sum"}
    expected = rl.lmer(FORMULA, data, contrasts=contrasts).anova()
    got = lmer_chunks(FORMULA, _pieces(data), progress=False, contrasts=contrasts).anova()
    pd.testing.assert_frame_equal(got, expected, rtol=SAME_TABLE_RTOL)


def test_type3_table_from_dask_and_parquet_equals_in_memory(data, in_memory, tmp_path):
    expected = in_memory.anova()
    data.to_parquet(tmp_path / "crossed.parquet", index=False)
    from_file = rl.lmer(FORMULA, str(tmp_path / "crossed.parquet"))
    pd.testing.assert_frame_equal(from_file.anova(), expected, rtol=SAME_TABLE_RTOL)
    dd = pytest.importorskip("dask.dataframe")
    from_dask = rl.lmer(FORMULA, dd.from_pandas(data, npartitions=3))
    pd.testing.assert_frame_equal(from_dask.anova(), expected, rtol=SAME_TABLE_RTOL)


def test_kenward_roger_of_a_fit_without_rows_is_refused_by_name(data):
    chunked = lmer_chunks(FORMULA, _pieces(data), progress=False)
    with pytest.raises(ValueError, match=r"Kenward-Roger.*keeps none \(design=None.*ddf='satterthwaite'"):
        chunked.anova("kenward-roger")
    # The refusal leaves the fit usable.
    assert np.isfinite(chunked.anova()["den_df"]).all()
