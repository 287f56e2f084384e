"""How results look in a notebook: one small set of HTML pieces and a short ``repr``.

Every result a notebook shows (a fit, a test, an anova table, a plot) has a
``_repr_html_`` built from these pieces and a one-line ``__repr__`` built by
:func:`short_repr`, so that no result dumps its arrays (a profile curve has a thousand
points, a bootstrap thousands of replicates) into the notebook. Tables of numbers
(confint, coef_table, anova of the terms) are pandas DataFrames, which pandas itself
shows as HTML.

Text is escaped with :func:`html.escape`; numbers are printed as the text summary prints
them (:func:`reml_engine.report.render.format_number`). Rendering only formats what the
result holds; nothing is recomputed.

Examples
--------
>>> import pandas as pd
>>> from reml_engine.report.notebook import html_result, html_table, short_repr
>>> short_repr("FTest", f_value=4.0, num_df=1, method="satterthwaite")
'<FTest f_value=4 num_df=1 method=satterthwaite>'
>>> html_result("F-test", html_table(pd.DataFrame({"F value": [4.0]}, index=["x"])))[:38]
'<div class="reml-engine-result"><p><b>'
"""

from __future__ import annotations

import html
import numbers

import pandas as pd

from .r_format import SUMMARY_DIGITS, zapsmall
from .render import format_number

#: Rows of a table shown in a notebook (a result with more, e.g. many responses, shows
#: the first ones and says how many are left out).
MAX_HTML_ROWS = 20
#: Characters of a value shown in a short repr before it is cut with "...".
MAX_REPR_VALUE = 60


def cell_text(value) -> str:
    """A table cell: numbers as the text summary prints them, other values as text."""
    if isinstance(value, (bool,)) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b"):
        return str(bool(value))
    if value is None or isinstance(value, (str, numbers.Number)):
        return format_number(value)
    return str(value)


def html_lines(lines) -> str:
    """Lines of text as one paragraph, escaped."""
    return "<p>" + "<br>".join(html.escape(str(line)) for line in lines) + "</p>"


def html_table(df: pd.DataFrame, caption: str = "", index_header: str = "",
               max_rows: int = MAX_HTML_ROWS) -> str:
    """A table: row labels left, cells right-aligned and formatted by :func:`cell_text`
    (strings, such as pre-formatted p-values, are shown as they are). Past ``max_rows``
    rows the rest are left out and counted in a last row."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [index_header, *df.columns])
    body = []
    for label, row in zip(df.index[:max_rows], df.iloc[:max_rows].itertuples(index=False), strict=True):
        cells = "".join(f'<td style="text-align:right">{html.escape(cell_text(v))}</td>' for v in row)
        text = ", ".join(map(str, label)) if isinstance(label, tuple) else str(label)  # a MultiIndex's row
        body.append(f'<tr><th style="text-align:left">{html.escape(text)}</th>{cells}</tr>')
    if len(df) > max_rows:
        body.append(f'<tr><td colspan="{df.shape[1] + 1}">... {len(df) - max_rows} more rows</td></tr>')
    title = f'<caption style="text-align:left"><b>{html.escape(caption)}</b></caption>' if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_notes(notes, title: str = "Notes") -> str:
    """A titled list of notes ("" when there are none)."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(str(n))}</li>" for n in notes)
    return f"<p><b>{html.escape(title)}</b></p><ul>{items}</ul>"


def html_result(title: str, *parts: str) -> str:
    """A result: its title, then the pieces (made by the functions above) in order."""
    return f'<div class="reml-engine-result"><p><b>{html.escape(title)}</b></p>{"".join(parts)}</div>'


def fit_html(m, ddf: str | None, group_lines, optimizer_lines, notes_footer: str = "") -> str:
    """The summary of a fit (one term or several) as HTML: lmerTest's sections, the fixed
    effects with ``df`` and ``Pr(>|t|)`` on the df method the title names (``ddf=None``:
    lme4's three columns), then the optimizer's record and the notes (followed by
    ``notes_footer``)."""
    from .render import (
        correlation_table,
        criterion_table,
        fixed_effects_table,
        method_lines,
        random_effects_table,
        residual_table,
    )

    parts = [html_lines(method_lines(m, ddf))]
    table = criterion_table(m)
    if table is None:
        parts.append(html_lines([f"REML criterion at convergence: {format_number(m.criterion)}"]))
    else:
        parts.append(html_table(table, "Fit"))
    table = residual_table(m)
    if table is not None:
        # Rounded to the largest quantile's digits as the text summary (R's zapsmall).
        # + 0.0: no "-0.0000" (R prints none).
        table.iloc[0] = zapsmall(table.iloc[0].to_numpy(), SUMMARY_DIGITS + 1) + 0.0
        parts.append(html_table(table, "Scaled residuals"))
    parts.append(html_table(random_effects_table(m), "Random effects", index_header="Groups"))
    parts.append(html_lines(group_lines))
    parts.append(html_table(fixed_effects_table(m, ddf), "Fixed effects"))
    table = correlation_table(m)
    if table is not None:
        parts.append(html_table(table, "Correlation of fixed effects"))
    parts.append(html_lines(optimizer_lines))
    parts.append(html_notes(m.notes))
    if m.notes and notes_footer:
        parts.append(html_lines([notes_footer]))
    return '<div class="reml-engine-fit">' + "".join(parts) + "</div>"


def _fields(obj, names) -> pd.DataFrame:
    """One row: the named attributes of ``obj``, under their attribute names (so that
    what a table shows is what ``obj.<name>`` holds)."""
    return pd.DataFrame([[getattr(obj, n) for n in names]], columns=list(names), index=[""])


