"""The profiled REML criterion and ML deviance as closed-form functions of tau.

Model: ``y = X beta + b_g + e`` with ``b_g ~ N(0, var_group)``, ``e ~ N(0, sigma2)``.
Write ``tau = var_group / sigma2``; then ``V = sigma2 * H(tau)`` with the relative
covariance ``H = I + tau Z Z'`` (Z the group indicator matrix). For a group of size
``n_g`` the block ``H_g = I + tau 1 1'`` has determinant ``1 + n_g tau`` and inverse
``I - tau / (1 + n_g tau) 1 1'`` (Woodbury). So, with ``W`` the within-group
cross-product of ``[X | y]`` and ``B_u`` the pooled between-group cross-products
(:class:`~reml_engine.core.statistics.PooledStats`),

``[X | y]' H^{-1} [X | y] = W + sum_u B_u / (1 + n_u tau)``.

Profiling out beta and sigma2 leaves a function of tau alone, built from three parts:

* ``logdet_V = log|H| = sum_u G_u log(1 + n_u tau)`` (``G_u`` groups of size ``n_u``);
* ``logdet_XtVinvX = log|X' H^{-1} X|``, the term REML adds to ML;
* ``pwrss = min_beta (y - X beta)' H^{-1} (y - X beta)``, the penalized residual sum
  of squares, reached at ``beta_hat(tau)``.

REML criterion (lme4's ``REMLcrit()``), with ``n`` rows and ``p`` fixed effects::

    logdet_V + logdet_XtVinvX + (n - p) * (1 + log(2 pi pwrss / (n - p)))

ML deviance (lme4's ``deviance()``)::

    logdet_V + n * (1 + log(2 pi pwrss / n))

One Cholesky factor of the ``(p + 1) x (p + 1)`` matrix above gives all three parts, so
an evaluation costs ``O(U p^2 + p^3)``, whatever the numbers of rows and groups. The
same formulas hold for negative tau down to ``-1 / max(n_g)``, where ``H`` stops being
positive definite: that range is the compound-symmetry model with a negative
intra-class correlation.

Derivative in tau (used to bracket every local minimum)::

    d logdet_V        =  sum_u G_u n_u / (1 + n_u tau)
    d logdet_XtVinvX  = -tr(A^{-1} D_xx)
    d pwrss           = -v' D v,   v = (-beta_hat, 1)

with ``A = X' H^{-1} X`` and ``D = sum_u n_u B_u / (1 + n_u tau)^2``.

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
>>> parts = rl.criterion_parts(0.0, m.stats)      # the boundary, tau = 0
>>> round(parts.criterion, 3)
20.593
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotri, dtrtri, dtrtrs

from .criterion_kernels import SLOPE_LANES, direct_criterion, direct_slopes
from .kernels import lower_inverse_batched
from .statistics import PooledStats

LOG_2PI = float(np.log(2.0 * np.pi))

#: Bytes of working memory a batch of evaluations may take. Each evaluation needs a few
#: ``(p + 1) x (p + 1)`` matrices, so evaluating the ~1,400 scan points at once would take
#: ``1,400 x 8 (p + 1)^2`` bytes per array (10 GB for a 1000-level factor): the taus are
#: evaluated in batches that fit in this budget instead, whatever p.
EVALUATION_MEMORY_BUDGET = 32 * 2**20
#: Stacked (p + 1) x (p + 1) float64 arrays one evaluation of :func:`evaluate` holds at
#: once (M, its Cholesky factor, the inverse, D and their temporaries).
ARRAYS_PER_EVALUATION = 8
#: Up to this q = p + 1, :func:`criterion_values` (the criterion alone, for lme4's path)
#: is one compiled loop per tau (:mod:`reml_engine.core.criterion_kernels`), where
#: numpy's batched calls would cost more than their arithmetic. :func:`evaluate` keeps
#: numpy's batched path at every q: the optimizer's decisions on statistics that lost
#: most of their digits depend on its rounding, and the tests pin them.
DIRECT_KERNEL_MAX_Q = 24
#: Up to this q = p + 1 the criterion the optimizer minimizes (and :func:`criterion_parts`,
#: :func:`fixed_effects` report) is the compiled loop's (:func:`evaluate_compiled`), not
#: numpy's batched path (:func:`evaluate`): the same formulas, another rounding. For a
#: few columns numpy's dozen calls per batch (about 55 us for one tau) cost more than
#: the arithmetic, and the loop evaluates each tau on its own, so the value it gives a
#: tau in a batch is the value it gives that tau alone, to the last bit (the optimizer
#: reuses the scan's values at a bracket's ends). 0 evaluates on numpy's path only
#: (tests/core/test_compiled_refinement.py compares the two).
COMPILED_CRITERION_MAX_Q = DIRECT_KERNEL_MAX_Q
#: From this p on, :func:`_lower_inverse` calls LAPACK (``dtrtri``, blocked, BLAS-3) for
#: each tau instead of the compiled forward substitution, whose column-wise loops are
#: cache-bound for large p. Below it the kernel is kept: same rounding as before, and
#: for small p one compiled call over the batch beats a LAPACK call per tau.
LAPACK_INVERSE_MIN_P = 64


def batch_length(q: int, arrays_per_evaluation: int = ARRAYS_PER_EVALUATION, budget: int | None = None) -> int:
    """How many evaluations of ``arrays_per_evaluation`` stacked ``q x q`` float64 arrays
    fit in ``budget`` bytes (default ``EVALUATION_MEMORY_BUDGET``; at least 1)."""
    budget = EVALUATION_MEMORY_BUDGET if budget is None else budget
    return max(1, int(budget // (8 * q * q * arrays_per_evaluation)))


@dataclass(frozen=True)
class CriterionParts:
    """The profiled criterion at one tau, with its named parts.

    Attributes
    ----------
    tau : float
        ``var_group / sigma2``.
    logdet_V : float
        ``log|H|`` with ``H = V / sigma2 = I + tau Z Z'`` (lme4's ``ldL2``).
    logdet_XtVinvX : float
        ``log|X' H^{-1} X|`` (lme4's ``ldRX2``); enters the REML criterion only.
    pwrss : float
        Penalized residual sum of squares at ``beta``.
    beta : ndarray (p,)
        ``beta_hat(tau)``, generalized least squares, in the model parametrization of
        the statistics (see :class:`~reml_engine.core.statistics.PooledStats`).
    sigma2 : float
        Profiled residual variance: ``pwrss / (n - p)`` (REML) or ``pwrss / n`` (ML).
    criterion : float
        REML criterion or ML deviance.
    derivative : float
        d criterion / d tau.
    REML : bool
    """

    tau: float
    logdet_V: float
    logdet_XtVinvX: float
    pwrss: float
    beta: np.ndarray
    sigma2: float
    criterion: float
    derivative: float
    REML: bool


@dataclass(frozen=True)
class CriterionBatch:
    """The criterion, its parts and its derivative at many tau (:func:`evaluate`).

    Every attribute is an array over the taus (``beta`` is (K, p)); entries where the
    matrix is not numerically positive definite are NaN.

    Attributes
    ----------
    tau : array (K,)
    logdet_V, logdet_XtVinvX, pwrss : array (K,)
        The named parts of the criterion.
    beta : array (K, p)
        The fixed effects, in the parametrization of the statistics.
    sigma2, criterion, derivative : array (K,)
    derivative_scale : array (K,)
        The sum of the absolute values of the derivative's terms, the scale against which
        a zero derivative is judged.
    """

    tau: np.ndarray
    logdet_V: np.ndarray
    logdet_XtVinvX: np.ndarray
    pwrss: np.ndarray
    beta: np.ndarray
    sigma2: np.ndarray
    criterion: np.ndarray
    derivative: np.ndarray
    derivative_scale: np.ndarray


def tau_lower_limit(stats: PooledStats) -> float:
    """The smallest tau (negative) for which ``H`` stays positive definite: ``-1/max n_g``."""
    return -1.0 / stats.max_size


def residual_dof(stats: PooledStats, REML: bool) -> int:
    """The residual degrees of freedom the profiled variance divides by: ``n - p`` under
    REML, ``n`` under ML."""
    return stats.nobs - stats.p if REML else stats.nobs


def evaluate(taus, stats: PooledStats, REML: bool = True) -> CriterionBatch:
    """Criterion, its parts and its derivative at many tau at once (vectorized, in
    batches of at most ``EVALUATION_MEMORY_BUDGET`` bytes of working memory).

    Parameters
    ----------
    taus : array-like (K,)
        Values above ``tau_lower_limit(stats)``.
    stats : PooledStats
    REML : bool

    Returns
    -------
    CriterionBatch
        ``tau``, ``logdet_V``, ``logdet_XtVinvX``, ``pwrss``, ``beta`` (K, p),
        ``sigma2``, ``criterion``, ``derivative`` and ``derivative_scale``, each an array
        over the taus; NaN where the matrix is not numerically positive definite.
    """
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    step = batch_length(stats.q)
    if len(taus) <= step:
        return CriterionBatch(**_evaluate_batch(taus, stats, REML))
    parts = [_evaluate_batch(taus[start:start + step], stats, REML) for start in range(0, len(taus), step)]
    return CriterionBatch(**{key: np.concatenate([part[key] for part in parts]) for key in parts[0]})


def compiled_criterion(stats: PooledStats) -> bool:
    """Whether the criterion of ``stats`` is the compiled loop's (``COMPILED_CRITERION_MAX_Q``)."""
    return stats.q <= COMPILED_CRITERION_MAX_Q


