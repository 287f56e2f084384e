"""Predictions for new rows and responses simulated from a fitted model.

:func:`predict` is lme4's ``predict(m, newdata, allow.new.levels = TRUE)``: the fixed
part ``x' beta`` plus, with ``re=True``, the conditional mode of the row's group. A
group the fit never saw (or a missing group label) has random effect 0, so its rows get
the population prediction; ``re=False`` (lme4's ``re.form = NA``) gives the population
prediction for every row.

:func:`simulate` is lme4's ``simulate(m, nsim, seed)``: new responses
``X beta + b + e`` with ``b ~ N(0, var_group)`` drawn per group and ``e ~ N(0, sigma2)``
per row, at the estimates. With ``re=True`` the group effects are held at their
conditional modes instead (lme4's ``use.u = TRUE``).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd

from ..core.criterion import fixed_effects
from ..errors import ModelDataError, ModelDataWarning
from ..frontend.design import new_fixed_design
from ..frontend.groups import factorize_groups, group_labels, level_positions


def fixed_part(fit, X: np.ndarray) -> np.ndarray:
    """``X beta`` for the fit's columns, computed in the model's centred parametrization.

    The user's coefficients of a predictor far from 0 (x shifted by 1e12) come with an
    intercept of the same size, so ``X @ fixef`` cancels most digits. The fit's
    parametrization gives ``X beta = c_y + (X - c) b`` with the shifts ``c`` the engine
    centred by and the coefficients ``b`` of the centred columns, which keeps them.
    """
    stats = fit.stats
    if stats is None or fit.parametrization is None:
        return X @ fit.fixef.to_numpy()
    beta_internal = fixed_effects(fit.tau, stats, fit.REML)[0]
    return fit.parametrization.fixed_part(X, beta_internal)


def _positions(fit, labels) -> np.ndarray:
    """Each label's row in ``fit.ranef`` (-1: unseen or missing), by the canonical label
    rule of :mod:`reml_engine.frontend.groups`, so that ids typed differently in new data (text,
    floats after a missing value) still find their group."""
    try:
        return level_positions(fit.ranef.index, labels)
    except ValueError as err:
        raise ModelDataError(f"group labels of the new rows: {err}") from None


def _require_design(fit, what: str):
    if fit.design is None or fit.group_codes is None:
        raise ModelDataError(f"{what} needs the fit's rows; this fit was made from statistics only (chunks, Dask, "
                             "Parquet) and keeps no rows: pass newdata= (or X= and groups=) with the rows to predict")
    return fit.design


def _require_encoding(fit, what: str):
    """How the fit's rows became X (its design, or the encoding of a chunked fit)."""
    encoding = fit.encoding
    if encoding is None:
        if fit.design is not None:
            raise ModelDataError("this fit was made from arrays: pass X= and groups= for new rows instead of newdata")
        raise ModelDataError(f"{what} needs the fit's formula encoding; this fit was made from statistics or "
                             "arrays only: pass X= and groups= instead")
    return encoding


def _new_group_labels(fit, newdata: pd.DataFrame) -> pd.Series:
    columns = fit.encoding.formula.group_columns
    absent = [c for c in columns if c not in newdata.columns]
    if absent:
        raise ModelDataError(
            f"newdata has no grouping column(s) {', '.join(map(repr, absent))}; add them, or pass re=False "
            "for population predictions"
        )
    return group_labels(newdata, columns)


def predict(fit, newdata: pd.DataFrame | None = None, re: bool = True, *, X=None, groups=None):
    """Predicted responses, conditional on the random intercepts or not.

    Parameters
    ----------
    fit : LmerFit
    newdata : pandas.DataFrame, optional
        Rows to predict, with the columns the formula uses (the grouping column(s) only
        when ``re=True``). Without it (and without ``X``) the fitting rows are predicted.
    re : bool
        Add the conditional mode of each row's group (default). Groups not seen in
        fitting, and missing group labels, get 0: the population prediction.
    X, groups : array-like, optional
        For fits made with :func:`reml_engine.fit` from arrays: the design matrix of the
        new rows (the fit's columns, in order) and their group labels.

    Returns
    -------
    pandas.Series or numpy.ndarray
        A Series indexed like ``newdata`` for DataFrame input, an array otherwise. Rows
        with a missing predictor are NaN (with a warning), as lme4's ``na.pass``.

    Examples
    --------
    >>> import pandas as pd, reml_engine as rl
    >>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
    >>> new = pd.DataFrame({"x": [0.0, 0.0], "f": [1, 99]})
    >>> p = m.predict(new)
    >>> bool(p.iloc[1] == m.fixef["(Intercept)"])  # group 99 is new: population prediction
    True
    """
    beta = fit.fixef.to_numpy()
    modes = fit.ranef["mode"].to_numpy()
    if newdata is None and X is None:
        design = _require_design(fit, "predict() without newdata")
        population = fixed_part(fit, design.X)
        return population + modes[fit.group_codes] if re else population

    if X is not None:
        Xnew = np.asarray(X, dtype=np.float64)
        if Xnew.ndim == 1:
            Xnew = Xnew[None, :] if len(beta) > 1 else Xnew[:, None]
        if Xnew.ndim != 2 or Xnew.shape[1] != len(beta):
            raise ModelDataError(
                f"X must have {len(beta)} columns ({', '.join(fit.fixef.index)}), got shape {Xnew.shape}"
            )
        population = fixed_part(fit, Xnew)
        if not re:
            return population
        if groups is None:
            raise ModelDataError("pass groups= (one label per row of X), or re=False for population predictions")
        if np.ndim(groups) == 0 or len(groups) != len(population):
            raise ModelDataError(f"groups must hold one label per row of X ({len(population)}), got {groups!r:.80}")
        positions = _positions(fit, groups)
        return population + np.where(positions >= 0, modes[np.maximum(positions, 0)], 0.0)

    encoding = _require_encoding(fit, "predict(newdata)")
    Xnew, complete = new_fixed_design(encoding, newdata, fit.fixef.index)
    population = fixed_part(fit, Xnew)
    if not complete.all():
        warnings.warn(
            f"{int((~complete).sum())} of {len(complete)} rows of newdata have missing predictors; "
            "their predictions are NaN",
            ModelDataWarning,
            stacklevel=3,
        )
    if re:
        positions = _positions(fit, _new_group_labels(fit, newdata))
        population = population + np.where(positions >= 0, modes[np.maximum(positions, 0)], 0.0)
    return pd.Series(population, index=newdata.index, name="predicted")


