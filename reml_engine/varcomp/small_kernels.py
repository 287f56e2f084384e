"""Compiled fast paths for small problems: one kernel call per evaluation or reduction.

The general solvers (:mod:`.crossed`, :mod:`.nested`) cost a few dozen numpy calls per
evaluation, each a few microseconds whatever its size: on a design of a few dozen
levels that overhead is the whole cost (about 0.3 ms an evaluation, and a small fit
makes hundreds). The kernels here do the same arithmetic in one call:

* :func:`crossed_small_solve`: :class:`~reml_engine.varcomp.crossed.CrossedSolver` with
  one term eliminated and its core levels in one dense block (``_factor`` and ``solve``:
  the Schur complement, its Cholesky factor, ``C``, ``log|H|`` and, for the gradient,
  ``A^-1``, the traces with the same switch ``TRACE_SWITCH``, ``R`` and ``R'R`` per
  term);
* :func:`crossed_small_reduction`: its ``reduction_parts`` and the decomposition of K
  (:func:`~reml_engine.varcomp.reduction.reduction_from_blocks` for one block);
* :func:`profile_one`: :func:`~reml_engine.varcomp.solution.profile` for one evaluation.

Dense algebra is written out (Cholesky, triangular solves): at these sizes loops beat
the calls into LAPACK. Plain arrays in and out, a status instead of exceptions.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LOG_2PI = math.log(2.0 * math.pi)

#: Status of the kernels.
SMALL_OK = 0
SMALL_NOT_POSITIVE_DEFINITE = 1


@njit(cache=True, nogil=True)
def cholesky_lower(A, L):
    """Lower Cholesky factor of the symmetric A (lower triangle read) into L; False when
    A is not numerically positive definite."""
    m = A.shape[0]
    for i in range(m):
        for j in range(i + 1, m):
            L[i, j] = 0.0
    for j in range(m):
        s = A[j, j]
        for c in range(j):
            s -= L[j, c] * L[j, c]
        if not s > 0.0:
            return False
        ljj = math.sqrt(s)
        L[j, j] = ljj
        for i in range(j + 1, m):
            s = A[i, j]
            for c in range(j):
                s -= L[i, c] * L[j, c]
            L[i, j] = s / ljj
    return True


@njit(cache=True, nogil=True)
def lower_solve(L, B, X):
    """``X = L^-1 B`` (B: m x q)."""
    m, q = B.shape
    for c in range(q):
        for i in range(m):
            s = B[i, c]
            for j in range(i):
                s -= L[i, j] * X[j, c]
            X[i, c] = s / L[i, i]


@njit(cache=True, nogil=True)
def upper_solve(L, B, X):
    """``X = L'^-1 B`` (B: m x q)."""
    m, q = B.shape
    for c in range(q):
        for i in range(m - 1, -1, -1):
            s = B[i, c]
            for j in range(i + 1, m):
                s -= L[j, i] * X[j, c]
            X[i, c] = s / L[i, i]


@njit(cache=True, nogil=True)
def lower_inverse(L, Linv):
    """``Linv = L^-1`` (lower triangular)."""
    m = L.shape[0]
    for i in range(m):
        for j in range(m):
            Linv[i, j] = 0.0
    for c in range(m):
        for i in range(c, m):
            s = 1.0 if i == c else 0.0
            for j in range(c, i):
                s -= L[i, j] * Linv[j, c]
            Linv[i, c] = s / L[i, i]


