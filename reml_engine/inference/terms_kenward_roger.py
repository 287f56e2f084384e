"""Kenward-Roger's adjusted covariance and df for fits with several random-intercept terms.

Kenward and Roger (1997), as pbkrtest's ``vcovAdj`` and ``KRmodcomp`` compute them. The
variance parameters are ``gamma = (var_1, ..., var_k, sigma2)`` and

``V = sigma2 W^-1 + sum_j var_j Z_j Z_j'``  (``W`` the prior weights; I without them),

which is linear in gamma: ``G_j = dV/dvar_j = Z_j Z_j'``, ``G_res = dV/dsigma2 = W^-1`` and
the second derivatives (Kenward-Roger's ``R_ij``) are 0. With ``Phi = (X'V^-1X)^-1``
(the model's ``Cov(beta)``),

* ``P_i = -X' V^-1 G_i V^-1 X``, ``Q_ij = X' V^-1 G_i V^-1 G_j V^-1 X``;
* the expected REML information over gamma, ``I_ij = (tr(V^-1 G_i V^-1 G_j) - 2 tr(Phi Q_ij)
  + tr(Phi P_i Phi P_j)) / 2``, and ``W_KR = I^-1`` (a pseudo-inverse when it is singular,
  :data:`~reml_engine.inference.ddf.KR_INFORMATION_CONDITION`);
* ``Phi_A = Phi + 2 Phi (sum_ij W_KR,ij (Q_ij - P_i Phi P_j)) Phi``.

The df and the F scaling of a hypothesis ``L beta`` then follow from ``Phi``, ``P_i`` and
``W_KR`` exactly as for one term (:func:`reml_engine.inference.ddf.kenward_roger_terms`).

pbkrtest builds ``V`` densely, and so does this module: each ``G_i = F_i F_i'`` with
``F_j = Z_j`` (sparse) or ``F_res = W^{-1/2}``, so ``tr(V^-1 G_i V^-1 G_j) =
||F_i' V^-1 F_j||^2`` and nothing larger than ``n x n`` is formed. Fits with more rows
than :data:`KR_MAX_NOBS` are refused (``V^-1`` alone would take ``8 n^2`` bytes):
Satterthwaite's df (:mod:`reml_engine.inference.terms_ddf`) need no dense ``V``. With
prior weights the residual derivative is ``W^-1``, the model's; pbkrtest takes the identity
there whatever the weights, so the two differ for weighted fits.

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("yield ~ nitro + (1|Block/Variety)", data=rl.datasets.oats())
>>> table = m.coef_table("kenward-roger")
>>> round(float(table.loc["nitro", "df"]), 3)
53.0
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse

from .ddf import KR_INFORMATION_CONDITION, KenwardRogerState

#: Largest number of rows for which the Kenward-Roger adjustment of a several-term fit is
#: computed: it forms the dense ``n x n`` inverse of ``V`` (8 n^2 bytes, 72 MB at 3000
#: rows, and O(n^3) work). Above it use ``ddf="satterthwaite"``.
KR_MAX_NOBS = 3000


def _indicator(codes: np.ndarray, nlevels: int) -> scipy.sparse.csr_matrix:
    """``Z_j``: one 1 per row, in the column of the row's level."""
    n = len(codes)
    return scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, nlevels))


