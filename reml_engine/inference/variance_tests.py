"""Testing ``var_group = 0``: the boundary mixture and the exact (R)LRT.

The statistic is the drop of the criterion from the boundary to the estimate,
``criterion(tau = 0) - criterion(tau_hat)``, which is the (restricted) likelihood-ratio
statistic against the same fixed effects without random intercepts (at ``tau = 0`` the
criterion is that of ordinary least squares).

``"mixture"``
    Under H0 the parameter sits on the boundary of its space, so the asymptotic null is
    the 50:50 mixture of a point mass at 0 and chi-square(1): ``p = P(chi2_1 >= T) / 2``
    for ``T > 0`` and 1 for ``T = 0``.

``"exact"``
    The finite-sample null of Crainiceanu and Ruppert (2004). With ``mu_s`` the nonzero
    eigenvalues of ``Z' P0 Z`` (``P0 = I - X (X'X)^{-1} X'``), ``w_s`` iid N(0, 1) and
    ``m = n - p`` (REML) or ``n`` (ML),

    ``RLRT = sup_{lambda >= 0} m log(T / D(lambda)) - sum_s log(1 + lambda xi_s)``,

    ``T = sum_{s <= n-p} w_s^2``, ``D(lambda) = sum_{s <= K} w_s^2 / (1 + lambda mu_s) +
    sum_{s > K} w_s^2``; ``xi_s = mu_s`` for REML and the eigenvalues ``n_g`` of ``Z'Z``
    for ML. The eigenvalues come from the pooled statistics: ``Z'P0Z = N - C C'`` with
    ``N = diag(n_g)`` and ``C = Z'X R^{-1}``; on the groups of one size it is ``n_u``
    except on the span of that size's columns of ``C`` (at most ``p`` dimensions), so
    only a small matrix is diagonalized, and equal eigenvalues share one chi-square draw
    with their multiplicity as df. The supremum is taken on a log grid in lambda and
    refined by a parabola through the best grid point and its neighbours.

One variance among several terms (RLRsim's ``exactRLRT(m, mA, m0)``)
    Greven, Crainiceanu, Kuechenhoff and Peters (2008): with the other random terms as
    nuisance, the statistic is the restricted LRT between ``mA`` (every term) and ``m0``
    (every term but the tested one), ``criterion(m0) - criterion(mA)``, and its null is
    approximated by the exact null above of the model ``m`` that has only the tested term
    (same fixed effects, same rows). Pass ``mA=`` and ``m0=`` to
    :func:`test_random_intercept` with ``m`` as the fit. The approximation is theirs: it is
    exact when the nuisance variances are known, and their simulations show it holds well
    when they are estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.criterion import evaluate
from ..frontend.arguments import check_count, check_seed
from .lazy_imports import scipy_stats as sps
from .rlrt_kernels import sup_over_grid

#: Default number of simulated draws for the exact test.
EXACT_NSIM = 100_000
#: Default seed (RLRsim's reference values use seed 1, a different generator).
EXACT_SEED = 1
#: Grid in lambda * max(mu): 0 and exp of this many points between the limits below
#: (RLRsim's defaults: 200 points from exp(-10) to exp(8)).
LAMBDA_GRID_POINTS = 200
LAMBDA_LOG_LO = -10.0
LAMBDA_LOG_HI = 8.0
#: Draws simulated per vectorized block (bounds the memory to a few tens of MB).
SIM_BLOCK = 8192
#: Eigenvalues below this fraction of the largest are zero (columns of X lie in them).
EIGEN_ZERO_RTOL = 1e-10
#: Eigenvalues equal to this relative tolerance share one chi-square draw.
EIGEN_MERGE_RTOL = 1e-9
#: A statistic below this (in criterion units) is rounding: it is reported as 0.
STAT_ZERO_TOL = 1e-10


@dataclass(frozen=True)
class VarianceTest:
    """The test of ``var_group = 0``.

    Attributes
    ----------
    statistic : float
        ``criterion(0) - criterion(tau_hat)``: the (restricted) LRT statistic.
    p_value : float
    method : str
        ``"mixture"`` or ``"exact"``.
    REML : bool
        Restricted LRT (REML fit) or LRT (ML fit).
    n_sim : int
        Simulated draws (``"exact"``; 0 for ``"mixture"``).
    mc_se : float
        Monte Carlo standard error of ``p_value`` (0 for ``"mixture"``).
    null_sample : ndarray
        The simulated null statistics (``"exact"``), for plots and checks.
    term : str or None
        The tested term when other random terms are nuisance (``mA``/``m0`` given).
    nuisance : tuple of str
        The other random terms of ``mA`` (empty for a one-term model).
    """

    statistic: float
    p_value: float
    method: str
    REML: bool
    n_sim: int = 0
    mc_se: float = 0.0
    null_sample: np.ndarray = field(default=None, repr=False)
    term: str | None = None
    nuisance: tuple[str, ...] = ()

    def __str__(self) -> str:
        kind = "restricted LRT" if self.REML else "LRT"
        how = (
            "50:50 mixture of chi2(0) and chi2(1)" if self.method == "mixture"
            else f"exact null, {self.n_sim} simulated draws (MC s.e. {self.mc_se:.2g})"
        )
        tested = "var_group = 0" if self.term is None else f"var({self.term}) = 0"
        if self.nuisance:
            how += f"; nuisance terms {', '.join(self.nuisance)}"
        return f"Test of {tested} ({kind}, {how}): statistic = {self.statistic:.4f}, p = {self.p_value:.4g}"

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("VarianceTest", statistic=self.statistic, p_value=self.p_value, method=self.method,
                          REML=self.REML, n_sim=self.n_sim, mc_se=self.mc_se)

    def _repr_html_(self) -> str:
        from ..report.notebook import variance_test_html

        return variance_test_html(self)


def boundary_statistic(fit) -> float:
    """``criterion(tau = 0) - criterion(tau_hat)``, clipped at 0."""
    at_zero = float(evaluate([0.0], fit.stats, fit.REML).criterion[0])
    stat = at_zero - fit.criterion
    return 0.0 if stat < STAT_ZERO_TOL else stat


def mixture_test(fit) -> VarianceTest:
    """LRT with the 50:50 chi-square(0)/chi-square(1) null of a boundary parameter."""
    stat = boundary_statistic(fit)
    p = 1.0 if stat <= 0.0 else 0.5 * float(sps.chi2.sf(stat, 1))
    return VarianceTest(stat, p, "mixture", fit.REML)


def projected_eigenvalues(stats) -> tuple[np.ndarray, np.ndarray]:
    """Distinct nonzero eigenvalues of ``Z' P0 Z`` and their multiplicities."""
    p = stats.p
    if p == 0:
        # No fixed effects (y ~ 0 + (1|g)): P0 = I and Z'Z = diag(n_g).
        return _merge(np.asarray(stats.sizes, dtype=np.float64), np.asarray(stats.groups_per_size, dtype=np.int64))
    XtX = stats.within[:p, :p] + stats.between[:, :p, :p].sum(axis=0)
    R_inv = np.linalg.inv(np.linalg.cholesky(XtX).T)  # XtX = R'R, R upper
    values, mults = [], []
    rows, diag = [], []  # Lambda_u^{1/2} E_u' and n_u for each size class
    for u, n_u in enumerate(stats.sizes):
        K_u = R_inv.T @ (n_u * stats.between[u, :p, :p]) @ R_inv
        lam, E = np.linalg.eigh(0.5 * (K_u + K_u.T))
        keep = lam > EIGEN_ZERO_RTOL * max(lam.max(), 1.0)
        rest = int(stats.groups_per_size[u]) - int(keep.sum())
        if rest > 0:
            values.append(float(n_u))
            mults.append(rest)
        rows.append(np.sqrt(lam[keep])[:, None] * E[:, keep].T)
        diag.append(np.full(int(keep.sum()), float(n_u)))
    F = np.vstack(rows)
    small = np.diag(np.concatenate(diag)) - F @ F.T
    values.extend(np.linalg.eigvalsh(0.5 * (small + small.T)).tolist())
    mults.extend([1] * len(small))
    values = np.asarray(values)
    mults = np.asarray(mults, dtype=np.int64)
    top = values.max()
    keep = values > EIGEN_ZERO_RTOL * top
    return _merge(values[keep], mults[keep])


