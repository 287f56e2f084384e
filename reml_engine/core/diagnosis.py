"""Why the estimate is where it is: the boundary reason and the local-optimum notes.

Written for the person who asks why their slope vanished: which optimum lme4 would have
returned, how the fits differ, and what the compound-symmetry fit says about a negative
within-group correlation.
"""

from __future__ import annotations

import numpy as np

from .optimizer import OptSummary
from .results import Boundary, CompoundSymmetryFit, LocalOptimum

#: Two criteria closer than this are reported as equal.
CRITERION_TIE_TOL = 1e-6
#: Coefficients listed when comparing two optima.
MAX_COEFS_COMPARED = 3
#: Two optima's fits are explained as different when a fixed effect moves by more than
#: this many of its standard errors between them.
FIXEF_SHIFT_IN_SE = 2.0


#: How a short note points to the long explanation.
EXPLAIN_POINTER = "m.explain() says"


def criterion_name(REML: bool) -> str:
    return "REML criterion" if REML else "deviance"


def boundary_reason(derivative_at_zero: float) -> str:
    """The reason for an estimate at var_group = 0 (``Boundary.reason``), from the slope
    of the criterion in tau there alone: ``"negative_icc"`` when it rises from 0, else
    ``"flat"``."""
    return "negative_icc" if derivative_at_zero > 0 else "flat"


def boundary_diagnosis(summary: OptSummary, cs: CompoundSymmetryFit) -> Boundary:
    """The reason for an estimate at var_group = 0, with the numbers behind it."""
    slope = summary.derivative_at_zero
    at_zero = next(o for o in summary.optima if o.kind == "boundary")
    name = criterion_name(summary.REML)
    reason = boundary_reason(slope)
    if reason == "negative_icc":
        message = (
            f"var_group is estimated at 0 (boundary): the {name} rises from there (slope {slope:.4g} in tau), "
            "so the data point to a negative ICC; compound symmetry (nlme's corCompSymm) has ICC = "
            f"{cs.icc:.4g}, {name} {cs.criterion:.4f} vs {at_zero.criterion:.4f} here."
        )
    else:
        message = (
            f"var_group is estimated at 0 (boundary), where the {name} is flat (zero slope): the data "
            "cannot tell a small group variance from none."
        )
    return Boundary(reason, slope, at_zero.criterion, cs.icc, cs.criterion, message)


def compare_fits(a: LocalOptimum, b: LocalOptimum, n_coefs: int = MAX_COEFS_COMPARED) -> str:
    """The ``n_coefs`` coefficients that differ most between two optima, with their SEs."""
    rel = (a.fixef - b.fixef).abs() / np.maximum(b.se.abs(), 1e-300)
    names = list(rel.sort_values(ascending=False).index[:n_coefs])
    parts = [
        f"{name} {a.fixef[name]:.4g} (SE {a.se[name]:.3g}) vs {b.fixef[name]:.4g} (SE {b.se[name]:.3g})"
        for name in names
    ]
    return "; ".join(parts)


def fits_differ(a: LocalOptimum, b: LocalOptimum) -> bool:
    """Some fixed effect moves by more than FIXEF_SHIFT_IN_SE of its standard error."""
    return bool(((a.fixef - b.fixef).abs() > FIXEF_SHIFT_IN_SE * a.se).any())


def why_fits_differ(estimate: LocalOptimum, other: LocalOptimum) -> str:
    """Why a slope changes between a small and a large group variance."""
    low, high = sorted((estimate, other), key=lambda o: o.tau)
    low_text = "at var_group = 0 the fit is ordinary least squares" if low.tau == 0 else (
        f"at the smaller group variance ({describe_optimum(low)}) the fit is close to ordinary least squares"
    )
    return (
        f" Why: {low_text}, which pools the between-group and the within-group variation of the "
        "predictors; at the larger group variance the random intercepts absorb the differences between "
        "groups, and the slopes come from within-group variation. When the two relations differ (a "
        "contextual effect), so do the fits: compare them with rl.compare_fe_re or test them with "
        "rl.hausman and rl.mundlak."
    )


def describe_optimum(o: LocalOptimum) -> str:
    if o.kind == "boundary":
        return "the boundary var_group = 0"
    return f"var_group = {o.var_group:.4g} (ICC {o.icc:.4g})"


def optimum_notes(
    optima: tuple[LocalOptimum, ...],
    estimate: LocalOptimum,
    cs: CompoundSymmetryFit,
    boundary: Boundary | None,
    REML: bool,
    lme4_start: float | None = None,
) -> list[str]:
    """Notes printed below the summary: local optima, lme4's pick, compound symmetry.

    ``lme4_start`` is lme4's starting theta (see :mod:`reml_engine.core.lme4_path`), quoted in
    the note on the optimum lme4 returns."""
    name = criterion_name(REML)
    notes: list[str] = []
    if boundary is not None:
        notes.append(boundary.message)
    # Each note is a line or two; explain() (report/explain.py) says why at length.
    others = [o for o in optima if not o.is_global]
    if others:
        listing = "; ".join(f"{describe_optimum(o)}, {name} {o.criterion:.4f}" for o in optima)
        notes.append(
            f"The {name} has {len(optima)} local minima over var_group >= 0 ({listing}); the estimate is "
            "the global one."
        )
    default = next(o for o in optima if o.is_lme4_default)
    if not default.is_global:
        start = "" if lme4_start is None else f" (theta = {lme4_start:.4g})"
        notes.append(
            f"lme4's lmer() from its default start{start} stops at a local minimum, {describe_optimum(default)} "
            f"({name} {default.criterion - estimate.criterion:.4f} worse); the fits differ most in "
            f"{compare_fits(estimate, default, 1)} (estimate vs lme4's)."
            + (f" {EXPLAIN_POINTER} why." if fits_differ(estimate, default) else "")
        )
    if boundary is None and cs.icc < 0 and cs.criterion < estimate.criterion - CRITERION_TIE_TOL:
        notes.append(
            f"Allowing a negative within-group correlation (compound symmetry, as nlme's gls with corCompSymm) "
            f"lowers the {name} further, to {cs.criterion:.4f} at ICC = {cs.icc:.4g}."
        )
    if cs.at_limit:
        notes.append(
            f"The compound-symmetry {name} keeps falling towards the limit where V stops being positive "
            "definite, so that likelihood has no "
            + ("maximum; the fit reported is its lowest proper local minimum."
               if any(o.kind != "limit" for o in cs.optima) else "proper maximum; its values are at the closest point scanned.")
        )
    return notes
