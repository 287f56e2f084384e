"""Text and HTML rendering of a fit, in the layout of lme4's ``summary(lmer(...))``.

The sections are lme4's: method line, formula, criterion, scaled residuals, random
effects, number of observations and groups, fixed effects, correlation of fixed effects.
Below them come what lme4 does not print: the optimizer's record (how many local
minima the global scan found) and the engine's notes (the boundary and its reason, the
compound-symmetry ICC when it is negative, the other local optima and the one lme4's
default start would return).

Rendering only formats numbers the fit already holds; it never refits. Each section is
a small function that returns a table (a DataFrame of numbers) or lines of text, so
the text and HTML reports share them.
"""

from __future__ import annotations

import math
import numbers
import re
import textwrap

import numpy as np
import pandas as pd

from ..errors import ModelDataError
from .r_format import STARS_LEGEND, SUMMARY_DIGITS, coefficient_table, format_one, format_vector, zapsmall

#: Width at which notes are wrapped.
NOTE_WIDTH = 88
#: Significant digits of the numbers in the tables (lme4 prints 4 as well).
DIGITS = 4
#: Numbers with magnitude outside [FIXED_LOW, FIXED_HIGH) are printed in scientific
#: notation, so that neither 1e-12 nor 1e12 loses its digits.
FIXED_LOW = 1e-3
FIXED_HIGH = 1e6
#: Length of a coefficient name in the header of the correlation table.
CORR_NAME_WIDTH = 6
#: Quantiles of the scaled residuals.
RESIDUAL_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Degrees of freedom of the summary's t tests (lmerTest's default).
SUMMARY_DDF = "satterthwaite"
#: ``summary(ddf=...)``'s choices, lmerTest's names; "lme4" prints lme4's table.
SUMMARY_DDF_CHOICES = ("Satterthwaite", "Kenward-Roger", "lme4")
SUMMARY_NO_DDF = "lme4"
#: How the header names each df method, as lmerTest's.
DDF_TITLES = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's", "residual": "residual df"}
#: Below the notes of a one-term fit: where the long form is.
EXPLAIN_LINE = "(m.explain() says at length what the optimizer found.)"
#: Decimals of the criterion and the AIC line (lme4's ``round(x, 1)``).
CRITERION_DECIMALS = 1


def format_number(value, digits: int = DIGITS, fixed: bool = False) -> str:
    """``digits`` decimals in fixed notation, or ``digits`` significant ones in scientific
    (``fixed=True``: always fixed, for numbers of order one such as scaled residuals).

    Examples
    --------
    >>> format_number(251.40510485), format_number(2.5e-13), format_number(0.0)
    ('251.4051', '2.500e-13', '0.0000')
    """
    if value is None or isinstance(value, str):
        return "" if value is None else value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if not fixed and value != 0 and not (FIXED_LOW <= abs(value) < FIXED_HIGH):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _is_text(value) -> bool:
    """A label rather than a number (pre-formatted numbers count as numbers)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def _format_table(df: pd.DataFrame, digits: int = DIGITS, index_header: str = "", fixed: bool = False) -> str:
    """Columns of numbers right-aligned, columns of text (and the row labels) left-aligned."""
    rows = [[str(i)] + [format_number(v, digits, fixed) for v in row]
            for i, row in zip(df.index, df.itertuples(index=False), strict=True)]
    header = [index_header] + [str(c) for c in df.columns]
    text_column = [True] + [df.iloc[:, k].map(_is_text).any() for k in range(df.shape[1])]
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [c.ljust(w) if left else c.rjust(w) for c, w, left in zip(row, widths, text_column, strict=True)]
        return " ".join(cells).rstrip()

    return "\n".join([line(header)] + [line(r) for r in rows])


# -- sections: each returns a title and a table or lines ------------------------------
def method_lines(m, ddf: str | None = SUMMARY_DDF) -> list[str]:
    """lmerTest's title (with the df method of the t tests; ``ddf=None``: lme4's title,
    no t tests), the formula and the data."""
    method = "REML" if m.REML else "maximum likelihood"
    if ddf is None:
        lines = [f"Linear mixed model fit by {method} [reml_engine: global optimum of the profiled criterion]"]
    else:
        lines = [f"Linear mixed model fit by {method}. t-tests use {DDF_TITLES.get(ddf, ddf)} method "
                 "[reml_engine: global optimum of the profiled criterion]"]
    if m.formula:
        lines.append(f"Formula: {m.formula}")
    data_name = getattr(m, "data_name", None)
    if data_name:
        lines.append(f"   Data: {data_name}")
    return lines


def criterion_text(value: float) -> str:
    """lme4's ``round(x, 1)`` printed with R's 7 digits, or more for a criterion in the
    millions so that its decimal is kept (``57210345.2``, not ``5.721e+07``)."""
    rounded = round(float(value), CRITERION_DECIMALS)
    integer_digits = len(str(int(abs(rounded)))) if math.isfinite(rounded) else 1
    return format_one(rounded, max(7, integer_digits + CRITERION_DECIMALS)).strip()


def criterion_table(m) -> pd.DataFrame | None:
    """ML fits: lme4's AIC/BIC/logLik/deviance line; REML fits print one number instead."""
    if m.REML:
        return None
    return pd.DataFrame(
        [[m.aic, m.bic, m.loglik, m.criterion, m.nobs - m.n_params]],
        columns=["AIC", "BIC", "logLik", "deviance", "df.resid"],
        index=[""],
    )


