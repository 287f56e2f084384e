"""Within versus between: the Hausman test and the Mundlak variable-addition test.

Both ask whether the slopes of the within-group variation of the predictors equal
those of their between-group variation; the random-intercept fit assumes they do.

**Hausman.** Under that assumption the random-intercept (GLS) estimate ``b_RE`` is
efficient and the within (fixed-effects) estimate ``b_FE`` consistent either way, so
``Var(b_FE - b_RE) = V_FE - V_RE`` and

``H = (b_FE - b_RE)' (V_FE - V_RE)^-1 (b_FE - b_RE) ~ chi2(k)``

over the ``k`` slopes of columns that vary within groups. In finite samples (and
with estimated variances) ``V_FE - V_RE`` need not be positive definite: then the
statistic uses the Moore-Penrose inverse over the nonzero eigenvalues, ``df`` is its
rank, and the result says so (a negative statistic has no p-value).

**Mundlak.** Add the group means of the within-varying columns to the model,
``y ~ x + between(x) + (1|g)``: their coefficients are the contextual effects,
between minus within, and the Wald test that they are all zero is the same question,
always well defined. The test is an F test with Satterthwaite denominator df.

Examples
--------
>>> import reml_engine as rl
>>> h = rl.hausman("y ~ x + (1|f)", rl.load_seed())
>>> round(h.statistic, 3), h.df
(4.316, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..core.fitting import fit_design
from ..core.results import LmerFit
from ..frontend.design import build_design
from ..frontend.groups import factorize_groups
from ..frontend.transforms import split_columns
from ..inference.ddf import satterthwaite_ftest, satterthwaite_state
from ..inference.lazy_imports import scipy_stats as sps
from ..report.criterion_curve import profile_criterion
from .estimators import LeastSquaresFit, within_estimator, within_varying_columns

#: Eigenvalues of V_FE - V_RE below this fraction of the largest absolute one count as
#: zero (the generalized inverse leaves them out).
EIGEN_RANK_TOL = 1e-10

#: Which optimum of the random-intercept criterion the Hausman test uses.
OPTIMA = ("global", "lme4_default")


@dataclass(frozen=True)
class HausmanTest:
    """Hausman test of the random-intercept fit against the within estimator.

    Attributes
    ----------
    statistic : float
    df : int
        Rank of ``V_FE - V_RE``.
    p_value : float
        Upper chi-square(df) tail; NaN when the statistic is negative.
    b_within, b_random : pandas.Series
        The compared slopes.
    v_within, v_random : pandas.DataFrame
        Their covariances.
    eigenvalues : ndarray
        Of ``V_FE - V_RE``.
    positive_definite : bool
    optimum : str
        ``"global"`` or ``"lme4_default"``: where on the criterion ``b_RE`` was taken.
    tau : float
        var_group / sigma2 of the random-intercept fit used.
    within : LeastSquaresFit
    """

    statistic: float
    df: int
    p_value: float
    b_within: pd.Series
    b_random: pd.Series
    v_within: pd.DataFrame
    v_random: pd.DataFrame
    eigenvalues: np.ndarray
    positive_definite: bool
    optimum: str
    tau: float
    within: LeastSquaresFit

    @property
    def v_diff(self) -> pd.DataFrame:
        return self.v_within - self.v_random

    @property
    def message(self) -> str:
        terms = ", ".join(self.b_within.index)
        text = (
            f"Hausman test of the random-intercept fit ({self.optimum} optimum) against the within estimator "
            f"for {terms}: chi2({self.df}) = {self.statistic:.4g}, p = {self.p_value:.4g}."
        )
        if not self.positive_definite:
            text += (
                f" V_FE - V_RE is not positive definite (eigenvalues {np.array2string(self.eigenvalues, precision=3)}):"
                f" the statistic uses its generalized inverse over {self.df} nonzero eigenvalue(s)"
                + ("; it is negative, so no p-value." if self.statistic < 0 else ".")
            )
        return text

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("HausmanTest", statistic=self.statistic, df=self.df, p_value=self.p_value,
                          optimum=self.optimum, tau=self.tau)

    def _repr_html_(self) -> str:
        from ..report.notebook import hausman_html

        return hausman_html(self)


def _as_fit(formula_or_fit, data, REML: bool, na_action: str):
    if isinstance(formula_or_fit, str):
        if data is None:
            raise ValueError("pass the data frame: hausman(formula, data)")
        return fit_design(build_design(formula_or_fit, data, na_action=na_action), REML=REML)
    return formula_or_fit


def hausman(formula, data: pd.DataFrame | None = None, *, optimum: str = "global", REML: bool = True,
            na_action: str = "omit") -> HausmanTest:
    """Hausman test: within (fixed-effects) estimator against the random-intercept fit.

    Parameters
    ----------
    formula : str or LmerFit
        ``"y ~ x + ... + (1|g)"``, or a fit already made.
    data : pandas.DataFrame
        Needed with a formula.
    optimum : {"global", "lme4_default"}
        Compare with the global optimum of the criterion (the estimate), or with the
        local optimum lme4's default start would return.
    REML : bool
    na_action : {"omit", "raise"}

    Returns
    -------
    HausmanTest
    """
    if optimum not in OPTIMA:
        raise ValueError(f"optimum must be one of {OPTIMA}, got {optimum!r}")
    fit = _as_fit(formula, data, REML, na_action)
    within = within_estimator(fit)
    names = list(within.fixef.index)
    chosen = fit.global_optimum if optimum == "global" else fit.lme4_default
    at = profile_criterion(fit, chosen.tau)
    b_random = at.fixef[names]
    v_random = at.vcov.loc[names, names]
    diff = (within.fixef - b_random).to_numpy()
    v_diff = within.vcov.to_numpy() - v_random.to_numpy()
    v_diff = 0.5 * (v_diff + v_diff.T)
    eigenvalues, vectors = np.linalg.eigh(v_diff)
    nonzero = np.abs(eigenvalues) > EIGEN_RANK_TOL * np.max(np.abs(eigenvalues))
    positive_definite = bool(np.all(eigenvalues > 0) and nonzero.all())
    projected = vectors[:, nonzero].T @ diff
    statistic = float(np.sum(projected**2 / eigenvalues[nonzero]))
    df = int(nonzero.sum())
    p_value = float(sps.chi2.sf(statistic, df)) if statistic >= 0 and df > 0 else float("nan")
    return HausmanTest(
        statistic=statistic,
        df=df,
        p_value=p_value,
        b_within=within.fixef.rename("b_within"),
        b_random=b_random.rename("b_random"),
        v_within=within.vcov,
        v_random=v_random,
        eigenvalues=eigenvalues,
        positive_definite=positive_definite,
        optimum=optimum,
        tau=chosen.tau,
        within=within,
    )


@dataclass(frozen=True)
class MundlakTest:
    """Wald test of the contextual effects in ``y ~ x + between(x) + (1|g)``.

    Attributes
    ----------
    terms : tuple of str
        The added group-mean columns, ``between(<column>)``.
    estimates : pandas.Series
        Their coefficients: between minus within slope of each column.
    vcov : pandas.DataFrame
    statistic : float
        Wald chi-square ``c' V^-1 c``.
    df : int
        Number of contextual effects.
    p_value : float
        The F test's p-value with Satterthwaite df.
    f_statistic : float
        ``statistic / df``.
    den_df : float
        Satterthwaite denominator df.
    method : str
        ``"F (Satterthwaite)"``.
    fit : LmerFit
        The augmented random-intercept fit (at its global optimum).
    """

    terms: tuple[str, ...]
    estimates: pd.Series
    vcov: pd.DataFrame
    statistic: float
    df: int
    p_value: float
    f_statistic: float
    den_df: float
    method: str
    fit: LmerFit

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("MundlakTest", terms=", ".join(self.terms), statistic=self.statistic, df=self.df,
                          p_value=self.p_value, method=self.method)

    def _repr_html_(self) -> str:
        from ..report.notebook import mundlak_html

        return mundlak_html(self)

    @property
    def p_value_chisq(self) -> float:
        return float(sps.chi2.sf(self.statistic, self.df))

    @property
    def message(self) -> str:
        if self.method.startswith("F"):
            test = f"F({self.df}, {self.den_df:.4g}) = {self.f_statistic:.4g}"
        else:
            test = f"chi2({self.df}) = {self.statistic:.4g}"
        return (
            f"Mundlak test that the contextual effects {', '.join(self.terms)} are zero (within and between "
            f"slopes equal): {test}, p = {self.p_value:.4g}."
        )

    def __str__(self) -> str:
        return self.message


def mundlak_design(design, fit):
    """The design with the group mean of every within-varying column added.

    The new columns are named ``between(<column>)``; they are computed on the rows the
    fit used (after missing values were dropped).
    """
    varying = within_varying_columns(fit)
    X = design.X
    codes = factorize_groups(design.groups, design.group_name)
    _, means = split_columns(X[:, varying], codes.codes, codes.ngroups)
    names = tuple(design.column_names) + tuple(f"between({design.column_names[j]})" for j in varying)
    return replace(design, X=np.hstack([X, means]), column_names=names, model_spec=None)


def _satterthwaite_f(fit, L: np.ndarray) -> tuple[float, float]:
    """(F, den_df) of ``L beta = 0`` with Satterthwaite df."""
    result = satterthwaite_ftest(fit, satterthwaite_state(fit), L, np.zeros(len(L)))
    return float(result.f_value), float(result.den_df)


def mundlak(formula, data: pd.DataFrame | None = None, *, REML: bool = True, na_action: str = "omit") -> MundlakTest:
    """Mundlak's variable-addition test: are the contextual effects zero?

    Fits ``y ~ X + groupmean(X_w) + (1|g)``, where ``X_w`` are the columns of the
    fixed-effect design that vary within groups, and tests the group-mean
    coefficients jointly by a Wald test at the global optimum.

    Parameters
    ----------
    formula : str
        ``"y ~ x + ... + (1|g)"`` (without the group means: they are added).
    data : pandas.DataFrame
    REML : bool
    na_action : {"omit", "raise"}

    Returns
    -------
    MundlakTest
    """
    if not isinstance(formula, str):
        raise ValueError("mundlak() takes a formula and data, as lmer does")
    if data is None:
        raise ValueError("pass the data frame: mundlak(formula, data)")
    design = build_design(formula, data, na_action=na_action)
    base = fit_design(design, REML=REML)
    augmented = fit_design(mundlak_design(base.design, base), REML=REML)
    terms = tuple(name for name in augmented.fixef.index if name.startswith("between(")
                  and name not in design.column_names)
    if not terms:
        raise ValueError("no column varies within groups (or its group mean is collinear): nothing to test")
    estimates = augmented.fixef[list(terms)]
    vcov = augmented.vcov.loc[list(terms), list(terms)]
    c = estimates.to_numpy()
    statistic = float(c @ np.linalg.solve(vcov.to_numpy(), c))
    k = len(terms)
    L = np.zeros((k, len(augmented.fixef)))
    for row, term in enumerate(terms):
        L[row, augmented.fixef.index.get_loc(term)] = 1.0
    f_value, den_df = _satterthwaite_f(augmented, L)
    p_value = float(sps.f.sf(f_value, k, den_df))
    method = "F (Satterthwaite)"
    return MundlakTest(terms, estimates, vcov, statistic, k, p_value, f_value, den_df, method, augmented)


__all__ = ["HausmanTest", "MundlakTest", "hausman", "mundlak", "mundlak_design"]
