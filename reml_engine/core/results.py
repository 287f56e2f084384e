"""Result objects: built once, complete, immutable. Derived values are properties."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np
import pandas as pd

from ..frontend.design import Design, FixedEncoding
from .criterion import fixed_effects
from .optimizer import OptSummary
from .parametrization import UserParametrization, standard_errors
from .result_names import InformationCriteria, ResultNames
from .statistics import GroupStats, PooledStats

#: lme4's isSingular() tolerance on theta = sigma_b / sigma.
SINGULAR_TOL = 1e-4


#: The fixed effects at a tau in the user's columns, ``(fixef, vcov)``: what an optimum
#: reads on first access of its ``fixef`` (see :func:`reml_engine.build_fit`).
FixedEffectsAt = Callable[[float], tuple[pd.Series, pd.DataFrame]]


@dataclass(frozen=True)
class LocalOptimum:
    """One local minimum of the profiled criterion over var_group >= 0, as a fit.

    Attributes
    ----------
    tau, theta, criterion : float
        var_group / sigma2, sqrt(tau), and the criterion there.
    kind : str
        ``"boundary"`` (var_group = 0) or ``"interior"``.
    sigma2, var_group : float
    fixef, se : pandas.Series
        Computed on first read (a pure function of the fit's statistics at ``tau``) and
        kept: most fits never read them, and the estimate's are the fit's own.
    is_global : bool
        True for the estimate.
    is_lme4_default : bool
        True for the optimum lme4's ``lmer()`` returns with its default settings (its
        start ``theta0 = sqrt(between / within)`` and BOBYQA, see
        :mod:`reml_engine.core.lme4_path`).
    """

    tau: float
    criterion: float
    kind: str
    sigma2: float
    is_global: bool
    is_lme4_default: bool
    fixed_effects_at: FixedEffectsAt = field(repr=False, compare=False)

    # Pickled as its fields, whether or not a lazy value was read.
    def __getstate__(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @cached_property
    def fixef(self) -> pd.Series:
        return self.fixed_effects_at(self.tau)[0]

    @cached_property
    def se(self) -> pd.Series:
        return standard_errors(self.fixed_effects_at(self.tau)[1])

    @property
    def theta(self) -> float:
        return math.sqrt(self.tau)

    @property
    def var_group(self) -> float:
        return self.tau * self.sigma2

    @property
    def icc(self) -> float:
        return self.tau / (1.0 + self.tau)


@dataclass(frozen=True)
class CompoundSymmetryFit(InformationCriteria):
    """The same fixed effects with var_group allowed below 0 (compound symmetry).

    Equivalent to nlme's ``gls(..., correlation = corCompSymm(~1|g))``: within a group
    the responses have variance ``sigma2`` and correlation ``icc`` (which may be
    negative, down to ``-1 / (max n_g - 1)``).

    Attributes
    ----------
    tau : float
        var_group / residual variance of the random-intercept parametrization.
    icc : float
        Within-group correlation rho = tau / (1 + tau) (nlme's ``Rho``).
    fixef, se : pandas.Series
    vcov : pandas.DataFrame
        Computed on first read (a pure function of the fit's statistics at ``tau``) and
        kept.
    sigma2 : float
        Total variance of one response (nlme's ``sigma^2``).
    criterion : float
        -2 x (restricted) log-likelihood, comparable with the random-intercept fit's.
    at_limit : bool
        True when the criterion falls towards the positive-definite limit of V: either
        the estimate is at that limit, or (for ML, typically) the criterion is unbounded
        below there and the estimate reported is the lowest proper minimum.
    optima : tuple
        Every local minimum over the extended range (Optimum objects).
    """

    tau: float
    sigma2: float
    criterion: float
    REML: bool
    nobs: int
    at_limit: bool
    fixed_effects_at: FixedEffectsAt = field(repr=False, compare=False)
    optima: tuple = ()

    # Pickled as its fields, whether or not a lazy value was read.
    def __getstate__(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        from ..report.notebook import short_repr

        return short_repr("CompoundSymmetryFit", tau=self.tau, icc=self.icc, sigma2=self.sigma2,
                          criterion=self.criterion, at_limit=self.at_limit, optima=len(self.optima))

    @cached_property
    def fixef(self) -> pd.Series:
        return self.fixed_effects_at(self.tau)[0]

    @cached_property
    def vcov(self) -> pd.DataFrame:
        return self.fixed_effects_at(self.tau)[1]

    @property
    def icc(self) -> float:
        return self.tau / (1.0 + self.tau)

    @property
    def se(self) -> pd.Series:
        return standard_errors(self.vcov)

    def coef_table(self) -> pd.DataFrame:
        """Estimate, SE, df = n - p, t and p, as nlme's ``summary(gls)``."""
        # Imported here: inference imports core (see LmerFit).
        from ..inference.fixed_tests import compound_symmetry_coef_table

        return compound_symmetry_coef_table(self)

    @property
    def n_params(self) -> int:
        return len(self.fixef) + 2

    @property
    def bic_nobs(self) -> int:
        # nlme counts N - p observations for REML fits.
        return self.nobs - len(self.fixef) if self.REML else self.nobs


@dataclass(frozen=True)
class Boundary:
    """Why the estimate sits at var_group = 0.

    Attributes
    ----------
    reason : str
        ``"negative_icc"``: the criterion rises from 0 into positive var_group, so it
        falls towards negative values, i.e. towards a negative intra-class correlation,
        which the random-intercept model cannot express.
        ``"flat"``: the derivative at 0 is exactly zero.
    derivative : float
        d criterion / d tau at tau = 0 (positive for ``"negative_icc"``).
    criterion : float
        The criterion at the boundary.
    extended_icc : float
        The intra-class correlation at the optimum of the compound-symmetry criterion.
    extended_criterion : float
        The criterion there (lower than at the boundary).
    message : str
        The explanation, as printed in the summary.
    """

    reason: str
    derivative: float
    criterion: float
    extended_icc: float
    extended_criterion: float
    message: str


#: The columns of :attr:`LmerFit.ranef` (one Index shared by every fit: it is immutable).
_RANEF_COLUMNS = pd.Index(["mode", "condvar"])


def random_effects(group_stats: GroupStats, sums: np.ndarray, tau: float, beta: np.ndarray, sigma2: float
                   ) -> pd.DataFrame:
    """Conditional modes and variances of the random intercepts (lme4's ranef(condVar=TRUE)).

    ``b_g = tau n_g / (1 + n_g tau) * mean_g(y - X beta)`` and
    ``Var(b_g | y) = sigma2 tau / (1 + n_g tau)`` (given beta, as lme4 reports it); ``sums``
    are the group sums of the internal columns, in which ``beta`` is.
    """
    counts = group_stats.counts.astype(np.float64)
    resid_mean = (sums[:, -1] - sums[:, :-1] @ beta) / counts
    shrink = tau * counts / (1.0 + tau * counts)
    values = np.empty((len(counts), 2))
    values[:, 0] = shrink * resid_mean
    values[:, 1] = sigma2 * tau / (1.0 + tau * counts)
    return pd.DataFrame(values, index=group_stats.levels, columns=_RANEF_COLUMNS)


@dataclass(frozen=True)
class LmerCall:
    """The arguments of the :func:`reml_engine.lmer` call that made a fit, for
    ``update()`` and ``drop1()`` to refit with some of them changed.

    ``data`` is a shallow copy of the caller's frame: with pandas' copy-on-write, a later
    change to the caller's frame does not reach it, so a refit reads the data the fit
    was made from.
    """

    formula: str
    data: pd.DataFrame = field(repr=False)
    REML: bool
    na_action: str = "omit"
    dialect: str = "python"
    contrasts: dict | None = None


@dataclass(frozen=True)
class LmerFit(ResultNames):
    """A fitted random-intercept model ``y = X beta + b_group + e``.

    Built by :func:`reml_engine.lmer` or :func:`reml_engine.fit` (the last stage,
    :func:`reml_engine.build_fit`). All attributes are read-only.

    The methods that reach the later stages (``summary``, ``confint``, ``predict``,
    ``plot_*``, ...) import their module when called: ``inference`` and ``report`` are
    built on this class (they import ``core``), so importing them at the top of this
    module would be an import cycle. statsmodels' and
    broom's names (``params``, ``pvalues``, ``tidy()``, ...) come from
    :class:`~reml_engine.core.result_names.ResultNames`.
    """

    REML: bool
    fixef: pd.Series
    vcov: pd.DataFrame
    sigma2: float
    tau: float
    criterion: float
    nobs: int
    ngroups: int
    optima: tuple[LocalOptimum, ...]
    boundary: Boundary | None
    compound_symmetry: CompoundSymmetryFit
    opt_summary: OptSummary
    stats: PooledStats = field(repr=False)
    group_stats: GroupStats = field(repr=False)
    #: The map from the engine's centred columns (``stats``) to the user's coefficients.
    parametrization: UserParametrization = field(repr=False)
    response_name: str = "y"
    group_name: str = "group"
    formula: str | None = None
    dropped_columns: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: The rows (an in-memory fit); None for a fit from chunks, Dask or statistics.
    design: Design | None = field(default=None, repr=False)
    group_codes: np.ndarray | None = field(default=None, repr=False)
    singular_tol: float = SINGULAR_TOL
    #: lme4's starting theta for this response and grouping (see reml_engine.core.lme4_path).
    lme4_start_theta: float = math.nan
    #: The name of the data (the ``Data:`` line of the summary), when it had one.
    data_name: str | None = None
    #: The lmer() call, for update() and drop1(); None for fits from arrays or statistics.
    call: LmerCall | None = field(default=None, repr=False)
    #: How rows become X, for a fit from chunks, Dask or Parquet (no ``design``): what
    #: predict, simulate and the type III table read (see :attr:`encoding`).
    fixed_encoding: FixedEncoding | None = field(default=None, repr=False)

    # -- the contract's derived values -------------------------------------------------
    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return standard_errors(self.vcov)

    @property
    def var_group(self) -> float:
        """Random-intercept variance sigma_b^2 = tau * sigma2."""
        return self.tau * self.sigma2

    @property
    def theta(self) -> float:
        """sigma_b / sigma (lme4's theta)."""
        return math.sqrt(self.tau)

    @property
    def icc(self) -> float:
        """Intra-class correlation var_group / (var_group + sigma2)."""
        return self.tau / (1.0 + self.tau)

    @property
    def n_params(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, theta and sigma (as lme4)."""
        return len(self.fixef) + 2

    @property
    def singular(self) -> bool:
        """True when theta is within ``singular_tol`` of 0 (lme4's isSingular)."""
        return self.theta < self.singular_tol

    @property
    def global_optimum(self) -> LocalOptimum:
        return next(o for o in self.optima if o.is_global)

    @property
    def lme4_default(self) -> LocalOptimum:
        """The optimum lme4's ``lmer()`` returns with its default start and optimizer."""
        return next(o for o in self.optima if o.is_lme4_default)

    @property
    def encoding(self) -> Design | FixedEncoding | None:
        """How rows become the fixed-effect design (formula, formulaic spec, numeric
        columns): the design of an in-memory fit, the encoding of a fit from chunks, Dask
        or Parquet; None for fits from arrays or statistics."""
        if self.design is not None and self.design.model_spec is not None:
            return self.design
        return self.fixed_encoding

    @cached_property
    def ranef(self) -> pd.DataFrame:
        """Conditional modes and variances of the random intercepts (lme4's
        ``ranef(condVar = TRUE)``): columns ``mode`` and ``condvar``, one row per group level.

        Computed on first read from the fit's own statistics and kept (a pure function
        of the fit: most fits are never asked for it, and its table of G rows cost as
        much as the rest of the result).
        """
        beta = fixed_effects(self.tau, self.stats, self.REML)[0]
        return random_effects(self.group_stats, self.parametrization.internal_sums(self.group_stats), self.tau,
                              beta, self.sigma2)

    # -- conditional fitted values -----------------------------------------------------
    @cached_property
    def _fitted_rows(self) -> np.ndarray | None:
        """``X beta + b_g`` of the rows fitted, computed once (read-only)."""
        if self.design is None or self.group_codes is None:
            return None
        from ..inference.predict import fixed_part

        values = fixed_part(self, self.design.X) + self.ranef["mode"].to_numpy()[self.group_codes]
        values.flags.writeable = False
        return values

    def _on_data_rows(self, values: np.ndarray, name: str) -> pd.Series:
        """``values`` of the fitted rows as a Series on the data's index, NaN on the rows
        dropped for missing values (R's ``na.exclude``)."""
        design = self.design
        if design.data_index is None:
            index = design.row_index if design.row_index is not None else pd.RangeIndex(len(values))
            return pd.Series(values, index=index, name=name, copy=True)
        if design.kept_rows is None:
            return pd.Series(values, index=design.data_index, name=name, copy=True)
        padded = np.full(len(design.data_index), np.nan)
        padded[design.kept_rows] = values
        return pd.Series(padded, index=design.data_index, name=name)

    @property
    def fitted(self) -> pd.Series | None:
        """Fitted values ``X beta + b_g``, conditional on the random intercepts: a Series
        on the data's index, NaN where a row was dropped for missing values (None for
        fits from statistics only)."""
        values = self._fitted_rows
        return None if values is None else self._on_data_rows(values, "fitted")

    @property
    def resid(self) -> pd.Series | None:
        """Conditional residuals ``y - fitted``, laid out as :attr:`fitted`."""
        values = self._fitted_rows
        return None if values is None else self._on_data_rows(self.design.y - values, "resid")

    @property
    def scaled_residuals(self) -> np.ndarray | None:
        """Residuals of the fitted rows over sigma (the summary's quantiles)."""
        values = self._fitted_rows
        return None if values is None else (self.design.y - values) / math.sqrt(self.sigma2)

    def coef(self) -> pd.DataFrame:
        """Coefficients per group, as lme4's ``coef()``: the fixed effects, with each
        group's conditional mode added to the intercept. One row per group level.

        The intercept is the column of ones (``(Intercept)`` in a formula fit, whatever
        its name in a fit from arrays); a model without one gets an ``(Intercept)``
        column of the modes alone, first, as lme4 gives it.
        """
        modes = self.ranef["mode"].to_numpy()
        table = pd.DataFrame(
            np.tile(self.fixef.to_numpy(), (len(modes), 1)), index=self.ranef.index.copy(),
            columns=self.fixef.index.copy(),
        )
        position = self.parametrization.intercept_index
        if position is None and "(Intercept)" in table.columns:
            position = table.columns.get_loc("(Intercept)")
        if position is None:
            table.insert(0, "(Intercept)", modes)
        else:
            table.iloc[:, position] += modes
        return table

    # -- refits (lme4's update and drop1) ---------------------------------------------
    def update(self, formula: str | None = None, data: pd.DataFrame | None = None, REML: bool | None = None,
               **kwargs) -> LmerFit:
        """Refit with some arguments of the :func:`reml_engine.lmer` call changed, as lme4's
        ``update()``: ``m.update(". ~ . - x")``, ``m.update(REML=False)``,
        ``m.update(data=other)``. This fit is unchanged (see :func:`reml_engine.api.update`
        for the formula's ``.`` rules)."""
        from ..api import update

        return update(self, formula, data, REML, **kwargs)

    def drop1(self, test: str = "Chisq") -> pd.DataFrame:
        """Each droppable fixed term dropped in turn, compared by ML likelihood ratio, as
        lme4's ``drop1(m, test = "Chisq")``: columns ``npar``, ``AIC``, ``LRT`` and
        ``Pr(Chi)`` (see :func:`reml_engine.inference.drop1.drop1`)."""
        from ..inference.drop1 import drop1

        return drop1(self, test)

    # -- predictions, simulation, variance components (front end) ---------------------
    def predict(self, newdata: pd.DataFrame | None = None, re: bool = True, *, X=None, groups=None):
        """Predicted responses; new groups get the population prediction (see
        :func:`reml_engine.inference.predict.predict`)."""
        from ..inference.predict import predict

        return predict(self, newdata, re=re, X=X, groups=groups)

    def simulate(self, nsim: int = 1, seed=None, re: bool = False, newdata: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
        """Responses drawn from the fitted model, for the fitting rows or ``newdata``
        (needed by fits from chunks, Dask or Parquet; see
        :func:`reml_engine.inference.predict.simulate`)."""
        from ..inference.predict import simulate

        return simulate(self, nsim, seed=seed, re=re, newdata=newdata)

    def varcorr(self) -> pd.DataFrame:
        """Variance components, as lme4's ``VarCorr``: one row for the group, one residual.

        Columns ``name`` (the term), ``variance`` and ``sd``.
        """
        return pd.DataFrame(
            {
                "name": ["(Intercept)", ""],
                "variance": [self.var_group, self.sigma2],
                "sd": [math.sqrt(self.var_group), math.sqrt(self.sigma2)],
            },
            index=pd.Index([self.group_name, "Residual"], name="group"),
        )

    # -- teaching: the criterion at any tau, and plots ----------------------------------
    def profile_criterion(self, tau: float | None = None, *, icc: float | None = None, REML: bool | None = None):
        """The criterion and its named parts at any tau or ICC, negative ones included
        (see :func:`reml_engine.report.criterion_curve.profile_criterion`)."""
        from ..report.criterion_curve import profile_criterion

        return profile_criterion(self, tau, icc=icc, REML=REML)

    def plot_profile(self, REML: bool | None = None, ax=None, log_tau_ax=None):
        """Plot the criterion against the ICC (and against log10(tau)) with every optimum
        marked (needs matplotlib; see :func:`reml_engine.report.plots.plot_profile`).
        Returns a :class:`~reml_engine.report.plots.ProfilePlot`."""
        from ..report.plots import plot_profile

        return plot_profile(self, REML=REML, ax=ax, log_tau_ax=log_tau_ax)

    def plot_ranef(self, ax=None, sort: bool = True):
        """Caterpillar plot of the random intercepts (needs matplotlib; see
        :func:`reml_engine.report.plots.plot_ranef`). Returns a
        :class:`~reml_engine.report.plots.RanefPlot`."""
        from ..report.plots import plot_ranef

        return plot_ranef(self, ax=ax, sort=sort)

    # -- inference (see coef_table, vartest, confint, bootstrap) -------------------------
    def coef_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Estimate, SE, df, t and p per fixed effect; ``ddf`` is ``"satterthwaite"``,
        ``"kenward-roger"`` or ``"residual"`` (see :func:`reml_engine.inference.fixed_tests.coef_table`)."""
        from ..inference.fixed_tests import coef_table

        return coef_table(self, ddf)

    def contrast_test(self, L, rhs=0.0, ddf: str = "satterthwaite"):
        """F-test of ``L beta = rhs`` (see :func:`reml_engine.inference.fixed_tests.contrast_test`)."""
        from ..inference.fixed_tests import contrast_test

        return contrast_test(self, L, rhs, ddf)

    def test_random_intercept(self, method: str = "exact", n_sim: int | None = None, seed: int | None = 1):
        """Test var_group = 0: ``"exact"`` (R)LRT null or the 50:50 ``"mixture"``
        (see :func:`reml_engine.inference.variance_tests.test_random_intercept`)."""
        from ..inference.variance_tests import EXACT_NSIM, test_random_intercept

        return test_random_intercept(self, method, EXACT_NSIM if n_sim is None else n_sim, seed)

    def confint(self, method: str = "profile", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Intervals for sd_group, sigma, the fixed effects (and the ICC for
        ``"profile"``); ``method`` is ``"profile"``, ``"wald"`` or ``"boot"``
        (see :func:`reml_engine.inference.intervals.confint`)."""
        from ..inference.intervals import confint

        return confint(self, method, level, **kwargs)

    def bootstrap(self, n_boot: int = 1000, seed: int | None = None, progress: bool | None = None):
        """Parametric bootstrap replicates (see :func:`reml_engine.inference.bootstrap.parametric_bootstrap`)."""
        from ..inference.bootstrap import parametric_bootstrap

        return parametric_bootstrap(self, n_boot, seed, progress)

    # -- rendering --------------------------------------------------------------------
    def summary(self, ddf: str = "Satterthwaite") -> str:
        """lmerTest-style text report with the boundary and local-optimum notes.

        Parameters
        ----------
        ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
            The df of the fixed effects' t tests, as lmerTest's ``summary(m, ddf=)``:
            Satterthwaite's (default), Kenward-Roger's (with pbkrtest's adjusted standard
            errors; REML fits), or ``"lme4"`` for lme4's table without df and p-values.
            The engine's names (``"satterthwaite"``, ``"kenward-roger"``, ``"kr"``,
            ``"residual"``) are accepted too.

        The notes are kept short; :meth:`explain` says at length what the optimizer found.
        """
        from ..report.render import render_summary, summary_ddf

        return render_summary(self, summary_ddf(ddf))

    def explain(self) -> str:
        """What the optimizer found, in plain words: the global optimum and the other
        local optima, the boundary and why, what lme4's ``lmer()`` would return, and the
        compound-symmetry fit (see :func:`reml_engine.report.explain.explain`);
        ``print(m.explain())`` to read it."""
        from ..report.explain import explain

        return explain(self)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from ..report.render import render_html

        return render_html(self)

    def __repr__(self) -> str:
        kind = "REML" if self.REML else "ML"
        return (
            f"<LmerFit {kind} {self.formula or ''} nobs={self.nobs} ngroups={self.ngroups} "
            f"var_group={self.var_group:.6g} sigma2={self.sigma2:.6g} criterion={self.criterion:.6f}>"
        )
