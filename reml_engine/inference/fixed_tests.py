"""Coefficient tables, contrast tests and type III tables with a choice of df method.

``ddf`` is one of

* ``"satterthwaite"``: lmerTest's default, from the exact derivatives in
  :mod:`reml_engine.inference.ddf`;
* ``"kenward-roger"``: pbkrtest's adjusted covariance and df (REML fits only);
* ``"residual"``: ``n - p``, with the model's covariance.

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
>>> table = rl.coef_table(m)
>>> round(float(table.loc["x", "df"]), 3)
7.259
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .ddf import (
    FTest,
    kenward_roger_ftest,
    kenward_roger_state,
    kenward_roger_terms,
    satterthwaite_df,
    satterthwaite_ftest,
    satterthwaite_state,
)
from .lazy_imports import scipy_stats as sps
from .type3 import type3_hypotheses

DDF_METHODS = ("satterthwaite", "kenward-roger", "residual")
_ALIASES = {
    "satterthwaite": "satterthwaite",
    "kenward-roger": "kenward-roger",
    "kenward_roger": "kenward-roger",
    "kr": "kenward-roger",
    "residual": "residual",
}


def normalize_ddf(ddf: str) -> str:
    """Canonical df-method name; raises for unknown names."""
    key = str(ddf).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"ddf must be one of {', '.join(DDF_METHODS)}; got {ddf!r}")
    return _ALIASES[key]


def _is_terms_fit(fit) -> bool:
    """A fit with several random terms (its df come from :mod:`.terms_ddf`)."""
    return hasattr(fit, "term_names")


def _t_table(estimate, se, df, index) -> pd.DataFrame:
    t = estimate / se
    p = 2.0 * sps.t.sf(np.abs(t), df)
    return pd.DataFrame({"estimate": estimate, "se": se, "df": df, "t": t, "p": p}, index=index)


def coef_table(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Estimate, standard error, df, t and two-sided p for every fixed effect.

    Parameters
    ----------
    fit : LmerFit
    ddf : {"satterthwaite", "kenward-roger", "residual"}

    Returns
    -------
    pandas.DataFrame indexed by coefficient, columns ``estimate``, ``se``, ``df``,
    ``t``, ``p``. With ``"kenward-roger"`` the SE is from the adjusted covariance.
    A :class:`~reml_engine.core.terms_results.TermsFit` answers with its own
    :meth:`~reml_engine.core.terms_results.TermsFit.coef_table`.
    """
    method = normalize_ddf(ddf)
    if _is_terms_fit(fit):
        return fit.coef_table(method)
    estimate = fit.fixef.to_numpy()
    p = len(estimate)
    eye = np.eye(p)
    if method == "satterthwaite":
        df = satterthwaite_df(satterthwaite_state(fit), eye)
        se = fit.se.to_numpy()
    elif method == "kenward-roger":
        state = kenward_roger_state(fit)
        df = np.array([kenward_roger_terms(state, eye[[j]]).den_df for j in range(p)])
        se = np.sqrt(np.diag(state.vcov_adjusted))
    else:
        df = np.full(p, float(fit.nobs - p))
        se = fit.se.to_numpy()
    return _t_table(estimate, se, df, fit.fixef.index)


def compound_symmetry_coef_table(cs) -> pd.DataFrame:
    """nlme ``summary(gls)`` table for the compound-symmetry fit: t with ``n - p`` df."""
    p = len(cs.fixef)
    return _t_table(cs.fixef.to_numpy(), cs.se.to_numpy(), np.full(p, float(cs.nobs - p)), cs.fixef.index)


def _as_hypothesis(fit, L, rhs) -> tuple[np.ndarray, np.ndarray]:
    names = list(fit.fixef.index)
    if isinstance(L, pd.DataFrame):
        L = L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=np.float64)
    elif isinstance(L, (pd.Series, dict)):
        L = pd.Series(L).reindex(names, fill_value=0.0).to_numpy(dtype=np.float64)
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    if L.shape[1] != len(names):
        raise ValueError(f"the hypothesis has {L.shape[1]} columns; the model has {len(names)} coefficients")
    rhs = np.broadcast_to(np.asarray(rhs, dtype=np.float64), (L.shape[0],)).copy()
    return L, rhs


