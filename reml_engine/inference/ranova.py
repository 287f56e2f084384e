"""lmerTest's ``ranova(m)``: each random term removed in turn, by likelihood ratio.

The table has one row for the full model (``<none>``) and one per random term
(``(1 | Subject)``, lmerTest's labels, in lmerTest's order: that of the formula, ``a/b``
expanded as lme4's ``findbars`` expands it, ``b:a`` before ``a``):

* ``npar``: the model's parameters (fixed effects, one theta per term, sigma);
* ``logLik``: its log-likelihood, *restricted* for a REML fit: every model of the table has
  the same fixed effects, so their REML likelihoods compare, and lmerTest compares them
  (it does not refit by ML, as ``anova(m0, m1)`` does);
* ``AIC``: ``-2 logLik + 2 npar``;
* ``LRT``: ``2 (logLik_full - logLik_reduced)`` on ``Df`` (one per intercept term);
* ``Pr(>Chisq)``: the chi-square tail of ``LRT``, lmerTest's column;
* ``p_mixture``: the 50:50 mixture of chi-square(0) and chi-square(1) (Self and Liang's
  null for one variance tested on the boundary of its range, ``P(chi2_1 >= LRT) / 2``).
  The chi-square p-value is conservative there; lmerTest prints only that one.

Removing the only random term leaves the linear model (R's ``lm``); its (REML)
log-likelihood, R's ``logLik(lm, REML = TRUE)`` as lmerTest reports it, is the criterion
at variance 0. Every reduced model is refitted at the global optimum of its criterion; a
note says when lme4's default start would stop elsewhere. For one term, the exact
finite-sample null of the statistic (Crainiceanu and Ruppert's (R)LRT) is
``m.test_random_intercept()`` (:mod:`reml_engine.inference.variance_tests`).

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())
>>> table = m.ranova()
>>> list(table.index)
['<none>', '(1 | Subject)']
>>> round(float(table.loc["(1 | Subject)", "LRT"]), 4)
107.1986
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from ..core.criterion import evaluate
from ..core.terms_results import TermsFit
from ..errors import ModelDataError
from .drop1 import FULL_MODEL_ROW
from .lazy_imports import scipy_stats as sps
from .model_comparison import LOCAL_REFIT_TOL, AnovaResult

#: lmerTest's heading of the table.
RANOVA_TITLE = "ANOVA-like table for random-effects: Single term deletions"
#: lmerTest's column of the chi-square p-value.
CHISQ_P_COLUMN = "Pr(>Chisq)"


def term_label(name: str) -> str:
    """lmerTest's row label of a random-intercept term: ``(1 | Subject)``."""
    return f"(1 | {name})"


def _lm_criterion_one_term(fit) -> float:
    """The linear model's (REML) criterion: the one-term criterion at var_group = 0."""
    return float(evaluate([0.0], fit.stats, fit.REML).criterion[0])


def _formula_order(fit: TermsFit) -> list[int]:
    """Positions of the fit's terms (lme4's order, by levels) in the formula's order, as
    lmerTest's ``ranova`` lists them; lme4's order when the fit holds no formula."""
    if not fit.formula:
        return list(range(fit.k))
    from ..frontend.formula import random_term_specs

    rank = {spec.name: i for i, spec in enumerate(random_term_specs(fit.formula))}
    return sorted(range(fit.k), key=lambda j: rank.get(fit.term_names[j], len(rank) + j))


def _reduced_terms(fit: TermsFit) -> list[tuple[str, float, int, object, str | None]]:
    """Each term removed from a several-term fit: (term, criterion, parameters, fit, note)."""
    from ..core.terms_fitting import fit_terms_design
    from ..varcomp.terms import RandomTerms

    n_fixed = len(fit.fixef)
    out = []
    for j in _formula_order(fit):
        name = fit.term_names[j]
        if fit.k == 1:
            if fit.problem is None:
                raise ModelDataError("ranova() needs the fit's criterion (this fit holds none: problem=None)")
            criterion = float(fit.problem.evaluate(np.zeros(1), fit.REML, gradient=False).criterion)
            out.append((name, criterion, n_fixed + 1, None, None))
            continue
        tdesign = fit.design
        if tdesign is None:
            raise ModelDataError("ranova() refits the model without each random term, which needs the fit's design "
                                 "(a fit made by rl.lmer from a DataFrame)")
        keep = [i for i in range(fit.k) if i != j]
        terms = tdesign.terms
        reduced_terms = RandomTerms(tuple(terms.names[i] for i in keep), tuple(terms.codes[i] for i in keep),
                                    tuple(terms.levels[i] for i in keep))
        reduced = fit_terms_design(replace(tdesign, terms=reduced_terms,
                                           specs=tuple(tdesign.specs[i] for i in keep)), REML=fit.REML)
        note = None
        lme4_gap = reduced.lme4_default.criterion - reduced.criterion
        if lme4_gap > LOCAL_REFIT_TOL:
            note = (f"without {term_label(name)}: the refit is the global optimum; lme4's default start (as "
                    f"lmerTest's ranova refits) would stop at a criterion {lme4_gap:.4f} higher")
        out.append((name, reduced.criterion, reduced.n_params, reduced, note))
    return out


