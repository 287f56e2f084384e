"""Parametric bootstrap that never touches the rows: only the y-parts of the statistics.

A replicate is ``y* = X beta + Z b* + e*`` with ``b* ~ N(0, var_group)`` and
``e* ~ N(0, sigma2)`` at the fitted values. The criterion needs only the pooled
statistics, and of those only the parts with y change. Split ``e*`` into group means
``ebar_g ~ N(0, sigma2 / n_g)`` and the within-group part ``e_w``; then

* group sums of y*: ``s_gy = s_gx' beta + n_g (b_g + ebar_g)``;
* within cross-product with X: ``W_xy = W_xx beta + X_w' e_w``, where
  ``X_w' e_w ~ N(0, sigma2 W_xx)``, drawn as ``sigma L z`` with ``W_xx = L L'`` (rank r);
* within sum of squares of y: ``W_yy = beta' W_xx beta + 2 beta' X_w' e_w + |e_w|^2``
  with ``|e_w|^2 = sigma2 (|z|^2 + chi2(n - G - r))``.

So a replicate costs ``O(G + p^2)`` random numbers whatever the number of rows, and the
joint distribution is exactly that of refitting simulated rows (the tests check this by
building both from the same ``e*``). Each replicate is then fitted by a batched version
of the criterion: every replicate on a shared log grid in tau, the best grid point
refined by bisection on the sign of the analytic derivative.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.criterion import batch_length, residual_dof
from ..core.optimizer import SCAN_TAU_LARGE, SCAN_TAU_SMALL
from ..core.statistics import PooledStats
from ..frontend.arguments import check_bool, check_count, check_seed

#: Grid points per unit of log(tau) for the replicate fits (the fit itself uses 20; the
#: bootstrap distribution is insensitive to the rare minimum this could miss).
BOOT_POINTS_PER_UNIT = 6
#: Bisection steps refining each replicate's minimum (bracket shrinks by 2^-steps).
BOOT_BISECTION_STEPS = 48
#: Replicates fitted per vectorized block.
BOOT_BLOCK = 64
#: Show progress on stderr once a run has taken this long (seconds).
PROGRESS_AFTER_SECONDS = 2.0
#: Eigenvalues of W_xx below this fraction of the largest are zero.
RANK_RTOL = 1e-12
#: Default number of replicates.
BOOT_DEFAULT = 1000


@dataclass(frozen=True)
class ReplicateDraws:
    """The random parts of replicates (model parametrization), R at once.

    ``b`` and ``ebar`` are (R, G); ``wx = X_w' e_w`` is (R, p); ``ew2 = |e_w|^2`` (R,).
    """

    b: np.ndarray
    ebar: np.ndarray
    wx: np.ndarray
    ew2: np.ndarray


@dataclass(frozen=True)
class _Fixed:
    """What stays fixed across replicates."""

    S_x: np.ndarray  # (G, p) group sums of X, model parametrization
    counts: np.ndarray  # (G,)
    size_index: np.ndarray  # (G,) index into stats.sizes
    W_xx: np.ndarray
    L_w: np.ndarray  # (p, r)
    beta: np.ndarray  # internal fixed effects
    stats: PooledStats  # of the fit


def _fixed_parts(fit) -> _Fixed:
    stats = fit.stats
    gs = fit.group_stats
    p = stats.p
    sums = fit.parametrization.internal_sums(gs)
    counts = gs.counts.astype(np.float64)
    size_index = np.searchsorted(stats.sizes, counts)
    W_xx = stats.within[:p, :p]
    lam, V = np.linalg.eigh(W_xx)
    keep = lam > RANK_RTOL * max(lam.max(initial=0.0), 0.0)  # no columns: y ~ 0 + (1|g)
    L_w = V[:, keep] * np.sqrt(lam[keep])
    M = stats.within + np.tensordot(1.0 / (1.0 + fit.tau * stats.sizes), stats.between, axes=1)
    beta = np.linalg.solve(M[:p, :p], M[:p, p])
    return _Fixed(sums[:, :p], counts, size_index, W_xx, L_w, beta, stats)


def draw_replicates(fit, fixed: _Fixed, n: int, rng: np.random.Generator) -> ReplicateDraws:
    """Draw the random parts of ``n`` replicates at the fitted variance parameters."""
    G = len(fixed.counts)
    sigma = np.sqrt(fit.sigma2)
    r = fixed.L_w.shape[1]
    b = rng.standard_normal((n, G)) * np.sqrt(fit.tau * fit.sigma2)
    ebar = rng.standard_normal((n, G)) * (sigma / np.sqrt(fixed.counts))
    z = rng.standard_normal((n, r))
    rest = fixed.stats.nobs - G - r
    chi = rng.chisquare(rest, n) if rest > 0 else np.zeros(n)
    return ReplicateDraws(b, ebar, sigma * z @ fixed.L_w.T, fit.sigma2 * ((z**2).sum(axis=1) + chi))


def replicate_stats(fixed: _Fixed, draws: ReplicateDraws) -> tuple[np.ndarray, np.ndarray]:
    """Within (R, q, q) and between (R, U, q, q) cross-products of the replicates."""
    stats = fixed.stats
    p = stats.p
    R = draws.b.shape[0]
    beta = fixed.beta
    s_y = (fixed.S_x @ beta)[None, :] + fixed.counts[None, :] * (draws.b + draws.ebar)  # (R, G)
    within = np.broadcast_to(stats.within, (R, p + 1, p + 1)).copy()
    W_xy = (fixed.W_xx @ beta)[None, :] + draws.wx
    within[:, :p, p] = W_xy
    within[:, p, :p] = W_xy
    within[:, p, p] = beta @ fixed.W_xx @ beta + 2.0 * draws.wx @ beta + draws.ew2
    U = len(stats.sizes)
    between = np.broadcast_to(stats.between, (R, U, p + 1, p + 1)).copy()
    for u in range(U):
        members = fixed.size_index == u
        n_u = stats.sizes[u]
        B_xy = s_y[:, members] @ fixed.S_x[members] / n_u
        between[:, u, :p, p] = B_xy
        between[:, u, p, :p] = B_xy
        between[:, u, p, p] = (s_y[:, members] ** 2).sum(axis=1) / n_u
    return within, between


def batched_criterion(within, between, stats, taus, REML: bool, derivative: bool = False) -> dict:
    """Criterion (and derivative) of R replicates at taus (R, K): arrays (R, K).

    Evaluated in blocks of replicates and taus whose stacked ``(p + 1) x (p + 1)``
    matrices fit in ``EVALUATION_MEMORY_BUDGET`` (see
    :func:`reml_engine.core.criterion.batch_length`).
    """
    R, K = taus.shape
    step = batch_length(stats.q)
    if R * K <= step:
        return _batched_criterion(within, between, stats, taus, REML, derivative)
    r_step = min(R, step)
    k_step = max(1, step // r_step)
    out: dict[str, np.ndarray] = {}
    for r0 in range(0, R, r_step):
        rows = slice(r0, r0 + r_step)
        for k0 in range(0, K, k_step):
            cols = slice(k0, k0 + k_step)
            part = _batched_criterion(within[rows], between[rows], stats, taus[rows, cols], REML, derivative)
            for key, value in part.items():
                if key not in out:
                    out[key] = np.empty((R, K) + value.shape[2:])
                out[key][rows, cols] = value
    return out


def _batched_criterion(within, between, stats, taus, REML: bool, derivative: bool = False) -> dict:
    """:func:`batched_criterion` on one block (memory ``O(R K q^2)``)."""
    p = stats.p
    n_u, g_u = stats.sizes, stats.groups_per_size
    denom = 1.0 + taus[..., None] * n_u  # (R, K, U)
    M = within[:, None] + np.einsum("rku,ruab->rkab", 1.0 / denom, between)
    with np.errstate(all="ignore"):
        try:
            L = np.linalg.cholesky(M)
        except np.linalg.LinAlgError:
            L = np.full_like(M, np.nan)
            flat_M, flat_L = M.reshape(-1, p + 1, p + 1), L.reshape(-1, p + 1, p + 1)
            for k in range(len(flat_M)):
                try:
                    flat_L[k] = np.linalg.cholesky(flat_M[k])
                except np.linalg.LinAlgError:
                    pass
        diag = np.diagonal(L, axis1=-2, axis2=-1)
        pwrss = diag[..., p] ** 2
        logdet_V = np.log(denom) @ g_u
        dof = residual_dof(stats, REML)
        crit = logdet_V + dof * np.log(pwrss)
        Lxx = L[..., :p, :p]
        beta = np.linalg.solve(np.swapaxes(Lxx, -1, -2), L[..., p, :p][..., None])[..., 0]
        if REML:
            crit = crit + 2.0 * np.log(diag[..., :p]).sum(axis=-1)
        out = {"criterion": crit, "pwrss": pwrss, "beta": beta}
        if derivative:
            D = np.einsum("rku,ruab->rkab", n_u / denom**2, between)
            v = np.concatenate([-beta, np.ones(beta.shape[:-1] + (1,))], axis=-1)
            d = (n_u / denom) @ g_u - dof * np.einsum("rka,rkab,rkb->rk", v, D, v) / pwrss
            if REML:
                half = np.linalg.solve(Lxx, D[..., :p, :p])
                d = d - np.trace(np.linalg.solve(np.swapaxes(Lxx, -1, -2), half), axis1=-2, axis2=-1)
            out["derivative"] = d
    return out


def _tau_grid(stats) -> np.ndarray:
    lo = np.log(SCAN_TAU_SMALL / stats.max_size)
    hi = np.log(SCAN_TAU_LARGE / stats.min_size)
    n = int(np.ceil((hi - lo) * BOOT_POINTS_PER_UNIT)) + 1
    return np.r_[0.0, np.exp(np.linspace(lo, hi, n))]


def fit_replicates(within, between, stats, REML: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global-grid then bisection fit of each replicate: tau, sigma2, beta (internal)."""
    R = within.shape[0]
    grid = _tau_grid(stats)
    values = batched_criterion(within, between, stats, np.broadcast_to(grid, (R, len(grid))), REML)["criterion"]
    values = np.where(np.isfinite(values), values, np.inf)
    best = values.argmin(axis=1)
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, len(grid) - 1)]
    for _ in range(BOOT_BISECTION_STEPS):
        mid = np.where(lo > 0, np.sqrt(lo * np.maximum(hi, lo)), 0.5 * hi)
        slope = batched_criterion(within, between, stats, mid[:, None], REML, derivative=True)["derivative"][:, 0]
        rising = ~(slope < 0)
        hi = np.where(rising, mid, hi)
        lo = np.where(rising, lo, mid)
    tau = 0.5 * (lo + hi)
    # The boundary: where the criterion rises from tau = 0, the estimate is 0.
    at_zero = batched_criterion(within, between, stats, np.zeros((R, 1)), REML, derivative=True)
    boundary = (best == 0) & (at_zero["derivative"][:, 0] >= 0)
    tau = np.where(boundary, 0.0, tau)
    final = batched_criterion(within, between, stats, tau[:, None], REML)
    dof = residual_dof(stats, REML)
    return tau, final["pwrss"][:, 0] / dof, final["beta"][:, 0, :]


