"""Generated data for the metamorphic relations: the messy inputs real data sets have.

Unbalanced groups with singletons, group labels as text, integers or digit strings,
text factors (some with digit levels), interactions, numeric predictors far from 0, an
integer predictor, and missing values in any column. Hypothesis draws the structure;
a NumPy generator seeded by hypothesis draws the values, so that an example is small to
print and quick to build.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, Phase, assume, settings
from hypothesis import strategies as st

from .relations import Case

#: Models fitted to generated data: additive and interaction, with and without factors.
FORMULAS = (
    "y ~ x + (1|g)",
    "y ~ x + f + (1|g)",
    "y ~ x * f + (1|g)",
    "y ~ x + k + f + (1|g)",
    "y ~ f + k + (1|g)",
)

#: Where x is centred: at 0, or far from it (years, epoch seconds).
X_OFFSETS = (0.0, 2024.0, 1e6, 1.7e9)

#: Examples per test in the default run, and in the full (slow) run; set
#: METAMORPHIC_EXAMPLES to search further (e.g. 500, for an afternoon).
FAST_EXAMPLES = 6
FULL_EXAMPLES = int(os.environ.get("METAMORPHIC_EXAMPLES", "20"))
#: Variants of one example checked in the default run (all of them in the full run).
FAST_VARIANTS = 3


def fast_settings(examples: int = FAST_EXAMPLES):
    """Few, reproducible examples: part of every run of the test suite."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def full_settings(examples: int = FULL_EXAMPLES):
    """More examples, for the slow suite (still reproducible, so that CI is stable).

    No shrinking: an example costs dozens of fits, and shrinking one can take minutes;
    the failing example is printed as drawn, small already (at most 81 rows).
    """
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _group_labels(kind: str, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "int":
        return rng.choice(np.arange(-40, 4000), size=n_groups, replace=False)
    if kind == "digits":
        return np.array([str(v) for v in rng.choice(np.arange(1, 400), size=n_groups, replace=False)], dtype=object)
    words = rng.choice(np.array(list("abcdefghijklmnopqrstuvwxyz")), size=(n_groups, 4))
    return np.array([f"{''.join(w)}{i}" for i, w in enumerate(words)], dtype=object)


def _factor_levels(kind: str, n_levels: int) -> list[str]:
    if kind == "digits":
        return [str(v) for v in (3, 10, 1, 27)[:n_levels]]
    if kind == "words":
        return ["north", "South", "east-1", "west two"][:n_levels]
    return list("bdac")[:n_levels]


@st.composite
def generated_cases(draw, formulas=FORMULAS, missing: bool = True) -> Case:
    """A :class:`Case` with generated data; the rows come in random order."""
    formula = draw(st.sampled_from(formulas))
    n_groups = draw(st.integers(2, 9))
    sizes = np.array(draw(st.lists(st.integers(1, 9), min_size=n_groups, max_size=n_groups)))
    assume(sizes.sum() >= 12)
    label_kind = draw(st.sampled_from(["text", "int", "digits"]))
    n_levels = draw(st.integers(2, 4))
    level_kind = draw(st.sampled_from(["letters", "digits", "words"]))
    offset = draw(st.sampled_from(X_OFFSETS))
    x_scale = draw(st.sampled_from([1.0, 0.01, 250.0]))
    sd_group = draw(st.sampled_from([0.0, 0.4, 2.0]))
    missing_rate = draw(st.sampled_from([0.0, 0.05, 0.15])) if missing else 0.0
    REML = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    n = int(sizes.sum())
    code = np.repeat(np.arange(n_groups), sizes)
    labels = _group_labels(label_kind, n_groups, rng)
    levels = _factor_levels(level_kind, n_levels)
    # Every level at least twice, so that factor columns are mostly estimable.
    level_code = rng.permutation(np.resize(np.arange(n_levels), n))
    x = rng.normal(size=n) * x_scale
    k = rng.integers(-3, 12, n)
    effect = rng.normal(size=n_levels)
    y = 2.0 + 0.7 * x / x_scale + 0.3 * k + effect[level_code] + sd_group * rng.normal(size=n_groups)[code]
    y = y + rng.normal(size=n)
    data = pd.DataFrame({
        "y": y,
        "x": x + offset,
        "k": k,
        "f": np.array(levels, dtype=object)[level_code],
        "g": labels[code],
    })
    if missing_rate:
        for column in data.columns:
            holes = rng.random(n) < missing_rate / len(data.columns)
            if holes.any():
                data[column] = data[column].astype(object if column in ("f", "g") else np.float64)
                data.loc[holes, column] = None if column in ("f", "g") else np.nan
        if data["g"].dtype == object and label_kind == "int":
            # ints with a missing label read back as floats, as read_csv gives them
            data["g"] = pd.to_numeric(data["g"])
    data = data.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    return Case(f"generated {formula}{'' if REML else ', ML'}", formula, data, REML=REML)
