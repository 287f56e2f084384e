"""Denominator degrees of freedom: Satterthwaite and Kenward-Roger, in closed form.

The random-intercept model has two variance parameters, so both methods reduce to
small matrices built from the pooled sufficient statistics. Every ``X' f(V) X`` splits
over the eigenspaces of ``V = sigma2 I + var_group Z Z'``: within groups ``V`` acts as
``sigma2``, on the mean of a group of size ``n`` as ``lambda_n = sigma2 + n var_group``,
so with ``W`` the within and ``B_u`` the pooled between cross-products of X,

``X' f(V) X = f(sigma2) W + sum_u f(lambda_u) B_u``.

Satterthwaite (as lmerTest)
    The variance parameters are ``(theta, sigma)`` with ``theta = sqrt(tau)``. With
    ``A(tau) = X'H^{-1}X`` and ``D(tau) = -dA/dtau = sum_u n_u B_u / (1 + n_u tau)^2``,
    ``Cov(beta) = sigma^2 A^{-1}`` has the exact derivatives
    ``d/dtheta = 2 theta sigma^2 A^{-1} D A^{-1}`` and ``d/dsigma = 2 sigma A^{-1}``.
    The covariance of ``(theta, sigma)`` is twice the inverse Hessian of the deviance
    ``f(tau, sigma2) = log|H| [+ log|A|] + m log(2 pi sigma2) + pwrss(tau) / sigma2``
    (``m = n - p`` for REML, ``n`` for ML), whose second derivatives in tau are closed
    forms too (:func:`deviance_hessian`). A contrast ``l`` then has
    ``df = 2 (l'Cl)^2 / (g' Cov(theta, sigma) g)``, ``g_k = l' dC/dk l``.

Kenward-Roger (as pbkrtest)
    The variance parameters are ``(var_group, sigma2)``, ``dV/dvar_group = Z Z'`` and
    ``dV/dsigma2 = I``. The matrices ``P_i``, ``Q_ij`` and the traces of the expected
    REML information are the eigenspace sums above, so the adjusted covariance
    ``Phi_A = Phi + 2 Phi (sum_ij W_ij (Q_ij - P_i Phi P_j)) Phi`` and the degrees of
    freedom for a q-row hypothesis cost ``O(U p^2)``.

All computations happen in the centred parametrization of ``fit.stats``; a hypothesis
``L`` on the user's coefficients is ``L T`` there (``beta_user = T beta + offset``), and
both methods are invariant under that change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.criterion import residual_dof, xtvinvx

#: pbkrtest uses a pseudo-inverse of the expected information when its smallest
#: absolute eigenvalue is below this.
KR_INFORMATION_CONDITION = 1e-10
#: pbkrtest treats the KR term ``1 + c1 B`` as 0 below this.
KR_V0_ZERO = 1e-10
#: pbkrtest's 0/0 rule: a ratio of two numbers both below this in size is taken as 1.
KR_ZERO_OVER_ZERO = 1e-14
#: The F-statistic scaling of KR is dropped when the df are within this of 2 (pbkrtest).
KR_DF_NEAR_TWO = 0.01
#: lmerTest: eigenvalues of ``L Cov L'`` below this fraction of the largest are dropped.
CONTRAST_EIGEN_RTOL = float(np.sqrt(np.finfo(float).eps))
#: lmerTest: per-direction df equal to within this are averaged.
EQUAL_DF_TOL = 1e-8


# -- pieces of the criterion and their tau-derivatives -------------------------------------
@dataclass(frozen=True)
class TauPieces:
    """``A = X'H^{-1}X`` and its tau-derivatives at one tau (internal parametrization).

    ``M = [X|y]'H^{-1}[X|y]``, ``D = sum n_u B_u / (1 + n_u tau)^2`` (``= -dM/dtau``),
    ``E = sum n_u^2 B_u / (1 + n_u tau)^3`` (``= d^2M/dtau^2 / 2``), all ``(p+1, p+1)``.
    """

    tau: float
    M: np.ndarray
    D: np.ndarray
    E: np.ndarray
    A_inv: np.ndarray
    beta: np.ndarray
    pwrss: float


def tau_pieces(stats, tau: float) -> TauPieces:
    """Evaluate :class:`TauPieces` from pooled statistics."""
    p = stats.p
    denom = 1.0 + tau * stats.sizes
    M = xtvinvx(tau, stats)
    D = np.tensordot(stats.sizes / denom**2, stats.between, axes=1)
    E = np.tensordot(stats.sizes**2 / denom**3, stats.between, axes=1)
    A_inv = np.linalg.inv(M[:p, :p])
    A_inv = 0.5 * (A_inv + A_inv.T)
    beta = A_inv @ M[:p, p]
    pwrss = float(M[p, p] - M[p, :p] @ beta)
    return TauPieces(tau, M, D, E, A_inv, beta, pwrss)


def deviance_hessian(stats, tau: float, sigma2: float, REML: bool) -> np.ndarray:
    """Hessian of the (REML) deviance ``f(tau, sigma2)`` with beta profiled out.

    Returns the 2 x 2 matrix of second derivatives in ``(tau, sigma2)`` together with
    the gradient, as ``(hessian, gradient)``.
    """
    pc = tau_pieces(stats, tau)
    p = stats.p
    n_u, g_u = stats.sizes, stats.groups_per_size
    denom = 1.0 + tau * n_u
    dof = residual_dof(stats, REML)
    v = np.r_[-pc.beta, 1.0]
    Dv = pc.D @ v
    d_pwrss = -float(v @ Dv)
    dd_pwrss = 2.0 * float(v @ pc.E @ v) - 2.0 * float(Dv[:p] @ pc.A_inv @ Dv[:p])
    d_ldV = float(g_u @ (n_u / denom))
    dd_ldV = -float(g_u @ (n_u**2 / denom**2))
    f_t = d_ldV + d_pwrss / sigma2
    f_tt = dd_ldV + dd_pwrss / sigma2
    if REML:
        AiD = pc.A_inv @ pc.D[:p, :p]
        f_t -= np.trace(AiD)
        # d^2 log|A| = tr(A^-1 A'') - tr(A^-1 A' A^-1 A'), A' = -D, A'' = 2E.
        f_tt += 2.0 * np.trace(pc.A_inv @ pc.E[:p, :p]) - np.trace(AiD @ AiD)
    f_s = dof / sigma2 - pc.pwrss / sigma2**2
    f_ss = -dof / sigma2**2 + 2.0 * pc.pwrss / sigma2**3
    f_ts = -d_pwrss / sigma2**2
    return np.array([[f_tt, f_ts], [f_ts, f_ss]]), np.array([f_t, f_s])


# -- Satterthwaite ----------------------------------------------------------------------
@dataclass(frozen=True)
class SatterthwaiteState:
    """Cov(beta), its Jacobian in ``(theta, sigma)`` and Cov(theta, sigma), user scale."""

    vcov: np.ndarray
    jacobian: np.ndarray  # (2, p, p)
    vcov_varpar: np.ndarray  # (2, 2)


def satterthwaite_state(fit) -> SatterthwaiteState:
    """The pieces lmerTest's Satterthwaite method uses, computed exactly."""
    stats, tau, sigma2 = fit.stats, fit.tau, fit.sigma2
    theta, sigma = np.sqrt(tau), np.sqrt(sigma2)
    pc = tau_pieces(stats, tau)
    p = stats.p
    T = fit.parametrization.T
    A_inv = pc.A_inv
    d_theta = 2.0 * theta * sigma2 * A_inv @ pc.D[:p, :p] @ A_inv
    d_sigma = 2.0 * sigma * A_inv
    jac = np.stack([T @ d_theta @ T.T, T @ d_sigma @ T.T])
    hess_ts, grad_ts = deviance_hessian(stats, tau, sigma2, fit.REML)
    # Chain rule to (theta, sigma): tau = theta^2, sigma2 = sigma^2.
    f_t, f_s = grad_ts
    h = np.empty((2, 2))
    h[0, 0] = 2.0 * f_t + 4.0 * tau * hess_ts[0, 0]
    h[1, 1] = 2.0 * f_s + 4.0 * sigma2 * hess_ts[1, 1]
    h[0, 1] = h[1, 0] = 4.0 * theta * sigma * hess_ts[0, 1]
    vcov = T @ (sigma2 * A_inv) @ T.T
    return SatterthwaiteState(0.5 * (vcov + vcov.T), jac, 2.0 * np.linalg.inv(h))


