"""Dense brute-force REML and ML: builds V explicitly and uses direct linear algebra.

Independent of the engine's algebra (no Woodbury, no pooling, no profiling shortcuts):
the oracle the exact tests compare against. Only for small data.
"""

from __future__ import annotations

import numpy as np


def dense_covariance(groups: np.ndarray, tau: float) -> np.ndarray:
    """H = I + tau Z Z' built from the group labels."""
    same = (groups[:, None] == groups[None, :]).astype(float)
    return np.eye(len(groups)) + tau * same


def dense_criterion(X: np.ndarray, y: np.ndarray, groups: np.ndarray, tau: float, REML: bool = True) -> dict:
    """-2 x (restricted) log-likelihood maximized over beta and sigma2 at fixed tau.

    Computed from the definition: for V = sigma2 H,
    ML:   n log(2 pi sigma2) + log|H| + (y - X b)' H^-1 (y - X b) / sigma2
    REML: ML terms with n - p instead of n for sigma2, plus log|X' V^-1 X| - p log(sigma2)
          i.e. (n - p) log(2 pi sigma2) + log|H| + log|X' H^-1 X| + rss / sigma2
    minimized in closed form over sigma2.
    """
    n, p = X.shape
    H = dense_covariance(np.asarray(groups), tau)
    sign, logdet_H = np.linalg.slogdet(H)
    assert sign > 0
    Hinv = np.linalg.inv(H)
    A = X.T @ Hinv @ X
    beta = np.linalg.solve(A, X.T @ Hinv @ y)
    resid = y - X @ beta
    rss = float(resid @ Hinv @ resid)
    dof = n - p if REML else n
    sigma2 = rss / dof
    crit = dof * np.log(2 * np.pi * sigma2) + logdet_H + rss / sigma2
    if REML:
        crit += np.linalg.slogdet(A)[1]
    return {"criterion": float(crit), "beta": beta, "sigma2": sigma2, "vcov": sigma2 * np.linalg.inv(A),
            "logdet_V": logdet_H, "logdet_XtVinvX": np.linalg.slogdet(A)[1], "pwrss": rss}


def dense_covariance_terms(factors, taus, weights=None) -> np.ndarray:
    """H = W^-1 + sum_j tau_j Z_j Z_j' for several random-intercept terms.

    ``factors`` is a sequence of k label arrays (one per term, each of length n), ``taus``
    the k variance ratios var_j / sigma2, ``weights`` the prior weights (residual
    variance sigma2 / w_i; None for all ones).
    """
    n = len(factors[0])
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    H = np.diag(1.0 / w)
    for labels, tau in zip(factors, taus, strict=True):
        labels = np.asarray(labels)
        H = H + tau * (labels[:, None] == labels[None, :]).astype(float)
    return H