def ranova(fit) -> AnovaResult:
    """Likelihood-ratio test of each random term, as lmerTest's ``ranova(m)`` (see the module).

    Parameters
    ----------
    fit : LmerFit or TermsFit
        A fit by REML (compared by REML likelihood) or ML.

    Returns
    -------
    AnovaResult
        ``table`` indexed by ``<none>`` and each term's label, columns ``npar``,
        ``logLik``, ``AIC``, ``LRT``, ``Df``, ``Pr(>Chisq)`` (lmerTest's) and
        ``p_mixture`` (NaN on the ``<none>`` row); ``models`` holds the fit and the
        reduced fits (None for the linear model); ``notes`` say how to read it.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("diameter ~ 1 + (1|plate) + (1|sample)", rl.datasets.penicillin())
    >>> print(m.ranova().table[["npar", "LRT", "Df"]].round(3))
                  npar      LRT   Df
    <none>           4      NaN  NaN
    (1 | plate)      3  105.057  1.0
    (1 | sample)     3  282.395  1.0
    """
    notes = []
    if isinstance(fit, TermsFit):
        reduced = _reduced_terms(fit)
    else:
        if getattr(fit, "stats", None) is None:
            raise ModelDataError(f"ranova() takes a fit from rl.lmer or rl.fit, got {type(fit).__name__}")
        reduced = [(fit.group_name, _lm_criterion_one_term(fit), len(fit.fixef) + 1, None, None)]
    likelihood = "REML log-likelihood" if fit.REML else "log-likelihood"
    if fit.REML:
        notes.append("REML fit: the models have the same fixed effects and are compared by their REML likelihood, "
                     "as lmerTest's ranova (no ML refit)")
    if any(model is None for _, _, _, model, _ in reduced):
        notes.append(f"without its random term the model is the linear model (lm); its {likelihood} is the "
                     "criterion at variance 0")
    notes.append(f"p_mixture: the 50:50 chi-square(0)/chi-square(1) null of a variance tested at 0, the boundary "
                 f"of its range, where {CHISQ_P_COLUMN} (chi-square(1)) is conservative")
    if not isinstance(fit, TermsFit):
        notes.append("the exact finite-sample null of this statistic: m.test_random_intercept() "
                     "(method='exact', Crainiceanu and Ruppert's (R)LRT)")
    notes.extend(note for *_, note in reduced if note)

    rows = {FULL_MODEL_ROW: {"npar": fit.n_params, "logLik": fit.loglik, "AIC": fit.aic, "LRT": math.nan,
                             "Df": math.nan, CHISQ_P_COLUMN: math.nan, "p_mixture": math.nan}}
    for name, criterion, n_params, _, _ in reduced:
        lrt = max(0.0, criterion - fit.criterion)
        df = fit.n_params - n_params
        rows[term_label(name)] = {
            "npar": n_params, "logLik": -0.5 * criterion, "AIC": criterion + 2.0 * n_params, "LRT": lrt,
            "Df": df, CHISQ_P_COLUMN: float(sps.chi2.sf(lrt, df)),
            "p_mixture": 0.5 * float(sps.chi2.sf(lrt, 1)) if lrt > 0 else 1.0,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    models = (fit, *(model for _, _, _, model, _ in reduced))
    return AnovaResult(table, tuple(notes), models, title=RANOVA_TITLE)


__all__ = ["CHISQ_P_COLUMN", "RANOVA_TITLE", "ranova", "term_label"]