def satterthwaite_df(state: SatterthwaiteState, L: np.ndarray) -> np.ndarray:
    """Satterthwaite df of each row of ``L`` (one-dimensional contrasts)."""
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    var = np.einsum("ka,ab,kb->k", L, state.vcov, L)
    grad = np.einsum("ka,jab,kb->kj", L, state.jacobian, L)
    denom = np.einsum("kj,jl,kl->k", grad, state.vcov_varpar, grad)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * var**2 / denom


def combine_df(nu: np.ndarray) -> float:
    """Denominator df of an F-test from the df of its orthogonal directions (lmerTest)."""
    nu = np.asarray(nu, dtype=np.float64)
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < EQUAL_DF_TOL):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    expected = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * expected / (expected - len(nu))


@dataclass(frozen=True)
class FTest:
    """An F-test of ``L beta = rhs``.

    Attributes
    ----------
    f_value, num_df, den_df, p_value : float
    sum_sq, mean_sq : float
        lmerTest's ``Sum Sq`` and ``Mean Sq``: ``mean_sq = F_unscaled * sigma2``.
    method : str
    """

    f_value: float
    num_df: int
    den_df: float
    p_value: float
    sum_sq: float
    mean_sq: float
    method: str

    def _repr_html_(self) -> str:
        from ..report.notebook import f_test_html

        return f_test_html(self)


