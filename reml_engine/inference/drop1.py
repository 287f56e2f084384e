"""lme4's ``drop1(m, test = "Chisq")``: each fixed term dropped in turn, by likelihood ratio.

For each fixed term that no other term contains (R's ``drop.scope``: ``age:Sex`` in
``age * Sex``, not ``age``), the model is refitted without it by maximum likelihood, a
REML fit's own model too (REML criteria of different fixed effects do not compare, so
lme4 refits by ML as well). The table has one row for the full model (``<none>``) and one
per term:

* ``npar``: parameters the term takes away (the columns of its design);
* ``AIC``: ``deviance + 2 x parameters`` of the ML fit;
* ``LRT``: deviance without the term minus the full model's;
* ``Pr(Chi)``: the chi-square tail of ``LRT`` on ``npar`` df.

Every fit is the global optimum of its criterion. The reduced models are fitted on the
full model's rows: when a term's column has missing values that the full model dropped,
the reduced model is fitted without those rows too, so the deviances compare (lme4 stops
with "number of rows in use has changed" there).

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont())
>>> table = m.drop1()
>>> list(table.index), list(table.columns)
(['<none>', 'age', 'Sex'], ['npar', 'AIC', 'LRT', 'Pr(Chi)'])
>>> round(float(table.loc["Sex", "LRT"]), 4)
8.5331
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ModelDataError
from .lazy_imports import scipy_stats as sps

#: The tests ``drop1`` can add to the npar and AIC columns (lme4's names).
DROP1_TESTS = ("Chisq", "none")
#: Label of the full model's row, as R's.
FULL_MODEL_ROW = "<none>"


def drop1(fit, test: str = "Chisq") -> pd.DataFrame:
    """Likelihood-ratio test of each droppable fixed term (see the module).

    Parameters
    ----------
    fit : LmerFit
        A fit made by :func:`reml_engine.lmer` from a DataFrame (it is refitted).
    test : {"Chisq", "none"}
        ``"Chisq"`` (default here; lme4's default is ``"none"``) adds the ``LRT`` and
        ``Pr(Chi)`` columns; ``"none"`` gives ``npar`` and ``AIC`` alone.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``<none>`` and the terms, columns ``npar``, ``AIC`` (and ``LRT``,
        ``Pr(Chi)``), NaN where R prints NA.
    """
    from ..frontend.formula_update import droppable_terms

    if test not in DROP1_TESTS:
        raise ModelDataError(f"test must be one of {', '.join(map(repr, DROP1_TESTS))} (lme4's names), got {test!r}")
    call = getattr(fit, "call", None)
    if call is None:
        raise ModelDataError("drop1() refits a model made by rl.lmer(formula, data) from a pandas DataFrame; this "
                             "fit was made from arrays, statistics or chunks")
    design = fit.design
    data = call.data if design.kept_rows is None else call.data.loc[design.kept_rows]
    full = fit.update(data=data, REML=False) if fit.REML or data is not call.data else fit
    terms = droppable_terms(call.formula)
    reduced = [full.update(f". ~ . - {term}") for term in terms]
    n_params = np.array([full.n_params, *(m.n_params for m in reduced)], dtype=float)
    deviance = np.array([full.criterion, *(m.criterion for m in reduced)])
    npar = n_params[0] - n_params
    npar[0] = np.nan
    table = pd.DataFrame({"npar": npar, "AIC": deviance + 2.0 * n_params},
                         index=pd.Index([FULL_MODEL_ROW, *terms]))
    if test == "Chisq":
        lrt = deviance - deviance[0]
        lrt[0] = np.nan
        p = np.full(len(lrt), np.nan)
        p[1:] = sps.chi2.sf(np.maximum(lrt[1:], 0.0), npar[1:])
        table["LRT"] = lrt
        table["Pr(Chi)"] = p
    return table


__all__ = ["DROP1_TESTS", "drop1"]
