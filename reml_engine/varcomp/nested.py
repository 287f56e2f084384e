"""A hierarchy of nested terms: the criterion in closed form, per level.

When every term is nested in the next (``(1|region/school/class)``, one term being the
special case), ``H = W^-1 + sum_j tau_j Z_j Z_j'`` is block diagonal by outermost level
and its blocks are nested "diagonal plus rank one" matrices. Eliminating the levels
innermost first (a Cholesky factorization of ``T^-1 + Z'WZ`` in that order) creates no
fill: each level only passes to its parent an effective weight and effective sums,

    d_parent += d_l / (1 + tau_l d_l),     s_parent += s_l / (1 + tau_l d_l),

starting from the weights and weighted sums of the innermost levels. Then

    log|H| = -sum log w + sum over levels log(1 + tau_l d_l)
    [X|y]' H^-1 [X|y] = W_1 + sum_l omega_l (mu_l - mu_parent)(mu_l - mu_parent)'

with ``W_1`` the weighted within-innermost-level cross-product, ``omega_l = d_l / (1 +
tau_l d_l)``, ``mu_l = s_l / d_l`` and ``mu_parent = 0`` above the outermost term: a sum
of squares, so nothing cancels however large or small tau is. The gradient, the
conditional modes and variances follow in one pass from the outermost level down
(:func:`~reml_engine.varcomp.kernels.nested_downward`). The cost is proportional to the
number of levels: 1e5 classes in 1e3 schools cost about as much as one term.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelDataError
from .kernels import nested_between, nested_downward, nested_upward
from .reduction import KAPPA_TOL
from .small_kernels import nested_term_reduction
from .solution import Solution, within_cross
from .statistics import VCStats


class NestedSolver:
    """Exact evaluation for terms forming a nesting chain (innermost first).

    Parameters
    ----------
    stats : VCStats
        In the model's parametrization (see :class:`~reml_engine.varcomp.criterion.VCProblem`).
    chain : tuple of int
        Term indices, each nested in every later one.
    """

    kind = "nested"

    def __init__(self, stats: VCStats, chain: tuple[int, ...]):
        self.stats = stats
        self.chain = tuple(chain)
        self.k = stats.k
        inner = chain[0]
        self.inner_weights = np.ascontiguousarray(stats.level_weights[inner], dtype=np.float64)
        self.inner_sums = np.ascontiguousarray(stats.sums[inner], dtype=np.float64)
        self.within = within_cross(stats.cross, self.inner_sums, self.inner_weights)
        sizes = [stats.nlevels[t] for t in chain]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.offsets = offsets
        parent = np.full(offsets[-1], -1, dtype=np.int64)
        for pos in range(len(chain) - 1):
            table = stats.pair(chain[pos], chain[pos + 1])
            # Nested: one cell per row, in row order.
            parent[offsets[pos]:offsets[pos + 1]][table.rows] = table.cols + offsets[pos + 1]
        self.parent = parent
        self.term_of = np.repeat(np.arange(len(chain), dtype=np.int64), sizes)

    def describe(self, names) -> str:
        return "nested: " + " in ".join(names[t] for t in self.chain)

    def _chain_tau(self, tau: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(tau[list(self.chain)], dtype=np.float64)

    def _upward(self, tau):
        return nested_upward(self.inner_weights, self.inner_sums, self.parent, self.term_of,
                             self._chain_tau(tau))

    def solve(self, tau: np.ndarray, gradient: bool = True) -> Solution:
        d, s, omega, logdet = self._upward(tau)
        rows = nested_between(d, s, omega, self.parent)
        C = self.within + rows.T @ rows
        logdet_H = logdet - self.stats.sum_log_weights
        if not gradient:
            return Solution(logdet_H, 0.5 * (C + C.T))
        trace, rtr, _, _ = nested_downward(d, s, omega, self.parent, self.term_of, self._chain_tau(tau),
                                           len(self.chain), False)
        return Solution(logdet_H, 0.5 * (C + C.T), *self._to_terms(trace, rtr))

    def _to_terms(self, trace, rtr):
        """Per chain position -> per term index."""
        trace_terms = np.zeros(self.k)
        rtr_terms = np.zeros((self.k,) + rtr.shape[1:])
        for pos, t in enumerate(self.chain):
            trace_terms[t] = trace[pos]
            rtr_terms[t] = rtr[pos]
        return trace_terms, rtr_terms

    def level_parts(self, tau: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per term: ``R_j = Z_j' H^-1 [X|y]`` (m_j, q) and the diagonal of
        ``(T^-1 + Z'WZ)^-1`` for its levels (conditional variance / sigma2)."""
        d, s, omega, _ = self._upward(tau)
        _, _, R, cond = nested_downward(d, s, omega, self.parent, self.term_of, self._chain_tau(tau),
                                        len(self.chain), True)
        R_terms: list = [None] * self.k
        cond_terms: list = [None] * self.k
        for pos, t in enumerate(self.chain):
            block = slice(self.offsets[pos], self.offsets[pos + 1])
            R_terms[t] = R[block]
            cond_terms[t] = cond[block]
        return R_terms, cond_terms

    def reduction_parts(self, j: int, tau: np.ndarray, max_block: int | None = None):
        """What the one-dimensional reduction in ``tau_j`` needs at tau (``tau_j = 0``):
        ``log|H_-j|``, ``C_-j``, ``R_j`` and the blocks of K."""
        solution = self.solve(tau, gradient=False)
        R_terms, _ = self.level_parts(tau)
        return solution.logdet_H, solution.C, R_terms[j], self.term_blocks(j, tau, max_block)

    def reduction(self, j: int, tau: np.ndarray):
        """(log|H_-j|, C_-j, kappa, vectors) at tau (``tau_j = 0``): :meth:`reduction_parts`
        and the decomposition of K in compiled calls (the fast path of
        :meth:`~reml_engine.varcomp.criterion.VCProblem.reduce_to_term`)."""
        chain_tau = self._chain_tau(tau)
        d, s, omega, logdet = nested_upward(self.inner_weights, self.inner_sums, self.parent, self.term_of,
                                            chain_tau)
        rows = nested_between(d, s, omega, self.parent)
        C = self.within + rows.T @ rows
        _, _, R, _ = nested_downward(d, s, omega, self.parent, self.term_of, chain_tau, len(self.chain), True)
        pos = self.chain.index(j)
        lo, hi = int(self.offsets[pos]), int(self.offsets[pos + 1])
        kappa, vectors = nested_term_reduction(d, self.parent, lo, hi, pos, chain_tau,
                                               np.ascontiguousarray(R[lo:hi]), float(KAPPA_TOL))
        return logdet - self.stats.sum_log_weights, 0.5 * (C + C.T), kappa, vectors

    def term_blocks(self, j: int, tau: np.ndarray, max_block: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``K = Z_j' H^-1 Z_j`` at ``tau`` (with ``tau_j = 0``) as blocks: a list of
        (level codes of term j, dense K restricted to them); K is zero between blocks.

        Levels of term j are coupled only through a common ancestor with a positive
        variance: ``K = diag(d) - sum over such ancestors a of f_a c_a c_a'`` with
        ``c_a[l] = d_l`` divided by ``1 + tau_b d_b`` for each ancestor b below a.
        """
        pos = self.chain.index(j)
        chain_tau = self._chain_tau(tau)
        d, _, _, _ = self._upward(tau)
        lo, hi = self.offsets[pos], self.offsets[pos + 1]
        own = np.arange(lo, hi)
        # Ancestor of each level of j at every later chain position.
        ancestors = [own]
        for _ in range(pos + 1, len(self.chain)):
            ancestors.append(self.parent[ancestors[-1]])
        # The block root is the highest ancestor with a positive variance.
        positive = [p for p in range(pos + 1, len(self.chain)) if chain_tau[p] > 0]
        if not positive:
            return [(np.array([level - lo]), np.array([[d[level]]])) for level in own]
        root = ancestors[positive[-1] - pos]
        order = np.argsort(root, kind="stable")
        bounds = np.flatnonzero(np.diff(root[order])) + 1
        blocks = []
        for members in np.split(order, bounds):
            if max_block is not None and len(members) > max_block:
                raise ModelDataError(
                    f"term {self.stats.names[j]!r}: {len(members)} levels share an ancestor with a positive "
                    f"variance; the one-dimensional reduction decomposes at most {max_block} at once"
                )
            levels = own[members]
            K = np.diag(d[levels])
            scale = d[levels].copy()
            for p in range(pos + 1, len(self.chain)):
                anc = ancestors[p - pos][members]
                if chain_tau[p] > 0:
                    f = chain_tau[p] / (1.0 + chain_tau[p] * d[anc])
                    same = anc[:, None] == anc[None, :]
                    K -= same * (f[:, None] * np.outer(scale, scale))
                scale = scale / (1.0 + chain_tau[p] * d[anc])
            blocks.append((levels - lo, 0.5 * (K + K.T)))
        return blocks
