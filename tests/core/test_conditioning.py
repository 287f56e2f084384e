"""A predictor far from 0 inside an interaction or a square: the fit is the model the
user wrote, to the precision of the stored values.

``x ~ N(1e6, 1)`` (epoch seconds, say) makes ``x:f`` about ``1e6 f`` and ``x**2`` about
``2e6 x``: centring each column alone leaves them nearly collinear, and a one-pass
cross-product loses up to 12 digits. The outside facts:

* lme4 on the exactly centred predictor ``xc = x - 1e6`` (``tests/data/r/make_far_from_zero.R``):
  the same column space, so the same REML criterion and the same slopes;
* the exact rational criterion of ``tests/oracle.py`` on the stored columns (no rounding
  before the final logarithms).

Tolerances: moving every ``x`` by one unit in the last place (1.2e-10 at 1e6) moves the
REML criterion of these data by about 1e-9, so nothing computed from the stored values
can be held to better than that; ``CRITERION_ATOL`` allows ten times it.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from oracle import exact_criterion

import reml_engine as rl
from reml_engine.core.kernels import (
    group_sums_and_cross_parallel,
    group_sums_and_cross_transformed,
    within_cross_transformed,
)
from reml_engine.core.statistics import (
    COLLINEARITY_TOL,
    compute_group_stats,
    conditioning_transform,
    kept_fractions,
)
from reml_engine.errors import ModelDataWarning
from reml_engine.frontend.groups import factorize_groups

DATA = Path(__file__).parents[1] / "data"
REF = json.loads((DATA / "far_from_zero.json").read_text())
SHIFT = REF["_about"]["shift"]

#: Ten times the change of the criterion when every x moves by one ulp (see above).
CRITERION_ATOL = 1e-8
#: lme4's optimizer stops within about this of theta (relative).
LME4_THETA_RTOL = 1e-6
#: lme4's estimates at its theta, in standard errors.
LME4_COEF_IN_SE = 1e-5


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    d = pd.read_csv(DATA / "far_from_zero.csv")
    return d.assign(xc=d["x"] - SHIFT)


def _quiet_fit(formula, data, REML=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelDataWarning)
        return rl.lmer(formula, data, REML=REML)


def _user_from_centred(columns, coef):
    """lme4's coefficients of ``xc * f`` as coefficients of ``x * f`` (x = xc + SHIFT)."""
    c = dict(zip(columns, coef, strict=True))
    return {
        "(Intercept)": c["(Intercept)"] - SHIFT * c["xc"],
        "x": c["xc"],
        "f[T.b]": c["fb"] - SHIFT * c["xc:fb"],
        "f[T.c]": c["fc"] - SHIFT * c["xc:fc"],
        "x:f[T.b]": c["xc:fb"],
        "x:f[T.c]": c["xc:fc"],
    }


@pytest.mark.parametrize("REML", [True, False])
def test_interaction_far_from_zero_is_lme4_on_the_centred_predictor(data, REML):
    ref = REF[f"interaction_centred_{'reml' if REML else 'ml'}"]
    m = _quiet_fit("y ~ x*f + (1|g)", data, REML)
    assert m.criterion == pytest.approx(ref["criterion"], abs=CRITERION_ATOL)
    assert m.theta == pytest.approx(ref["theta"], rel=LME4_THETA_RTOL)
    assert np.sqrt(m.sigma2) == pytest.approx(ref["sigma"], rel=LME4_THETA_RTOL)
    expected = _user_from_centred(ref["columns"], ref["fixef"])
    for name, value in expected.items():
        # The user's intercept and f coefficients carry 1e6 times a slope, and so do
        # their standard errors.
        assert abs(m.fixef[name] - value) <= LME4_COEF_IN_SE * m.se[name], name
    se = dict(zip(ref["columns"], ref["se"], strict=True))
    for name in ("x", "x:f[T.b]", "x:f[T.c]"):
        assert m.se[name] == pytest.approx(se[name.replace("x", "xc").replace("f[T.", "f").rstrip("]")], rel=1e-6)


