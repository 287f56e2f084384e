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

# Every kernel divides as numpy does (error_model="numpy"): a division by zero gives an
# infinity or NaN, flagged by the callers, not an exception; and no zero test per division
# stands in the way of vector instructions.


@njit(cache=True, error_model="numpy")
def direct_criterion(taus, within, between, sizes, groups_per_size, dof, REML, with_derivative):
    """The direct form at each tau (see :mod:`reml_engine.core.criterion`). Without
    ``with_derivative`` only ``logdet_V``, ``logdet_XtVinvX``, ``pwrss`` and the criterion
    are computed (the same numbers: they do not depend on the rest). The slopes without
    the criterion are :func:`direct_slopes`'.

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
    work = direct_workspace(q)
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


@njit(cache=True, error_model="numpy")
def direct_workspace(q):
    """The scratch matrices of :func:`direct_point` for q = p + 1 columns."""
    return np.empty((q, q)), np.empty((q, q)), np.zeros((q, q)), np.zeros((q - 1, q - 1)), np.zeros((q - 1, q - 1))


@njit(cache=True, error_model="numpy")
def direct_point(tau, within, between, sizes, groups_per_size, dof, REML, with_derivative, work, beta,
                 with_criterion=True):
    """The direct form at one tau, in the scratch ``work`` (:func:`direct_workspace`),
    ``beta`` (p,) written in place: (ok, logdet_V, logdet_XtVinvX, pwrss, criterion,
    derivative, derivative scale); the derivative and its scale (and beta) only with
    ``with_derivative``; the log-determinants and the criterion (NaN otherwise) only with
    ``with_criterion``. The arithmetic of every call of :func:`direct_criterion`."""
    M, D, L, Linv, LD = work
    q = within.shape[0]
    p = q - 1
    U = sizes.shape[0]
    log_2pi = np.log(2.0 * np.pi)
    ld_V = 0.0
    d_ld_V = 0.0
    for i in range(q):
        for j in range(i + 1):
            M[i, j] = within[i, j]
            D[i, j] = 0.0
    for u in range(U):
        # One division per size: w = 1 / (1 + n tau), and n w^2 = n / (1 + n tau)^2.
        denom = 1.0 + tau * sizes[u]
        w = 1.0 / denom
        nw = sizes[u] * w
        dw = nw * w
        if with_criterion:
            ld_V += groups_per_size[u] * np.log(denom)
        d_ld_V += groups_per_size[u] * nw
        # Size by size, each row's entries in turn (contiguous): every entry still sums
        # within + w_1 B_1 + w_2 B_2 + ... in the order of the sizes.
        for i in range(q):
            for j in range(i + 1):
                b = between[u, i, j]
                M[i, j] += w * b
                D[i, j] += dw * b
    for i in range(q):
        for j in range(i):
            D[j, i] = D[i, j]
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
    rss = L[p, p] * L[p, p]
    if with_criterion:
        ld_X = 0.0
        for i in range(p):
            ld_X += 2.0 * np.log(L[i, i])
        sigma2 = rss / dof
        fit = dof * (1.0 + log_2pi + np.log(sigma2))
        value = ld_V + fit + (ld_X if REML else 0.0)
    else:
        ld_V = ld_X = value = np.nan
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


@njit(cache=True, error_model="numpy")
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
                                             beta_buf, False)
        evaluations += 1
        if not (ok and np.isfinite(fb)):
            return b, evaluations, False
    return b, evaluations, False


#: Taus evaluated side by side by :func:`direct_slopes` (the lanes of its loops).
SLOPE_LANES = 64


@njit(cache=True, error_model="numpy")
def direct_slopes(taus, within, between, sizes, groups_per_size, dof, REML, lanes=SLOPE_LANES):
    """:func:`direct_criterion`'s outputs without the criterion (:func:`direct_point`
    with ``with_criterion=False``), the
    taus taken ``lanes`` at a time with the tau innermost in every loop, so that the
    compiler issues one vector instruction for several taus (``lanes`` is an argument, not
    a constant: a constant count has the loops unrolled into scalar code). Each tau goes through
    the operations of :func:`direct_point`, in its order: the same numbers, to the last
    bit (IEEE arithmetic is exact per lane; tests/core/test_criterion_kernels.py checks).

    Returns
    -------
    pwrss, beta (K, p), derivative, derivative_scale, ok (bool)
    """
    K = taus.shape[0]
    q = within.shape[0]
    p = q - 1
    U = sizes.shape[0]
    B = lanes
    pwrss = np.zeros(K)
    beta_out = np.zeros((K, p))
    deriv = np.zeros(K)
    dscale = np.zeros(K)
    ok = np.ones(K, dtype=np.bool_)
    M = np.empty((q, q, B))
    D = np.empty((q, q, B))
    L = np.zeros((q, q, B))
    Linv = np.zeros((max(p, 1), max(p, 1), B))
    beta = np.zeros((max(p, 1), B))
    t = np.empty(B)
    w = np.empty((U, B))
    dw = np.empty((U, B))
    m_acc = np.empty(B)
    d_acc = np.empty(B)
    d_ld_V = np.empty(B)
    s = np.empty(B)
    vDv = np.empty(B)
    for start in range(0, K, B):
        n = min(B, K - start)
        for k in range(B):
            # Idle lanes (past the last tau) repeat the first one: finite arithmetic.
            t[k] = taus[start + k] if k < n else taus[start]
            d_ld_V[k] = 0.0
        for u in range(U):
            n_u = sizes[u]
            g_u = groups_per_size[u]
            for k in range(B):
                denom = 1.0 + t[k] * n_u
                wk = 1.0 / denom
                nw = n_u * wk
                w[u, k] = wk
                dw[u, k] = nw * wk
                d_ld_V[k] += g_u * nw
        # Entry by entry, the sizes in turn (within + w_1 B_1 + w_2 B_2 + ..., the order of
        # direct_point), into running sums that stay in cache across the sizes.
        for i in range(q):
            for j in range(i + 1):
                for k in range(B):
                    m_acc[k] = within[i, j]
                    d_acc[k] = 0.0
                for u in range(U):
                    b = between[u, i, j]
                    for k in range(B):
                        m_acc[k] += w[u, k] * b
                        d_acc[k] += dw[u, k] * b
                for k in range(B):
                    M[i, j, k] = m_acc[k]
                    D[i, j, k] = d_acc[k]
        for i in range(q):
            for j in range(i):
                for k in range(B):
                    D[j, i, k] = D[i, j, k]
        # Cholesky (lower); a lane whose pivot is not positive is flagged (its numbers
        # run on as NaN and are not read).
        for j in range(q):
            for k in range(B):
                s[k] = M[j, j, k]
            for m in range(j):
                for k in range(B):
                    s[k] -= L[j, m, k] * L[j, m, k]
            for k in range(B):
                if not s[k] > 0.0:
                    if k < n:
                        ok[start + k] = False
                    s[k] = np.nan
                L[j, j, k] = np.sqrt(s[k])
            for i in range(j + 1, q):
                for k in range(B):
                    s[k] = M[i, j, k]
                for m in range(j):
                    for k in range(B):
                        s[k] -= L[i, m, k] * L[j, m, k]
                for k in range(B):
                    L[i, j, k] = s[k] / L[j, j, k]
        for j in range(p):
            for k in range(B):
                Linv[j, j, k] = 1.0 / L[j, j, k]
            for i in range(j + 1, p):
                for k in range(B):
                    s[k] = 0.0
                for m in range(j, i):
                    for k in range(B):
                        s[k] += L[i, m, k] * Linv[m, j, k]
                for k in range(B):
                    Linv[i, j, k] = -s[k] / L[i, i, k]
        for i in range(p):
            for k in range(B):
                s[k] = 0.0
            for j in range(i, p):
                for k in range(B):
                    s[k] += Linv[j, i, k] * L[p, j, k]
            for k in range(B):
                beta[i, k] = s[k]
        for k in range(B):
            vDv[k] = D[p, p, k]
        for i in range(p):
            for k in range(B):
                vDv[k] -= 2.0 * beta[i, k] * D[i, p, k]
            for j in range(p):
                for k in range(B):
                    vDv[k] += beta[i, k] * D[i, j, k] * beta[j, k]
        for k in range(n):
            rss = L[p, p, k] * L[p, p, k]
            d_fit = dof * (-vDv[k]) / rss
            pwrss[start + k] = rss
            deriv[start + k] = d_ld_V[k] + d_fit
            dscale[start + k] = abs(d_ld_V[k]) + abs(d_fit)
            for i in range(p):
                beta_out[start + k, i] = beta[i, k]
        if REML and p > 0:
            # tr(A^{-1} D_xx): the sum over i, j <= i of (Linv D_xx)[i, j] Linv[i, j], in
            # direct_point's order (the trace accumulates in vDv, free now).
            for k in range(B):
                vDv[k] = 0.0
            for i in range(p):
                for j in range(i + 1):
                    for k in range(B):
                        s[k] = 0.0
                    for m in range(i + 1):
                        for k in range(B):
                            s[k] += Linv[i, m, k] * D[m, j, k]
                    for k in range(B):
                        vDv[k] += s[k] * Linv[i, j, k]
            for k in range(n):
                deriv[start + k] -= vDv[k]
                dscale[start + k] += abs(vDv[k])
    return pwrss, beta_out, deriv, dscale, ok


@njit(cache=True, error_model="numpy")
def bounded_minimum(lo, hi, sign, xatol, max_iter, within, between, sizes, groups_per_size, dof, REML, work,
                    beta_buf):
    """The minimum of ``sign`` times the direct derivative on ``[lo, hi]``, by Brent's
    bounded minimization (golden sections, or a parabola through the three best points
    when it falls well inside), to ``sqrt(eps) |x| + xatol / 3`` in x, as scipy's
    ``minimize_scalar(method="bounded")``; in the scratch ``work``
    (:func:`direct_workspace`) and ``beta_buf`` (p,). Returns (x, value, evaluations,
    ok); ok is False when the derivative is not finite at a point or the iterations run
    out."""
    golden = 0.5 * (3.0 - np.sqrt(5.0))
    sqrt_eps = np.sqrt(2.2e-16)
    a, b = lo, hi
    x = a + golden * (b - a)
    ok, _, _, _, _, fx, _ = direct_point(x, within, between, sizes, groups_per_size, dof, REML, True, work,
                                         beta_buf, False)
    evaluations = 1
    if not (ok and np.isfinite(fx)):
        return x, 0.0, evaluations, False
    fx *= sign
    v = w = x
    fv = fw = fx
    d = e = 0.0
    for _ in range(max_iter):
        middle = 0.5 * (a + b)
        tol = sqrt_eps * abs(x) + xatol / 3.0
        tol2 = 2.0 * tol
        if abs(x - middle) <= tol2 - 0.5 * (b - a):
            return x, fx, evaluations, True
        parabolic = False
        if abs(e) > tol:
            # The parabola through (v, fv), (w, fw), (x, fx): its vertex at x + num / den.
            r = (x - w) * (fx - fv)
            t = (x - v) * (fx - fw)
            num = (x - v) * t - (x - w) * r
            den = 2.0 * (t - r)
            if den > 0.0:
                num = -num
            else:
                den = -den
            previous = e
            e = d
            if abs(num) < abs(0.5 * den * previous) and num > den * (a - x) and num < den * (b - x):
                d = num / den
                u = x + d
                parabolic = True
                if (u - a) < tol2 or (b - u) < tol2:
                    d = tol if middle >= x else -tol
        if not parabolic:
            e = (b - x) if x < middle else (a - x)
            d = golden * e
        u = x + (d if abs(d) >= tol else (tol if d > 0.0 else -tol))
        ok, _, _, _, _, fu, _ = direct_point(u, within, between, sizes, groups_per_size, dof, REML, True, work,
                                             beta_buf, False)
        evaluations += 1
        if not (ok and np.isfinite(fu)):
            return u, 0.0, evaluations, False
        fu *= sign
        if fu <= fx:
            if u >= x:
                a = x
            else:
                b = x
            v, fv = w, fw
            w, fw = x, fx
            x, fx = u, fu
        else:
            if u < x:
                a = u
            else:
                b = u
            if fu <= fw or w == x:
                v, fv = w, fw
                w, fw = u, fu
            elif fu <= fv or v == x or v == w:
                v, fv = u, fu
    return x, fx, evaluations, False
