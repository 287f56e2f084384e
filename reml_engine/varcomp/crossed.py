"""Crossed terms: eliminate one term's diagonal block, factor the rest densely by block.

With ``Z = [Z_e | Z_c]`` (one term e, the "core" terms c), ``T = diag(tau)`` and
``M = Z'WZ``, Woodbury gives ``H^-1 = W - W Z (T^-1 + M)^-1 Z' W``. The block of term e
in ``T^-1 + M`` is diagonal (``1/tau_e + d_l``, d the level weights), so it is
eliminated in closed form (``f_l = tau_e / (1 + tau_e d_l)``), leaving the Schur
complement on the core levels

    K = M_cc - N' F N            (N: weighted table of e against the core levels)
    A = I + Lambda K Lambda      (Lambda = diag(sqrt(tau)) of the core levels)

factored by Cholesky, one dense block per connected component of the core levels
(levels linked through a common row or a common level of e). Then

    log|H|   = -sum log w + sum_l log(1 + tau_e d_l) + log|A|
    C        = W_e + sum_l S_l S_l' / (d_l (1 + tau_e d_l)) - Y'Y,
    Y        = L^-1 Lambda (S_c - N' F S_e)

with ``W_e`` the within-e cross-product and S the level sums of ``w [X|y]``.

Levels of e with equal weight contribute ``f_u G_u``, ``G_u = sum n_l n_l'`` over the
group: where the groups are large (unit weights, many levels of few distinct sizes) the
``G_u`` are summed once and each evaluation adds U dense matrices instead of visiting
every level's table row (:data:`POOL_GAIN`). The term eliminated is chosen by cost
(:meth:`CrossedSolver.best`).

The gradient needs ``tr(Z_j' H^-1 Z_j)`` and ``R_j = Z_j' H^-1 [X|y]`` per term: for e,
``sum_l d_l / (1 + tau_e d_l) - sum_l n_l' Sigma n_l / (1 + tau_e d_l)^2`` with
``Sigma = Lambda A^-1 Lambda``; for a core term, from ``A^-1`` in the form that does not
cancel at its tau (:data:`TRACE_SWITCH`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from ..checks import ModelDataError
from .kernels import (
    counting_sort_order,
    dense_rows,
    lower_solve_batched,
    pack_for_inner_product,
    pack_lower,
    quadratic_forms,
    row_entries,
    scale_blocks,
    schur_subtract_by_row,
    sparse_outer_sum,
    subtract_packed,
    symmetrize_lower,
    table_times,
    table_transpose_times,
    union_components,
    upper_solve_batched,
    weighted_quadratic_sum,
)
from .solution import Solution, within_cross
from .statistics import VCStats

#: Levels of the eliminated term with equal weight are pooled into one dense matrix per
#: block (its lower triangle, s (s + 1) / 2 numbers) when visiting their table rows at
#: each evaluation (the sum of squared row lengths) would cost more than this many times
#: the matrix's size. Measured: about 7 ns per scattered update of a row, 1 ns per
#: element of the pooled matrices summed by BLAS, hence 1/7 with some margin for memory.
POOL_GAIN = 0.15

#: A pooled matrix is summed by BLAS from its group's rows made dense (``D'D``) when
#: that costs at most this many times the multiply-adds of summing the rows' sparse
#: outer products: BLAS does a multiply-add in well under a hundredth of the time a
#: scattered update takes (density above about 6%).
DENSE_POOL_RATIO = 300.0

#: Rows of a group made dense at a time when pooling through BLAS.
DENSE_POOL_ROWS = 2048

#: Blocks smaller than this are never pooled (each pooled block costs a Python step
#: per evaluation).
POOL_MIN_BLOCK = 64

#: Memory for the pooled matrices, in bytes.
POOL_MAX_BYTES = 4 << 30

#: For a core term j, ``tr(Z_j' H^-1 Z_j)`` is ``(m_j - tr A^-1_jj) / tau_j`` when
#: ``tau_j max diag(K_jj)`` is at least this (no cancellation there), and
#: ``tr K_jj - tr (K Sigma K)_jj`` below it.
TRACE_SWITCH = 1.0

#: Blocks at most this large are solved by the compiled batched kernels; larger ones
#: one at a time by LAPACK.
SMALL_BLOCK = 48


def _cholesky(stack: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of positive definite matrices (I + PSD)."""
    if stack.shape[0] == 1 and stack.shape[1] > SMALL_BLOCK:
        # One large block: LAPACK in place on the (symmetric) buffer, no copy.
        L, info = sla.lapack.dpotrf(stack[0].T, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"Cholesky factorization failed (LAPACK info {info})")
        return L[None]
    return np.linalg.cholesky(stack)


