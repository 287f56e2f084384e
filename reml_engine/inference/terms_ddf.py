"""Satterthwaite's degrees of freedom for fits with several random-intercept terms.

lmerTest's method (``as_lmerModLT``) with the variance parameters
``varpar = (theta_1, ..., theta_k, sigma)``, ``theta_j = sd_j / sigma`` as lme4's:

* ``Cov(beta) = sigma^2 A(theta)^-1`` with ``A = X' H^-1 X``, ``H = W^-1 + sum_j theta_j^2 Z_j Z_j'``;
  its Jacobian ``J_j = d Cov(beta) / d varpar_j`` (``2 sigma A^-1`` for sigma);
* ``Cov(varpar) = 2 h^+``, ``h`` the Hessian of the (REML) deviance with beta profiled and
  sigma not, ``f(theta, sigma) = g(theta) + dof log(2 pi sigma^2) + pwrss(theta) / sigma^2``
  (``g = log|H| [+ log|A|]``, ``dof = n - p`` for REML, ``n`` for ML), and ``h^+`` its
  inverse on the eigenvalues above ``HESSIAN_EIGEN_TOL`` (lmerTest's pseudo-inverse);
* a contrast ``l`` has ``df = 2 (l' Cov(beta) l)^2 / (g' Cov(varpar) g)``,
  ``g_j = l' J_j l`` (:func:`reml_engine.inference.ddf.satterthwaite_df`).

The sigma derivatives are closed forms; the theta derivatives of ``g``, ``pwrss`` and
``A^-1`` are central differences with Richardson extrapolation
(:mod:`.numeric_derivatives`), as lmerTest takes them with numDeriv, of the engine's own
criterion parts (:meth:`reml_engine.varcomp.VCProblem.evaluate`,
:meth:`~reml_engine.varcomp.VCProblem.fixed_effects`). The function is taken in theta,
where it is even in each ``theta_j`` (``tau_j = theta_j^2``): steps across 0 stay inside
the model, so a term at the boundary needs no one-sided formula (as lme4's ``devfun``
accepts a negative theta).

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("strength ~ 1 + (1|batch/cask)", data=rl.datasets.pastes())
>>> round(float(m.coef_table().loc["(Intercept)", "df"]), 3)
9.0
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .ddf import (
    FTest,
    KenwardRogerState,
    SatterthwaiteState,
    kenward_roger_ftest,
    kenward_roger_terms,
    satterthwaite_df,
    satterthwaite_ftest,
)
from .fixed_tests import _as_hypothesis, _t_table, normalize_ddf, residual_ftest
from .numeric_derivatives import central_derivatives, central_jacobian

#: lmerTest's ``tol``: eigenvalues of the deviance's Hessian at most this are left out of
#: its inverse (a flat direction gets no variance rather than an infinite one).
HESSIAN_EIGEN_TOL = 1e-8


def _criterion_parts(problem, REML: bool):
    """``theta -> (g, pwrss)``: the parts of the deviance that depend on theta."""

    def parts(theta: np.ndarray) -> np.ndarray:
        ev = problem.evaluate(theta**2, REML, gradient=False)
        g = ev.logdet_V + (ev.logdet_XtVinvX if REML else 0.0)
        return np.array([g, ev.pwrss])

    return parts


def _unscaled_vcov(problem, REML: bool):
    """``theta -> A(theta)^-1`` (flattened), ``Cov(beta) / sigma^2`` in the user's columns."""

    def unscaled(theta: np.ndarray) -> np.ndarray:
        _, vcov, sigma2 = problem.fixed_effects(theta**2, REML)
        return (vcov / sigma2).ravel()

    return unscaled


def deviance_hessian_terms(problem, tau: np.ndarray, sigma2: float, REML: bool) -> np.ndarray:
    """Hessian of the (REML) deviance in ``(theta_1, ..., theta_k, sigma)`` at the estimate.

    Parameters
    ----------
    problem : VCProblem
    tau : ndarray (k,)
        ``var_j / sigma2`` at the estimate.
    sigma2 : float
        The residual variance at the estimate (``pwrss / dof``).
    REML : bool
    """
    theta = np.sqrt(np.asarray(tau, dtype=np.float64))
    k = len(theta)
    sigma = math.sqrt(sigma2)
    dof = problem.nobs - problem.p if REML else problem.nobs
    pwrss = dof * sigma2
    grad, hess = central_derivatives(_criterion_parts(problem, REML), theta)
    h = np.empty((k + 1, k + 1))
    h[:k, :k] = hess[0] + hess[1] / sigma2
    h[:k, k] = h[k, :k] = -2.0 * grad[1] / sigma**3
    h[k, k] = -2.0 * dof / sigma2 + 6.0 * pwrss / sigma2**2
    return 0.5 * (h + h.T)


