"""Numbers laid out as R prints them, so that a summary reads like lme4's.

R formats a vector with one common layout (``format(x, digits)``): each number needs
some significant digits (at most ``digits``, fewer when the rest are trailing zeros),
the vector gets as many decimals as its most demanding element, and scientific notation
when that fixed layout would be wider than the scientific one. So a column never mixes
the two notations, and a tiny number next to large ones turns the column scientific
instead of printing as ``-0.0000``. :func:`coefficient_table` is R's ``printCoefmat``
layout of a coefficient table (estimates, standard errors and df rounded together,
t values to 3 decimals, p-values as ``format.pval``, significance stars).

This is a re-implementation of the rules R documents (``?format``, ``?printCoefmat``,
``?format.pval``), checked against R's printed output in the tests.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: Significant digits of lme4's summary (``max(3, getOption("digits") - 3)``).
SUMMARY_DIGITS = 4
#: R's default ``getOption("digits")``, for one-off numbers such as the criterion.
R_DIGITS = 7
#: The smallest p-value printed as a number (R's ``.Machine$double.eps``).
P_EPS = float(np.finfo(float).eps)
#: p-value cut-offs of the significance stars and their symbols (R's ``symnum``).
STAR_CUTS = (0.001, 0.01, 0.05, 0.1)
STAR_SYMBOLS = ("***", "**", "*", ".", " ")
STARS_LEGEND = "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"


def _significant(x: float, digits: int) -> tuple[int, int]:
    """(significant digits needed, decimal exponent) of ``x`` rounded to ``digits``."""
    if x == 0:
        return 1, 0
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(abs(x) / 10.0**exponent * 10 ** (digits - 1))
    if mantissa >= 10**digits:  # rounding carried into a new digit: 9.9995 -> 10.00
        exponent += 1
        mantissa = round(mantissa / 10)
    needed = digits
    while needed > 1 and mantissa % 10 == 0:
        mantissa //= 10
        needed -= 1
    return needed, exponent


def format_vector(values, digits: int = SUMMARY_DIGITS) -> list[str]:
    """``format(values, digits = digits)`` of R: one layout for all, right-justified.

    Examples
    --------
    >>> format_vector([-3.22570, -0.55290, 0.01090, 0.51880, 4.25060])
    ['-3.2257', '-0.5529', ' 0.0109', ' 0.5188', ' 4.2506']
    >>> format_vector([-1e-10, 251.4])
    ['-1.000e-10', ' 2.514e+02']
    """
    # + 0.0 turns -0.0 into 0.0: R prints no "-0.0000".
    values = [float(v) + 0.0 for v in values]
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        layout = [_significant(v, digits) for v in finite]
        negative = any(v < 0 for v in finite)
        width_left = max((v < 0) + max(exponent + 1, 1) for v, (_, exponent) in zip(finite, layout, strict=True))
        decimals = max(max(needed - exponent - 1, 0) for needed, exponent in layout)
        fixed_width = width_left + decimals + (decimals > 0)
        most_needed = max(needed for needed, _ in layout)
        exponent_digits = 2 if any(abs(exponent) >= 100 for _, exponent in layout) else 1
        sci_width = negative + (most_needed > 1) + (most_needed - 1) + 4 + exponent_digits
        scientific = fixed_width > sci_width
    texts = []
    for v in values:
        if math.isnan(v):
            texts.append("NaN")
        elif math.isinf(v):
            texts.append("Inf" if v > 0 else "-Inf")
        elif scientific:
            texts.append(f"{v:.{most_needed - 1}e}")
        else:
            texts.append(f"{v:.{decimals}f}")
    width = max(map(len, texts))
    return [t.rjust(width) for t in texts]


def format_one(value: float, digits: int = R_DIGITS) -> str:
    """One number as R's ``format``/``cat`` print it."""
    return format_vector([value], digits)[0]


