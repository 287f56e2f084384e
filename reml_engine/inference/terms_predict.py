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
from ..frontend.groups import factorize_groups, group_labels, level_positions
from ..frontend.terms_design import check_weights

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


def simulate_terms(fit, nsim: int = 1, seed=None, re: bool = False, newdata: pd.DataFrame | None = None, *,
                   weights=None, offset=None) -> pd.DataFrame:
    """Responses drawn from the fitted model, one column per simulation (lme4's
    ``simulate(m, nsim, seed, newdata)``).

    ``X beta + offset + sum_j b_j + e`` with ``b_j ~ N(0, var_j)`` drawn per level of each
    term and ``e ~ N(0, sigma2 / w)`` per row; with ``re=True`` the random effects are
    held at their conditional modes (lme4's ``use.u = TRUE``). A level of ``newdata``
    the fit never saw has no mode: its effect is drawn from ``N(0, var_j)`` either way.

    Parameters
    ----------
    fit : TermsFit
    nsim : int
    seed : int, numpy.random.Generator or None
    re : bool
    newdata : pandas.DataFrame, optional
        Rows to simulate, with the columns of the fixed part, the offset columns and
        every term's grouping columns (rows with a missing value there are refused).
        Without it the fitted rows, which a fit from chunks, Dask or Parquet does not
        keep: it needs ``newdata``.
    weights : str or array-like, optional
        The new rows' prior weights, for a weighted fit (default: the column the fit's
        ``weights=`` named).
    offset : str or array-like, optional
        The new rows' offset, for fits made with an ``offset=`` argument.

    Returns
    -------
    pandas.DataFrame
        The fitted rows (indexed as in the data) or those of ``newdata``, and columns
        ``sim_1 ... sim_nsim``.

    Notes
    -----
    The draws come in this order: per term, in the order of ``term_names``, the effects
    of the fit's levels (``ngroups x nsim``, in the order of ``ranef``; none with
    ``re=True``) then those of the new levels of ``newdata`` (sorted); then the residuals
    (rows x nsim). So ``simulate(nsim, seed, newdata=rows)`` on the fitted rows gives the
    draws of ``simulate(nsim, seed)``.
    """
    if isinstance(nsim, bool) or not isinstance(nsim, numbers.Integral) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    if not isinstance(re, (bool, np.bool_)):
        raise TypeError(f"re must be True or False, got {re!r}")
    if newdata is None:
        if weights is not None or offset is not None:
            raise ModelDataError("weights= and offset= are for newdata; the fitted rows keep their own")
        tdesign = fit.design
        if tdesign is None:
            raise ModelDataError("simulate() needs rows to simulate: this fit was made from chunks, Dask or Parquet "
                                 "and keeps no rows; pass newdata= (a DataFrame with the columns of the formula) "
                                 "to simulate responses for those rows")
        mean = tdesign.design.X @ fit._fixef.to_numpy()
        if tdesign.offset is not None:
            mean = mean + tdesign.offset
        codes = list(tdesign.terms.codes)
        n_new = [0] * len(codes)
        row_weights = tdesign.weights
        index = tdesign.data_index[tdesign.rows]
    else:
        mean, codes, n_new, row_weights = _new_rows_for_simulation(fit, newdata, weights, offset)
        index = newdata.index
    rng = np.random.default_rng(seed)
    draws = np.repeat(mean[:, None], nsim, axis=1)
    for j, name in enumerate(fit.term_names):
        sd = np.sqrt(fit.tau[j] * fit.sigma2)
        if re:
            effects = np.repeat(fit._ranef[name]["mode"].to_numpy()[:, None], nsim, axis=1)
        else:
            effects = rng.standard_normal((int(fit._ngroups.iloc[j]), nsim)) * sd
        new_effects = rng.standard_normal((n_new[j], nsim)) * sd
        draws += np.vstack([effects, new_effects])[codes[j]]
    scale = np.sqrt(fit.sigma2 if row_weights is None else fit.sigma2 / row_weights)
    draws += rng.standard_normal(draws.shape) * np.broadcast_to(np.atleast_1d(scale), (len(mean),))[:, None]
    return pd.DataFrame(draws, index=index, columns=[f"sim_{k + 1}" for k in range(nsim)])


