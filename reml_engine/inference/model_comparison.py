"""Likelihood-ratio comparison of nested models (lme4's ``anova(m0, m1, ...)``).

Models are ordered by their number of parameters and each is compared with the one
before it: ``Chisq = 2 (logLik_1 - logLik_0)`` on ``Df = npar_1 - npar_0``. REML
likelihoods of models with different fixed effects are not comparable, so REML fits are
refitted by ML first (with a note), as lme4 does, and the refit is the *global* ML
optimum: a local search started from the REML estimate can stop at another local
optimum, and the note says when it would have.

A model without random effects is accepted as the null: :func:`ols` fits it (ML
log-likelihood, ``p + 1`` parameters, as R's ``logLik(lm(...))``). When the only
difference between two models is the random intercept, the chi-square(1) p-value is
conservative (the null is on the boundary); the table adds the 50:50 mixture p-value.

Examples
--------
>>> import reml_engine as rl
>>> data = rl.load_seed()
>>> table = rl.anova(rl.lmer("y ~ 1 + (1|f)", data), rl.lmer("y ~ x + (1|f)", data))
>>> round(float(table.table["Chisq"].iloc[1]), 4)
0.6157
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from ..core.fitting import fit_design, refit_statistics
from ..core.optimizer import optimum_reached_from
from ..core.results import LmerFit
from ..core.terms_results import TermsFit
from ..errors import ModelDataError
from ..frontend.arguments import check_bool
from ..frontend.formula import lme4_column_names, parse_formula
from .lazy_imports import scipy_stats as sps

#: Two models are fitted to the same responses when these agree to this relative
#: tolerance (number of rows is compared exactly).
SAME_RESPONSE_RTOL = 1e-10
#: A refit criterion differing from the lme4-style local refit by more than this is
#: reported.
LOCAL_REFIT_TOL = 1e-6


@dataclass(frozen=True)
class OLSFit:
    """Ordinary least squares: the null model without random effects.

    Attributes
    ----------
    fixef : pandas.Series
    rss : float
        Residual sum of squares.
    nobs : int
    formula : str or None
    y_sum, y_sumsq : float
        Checks that models compared are fitted to the same response.
    column_moments : dict, optional
        Sum and sum of squares of each column of X, by coefficient name: checks that
        models compared were fitted to the same data.
    """

    fixef: pd.Series
    rss: float
    nobs: int
    formula: str | None = None
    y_sum: float = math.nan
    y_sumsq: float = math.nan
    column_moments: dict | None = None

    REML = False

    @property
    def n_params(self) -> int:
        """Coefficients and the residual variance."""
        return len(self.fixef) + 1

    @property
    def loglik(self) -> float:
        """ML log-likelihood, as R's ``logLik(lm)``."""
        n = self.nobs
        return -0.5 * n * (math.log(2.0 * math.pi * self.rss / n) + 1.0)

    @property
    def deviance(self) -> float:
        return -2.0 * self.loglik

    @property
    def aic(self) -> float:
        return self.deviance + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.deviance + self.n_params * math.log(self.nobs)


def ols(formula: str, data: pd.DataFrame) -> OLSFit:
    """Fit ``response ~ fixed terms`` by ordinary least squares (no random effect).

    A random term in the formula is ignored, so ``ols("y ~ x + (1|g)", data)`` gives
    the null model of the random-intercept test.
    """
    try:
        fixed = parse_formula(formula).fixed
    except ModelDataError:
        fixed = formula  # no random term: already the fixed part
    matrices = formulaic.model_matrix(fixed, data)
    X = np.asarray(matrices.rhs.to_numpy(dtype=np.float64))
    y = np.asarray(matrices.lhs.to_numpy(dtype=np.float64)).ravel()
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    names = list(lme4_column_names(matrices.rhs.columns))
    moments = {name: (float(X[:, j].sum()), float(X[:, j] @ X[:, j])) for j, name in enumerate(names)}
    return OLSFit(pd.Series(beta, index=names, name="fixef"), float(resid @ resid), len(y), fixed,
                  float(y.sum()), float(y @ y), moments)