def zapsmall(values, digits: int) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of the largest value."""
    values = np.asarray(values, dtype=float)
    largest = np.nanmax(np.abs(values)) if values.size else 0.0
    if not largest > 0:
        return values
    return np.round(values, max(0, digits - math.ceil(math.log10(largest))))


def format_pvalues(pvalues, digits: int, eps: float = P_EPS) -> list[str]:
    """R's ``format.pval``: ``<2e-16`` below ``eps``, else formatted in two groups
    (from 1e-4 up, fixed; below, scientific)."""
    pvalues = [float(p) for p in pvalues]
    texts = [""] * len(pvalues)
    above = [i for i, p in enumerate(pvalues) if not p < eps]
    plain = [i for i in above if pvalues[i] > 0 and math.floor(math.log10(pvalues[i])) >= (-4 if digits > 1 else -3)]
    small = [i for i in above if i not in plain]
    for group in (plain, small):
        if group:
            for i, text in zip(group, format_vector([pvalues[i] for i in group], digits), strict=True):
                texts[i] = text
    if len(above) < len(pvalues):
        eps_digits = max(1, digits - 2)
        widest = max((len(texts[i]) for i in above), default=0)
        if above and eps_digits > 1 and eps_digits + 6 > widest:
            eps_digits = max(1, widest - 7)
        separator = "" if eps_digits == 1 and (not above or widest <= 6) else " "
        below = "<" + separator + format_one(eps, eps_digits)
        texts = [below if not p >= eps else t for p, t in zip(pvalues, texts, strict=True)]
    return texts


def significance_stars(pvalues) -> list[str]:
    """R's ``symnum`` codes of p-values, padded to one width."""
    stars = []
    for p in pvalues:
        k = next((i for i, cut in enumerate(STAR_CUTS) if p <= cut), len(STAR_CUTS))
        stars.append(STAR_SYMBOLS[k] if math.isfinite(p) else "")
    width = max(map(len, stars), default=0)
    return [s.ljust(width) for s in stars]


def coefficient_table(table: pd.DataFrame, digits: int = SUMMARY_DIGITS) -> tuple[pd.DataFrame, bool]:
    """R's ``printCoefmat`` layout of ``table`` (columns: estimate, standard error, then
    optionally df; then the t value; then optionally the p-value, whose name starts
    with ``Pr(``).

    Returns the table of strings (with a column ``""`` of stars when a p-value is below
    0.1) and whether the stars' legend is to be printed.
    """
    columns = list(table.columns)
    has_p = str(columns[-1]).startswith("Pr(")
    t_column = len(columns) - 1 - has_p
    numbers = table.to_numpy(dtype=float)
    out = pd.DataFrame("", index=table.index, columns=columns, dtype=object)
    estimates = numbers[:, :t_column]
    sizes = np.abs(estimates[np.isfinite(estimates) & (estimates != 0)])
    smallest_digits = 1 + (math.floor(math.log10(sizes.min())) if sizes.size else 0)
    decimals = max(1, digits - smallest_digits)
    rounded = np.round(estimates, decimals)
    texts = np.array(format_vector(rounded.ravel(), digits), dtype=object).reshape(rounded.shape)
    # A number that rounding shows as 0 is printed on its own, with one digit fewer.
    for i, j in zip(*np.nonzero((estimates != 0) & (rounded == 0)), strict=True):
        texts[i, j] = format_one(estimates[i, j], max(1, digits - 1))
    out.iloc[:, :t_column] = texts
    out.iloc[:, t_column] = format_vector(np.round(numbers[:, t_column], max(1, min(5, digits - 1))), digits)
    stars = False
    if has_p:
        pvalues = numbers[:, -1]
        out.iloc[:, -1] = format_pvalues(pvalues, max(1, min(5, digits - 1)))
        stars = bool(np.any(pvalues < STAR_CUTS[-1]))
        if stars:
            out[""] = significance_stars(pvalues)
    return out, stars


__all__ = ["coefficient_table", "format_one", "format_pvalues", "format_vector", "zapsmall"]
