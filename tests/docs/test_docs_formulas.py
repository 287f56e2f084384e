"""Every numbered formula of ``docs/mechanics/`` evaluated through the library.

A formula labelled ``F3.4`` in the docs is checked by ``test_F3_4_...`` here, and its
docstring names the section. ``test_every_docs_formula_has_a_test`` keeps the two in step:
a new label in the docs without a test (or a test for a label that was removed) fails.

The library's values are compared with things outside the code under test: the dense
oracle (``tests/oracle.py``, which builds V), direct numpy/scipy computations from the
definitions (least squares with group dummies, numerical minimization and integration of
the multivariate normal likelihood), closed forms from the ANOVA table, and the R
reference values in ``tests/data/reference``.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from oracle import dense_covariance, dense_criterion
from reference_data import case_data, load_extra_reference, load_reference
from scipy import integrate, optimize, stats

import reml_engine as rl
from reml_engine.core.criterion import criterion_parts, evaluate, fixed_effects, tau_lower_limit, xtvinvx
from reml_engine.core.statistics import compute_group_stats
from reml_engine.frontend.groups import factorize_groups

DOCS = Path(__file__).resolve().parents[2] / "docs"
MECHANICS = DOCS / "mechanics"

#: Agreement of two exact computations of the same quantity (different algebra, same maths).
EXACT_RTOL = 1e-9
#: Agreement with lme4/nlme values, which come from their own optimizers.
REFERENCE_RTOL = 1e-5
#: Central finite-difference step (relative to tau) and the agreement it allows.
FD_STEP = 1e-5
FD_RTOL = 1e-5
#: Agreement with numerical minimization / quadrature of the likelihood.
NUMERIC_RTOL = 1e-7
#: Taus at which formulas are compared (positive, small, large, and negative above the limit).
TAUS = (0.0, 0.05, 0.7, 3.0, 250.0)

LABEL = re.compile(r"\bF(\d+)\.(\d+)\b")


# -- helpers -----------------------------------------------------------------------------


def seed() -> pd.DataFrame:
    return rl.load_seed()


def raw_stats(X: np.ndarray, y: np.ndarray, groups) -> rl.PooledStats:
    """Pooled statistics of the user's own columns (no centring), so beta is on their scale."""
    codes = factorize_groups(np.asarray(groups))
    shift = np.zeros(X.shape[1] + 1)
    return compute_group_stats(np.ascontiguousarray(X, dtype=float), np.asarray(y, dtype=float),
                               codes, shift, exact_within=False).pooled()


