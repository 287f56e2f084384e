"""``m.explain()``: what the optimizer found, in plain words.

The summary's notes are short; this is the long form, one paragraph per question a user
asks of a fit:

1. what was minimized, over what, and how (the global scan);
2. where the global optimum is, and which other local optima the criterion has;
3. whether the estimate sits on the boundary var_group = 0, and why (the diagnosis of
   :mod:`reml_engine.core.diagnosis`), or is interior, or singular as lme4 counts it;
4. what lme4's ``lmer()`` returns from its default start, and how its fit differs;
5. what the compound-symmetry fit (a negative within-group correlation allowed) adds;
6. any other notes of the fit (columns dropped, numerical cautions).

It only formats what the fit holds (its optima, boundary, compound-symmetry fit, notes);
nothing is refitted.
"""

from __future__ import annotations

import textwrap

from ..core.diagnosis import (
    CRITERION_TIE_TOL,
    compare_fits,
    criterion_name,
    describe_optimum,
    fits_differ,
    optimum_notes,
    why_fits_differ,
)
from .render import NOTE_WIDTH


def _fitted(m) -> str:
    what = m.formula or f"{m.response_name} ~ fixed effects + (1|{m.group_name})"
    method = "REML" if m.REML else "maximum likelihood"
    name = criterion_name(m.REML)
    return (
        f"Fitted: {what}, by {method}, on {m.nobs} observations in {m.ngroups} groups of {m.group_name}. The "
        f"engine profiles the fixed effects and sigma2 out of the {name}, leaving a function of one number, "
        f"tau = var_group/sigma2, and scans it over the whole range tau >= 0 (and below 0 for the "
        f"compound-symmetry fit) before refining every minimum it brackets "
        f"({m.opt_summary.n_evaluations} evaluations): the estimate is the lowest of them, not the first an "
        "optimizer reached from one start."
    )


def _optima(m) -> str:
    name = criterion_name(m.REML)
    best = m.global_optimum
    where = f"{describe_optimum(best)}, {name} {best.criterion:.4f}"
    values = f"sigma2 = {m.sigma2:.4g}"
    if len(m.optima) == 1:
        return (f"Optima: the {name} has one local minimum over var_group >= 0, so it is the global one: {where} "
                f"({values}). Any optimizer that converges reaches it.")
    others = "; ".join(f"{describe_optimum(o)}, {name} {o.criterion:.4f} ({o.criterion - best.criterion:.4f} "
                       "higher)" for o in m.optima if not o.is_global)
    return (f"Optima: the {name} has {len(m.optima)} local minima over var_group >= 0. The estimate is the "
            f"global one, {where} ({values}). The other(s): {others}. A local optimizer started near one of "
            "those can stop there, with no warning.")


def _boundary(m) -> str:
    if m.boundary is not None:
        reason = {"negative_icc": "the data point to a negative within-group correlation",
                  "flat": "the criterion is flat there"}.get(m.boundary.reason, m.boundary.reason)
        return f"Boundary ({m.boundary.reason}: {reason}): {m.boundary.message}"
    if m.singular:
        return (f"Boundary: the estimate is interior but theta = sigma_b/sigma = {m.theta:.3g} is below "
                f"singular_tol = {m.singular_tol:g}, so lme4's isSingular() would call the fit singular.")
    return (f"Boundary: none. The estimate is interior (var_group = {m.var_group:.4g} > 0, theta = "
            f"{m.theta:.4g}), where the criterion's derivative in tau is zero.")


def _lme4(m) -> str:
    name = criterion_name(m.REML)
    default, best = m.lme4_default, m.global_optimum
    start = "" if m.lme4_start_theta != m.lme4_start_theta else f" (theta = {m.lme4_start_theta:.4g})"
    if default.is_global:
        return (f"lme4: lmer() from its default start{start} with BOBYQA reaches this same optimum, so its "
                "estimates agree with these to its optimizer's tolerance.")
    text = (f"lme4: lmer() from its default start{start} stops at another local minimum, "
            f"{describe_optimum(default)} ({name} {default.criterion - best.criterion:.4f} worse), and reports it "
            f"as the estimate without a warning. The fits differ: {compare_fits(best, default)} (the global "
            "optimum vs lme4's).")
    if fits_differ(best, default):
        text += why_fits_differ(best, default)
    return text + f" To get the global optimum from lme4, start it there: lmer(..., start = list(theta = {best.theta:.6g}))."


def _compound_symmetry(m) -> str | None:
    cs = m.compound_symmetry
    name = criterion_name(m.REML)
    if cs.icc >= 0 or cs.criterion >= m.criterion - CRITERION_TIE_TOL or m.boundary is not None:
        return None  # nothing to add, or the boundary's reason said it
    limit = (" It falls towards the limit where V stops being positive definite, so that likelihood has no "
             "proper maximum there.") if cs.at_limit else ""
    return (f"Compound symmetry: a random intercept can only make observations of a group more alike. Allowing "
            f"them to be less alike (within-group correlation below 0, nlme's gls with corCompSymm) lowers the "
            f"{name} to {cs.criterion:.4f} at ICC = {cs.icc:.4g}, against {m.criterion:.4f} here: "
            f"m.compound_symmetry holds that fit.{limit}")


def explain(m) -> str:
    """A plain-text explanation of what the optimizer found (see the module).

    Parameters
    ----------
    m : LmerFit

    Returns
    -------
    str
        Paragraphs wrapped at ``NOTE_WIDTH`` characters, separated by blank lines.
    """
    paragraphs = [_fitted(m), _optima(m), _boundary(m), _lme4(m)]
    cs = _compound_symmetry(m)
    if cs is not None:
        paragraphs.append(cs)
    # The notes about optima, the boundary and lme4 are said above; the others are kept.
    covered = set(optimum_notes(m.optima, m.global_optimum, m.compound_symmetry, m.boundary, m.REML,
                                m.lme4_start_theta))
    paragraphs.extend(f"Note: {note}" for note in m.notes if note not in covered)
    return "\n\n".join(textwrap.fill(p, NOTE_WIDTH, break_long_words=False, break_on_hyphens=False)
                       for p in paragraphs) + "\n"


__all__ = ["explain"]
