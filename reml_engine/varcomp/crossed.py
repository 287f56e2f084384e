"""Crossed terms: eliminate a nesting chain in closed form, factor the rest by dense block.

With ``Z = [Z_chain | Z_core]``, ``T = diag(tau)`` and ``M = Z'WZ``, Woodbury gives
``H^-1 = W - W Z (T^-1 + M)^-1 Z' W``. A chain of terms ``e_1 < e_2 < ...`` each nested
in the next (one term, or ``class < school`` in ``(1|school/class) + (1|rater)``) is
eliminated first, innermost first: each level's block of ``T^-1 + M`` is then diagonal
and its elimination is closed form, as in :mod:`.nested`. The innermost level l
(weights d, table row n_l against the core levels) has ``f_l = tau / (1 + tau d_l)``; a
higher chain level has the effective weight, sums and table row of its children, each
divided by ``1 + tau d`` of the child. What is left is the Schur complement on the core
levels (the terms outside the chain)

    K = M_cc - sum over chain levels of f_l k_l k_l'
    A = I + Lambda K Lambda      (Lambda = diag(sqrt(tau)) of the core levels)

factored by Cholesky, one dense block per connected component of the core levels
(:mod:`.blocks`). Then

    log|H|   = -sum log w + sum over chain levels log(1 + tau d_l) + log|A|
    C        = C_chain - Y'Y,   Y = L^-1 Lambda (S_core - sum_l f_l k_l s_l')

with ``C_chain`` the nested closed form (a sum of squares) over the chain.

Innermost levels with equal weight contribute ``f_u G_u``, ``G_u = sum n_l n_l'`` over
the group: where the groups are large (unit weights, many levels of few distinct
sizes) the ``G_u`` are summed once and each evaluation adds U dense matrices instead of
visiting every level's table row (:data:`POOL_GAIN`). The chain is chosen by cost
(:meth:`CrossedSolver.best`).

The gradient needs ``tr(Z_j' H^-1 Z_j)`` and ``R_j = Z_j' H^-1 [X|y]`` per term: for
chain terms from a pass down the chain
(:func:`~reml_engine.varcomp.kernels.chain_downward`) with
``Sigma = Lambda A^-1 Lambda``; for a core term from ``A^-1`` in the form that does not
cancel at its tau (:data:`TRACE_SWITCH`).
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.linalg as sla

from ..errors import ModelDataError
from .blocks import BlockLayout
from .kernels import (
    chain_downward,
    component_labels,
    counting_sort_order,
    dense_rows,
    nested_between,
    nested_upward,
    pack_lower,
    packed_inner_product,
    pooled_combinations,
    pooled_combinations_into,
    pooled_outer_sums_into,
    pooled_storage_bound,
    row_entries,
    rows_then_columns_sorted,
    schur_subtract_by_row,
    schur_subtract_rows,
    subtract_packed,
    table_times,
    table_transpose_times,
    union_edges,
    upper_row_values,
    weighted_quadratic_sum,
)
from .solution import Solution, within_cross
from .statistics import VCStats
from .terms import TermStructure

#: Innermost levels with equal weight are pooled into one dense matrix per block (its
#: lower triangle, s (s + 1) / 2 numbers) when visiting their table rows at each
#: evaluation (the sum of squared row lengths) would cost more than this many times the
#: matrix's size. Measured: about 7 ns per scattered update of a row, 1 ns per element
#: of the pooled matrices summed by BLAS, hence 1/7 with some margin for memory.
POOL_GAIN = 0.15

#: A pooled matrix is summed by BLAS from its group's rows made dense (``D'D``) when
#: that costs at most this many times the sparse cost (the sum of the rows' squared
#: lengths), else by :func:`~reml_engine.varcomp.kernels.pooled_outer_sums`.
#: Measured (benchmark machine, one thread, a 1000-level block, 400 rows of equal
#: length, best of 5): the two break even at a ratio of about 25 (200 entries a row:
#: 9.7 ms each); at 100 (the 1e6-row subjects x items design, about 100 entries a row)
#: the sparse kernel took 2.7 ms against 13.9 ms, at 6 it took 46 ms against 12 ms.
DENSE_POOL_RATIO = 30.0

#: Numbers of a packed pooled matrix the sparse kernel updates in one band (256 KB, so
#: the band's scattered updates stay in a core's cache; 3.2 ms without bands against
#: 2.7 ms at 100 entries a row, in the measurement above).
POOL_TILE = 32768

#: Pooled matrices of non-negative integer table weights (unweighted rows: counts) are
#: stored in the narrowest unsigned integer type that holds every entry exactly (an
#: entry of ``sum n_l n_l'`` is at most the largest diagonal one, by Cauchy-Schwarz), and
#: read as float64 by the kernels: the same numbers in a fraction of the memory each
#: evaluation streams through (the 1e6-row subjects x items design: 53 matrices of 500,500
#: entries, 27 MB as uint8 against 212 MB). False keeps float64 (for checks).
POOL_COMPACT = True

#: Packed entries of the pooled matrices combined at a time (the chunk of sums stays in
#: the first-level cache while each matrix's stretch streams through).
POOL_CHUNK = 2048

#: Side of the squares in which a combination of pooled matrices is subtracted from a
#: dense block (its upper triangle is written down columns: a square stays in cache).
POOL_WRITE_TILE = 64

#: Rows of a group made dense at a time when pooling through BLAS.
DENSE_POOL_ROWS = 2048

#: Blocks smaller than this are never pooled (each pooled block costs a Python step
#: per evaluation).
POOL_MIN_BLOCK = 64

#: Memory for the pooled matrices, in bytes.
POOL_MAX_BYTES = 4 << 30

#: Solutions kept by tau (log|H| and C, a few numbers each) for a later call at the same
#: tau without the gradient: the fit's beta and random effects at the optimum, which
#: the search evaluated with its gradient.
FACTORED_CACHE = 256

#: What :meth:`CrossedSolver.level_parts` needs from a solve with the gradient (``A^-1``
#: of the blocks and the coefficients) is kept for the last few such solves, within
#: this many bytes: the search's last evaluations are the optimum's verification (the
#: optimum, the Hessian's steps, the polish), and the fit then asks for the conditional
#: modes and variances at the optimum. Reused arrays are the same numbers a new
#: factorization gives (the same computation on the same tau).
LEVEL_CACHE_BYTES = 64 << 20
#: ... and at most this many solves.
LEVEL_CACHE_ENTRIES = 6

#: The sparse path (:mod:`.sparse`) is considered when the cheapest dense plan leaves a
#: block of more than this many levels (a dense evaluation with its gradient then costs
#: several billion multiply-adds) ...
SPARSE_CONSIDER_BLOCK = 2000
#: ... and taken when its multiply-adds times this factor are fewer than the dense
#: plan's: its kernels are scalar loops, about ten times slower per operation than BLAS.
SPARSE_COST_FACTOR = 10.0

#: For a core term j, ``tr(Z_j' H^-1 Z_j)`` is ``(m_j - tr A^-1_jj) / tau_j`` when
#: ``tau_j max diag(K_jj)`` is at least this (no cancellation there), and
#: ``tr K_jj - tr (K Sigma K)_jj`` below it.
TRACE_SWITCH = 1.0


def _table(stats: VCStats, t: int, core: list[int], offsets: np.ndarray):
    """The table of term t against every core level as (rows: level of t, cols: core
    level, weights), from each pair's table as stored (no transposition). With one core
    term the arrays may be the table's own: read them, never write them."""
    rows, cols, data = [], [], []
    for i, c in enumerate(core):
        if t < c:
            table = stats.pairs[t, c]
            rows.append(table.rows)
            cols.append(table.cols + offsets[i] if offsets[i] else table.cols)
        else:
            table = stats.pairs[c, t]
            rows.append(table.cols)
            cols.append(table.rows + offsets[i] if offsets[i] else table.rows)
        data.append(table.weights)
    if len(core) == 1:
        return rows[0], cols[0], data[0]
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(data)


