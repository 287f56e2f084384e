"""The spectral form of the profiled criterion: each evaluation in ``O(r)`` after one
eigendecomposition, used by the optimizer's scan.

The REML criterion depends on the data through the error contrasts ``K' y``, with ``K``
an orthonormal basis of the complement of the columns of X (``K' K = I``,
``K K' = P_0 = I - X (X'X)^{-1} X'``). Their covariance is
``sigma2 (I + tau K' Z Z' K)`` (Z the group indicators), whose eigenvalues are
``1 + tau xi_s`` with ``xi_s`` the eigenvalues of the G x G matrix ``Z' P_0 Z``
(the form Crainiceanu and Ruppert use for the exact restricted likelihood ratio test).
With ``V`` its eigenvectors and ``h = V' Z' P_0 y``:

* ``log|H| + log|X' H^{-1} X| = log|X'X| + sum_s log(1 + tau xi_s)``;
* ``pwrss(tau) = y' P_0 y - sum_s tau h_s^2 / (1 + tau xi_s)``;
* ``d pwrss / d tau = -sum_s h_s^2 / (1 + tau xi_s)^2``.

So after one eigendecomposition the criterion, its parts and its derivative cost
``O(G)`` per tau, whatever p; the ML deviance reads the same ``pwrss`` and
``log|H| = sum_u G_u log(1 + n_u tau)``.

From pooled statistics
----------------------
The groups of one size ``n_u`` enter only through ``between[u] = sum_g s_g s_g' / n_u``
(``s_g`` a group's column sums). ``Z' P_0 Z = diag(n_g) - S_x (X'X)^{-1} S_x'`` restricted
to those groups is unchanged by an orthogonal rotation of the groups among themselves
(``diag(n_g) = n_u I`` there), and such a rotation turns their rows ``S_u`` into
``r_u = rank(between[u]) <= min(G_u, q)`` rows ``R_u`` with ``R_u' R_u = n_u between[u]``,
followed by zero rows. A zero row is a group with no column sums: eigenvalue ``n_u``
exactly, ``h = 0``. So the form needs an ``r x r`` eigendecomposition with
``r = sum_u min(G_u, q)`` (at most ``min(G, U q)``): 11 x 11 for a balanced design with
p = 10, whatever G.

What it is used for
-------------------
The optimizer's scan (:func:`reml_engine.core.optimizer.find_optima`) needs the sign of
the derivative at ~1,400 points. It takes them from this form and re-evaluates with the
direct form (:func:`reml_engine.core.criterion.evaluate`) every point where the sign or
a comparison could depend on rounding (see the optimizer). Everything reported (optima,
their criterion, the fixed effects) comes from the direct form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .blas import solve_lower
from .criterion import compiled_criterion
from .statistics import PooledStats

LOG_2PI = float(np.log(2.0 * np.pi))

#: The spectral form costs one ``r x r`` eigendecomposition (about ``10 r^3`` operations),
#: the direct scan about ``U q^2 + 2 q^3`` per point. The form is used when its set-up
#: costs at most this share of the direct scan's work.
SPECTRAL_SETUP_SHARE = 1.0
#: When the optimizer's criterion is the compiled loop
#: (:data:`reml_engine.core.criterion.COMPILED_CRITERION_MAX_Q`), whose direct scan runs
#: several taus per vector instruction (about 0.12 ns per operation), the spectral scan
#: is weighed with its fixed cost (its set-up in Python, the bounds, the points it
#: evaluates again directly: about 0.4 ms) in those operations, and its set-up's
#: operations count this many times one of the direct scan's. Measured: at p = 2 the
#: direct scan takes 0.15 to 0.5 ms, the spectral one 0.4 to 2.5 ms; at p = 10 with 82
#: group sizes (r = 100) 2.4 against 3.0 ms; at p = 20 with one size 2.1 against 0.7 ms.
SPECTRAL_FIXED_OPERATIONS = 3.5e6
SPECTRAL_COMPILED_OPERATION_COST = 2.0
#: The largest r for which the form is built (memory ``8 r^2`` bytes, 128 MB here).
SPECTRAL_MAX_RANK = 4000


@dataclass(frozen=True)
class SpectralForm:
    """The criterion's ingredients in the eigenbasis of ``Z' P_0 Z``.

    Attributes
    ----------
    xi : ndarray (r,)
        Eigenvalues of ``Z' P_0 Z`` on the rows that carry column sums (clipped at 0).
    h2 : ndarray (r,)
        Squared projections ``(V' Z' P_0 y)^2``.
    phantom_sizes, phantom_counts : ndarray (U,)
        Group sizes and the number of eigenvalues ``n_u`` with ``h = 0`` (groups of that
        size beyond the rank of their between cross-product).
    sizes, groups_per_size : ndarray (U,)
        As in :class:`~reml_engine.core.statistics.PooledStats` (the ML log-determinant).
    rss0 : float
        ``y' P_0 y``, the residual sum of squares of ordinary least squares.
    logdet_XtX : float
        ``log|X'X|``.
    nobs, p : int
    """

    xi: np.ndarray
    h2: np.ndarray
    phantom_sizes: np.ndarray
    phantom_counts: np.ndarray
    sizes: np.ndarray
    groups_per_size: np.ndarray
    rss0: float
    logdet_XtX: float
    nobs: int
    p: int

    @property
    def rank(self) -> int:
        return len(self.xi)


def spectral_rank(stats: PooledStats) -> int:
    """``r = sum_u min(G_u, q)``: the order of the form's eigendecomposition."""
    return int(np.minimum(stats.groups_per_size, stats.q).sum())


