"""The names statsmodels, broom and lme4 users look for, on any fit (issue 14).

:class:`ResultNames` is a mixin: it computes nothing of its own, it only reads what every
fit of the engine has in public (``fixef``, ``se``, ``vcov``, ``sigma2``, ``criterion``,
``loglik``, ``aic``, ``bic``, ``nobs``, ``n_params``, ``REML``, ``coef_table(ddf)``,
``varcorr()``, ``ranef``, ``fitted``) and hands it back under the other names:

==================  ================================  ==========================================
name                as in                             value here
==================  ================================  ==========================================
``params``          statsmodels                       ``fixef`` (fixed effects only, see below)
``bse``             statsmodels                       ``se``
``tvalues``         statsmodels                       ``fixef / se``
``pvalues``         statsmodels, lmerTest             two-sided t test on Satterthwaite's df
``conf_int()``      statsmodels                       Wald intervals on Satterthwaite's df
``llf``             statsmodels                       ``loglik`` (REML log-likelihood for REML)
``scale``           statsmodels                       ``sigma2``
``cov_re``          statsmodels                       variances of the random terms
``fittedvalues``    statsmodels                       ``fitted``
``random_effects``  statsmodels                       the conditional modes, per group level
``sigma``           lme4's ``sigma()``                ``sqrt(sigma2)``
``tidy()``          broom.mixed's ``tidy()``          one row per fixed effect and per sd
``glance()``        broom.mixed's ``glance()``        one row per model
==================  ================================  ==========================================

Where statsmodels' ``MixedLM`` differs, these follow lme4 and lmerTest, whose numbers the
engine is checked against: ``params`` holds the fixed effects only (statsmodels appends
the variance ratio ``Group Var``: here it is ``cov_re / scale``), and ``pvalues`` and
``conf_int`` use the t distribution on Satterthwaite's degrees of freedom, as lmerTest's
``summary`` (statsmodels uses the normal distribution: pass ``ddf="normal"`` to
``conf_int``, or read ``coef_table``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
from scipy import stats as _dist

#: Degrees of freedom ``pvalues``, ``tidy()`` and ``conf_int()`` use by default (lmerTest's).
DEFAULT_DDF = "satterthwaite"
#: statsmodels' label of the random intercept in ``cov_re`` and ``random_effects``.
STATSMODELS_INTERCEPT = "Group"
#: broom.mixed's term names of a random intercept's sd and of the residual sd.
BROOM_SD_INTERCEPT = "sd__(Intercept)"
BROOM_SD_RESIDUAL = "sd__Observation"
#: The columns of ``tidy()`` (broom.mixed on an lmerTest fit).
TIDY_COLUMNS = ("effect", "group", "term", "estimate", "std.error", "statistic", "df", "p.value")


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number strictly between 0 and 1 (0.05 for 95% intervals), got {alpha!r}")
    return float(alpha)


class InformationCriteria:
    """lme4's ``logLik``, ``AIC`` and ``BIC`` from a fit's ``criterion`` (REML criterion or
    deviance) and its ``n_params``; ``BIC`` counts ``bic_nobs`` observations (``nobs``,
    as lme4; nlme counts N - p for REML fits, see the compound-symmetry fit)."""

    @property
    def bic_nobs(self) -> int:
        return self.nobs

    @property
    def loglik(self) -> float:
        """(Restricted) log-likelihood, -criterion / 2."""
        return -0.5 * self.criterion

    @property
    def aic(self) -> float:
        return self.criterion + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.criterion + self.n_params * math.log(self.bic_nobs)


class ResultNames(InformationCriteria):
    """statsmodels', broom's and lme4's names for a fit's quantities (see the module).

    Every value is a new object: changing what one call returns changes no fit.
    """

    # -- statsmodels ------------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        """The fixed effects (``fixef``); statsmodels' ``Group Var`` is ``cov_re / scale``."""
        return self.fixef.copy()

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects (``se``)."""
        return self.se.copy()

    @property
    def tvalues(self) -> pd.Series:
        """t statistics ``fixef / se`` (NaN where the standard error is 0)."""
        se = self.se
        return self.fixef / se.where(se > 0)

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values of the t statistics on Satterthwaite's degrees of freedom,
        as lmerTest's ``summary()`` prints them (``coef_table(ddf)`` for another df)."""
        return self.coef_table(DEFAULT_DDF)["p"].rename(None)

    def conf_int(self, alpha: float = 0.05, ddf: str = DEFAULT_DDF) -> pd.DataFrame:
        """Wald intervals of the fixed effects, ``fixef -/+ q se``, as statsmodels lays
        them out (columns ``0`` and ``1``, one row per coefficient).

        Parameters
        ----------
        alpha : float
            1 - the coverage (0.05: 95% intervals).
        ddf : str
            The quantile ``q``: of the t distribution on ``"satterthwaite"`` (default,
            the df of ``pvalues``, so that an interval excludes 0 exactly when the
            p-value is below ``alpha``), ``"kenward-roger"`` or ``"residual"`` df, or of
            the standard normal (``"normal"``, as statsmodels and lme4's
            ``confint(method = "Wald")``). With ``"kenward-roger"`` the standard errors
            are the adjusted ones, as in ``coef_table("kenward-roger")``.

        Returns
        -------
        pandas.DataFrame
            Columns ``0`` (lower) and ``1`` (upper), indexed by coefficient name.
        """
        alpha = _check_alpha(alpha)
        if ddf == "normal":
            quantile = pd.Series(_dist.norm.ppf(1.0 - alpha / 2.0), index=self.fixef.index)
            se = self.se
        else:
            # The table's SE: Kenward-Roger's is the adjusted one (lmerTest's confint of a
            # contrast), so the interval and the table's t-test agree.
            table = self.coef_table(ddf)
            quantile = pd.Series(_dist.t.ppf(1.0 - alpha / 2.0, table["df"].to_numpy()), index=self.fixef.index)
            se = table["se"]
        half = quantile * se
        return pd.DataFrame({0: self.fixef - half, 1: self.fixef + half})

    @property
    def llf(self) -> float:
        """Log-likelihood at the estimate: restricted for REML fits (``loglik``)."""
        return self.loglik

    @property
    def scale(self) -> float:
        """Residual variance (``sigma2``)."""
        return self.sigma2

    @property
    def sigma(self) -> float:
        """Residual standard deviation, lme4's ``sigma()``."""
        return math.sqrt(self.sigma2)

    @property
    def cov_re(self) -> pd.DataFrame:
        """Covariance matrix of the random effects: diagonal, one row per random term.

        One term is labelled ``"Group"``, as statsmodels labels a random intercept;
        several are labelled by their lme4 term names (``varcorr()``'s index).
        """
        variances = self._random_term_variances()
        if len(variances) == 1:
            variances.index = pd.Index([STATSMODELS_INTERCEPT])
        return pd.DataFrame(np.diag(variances.to_numpy()), index=variances.index, columns=variances.index)

    @property
    def fittedvalues(self) -> pd.Series | None:
        """Conditional fitted values (``fitted``)."""
        return self.fitted

    @property
    def random_effects(self) -> dict:
        """The conditional modes of the random effects.

        One term: statsmodels' layout, ``{level: Series({"Group": mode})}``. Several
        terms (``ranef`` a dict): ``{term: Series of modes indexed by level}``.
        """
        ranef = self.ranef
        if isinstance(ranef, dict):
            return {term: frame["mode"].copy() for term, frame in ranef.items()}
        return {
            level: pd.Series([mode], index=[STATSMODELS_INTERCEPT], name=level)
            for level, mode in zip(ranef.index, ranef["mode"].to_numpy(), strict=True)
        }

    # -- broom.mixed ----------------------------------------------------------------------
    def tidy(self, ddf: str = DEFAULT_DDF) -> pd.DataFrame:
        """One row per fixed effect, then one per standard deviation, as broom.mixed's
        ``tidy()`` of an lmerTest fit.

        Columns ``effect`` (``"fixed"`` or ``"ran_pars"``), ``group`` (the grouping or
        ``"Residual"``; missing for fixed effects), ``term`` (the coefficient, or
        ``sd__(Intercept)`` / ``sd__Observation``), ``estimate``, ``std.error``,
        ``statistic`` (t), ``df`` and ``p.value`` (on ``ddf`` degrees of freedom,
        Satterthwaite's by default); the last four are missing for the sd rows.
        """
        table = self.coef_table(ddf)
        fixed = pd.DataFrame({
            "effect": "fixed",
            "group": None,
            "term": list(table.index),
            "estimate": table["estimate"].to_numpy(),
            "std.error": table["se"].to_numpy(),
            "statistic": table["t"].to_numpy(),
            "df": table["df"].to_numpy(),
            "p.value": table["p"].to_numpy(),
        })
        vc = self.varcorr()
        groups = [str(g) for g in vc.index]
        ran_pars = pd.DataFrame({
            "effect": "ran_pars",
            "group": groups,
            "term": [BROOM_SD_RESIDUAL if g == "Residual" else BROOM_SD_INTERCEPT for g in groups],
            "estimate": vc["sd"].to_numpy(dtype=float),
        })
        out = pd.concat([fixed, ran_pars], ignore_index=True)
        return out.reindex(columns=list(TIDY_COLUMNS))

    def glance(self) -> pd.DataFrame:
        """One row: ``nobs``, ``sigma``, ``logLik``, ``AIC``, ``BIC``, ``REMLcrit`` (REML
        fits) or ``deviance`` (ML fits), and ``df.residual`` = nobs - parameters, as
        broom.mixed's ``glance()`` of an lmer fit."""
        row = {
            "nobs": int(self.nobs),
            "sigma": self.sigma,
            "logLik": self.loglik,
            "AIC": self.aic,
            "BIC": self.bic,
            ("REMLcrit" if self.REML else "deviance"): self.criterion,
            "df.residual": int(self.nobs - self.n_params),
        }
        return pd.DataFrame([row])

    # -- lme4's, lmerTest's and emmeans' calls (one and several terms alike) -------------
    def refit(self, newresp):
        """The same model fitted to a new response, as lme4's ``refit(m, newresp)``; this
        fit is unchanged (see :func:`reml_engine.api.refit`)."""
        from ..api import refit

        return refit(self, newresp)

    def anova(self, ddf: str = DEFAULT_DDF) -> pd.DataFrame:
        """Type III F-tests of the formula's terms, as lmerTest's ``anova(m)`` (its
        default ``type = 3``), for one random term and several alike.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "residual"}
            Satterthwaite's df (lmerTest's default; a term of several df gets lmerTest's
            combination of the df of its orthogonal directions), Kenward-Roger's scaled F
            and df (pbkrtest's, REML fits; for several terms a fit that keeps its rows, at
            most :data:`~reml_engine.inference.terms_kenward_roger.KR_MAX_NOBS` of them),
            or ``n - p``.

        Returns
        -------
        pandas.DataFrame
            One row per term of the fixed part (formulaic's labels), columns ``sum_sq``,
            ``mean_sq``, ``num_df``, ``den_df``, ``f_value``, ``p_value`` (see
            :func:`reml_engine.inference.fixed_tests.anova_type3`).

        Examples
        --------
        >>> import reml_engine as rl
        >>> m = rl.lmer("yield ~ Variety * nitro + (1|Block/Variety)", rl.datasets.oats())
        >>> print(m.anova()[["num_df", "den_df", "f_value"]].round(3))
                       num_df  den_df  f_value
        Variety             2  21.575    1.942
        nitro               1  51.000  115.771
        Variety:nitro       2  51.000    0.499
        """
        from ..inference.fixed_tests import anova_type3

        return anova_type3(self, ddf)

    def ranova(self):
        """Each random term removed in turn, by likelihood ratio, as lmerTest's
        ``ranova(m)``: the model refitted without the term (by REML for a REML fit,
        compared by REML likelihood as lmerTest does; without its only term the model is
        the linear model), with the boundary-correct ``p_mixture`` (50:50
        chi-square(0)/chi-square(1)) next to lmerTest's ``Pr(>Chisq)``. For one term the
        exact finite-sample test is ``test_random_intercept()``.

        Returns
        -------
        AnovaResult
            Rows ``<none>`` and ``(1 | term)`` per term (lme4's order); columns ``npar``,
            ``logLik``, ``AIC``, ``LRT``, ``Df``, ``Pr(>Chisq)``, ``p_mixture`` (see
            :func:`reml_engine.inference.ranova.ranova`).

        Examples
        --------
        >>> import reml_engine as rl
        >>> m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())
        >>> round(float(m.ranova().loc["(1 | Subject)", "logLik"]), 4)
        -946.8318
        """
        from ..inference.ranova import ranova

        return ranova(self)

    def emmeans(self, spec: str, ddf: str = DEFAULT_DDF, level: float = 0.95, by: str | None = None):
        """Estimated marginal means of a factor, as emmeans' ``emmeans(m, "f")`` (or
        ``emmeans(m, "f", by = "g")``).

        Parameters
        ----------
        spec : str
            A categorical variable of the fixed part (a data column); ``"f | g"`` reads
            as ``by="g"``.
        ddf : {"satterthwaite", "kenward-roger", "residual"}
            Degrees of freedom: Satterthwaite's (emmeans' ``lmer.df = "satterthwaite"``),
            Kenward-Roger's with pbkrtest's adjusted covariance (REML fits), or ``n - p``.
        level : float
            Confidence level of the intervals.
        by : str, optional
            Another categorical variable: the means within each of its levels, compared
            within each level by ``pairs()`` and ``contrast()``.

        Returns
        -------
        MarginalMeans
            ``table`` (``emmean``, ``se``, ``df``, ``lower``, ``upper`` per level);
            ``pairs(adjust="tukey")`` and ``contrast()`` compare the levels (see
            :mod:`reml_engine.inference.emmeans`).

        Examples
        --------
        >>> import reml_engine as rl
        >>> m = rl.lmer("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont())
        >>> round(float(m.emmeans("Sex").table.loc["Female", "emmean"]), 4)
        22.6477
        """
        from ..inference.emmeans import emmeans

        return emmeans(self, spec, ddf, level, by)

    # -- helpers ----------------------------------------------------------------------
    def _random_term_variances(self) -> pd.Series:
        """The variance of each random term, from ``varcorr()`` without the residual."""
        vc = self.varcorr()
        variances = vc.loc[[g != "Residual" for g in vc.index], "variance"].astype(float)
        return pd.Series(variances.to_numpy(), index=pd.Index([str(g) for g in variances.index]))


__all__ = ["DEFAULT_DDF", "ResultNames"]