def satterthwaite_ftest(fit, state: SatterthwaiteState, L: np.ndarray, rhs: np.ndarray) -> FTest:
    """F-test of ``L beta = rhs`` with Satterthwaite df (eigen-directions as lmerTest)."""
    from scipy import stats as sps

    beta = fit.fixef.to_numpy()
    VL = L @ state.vcov @ L.T
    d, P = np.linalg.eigh(0.5 * (VL + VL.T))
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    keep = d > max(CONTRAST_EIGEN_RTOL * d[0], 0.0)
    q = int(keep.sum())
    PtL = P[:, keep].T @ L
    diff = P[:, keep].T @ (L @ beta - rhs)
    f_value = float(np.sum(diff**2 / d[keep]) / q)
    den_df = combine_df(satterthwaite_df(state, PtL))
    p_value = float(sps.f.sf(f_value, q, den_df))
    mean_sq = f_value * fit.sigma2
    return FTest(f_value, q, den_df, p_value, mean_sq * q, mean_sq, "satterthwaite")


# -- Kenward-Roger ---------------------------------------------------------------------
@dataclass(frozen=True)
class KenwardRogerState:
    """pbkrtest's pieces, internal parametrization: Phi, Phi_A, P_i, W; and T.

    ``P`` holds one matrix per variance parameter (two for one term; ``k + 1`` for ``k``
    terms, :mod:`reml_engine.inference.terms_kenward_roger`) and ``W`` is their
    ``(len(P), len(P))`` weight matrix, twice the inverse of the expected information.
    """

    phi: np.ndarray
    phi_adjusted: np.ndarray
    P: tuple[np.ndarray, ...]
    W: np.ndarray
    T: np.ndarray

    @property
    def vcov_adjusted(self) -> np.ndarray:
        """The adjusted covariance of the user's coefficients."""
        V = self.T @ self.phi_adjusted @ self.T.T
        return 0.5 * (V + V.T)


