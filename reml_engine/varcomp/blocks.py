"""Dense blocks of the Schur complement: layout, Cholesky factors, solves and inverses.

The levels of the terms that are not eliminated in closed form (the "core" levels) fall
into connected components: two levels are linked when they share a row or a level of
an eliminated term. The Schur complement is block diagonal over the components, so each
is factored on its own. The blocks are stored row-major, one after the other, in one
flat buffer, largest first; blocks of equal size are consecutive, so that they form a
stack ``(count, size, size)`` for batched linear algebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .kernels import (
    is_identity,
    lower_solve_batched,
    scale_blocks,
    scale_blocks_in_place,
    symmetrize_lower,
    symmetrize_lower_scaled,
    upper_solve_batched,
)

#: Blocks at most this large are solved by the compiled batched kernels; larger ones
#: one at a time by LAPACK.
SMALL_BLOCK = 48


def cholesky_stack(stack: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of positive definite matrices (I + PSD)."""
    if stack.shape[0] == 1 and stack.shape[1] > SMALL_BLOCK:
        if is_identity(stack[0]):
            # Every ratio of the block at 0 (the rank check at tau = 0, a sweep along
            # the block's term): the factor is the identity, what LAPACK returns for it.
            return stack[0].T[None]
        # One large block: LAPACK in place on the (symmetric) buffer, no copy.
        L, info = sla.lapack.dpotrf(stack[0].T, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"Cholesky factorization failed (LAPACK info {info})")
        return L[None]
    return np.linalg.cholesky(stack)


def solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L^-1 b`` for a stack of lower-triangular factors."""
    if L.shape[1] <= SMALL_BLOCK:
        return lower_solve_batched(L, np.ascontiguousarray(b))
    return np.stack([sla.solve_triangular(L[i], b[i], lower=True, check_finite=False) for i in range(len(L))])


def solve_upper(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``L'^-1 b`` for a stack of lower-triangular factors."""
    if L.shape[1] <= SMALL_BLOCK:
        return upper_solve_batched(L, np.ascontiguousarray(b))
    return np.stack([sla.solve_triangular(L[i], b[i], lower=True, trans="T", check_finite=False)
                     for i in range(len(L))])


@dataclass(frozen=True)
class Group:
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


