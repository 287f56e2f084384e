"""The batched scan of many responses (:mod:`reml_engine.core.many_scan`) against the
single fit of each response.

Every row of ``rl.fit(X, Y, groups)`` must be ``rl.fit(X, Y[:, j], groups)``: the same
optima (kinds, tau, criterion), the same global optimum and estimates. The single fit is
itself checked against lme4 (tests/reference) and the dense brute-force REML
(tests/oracle); here its estimates are the outside fact, and the criterion at each
batched optimum is also checked against the dense oracle on the small data.
"""

from __future__ import annotations

import numpy as np
import pytest

import reml_engine as rl
from reml_engine.core import many_scan
from reml_engine.core.many import _BatchedResponse
from tests.oracle import dense_criterion

#: The issue's tolerances: criterion (absolute) and estimates (relative).
CRITERION_TOL = 1e-9
ESTIMATE_RTOL = 1e-7


def assert_rows_are_single_fits(X, Y, groups, REML=True, min_batched=0.5):
    fits = rl.fit(X, Y, groups, REML=REML)
    batched = [isinstance(e, _BatchedResponse) for e in fits._entries]
    # The test is about the batched path: most responses must have taken it.
    assert np.mean(batched) >= min_batched, f"only {sum(batched)} of {len(batched)} responses batched"
    table = fits.table()
    for j in range(Y.shape[1]):
        single = rl.fit(X, Y[:, j], groups, REML=REML)
        row = table.iloc[j]
        assert abs(row.criterion - single.criterion) <= CRITERION_TOL * max(1.0, abs(single.criterion) / 1e4)
        scale = np.maximum(np.abs(single.fixef.to_numpy()), single.se.to_numpy())
        fixef = row[[f"fixef[{c}]" for c in single.fixef.index]].to_numpy(float)
        se = row[[f"se[{c}]" for c in single.fixef.index]].to_numpy(float)
        np.testing.assert_array_less(np.abs(fixef - single.fixef.to_numpy()), ESTIMATE_RTOL * scale + 1e-300)
        np.testing.assert_allclose(se, single.se.to_numpy(), rtol=ESTIMATE_RTOL)
        np.testing.assert_allclose(row.tau, single.tau, rtol=ESTIMATE_RTOL, atol=1e-12)
        np.testing.assert_allclose(row.sigma2, single.sigma2, rtol=ESTIMATE_RTOL)
        summary = fits._entries[j].summary
        if batched[j]:
            # The table's optimum and count come from the scan's arrays; the record,
            # built now from the same arrays, has them too.
            assert (summary.global_optimum.tau, summary.global_optimum.criterion) == (row.tau, row.criterion)
            assert len(summary.optima) == row.n_optima
            assert (summary.global_optimum.kind == "boundary") == (row.tau == 0.0)
        assert [o.kind for o in summary.optima] == [o.kind for o in single.optima]
        np.testing.assert_allclose([o.tau for o in summary.optima], [o.tau for o in single.optima],
                                   rtol=ESTIMATE_RTOL, atol=1e-12)
        np.testing.assert_allclose([o.criterion for o in summary.optima], [o.criterion for o in single.optima],
                                   rtol=0, atol=CRITERION_TOL * max(1.0, abs(single.criterion) / 1e4))
        assert row.n_optima == len(single.optima)
        assert row.boundary == ("" if single.boundary is None else single.boundary.reason)
    return fits, batched


def _seed_family():
    """The seed data (two local minima) and shifted and scaled copies of its response,
    with responses at the boundary and inside."""
    seed = rl.load_seed()
    X = np.column_stack([np.ones(len(seed)), seed.x.to_numpy(float)])
    y = seed.y.to_numpy()
    rng = np.random.default_rng(11)
    columns = [y, y + 100.0, 1e3 * y, -0.01 * y + 5.0, y * 7.5 - 3.0]
    columns += list(rng.standard_normal((10, len(seed))))
    return X, np.column_stack(columns), seed.f.to_numpy()


def test_seed_family_rows_are_single_fits():
    X, Y, groups = _seed_family()
    fits, batched = assert_rows_are_single_fits(X, Y, groups, min_batched=0.3)
    single = rl.fit(X, Y[:, 0], groups)
    assert len(single.optima) == 2  # the seed's two local minima
    for j in (0, 1, 2, 4):  # shifted and scaled copies keep both minima
        assert fits.table().n_optima.iloc[j] == 2
    kinds = {fits._entries[j].optimum.kind for j in range(Y.shape[1])}
    assert kinds == {"boundary", "interior"}


