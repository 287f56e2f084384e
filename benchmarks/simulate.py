"""Simulated data for the benchmarks: one random-intercept model, sizes from 1e3 to 1e7 rows.

Every data set has an intercept, numeric standard-normal predictors ``x1, x2, ...`` with
true coefficients ``1, 2, ...`` (all clearly non-zero, so relative differences of the
estimates are well defined), a random intercept of variance ``VAR_GROUP`` and residual
variance ``SIGMA2``. Groups are integer labels ``0 .. G - 1``.

A *wide* design adds a fixed factor ``f`` of ``L`` levels (``L0000``, ``L0001``, ...,
zero-padded so that every engine's alphabetical level order is the same), coded by
treatment contrasts: ``L - 1`` indicator columns, so that ``p = 1 + numeric + L - 1``.
That is how real designs reach p in the hundreds (a block, a plot, a batch as a fixed
effect), and what the issue's wide targets describe ("x + a 1000-level factor").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: True random-intercept variance and residual variance of the simulated data.
VAR_GROUP = 0.5
SIGMA2 = 1.0
#: Unbalanced designs draw group probabilities from a log-normal with this sigma: the
#: largest groups are then roughly ten times the median one.
UNBALANCED_LOG_SD = 1.0
#: Standard deviation of the fixed factor's level effects in a wide design.
FACTOR_EFFECT_SD = 1.0
#: Names of the fixed factor and of its levels.
FACTOR = "f"
LEVEL_FORMAT = "L{:04d}"


@dataclass(frozen=True)
class Config:
    """One benchmark configuration.

    Attributes
    ----------
    nobs : int
        Rows N.
    ngroups : int
        Groups G (an unbalanced design may leave a few of them empty).
    p : int
        Fixed effects, the intercept and the factor's indicator columns included.
    balanced : bool
        Equal group sizes (as far as N / G allows) or log-normal ones.
    factor_levels : int
        Levels L of the fixed factor ``f`` (0: no factor). The design then has
        ``p - L`` numeric predictors and ``L - 1`` indicator columns.
    """

    nobs: int
    ngroups: int
    p: int
    balanced: bool
    factor_levels: int = 0

    def __post_init__(self):
        if self.factor_levels == 1 or self.numeric < 0:
            raise ValueError(f"{self}: a factor needs at least 2 levels and p >= levels")

    @property
    def numeric(self) -> int:
        """Numeric predictors besides the intercept and the factor."""
        return self.p - self.factor_levels if self.factor_levels else self.p - 1

    @property
    def wide(self) -> bool:
        return self.factor_levels > 0

    @property
    def label(self) -> str:
        design = "balanced" if self.balanced else "unbalanced"
        factor = f" ({self.factor_levels}-level factor)" if self.wide else ""
        return f"N={self.nobs:.0e} G={self.ngroups:.0e} p={self.p}{factor} {design}"

    @property
    def input_bytes(self) -> int:
        """Bytes of the arrays a user hands to ``reml_engine.fit``: X, y and the labels."""
        return self.nobs * (self.p + 2) * 8

    @property
    def work(self) -> float:
        """``N p^2``: what a fit's cost grows with, to scale a time measured at another size."""
        return float(self.nobs) * self.p**2

    def fixed_formula(self) -> str:
        """The fixed part, ``y ~ x1 + ... + f`` (statsmodels' and interlace-lme's form)."""
        terms = predictor_names(self.numeric) + ([FACTOR] if self.wide else [])
        return "y ~ " + (" + ".join(terms) or "1")

    def formula(self) -> str:
        return f"{self.fixed_formula()} + (1|g)"


def predictor_names(numeric: int) -> list[str]:
    return [f"x{j}" for j in range(1, numeric + 1)]


def level_names(levels: int) -> list[str]:
    return [LEVEL_FORMAT.format(k) for k in range(levels)]


def column_names(config: Config) -> list[str]:
    """The fixed-effect names in the column order of X, spelled as reml_engine spells them."""
    names = ["(Intercept)", *predictor_names(config.numeric)]
    return names + [f"{FACTOR}[T.{level}]" for level in level_names(config.factor_levels)[1:]]


@dataclass(frozen=True)
class Dataset:
    """The same data as arrays (X with its intercept column) and as a DataFrame."""

    config: Config
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    factor: np.ndarray | None = None

    @property
    def column_names(self) -> list[str]:
        return column_names(self.config)

    def frame(self) -> pd.DataFrame:
        """``y``, ``x1 ...``, ``f`` (a Categorical) and ``g`` as a DataFrame (copies the columns)."""
        columns = {"y": self.y}
        for j, name in enumerate(predictor_names(self.config.numeric), start=1):
            columns[name] = self.X[:, j]
        if self.factor is not None:
            levels = level_names(self.config.factor_levels)
            columns[FACTOR] = pd.Categorical.from_codes(self.factor, categories=levels)
        columns["g"] = self.groups
        return pd.DataFrame(columns)


def group_labels(config: Config, rng: np.random.Generator) -> np.ndarray:
    """One integer label per row, in random order."""
    if config.balanced:
        labels = np.arange(config.nobs, dtype=np.int64) % config.ngroups
        return rng.permutation(labels)
    weights = rng.lognormal(0.0, UNBALANCED_LOG_SD, config.ngroups)
    return rng.choice(config.ngroups, size=config.nobs, p=weights / weights.sum()).astype(np.int64)


def simulate(config: Config, seed: int = 0) -> Dataset:
    """Draw one data set of the configuration (C-ordered X, float64).

    The draws for the numeric part come first, in the same order as before wide designs
    existed, so a configuration without a factor gives the same data as it always did.
    Every level of the factor occurs (levels are dealt out in turn, then shuffled).
    """
    rng = np.random.default_rng(seed)
    groups = group_labels(config, rng)
    X = np.empty((config.nobs, config.p))
    X[:, 0] = 1.0
    for j in range(1, config.numeric + 1):
        X[:, j] = rng.standard_normal(config.nobs)
    beta = np.arange(config.numeric + 1, dtype=np.float64)
    beta[0] = 1.0
    effects = rng.normal(0.0, np.sqrt(VAR_GROUP), config.ngroups)
    y = X[:, : config.numeric + 1] @ beta
    y += effects[groups]
    y += rng.normal(0.0, np.sqrt(SIGMA2), config.nobs)
    factor = None
    if config.wide:
        factor = rng.permutation(np.arange(config.nobs, dtype=np.int64) % config.factor_levels)
        level_effects = rng.normal(0.0, FACTOR_EFFECT_SD, config.factor_levels)
        y += level_effects[factor]
        indicators = X[:, config.numeric + 1 :]
        indicators[:] = 0.0
        rows = np.flatnonzero(factor > 0)
        indicators[rows, factor[rows] - 1] = 1.0
    return Dataset(config, X, y, groups, factor)
