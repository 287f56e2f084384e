"""Out-of-core and distributed fits agree with the in-memory fit (and with lme4).

The same data are fitted from a pandas frame (the in-memory pipeline, itself tested
against lme4 elsewhere), from a Dask frame with several partitions (groups split across
them, a categorical level present in one partition only, an empty partition, a partition
with missing values), from Parquet files, and from a chunk iterator; on the threaded
scheduler and on a ``LocalCluster`` (processes=False, 2 workers).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, case_formula, lme4_name, load_reference

import reml_engine as rl
from reml_engine.scaleout.chunked import lmer_chunks

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from reml_engine.scaleout.dask import INSTALL_HINT, _distributed_client, lmer_dask  # noqa: E402

#: Agreement required between the in-memory and the chunked/distributed fits: only the
#: order of the floating-point sums differs.
SAME_FIT_RTOL = 1e-10

FORMULA = "y ~ x * c + z + (1|g)"


def _partitions() -> list[pd.DataFrame]:
    """Five partitions: groups split across them, level 'rare' only in the fourth,
    missing values in the second, the third empty."""
    rng = np.random.default_rng(20261125)
    n, n_groups = 1200, 40
    g = rng.permutation(np.repeat(np.arange(n_groups), n // n_groups))
    c = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n)
    z = rng.uniform(10.0, 20.0, n)
    b = rng.normal(scale=0.8, size=n_groups)
    df = pd.DataFrame({"y": 1.0 + 0.5 * x + 0.1 * z + (c == "b") * 0.4 + b[g] + rng.normal(size=n),
                       "x": x, "c": c, "z": z, "g": g})
    parts = [df.iloc[:300].copy(), df.iloc[300:600].copy(), df.iloc[:0].copy(),
             df.iloc[600:900].copy(), df.iloc[900:].copy()]
    parts[1].loc[parts[1].index[:4], "x"] = np.nan
    parts[1].loc[parts[1].index[10:12], "c"] = None
    rare = parts[3].index[:12]
    parts[3].loc[rare, "c"] = "rare"
    parts[3].loc[rare, "y"] += 1.5
    return parts


PARTS = _partitions()
FRAME = pd.concat(PARTS)


def _fit_quietly(fitter, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fitter(*args, **kwargs)
    return fit, [str(w.message) for w in caught if issubclass(w.category, rl.ModelDataWarning)]


@pytest.fixture(scope="module")
def in_memory():
    return _fit_quietly(rl.lmer, FORMULA, FRAME)


@pytest.fixture(scope="module")
def ddf():
    return dd.from_delayed([dask.delayed(p) for p in PARTS], meta=FRAME.iloc[:0], verify_meta=False)


@pytest.fixture(scope="module")
def parquet_glob(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet")
    for i, part in enumerate(PARTS):
        part.to_parquet(folder / f"part-{i}.parquet")
    return str(folder / "*.parquet")


@pytest.fixture(scope="module")
def cluster_client():
    with distributed.LocalCluster(processes=False, n_workers=2, threads_per_worker=1,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client


def assert_same_fit(fit: rl.LmerFit, reference: rl.LmerFit) -> None:
    """Every estimate and the random effects, to SAME_FIT_RTOL."""
    assert list(fit.fixef.index) == list(reference.fixef.index)
    assert fit.nobs == reference.nobs and fit.ngroups == reference.ngroups
    for name in ("criterion", "tau", "sigma2", "var_group"):
        assert getattr(fit, name) == pytest.approx(getattr(reference, name), rel=SAME_FIT_RTOL), name
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=SAME_FIT_RTOL, atol=SAME_FIT_RTOL * reference.se.min())
    np.testing.assert_allclose(fit.vcov, reference.vcov, rtol=SAME_FIT_RTOL,
                               atol=SAME_FIT_RTOL * np.abs(reference.vcov.to_numpy()).max())
    ranef = fit.ranef.set_axis(pd.Index(fit.ranef.index.to_numpy().tolist()), axis=0)
    expected = reference.ranef.set_axis(pd.Index(reference.ranef.index.to_numpy().tolist()), axis=0)
    assert sorted(ranef.index) == sorted(expected.index)
    np.testing.assert_allclose(ranef.loc[expected.index].to_numpy(), expected.to_numpy(),
                               rtol=SAME_FIT_RTOL, atol=SAME_FIT_RTOL * np.abs(expected.to_numpy()).max())
    assert [o.tau for o in fit.optima] == pytest.approx([o.tau for o in reference.optima], rel=1e-8)


def test_the_partitions_exercise_the_hard_cases():
    # Guards the test data itself: split groups, a one-partition level, an empty and
    # an incomplete partition.
    groups_per_part = [set(p["g"]) for p in PARTS if len(p)]
    assert len(set.intersection(*groups_per_part)) > 20
    assert [("rare" in set(p["c"].dropna())) for p in PARTS] == [False, False, False, True, False]
    assert len(PARTS[2]) == 0 and PARTS[1][["x", "c"]].isna().any(axis=1).sum() == 6


def test_threaded_dask_frame_matches_in_memory(in_memory, ddf):
    reference, warned = in_memory
    fit, warned_dask = _fit_quietly(lmer_dask, FORMULA, ddf, scheduler="threads")
    assert_same_fit(fit, reference)
    assert "c[T.rare]" in fit.fixef.index
    # The missing rows are dropped and counted once, as the in-memory fit reports them.
    assert [w for w in warned_dask if "missing" in w] == [w for w in warned if "missing" in w]
    assert any("dropped 6 of 1200 rows" in w for w in warned_dask)


def test_parquet_glob_matches_in_memory(in_memory, parquet_glob):
    with dask.config.set(scheduler="threads"):
        fit, _ = _fit_quietly(rl.lmer, FORMULA, parquet_glob)
    assert_same_fit(fit, in_memory[0])


def test_local_cluster_matches_in_memory(in_memory, ddf, parquet_glob, cluster_client):
    assert _distributed_client(None) is cluster_client
    for data in (ddf, parquet_glob):
        fit, _ = _fit_quietly(rl.lmer, FORMULA, data)
        assert_same_fit(fit, in_memory[0])


@pytest.mark.parametrize("kind", ["list", "function", "one-shot with levels"])
def test_chunk_iterators_match_in_memory(in_memory, kind):
    if kind == "list":
        chunks, options = PARTS, {}
    elif kind == "function":
        chunks, options = (lambda: iter(PARTS)), {}
    else:
        chunks, options = (p for p in PARTS), {"levels": {"c": ["a", "b", "c", "rare"]}}
    fit, _ = _fit_quietly(lmer_chunks, FORMULA, chunks, **options)
    assert_same_fit(fit, in_memory[0])


def test_lmer_dispatches_a_chunk_iterator(in_memory):
    fit, _ = _fit_quietly(rl.lmer, FORMULA, lambda: iter(PARTS))
    assert_same_fit(fit, in_memory[0])


def test_fit_without_rows_still_summarizes(ddf):
    fit, _ = _fit_quietly(lmer_dask, "y ~ x + z + (1|g)", ddf, scheduler="threads")
    assert fit.fitted is None and fit.resid is None and fit.design is None
    text = fit.summary()
    assert "Scaled residuals" not in text
    complete = len(FRAME[["y", "x", "z", "g"]].dropna())
    assert f"Number of obs: {complete}," in text
    row = next(line for line in text.splitlines() if line.startswith("x "))
    estimate, se = (float(v) for v in row.split()[1:3])
    assert abs(estimate - fit.fixef["x"]) <= 1e-3 * fit.se["x"] + 1e-12 and abs(se / fit.se["x"] - 1) < 1e-3


def test_level_seen_only_in_dropped_rows_is_not_a_column(in_memory):
    parts = [p.copy() for p in PARTS]
    parts[4].loc[parts[4].index[:3], "c"] = "ghost"
    parts[4].loc[parts[4].index[:3], "z"] = np.nan
    reference, _ = _fit_quietly(rl.lmer, FORMULA, pd.concat(parts))
    ddf = dd.from_delayed([dask.delayed(p) for p in parts], meta=FRAME.iloc[:0], verify_meta=False)
    fit, _ = _fit_quietly(lmer_dask, FORMULA, ddf, scheduler="threads")
    assert not any("ghost" in name for name in fit.fixef.index)
    assert_same_fit(fit, reference)


def test_parquet_categorical_keeps_the_order_of_its_categories_and_drops_unused_ones(tmp_path):
    # Dask reads a Parquet categorical with unknown categories; the fit must still use
    # the declared order (reference level 'c') and drop the unused category, as lme4
    # drops unused factor levels.
    categories = ["c", "b", "a", "rare", "unused"]
    parts = [p.astype({"c": pd.CategoricalDtype(categories)}) for p in PARTS]
    for i, part in enumerate(parts):
        part.to_parquet(tmp_path / f"part-{i}.parquet")
    used_only = pd.concat(parts).assign(c=lambda d: d["c"].cat.remove_unused_categories())
    reference, _ = _fit_quietly(rl.lmer, FORMULA, used_only)
    with dask.config.set(scheduler="threads"):
        fit, _ = _fit_quietly(rl.lmer, FORMULA, str(tmp_path / "*.parquet"))
    assert [name for name in fit.fixef.index if name.startswith("c[")] == ["c[T.b]", "c[T.a]", "c[T.rare]"]
    assert fit.dropped_columns == ()
    assert_same_fit(fit, reference)


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_partitioned_reference_case_matches_lme4(method):
    """sim_unbalanced (x1 * cat + x2) in 4 partitions against lme4's stored values."""
    ref = load_reference()["sim_unbalanced"][method]
    data = case_data("sim_unbalanced").sample(frac=1.0, random_state=1)
    ddf = dd.from_pandas(data, npartitions=4, sort=False)
    fit, _ = _fit_quietly(lmer_dask, case_formula("sim_unbalanced"), ddf, REML=method == "reml",
                          scheduler="threads")
    assert fit.criterion == pytest.approx(ref["criterion"], abs=1e-6)
    fixef = fit.fixef.rename(lme4_name)
    for name, value in ref["fixef"].items():
        assert fixef[name] == pytest.approx(value, rel=1e-4, abs=1e-10), name
    assert fit.sigma2 == pytest.approx(ref["sigma2"], rel=1e-3)
    ranef = fit.ranef["mode"].rename(str)
    for level, value in ref.get("ranef", {}).items():  # stored for REML only
        assert ranef[level] == pytest.approx(value, rel=1e-3, abs=1e-6), level