def dense_criterion_terms(X, y, factors, taus, REML: bool = True, weights=None, offset=None) -> dict:
    """-2 x (restricted) log-likelihood profiled over beta and sigma2, several terms.

    Built from the definition with ``V = sigma2 H`` (``H`` from
    :func:`dense_covariance_terms`) and the response ``y - offset``; the same expression
    as :func:`dense_criterion`, which is the case of one term and unit weights. lme4's
    ``REMLcrit()`` / ``deviance()`` with prior weights are this number (its ``ldL2 - ldW``
    is ``log|H|``).

    Also returns the conditional modes and variances of the random effects per term
    (``ranef``: list of (labels, mode, condvar)), ``b_j = tau_j Z_j' H^-1 r`` and
    ``Var(b_j | y) = sigma2 (tau_j - tau_j^2 diag(Z_j' H^-1 Z_j))`` at beta_hat.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if offset is not None:
        y = y - np.asarray(offset, dtype=float)
    n, p = X.shape
    H = dense_covariance_terms(factors, taus, weights)
    sign, logdet_H = np.linalg.slogdet(H)
    assert sign > 0
    Hinv = np.linalg.inv(H)
    A = X.T @ Hinv @ X
    beta = np.linalg.solve(A, X.T @ Hinv @ y)
    resid = y - X @ beta
    rss = float(resid @ Hinv @ resid)
    dof = n - p if REML else n
    sigma2 = rss / dof
    logdet_A = np.linalg.slogdet(A)[1]
    crit = dof * np.log(2 * np.pi * sigma2) + logdet_H + rss / sigma2 + (logdet_A if REML else 0.0)
    ranef = []
    Zs = [(np.asarray(f)[:, None] == np.unique(f)[None, :]).astype(float) for f in factors]
    # Var(b | y) at beta_hat is sigma2 times the diagonal of (T^-1 + Z'WZ)^-1 over the terms
    # with tau > 0 (T = diag(tau) per level); sigma2 (tau - tau^2 diag(Z'H^-1 Z)), the same
    # quantity, cancels most digits when tau is large (1e-8 relative at tau = 800).
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    free = [j for j, tau in enumerate(taus) if tau > 0]
    Zf = np.hstack([Zs[j] for j in free]) if free else np.zeros((n, 0))
    inverse_T = np.concatenate([np.full(Zs[j].shape[1], 1.0 / taus[j]) for j in free]) if free else np.zeros(0)
    cond_free = sigma2 * np.diag(np.linalg.inv(np.diag(inverse_T) + Zf.T @ (w[:, None] * Zf)))
    starts = np.cumsum([0] + [Zs[j].shape[1] for j in free])
    for j, (labels, tau) in enumerate(zip(factors, taus, strict=True)):
        levels = np.unique(np.asarray(labels))
        mode = tau * Zs[j].T @ Hinv @ resid
        condvar = cond_free[starts[free.index(j)]:starts[free.index(j) + 1]] if j in free else np.zeros(len(levels))
        ranef.append((levels, mode, condvar))
    return {"criterion": float(crit), "beta": beta, "sigma2": sigma2, "vcov": sigma2 * np.linalg.inv(A),
            "logdet_V": logdet_H, "logdet_XtVinvX": logdet_A, "pwrss": rss, "ranef": ranef}


def exact_criterion(X: np.ndarray, y: np.ndarray, groups: np.ndarray, tau, REML: bool = True) -> dict:
    """The profiled criterion at tau in exact rational arithmetic, on the stored values.

    Every float in ``X``, ``y`` (and ``tau``) is a binary fraction, so ``fractions.Fraction``
    holds it exactly; ``[X | y]' H^{-1} [X | y]`` is then accumulated with no rounding at
    all (``H_g^{-1} = I - tau / (1 + n_g tau) 1 1'`` per group), and its LDL' pivots give
    ``|X' H^{-1} X|`` and the penalized residual sum of squares exactly. Only the final
    logarithms are rounded. The oracle for designs whose columns are nearly collinear,
    where any floating-point evaluation, this one's dense float64 sibling included, loses
    digits. Slow (pure Python): for a few hundred rows and a handful of columns.
    """
    import math
    from fractions import Fraction

    n, p = X.shape
    q = p + 1
    tau = Fraction(float(tau))
    Z = [[Fraction(float(v)) for v in row] + [Fraction(float(t))] for row, t in zip(X, y, strict=True)]
    M = [[Fraction(0)] * q for _ in range(q)]
    for z in Z:
        for a in range(q):
            za = z[a]
            if za:
                row = M[a]
                for b in range(a, q):
                    row[b] += za * z[b]
    labels, codes = np.unique(np.asarray(groups), return_inverse=True)
    logdet_V = 0.0
    for g in range(len(labels)):
        members = np.flatnonzero(codes == g)
        s = [sum((Z[i][a] for i in members), Fraction(0)) for a in range(q)]
        weight = tau / (1 + len(members) * tau)
        for a in range(q):
            for b in range(a, q):
                M[a][b] -= weight * s[a] * s[b]
        logdet_V += math.log1p(len(members) * float(tau))
    for a in range(q):
        for b in range(a):
            M[a][b] = M[b][a]
    # LDL' without pivoting: exact pivots d_j, and L for back substitution.
    A = [row[:] for row in M]
    pivots = []
    for k in range(q):
        d = A[k][k]
        pivots.append(d)
        for i in range(k + 1, q):
            factor = A[i][k] / d
            for j in range(k, q):
                A[i][j] -= factor * A[k][j]
    # beta solves (X'H^-1X) beta = X'H^-1 y: back substitution on the eliminated rows.
    beta = [Fraction(0)] * p
    for i in reversed(range(p)):
        total = A[i][p] - sum((A[i][j] * beta[j] for j in range(i + 1, p)), Fraction(0))
        beta[i] = total / A[i][i]

    def log(value: Fraction) -> float:
        return math.log(value.numerator) - math.log(value.denominator)

    pwrss = pivots[p]
    logdet_XtVinvX = sum(log(d) for d in pivots[:p])
    dof = n - p if REML else n
    criterion = logdet_V + dof * (1.0 + math.log(2.0 * math.pi) + log(pwrss / dof))
    if REML:
        criterion += logdet_XtVinvX
    return {"criterion": criterion, "beta": np.array([float(b) for b in beta]), "pwrss": float(pwrss),
            "logdet_V": logdet_V, "logdet_XtVinvX": logdet_XtVinvX}