@njit(cache=True, nogil=True)
def _factor(te, lam, K0, indptr, indices, data, d, S_e, within, S_core):
    """The Schur complement K, A = I + Lambda K Lambda and its factor, S_E, Y and C (one
    eliminated term, one dense core block in core-level order)."""
    m = K0.shape[0]
    q = within.shape[0]
    m_e = d.shape[0]
    K = K0.copy()
    S_E = S_core.copy()
    C = within.copy()
    logdet_chain = 0.0
    one_plus = np.empty(m_e)
    for lv in range(m_e):
        op = 1.0 + te * d[lv]
        one_plus[lv] = op
        logdet_chain += math.log1p(te * d[lv])
        f = te / op
        # The closed-form part of C: omega (s / d)(s / d)', omega = d / (1 + te d).
        omega = d[lv] / op
        for a in range(q):
            ra = S_e[lv, a] / d[lv]
            for b in range(q):
                C[a, b] += omega * ra * (S_e[lv, b] / d[lv])
        if f == 0.0:
            continue
        for p1 in range(indptr[lv], indptr[lv + 1]):
            i = indices[p1]
            v = f * data[p1]
            for p2 in range(indptr[lv], indptr[lv + 1]):
                K[i, indices[p2]] -= v * data[p2]
            for c in range(q):
                S_E[i, c] -= v * S_e[lv, c]
    A = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            A[i, j] = lam[i] * lam[j] * K[i, j]
        A[i, i] += 1.0
    L = np.empty((m, m))
    ok = cholesky_lower(A, L)
    logdet_A = 0.0
    Y = np.zeros((m, q))
    if ok:
        for i in range(m):
            logdet_A += 2.0 * math.log(L[i, i])
        LS = np.empty((m, q))
        for i in range(m):
            for c in range(q):
                LS[i, c] = lam[i] * S_E[i, c]
        lower_solve(L, LS, Y)
        for a in range(q):
            for b in range(q):
                s = 0.0
                for i in range(m):
                    s += Y[i, a] * Y[i, b]
                C[a, b] -= s
        for a in range(q):
            for b in range(a + 1, q):
                mean = 0.5 * (C[a, b] + C[b, a])
                C[a, b] = mean
                C[b, a] = mean
    return ok, K, L, S_E, Y, C, one_plus, logdet_chain + logdet_A


@njit(cache=True, nogil=True)
def _core_coefficients(L, Y, lam, K, S_E):
    """``U = Lambda A^-1 Lambda S_E`` and R of the core levels (``S_E - K U`` where
    lambda = 0)."""
    m, q = Y.shape
    Z = np.empty((m, q))
    upper_solve(L, Y, Z)
    U = np.empty((m, q))
    for i in range(m):
        for c in range(q):
            U[i, c] = lam[i] * Z[i, c]
    R = np.empty((m, q))
    for i in range(m):
        if lam[i] > 0.0:
            for c in range(q):
                R[i, c] = Z[i, c] / lam[i]
        else:
            for c in range(q):
                s = S_E[i, c]
                for j in range(m):
                    s -= K[i, j] * U[j, c]
                R[i, c] = s
    return U, R


@njit(cache=True, nogil=True)
def _chain_rows(indptr, indices, data, U, S_e, one_plus):
    """R of the eliminated term's levels: ``(s_l - n_l' U) / (1 + te d_l)``."""
    m_e, q = S_e.shape
    R = np.empty((m_e, q))
    for lv in range(m_e):
        for c in range(q):
            s = 0.0
            for p in range(indptr[lv], indptr[lv + 1]):
                s += data[p] * U[indices[p], c]
            R[lv, c] = (S_e[lv, c] - s) / one_plus[lv]
    return R


