"""Fitted values and predictions of a fit with several random-intercept terms.

:func:`predict_terms` is lme4's ``predict(m, newdata, re.form, allow.new.levels = TRUE)``:
``x' beta + offset`` plus the conditional mode of the row's level in each term of
``re_form`` (all terms by default). A level the fit never saw, or a missing label, adds 0
for that term only: the other terms' modes still count.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd

from ..errors import ModelDataError, ModelDataWarning
from ..frontend.design import new_fixed_design
from ..frontend.formula import random_term_specs
from ..frontend.groups import group_labels, level_positions

#: ``re_form`` values that mean "no random terms" (lme4's ``re.form = NA`` or ``~0``).
NO_RANDOM_TERMS = ("NA", "~0")


def conditional_fit(fit) -> np.ndarray:
    """``X beta + offset + sum_j b_j`` on the rows fitted."""
    tdesign = fit.design
    values = tdesign.design.X @ fit._fixef.to_numpy()
    if tdesign.offset is not None:
        values = values + tdesign.offset
    for name, codes in zip(tdesign.terms.names, tdesign.terms.codes, strict=True):
        values = values + fit._ranef[name]["mode"].to_numpy()[codes]
    return values


def selected_terms(fit, re_form) -> tuple[str, ...]:
    """The terms whose modes a prediction adds: all (None), none (``NO_RANDOM_TERMS``) or
    those of a formula such as ``"~ (1|subj)"``."""
    if re_form is None or re_form is True:
        return tuple(fit.term_names)
    if re_form is False or (isinstance(re_form, str) and re_form.replace(" ", "") in NO_RANDOM_TERMS):
        return ()
    if not isinstance(re_form, str) or "~" not in re_form:
        raise ModelDataError(f"re_form must be None (all terms), False or '~0' (none) or a formula such as "
                             f"'~ (1|{fit.term_names[0]})', got {re_form!r}")
    by_columns = {frozenset(spec.columns): spec.name for spec in fit.encoding.specs}
    chosen = []
    for spec in random_term_specs(re_form):
        name = by_columns.get(frozenset(spec.columns))
        if name is None:
            raise ModelDataError(f"re_form term {spec.name!r} is not a term of the fit ({', '.join(fit.term_names)})")
        chosen.append(name)
    return tuple(n for n in fit.term_names if n in chosen)


def _offset_of_newdata(fit, newdata: pd.DataFrame, offset) -> np.ndarray:
    tdesign = fit.encoding
    total = np.zeros(len(newdata))
    absent = [c for c in tdesign.offset_columns if c not in newdata.columns]
    if absent:
        raise ModelDataError(f"newdata has no offset column(s) {', '.join(map(repr, absent))}, which the formula's "
                             "offset() terms read")
    for column in tdesign.offset_columns:
        total = total + pd.to_numeric(newdata[column]).to_numpy(dtype=np.float64)
    if tdesign.offset_given:
        if offset is None:
            raise ModelDataError("the fit has an offset= argument: pass predict(newdata, offset=...) for the new rows "
                                 "(a column name or one number per row)")
        values = newdata[offset] if isinstance(offset, str) else np.asarray(offset, dtype=np.float64)
        if isinstance(offset, str) and offset not in newdata.columns:
            raise ModelDataError(f"offset={offset!r} is not a column of newdata")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(newdata),):
            raise ModelDataError(f"offset= has {values.size} values for {len(newdata)} rows of newdata")
        total = total + values
    elif offset is not None:
        raise ModelDataError("offset= is for fits made with an offset= argument; this fit has none "
                             "(offset() columns of the formula are read from newdata)")
    return total


def predict_terms(fit, newdata: pd.DataFrame | None = None, re_form=None, *, offset=None) -> pd.Series:
    """Predicted responses.

    Parameters
    ----------
    fit : TermsFit
    newdata : pandas.DataFrame, optional
        Rows with the columns of the fixed part, the offset columns, and the grouping
        columns of the terms in ``re_form``. Without it, the fitted rows.
    re_form : None, False, "~0" or str
        Terms whose conditional modes are added: all (None, default), none (``False``,
        ``"NA"``, ``"~0"``: the population prediction) or those of a formula
        ``"~ (1|subj)"``.
    offset : str or array-like, optional
        The new rows' offset, for fits made with an ``offset=`` argument.

    Returns
    -------
    pandas.Series
        Indexed like ``newdata`` (or the fitted rows). Rows with a missing predictor are
        NaN (with a warning).

    Examples
    --------
    >>> import numpy as np, pandas as pd, reml_engine as rl
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"s": rng.integers(0, 6, 60), "i": rng.integers(0, 4, 60), "x": rng.normal(size=60)})
    >>> d["y"] = d.x + rng.normal(size=6)[d.s] + rng.normal(size=4)[d.i] + rng.normal(size=60)
    >>> m = rl.lmer("y ~ x + (1|s) + (1|i)", d)
    >>> new = pd.DataFrame({"x": [0.0], "s": [99], "i": [99]})   # unseen levels: the population prediction
    >>> bool(np.isclose(m.predict(new).iloc[0], m.fixef["(Intercept)"]))
    True
    """
    encoding = fit.encoding
    if encoding is None:
        raise ModelDataError("predict() needs the fit's encoding of the data; this fit was made from bare statistics")
    terms = selected_terms(fit, re_form)
    if newdata is None:
        tdesign = fit.design
        if tdesign is None:
            raise ModelDataError("predict() without newdata needs the fit's rows; this fit was made from chunks, Dask "
                                 "or Parquet and keeps none: pass newdata= (the rows to predict)")
        if offset is not None:
            raise ModelDataError("offset= is for newdata; the fitted rows keep their own offset")
        values = tdesign.design.X @ fit._fixef.to_numpy()
        if tdesign.offset is not None:
            values = values + tdesign.offset
        for name, codes in zip(tdesign.terms.names, tdesign.terms.codes, strict=True):
            if name in terms:
                values = values + fit._ranef[name]["mode"].to_numpy()[codes]
        return pd.Series(values, index=tdesign.data_index[tdesign.rows], name="predicted")
    if not isinstance(newdata, pd.DataFrame):
        raise ModelDataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    X, complete = new_fixed_design(encoding.fixed, newdata, fit.coef_names)
    values = X @ fit._fixef.to_numpy() + _offset_of_newdata(fit, newdata, offset)
    if not complete.all():
        warnings.warn(f"{int((~complete).sum())} of {len(complete)} rows of newdata have missing predictors; their "
                      "predictions are NaN", ModelDataWarning, stacklevel=3)
    for spec in encoding.specs:
        name = spec.name
        if name not in terms:
            continue
        absent = [c for c in spec.columns if c not in newdata.columns]
        if absent:
            raise ModelDataError(
                f"newdata has no grouping column(s) {', '.join(map(repr, absent))} of term {name!r}; add them, or "
                f"leave the term out with re_form (re_form=False for population predictions)"
            )
        frame = fit._ranef[name]
        try:
            positions = level_positions(frame.index, group_labels(newdata, spec.columns))
        except ValueError as err:
            raise ModelDataError(f"levels of term {name!r} in newdata: {err}") from None
        modes = frame["mode"].to_numpy()
        values = values + np.where(positions >= 0, modes[np.maximum(positions, 0)], 0.0)
    return pd.Series(values, index=newdata.index, name="predicted")


def simulate_terms(fit, nsim: int = 1, seed=None, re: bool = False) -> pd.DataFrame:
    """Responses drawn from the fitted model, one column per simulation (lme4's
    ``simulate(m, nsim, seed)``).

    ``X beta + offset + sum_j b_j + e`` with ``b_j ~ N(0, var_j)`` drawn per level of each
    term and ``e ~ N(0, sigma2 / w)`` per row; with ``re=True`` the random effects are
    held at their conditional modes (lme4's ``use.u = TRUE``).

    Returns
    -------
    pandas.DataFrame
        The fitted rows (indexed as in the data) and columns ``sim_1 ... sim_nsim``.
    """
    if isinstance(nsim, bool) or not isinstance(nsim, numbers.Integral) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    tdesign = fit.design
    if tdesign is None:
        raise ModelDataError("simulate() needs the fit's design; this fit was made from statistics only")
    rng = np.random.default_rng(seed)
    mean = tdesign.design.X @ fit._fixef.to_numpy()
    if tdesign.offset is not None:
        mean = mean + tdesign.offset
    draws = np.repeat(mean[:, None], nsim, axis=1)
    for j, (name, codes) in enumerate(zip(tdesign.terms.names, tdesign.terms.codes, strict=True)):
        if re:
            draws += fit._ranef[name]["mode"].to_numpy()[codes][:, None]
        else:
            effects = rng.standard_normal((tdesign.terms.nlevels[j], nsim)) * np.sqrt(fit.tau[j] * fit.sigma2)
            draws += effects[codes]
    scale = np.sqrt(fit.sigma2 if tdesign.weights is None else fit.sigma2 / tdesign.weights)
    draws += rng.standard_normal(draws.shape) * np.broadcast_to(np.atleast_1d(scale), (len(mean),))[:, None]
    return pd.DataFrame(draws, index=tdesign.data_index[tdesign.rows], columns=[f"sim_{k + 1}" for k in range(nsim)])


__all__ = ["NO_RANDOM_TERMS", "conditional_fit", "predict_terms", "selected_terms", "simulate_terms"]
