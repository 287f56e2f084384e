"""Helpers of the metamorphic suite: the cases, their variants, and how two fits compare.

A metamorphic relation says that two ways of writing the same model give the same fit:
the rows in another order, a column in another dtype, the data in chunks or Parquet
files, a predictor shifted by a constant. The expected fit is always computed by the
library on the plain variant (an in-memory DataFrame of float64 and object columns),
which the reference tests check against lme4; for the reference cases the variants are
also held to lme4's criterion directly (:func:`assert_matches_lme4`).

Everything the tests vary lives here, in one place:

- :class:`Case` and :func:`reference_cases`: the single-term cases of
  ``tests/data/reference`` with their lme4 values;
- :func:`row_orders`, :func:`factor_variants`, :func:`numeric_variants`,
  :data:`INPUT_FORMS`, :func:`shift_variant`, :func:`scale_variant`: the variants;
- :func:`assert_same_fit` and its tolerances: the comparison;
- :func:`general_design`: formulaic called directly, the reference for the fast path;
- :func:`slow_unless`: which reference cases run by default and which in the slow suite.

What fails today, and why, is in :mod:`.known_issues`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import numbers
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "reference"

# -- tolerances ---------------------------------------------------------------------------

#: Criterion of two fits of the same model, relative: only the order of floating-point
#: sums differs between the variants.
CRITERION_RTOL = 1e-9
#: Estimates of two fits of the same model: fixed effects to this fraction of their
#: standard error, standard errors, variance components and random effects relative to
#: their scale. Looser than the criterion, which is flat at the optimum: an error d in
#: tau moves the criterion by O(d^2) but the estimates by O(d).
ESTIMATE_RTOL = 1e-7
#: Fitted values of two fits of the same model, relative to the spread of the response.
FITTED_RTOL = 1e-8
#: Agreement with lme4's stored criterion: its optimizer stops at about this precision.
LME4_CRITERION_ATOL = 1e-6

# -- the cases ----------------------------------------------------------------------------

_RANDOM_TERM = re.compile(r"\+?\s*\(\s*1\s*\|\s*([^()]+?)\s*\)\s*\+?")


@dataclass(frozen=True)
class Case:
    """A model and its data: ``formula`` with one ``(1|group)`` term.

    ``reference`` holds lme4's values (``reference.json``) for the reference cases, and
    is None for generated data. ``REML`` is the criterion generated cases are fitted by
    (the reference-case tests choose theirs).
    """

    name: str
    formula: str
    data: pd.DataFrame = field(repr=False)
    reference: dict | None = field(default=None, repr=False)
    REML: bool = True

    @property
    def response(self) -> str:
        return self.formula.split("~")[0].strip()

    @property
    def group(self) -> str:
        return _RANDOM_TERM.search(self.formula).group(1).strip()

    @property
    def fixed(self) -> str:
        """The fixed part, ``"y ~ x * f"``, written out here rather than by the library."""
        rhs = _RANDOM_TERM.sub(" + ", self.formula.split("~", 1)[1]).strip(" +")
        return f"{self.response} ~ {rhs or '1'}"

    @property
    def predictors(self) -> tuple[str, ...]:
        """Data columns of the fixed part other than the response."""
        import formulaic

        names = {str(v) for v in formulaic.Formula(self.fixed).required_variables}
        return tuple(c for c in self.data.columns if c in names and c != self.response)

    @property
    def numeric(self) -> tuple[str, ...]:
        """Numeric predictors of the fixed part."""
        return tuple(c for c in self.predictors if _is_number(self.data[c]))

    @property
    def factors(self) -> tuple[str, ...]:
        """Text predictors of the fixed part (categorical factors)."""
        return tuple(c for c in self.predictors if not _is_number(self.data[c]))

    @property
    def used(self) -> tuple[str, ...]:
        return (self.response, *self.predictors, self.group)

    @property
    def interactions(self) -> bool:
        return "*" in self.fixed or ":" in self.fixed

    def complete(self, data: pd.DataFrame | None = None) -> pd.DataFrame:
        """The rows with no missing value in the variables used (what lmer fits)."""
        data = self.data if data is None else data
        return data.loc[~data[list(self.used)].isna().any(axis=1).to_numpy()]

    def with_data(self, data: pd.DataFrame, suffix: str = "") -> Case:
        return Case(f"{self.name}{suffix}", self.formula, data, self.reference, self.REML)


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


@functools.cache
def reference_cases() -> tuple[Case, ...]:
    """The single-term reference cases (``cases.tsv``), with lme4's REML and ML values."""
    cases = pd.read_csv(REFERENCE / "cases.tsv", sep="\t")
    with open(REFERENCE / "reference.json") as fh:
        values = json.load(fh)
    return tuple(
        Case(row["name"], row["formula"], pd.read_csv(REFERENCE / row["file"]), values[row["name"]])
        for _, row in cases.iterrows()
    )


@functools.cache
def reference_fit(name: str, REML: bool = True) -> rl.LmerFit:
    """The in-memory fit of a reference case as stored (checked against lme4 by the
    reference tests and by :func:`assert_matches_lme4` here)."""
    case = next(c for c in reference_cases() if c.name == name)
    return fit_quietly(rl.lmer, case.formula, case.data, REML=REML)


_EXPECTED_FITS: dict = {}