def _new_rows_for_simulation(fit, newdata: pd.DataFrame, weights, offset
                             ) -> tuple[np.ndarray, list[np.ndarray], list[int], np.ndarray | None]:
    """``X beta + offset`` of the new rows; per term, each row's level (the fit's levels
    first, then the new ones, sorted) and the number of new levels; the rows' weights."""
    if not isinstance(newdata, pd.DataFrame):
        raise ModelDataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    encoding = fit.encoding
    if encoding is None:
        raise ModelDataError("simulate(newdata=) needs the fit's encoding of the data; this fit was made from bare "
                             "statistics")
    X, complete = new_fixed_design(encoding.fixed, newdata, fit.coef_names)
    if not complete.all():
        raise ModelDataError(f"{int((~complete).sum())} of {len(complete)} rows of newdata have missing predictors; "
                             "responses cannot be simulated for them: drop those rows first")
    mean = X @ fit._fixef.to_numpy() + _offset_of_newdata(fit, newdata, offset)
    if not np.isfinite(mean).all():
        raise ModelDataError("newdata has missing or infinite offsets: drop those rows first")
    codes, n_new = [], []
    for spec in encoding.specs:
        absent = [c for c in spec.columns if c not in newdata.columns]
        if absent:
            raise ModelDataError(f"newdata has no grouping column(s) {', '.join(map(repr, absent))} of term "
                                 f"{spec.name!r}")
        labels = group_labels(newdata, spec.columns)
        missing = (labels.to_frame().isna().any(axis=1).to_numpy() if isinstance(labels, pd.MultiIndex)
                   else pd.isna(np.asarray(labels, dtype=object)))
        if missing.any():
            raise ModelDataError(f"{int(missing.sum())} of {len(missing)} rows of newdata have no label in grouping "
                                 f"column(s) {', '.join(map(repr, spec.columns))} of term {spec.name!r}; drop those "
                                 "rows first")
        frame = fit._ranef[spec.name]
        try:
            positions = level_positions(frame.index, labels)
        except ValueError as err:
            raise ModelDataError(f"levels of term {spec.name!r} in newdata: {err}") from None
        unseen = positions < 0
        count = 0
        if unseen.any():
            new_levels = factorize_groups(labels[unseen], spec.name)
            positions[unseen] = len(frame) + new_levels.codes
            count = len(new_levels.levels)
        codes.append(positions)
        n_new.append(count)
    return mean, codes, n_new, _weights_of_newdata(fit, newdata, weights)


def _weights_of_newdata(fit, newdata: pd.DataFrame, weights) -> np.ndarray | None:
    if not fit.weighted:
        if weights is not None:
            raise ModelDataError("weights= is for fits made with prior weights; this fit has none")
        return None
    if weights is None:
        weights = fit.encoding.weights_column
        if weights is None:
            raise ModelDataError("the fit has prior weights given as values: pass simulate(newdata=..., weights=...) "
                                 "for the new rows (a column name or one number per row)")
    if isinstance(weights, str):
        if weights not in newdata.columns:
            raise ModelDataError(f"newdata has no column {weights!r} of prior weights; pass weights= (a column name "
                                 "or one number per row)")
        weights = newdata[weights]
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (len(newdata),):
        raise ModelDataError(f"weights= has {values.size} values for {len(newdata)} rows of newdata")
    check_weights(values, "weights", newdata.index)
    return values


__all__ = ["NO_RANDOM_TERMS", "conditional_fit", "predict_terms", "selected_terms", "simulate_terms"]