def residual_table(m) -> pd.DataFrame | None:
    resid = m.scaled_residuals
    if resid is None or len(resid) == 0:
        return None
    q = np.quantile(resid, RESIDUAL_QUANTILES)
    return pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"], index=[""])


def random_effects_table(m) -> pd.DataFrame:
    vc = m.varcorr()
    return pd.DataFrame(
        {"Name": vc["name"].to_numpy(), "Variance": vc["variance"].to_numpy(), "Std.Dev.": vc["sd"].to_numpy()},
        index=list(vc.index),
    )


def summary_ddf(ddf) -> str | None:
    """The df method of ``summary(ddf=...)``: lmerTest's names (``"Satterthwaite"``,
    ``"Kenward-Roger"``, ``"lme4"``, which gives lme4's table without df and p) or the
    engine's (``"satterthwaite"``, ``"kenward-roger"``, ``"kr"``, ``"residual"``); None
    for ``"lme4"``."""
    from ..inference.fixed_tests import normalize_ddf

    if isinstance(ddf, str):
        if ddf.strip().lower() == SUMMARY_NO_DDF.lower():
            return None
        try:
            return normalize_ddf(ddf)
        except ValueError:
            pass
    raise ModelDataError(f"ddf must be one of {', '.join(map(repr, SUMMARY_DDF_CHOICES))} (as lmerTest's summary) "
                     f"or 'residual', got {ddf!r}")


def fixed_effects_table(m, ddf: str | None = SUMMARY_DDF) -> pd.DataFrame:
    """Estimate, SE, df, t and Pr(>|t|) as lmerTest's summary (``ddf=None``: lme4's
    three columns). With Kenward-Roger's df the standard errors are pbkrtest's adjusted
    ones, as lmerTest prints them."""
    if ddf is None:
        se = m.se
        return pd.DataFrame({"Estimate": m.fixef, "Std. Error": se, "t value": m.fixef / se.where(se > 0)})
    table = m.coef_table(ddf)
    se = table["se"]
    return pd.DataFrame({"Estimate": m.fixef, "Std. Error": se, "df": table["df"],
                         "t value": m.fixef / se.where(se > 0), "Pr(>|t|)": table["p"]})


def _abbreviations(names: list[str]) -> list[str]:
    """Short, distinct column headers: ``(Intr)``, ``x1:ctb`` style prefixes.

    formulaic's ``[T.level]`` is written as lme4 writes it (``catb``), then names are cut
    to ``CORR_NAME_WIDTH`` characters, or longer where that would make two alike.
    """
    plain = ["(Intr)" if n == "(Intercept)" else re.sub(r"\[T\.([^\]]*)\]", r"\1", n) for n in names]
    for width in range(CORR_NAME_WIDTH, max(map(len, plain)) + 1):
        short = [n[:width] for n in plain]
        if len(set(short)) == len(short):
            return short
    return list(names)


def correlation_table(m) -> pd.DataFrame | None:
    """Lower triangle of the correlation of the fixed-effect estimates (lme4's layout)."""
    p = len(m.fixef)
    if p < 2:
        return None
    se = m.se.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = m.vcov.to_numpy() / np.outer(se, se)
    rows = [[f"{corr[i, j]:.3f}" for j in range(i)] + [""] * (p - 1 - i) for i in range(1, p)]
    return pd.DataFrame(rows, index=list(m.fixef.index[1:]), columns=_abbreviations(list(m.fixef.index))[:-1])


def optimizer_lines(m) -> list[str]:
    s = m.opt_summary
    n_opt = len(m.optima)
    lines = [
        "Optimizer: global scan of tau = var_group/sigma2 over [0, inf) and the compound-symmetry range; "
        f"{s.n_evaluations} evaluations, {n_opt} local minim{'a' if n_opt != 1 else 'um'}."
    ]
    if m.dropped_columns:
        lines.append(f"Dropped (rank deficient): {', '.join(m.dropped_columns)}")
    if m.singular:
        lines.append("boundary (singular) fit: var_group = 0")
    return lines