def expected_fit(formula: str, data: pd.DataFrame, REML: bool = True) -> rl.LmerFit:
    """``rl.lmer(formula, data)`` of an expected (plain) data set, computed once per
    distinct data: many variants share their expected fit. Only ever read."""
    key = (formula, REML, tuple(map(str, data.dtypes)), tuple(data.columns),
           pd.util.hash_pandas_object(data, index=True).sum())
    if key not in _EXPECTED_FITS:
        _EXPECTED_FITS[key] = fit_quietly(rl.lmer, formula, data, REML=REML)
    return _EXPECTED_FITS[key]


# -- fitting and comparing ----------------------------------------------------------------


def fit_quietly(fitter: Callable, *args, **kwargs) -> rl.LmerFit:
    """``fitter(*args, **kwargs)`` with the library's data warnings (rows dropped, scales)
    silenced: the relations are about the numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return fitter(*args, **kwargs)


def label_key(label) -> str:
    """A group label as text, integral numbers without ``.0``: ``5``, ``"5"`` and ``5.0``
    name the same group once a column's dtype has changed."""
    if isinstance(label, numbers.Real) and not isinstance(label, bool) and float(label).is_integer():
        return str(int(label))
    return str(label)


def fitted_by_row(fit: rl.LmerFit) -> pd.Series:
    """The conditional fitted values of the rows fitted, indexed by the data's row labels
    (an array on the design's rows today; a Series with NaN for dropped rows per API.md)."""
    fitted = fit.fitted
    if isinstance(fitted, pd.Series):
        return fitted.dropna()
    return pd.Series(np.asarray(fitted), index=fit.design.row_index)


def assert_same_fit(actual: rl.LmerFit, expected: rl.LmerFit, what: str, *, labels: LabelMatch | None = None,
                    fitted: bool = False, digits: int | None = None) -> None:
    """``actual`` is the fit ``expected`` is: criterion, fixed effects, standard errors,
    variance components and random effects by group label.

    Parameters
    ----------
    labels : LabelMatch, optional
        How group labels of the two fits correspond (default: equal labels).
    fitted : bool
        Also compare the fitted values row by row (both fits kept their rows).
    digits : int, optional
        The digits ``actual`` says its estimates keep (a fit from statistics read once,
        see :func:`one_pass_expectation`): the comparison allows one digit fewer.
    """
    criterion_rtol, estimate_rtol = CRITERION_RTOL, ESTIMATE_RTOL
    if digits is not None:
        criterion_rtol, estimate_rtol = max(CRITERION_RTOL, 10.0 ** (1 - digits)), max(ESTIMATE_RTOL, 10.0 ** (1 - digits))
    assert list(actual.fixef.index) == list(expected.fixef.index), (
        f"{what}: coefficients {list(actual.fixef.index)} instead of {list(expected.fixef.index)}")
    assert (actual.nobs, actual.ngroups) == (expected.nobs, expected.ngroups), (
        f"{what}: nobs, ngroups {(actual.nobs, actual.ngroups)} instead of {(expected.nobs, expected.ngroups)}")
    assert actual.criterion == pytest.approx(expected.criterion, rel=criterion_rtol), f"{what}: criterion"
    assert_coefficients(actual, expected.fixef.to_numpy(), expected.se.to_numpy(), what, rtol=estimate_rtol)
    total = expected.sigma2 + expected.var_group
    assert actual.sigma2 == pytest.approx(expected.sigma2, rel=estimate_rtol), f"{what}: sigma2"
    assert actual.var_group == pytest.approx(expected.var_group, rel=estimate_rtol, abs=estimate_rtol * total), (
        f"{what}: var_group")
    assert_same_ranef(actual.ranef, expected.ranef, math.sqrt(total), what, labels=labels, rtol=estimate_rtol)
    assert_same_optima(actual, expected, what, rtol=criterion_rtol)
    if fitted:
        got, want = fitted_by_row(actual), fitted_by_row(expected)
        assert sorted(got.index) == sorted(want.index), f"{what}: rows fitted differ"
        spread = float(np.std(np.asarray(expected.design.y)))
        np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=0,
                                   atol=FITTED_RTOL * spread, err_msg=f"{what}: fitted values")


def assert_same_optima(actual: rl.LmerFit, expected: rl.LmerFit, what: str, rtol: float = CRITERION_RTOL) -> None:
    """The same local optima (kind and criterion), and the same one for lme4's start."""
    got = [(o.kind, o.criterion) for o in actual.optima]
    want = [(o.kind, o.criterion) for o in expected.optima]
    assert [k for k, _ in got] == [k for k, _ in want], f"{what}: local optima {got} instead of {want}"
    np.testing.assert_allclose([c for _, c in got], [c for _, c in want], rtol=rtol,
                               err_msg=f"{what}: criteria of the local optima")
    assert actual.lme4_default.criterion == pytest.approx(expected.lme4_default.criterion, rel=rtol), (
        f"{what}: the optimum lme4's start reaches")


def assert_coefficients(fit: rl.LmerFit, fixef: np.ndarray, se: np.ndarray, what: str,
                        rtol: float = ESTIMATE_RTOL) -> None:
    """Each coefficient within ``rtol`` of its standard error (or of its size, when
    larger), each standard error within ``rtol`` relative."""
    names = list(fit.fixef.index)
    error = np.abs(fit.fixef.to_numpy() - fixef) / np.maximum(se, np.abs(fixef))
    bad = [f"{n}: {a!r} instead of {e!r} (se {s:.3g})"
           for n, a, e, s, err in zip(names, fit.fixef.to_numpy(), fixef, se, error, strict=True)
           if not err <= rtol]
    assert not bad, f"{what}: fixed effects differ: " + "; ".join(bad)
    error = np.abs(fit.se.to_numpy() / se - 1.0)
    bad = [f"{n}: {a!r} instead of {e!r}" for n, a, e, err in zip(names, fit.se.to_numpy(), se, error, strict=True)
           if not err <= rtol]
    assert not bad, f"{what}: standard errors differ: " + "; ".join(bad)