def contrast_test(fit, L, rhs=0.0, ddf: str = "satterthwaite") -> FTest:
    """F-test of the linear hypothesis ``L beta = rhs`` (lmerTest's ``contest``).

    Parameters
    ----------
    fit : LmerFit
    L : array (q, p), or a Series/dict/DataFrame keyed by coefficient names
    rhs : float or array (q,)
    ddf : {"satterthwaite", "kenward-roger", "residual"}
    """
    method = normalize_ddf(ddf)
    if _is_terms_fit(fit):
        from .terms_ddf import terms_contrast_test

        return terms_contrast_test(fit, L, rhs, method)
    L, rhs = _as_hypothesis(fit, L, rhs)
    if method == "satterthwaite":
        return satterthwaite_ftest(fit, satterthwaite_state(fit), L, rhs)
    if method == "kenward-roger":
        return kenward_roger_ftest(fit, kenward_roger_state(fit), L, rhs)
    return residual_ftest(fit, L, rhs)


def residual_ftest(fit, L: np.ndarray, rhs: np.ndarray) -> FTest:
    """F-test of ``L beta = rhs`` with the model's covariance and ``n - p`` df."""
    diff = L @ fit.fixef.to_numpy() - rhs
    q = int(np.linalg.matrix_rank(L))
    f_value = float(diff @ np.linalg.solve(L @ fit.vcov.to_numpy() @ L.T, diff)) / q
    den_df = float(fit.nobs - len(fit.fixef))
    mean_sq = f_value * fit.sigma2
    return FTest(f_value, q, den_df, float(sps.f.sf(f_value, q, den_df)), mean_sq * q, mean_sq, "residual")


@dataclass(frozen=True)
class ContrastT:
    """A one-row contrast as a t-test: estimate, se, df, t, p and a confidence interval."""

    estimate: float
    se: float
    df: float
    t_value: float
    p_value: float
    lower: float
    upper: float

    def _repr_html_(self) -> str:
        from ..report.notebook import contrast_t_html

        return contrast_t_html(self)


def contrast_t(fit, L, rhs: float = 0.0, ddf: str = "satterthwaite", level: float = 0.95) -> ContrastT:
    """t-test and confidence interval of one linear combination ``l' beta``."""
    method = normalize_ddf(ddf)
    L, _ = _as_hypothesis(fit, L, rhs)
    if L.shape[0] != 1:
        raise ValueError("contrast_t tests one linear combination; use contrast_test for several")
    estimate = float(L[0] @ fit.fixef.to_numpy())
    if method == "kenward-roger":
        state = kenward_roger_state(fit)
        var = float(L[0] @ state.vcov_adjusted @ L[0])
        df = kenward_roger_terms(state, L).den_df
    else:
        var = float(L[0] @ fit.vcov.to_numpy() @ L[0])
        if method == "satterthwaite":
            df = float(satterthwaite_df(satterthwaite_state(fit), L)[0])
        else:
            df = float(fit.nobs - len(fit.fixef))
    se = float(np.sqrt(var))
    t_value = (estimate - rhs) / se
    half = sps.t.ppf(0.5 + level / 2.0, df) * se
    return ContrastT(estimate, se, df, t_value, float(2.0 * sps.t.sf(abs(t_value), df)),
                     estimate - half, estimate + half)


def anova_type3(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Type III F-tests for every term of the formula (lmerTest's ``anova(m)``).

    Each term's hypothesis is :func:`~reml_engine.inference.type3.type3_hypotheses`'s
    (the same for one random term and several: it depends on the fixed part alone),
    tested as lmerTest's ``contestMD``: with Satterthwaite's df the F is taken over the
    eigen-directions of ``L Cov(beta) L'`` and their df combined
    (:func:`~reml_engine.inference.ddf.satterthwaite_ftest`); with Kenward-Roger's it is
    pbkrtest's scaled F on the adjusted covariance
    (:func:`~reml_engine.inference.ddf.kenward_roger_ftest`).

    Parameters
    ----------
    fit : LmerFit or TermsFit
        A fit made from a formula. Several random terms: Satterthwaite's df from the
        criterion the fit keeps (also for fits from chunks, Dask or Parquet);
        Kenward-Roger's need the rows (see
        :func:`~reml_engine.inference.terms_kenward_roger.terms_kenward_roger_state`).
    ddf : {"satterthwaite", "kenward-roger", "residual"}

    Returns
    -------
    pandas.DataFrame indexed by term with ``sum_sq``, ``mean_sq``, ``num_df``,
    ``den_df``, ``f_value``, ``p_value``; no rows when the formula has no term besides
    the intercept (``y ~ 1 + (1|g)``, ``y ~ 0 + (1|g)``), as lmerTest's.
    """
    ddf = normalize_ddf(ddf)  # checked even when there is no term to test
    rows = {}
    for term, L in type3_hypotheses(fit).items():
        test = contrast_test(fit, L, 0.0, ddf)
        rows[term] = {
            "sum_sq": test.sum_sq, "mean_sq": test.mean_sq, "num_df": test.num_df,
            "den_df": test.den_df, "f_value": test.f_value, "p_value": test.p_value,
        }
    columns = ["sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)
