"""The batched scan: the global optimization of k responses on one design at once.

With one design, everything in the single-response scan
(:func:`reml_engine.core.optimizer.find_optima`) that depends only on X and the groups
is shared: the scan grid (it reads only the group sizes), the Cholesky factor of
``X'X`` and the eigenvalues ``xi`` of ``Z' P_0 Z`` of the spectral form
(:mod:`reml_engine.core.spectral`). Only the projections ``h = V' Z' P_0 y``, ``y' P_0 y``
and the pooled statistics of the direct form differ per response. So:

1. the spectral form is built once for X (per group size u, the groups' rows of
   ``S_x L_x^{-T}`` are rotated onto ``m_u = min(G_u, p)`` rows by a QR factorization;
   the part of a response's ``Z' P_0 y`` outside them is one more direction with
   eigenvalue ``n_u`` exactly, and the other ``G_u - m_u - 1`` directions have ``h = 0``);
   each response adds one (G x k) product;
2. one compiled loop (:func:`reml_engine.core.many_scan_kernels.screen_responses`)
   scans each response on the shared grid and takes the single scan's decisions where
   they are certain with ``MANY_SAFETY`` times the single scan's margin
   (``SCAN_CERTIFY_RTOL`` of the derivative scale): the sign of the derivative at every
   scan point, no minimum hidden between scan points, no limit optimum, no extension;
3. another (:func:`reml_engine.core.many_scan_kernels.refine_responses`) refines each
   bracketed minimum on the direct form (Brent's method to ``REFINE_RTOL``, the
   stationarity test ``STATIONARY_RTOL``) and evaluates the direct form at 0.

A response where any decision is not certain, whose statistics need what the single fit
does beyond the shared design (the exact within pass, a better-conditioned basis, a
residual variance close to unidentified, values out of range), or which the batched
path cannot finish, is fitted by the single-response chain instead. So each response
gets the single scan's grid and decisions; its optima are refined on the same direct
form to the same tolerance (``tests/core/test_many_scan.py`` checks each row against
``rl.fit(X, y_j, groups)``). What differs is the optimizer's record: the evaluation
count (the batched path does not re-evaluate the points it is sure of) and the last
digits of the refined roots.

Memory: the responses go through in blocks of ``MANY_BLOCK_DOUBLES`` doubles of pooled
statistics, and the scan keeps ``O(K)`` per response, never ``k x K``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import solve_triangular

from ..frontend.data_checks import MAGNITUDE_LIMIT
from .blas import single_threaded_blas
from .identifiability import EXACT_FIT_TOL
from .many_scan_kernels import DECIDED, global_optima, scan_responses
from .optimizer import (
    REFINE_RTOL,
    SCAN_CERTIFY_RTOL,
    STATIONARY_RTOL,
    Optimum,
    OptSummary,
    _dedupe,
    scan_grid,
)
from .statistics import COLLINEARITY_TOL, WITHIN_ZERO_TOL, PooledStats, distinct_sizes
from .workers import run_pieces

#: The batched scan takes a decision only when it is certain with this many times the
#: single scan's margin (``SCAN_CERTIFY_RTOL`` of the derivative scale), and leaves a
#: response to the single-response chain when a y-dependent check (a nearly collinear
#: response, a residual close to an exact fit) is within this factor of its tolerance:
#: its spectral form is built in another basis than the single fit's, so a decision at
#: the margin could differ by rounding.
MANY_SAFETY = 4.0
#: A direct slope within this fraction of its scale of zero has a sign set by rounding:
#: the response goes to the single chain (which decides it the same way, from its own
#: rounding).
MANY_SIGN_RTOL = 1e-9
#: Brackets of minima per response the batched scan keeps (more: the single chain).
MANY_MAX_BRACKETS = 8
#: Iterations of Brent's method per bracket (it needs about 10 at double precision).
MANY_MAX_ITERATIONS = 200
#: Doubles of pooled statistics (``k_block (U + 1) q^2``) per block of responses.
MANY_BLOCK_DOUBLES = 2**22
#: Responses per block at most: the blocks are scanned on the threads of
#: :mod:`reml_engine.core.workers` (blocks of about a thousand keep two threads evenly
#: busy and cost one set of small array operations each).
MANY_SCAN_BLOCK = 1024


@dataclass(frozen=True)
class _BlockRecords:
    """The scan's output for the responses of one block it fitted (row m of each array:
    the m-th of them): what :func:`_summary` builds an optimizer record from."""

    n_brackets: np.ndarray
    brackets: np.ndarray
    roots: np.ndarray
    root_crit: np.ndarray
    root_deriv: np.ndarray
    root_beta: np.ndarray
    root_pwrss: np.ndarray
    zero: np.ndarray
    zero_beta: np.ndarray
    evaluations: np.ndarray
    first: np.ndarray


@dataclass(frozen=True)
class BatchedFits:
    """The responses the batched scan fitted, as arrays over all k responses.

    ``fitted[j]`` says whether response j was fitted here (the others are left to the
    single chain). For those: ``tau`` and ``criterion`` at the global optimum,
    ``at_zero`` (the global optimum is tau = 0, kind ``"boundary"``), ``n_optima``,
    ``fixef``, ``se`` (k, p) in the user's columns, ``sigma2`` and ``derivative_at_zero``
    (the record's slope of the criterion at tau = 0, which gives the boundary reason). Each optimizer record
    (:class:`~reml_engine.core.optimizer.OptSummary`) is built from the scan's arrays
    when asked for (:meth:`summary`), so k responses cost no Python object each up front;
    the arrays give the same global optimum and count of optima as the record
    (``tests/core/test_many_scan.py`` checks it).
    """

    fitted: np.ndarray
    tau: np.ndarray
    criterion: np.ndarray
    at_zero: np.ndarray
    n_optima: np.ndarray
    fixef: np.ndarray
    se: np.ndarray
    sigma2: np.ndarray
    derivative_at_zero: np.ndarray
    block: np.ndarray = field(repr=False)
    row: np.ndarray = field(repr=False)
    records: tuple = field(repr=False)
    taus: np.ndarray = field(repr=False)
    lower: float = 0.0
    max_size: float = 1.0
    REML: bool = True

    def summary(self, j: int) -> OptSummary:
        """Response j's optimizer record (as the single scan's ``find_optima`` builds it)."""
        if not self.fitted[j]:
            raise ValueError(f"response {j} was not fitted by the batched scan")
        r, m = self.records[int(self.block[j])], int(self.row[j])
        found = _summary(self.taus, self.lower, r.brackets[m, :r.n_brackets[m]], r.roots[m], r.root_crit[m],
                         r.root_deriv[m], r.root_beta[m], r.root_pwrss[m], r.zero[m], r.zero_beta[m],
                         int(r.evaluations[m]), r.first[m], self.max_size, self.REML)
        return found[0]


@dataclass(frozen=True)
class _SharedX:
    """What every response shares: the pooled X blocks and the spectral form of X."""

    sizes: np.ndarray
    groups_per_size: np.ndarray
    size_weights: np.ndarray  # (U, G): 1/n_u for the groups of size u
    within_xx: np.ndarray
    constant_x: np.ndarray  # X columns constant within every group (no within part)
    between_xx: np.ndarray  # (U, p, p)
    Lx: np.ndarray
    A: np.ndarray  # S_x Lx^{-T} (G, p)
    size_rows: list  # per size: (group indices, Q_u)
    xi: np.ndarray  # (R,) the rotated rows' eigenvalues, then one n_u per residual direction
    V: np.ndarray
    residual_sizes: np.ndarray  # sizes with a residual direction
    phantom_counts: np.ndarray
    logdet_XtX: float


def _shared_x(stats, p: int) -> _SharedX | None:
    counts = stats.counts
    sizes, size_index, groups_per_size = distinct_sizes(counts)
    U, G = len(sizes), len(counts)
    weights = np.zeros((U, G))
    weights[size_index, np.arange(G)] = 1.0 / counts
    sums_x = stats.sums_x
    between_xx = np.einsum("ug,ga,gb->uab", weights, sums_x, sums_x)
    within_xx = stats.cross_xx - (sums_x / counts[:, None]).T @ sums_x
    within_xx = 0.5 * (within_xx + within_xx.T)
    constant = np.diag(within_xx) <= WITHIN_ZERO_TOL * np.maximum(np.diag(stats.cross_xx), np.finfo(float).tiny)
    within_xx[constant, :] = 0.0
    within_xx[:, constant] = 0.0
    try:
        Lx = np.linalg.cholesky(stats.cross_xx)
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(Lx)) and np.all(np.diagonal(Lx) > 0)):
        return None
    A = solve_triangular(Lx, sums_x.T, lower=True).T
    rows, row_sizes, size_rows, residual_sizes = [], [], [], []
    phantom = np.zeros(U)
    for u, size in enumerate(sizes):
        members = np.flatnonzero(size_index == u)
        m = min(len(members), p)
        Q, R = np.linalg.qr(A[members], mode="reduced")
        Q, R = Q[:, :m], R[:m]
        rows.append(R)
        row_sizes.append(np.full(m, float(size)))
        size_rows.append((members, Q))
        extra = len(members) > m
        if extra:
            residual_sizes.append(float(size))
        phantom[u] = len(members) - m - (1 if extra else 0)
    F = np.concatenate(rows, axis=0)
    C = np.diag(np.concatenate(row_sizes)) - F @ F.T
    xi, V = np.linalg.eigh(0.5 * (C + C.T))
    return _SharedX(
        sizes=sizes.astype(np.float64), groups_per_size=groups_per_size.astype(np.float64), size_weights=weights,
        within_xx=within_xx, constant_x=constant, between_xx=between_xx, Lx=Lx, A=A, size_rows=size_rows,
        xi=np.r_[np.clip(xi, 0.0, None), residual_sizes], V=V, residual_sizes=np.asarray(residual_sizes),
        phantom_counts=phantom, logdet_XtX=float(2.0 * np.log(np.diagonal(Lx)).sum()),
    )


def _response_parts(shared: _SharedX, stats, block: np.ndarray, p: int):
    """Pooled statistics (within (b, q, q), between (b, U, q, q)), the spectral
    projections h2 (b, R), y'P_0y and the y checks of the responses ``block``."""
    counts = stats.counts
    sums_x, sums_y = stats.sums_x, stats.sums_y[:, block]
    b, U, q = len(block), len(shared.sizes), p + 1
    within = np.empty((b, q, q))
    within[:, :p, :p] = shared.within_xx
    within_xy = stats.cross_xy[:, block] - (sums_x / counts[:, None]).T @ sums_y
    within_xy[shared.constant_x, :] = 0.0
    within_yy = stats.squares_y[block] - ((sums_y / counts[:, None]) * sums_y).sum(axis=0)
    within[:, :p, p] = within[:, p, :p] = within_xy.T
    within[:, p, p] = within_yy
    between = np.empty((b, U, q, q))
    between[:, :, :p, :p] = shared.between_xx
    # sum_g w_ug S_x[g, a] S_y[g, j], one product per group size (einsum's loop was slower).
    between_xy = np.stack([((weights[:, None] * sums_x).T @ sums_y).T for weights in shared.size_weights], axis=1)
    between[:, :, :p, p] = between[:, :, p, :p] = between_xy
    between[:, :, p, p] = (shared.size_weights @ (sums_y * sums_y)).T
    # The spectral projections: w = Z' P_0 y = S_y - A l_y, split per size into the
    # rotated rows and the residual direction.
    l_y = solve_triangular(shared.Lx, stats.cross_xy[:, block], lower=True)
    rss0 = stats.squares_y[block] - (l_y * l_y).sum(axis=0)
    w = sums_y - shared.A @ l_y
    projected, residual = [], []
    for members, Q in shared.size_rows:
        w_u = w[members]
        h_u = Q.T @ w_u
        projected.append(h_u)
        if len(members) > Q.shape[1]:
            e = w_u - Q @ h_u
            residual.append((e * e).sum(axis=0))
    h = shared.V.T @ np.concatenate(projected, axis=0)
    h2 = np.concatenate([h * h] + [r[None, :] for r in residual], axis=0).T
    # y checks (the single fit's, with the safety factor; failing one sends the
    # response to the single chain, which decides it exactly).
    coef = np.linalg.lstsq(shared.within_xx, within_xy, rcond=None)[0]
    resid = within_yy - (within_xy * coef).sum(axis=0)
    total_yy = stats.squares_y[block] - sums_y.sum(axis=0) ** 2 / counts.sum()
    lo, hi = stats.lo_y[block], stats.hi_y[block]
    ok = (
        ~stats.exact_within[block]
        & np.isfinite(h2).all(axis=1) & np.isfinite(rss0) & np.isfinite(within).all(axis=(1, 2))
        & (lo < hi) & (np.maximum(np.abs(lo), np.abs(hi)) <= MAGNITUDE_LIMIT)
        & (hi - lo >= 1.0 / MAGNITUDE_LIMIT)
        & (within_yy > MANY_SAFETY * WITHIN_ZERO_TOL * stats.squares_y[block])
        & (resid > MANY_SAFETY * EXACT_FIT_TOL * total_yy)
        & (rss0 > MANY_SAFETY * COLLINEARITY_TOL * stats.squares_y[block])
    )
    return within, between, h2, rss0, ok


