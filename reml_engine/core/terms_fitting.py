"""Several random-intercept terms, from the design to the immutable fit.

The same stages as for one term (:mod:`reml_engine.core.fitting`), through the
several-terms engine (:mod:`reml_engine.varcomp`)::

    tdesign = build_terms_design(formula, data, weights=, offset=)   # frontend
    stats   = compute_vc_stats(X, y, terms, weights, offset)         # one pass, mergeable
    problem = VCProblem(stats)                                       # the criterion in tau
    summary = find_optima_terms(problem, REML, lme4_start=...)       # every local minimum
    fit     = build_terms_fit(tdesign, problem, summary)             # the immutable TermsFit

A chunked or distributed fit (:mod:`reml_engine.scaleout.terms`) has no design: it
merges the statistics of its chunks and enters at stage 3
(:func:`fit_terms_statistics`), with a :class:`TermsModel` for the names; its fit
keeps no rows (``fitted``, ``resid`` are None, ``predict`` refuses).

The notes say which terms sit at variance 0 and why, list the other local minima, and
say which optimum lme4's ``lmer()`` would return from its default start and how that fit
differs (worded as :mod:`reml_engine.core.diagnosis` words them for one term).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..frontend.terms_design import TermsDesign
from ..varcomp import VCProblem, VCStats, compute_vc_stats, find_optima_terms, lme4_start_theta
from ..varcomp.optimizer import VCOptimum, VCOptSummary
from .diagnosis import FIXEF_SHIFT_IN_SE, MAX_COEFS_COMPARED
from .parametrization import standard_errors
from .terms_results import TermsFit, TermsOptimum, _read_only

#: Two optima whose criteria differ by at most this are reported as tied.
CRITERION_TIE_TOL = 1e-6


#: Why a slope moves between two optima, as the one-term notes explain it.
WHY_FITS_DIFFER = (
    " Why: where a term's variance is small the fit pools the variation of the predictors between and within "
    "that term's levels, as ordinary least squares does; where it is large its random intercepts absorb the "
    "differences between levels, and the slopes come from the variation within them. When the two relations "
    "differ (a contextual effect), so do the fits."
)


@dataclass(frozen=True)
class TermsModel:
    """What a fit reports about the model besides its statistics.

    Attributes
    ----------
    column_names : tuple of str
        The fixed-effect columns kept (lme4's names).
    formula : str or None
    response_name : str
    dropped_columns : tuple of str
        Columns dropped as linear combinations of earlier ones.
    weighted, has_offset : bool
    """

    column_names: tuple[str, ...]
    formula: str | None
    response_name: str
    dropped_columns: tuple[str, ...] = ()
    weighted: bool = False
    has_offset: bool = False

    @classmethod
    def of_design(cls, tdesign: TermsDesign) -> TermsModel:
        d = tdesign.design
        return cls(tuple(d.column_names), d.formula.formula if d.formula is not None else None, d.response_name,
                   tuple(tdesign.dropped_columns), tdesign.weights is not None, tdesign.offset is not None)


def _criterion_name(REML: bool) -> str:
    return "REML criterion" if REML else "deviance"


def start_theta(tdesign: TermsDesign) -> np.ndarray:
    """lme4's start from the raw response (no weights, no offset: its ``model.response``)."""
    y = tdesign.design.y
    counts = [np.bincount(c, minlength=m).astype(np.float64)
              for c, m in zip(tdesign.terms.codes, tdesign.terms.nlevels, strict=True)]
    sums = [np.bincount(c, weights=y, minlength=m)
            for c, m in zip(tdesign.terms.codes, tdesign.terms.nlevels, strict=True)]
    return lme4_start_theta(len(y), float(y.sum()), float(y @ y), counts, sums)


def terms_problem(tdesign: TermsDesign) -> VCProblem:
    """The criterion of a design as a function of tau (stages 2 and 3)."""
    d = tdesign.design
    stats = compute_vc_stats(d.X, d.y, tdesign.terms, tdesign.weights, tdesign.offset)
    return VCProblem(stats)


def fit_terms_design(tdesign: TermsDesign, REML: bool = True) -> TermsFit:
    """Stages 2 to 5 for several random-intercept terms."""
    problem = terms_problem(tdesign)
    start = start_theta(tdesign)
    summary = find_optima_terms(problem, REML, lme4_start=start)
    return build_terms_fit(tdesign, problem, summary, start)


def fit_terms_statistics(stats: VCStats, model: TermsModel, REML: bool = True,
                         lme4_start: np.ndarray | None = None) -> TermsFit:
    """Stages 3 to 5 from merged statistics (a chunked or distributed fit): the same
    criterion, search and result as :func:`fit_terms_design`, without the rows.

    ``lme4_start`` is lme4's start (:func:`reml_engine.varcomp.lme4_start_theta` of the
    raw response's level sums), which says which optimum lme4 would return.
    """
    problem = VCProblem(stats)
    summary = find_optima_terms(problem, REML, lme4_start=lme4_start)
    return assemble_terms_fit(model, problem, summary, lme4_start)


def refit_terms_statistics(fit: TermsFit, REML: bool = False) -> TermsFit:
    """The same model fitted again from the statistics a fit keeps (``fit.problem``),
    with the other criterion: ``anova()``'s ML refit of a fit made from chunks, Dask or
    Parquet, which has no rows. The new fit keeps the encoding of new rows."""
    if fit.problem is None:
        raise ValueError("refitting needs the fit's statistics (fit.problem); this fit keeps none")
    model = TermsModel(tuple(fit.coef_names), fit.formula, fit.response_name, tuple(fit.dropped_columns),
                       fit.weighted, fit.has_offset)
    refit = fit_terms_statistics(fit.problem.stats, model, REML, fit.lme4_start_theta)
    return replace(refit, terms_encoding=fit.terms_encoding)


def _as_fit(problem: VCProblem, opt: VCOptimum, REML: bool, names, is_global: bool, is_default: bool
            ) -> tuple[TermsOptimum, pd.DataFrame]:
    beta, vcov, sigma2 = problem.fixed_effects(opt.tau, REML)
    vcov_df = pd.DataFrame(vcov, index=list(names), columns=list(names))
    fixef = pd.Series(beta, index=list(names), name="fixef")
    optimum = TermsOptimum(tuple(problem.term_names), _read_only(opt.tau), float(opt.criterion), float(sigma2),
                           fixef, standard_errors(vcov_df), is_global, is_default)
    return optimum, vcov_df


def build_terms_fit(tdesign: TermsDesign, problem: VCProblem, summary: VCOptSummary,
                    lme4_start: np.ndarray | None = None) -> TermsFit:
    """Stage 5: the fit at the global optimum of ``summary``, with every local optimum,
    the boundary reasons, lme4's predicted answer and the random effects."""
    return assemble_terms_fit(TermsModel.of_design(tdesign), problem, summary, lme4_start, tdesign)


def assemble_terms_fit(model: TermsModel, problem: VCProblem, summary: VCOptSummary,
                       lme4_start: np.ndarray | None = None, tdesign: TermsDesign | None = None) -> TermsFit:
    """Stage 5 for a fit with (``tdesign``) or without its rows."""
    REML = summary.REML
    names = model.column_names
    optima, vcov_best = [], None
    for i, opt in enumerate(summary.optima):
        optimum, vcov_df = _as_fit(problem, opt, REML, names, i == 0, opt is summary.lme4_default)
        optima.append(optimum)
        if i == 0:
            vcov_best = vcov_df
    best = optima[0]
    ranef = problem.ranef(best.tau, REML)
    notes = (_boundary_notes(summary, REML) + _optima_notes(optima, REML, lme4_start)
             + list(summary.notes))
    ngroups = pd.Series(problem.nlevels, index=list(problem.term_names), name="ngroups")
    return TermsFit(
        REML=REML,
        term_names=tuple(problem.term_names),
        tau=best.tau,
        sigma2=best.sigma2,
        criterion=best.criterion,
        nobs=problem.nobs,
        optima=tuple(optima),
        boundary=summary.boundary,
        opt_summary=summary,
        notes=tuple(notes),
        _fixef=best.fixef,
        _vcov=vcov_best,
        _ngroups=ngroups,
        _ranef=ranef,
        formula=model.formula,
        response_name=model.response_name,
        dropped_columns=model.dropped_columns,
        weighted=model.weighted,
        has_offset=model.has_offset,
        lme4_start_theta=None if lme4_start is None else _read_only(lme4_start),
        design=tdesign,
        problem=problem,
    )


def _describe(o: TermsOptimum) -> str:
    parts = ", ".join(f"var({n}) = {v:.4g}" for n, v in zip(o.term_names, o.tau * o.sigma2, strict=True))
    return f"{parts}, residual {o.sigma2:.4g}"


def _boundary_notes(summary: VCOptSummary, REML: bool) -> list[str]:
    name = _criterion_name(REML)
    notes = []
    for b in summary.boundary:
        if b.reason == "negative":
            text = (
                f"The variance of {b.term} is estimated at 0 (boundary): the {name} rises from 0 into positive "
                f"values (slope {b.derivative_at_zero:.4g} per unit of var/sigma2, the other variances held), so it "
                "keeps falling towards a negative variance, which a random intercept cannot express"
            )
            if np.isfinite(b.extended_criterion):
                text += f" (below 0 it falls to {b.extended_criterion:.4f})"
            notes.append(text + ".")
        else:
            notes.append(f"The variance of {b.term} is estimated at 0 (boundary), where the {name} is flat: the data "
                         "cannot tell a small variance of that term from none.")
    return notes


def _compare_fits(a: TermsOptimum, b: TermsOptimum) -> str:
    fa, fb, sa, sb = a.fixef, b.fixef, a.se, b.se
    rel = (fa - fb).abs() / np.maximum(sb.abs(), 1e-300)
    shown = list(rel.sort_values(ascending=False).index[:MAX_COEFS_COMPARED])
    return "; ".join(f"{c} {fa[c]:.4g} (SE {sa[c]:.3g}) vs {fb[c]:.4g} (SE {sb[c]:.3g})" for c in shown)


def _optima_notes(optima: list[TermsOptimum], REML: bool, lme4_start) -> list[str]:
    name = _criterion_name(REML)
    estimate = optima[0]
    notes = []
    if len(optima) > 1:
        listing = "; ".join(f"{_describe(o)}: {name} {o.criterion:.4f}" for o in optima)
        notes.append(f"The {name} has {len(optima)} local minima over the variance ratios >= 0 ({listing}). The "
                     f"estimate is the global one.")
    default = next((o for o in optima if o.is_lme4_default), estimate)
    if not default.is_global and default.criterion - estimate.criterion > CRITERION_TIE_TOL:
        start = "" if lme4_start is None else (
            " (theta = " + ", ".join(f"{t:.4g}" for t in np.asarray(lme4_start)) + ", from the response's variation "
            "between the levels of each term)")
        differ = bool(((default.fixef - estimate.fixef).abs() > FIXEF_SHIFT_IN_SE * estimate.se).any())
        notes.append(
            f"lme4's lmer() from its default start{start} stops at a local minimum, {_describe(default)} "
            f"({name} {default.criterion - estimate.criterion:.4f} worse). The fits "
            f"{'differ' if differ else 'are close'}: {_compare_fits(estimate, default)} (estimate vs lme4's)."
            + (WHY_FITS_DIFFER if differ else "")
        )
    return notes


__all__ = [
    "TermsModel",
    "assemble_terms_fit",
    "build_terms_fit",
    "fit_terms_design",
    "fit_terms_statistics",
    "refit_terms_statistics",
    "start_theta",
    "terms_problem",
]