def _csr(rows, cols, data, n_rows: int, n_cols: int):
    """CSR with the columns ascending in each row (two stable counting passes; none
    when the entries are already in that order, as a pair's table is stored)."""
    if rows_then_columns_sorted(rows, cols):
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return indptr, np.array(cols, order="C"), np.array(data, order="C")
    by_col, _ = counting_sort_order(cols, n_cols)
    by_row, indptr = counting_sort_order(rows[by_col], n_rows)
    order = by_col[by_row]
    return indptr, np.ascontiguousarray(cols[order]), np.ascontiguousarray(data[order])


def _components(stats: VCStats, chain, core, offsets) -> np.ndarray:
    """Connected components of the core levels, linked by a common level of a chain
    term (rows of its table) or by the tables between core terms."""
    m_core = int(offsets[-1])
    n_nodes = m_core + sum(stats.nlevels[t] for t in chain)
    parent = np.arange(n_nodes, dtype=np.int64)
    node = m_core
    for t in chain:
        for i, c in enumerate(core):
            table = stats.pair(min(t, c), max(t, c))
            rows, cols = (table.rows, table.cols) if t < c else (table.cols, table.rows)
            union_edges(parent, rows, cols, node, int(offsets[i]))
        node += stats.nlevels[t]
    for i, a in enumerate(core):
        for jb in range(i + 1, len(core)):
            table = stats.pair(a, core[jb])
            union_edges(parent, table.rows, table.cols, int(offsets[i]), int(offsets[jb]))
    return component_labels(parent)[:m_core]