def _merge(values: np.ndarray, mults: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values)
    values, mults = values[order], mults[order]
    out_v, out_m = [], []
    for v, m in zip(values, mults, strict=True):
        if out_v and abs(v - out_v[-1]) <= EIGEN_MERGE_RTOL * v:
            out_m[-1] += int(m)
        else:
            out_v.append(float(v))
            out_m.append(int(m))
    return np.asarray(out_v), np.asarray(out_m, dtype=np.int64)


def simulate_null(stats, REML: bool = True, n_sim: int = EXACT_NSIM, seed: int | None = EXACT_SEED) -> np.ndarray:
    """Draws from the exact finite-sample null of the (R)LRT for ``var_group = 0``.

    Parameters
    ----------
    stats : PooledStats
    REML : bool
        Restricted LRT (default) or LRT.
    n_sim : int
    seed : int or None
    """
    mu, mult = projected_eigenvalues(stats)
    n, p = stats.nobs, stats.p
    n_rest = n - p - int(mult.sum())
    scale = mu.max()
    mu = mu / scale
    lam = np.r_[0.0, np.exp(np.linspace(LAMBDA_LOG_LO, LAMBDA_LOG_HI, LAMBDA_GRID_POINTS - 1))]
    weights = 1.0 / (1.0 + np.outer(lam, mu))  # (L, K)
    if REML:
        penalty = np.log1p(np.outer(lam, mu)) @ mult
        m = n - p
    else:
        # The eigenvalues of Z'Z are the group sizes.
        penalty = np.log1p(np.outer(lam, stats.sizes / scale)) @ stats.groups_per_size
        m = n
    rng = np.random.default_rng(seed)
    out = np.empty(n_sim)
    single = mult == 1
    for start in range(0, n_sim, SIM_BLOCK):
        k = min(SIM_BLOCK, n_sim - start)
        w = np.empty((k, len(mu)))
        # A squared normal is a chi-square(1) draw, and cheaper.
        w[:, single] = rng.standard_normal((k, int(single.sum()))) ** 2
        if not single.all():
            w[:, ~single] = rng.chisquare(mult[~single].astype(np.float64), size=(k, int((~single).sum())))
        rest = rng.chisquare(n_rest, size=k) if n_rest > 0 else np.zeros(k)
        out[start:start + k] = sup_over_grid(w, rest, weights, penalty, float(m))
    return out


