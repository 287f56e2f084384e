"""``reml_engine.datasets``: the data are R's, each call returns a new frame, and lme4's fits
on them are reproduced.

What R knows about each data set comes from R's own objects, not from the package's files:
``tests/data/r/make_datasets_reference.R`` writes ``datasets_reference.json`` (``facts``:
size, column classes, levels in R's order, missing counts and a row-order-sensitive weighted
sum per column; ``fits``: lme4 REML fits with one random intercept on R's data). The fits
on sleepstudy, Dyestuff, Dyestuff2, the seed data and the nlme/mlmRev sets are also
compared with the lme4 values the other reference files hold (``reference.json``,
``frontend_reference.json``), fitted there on the CSV copies the other tests read.
"""

from __future__ import annotations

import csv
import doctest
import gzip
import io
import json
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference_data import REFERENCE, as_list, lme4_name, load_reference

import reml_engine as rl
from reml_engine import datasets

pytestmark = pytest.mark.reference

with open(REFERENCE / "datasets_reference.json") as fh:
    R_DATA = json.load(fh)
with open(REFERENCE / "frontend_reference.json") as fh:
    FRONTEND = json.load(fh)

FACTS = R_DATA["facts"]
FITS = R_DATA["fits"]
R_NAMES = sorted(FACTS)

#: The R weighted sums are written with 15 significant digits.
WEIGHTED_SUM_RTOL = 1e-13
#: lme4 stops its optimizer at ~1e-6 in the criterion (relative to the criterion's size
#: on InstEval, 2.4e5); the engine finds the exact optimum.
CRITERION_ATOL = 1e-6
CRITERION_RTOL = 1e-11
#: Estimates at the two optima agree to about 1e-6 relative.
ESTIMATE_RTOL = 2e-5
ESTIMATE_ATOL = 1e-8
#: Variance components and SEs: where the criterion is flat in theta (warpbreaks has 3
#: groups), lme4 stops ~1e-5 (relative) from the optimum.
VARIANCE_RTOL = 2e-4
#: The shipped data files together (InstEval is most of it): the wheel stays small.
MAX_PACKAGE_DATA_BYTES = 600_000

#: pandas dtype of each R storage type.
PANDAS_DTYPE = {"double": "float64", "integer": "int64"}


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {name: getattr(datasets, name)() for name in datasets.NAMES}


def _fit(formula: str, data: pd.DataFrame) -> rl.LmerFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)  # Exam's rank-deficient 'type'
        return rl.lmer(formula, data)


# -- the data are R's ---------------------------------------------------------------------


def test_every_r_data_set_has_a_function():
    assert set(R_NAMES) | {"seed"} == set(datasets.NAMES)
    for name in datasets.NAMES:
        assert callable(getattr(rl.datasets, name))


@pytest.mark.parametrize("name", R_NAMES)
def test_size_and_column_names_are_rs(frames, name):
    frame, facts = frames[name], FACTS[name]
    assert frame.shape == (facts["nrow"], facts["ncol"])
    assert list(frame.columns) == [c["name"] for c in facts["columns"]]
    assert isinstance(frame.index, pd.RangeIndex) and frame.index[0] == 0


@pytest.mark.parametrize("name", R_NAMES)
def test_column_types_and_levels_are_rs(frames, name):
    frame = frames[name]
    for column in FACTS[name]["columns"]:
        values = frame[column["name"]]
        label = f"{name}.{column['name']}"
        if column["type"] in ("factor", "ordered"):
            assert isinstance(values.dtype, pd.CategoricalDtype), label
            assert list(values.cat.categories) == as_list(column["levels"]), label
            assert values.cat.ordered == (column["type"] == "ordered"), label
        else:
            assert str(values.dtype) == PANDAS_DTYPE[column["type"]], label
        assert int(values.isna().sum()) == column["n_missing"], label