@pytest.mark.parametrize("formula", ["y ~ x*f + (1|g)", "y ~ x + I(x**2) + (1|g)"])
def test_far_from_zero_matches_the_exact_rational_criterion(data, formula):
    """At the engine's tau, the criterion and beta equal the exact rational computation
    on the stored columns, and tau is its minimum (the neighbours are higher)."""
    m = _quiet_fit(formula, data)
    groups = data["g"].to_numpy()
    exact = exact_criterion(m.design.X, m.design.y, groups, m.tau)
    assert m.criterion == pytest.approx(exact["criterion"], abs=CRITERION_ATOL)
    np.testing.assert_array_less(np.abs(m.fixef.to_numpy() - exact["beta"]), 1e-6 * m.se.to_numpy())
    for factor in (1 - 1e-3, 1 + 1e-3):
        assert exact_criterion(m.design.X, m.design.y, groups, m.tau * factor)["criterion"] > exact["criterion"]


def _chunked_forms(data: pd.DataFrame, tmp_path: Path) -> dict:
    """The rows in forms that can be read again: a list of chunks, a function returning
    them, a memory-mapped record array, Parquet files, a Dask DataFrame, and X, y, groups
    as memory-mapped arrays (fit_arrays)."""
    import dask
    import dask.dataframe as dd

    from reml_engine.scaleout.chunked import fit_arrays, lmer_chunks

    chunks = [data.iloc[:37], data.iloc[37:250], data.iloc[250:]]
    for i, chunk in enumerate(chunks):
        chunk.to_parquet(tmp_path / f"part-{i}.parquet")
    records = data[["y", "x", "f", "g"]].to_records(index=False).astype(
        [("y", "f8"), ("x", "f8"), ("f", "U1"), ("g", "i8")])
    mapped = np.memmap(tmp_path / "records.dat", dtype=records.dtype, mode="w+", shape=records.shape)
    mapped[:] = records
    design = _quiet_fit("y ~ x*f + (1|g)", data).design
    X = np.memmap(tmp_path / "X.dat", dtype=np.float64, mode="w+", shape=design.X.shape)
    X[:] = design.X

    def dask_fit(frame):
        with dask.config.set(scheduler="synchronous"):
            return rl.lmer("y ~ x*f + (1|g)", frame)

    return {
        "list of chunks": lambda: lmer_chunks("y ~ x*f + (1|g)", chunks),
        "function returning chunks": lambda: lmer_chunks("y ~ x*f + (1|g)", lambda: iter(chunks)),
        "memory-mapped records": lambda: lmer_chunks("y ~ x*f + (1|g)", mapped, chunk_rows=150),
        "Parquet files": lambda: dask_fit(str(tmp_path / "part-*.parquet")),
        "Dask DataFrame": lambda: dask_fit(dd.from_pandas(data, npartitions=3, sort=False)),
        "memory-mapped arrays": lambda: fit_arrays(X, design.y, data["g"].to_numpy(), names=design.column_names,
                                                   chunk_rows=150),
    }


def test_chunks_that_can_be_read_again_are_the_in_memory_fit(data, tmp_path):
    """The rank check and the conditioning read the chunks again in a better basis, as
    the in-memory fit reads its rows: x:f is kept, the criterion is lme4's on the centred
    predictor, the slopes are the in-memory fit's (a one-pass fit lost 12 digits)."""
    ref = REF["interaction_centred_reml"]
    in_memory = _quiet_fit("y ~ x*f + (1|g)", data)
    for form, fit in _chunked_forms(data[["y", "x", "f", "g"]], tmp_path).items():
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", ModelDataWarning)
            m = fit()
        assert not [w for w in record if "digits" in str(w.message) or "cannot tell" in str(w.message)], form
        assert m.parametrization.is_reparametrized, form
        assert m.criterion == pytest.approx(ref["criterion"], abs=CRITERION_ATOL), form
        assert m.criterion == pytest.approx(in_memory.criterion, abs=CRITERION_ATOL), form
        for name in ("x", "x:f[T.b]", "x:f[T.c]"):
            assert abs(m.fixef[name] - in_memory.fixef[name]) <= 1e-6 * in_memory.se[name], (form, name)
            assert m.se[name] == pytest.approx(in_memory.se[name], rel=1e-7), (form, name)


def test_square_of_far_predictor_agrees_with_lme4_on_the_centred_square(data):
    """lme4's I(xc^2) differs from the stored x**2 only by the rounding of x**2 (1e-4 at
    1e12, against a spread of about 2): the fits agree to that."""
    ref = REF["square_centred_reml"]
    m = _quiet_fit("y ~ x + I(x**2) + (1|g)", data)
    assert m.criterion == pytest.approx(ref["criterion"], abs=1e-2)
    assert m.fixef["I(x ** 2)"] == pytest.approx(ref["fixef"][2], abs=0.01 * ref["se"][2])
    assert m.theta == pytest.approx(ref["theta"], rel=1e-3)