def simulate(fit, nsim: int = 1, seed=None, re: bool = False, newdata: pd.DataFrame | None = None) -> pd.DataFrame:
    """Responses drawn from the fitted model, one column per simulation.

    Parameters
    ----------
    fit : LmerFit
    nsim : int
        Number of simulated response vectors.
    seed : int, numpy.random.Generator or None
        The same integer seed gives the same draws.
    re : bool
        Hold the group effects at their conditional modes (lme4's ``use.u = TRUE``)
        instead of drawing them from ``N(0, var_group)`` (default, lme4's
        ``use.u = FALSE``). A group of ``newdata`` the fit never saw has no mode: its
        effect is drawn from ``N(0, var_group)`` either way.
    newdata : pandas.DataFrame, optional
        Rows to simulate responses for (lme4's ``simulate(m, newdata = )``), with the
        columns of the fixed part and the grouping column(s); rows with a missing value
        there are refused. Without it the fitting rows are simulated, which a fit from
        chunks, Dask or Parquet does not keep: it needs ``newdata``.

    Returns
    -------
    pandas.DataFrame
        One row per fitting row (indexed like them) or per row of ``newdata`` (indexed
        like it), and columns ``sim_1 ... sim_nsim``.

    Notes
    -----
    The draws come in this order: the effects of the fit's groups (``ngroups x nsim``,
    in the order of ``ranef``; none with ``re=True``), those of the new groups of ``newdata`` (in sorted
    order), then the residuals (rows x nsim). So ``simulate(nsim, seed, newdata=rows)``
    on the fitting rows, in their order, gives the draws of ``simulate(nsim, seed)``.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
    >>> m.simulate(3, seed=1).shape
    (12, 3)
    """
    if isinstance(nsim, bool) or not isinstance(nsim, numbers.Integral) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    re = _check_flag(re, "re")
    if newdata is None:
        if fit.design is None or fit.group_codes is None:
            where = "this fit was made from statistics only (chunks, Dask, Parquet) and keeps no rows"
            raise ModelDataError(f"simulate() needs rows to simulate: {where}; pass newdata= (a DataFrame with the "
                                 "columns of the formula) to simulate responses for those rows")
        mean = fixed_part(fit, fit.design.X)
        codes, n_new = fit.group_codes, 0
        index = fit.design.row_index if fit.design.row_index is not None else pd.RangeIndex(len(mean))
    else:
        mean, codes, n_new = _new_rows_for_simulation(fit, newdata)
        index = newdata.index
    rng = np.random.default_rng(seed)
    sd_group = np.sqrt(fit.var_group)
    if re:
        effects = np.repeat(fit.ranef["mode"].to_numpy()[:, None], nsim, axis=1)
    else:
        effects = rng.standard_normal((fit.ngroups, nsim)) * sd_group
    new_effects = rng.standard_normal((n_new, nsim)) * sd_group
    group_part = np.vstack([effects, new_effects])[codes]
    noise = rng.standard_normal((len(mean), nsim)) * np.sqrt(fit.sigma2)
    columns = [f"sim_{k + 1}" for k in range(nsim)]
    return pd.DataFrame(mean[:, None] + group_part + noise, index=index, columns=columns)


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _new_rows_for_simulation(fit, newdata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """``X beta`` of the new rows, each row's group (the fit's groups first, then the new
    ones) and the number of new groups."""
    if not isinstance(newdata, pd.DataFrame):
        raise ModelDataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    encoding = _require_encoding(fit, "simulate(newdata=)")
    Xnew, complete = new_fixed_design(encoding, newdata, fit.fixef.index)
    if not complete.all():
        raise ModelDataError(
            f"{int((~complete).sum())} of {len(complete)} rows of newdata have missing predictors; responses "
            "cannot be simulated for them: drop those rows first"
        )
    labels = _new_group_labels(fit, newdata)
    absent = (labels.to_frame().isna().any(axis=1).to_numpy() if isinstance(labels, pd.MultiIndex)
              else labels.isna().to_numpy())
    if absent.any():
        raise ModelDataError(
            f"{int(absent.sum())} of {len(absent)} rows of newdata have no label in grouping column(s) "
            f"{', '.join(map(repr, encoding.formula.group_columns))}; drop those rows first"
        )
    positions = _positions(fit, labels)
    unseen = positions < 0
    codes = positions.copy()
    n_new = 0
    if unseen.any():
        new_groups = factorize_groups(labels[unseen], fit.group_name)
        codes[unseen] = fit.ngroups + new_groups.codes
        n_new = len(new_groups.levels)
    return fixed_part(fit, Xnew), codes, n_new


__all__ = ["fixed_part", "level_positions", "predict", "simulate"]