@pytest.mark.parametrize("name", R_NAMES)
def test_values_and_row_order_are_rs(frames, name):
    """sum_i i * v_i (v the value, or the 1-based level code) equals R's, column by column."""
    frame = frames[name]
    rows = np.arange(1, len(frame) + 1, dtype=float)
    for column in FACTS[name]["columns"]:
        values = frame[column["name"]]
        codes = values.cat.codes.to_numpy() + 1.0 if isinstance(values.dtype, pd.CategoricalDtype) else values
        ours = np.nansum(rows * np.asarray(codes, dtype=float))
        assert ours == pytest.approx(column["weighted_sum"], rel=WEIGHTED_SUM_RTOL), f"{name}.{column['name']}"


@pytest.mark.parametrize("name", R_NAMES)
def test_numbers_are_read_exactly(frames, name):
    """Every stored double is read as Python's float() of its text: no parser rounding."""
    frame = frames[name]
    entry = datasets._catalogue()[name]
    raw = resources.files(datasets).joinpath("data", entry["file"]).read_bytes()
    text = gzip.decompress(raw).decode() if entry["file"].endswith(".gz") else raw.decode()
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    for column in entry["columns"]:
        if column["type"] == "double":
            k = header.index(column["name"])
            expected = np.array([float(row[k]) if row[k] else np.nan for row in body])
            np.testing.assert_array_equal(frame[column["name"]].to_numpy(), expected, err_msg=column["name"])


def test_seed_is_load_seed():
    pd.testing.assert_frame_equal(datasets.seed(), rl.load_seed())


def test_available_lists_every_data_set():
    table = datasets.available()
    assert list(table["name"]) == list(datasets.NAMES)
    for row in table.itertuples():
        assert row.rows == len(getattr(datasets, row.name)())
        assert row.description and "``" not in row.description
    assert table.set_index("name").loc["insteval", "source"] == "lme4::InstEval"