# -- text ------------------------------------------------------------------------------
def _wrap(text: str, bullet: str) -> str:
    """Wrapped at NOTE_WIDTH without splitting words or numbers."""
    return textwrap.fill(text, NOTE_WIDTH, initial_indent=bullet, subsequent_indent=" " * len(bullet),
                         break_long_words=False, break_on_hyphens=False)


def _text_table(cells: pd.DataFrame, index_header: str = "", left: tuple = ()) -> list[str]:
    """Pre-formatted cells in columns: right-aligned (R's ``print(right = TRUE)``) but
    for the columns named in ``left`` and the row labels."""
    header = [index_header, *map(str, cells.columns)]
    rows = [[str(i), *map(str, row)] for i, row in zip(cells.index, cells.itertuples(index=False), strict=True)]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    is_left = [True, *[c in left for c in cells.columns]]

    def line(row):
        return " ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(row, widths, is_left, strict=True))

    return [line(header).rstrip()] + [line(r).rstrip() for r in rows]


def _criterion_lines(m) -> list[str]:
    """lme4's criterion line (REML) or AIC/BIC/logLik/deviance/df.resid table (ML)."""
    table = criterion_table(m)
    if table is None:
        return [f"REML criterion at convergence: {criterion_text(m.criterion)}"]
    values = [round(float(v), CRITERION_DECIMALS) for v in table.iloc[0, :-1]]
    texts = [*format_vector(values, 7), str(int(table.iloc[0, -1]))]
    cells = pd.DataFrame([texts], columns=table.columns, index=[""])
    return _text_table(cells)


def _residual_lines(m) -> list[str] | None:
    table = residual_table(m)
    if table is None:
        return None
    texts = format_vector(zapsmall(table.iloc[0].to_numpy(), SUMMARY_DIGITS + 1), SUMMARY_DIGITS)
    return _text_table(pd.DataFrame([texts], columns=table.columns, index=[""]))


def _random_effects_lines(m) -> list[str]:
    table = random_effects_table(m)
    cells = pd.DataFrame({
        "Name": table["Name"].to_numpy(),
        "Variance": format_vector(table["Variance"], SUMMARY_DIGITS),
        "Std.Dev.": format_vector(table["Std.Dev."], SUMMARY_DIGITS),
    }, index=table.index)
    return _text_table(cells, index_header="Groups", left=("Name", "Variance", "Std.Dev."))


def _fixed_effects_lines(m, ddf: str | None) -> list[str]:
    cells, stars = coefficient_table(fixed_effects_table(m, ddf), SUMMARY_DIGITS)
    lines = _text_table(cells, left=("",))
    return [*lines, "---", STARS_LEGEND] if stars else lines


def render_summary(m, ddf: str | None = SUMMARY_DDF) -> str:
    """The lme4-style text report of a fit, with the engine's notes at the end.

    The layout and digits are lmerTest's ``summary()``: df and ``Pr(>|t|)`` of the
    fixed effects on Satterthwaite's df (``ddf``: ``"kenward-roger"``, ``"residual"``,
    or None for lme4's table without them).
    """
    sections: list[list[str]] = [method_lines(m, ddf) if ddf else method_lines(m)[1:]]
    if ddf is None:
        method = "REML" if m.REML else "maximum likelihood"
        sections[0].insert(0, f"Linear mixed model fit by {method} [reml_engine: global optimum of the profiled "
                              "criterion]")
    sections.append(_criterion_lines(m))
    lines = _residual_lines(m)
    if lines is not None:
        sections.append(["Scaled residuals:", *lines])
    sections.append([
        "Random effects:",
        *_random_effects_lines(m),
        f"Number of obs: {m.nobs}, groups:  {m.group_name}, {m.ngroups}",
    ])
    sections.append(["Fixed effects:", *_fixed_effects_lines(m, ddf)])
    table = correlation_table(m)
    if table is not None:
        sections.append(["Correlation of Fixed Effects:", _format_table(table)])
    sections.append([_wrap(line, "") for line in optimizer_lines(m)])
    if m.notes:
        notes = [_wrap(n, "- ") for n in m.notes]
        sections.append(["Notes:", *notes, EXPLAIN_LINE])
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


# -- HTML ------------------------------------------------------------------------------
def render_html(m, ddf: str | None = SUMMARY_DDF) -> str:
    """The same report as :func:`render_summary`, as HTML for notebooks (see
    :func:`reml_engine.report.notebook.fit_html`)."""
    from .notebook import fit_html

    return fit_html(m, ddf, [f"Number of obs: {m.nobs}, groups: {m.group_name}, {m.ngroups}"], optimizer_lines(m),
                    EXPLAIN_LINE)


__all__ = ["format_number", "render_html", "render_summary", "summary_ddf"]
