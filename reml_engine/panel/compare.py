"""The table people draw by hand: one slope under every estimator of the same data.

:func:`compare_fe_re` puts side by side, for one coefficient (by default the first
column that varies within groups):

* pooled OLS, the between estimator and the within (fixed-effects) estimator;
* the random-intercept fit at its global optimum and at every other local optimum of
  the criterion, with the one lme4's default start returns marked;
* the compound-symmetry fit (negative intra-class correlation allowed);
* the within-between model ``y ~ within(x) + between(x) + (1|g)``, whose within slope
  equals the within estimator.

Examples
--------
>>> import reml_engine as rl
>>> table = rl.compare_fe_re("y ~ x + (1|f)", rl.load_seed())
>>> [round(v, 4) for v in table["coef"]]
[0.0086, 0.0057, 0.4625, 0.451, 0.0086, 0.0057, 0.4625]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.fitting import fit_design
from ..frontend.design import build_design
from ..frontend.groups import factorize_groups
from ..frontend.transforms import split_columns
from .estimators import between_estimator, pooled_estimator, within_estimator, within_varying_columns

#: Columns of the comparison table.
COLUMNS = ("estimator", "coef", "se", "var_group", "sigma2", "icc", "criterion", "lme4_default", "note")


def within_between_design(design, fit):
    """The design with every within-varying column replaced by ``within(c)`` and
    ``between(c)`` (group-constant columns and the intercept kept as they are)."""
    from dataclasses import replace

    varying = within_varying_columns(fit)
    codes = factorize_groups(design.groups, design.group_name)
    within_part, between_part = split_columns(design.X[:, varying], codes.codes, codes.ngroups)
    columns, names = [], []
    for j, name in enumerate(design.column_names):
        if j in varying:
            k = varying.index(j)
            columns += [within_part[:, k], between_part[:, k]]
            names += [f"within({name})", f"between({name})"]
        else:
            columns.append(design.X[:, j])
            names.append(name)
    return replace(design, X=np.column_stack(columns), column_names=tuple(names), model_spec=None)


def _row(estimator, coef, se, var_group=math.nan, sigma2=math.nan, criterion=math.nan,
         lme4_default=False, note="") -> dict:
    icc = var_group / (var_group + sigma2) if np.isfinite(var_group) and np.isfinite(sigma2) else math.nan
    return {
        "estimator": estimator, "coef": coef, "se": se, "var_group": var_group, "sigma2": sigma2,
        "icc": icc, "criterion": criterion, "lme4_default": lme4_default, "note": note,
    }


def _term(fit, term: str | None) -> str:
    varying = [fit.fixef.index[j] for j in within_varying_columns(fit)]
    if term is None:
        if not varying:
            raise ValueError("no fixed-effect column varies within groups: nothing to compare")
        return varying[0]
    if term not in varying:
        raise ValueError(
            f"term {term!r} is not a column that varies within groups; choose one of {varying}"
        )
    return term


def compare_fe_re(formula: str, data: pd.DataFrame, term: str | None = None, *, REML: bool = True,
                  na_action: str = "omit") -> pd.DataFrame:
    """One coefficient under pooled, between, within, random-intercept and related fits.

    Parameters
    ----------
    formula : str
        ``"y ~ x + ... + (1|g)"``.
    data : pandas.DataFrame
    term : str, optional
        The coefficient to compare (a column of the fixed-effect design that varies
        within groups); default the first such column.
    REML : bool
        Criterion of the random-intercept and compound-symmetry fits.
    na_action : {"omit", "raise"}

    Returns
    -------
    pandas.DataFrame
        One row per estimator, columns ``estimator, coef, se, var_group, sigma2, icc,
        criterion, lme4_default, note``. ``sigma2`` is the residual variance (of
        the group means for the between estimator); ``var_group`` and ``criterion``
        are given where the estimator has them (the pooled fit is the model at
        var_group = 0, whose criterion it has). In the compound-symmetry row
        ``var_group`` is negative when the ICC is. Under REML the within-between
        row's criterion is not comparable with the others: its fixed-effect
        columns differ, and REML criteria compare only models with the same ones.
    """
    design = build_design(formula, data, na_action=na_action)
    fit = fit_design(design, REML=REML)
    term = _term(fit, term)
    rows = []

    pooled = pooled_estimator(fit)
    at_zero = next((o for o in fit.optima if o.kind == "boundary"), None)
    rows.append(_row("pooled OLS", pooled.fixef[term], pooled.se[term], 0.0, pooled.sigma2,
                     at_zero.criterion if at_zero is not None else math.nan,
                     note="lm(y ~ X): the random-intercept model at var_group = 0"))
    between = between_estimator(fit)
    rows.append(_row("between", between.fixef.get(term, math.nan), between.se.get(term, math.nan),
                     sigma2=between.sigma2,
                     note=f"OLS on the {fit.ngroups} group means; sigma2 is the residual variance of the means"))
    within = within_estimator(fit)
    rows.append(_row("within (fixed effects)", within.fixef[term], within.se[term], sigma2=within.sigma2,
                     note=f"OLS with one dummy per group, {within.df_resid} residual df"))

    for optimum in sorted(fit.optima, key=lambda o: not o.is_global):
        where = "boundary" if optimum.kind == "boundary" else "interior"
        label = "random intercept, " + ("global optimum" if optimum.is_global else "local optimum")
        note = f"{where}, tau = var_group/sigma2 = {optimum.tau:.6g}"
        if optimum.is_lme4_default:
            note += "; lme4's lmer() with its default start returns this one"
        rows.append(_row(label, optimum.fixef[term], optimum.se[term], optimum.var_group, optimum.sigma2,
                         optimum.criterion, optimum.is_lme4_default, note))

    cs = fit.compound_symmetry
    residual = cs.sigma2 / (1.0 + cs.tau)
    rows.append(_row("compound symmetry", cs.fixef[term], cs.se[term], cs.tau * residual, residual,
                     cs.criterion, note=f"ICC allowed below 0 (nlme gls corCompSymm), estimated {cs.icc:.4g}; "
                     f"total variance {cs.sigma2:.4g}" + ("; at the positive-definite limit" if cs.at_limit else "")))

    wb = fit_design(within_between_design(fit.design, fit), REML=REML)
    between_name = f"between({term})"
    rows.append(_row("within-between", wb.fixef[f"within({term})"], wb.se[f"within({term})"], wb.var_group,
                     wb.sigma2, wb.criterion,
                     note=f"y ~ within + between + (1|g); {between_name} = {wb.fixef[between_name]:.4g} "
                     f"(SE {wb.se[between_name]:.3g})"
                     + ("" if wb.lme4_default.is_global else "; lme4's default start stops at a local optimum")))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs["term"] = term
    table.attrs["formula"] = formula
    return table


__all__ = ["compare_fe_re", "within_between_design"]