def design_arrays(m: rl.LmerFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return m.design.X, m.design.y, np.asarray(m.design.groups)


def indicator(groups: np.ndarray) -> np.ndarray:
    """The N x G matrix Z of group indicators."""
    levels = np.unique(groups)
    return (groups[:, None] == levels[None, :]).astype(float)


def anova_table(data: pd.DataFrame, response: str, group: str) -> dict:
    """One-way ANOVA quantities of section 5, from pandas group means."""
    y = data[response]
    by = y.groupby(data[group])
    G, N = by.ngroups, len(y)
    n = N // G
    ssw = float(((y - by.transform("mean")) ** 2).sum())
    ssb = float(n * ((by.mean() - y.mean()) ** 2).sum())
    return {"G": G, "N": N, "n": n, "ssw": ssw, "ssb": ssb, "msw": ssw / (N - G), "msb": ssb / (G - 1)}


def seed_within_between_slopes() -> dict:
    """Within and between slopes of the seed data from plain least squares (section 7)."""
    d = seed()
    y, x, f = d["y"].to_numpy(), d["x"].to_numpy(), d["f"].to_numpy()
    dummies = indicator(f)
    beta_w = np.linalg.lstsq(np.c_[x, dummies], y, rcond=None)[0][0]
    means = d.groupby("f")[["x", "y"]].mean()
    beta_b = np.linalg.lstsq(np.c_[np.ones(len(means)), means["x"]], means["y"], rcond=None)[0][1]
    n = 3
    xbar_g = d.groupby("f")["x"].transform("mean").to_numpy()
    W_xx = float(((x - xbar_g) ** 2).sum())
    B_xx = float(n * ((means["x"] - x.mean()) ** 2).sum())
    return {"beta_w": beta_w, "beta_b": beta_b, "W_xx": W_xx, "B_xx": B_xx, "n": n}


@pytest.fixture(scope="module")
def unbalanced() -> rl.LmerFit:
    """Unbalanced groups (sizes 1 to 25), categorical predictor, unsorted rows."""
    return rl.lmer("y ~ x1 * cat + x2 + (1|g)", data=case_data("sim_unbalanced"))


@pytest.fixture(scope="module")
def small_unbalanced() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first 80 rows of sim_unbalanced: small enough for dense N x N algebra everywhere."""
    d = case_data("sim_unbalanced").iloc[:80]
    X = np.c_[np.ones(len(d)), d["x1"], d["x2"], (d["cat"] == "b").astype(float)]
    return X, d["y"].to_numpy(), d["g"].to_numpy()


# -- the docs and the tests stay in step -------------------------------------------------


def _doc_labels() -> set[str]:
    labels = set()
    for path in sorted(MECHANICS.glob("*.md")):
        labels.update(f"F{a}.{b}" for a, b in LABEL.findall(path.read_text()))
    return labels


def _tested_labels() -> set[str]:
    names = [name for name in globals() if name.startswith("test_F")]
    return {"F{}.{}".format(*re.match(r"test_F(\d+)_(\d+)_", name).groups()) for name in names}


def test_every_docs_formula_has_a_test():
    documented = _doc_labels()
    assert documented, "no formula labels found in docs/mechanics"
    assert documented == _tested_labels()


def test_docs_cite_only_existing_library_names():
    """Names the mechanics docs tell the reader to call exist in the library."""
    criterion_module = importlib.import_module("reml_engine.core.criterion")
    optimizer_module = importlib.import_module("reml_engine.core.optimizer")
    lme4_path_module = importlib.import_module("reml_engine.core.lme4_path")

    text = "\n".join(p.read_text() for p in [DOCS / "index.md", *MECHANICS.glob("*.md")])
    for name in ("criterion_parts", "evaluate", "find_optima", "compute_group_stats"):
        assert f"{name}" in text and hasattr(rl, name)
    for name in ("xtvinvx", "fixed_effects", "tau_lower_limit"):
        assert name in text and hasattr(criterion_module, name)
    for name in ("SCAN_POINTS_PER_UNIT", "SCAN_TAU_SMALL", "SCAN_TAU_LARGE"):
        assert name in text and hasattr(optimizer_module, name)
    assert "lme4_path.lme4_default_optimum" in text and hasattr(lme4_path_module, "lme4_default_optimum")
    for method in ("profile_criterion", "plot_profile", "lme4_default"):
        assert f"m.{method}" in text and hasattr(rl.LmerFit, method)
    for field in ("logdet_V", "logdet_XtVinvX", "pwrss", "beta", "sigma2", "criterion", "derivative"):
        assert field in rl.CriterionParts.__dataclass_fields__


# -- 1. the model and its V ----------------------------------------------------------------


def test_F1_1_marginal_covariance_gives_the_deviance():
    """docs/mechanics/01_model.md F1.1: y ~ N(X beta, sigma2 I + var_group Z Z')."""
    m = rl.lmer("Yield ~ 1 + (1|Batch)", data=case_data("dyestuff"), REML=False)
    X, y, groups = design_arrays(m)
    Z = indicator(groups)
    V = m.sigma2 * np.eye(len(y)) + m.var_group * Z @ Z.T
    np.testing.assert_allclose(V, m.sigma2 * dense_covariance(groups, m.tau), rtol=EXACT_RTOL)
    minus_two_loglik = -2 * stats.multivariate_normal(X @ m.fixef.to_numpy(), V).logpdf(y)
    assert minus_two_loglik == pytest.approx(m.criterion, rel=EXACT_RTOL)


def test_F1_2_icc_is_the_within_group_correlation(unbalanced):
    """docs/mechanics/01_model.md F1.2: rho = var_group / (var_group + sigma2) = tau / (1 + tau)."""
    m = unbalanced
    groups = np.asarray(m.design.groups)[:40]
    V = m.sigma2 * dense_covariance(groups, m.tau)
    sd = np.sqrt(np.diag(V))
    corr = V / np.outer(sd, sd)
    same = (groups[:, None] == groups[None, :]) & ~np.eye(len(groups), dtype=bool)
    np.testing.assert_allclose(corr[same], m.icc, rtol=EXACT_RTOL)
    assert np.all(corr[~(groups[:, None] == groups[None, :])] == 0)
    assert m.icc == pytest.approx(m.var_group / (m.var_group + m.sigma2), rel=EXACT_RTOL)
    assert m.icc == pytest.approx(load_reference()["sim_unbalanced"]["reml"]["icc"], rel=REFERENCE_RTOL)


def test_F1_3_fixed_effects_are_gls_with_dense_V(unbalanced):
    """docs/mechanics/01_model.md F1.3: beta_hat = (X'V^-1 X)^-1 X'V^-1 y; sigma2 cancels."""
    m = unbalanced
    X, y, groups = design_arrays(m)
    Hinv = np.linalg.inv(dense_covariance(groups, m.tau))
    A = X.T @ Hinv @ X
    np.testing.assert_allclose(m.fixef.to_numpy(), np.linalg.solve(A, X.T @ Hinv @ y), rtol=1e-8)
    np.testing.assert_allclose(m.vcov.to_numpy(), m.sigma2 * np.linalg.inv(A), rtol=1e-8)


# -- 2. Woodbury and pooling -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("tau", [0.4, 12.0, -0.1])
def test_F2_1_woodbury_inverse_of_one_block(n, tau):
    """docs/mechanics/02_woodbury.md F2.1: (I + tau 11')^-1 = I - tau/(1 + n tau) 11'."""
    if not tau > -1.0 / n:
        pytest.skip("below the positive-definite limit")
    rng = np.random.default_rng(n)
    C = rng.normal(size=(n, 3))
    closed = np.eye(n) - tau / (1 + n * tau) * np.ones((n, n))
    np.testing.assert_allclose(closed, np.linalg.inv(dense_covariance(np.zeros(n), tau)), atol=1e-12)
    # One group through the library: its [X|y]' H^-1 [X|y] uses exactly this inverse.
    library = xtvinvx(tau, raw_stats(C[:, :2], C[:, 2], np.zeros(n)))
    np.testing.assert_allclose(library, C.T @ closed @ C, rtol=EXACT_RTOL, atol=1e-12)


def test_F2_2_logdet_is_a_sum_over_group_sizes(small_unbalanced):
    """docs/mechanics/02_woodbury.md F2.2: log|H| = sum_u G_u log(1 + n_u tau)."""
    X, y, groups = small_unbalanced
    s = raw_stats(X, y, groups)
    sizes = pd.Series(groups).value_counts()
    taus = [*TAUS, 0.5 * tau_lower_limit(s)]
    out = evaluate(taus, s)
    for tau, logdet in zip(taus, out.logdet_V, strict=True):
        sign, dense = np.linalg.slogdet(dense_covariance(groups, tau))
        assert sign > 0
        assert logdet == pytest.approx(dense, rel=EXACT_RTOL, abs=1e-10)
        assert logdet == pytest.approx(float(np.log1p(sizes.to_numpy() * tau).sum()), rel=EXACT_RTOL, abs=1e-12)


def test_F2_3_quadratic_form_splits_into_within_and_between():
    """docs/mechanics/02_woodbury.md F2.3: a'H_g^-1 b = within + n abar bbar / (1 + n tau)."""
    rng = np.random.default_rng(3)
    n, tau = 6, 2.5
    a, b = rng.normal(size=n), rng.normal(size=n)
    within = float(((a - a.mean()) * (b - b.mean())).sum())
    between = n * a.mean() * b.mean()
    dense = a @ np.linalg.inv(dense_covariance(np.zeros(n), tau)) @ b
    library = xtvinvx(tau, raw_stats(a[:, None], b, np.zeros(n)))[0, 1]
    assert dense == pytest.approx(within + between / (1 + n * tau), rel=EXACT_RTOL)
    assert library == pytest.approx(dense, rel=EXACT_RTOL)


def test_F2_4_cross_product_with_H_inverse(small_unbalanced):
    """docs/mechanics/02_woodbury.md F2.4: C'H^-1 C = W + sum_g s_g s_g' / (n_g (1 + n_g tau))."""
    X, y, groups = small_unbalanced
    C = np.c_[X, y]
    frame = pd.DataFrame(C)
    sums = frame.groupby(groups).sum().to_numpy()
    counts = frame.groupby(groups).size().to_numpy().astype(float)
    centred = C - frame.groupby(groups).transform("mean").to_numpy()
    W = centred.T @ centred
    s = raw_stats(X, y, groups)
    for tau in TAUS:
        by_group = W + np.einsum("g,gi,gj->ij", 1.0 / (counts * (1 + counts * tau)), sums, sums)
        dense = C.T @ np.linalg.inv(dense_covariance(groups, tau)) @ C
        np.testing.assert_allclose(by_group, dense, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(xtvinvx(tau, s), dense, rtol=1e-9, atol=1e-9)


def test_F2_5_groups_of_equal_size_pool():
    """docs/mechanics/02_woodbury.md F2.5: B_u = sum over groups of size n_u of s_g s_g' / n_u."""
    d = case_data("sim_unbalanced")
    X = np.c_[np.ones(len(d)), d["x1"], d["x2"]]
    s = raw_stats(X, d["y"].to_numpy(), d["g"].to_numpy())
    frame = pd.DataFrame(np.c_[X, d["y"]])
    sums = frame.groupby(d["g"].to_numpy()).sum()
    counts = frame.groupby(d["g"].to_numpy()).size()
    per_size = counts.value_counts().sort_index()
    np.testing.assert_array_equal(s.sizes, per_size.index.to_numpy(dtype=float))
    np.testing.assert_array_equal(s.groups_per_size, per_size.to_numpy(dtype=float))
    for u, size in enumerate(s.sizes):
        rows = sums[counts.to_numpy() == size].to_numpy()
        np.testing.assert_allclose(s.between[u], rows.T @ rows / size, rtol=1e-10, atol=1e-9)
    # Balanced data pool into one size, however many groups.
    for name, size, ngroups in (("dyestuff", 5, 6), ("sleepstudy", 10, 18)):
        m = rl.lmer(load_cases_formula(name), data=case_data(name))
        assert list(m.stats.sizes) == [size] and list(m.stats.groups_per_size) == [ngroups]


def load_cases_formula(name: str) -> str:
    from reference_data import case_formula

    return case_formula(name)


# -- 3. the criterion ----------------------------------------------------------------------


def test_F3_1_minus_two_loglik(small_unbalanced):
    """docs/mechanics/03_criterion.md F3.1: N log(2 pi s2) + log|H| + (y - Xb)'H^-1(y - Xb)/s2."""
    X, y, groups = small_unbalanced
    s = raw_stats(X, y, groups)
    rng = np.random.default_rng(1)
    for tau in (0.3, 4.0):
        beta, sigma2 = rng.normal(size=X.shape[1]), 0.7
        H = dense_covariance(groups, tau)
        resid = y - X @ beta
        formula = (len(y) * np.log(2 * np.pi * sigma2) + criterion_parts(tau, s).logdet_V
                   + resid @ np.linalg.solve(H, resid) / sigma2)
        direct = -2 * stats.multivariate_normal(X @ beta, sigma2 * H).logpdf(y)
        assert formula == pytest.approx(direct, rel=EXACT_RTOL)


def test_F3_2_gls_and_pwrss_from_the_partitioned_matrix(small_unbalanced):
    """docs/mechanics/03_criterion.md F3.2: beta = A^-1 c and pwrss = d - c'A^-1 c."""
    X, y, groups = small_unbalanced
    s = raw_stats(X, y, groups)
    p = X.shape[1]
    for tau in TAUS:
        parts = criterion_parts(tau, s)
        M = xtvinvx(tau, s)
        A, c, d = M[:p, :p], M[:p, p], M[p, p]
        np.testing.assert_allclose(parts.beta, np.linalg.solve(A, c), rtol=1e-9)
        assert parts.pwrss == pytest.approx(d - c @ np.linalg.solve(A, c), rel=1e-9)
        oracle = dense_criterion(X, y, groups, tau)
        np.testing.assert_allclose(parts.beta, oracle["beta"], rtol=1e-8)
        assert parts.pwrss == pytest.approx(oracle["pwrss"], rel=1e-9)


def test_F3_3_profiled_ml_deviance_is_the_minimum_over_beta_and_sigma2():
    """docs/mechanics/03_criterion.md F3.3: min over beta, sigma2 of F3.1, by numerical minimization."""
    d = seed()
    X = np.c_[np.ones(len(d)), d["x"]]
    y, groups = d["y"].to_numpy(), d["f"].to_numpy()
    s = raw_stats(X, y, groups)
    for tau in (0.0, 0.8, 60.0):
        H = dense_covariance(groups, tau)

        def minus_two_loglik(params, H=H):
            beta, log_sigma2 = params[:2], params[2]
            return -2 * stats.multivariate_normal(X @ beta, np.exp(log_sigma2) * H).logpdf(y)

        found = optimize.minimize(minus_two_loglik, x0=[0.0, 0.0, 0.0], method="BFGS",
                                  options={"gtol": 1e-10})
        parts = criterion_parts(tau, s, REML=False)
        assert parts.criterion == pytest.approx(found.fun, rel=NUMERIC_RTOL)
        assert parts.criterion == pytest.approx(
            parts.logdet_V + len(y) * (1 + np.log(2 * np.pi * parts.pwrss / len(y))), rel=EXACT_RTOL)
        assert parts.sigma2 == pytest.approx(np.exp(found.x[2]), rel=1e-5)


@pytest.mark.parametrize("name", ["seed_x", "dyestuff", "sleepstudy", "sim_unbalanced"])
def test_F3_4_reml_criterion_term_by_term(name):
    """docs/mechanics/03_criterion.md F3.4: logdet_V + logdet_XtVinvX + (N-p)(1 + log(2 pi pwrss/(N-p)))."""
    from reference_data import case_formula

    m = rl.lmer(case_formula(name), data=case_data(name))
    parts = criterion_parts(m.tau, m.stats)
    N, p = m.nobs, len(m.fixef)
    by_terms = parts.logdet_V + parts.logdet_XtVinvX + (N - p) * (1 + np.log(2 * np.pi * parts.pwrss / (N - p)))
    assert parts.criterion == pytest.approx(by_terms, rel=EXACT_RTOL)
    assert parts.sigma2 == pytest.approx(parts.pwrss / (N - p), rel=EXACT_RTOL)
    assert m.criterion == pytest.approx(load_reference()[name]["reml"]["criterion"], rel=REFERENCE_RTOL)
    if m.nobs <= 200:
        # The dense oracle in the user's columns (the engine's centring leaves the criterion alone).
        X, y, groups = design_arrays(m)
        for tau in (0.0, 0.5 * m.tau + 0.1, 2 * m.tau + 1):
            assert criterion_parts(tau, m.stats).criterion == pytest.approx(
                dense_criterion(X, y, groups, tau)["criterion"], rel=1e-9)


def _restricted_by_integration(X, y, groups, tau, sigma2) -> float:
    """-2 log of the likelihood integrated over beta (flat weight), by quadrature."""
    V = sigma2 * dense_covariance(groups, tau)
    Vinv = np.linalg.inv(V)
    _, logdet = np.linalg.slogdet(V)
    N = len(y)
    beta_hat = np.linalg.solve(X.T @ Vinv @ X, X.T @ Vinv @ y)
    se = np.sqrt(np.diag(np.linalg.inv(X.T @ Vinv @ X)))

    def minus_two_loglik(*beta):
        r = y - X @ np.asarray(beta)
        return N * np.log(2 * np.pi) + logdet + r @ Vinv @ r

    peak = minus_two_loglik(*beta_hat)
    width = 12.0
    if X.shape[1] == 1:
        value, _ = integrate.quad(lambda b: np.exp(-0.5 * (minus_two_loglik(b) - peak)),
                                  beta_hat[0] - width * se[0], beta_hat[0] + width * se[0], epsabs=0, epsrel=1e-12)
    else:
        value, _ = integrate.dblquad(
            lambda b1, b0: np.exp(-0.5 * (minus_two_loglik(b0, b1) - peak)),
            beta_hat[0] - width * se[0], beta_hat[0] + width * se[0],
            beta_hat[1] - width * se[1], beta_hat[1] + width * se[1], epsabs=0, epsrel=1e-10)
    return peak - 2 * np.log(value)


@pytest.mark.parametrize("tau, sigma2", [(0.7, 2000.0), (3.0, 900.0)])
def test_F3_5_reml_is_ml_integrated_over_beta(tau, sigma2):
    """docs/mechanics/03_criterion.md F3.5: -2 log int L dbeta = -2 l(beta_hat) + log|X'V^-1 X| - p log 2 pi."""
    d = case_data("dyestuff")
    y, groups = d["Yield"].to_numpy(dtype=float), d["Batch"].to_numpy()
    X = np.ones((len(y), 1))
    s = raw_stats(X, y, groups)
    parts = criterion_parts(tau, s)
    N, p = len(y), 1
    ml_at_beta_hat = N * np.log(2 * np.pi * sigma2) + parts.logdet_V + parts.pwrss / sigma2
    logdet_XtVinvX = parts.logdet_XtVinvX - p * np.log(sigma2)
    formula = ml_at_beta_hat + logdet_XtVinvX - p * np.log(2 * np.pi)
    assert formula == pytest.approx(_restricted_by_integration(X, y, groups, tau, sigma2), rel=NUMERIC_RTOL)


def test_F3_5_with_two_fixed_effects():
    """docs/mechanics/03_criterion.md F3.5 on the seed data (p = 2, two-dimensional quadrature)."""
    d = seed()
    X = np.c_[np.ones(len(d)), d["x"]]
    y, groups = d["y"].to_numpy(), d["f"].to_numpy()
    tau, sigma2 = 1.5, 0.2
    parts = criterion_parts(tau, raw_stats(X, y, groups))
    formula = (len(y) * np.log(2 * np.pi * sigma2) + parts.logdet_V + parts.pwrss / sigma2
               + parts.logdet_XtVinvX - 2 * np.log(sigma2) - 2 * np.log(2 * np.pi))
    assert formula == pytest.approx(_restricted_by_integration(X, y, groups, tau, sigma2), rel=NUMERIC_RTOL)


def test_F3_6_restricted_criterion_at_given_sigma2_profiles_to_F3_4(small_unbalanced):
    """docs/mechanics/03_criterion.md F3.6: minimized over sigma2 at pwrss/(N-p), it gives F3.4."""
    X, y, groups = small_unbalanced
    s = raw_stats(X, y, groups)
    N, p = X.shape
    for tau in TAUS:
        parts = criterion_parts(tau, s)

        def restricted(log_sigma2, parts=parts):
            sigma2 = np.exp(log_sigma2)
            return ((N - p) * np.log(2 * np.pi * sigma2) + parts.logdet_V + parts.logdet_XtVinvX
                    + parts.pwrss / sigma2)

        found = optimize.minimize_scalar(restricted, bracket=(-5.0, 5.0), tol=1e-12)
        assert found.fun == pytest.approx(parts.criterion, rel=NUMERIC_RTOL)
        assert np.exp(found.x) == pytest.approx(parts.pwrss / (N - p), rel=1e-5)
        # F3.6 at sigma2 is F3.1 at beta_hat plus log|X'V^-1X| - p log(2 pi) (the F3.5 relation).
        sigma2 = 1.3
        ml = N * np.log(2 * np.pi * sigma2) + parts.logdet_V + parts.pwrss / sigma2
        assert restricted(np.log(sigma2)) == pytest.approx(
            ml + parts.logdet_XtVinvX - p * np.log(sigma2) - p * np.log(2 * np.pi), rel=EXACT_RTOL)


@pytest.mark.parametrize("REML", [True, False])
def test_F3_7_derivative_parts_match_finite_differences(unbalanced, REML):
    """docs/mechanics/03_criterion.md F3.7: the analytic derivative of each part."""
    s = unbalanced.stats
    N, p = s.nobs, s.p
    for tau in (0.02, 0.9, 40.0):
        h = FD_STEP * tau
        up, down = evaluate([tau + h], s, REML), evaluate([tau - h], s, REML)

        def fd(key, up=up, down=down, h=h):
            return float((getattr(up, key)[0] - getattr(down, key)[0]) / (2 * h))

        weights = s.sizes / (1 + s.sizes * tau)
        assert float(weights @ s.groups_per_size) == pytest.approx(fd("logdet_V"), rel=FD_RTOL)
        D = np.tensordot(s.sizes / (1 + s.sizes * tau) ** 2, s.between, axes=1)
        A = xtvinvx(tau, s)[:p, :p]
        assert -np.trace(np.linalg.solve(A, D[:p, :p])) == pytest.approx(fd("logdet_XtVinvX"), rel=FD_RTOL)
        parts = criterion_parts(tau, s, REML)
        v = np.r_[-parts.beta, 1.0]
        assert -v @ D @ v == pytest.approx(fd("pwrss"), rel=FD_RTOL)
        assert parts.derivative == pytest.approx(fd("criterion"), rel=FD_RTOL)
        dof = N - p if REML else N
        total = float(weights @ s.groups_per_size) - v @ D @ v * dof / parts.pwrss
        if REML:
            total -= np.trace(np.linalg.solve(A, D[:p, :p]))
        assert parts.derivative == pytest.approx(total, rel=EXACT_RTOL)


# -- 4. ML versus REML -----------------------------------------------------------------------


def test_F4_1_sigma2_divides_by_n_or_n_minus_p(unbalanced):
    """docs/mechanics/04_ml_vs_reml.md F4.1: sigma2_ML = pwrss/N, sigma2_REML = pwrss/(N - p)."""
    s = unbalanced.stats
    for tau in TAUS:
        reml, ml = criterion_parts(tau, s, True), criterion_parts(tau, s, False)
        np.testing.assert_allclose(reml.beta, ml.beta, rtol=EXACT_RTOL)
        assert reml.pwrss == ml.pwrss
        assert ml.sigma2 == pytest.approx(ml.pwrss / s.nobs, rel=EXACT_RTOL)
        assert reml.sigma2 == pytest.approx(reml.pwrss / (s.nobs - s.p), rel=EXACT_RTOL)
    ref = load_reference()["dyestuff"]
    m_ml = rl.lmer("Yield ~ 1 + (1|Batch)", data=case_data("dyestuff"), REML=False)
    assert m_ml.sigma2 == pytest.approx(ref["ml"]["sigma2"], rel=REFERENCE_RTOL)


def test_F4_2_rescaling_a_column_shifts_reml_only():
    """docs/mechanics/04_ml_vs_reml.md F4.2: X column times c -> REML + 2 log|c|, ML unchanged."""
    d = seed()
    y, groups = d["y"].to_numpy(), d["f"].to_numpy()
    X = np.c_[np.ones(len(d)), d["x"]]
    c = 10.0
    T = np.array([[1.0, -3.0], [0.0, c]])  # scales x by c and shifts it: det T = c
    s, s_scaled = raw_stats(X, y, groups), raw_stats(X @ T, y, groups)
    for tau in TAUS:
        assert criterion_parts(tau, s_scaled).criterion == pytest.approx(
            criterion_parts(tau, s).criterion + 2 * np.log(abs(np.linalg.det(T))), rel=EXACT_RTOL)
        assert criterion_parts(tau, s_scaled, REML=False).criterion == pytest.approx(
            criterion_parts(tau, s, REML=False).criterion, rel=EXACT_RTOL)
    m, m_scaled = rl.fit(X, y, groups), rl.fit(X @ T, y, groups)
    assert m_scaled.tau == pytest.approx(m.tau, rel=1e-8)
    assert m_scaled.fixef.iloc[1] * c == pytest.approx(m.fixef.iloc[1], rel=1e-8)


# -- 5. the balanced case --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dyestuff", "dyestuff2"])
def test_F5_1_balanced_parts_in_closed_form(name):
    """docs/mechanics/05_balanced.md F5.1: pwrss, log|H|, log|X'H^-1X| from SSW and SSB."""
    d = case_data(name)
    t = anova_table(d, "Yield", "Batch")
    m = rl.lmer("Yield ~ 1 + (1|Batch)", data=d)
    for tau in (*TAUS, -0.5 / t["n"]):
        parts = criterion_parts(tau, m.stats)
        lam = 1 + t["n"] * tau
        assert parts.pwrss == pytest.approx(t["ssw"] + t["ssb"] / lam, rel=1e-10)
        assert parts.logdet_V == pytest.approx(t["G"] * np.log(lam), rel=EXACT_RTOL, abs=1e-12)
        assert parts.logdet_XtVinvX == pytest.approx(np.log(t["N"]) - np.log(lam), rel=EXACT_RTOL)


def test_F5_2_reml_equals_the_anova_estimator():
    """docs/mechanics/05_balanced.md F5.2: REML var_group = (MSB - MSW)/n, sigma2 = MSW (Dyestuff)."""
    d = case_data("dyestuff")
    t = anova_table(d, "Yield", "Batch")
    m = rl.lmer("Yield ~ 1 + (1|Batch)", data=d)
    assert m.var_group == pytest.approx((t["msb"] - t["msw"]) / t["n"], rel=1e-9)
    assert m.sigma2 == pytest.approx(t["msw"], rel=1e-9)
    assert 1 + t["n"] * m.tau == pytest.approx(t["msb"] / t["msw"], rel=1e-9)
    assert m.var_group == pytest.approx(1764.05, rel=1e-6)  # the value quoted in the docs
    assert m.var_group == pytest.approx(load_reference()["dyestuff"]["reml"]["var_group"], rel=REFERENCE_RTOL)


def test_F5_3_ml_shrinks_msb_by_one_minus_one_over_G():
    """docs/mechanics/05_balanced.md F5.3: ML var_group = ((1 - 1/G) MSB - MSW)/n."""
    d = case_data("dyestuff")
    t = anova_table(d, "Yield", "Batch")
    m = rl.lmer("Yield ~ 1 + (1|Batch)", data=d, REML=False)
    assert m.var_group == pytest.approx(((1 - 1 / t["G"]) * t["msb"] - t["msw"]) / t["n"], rel=1e-9)
    assert m.sigma2 == pytest.approx(t["msw"], rel=1e-9)
    assert m.var_group == pytest.approx(load_reference()["dyestuff"]["ml"]["var_group"], rel=REFERENCE_RTOL)


@pytest.mark.parametrize("name", ["dyestuff", "dyestuff2"])
def test_F5_4_slope_at_zero_is_positive_exactly_when_msb_below_msw(name):
    """docs/mechanics/05_balanced.md F5.4: n[(G - 1) - (N - 1) SSB / (SSB + SSW)]."""
    d = case_data(name)
    t = anova_table(d, "Yield", "Batch")
    m = rl.lmer("Yield ~ 1 + (1|Batch)", data=d)
    closed = t["n"] * ((t["G"] - 1) - (t["N"] - 1) * t["ssb"] / (t["ssb"] + t["ssw"]))
    assert m.opt_summary.derivative_at_zero == pytest.approx(closed, rel=1e-9)
    assert (closed > 0) == (t["msb"] < t["msw"]) == (m.boundary is not None)


def test_F5_5_compound_symmetry_recovers_the_negative_anova_estimate():
    """docs/mechanics/05_balanced.md F5.5: tau_CS = (MSB/MSW - 1)/n; rho as nlme's gls (Dyestuff2)."""
    d = case_data("dyestuff2")
    t = anova_table(d, "Yield", "Batch")
    cs = rl.lmer("Yield ~ 1 + (1|Batch)", data=d).compound_symmetry
    tau = (t["msb"] / t["msw"] - 1) / t["n"]
    assert cs.tau == pytest.approx(tau, rel=1e-8)
    assert cs.icc == pytest.approx(tau / (1 + tau), rel=1e-8)
    assert cs.icc == pytest.approx(load_reference()["dyestuff2"]["gls_cs"]["rho"], rel=REFERENCE_RTOL)
    assert round(cs.icc, 3) == -0.097  # the value quoted in the docs


# -- 6. boundary, negative ICC, compound symmetry ----------------------------------------------


def test_F6_1_positive_definite_down_to_minus_one_over_max_size(small_unbalanced):
    """docs/mechanics/06_boundary.md F6.1: H > 0 iff tau > -1/max n_g."""
    X, y, groups = small_unbalanced
    s = raw_stats(X, y, groups)
    max_size = pd.Series(groups).value_counts().max()
    lower = tau_lower_limit(s)
    assert lower == -1.0 / max_size
    margin = 1e-6
    assert np.linalg.eigvalsh(dense_covariance(groups, lower * (1 - margin))).min() > 0
    assert np.linalg.eigvalsh(dense_covariance(groups, lower * (1 + margin))).min() < 0
    assert np.isfinite(criterion_parts(lower * (1 - margin), s).criterion)
    with pytest.raises(ValueError, match="max"):
        criterion_parts(lower, s)


@pytest.mark.parametrize("name, group", [("seed_x", "f"), ("sim_unbalanced", "g"), ("sim_negative_icc", "g")])
def test_F6_2_icc_limit_is_minus_one_over_max_size_minus_one(name, group):
    """docs/mechanics/06_boundary.md F6.2: rho > -1/(max n_g - 1)."""
    from reference_data import case_formula

    d = case_data(name)
    m = rl.lmer(case_formula(name), data=d)
    max_size = d[group].value_counts().max()
    lower = tau_lower_limit(m.stats)
    limit_icc = lower / (1 + lower)
    assert limit_icc == pytest.approx(-1.0 / (max_size - 1), rel=EXACT_RTOL)
    assert m.compound_symmetry.icc > limit_icc
    # The limit on the correlation scale is where the dense correlation matrix turns singular.
    groups = d[group].to_numpy()
    def block(rho):
        return (1 - rho) * np.eye(max_size) + rho * np.ones((max_size, max_size))

    margin = 1e-6
    assert np.linalg.eigvalsh(block(limit_icc * (1 - margin))).min() > 0
    assert np.linalg.eigvalsh(block(limit_icc * (1 + margin))).min() < 0
    if name == "seed_x":
        assert limit_icc == pytest.approx(-0.5) and len(groups) == 12


@pytest.mark.parametrize("name", ["seed_x", "dyestuff2", "sim_negative_icc"])
def test_F6_3_compound_symmetry_is_the_same_V(name):
    """docs/mechanics/06_boundary.md F6.3: V_g = sigma_T^2 [(1 - rho) I + rho 11'], nlme's gls."""
    from reference_data import case_formula

    m = rl.lmer(case_formula(name), data=case_data(name))
    cs = m.compound_symmetry
    X, y, groups = design_arrays(m)
    sigma2_resid = cs.sigma2 / (1 + cs.tau)
    same = (groups[:, None] == groups[None, :]).astype(float)
    V_cs = cs.sigma2 * ((1 - cs.icc) * np.eye(len(y)) + cs.icc * same)
    np.testing.assert_allclose(V_cs, sigma2_resid * dense_covariance(groups, cs.tau), rtol=1e-10, atol=1e-14)
    assert cs.criterion == pytest.approx(dense_criterion(X, y, groups, cs.tau)["criterion"], rel=1e-9)
    ref = load_reference()[name]["gls_cs"]
    assert cs.icc == pytest.approx(ref["rho"], rel=1e-4)
    assert cs.sigma2 == pytest.approx(ref["sigma2"], rel=1e-4)
    assert cs.loglik == pytest.approx(ref["loglik"], rel=1e-6)


@pytest.mark.parametrize("name", ["seed_x", "sim_negative_icc", "sleepstudy", "dyestuff2", "sim_contextual"])
@pytest.mark.parametrize("REML", [True, False])
def test_F6_4_slope_at_zero_compares_residual_group_totals(name, REML):
    """docs/mechanics/06_boundary.md F6.4: expected minus observed squared group totals of OLS residuals."""
    from reference_data import case_formula

    m = rl.lmer(case_formula(name), data=case_data(name), REML=REML)
    X, y, groups = design_arrays(m)
    N, p = X.shape
    resid = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    Z = indicator(groups)
    totals = Z.T @ resid
    rss = resid @ resid
    if REML:
        expected = N - np.trace(np.linalg.solve(X.T @ X, X.T @ Z @ Z.T @ X))
        slope = expected - (totals @ totals) / (rss / (N - p))
    else:
        slope = N - N * (totals @ totals) / rss
    assert m.opt_summary.derivative_at_zero == pytest.approx(slope, rel=1e-7, abs=1e-9)
    if m.boundary is not None:
        assert (m.boundary.reason == "negative_icc") == (slope > 0)
        assert m.compound_symmetry.icc < 0


# -- 7. two minima ---------------------------------------------------------------------------


def test_F7_1_slope_is_a_weighted_average_of_within_and_between():
    """docs/mechanics/07_two_minima.md F7.1: (W beta_W + w B beta_B) / (W + w B), w = 1/(1 + n tau)."""
    k = seed_within_between_slopes()
    ref = load_extra_reference()["within_fe"]["seed"]
    assert k["beta_w"] == pytest.approx(ref["within"]["coef"], rel=REFERENCE_RTOL)
    assert k["beta_b"] == pytest.approx(ref["between"]["coef"], rel=REFERENCE_RTOL)
    assert (k["W_xx"], k["B_xx"]) == (pytest.approx(8.0), pytest.approx(1230.0))  # quoted in the docs
    m = rl.lmer("y ~ x + (1|f)", data=seed())
    slope = list(m.fixef.index).index("x")
    for tau in (*TAUS, 1e6):
        w = 1 / (1 + k["n"] * tau)
        formula = (k["W_xx"] * k["beta_w"] + w * k["B_xx"] * k["beta_b"]) / (k["W_xx"] + w * k["B_xx"])
        beta, _, _ = fixed_effects(tau, m.stats)
        assert beta[slope] == pytest.approx(formula, rel=1e-9)
    assert criterion_parts(0.0, m.stats).beta[slope] == pytest.approx(ref["pooled"]["coef"], rel=REFERENCE_RTOL)


def test_F7_2_half_way_tau():
    """docs/mechanics/07_two_minima.md F7.2: at tau = (B/W - 1)/n the slope is half-way."""
    k = seed_within_between_slopes()
    tau_half = (k["B_xx"] / k["W_xx"] - 1) / k["n"]
    m = rl.lmer("y ~ x + (1|f)", data=seed())
    slope = criterion_parts(tau_half, m.stats).beta[list(m.fixef.index).index("x")]
    assert slope == pytest.approx(0.5 * (k["beta_w"] + k["beta_b"]), rel=1e-9)
    assert tau_half == pytest.approx(50.92, abs=0.01)


def test_F7_3_two_minima_on_the_seed_data():
    """docs/mechanics/07_two_minima.md F7.3: REML minima 20.593 (boundary) and 16.173 (global); ML reversed."""
    ref = load_reference()
    m = rl.lmer("y ~ x + (1|f)", data=seed())
    assert [o.kind for o in m.optima] == ["boundary", "interior"]
    np.testing.assert_allclose([o.criterion for o in m.optima], ref["seed_x"]["reml"]["local_optima"]["criterion"],
                               rtol=1e-6)
    assert m.optima[1].is_global and m.optima[0].is_lme4_default
    assert m.optima[1].tau == pytest.approx(ref["seed_x"]["reml"]["theta"] ** 2, rel=1e-5)
    assert round(m.optima[1].tau) == 1990
    assert (round(m.optima[0].fixef["x"], 4), round(m.optima[1].fixef["x"], 3)) == (0.0086, 0.451)
    assert (round(m.optima[0].se["x"], 3), round(m.optima[1].se["x"], 3)) == (0.012, 0.041)
    # lme4 starts at theta0 = 0.153 (R's value, tests/data/lme4_start.json), where the
    # criterion rises, and its probes theta0 (1 +/- 0.75) stay on that side: it walks down
    # to the boundary.
    theta0 = json.loads((Path(__file__).parents[1] / "data" / "lme4_start.json").read_text())["cases"]["seed_x"]["reml"]
    assert m.lme4_start_theta == pytest.approx(theta0["theta0"], rel=1e-12)
    assert round(m.lme4_start_theta, 3) == 0.153
    for theta in (0.25 * m.lme4_start_theta, m.lme4_start_theta, 1.75 * m.lme4_start_theta):
        assert criterion_parts(theta**2, m.stats).derivative > 0
    assert m.lme4_default.criterion == pytest.approx(ref["seed_x"]["reml_lme4_default"]["criterion"], rel=1e-9)
    ml = rl.lmer("y ~ x + (1|f)", data=seed(), REML=False)
    np.testing.assert_allclose([o.criterion for o in ml.optima], ref["seed_x"]["ml"]["local_optima"]["criterion"],
                               rtol=1e-6)
    assert ml.optima[0].is_global and ml.optima[0].kind == "boundary"
    contextual = rl.lmer("y ~ x + (1|g)", data=case_data("sim_contextual"))
    assert contextual.lme4_default.criterion == pytest.approx(65.14, abs=0.005)
    assert contextual.criterion == pytest.approx(12.64, abs=0.005)


def test_F7_4_likelihood_ratio_from_the_global_ml_optima():
    """docs/mechanics/07_two_minima.md F7.4: chi2 = 0.616, p = 0.433 for x on the seed data."""
    ref = load_extra_reference()["anova_nested"]["seed"]["ml_global"]
    m0 = rl.lmer("y ~ 1 + (1|f)", data=seed(), REML=False)
    m1 = rl.lmer("y ~ x + (1|f)", data=seed(), REML=False)
    chisq = m0.criterion - m1.criterion
    assert chisq == pytest.approx(ref["Chisq"], rel=1e-6)
    p = stats.chi2.sf(chisq, df=1)
    assert p == pytest.approx(ref["p_value"], rel=1e-6)
    assert (round(chisq, 3), round(p, 3)) == (0.616, 0.433)


def test_F7_5_within_between_model_has_one_optimum():
    """docs/mechanics/07_two_minima.md F7.5: splitting x removes the second minimum."""
    m = rl.lmer("y ~ x_b + x_w + (1|f)", data=seed())
    assert len(m.optima) == 1
    assert m.criterion == pytest.approx(load_reference()["seed_within_between"]["reml"]["criterion"], rel=1e-6)
    assert m.fixef["x_w"] == pytest.approx(0.4625, rel=1e-9)
    assert not math.isnan(m.compound_symmetry.icc)