@dataclass(frozen=True)
class _Group:
    """Consecutive blocks of one size: a stack (count, size, size) in the buffer."""

    size: int
    first_block: int
    count: int
    buffer_start: int
    row_start: int

    @property
    def buffer(self) -> slice:
        return slice(self.buffer_start, self.buffer_start + self.count * self.size * self.size)

    @property
    def rows(self) -> slice:
        return slice(self.row_start, self.row_start + self.count * self.size)


def _table(stats: VCStats, e: int, core: list[int], offsets: np.ndarray):
    """The table of e against every core level as (rows: level of e, cols: core level,
    weights), from each pair's table as stored (no transposition)."""
    rows, cols, data = [], [], []
    for i, c in enumerate(core):
        if e < c:
            t = stats.pairs[e, c]
            rows.append(t.rows)
            cols.append(t.cols + offsets[i])
        else:
            t = stats.pairs[c, e]
            rows.append(t.cols)
            cols.append(t.rows + offsets[i])
        data.append(t.weights)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(data)


def _components(stats: VCStats, e: int, core: list[int], offsets: np.ndarray, rows, cols) -> np.ndarray:
    """Connected components of the core levels, linked by levels of e (the table rows
    ``rows``/``cols``) and by the tables between core terms."""
    m_core = int(offsets[-1])
    heads, tails = [m_core + rows], [cols]
    for i, a in enumerate(core):
        for jb in range(i + 1, len(core)):
            t = stats.pair(a, core[jb])
            heads.append(t.rows + offsets[i])
            tails.append(t.cols + offsets[jb])
    labels = union_components(m_core + stats.nlevels[e], np.concatenate(heads).astype(np.int64),
                              np.concatenate(tails).astype(np.int64))
    return labels[:m_core]


