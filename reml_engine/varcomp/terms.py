"""The grouping factors of several random-intercept terms, and how they relate.

A model with k random-intercept terms ``(1|g_1) + ... + (1|g_k)`` has, per row, one
level of each factor. :class:`RandomTerms` holds them coded as integers ``0 .. m_j - 1``
(levels in sorted order, as R's ``factor()``), with each term's name and level labels.

:class:`TermStructure` says how the factors relate, read off the weighted contingency
tables of the statistics (so it is the same for a chunked fit as for one in memory):

* term i is **nested** in term j when every level of i occurs with exactly one level of
  j (classes in schools: ``(1|school/class)`` gives ``class:school`` nested in
  ``school``);
* two terms are **crossed** when neither is nested in the other; **fully crossed**
  when every pair of levels occurs (Penicillin's plates and samples), **partially**
  otherwise.

When the terms can be ordered so that each is nested in the next (a hierarchy
``a/b/c``), :meth:`TermStructure.nesting_chain` gives that order, innermost first: the
criterion then has a closed form per level (:mod:`reml_engine.varcomp.nested`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ModelDataError
from ..frontend.groups import factorize_groups


@dataclass(frozen=True)
class RandomTerms:
    """Integer codes per row for k grouping factors.

    Attributes
    ----------
    names : tuple of str
        One name per term (lme4's term names are the front end's business).
    codes : tuple of int64 arrays (n,)
        ``codes[j][i]`` is the level of term j in row i, in ``0 .. nlevels[j] - 1``.
    levels : tuple of pandas.Index
        The label of each code, per term.

    Examples
    --------
    >>> terms = RandomTerms.from_labels({"subj": ["s1", "s2", "s1"], "item": [1, 1, 2]})
    >>> terms.nlevels
    (2, 2)
    """

    names: tuple[str, ...]
    codes: tuple[np.ndarray, ...]
    levels: tuple[pd.Index, ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.codes) == len(self.levels)):
            raise ValueError(
                f"RandomTerms needs one name, code array and level index per term; got "
                f"{len(self.names)} names, {len(self.codes)} code arrays, {len(self.levels)} level indexes"
            )
        if len(self.names) == 0:
            raise ModelDataError("a model with random intercepts needs at least one grouping factor")
        if len(set(self.names)) != len(self.names):
            raise ModelDataError(f"term names must be distinct, got {list(self.names)}")
        n = len(self.codes[0])
        for name, codes, levels in zip(self.names, self.codes, self.levels, strict=True):
            if codes.dtype != np.int64 or codes.ndim != 1:
                raise ValueError(f"codes of term {name!r} must be a one-dimensional int64 array")
            if len(codes) != n:
                raise ModelDataError(
                    f"term {name!r} has {len(codes)} rows, term {self.names[0]!r} has {n}: every term needs "
                    "one level per row"
                )
            if len(codes) and (codes.min() < 0 or codes.max() >= len(levels)):
                raise ValueError(f"codes of term {name!r} fall outside 0 .. {len(levels) - 1}")

    @classmethod
    def from_labels(cls, factors: Mapping[str, Sequence] | Sequence[tuple[str, Sequence]]) -> RandomTerms:
        """Code each factor's labels (strings, integers, categoricals) in sorted order.

        Parameters
        ----------
        factors : mapping name -> labels, or sequence of (name, labels)
            One label array of length n per term. Missing labels are an error.
        """
        items = list(factors.items()) if isinstance(factors, Mapping) else list(factors)
        names, codes, levels = [], [], []
        for name, labels in items:
            coded = factorize_groups(labels, name=str(name))
            names.append(str(name))
            codes.append(np.ascontiguousarray(coded.codes, dtype=np.int64))
            levels.append(coded.levels)
        return cls(tuple(names), tuple(codes), tuple(levels))

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def nobs(self) -> int:
        return len(self.codes[0])

    @property
    def nlevels(self) -> tuple[int, ...]:
        return tuple(len(levels) for levels in self.levels)

    def code_matrix(self) -> np.ndarray:
        """The codes as one C-contiguous int64 array (k, n), as the kernels take them."""
        return np.ascontiguousarray(np.vstack(self.codes), dtype=np.int64)

    def take(self, rows) -> RandomTerms:
        """The same factors on a subset of rows, with the levels of the whole (a chunk)."""
        rows = np.asarray(rows)
        return RandomTerms(self.names, tuple(np.ascontiguousarray(c[rows]) for c in self.codes), self.levels)


@dataclass(frozen=True)
class TermStructure:
    """Nesting and crossing of k grouping factors.

    Attributes
    ----------
    names : tuple of str
    nlevels : tuple of int
    nested : bool array (k, k)
        ``nested[i, j]``: every level of term i occurs with exactly one level of term j
        (i != j; the diagonal is False).
    cells : int array (k, k)
        Number of level pairs that occur together (``cells[i, i] = nlevels[i]``).
    """

    names: tuple[str, ...]
    nlevels: tuple[int, ...]
    nested: np.ndarray
    cells: np.ndarray

    @classmethod
    def from_tables(cls, names, nlevels, row_nonzeros: Mapping[tuple[int, int], np.ndarray],
                    col_nonzeros: Mapping[tuple[int, int], np.ndarray]) -> TermStructure:
        """From the contingency tables of each pair of terms ``(a, b)``, ``a < b``.

        ``row_nonzeros[a, b]`` counts, per level of a, the levels of b it occurs with;
        ``col_nonzeros[a, b]`` the reverse.
        """
        k = len(names)
        nested = np.zeros((k, k), dtype=bool)
        cells = np.diag(np.asarray(nlevels, dtype=np.int64))
        for (a, b), per_row in row_nonzeros.items():
            per_col = col_nonzeros[a, b]
            nested[a, b] = bool(np.all(per_row == 1))
            nested[b, a] = bool(np.all(per_col == 1))
            cells[a, b] = cells[b, a] = int(per_row.sum())
        nested.setflags(write=False)
        cells.setflags(write=False)
        return cls(tuple(names), tuple(int(m) for m in nlevels), nested, cells)

    @property
    def k(self) -> int:
        return len(self.names)

    def is_nested_in(self, i: int, j: int) -> bool:
        """Every level of term i occurs with exactly one level of term j."""
        return bool(self.nested[i, j])

    def relation(self, i: int, j: int) -> str:
        """How term i relates to term j.

        One of ``"same"`` (the two factors group the rows identically),
        ``"nested"`` (i nested in j), ``"contains"`` (j nested in i),
        ``"crossed"`` (every pair of levels occurs) or ``"partially crossed"``.
        """
        if i == j:
            return "same"
        if self.nested[i, j] and self.nested[j, i]:
            return "same"
        if self.nested[i, j]:
            return "nested"
        if self.nested[j, i]:
            return "contains"
        if self.cells[i, j] == self.nlevels[i] * self.nlevels[j]:
            return "crossed"
        return "partially crossed"

    def identical_pairs(self) -> list[tuple[int, int]]:
        """Pairs of terms whose factors group the rows identically: their variances are
        not identifiable apart (only their sum is)."""
        return [(i, j) for i in range(self.k) for j in range(i + 1, self.k)
                if self.nested[i, j] and self.nested[j, i]]

    def nesting_chain(self) -> tuple[int, ...] | None:
        """The terms ordered so that each is nested in every later one, innermost first;
        None when they are not a hierarchy (some pair is crossed)."""
        # Term i is nested in every term that follows it: sort by the number of terms
        # each one is nested in (the innermost is nested in all others), then check.
        order = sorted(range(self.k), key=lambda i: (-int(self.nested[i].sum()), -self.nlevels[i], i))
        for pos, i in enumerate(order):
            for j in order[pos + 1:]:
                if not self.nested[i, j]:
                    return None
        return tuple(order)