@njit(cache=True, nogil=True)
def crossed_small_solve(te, lam, core_tau, term_of_core, K0, indptr, indices, data, d, S_e, within, S_core,
                        sum_log_weights, gradient, trace_switch):
    """One evaluation of the crossed solver for one eliminated term and one dense block.

    Parameters
    ----------
    te : float
        tau of the eliminated term.
    lam : float64 (m,)
        sqrt(tau) of each core level (core-level order).
    core_tau : float64 (n_core,)
        tau of each core term; ``term_of_core`` (m,) gives each level's core term.
    K0 : float64 (m, m)
        ``M_cc``, dense.
    indptr, indices, data
        The eliminated term's table against the core levels (CSR).
    d, S_e : its level weights and sums; within : the within-level cross-product.
    S_core : float64 (m, q)
    sum_log_weights : float
    gradient : bool
    trace_switch : float
        ``TRACE_SWITCH`` of :mod:`.crossed`.

    Returns
    -------
    status, logdet_H, C (q, q), traces (1 + n_core,), RtR (1 + n_core, q, q)
        Traces and R'R of the eliminated term first, then of each core term (zeros
        without the gradient).
    """
    n_core = core_tau.shape[0]
    q = within.shape[0]
    m = K0.shape[0]
    traces = np.zeros(1 + n_core)
    RtR = np.zeros((1 + n_core, q, q))
    ok, K, L, S_E, Y, C, one_plus, logdet = _factor(te, lam, K0, indptr, indices, data, d, S_e, within, S_core)
    if not ok:
        return SMALL_NOT_POSITIVE_DEFINITE, np.nan, C, traces, RtR
    logdet_H = logdet - sum_log_weights
    if not gradient:
        return SMALL_OK, logdet_H, C, traces, RtR
    U, R_core = _core_coefficients(L, Y, lam, K, S_E)
    Linv = np.empty((m, m))
    lower_inverse(L, Linv)
    A_inv = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1):
            s = 0.0
            for c in range(i, m):
                s += Linv[c, i] * Linv[c, j]
            A_inv[i, j] = s
            A_inv[j, i] = s
    Sigma = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            Sigma[i, j] = lam[i] * lam[j] * A_inv[i, j]
    # Core traces: (m_c - tr A^-1_cc) / tau_c where tau_c max K_ll is large, else
    # tr K_cc - tr (K Sigma K)_cc.
    need_ksk = False
    use_inverse = np.zeros(n_core, dtype=np.bool_)
    for c in range(n_core):
        k_max = -np.inf
        for i in range(m):
            if term_of_core[i] == c and K[i, i] > k_max:
                k_max = K[i, i]
        if core_tau[c] * k_max >= trace_switch:
            use_inverse[c] = True
        else:
            need_ksk = True
    ksk = np.zeros(m)
    if need_ksk:
        T = np.empty((m, m))
        for i in range(m):
            for j in range(m):
                s = 0.0
                for c in range(m):
                    s += Sigma[i, c] * K[c, j]
                T[i, j] = s
        for lv in range(m):
            s = 0.0
            for i in range(m):
                s += K[i, lv] * T[i, lv]
            ksk[lv] = s
    for c in range(n_core):
        s = 0.0
        for i in range(m):
            if term_of_core[i] == c:
                s += (1.0 - A_inv[i, i]) if use_inverse[c] else (K[i, i] - ksk[i])
        traces[1 + c] = s / core_tau[c] if use_inverse[c] else s
    # The eliminated term: sum d / (1 + te d), minus the quadratic forms n' Sigma n
    # weighted by 1 / (1 + te d)^2; R from the core coefficients.
    R_e = _chain_rows(indptr, indices, data, U, S_e, one_plus)
    first = 0.0
    quad = 0.0
    for lv in range(d.shape[0]):
        first += d[lv] / one_plus[lv]
        g = 1.0 / (one_plus[lv] * one_plus[lv])
        inner = 0.0
        for p1 in range(indptr[lv], indptr[lv + 1]):
            i = indices[p1]
            s = 0.0
            for p2 in range(indptr[lv], indptr[lv + 1]):
                s += Sigma[i, indices[p2]] * data[p2]
            inner += data[p1] * s
        quad += g * inner
    traces[0] = first - quad
    for lv in range(d.shape[0]):
        for a in range(q):
            for b in range(q):
                RtR[0, a, b] += R_e[lv, a] * R_e[lv, b]
    for i in range(m):
        c = term_of_core[i]
        for a in range(q):
            for b in range(q):
                RtR[1 + c, a, b] += R_core[i, a] * R_core[i, b]
    return SMALL_OK, logdet_H, C, traces, RtR