@dataclass(frozen=True)
class BootstrapResult:
    """Replicate estimates of a parametric bootstrap.

    Attributes
    ----------
    replicates : pandas.DataFrame
        One row per replicate: ``sd_group``, ``sigma``, ``icc`` and the fixed effects.
    seed : int or None
    REML : bool
    """

    replicates: pd.DataFrame
    seed: int | None
    REML: bool

    @property
    def n_boot(self) -> int:
        return len(self.replicates)

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("BootstrapResult", n_boot=self.n_boot, seed=self.seed, REML=self.REML,
                          columns=", ".join(map(str, self.replicates.columns)))

    def _repr_html_(self) -> str:
        from ..report.notebook import bootstrap_html

        return bootstrap_html(self)

    def percentile_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals (lme4's ``boot.type = "perc"``)."""
        alpha = (1.0 - level) / 2.0
        q = self.replicates.quantile([alpha, 1.0 - alpha]).T
        q.columns = ["lower", "upper"]
        return q


def parametric_bootstrap(
    fit, n_boot: int = BOOT_DEFAULT, seed: int | None = None, progress: bool | None = None
) -> BootstrapResult:
    """Simulate from the fitted model and refit, ``n_boot`` times.

    Parameters
    ----------
    fit : LmerFit
    n_boot : int
        Replicates, at least 1.
    seed : int, numpy Generator or None
    progress : bool or None
        Print progress to stderr: always (True), never (False), or once the run has
        taken ``PROGRESS_AFTER_SECONDS`` (None).
    """
    n_boot = check_count(n_boot, "n_boot")
    seed = check_seed(seed)
    if progress is not None:
        progress = check_bool(progress, "progress")
    fixed = _fixed_parts(fit)
    rng = np.random.default_rng(seed)
    T = fit.parametrization.T
    # beta_user = T beta + offset; the offset comes from the fit itself.
    offset = fit.fixef.to_numpy() - T @ fixed.beta
    taus, sigma2s, betas = [], [], []
    start = time.perf_counter()
    # A block's replicate statistics are (block, U + 1) matrices of (p + 1) x (p + 1):
    # fewer replicates per block for a wide design, so that they stay within the budget.
    block = min(BOOT_BLOCK, batch_length(fixed.stats.q, len(fixed.stats.sizes) + 1))
    for first in range(0, n_boot, block):
        k = min(block, n_boot - first)
        draws = draw_replicates(fit, fixed, k, rng)
        within, between = replicate_stats(fixed, draws)
        tau, sigma2, beta = fit_replicates(within, between, fixed.stats, fit.REML)
        taus.append(tau)
        sigma2s.append(sigma2)
        betas.append(beta)
        elapsed = time.perf_counter() - start
        if progress or (progress is None and elapsed > PROGRESS_AFTER_SECONDS):
            print(f"\rbootstrap: {first + k}/{n_boot} replicates, {elapsed:.1f} s", end="", file=sys.stderr)
    if progress or (progress is None and time.perf_counter() - start > PROGRESS_AFTER_SECONDS):
        print(file=sys.stderr)
    tau, sigma2, beta = np.concatenate(taus), np.concatenate(sigma2s), np.vstack(betas)
    user_beta = beta @ T.T + offset
    frame = pd.DataFrame(user_beta, columns=list(fit.fixef.index))
    frame.insert(0, "icc", tau / (1.0 + tau))
    frame.insert(0, "sigma", np.sqrt(sigma2))
    frame.insert(0, "sd_group", np.sqrt(tau * sigma2))
    return BootstrapResult(frame, seed, fit.REML)