@dataclass(frozen=True)
class AnovaResult:
    """The comparison table and its notes.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per model (in order of parameters): ``npar``, ``AIC``, ``BIC``,
        ``logLik``, ``deviance``, ``Chisq``, ``Df``, ``p_value`` and, where a model
        differs from the previous one only by the random intercept, ``p_mixture``.
    notes : tuple of str
    models : tuple
        The fits compared (ML refits where the inputs were REML).
    title : str
        A heading printed above the table (empty for ``anova``).

    The result reads like its table: ``result["Chisq"]``, ``result.loc[row, column]``,
    ``result.index`` and ``result.columns`` are the table's; printing it (or its repr)
    shows the table and the notes.
    """

    table: pd.DataFrame
    notes: tuple[str, ...]
    models: tuple
    title: str = ""

    def __str__(self) -> str:
        text = self.table.to_string(float_format=lambda v: f"{v:.6g}")
        return "\n".join([*([self.title, ""] if self.title else []), text, *self.notes])

    def __getitem__(self, key):
        return self.table[key]

    @property
    def loc(self):
        """The table's ``loc`` (a copy: the result does not change)."""
        return self.table.copy().loc

    @property
    def index(self) -> pd.Index:
        return self.table.index

    @property
    def columns(self) -> pd.Index:
        return self.table.columns

    def __repr__(self) -> str:
        # The table and its notes, as pandas shows a frame (the models are not dumped).
        return str(self)

    def _repr_html_(self) -> str:
        from ..report.notebook import anova_html

        return anova_html(self)


def _ml_refit(fit: LmerFit) -> tuple[LmerFit, str | None]:
    """The global ML fit of the same model, and a note if a local refit would differ."""
    if isinstance(fit, TermsFit):
        return _ml_refit_terms(fit)
    # A fit without rows (chunks, Dask, Parquet, statistics) is refitted from its
    # statistics: the ML criterion is a function of the same statistics.
    ml = fit_design(fit.design, REML=False) if fit.design is not None else refit_statistics(fit, REML=False)
    # Where a descent started at the REML estimate would stop (lme4's refitML).
    local = optimum_reached_from(ml.optima, ml.stats, False, fit.tau)
    note = None
    if local.criterion - ml.criterion > LOCAL_REFIT_TOL:
        label = fit.formula or "model"
        note = (
            f"{label}: the ML refit is the global optimum (deviance {ml.criterion:.4f}, "
            f"var_group/sigma2 = {ml.tau:.4g}); a local refit started at the REML estimate "
            f"(as lme4's anova) would stop at deviance {local.criterion:.4f} "
            f"(var_group/sigma2 = {local.tau:.4g})"
        )
    return ml, note


def _ml_refit_terms(fit) -> tuple[object, str | None]:
    """The global ML fit of a model with several terms, and a note when lme4's refit,
    started at the REML estimate, is predicted to stop at another optimum."""
    from ..core.terms_fitting import fit_terms_design, refit_terms_statistics
    from ..varcomp.lme4_start import lme4_default_descent

    # A fit without rows (chunks, Dask, Parquet) is refitted from the statistics it keeps:
    # the ML criterion is a function of the same statistics.
    ml = fit_terms_design(fit.design, REML=False) if fit.design is not None else refit_terms_statistics(fit, False)
    note = None
    if len(ml.optima) > 1:
        # lme4's refitML starts its optimizer at the REML theta.
        end = lme4_default_descent(lambda tau: ml.problem.evaluate(tau, REML=False, gradient=False).criterion,
                                   np.sqrt(fit.tau))
        local = min(ml.optima, key=lambda o: float(np.abs(np.sqrt(o.tau) - np.sqrt(end)).max()))
        if local.criterion - ml.criterion > LOCAL_REFIT_TOL:
            note = (f"{fit.formula or 'model'}: the ML refit is the global optimum (deviance {ml.criterion:.4f}); "
                    f"a local refit started at the REML estimate (as lme4's anova) would stop at deviance "
                    f"{local.criterion:.4f}")
    return ml, note


def _response_key(model) -> tuple:
    if isinstance(model, OLSFit):
        return model.nobs, model.y_sum, model.y_sumsq
    design = getattr(model, "design", None)
    design = getattr(design, "design", design)  # a TermsFit's TermsDesign holds the Design
    y = getattr(design, "y", None)
    stats = getattr(model, "group_stats", None)
    if y is None and isinstance(model, TermsFit):
        return _terms_response_key(model)
    if y is None and stats is not None:
        # A fit without rows (chunks, Dask, Parquet): the response's sum and sum of squares
        # from its statistics, as for the columns of X (_column_moments).
        return model.nobs, float(stats.sums[:, -1].sum() + stats.nobs * stats.shift[-1]), float(stats.raw_cross[-1, -1])
    if y is None:
        return (model.nobs, math.nan, math.nan)
    return model.nobs, float(y.sum()), float(y @ y)