def evaluate_minimized(taus, stats: PooledStats, REML: bool = True) -> CriterionBatch:
    """The criterion the optimizer minimizes, at many tau: :func:`evaluate_compiled` for
    small designs (``COMPILED_CRITERION_MAX_Q``), :func:`evaluate` above. What
    :func:`criterion_parts`, :func:`criterion`, :func:`criterion_derivative` and
    :func:`fixed_effects` report."""
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if compiled_criterion(stats):
        return CriterionBatch(**evaluate_compiled(taus, stats, REML))
    return evaluate(taus, stats, REML)


def evaluate_compiled(taus: np.ndarray, stats: PooledStats, REML: bool, with_criterion: bool = True
                      ) -> dict[str, np.ndarray]:
    """:func:`evaluate`'s output by the compiled loop (memory ``O(len(taus) p)``): the same
    formulas, another rounding, each tau on its own (its value does not depend on the
    other taus of the call). The optimizer's criterion for small designs
    (``COMPILED_CRITERION_MAX_Q``). Without ``with_criterion`` the log-determinants and
    the criterion are NaN (a logarithm per group size and tau saved) and every other
    output the same, to the last bit."""
    arguments = (np.ascontiguousarray(taus), stats.within, stats.between, np.asarray(stats.sizes, dtype=np.float64),
                 np.asarray(stats.groups_per_size, dtype=np.float64), float(residual_dof(stats, REML)), bool(REML))
    if with_criterion:
        logdet_V, logdet_X, pwrss, beta, crit, deriv, scale, ok = direct_criterion(*arguments, True)
    else:
        # The same slopes, several taus per vector instruction (direct_slopes).
        pwrss, beta, deriv, scale, ok = direct_slopes(*arguments, SLOPE_LANES)
        logdet_V, logdet_X, crit = np.full(len(taus), np.nan), np.full(len(taus), np.nan), np.full(len(taus), np.nan)
    out = {
        "tau": taus,
        "logdet_V": logdet_V,
        "logdet_XtVinvX": logdet_X,
        "pwrss": pwrss,
        "beta": beta,
        "sigma2": pwrss / residual_dof(stats, REML),
        "criterion": crit,
        "derivative": deriv,
        "derivative_scale": scale,
    }
    if not ok.all():
        for key, value in out.items():
            if key != "tau":
                value[~ok] = np.nan
    return out


