"""Compiled loop of the direct criterion for small designs: the optimizer's criterion up to
``COMPILED_CRITERION_MAX_Q`` (:mod:`reml_engine.core.optimizer`) and
:func:`reml_engine.core.criterion.criterion_values`.

For a few fixed effects one evaluation is a few hundred operations, and numpy's batched
calls (a dozen per evaluation, a few microseconds each) cost more than the arithmetic:
lme4's path evaluates one tau at a time. This kernel does
the same steps as the numpy path, per tau, in one compiled loop: ``M(tau) = within +
sum_u between[u] / (1 + n_u tau)``, its Cholesky factor, ``log|X'H^-1X|``, ``pwrss``,
``beta``, the derivative with its trace term. Plain arrays in and out, no exceptions: a
matrix that is not numerically positive definite gives ``ok = False``.

:func:`brent_root` refines a root of the derivative on this form in one compiled loop:
the optimizer's refinements (:func:`reml_engine.core.optimizer.find_optima`, which
evaluates, tests and reports the root by its own criterion) and the batched scan of many
responses (:mod:`reml_engine.core.many_scan_kernels`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def direct_criterion(taus, within, between, sizes, groups_per_size, dof, REML, with_derivative):
    """The direct form at each tau (see :mod:`reml_engine.core.criterion`). Without
    ``with_derivative`` only ``logdet_V``, ``logdet_XtVinvX``, ``pwrss`` and the criterion
    are computed (the same numbers: they do not depend on the rest).

    Returns
    -------
    logdet_V, logdet_XtVinvX, pwrss, beta (K, p), criterion, derivative,
    derivative_scale, ok (bool): as :func:`reml_engine.core.criterion.evaluate`, with
    the values where ``ok`` is False left undefined for the caller to flag.
    """
    K = taus.shape[0]
    q = within.shape[0]
    p = q - 1
    logdet_V = np.zeros(K)
    logdet_X = np.zeros(K)
    pwrss = np.zeros(K)
    beta = np.zeros((K, p))
    crit = np.zeros(K)
    deriv = np.zeros(K)
    dscale = np.zeros(K)
    ok = np.ones(K, dtype=np.bool_)
    work = direct_workspace(q, sizes.shape[0])
    for k in range(K):
        good, ld_V, ld_X, rss, value, derivative, scale = direct_point(
            taus[k], within, between, sizes, groups_per_size, dof, REML, with_derivative, work, beta[k])
        if not good:
            ok[k] = False
            continue
        logdet_V[k] = ld_V
        logdet_X[k] = ld_X
        pwrss[k] = rss
        crit[k] = value
        if with_derivative:
            deriv[k] = derivative
            dscale[k] = scale
    return logdet_V, logdet_X, pwrss, beta, crit, deriv, dscale, ok


@njit(cache=True)
def direct_workspace(q, U):
    """The scratch matrices of :func:`direct_point` for q = p + 1 columns and U sizes."""
    return (np.empty((q, q)), np.empty((q, q)), np.zeros((q, q)), np.zeros((q - 1, q - 1)), np.zeros((q - 1, q - 1)),
            np.empty(U), np.empty(U))


@njit(cache=True)
def direct_point(tau, within, between, sizes, groups_per_size, dof, REML, with_derivative, work, beta):
    """The direct form at one tau, in the scratch ``work`` (:func:`direct_workspace`),
    ``beta`` (p,) written in place: (ok, logdet_V, logdet_XtVinvX, pwrss, criterion,
    derivative, derivative scale); the derivative and its scale (and beta) only with
    ``with_derivative``. The arithmetic of every call of :func:`direct_criterion`."""
    M, D, L, Linv, LD, weights, d_weights = work
    q = within.shape[0]
    p = q - 1
    U = sizes.shape[0]
    log_2pi = np.log(2.0 * np.pi)
    ld_V = 0.0
    d_ld_V = 0.0
    for u in range(U):
        denom = 1.0 + tau * sizes[u]
        weights[u] = 1.0 / denom
        d_weights[u] = sizes[u] / (denom * denom)
        ld_V += groups_per_size[u] * np.log(denom)
        d_ld_V += groups_per_size[u] * sizes[u] / denom
    for i in range(q):
        for j in range(i + 1):
            m = within[i, j]
            d = 0.0
            for u in range(U):
                m += weights[u] * between[u, i, j]
                d += d_weights[u] * between[u, i, j]
            M[i, j] = m
            D[i, j] = d
            D[j, i] = d
    # Cholesky (lower), as LAPACK fails: a pivot that is not positive.
    for j in range(q):
        s = M[j, j]
        for m in range(j):
            s -= L[j, m] * L[j, m]
        if not s > 0.0:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        L[j, j] = np.sqrt(s)
        for i in range(j + 1, q):
            s = M[i, j]
            for m in range(j):
                s -= L[i, m] * L[j, m]
            L[i, j] = s / L[j, j]
    ld_X = 0.0
    for i in range(p):
        ld_X += 2.0 * np.log(L[i, i])
    rss = L[p, p] * L[p, p]
    sigma2 = rss / dof
    fit = dof * (1.0 + log_2pi + np.log(sigma2))
    value = ld_V + fit + (ld_X if REML else 0.0)
    if not with_derivative:
        return True, ld_V, ld_X, rss, value, 0.0, 0.0
    # Linv = Lxx^{-1} by forward substitution.
    for j in range(p):
        Linv[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, p):
            s = 0.0
            for m in range(j, i):
                s += L[i, m] * Linv[m, j]
            Linv[i, j] = -s / L[i, i]
        for i in range(j):
            Linv[i, j] = 0.0
    # beta_i = sum_j Linv[j, i] L[p, j]
    for i in range(p):
        s = 0.0
        for j in range(i, p):
            s += Linv[j, i] * L[p, j]
        beta[i] = s
    # d pwrss = -v' D v with v = (-beta, 1).
    vDv = D[p, p]
    for i in range(p):
        vDv -= 2.0 * beta[i] * D[i, p]
        for j in range(p):
            vDv += beta[i] * D[i, j] * beta[j]
    d_fit = dof * (-vDv) / rss
    derivative = d_ld_V + d_fit
    scale = abs(d_ld_V) + abs(d_fit)
    if REML:
        if p > 0:
            # tr(A^{-1} D_xx) = sum of (Linv D_xx) * Linv, elementwise.
            trace = 0.0
            for i in range(p):
                for j in range(p):
                    s = 0.0
                    for m in range(i + 1):
                        s += Linv[i, m] * D[m, j]
                    LD[i, j] = s
            for i in range(p):
                for j in range(i + 1):
                    trace += LD[i, j] * Linv[i, j]
            derivative -= trace
            scale += abs(trace)
    return True, ld_V, ld_X, rss, value, derivative, scale


@njit(cache=True)
def brent_root(a, b, fa, fb, within, between, sizes, groups_per_size, dof, REML, rtol, max_iter, work, beta_buf):
    """Root of the direct derivative in [a, b] (``fa < 0 < fb``) by Brent's method
    (inverse quadratic interpolation, secant or bisection, whichever is safe), to
    ``|step| <= rtol |root|``, in the scratch ``work`` (:func:`direct_workspace`) and
    ``beta_buf`` (p,). Returns (root, evaluations, ok); ok is False when the derivative
    is not finite inside or the iterations run out."""
    c, fc = a, fa
    d = e = b - a
    evaluations = 0
    for _ in range(max_iter):
        if (fb > 0.0) == (fc > 0.0):
            c, fc = a, fa
            d = e = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol = 2.0 * rtol * abs(b) + 1e-300
        half = 0.5 * (c - b)
        if abs(half) <= tol or fb == 0.0:
            return b, evaluations, True
        if abs(e) >= tol and abs(fa) > abs(fb):
            s = fb / fa
            if a == c:
                pp = 2.0 * half * s
                qq = 1.0 - s
            else:
                qa = fa / fc
                r = fb / fc
                pp = s * (2.0 * half * qa * (qa - r) - (b - a) * (r - 1.0))
                qq = (qa - 1.0) * (r - 1.0) * (s - 1.0)
            if pp > 0.0:
                qq = -qq
            else:
                pp = -pp
            if 2.0 * pp < min(3.0 * half * qq - abs(tol * qq), abs(e * qq)):
                e = d
                d = pp / qq
            else:
                d = half
                e = d
        else:
            d = half
            e = d
        a, fa = b, fb
        if abs(d) > tol:
            b = b + d
        else:
            b = b + (tol if half > 0.0 else -tol)
        ok, _, _, _, _, fb, _ = direct_point(b, within, between, sizes, groups_per_size, dof, REML, True, work,
                                             beta_buf)
        evaluations += 1
        if not (ok and np.isfinite(fb)):
            return b, evaluations, False
    return b, evaluations, False