@pytest.fixture(scope="module")
def large():
    """20,000 rows: the one-pass statistics crashed the fit (no optimum left)."""
    rng = np.random.default_rng(1)
    n, G = 20_000, 300
    g = rng.integers(0, G, n)
    f = rng.choice(["a", "b", "c"], n)
    x = rng.normal(SHIFT, 1, n)
    y = 2 + 0.5 * (x - SHIFT) + (f == "b") + 0.7 * (f == "c") * (x - SHIFT) + rng.normal(0, 1, G)[g] + rng.normal(0, 1, n)
    d = pd.DataFrame({"y": y, "x": x, "f": f, "g": g})
    return d.assign(xc=d["x"] - SHIFT)


def test_large_interaction_fit_is_the_fit_on_the_centred_predictor(large):
    """``x - 1e6`` is exact, so the two designs span the same space: same criterion,
    same slopes, same fitted values and predictions."""
    raw = _quiet_fit("y ~ x*f + (1|g)", large)
    centred = _quiet_fit("y ~ xc*f + (1|g)", large)
    assert raw.parametrization.is_reparametrized and not centred.parametrization.is_reparametrized
    assert raw.criterion == pytest.approx(centred.criterion, abs=CRITERION_ATOL)
    assert raw.tau == pytest.approx(centred.tau, rel=1e-8)
    for name in ("x", "x:f[T.b]", "x:f[T.c]"):
        c_name = name.replace("x", "xc")
        assert abs(raw.fixef[name] - centred.fixef[c_name]) <= 1e-6 * centred.se[c_name]
        assert raw.se[name] == pytest.approx(centred.se[c_name], rel=1e-8)
    np.testing.assert_allclose(raw.fitted, centred.fitted, atol=1e-8)
    np.testing.assert_allclose(raw.ranef["mode"], centred.ranef["mode"], atol=1e-8)
    new = large.iloc[:50]
    np.testing.assert_allclose(raw.predict(new), centred.predict(new), atol=1e-8)