def spectral_pays(stats: PooledStats, n_points: int) -> bool:
    """Whether the form's set-up costs less than evaluating ``n_points`` directly
    (``SPECTRAL_SETUP_SHARE``, ``SPECTRAL_MAX_RANK``; ``SPECTRAL_FIXED_OPERATIONS`` and
    ``SPECTRAL_COMPILED_OPERATION_COST`` when the direct form is the compiled loop)."""
    r, q, U = spectral_rank(stats), stats.q, len(stats.sizes)
    if r > SPECTRAL_MAX_RANK:
        return False
    setup = 10.0 * r**3
    if compiled_criterion(stats):
        setup = SPECTRAL_COMPILED_OPERATION_COST * setup + SPECTRAL_FIXED_OPERATIONS
    return setup <= SPECTRAL_SETUP_SHARE * n_points * (U * q * q + 2.0 * q**3)


def spectral_form(stats: PooledStats) -> SpectralForm | None:
    """The spectral form of pooled statistics, or None when ``X'X`` (with y) is not
    numerically positive definite (the direct form then decides)."""
    p, q = stats.p, stats.q
    total = stats.within + stats.between.sum(axis=0)
    try:
        L = np.linalg.cholesky(total)
    except np.linalg.LinAlgError:
        return None
    diag = np.diagonal(L)
    if not (np.all(np.isfinite(L)) and np.all(diag > 0)):
        return None
    # Rows F_u with F_u' F_u = n_u L^{-1} between[u] L^{-T}: the top min(G_u, q)
    # eigenpairs (the rest are zero up to rounding: the rank of between[u] is at most
    # G_u). In the basis of L every column has the scale of 1 (L^{-1} total L^{-T} = I),
    # so one column measured in units 1e8 times larger than another does not drown the
    # others' digits in the eigendecomposition; triangular solves (not a pivoting
    # solver) keep that basis exact to rounding whatever the columns' scales.
    U = len(stats.sizes)
    # [B_1 ... B_U] side by side -> [L^-1 B_1 ...] -> [(L^-1 B_1)' ...] -> [L^-1 B_1 L^-T ...].
    half = solve_lower(L, stats.between.transpose(1, 0, 2).reshape(q, U * q), check_finite=True)
    half = half.reshape(q, U, q).transpose(2, 1, 0).reshape(q, U * q)
    scaled = solve_lower(L, half, check_finite=True).reshape(q, U, q).transpose(1, 0, 2)
    values, vectors = np.linalg.eigh(0.5 * (scaled + scaled.transpose(0, 2, 1)))
    keep = np.minimum(stats.groups_per_size, q).astype(np.int64)
    # The top keep[u] eigenpairs of each size, sizes in turn and eigenvalues ascending
    # within one (selected for all sizes at once: a loop over 29 sizes cost a third of
    # the form).
    kept = np.arange(q)[None, :] >= (q - keep)[:, None]
    lam = np.clip(values[kept], 0.0, None)
    n_rows = np.broadcast_to(np.asarray(stats.sizes, dtype=np.float64)[:, None], (U, q))[kept]
    # F = R L^{-T} for rows R of the groups' sums: its x-part gives
    # S_x (X'X)^{-1} S_x' = F_x F_x', and its last column times L[p, p] is Z' P_0 y.
    F = np.sqrt(n_rows * lam)[:, None] * vectors.transpose(0, 2, 1)[kept]
    Fx = F[:, :p]
    C = np.diag(n_rows) - Fx @ Fx.T
    xi, V = np.linalg.eigh(0.5 * (C + C.T))
    h = V.T @ (F[:, p] * diag[p])
    return SpectralForm(
        xi=np.clip(xi, 0.0, None),
        h2=h * h,
        phantom_sizes=np.asarray(stats.sizes, dtype=np.float64),
        phantom_counts=(stats.groups_per_size - keep).astype(np.float64),
        sizes=np.asarray(stats.sizes, dtype=np.float64),
        groups_per_size=np.asarray(stats.groups_per_size, dtype=np.float64),
        rss0=float(diag[p] ** 2),
        logdet_XtX=float(2.0 * np.log(diag[:p]).sum()),
        nobs=int(stats.nobs),
        p=int(p),
    )