def test_docstring_examples_run():
    result = doctest.testmod(datasets, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- a new frame on every call ------------------------------------------------------------


@pytest.mark.parametrize("name", datasets.NAMES)
def test_each_call_returns_a_new_frame(name):
    load = getattr(datasets, name)
    first, pristine = load(), load()
    assert first is not pristine
    for column in first.columns:
        a, b = first[column], pristine[column]
        array_a = a.cat.codes.to_numpy() if isinstance(a.dtype, pd.CategoricalDtype) else a.to_numpy()
        array_b = b.cat.codes.to_numpy() if isinstance(b.dtype, pd.CategoricalDtype) else b.to_numpy()
        assert not np.shares_memory(array_a, array_b), column
    # Change the first frame every way a user might; the next call is unchanged.
    numeric = first.select_dtypes("number").columns
    factors = first.select_dtypes("category").columns
    if len(numeric):
        first.loc[0, numeric[0]] = -999
        first[numeric[0]] *= 2
    if len(factors):
        column = first[factors[0]]
        first.loc[0, factors[0]] = column.cat.categories[-1]
        first[factors[0]] = column.cat.rename_categories([f"new{k}" for k in range(len(column.cat.categories))])
    del first[first.columns[-1]]
    first["added"] = 1.0
    first.columns = ["renamed", *first.columns[1:]]
    pd.testing.assert_frame_equal(load(), pristine)


# -- lme4's fits on them --------------------------------------------------------------------


def _assert_matches(m: rl.LmerFit, ref: dict, label: str, fixef_names=None) -> None:
    assert m.criterion == pytest.approx(ref["criterion"], rel=CRITERION_RTOL, abs=CRITERION_ATOL), label
    assert m.var_group == pytest.approx(ref["var_group"], rel=VARIANCE_RTOL, abs=ESTIMATE_ATOL), label
    assert m.sigma2 == pytest.approx(ref["sigma2"], rel=VARIANCE_RTOL), label
    names = [lme4_name(c) for c in m.fixef.index]
    fixef, se = pd.Series(m.fixef.to_numpy(), names), pd.Series(m.se.to_numpy(), names)
    ref_fixef = pd.Series(as_list(ref["fixef"]), as_list(ref["coef_names"]), dtype=float)
    ref_se = pd.Series(as_list(ref["se"]), as_list(ref["coef_names"]), dtype=float)
    if fixef_names is None:
        assert names == list(ref_fixef.index), label
        fixef_names = names
    np.testing.assert_allclose(fixef[fixef_names], ref_fixef[fixef_names], rtol=ESTIMATE_RTOL, atol=ESTIMATE_ATOL,
                               err_msg=label)
    np.testing.assert_allclose(se[fixef_names], ref_se[fixef_names], rtol=VARIANCE_RTOL, err_msg=label)


@pytest.mark.parametrize("label", sorted(FITS))
def test_single_term_fit_matches_lme4_on_rs_own_data(label):
    ref = FITS[label]
    m = _fit(ref["formula"], getattr(datasets, ref["dataset"])())
    _assert_matches(m, ref, label)
    assert (m.nobs, m.ngroups) == (ref["nobs"], ref["ngroups"]), label


@pytest.mark.parametrize(("case", "dataset"), [("sleepstudy", "sleepstudy"), ("dyestuff", "dyestuff"),
                                               ("dyestuff2", "dyestuff2"), ("seed_x", "seed")])
def test_fit_matches_reference_json(case, dataset):
    """The lme4 values of ``reference.json`` (fitted on ``tests/data/reference/*.csv``)."""
    ref = load_reference()[case]
    m = _fit(ref["formula"], getattr(datasets, dataset)())
    reml = {**ref["reml"], "coef_names": list(ref["reml"]["fixef"]), "fixef": list(ref["reml"]["fixef"].values()),
            "se": list(ref["reml"]["se"].values())}
    _assert_matches(m, reml, case)
    assert m.theta == pytest.approx(as_list(ref["reml"]["theta"])[0], rel=VARIANCE_RTOL, abs=ESTIMATE_ATOL)


#: Coefficients that mean the same in R's level order (the packaged data) and in the
#: C-locale order ``frontend_reference.json`` was fitted with. Orthodont's Sex has R's levels
#: Male, Female (reference Male; C order: Female first), Exam's schgend mixed, boys, girls
#: (reference mixed; C order: boys first): those coefficients and the intercept differ.
#: Machines' Machine, warpbreaks' wool and Milk's Diet sort the same both ways.
FRONTEND_COMPARABLE = {
    "machines": ["(Intercept)", "MachineB", "MachineC"],
    "orthodont": ["age"],
    "warpbreaks": ["(Intercept)", "woolB"],
    "milk": ["(Intercept)", "Time", "Dietbarley+lupins", "Dietlupins"],
    "exam": ["standLRT"],
}


@pytest.mark.parametrize("case", sorted(FRONTEND_COMPARABLE))
def test_fit_matches_frontend_reference(case):
    """The lme4 values of ``frontend_reference.json``; the criterion and the variance
    components do not depend on the level order."""
    ref = FRONTEND[case]
    m = _fit(ref["formula"], getattr(datasets, case)())
    _assert_matches(m, ref, case, fixef_names=FRONTEND_COMPARABLE[case])
    assert (m.nobs, m.ngroups) == (ref["nobs"], ref["ngroups"]), case


# -- shipped with the package ---------------------------------------------------------------


def test_data_files_are_package_data_and_small():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    root = Path(datasets.__file__).parent
    files = sorted((root / "data").iterdir())
    with open(root.parent.parent / "pyproject.toml", "rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["reml_engine"]
    for path in files:
        relative = path.relative_to(root.parent)
        assert any(relative.match(pattern) for pattern in patterns), f"{relative} is not in pyproject's package-data"
    listed = {entry["file"] for entry in datasets._catalogue().values()} | {datasets.CATALOGUE}
    assert {p.name for p in files} == listed
    assert sum(p.stat().st_size for p in files) <= MAX_PACKAGE_DATA_BYTES