@dataclass(frozen=True)
class LabelMatch:
    """How the group labels of a variant's fit map to the expected fit's: each side's
    labels go through its function before they are compared."""

    actual: Callable = staticmethod(lambda v: v)
    expected: Callable = staticmethod(lambda v: v)


#: Labels matched by their text: the variant changed the labels' type (5, "5", 5.0).
BY_TEXT = LabelMatch(label_key, label_key)


def assert_same_ranef(actual: pd.DataFrame, expected: pd.DataFrame, scale: float, what: str, *,
                      labels: LabelMatch | None = None, rtol: float = ESTIMATE_RTOL) -> None:
    """Conditional modes and variances matched by group label (not by position)."""
    labels = labels or LabelMatch()

    def keyed(frame, key):
        return frame.set_axis(pd.Index([key(v) for v in frame.index.to_numpy().tolist()], dtype=object), axis=0)

    got, want = keyed(actual, labels.actual), keyed(expected, labels.expected)
    assert not got.index.has_duplicates, f"{what}: group labels collide: {sorted(got.index[got.index.duplicated()])}"
    assert set(got.index) == set(want.index), (
        f"{what}: group labels differ: only in the variant {sorted(set(got.index) - set(want.index), key=str)[:5]}, "
        f"only expected {sorted(set(want.index) - set(got.index), key=str)[:5]}")
    got = got.loc[want.index]
    np.testing.assert_allclose(got["mode"].to_numpy(), want["mode"].to_numpy(), rtol=rtol,
                               atol=rtol * scale, err_msg=f"{what}: conditional modes")
    np.testing.assert_allclose(got["condvar"].to_numpy(), want["condvar"].to_numpy(), rtol=rtol,
                               atol=rtol * scale**2, err_msg=f"{what}: conditional variances")


def assert_matches_lme4(fit: rl.LmerFit, case: Case, what: str) -> None:
    """The variant's criterion is lme4's (the global optimum stored in reference.json)."""
    if case.reference is None:
        return
    expected = case.reference["reml" if fit.REML else "ml"]["criterion"]
    assert fit.criterion == pytest.approx(expected, abs=LME4_CRITERION_ATOL), f"{what}: lme4's criterion"


# -- row orders ---------------------------------------------------------------------------


def row_orders(data: pd.DataFrame, seed: int = 0, columns=None) -> dict[str, pd.DataFrame]:
    """A random permutation, and the rows sorted by each column (or each of ``columns``),
    ascending and descending.

    Row labels travel with their rows. Missing values sort last; a column of mixed
    types is sorted by its text.
    """
    orders = {"permuted": data.sample(frac=1.0, random_state=seed)}
    for column in data.columns if columns is None else columns:
        for ascending in (True, False):
            try:
                ordered = data.sort_values(column, ascending=ascending, kind="stable", na_position="last")
            except TypeError:
                ordered = data.sort_values(column, ascending=ascending, kind="stable", na_position="last",
                                           key=lambda s: s.map(str, na_action="ignore"))
            orders[f"sorted by {column} {'ascending' if ascending else 'descending'}"] = ordered
    return orders


# -- dtypes -------------------------------------------------------------------------------

#: Dtypes a grouping or factor column can come in. Each holds the same labels; the text
#: ones hold them as text.
FACTOR_KINDS = (
    "object", "category", "category, unused levels first", "category, unused levels last",
    "string[python]", "string[pyarrow]", "str", "int codes", "uint64 codes from 2**63",
)
#: Dtypes a numeric column can come in.
NUMERIC_KINDS = ("int64", "float32", "Float64", "Int64")

_UNUSED = ("!unused", "~unused")


def _labels(series: pd.Series) -> list:
    """The values as Python objects, missing ones as None."""
    return [None if pd.isna(v) else v for v in series.astype(object).tolist()]


def as_factor_kind(series: pd.Series, kind: str) -> pd.Series | None:
    """The column in dtype ``kind`` (see :data:`FACTOR_KINDS`), missing values kept
    missing; None where the kind cannot hold these labels."""
    labels = _labels(series)
    present = [v for v in labels if v is not None]
    text = [None if v is None else label_key(v) for v in labels]
    integral = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present)
    if kind == "object":
        return pd.Series(labels, index=series.index, dtype=object, name=series.name)
    if kind.startswith("category"):
        levels = sorted(set(present), key=lambda v: (str(type(v)), v))
        if kind.endswith("first"):
            levels = [_UNUSED[0], *levels]
        elif kind.endswith("last"):
            levels = [*levels, _UNUSED[1]]
        if kind != "category" and integral:
            return None  # unused levels of another type would change how the labels sort
        return pd.Series(pd.Categorical(labels, categories=levels), index=series.index, name=series.name)
    if kind in ("string[python]", "string[pyarrow]", "str"):
        return pd.Series(text, index=series.index, name=series.name).astype(kind)
    if kind in ("int codes", "uint64 codes from 2**63"):
        if not integral or len(present) < len(labels):
            return None
        if kind == "int codes":
            return pd.Series(np.asarray(present, dtype=np.int64), index=series.index, name=series.name)
        codes = pd.factorize(np.asarray(present), sort=True)[0].astype(np.uint64)
        return pd.Series(codes + np.uint64(2**63), index=series.index, name=series.name)
    raise ValueError(f"unknown factor kind {kind!r}")


