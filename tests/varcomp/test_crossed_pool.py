"""The crossed solver's pooling decision (``CrossedSolver._pool``) without its per-block
Python loop gives what the loop gave: the same pooled matrices (bit for bit), the same
weight values per block, the same rows visited directly.

The reference below is the per-block loop as it was before the change (kept here as the
specification of the decision: per block of the layout and weight value of the innermost
levels, pool when the rows' cost exceeds ``POOL_GAIN`` times the packed matrix, blocks in
order while the memory budget lasts), each pooled matrix summed as ``D'D`` from the rows
made dense (the BLAS computation the engine used for these designs before the sparse
kernel, :func:`~reml_engine.varcomp.kernels.pooled_outer_sums`): the matrices agree to
``POOL_RTOL`` (BLAS adds in another order), the decision exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.varcomp import crossed as C
from reml_engine.varcomp.kernels import dense_rows, pack_lower, pooled_outer_sums

#: Relative agreement of a pooled matrix with ``D'D`` (rounding of sums of ~1e3 terms).
POOL_RTOL = 1e-12


def _dense_pooled(solver, rows, s):
    D = dense_rows(solver.indptr, solver.local_index, solver.data, rows.astype(np.int64), s)
    return pack_lower(D.T @ D)


def _pool_per_block(solver):
    row_cost = np.diff(solver.indptr).astype(np.float64) ** 2
    pooled, direct = [], []
    budget = C.POOL_MAX_BYTES
    by_block = np.argsort(solver.block_of_inner, kind="stable")
    bounds = np.flatnonzero(np.diff(solver.block_of_inner[by_block])) + 1
    for members in np.split(by_block, bounds):
        if not len(members):
            continue
        b = int(solver.block_of_inner[members[0]])
        s = int(solver.layout.block_size[b])
        values, group = np.unique(solver.d[members], return_inverse=True)
        cost = np.bincount(group, weights=row_cost[members], minlength=len(values))
        worth = cost > C.POOL_GAIN * s * (s + 1) / 2
        if s < C.POOL_MIN_BLOCK:
            worth[:] = False
        n_pool = int(worth.sum())
        if n_pool and n_pool * s * (s + 1) * 4 <= budget:
            budget -= n_pool * s * (s + 1) * 4
            G = np.empty((n_pool, s * (s + 1) // 2))
            for u_new, u in enumerate(np.flatnonzero(worth)):
                G[u_new] = _dense_pooled(solver, members[group == u], s)
            pooled.append((b, values[worth], G))
            direct.append(members[~worth[group]])
        else:
            direct.append(members)
    rows = np.sort(np.concatenate(direct)).astype(np.int64) if direct else np.zeros(0, np.int64)
    return pooled, rows


def _crossed_frame(n_subjects, n_items, share, seed):
    rng = np.random.default_rng(seed)
    subj, item = np.nonzero(rng.random((n_subjects, n_items)) < share)
    # Uneven counts per subject: several weight values per block.
    keep = rng.random(len(subj)) < np.where(subj % 3 == 0, 0.6, 1.0)
    subj, item = subj[keep], item[keep]
    n = len(subj)
    x = rng.standard_normal(n)
    y = x + rng.standard_normal(n_subjects)[subj] + rng.standard_normal(n_items)[item] + rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "subj": subj, "item": item})


@pytest.mark.parametrize(("n_subjects", "n_items", "share", "budget", "expect_pooled", "dense_ratio"), [
    (400, 90, 0.5, C.POOL_MAX_BYTES, True, C.DENSE_POOL_RATIO),  # one block of items, pooled
    (400, 90, 0.5, C.POOL_MAX_BYTES, True, 0.0),  # every group by the sparse kernel
    (400, 90, 0.5, C.POOL_MAX_BYTES, True, 1e9),  # every group by BLAS
    (1500, 300, 0.05, C.POOL_MAX_BYTES, True, C.DENSE_POOL_RATIO),  # sparse rows: the kernel
    (300, 40, 0.5, C.POOL_MAX_BYTES, False, C.DENSE_POOL_RATIO),  # block below POOL_MIN_BLOCK
    (400, 90, 0.5, 90 * 91 * 4, False, C.DENSE_POOL_RATIO),  # the budget does not cover the block
])
def test_pooling_is_the_per_block_loop(monkeypatch, n_subjects, n_items, share, budget, expect_pooled,
                                       dense_ratio):
    monkeypatch.setattr(C, "POOL_MAX_BYTES", budget)
    monkeypatch.setattr(C, "DENSE_POOL_RATIO", dense_ratio)
    solvers = []
    original = C.CrossedSolver._pool

    def recording(self):
        original(self)
        solvers.append(self)

    monkeypatch.setattr(C.CrossedSolver, "_pool", recording)
    frame = _crossed_frame(n_subjects, n_items, share, seed=n_items)
    rl.lmer("y ~ x + (1|subj) + (1|item)", frame)
    assert solvers, "the crossed solver was not used"
    any_pooled = False
    for solver in solvers:
        pooled, rows = _pool_per_block(solver)
        assert len(solver.pooled) == len(pooled)
        for (b, values, G), (b_ref, values_ref, G_ref) in zip(solver.pooled, pooled, strict=True):
            assert b == b_ref
            np.testing.assert_array_equal(values, values_ref)
            np.testing.assert_allclose(G, G_ref, rtol=POOL_RTOL, atol=POOL_RTOL * np.abs(G_ref).max())
        np.testing.assert_array_equal(solver.direct_rows, rows)
        any_pooled |= bool(pooled)
    assert any_pooled == expect_pooled, "the cases should cover pooled and unpooled blocks"


def test_rows_local_indices_ascend():
    """The sparse kernel's precondition: within a table row, local indices ascend."""
    solvers = []
    original = C.CrossedSolver._pool

    def recording(self):
        original(self)
        solvers.append(self)

    frame = _crossed_frame(500, 120, 0.3, seed=3)
    try:
        C.CrossedSolver._pool = recording
        rl.lmer("y ~ x + (1|subj) + (1|item)", frame)
    finally:
        C.CrossedSolver._pool = original
    for solver in solvers:
        step = np.diff(solver.local_index)
        inside = np.ones(len(step), dtype=bool)
        inside[solver.indptr[1:-1][solver.indptr[1:-1] > 0] - 1] = False  # across a row end
        assert (step[inside] > 0).all()