class BlockLayout:
    """Where each core level sits among the dense blocks.

    Parameters
    ----------
    labels : int array (m,)
        Component label of each core level.

    Attributes
    ----------
    order : int64 (m,)
        Core levels in block order (block by block, ascending within a block).
    block_of_level, level_local : int64 (m,)
        Block of each level and its row within the block.
    level_base, level_size : int64 (m,)
        Buffer start and size of each level's block.
    block_size, block_first, block_base : int64 (n_blocks,)
    groups : list of Group
    buffer_size : int
    """

    def __init__(self, labels: np.ndarray):
        m = len(labels)
        uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        rank = np.lexsort((uniq, -counts))
        block_of_label = np.empty(len(uniq), dtype=np.int64)
        block_of_label[rank] = np.arange(len(uniq))
        block = block_of_label[inverse]
        block_size = counts[rank].astype(np.int64)
        order = np.lexsort((np.arange(m), block)).astype(np.int64)
        block_first = np.concatenate([[0], np.cumsum(block_size)[:-1]]).astype(np.int64)
        block_base = np.concatenate([[0], np.cumsum(block_size**2)[:-1]]).astype(np.int64)
        level_local = np.empty(m, dtype=np.int64)
        level_local[order] = np.arange(m) - np.repeat(block_first, block_size)
        self.m = m
        self.order = order
        self.block_of_level = block
        self.level_local = level_local
        self.block_size = block_size
        self.block_first = block_first
        self.block_base = block_base
        self.level_base = block_base[block]
        self.level_size = block_size[block]
        self.buffer_size = int((block_size**2).sum())
        groups = []
        start = 0
        while start < len(block_size):
            stop = start
            while stop < len(block_size) and block_size[stop] == block_size[start]:
                stop += 1
            groups.append(Group(int(block_size[start]), start, stop - start, int(block_base[start]),
                                int(block_first[start])))
            start = stop
        self.groups = groups
        self.group_of_block = np.repeat(np.arange(len(groups)), [g.count for g in groups])

    def position(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Buffer position of entry (a, b) of the core levels (same block)."""
        return self.level_base[a] + self.level_local[a] * self.level_size[a] + self.level_local[b]

    def diagonal(self) -> np.ndarray:
        levels = np.arange(self.m)
        return self.position(levels, levels)

    def scaled(self, K: np.ndarray, lam_block_order: np.ndarray) -> np.ndarray:
        """``I + Lambda K Lambda`` in the layout."""
        return scale_blocks(K, lam_block_order, self.block_base, self.block_size, self.block_first)

    def scale_in_place(self, M: np.ndarray, lam_block_order: np.ndarray) -> np.ndarray:
        """``Lambda M Lambda`` in the layout, overwriting M."""
        scale_blocks_in_place(M, lam_block_order, self.block_base, self.block_size, self.block_first)
        return M

    def cholesky(self, A: np.ndarray) -> tuple[list[np.ndarray], float]:
        """Factors of every block of A (the buffer may be overwritten) and ``log|A|``."""
        factors = []
        logdet = 0.0
        for g in self.groups:
            L = cholesky_stack(A[g.buffer].reshape(g.count, g.size, g.size))
            logdet += 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum()
            factors.append(L)
        return factors, float(logdet)

    def solve(self, factors, rhs: np.ndarray, upper: bool = False) -> np.ndarray:
        """``L^-1 rhs`` (or ``L'^-1 rhs``) with rhs in block order (m, q)."""
        q = rhs.shape[1]
        solver = solve_upper if upper else solve_lower
        return np.concatenate([solver(L, rhs[g.rows].reshape(g.count, g.size, q)).reshape(-1, q)
                               for g, L in zip(self.groups, factors, strict=True)])

    def block_matmul(self, M: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """``M rhs`` block by block (M in the layout, rhs in block order)."""
        q = rhs.shape[1]
        return np.concatenate([
            (M[g.buffer].reshape(g.count, g.size, g.size) @ rhs[g.rows].reshape(g.count, g.size, q)).reshape(-1, q)
            for g in self.groups])

    def inverse(self, factors, overwrite: bool = False) -> np.ndarray:
        """``A^-1`` in the layout from the factors of A (with ``overwrite``, a large
        block's factor is overwritten by its inverse and may be returned as the buffer)."""
        if len(self.groups) == 1 and self.groups[0].count == 1 and self.groups[0].size > SMALL_BLOCK:
            # One large block: LAPACK's inverse in the factor's (Fortran) storage, whose
            # transpose is the C-ordered buffer of the symmetric result (no copy).
            inv, _ = sla.lapack.dpotri(factors[0][0], lower=1, overwrite_c=int(overwrite))
            symmetrize_lower(inv)
            return inv.T.reshape(-1)
        A_inv = np.empty(self.buffer_size)
        for g, L in zip(self.groups, factors, strict=True):
            if g.count == 1 and g.size > SMALL_BLOCK:
                inv, _ = sla.lapack.dpotri(L[0], lower=1, overwrite_c=int(overwrite))
                symmetrize_lower(inv)
                A_inv[g.buffer] = inv.T.reshape(-1)
            else:
                L_inv = np.linalg.inv(L)
                A_inv[g.buffer] = (np.swapaxes(L_inv, 1, 2) @ L_inv).reshape(-1)
        return A_inv

    def scaled_inverse(self, factors, lam_block_order: np.ndarray, overwrite: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
        """``diag(A^-1)`` (at :meth:`diagonal`'s positions, level order) and
        ``Lambda A^-1 Lambda`` in the layout: :meth:`inverse` then :meth:`scale_in_place`,
        in one pass over a single large block (the same numbers)."""
        if len(self.groups) == 1 and self.groups[0].count == 1 and self.groups[0].size > SMALL_BLOCK:
            inv, _ = sla.lapack.dpotri(factors[0][0], lower=1, overwrite_c=int(overwrite))
            diagonal = np.empty(inv.shape[0])
            symmetrize_lower_scaled(inv, lam_block_order, diagonal)
            return diagonal[self.level_local], inv.T.reshape(-1)
        A_inv = self.inverse(factors, overwrite)
        return A_inv[self.diagonal()], self.scale_in_place(A_inv, lam_block_order)

    def block_factor(self, factors, b: int) -> np.ndarray:
        g = self.groups[int(self.group_of_block[b])]
        return factors[int(self.group_of_block[b])][b - g.first_block]

    def block(self, M: np.ndarray, b: int) -> np.ndarray:
        s = int(self.block_size[b])
        return M[self.block_base[b]:self.block_base[b] + s * s].reshape(s, s)