def test_progress_bar_on_request(ddf, capsys):
    _fit_quietly(lmer_dask, FORMULA, ddf, scheduler="threads", progress=True)
    assert "100%" in capsys.readouterr().err


def test_missing_values_raise_on_request(ddf):
    with pytest.raises(rl.ModelDataError, match="missing values in 6 rows"):
        lmer_dask(FORMULA, ddf, scheduler="threads", na_action="raise")


def test_import_never_loads_dask():
    code = (
        "import sys, warnings, reml_engine as rl\n"
        "from reml_engine.scaleout.chunked import lmer_chunks\n"
        "df = rl.load_seed()\n"
        "lmer_chunks('y ~ x + (1|f)', [df.iloc[:6], df.iloc[6:]])\n"
        "rl.lmer('y ~ x + (1|f)', df)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_dask_is_a_clear_message(monkeypatch):
    for name in list(sys.modules):
        if name == "dask" or name.startswith("dask."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r"pip install 'reml_engine\[dask\]'") as err:
        rl.lmer(FORMULA, "data/*.parquet")
    assert str(err.value) == INSTALL_HINT


# -- Parquet files: schema drift and damaged files (issue 10, items 3 to 5) ---------------

UNBALANCED = case_data("sim_unbalanced")
UNBALANCED_LME4 = load_reference()["sim_unbalanced"]["reml"]
SLEEP = case_data("sleepstudy")
SLEEP_LME4 = load_reference()["sleepstudy"]["reml"]
#: lme4's criterion is stored to about 1e-8.
LME4_CRITERION_ATOL = 1e-6


def _assert_input_form_relation(fit: rl.LmerFit, reference: rl.LmerFit) -> None:
    """The same rows in another input form: criterion to 1e-9 relative, fixed effects 1e-8."""
    assert fit.nobs == reference.nobs and fit.ngroups == reference.ngroups
    assert fit.criterion == pytest.approx(reference.criterion, rel=1e-9)
    assert list(fit.fixef.index) == list(reference.fixef.index)
    np.testing.assert_allclose(fit.fixef, reference.fixef, rtol=1e-8, atol=1e-8 * reference.se.min())


def test_parquet_files_with_int_and_text_ids_and_int_and_float_columns(tmp_path):
    """sleepstudy in two files: Subject int64 in one and text in the other, Days int64 and
    float64. R reads the ids as text, so both halves of a subject are one group: lme4's fit."""
    first, second = SLEEP[SLEEP["Days"] < 5], SLEEP[SLEEP["Days"] >= 5]
    first.to_parquet(tmp_path / "a.parquet")
    second.astype({"Subject": str, "Days": float}).to_parquet(tmp_path / "b.parquet")
    fit = lmer_dask(case_formula("sleepstudy"), str(tmp_path / "*.parquet"), scheduler="threads")
    assert fit.ngroups == 18
    assert fit.criterion == pytest.approx(SLEEP_LME4["criterion"], abs=LME4_CRITERION_ATOL)
    _assert_input_form_relation(fit, rl.lmer(case_formula("sleepstudy"), SLEEP))
    assert fit.ranef["mode"]["308"] == pytest.approx(SLEEP_LME4["ranef"]["308"], rel=1e-6)


def test_parquet_files_with_categorical_and_text_factor(tmp_path):
    parts = [UNBALANCED.iloc[:200], UNBALANCED.iloc[200:400], UNBALANCED.iloc[400:]]
    parts[0].astype({"cat": pd.CategoricalDtype(["c", "a", "b", "unused"]), "g": "category"}).to_parquet(
        tmp_path / "p0.parquet")
    parts[1].to_parquet(tmp_path / "p1.parquet", row_group_size=50)
    parts[2].astype({"cat": "string[python]"}).to_parquet(tmp_path / "p2.parquet")
    fit = lmer_dask(case_formula("sim_unbalanced"), str(tmp_path), scheduler="threads")
    assert fit.criterion == pytest.approx(UNBALANCED_LME4["criterion"], abs=LME4_CRITERION_ATOL)
    _assert_input_form_relation(fit, rl.lmer(case_formula("sim_unbalanced"), UNBALANCED))


def test_parquet_column_that_is_a_number_in_one_file_and_text_in_another_is_refused(tmp_path):
    UNBALANCED.iloc[:300].assign(x2=lambda d: d["x2"].astype(str)).to_parquet(tmp_path / "a.parquet")
    UNBALANCED.iloc[300:].to_parquet(tmp_path / "b.parquet")
    with pytest.raises(rl.ModelDataError, match=r"column 'x2' has different types in different files \(str in "
                                                r"'.*a.parquet'; float64 in '.*b.parquet'\)"):
        lmer_dask(case_formula("sim_unbalanced"), str(tmp_path / "*.parquet"), scheduler="threads")


def test_parquet_file_without_a_used_column_is_named(tmp_path):
    UNBALANCED.iloc[:300].to_parquet(tmp_path / "a.parquet")
    UNBALANCED.iloc[300:].drop(columns="cat").to_parquet(tmp_path / "b.parquet")
    with pytest.raises(rl.ModelDataError, match=r"file '.*b.parquet' has no column\(s\) 'cat'"):
        lmer_dask(case_formula("sim_unbalanced"), str(tmp_path / "*.parquet"), scheduler="threads")


def test_glob_matching_no_file_says_so(tmp_path):
    with pytest.raises(rl.ModelDataError, match=r"no file matches '.*nothing-\*.parquet'"):
        rl.lmer(FORMULA, str(tmp_path / "nothing-*.parquet"))


@pytest.mark.parametrize("damage", ["empty", "truncated", "not parquet"])
def test_unreadable_parquet_file_is_named(tmp_path, damage):
    UNBALANCED.iloc[:300].to_parquet(tmp_path / "a.parquet")
    whole = (tmp_path / "a.parquet").read_bytes()
    content = {"empty": b"", "truncated": whole[: len(whole) // 2], "not parquet": b"y,x\n1,2\n"}[damage]
    (tmp_path / "b.parquet").write_bytes(content)
    with pytest.raises(rl.ModelDataError, match=r"file '.*b.parquet' is not a readable Parquet file"):
        lmer_dask(case_formula("sim_unbalanced"), str(tmp_path / "*.parquet"), scheduler="threads")


def test_corrupted_values_are_caught_by_the_footer_ranges(tmp_path):
    """Bytes overwritten inside a data page decode without error into values like 1e+224;
    the writer's min/max statistics in the footer show they were never written."""
    path = tmp_path / "a.parquet"
    UNBALANCED.to_parquet(path, compression="none")
    raw = bytearray(path.read_bytes())
    x1 = UNBALANCED["x1"].to_numpy()
    start = bytes(raw).index(x1[100:102].tobytes())  # the plain-encoded doubles of x1
    raw[start:start + 8] = np.array([3e293]).tobytes()
    path.write_bytes(bytes(raw))
    assert pd.read_parquet(path)["x1"].max() == 3e293  # pyarrow reads the damage silently
    with pytest.raises(rl.ModelDataError, match=r"file '.*a.parquet': column 'x1' holds values from .* to 3e\+293, "
                                                r"outside the range .* its footer records: the file is corrupted"):
        lmer_dask(case_formula("sim_unbalanced"), str(path), scheduler="threads")


@pytest.mark.parametrize("npartitions", [1, 3, 7, 40])
def test_any_dask_partitioning_gives_the_in_memory_fit(npartitions):
    data = UNBALANCED.sample(frac=1.0, random_state=npartitions)
    ddf = dd.from_pandas(data, npartitions=npartitions, sort=False)
    fit, _ = _fit_quietly(lmer_dask, case_formula("sim_unbalanced"), ddf, scheduler="threads")
    _assert_input_form_relation(fit, rl.lmer(case_formula("sim_unbalanced"), UNBALANCED))


def test_error_in_a_partition_names_it():
    data = UNBALANCED.copy()
    data.loc[data.index[500], "x2"] = np.inf
    ddf = dd.from_pandas(data, npartitions=4, sort=False)
    with pytest.raises(rl.ModelDataError, match=r"partition 4 of 4: predictor column\(s\) 'x2'"):
        lmer_dask(case_formula("sim_unbalanced"), ddf, scheduler="threads")

