"""Text rendering of a fit, in the layout of lme4's ``summary(lmer(...))``.

Rendering only formats numbers the fit already holds; it never refits.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

#: Width at which notes are wrapped.
NOTE_WIDTH = 88


def _format_table(df: pd.DataFrame, digits: int = 4) -> str:
    def fmt(v):
        if isinstance(v, str):
            return v
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.{digits}g}" if abs(v) >= 1e5 or (0 < abs(v) < 1e-3) else f"{v:.{digits}f}"

    cells = [[str(i)] + [fmt(v) for v in row] for i, row in zip(df.index, df.itertuples(index=False))]
    header = [""] + [str(c) for c in df.columns]
    widths = [max(len(r[k]) for r in cells + [header]) for k in range(len(header))]
    lines = [" ".join(h.ljust(w) if k == 0 else h.rjust(w) for k, (h, w) in enumerate(zip(header, widths)))]
    for r in cells:
        lines.append(" ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def _prt_methods(m) -> list[str]:
    method = "REML" if m.REML else "maximum likelihood"
    lines = [f"Linear mixed model fit by {method} (reml_engine, global optimum)"]
    if m.formula:
        lines.append(f"Formula: {m.formula}")
    return lines


def _prt_criterion(m) -> list[str]:
    if m.REML:
        return [f"REML criterion at convergence: {m.criterion:.4f}"]
    return [
        "     AIC      BIC   logLik deviance df.resid",
        f"{m.aic:8.4f} {m.bic:8.4f} {m.loglik:8.4f} {m.criterion:8.4f} {m.nobs - m.n_params:8d}",
    ]


def _prt_residuals(m) -> list[str]:
    resid = m.scaled_residuals
    if resid is None:
        return []
    q = np.quantile(resid, [0, 0.25, 0.5, 0.75, 1.0])
    df = pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"], index=[""])
    return ["Scaled residuals:", _format_table(df)]


def _prt_varcorr(m) -> list[str]:
    df = pd.DataFrame(
        {
            "Name": ["(Intercept)", ""],
            "Variance": [m.var_group, m.sigma2],
            "Std.Dev.": [np.sqrt(m.var_group), np.sqrt(m.sigma2)],
        },
        index=[m.group_name, "Residual"],
    )
    return ["Random effects:", _format_table(df), f"Number of obs: {m.nobs}, groups: {m.group_name}, {m.ngroups}"]


def _prt_fixef(m) -> list[str]:
    table = pd.DataFrame({"Estimate": m.fixef, "Std. Error": m.se, "t value": m.fixef / m.se})
    return ["Fixed effects:", _format_table(table)]


def _prt_corr(m) -> list[str]:
    p = len(m.fixef)
    if p < 2:
        return []
    se = m.se.to_numpy()
    corr = m.vcov.to_numpy() / np.outer(se, se)
    short = [name[:6] for name in m.fixef.index]
    rows = []
    for i in range(1, p):
        rows.append([f"{corr[i, j]:.3f}" for j in range(i)] + [""] * (p - 1 - i))
    df = pd.DataFrame(rows, index=list(m.fixef.index[1:]), columns=short[:-1])
    return ["Correlation of Fixed Effects:", _format_table(df)]


def _prt_optimizer(m) -> list[str]:
    s = m.opt_summary
    lines = [
        f"Optimizer: global scan of tau = var_group/sigma2 over [0, inf) and the compound-symmetry range; "
        f"{s.n_evaluations} evaluations, {len(m.optima)} local minim{'a' if len(m.optima) != 1 else 'um'}."
    ]
    if m.dropped_columns:
        lines.append(f"Dropped (rank deficient): {', '.join(m.dropped_columns)}")
    if m.singular:
        lines.append("boundary (singular) fit: var_group = 0")
    return lines


def _prt_notes(m) -> list[str]:
    if not m.notes:
        return []
    out = ["Notes:"]
    for note in m.notes:
        out.append(textwrap.fill(note, NOTE_WIDTH, initial_indent="- ", subsequent_indent="  "))
    return out


def render_summary(m) -> str:
    """The lme4-style text report of a fit, with the engine's notes at the end."""
    sections = [
        _prt_methods(m),
        _prt_criterion(m),
        _prt_residuals(m),
        _prt_varcorr(m),
        _prt_fixef(m),
        _prt_corr(m),
        _prt_optimizer(m),
        _prt_notes(m),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