#: Working arrays of shape (taus in a batch, distinct group sizes) of up to this many
#: doubles are kept between batches, per thread (:func:`_scratch`).
SCRATCH_MAX_DOUBLES = 2**19
_scratch_pool = threading.local()


def _scratch(slot: int, shape: tuple[int, int]) -> np.ndarray:
    """A float64 working array of ``shape`` for one batch of evaluations, kept per thread
    and ``slot`` and reused by the next batch when it is small enough.

    An array of a megabyte allocated afresh is handed back to the system when freed and
    faulted in again, page by page, at the next call: the direct scan of a small
    unbalanced design (1,453 taus, 82 group sizes) took about 1,100 page faults per call,
    half its time on the 2-core benchmark machine. Reusing the array leaves the
    arithmetic as it is (the same operations, written into it).
    """
    size = shape[0] * shape[1]
    if size > SCRATCH_MAX_DOUBLES:
        return np.empty(shape)
    pool = getattr(_scratch_pool, "arrays", None)
    if pool is None:
        pool = _scratch_pool.arrays = {}
    flat = pool.get(slot)
    if flat is None or flat.size < size:
        flat = pool[slot] = np.empty(size)
    return flat[:size].reshape(shape)


def _factor_batch(taus: np.ndarray, stats: PooledStats, REML: bool):
    """The criterion of one batch of taus from the Cholesky factors of ``M(tau)``, and the
    factors: the part of :func:`_evaluate_batch` that :func:`criterion_values` needs.

    ``denom`` (returned) is a working array (:func:`_scratch`, slot 0), valid until the
    next batch of this thread."""
    p, q = stats.p, stats.q
    U = len(stats.sizes)
    shape = (len(taus), U)
    # denom = 1 + tau n_u and weights = 1 / denom, written into working arrays.
    denom = np.multiply(taus[:, None], stats.sizes[None, :], out=_scratch(0, shape))
    np.add(1.0, denom, out=denom)
    weights = np.divide(1.0, denom, out=_scratch(1, shape))
    between_flat = stats.between.reshape(U, q * q)
    M = stats.within[None, :, :] + (weights @ between_flat).reshape(-1, q, q)
    L, ok = batched_cholesky(M)

    diag = np.diagonal(L, axis1=1, axis2=2)
    logdet_XtVinvX = 2.0 * np.log(diag[:, :p]).sum(axis=1)
    pwrss = diag[:, p] ** 2
    logdet_V = np.log(denom, out=_scratch(1, shape)) @ stats.groups_per_size

    dof = residual_dof(stats, REML)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma2 = pwrss / dof
        fit_term = dof * (1.0 + LOG_2PI + np.log(sigma2))
    criterion = logdet_V + fit_term + (logdet_XtVinvX if REML else 0.0)
    return denom, between_flat, L, ok, logdet_XtVinvX, pwrss, logdet_V, sigma2, criterion