def test_inference_on_the_far_predictor_is_the_inference_on_the_centred_one(data):
    raw = _quiet_fit("y ~ x*f + (1|g)", data)
    centred = _quiet_fit("y ~ xc*f + (1|g)", data)
    for ddf in ("satterthwaite", "kenward-roger"):
        a, b = raw.coef_table(ddf), centred.coef_table(ddf)
        for name in ("x", "x:f[T.b]", "x:f[T.c]"):
            c_name = name.replace("x", "xc")
            assert a.loc[name, "df"] == pytest.approx(b.loc[c_name, "df"], rel=1e-6)
            assert a.loc[name, "t"] == pytest.approx(b.loc[c_name, "t"], rel=1e-6)
    a, b = raw.anova(), centred.anova()
    assert a.loc["x:f", "f_value"] == pytest.approx(b.loc["xc:f", "f_value"], rel=1e-6)
    assert a.loc["x:f", "den_df"] == pytest.approx(b.loc["xc:f", "den_df"], rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = raw.confint("profile"), centred.confint("profile")
    for name in ("sd_group", "sigma", "x:f[T.c]"):
        c_name = name.replace("x", "xc")
        np.testing.assert_allclose(a.loc[name, ["lower", "upper"]].to_numpy(float),
                                   b.loc[c_name, ["lower", "upper"]].to_numpy(float), rtol=1e-6)


def test_one_pass_statistics_say_how_many_digits_they_may_have_lost(data):
    """A fit from statistics alone (a one-shot chunk iterator) cannot reread the rows in a
    better basis: it says how many digits the cross-products may have lost. With x ~ 1e5
    (x - 9e5 is exact) x:f keeps about 1e-10 of its squared norm after centring: 10 digits
    lost, and a residual the one-pass cross-products still resolve."""
    m = _quiet_fit("y ~ x*f + (1|g)", data.assign(x=data["x"] - 9e5))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", ModelDataWarning)
        again = rl.fit_stats(m.group_stats, list(m.fixef.index), 0)
    messages = [str(w.message) for w in record]
    assert any(re.search(r"up to 1[0-3] of the 16 digits", text) for text in messages), messages
    assert any("digits" in note for note in again.notes)
    assert not any("exact" in text for text in messages)
    assert list(again.fixef.index) == list(m.fixef.index)


def test_one_pass_statistics_drop_the_columns_they_cannot_decide_on(data):
    """x ~ 1e6: x:f keeps 7e-13 of its squared norm after centring (lme4's tolerance is
    1e-14), within ten times the rounding of one-pass cross-products (ONE_PASS_RANK_TOL).
    The rows at hand, the fit rereads them and keeps x:f; statistics alone cannot tell, so
    they drop x:f and say so, naming the columns."""
    m = _quiet_fit("y ~ x*f + (1|g)", data)
    assert m.dropped_columns == ()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", ModelDataWarning)
        again = rl.fit_stats(m.group_stats, list(m.fixef.index), 0)
    messages = [str(w.message) for w in record]
    assert again.dropped_columns == ("x:f[T.b]", "x:f[T.c]")
    assert any("cannot tell from a linear combination" in text and "'x:f[T.b]', 'x:f[T.c]'" in text
               for text in messages), messages
    assert any("cannot tell" in note for note in again.notes)
    assert again.criterion == pytest.approx(_quiet_fit("y ~ x + f + (1|g)", data).criterion, abs=CRITERION_ATOL)


def test_no_warning_calls_a_far_from_zero_fit_exact(data):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rl.lmer("y ~ x*f + (1|g)", data)
    assert record and not any("exact" in str(w.message) for w in record)


def test_kernel_with_transform_matches_numpy():
    rng = np.random.default_rng(4)
    n, p = 5000, 3
    X = np.column_stack([np.ones(n), rng.normal(1e6, 1, n), rng.normal(size=n)])
    y = rng.normal(size=n)
    codes = rng.integers(0, 20, n).astype(np.int64)
    shift = np.r_[0.0, 1e6, 0.0, 0.0]
    T = np.triu(rng.normal(size=(p + 1, p + 1)))
    np.fill_diagonal(T, 1.0)
    Z = (np.column_stack([X, y]) - shift) @ T
    expected_sums = np.zeros((20, p + 1))
    np.add.at(expected_sums, codes, Z)
    counts = np.bincount(codes, minlength=20)
    for got_counts, sums, cross, lo, hi in (group_sums_and_cross_transformed(X, y, codes, 20, shift, T),
                                            group_sums_and_cross_parallel(X, y, codes, 20, shift, T, 3)):
        np.testing.assert_array_equal(got_counts, counts)
        np.testing.assert_allclose(sums, expected_sums, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(cross, Z.T @ Z, rtol=1e-12)
        np.testing.assert_allclose(lo, Z.min(axis=0))
        np.testing.assert_allclose(hi, Z.max(axis=0))
    means = expected_sums / counts[:, None]
    centred = Z - means[codes]
    np.testing.assert_allclose(within_cross_transformed(X, y, codes, means, shift, T), centred.T @ centred,
                               rtol=1e-10)


def test_conditioning_transform_orthogonalizes_and_keeps_the_determinant():
    rng = np.random.default_rng(5)
    n = 1000
    x = rng.normal(1e6, 1, n)
    fc = (rng.uniform(size=n) < 0.5) * 1.0
    Z = np.column_stack([np.ones(n), x - x.mean(), fc, x * fc - (x * fc).mean(), rng.normal(size=n)])
    cross = Z.T @ Z
    assert kept_fractions(cross).min() < COLLINEARITY_TOL
    T = conditioning_transform(cross)
    assert np.allclose(np.tril(T, -1), 0.0) and np.all(np.diag(T) == 1.0)
    # Rows times T, computed row by row: nearly orthogonal columns.
    assert kept_fractions((Z @ T).T @ (Z @ T)).min() > 1 - 1e-6


def test_statistics_in_the_new_basis_merge_like_any_others():
    """Chunks read with the same shift and transform add up to the whole."""
    rng = np.random.default_rng(6)
    n = 3000
    X = np.column_stack([np.ones(n), rng.normal(1e6, 1, n)])
    y = rng.normal(size=n)
    labels = rng.integers(0, 30, n)
    T = np.array([[1.0, -1e6, 0.5], [0.0, 1.0, -0.1], [0.0, 0.0, 1.0]])
    shift = np.zeros(3)
    whole = compute_group_stats(X, y, factorize_groups(labels), shift, exact_within=False, transform=T)
    parts = [compute_group_stats(X[a:b], y[a:b], factorize_groups(labels[a:b]), shift, exact_within=False,
                                 transform=T) for a, b in ((0, 1234), (1234, n))]
    merged = parts[0] + parts[1]
    np.testing.assert_allclose(merged.cross, whole.cross, rtol=1e-12)
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-10, atol=1e-8)
