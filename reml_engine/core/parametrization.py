"""The map between the engine's internal parametrization and the user's columns.

The engine fits the model in internal columns ``Z_int = ([X | y] - c) T_z``:

* ``c`` (the statistics' ``model_shift``) centres every column but the intercept, which
  stays a column of ones and absorbs the shift (zero without an intercept column);
* ``T_z`` is unit upper triangular, the identity unless the centred columns are still
  nearly collinear (a large offset carried into an interaction ``x:f``, ``x`` next to
  ``x^2``): then it is the Gram-Schmidt map of
  :func:`reml_engine.core.statistics.conditioning_transform`, so that ``Z_int`` has nearly
  orthogonal columns and no digits cancel in the criterion.

Write ``T_z = [[T_x, t_y], [0, 1]]``: the internal predictors are ``(X - c_x) T_x`` and
the internal response ``(y - c_y) + (X - c_x) t_y``. A coefficient vector ``beta`` of
the internal model is, on the centred columns ``X - c_x``, ``b = T_x beta - t_y``, and on
the user's columns ``beta_user = T beta + offset`` with ``T = S T_x`` and
``offset = c_y e_0 - S t_y`` (``S`` moves the shift onto the intercept ``e_0``). Every map
here is unit triangular, so ``log|X'V^-1X|`` and the criterion are the same on both sides.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

#: Tuples of coefficient names whose Index is kept.
NAMES_INDEX_CACHE_SIZE = 256


class UserParametrization:
    """Map results from the internal parametrization of ``m.stats`` to the user's columns.

    ``beta_user = T beta + offset`` and ``vcov_user = T vcov T'``.

    Parameters
    ----------
    model_shift : array (p + 1,)
        The shift ``c`` of the centred columns (the response last).
    intercept_index : int or None
        The column of ones that absorbs the shift.
    names : sequence of str
        The user's coefficient names.
    transform : array (p + 1, p + 1) or None
        The unit upper-triangular ``T_z`` of the internal columns (None: identity).
    """

    def __init__(self, model_shift: np.ndarray, intercept_index: int | None, names, transform=None):
        p = len(names)
        self.names = list(names)
        # Built once: every Series and DataFrame of a fit shares it (an Index is
        # immutable), where building it from the names each time cost most of a result.
        self._index = _names_index(tuple(self.names)).copy()
        self.model_shift = np.asarray(model_shift, dtype=np.float64).copy()
        self.intercept_index = intercept_index
        self.transform = None if transform is None else np.array(transform, dtype=np.float64)
        if self.transform is None:
            T_x, t_y = np.eye(p), np.zeros(p)
        else:
            T_x, t_y = self.transform[:p, :p], self.transform[:p, p]
        # S: coefficients of the centred columns X - c_x to those of X (the intercept
        # takes -c_x' b).
        S = np.eye(p)
        offset = np.zeros(p)
        if intercept_index is not None:
            S[intercept_index, :] -= self.model_shift[:p]
            S[intercept_index, intercept_index] = 1.0
            offset[intercept_index] = self.model_shift[p]
        self._T_x, self._t_y = T_x, t_y
        self.T = S @ T_x
        self.offset = offset - S @ t_y
        for array in (self.model_shift, self.T, self.offset):
            array.setflags(write=False)

    @property
    def is_reparametrized(self) -> bool:
        """True when the internal columns are a conditioning transform of the centred ones."""
        return self.transform is not None

    def coefficients(self, beta: np.ndarray) -> pd.Series:
        return pd.Series(self.T @ beta + self.offset, index=self._index, name="fixef")

    def covariance(self, vcov: np.ndarray) -> pd.DataFrame:
        cov = self.T @ vcov @ self.T.T
        return pd.DataFrame(0.5 * (cov + cov.T), index=self._index, columns=self._index)

    def centred_coefficients(self, beta: np.ndarray) -> np.ndarray:
        """Coefficients of the centred columns ``X - c_x`` (response ``y - c_y``)."""
        return self._T_x @ beta - self._t_y

    def fixed_part(self, X: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """``X beta_user`` for rows of the user's columns, as ``c_y + (X - c_x) b``.

        The user's coefficients of a predictor far from 0 come with an intercept of the
        same size, so ``X @ beta_user`` would cancel most digits; the centred form keeps
        them.
        """
        shift = self.model_shift
        if not np.any(shift):
            return X @ self.centred_coefficients(beta)
        return (X - shift[:-1]) @ self.centred_coefficients(beta) + shift[-1]

    def internal_sums(self, group_stats) -> np.ndarray:
        """Per-group sums ``(G, p + 1)`` of the internal columns, from statistics of the
        user's columns (:class:`~reml_engine.core.statistics.GroupStats`)."""
        counts = group_stats.counts.astype(np.float64)
        sums = group_stats.sums + counts[:, None] * (group_stats.shift - self.model_shift)[None, :]
        return sums if self.transform is None else sums @ self.transform

    def __call__(self, beta: np.ndarray, vcov: np.ndarray) -> tuple[pd.Series, pd.DataFrame]:
        """Coefficients and their covariance in the user's columns."""
        return self.coefficients(beta), self.covariance(vcov)


@functools.lru_cache(maxsize=NAMES_INDEX_CACHE_SIZE)
def _names_index(names: tuple) -> pd.Index:
    """The pandas Index of coefficient names, built once per tuple of names (building one
    from strings took about a tenth of a small fit). Callers take a shallow ``copy()``:
    the values are immutable and shared, but an Index's ``name`` can be set, and one
    fit's must not rename another's."""
    return pd.Index(list(names))


def standard_errors(vcov: pd.DataFrame) -> pd.Series:
    """Standard errors of the coefficients: the square roots of ``vcov``'s diagonal."""
    return pd.Series(np.sqrt(np.diag(vcov.to_numpy())), index=vcov.index, name="se")