class CrossedSolver:
    """Exact evaluation with term ``e`` eliminated and the others in dense blocks.

    Parameters
    ----------
    stats : VCStats
        In the model's parametrization.
    e : int
        The term eliminated first.
    """

    kind = "crossed"

    def __init__(self, stats: VCStats, e: int, labels: np.ndarray | None = None):
        self.stats = stats
        self.k = stats.k
        self.e = e
        core = [t for t in range(stats.k) if t != e]
        self.core = core
        sizes = [stats.nlevels[t] for t in core]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.core_offsets = offsets
        m_core = int(offsets[-1])
        self.m_core = m_core
        self.term_of_core = np.repeat(np.asarray(core, dtype=np.int64), sizes)

        # The table of e against every core level, CSR by level of e. Sorting by column
        # first keeps the core levels ascending within each row after the (stable) pass
        # by row.
        rows, cols, data = _table(stats, e, core, offsets)
        by_col, _ = counting_sort_order(cols, m_core)
        by_row, indptr = counting_sort_order(rows[by_col], stats.nlevels[e])
        order = by_col[by_row]
        self.indices = np.ascontiguousarray(cols[order])
        self.data = np.ascontiguousarray(data[order])
        self.indptr = indptr

        self.d = np.ascontiguousarray(stats.level_weights[e], dtype=np.float64)
        self.S_e = np.ascontiguousarray(stats.sums[e], dtype=np.float64)
        self.within = within_cross(stats.cross, self.S_e, self.d)
        self.S_core = np.concatenate([stats.sums[c] for c in core]).astype(np.float64)
        self.core_weights = np.concatenate([stats.level_weights[c] for c in core]).astype(np.float64)

        if labels is None:
            labels = _components(stats, e, core, offsets, rows, cols)
        self._layout(labels)
        self._base_matrix(stats)
        self._pool()

    # -- layout -------------------------------------------------------------------------

    def _by_column(self, rows: np.ndarray):
        """The table restricted to some of its rows, held by core level (CSC)."""
        positions, owner = row_entries(self.indptr, rows.astype(np.int64))
        order, col_ptr = counting_sort_order(self.indices[positions], self.m_core)
        return (col_ptr, np.ascontiguousarray(owner[order]), np.ascontiguousarray(self.data[positions][order]))

    def _layout(self, labels: np.ndarray) -> None:
        """Blocks sorted by size (largest first); levels in term order within a block."""
        uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        rank = np.lexsort((uniq, -counts))               # block number of each label
        block_of_label = np.empty(len(uniq), dtype=np.int64)
        block_of_label[rank] = np.arange(len(uniq))
        block = block_of_label[inverse]
        block_size = counts[rank].astype(np.int64)
        order = np.lexsort((np.arange(self.m_core), block)).astype(np.int64)   # block order -> level
        block_first = np.concatenate([[0], np.cumsum(block_size)[:-1]]).astype(np.int64)
        block_base = np.concatenate([[0], np.cumsum(block_size**2)[:-1]]).astype(np.int64)
        level_local = np.empty(self.m_core, dtype=np.int64)
        level_local[order] = np.arange(self.m_core) - np.repeat(block_first, block_size)
        self.block_of_level = block
        self.order = order
        self.block_size = block_size
        self.block_first = block_first
        self.block_base = block_base
        self.level_local = level_local
        self.level_base = block_base[block]
        self.level_size = block_size[block]
        self.buffer_size = int((block_size**2).sum())
        groups = []
        start = 0
        while start < len(block_size):
            stop = start
            while stop < len(block_size) and block_size[stop] == block_size[start]:
                stop += 1
            groups.append(_Group(int(block_size[start]), start, stop - start, int(block_base[start]),
                                 int(block_first[start])))
            start = stop
        self.groups = groups
        first_core = self.indices[self.indptr[:-1]] if len(self.indices) else np.zeros(0, dtype=np.int64)
        self.block_of_e = block[first_core]
        self.local_index = np.ascontiguousarray(level_local[self.indices])

    def _position(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Buffer position of entry (a, b) of the core levels (same block)."""
        return self.level_base[a] + self.level_local[a] * self.level_size[a] + self.level_local[b]

    def _base_matrix(self, stats: VCStats) -> None:
        """``M_cc`` in the block layout: level weights and the tables between core terms."""
        K0 = np.zeros(self.buffer_size)
        levels = np.arange(self.m_core)
        K0[self._position(levels, levels)] = self.core_weights
        for i, a in enumerate(self.core):
            for jb, b in enumerate(self.core[i + 1:], start=i + 1):
                t = stats.pair(a, b)
                ga = t.rows + self.core_offsets[i]
                gb = t.cols + self.core_offsets[jb]
                K0[self._position(ga, gb)] += t.weights
                K0[self._position(gb, ga)] += t.weights
        self.K0 = K0

    def _pool(self) -> None:
        """Decide, per block and weight value, between pooled matrices and table rows."""
        row_cost = np.diff(self.indptr).astype(np.float64) ** 2
        pooled = []
        direct = []
        budget = POOL_MAX_BYTES
        by_block = np.argsort(self.block_of_e, kind="stable")
        bounds = np.flatnonzero(np.diff(self.block_of_e[by_block])) + 1
        for members in np.split(by_block, bounds):
            if not len(members):
                continue
            b = int(self.block_of_e[members[0]])
            s = int(self.block_size[b])
            values, group, _ = np.unique(self.d[members], return_inverse=True, return_counts=True)
            cost = np.bincount(group, weights=row_cost[members], minlength=len(values))
            worth = cost > POOL_GAIN * s * (s + 1) / 2
            if s < POOL_MIN_BLOCK:
                worth[:] = False
            n_pool = int(worth.sum())
            if n_pool and n_pool * s * (s + 1) * 4 <= budget:
                budget -= n_pool * s * (s + 1) * 4
                take = worth[group]
                G = np.empty((n_pool, s * (s + 1) // 2))
                for u_new, u in enumerate(np.flatnonzero(worth)):
                    G[u_new] = self._pooled_matrix(members[group == u], s, float(cost[u]))
                pooled.append((b, values[worth], G))
                direct.append(members[~take])
            else:
                direct.append(members)
        self.pooled = pooled
        self.direct_rows = np.sort(np.concatenate(direct)).astype(np.int64) if direct else np.zeros(0, np.int64)
        self.direct_by_column = self._by_column(self.direct_rows)

    def _pooled_matrix(self, rows: np.ndarray, size: int, sparse_cost: float) -> np.ndarray:
        """``sum over rows l of n_l n_l'`` (rows of one block), its lower triangle packed."""
        rows = rows.astype(np.int64)
        if len(rows) * size * size <= DENSE_POOL_RATIO * sparse_cost:
            total = np.zeros((size, size))
            for start in range(0, len(rows), DENSE_POOL_ROWS):
                D = dense_rows(self.indptr, self.local_index, self.data, rows[start:start + DENSE_POOL_ROWS], size)
                total += D.T @ D
            return pack_lower(total)
        return pack_lower(sparse_outer_sum(self.indptr, self.local_index, self.data, rows, size))

    @classmethod
    def best(cls, stats: VCStats, max_dense_block: int) -> CrossedSolver:
        """The solver eliminating the term that leaves the cheapest factorization."""
        best = None
        sizes_seen = {}
        for e in range(stats.k):
            core = [t for t in range(stats.k) if t != e]
            offsets = np.concatenate([[0], np.cumsum([stats.nlevels[t] for t in core])]).astype(np.int64)
            rows, cols, _ = _table(stats, e, core, offsets)
            labels = _components(stats, e, core, offsets, rows, cols)
            sizes = np.bincount(labels)
            sizes = sizes[sizes > 0].astype(np.float64)
            sizes_seen[e] = int(sizes.max())
            row_lengths = np.bincount(rows, minlength=stats.nlevels[e]).astype(np.float64)
            cost = float((sizes**3).sum() / 3 + (row_lengths**2).sum())
            if sizes.max() <= max_dense_block and (best is None or cost < best[0]):
                best = (cost, e, labels)
        if best is None:
            worst = ", ".join(f"{stats.names[e]!r} eliminated: {m}" for e, m in sizes_seen.items())
            raise ModelDataError(
                f"the crossed terms {list(stats.names)} leave a connected block of levels larger than "
                f"max_dense_block = {max_dense_block} whichever term is eliminated first (largest block with "
                f"{worst}); a sparse factorization for such designs is not implemented yet"
            )
        return cls(stats, best[1], best[2])

    def describe(self, names) -> str:
        sizes = np.unique(self.block_size)[::-1]
        shown = ", ".join(str(int(s)) for s in sizes[:5]) + (", ..." if len(sizes) > 5 else "")
        pooled = sum(len(v) for _, v, _ in self.pooled)
        return (f"crossed: eliminate {names[self.e]!r} ({len(self.d)} levels), "
                f"{len(self.block_size)} dense block(s) of size {shown} for "
                f"{', '.join(repr(names[c]) for c in self.core)}; {pooled} pooled weight group(s)")

    # -- factorization ------------------------------------------------------------------

    def _lam_block_order(self, tau: np.ndarray) -> np.ndarray:
        return np.sqrt(tau[self.term_of_core])[self.order]

    def _factor(self, tau: np.ndarray) -> dict:
        te = float(tau[self.e])
        one_plus = 1.0 + te * self.d
        f = te / one_plus
        K = self.K0.copy()
        if te > 0:
            schur_subtract_by_row(K, *self.direct_by_column, self.indptr, self.local_index, self.data, f,
                                  self.level_base, self.level_local, self.level_size)
            for b, values, G in self.pooled:
                subtract_packed(K, self.block_base[b], self.block_size[b], (te / (1.0 + te * values)) @ G)
        lam = self._lam_block_order(tau)
        A = scale_blocks(K, lam, self.block_base, self.block_size, self.block_first)
        factors = []
        logdet_A = 0.0
        for g in self.groups:
            L = _cholesky(A[g.buffer].reshape(g.count, g.size, g.size))
            logdet_A += 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum()
            factors.append(L)
        S_E = self.S_core - table_transpose_times(self.indptr, self.indices, self.data, self.S_e, f, self.m_core)
        rhs = lam[:, None] * S_E[self.order]
        Y = np.concatenate([self._solve_lower(L, rhs[g.rows].reshape(g.count, g.size, -1)).reshape(-1, rhs.shape[1])
                            for g, L in zip(self.groups, factors, strict=True)])
        between = self.S_e / np.sqrt(self.d * one_plus)[:, None]
        C = self.within + between.T @ between - Y.T @ Y
        logdet = -self.stats.sum_log_weights + np.log1p(te * self.d).sum() + logdet_A
        return {"tau": tau, "te": te, "one_plus": one_plus, "f": f, "K": K, "lam": lam, "L": factors,
                "S_E": S_E, "Y": Y, "C": 0.5 * (C + C.T), "logdet": float(logdet)}

    @staticmethod
    def _solve_lower(L, b):
        if L.shape[1] <= SMALL_BLOCK:
            return lower_solve_batched(L, np.ascontiguousarray(b))
        return np.stack([sla.solve_triangular(L[i], b[i], lower=True, check_finite=False) for i in range(len(L))])

    @staticmethod
    def _solve_upper(L, b):
        if L.shape[1] <= SMALL_BLOCK:
            return upper_solve_batched(L, np.ascontiguousarray(b))
        return np.stack([sla.solve_triangular(L[i], b[i], lower=True, trans="T", check_finite=False)
                         for i in range(len(L))])

    def _coefficients(self, fac: dict) -> tuple[np.ndarray, np.ndarray]:
        """``Z = A^-1 Lambda S_E`` in block order and ``U = Lambda Z`` per core level."""
        q = fac["Y"].shape[1]
        Z = np.concatenate([self._solve_upper(L, fac["Y"][g.rows].reshape(g.count, g.size, q)).reshape(-1, q)
                            for g, L in zip(self.groups, fac["L"], strict=True)])
        U = np.empty_like(Z)
        U[self.order] = fac["lam"][:, None] * Z
        return Z, U

    def _residual_sums(self, fac: dict) -> tuple[np.ndarray, np.ndarray]:
        """``R = Z' H^-1 [X|y]`` for the levels of e and the core levels (level order)."""
        Z, U = self._coefficients(fac)
        lam = fac["lam"]
        q = Z.shape[1]
        R_block = np.empty_like(Z)
        positive = lam > 0
        R_block[positive] = Z[positive] / lam[positive, None]
        if not positive.all():
            # tau = 0 for some core term: R = S_E - K U on those rows.
            U_block = U[self.order]
            KU = np.concatenate([
                (fac["K"][g.buffer].reshape(g.count, g.size, g.size)
                 @ U_block[g.rows].reshape(g.count, g.size, q)).reshape(-1, q)
                for g in self.groups])
            R_block[~positive] = fac["S_E"][self.order][~positive] - KU[~positive]
        R_core = np.empty_like(R_block)
        R_core[self.order] = R_block
        NU = table_times(self.indptr, self.indices, self.data, U, np.ones(len(self.d)))
        R_e = (self.S_e - NU) / fac["one_plus"][:, None]
        return R_e, R_core

    def _sigma(self, fac: dict) -> tuple[np.ndarray, np.ndarray]:
        """``A^-1`` and ``Sigma = Lambda A^-1 Lambda`` in the block layout."""
        A_inv = np.empty(self.buffer_size)
        for g, L in zip(self.groups, fac["L"], strict=True):
            if g.count == 1 and g.size > SMALL_BLOCK:
                inv, _ = sla.lapack.dpotri(L[0], lower=1)
                symmetrize_lower(inv)
                A_inv[g.buffer] = inv.reshape(-1)
            else:
                L_inv = np.linalg.inv(L)
                A_inv[g.buffer] = (np.swapaxes(L_inv, 1, 2) @ L_inv).reshape(-1)
        lam = fac["lam"]
        Sigma = scale_blocks(A_inv, lam, self.block_base, self.block_size, self.block_first)
        # scale_blocks adds the identity: take it back off.
        levels = np.arange(self.m_core)
        Sigma[self._position(levels, levels)] -= 1.0
        return A_inv, Sigma

    def _core_traces(self, fac: dict, A_inv: np.ndarray, Sigma: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """``tr(Z_j' H^-1 Z_j)`` for each core term."""
        levels = np.arange(self.m_core)
        diag_pos = self._position(levels, levels)
        K_diag = fac["K"][diag_pos]
        A_inv_diag = A_inv[diag_pos]
        traces = np.zeros(self.k)
        need_ksk = []
        for i, c in enumerate(self.core):
            part = slice(self.core_offsets[i], self.core_offsets[i + 1])
            if tau[c] * K_diag[part].max() >= TRACE_SWITCH:
                traces[c] = (np.sum(1.0 - A_inv_diag[part])) / tau[c]
            else:
                need_ksk.append((c, part))
        if need_ksk:
            ksk = np.empty(self.m_core)
            for g in self.groups:
                K_stack = fac["K"][g.buffer].reshape(g.count, g.size, g.size)
                S_stack = Sigma[g.buffer].reshape(g.count, g.size, g.size)
                T = S_stack @ K_stack
                ksk[self.order[g.rows]] = np.einsum("bil,bil->bl", K_stack, T).reshape(-1)
            for c, part in need_ksk:
                traces[c] = K_diag[part].sum() - ksk[part].sum()
        return traces

    # -- the solver interface -----------------------------------------------------------

    def solve(self, tau: np.ndarray, gradient: bool = True) -> Solution:
        fac = self._factor(tau)
        if not gradient:
            return Solution(fac["logdet"], fac["C"])
        R_e, R_core = self._residual_sums(fac)
        A_inv, Sigma = self._sigma(fac)
        traces = self._core_traces(fac, A_inv, Sigma, tau)
        g = 1.0 / fac["one_plus"] ** 2
        quad = weighted_quadratic_sum(Sigma, *self.direct_by_column, self.indptr, self.local_index, self.data, g,
                                      self.level_base, self.level_local, self.level_size)
        te = fac["te"]
        for b, values, G in self.pooled:
            packed = pack_for_inner_product(Sigma, self.block_base[b], self.block_size[b])
            quad += float((1.0 / (1.0 + te * values) ** 2) @ (G @ packed))
        traces[self.e] = float((self.d / fac["one_plus"]).sum() - quad)
        q = R_e.shape[1]
        RtR = np.zeros((self.k, q, q))
        RtR[self.e] = R_e.T @ R_e
        for i, c in enumerate(self.core):
            part = R_core[self.core_offsets[i]:self.core_offsets[i + 1]]
            RtR[c] = part.T @ part
        return Solution(fac["logdet"], fac["C"], traces, RtR)

    def level_parts(self, tau: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per term: ``R_j`` (m_j, q) and ``diag((T^-1 + Z'WZ)^-1)`` for its levels."""
        fac = self._factor(tau)
        R_e, R_core = self._residual_sums(fac)
        A_inv, Sigma = self._sigma(fac)
        all_rows = np.arange(len(self.d), dtype=np.int64)
        quad = quadratic_forms(Sigma, self.indptr, self.indices, self.data, all_rows,
                               self.level_base, self.level_local, self.level_size)
        f = fac["f"]
        levels = np.arange(self.m_core)
        cond_core = tau[self.term_of_core] * A_inv[self._position(levels, levels)]
        R_terms: list = [None] * self.k
        cond_terms: list = [None] * self.k
        R_terms[self.e] = R_e
        cond_terms[self.e] = f + f * f * quad
        for i, c in enumerate(self.core):
            part = slice(self.core_offsets[i], self.core_offsets[i + 1])
            R_terms[c] = R_core[part]
            cond_terms[c] = cond_core[part]
        return R_terms, cond_terms

    def reduction_parts(self, j: int, tau: np.ndarray, max_block: int | None = None):
        """What the one-dimensional reduction in ``tau_j`` needs, from one factorization at
        tau (``tau_j = 0``): ``log|H_-j|``, ``C_-j``, ``R_j`` and the blocks of K."""
        fac = self._factor(tau)
        R_e, R_core = self._residual_sums(fac)
        if j == self.e:
            R = R_e
        else:
            i = self.core.index(j)
            R = R_core[self.core_offsets[i]:self.core_offsets[i + 1]]
        return fac["logdet"], fac["C"], R, self._term_blocks(fac, j, max_block)

    def _term_blocks(self, fac: dict, j: int, max_block: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``K = Z_j' H^-1 Z_j`` (``tau_j = 0``) as dense blocks over levels of term j."""
        blocks = []
        group_of_block = np.repeat(np.arange(len(self.groups)), [g.count for g in self.groups])
        if j == self.e:
            by_block = np.argsort(self.block_of_e, kind="stable")
            bounds = np.flatnonzero(np.diff(self.block_of_e[by_block])) + 1
            for members in np.split(by_block, bounds):
                b = int(self.block_of_e[members[0]])
                if max_block is not None and len(members) > max_block:
                    raise ModelDataError(
                        f"term {self.stats.names[j]!r}: {len(members)} levels are coupled through the other terms; "
                        f"the one-dimensional reduction decomposes at most {max_block} at once"
                    )
                gi = int(group_of_block[b])
                g = self.groups[gi]
                L = fac["L"][gi][b - g.first_block]
                s = g.size
                lam = fac["lam"][self.block_first[b]:self.block_first[b] + s]
                N = np.zeros((s, len(members)))
                for col, lv in enumerate(members):
                    span = slice(self.indptr[lv], self.indptr[lv + 1])
                    N[self.level_local[self.indices[span]], col] = self.data[span]
                W = sla.solve_triangular(L, lam[:, None] * N, lower=True)
                K = np.diag(self.d[members]) - W.T @ W
                blocks.append((members, 0.5 * (K + K.T)))
            return blocks
        i = self.core.index(j)
        lo, hi = self.core_offsets[i], self.core_offsets[i + 1]
        mine = np.arange(lo, hi)
        blocks_of_j = self.block_of_level[mine]
        order = np.argsort(blocks_of_j, kind="stable")
        bounds = np.flatnonzero(np.diff(blocks_of_j[order])) + 1
        for members in np.split(order, bounds):
            levels = mine[members]
            if max_block is not None and len(levels) > max_block:
                raise ModelDataError(
                    f"term {self.stats.names[j]!r}: {len(levels)} levels are coupled through the other terms; "
                    f"the one-dimensional reduction decomposes at most {max_block} at once"
                )
            b = int(self.block_of_level[levels[0]])
            gi = int(group_of_block[b])
            g = self.groups[gi]
            L = fac["L"][gi][b - g.first_block]
            s = g.size
            K_block = fac["K"][self.block_base[b]:self.block_base[b] + s * s].reshape(s, s)
            lam = fac["lam"][self.block_first[b]:self.block_first[b] + s]
            local = self.level_local[levels]
            W = sla.solve_triangular(L, lam[:, None] * K_block[:, local], lower=True)
            K = K_block[np.ix_(local, local)] - W.T @ W
            blocks.append((members, 0.5 * (K + K.T)))
        return blocks