#: The attributes each test result shows, in order.
VARIANCE_TEST_FIELDS = ("statistic", "p_value", "method", "n_sim", "mc_se")
F_TEST_FIELDS = ("sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value")
CONTRAST_T_FIELDS = ("estimate", "se", "df", "t_value", "p_value", "lower", "upper")
HAUSMAN_FIELDS = ("statistic", "df", "p_value", "optimum", "tau")
MUNDLAK_FIELDS = ("statistic", "df", "f_statistic", "den_df", "p_value")
OPTIMUM_FIELDS = ("tau", "icc", "criterion", "kind", "is_global", "is_lme4_default")
POINT_FIELDS = ("tau", "icc", "criterion", "logdet_V", "logdet_XtVinvX", "pwrss", "sigma2", "var_group")
#: Columns of the many-responses table shown (the fixed effects follow).
MANY_FIELDS = ("tau", "var_group", "sigma2", "icc", "criterion", "n_optima")


def variance_test_html(test) -> str:
    kind = "restricted LRT" if test.REML else "LRT"
    return html_result(f"Test of var_group = 0 ({kind})", html_table(_fields(test, VARIANCE_TEST_FIELDS)))


def f_test_html(test) -> str:
    return html_result(f"F-test ({test.method} df)", html_table(_fields(test, F_TEST_FIELDS)))


def contrast_t_html(test) -> str:
    return html_result("t-test of one linear combination", html_table(_fields(test, CONTRAST_T_FIELDS)))


def hausman_html(test) -> str:
    slopes = pd.DataFrame({"b_within": test.b_within, "b_random": test.b_random,
                           "difference": test.b_within - test.b_random})
    return html_result("Hausman test: random-intercept fit against the within estimator",
                       html_table(_fields(test, HAUSMAN_FIELDS)), html_table(slopes, "Compared slopes"),
                       html_notes([] if test.positive_definite else [test.message]))


def mundlak_html(test) -> str:
    se = pd.Series([test.vcov.loc[t, t] ** 0.5 for t in test.estimates.index], index=test.estimates.index)
    effects = pd.DataFrame({"estimate": test.estimates, "se": se})
    return html_result(f"Mundlak test of the contextual effects ({test.method})",
                       html_table(_fields(test, MUNDLAK_FIELDS)), html_table(effects, "Contextual effects"))


def anova_html(result) -> str:
    return html_result("Model comparison", html_table(result.table, index_header=result.table.index.name or ""),
                       html_notes(result.notes))


def shown_table_html(result, title: str) -> str:
    """A table with its notes (marginal means, contrasts): ``result.table`` and ``result.notes``."""
    table = result.table
    header = ", ".join(str(name) for name in table.index.names if name is not None)
    return html_result(title, html_table(table, index_header=header), html_notes(result.notes))


def bootstrap_html(result, level: float = 0.95) -> str:
    method = "REML" if result.REML else "ML"
    return html_result(f"Parametric bootstrap: {result.n_boot} replicates ({method}, seed {result.seed})",
                       html_table(result.percentile_intervals(level), f"{level:.0%} percentile intervals"))


def optima_table(optima) -> pd.DataFrame:
    """One row per marked optimum: ``tau``, ``icc``, ``criterion``, ``kind`` and the flags."""
    return pd.DataFrame([[getattr(o, n) for n in OPTIMUM_FIELDS] for o in optima], columns=list(OPTIMUM_FIELDS))


def profile_html(profile, title: str = "Criterion profile") -> str:
    name = "REML criterion" if profile.REML else "ML deviance"
    cs = profile.compound_symmetry
    lines = [f"{name} at {len(profile.icc)} points of the ICC from {format_number(profile.icc_lower)} to 1; "
             f"at var_group = 0: {format_number(profile.boundary_criterion)}",
             f"compound symmetry ({cs.kind}): ICC {format_number(cs.icc)}, {name} {format_number(cs.criterion)}"]
    return html_result(title, html_lines(lines), html_table(optima_table(profile.optima), "Local optima"))


def profile_point_html(point) -> str:
    return html_result("The profiled criterion at one tau", html_table(_fields(point, POINT_FIELDS)),
                       html_table(pd.DataFrame({"fixef": point.fixef, "se": point.se}), "Fixed effects at tau"))


def many_fits_html(fits) -> str:
    tau = fits.tau
    frame = pd.DataFrame({"tau": tau, "var_group": tau * fits.sigma2, "sigma2": fits.sigma2,
                          "icc": tau / (1.0 + tau), "criterion": fits.criterion, "n_optima": fits.n_optima})
    table = pd.concat([frame, fits.fixef], axis=1)
    method = "REML" if fits.REML else "ML"
    return html_result(f"{len(fits)} random-intercept fits by {method}, one per response",
                       html_table(table, index_header="response"),
                       html_lines(["fits[j] or fits[name] is one response's fit; fits.table() has every column"]))


def _repr_value(value) -> str:
    if isinstance(value, float) or (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)):
        return f"{float(value):.6g}"
    text = str(value)
    return text if len(text) <= MAX_REPR_VALUE else text[:MAX_REPR_VALUE - 3] + "..."


def short_repr(name: str, **fields) -> str:
    """``<Name field=value ...>``: floats with 6 significant digits, long values cut."""
    inner = " ".join(f"{key}={_repr_value(value)}" for key, value in fields.items())
    return f"<{name} {inner}>" if inner else f"<{name}>"


__all__ = ["MAX_HTML_ROWS", "anova_html", "bootstrap_html", "cell_text", "contrast_t_html", "f_test_html",
           "fit_html", "hausman_html", "many_fits_html", "mundlak_html", "optima_table", "profile_html",
           "profile_point_html", "variance_test_html", "html_lines", "html_notes", "html_result", "html_table", "short_repr"]
