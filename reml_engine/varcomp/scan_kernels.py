"""Compiled exact scan of the criterion in one variance ratio (a reduction to one term).

The same scan as :func:`reml_engine.optimizer.find_optima` over ``t >= 0`` (see
:mod:`.scan`), in one call: the criterion and its derivative of the pooled single-term
form (:func:`reml_engine.criterion.evaluate`, with "groups" of size kappa_i, one each)
at every scan point, the brackets of sign changes, the search of every local extremum
of the sampled derivative towards zero (Brent's bounded minimization), Brent's root
finding in each bracket and the stationarity test of each root.

Plain arrays in and out, no exceptions: a status says when the caller must take the
general path instead (a non-finite value on the scan, a derivative still negative at its
top, a root finder out of iterations, or no minimum that passes the test).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)

#: Status of :func:`scan_minima`.
SCAN_OK = 0
SCAN_NOT_FINITE = 1       # a scan point where the criterion is not defined
SCAN_FALLING_AT_TOP = 2   # the derivative is negative at the top: extend the scan
SCAN_NOT_CONVERGED = 3    # a root finder or minimizer ran out of iterations
SCAN_NO_MINIMUM = 4       # no bracketed root passed the stationarity test, none at 0

#: Brent's root finder: most iterations (as scipy's brentq in find_optima).
BRENT_MAX_ITER = 200
#: Brent's bounded minimizer: most function evaluations (scipy's default maxiter).
BOUNDED_MAX_EVALUATIONS = 500
#: sqrt of the machine epsilon the bounded minimizer's tolerance is built on (scipy's
#: fminbound uses sqrt(2.2e-16)).
BOUNDED_SQRT_EPS = math.sqrt(2.2e-16)
#: Golden-section fraction of Brent's minimizer.
GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))


@njit(cache=True, nogil=True)
def pack_lower_stack(between, within):
    """The lower triangles of ``between`` (r, q, q) and ``within`` packed by rows
    (entry (a, b), b <= a, at a (a + 1) / 2 + b): the layout :func:`reduced_point` reads
    in one contiguous, vectorizable pass per size."""
    r = between.shape[0]
    q = within.shape[0]
    nq = q * (q + 1) // 2
    Bp = np.empty((r, nq))
    Wp = np.empty(nq)
    pos = 0
    for a in range(q):
        for b in range(a + 1):
            Wp[pos] = within[a, b]
            for i in range(r):
                Bp[i, pos] = between[i, a, b]
            pos += 1
    return Bp, Wp


@njit(cache=True, nogil=True)
def new_work(q):
    """The scratch arrays of :func:`reduced_point`: packed M and D (q (q + 1) / 2,),
    L (q, q), Lxx^-1 (p, p), v (q,)."""
    nq = q * (q + 1) // 2
    return (np.empty(nq), np.empty(nq), np.zeros((q, q)), np.zeros((max(q - 1, 0), max(q - 1, 0))),
            np.empty(q))


@njit(cache=True, nogil=True)
def reduced_point(t, sizes, Bp, Wp, nobs, REML, work, out, want_value):
    """Criterion, derivative and the derivative's scale at one t (into ``out[0:3]``;
    ``out[3]`` is 1.0 when the matrix is positive definite, else 0.0).

    The pooled single-term form of :func:`reml_engine.criterion.evaluate`:
    ``M = within + sum_i between_i / (1 + sizes_i t)``, its Cholesky factor L, and
    ``D = sum_i sizes_i between_i / (1 + sizes_i t)^2`` for the derivative, with the
    lower triangles packed (:func:`pack_lower_stack`). Without ``want_value`` the
    criterion (its ``sum log(1 + sizes t)``) is left out and ``out[0]`` is NaN.
    """
    Mp, Dp, L, Linv, v = work
    q = L.shape[0]
    p = q - 1
    nq = Mp.shape[0]
    r = sizes.shape[0]
    for c in range(nq):
        Mp[c] = Wp[c]
        Dp[c] = 0.0
    logdet_V = 0.0
    d_logdet_V = 0.0
    for i in range(r):
        denom = 1.0 + t * sizes[i]
        w = 1.0 / denom
        dw = sizes[i] * w * w
        if want_value:
            logdet_V += math.log(denom)
        d_logdet_V += sizes[i] * w
        for c in range(nq):
            Mp[c] += w * Bp[i, c]
            Dp[c] += dw * Bp[i, c]
    # Cholesky factor of M (lower), reading the packed rows.
    for j in range(q):
        s = Mp[j * (j + 1) // 2 + j]
        for c in range(j):
            s -= L[j, c] * L[j, c]
        if not s > 0.0:
            out[0] = np.nan
            out[1] = np.nan
            out[2] = np.nan
            out[3] = 0.0
            return
        L[j, j] = math.sqrt(s)
        for i in range(j + 1, q):
            s = Mp[i * (i + 1) // 2 + j]
            for c in range(j):
                s -= L[i, c] * L[j, c]
            L[i, j] = s / L[j, j]
    pwrss = L[p, p] * L[p, p]
    # Lxx^-1 (forward substitution, lower), then beta = Lxx^-T l with l = L[p, :p].
    for c in range(p):
        for i in range(c, p):
            s = 1.0 if i == c else 0.0
            for m in range(c, i):
                s -= L[i, m] * Linv[m, c]
            Linv[i, c] = s / L[i, i]
    for i in range(p):
        s = 0.0
        for j in range(i, p):
            s += Linv[j, i] * L[p, j]
        v[i] = -s
    v[p] = 1.0
    dof = nobs - p if REML else nobs
    if want_value:
        sigma2 = pwrss / dof
        criterion = logdet_V + dof * (1.0 + LOG_2PI + math.log(sigma2))
        if REML:
            for a in range(p):
                criterion += 2.0 * math.log(L[a, a])
        out[0] = criterion
    else:
        out[0] = np.nan
    # v' D v from the packed lower triangle.
    d_pwrss = 0.0
    for a in range(q):
        base = a * (a + 1) // 2
        for b in range(a):
            d_pwrss -= 2.0 * v[a] * Dp[base + b] * v[b]
        d_pwrss -= v[a] * Dp[base + a] * v[a]
    d_fit = dof * d_pwrss / pwrss
    derivative = d_logdet_V + d_fit
    scale = abs(d_logdet_V) + abs(d_fit)
    if REML and p > 0:
        # tr(Lxx^-1 D_xx Lxx^-T) = sum_ij (Lxx^-1 D)_ij (Lxx^-1)_ij, Lxx^-1 lower.
        trace = 0.0
        for i in range(p):
            for j in range(i + 1):
                s = 0.0
                for m in range(i + 1):
                    dm = Dp[m * (m + 1) // 2 + j] if j <= m else Dp[j * (j + 1) // 2 + m]
                    s += Linv[i, m] * dm
                trace += s * Linv[i, j]
        derivative -= trace
        scale += abs(trace)
    out[1] = derivative
    out[2] = scale
    out[3] = 1.0


@njit(cache=True, nogil=True)
def _derivative(t, sizes, between, within, nobs, REML, work, out):
    reduced_point(t, sizes, between, within, nobs, REML, work, out, False)
    return out[1]


@njit(cache=True, nogil=True)
def brent_root(a, b, rtol, sizes, between, within, nobs, REML, work, out):
    """Root of the derivative in [a, b] (opposite signs at the ends) by Brent's method:
    inverse quadratic or secant steps kept inside the bracket, bisection otherwise, to a
    relative width ``rtol`` (absolute tolerance ~0, as find_optima asks of brentq).
    Returns (root, converged)."""
    xtol = 1e-300
    x_prev = a
    x_cur = b
    f_prev = _derivative(x_prev, sizes, between, within, nobs, REML, work, out)
    f_cur = _derivative(x_cur, sizes, between, within, nobs, REML, work, out)
    if f_prev == 0.0:
        return x_prev, True
    if f_cur == 0.0:
        return x_cur, True
    x_far = 0.0
    f_far = 0.0
    step_prev = 0.0
    step_cur = 0.0
    for _ in range(BRENT_MAX_ITER):
        if f_prev != 0.0 and f_cur != 0.0 and (f_prev < 0.0) != (f_cur < 0.0):
            # The bracket's far end is the previous point.
            x_far = x_prev
            f_far = f_prev
            step_prev = x_cur - x_prev
            step_cur = step_prev
        if abs(f_far) < abs(f_cur):
            # Keep the best point as the current one.
            x_prev = x_cur
            x_cur = x_far
            x_far = x_prev
            f_prev = f_cur
            f_cur = f_far
            f_far = f_prev
        delta = 0.5 * (xtol + rtol * abs(x_cur))
        half = 0.5 * (x_far - x_cur)
        if f_cur == 0.0 or abs(half) < delta:
            return x_cur, True
        if abs(step_prev) > delta and abs(f_cur) < abs(f_prev):
            if x_prev == x_far:
                trial = -f_cur * (x_cur - x_prev) / (f_cur - f_prev)
            else:
                slope_prev = (f_prev - f_cur) / (x_prev - x_cur)
                slope_far = (f_far - f_cur) / (x_far - x_cur)
                trial = -f_cur * (f_far * slope_far - f_prev * slope_prev) / (
                    slope_far * slope_prev * (f_far - f_prev))
            if 2.0 * abs(trial) < min(abs(step_prev), 3.0 * abs(half) - delta):
                step_prev = step_cur
                step_cur = trial
            else:
                step_prev = half
                step_cur = half
        else:
            step_prev = half
            step_cur = half
        x_prev = x_cur
        f_prev = f_cur
        if abs(step_cur) > delta:
            x_cur += step_cur
        else:
            x_cur += delta if half > 0 else -delta
        f_cur = _derivative(x_cur, sizes, between, within, nobs, REML, work, out)
    return x_cur, False


@njit(cache=True, nogil=True)
def brent_bounded_min(sign, lo, hi, xatol, sizes, between, within, nobs, REML, work, out):
    """Minimum of ``sign * derivative`` over [lo, hi] by Brent's bounded method (golden
    section and parabolic steps, as scipy's ``minimize_scalar(method="bounded")``).
    Returns (x, value, converged)."""
    a = lo
    b = hi
    x_second = a + GOLDEN * (b - a)     # second best
    x_best = x_second
    x_third = x_second                  # third best
    step = 0.0
    e = 0.0
    f_best = sign * _derivative(x_best, sizes, between, within, nobs, REML, work, out)
    f_second = f_best
    f_third = f_best
    f_new = np.inf
    evaluations = 1
    mid = 0.5 * (a + b)
    tol1 = BOUNDED_SQRT_EPS * abs(x_best) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(x_best - mid) > tol2 - 0.5 * (b - a):
        golden = True
        if abs(e) > tol1:
            golden = False
            r = (x_best - x_second) * (f_best - f_third)
            qq = (x_best - x_third) * (f_best - f_second)
            pp = (x_best - x_third) * qq - (x_best - x_second) * r
            qq = 2.0 * (qq - r)
            if qq > 0.0:
                pp = -pp
            qq = abs(qq)
            r = e
            e = step
            if abs(pp) < abs(0.5 * qq * r) and pp > qq * (a - x_best) and pp < qq * (b - x_best):
                step = pp / qq
                x = x_best + step
                if (x - a) < tol2 or (b - x) < tol2:
                    d = mid - x_best
                    step = tol1 * (1.0 if d >= 0 else -1.0)
            else:
                golden = True
        if golden:
            e = (a - x_best) if x_best >= mid else (b - x_best)
            step = GOLDEN * e
        direction = 1.0 if step >= 0 else -1.0
        x = x_best + direction * max(abs(step), tol1)
        f_new = sign * _derivative(x, sizes, between, within, nobs, REML, work, out)
        evaluations += 1
        if f_new <= f_best:
            if x >= x_best:
                a = x_best
            else:
                b = x_best
            x_third, f_third = x_second, f_second
            x_second, f_second = x_best, f_best
            x_best, f_best = x, f_new
        else:
            if x < x_best:
                a = x
            else:
                b = x
            if f_new <= f_second or x_second == x_best:
                x_third, f_third = x_second, f_second
                x_second, f_second = x, f_new
            elif f_new <= f_third or x_third == x_best or x_third == x_second:
                x_third, f_third = x, f_new
        mid = 0.5 * (a + b)
        tol1 = BOUNDED_SQRT_EPS * abs(x_best) + xatol / 3.0
        tol2 = 2.0 * tol1
        if evaluations >= BOUNDED_MAX_EVALUATIONS:
            return x_best, f_best, False
    ok = not (math.isnan(x_best) or math.isnan(f_best) or math.isnan(f_new))
    return x_best, f_best, ok


@njit(cache=True, nogil=True)
def scan_minima(taus, sizes, between, within, nobs, REML, refine_rtol, stationary_rtol):
    """Every local minimum over t >= 0 of the pooled criterion (module docstring).

    Parameters
    ----------
    taus : float64 (n,)
        The scan points, ascending, ``taus[0] = 0``.
    sizes, between, within
        The pooled single-term form (kappa_i, ``v_i v_i' / kappa_i``, the rest).
    nobs : int
    REML : bool
    refine_rtol, stationary_rtol : float
        find_optima's REFINE_RTOL and STATIONARY_RTOL.

    Returns
    -------
    status : int
    t, criterion, derivative : float64 (m,)
        The minima, ascending in t (0 first when the boundary is one).
    """
    q = within.shape[0]
    between, within = pack_lower_stack(between, within)
    work = new_work(q)
    out = np.empty(4)
    n = taus.shape[0]
    slopes = np.empty(n)
    empty = np.empty(0)
    for i in range(n):
        reduced_point(taus[i], sizes, between, within, nobs, REML, work, out, False)
        if out[3] == 0.0 or not math.isfinite(out[1]):
            return SCAN_NOT_FINITE, empty, empty, empty
        slopes[i] = out[1]
    if slopes[n - 1] < 0.0:
        return SCAN_FALLING_AT_TOP, empty, empty, empty
    # Brackets: sign changes from negative to non-negative, then the hidden ones.
    lo_b = np.empty(2 * n)
    hi_b = np.empty(2 * n)
    nb = 0
    for i in range(n - 1):
        if slopes[i] < 0.0 <= slopes[i + 1]:
            lo_b[nb] = taus[i]
            hi_b[nb] = taus[i + 1]
            nb += 1
    for i in range(1, n - 1):
        s = np.sign(slopes[i])
        if s == 0.0 or np.sign(slopes[i - 1]) != s or np.sign(slopes[i + 1]) != s:
            continue
        size = abs(slopes[i])
        if size > abs(slopes[i - 1]) or size > abs(slopes[i + 1]):
            continue
        lo, hi = taus[i - 1], taus[i + 1]
        xatol = 1e-12 * max(abs(lo), abs(hi), 1e-300)
        turn, value, ok = brent_bounded_min(s, lo, hi, xatol, sizes, between, within, nobs, REML, work, out)
        if not ok:
            return SCAN_NOT_CONVERGED, empty, empty, empty
        if value < 0.0:
            if s > 0:
                lo_b[nb] = turn
                hi_b[nb] = hi
            else:
                lo_b[nb] = lo
                hi_b[nb] = turn
            nb += 1
    roots = np.empty(nb + 1)
    crits = np.empty(nb + 1)
    derivs = np.empty(nb + 1)
    nr = 0
    prev_lo = np.nan
    prev_hi = np.nan
    # Distinct brackets sorted by (lo, hi), as find_optima visits sorted(set(brackets)).
    by_hi = np.argsort(hi_b[:nb], kind="mergesort")
    order = by_hi[np.argsort(lo_b[:nb][by_hi], kind="mergesort")]
    for idx in range(nb):
        a = lo_b[order[idx]]
        b = hi_b[order[idx]]
        if a == prev_lo and b == prev_hi:
            continue
        prev_lo, prev_hi = a, b
        fa = _derivative(a, sizes, between, within, nobs, REML, work, out)
        fb = _derivative(b, sizes, between, within, nobs, REML, work, out)
        if fb == 0.0:
            root = b
        elif fa < 0.0 < fb:
            root, ok = brent_root(a, b, refine_rtol, sizes, between, within, nobs, REML, work, out)
            if not ok:
                return SCAN_NOT_CONVERGED, empty, empty, empty
        else:
            continue
        reduced_point(root, sizes, between, within, nobs, REML, work, out, True)
        if not abs(out[1]) <= stationary_rtol * out[2]:
            continue
        if root > 0.0:
            roots[nr] = root
            crits[nr] = out[0]
            derivs[nr] = out[1]
            nr += 1
    # The boundary: a minimum when the derivative at 0 is non-negative.
    reduced_point(0.0, sizes, between, within, nobs, REML, work, out, True)
    if out[1] >= 0.0:
        roots[nr] = 0.0
        crits[nr] = out[0]
        derivs[nr] = out[1]
        nr += 1
    if nr == 0:
        return SCAN_NO_MINIMUM, empty, empty, empty
    # Ascending in t; two roots within 1e-9 (relative) count once.
    order = np.argsort(roots[:nr], kind="mergesort")
    t_out = np.empty(nr)
    c_out = np.empty(nr)
    d_out = np.empty(nr)
    m = 0
    for idx in range(nr):
        k = order[idx]
        if m > 0 and abs(roots[k] - t_out[m - 1]) <= 1e-9 * max(abs(roots[k]), 1e-300):
            continue
        t_out[m] = roots[k]
        c_out[m] = crits[k]
        d_out[m] = derivs[k]
        m += 1
    return SCAN_OK, t_out[:m], c_out[:m], d_out[:m]