def _raw_moments(model: TermsFit) -> tuple[np.ndarray, np.ndarray] | None:
    """Sums and sums of squares of ``[X | y]`` from the statistics of a several-terms fit
    without rows; None if they are weighted or hold ``y - offset`` (then they are not the
    raw columns an in-memory fit's check reads)."""
    stats = getattr(model.problem, "stats", None)
    if stats is None or model.weighted or model.has_offset:
        return None
    totals = stats.sums[0].sum(axis=0) + stats.nobs * stats.shift
    # sum (z - s)^2 = sum z^2 - 2 s sum z + n s^2
    squares = np.diag(stats.cross) + 2 * stats.shift * totals - stats.nobs * stats.shift ** 2
    return totals, squares


def _terms_response_key(model: TermsFit) -> tuple:
    moments = _raw_moments(model)
    if moments is None:
        return (model.nobs, math.nan, math.nan)
    totals, squares = moments
    return model.nobs, float(totals[-1]), float(squares[-1])


def _terms_column_moments(model: TermsFit) -> dict:
    moments = _raw_moments(model)
    if moments is None:
        return {}
    totals, squares = moments
    return {name: (float(totals[j]), float(squares[j])) for j, name in enumerate(model.fixef.index)}


def _fixed_names(model) -> tuple[str, ...]:
    return tuple(model.fixef.index)


def _label(model, k: int) -> str:
    return f"model {k + 1} ({model.formula})" if getattr(model, "formula", None) else f"model {k + 1}"


def _column_moments(model) -> dict:
    """Sum and sum of squares of each fixed-effect column, by name (order-free)."""
    if isinstance(model, OLSFit):
        return model.column_moments or {}
    if hasattr(model, "term_names") and model.design is None:
        return _terms_column_moments(model)
    if hasattr(model, "term_names"):  # several terms: the design's columns in memory
        X = model.design.design.X
        return {name: (float(X[:, j].sum()), float(X[:, j] @ X[:, j])) for j, name in enumerate(model.fixef.index)}
    stats = getattr(model, "group_stats", None)
    if stats is None:
        return {}
    totals = stats.sums.sum(axis=0) + stats.nobs * stats.shift
    squares = np.diag(stats.raw_cross)
    return {name: (float(totals[j]), float(squares[j])) for j, name in enumerate(model.fixef.index)}


def _grouping(model) -> tuple[str, pd.Series] | None:
    """The grouping factor's name and the size and response total of each group."""
    stats = getattr(model, "group_stats", None)
    if isinstance(model, OLSFit) or stats is None:
        return None
    y_totals = stats.sums[:, -1] + stats.counts * stats.shift[-1]
    levels = pd.Index([str(level) for level in stats.levels])
    return str(model.group_name), pd.DataFrame({"n": stats.counts, "y": y_totals}, index=levels)


def _random_terms(model) -> frozenset[str]:
    """The random terms of a model, by lme4's names."""
    if isinstance(model, OLSFit):
        return frozenset()
    if hasattr(model, "term_names"):
        return frozenset(model.term_names)
    return frozenset([str(model.group_name)])