def _pseudo_inverse(h: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(h)
    keep = values > HESSIAN_EIGEN_TOL
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T


def terms_satterthwaite_state(fit) -> SatterthwaiteState:
    """Cov(beta), its Jacobian in ``(theta_1..theta_k, sigma)`` and Cov(varpar) of a
    :class:`~reml_engine.core.terms_results.TermsFit` (user's columns)."""
    problem, REML = fit.problem, fit.REML
    if problem is None:
        raise ValueError("this fit holds no criterion (problem=None), so its degrees of freedom cannot be computed")
    theta = np.sqrt(fit.tau)
    sigma2 = fit.sigma2
    sigma = math.sqrt(sigma2)
    vcov = fit.vcov.to_numpy()
    p = vcov.shape[0]
    d_unscaled = central_jacobian(_unscaled_vcov(problem, REML), theta)  # (p * p, k)
    jacobian = np.concatenate([
        sigma2 * np.moveaxis(d_unscaled.reshape(p, p, -1), -1, 0),
        (2.0 / sigma * vcov)[None],
    ])
    jacobian = 0.5 * (jacobian + np.swapaxes(jacobian, 1, 2))
    h = deviance_hessian_terms(problem, fit.tau, sigma2, REML)
    return SatterthwaiteState(vcov, jacobian, 2.0 * _pseudo_inverse(h))


def terms_coef_table(fit, state: SatterthwaiteState | KenwardRogerState | None = None,
                     ddf: str = "satterthwaite") -> pd.DataFrame:
    """Estimate, SE, df, t and two-sided p for every fixed effect of a several-term fit.

    Parameters
    ----------
    fit : TermsFit
    state : SatterthwaiteState or KenwardRogerState, optional
        :func:`terms_satterthwaite_state` (``ddf="satterthwaite"``) or
        :func:`~reml_engine.inference.terms_kenward_roger.terms_kenward_roger_state`
        (``ddf="kenward-roger"``) of the fit, when already computed.
    ddf : {"satterthwaite", "kenward-roger", "residual"}
        Satterthwaite's df (lmerTest's default), Kenward-Roger's (pbkrtest's, REML fits
        only; the SE is then from the adjusted covariance, as lmerTest prints it) or
        ``n - p``.

    Returns
    -------
    pandas.DataFrame indexed by coefficient, columns ``estimate``, ``se``, ``df``, ``t``, ``p``.
    """
    method = normalize_ddf(ddf)
    estimate = fit.fixef.to_numpy()
    p = len(estimate)
    se = fit.se.to_numpy()
    if method == "satterthwaite":
        state = terms_satterthwaite_state(fit) if state is None else state
        df = satterthwaite_df(state, np.eye(p))
    elif method == "kenward-roger":
        state = _kenward_roger(fit) if state is None else state
        eye = np.eye(p)
        df = np.array([kenward_roger_terms(state, eye[[j]]).den_df for j in range(p)])
        se = np.sqrt(np.diag(state.vcov_adjusted))
    else:
        df = np.full(p, float(fit.nobs - p))
    return _t_table(estimate, se, df, fit.fixef.index)


def _kenward_roger(fit) -> KenwardRogerState:
    from .terms_kenward_roger import terms_kenward_roger_state

    return terms_kenward_roger_state(fit)


def terms_contrast_test(fit, L, rhs=0.0, ddf: str = "satterthwaite") -> FTest:
    """F-test of the linear hypothesis ``L beta = rhs`` of a several-term fit, as
    lmerTest's ``contest(m, L, joint = TRUE)``.

    Parameters
    ----------
    fit : TermsFit
    L : array (q, p), or a Series/dict/DataFrame keyed by coefficient names
    rhs : float or array (q,)
    ddf : {"satterthwaite", "kenward-roger", "residual"}
        Kenward-Roger's test (REML fits) is pbkrtest's: the adjusted covariance, the
        scaled F and its df.
    """
    method = normalize_ddf(ddf)
    L, rhs = _as_hypothesis(fit, L, rhs)
    if method == "residual":
        return residual_ftest(fit, L, rhs)
    if method == "kenward-roger":
        return kenward_roger_ftest(fit, fit._kenward_roger, L, rhs)
    return satterthwaite_ftest(fit, fit._satterthwaite, L, rhs)


__all__ = ["HESSIAN_EIGEN_TOL", "deviance_hessian_terms", "terms_coef_table", "terms_contrast_test",
           "terms_satterthwaite_state"]