@dataclass(frozen=True)
class Variant:
    """Data that must fit as ``expected`` does, with the group labels matched by
    ``labels``."""

    name: str
    data: pd.DataFrame = field(repr=False)
    expected: pd.DataFrame = field(repr=False)
    labels: LabelMatch | None = None


def _uint64_labels(label) -> int:
    return int(label) - 2**63


def factor_variants(case: Case, columns) -> list[Variant]:
    """Each column in each of :data:`FACTOR_KINDS`, against the same labels as object."""
    variants = []
    for column in columns:
        plain = case.data.assign(**{column: as_factor_kind(case.data[column], "object")})
        for kind in FACTOR_KINDS:
            values = as_factor_kind(case.data[column], kind)
            if values is None:
                continue
            data = case.data.assign(**{column: values})
            if kind == "uint64 codes from 2**63":
                # New labels, the same groups: against their codes 0, 1, ... as int64.
                codes = case.data.assign(**{column: (values.to_numpy() - np.uint64(2**63)).astype(np.int64)})
                variants.append(Variant(f"{column} as {kind}", data, codes, LabelMatch(actual=_uint64_labels)))
            else:
                text = kind.startswith("str") or kind == "int codes"
                variants.append(Variant(f"{column} as {kind}", data, plain, BY_TEXT if text else None))
    return variants


def as_numeric_kind(series: pd.Series, kind: str) -> tuple[pd.Series, pd.Series] | None:
    """(the column in dtype ``kind``, the float64 column with the same values), or None
    where the kind cannot hold the values exactly (int of a fractional column)."""
    values = series.astype(np.float64)
    present = values.dropna()
    integral = bool(np.all(present == np.round(present)))
    if kind == "int64":
        if not integral or present.size < values.size:
            return None
        return values.astype(np.int64), values
    if kind == "float32":
        rounded = values.astype(np.float32)
        return rounded, rounded.astype(np.float64)
    if kind == "Float64":
        return values.astype("Float64"), values
    if kind == "Int64":
        if not integral:
            return None
        return values.astype("Int64"), values
    raise ValueError(f"unknown numeric kind {kind!r}")


def numeric_variants(case: Case, columns) -> list[Variant]:
    """Each numeric column in each of :data:`NUMERIC_KINDS`, against the same values as
    float64."""
    variants = []
    for column in columns:
        for kind in NUMERIC_KINDS:
            pair = as_numeric_kind(case.data[column], kind)
            if pair is not None:
                variants.append(Variant(f"{column} as {kind}", case.data.assign(**{column: pair[0]}),
                                        case.data.assign(**{column: pair[1]})))
    return variants


# -- input forms --------------------------------------------------------------------------


