"""Crossed terms with many coupled levels: one term eliminated, a sparse Cholesky factor
for the rest.

The dense path (:mod:`.crossed`) factors the Schur complement of the other ("core") terms
block by block, which is out of reach when a connected block has more than
``MAX_DENSE_BLOCK`` levels (two crossed factors with 2e4 levels each). When that block is
sparse enough, the same algebra runs on a sparse factor:

    K = M_cc - sum_l f_l n_l n_l'            (f_l = tau_e / (1 + tau_e d_l))
    A = I + Lambda K Lambda = L L'           (sparse, fill-reducing order)
    log|H| = -sum log w + sum log(1 + tau_e d_l) + log|A|
    C = C_e - Y'Y,  Y = L^-1 Lambda (S_core - N' diag(f) S_e)

with ``C_e`` the closed form of the eliminated term (a sum of squares), exactly as the
dense path with one term eliminated. K's pattern is the union of the tables between core
terms and of each eliminated level's clique ``n_l n_l'``; the order is the one of the
candidates (SuperLU's minimum degree on ``A + A'``, reverse Cuthill-McKee, the natural
order) whose factor costs the fewest operations, chosen once.

The gradient needs ``A^-1`` only on the pattern of L (:func:`.sparse_kernels.selected_inverse`):

* a core term c: ``tr(Z_c' H^-1 Z_c) = sum over its levels of (I - A^-1)_ii / tau_c``,
  computed as ``sum_a K_ia (lambda_a / lambda_i) (A^-1)_ai`` (no cancellation; the
  entries are K's, on the pattern). A core term at tau = 0 while another is positive
  needs ``K_ii - ||L^-1 Lambda k_i||^2`` per level: a solve each (the boundary only);
* the eliminated term: ``sum_l d_l / (1 + tau_e d_l) - sum_l n_l' Sigma n_l / (1 + tau_e
  d_l)^2`` with ``Sigma = Lambda A^-1 Lambda``, whose entries between the levels of one
  row are on the pattern (the row is a clique of K);
* ``R_j = Z_j' H^-1 [X|y]`` from two triangular solves, as in the dense path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelDataError
from .crossed import _components, _csr, _table
from .kernels import table_times, table_transpose_times
from .solution import Solution, within_cross
from .sparse_kernels import (
    column_of_symmetric,
    count_pairs,
    factor_column_counts,
    lower_pattern,
    lower_rows,
    lower_solve_sparse,
    numeric_cholesky,
    pattern_positions,
    row_pair_entries,
    row_quadratic_forms,
    scaled_identity_plus,
    scaled_inverse_traces,
    selected_inverse,
    subtract_row_products,
    symbolic_factor,
    symmetric_times,
    upper_solve_sparse,
)
from .statistics import VCStats

#: Most pairs of core levels sharing an eliminated level (the sum of n_l (n_l + 1) / 2
#: over the eliminated term's rows) the sparse path holds: each costs a position (8
#: bytes) and a multiply-add per evaluation.
MAX_ROW_PAIRS = 50_000_000

#: The natural order of the levels is a candidate only up to this many levels (the other
#: candidates are rarely worse, and counting a dense fill costs its size).
NATURAL_ORDER_MAX = 2000

#: Terms tried as the eliminated one (those that couple the fewest pairs of levels).
SPARSE_CANDIDATES = 2

#: ... unless the first one's evaluation costs at most this many multiply-adds (planning
#: a candidate costs a few passes over K's pattern and an ordering).
SPARSE_GOOD_ENOUGH = 1e8

#: Levels of the right-hand sides solved at once for the traces of a core term at 0.
SOLVE_BATCH = 256


def _pattern(stats: VCStats, core: list[int], offsets: np.ndarray, indptr, indices):
    """Lower-triangle entries (row >= col, core-level numbering) of K and of M_cc's values."""
    m = int(offsets[-1])
    rows = [np.arange(m, dtype=np.int64)]
    cols = [np.arange(m, dtype=np.int64)]
    vals = [np.concatenate([stats.level_weights[c] for c in core]).astype(np.float64)]
    for i, a in enumerate(core):
        for jb in range(i + 1, len(core)):
            t = stats.pair(a, core[jb])
            ga = t.rows + offsets[i]
            gb = t.cols + offsets[jb]
            rows.append(np.maximum(ga, gb))
            cols.append(np.minimum(ga, gb))
            vals.append(t.weights.astype(np.float64))
    pr, pc = row_pair_entries(indptr, indices)
    rows.append(pr)
    cols.append(pc)
    vals.append(np.zeros(len(pr)))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _orderings(n: int, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """Candidate fill-reducing orders (new position -> level)."""
    from scipy import sparse
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    out = {"natural": np.arange(n, dtype=np.int64)} if n <= NATURAL_ORDER_MAX else {}
    off = rows != cols
    pattern = sparse.coo_matrix((np.ones(int(off.sum())), (rows[off], cols[off])), shape=(n, n)).tocsr()
    pattern = (pattern + pattern.T).tocsr()
    out["reverse Cuthill-McKee"] = np.asarray(reverse_cuthill_mckee(pattern, symmetric_mode=True), dtype=np.int64)
    # SuperLU's minimum degree on A + A', read from a factorization of a diagonally
    # dominant matrix of the same pattern (values do not change the order).
    degree = np.asarray(pattern.getnnz(axis=1), dtype=np.float64)
    dominant = (sparse.diags(degree + 1.0) - 0.5 * pattern.multiply(1.0 / np.maximum(degree, 1.0)[:, None])).tocsc()
    try:
        from scipy.sparse.linalg import splu

        lu = splu(dominant, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        out["minimum degree"] = np.asarray(lu.perm_c, dtype=np.int64)
    except (RuntimeError, MemoryError):  # pragma: no cover - SuperLU out of memory
        pass
    return out


@dataclass(frozen=True)
class _Plan:
    """The eliminated term, its table, K's pattern and the cheapest order of the core levels."""

    e: int
    core: list
    offsets: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_pairs: int
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    flops: float
    order_name: str
    perm: np.ndarray
    inv: np.ndarray
    colptr: np.ndarray
    rowidx: np.ndarray

    def cost(self) -> float:
        """Multiply-adds of one evaluation with its gradient: the factor, the selected
        inverse (about twice the factor) and the Schur complement's row products."""
        return 3.0 * self.flops + float(self.n_pairs)


def plan_order(stats: VCStats, e: int, order: str | None = None) -> _Plan:
    """K's pattern when term e is eliminated and the candidate order (by name, or the
    one with the fewest multiply-adds in the factor)."""
    e = int(e)
    core = [t for t in range(stats.k) if t != e]
    if not core:
        raise ValueError("the sparse solver needs at least one term besides the eliminated one")
    offsets = np.concatenate([[0], np.cumsum([stats.nlevels[t] for t in core])]).astype(np.int64)
    m = int(offsets[-1])
    rows, cols, data = _table(stats, e, core, offsets)
    indptr, indices, table_data = _csr(rows, cols, data, stats.nlevels[e], m)
    n_pairs = int(count_pairs(indptr)[-1])
    if n_pairs > MAX_ROW_PAIRS:
        raise ModelDataError(
            f"eliminating term {stats.names[e]!r} couples {n_pairs} pairs of levels of the other terms; the "
            f"sparse factorization holds at most {MAX_ROW_PAIRS}"
        )
    r, c, v = _pattern(stats, core, offsets, indptr, indices)
    candidates = _orderings(m, r, c)
    if order is not None:
        candidates = {order: candidates[order]}
    best = None
    for name, perm in candidates.items():
        inv = np.empty(m, dtype=np.int64)
        inv[perm] = np.arange(m)
        pr, pc = inv[r], inv[c]
        colptr, rowidx = lower_pattern(m, np.maximum(pr, pc), np.minimum(pr, pc))
        counts = factor_column_counts(m, colptr, rowidx).astype(np.float64)
        flops = float(0.5 * (counts**2).sum())
        if best is None or flops < best[0]:
            best = (flops, name, perm, inv, colptr, rowidx)
    flops, name, perm, inv, colptr, rowidx = best
    return _Plan(e, core, offsets, indptr, indices, table_data, n_pairs, r, c, v, flops, name, perm, inv,
                 colptr, rowidx)


class SparseCrossedSolver:
    """Exact evaluation with one term eliminated and a sparse factor for the other terms.

    Parameters
    ----------
    stats : VCStats
        In the model's parametrization.
    e : int
        The eliminated term.
    order : str, optional
        One of the candidate orders by name (default: the cheapest).
    """

    kind = "sparse"
    parallel = False

    def __init__(self, stats: VCStats, e: int, order: str | None = None, plan: _Plan | None = None):
        plan = plan if plan is not None else plan_order(stats, e, order)
        self.stats = stats
        self.k = stats.k
        self.e = plan.e
        self.chain = (self.e,)
        self.core = plan.core
        offsets = plan.offsets
        self.core_offsets = offsets
        self.m_core = m = int(offsets[-1])
        self.term_of_core = np.repeat(np.asarray(self.core, dtype=np.int64), np.diff(offsets))
        self.d = np.ascontiguousarray(stats.level_weights[self.e], dtype=np.float64)
        self.S_e = np.ascontiguousarray(stats.sums[self.e], dtype=np.float64)
        self.within = within_cross(stats.cross, self.S_e, self.d)
        self.m_e = stats.nlevels[self.e]
        self.indptr, self.indices, self.data = plan.indptr, plan.indices, plan.data
        self.S_core = np.concatenate([stats.sums[c] for c in self.core]).astype(np.float64)
        self.flops, self.order_name, self.perm, self.inv = plan.flops, plan.order_name, plan.perm, plan.inv
        self.parent, self.L_colptr, self.L_rowidx = symbolic_factor(m, plan.colptr, plan.rowidx)
        inv = self.inv
        self.nnz = int(len(self.L_rowidx))
        self.diag_pos = np.ascontiguousarray(self.L_colptr[:-1])
        self.row_ptr, self.row_col, self.row_pos = lower_rows(m, self.L_colptr, self.L_rowidx)
        # M_cc on L's pattern.
        pr, pc = inv[plan.rows], inv[plan.cols]
        pos = pattern_positions(self.L_colptr, self.L_rowidx, np.maximum(pr, pc), np.minimum(pr, pc))
        self.K0 = np.bincount(pos, weights=plan.values, minlength=self.nnz)
        # The eliminated term's rows in the factor's order, ascending within each row.
        self.e_indptr, self.e_idx, self.e_data = _csr(
            np.repeat(np.arange(self.m_e, dtype=np.int64), np.diff(self.indptr)), inv[self.indices], self.data,
            self.m_e, m)
        pr, pc = row_pair_entries(self.e_indptr, self.e_idx)
        self.pair_pos = pattern_positions(self.L_colptr, self.L_rowidx, pr, pc)
        self.S_core_perm = np.ascontiguousarray(self.S_core[self.perm])
        self.term_of_perm = self.term_of_core[self.perm]
        self.labels = None

    # -- description and set-up -------------------------------------------------------

    def describe(self, names) -> str:
        return (f"crossed: eliminate {names[self.e]!r} ({self.stats.nlevels[self.e]} levels), sparse Cholesky "
                f"of the {self.m_core} levels of {', '.join(repr(names[c]) for c in self.core)} in "
                f"{self.order_name} order ({self.nnz} entries, {self.flops:.3g} multiply-adds)")

    def _lam(self, tau: np.ndarray) -> np.ndarray:
        """sqrt(tau) of each core level, in the factor's order."""
        return np.sqrt(tau[self.term_of_perm])

    # -- factorization ------------------------------------------------------------------

    def _factor(self, tau: np.ndarray) -> dict:
        te = float(tau[self.e])
        one_plus = 1.0 + te * self.d
        f = te / one_plus
        K = self.K0.copy()
        if te > 0:
            subtract_row_products(K, self.e_indptr, self.e_data, self.pair_pos, f)
        lam = self._lam(tau)
        A = scaled_identity_plus(K, self.L_colptr, self.L_rowidx, lam)
        m = self.m_core
        L = np.empty(self.nnz)
        ok = numeric_cholesky(m, A, self.L_colptr, self.L_rowidx, self.parent, self.row_ptr, self.row_col,
                              self.row_pos, L, np.zeros(m), np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))
        if not ok:
            raise np.linalg.LinAlgError("the sparse Cholesky factorization failed (not positive definite)")
        logdet_A = 2.0 * float(np.log(L[self.diag_pos]).sum())
        S_E = self.S_core_perm - table_transpose_times(self.e_indptr, self.e_idx, self.e_data, self.S_e, f, m)
        Y = lower_solve_sparse(m, self.L_colptr, self.L_rowidx, L, lam[:, None] * S_E)
        omega = self.d / one_plus
        rows = np.sqrt(omega)[:, None] * (self.S_e / self.d[:, None])
        C = self.within + rows.T @ rows - Y.T @ Y
        logdet = -self.stats.sum_log_weights + float(np.log1p(te * self.d).sum()) + logdet_A
        return {"te": te, "one_plus": one_plus, "f": f, "K": K, "lam": lam, "L": L, "S_E": S_E, "Y": Y,
                "C": 0.5 * (C + C.T), "logdet": logdet}

    def _core_coefficients(self, fac: dict) -> tuple[np.ndarray, np.ndarray]:
        """``U = Lambda A^-1 Lambda S_E`` and R of the core levels, in the factor's order."""
        lam = fac["lam"]
        Z = upper_solve_sparse(self.m_core, self.L_colptr, self.L_rowidx, fac["L"], fac["Y"].copy())
        U = lam[:, None] * Z
        R = np.empty_like(Z)
        positive = lam > 0
        R[positive] = Z[positive] / lam[positive, None]
        if not positive.all():
            KU = symmetric_times(fac["K"], self.L_colptr, self.L_rowidx, U)
            R[~positive] = fac["S_E"][~positive] - KU[~positive]
        return U, R

    def _chain_rows(self, fac: dict, U: np.ndarray) -> np.ndarray:
        ku = table_times(self.e_indptr, self.e_idx, self.e_data, U, np.ones(self.m_e))
        return (self.S_e - ku) / fac["one_plus"][:, None]

    def _zero_core_traces(self, fac: dict, zero_levels: np.ndarray) -> np.ndarray:
        """``K_ii - ||L^-1 Lambda k_i||^2`` for core levels i whose lambda is 0."""
        m = self.m_core
        lam = fac["lam"]
        out = np.empty(len(zero_levels))
        column = np.zeros(m)
        for start in range(0, len(zero_levels), SOLVE_BATCH):
            batch = zero_levels[start:start + SOLVE_BATCH]
            B = np.zeros((m, len(batch)))
            for t, i in enumerate(batch):
                column[:] = 0.0
                column_of_symmetric(fac["K"], self.L_colptr, self.L_rowidx, self.row_ptr, self.row_col,
                                    self.row_pos, int(i), column)
                B[:, t] = lam * column
            W = lower_solve_sparse(m, self.L_colptr, self.L_rowidx, fac["L"], B)
            out[start:start + len(batch)] = fac["K"][self.diag_pos[batch]] - (W * W).sum(axis=0)
        return out

    def _gradient_parts(self, fac: dict):
        """Traces per core level (factor's order), the eliminated term's quadratic forms,
        U and R of the core levels."""
        lam = fac["lam"]
        U, R_core = self._core_coefficients(fac)
        Z = selected_inverse(self.m_core, self.L_colptr, self.L_rowidx, fac["L"])
        level_trace = scaled_inverse_traces(fac["K"], self.L_colptr, self.L_rowidx, lam, Z)
        zero = np.flatnonzero(lam == 0)
        if len(zero):
            if (lam > 0).any():
                level_trace[zero] = self._zero_core_traces(fac, zero)
            else:
                level_trace[zero] = fac["K"][self.diag_pos[zero]]
        quad = row_quadratic_forms(self.e_indptr, self.e_idx, self.e_data, self.pair_pos, lam, Z)
        return level_trace, quad, U, R_core, Z

    # -- the solver interface -----------------------------------------------------------

    def solve(self, tau: np.ndarray, gradient: bool = True) -> Solution:
        fac = self._factor(tau)
        if not gradient:
            return Solution(fac["logdet"], fac["C"])
        level_trace, quad, U, R_core, _ = self._gradient_parts(fac)
        q = R_core.shape[1]
        traces = np.zeros(self.k)
        RtR = np.zeros((self.k, q, q))
        op = fac["one_plus"]
        traces[self.e] = float((self.d / op).sum() - (quad / op**2).sum())
        R_e = self._chain_rows(fac, U)
        RtR[self.e] = R_e.T @ R_e
        for c in self.core:
            part = self.term_of_perm == c
            traces[c] = float(level_trace[part].sum())
            RtR[c] = R_core[part].T @ R_core[part]
        return Solution(fac["logdet"], fac["C"], traces, RtR)

    def level_parts(self, tau: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per term: ``R_j`` (m_j, q) and ``diag((T^-1 + Z'WZ)^-1)`` for its levels."""
        fac = self._factor(tau)
        lam = fac["lam"]
        U, R_core = self._core_coefficients(fac)
        Z = selected_inverse(self.m_core, self.L_colptr, self.L_rowidx, fac["L"])
        quad = row_quadratic_forms(self.e_indptr, self.e_idx, self.e_data, self.pair_pos, lam, Z)
        f = fac["f"]
        R_terms: list = [None] * self.k
        cond_terms: list = [None] * self.k
        R_terms[self.e] = self._chain_rows(fac, U)
        cond_terms[self.e] = f + f * f * quad
        R_level = np.empty_like(R_core)
        R_level[self.perm] = R_core
        cond_level = np.empty(self.m_core)
        cond_level[self.perm] = lam**2 * Z[self.diag_pos]
        for i, c in enumerate(self.core):
            part = slice(self.core_offsets[i], self.core_offsets[i + 1])
            R_terms[c] = R_level[part]
            cond_terms[c] = cond_level[part]
        return R_terms, cond_terms

    def _component_labels(self) -> np.ndarray:
        if self.labels is None:
            self.labels = _components(self.stats, self.chain, self.core, self.core_offsets)
        return self.labels

    def reduction_parts(self, j: int, tau: np.ndarray, max_block: int | None = None):
        """What the one-dimensional reduction in ``tau_j`` needs at tau (``tau_j = 0``):
        ``log|H_-j|``, ``C_-j``, ``R_j`` and the blocks of K (by connected component)."""
        fac = self._factor(tau)
        U, R_core = self._core_coefficients(fac)
        lam = fac["lam"]
        m = self.m_core
        labels = self._component_labels()
        if j == self.e:
            R = self._chain_rows(fac, U)
            owner = labels[self.indices[self.indptr[:-1]]]
        else:
            i = self.core.index(j)
            levels = np.arange(self.core_offsets[i], self.core_offsets[i + 1])
            R_level = np.empty_like(R_core)
            R_level[self.perm] = R_core
            R = R_level[levels]
            owner = labels[levels]
        by_block = np.argsort(owner, kind="stable")
        bounds = np.flatnonzero(np.diff(owner[by_block])) + 1
        blocks = []
        column = np.zeros(m)
        for members in np.split(by_block, bounds):
            if max_block is not None and len(members) > max_block:
                raise ModelDataError(
                    f"term {self.stats.names[j]!r}: {len(members)} levels are coupled through the other terms; "
                    f"the one-dimensional reduction decomposes at most {max_block} at once"
                )
            B = np.zeros((m, len(members)))
            if j == self.e:
                K = np.diag(self.d[members])
                for t, lv in enumerate(members):
                    span = slice(self.e_indptr[lv], self.e_indptr[lv + 1])
                    B[self.e_idx[span], t] = self.e_data[span]
            else:
                K = np.empty((len(members), len(members)))
                targets = self.inv[levels[members]]
                for t, lv in enumerate(targets):
                    column[:] = 0.0
                    column_of_symmetric(fac["K"], self.L_colptr, self.L_rowidx, self.row_ptr, self.row_col,
                                        self.row_pos, int(lv), column)
                    B[:, t] = column
                    K[:, t] = column[targets]
            W = lower_solve_sparse(m, self.L_colptr, self.L_rowidx, fac["L"], lam[:, None] * B)
            K = K - W.T @ W
            blocks.append((members, 0.5 * (K + K.T)))
        return fac["logdet"], fac["C"], R, blocks

    def flop_estimate(self) -> float:
        """Multiply-adds of one evaluation with its gradient: the factor, the selected
        inverse (about twice the factor) and the Schur complement's row products."""
        return 3.0 * self.flops + float(len(self.pair_pos))



def row_pair_counts(stats: VCStats, e: int) -> int:
    """Pairs of core levels that share a level of term e (sum of n_l (n_l + 1) / 2 over
    its levels, n_l the core levels level l occurs with): the size of K's pattern from e."""
    per_level = np.zeros(stats.nlevels[e], dtype=np.int64)
    for c in range(stats.k):
        if c != e:
            per_level += stats.pair(e, c).row_nonzeros()
    return int((per_level * (per_level + 1) // 2).sum())


def best_sparse(stats: VCStats, candidates: int = SPARSE_CANDIDATES) -> SparseCrossedSolver | None:
    """The sparse solver (over the ``candidates`` terms whose elimination couples the
    fewest pairs of levels) whose evaluation costs the least; None when every term
    couples more than ``MAX_ROW_PAIRS`` pairs."""
    counts = sorted((row_pair_counts(stats, t), t) for t in range(stats.k))
    best = None
    for pairs, t in counts[:candidates]:
        if pairs > MAX_ROW_PAIRS:
            continue
        if best is not None and best.cost() <= SPARSE_GOOD_ENOUGH:
            break
        plan = plan_order(stats, t)
        if best is None or plan.cost() < best.cost():
            best = plan
    return None if best is None else SparseCrossedSolver(stats, best.e, plan=best)