@njit(cache=True, nogil=True)
def crossed_small_reduction(j_core, te, lam, K0, indptr, indices, data, d, S_e, within, S_core, sum_log_weights,
                            term_of_core, kappa_tol):
    """``reduce_to_term`` for the one-block crossed solver at tau (``tau_j = 0``).

    ``j_core`` is -1 for the eliminated term (then ``te`` is 0), else the core term's
    position (its lambda is 0). Returns status, ``log|H_-j|``, ``C_-j``, kappa
    (ascending, those above ``kappa_tol`` times the largest) and the vectors ``Q' R_j``.
    """
    m = K0.shape[0]
    q = within.shape[0]
    ok, K, L, S_E, Y, C, one_plus, logdet = _factor(te, lam, K0, indptr, indices, data, d, S_e, within, S_core)
    if not ok:
        return SMALL_NOT_POSITIVE_DEFINITE, np.nan, C, np.empty(0), np.empty((0, q))
    U, R_core = _core_coefficients(L, Y, lam, K, S_E)
    if j_core < 0:
        m_j = d.shape[0]
        R = _chain_rows(indptr, indices, data, U, S_e, one_plus)
        LN = np.zeros((m, m_j))
        for lv in range(m_j):
            for p in range(indptr[lv], indptr[lv + 1]):
                i = indices[p]
                LN[i, lv] += lam[i] * data[p]
        W = np.empty((m, m_j))
        lower_solve(L, LN, W)
        Kj = np.zeros((m_j, m_j))
        for a in range(m_j):
            Kj[a, a] = d[a]
    else:
        members = np.flatnonzero(term_of_core == j_core)
        m_j = members.shape[0]
        R = np.empty((m_j, q))
        LN = np.empty((m, m_j))
        Kj = np.empty((m_j, m_j))
        for b in range(m_j):
            for c in range(q):
                R[b, c] = R_core[members[b], c]
            for i in range(m):
                LN[i, b] = lam[i] * K[i, members[b]]
            for a in range(m_j):
                Kj[a, b] = K[members[a], members[b]]
        W = np.empty((m, m_j))
        lower_solve(L, LN, W)
    for a in range(m_j):
        for b in range(m_j):
            s = 0.0
            for i in range(m):
                s += W[i, a] * W[i, b]
            Kj[a, b] -= s
    for a in range(m_j):
        for b in range(a + 1, m_j):
            mean = 0.5 * (Kj[a, b] + Kj[b, a])
            Kj[a, b] = mean
            Kj[b, a] = mean
    kappa, Q = np.linalg.eigh(Kj)
    top = max(kappa.max(), 0.0)
    keep = np.flatnonzero(kappa > kappa_tol * top)
    order = keep[np.argsort(kappa[keep], kind="mergesort")]
    vectors = np.empty((order.shape[0], q))
    kept = np.empty(order.shape[0])
    for a in range(order.shape[0]):
        col = order[a]
        kept[a] = kappa[col]
        for c in range(q):
            s = 0.0
            for b in range(m_j):
                s += Q[b, col] * R[b, c]
            vectors[a, c] = s
    return SMALL_OK, logdet - sum_log_weights, C, kept, vectors


@njit(cache=True, nogil=True)
def profile_one(logdet_H, C, nobs, REML, traces, RtR, gradient):
    """beta, sigma2 and the criterion from ``log|H|`` and C, and the gradient from the
    traces and ``R'R`` per term (:func:`~reml_engine.varcomp.solution.profile` for one
    evaluation).

    Returns ok, criterion, logdet_X, pwrss, sigma2, beta (p,), gradient (k,).
    """
    q = C.shape[0]
    p = q - 1
    k = traces.shape[0]
    L = np.empty((q, q))
    beta = np.full(p, np.nan)
    grad = np.full(k, np.nan)
    if not cholesky_lower(C, L):
        return False, np.nan, np.nan, np.nan, np.nan, beta, grad
    logdet_X = 0.0
    for a in range(p):
        logdet_X += 2.0 * math.log(L[a, a])
    pwrss = L[p, p] * L[p, p]
    # beta = Lxx^-T l, l = L[p, :p].
    for i in range(p - 1, -1, -1):
        s = L[p, i]
        for j in range(i + 1, p):
            s -= L[j, i] * beta[j]
        beta[i] = s / L[i, i]
    dof = nobs - p if REML else nobs
    sigma2 = pwrss / dof
    criterion = logdet_H + dof * (1.0 + LOG_2PI + math.log(sigma2))
    if REML:
        criterion += logdet_X
    if gradient:
        v = np.empty(q)
        for a in range(p):
            v[a] = -beta[a]
        v[p] = 1.0
        Linv = np.empty((p, p))
        if REML and p:
            Lx = L[:p, :p].copy()
            lower_inverse(Lx, Linv)
        for t in range(k):
            d_pwrss = 0.0
            for a in range(q):
                s = 0.0
                for b in range(q):
                    s += RtR[t, a, b] * v[b]
                d_pwrss -= v[a] * s
            g = traces[t] + dof * d_pwrss / pwrss
            if REML and p:
                tr = 0.0
                for i in range(p):
                    for jj in range(p):
                        s = 0.0
                        for c in range(p):
                            s += Linv[i, c] * RtR[t, c, jj]
                        tr -= s * Linv[i, jj]
                g += tr
            grad[t] = g
    return True, criterion, logdet_X, pwrss, sigma2, beta, grad


