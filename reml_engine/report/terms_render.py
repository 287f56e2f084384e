"""Text report of a fit with several random-intercept terms, in lme4's layout.

lmerTest's sections (method with the df of the t tests, formula, criterion, scaled
residuals, random effects with one row per term and the residual, number of observations
and of groups per term, fixed effects with df and ``Pr(>|t|)``, their correlation), built
from the same section functions and R number formatting as the one-term report
(:mod:`reml_engine.report.render`, :mod:`reml_engine.report.r_format`), then the
optimizer's record and the notes.
Rendering only formats numbers the fit holds.
"""

from __future__ import annotations

from .render import (
    SUMMARY_DDF,
    _criterion_lines,
    _fixed_effects_lines,
    _format_table,
    _random_effects_lines,
    _residual_lines,
    _wrap,
    correlation_table,
    method_lines,
)


def groups_line(m) -> str:
    """lme4's ``Number of obs: 60, groups:  cask:batch, 30; batch, 10``."""
    groups = "; ".join(f"{name}, {count}" for name, count in m.ngroups.items())
    return f"Number of obs: {m.nobs}, groups:  {groups}"


def optimizer_lines(m) -> list[str]:
    s = m.opt_summary
    n_opt = len(m.optima)
    search = {"grid": f"a grid over the other ratios ({s.points_per_unit:.3g} points per unit of log tau), one ratio "
                      "solved exactly at each node",
              "budgeted": "descents from lme4's start and from the exact minima along the cheaper terms",
              "exact": "an exact scan"}.get(s.search, s.search)
    lines = [f"Optimizer: {s.search} search of tau_j = var_j/sigma2 over [0, inf) per term ({search}); "
             f"{s.n_evaluations} evaluations, {n_opt} local minim{'a' if n_opt != 1 else 'um'}."]
    if m.weighted or m.has_offset:
        lines.append("With " + " and ".join(w for w, on in (("prior weights", m.weighted), ("an offset", m.has_offset))
                                            if on) + ".")
    if m.dropped_columns:
        lines.append(f"Dropped (rank deficient): {', '.join(m.dropped_columns)}")
    at_zero = [n for n, z in m.at_boundary.items() if z]
    if at_zero:
        lines.append(f"boundary (singular) fit: variance 0 for {', '.join(at_zero)}")
    return lines


def render_terms_summary(m, ddf: str | None = SUMMARY_DDF) -> str:
    """The text report of a :class:`~reml_engine.core.terms_results.TermsFit`: lmerTest's
    ``summary()`` layout and digits (``ddf``: the df of the t tests, ``"satterthwaite"``,
    ``"kenward-roger"`` or ``"residual"``; None for lme4's table without df and p), then the optimizer's record
    and the notes."""
    header = method_lines(m, ddf)
    sections: list[list[str]] = [header, _criterion_lines(m)]
    lines = _residual_lines(m)
    if lines is not None:
        sections.append(["Scaled residuals:", *lines])
    sections.append(["Random effects:", *_random_effects_lines(m), groups_line(m)])
    sections.append(["Fixed effects:", *_fixed_effects_lines(m, ddf)])
    table = correlation_table(m)
    if table is not None:
        sections.append(["Correlation of Fixed Effects:", _format_table(table)])
    sections.append([_wrap(line, "") for line in optimizer_lines(m)])
    if m.notes:
        sections.append(["Notes:", *[_wrap(n, "- ") for n in m.notes]])
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def render_terms_html(m, ddf: str | None = SUMMARY_DDF) -> str:
    """The report of :func:`render_terms_summary` as HTML for notebooks."""
    from .notebook import fit_html

    return fit_html(m, ddf, [groups_line(m)], optimizer_lines(m))


__all__ = ["groups_line", "render_terms_html", "render_terms_summary"]
