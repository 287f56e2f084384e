"""Many responses on one design (issue 13): ``rl.fit(X, Y, groups)`` and
``rl.lmer("cbind(y1, y2) ~ ...")``.

Each response's fit must be the fit of that response alone (``rl.fit(X, Y[:, j], groups)``,
``rl.lmer("y_j ~ ...")``), which the reference and oracle suites check against lme4 and
the dense brute-force criterion; here the criterion at each response's optimum is also
checked against the dense oracle directly.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.core.many import ManyFits, many_statistics
from reml_engine.frontend.groups import factorize_groups
from reml_engine.frontend.many_design import response_columns
from tests.oracle import dense_criterion

#: Relative agreement of a response's fit with its own fit: the statistics are the same
#: sums taken in another order, so they differ by rounding only.
SAME_FIT_RTOL = 1e-10


def assert_same_fit(got: rl.LmerFit, expected: rl.LmerFit) -> None:
    """Estimates, errors, variances, criterion, every optimum and the boundary diagnosis."""
    assert list(got.fixef.index) == list(expected.fixef.index)
    np.testing.assert_allclose(got.fixef, expected.fixef, rtol=SAME_FIT_RTOL, atol=1e-12)
    np.testing.assert_allclose(got.se, expected.se, rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(got.criterion, expected.criterion, rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(got.var_group, expected.var_group, rtol=SAME_FIT_RTOL, atol=1e-14)
    np.testing.assert_allclose(got.sigma2, expected.sigma2, rtol=SAME_FIT_RTOL)
    assert [o.kind for o in got.optima] == [o.kind for o in expected.optima]
    np.testing.assert_allclose([o.tau for o in got.optima], [o.tau for o in expected.optima],
                               rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose([o.criterion for o in got.optima], [o.criterion for o in expected.optima],
                               rtol=SAME_FIT_RTOL)
    assert (got.boundary is None) == (expected.boundary is None)
    if got.boundary is not None:
        assert got.boundary.reason == expected.boundary.reason
    np.testing.assert_allclose(got.ranef.to_numpy(), expected.ranef.to_numpy(), rtol=1e-8, atol=1e-12)
    if got.design is None:
        # A fit from the statistics alone (ManyFits without keep_data): no rows.
        assert got.fitted is None and got.resid is None and got.group_codes is None
    else:
        np.testing.assert_allclose(got.fitted, expected.fitted, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(got.resid, expected.resid, rtol=1e-8, atol=1e-12)
    assert got.nobs == expected.nobs and got.ngroups == expected.ngroups
    assert got.dropped_columns == expected.dropped_columns


@pytest.fixture(scope="module")
def seed_responses():
    """The seed design (4 groups of 3) with a response of each kind: two optima (the
    seed's own y), at the boundary with negative ICC, interior, and at the boundary
    with a second, interior local optimum."""
    seed = rl.load_seed()
    X = np.column_stack([np.ones(len(seed)), seed.x.to_numpy(float)])
    rng = np.random.default_rng(3)
    draws = rng.standard_normal((3, len(seed)))
    Y = np.column_stack([seed.y.to_numpy(), draws[0], draws[1], draws[2]])
    return X, Y, seed.f.to_numpy()


@pytest.mark.parametrize("keep_data", [False, True])
def test_each_response_is_its_own_fit(seed_responses, keep_data):
    X, Y, groups = seed_responses
    fits = rl.fit(X, Y, groups, names=["(Intercept)", "x"], keep_data=keep_data)
    assert isinstance(fits, ManyFits) and len(fits) == Y.shape[1]
    assert all((f.fitted is not None) == keep_data for f in fits)
    alone = [rl.fit(X, Y[:, j], groups, names=["(Intercept)", "x"]) for j in range(Y.shape[1])]
    for got, expected in zip(fits, alone, strict=True):
        assert_same_fit(got, expected)
    # The behaviours the data were chosen for: each response keeps its own.
    assert len(fits[0].optima) == 2 and fits[0].boundary is None
    assert fits[1].boundary.reason == "negative_icc"
    assert fits[2].boundary is None and len(fits[2].optima) == 1
    assert fits[3].boundary is not None and len(fits[3].optima) == 2


def test_criterion_at_each_optimum_is_the_dense_oracles(seed_responses):
    X, Y, groups = seed_responses
    fits = rl.fit(X, Y, groups)
    for j, fit in enumerate(fits):
        for optimum in fit.optima:
            dense = dense_criterion(X, Y[:, j], groups, optimum.tau, REML=True)
            assert optimum.criterion == pytest.approx(dense["criterion"], rel=1e-9)


def test_table_reads_every_response_without_building_the_interior_fits(seed_responses):
    X, Y, groups = seed_responses
    fits = rl.fit(X, Y, groups, REML=False)
    table = fits.table()
    alone = [rl.fit(X, Y[:, j], groups, REML=False) for j in range(Y.shape[1])]
    assert list(table.index) == ["y0", "y1", "y2", "y3"]
    np.testing.assert_allclose(table.tau, [m.tau for m in alone], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(table.var_group, [m.var_group for m in alone], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(table.sigma2, [m.sigma2 for m in alone], rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(table.criterion, [m.criterion for m in alone], rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(table["fixef[x1]"], [m.fixef["x1"] for m in alone], rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(table["se[x0]"], [m.se["x0"] for m in alone], rtol=SAME_FIT_RTOL)
    assert list(table.boundary) == [m.boundary.reason if m.boundary else "" for m in alone]
    assert list(table.n_optima) == [len(m.optima) for m in alone]
    assert list(table.singular) == [m.singular for m in alone]
    np.testing.assert_allclose(fits.fixef.to_numpy(), np.array([m.fixef for m in alone]), rtol=SAME_FIT_RTOL)
    np.testing.assert_allclose(fits.se.to_numpy(), np.array([m.se for m in alone]), rtol=SAME_FIT_RTOL)


def unbalanced_data(k: int, seed: int = 7):
    """40 groups of 2 to 9 rows, a within and a between (group-level) covariate, k
    responses of which some have no group variance, and a large offset in one column."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 10, size=40)
    groups = np.repeat(np.arange(40), sizes)
    rng.shuffle(groups)
    n = len(groups)
    between = rng.standard_normal(40)[groups]
    X = np.column_stack([np.ones(n), rng.standard_normal(n) + 1e4, between])
    var_group = np.where(np.arange(k) % 3 == 0, 0.0, rng.uniform(0.1, 2.0, k))
    Y = X @ rng.standard_normal((3, k)) + rng.standard_normal((40, k))[groups] * np.sqrt(var_group)
    Y += rng.standard_normal((n, k))
    return X, Y, groups


def test_unbalanced_groups_and_a_group_level_covariate():
    X, Y, groups = unbalanced_data(12)
    # The group-level column is constant within groups: the one-pass within part
    # cancels, so the exact second pass runs for every response, as it does alone.
    statistics = many_statistics(X, Y, factorize_groups(groups), None)
    assert statistics.exact_within.all() and statistics.within_xy is not None
    fits = rl.fit(X, Y, groups)
    for j in range(Y.shape[1]):
        assert_same_fit(fits[j], rl.fit(X, Y[:, j], groups))
    assert any(f.boundary is not None for f in fits) and any(f.boundary is None for f in fits)


def test_a_response_constant_within_groups_gets_the_exact_pass_alone():
    X, Y, groups = unbalanced_data(3)
    X = X[:, :2]  # no group-level column: only the response below needs the exact pass
    rng = np.random.default_rng(0)
    Y[:, 1] = rng.standard_normal(40)[groups] * 1e3 + 0.1 * rng.standard_normal(len(groups))
    statistics = many_statistics(X, Y, factorize_groups(groups), None)
    assert list(statistics.exact_within) == [False, True, False]
    fits = rl.fit(X, Y, groups)
    for j in range(3):
        assert_same_fit(fits[j], rl.fit(X, Y[:, j], groups))


def test_several_row_blocks_and_string_labels():
    rng = np.random.default_rng(11)
    n, k = 5000, 300  # rows in several blocks of the kernel at this width
    labels = np.array([f"g{i:03d}" for i in range(120)])[rng.integers(0, 120, n)]
    X = np.column_stack([np.ones(n), rng.standard_normal((n, 2))])
    Y = rng.standard_normal((n, k)) + rng.standard_normal((120, k))[np.unique(labels, return_inverse=True)[1]]
    fits = rl.fit(X, Y, labels)
    for j in (0, 157, 299):
        assert_same_fit(fits[j], rl.fit(X, Y[:, j], labels))


@pytest.fixture
def small_pieces(monkeypatch):
    """Segments of the pass and blocks of the scan on small data (the sizes from which
    they apply lowered), so that a test of a few hundred rows cuts both."""
    from reml_engine.core import many, many_scan

    monkeypatch.setattr(many, "PASS_SEGMENT_VALUES", 1)
    monkeypatch.setattr(many, "PASS_SEGMENTS", 3)
    monkeypatch.setattr(many_scan, "MANY_SCAN_BLOCK", 7)


def _batched_arrays(fits) -> list:
    return [fits.tau.to_numpy(), fits.criterion.to_numpy(), fits.sigma2.to_numpy(), fits.fixef.to_numpy(),
            fits.se.to_numpy(), fits.n_optima.to_numpy()]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_segments_and_blocks_give_each_response_its_own_fit_whatever_the_threads(small_pieces, monkeypatch,
                                                                                 threads):
    from reml_engine.core import workers

    X, Y, groups = unbalanced_data(24, seed=3)
    X = X[:, :2]  # no group-level column: the batched scan takes most responses
    monkeypatch.setattr(workers, "MAX_THREADS", 1)
    one_thread = rl.fit(X, Y, groups)
    monkeypatch.setattr(workers, "MAX_THREADS", threads)
    fits = rl.fit(X, Y, groups)
    # The pieces are cut by the size of the data alone: the same numbers, bit for bit.
    for got, expected in zip(_batched_arrays(fits), _batched_arrays(one_thread), strict=True):
        np.testing.assert_array_equal(got, expected)
    for j in (0, 6, 7, 13, 23):  # both sides of the blocks' edges
        assert_same_fit(fits[j], rl.fit(X, Y[:, j], groups))


def test_the_segments_statistics_are_the_one_pass_statistics(monkeypatch):
    from reml_engine.core import many

    X, Y, groups = unbalanced_data(5, seed=5)
    codes = factorize_groups(groups)
    whole = many_statistics(X, Y, codes, 0)
    monkeypatch.setattr(many, "PASS_SEGMENT_VALUES", 1)
    monkeypatch.setattr(many, "PASS_SEGMENTS", 4)
    cut = many_statistics(X, Y, codes, 0)
    # Each group lies in one segment: its counts and sums are the same sums.
    for name in ("counts", "sums_x", "sums_y", "lo_x", "hi_x", "lo_y", "hi_y", "shift_x", "shift_y"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(whole, name))
    # The cross-products add the segments' parts: the same sums in another order.
    for name in ("cross_xx", "cross_xy", "squares_y"):
        expected = getattr(whole, name)
        np.testing.assert_allclose(getattr(cut, name), expected, rtol=1e-13, atol=1e-13 * np.abs(expected).max())
    direct = np.column_stack([X - whole.shift_x, Y - whole.shift_y])
    np.testing.assert_allclose(cut.cross_xy, direct[:, :3].T @ direct[:, 3:], rtol=1e-12,
                               atol=1e-12 * np.abs(cut.cross_xy).max())


def test_a_dataframe_names_the_responses_and_fits_are_found_by_name(seed_responses):
    X, Y, groups = seed_responses
    frame = pd.DataFrame(Y, columns=["a", "b", "c", "d"])
    fits = rl.fit(X, frame, groups)
    assert fits.responses == ("a", "b", "c", "d")
    assert fits["c"] is fits[2] and fits[-1] is fits[3]
    assert fits["c"].response_name == "c"
    assert [f.criterion for f in fits[1:3]] == [fits[1].criterion, fits[2].criterion]
    with pytest.raises(KeyError, match="no response named 'e'"):
        fits["e"]
    with pytest.raises(IndexError, match="response 4 out of range for 4"):
        fits[4]
    named = rl.fit(X, Y, groups, response_names=["p", "q", "r", "s"])
    assert list(named.tau.index) == ["p", "q", "r", "s"]


def test_a_single_column_y_is_one_response_of_many(seed_responses):
    X, Y, groups = seed_responses
    fits = rl.fit(X, Y[:, :1], groups)
    assert len(fits) == 1
    assert_same_fit(fits[0], rl.fit(X, Y[:, 0], groups))


def test_the_harness_reads_the_result(seed_responses):
    from benchmarks import many

    X, Y, groups = seed_responses
    fits = rl.fit(X, Y, groups)
    tau, fixef = many.many_estimates(fits, Y.shape[1])
    np.testing.assert_array_equal(tau, [f.tau for f in fits])
    # The table's estimates come from the batched scan's direct-form kernel, the fit's
    # from fixed_effects: the same formulas, rounded apart.
    np.testing.assert_allclose(fixef, np.array([f.fixef for f in fits]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("keep_data", [False, True])
def test_the_fits_do_not_change_when_the_callers_arrays_do(seed_responses, keep_data):
    X, Y, groups = seed_responses
    X, Y, groups = X.copy(), Y.copy(), groups.copy()
    fits = rl.fit(X, Y, groups, keep_data=keep_data)
    before = fits.table()
    early = fits[1]  # built before the change
    expected = [rl.fit(X.copy(), Y[:, j].copy(), groups.copy()) for j in range(Y.shape[1])]
    Y[:] = 0.0
    X[:, 1] = 1.0
    groups[:] = groups[0]
    pd.testing.assert_frame_equal(fits.table(), before)
    assert fits[1] is early
    assert_same_fit(early, expected[1])
    for j in (0, 2, 3):
        assert_same_fit(fits[j], expected[j])  # built after the change


def test_the_fits_keep_no_reference_to_y(seed_responses):
    # Without keep_data the result holds the statistics only; with it, a private copy.
    X, Y, groups = seed_responses
    Y = Y.copy()
    for keep_data in (False, True):
        fits = rl.fit(X, Y, groups, keep_data=keep_data)
        built = [fits[j] for j in range(len(fits))]
        arrays = [a for f in built if f.design is not None for a in (f.design.X, f.design.y)]
        assert not any(np.shares_memory(a, Y) for a in arrays)
        assert (fits[0].design is not None) == keep_data
    import gc
    import weakref

    class Owned(np.ndarray):
        pass

    owned = Y.view(Owned)
    ref = weakref.ref(owned)
    fits = rl.fit(X, owned, groups)
    del owned
    gc.collect()
    assert ref() is None  # the fit kept no reference to the caller's array
    assert len(fits.table()) == Y.shape[1]


def test_without_the_rows_fitted_is_none_and_predict_reads_newdata(seed_frame):
    """Kept without rows, a response's fit predicts new data from its formula's encoding
    (as a fit from chunks), equal to the single fit's prediction; without newdata it says
    what it needs."""
    frame = seed_frame.copy()
    frame.loc[frame.index[3], "y_i"] = np.nan  # y_i is fitted on its own rows
    with pytest.warns(rl.ModelDataWarning):
        fits = rl.lmer("cbind(y, y_i) ~ x + (1|f)", frame)
    assert fits["y"].fitted is None and fits["y"].resid is None
    new = frame.assign(x=frame["x"] + 0.5)
    for name in ("y", "y_i"):
        with pytest.warns(rl.ModelDataWarning) if name == "y_i" else contextlib.nullcontext():
            single = rl.lmer(f"{name} ~ x + (1|f)", frame)
        np.testing.assert_allclose(fits[name].predict(new), single.predict(new), rtol=1e-10, atol=1e-12)
        with pytest.raises(rl.ModelDataError, match="newdata="):
            fits[name].predict()
    with pytest.raises(rl.ModelDataError, match="keep_data must be"):
        rl.fit(np.ones((12, 1)), np.ones((12, 2)), np.arange(12) % 4, keep_data="yes")


@pytest.mark.parametrize(
    ("Y", "kwargs", "message"),
    [
        (np.zeros((12, 2, 2)), {}, r"Y must be a 2-d array \(n, k\) of k responses, got shape \(12, 2, 2\)"),
        (np.zeros((12, 0)), {}, "Y has no columns"),
        (np.ones((11, 2)), {}, "X has 12 rows but y has 11"),
        (None, {"response_names": ["a"]}, "1 response names for 2 columns of Y"),
        (None, {"response_names": ["a", "a"]}, "response name 'a' is given to more than one column of Y"),
        (None, {"response_names": "ab"}, "response_names must be a sequence of names"),
    ],
)
def test_bad_y_is_refused_with_what_is_wrong(seed_responses, Y, kwargs, message):
    X, full, groups = seed_responses
    with pytest.raises(rl.ModelDataError, match=message):
        rl.fit(X, full[:, :2] if Y is None else Y, groups, **kwargs)


def test_missing_values_in_array_responses_are_refused_naming_them(seed_responses):
    X, Y, groups = seed_responses
    Y = Y.copy()
    Y[[1, 5], 2] = np.nan
    Y[0, 3] = np.inf
    with pytest.raises(rl.ModelDataError, match=r"in 2 of its 4 responses \('y2': 2, 'y3': 1\); rl.fit does not "
                                                r"drop rows"):
        rl.fit(X, Y, groups)


def test_a_response_that_cannot_be_fitted_is_named(seed_responses):
    X, Y, groups = seed_responses
    Y = Y.copy()
    Y[:, 2] = 1.5
    with pytest.raises(rl.ModelDataError, match=r"response 2 \('y2'\) of 4: response 'y2' is constant"):
        rl.fit(X, Y, groups)


def test_response_names_are_for_a_2d_y(seed_responses):
    X, Y, groups = seed_responses
    with pytest.raises(rl.ModelDataError, match="response_names is for a 2-d y"):
        rl.fit(X, Y[:, 0], groups, response_names=["a"])


# --- the formula form -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_frame(seed_responses):
    _, Y, _ = seed_responses
    frame = rl.load_seed()
    frame["y.b"] = Y[:, 1]
    frame["y_i"] = Y[:, 2]
    frame["cat"] = np.array(["u", "v", "w"])[np.arange(len(frame)) % 3]
    return frame


@pytest.mark.parametrize("formula", ["cbind(y, y.b, y_i) ~ x + cat + (1|f)", "y + `y.b` + y_i ~ x + cat + (1|f)"])
def test_formula_responses_are_their_own_lmer_fits(seed_frame, formula):
    fits = rl.lmer(formula, seed_frame, keep_data=True)
    assert fits.responses == ("y", "y.b", "y_i")
    for name in fits.responses:
        alone = rl.lmer(f"{name} ~ x + cat + (1|f)", seed_frame)
        assert_same_fit(fits[name], alone)
        assert fits[name].formula == alone.formula
        assert fits[name].response_name == name
    # With keep_data, prediction goes through the fit's own design, as for one response.
    np.testing.assert_allclose(fits["y_i"].predict(seed_frame), rl.lmer("y_i ~ x + cat + (1|f)",
                                                                        seed_frame).predict(seed_frame))


def test_r_dialect_reads_cbind_and_keeps_the_sum_for_plus(seed_frame):
    fits = rl.lmer("cbind(y, y_i) ~ x + (1|f)", seed_frame, dialect="R", REML=False)
    assert_same_fit(fits["y_i"], rl.lmer("y_i ~ x + (1|f)", seed_frame, dialect="R", REML=False))
    assert response_columns("y + y_i ~ x + (1|f)", "R") is None  # R's sum, not two responses
    with pytest.raises(rl.ModelDataError, match="must be one column"):
        rl.lmer("y + y_i ~ x + (1|f)", seed_frame, dialect="R")


@pytest.mark.parametrize("keep_data", [False, True])
def test_missing_values_in_one_response_drop_its_rows_only(seed_frame, keep_data):
    frame = seed_frame.copy()
    frame.loc[[2, 7], "y_i"] = np.nan
    frame.loc[4, "x"] = np.nan  # a missing predictor: dropped for every response
    with pytest.warns(rl.ModelDataWarning, match=r"1 of 2 responses have missing values where the predictors are "
                                                 r"present \('y_i': 2\)"):
        fits = rl.lmer("cbind(y, y_i) ~ x + (1|f)", frame, keep_data=keep_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = {name: rl.lmer(f"{name} ~ x + (1|f)", frame) for name in ("y", "y_i")}
    assert fits["y"].nobs == 11 and fits["y_i"].nobs == 9
    for name, fit in alone.items():
        assert_same_fit(fits[name], fit)
    assert list(fits.table().index) == ["y", "y_i"]


def test_missing_values_with_na_action_raise_name_the_response(seed_frame):
    frame = seed_frame.copy()
    frame.loc[3, "y_i"] = np.nan
    with pytest.raises(rl.ModelDataError, match=r"missing values in 1 of 2 responses \('y_i': 1\)"):
        rl.lmer("cbind(y, y_i) ~ x + (1|f)", frame, na_action="raise")


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("cbind(y, np.log(x)) ~ x + (1|f)", "each of several responses must be a column name, not 'np.log"),
        ("cbind(y, y) ~ x + (1|f)", "names response 'y' more than once"),
        ("cbind(y, yy) ~ x + (1|f)", "response column 'yy' of formula"),
        ("cbind(y, cat) ~ x + (1|f)", "response 'cat' is not numeric"),
    ],
)
def test_bad_formula_responses_are_refused(seed_frame, formula, message):
    with pytest.raises(rl.ModelDataError, match=message):
        rl.lmer(formula, seed_frame)


def test_several_responses_need_a_dataframe(seed_frame):
    with pytest.raises(rl.ModelDataError, match="several responses are fitted from a pandas DataFrame only"):
        rl.lmer("cbind(y, y_i) ~ x + (1|f)", [seed_frame])


def test_batched_responses_predict_as_their_single_fits():
    """Responses fitted by the batched scan (kept without rows) predict new data as the
    single fit of each response does."""
    rng = np.random.default_rng(1)
    n = 300
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 20, n).astype(str)})
    for j in range(12):
        d[f"y{j}"] = d["x"] * j + rng.normal(size=n) + rng.normal(size=20)[d["g"].astype(int)]
    fits = rl.lmer("cbind(" + ", ".join(f"y{j}" for j in range(12)) + ") ~ x + (1|g)", d)
    assert type(fits._entry(5)).__name__ == "_BatchedResponse"  # the path under test
    new = d.head(7).assign(x=2.0, g=["0", "1", "2", "unseen", "4", "5", "6"])
    for j in (0, 5, 11):
        single = rl.lmer(f"y{j} ~ x + (1|g)", d)
        np.testing.assert_allclose(fits[f"y{j}"].predict(new), single.predict(new), rtol=1e-10, atol=1e-12)