@njit(cache=True, nogil=True)
def nested_term_reduction(d, parent, lo, hi, pos, chain_tau, R, kappa_tol):
    """kappa and vectors of the reduction to the nested term at chain position ``pos``
    (levels ``lo .. hi - 1``): :meth:`~reml_engine.varcomp.nested.NestedSolver.term_blocks`
    and :func:`~reml_engine.varcomp.reduction.reduction_from_blocks` in one call.

    Levels of the term are coupled only through a common ancestor with a positive ratio;
    each block (the levels under one such highest ancestor) is
    ``K = diag(d) - sum over those ancestors a of f_a c_a c_a'`` and is decomposed on
    its own, keeping eigenvalues above ``kappa_tol`` times the block's largest. Returns
    kappa (ascending, stable) and ``Q' R`` per eigenvalue.
    """
    m_j = hi - lo
    q = R.shape[1]
    n_chain = chain_tau.shape[0]
    n_up = n_chain - pos - 1
    anc = np.empty((n_up + 1, m_j), dtype=np.int64)
    for i in range(m_j):
        anc[0, i] = lo + i
    for a in range(1, n_up + 1):
        for i in range(m_j):
            anc[a, i] = parent[anc[a - 1, i]]
    top = -1
    for p in range(pos + 1, n_chain):
        if chain_tau[p] > 0.0:
            top = p
    root = np.empty(m_j, dtype=np.int64)
    for i in range(m_j):
        root[i] = i if top < 0 else anc[top - pos, i]
    order = np.argsort(root, kind="mergesort")
    kappa_all = np.empty(m_j)
    vectors_all = np.empty((m_j, q))
    n_out = 0
    start = 0
    while start < m_j:
        stop = start + 1
        while stop < m_j and root[order[stop]] == root[order[start]]:
            stop += 1
        s = stop - start
        members = order[start:stop]
        K = np.zeros((s, s))
        scale = np.empty(s)
        for i in range(s):
            K[i, i] = d[lo + members[i]]
            scale[i] = d[lo + members[i]]
        for p in range(pos + 1, n_chain):
            t = chain_tau[p]
            row = anc[p - pos]
            if t > 0.0:
                for i in range(s):
                    ai = row[members[i]]
                    f = t / (1.0 + t * d[ai])
                    for jj in range(s):
                        if row[members[jj]] == ai:
                            K[i, jj] -= f * scale[i] * scale[jj]
            for i in range(s):
                scale[i] = scale[i] / (1.0 + t * d[row[members[i]]])
        for i in range(s):
            for jj in range(i + 1, s):
                mean = 0.5 * (K[i, jj] + K[jj, i])
                K[i, jj] = mean
                K[jj, i] = mean
        kappa, Q = np.linalg.eigh(K)
        largest = max(kappa.max(), 0.0)
        for col in range(s):
            if kappa[col] > kappa_tol * largest:
                kappa_all[n_out] = kappa[col]
                for c in range(q):
                    acc = 0.0
                    for i in range(s):
                        acc += Q[i, col] * R[members[i], c]
                    vectors_all[n_out, c] = acc
                n_out += 1
        start = stop
    order = np.argsort(kappa_all[:n_out], kind="mergesort")
    return kappa_all[:n_out][order], vectors_all[:n_out][order]