def test_seed_family_criterion_is_the_dense_oracle():
    X, Y, groups = _seed_family()
    fits = rl.fit(X, Y, groups)
    for j in range(Y.shape[1]):
        tau = fits.tau.iloc[j]
        np.testing.assert_allclose(fits.criterion.iloc[j], dense_criterion(X, Y[:, j], groups, tau, True)["criterion"],
                                   rtol=1e-9)


def _simulated(n, G, p, k, seed, unbalanced=False):
    rng = np.random.default_rng(seed)
    if unbalanced:
        groups = rng.integers(0, G, n)
    else:
        groups = rng.permutation(np.arange(n) % G)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, p - 1))])
    var_group = rng.uniform(0.0, 1.0, k) ** 2
    var_group[rng.random(k) < 0.3] = 0.0
    Y = X @ rng.normal(0.0, 1.0, (p, k)) + rng.standard_normal((G, k))[groups] * np.sqrt(var_group)
    Y += rng.standard_normal((n, k))
    return X, Y, groups


@pytest.mark.parametrize("unbalanced", [False, True])
@pytest.mark.parametrize("REML", [True, False])
def test_simulated_rows_are_single_fits(unbalanced, REML):
    X, Y, groups = _simulated(600, 30, 3, 40, 5, unbalanced)
    fits, batched = assert_rows_are_single_fits(X, Y, groups, REML=REML, min_batched=0.8)
    kinds = {e.optimum.kind for e in fits._entries}
    assert kinds == {"boundary", "interior"}


def test_built_fit_of_a_batched_response_is_the_single_fit():
    X, Y, groups = _simulated(300, 20, 3, 6, 2)
    fits = rl.fit(X, Y, groups)
    for j in range(1, 6):
        assert isinstance(fits._entries[j], _BatchedResponse)
        single = rl.fit(X, Y[:, j], groups)
        got = fits[j]
        np.testing.assert_allclose(got.fixef, single.fixef, rtol=ESTIMATE_RTOL, atol=1e-12)
        np.testing.assert_allclose(got.criterion, single.criterion, rtol=0, atol=CRITERION_TOL)
        np.testing.assert_allclose(got.ranef.to_numpy(), single.ranef.to_numpy(), rtol=1e-7, atol=1e-10)


def test_constant_and_missing_responses_are_refused_as_before():
    X, Y, groups = _simulated(300, 20, 3, 5, 4)
    Y[:, 3] = 2.0
    with pytest.raises(rl.ModelDataError, match=r"response 3 \('y3'\) of 5.*constant"):
        rl.fit(X, Y, groups)
    X, Y, groups = _simulated(300, 20, 3, 5, 4)
    Y[7, 2] = np.nan
    with pytest.raises(rl.ModelDataError, match="y2"):
        rl.fit(X, Y, groups)


def test_a_response_the_batched_scan_cannot_decide_goes_to_the_single_chain(monkeypatch):
    # With no margin of safety to spare (every decision deemed uncertain), every
    # response is fitted by the single chain, and the rows are still the single fits.
    monkeypatch.setattr(many_scan, "MANY_SAFETY", 1e12)
    X, Y, groups = _simulated(300, 20, 3, 5, 6)
    fits = rl.fit(X, Y, groups)
    assert not any(isinstance(e, _BatchedResponse) for e in fits._entries)
    for j in range(5):
        np.testing.assert_allclose(fits.criterion.iloc[j], rl.fit(X, Y[:, j], groups).criterion,
                                   rtol=0, atol=CRITERION_TOL)


def test_the_tables_boundary_reasons_are_those_of_the_built_fits():
    # The table reads a batched response's boundary reason from its optimizer record
    # without building its fit; each fit, built afterwards, gives the same reason.
    X, Y, groups = _simulated(400, 25, 3, 60, 12)
    fits = rl.fit(X, Y, groups)
    table = fits.table()
    batched = np.array([isinstance(e, _BatchedResponse) for e in fits._entries])
    assert (batched & (table.tau.to_numpy() == 0.0)).sum() >= 5
    assert not any(batched[j] for j in fits._fits), "the table built the fit of a batched response"
    built = [fits[j].boundary for j in range(Y.shape[1])]
    assert list(table.boundary) == ["" if b is None else b.reason for b in built]