def nesting_chains(structure: TermStructure) -> list[tuple[int, ...]]:
    """Every sequence of terms each nested in the next (innermost first) that leaves at
    least one term out."""
    out = []

    def extend(chain):
        if len(chain) < structure.k:
            out.append(chain)
        for u in range(structure.k):
            if u not in chain and structure.is_nested_in(chain[-1], u):
                extend(chain + (u,))

    for t in range(structure.k):
        extend((t,))
    return out


class CrossedSolver:
    """Exact evaluation with a nesting chain eliminated and the other terms in dense blocks.

    Parameters
    ----------
    stats : VCStats
        In the model's parametrization.
    chain : tuple of int
        Terms eliminated in closed form, innermost first, each nested in the next (one
        term is a chain).
    labels : int array, optional
        Components of the core levels (computed when not given).
    """

    kind = "crossed"

    def __init__(self, stats: VCStats, chain, labels: np.ndarray | None = None):
        chain = tuple(int(t) for t in np.atleast_1d(chain))
        self.stats = stats
        self.k = stats.k
        self.chain = chain
        self.e = chain[0]
        core = [t for t in range(stats.k) if t not in chain]
        if not core:
            raise ValueError("the crossed solver needs at least one term outside the chain")
        self.core = core
        sizes = [stats.nlevels[t] for t in core]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.core_offsets = offsets
        self.m_core = m_core = int(offsets[-1])
        self.term_of_core = np.repeat(np.asarray(core, dtype=np.int64), sizes)
        self.S_core = np.concatenate([stats.sums[c] for c in core]).astype(np.float64)
        self.core_weights = np.concatenate([stats.level_weights[c] for c in core]).astype(np.float64)

        # The innermost term: weights, sums, table against the core levels (CSR).
        e = self.e
        self.d = np.ascontiguousarray(stats.level_weights[e], dtype=np.float64)
        self.S_e = np.ascontiguousarray(stats.sums[e], dtype=np.float64)
        self.within = within_cross(stats.cross, self.S_e, self.d)
        rows, cols, data = _table(stats, e, core, offsets)
        self.indptr, self.indices, self.data = _csr(rows, cols, data, stats.nlevels[e], m_core)
        self.m_inner = stats.nlevels[e]

        self._chain_levels(stats)
        if labels is None:
            labels = _components(stats, chain, core, offsets)
        self.layout = BlockLayout(labels)
        self.local_index = np.ascontiguousarray(self.layout.level_local[self.indices])
        self.up_local_index = np.ascontiguousarray(self.layout.level_local[self.up_indices])
        first = np.concatenate([self.indices[self.indptr[:-1]], self.up_indices[self.up_indptr[:-1]]])
        self.row_base = np.ascontiguousarray(self.layout.level_base[first])
        self.row_size = np.ascontiguousarray(self.layout.level_size[first])
        self.block_of_inner = self.layout.block_of_level[first[:self.m_inner]]
        self._base_matrix(stats)
        self._pool()
        self._alternatives: dict[int, CrossedSolver] = {}
        # What earlier solves at a tau left (see _remember): the fit asks again at the
        # optimum for beta and the random effects.
        self._clear_caches()

    def _clear_caches(self) -> None:
        self._factored: dict[bytes, tuple[float, np.ndarray]] = {}
        self._level_inputs: dict[bytes, tuple] = {}
        self._cache_lock = threading.Lock()
        self._local = threading.local()

    def _work(self) -> dict:
        """This thread's work arrays of :meth:`_factor` (K and the pooled matrices'
        combinations): reused from one evaluation to the next, as a fresh array of this
        size costs more in page faults on first touch than the work written into it (a
        1000-level block: 8 MB for K, 4 MB per combination)."""
        work = getattr(self._local, "work", None)
        if work is None:
            work = {"K": np.empty(self.layout.buffer_size),
                    "pooled": [np.empty((2, G.shape[1])) for _, _, G in self.pooled]}
            self._local.work = work
        return work

    def __getstate__(self) -> dict:
        # The caches hold nothing a result depends on (the same numbers are recomputed
        # on a miss): a pickle, and the state of a fit compared through one, leaves them out.
        state = self.__dict__.copy()
        for name in ("_factored", "_level_inputs", "_cache_lock", "_local"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._clear_caches()

    # -- set-up -------------------------------------------------------------------------

    def _chain_levels(self, stats: VCStats) -> None:
        """Chain levels numbered innermost first; parents; the upper rows' pattern and
        where each child entry adds into its parent's row."""
        chain, core, offsets = self.chain, self.core, self.core_offsets
        sizes = [stats.nlevels[t] for t in chain]
        chain_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        parent = np.full(chain_offsets[-1], -1, dtype=np.int64)
        for pos in range(len(chain) - 1):
            table = stats.pair(chain[pos], chain[pos + 1])
            parent[chain_offsets[pos]:chain_offsets[pos + 1]][table.rows] = table.cols + chain_offsets[pos + 1]
        self.chain_offsets = chain_offsets
        self.parent = parent
        self.term_of = np.repeat(np.arange(len(chain), dtype=np.int64), sizes)
        m_inner, m_core = self.m_inner, self.m_core
        n_upper = int(chain_offsets[-1] - m_inner)
        if n_upper == 0:
            self.up_indptr = np.zeros(1, dtype=np.int64)
            self.up_indices = np.zeros(0, dtype=np.int64)
            self.inner_target = self.upper_target = np.zeros(0, dtype=np.int64)
            self.inner_entry_level = self.upper_entry_level = np.zeros(0, dtype=np.int64)
            return
        rows, cols = [], []
        for pos in range(1, len(chain)):
            r, c, _ = _table(stats, chain[pos], core, offsets)
            rows.append(r + chain_offsets[pos] - m_inner)
            cols.append(c)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        self.up_indptr, self.up_indices, _ = _csr(rows, cols, np.zeros(len(rows)), n_upper, m_core)
        up_keys = np.repeat(np.arange(n_upper), np.diff(self.up_indptr)) * m_core + self.up_indices
        self.inner_entry_level = np.repeat(np.arange(m_inner), np.diff(self.indptr))
        self.inner_target = np.searchsorted(up_keys, (parent[self.inner_entry_level] - m_inner) * m_core
                                            + self.indices).astype(np.int64)
        self.upper_entry_level = np.repeat(np.arange(m_inner, chain_offsets[-1]), np.diff(self.up_indptr))
        up_parent = parent[self.upper_entry_level]
        target = np.searchsorted(up_keys, (up_parent - m_inner) * m_core + self.up_indices).astype(np.int64)
        self.upper_target = np.where(up_parent >= 0, target, -1)

    def _by_column(self, rows: np.ndarray):
        """The innermost table restricted to some of its rows, held by core level (CSC)."""
        positions, owner = row_entries(self.indptr, rows.astype(np.int64))
        order, col_ptr = counting_sort_order(self.indices[positions], self.m_core)
        return (col_ptr, np.ascontiguousarray(owner[order]), np.ascontiguousarray(self.data[positions][order]))

    def _base_matrix(self, stats: VCStats) -> None:
        """``M_cc`` in the block layout: level weights and the tables between core terms."""
        layout = self.layout
        K0 = np.zeros(layout.buffer_size)
        K0[layout.diagonal()] = self.core_weights
        for i, a in enumerate(self.core):
            for jb in range(i + 1, len(self.core)):
                t = stats.pair(a, self.core[jb])
                ga = t.rows + self.core_offsets[i]
                gb = t.cols + self.core_offsets[jb]
                K0[layout.position(ga, gb)] += t.weights
                K0[layout.position(gb, ga)] += t.weights
        self.K0 = K0

    def _pool(self) -> None:
        """Decide, per block and weight value of the innermost levels, between pooled
        matrices and visiting the table rows at each evaluation.

        The levels are grouped by (block, weight value) with one stable sort, so each
        group's levels keep their order and its cost adds the same numbers in the same
        order as a pass per block would; only the blocks with a group worth pooling are
        visited one by one (in block order: they share the memory budget).
        """
        row_cost = np.diff(self.indptr).astype(np.float64) ** 2
        pooled = []
        budget = POOL_MAX_BYTES
        order = np.lexsort((self.d, self.block_of_inner))
        if not len(order):
            self.pooled = pooled
            self.direct_rows = np.zeros(0, np.int64)
            self.direct_by_column = self._by_column(self.direct_rows)
            return
        block, value = self.block_of_inner[order], self.d[order]
        new_group = np.r_[True, (block[1:] != block[:-1]) | (value[1:] != value[:-1])]
        group_of = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        cost = np.bincount(group_of, weights=row_cost[order], minlength=len(starts))
        group_block = block[starts]
        size = self.layout.block_size[group_block].astype(np.int64)
        worth = (cost > POOL_GAIN * size * (size + 1) / 2) & (size >= POOL_MIN_BLOCK)
        pooled_group = np.zeros(len(starts), dtype=bool)
        ends = np.r_[starts[1:], len(order)]
        for b in np.unique(group_block[worth]):
            in_block = np.flatnonzero(group_block == b)
            chosen = in_block[worth[in_block]]
            s = int(size[in_block[0]])
            n_pool = len(chosen)
            if n_pool * s * (s + 1) * 4 > budget:
                continue
            budget -= n_pool * s * (s + 1) * 4
            G = self._pooled_matrices(order, starts[chosen], ends[chosen], cost[chosen], s)
            pooled.append((int(b), value[starts[chosen]], G))
            pooled_group[chosen] = True
        self.pooled = pooled
        self.direct_rows = np.sort(order[~pooled_group[group_of]]).astype(np.int64)
        self.direct_by_column = self._by_column(self.direct_rows)

    def _pooled_matrices(self, order: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                         sparse_cost: np.ndarray, size: int) -> np.ndarray:
        """Per group u (rows ``order[starts[u]:ends[u]]``, of one block), ``sum over rows
        l of n_l n_l'``, its lower triangle packed: (len(starts), size (size + 1) / 2), in
        the type :meth:`_pool_dtype` chooses.

        The groups whose rows are dense enough (:data:`DENSE_POOL_RATIO`) are summed by
        BLAS from the rows made dense; the others all at once by
        :func:`~reml_engine.varcomp.kernels.pooled_outer_sums_into`, which reads each row's
        local indices in ascending order (the CSR keeps the core levels ascending in a
        row, and a block's local positions follow the core levels' order).
        """
        n_pool = len(starts)
        dense = (ends - starts) * float(size) * size <= DENSE_POOL_RATIO * sparse_cost
        sparse = np.flatnonzero(~dense)
        G = np.zeros((n_pool, size * (size + 1) // 2), dtype=self._pool_dtype(order, starts, ends, size))
        if len(sparse):
            group_ptr = np.concatenate([[0], np.cumsum(ends[sparse] - starts[sparse])]).astype(np.int64)
            rows = np.concatenate([order[starts[u]:ends[u]] for u in sparse]).astype(np.int64)
            target = G if len(sparse) == n_pool else np.zeros((len(sparse), G.shape[1]), dtype=G.dtype)
            pooled_outer_sums_into(self.indptr, self.local_index, self.data, rows, group_ptr, size, POOL_TILE,
                                   target)
            if target is not G:
                G[sparse] = target
        for u in np.flatnonzero(dense):
            rows = order[starts[u]:ends[u]].astype(np.int64)
            total = np.zeros((size, size))
            for start in range(0, len(rows), DENSE_POOL_ROWS):
                D = dense_rows(self.indptr, self.local_index, self.data, rows[start:start + DENSE_POOL_ROWS], size)
                total += D.T @ D
            G[u] = pack_lower(total)
        return G

    def _pool_dtype(self, order: np.ndarray, starts: np.ndarray, ends: np.ndarray, size: int) -> np.dtype:
        """The storage of the pooled matrices of these groups (:data:`POOL_COMPACT`):
        the narrowest unsigned integer type above their largest diagonal entry when every
        table weight of their rows is a non-negative integer, float64 otherwise."""
        if not POOL_COMPACT:
            return np.dtype(np.float64)
        rows = np.concatenate([order[a:b] for a, b in zip(starts, ends, strict=True)]).astype(np.int64)
        group_ptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        integral, largest = pooled_storage_bound(self.indptr, self.local_index, self.data, rows, group_ptr, size)
        if not integral:
            return np.dtype(np.float64)
        for dtype in (np.uint8, np.uint16, np.uint32):
            if largest <= np.iinfo(dtype).max:
                return np.dtype(dtype)
        return np.dtype(np.float64)

    @classmethod
    def best(cls, stats: VCStats, max_dense_block: int):
        """The solver whose chain leaves the cheapest factorization (dense blocks cubed,
        plus the table rows visited at each evaluation); the sparse path
        (:mod:`.sparse`) when the largest dense block would exceed ``SPARSE_CONSIDER_BLOCK``
        levels and a sparse factor costs less (``SPARSE_COST_FACTOR``), or when no dense
        block fits ``max_dense_block``."""
        best = None
        largest = {}
        for chain in nesting_chains(stats.structure):
            core = [t for t in range(stats.k) if t not in chain]
            offsets = np.concatenate([[0], np.cumsum([stats.nlevels[t] for t in core])]).astype(np.int64)
            labels = _components(stats, chain, core, offsets)
            sizes = np.bincount(labels)
            sizes = sizes[sizes > 0].astype(np.float64)
            largest[chain] = int(sizes.max())
            visits = 0.0
            for t in chain:
                rows, _, _ = _table(stats, t, core, offsets)
                visits += float((np.bincount(rows, minlength=stats.nlevels[t]).astype(np.float64) ** 2).sum())
            cost = float((sizes**3).sum() / 3 + visits)
            if sizes.max() <= max_dense_block and (best is None or cost < best[0]):
                best = (cost, chain, labels, float(sizes.max()), float((sizes**3).sum()) + visits)
        if best is None or best[3] > SPARSE_CONSIDER_BLOCK:
            from .sparse import best_sparse

            sparse = best_sparse(stats)
            if sparse is not None and (best is None or SPARSE_COST_FACTOR * sparse.flop_estimate() < best[4]):
                return sparse
        if best is None:
            shown = "; ".join(f"{' < '.join(stats.names[t] for t in c)} eliminated: {m}" for c, m in largest.items())
            raise ModelDataError(
                f"the terms {list(stats.names)} leave a connected block of levels larger than max_dense_block = "
                f"{max_dense_block} whatever is eliminated first (largest block: {shown}), and every term couples "
                "too many pairs of the others' levels for the sparse factorization"
            )
        return cls(stats, best[1], best[2])

    def describe(self, names) -> str:
        sizes = np.unique(self.layout.block_size)[::-1]
        shown = ", ".join(str(int(s)) for s in sizes[:5]) + (", ..." if len(sizes) > 5 else "")
        pooled = sum(len(v) for _, v, _ in self.pooled)
        chain = " then ".join(f"{names[t]!r} ({self.stats.nlevels[t]} levels)" for t in self.chain)
        return (f"crossed: eliminate {chain}, {len(self.layout.block_size)} dense block(s) of size {shown} for "
                f"{', '.join(repr(names[c]) for c in self.core)}; {pooled} pooled weight group(s)")

    # -- factorization ------------------------------------------------------------------

    def _factor(self, tau: np.ndarray, gradient: bool = False) -> dict:
        """The factorization at tau; with ``gradient``, also the pooled matrices'
        combination the gradient needs (``pooled_quad``, weights ``1 / (1 + tau d)^2``),
        from the same pass over them. ``K`` and ``pooled_quad`` are this thread's work
        arrays (:meth:`_work`): valid until its next factorization."""
        layout = self.layout
        chain_tau = np.ascontiguousarray(tau[list(self.chain)], dtype=np.float64)
        d_eff, s_eff, omega, logdet_chain = nested_upward(self.d, self.S_e, self.parent, self.term_of, chain_tau)
        level_tau = chain_tau[self.term_of]
        one_plus = 1.0 + level_tau * d_eff
        f = level_tau / one_plus
        m1 = self.m_inner
        te = float(chain_tau[0])
        work = self._work()
        K = work["K"]
        np.copyto(K, self.K0)
        pooled_quad: list[np.ndarray] = []
        if te > 0:
            schur_subtract_by_row(K, *self.direct_by_column, self.indptr, self.local_index, self.data, f[:m1],
                                  layout.level_base, layout.level_local, layout.level_size)
            for (b, values, G), buffer in zip(self.pooled, work["pooled"], strict=True):
                coefs = [te / (1.0 + te * values)] + ([1.0 / (1.0 + te * values) ** 2] if gradient else [])
                combined = buffer[:len(coefs)]
                pooled_combinations_into(G, np.array(coefs), POOL_CHUNK, combined)
                subtract_packed(K, layout.block_base[b], layout.block_size[b], combined[0], POOL_WRITE_TILE)
                if gradient:
                    pooled_quad.append(combined[1])
        S_E = self.S_core - table_transpose_times(self.indptr, self.indices, self.data, self.S_e, f[:m1], self.m_core)
        up_values = np.zeros(0)
        if len(self.up_indices):
            up_values = upper_row_values(self.data, self.inner_entry_level, self.inner_target,
                                         self.upper_entry_level, self.upper_target, one_plus, len(self.up_indices))
            schur_subtract_rows(K, self.up_indptr, self.up_local_index, up_values, f[m1:], self.row_base[m1:],
                                self.row_size[m1:])
            S_E -= table_transpose_times(self.up_indptr, self.up_indices, up_values, s_eff[m1:], f[m1:], self.m_core)
        lam = np.sqrt(tau[self.term_of_core])[layout.order]
        factors, logdet_A = layout.cholesky(layout.scaled(K, lam))
        Y = layout.solve(factors, lam[:, None] * S_E[layout.order])
        rows = nested_between(d_eff, s_eff, omega, self.parent)
        C = self.within + rows.T @ rows - Y.T @ Y
        logdet = -self.stats.sum_log_weights + logdet_chain + logdet_A
        return {"tau": tau, "chain_tau": chain_tau, "d": d_eff, "s": s_eff, "one_plus": one_plus, "f": f,
                "up_values": up_values, "K": K, "lam": lam, "L": factors, "S_E": S_E, "Y": Y,
                "C": 0.5 * (C + C.T), "logdet": float(logdet), "pooled_quad": pooled_quad}

    def _core_coefficients(self, fac: dict) -> tuple[np.ndarray, np.ndarray]:
        """``U = Lambda A^-1 Lambda S_E`` (level order) and ``R`` of the core levels."""
        layout = self.layout
        Z = layout.solve(fac["L"], fac["Y"], upper=True)
        lam = fac["lam"]
        U = np.empty_like(Z)
        U[layout.order] = lam[:, None] * Z
        R_block = np.empty_like(Z)
        positive = lam > 0
        R_block[positive] = Z[positive] / lam[positive, None]
        if not positive.all():
            # tau = 0 for some core term: R = S_E - K U on those rows.
            KU = layout.block_matmul(fac["K"], U[layout.order])
            R_block[~positive] = fac["S_E"][layout.order][~positive] - KU[~positive]
        R_core = np.empty_like(R_block)
        R_core[layout.order] = R_block
        return U, R_core

    def _chain_pass(self, fac: dict, U: np.ndarray, Sigma: np.ndarray, traces: bool, levels: bool):
        ku = np.concatenate([
            table_times(self.indptr, self.indices, self.data, U, np.ones(self.m_inner)),
            table_times(self.up_indptr, self.up_indices, fac["up_values"], U, np.ones(len(self.up_indptr) - 1)),
        ])
        return chain_downward(fac["d"], fac["s"], self.parent, self.term_of, fac["chain_tau"], len(self.chain), ku,
                              self.m_inner, self.indptr, self.local_index, self.data, self.up_indptr,
                              self.up_local_index, fac["up_values"], self.row_base, self.row_size, Sigma,
                              traces, levels, levels, self.inner_target, self.upper_target)

    def _sigma(self, fac: dict) -> tuple[np.ndarray, np.ndarray]:
        """``diag(A^-1)`` (level order within blocks: the layout's diagonal) and
        ``Sigma = Lambda A^-1 Lambda`` in the block layout. The factors are consumed
        (a large block's factor becomes its inverse in place)."""
        A_inv_diag, Sigma = self.layout.scaled_inverse(fac["L"], fac["lam"], overwrite=True)
        fac["L"] = None
        return A_inv_diag, Sigma

    def _core_traces(self, fac: dict, A_inv_diag: np.ndarray, Sigma: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """``tr(Z_j' H^-1 Z_j)`` for each core term."""
        layout = self.layout
        diag_pos = layout.diagonal()
        K_diag = fac["K"][diag_pos]
        traces = np.zeros(self.k)
        need_ksk = []
        for i, c in enumerate(self.core):
            part = slice(self.core_offsets[i], self.core_offsets[i + 1])
            if tau[c] * K_diag[part].max() >= TRACE_SWITCH:
                traces[c] = np.sum(1.0 - A_inv_diag[part]) / tau[c]
            else:
                need_ksk.append((c, part))
        if need_ksk:
            ksk = np.empty(self.m_core)
            for g in layout.groups:
                K_stack = fac["K"][g.buffer].reshape(g.count, g.size, g.size)
                T = Sigma[g.buffer].reshape(g.count, g.size, g.size) @ K_stack
                ksk[layout.order[g.rows]] = np.einsum("bil,bil->bl", K_stack, T).reshape(-1)
            for c, part in need_ksk:
                traces[c] = K_diag[part].sum() - ksk[part].sum()
        return traces

    # -- the solver interface -----------------------------------------------------------

    def solve(self, tau: np.ndarray, gradient: bool = True) -> Solution:
        key = np.asarray(tau, dtype=np.float64).tobytes()
        hit = self._factored.get(key) if not gradient else None
        if hit is not None:
            return Solution(hit[0], hit[1].copy())
        fac = self._factor(tau, gradient)
        with self._cache_lock:
            if len(self._factored) >= FACTORED_CACHE:
                self._factored.clear()
            self._factored[key] = (fac["logdet"], fac["C"].copy())
        if not gradient:
            return Solution(fac["logdet"], fac["C"])
        layout = self.layout
        U, R_core = self._core_coefficients(fac)
        A_inv_diag, Sigma = self._sigma(fac)
        self._remember(key, fac, U, R_core, A_inv_diag, Sigma)
        traces = self._core_traces(fac, A_inv_diag, Sigma, tau)
        chain_trace, chain_rtr, _, _ = self._chain_pass(fac, U, Sigma, True, False)
        # The innermost levels' n' Sigma n, left out of the pass: pooled or row by row.
        g = 1.0 / fac["one_plus"][:self.m_inner] ** 2
        quad = weighted_quadratic_sum(Sigma, *self.direct_by_column, self.indptr, self.local_index, self.data, g,
                                      layout.level_base, layout.level_local, layout.level_size)
        te = float(fac["chain_tau"][0])
        for i, (b, values, G) in enumerate(self.pooled):
            if fac["pooled_quad"]:
                combined = fac["pooled_quad"][i]
            else:
                combined = pooled_combinations(G, (1.0 / (1.0 + te * values) ** 2)[None, :], POOL_CHUNK)[0]
            quad += packed_inner_product(Sigma, layout.block_base[b], layout.block_size[b], combined)
        chain_trace[0] -= quad
        q = R_core.shape[1]
        RtR = np.zeros((self.k, q, q))
        for pos, t in enumerate(self.chain):
            traces[t] = chain_trace[pos]
            RtR[t] = chain_rtr[pos]
        for i, c in enumerate(self.core):
            part = R_core[self.core_offsets[i]:self.core_offsets[i + 1]]
            RtR[c] = part.T @ part
        return Solution(fac["logdet"], fac["C"], traces, RtR)

    def _remember(self, key: bytes, fac: dict, U, R_core, A_inv_diag, Sigma) -> None:
        """Keep what :meth:`level_parts` needs from this solve (:data:`LEVEL_CACHE_BYTES`).
        Nothing kept is written afterwards: the solve is done with these arrays."""
        size = Sigma.nbytes + U.nbytes + R_core.nbytes + A_inv_diag.nbytes
        if LEVEL_CACHE_ENTRIES * size > LEVEL_CACHE_BYTES:
            return
        kept = {name: fac[name] for name in ("d", "s", "chain_tau", "up_values", "f")}
        with self._cache_lock:
            while len(self._level_inputs) >= LEVEL_CACHE_ENTRIES:
                del self._level_inputs[next(iter(self._level_inputs))]
            self._level_inputs[key] = (kept, U, R_core, A_inv_diag, Sigma)

    def level_parts(self, tau: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per term: ``R_j`` (m_j, q) and ``diag((T^-1 + Z'WZ)^-1)`` for its levels.

        From the last solves with the gradient at this tau when one is kept
        (:data:`LEVEL_CACHE_BYTES`: the same arrays a new factorization gives), else
        factored afresh."""
        kept = self._level_inputs.get(np.asarray(tau, dtype=np.float64).tobytes())
        if kept is not None:
            fac, U, R_core, A_inv_diag, Sigma = kept
            R_core = R_core.copy()
        else:
            fac = self._factor(tau)
            U, R_core = self._core_coefficients(fac)
            A_inv_diag, Sigma = self._sigma(fac)
        _, _, R_chain, cond_chain = self._chain_pass(fac, U, Sigma, True, True)
        cond_core = tau[self.term_of_core] * A_inv_diag
        R_terms: list = [None] * self.k
        cond_terms: list = [None] * self.k
        for pos, t in enumerate(self.chain):
            part = slice(self.chain_offsets[pos], self.chain_offsets[pos + 1])
            R_terms[t] = R_chain[part]
            cond_terms[t] = cond_chain[part]
        for i, c in enumerate(self.core):
            part = slice(self.core_offsets[i], self.core_offsets[i + 1])
            R_terms[c] = R_core[part]
            cond_terms[c] = cond_core[part]
        return R_terms, cond_terms

    def reduction_parts(self, j: int, tau: np.ndarray, max_block: int | None = None):
        """What the one-dimensional reduction in ``tau_j`` needs, from one factorization at
        tau (``tau_j = 0``): ``log|H_-j|``, ``C_-j``, ``R_j`` and the blocks of K."""
        if j in self.chain and len(self.chain) > 1:
            # Term j joins the dense blocks: a solver with the rest of the chain.
            if j not in self._alternatives:
                self._alternatives[j] = CrossedSolver(self.stats, tuple(t for t in self.chain if t != j))
            return self._alternatives[j].reduction_parts(j, tau, max_block)
        fac = self._factor(tau)
        U, R_core = self._core_coefficients(fac)
        if j == self.e:
            _, _, R_chain, _ = self._chain_pass(fac, U, np.zeros(0), False, True)
            R = R_chain[:self.m_inner]
        else:
            i = self.core.index(j)
            R = R_core[self.core_offsets[i]:self.core_offsets[i + 1]]
        return fac["logdet"], fac["C"], R, self._term_blocks(fac, j, max_block)

    def _term_blocks(self, fac: dict, j: int, max_block: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``K = Z_j' H^-1 Z_j`` (``tau_j = 0``) as dense blocks over levels of term j
        (the innermost chain term of a chain of one, or a core term)."""
        layout = self.layout
        blocks = []
        if j == self.e:
            owner = self.block_of_inner
        else:
            i = self.core.index(j)
            owner = layout.block_of_level[self.core_offsets[i]:self.core_offsets[i + 1]]
        by_block = np.argsort(owner, kind="stable")
        bounds = np.flatnonzero(np.diff(owner[by_block])) + 1
        for members in np.split(by_block, bounds):
            if max_block is not None and len(members) > max_block:
                raise ModelDataError(
                    f"term {self.stats.names[j]!r}: {len(members)} levels are coupled through the other terms; "
                    f"the one-dimensional reduction decomposes at most {max_block} at once"
                )
            b = int(owner[members[0]])
            L = layout.block_factor(fac["L"], b)
            s = int(layout.block_size[b])
            lam = fac["lam"][layout.block_first[b]:layout.block_first[b] + s]
            # Every ratio of the block at 0 (a sweep along the only core term): W = 0
            # exactly, and the triangular solve with the block's columns is skipped.
            flat = not lam.any()
            if j == self.e:
                K = np.diag(self.d[members])
                if not flat:
                    N = dense_rows(self.indptr, self.local_index, self.data, members.astype(np.int64), s).T
                    W = sla.solve_triangular(L, lam[:, None] * N, lower=True, check_finite=False)
                    K = K - W.T @ W
            else:
                K_block = layout.block(fac["K"], b)
                local = layout.level_local[members + self.core_offsets[self.core.index(j)]]
                K = K_block[np.ix_(local, local)]
                if not flat:
                    W = sla.solve_triangular(L, lam[:, None] * K_block[:, local], lower=True, check_finite=False)
                    K = K - W.T @ W
            blocks.append((members, 0.5 * (K + K.T)))
        return blocks