def kenward_roger_state(fit) -> KenwardRogerState:
    """Kenward-Roger adjusted covariance (REML fits only), in closed form."""
    if not fit.REML:
        raise ValueError("the Kenward-Roger method needs a REML fit; refit with REML=True")
    stats = fit.stats
    p = stats.p
    s2 = fit.sigma2
    var_group = fit.tau * s2
    n_u, g_u = stats.sizes, stats.groups_per_size
    lam = s2 + n_u * var_group  # eigenvalue of V on a group mean
    Wxx = stats.within[:p, :p]
    Bxx = stats.between[:, :p, :p]
    # dV/dvar_group = ZZ' (0 within, n on a mean); dV/dsigma2 = I (1 and 1).
    g_within = np.array([0.0, 1.0])
    g_between = np.stack([n_u, np.ones_like(n_u)])  # (2, U)

    def xfx(within_coef: float, between_coef: np.ndarray) -> np.ndarray:
        return within_coef * Wxx + np.tensordot(between_coef, Bxx, axes=1)

    A = xfx(1.0 / s2, 1.0 / lam)
    phi = np.linalg.inv(A)
    phi = 0.5 * (phi + phi.T)
    P = [-xfx(g_within[i] / s2**2, g_between[i] / lam**2) for i in range(2)]
    n_within = stats.nobs - stats.ngroups
    info = np.empty((2, 2))
    U = np.zeros((p, p))
    Q = {}
    for i in range(2):
        for j in range(i, 2):
            Q[i, j] = xfx(g_within[i] * g_within[j] / s2**3, g_between[i] * g_between[j] / lam**3)
            trace = n_within * g_within[i] * g_within[j] / s2**2 + float(
                g_u @ (g_between[i] * g_between[j] / lam**2)
            )
            info[i, j] = info[j, i] = (
                trace - 2.0 * np.sum(phi * Q[i, j]) + np.sum((phi @ P[i]) * (P[j] @ phi))
            )
    eig = np.linalg.eigvalsh(info)
    W = 2.0 * (np.linalg.inv(info) if np.min(np.abs(eig)) > KR_INFORMATION_CONDITION else np.linalg.pinv(info))
    for i in range(2):
        for j in range(2):
            a, b = min(i, j), max(i, j)
            U += W[i, j] * (Q[a, b] - P[i] @ phi @ P[j])
    phi_adjusted = phi + 2.0 * phi @ U @ phi
    return KenwardRogerState(phi, 0.5 * (phi_adjusted + phi_adjusted.T), (P[0], P[1]), W, fit.parametrization.T)


@dataclass(frozen=True)
class KenwardRogerTerms:
    """Denominator df and F scaling of a q-row hypothesis (pbkrtest's ``A1``, ``A2``...)."""

    den_df: float
    f_scaling: float
    q: int


def kenward_roger_terms(state: KenwardRogerState, L_user: np.ndarray) -> KenwardRogerTerms:
    """KR df of the hypothesis ``L_user beta_user`` (any number of rows)."""
    L = np.atleast_2d(np.asarray(L_user, dtype=np.float64)) @ state.T
    phi = state.phi
    theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
    u = [theta @ phi @ P @ phi for P in state.P]
    A1 = A2 = 0.0
    for i in range(len(u)):
        for j in range(len(u)):
            A1 += state.W[i, j] * np.trace(u[i]) * np.trace(u[j])
            A2 += state.W[i, j] * np.sum(u[i] * u[j].T)
    q = int(np.linalg.matrix_rank(L))
    B = (A1 + 6.0 * A2) / (2.0 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    denom = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2 - g) / denom
    v0 = 1.0 + c1 * B
    v0 = 0.0 if abs(v0) < KR_V0_ZERO else v0
    v1, v2 = 1.0 - c2 * B, 1.0 - c3 * B
    top = 1.0 - A2 / q
    # 0/0 happens exactly for between-group effects at the boundary (pbkrtest takes 1).
    ratio = 1.0 if abs(top) < KR_ZERO_OVER_ZERO and abs(v1) < KR_ZERO_OVER_ZERO else top / v1
    rho = ratio**2 * v0 / v2 / q
    den_df = 4.0 + (q + 2) / (q * rho - 1.0)
    scaling = 1.0 if abs(den_df - 2.0) < KR_DF_NEAR_TWO else den_df * (1.0 - A2 / q) / (den_df - 2.0)
    return KenwardRogerTerms(float(den_df), float(scaling), q)


def kenward_roger_ftest(fit, state: KenwardRogerState, L: np.ndarray, rhs: np.ndarray) -> FTest:
    """F-test of ``L beta = rhs`` with the adjusted covariance and KR df (pbkrtest)."""
    from scipy import stats as sps

    terms = kenward_roger_terms(state, L)
    diff = L @ fit.fixef.to_numpy() - rhs
    VA = L @ state.vcov_adjusted @ L.T
    f_unscaled = float(diff @ np.linalg.solve(VA, diff)) / terms.q
    f_value = terms.f_scaling * f_unscaled
    p_value = float(sps.f.sf(f_value, terms.q, terms.den_df))
    mean_sq = f_unscaled * fit.sigma2
    return FTest(f_value, terms.q, terms.den_df, p_value, mean_sq * terms.q, mean_sq, "kenward-roger")