def batched_optima(stats, nobs: int, p: int, intercept_index: int, REML: bool) -> BatchedFits | None:
    """The responses of one-pass statistics (:class:`reml_engine.core.many.ManyStatistics`)
    that the batched scan fits (``BatchedFits.fitted``); the others are left to the
    single chain. None when the scan does not apply to X at all.

    The caller has checked, on one response through the single chain, what depends only
    on X: no column dropped, no conditioning transform, an intercept column at
    ``intercept_index``; the statistics are those of the model's parametrization (each
    column about its pilot shift, the intercept unshifted).
    """
    # Small dense algebra on (G x k) blocks: one BLAS thread (reml_engine.core.blas; on
    # the shared machine two threads made these products several times slower).
    with np.errstate(all="ignore"), single_threaded_blas():
        shared = _shared_x(stats, p)
        if shared is None:
            return None
        pooled_x = PooledStats(nobs=nobs, within=np.zeros((p + 1, p + 1)), sizes=shared.sizes,
                               groups_per_size=shared.groups_per_size, between=np.zeros((len(shared.sizes), 1, 1)),
                               model_shift=np.zeros(p + 1))
        taus = scan_grid(pooled_x, extended=True)
        max_size = pooled_x.max_size
        lower = -1.0 / max_size
        dof = float(nobs - p if REML else nobs)
        k = stats.sums_y.shape[1]
        U, q = len(shared.sizes), p + 1
        block_size = max(1, MANY_BLOCK_DOUBLES // ((U + 1) * q * q + len(shared.xi)))
        # Blocks of about MANY_SCAN_BLOCK responses at most, cut by k alone (the same
        # blocks whatever the threads that scan them, reml_engine.core.workers).
        n_blocks = max(-(-k // block_size), -(-k // MANY_SCAN_BLOCK))
        edges = np.linspace(0, k, n_blocks + 1).round().astype(np.int64)
        blocks = [np.arange(edges[b], edges[b + 1]) for b in range(n_blocks) if edges[b + 1] > edges[b]]

        def scan_block(block: np.ndarray):
            # Each thread sets its own floating-point state (numpy's is per thread).
            with np.errstate(all="ignore"):
                return _scan_block(shared, stats, block, p, taus, dof, REML, intercept_index)

        fitted = np.zeros(k, dtype=bool)
        tau_k, crit_k, sigma2_k = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
        at_zero, n_optima = np.zeros(k, dtype=bool), np.zeros(k, dtype=np.int64)
        fixef_k, se_k = np.full((k, p), np.nan), np.full((k, p), np.nan)
        slope_zero_k = np.full(k, np.nan)
        block_of, row_of = np.full(k, -1, dtype=np.int64), np.full(k, -1, dtype=np.int64)
        records = []
        for scanned in run_pieces(scan_block, blocks):
            if scanned is None:
                continue
            columns, tau, crit, sigma2, best, count, fixef, se, record = scanned
            fitted[columns] = True
            tau_k[columns], crit_k[columns], sigma2_k[columns] = tau, crit, sigma2
            at_zero[columns], n_optima[columns] = best == -1, count
            fixef_k[columns], se_k[columns] = fixef, se
            slope_zero_k[columns] = record.zero[:, 1]
            block_of[columns], row_of[columns] = len(records), np.arange(len(columns))
            records.append(record)
    return BatchedFits(fitted, tau_k, crit_k, at_zero, n_optima, fixef_k, se_k, sigma2_k, slope_zero_k, block_of,
                       row_of, tuple(records), taus, lower, max_size, bool(REML))


def _scan_block(shared: _SharedX, stats, block: np.ndarray, p: int, taus: np.ndarray, dof: float, REML: bool,
                intercept_index: int):
    """The batched scan of the responses ``block``: None when it decides none of them,
    else (the responses it fitted, their tau, criterion, sigma2, chosen optimum (-1: tau
    = 0), number of optima, fixef, se, and their :class:`_BlockRecords`)."""
    within, between, h2, rss0, ok = _response_parts(shared, stats, block, p)
    status = np.where(ok, DECIDED, 1 - DECIDED).astype(np.int64)
    (status, n_brackets, brackets, roots, root_crit, root_deriv, root_pwrss, root_beta, zero, zero_beta,
     evaluations, first) = scan_responses(
        taus, shared.xi, np.ascontiguousarray(h2), shared.phantom_counts, shared.sizes,
        shared.groups_per_size, rss0, shared.logdet_XtX, within, between, dof, bool(REML),
        SCAN_CERTIFY_RTOL, MANY_SAFETY, MANY_SIGN_RTOL, REFINE_RTOL, STATIONARY_RTOL, MANY_MAX_BRACKETS,
        MANY_MAX_ITERATIONS, status,
    )
    valid, best, tau, crit, count = global_optima(float(taus[0]), status, n_brackets, roots, root_crit, first, zero)
    decided = np.flatnonzero(valid)
    if not len(decided):
        return None
    chosen = best[decided]
    interior = chosen >= 0
    beta = zero_beta[decided].copy()
    pwrss = zero[decided, 2].copy()
    beta[interior] = root_beta[decided[interior], chosen[interior]]
    pwrss[interior] = root_pwrss[decided[interior], chosen[interior]]
    fixef, se, sigma2 = _estimates(stats, block[decided], tau[decided], beta, pwrss, within[decided],
                                   between[decided], shared.sizes, dof, intercept_index)
    finite = np.isfinite(fixef).all(axis=1) & np.isfinite(se).all(axis=1) & np.isfinite(sigma2)
    decided, fixef, se, sigma2 = decided[finite], fixef[finite], se[finite], sigma2[finite]
    if not len(decided):
        return None
    record = _BlockRecords(
        n_brackets[decided], brackets[decided], roots[decided], root_crit[decided], root_deriv[decided],
        root_beta[decided], root_pwrss[decided], zero[decided], zero_beta[decided], evaluations[decided],
        first[decided])
    return block[decided], tau[decided], crit[decided], sigma2, best[decided], count[decided], fixef, se, record


def _summary(taus, lower, bracket_index, roots, root_crit, root_deriv, root_beta, root_pwrss, zero, zero_beta,
             evaluations, first, max_size, REML):
    """The optimizer record of one response (as ``_find_optima`` builds it) and tau,
    beta and pwrss at its global optimum; None when it has no optimum over tau >= 0 (the
    single chain's fall-backs decide then)."""
    n = len(bracket_index)
    extended = [Optimum(float(roots[m]), float(root_crit[m]), "interior", float(root_deriv[m])) for m in range(n)]
    limit_slope = 0.0
    if first[1] > 0:
        # The compound-symmetry criterion falls to the positive-definite limit (as
        # ``_find_optima``: the first scan point stands for it, with its slope in
        # log(1 + tau max n_g)).
        extended.append(Optimum(float(taus[0]), float(first[0]), "limit", float(first[1])))
        limit_slope = float(first[1] * (1.0 + taus[0] * max_size) / max_size)
    optima = [o for o in extended if o.tau > 0]
    slope_zero = float(zero[1])
    if slope_zero >= 0:
        optima.append(Optimum(0.0, float(zero[0]), "boundary", slope_zero))
    if not optima or not extended:
        return None
    summary = OptSummary(
        REML=REML,
        n_evaluations=len(taus) + evaluations,
        n_scan=len(taus),
        scan_range=(max(float(taus[0]), lower), float(taus[-1])),
        brackets=tuple((float(taus[i]), float(taus[i + 1])) for i in bracket_index),
        refined=tuple(float(r) for r in roots[:n]),
        optima=tuple(_dedupe(optima)),
        extended_optima=tuple(_dedupe(extended)),
        derivative_at_zero=slope_zero,
        limit_slope=limit_slope,
    )
    best = summary.global_optimum
    if best.kind == "boundary":
        return summary, 0.0, zero_beta, zero[2]
    m = next(m for m in range(n) if roots[m] == best.tau)
    return summary, best.tau, root_beta[m], root_pwrss[m]


def _estimates(stats, columns, tau, beta, pwrss, within, between, sizes, dof, intercept_index):
    """Fixed effects, standard errors and sigma2 of the responses ``columns`` at their
    global optima (as :func:`~reml_engine.core.criterion.fixed_effects`), in the user's
    columns (:class:`~reml_engine.core.parametrization.UserParametrization` without a
    transform: the intercept takes the shifts)."""
    p = beta.shape[1]
    sigma2 = pwrss / dof
    weights = 1.0 / (1.0 + tau[:, None] * sizes[None, :])
    A = within[:, :p, :p] + np.einsum("bu,buij->bij", weights, between[:, :, :p, :p])
    vcov = sigma2[:, None, None] * np.linalg.inv(A)
    vcov = 0.5 * (vcov + vcov.transpose(0, 2, 1))
    S = np.eye(p)
    S[intercept_index, :] -= stats.shift_x
    S[intercept_index, intercept_index] = 1.0
    fixef = beta @ S.T
    fixef[:, intercept_index] += stats.shift_y[columns]
    vcov_user = S @ vcov @ S.T
    se = np.sqrt(np.diagonal(vcov_user, axis1=1, axis2=2))
    return fixef, se, sigma2
