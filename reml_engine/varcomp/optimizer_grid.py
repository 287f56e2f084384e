"""The outer grid of the k-term search: branches of inner minima and their candidates.

Steps 2 to 4 of the grid search described in :mod:`reml_engine.varcomp.optimizer`: every
ratio but the inner one on a grid in log(tau) with the face 0; at each node every local
minimum of the inner ratio (an exact 1-D scan, supplied by the caller) with the gradient
there; inner minima of neighbouring nodes matched into branches; and the nodes where a
descent along the branches is blocked within one grid step, the starts of the
refinements.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Outer grid density for one outer ratio, in points per unit of log(tau). The 1-D scan
#: uses 20; here each point costs a reduction and a 1-D scan, and the derivative test at
#: every node, not the density alone, brackets the minima.
OUTER_POINTS_PER_UNIT = 4.0
#: Lowest density the grid search accepts (for several outer ratios); below it the
#: budgeted search is used.
OUTER_MIN_POINTS_PER_UNIT = 0.5
#: Most nodes of the outer grid (faces included); the density is lowered to fit.
MAX_OUTER_NODES = 600
#: The outer grid starts at tau = OUTER_TAU_SMALL / max(size): below, the criterion is
#: linear in that ratio to relative order OUTER_TAU_SMALL.
OUTER_TAU_SMALL = 1e-4
#: The outer grid ends at tau = OUTER_TAU_LARGE / min(size): above, every weight of that
#: ratio is in its 1/(size tau) tail.
OUTER_TAU_LARGE = 1e6
#: Inner minima at neighbouring nodes further apart than this in log(tau_j*) are not the
#: same branch (a branch that seems to end there makes its end a candidate, so a wrong
#: split costs a refinement, never a minimum).
BRANCH_MAX_JUMP = 3.0


@dataclass
class _Node:
    """One inner minimum at one node of the outer grid."""

    index: tuple[int, ...]   # position on the outer grid (one index per outer axis)
    tau: np.ndarray
    criterion: float
    gradient: np.ndarray     # outer components, d criterion / d tau


def outer_axis(size_max: float, size_min: float, density: float) -> np.ndarray:
    """0, then ``density`` points per unit of log(tau) from ``OUTER_TAU_SMALL / size_max``
    to ``OUTER_TAU_LARGE / size_min``."""
    lo = math.log(OUTER_TAU_SMALL / size_max)
    hi = math.log(OUTER_TAU_LARGE / size_min)
    count = max(int(math.ceil((hi - lo) * density)) + 1, 2)
    return np.concatenate([[0.0], np.exp(np.linspace(lo, hi, count))])


def grid_density(spans: list[float], max_nodes: int, density: float) -> float:
    """The highest density up to ``density`` whose grid has at most ``max_nodes`` nodes."""
    def nodes(d):
        return math.prod(max(int(math.ceil(s * d)) + 1, 2) + 1 for s in spans)

    if nodes(density) <= max_nodes:
        return density
    lo, hi = 0.0, density
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if nodes(mid) <= max_nodes else (lo, mid)
    return lo


def _match(a: list[_Node], b: list[_Node], inner: int, floor: float) -> list[tuple[int, int]]:
    """Order-preserving matching of the inner minima at two neighbouring nodes."""
    ua = [math.log(max(n.tau[inner], floor)) for n in a]
    ub = [math.log(max(n.tau[inner], floor)) for n in b]
    INF = math.inf
    # cost[i][j]: best cost aligning a[:i] with b[:j]; a gap costs BRANCH_MAX_JUMP.
    cost = [[INF] * (len(b) + 1) for _ in range(len(a) + 1)]
    move = [[None] * (len(b) + 1) for _ in range(len(a) + 1)]
    cost[0][0] = 0.0
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            c = cost[i][j]
            if c == INF:
                continue
            if i < len(a) and c + BRANCH_MAX_JUMP < cost[i + 1][j]:
                cost[i + 1][j], move[i + 1][j] = c + BRANCH_MAX_JUMP, (i, j, False)
            if j < len(b) and c + BRANCH_MAX_JUMP < cost[i][j + 1]:
                cost[i][j + 1], move[i][j + 1] = c + BRANCH_MAX_JUMP, (i, j, False)
            if i < len(a) and j < len(b):
                d = abs(ua[i] - ub[j])
                if d <= BRANCH_MAX_JUMP and c + d < cost[i + 1][j + 1]:
                    cost[i + 1][j + 1], move[i + 1][j + 1] = c + d, (i, j, True)
    pairs = []
    i, j = len(a), len(b)
    while (i, j) != (0, 0):
        pi, pj, matched = move[i][j]
        if matched:
            pairs.append((pi, pj))
        i, j = pi, pj
    return pairs


def _grid_candidates(nodes_at: dict, axes: list[int], inner: int, floor: float,
                     shape: tuple[int, ...]) -> list[_Node]:
    """The nodes where descent along every outer axis is blocked within one grid step,
    and the discrete local minima along the branches (module docstring, step 4)."""
    # Neighbours along each axis: prev[d][id(node)], next[d][id(node)].
    prev = [dict() for _ in axes]
    nxt = [dict() for _ in axes]
    for index, here in nodes_at.items():
        for d in range(len(axes)):
            if index[d] + 1 >= shape[d]:
                continue
            other_index = index[:d] + (index[d] + 1,) + index[d + 1:]
            there = nodes_at.get(other_index, [])
            for ia, ib in _match(here, there, inner, floor):
                nxt[d][id(here[ia])] = there[ib]
                prev[d][id(there[ib])] = here[ia]

    def log_slope(n: _Node, d: int) -> float:
        # Derivative in log(tau) (in tau at the face), whose sign is the descent's.
        t = n.tau[axes[d]]
        return n.gradient[d] * (t if t > 0 else 1.0)

    def hidden(n: _Node, d: int) -> bool:
        a, b = prev[d].get(id(n)), nxt[d].get(id(n))
        if a is None or b is None or a.tau[axes[d]] == 0:
            return False
        s, sa, sb = log_slope(n, d), log_slope(a, d), log_slope(b, d)
        return (np.sign(s) == np.sign(sa) == np.sign(sb) != 0
                and abs(s) <= abs(sa) and abs(s) <= abs(sb))

    candidates = []
    for index, here in nodes_at.items():
        for n in here:
            blocked = True
            lowest = True
            for d in range(len(axes)):
                g = n.gradient[d]
                a, b = prev[d].get(id(n)), nxt[d].get(id(n))
                for m in (a, b):
                    if m is not None and m.criterion < n.criterion:
                        lowest = False
                # Descent goes towards the previous node when g >= 0, the next otherwise;
                # it is blocked by the face, the top, a branch end, or a sign change.
                if g >= 0:
                    ok = index[d] == 0 or a is None or a.gradient[d] < 0
                else:
                    ok = index[d] == shape[d] - 1 or b is None or b.gradient[d] >= 0
                if not (ok or hidden(n, d)):
                    blocked = False
            if blocked or lowest:
                candidates.append(n)
    # Adjacent candidates (matched neighbours) count once: the lowest of each cluster.
    neighbours = {}
    for d in range(len(axes)):
        for key, m in list(prev[d].items()) + list(nxt[d].items()):
            neighbours.setdefault(key, []).append(m)
    chosen = []
    ids = {id(c) for c in candidates}
    for c in sorted(candidates, key=lambda n: n.criterion):
        if any(id(m) in ids and id(m) in {id(x) for x in chosen} for m in neighbours.get(id(c), [])):
            continue
        chosen.append(c)
    return chosen


def grid_search(scan: Callable, evaluate: Callable, k: int, inner: int, axes: list[int], sizes,
                density: float) -> tuple[list[np.ndarray], int, list[_Node]]:
    """The outer grid, its number of nodes, and the candidate nodes.

    Parameters
    ----------
    scan : callable
        ``tau -> [(t, criterion), ...]``: every local minimum of the inner ratio with the
        others at ``tau`` (an exact 1-D scan).
    evaluate : callable
        ``tau -> VCEvaluation`` (criterion and gradient).
    k, inner, axes
        Number of terms, the inner term, the outer terms.
    sizes : sequence of (largest, smallest) level size per term
    density : float
        Points per unit of log(tau) on each outer axis.
    """
    grids = [outer_axis(sizes[i][0], sizes[i][1], density) for i in axes]
    shape = tuple(len(g) for g in grids)
    nodes_at: dict[tuple[int, ...], list[_Node]] = {}
    floor = OUTER_TAU_SMALL / sizes[inner][0] * 1e-4
    for index in np.ndindex(*shape):
        tau = np.zeros(k)
        for d, i in enumerate(axes):
            tau[i] = grids[d][index[d]]
        here = []
        for t, _value in scan(tau):
            point = tau.copy()
            point[inner] = t
            ev = evaluate(point)
            here.append(_Node(tuple(index), point, float(ev.criterion),
                              np.asarray(ev.gradient, dtype=np.float64)[axes]))
        nodes_at[tuple(index)] = here
    candidates = _grid_candidates(nodes_at, axes, inner, floor, shape)
    n_nodes = int(np.prod(shape))
    return grids, n_nodes, candidates