def split_rows(data: pd.DataFrame, pieces: int, seed: int = 0) -> list[pd.DataFrame]:
    """The rows permuted (so that groups straddle chunks) and cut into ``pieces`` chunks of
    unequal sizes."""
    permuted = data.sample(frac=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(data)), size=min(pieces, len(data)) - 1, replace=False))
    bounds = [0, *cuts.tolist(), len(data)]
    return [permuted.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def declared_levels(case: Case, data: pd.DataFrame) -> dict[str, list]:
    """``levels=`` for a one-shot iterator: the sorted levels of each text factor among the
    complete rows (what a user who knows the data would pass)."""
    complete = case.complete(data)
    return {c: sorted(complete[c].unique()) for c in case.factors}


def _record_array(frame: pd.DataFrame, path: Path) -> np.memmap:
    """The frame as a memory-mapped record array (text as fixed-width unicode)."""
    fields = []
    for column in frame.columns:
        values = frame[column]
        if _is_number(values):
            fields.append((column, values.to_numpy().dtype))
        else:
            width = max(1, int(values.map(len).max()))
            fields.append((column, f"U{width}"))
    records = np.memmap(path, dtype=np.dtype(fields), mode="w+", shape=(len(frame),))
    for column in frame.columns:
        records[column] = frame[column].to_numpy()
    records.flush()
    return np.memmap(path, dtype=np.dtype(fields), mode="r", shape=(len(frame),))


def _rows_per_piece(n: int, pieces: int) -> int:
    return max(1, -(-n // pieces))


def fit_chunk_list(case, data, tmp_path, REML=True, pieces=4):
    """A list of chunks, with zero-row chunks first and in the middle."""
    chunks = split_rows(data, pieces)
    empty = data.iloc[:0]
    chunks = [empty, *chunks[: len(chunks) // 2], empty, *chunks[len(chunks) // 2:]]
    return fit_quietly(rl.lmer, case.formula, chunks, REML=REML)


def fit_chunk_function(case, data, tmp_path, REML=True, pieces=3):
    chunks = split_rows(data, pieces, seed=1)
    return fit_quietly(rl.lmer, case.formula, lambda: iter(chunks), REML=REML)


def fit_chunk_iterator(case, data, tmp_path, REML=True, pieces=5):
    from reml_engine.scaleout.chunked import lmer_chunks

    chunks = split_rows(data, pieces, seed=2)
    return fit_quietly(lmer_chunks, case.formula, (c for c in chunks), REML=REML,
                       levels=declared_levels(case, data))


def fit_csv_reader(case, data, tmp_path, REML=True, pieces=4):
    """``pd.read_csv(path, chunksize=...)``, a one-shot reader: compared with the fit of
    ``pd.read_csv(path)`` (see :func:`expected_for_form`)."""
    from reml_engine.scaleout.chunked import lmer_chunks

    path = tmp_path / "data.csv"
    data.sample(frac=1.0, random_state=3).to_csv(path, index=False)
    reader = pd.read_csv(path, chunksize=_rows_per_piece(len(data), pieces))
    return fit_quietly(lmer_chunks, case.formula, reader, REML=REML, levels=declared_levels(case, data))


def fit_memmap(case, data, tmp_path, REML=True, pieces=3):
    from reml_engine.scaleout.chunked import lmer_chunks

    records = _record_array(case.complete(data)[list(case.used)], tmp_path / "records.dat")
    return fit_quietly(lmer_chunks, case.formula, records, REML=REML,
                       chunk_rows=_rows_per_piece(len(records), pieces))


def fit_parquet(case, data, tmp_path, REML=True, pieces=3):
    return fit_parquet_files(case, split_rows(data, pieces, seed=4), tmp_path, REML=REML)


def fit_parquet_files(case, chunks: list[pd.DataFrame], tmp_path: Path, REML=True):
    """One Parquet file per chunk (each with its own schema), fitted from their glob."""
    for i, chunk in enumerate(chunks):
        chunk.to_parquet(tmp_path / f"part-{i}.parquet")
    with dask_synchronous():
        return fit_quietly(rl.lmer, case.formula, str(tmp_path / "part-*.parquet"), REML=REML)


def fit_dask(case, data, tmp_path, REML=True, pieces=3):
    import dask.dataframe as dd

    frame = dd.from_pandas(data.sample(frac=1.0, random_state=5), npartitions=pieces, sort=False)
    with dask_synchronous():
        return fit_quietly(rl.lmer, case.formula, frame, REML=REML)


def array_design(case: Case, data: pd.DataFrame):
    """X (formulaic's general design), y, group labels and names of the complete rows."""
    complete = case.complete(data)
    matrices = general_design(case.fixed, complete)
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in matrices.rhs.columns]
    X = matrices.rhs.to_numpy(dtype=np.float64)
    y = matrices.lhs.to_numpy(dtype=np.float64)[:, 0]
    return X, y, complete[case.group].to_numpy(), names


def fit_arrays(case, data, tmp_path, REML=True, pieces=1):
    X, y, groups, names = array_design(case, data)
    return fit_quietly(rl.fit, X, y, groups, REML=REML, names=names)


def fit_memmap_arrays(case, data, tmp_path, REML=True, pieces=3):
    from reml_engine.scaleout.chunked import fit_arrays as chunked_fit_arrays

    X, y, groups, names = array_design(case, data)
    mapped = []
    for name, array in (("X", X), ("y", y)):
        out = np.memmap(tmp_path / f"{name}.dat", dtype=array.dtype, mode="w+", shape=array.shape)
        out[:] = array
        out.flush()
        mapped.append(np.memmap(tmp_path / f"{name}.dat", dtype=array.dtype, mode="r", shape=array.shape))
    return fit_quietly(chunked_fit_arrays, mapped[0], mapped[1], groups, REML=REML, names=names,
                       chunk_rows=_rows_per_piece(len(y), pieces))


#: How the same rows can be handed to the library, each a function
#: ``(case, data, tmp_path, REML, pieces) -> fit`` reading the rows in about ``pieces``
#: chunks, files or partitions (see reml_engine.scaleout.chunked and .dask).
INPUT_FORMS: dict[str, Callable] = {
    "list of chunks": fit_chunk_list,
    "function returning chunks": fit_chunk_function,
    "one-shot chunk iterator": fit_chunk_iterator,
    "read_csv chunks": fit_csv_reader,
    "memory-mapped record array": fit_memmap,
    "arrays, rl.fit": fit_arrays,
    "memory-mapped arrays, fit_arrays": fit_memmap_arrays,
    "Parquet files": fit_parquet,
    "Dask DataFrame": fit_dask,
}
#: The forms that go through Dask (a fraction of a second per fit).
DASK_FORMS = ("Parquet files", "Dask DataFrame")


def expected_data_for_form(form: str, data: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The data whose in-memory fit a form must reproduce: the data itself, or for a CSV
    reader the whole file read at once (the reader's chunks may infer other dtypes)."""
    if form == "read_csv chunks":
        path = tmp_path / "whole.csv"
        data.to_csv(path, index=False)
        return pd.read_csv(path)
    return data


def expected_for_form(form: str, case: Case, data: pd.DataFrame, tmp_path: Path, REML: bool = True):
    """The in-memory fit a form must reproduce (:func:`expected_data_for_form`)."""
    return expected_fit(case.formula, expected_data_for_form(form, data, tmp_path), REML=REML)


#: The forms that read the rows once: no second pass in a better basis.
ONE_PASS_FORMS = ("one-shot chunk iterator", "read_csv chunks")
_UNDECIDED = re.compile(r"cannot tell from a linear combination of the earlier columns: (.*?) keep at most")
_DIGITS_KEPT = re.compile(r"may keep only about (\d+) digits")


def one_pass_expectation(fit: rl.LmerFit, expected: rl.LmerFit, case: Case, data: pd.DataFrame):
    """What a fit from rows read once must equal, and to how many digits.

    Such a fit cannot read the rows again in a better basis, and says what that costs
    (``reml_engine.checks.undecided_columns_message`` and the conditioning notes of
    ``reml_engine.model``): columns whose residual is within the rounding of one-pass
    cross-products are dropped, named; nearly collinear columns keep fewer digits,
    counted. It must then equal the in-memory fit of ``data`` without the columns it
    names (formulaic's design and ``rl.fit``), to the digits it states (None: all).
    """
    notes = " ".join(fit.notes)
    digits = [int(d) for d in _DIGITS_KEPT.findall(notes)]
    undecided = [n for found in _UNDECIDED.findall(notes) for n in re.findall(r"'((?:[^'\\]|\\.)*)'", found)]
    extra = [n for n in undecided if n not in expected.dropped_columns]  # the others: the same decision
    if extra:
        X, y, groups, names = array_design(case, data)
        keep = [j for j, n in enumerate(names) if n not in expected.dropped_columns and n not in extra]
        assert len(keep) == len(names) - len(expected.dropped_columns) - len(extra), f"{extra} are not columns"
        expected = fit_quietly(rl.fit, X[:, keep], y, groups, REML=expected.REML, names=[names[j] for j in keep])
    return expected, (min(digits) if digits else None)


def form_applies(form: str, case: Case, data: pd.DataFrame) -> bool:
    """Whether a form can hold the data: memory-mapped records hold no missing text."""
    if form == "memory-mapped record array":
        return all(_is_number(data[c]) or not data[c].isna().any() for c in case.used)
    return True


def with_int_ids(case: Case) -> Case:
    """The case with its group labels replaced by integer codes (the same groups)."""
    codes = pd.factorize(case.data[case.group], sort=True)[0].astype(np.int64) * 7 + 5
    return case.with_data(case.data.assign(**{case.group: codes}), ", int ids")


def drifting_chunks(case: Case, column: str, other_dtype, pieces: int = 4) -> list[pd.DataFrame]:
    """Chunks whose ``column`` alternates between its dtype and ``other_dtype`` (ids read as
    int64 in one chunk and as text in the next, a count as int64 then float64)."""
    chunks = split_rows(case.data, pieces, seed=6)
    return [c if i % 2 == 0 else c.astype({column: other_dtype}) for i, c in enumerate(chunks)]


def csv_with_late_text_id(case: Case, path: Path) -> int:
    """A CSV of an int-id case whose last rows hold one group with a text id ("x" + id):
    ``read_csv(chunksize=...)`` reads the ids as int64 in the first chunks and as text
    in the last one, while the whole file reads as text. Returns the chunk size."""
    data = case.data.sample(frac=1.0, random_state=7)
    ids = data[case.group]
    late = ids.iloc[0]
    data = pd.concat([data[ids != late], data[ids == late]])
    data[case.group] = [f"x{v}" if v == late else v for v in data[case.group]]
    data.to_csv(path, index=False)
    return max(2, len(data) // 3)


# -- reparametrizations -------------------------------------------------------------------


@dataclass(frozen=True)
class Reparametrization:
    """Data ``variant`` fits the model of ``base`` with columns ``X_variant = X_base M``:
    coefficients ``M^-1 beta``, covariance ``M^-1 V M^-T``, REML criterion moved by
    ``2 log|det M|`` (the log-determinant term of REML), ML criterion and fitted values
    unchanged."""

    base: pd.DataFrame
    variant: pd.DataFrame
    column: str
    shift: float = 0.0
    scale: float = 1.0

    def transform(self, names: list[str]) -> np.ndarray:
        """M for the coefficient names: a column ``x:z`` becomes ``(s x + c):z =
        s x:z + c z``, ``z`` being the rest of the term (the intercept for ``x`` alone)."""
        M = np.eye(len(names))
        for j, name in enumerate(names):
            parts = name.split(":")
            if self.column not in parts:
                continue
            M[j, j] = self.scale
            rest = ":".join(p for p in parts if p != self.column) or "(Intercept)"
            if self.shift:
                if rest not in names:
                    raise ValueError(f"shifting {self.column!r} in {name!r} needs column {rest!r}")
                M[names.index(rest), j] = self.shift
        return M

    def criterion_change(self, names: list[str], REML: bool) -> float:
        return 2.0 * math.log(abs(np.linalg.det(self.transform(names)))) if REML else 0.0


def shift_variant(data: pd.DataFrame, column: str, shift: float) -> Reparametrization:
    """``column + shift`` against the same rounded values shifted back, so that the two
    data sets differ by the shift exactly (``fl(x + c) - c`` is exact when ``|x| << c``)."""
    shifted = data[column].astype(np.float64) + shift
    return Reparametrization(data.assign(**{column: shifted - shift}), data.assign(**{column: shifted}),
                             column, shift=shift)


#: A column whose mean is this many standard deviations from 0 is far from it: rounding
#: ``x * 7.3`` moves each value by up to eps relative, that is by eps times this ratio of
#: the column's spread (see :func:`scale_variant`).
FAR_FROM_ZERO = 300.0


def far_from_zero(values: pd.Series, ratio: float = FAR_FROM_ZERO) -> bool:
    """The column's mean is ``ratio`` standard deviations or more from 0."""
    values = values.astype(np.float64).dropna()
    spread = float(values.std()) if len(values) > 1 else 0.0
    return abs(float(values.mean())) >= ratio * spread


def scale_variant(data: pd.DataFrame, column: str, scale: float) -> Reparametrization:
    """``column * scale`` against the column itself. Exact for a power of two; another
    scale rounds each value by up to eps relative, which moves a column whose mean is r
    standard deviations from 0 by eps * r of its spread (use powers of two there)."""
    values = data[column].astype(np.float64)
    return Reparametrization(data.assign(**{column: values}), data.assign(**{column: values * scale}),
                             column, scale=scale)


def exactly_centred(values: pd.Series) -> pd.Series:
    """The column minus its rounded median when every value lies within a factor 2 of it
    (then each difference is exact, Sterbenz's lemma): a predictor far from 0 as the same
    column space, well conditioned. Otherwise the column itself."""
    values = values.astype(np.float64)
    centre = float(np.round(np.nanmedian(values)))
    present = values.dropna()
    if centre == 0.0 or not ((present / centre >= 0.5) & (present / centre <= 2.0)).all():
        return values
    return values - centre


def _residual_norms(X: np.ndarray, earlier: list[int], j: int) -> float:
    """Norm of the residual of column j (centred; the intercept column 0 as it is) on the
    ``earlier`` columns, by numpy's least squares (Householder QR of the rows)."""
    centred = X - X.mean(axis=0)
    centred[:, 0] = X[:, 0]
    if not earlier:
        return float(np.linalg.norm(centred[:, j]))
    coef = np.linalg.lstsq(centred[:, earlier], centred[:, j], rcond=None)[0]
    return float(np.linalg.norm(centred[:, j] - centred[:, earlier] @ coef))


def lme4_rank_drops(X: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> list[int]:
    """The columns of X that lme4's rank rule, as the library documents it, drops: a
    column whose residual on the kept earlier columns is at most ``RANK_TOL`` of its
    centred norm (or ``ROUNDING_TOL`` of its raw norm) goes.

    Column j of X is ``scale[j]`` times column j of ``reference`` plus a combination of
    earlier columns, so its residuals are those of the well-conditioned ``reference``
    times ``scale[j]``: no rounding of X enters the decision.
    """
    from reml_engine.core.identifiability import RANK_TOL, ROUNDING_TOL

    kept: list[int] = []
    dropped: list[int] = []
    for j in range(X.shape[1]):
        raw = float(np.linalg.norm(X[:, j]))
        centred = raw if j == 0 else float(np.linalg.norm(X[:, j] - X[:, j].mean()))
        resid = abs(scale[j]) * _residual_norms(reference, kept, j)
        if raw > 0 and centred > 0 and resid > max(RANK_TOL * centred, ROUNDING_TOL * raw):
            kept.append(j)
        else:
            dropped.append(j)
    return dropped


def on_common_columns(case: Case, rep: Reparametrization, base: rl.LmerFit, variant: rl.LmerFit, what: str):
    """(base, variant) fitted on the columns both keep.

    A shift far from 0 can make an interaction with the shifted predictor rank deficient
    at lme4's tolerance, as lme4 says (its residual keeps its size while its centred norm
    grows with the shift): each fit must drop what the rule says
    (:func:`lme4_rank_drops`, from exactly centred data); where they differ, the fit that
    kept more is replaced by the fit of its design restricted to the common columns
    (formulaic's design and ``rl.fit``), which the relation then holds to the other."""
    X_base, y, groups, names = array_design(case, rep.base)
    X_variant = array_design(case, rep.variant)[0]
    if names[0] != "(Intercept)":
        return base, variant
    X_reference = array_design(case, rep.base.assign(**{rep.column: exactly_centred(rep.base[rep.column])}))[0]
    scale = np.diag(rep.transform(names))
    drops = {}
    for label, fit, X, factor in (("base", base, X_base, np.ones(len(names))), ("variant", variant, X_variant, scale)):
        drops[label] = tuple(names[j] for j in lme4_rank_drops(X, X_reference, factor))
        assert tuple(fit.dropped_columns) == drops[label], (
            f"{what}: the {label} fit drops {fit.dropped_columns}, lme4's rule {drops[label]}")
    if drops["base"] == drops["variant"]:
        return base, variant
    common = [j for j, n in enumerate(names) if n not in drops["base"] and n not in drops["variant"]]
    fewer = [names[j] for j in common]
    if len(drops["base"]) < len(drops["variant"]):
        base = fit_quietly(rl.fit, X_base[:, common], y, groups, REML=base.REML, names=fewer)
    else:
        variant = fit_quietly(rl.fit, X_variant[:, common], y, groups, REML=variant.REML, names=fewer)
    return base, variant


def assert_reparametrized(variant: rl.LmerFit, base: rl.LmerFit, rep: Reparametrization, what: str,
                          case: Case | None = None) -> None:
    """The variant's fit is the base fit mapped through ``M`` (see :class:`Reparametrization`).

    With ``case``, columns that lme4's rank rule drops from one side only are first left
    out of both (:func:`on_common_columns`).

    The coefficients are compared where they are large: the fit with the predictor
    nearer 0 is mapped to the other's parametrization, since mapping back would cancel
    digits (an intercept's variance at x ~ 2024 is ~1e10 times the centred one) and
    blame the fit for the test's own rounding.
    """
    if case is not None:
        base, variant = on_common_columns(case, rep, base, variant, what)
    names = list(base.fixef.index)
    assert list(variant.fixef.index) == names, f"{what}: coefficients differ"
    M = rep.transform(names)
    change = rep.criterion_change(names, base.REML)
    assert variant.criterion == pytest.approx(base.criterion + change, rel=CRITERION_RTOL,
                                              abs=CRITERION_RTOL * abs(change)), f"{what}: criterion"
    variant_is_far = np.nanmean(np.abs(rep.variant[rep.column])) >= np.nanmean(np.abs(rep.base[rep.column]))
    near, far, to_far = (base, variant, np.linalg.inv(M)) if variant_is_far else (variant, base, M)
    vcov = to_far @ near.vcov.to_numpy() @ to_far.T
    assert_coefficients(far, to_far @ near.fixef.to_numpy(), np.sqrt(np.diag(vcov)), what)
    total = base.sigma2 + base.var_group
    assert variant.sigma2 == pytest.approx(base.sigma2, rel=ESTIMATE_RTOL), f"{what}: sigma2"
    assert variant.var_group == pytest.approx(base.var_group, rel=ESTIMATE_RTOL, abs=ESTIMATE_RTOL * total), (
        f"{what}: var_group")
    assert_same_ranef(variant.ranef, base.ranef, math.sqrt(total), what)
    got, want = fitted_by_row(variant), fitted_by_row(base)
    if variant.design.row_index is None or base.design.row_index is None:
        # a fit of arrays (on_common_columns): the same complete rows in the same order
        got, want = got.set_axis(range(len(got))), want.set_axis(range(len(want)))
    spread = float(np.std(np.asarray(base.design.y)))
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=0, atol=FITTED_RTOL * spread,
                               err_msg=f"{what}: fitted values")


#: Reference cases of the default run where a relation is costly: a factor, an
#: interaction and text labels (sim_unbalanced); a numeric predictor and int labels
#: (sleepstudy); no predictor (dyestuff). The others run in the slow suite.
FAST_CASES = ("sim_unbalanced", "sleepstudy", "dyestuff")


def slow_unless(params, fast=FAST_CASES) -> list:
    """The params (whose first value is a Case) of cases not in ``fast`` marked slow."""
    return [p if p.values[0].name.split(",")[0] in fast
            else pytest.param(*p.values, marks=[*p.marks, pytest.mark.slow], id=p.id) for p in params]


# -- the general design -------------------------------------------------------------------


def model_frame(data: pd.DataFrame) -> pd.DataFrame:
    """The rows as R's ``model.frame`` hands them to ``model.matrix`` (call it on the
    complete rows): text in pandas' string dtypes as object columns (formulaic itself
    would take them for numbers), categoricals without the categories no row takes
    (``drop.unused.levels = TRUE`` in lme4, so the reference level is the first one
    used)."""
    frame = data.astype({c: object for c in data.columns if isinstance(data[c].dtype, pd.StringDtype)})
    unused = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)
              and len(frame[c].cat.categories) > frame[c].nunique(dropna=True)]
    return frame.assign(**{c: frame[c].cat.remove_unused_categories() for c in unused})


def general_design(fixed: str, data: pd.DataFrame):
    """formulaic's model matrices of the model frame (:func:`model_frame`), called
    directly: the general path the fast one must match, and the design lme4 builds."""
    import formulaic

    with np.errstate(all="ignore"):
        return formulaic.model_matrix(fixed, model_frame(data), na_action="ignore")


def assert_same_design(case, data, what: str) -> None:
    """``model_matrices`` (on the model frame, the fast path's input) and ``build_design``
    (on the data as given) against formulaic on the model frame of the complete rows."""
    complete = case.complete(data)
    general = general_design(case.fixed, complete)
    names = [str(c) for c in general.rhs.columns]
    X = general.rhs.to_numpy(dtype=np.float64)

    from reml_engine.frontend.design import build_design
    from reml_engine.frontend.fast_design import model_matrices

    fast = model_matrices(case.fixed, model_frame(complete))
    assert [str(c) for c in fast.rhs.columns] == names, f"{what}: model_matrices columns"
    np.testing.assert_array_equal(fast.rhs.to_numpy(dtype=np.float64), X, err_msg=f"{what}: model_matrices values")
    np.testing.assert_array_equal(np.ravel(fast.lhs.to_numpy(dtype=np.float64)),
                                  general.lhs.to_numpy(dtype=np.float64)[:, 0], err_msg=f"{what}: response")
    # The spec that later encodes new data (predict) must know every level.
    new = model_frame(complete.iloc[::-1])
    np.testing.assert_array_equal(
        np.asarray(fast.rhs.model_spec.get_model_matrix(new, na_action="ignore").to_numpy(dtype=np.float64)),
        np.asarray(general.rhs.model_spec.get_model_matrix(new, na_action="ignore").to_numpy(dtype=np.float64)),
        err_msg=f"{what}: model spec on new data")

    design = fit_quietly(build_design, case.formula, data)
    assert list(design.column_names) == ["(Intercept)" if n == "Intercept" else n for n in names], (
        f"{what}: build_design columns")
    np.testing.assert_array_equal(design.X, X, err_msg=f"{what}: build_design values")


@contextlib.contextmanager
def dask_synchronous():
    """Dask on the calling thread: the same fit, without thread start-up per pass."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield
