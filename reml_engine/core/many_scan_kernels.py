"""Compiled kernels of the batched scan (:mod:`reml_engine.core.many_scan`): k responses
on one design, one loop over the responses each.

:func:`scan_responses` evaluates each response's spectral slope at every scan point
(``O(r)`` per point: what depends on the eigenvalues and group sizes alone is computed
once for all responses) and takes the decisions of the
single-response scan (:func:`reml_engine.core.optimizer.find_optima`) where they are
certain with a safety factor; a response where one of them is not certain gets
``status = FALLBACK`` and is fitted by the single-response chain instead. The direct
form (:func:`reml_engine.core.criterion_kernels.direct_criterion`) is evaluated where the
single scan evaluates it, and each bracketed minimum is refined on it by Brent's
method.

Plain arrays in and out, no exceptions: every doubt is a status flag. The kernels use
numpy's floating-point error model (a division by zero gives an infinity or NaN that the
checks flag, instead of raising from inside the kernel, and the divisions carry no test
for zero: about 7% less time per response, the same numbers).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .criterion_kernels import brent_root, direct_point, direct_workspace

#: The response's scan was decided here (its brackets are in the output).
DECIDED = 0
#: The response needs the single-response chain (a decision that is not certain here).
FALLBACK = 1


# The scan calls the direct form (``direct_point``) itself and leaves the checks and the
# bookkeeping to the two helpers below, which take scalars or run straight through: a
# compiled helper that takes arrays and branches makes numba count a reference to each
# of its arrays on entry and exit, atomic operations that cost about as much as a
# quarter of the direct evaluation they wrapped.


@njit(cache=True, nogil=True, error_model="numpy")
def _usable_direct_slope(ok, crit, deriv, dscale, spectral_slope, margin, sign_rtol):
    """Whether a direct evaluation replaces a scan point's spectral slope: False when it
    failed or is not finite, when its slope is farther from the spectral one than the
    margin (the single scan would redo the scan directly) or within ``sign_rtol`` of its
    scale of zero (its sign is rounding)."""
    if not (ok and np.isfinite(crit) and np.isfinite(deriv)):
        return False
    return not (abs(deriv - spectral_slope) > margin or abs(deriv) <= sign_rtol * dscale)


@njit(cache=True, nogil=True, error_model="numpy")
def _set_exact(i, crit, deriv, slope, value, margin, exact):
    """Scan point i takes its direct criterion and slope (its margin is then 0)."""
    slope[i] = deriv
    value[i] = crit
    margin[i] = 0.0
    exact[i] = True


@njit(cache=True, nogil=True, error_model="numpy")
def scan_responses(taus, xi, h2, phantom_counts, sizes, groups_per_size, rss0, logdet_XtX, within, between, dof,
                   REML, certify_rtol, safety, sign_rtol, refine_rtol, stationary_rtol, max_brackets, max_iter,
                   status_in):
    """Each response's scan, its brackets of minima and their refinement.

    Per response, as the single scan (:func:`reml_engine.core.optimizer.find_optima`):
    the spectral form at every scan point; the direct form at the first and last
    points, at both ends of every sign change and wherever the spectral slope is within
    ``safety`` times the margin (``certify_rtol`` of the derivative scale) of zero. A
    response is left to the single chain (``FALLBACK``) when a direct slope is farther
    from the spectral one than the margin (the single scan would redo it directly),
    when a direct slope is within ``sign_rtol`` of its scale of zero (its sign is
    rounding), when the slope is not positive at the last point (an extension), and when a point passes the
    relaxed search for minima hidden between scan points (a superset of the single
    scan's candidates, see ``reml_engine.core.optimizer._towards_zero``) without the
    derivative being sign-definite, with the safety factor, on both neighbouring
    intervals. Then each bracket is refined on the direct form by Brent's method
    (``refine_rtol``); a root that is not stationary (``stationary_rtol``) also sends
    the response to the single chain.

    Parameters
    ----------
    taus : (K,) the scan grid, sorted
    xi : (R,) eigenvalues shared by every response
    h2 : (k, R) each response's squared projections
    phantom_counts, sizes, groups_per_size : (U,)
    rss0 : (k,)
    logdet_XtX, dof : float
    within : (k, q, q), between : (k, U, q, q): each response's pooled statistics
    REML : bool
    certify_rtol, safety, sign_rtol, refine_rtol, stationary_rtol : float
    max_brackets, max_iter : int
    status_in : (k,) int64, ``FALLBACK`` for responses already left to the single chain

    Returns
    -------
    status (k,), n_brackets (k,), brackets (k, B) (index i of [taus[i], taus[i + 1]]),
    roots, root_criterion, root_derivative, root_pwrss (k, B), root_beta (k, B, p),
    zero (k, 3) (criterion, derivative, pwrss at tau = 0), zero_beta (k, p),
    evaluations (k,) (direct evaluations), first (k, 2): the direct criterion and slope
    at the first scan point (a positive slope there is the ``"limit"`` optimum).
    """
    k = h2.shape[0]
    K = taus.shape[0]
    q = within.shape[1]
    p = q - 1
    B = max_brackets
    status = status_in.copy()
    n_brackets = np.zeros(k, dtype=np.int64)
    brackets = np.zeros((k, B), dtype=np.int64)
    roots = np.full((k, B), np.nan)
    root_crit = np.full((k, B), np.nan)
    root_deriv = np.full((k, B), np.nan)
    root_pwrss = np.full((k, B), np.nan)
    root_beta = np.full((k, B, p), np.nan)
    zero = np.full((k, 3), np.nan)
    zero_beta = np.full((k, p), np.nan)
    evaluations = np.zeros(k, dtype=np.int64)
    first = np.full((k, 2), np.nan)
    slope = np.empty(K)
    # The direct criterion at the scan points: only value[0] is read, and the first point
    # is always evaluated directly before it is, so it is not reset per response.
    value = np.full(K, np.nan)
    scale = np.empty(K)
    margin = np.empty(K)
    curv = np.empty(K)
    pwrss = np.empty(K)
    exact = np.zeros(K, dtype=np.bool_)
    visit = np.zeros(K, dtype=np.bool_)
    indefinite = np.zeros(K, dtype=np.bool_)
    work = direct_workspace(q)
    beta_buf = np.zeros(p)
    # What every response shares at each scan point (the eigenvalues and group sizes):
    # tau / (1 + tau xi_s) and 1 / (1 + tau xi_s)^2, the log-determinant's slope and the
    # scale's part. Per response a point then costs 2 r multiply-adds and one division.
    R = xi.shape[0]
    U = sizes.shape[0]
    tw = np.empty((R, K))
    w2 = np.empty((R, K))
    shared_slope = np.zeros(K)
    shared_scale = np.zeros(K)
    usable = True
    for i in range(K):
        tau = taus[i]
        d_logdet = 0.0
        d_logdet_V = 0.0
        for s in range(R):
            f = 1.0 + tau * xi[s]
            if not f > 0.0:
                usable = False
            tw[s, i] = tau / f
            w2[s, i] = 1.0 / (f * f)
            if REML:
                d_logdet += xi[s] / f
        for u in range(U):
            f = 1.0 + tau * sizes[u]
            if not f > 0.0:
                usable = False
            count = phantom_counts[u] if REML else groups_per_size[u]
            d_logdet += count * sizes[u] / f
            d_logdet_V += groups_per_size[u] * sizes[u] / f
        shared_slope[i] = d_logdet
        shared_scale[i] = abs(d_logdet_V) + (abs(d_logdet - d_logdet_V) if REML else 0.0)
    if not usable:
        for j in range(k):
            status[j] = FALLBACK
    for j in range(k):
        if status[j] != DECIDED:
            continue
        W = within[j]
        Bt = between[j]
        # Two eigenvalues per pass over the points (each sum still adds its terms one
        # after the other, in the order of s, from y'P_0y and 0.0: the same rounding as
        # one per pass), so that the running sums are loaded and stored half as often;
        # the first pass starts them.
        s = 0
        start = rss0[j]
        if R >= 2:
            h_a = h2[j, 0]
            h_b = h2[j, 1]
            for i in range(K):
                pwrss[i] = (start - tw[0, i] * h_a) - tw[1, i] * h_b
                curv[i] = (0.0 + w2[0, i] * h_a) + w2[1, i] * h_b
            s = 2
        else:
            for i in range(K):
                pwrss[i] = start
                curv[i] = 0.0
        while s + 1 < R:
            h_a = h2[j, s]
            h_b = h2[j, s + 1]
            for i in range(K):
                pwrss[i] = (pwrss[i] - tw[s, i] * h_a) - tw[s + 1, i] * h_b
                curv[i] = (curv[i] + w2[s, i] * h_a) + w2[s + 1, i] * h_b
            s += 2
        if s < R:
            h = h2[j, s]
            for i in range(K):
                pwrss[i] -= tw[s, i] * h
                curv[i] += w2[s, i] * h
        # Branch-free, so that the compiler vectorizes it; the check is one count after.
        failed = 0
        for i in range(K):
            fit_slope = dof * curv[i] / pwrss[i]
            slope[i] = shared_slope[i] - fit_slope
            scale[i] = shared_scale[i] + abs(fit_slope)
            failed += not (pwrss[i] > 0.0 and abs(slope[i]) < np.inf and abs(scale[i]) < np.inf)
            margin[i] = certify_rtol * scale[i]
            exact[i] = False
        bad = failed > 0
        if bad:
            status[j] = FALLBACK
            continue
        # The points the single scan evaluates directly (with the safety factor), in
        # order. Their test reads the slope of the point before, which a direct
        # evaluation may have changed; the sign alone matters. So the test on the
        # spectral slopes (branch-free, vectorized) finds every point to look at, and
        # a direct slope of another sign than its spectral one adds the next point.
        for i in range(1, K - 1):
            positive = slope[i] > 0.0
            visit[i] = (abs(slope[i]) <= safety * margin[i]) | (positive != (slope[i + 1] > 0.0)) \
                | (positive != (slope[i - 1] > 0.0))
        visit[0] = True
        visit[K - 1] = True
        flipped = False
        for i in range(K):
            if not (visit[i] or flipped):
                continue
            flipped = False
            unsure = i == 0 or i == K - 1 or abs(slope[i]) <= safety * margin[i]
            if not unsure and i + 1 < K and (slope[i] > 0.0) != (slope[i + 1] > 0.0):
                unsure = True
            if not unsure and i > 0 and (slope[i] > 0.0) != (slope[i - 1] > 0.0):
                unsure = True
            if not unsure:
                continue
            evaluations[j] += 1
            ok, _, _, _, crit, deriv, dscale = direct_point(taus[i], W, Bt, sizes, groups_per_size, dof, REML, True,
                                                            work, beta_buf)
            if not _usable_direct_slope(ok, crit, deriv, dscale, slope[i], margin[i], sign_rtol):
                bad = True
                break
            flipped = (deriv > 0.0) != (slope[i] > 0.0)
            _set_exact(i, crit, deriv, slope, value, margin, exact)
        if bad or not slope[K - 1] > 0.0:
            status[j] = FALLBACK
            continue
        # The relaxed search for hidden minima, with margins times the safety factor.
        # Its tests at point i read points i - 1 to i + 1, which its direct
        # evaluations at an earlier point may have changed (i - 2 or i - 1): so they
        # run branch-free on the slopes after the pass above, and the search visits in
        # order the points that pass them and the two after any point it evaluated.
        # Whether an interval is sign-definite by the spectral bounds of
        # ``reml_engine.core.spectral.derivative_bounds`` (with the safety factor) reads
        # the spectral arrays alone, which no direct evaluation changes.
        for a in range(K - 1):
            lower = shared_slope[a + 1] - dof * curv[a] / pwrss[a + 1]
            upper = shared_slope[a] - dof * curv[a + 1] / pwrss[a]
            tol = safety * certify_rtol * max(scale[a], scale[a + 1])
            indefinite[a] = not ((lower > tol) | (upper < -tol))
        for i in range(1, K - 1):
            mid = slope[i]
            positive = mid > 0.0
            same_sign = (positive == (slope[i - 1] > 0.0)) & (positive == (slope[i + 1] > 0.0))
            slack_before = 2.0 * safety * (margin[i] + margin[i - 1])
            slack_after = 2.0 * safety * (margin[i] + margin[i + 1])
            smallest = (abs(mid) <= abs(slope[i - 1]) + slack_before) & (abs(mid) <= abs(slope[i + 1]) + slack_after)
            visit[i] = same_sign & smallest & (indefinite[i - 1] | indefinite[i])
        # The search stops past the last point to visit and the two after its last
        # evaluation (on most responses there is no point to visit at all).
        remaining = 0
        for i in range(1, K - 1):
            remaining += visit[i]
        changed_until = 0
        for i in range(1, K - 1):
            if visit[i]:
                remaining -= 1
            elif i > changed_until:
                if remaining == 0:
                    break
                continue
            mid = slope[i]
            if (mid > 0.0) != (slope[i - 1] > 0.0) or (mid > 0.0) != (slope[i + 1] > 0.0):
                continue
            slack_before = 2.0 * safety * (margin[i] + margin[i - 1])
            slack_after = 2.0 * safety * (margin[i] + margin[i + 1])
            if not (abs(mid) <= abs(slope[i - 1]) + slack_before and abs(mid) <= abs(slope[i + 1]) + slack_after):
                continue
            if not (indefinite[i - 1] or indefinite[i]):
                continue
            changed_until = i + 2
            # As the single scan: the point and its neighbours directly, then the exact
            # test; a point that passes it (within rounding) is searched by the single
            # chain.
            for a in range(i - 1, i + 2):
                if not exact[a]:
                    evaluations[j] += 1
                    ok, _, _, _, crit, deriv, dscale = direct_point(taus[a], W, Bt, sizes, groups_per_size, dof, REML,
                                                                    True, work, beta_buf)
                    if _usable_direct_slope(ok, crit, deriv, dscale, slope[a], margin[a], sign_rtol):
                        _set_exact(a, crit, deriv, slope, value, margin, exact)
                    else:
                        bad = True
            if bad:
                break
            mid = abs(slope[i])
            tie = sign_rtol * scale[i]
            if (slope[i] > 0.0) == (slope[i - 1] > 0.0) == (slope[i + 1] > 0.0) \
                    and mid <= abs(slope[i - 1]) + tie and mid <= abs(slope[i + 1]) + tie:
                bad = True
                break
        if bad:
            status[j] = FALLBACK
            continue
        count = 0
        for i in range(K - 1):
            if not (slope[i] < 0.0 and slope[i + 1] > 0.0):
                continue
            if count == B:
                bad = True
                break
            a, b = taus[i], taus[i + 1]
            root, used, ok = brent_root(a, b, slope[i], slope[i + 1], W, Bt, sizes, groups_per_size, dof, REML,
                                        refine_rtol, max_iter, work, beta_buf)
            evaluations[j] += used
            if not ok:
                bad = True
                break
            ok, _, _, rss, crit, deriv, dscale = direct_point(root, W, Bt, sizes, groups_per_size, dof, REML, True,
                                                              work, beta_buf)
            evaluations[j] += 1
            if not (ok and np.isfinite(crit) and abs(deriv) <= stationary_rtol * dscale):
                bad = True
                break
            brackets[j, count] = i
            roots[j, count] = root
            root_crit[j, count] = crit
            root_deriv[j, count] = deriv
            root_pwrss[j, count] = rss
            for c in range(p):
                root_beta[j, count, c] = beta_buf[c]
            count += 1
        if bad:
            status[j] = FALLBACK
            continue
        n_brackets[j] = count
        first[j, 0] = value[0]
        first[j, 1] = slope[0]
        ok, _, _, rss, crit, deriv, dscale = direct_point(0.0, W, Bt, sizes, groups_per_size, dof, REML, True, work,
                                                          beta_buf)
        evaluations[j] += 1
        if not (ok and np.isfinite(crit) and np.isfinite(deriv)):
            status[j] = FALLBACK
            continue
        zero[j, 0] = crit
        zero[j, 1] = deriv
        zero[j, 2] = rss
        for c in range(p):
            zero_beta[j, c] = beta_buf[c]
    return (status, n_brackets, brackets, roots, root_crit, root_deriv, root_pwrss, root_beta, zero, zero_beta,
            evaluations, first)


@njit(cache=True, nogil=True, error_model="numpy")
def global_optima(first_tau, status, n_brackets, roots, root_crit, first, zero):
    """Each decided response's global optimum and number of optima, as the optimizer
    record :func:`reml_engine.core.many_scan._summary` builds would give them (its
    ``optima``: the refined roots and the limit point over tau > 0, then tau = 0 when the
    slope there is not negative, sorted by tau and deduplicated as
    ``reml_engine.core.optimizer._dedupe``; the global optimum is the first of the lowest
    criterion), without building the record.

    Returns
    -------
    valid (k,) bool: the record has an optimum (else the single chain decides);
    best (k,) int64: the root of the global optimum, -1 for tau = 0;
    tau, criterion (k,); n_optima (k,) int64.
    """
    k = status.shape[0]
    B = roots.shape[1]
    valid = np.zeros(k, dtype=np.bool_)
    best = np.full(k, -2, dtype=np.int64)
    tau = np.full(k, np.nan)
    criterion = np.full(k, np.nan)
    n_optima = np.zeros(k, dtype=np.int64)
    ts = np.empty(B + 2)
    cs = np.empty(B + 2)
    which = np.empty(B + 2, dtype=np.int64)  # root index, -1 tau = 0, -2 the limit point
    for j in range(k):
        if status[j] != DECIDED:
            continue
        n = n_brackets[j]
        has_limit = first[j, 1] > 0.0
        if n == 0 and not has_limit:
            continue
        count = 0
        for m in range(n):
            if roots[j, m] > 0.0:
                ts[count] = roots[j, m]
                cs[count] = root_crit[j, m]
                which[count] = m
                count += 1
        if has_limit and first_tau > 0.0:
            ts[count] = first_tau
            cs[count] = first[j, 0]
            which[count] = -2
            count += 1
        if zero[j, 1] >= 0.0:
            ts[count] = 0.0
            cs[count] = zero[j, 0]
            which[count] = -1
            count += 1
        if count == 0:
            continue
        # Stable insertion sort by tau (Python's sorted).
        for a in range(1, count):
            t, c, w = ts[a], cs[a], which[a]
            b = a - 1
            while b >= 0 and ts[b] > t:
                ts[b + 1], cs[b + 1], which[b + 1] = ts[b], cs[b], which[b]
                b -= 1
            ts[b + 1], cs[b + 1], which[b + 1] = t, c, w
        kept = 0
        for a in range(count):
            if kept > 0 and abs(ts[a] - ts[kept - 1]) <= 1e-9 * max(abs(ts[a]), 1e-300):
                continue
            ts[kept], cs[kept], which[kept] = ts[a], cs[a], which[a]
            kept += 1
        g = 0
        for a in range(1, kept):
            if cs[a] < cs[g]:
                g = a
        if which[g] == -2:
            continue
        chosen = -1
        if which[g] >= 0:
            for m in range(n):
                if roots[j, m] == ts[g]:
                    chosen = m
                    break
        valid[j] = True
        best[j] = chosen
        tau[j] = ts[g]
        criterion[j] = cs[g]
        n_optima[j] = kept
    return valid, best, tau, criterion, n_optima
