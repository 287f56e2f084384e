"""Small random designs with several random-intercept terms, for the optimizer's tests.

Each design is drawn from a seed: nested, crossed or mixed terms, some variances 0,
optionally a contextual x (level means of x far apart, y following x only within
levels: the shape that gives several local minima), small residual noise, prior weights
and an offset.
"""

from __future__ import annotations

import numpy as np

KINDS = ("crossed", "nested", "mixed", "seedlike")


def _labels(prefix: str, codes) -> np.ndarray:
    return np.array([f"{prefix}{c}" for c in codes])


def random_design(seed: int, kind: str, k: int, weights: bool = False, offset: bool = False) -> dict:
    """X, y, factors, weights, offset and term names of one small design.

    ``kind``: ``"crossed"`` (k independent factors), ``"nested"`` (a / a:b / a:b:c),
    ``"mixed"`` (a / a:b crossed with c; k = 3 only, else nested), ``"seedlike"`` (the
    first factor has few levels with far-apart x means, the response follows x only
    within them, small noise; the other factors crossed with it).
    """
    rng = np.random.default_rng(seed)
    if kind == "mixed" and k != 3:
        kind = "nested"
    n = int(rng.integers(30, 61))
    sds = rng.choice([0.0, 0.3, 1.0, 3.0], size=k)
    noise = float(rng.choice([0.2, 1.0]))
    if kind == "crossed":
        codes = [rng.integers(0, int(rng.integers(3, 7)), size=n) for _ in range(k)]
        factors = [_labels(chr(97 + j), c) for j, c in enumerate(codes)]
    elif kind == "seedlike":
        n_first = int(rng.integers(4, 7))
        codes = [np.repeat(np.arange(n_first), int(np.ceil(n / n_first)))[:n]]
        codes += [rng.integers(0, int(rng.integers(2, 5)), size=n) for _ in range(k - 1)]
        factors = [_labels(chr(97 + j), c) for j, c in enumerate(codes)]
        noise = float(rng.choice([0.1, 0.2, 0.3]))
        sds[0] = 0.0
    else:
        top = rng.integers(0, int(rng.integers(3, 6)), size=n)
        factors = [_labels("a", top)]
        inner = factors[0]
        depth = k if kind == "nested" else 2
        for level in range(1, depth):
            inner = np.char.add(np.char.add(inner, ":"), _labels(chr(97 + level), rng.integers(0, 3, size=n)))
            factors.append(inner)
        if kind == "mixed":
            factors.append(_labels("c", rng.integers(0, 4, size=n)))
    effects = np.zeros(n)
    for j, labels in enumerate(factors):
        levels, codes_j = np.unique(labels, return_inverse=True)
        effects += rng.normal(scale=sds[j], size=len(levels))[codes_j]
    first_levels, first_codes = np.unique(factors[0], return_inverse=True)
    if kind == "seedlike":
        centres = rng.normal(scale=8.0, size=len(first_levels))[first_codes]
        x = centres + rng.normal(size=n)
        y = 0.5 * (x - centres) + effects
    else:
        x = rng.normal(size=n)
        y = 1.0 + 0.4 * x + effects
    w = rng.uniform(0.5, 2.0, size=n) if weights else None
    z = rng.normal(size=n) if offset else None
    y = y + rng.normal(scale=noise, size=n) / (1.0 if w is None else np.sqrt(w))
    if z is not None:
        y = y + 0.7 * z
    X = np.column_stack([np.ones(n), x])
    return {
        "X": X,
        "y": y,
        "factors": factors,
        "weights": w,
        "offset": z,
        "terms": tuple(f"t{j}" for j in range(k)),
    }


def usable(design: dict) -> bool:
    """Every term has at least 2 levels and fewer levels than rows, and the terms are
    not the same partition twice (an identical pair is not identifiable)."""
    n = len(design["y"])
    partitions = set()
    for labels in design["factors"]:
        m = len(np.unique(labels))
        if not 2 <= m < n:
            return False
        _, codes = np.unique(labels, return_inverse=True)
        # Canonical form of the partition: codes in order of first appearance.
        _, first = np.unique(codes, return_index=True)
        relabel = np.empty(m, dtype=int)
        relabel[np.argsort(first)] = np.arange(m)
        key = tuple(relabel[codes])
        if key in partitions:
            return False
        partitions.add(key)
    return True
