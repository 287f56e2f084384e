"""The crossed solver's pooling decision (``CrossedSolver._pool``) without its per-block
Python loop gives what the loop gave: the same pooled matrices (bit for bit), the same
weight values per block, the same rows visited directly.

The reference below is the per-block loop as it was before the change (kept here as the
specification of the decision: per block of the layout and weight value of the innermost
levels, pool when the rows' cost exceeds ``POOL_GAIN`` times the packed matrix, blocks in
order while the memory budget lasts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.varcomp import crossed as C


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
                G[u_new] = solver._pooled_matrix(members[group == u], s, float(cost[u]))
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


@pytest.mark.parametrize(("n_subjects", "n_items", "share", "budget", "expect_pooled"), [
    (400, 90, 0.5, C.POOL_MAX_BYTES, True),  # one block of items, pooled
    (300, 40, 0.5, C.POOL_MAX_BYTES, False),  # block below POOL_MIN_BLOCK: nothing pooled
    (400, 90, 0.5, 90 * 91 * 4, False),  # the budget does not cover the block's matrices
])
def test_pooling_is_the_per_block_loop(monkeypatch, n_subjects, n_items, share, budget, expect_pooled):
    monkeypatch.setattr(C, "POOL_MAX_BYTES", budget)
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
            np.testing.assert_array_equal(G, G_ref)
        np.testing.assert_array_equal(solver.direct_rows, rows)
        any_pooled |= bool(pooled)
    assert any_pooled == expect_pooled, "the cases should cover pooled and unpooled blocks"
