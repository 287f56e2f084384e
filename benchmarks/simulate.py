"""Simulated data for the benchmarks: one random-intercept model, sizes from 1e3 to 1e7 rows.

Every data set has an intercept, ``p - 1`` standard-normal predictors with true
coefficients ``1, 2, ..., p - 1`` (all clearly non-zero, so relative differences of the
estimates are well defined), a random intercept of variance ``VAR_GROUP`` and residual
variance ``SIGMA2``. Groups are integer labels ``0 .. G - 1``.
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
        Fixed effects, the intercept included.
    balanced : bool
        Equal group sizes (as far as N / G allows) or log-normal ones.
    """

    nobs: int
    ngroups: int
    p: int
    balanced: bool

    @property
    def label(self) -> str:
        design = "balanced" if self.balanced else "unbalanced"
        return f"N={self.nobs:.0e} G={self.ngroups:.0e} p={self.p} {design}"

    @property
    def input_bytes(self) -> int:
        """Bytes of the arrays a user hands to ``reml_engine.fit``: X, y and the labels."""
        return self.nobs * (self.p + 2) * 8

    def formula(self) -> str:
        terms = " + ".join(predictor_names(self.p)) or "1"
        return f"y ~ {terms} + (1|g)"


def predictor_names(p: int) -> list[str]:
    return [f"x{j}" for j in range(1, p)]


@dataclass(frozen=True)
class Dataset:
    """The same data as arrays (X with its intercept column) and as a DataFrame."""

    config: Config
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray

    def frame(self) -> pd.DataFrame:
        """``y``, ``x1 .. x{p-1}`` and ``g`` as a DataFrame (copies the columns)."""
        columns = {"y": self.y}
        for j, name in enumerate(predictor_names(self.config.p), start=1):
            columns[name] = self.X[:, j]
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
    """Draw one data set of the configuration (C-ordered X, float64)."""
    rng = np.random.default_rng(seed)
    groups = group_labels(config, rng)
    X = np.empty((config.nobs, config.p))
    X[:, 0] = 1.0
    for j in range(1, config.p):
        X[:, j] = rng.standard_normal(config.nobs)
    beta = np.arange(config.p, dtype=np.float64)
    beta[0] = 1.0
    effects = rng.normal(0.0, np.sqrt(VAR_GROUP), config.ngroups)
    y = X @ beta
    y += effects[groups]
    y += rng.normal(0.0, np.sqrt(SIGMA2), config.nobs)
    return Dataset(config, X, y, groups)
