"""The map between the engine's centred parametrization and the user's columns.

With an intercept column, the engine fits ``y - c_y = b0 + sum_j b_j (x_j - c_j)`` (the
shift ``c`` is the statistics' ``model_shift``); the user's coefficients are ``b_j`` and
``b0 + c_y - sum_j c_j b_j``. The map is unit-triangular, so log|X'V^-1X| and the
criterion are unchanged by it, and slopes and their covariances are the same on both
sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class UserParametrization:
    """Map coefficients from the centred parametrization of ``m.stats`` to the user's.

    ``beta_user = T beta + offset``: with an intercept column the fit centres the other
    columns and the response by ``model_shift``; only the intercept row of ``T`` differs
    from the identity, so slopes and their covariances are unchanged.
    """

    def __init__(self, model_shift: np.ndarray, intercept_index: int | None, names):
        p = len(names)
        self.names = list(names)
        self.T = np.eye(p)
        self.offset = np.zeros(p)
        if intercept_index is not None:
            self.T[intercept_index, :] -= model_shift[:p]
            self.T[intercept_index, intercept_index] = 1.0
            self.offset[intercept_index] = model_shift[p]

    def coefficients(self, beta: np.ndarray) -> pd.Series:
        return pd.Series(self.T @ beta + self.offset, index=self.names, name="fixef")

    def covariance(self, vcov: np.ndarray) -> pd.DataFrame:
        cov = self.T @ vcov @ self.T.T
        return pd.DataFrame(0.5 * (cov + cov.T), index=self.names, columns=self.names)

    def inverse_covariance(self, precision: np.ndarray) -> np.ndarray:
        """``T^-T A T^-1``: a precision (or X'H^-1X) in the user's columns."""
        T_inv = np.linalg.inv(self.T)
        return T_inv.T @ precision @ T_inv

    def __call__(self, beta: np.ndarray, vcov: np.ndarray) -> tuple[pd.Series, pd.DataFrame]:
        """Coefficients and their covariance in the user's columns."""
        return self.coefficients(beta), self.covariance(vcov)


def standard_errors(vcov: pd.DataFrame) -> pd.Series:
    """Standard errors of the coefficients: the square roots of ``vcov``'s diagonal."""
    return pd.Series(np.sqrt(np.diag(vcov.to_numpy())), index=vcov.index, name="se")
