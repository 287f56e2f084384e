"""The result of a fit with several random-intercept terms: built once, read-only.

:class:`TermsFit` is what :func:`reml_engine.lmer` returns for a formula with two or more
random-intercept terms (``(1|subj) + (1|item)``, ``(1|school/class)``), or with prior
weights or an offset: the fit at the global optimum of the profiled criterion over the
box of variance ratios, every local minimum found (:class:`TermsOptimum`), which terms
sit at variance 0 and why, and the optimum lme4's default start would return.

Every pandas object it hands out is a copy: nothing a caller does to ``m.fixef`` or
``m.ranef["subj"]`` changes the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ..varcomp.optimizer import TermBoundary, VCOptSummary
from .parametrization import standard_errors
from .result_names import DEFAULT_DDF, ResultNames
from .results import SINGULAR_TOL


def _read_only(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


class PerTermVariances:
    """lme4's theta and the variances per term, from ``tau``, ``sigma2`` and ``term_names``
    (of an optimum and of the fit alike)."""

    @property
    def theta(self) -> pd.Series:
        """lme4's theta: sd_j / sigma = sqrt(tau_j) per term."""
        return pd.Series(np.sqrt(self.tau), index=list(self.term_names), name="theta")

    @property
    def variances(self) -> pd.Series:
        """``var_j = tau_j sigma2`` per term."""
        return pd.Series(self.tau * self.sigma2, index=list(self.term_names), name="variance")


@dataclass(frozen=True, eq=False)
class TermsOptimum(PerTermVariances):
    """One local minimum of the criterion over the variance ratios, as a fit.

    Attributes
    ----------
    term_names : tuple of str
    tau : ndarray (k,)
        ``var_j / sigma2`` per term (read-only).
    criterion, sigma2 : float
    is_global, is_lme4_default : bool
        The estimate; the optimum lme4's ``lmer()`` is predicted to return from its
        default start (:mod:`reml_engine.varcomp.lme4_start`).
    """

    term_names: tuple[str, ...]
    tau: np.ndarray
    criterion: float
    sigma2: float
    _fixef: pd.Series = field(repr=False)
    _se: pd.Series = field(repr=False)
    is_global: bool = False
    is_lme4_default: bool = False

    @property
    def fixef(self) -> pd.Series:
        return self._fixef.copy()

    @property
    def se(self) -> pd.Series:
        return self._se.copy()

    @property
    def at_zero(self) -> tuple[str, ...]:
        """The terms whose variance is 0 here."""
        return tuple(name for name, t in zip(self.term_names, self.tau, strict=True) if t == 0)

    @property
    def kind(self) -> str:
        return "boundary" if self.at_zero else "interior"