def criterion_values(taus, stats: PooledStats, REML: bool = True) -> np.ndarray:
    """The criterion alone at many tau, without the fixed effects and the derivative,
    which cost more than the criterion itself (lme4's path,
    :mod:`reml_engine.core.lme4_path`, reads only the criterion). Up to
    ``DIRECT_KERNEL_MAX_Q`` a compiled loop (``evaluate``'s criterion to rounding), above
    it ``evaluate``'s own operations (the same bits). NaN where ``M(tau)`` is not
    positive definite."""
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if stats.q <= DIRECT_KERNEL_MAX_Q:
        out = direct_criterion(
            np.ascontiguousarray(taus), stats.within, stats.between, np.asarray(stats.sizes, dtype=np.float64),
            np.asarray(stats.groups_per_size, dtype=np.float64), float(residual_dof(stats, REML)), bool(REML),
            False,
        )
        values, ok = out[4], out[7]
    else:
        step = batch_length(stats.q)
        parts = [_factor_batch(taus[start:start + step], stats, REML) for start in range(0, len(taus), step)]
        values = np.concatenate([part[-1] for part in parts])
        ok = np.concatenate([part[3] for part in parts])
    values = values.copy()
    values[~ok] = np.nan
    return values


def _evaluate_batch(taus: np.ndarray, stats: PooledStats, REML: bool) -> dict[str, np.ndarray]:
    """:func:`evaluate` on one batch of taus (its memory is ``O(len(taus) q^2)``)."""
    p, q = stats.p, stats.q
    denom, between_flat, L, ok, logdet_XtVinvX, pwrss, logdet_V, sigma2, criterion = _factor_batch(taus, stats, REML)
    dof = residual_dof(stats, REML)

    # Derivative: D = sum_u n_u B_u / (1 + n_u tau)^2 (n_u / denom^2 in a working array).
    d_weights = np.multiply(denom, denom, out=_scratch(1, denom.shape))
    np.divide(stats.sizes[None, :], d_weights, out=d_weights)
    D = (d_weights @ between_flat).reshape(-1, q, q)
    wide = p >= LAPACK_INVERSE_MIN_P
    if wide:
        beta, trace = _wide_beta_and_trace(L, D, p, REML)
    else:
        # One triangular inverse per tau gives beta and the trace in the derivative.
        Lxx_inv = _lower_inverse(L[:, :p, :p])
        beta = np.einsum("kji,kj->ki", Lxx_inv, L[:, p, :p])
    d_logdet_V = np.divide(stats.sizes[None, :], denom, out=_scratch(1, denom.shape)) @ stats.groups_per_size
    v = np.concatenate([-beta, np.ones((len(taus), 1))], axis=1)
    d_pwrss = -np.einsum("ka,kab,kb->k", v, D, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_fit_term = dof * d_pwrss / pwrss
    derivative = d_logdet_V + d_fit_term
    # The size of the terms that cancel at a stationary point, to judge "zero" against.
    derivative_scale = np.abs(d_logdet_V) + np.abs(d_fit_term)
    if REML and p > 0:
        d_logdet_XtVinvX = -(trace if wide else _trace_inverse(Lxx_inv, D[:, :p, :p]))
        derivative = derivative + d_logdet_XtVinvX
        derivative_scale = derivative_scale + np.abs(d_logdet_XtVinvX)

    out = {
        "tau": taus,
        "logdet_V": logdet_V,
        "logdet_XtVinvX": logdet_XtVinvX,
        "pwrss": pwrss,
        "beta": beta,
        "sigma2": sigma2,
        "criterion": criterion,
        "derivative": derivative,
        "derivative_scale": derivative_scale,
    }
    if not ok.all():
        for key, value in out.items():
            if key != "tau":
                value[~ok] = np.nan
    return out


def batched_cholesky(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors of a stack of matrices; rows that fail are flagged, not raised."""
    try:
        return np.linalg.cholesky(M), np.ones(len(M), dtype=bool)
    except np.linalg.LinAlgError:
        L = np.full_like(M, np.nan)
        ok = np.zeros(len(M), dtype=bool)
        for k in range(len(M)):
            try:
                L[k] = np.linalg.cholesky(M[k])
                ok[k] = True
            except np.linalg.LinAlgError:
                pass
        return L, ok


def _lower_inverse(Lxx: np.ndarray) -> np.ndarray:
    """``Lxx^{-1}`` for each k (Lxx lower triangular): one batched inversion (a numba
    forward substitution), where solving for beta and for the trace separately would
    take three general solves."""
    if Lxx.shape[1] == 0:
        return np.zeros_like(Lxx)
    if Lxx.shape[1] < LAPACK_INVERSE_MIN_P:
        return lower_inverse_batched(Lxx)
    # Wide designs: LAPACK's blocked inversion (dtrtri), where the kernel's column-wise
    # loops took 1.9 s per tau at p = 1001.
    inverse = np.empty_like(Lxx)
    for k in range(Lxx.shape[0]):
        inverse[k], info = dtrtri(Lxx[k], lower=1)
        if info != 0:  # a zero on the diagonal: flagged as the kernel's inf would be
            inverse[k] = np.nan
    return inverse


def _wide_beta_and_trace(L: np.ndarray, D: np.ndarray, p: int, REML: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """beta and ``tr(A^{-1} D_xx)`` (REML only; else None) for each k, from the Cholesky
    factor ``L`` of ``M(tau)`` (``A = Lxx Lxx'``), for wide designs (``p >=
    LAPACK_INVERSE_MIN_P``): LAPACK per tau.

    beta solves ``Lxx' beta = l`` (``l`` the response's row of ``L``: a triangular solve,
    ``O(p^2)``); the trace is the sum of the elementwise product of ``A^{-1}`` (from the
    factor, ``dpotri``: ``2 p^3 / 3`` flops) and the symmetric ``D_xx``. The narrow path's
    ``Lxx^{-1}`` and its product with ``D_xx`` take ``7 p^3 / 3``. A factor with a zero on
    its diagonal gives NaN, as the narrow path's infinities do.
    """
    K = L.shape[0]
    beta = np.empty((K, p))
    trace = np.empty(K) if REML else None
    with np.errstate(all="ignore"):
        for k in range(K):
            Lxx = L[k, :p, :p]
            beta[k], info = dtrtrs(Lxx, L[k, p, :p], lower=1, trans=1)
            if info != 0:
                beta[k] = np.nan
            if not REML:
                continue
            inverse, info = dpotri(Lxx, lower=1)
            if info != 0:
                trace[k] = np.nan
                continue
            # dpotri writes A^{-1}'s lower triangle over the factor's and leaves the rest
            # of its input, the zeros above numpy's factor: ``inverse`` is that lower
            # triangle. The trace of A^{-1} D counts each off-diagonal pair twice (both
            # matrices symmetric).
            Dxx = D[k, :p, :p]
            trace[k] = 2.0 * np.einsum("ij,ij->", inverse, Dxx) - np.einsum("ii,ii->", inverse, Dxx)
    return beta, trace


def _trace_inverse(Lxx_inv: np.ndarray, Dxx: np.ndarray) -> np.ndarray:
    """``tr(A^{-1} D)`` with ``A = Lxx Lxx'``, for each k.

    ``tr(L'^{-1} L^{-1} D) = tr(L^{-1} D L'^{-1})``, the sum of the elementwise product
    of ``L^{-1} D`` and ``L^{-1}``.
    """
    with np.errstate(all="ignore"):
        return np.einsum("kij,kij->k", Lxx_inv @ Dxx, Lxx_inv)


def criterion_parts(tau: float, stats: PooledStats, REML: bool = True) -> CriterionParts:
    """The criterion and its named parts at one tau.

    This is the function the optimizer minimizes; call it to see how the criterion is
    built at any tau, including negative values down to ``-1/max(n_g)``.

    Parameters
    ----------
    tau : float
        ``var_group / sigma2``.
    stats : PooledStats
        From a fit (``m.stats``) or :func:`reml_engine.core.statistics.compute_group_stats`.
    REML : bool
        REML criterion (default) or ML deviance.
    """
    lower = tau_lower_limit(stats)
    if not tau > lower:
        raise ValueError(f"tau = {tau} is at or below {lower:.6g} = -1/max(n_g), where V is singular")
    out = evaluate_minimized([tau], stats, REML)
    return CriterionParts(
        tau=float(tau),
        logdet_V=float(out.logdet_V[0]),
        logdet_XtVinvX=float(out.logdet_XtVinvX[0]),
        pwrss=float(out.pwrss[0]),
        beta=out.beta[0],
        sigma2=float(out.sigma2[0]),
        criterion=float(out.criterion[0]),
        derivative=float(out.derivative[0]),
        REML=REML,
    )


def criterion(tau: float, stats: PooledStats, REML: bool = True) -> float:
    """REML criterion (or ML deviance) at tau: ``criterion_parts(...).criterion``."""
    return float(evaluate_minimized([tau], stats, REML).criterion[0])


def criterion_derivative(tau: float, stats: PooledStats, REML: bool = True) -> float:
    """Analytic derivative of the criterion in tau."""
    return float(evaluate_minimized([tau], stats, REML).derivative[0])


def xtvinvx(tau: float, stats: PooledStats) -> np.ndarray:
    """``[X | y]' H^{-1} [X | y]`` at tau, the (p + 1) x (p + 1) matrix of the criterion."""
    weights = 1.0 / (1.0 + tau * stats.sizes)
    return stats.within + np.tensordot(weights, stats.between, axes=1)


def fixed_effects(tau: float, stats: PooledStats, REML: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """beta_hat, its covariance ``sigma2 (X' H^{-1} X)^{-1}`` and sigma2 at tau.

    In the model parametrization of ``stats`` (see :class:`~reml_engine.core.statistics.PooledStats`).
    """
    parts = criterion_parts(tau, stats, REML)
    p = stats.p
    A = xtvinvx(tau, stats)[:p, :p]
    vcov = parts.sigma2 * np.linalg.inv(A)
    return parts.beta, 0.5 * (vcov + vcov.T), parts.sigma2