def exact_test(fit, n_sim: int = EXACT_NSIM, seed: int | None = EXACT_SEED) -> VarianceTest:
    """Exact (restricted) LRT of ``var_group = 0`` (Crainiceanu and Ruppert 2004)."""
    stat = boundary_statistic(fit)
    sample = simulate_null(fit.stats, fit.REML, n_sim, seed)
    p = float(np.mean(sample >= stat)) if stat > 0 else 1.0
    mc_se = math.sqrt(max(p * (1.0 - p), 1.0 / n_sim) / n_sim)
    return VarianceTest(stat, p, "exact", fit.REML, n_sim, mc_se, sample)


def test_random_intercept(fit, method: str = "exact", n_sim: int = EXACT_NSIM, seed: int | None = EXACT_SEED, *,
                          mA=None, m0=None) -> VarianceTest:
    """Test ``var_group = 0`` against ``var_group > 0``.

    Parameters
    ----------
    fit : LmerFit
        REML fits give the restricted LRT, ML fits the LRT. With ``mA`` and ``m0``: the
        model with only the tested term (RLRsim's ``m``), a REML fit.
    method : {"exact", "mixture"}
    n_sim, seed : int
        Draws and seed of the exact null.
    mA, m0 : TermsFit or LmerFit, optional
        To test one variance of a model with several random terms, the others being
        nuisance, as RLRsim's ``exactRLRT(m, mA, m0)``: ``mA`` has every term, ``m0``
        every term but the tested one; both REML fits of the same fixed effects on the
        same rows, without prior weights. The statistic is ``criterion(m0) -
        criterion(mA)``; the exact null is that of ``fit`` (Greven et al. 2008).

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
    >>> round(rl.test_random_intercept(m, method="mixture").statistic, 4)
    4.4208

    The casks of the Pastes data, the batches being nuisance:

    >>> pastes = rl.datasets.pastes()
    >>> mA = rl.lmer("strength ~ 1 + (1|batch/cask)", data=pastes)
    >>> m0 = rl.lmer("strength ~ 1 + (1|batch)", data=pastes)
    >>> m = rl.lmer("strength ~ 1 + (1|batch:cask)", data=pastes)
    >>> test = rl.test_random_intercept(m, mA=mA, m0=m0)
    >>> round(test.statistic, 3), test.term, test.nuisance
    (54.605, 'cask:batch', ('batch',))
    """
    key = method.strip().lower() if isinstance(method, str) else None
    if key not in ("exact", "mixture"):
        raise ValueError(f"method must be 'exact' or 'mixture'; got {method!r}")
    if mA is not None or m0 is not None:
        return nuisance_test(fit, mA, m0, key, n_sim, seed)
    if key == "mixture":
        return mixture_test(fit)
    return exact_test(fit, check_count(n_sim, "n_sim"), check_seed(seed))


test_random_intercept.__test__ = False  # not a pytest test when imported into test modules