@dataclass(frozen=True, eq=False)
class TermsFit(PerTermVariances, ResultNames):
    """A fitted model ``y - offset = X beta + sum_j b_j[level of term j] + e`` with
    ``b_j ~ N(0, var_j)`` and ``e ~ N(0, sigma2 / w)``.

    Built by :func:`reml_engine.lmer` (see :func:`reml_engine.core.terms_fitting.fit_terms_design`).

    Attributes
    ----------
    REML : bool
    term_names : tuple of str
        lme4's term names, in lme4's order (decreasing number of levels): ``cask:batch``,
        ``batch`` for ``(1|batch/cask)``.
    tau : ndarray (k,)
        ``var_j / sigma2`` at the estimate (read-only).
    sigma2, criterion : float
        Residual variance; REML criterion (lme4's ``REMLcrit()``) or deviance.
    nobs : int
    optima : tuple of TermsOptimum
        Every local minimum found, lowest first (the first is the estimate).
    boundary : tuple of TermBoundary
        One per term of the estimate at variance 0, with the reason (``"negative"``: the
        criterion would keep falling towards a negative variance; ``"flat"``).
    opt_summary : VCOptSummary
        The optimizer's record (search, grid, refinements, evaluations).
    notes : tuple of str
        The boundary reasons, the other local minima, the optimum lme4 would return.
    weighted, has_offset : bool
    design : TermsDesign or None
        The rows (a fit from :func:`reml_engine.lmer`); None for a fit from chunks, Dask,
        Parquet or statistics.
    problem : VCProblem
        The criterion, built from the statistics (:class:`~reml_engine.varcomp.VCStats`,
        ``problem.stats``) the ML refit of ``anova()`` starts from. Their size is that of
        the levels and occupied cells, not of the rows: per term and level a count, a
        weight and ``p + 1`` sums; per pair of terms its non-empty cells; a
        ``(p + 1) x (p + 1)`` cross-product.
    terms_encoding : TermsEncoding or None
        For a fit without rows: the fixed part's encoding, each term's grouping columns
        and the offset columns, which ``predict(newdata)`` and ``simulate(newdata=)``
        read new rows with (see :attr:`encoding`).

    statsmodels', broom's and lme4's names (``params``, ``bse``, ``tvalues``, ``pvalues``,
    ``conf_int()``, ``llf``, ``scale``, ``sigma``, ``cov_re``, ``fittedvalues``,
    ``random_effects``, ``tidy()``, ``glance()``) come from
    :class:`~reml_engine.core.result_names.ResultNames`, with Satterthwaite's df.
    """

    REML: bool
    term_names: tuple[str, ...]
    tau: np.ndarray
    sigma2: float
    criterion: float
    nobs: int
    optima: tuple[TermsOptimum, ...]
    boundary: tuple[TermBoundary, ...]
    opt_summary: VCOptSummary = field(repr=False)
    notes: tuple[str, ...]
    _fixef: pd.Series = field(repr=False)
    _vcov: pd.DataFrame = field(repr=False)
    _ngroups: pd.Series = field(repr=False)
    _ranef: dict = field(repr=False)
    formula: str | None = None
    response_name: str = "y"
    dropped_columns: tuple[str, ...] = ()
    weighted: bool = False
    has_offset: bool = False
    lme4_start_theta: np.ndarray | None = field(default=None, repr=False)
    design: object = field(default=None, repr=False)
    problem: object = field(default=None, repr=False)
    singular_tol: float = SINGULAR_TOL
    terms_encoding: object = field(default=None, repr=False)

    @property
    def encoding(self):
        """How new rows are read (:class:`~reml_engine.frontend.terms_design.TermsEncoding`):
        the design's, or the one a fit from chunks, Dask or Parquet keeps in its place;
        None for a fit made from bare statistics."""
        return self.design.encoding if self.design is not None else self.terms_encoding

    # -- estimates ------------------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        """Fixed effects, indexed by lme4's column names."""
        return self._fixef.copy()

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed effects, ``sigma2 (X' H^-1 X)^-1``."""
        return self._vcov.copy()

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return standard_errors(self._vcov)

    @property
    def k(self) -> int:
        return len(self.term_names)

    @property
    def ngroups(self) -> pd.Series:
        """Levels per term (lme4's ``ngrps``)."""
        return self._ngroups.copy()

    @property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes and variances per term: ``{term: DataFrame(mode, condvar)}``
        indexed by level (tuples for an interaction ``a:b``), as lme4's
        ``ranef(m, condVar = TRUE)``."""
        return {name: frame.copy() for name, frame in self._ranef.items()}

    @property
    def at_boundary(self) -> pd.Series:
        """True for each term whose variance is estimated at 0."""
        return pd.Series(self.tau == 0, index=list(self.term_names), name="at_boundary")

    @property
    def singular(self) -> bool:
        """Some theta within ``singular_tol`` of 0 (lme4's isSingular)."""
        return bool((np.sqrt(self.tau) < self.singular_tol).any())

    @property
    def n_params(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, one theta per term and sigma."""
        return len(self._fixef) + self.k + 1

    @property
    def global_optimum(self) -> TermsOptimum:
        return self.optima[0]

    @property
    def lme4_default(self) -> TermsOptimum:
        """The optimum lme4's ``lmer()`` is predicted to return from its default start."""
        return next(o for o in self.optima if o.is_lme4_default)

    @property
    def coef_names(self) -> list[str]:
        return list(self._fixef.index)

    def varcorr(self) -> pd.DataFrame:
        """Variance components, as lme4's ``VarCorr``: one row per term (lme4's names and
        order) and ``Residual``; columns ``name``, ``variance`` and ``sd``."""
        variances = np.append(self.tau * self.sigma2, self.sigma2)
        return pd.DataFrame(
            {"name": ["(Intercept)"] * self.k + [""], "variance": variances, "sd": np.sqrt(variances)},
            index=pd.Index([*self.term_names, "Residual"], name="group"),
        )

    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's ``coef(m)``: per term, the fixed effects with the intercept shifted by
        each level's conditional mode (one row per level)."""
        out = {}
        fixef = self._fixef
        for name, frame in self._ranef.items():
            table = pd.DataFrame(np.tile(fixef.to_numpy(), (len(frame), 1)), index=frame.index,
                                 columns=fixef.index)
            if "(Intercept)" in table.columns:
                table["(Intercept)"] += frame["mode"].to_numpy()
            out[name] = table
        return out

    # -- inference on the fixed effects ---------------------------------------------------
    @cached_property
    def _satterthwaite(self):
        """lmerTest's pieces, computed once on first use (numerical derivatives of the
        criterion: see :mod:`reml_engine.inference.terms_ddf`)."""
        from ..inference.terms_ddf import terms_satterthwaite_state

        return terms_satterthwaite_state(self)

    @cached_property
    def _kenward_roger(self):
        """pbkrtest's pieces, computed once on first use (REML fits; dense ``V``, so at
        most :data:`~reml_engine.inference.terms_kenward_roger.KR_MAX_NOBS` rows: see
        :mod:`reml_engine.inference.terms_kenward_roger`)."""
        from ..inference.terms_kenward_roger import terms_kenward_roger_state

        return terms_kenward_roger_state(self)

    def coef_table(self, ddf: str = DEFAULT_DDF) -> pd.DataFrame:
        """Estimate, SE, df, t and two-sided p per fixed effect, as lmerTest's
        ``summary(m)$coefficients``.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "residual"}
            Satterthwaite's df (lmerTest's default; see
            :mod:`reml_engine.inference.terms_ddf`), Kenward-Roger's (pbkrtest's, REML fits,
            with the adjusted standard errors; see
            :mod:`reml_engine.inference.terms_kenward_roger`) or ``n - p``.

        Returns
        -------
        pandas.DataFrame indexed by coefficient, columns ``estimate``, ``se``, ``df``,
        ``t``, ``p``.
        """
        from ..inference.fixed_tests import normalize_ddf
        from ..inference.terms_ddf import terms_coef_table

        method = normalize_ddf(ddf)
        state = {"satterthwaite": lambda: self._satterthwaite,
                 "kenward-roger": lambda: self._kenward_roger}.get(method, lambda: None)()
        return terms_coef_table(self, state, method)

    def contrast_test(self, L, rhs=0.0, ddf: str = DEFAULT_DDF):
        """F-test of ``L beta = rhs`` (lmerTest's ``contest(m, L, joint = TRUE)``), on
        Satterthwaite's, ``"kenward-roger"`` or ``"residual"`` df (see
        :func:`reml_engine.inference.terms_ddf.terms_contrast_test`)."""
        from ..inference.terms_ddf import terms_contrast_test

        return terms_contrast_test(self, L, rhs, ddf)

    def confint(self, method: str = "profile", level: float = 0.95) -> pd.DataFrame:
        """Profile intervals of each term's sd and of sigma, as lme4's
        ``confint(m, parm = "theta_", method = "profile")`` (the ML deviance, also for
        REML fits, as lme4 profiles it; see :mod:`reml_engine.inference.terms_profile`).

        Intervals of the fixed effects: :meth:`conf_int` (Satterthwaite's df, or
        ``ddf="normal"`` for lme4's Wald intervals).

        Returns
        -------
        pandas.DataFrame indexed as :meth:`varcorr` (the terms, then ``Residual``),
        columns ``lower``, ``upper`` and ``lme4`` (lme4's ``.sig01`` ... ``.sigma``).
        """
        if method != "profile":
            raise ValueError(f"method must be 'profile' for several random terms (conf_int() gives the fixed "
                             f"effects' Wald intervals), got {method!r}")
        from ..inference.terms_profile import profile_sd_intervals

        return profile_sd_intervals(self, level)

    # -- fitted values and predictions ----------------------------------------------------
    @cached_property
    def _fitted_rows(self) -> np.ndarray | None:
        if self.design is None:
            return None
        from ..inference.terms_predict import conditional_fit

        return conditional_fit(self)

    def _on_data_index(self, values: np.ndarray, name: str) -> pd.Series:
        full = np.full(len(self.design.data_index), np.nan)
        full[self.design.rows] = values
        return pd.Series(full, index=self.design.data_index, name=name)

    @property
    def fitted(self) -> pd.Series | None:
        """``X beta + offset + sum_j b_j``, on the data's index (NaN where a row was dropped)."""
        values = self._fitted_rows
        return None if values is None else self._on_data_index(values, "fitted")

    @property
    def resid(self) -> pd.Series | None:
        """Response residuals ``y - fitted``, on the data's index (NaN where a row was dropped)."""
        values = self._fitted_rows
        if values is None:
            return None
        return self._on_data_index(self.design.design.y - values, "resid")

    @property
    def scaled_residuals(self) -> np.ndarray | None:
        """Pearson residuals ``sqrt(w) (y - fitted) / sigma`` of the rows fitted."""
        values = self._fitted_rows
        if values is None:
            return None
        w = self.design.weights
        resid = self.design.design.y - values
        return (resid if w is None else resid * np.sqrt(w)) / math.sqrt(self.sigma2)

    def predict(self, newdata: pd.DataFrame | None = None, re_form=None, *, offset=None) -> pd.Series:
        """Predictions, lme4's ``predict(m, newdata, re.form, allow.new.levels = TRUE)``
        (see :func:`reml_engine.inference.terms_predict.predict_terms`)."""
        from ..inference.terms_predict import predict_terms

        return predict_terms(self, newdata, re_form, offset=offset)

    def simulate(self, nsim: int = 1, seed=None, re: bool = False, newdata: pd.DataFrame | None = None, *,
                 weights=None, offset=None) -> pd.DataFrame:
        """Responses drawn from the fitted model, for the fitted rows or ``newdata`` (see
        :func:`reml_engine.inference.terms_predict.simulate_terms`)."""
        from ..inference.terms_predict import simulate_terms

        return simulate_terms(self, nsim, seed=seed, re=re, newdata=newdata, weights=weights, offset=offset)

    # -- rendering ------------------------------------------------------------------------
    def summary(self, ddf: str = "Satterthwaite") -> str:
        """lmerTest-style text report with the engine's notes.

        Parameters
        ----------
        ddf : {"Satterthwaite", "Kenward-Roger", "lme4", "residual"}
            The df of the fixed effects' t tests, as lmerTest's ``summary(m, ddf=)``:
            Satterthwaite's (default), Kenward-Roger's (REML fits, with pbkrtest's
            adjusted standard errors), ``"lme4"`` for lme4's table without df and
            p-values, or ``n - p`` (``"residual"``).
        """
        from ..report.render import summary_ddf
        from ..report.terms_render import render_terms_summary

        return render_terms_summary(self, summary_ddf(ddf))

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from ..report.terms_render import render_terms_html

        return render_terms_html(self)

    def __repr__(self) -> str:
        kind = "REML" if self.REML else "ML"
        parts = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.term_names, self.tau * self.sigma2, strict=True))
        return (f"<TermsFit {kind} {self.formula or ''} nobs={self.nobs} var: {parts}; sigma2={self.sigma2:.6g} "
                f"criterion={self.criterion:.6f}>")


__all__ = ["TermsFit", "TermsOptimum"]