def spectral_evaluate(taus, form: SpectralForm, REML: bool = True, with_criterion: bool = True
                      ) -> dict[str, np.ndarray]:
    """Criterion and derivative at many tau, from the spectral form.

    The derivative is ``logdet_slope - dof * curvature_sum / pwrss``, each of
    ``logdet_slope = sum xi_s / (1 + tau xi_s)`` (with the groups beyond the rank; under
    ML ``sum_u G_u n_u / (1 + n_u tau)``), ``curvature_sum = sum h_s^2 / (1 + tau xi_s)^2``
    and ``pwrss`` non-negative and non-increasing in tau: so on an interval ``[a, b]``
    the derivative lies between ``logdet_slope(b) - dof curvature_sum(a) / pwrss(b)`` and
    ``logdet_slope(a) - dof curvature_sum(b) / pwrss(a)`` (:func:`derivative_bounds`).

    Returns
    -------
    dict of arrays: ``tau``, ``criterion``, ``derivative``, ``derivative_scale``,
    ``logdet_slope``, ``curvature_sum``, ``pwrss``. ``derivative_scale`` is the scale of
    :func:`reml_engine.core.criterion.evaluate`'s: the sum of the absolute values of the
    terms the direct form adds (``d logdet_V``, ``d logdet_XtVinvX = logdet_slope -
    d logdet_V`` under REML, the fit term), which bounds its rounding error; next to the
    positive-definite limit it is much larger than the spectral terms. A tau where
    ``pwrss`` or a factor ``1 + tau xi`` is not positive gives NaN.

    Without ``with_criterion`` the criterion (its ``r + U`` logarithms per tau, most of
    the loop's cost) is left NaN: the scan decides on slopes, and the values it reports
    come from the direct form.
    """
    taus = np.ascontiguousarray(np.atleast_1d(np.asarray(taus, dtype=np.float64)))
    dof = form.nobs - form.p if REML else form.nobs
    crit, logdet_slope, curvature_sum, pwrss, logdet_V_slope = _spectral_kernel(
        taus, form.xi, form.h2, form.phantom_sizes, form.phantom_counts, form.sizes, form.groups_per_size,
        form.rss0, form.logdet_XtX, float(dof), bool(REML), bool(with_criterion),
    )
    fit_slope = dof * curvature_sum / pwrss
    scale = np.abs(logdet_V_slope) + np.abs(fit_slope)
    if REML:
        scale = scale + np.abs(logdet_slope - logdet_V_slope)
    return {"tau": taus, "criterion": crit, "derivative": logdet_slope - fit_slope,
            "derivative_scale": scale, "logdet_slope": logdet_slope,
            "curvature_sum": curvature_sum, "pwrss": pwrss}


def derivative_bounds(out: dict[str, np.ndarray], dof: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper bounds of the derivative on each interval between consecutive
    taus of a :func:`spectral_evaluate` output (sorted taus), and the larger
    ``derivative_scale`` of its two ends: ``(lower, upper, scale)``, each of length
    ``K - 1``."""
    slope, curv, pwrss = out["logdet_slope"], out["curvature_sum"], out["pwrss"]
    lower = slope[1:] - dof * curv[:-1] / pwrss[1:]
    upper = slope[:-1] - dof * curv[1:] / pwrss[:-1]
    scale = np.maximum(out["derivative_scale"][:-1], out["derivative_scale"][1:])
    return lower, upper, scale


@njit(cache=True)
def _spectral_kernel(taus, xi, h2, phantom_sizes, phantom_counts, sizes, groups_per_size, rss0, logdet_XtX,
                     dof, REML, with_criterion):
    """The loop of :func:`spectral_evaluate`: ``O(r + U)`` per tau, no exceptions. The
    criterion (NaN without ``with_criterion``) and the slopes take the same arithmetic
    either way."""
    K = taus.shape[0]
    crit = np.full(K, np.nan)
    logdet_slope = np.full(K, np.nan)
    curvature_sum = np.full(K, np.nan)
    pwrss_out = np.full(K, np.nan)
    logdet_V_slope = np.full(K, np.nan)
    log_2pi = np.log(2.0 * np.pi)
    for k in range(K):
        tau = taus[k]
        bad = False
        pwrss = rss0
        d_pwrss = 0.0
        logdet = 0.0
        d_logdet = 0.0
        d_logdet_V = 0.0
        for s in range(xi.shape[0]):
            f = 1.0 + tau * xi[s]
            if not f > 0.0:
                bad = True
                break
            pwrss -= tau * h2[s] / f
            d_pwrss -= h2[s] / (f * f)
            if REML:
                if with_criterion:
                    logdet += np.log(f)
                d_logdet += xi[s] / f
        if bad:
            continue
        for u in range(sizes.shape[0]):
            f = 1.0 + tau * sizes[u]
            if not f > 0.0:
                bad = True
                break
            count = phantom_counts[u] if REML else groups_per_size[u]
            if with_criterion:
                logdet += count * np.log(f)
            d_logdet += count * sizes[u] / f
            d_logdet_V += groups_per_size[u] * sizes[u] / f
        if bad or not pwrss > 0.0:
            continue
        if with_criterion:
            fit = dof * (1.0 + log_2pi + np.log(pwrss / dof))
            crit[k] = logdet + fit + (logdet_XtX if REML else 0.0)
        logdet_slope[k] = d_logdet
        curvature_sum[k] = -d_pwrss
        pwrss_out[k] = pwrss
        logdet_V_slope[k] = d_logdet_V
    return crit, logdet_slope, curvature_sum, pwrss_out, logdet_V_slope