# -- one variance with the other terms as nuisance ------------------------------------------
def _terms_of(fit, role: str) -> dict[frozenset, str]:
    """The random terms of a fit, keyed by their grouping columns: ``{columns: name}``."""
    if hasattr(fit, "term_names"):  # TermsFit
        if fit.design is None:
            raise ValueError(f"{role} holds no design (design=None); fit it with rl.lmer from data")
        return {frozenset(spec.columns): name for spec, name in zip(fit.design.specs, fit.term_names, strict=True)}
    if hasattr(fit, "group_name"):  # LmerFit
        return {frozenset(fit.group_name.split(":")): fit.group_name}
    raise TypeError(f"{role} must be a fit of rl.lmer (LmerFit or TermsFit), got {type(fit).__name__}")


def _arrays_of(fit, role: str) -> tuple[np.ndarray, np.ndarray]:
    design = fit.design.design if hasattr(fit, "term_names") else fit.design
    if design is None:
        raise ValueError(f"{role} holds no design (design=None); fit it with rl.lmer from data")
    return design.X, design.y


def nuisance_test(m, mA, m0, method: str = "exact", n_sim: int = EXACT_NSIM,
                  seed: int | None = EXACT_SEED) -> VarianceTest:
    """Restricted LRT of one variance with the other random terms as nuisance (Greven et
    al. 2008; RLRsim's ``exactRLRT(m, mA, m0)``); see :func:`test_random_intercept`."""
    if mA is None or m0 is None:
        raise ValueError("give both mA (the model with every random term) and m0 (without the tested term)")
    fits = {"m": m, "mA": mA, "m0": m0}
    terms = {role: _terms_of(f, role) for role, f in fits.items()}
    not_reml = [role for role, f in fits.items() if not f.REML]
    if not_reml:
        raise ValueError(f"the restricted LRT compares REML fits; refit {', '.join(not_reml)} with REML=True")
    if not hasattr(m, "stats"):
        raise ValueError("m must be the model with only the tested random term, fitted without prior weights or "
                         "offset (an LmerFit), whose exact null the test uses")
    weighted = [role for role in ("mA", "m0") if getattr(fits[role], "weighted", False)]
    if weighted:
        raise ValueError(f"{', '.join(weighted)} has prior weights; the exact null of m assumes none")
    offset = [role for role in ("mA", "m0") if getattr(fits[role], "has_offset", False)]
    if offset:
        raise ValueError(f"{', '.join(offset)} has an offset; m cannot, so their fixed parts differ")
    (tested,) = terms["m"]
    added = set(terms["mA"]) - set(terms["m0"])
    if set(terms["m0"]) - set(terms["mA"]) or len(added) != 1:
        raise ValueError(f"mA must have the random terms of m0 ({', '.join(terms['m0'].values())}) and one more; "
                         f"it has {', '.join(terms['mA'].values())}")
    if added != {tested}:
        raise ValueError(f"m's term {terms['m'][tested]!r} must be the one mA has and m0 lacks "
                         f"({terms['mA'][next(iter(added))]!r})")
    X_A, y_A = _arrays_of(mA, "mA")
    for role in ("m0", "m"):
        X, y = _arrays_of(fits[role], role)
        if X.shape != X_A.shape or not np.array_equal(X, X_A):
            raise ValueError(f"{role} and mA have different fixed-effects designs ({list(fits[role].fixef.index)} vs "
                             f"{list(mA.fixef.index)} on {len(X)} and {len(X_A)} rows): the restricted likelihoods "
                             "of models with different fixed effects cannot be compared")
        if not np.array_equal(y, y_A):
            raise ValueError(f"{role} and mA are fitted to different responses; fit all three to the same data")
    stat = float(m0.criterion - mA.criterion)
    stat = 0.0 if stat < STAT_ZERO_TOL else stat
    nuisance = tuple(name for columns, name in terms["mA"].items() if columns != tested)
    name = terms["mA"][tested]
    if method == "mixture":
        p = 1.0 if stat <= 0.0 else 0.5 * float(sps.chi2.sf(stat, 1))
        return VarianceTest(stat, p, "mixture", True, term=name, nuisance=nuisance)
    n_sim, seed = check_count(n_sim, "n_sim"), check_seed(seed)
    sample = simulate_null(m.stats, True, n_sim, seed)
    p = float(np.mean(sample >= stat)) if stat > 0 else 1.0
    mc_se = math.sqrt(max(p * (1.0 - p), 1.0 / n_sim) / n_sim)
    return VarianceTest(stat, p, "exact", True, n_sim, mc_se, sample, name, nuisance)