def _same(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= SAME_RESPONSE_RTOL * max(scale, abs(a), abs(b))


def check_same_data(models) -> None:
    """Models compared by likelihood ratio must be fitted to the same rows: the same
    response, the same grouping factor (name and groups) and, for each fixed-effect
    column two models share, the same values. Otherwise ``Chisq`` compares unrelated
    likelihoods; the error names what differs."""
    keys = [_response_key(m) for m in models]
    n0 = keys[0]
    for k, key in zip(range(1, len(keys)), keys[1:], strict=True):
        if key[0] != n0[0]:
            raise ValueError(f"models were fitted to different numbers of rows ({n0[0]} and {key[0]} for model {k + 1})")
        if not np.allclose(key[1:], n0[1:], rtol=SAME_RESPONSE_RTOL, equal_nan=True):
            raise ValueError(f"model {k + 1} was fitted to a different response than model 1")
    groupings = [(k, _grouping(m)) for k, m in enumerate(models)]
    groupings = [(k, g) for k, g in groupings if g is not None]
    for (k0, (name0, groups0)), (k, (name, groups)) in zip(groupings, groupings[1:], strict=False):
        if name != name0:
            raise ValueError(
                f"{_label(models[k0], k0)} groups by {name0!r} and {_label(models[k], k)} by {name!r}: a "
                "likelihood-ratio test compares models with the same grouping factor"
            )
        same = groups.index.equals(groups0.index) and np.array_equal(groups["n"], groups0["n"]) and np.allclose(
            groups["y"], groups0["y"], rtol=SAME_RESPONSE_RTOL, atol=SAME_RESPONSE_RTOL * np.abs(groups0["y"]).max()
        )
        if not same:
            raise ValueError(
                f"the groups of {name!r} differ between {_label(models[k0], k0)} and {_label(models[k], k)}: the "
                "models were fitted to different data"
            )
    moments = [_column_moments(m) for m in models]
    for k in range(1, len(models)):
        for name, (total, square) in moments[k].items():
            for k0 in range(k):
                if name in moments[k0]:
                    total0, square0 = moments[k0][name]
                    if not (_same(total, total0, abs(square) ** 0.5) and _same(square, square0, 0.0)):
                        raise ValueError(
                            f"column {name!r} has different values in {_label(models[k0], k0)} and "
                            f"{_label(models[k], k)}: the models were fitted to different data"
                        )


def anova(*models, refit: bool = True) -> AnovaResult:
    """Compare nested models by likelihood ratio, with AIC and BIC.

    Parameters
    ----------
    *models : LmerFit, TermsFit or OLSFit
        Two or more models fitted to the same responses; ordered by their number of
        parameters before comparison.
    refit : bool
        Refit REML fits by ML (default, as lme4). With ``refit=False`` all models must
        be REML fits with identical fixed effects, or all ML.

    Returns
    -------
    AnovaResult
    """
    if len(models) < 2:
        raise ValueError("anova needs at least two models to compare")
    for k, model in enumerate(models):
        if not isinstance(model, (LmerFit, TermsFit, OLSFit)):
            raise TypeError(
                f"model {k + 1} is a {type(model).__name__}; anova compares fits from rl.lmer, rl.fit or rl.ols"
            )
    refit = check_bool(refit, "refit")
    notes = []
    fitted = []
    refitted = []
    for model in models:
        if getattr(model, "REML", False) and refit:
            ml, note = _ml_refit(model)
            refitted.append(model.formula or "model")
            if note:
                notes.append(note)
            fitted.append(ml)
        else:
            fitted.append(model)
    if refitted:
        notes.insert(0, f"refitting {len(refitted)} REML fit(s) with ML (instead of REML): {', '.join(refitted)}")
    kinds = {bool(getattr(m, "REML", False)) for m in fitted}
    if len(kinds) > 1:
        raise ValueError("cannot compare REML and ML likelihoods; use refit=True")
    if kinds == {True} and len({_fixed_names(m) for m in fitted}) > 1:
        raise ValueError("REML likelihoods of models with different fixed effects are not comparable; use refit=True")
    check_same_data(fitted)

    order = sorted(range(len(fitted)), key=lambda i: fitted[i].n_params)
    ordered = [fitted[i] for i in order]
    rows = []
    for i, m in enumerate(ordered):
        loglik = m.loglik
        row = {
            "npar": m.n_params,
            "AIC": -2 * loglik + 2 * m.n_params,
            "BIC": -2 * loglik + m.n_params * math.log(m.nobs),
            "logLik": loglik,
            "deviance": -2 * loglik,
            "Chisq": math.nan,
            "Df": math.nan,
            "p_value": math.nan,
            "p_mixture": math.nan,
        }
        if i > 0:
            prev = ordered[i - 1]
            chisq = max(0.0, 2.0 * (loglik - prev.loglik))
            df = m.n_params - prev.n_params
            row["Chisq"], row["Df"] = chisq, df
            row["p_value"] = float(sps.chi2.sf(chisq, df)) if df > 0 else math.nan
            added = _random_terms(m) - _random_terms(prev)
            only_random = (_fixed_names(prev) == _fixed_names(m) and _random_terms(prev) < _random_terms(m)
                           and len(added) == 1 and df == 1)
            if only_random:
                row["p_mixture"] = 0.5 * row["p_value"] if chisq > 0 else 1.0
                what = "the random intercept" if isinstance(prev, OLSFit) else f"the random term {next(iter(added))}"
                notes.append(
                    f"model {i + 1} adds only {what} to model {i}: its variance = 0 is on the "
                    "boundary, so chi-square(1) is conservative; p_mixture uses the 50:50 "
                    "chi-square(0)/chi-square(1) null"
                )
        rows.append(row)
    labels = [getattr(m, "formula", None) or f"model {i + 1}" for i, m in enumerate(ordered)]
    table = pd.DataFrame(rows, index=labels)
    if table["p_mixture"].isna().all():
        table = table.drop(columns="p_mixture")
    return AnovaResult(table, tuple(notes), tuple(ordered))