@pytest.mark.parametrize("tile", [1, 7, 64, C.POOL_TILE, 10**9])
def test_pooled_outer_sums_is_the_sum_of_outer_products(tile):
    """Against numpy's sum of outer products of the dense rows, and the same numbers
    (bit for bit) whatever the band size."""
    rng = np.random.default_rng(tile % 1000)
    size, n_rows = 37, 60
    lengths = rng.integers(0, size + 1, n_rows)
    local = [np.sort(rng.choice(size, k, replace=False)) for k in lengths]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    local_index = np.concatenate(local).astype(np.int64)
    data = rng.standard_normal(len(local_index))
    rows = rng.permutation(n_rows).astype(np.int64)
    group_ptr = np.array([0, 25, 25, 60], dtype=np.int64)  # an empty group too
    out = pooled_outer_sums(indptr, local_index, data, rows, group_ptr, size, tile)
    reference = pooled_outer_sums(indptr, local_index, data, rows, group_ptr, size, 10**9)
    np.testing.assert_array_equal(out, reference)
    for g in range(3):
        dense = np.zeros((size, size))
        for lv in rows[group_ptr[g]:group_ptr[g + 1]]:
            n = np.zeros(size)
            n[local_index[indptr[lv]:indptr[lv + 1]]] = data[indptr[lv]:indptr[lv + 1]]
            dense += np.outer(n, n)
        np.testing.assert_allclose(out[g], pack_lower(dense), rtol=POOL_RTOL, atol=POOL_RTOL * max(1.0, np.abs(dense).max()))
