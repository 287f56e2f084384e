"""``within()`` and ``between()`` in chunked fits: the group means from a first pass.

In memory, ``within(x)`` and ``between(x)`` take the mean of ``x`` in each group over the
rows the fit uses (:mod:`reml_engine.frontend.transforms`), and store those means in the
model spec. A chunked fit cannot learn them from one chunk, but a group mean is a sum
over a count, and sums add up: a first pass gives, per chunk, each transform's sums and
counts by group (:func:`chunk_group_sums`), they are merged (:meth:`GroupSums.merge_all`)
and the means stored in the spec as an in-memory fit stores them
(:meth:`GroupSums.states`). Every chunk is then encoded with the means of all rows, and
``predict`` on new rows reads them as it reads an in-memory fit's.

The rows are those of the fit: complete in every variable of the formula. Groups are
matched across chunks by the canonical label rule of :mod:`reml_engine.frontend.groups`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..frontend.groups import encode_labels
from ..frontend.transforms import TRANSFORM_NAMES, formula_context


def group_mean_transforms(spec) -> tuple[str, ...]:
    """The keys of the spec's transform state that are ``within()`` or ``between()``
    (sorted: formulaic's order of the state varies)."""
    return tuple(sorted(str(key) for key in spec.transform_state if is_group_mean_transform(str(key))))


def is_group_mean_transform(expression: str) -> bool:
    """True for ``within(...)`` and ``between(...)`` (as formulaic names their state)."""
    return expression.split("(", 1)[0].strip() in TRANSFORM_NAMES


def _label_index(labels: list) -> pd.Index:
    """Labels as an index encode_labels codes: tuples (``(1|a:b)``) as a MultiIndex."""
    if labels and isinstance(labels[0], tuple):
        return pd.MultiIndex.from_tuples(labels)
    return pd.Index(labels, dtype=object)


@dataclass(frozen=True)
class GroupSums:
    """Per transform, the groups seen and, per group, the sum of its values and the rows.

    Attributes
    ----------
    sums : dict
        ``{expression: (labels, sums (groups, columns), counts (groups,))}``.
    """

    sums: dict = field(default_factory=dict)

    @staticmethod
    def merge_all(parts: list[GroupSums]) -> GroupSums:
        """Merge the sums of disjoint chunks: a group split across chunks adds up."""
        merged: dict = {}
        for key in dict.fromkeys(k for part in parts for k in part.sums):
            pieces = [part.sums[key] for part in parts if key in part.sums]
            labels = [label for piece in pieces for label in piece[0]]
            coded = encode_labels(_label_index(labels), sort=False)
            groups = len(coded.levels)
            values = np.vstack([piece[1] for piece in pieces])
            counts = np.concatenate([piece[2] for piece in pieces])
            totals = np.zeros((groups, values.shape[1]))
            np.add.at(totals, coded.codes, values)
            merged[key] = (list(coded.levels), totals, np.bincount(coded.codes, weights=counts, minlength=groups))
        return GroupSums(merged)

    def states(self) -> dict:
        """The transform states of the means, as ``within()``/``between()`` store them."""
        return {key: {"levels": labels, "means": (totals / counts[:, None]).tolist()}
                for key, (labels, totals, counts) in self.sums.items()}


def chunk_group_sums(spec, data: pd.DataFrame, groups, keys: tuple[str, ...]) -> GroupSums:
    """The group sums of each transform over the complete rows ``data`` of one chunk.

    The transforms themselves compute the chunk's group means, on a copy of the spec
    whose states for ``keys`` are emptied (so they learn instead of looking up); the
    means times the rows per group are the sums.
    """
    fresh = copy.deepcopy(spec)
    for key in keys:
        fresh.transform_state[key] = {}
    with np.errstate(all="ignore"):  # non-finite values are reported by the statistics pass
        fresh.get_model_matrix(data, na_action="ignore", context=formula_context(groups))
    coded = encode_labels(groups, sort=False)  # the transforms' own coding: the same levels, in order
    counts = np.bincount(coded.codes[coded.codes >= 0], minlength=len(coded.levels)).astype(np.float64)
    sums = {}
    for key in keys:
        state = fresh.transform_state[key]
        means = np.asarray(state["means"], dtype=np.float64).reshape(len(state["levels"]), -1)
        sums[key] = (list(state["levels"]), means * counts[:, None], counts)
    return GroupSums(sums)


__all__ = ["GroupSums", "chunk_group_sums", "group_mean_transforms", "is_group_mean_transform"]