def kenward_roger_dense(X: np.ndarray, codes, nlevels, variances: np.ndarray, sigma2: float,
                        weights: np.ndarray | None = None) -> KenwardRogerState:
    """Kenward-Roger's pieces from the model's arrays, with ``V`` built densely.

    Parameters
    ----------
    X : ndarray (n, p)
        The fixed-effects design (full column rank).
    codes : sequence of int arrays (n,)
        The level of each row in each random term.
    nlevels : sequence of int
        Levels per term.
    variances : ndarray (k,)
        ``var_j`` per term at the REML estimate.
    sigma2 : float
        Residual variance at the REML estimate.
    weights : ndarray (n,), optional
        Prior weights (``Var(e_i) = sigma2 / w_i``).

    Returns
    -------
    KenwardRogerState
        ``Phi``, ``Phi_A``, the ``P_i`` (terms, then the residual), ``W_KR`` and ``T = I``.
    """
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    resid_var = np.ones(n) if weights is None else 1.0 / np.asarray(weights, dtype=np.float64)
    Z = [_indicator(np.asarray(c), int(m)) for c, m in zip(codes, nlevels, strict=True)]
    V = np.diag(sigma2 * resid_var)
    for var_j, Z_j in zip(variances, Z, strict=True):
        if var_j > 0.0:
            ZZt = (Z_j @ Z_j.T).toarray()
            V += var_j * ZZt
    chol = scipy.linalg.cholesky(V, lower=True)
    chol_inv = scipy.linalg.solve_triangular(chol, np.eye(n), lower=True)
    V_inv = chol_inv.T @ chol_inv
    V_inv_X = V_inv @ X
    phi = np.linalg.inv(X.T @ V_inv_X)
    phi = 0.5 * (phi + phi.T)

    # G_i V^-1 X for each parameter (terms, then the residual), and F_i' V^-1 (rows of F_i).
    G_V_inv_X = [Z_j @ (Z_j.T @ V_inv_X) for Z_j in Z] + [resid_var[:, None] * V_inv_X]
    resid_factor = np.sqrt(resid_var)
    Ft_V_inv = [np.asarray(Z_j.T @ V_inv) for Z_j in Z]  # (m_j, n)
    n_par = len(Z) + 1
    P = [-(V_inv_X.T @ g) for g in G_V_inv_X]
    P = [0.5 * (Pi + Pi.T) for Pi in P]
    V_inv_G_V_inv_X = [V_inv @ g for g in G_V_inv_X]
    Q = [[G_V_inv_X[i].T @ V_inv_G_V_inv_X[j] for j in range(n_par)] for i in range(n_par)]

    def trace_pair(i: int, j: int) -> float:
        """``tr(V^-1 G_i V^-1 G_j) = ||F_i' V^-1 F_j||_F^2``."""
        if i < n_par - 1 and j < n_par - 1:
            block = np.asarray(Z[j].T @ Ft_V_inv[i].T)  # Z_j' V^-1 Z_i
        elif i < n_par - 1 or j < n_par - 1:
            block = Ft_V_inv[min(i, j)] * resid_factor[None, :]
        else:
            block = resid_factor[:, None] * V_inv * resid_factor[None, :]
        return float(np.sum(block * block))

    info = np.empty((n_par, n_par))
    for i in range(n_par):
        for j in range(i, n_par):
            info[i, j] = info[j, i] = (trace_pair(i, j) - 2.0 * np.sum(phi * Q[i][j])
                                       + np.sum((phi @ P[i]) * (P[j] @ phi)))
    eig = np.linalg.eigvalsh(info)
    W = 2.0 * (np.linalg.inv(info) if np.min(np.abs(eig)) > KR_INFORMATION_CONDITION else np.linalg.pinv(info))
    U = np.zeros((p, p))
    for i in range(n_par):
        for j in range(n_par):
            U += W[i, j] * (Q[i][j] - P[i] @ phi @ P[j])
    phi_adjusted = phi + 2.0 * phi @ U @ phi
    return KenwardRogerState(phi, 0.5 * (phi_adjusted + phi_adjusted.T), tuple(P), W, np.eye(p))


def terms_kenward_roger_state(fit) -> KenwardRogerState:
    """Kenward-Roger's pieces of a REML :class:`~reml_engine.core.terms_results.TermsFit`
    (user's columns).

    Raises
    ------
    ValueError
        For ML fits (the method is defined for REML), fits that hold no design, and fits
        with more than :data:`KR_MAX_NOBS` rows.
    """
    if not fit.REML:
        raise ValueError("the Kenward-Roger method needs a REML fit; refit with REML=True")
    tdesign = fit.design
    if tdesign is None:
        raise ValueError(
            "the Kenward-Roger df of a fit with several random terms build the covariance of the response from "
            "its rows, and this fit keeps none (design=None: a fit from chunks, Dask, Parquet or statistics; "
            "Kenward-Roger from the merged statistics alone is not implemented). Use ddf='satterthwaite' "
            "(lmerTest's default), computed from the fit's statistics, or fit the rows in memory with rl.lmer")
    if fit.nobs > KR_MAX_NOBS:
        raise ValueError(
            f"the Kenward-Roger df of a fit with several random terms build the {fit.nobs} x {fit.nobs} covariance "
            f"of the response densely; this fit has {fit.nobs} rows, more than KR_MAX_NOBS = {KR_MAX_NOBS} "
            "(reml_engine.inference.terms_kenward_roger). Use ddf='satterthwaite' (lmerTest's default), which needs "
            "no dense covariance")
    return kenward_roger_dense(tdesign.design.X, tdesign.terms.codes, tdesign.terms.nlevels,
                               fit.tau * fit.sigma2, fit.sigma2, tdesign.weights)


__all__ = ["KR_MAX_NOBS", "kenward_roger_dense", "terms_kenward_roger_state"]
