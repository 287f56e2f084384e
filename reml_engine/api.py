"""The public entry points: :func:`lmer` (formula and data), :func:`fit` (arrays) and the
bundled example data.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import pandas as pd

from .core.fitting import fit_design
from .core.results import LmerCall, LmerFit
from .errors import ModelDataError
from .frontend.arguments import check_bool, check_na_action
from .frontend.design import build_design, design_from_arrays
from .frontend.formula_dialect import DEFAULT_DIALECT, check_contrasts, check_dialect
from .scaleout.dask import lmer_lazy


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, na_action: str = "omit", *,
         dialect: str = DEFAULT_DIALECT, contrasts: dict | None = None, data_name: str | None = None) -> LmerFit:
    """Fit ``response ~ fixed terms + (1|group)`` by REML (default) or ML.

    Parameters
    ----------
    formula : str
        lme4-style formula with exactly one random-intercept term, e.g.
        ``"y ~ x * cat + np.log(z) + (1|g)"``; ``(1|a:b)`` groups by the combination of
        columns a and b. The fixed part is built by formulaic, in the ``dialect`` it is
        written in.
    data : pandas.DataFrame, or data too large for memory
        A ``dask.dataframe.DataFrame``, a Parquet path or glob (``"data/*.parquet"``,
        read lazily), an iterable of DataFrames (chunks), a function returning such an
        iterator, or a structured (memory-mapped) NumPy array: fitted chunk by chunk
        from mergeable statistics (:mod:`reml_engine.scaleout.chunked`,
        :mod:`reml_engine.scaleout.dask`), with ``fitted``/``resid`` None.
    REML : bool
        REML (default, as lme4) or maximum likelihood.
    na_action : {"omit", "raise"}
        Drop rows with missing values in the variables used (with a warning), or raise.
    dialect : {"python", "R"}
        ``"python"`` (default): formulaic's syntax (``np.log(x)``, ``I(x**2)``,
        ``C(f)``), where R syntax that formulaic would read differently (``I(x^2)``,
        which is a bitwise XOR there, ``a %in% b``, ``factor(x)``, ``TRUE``) is an
        error. ``"R"``: a formula pasted from an R script, read as R reads it
        (``I(x^2)``, ``factor(x)``, ``poly(x, 2)``, ``scale(x)``, ``log``/``sqrt``/
        ``exp``, ``as.numeric``), with R's ``contr.poly`` for ordered categoricals. See
        :mod:`reml_engine.frontend.formula_dialect`.
    contrasts : dict, optional
        lmer's ``contrasts=``: ``{column: coding}`` with R's ``"contr.treatment"``,
        ``"contr.sum"``, ``"contr.helmert"``, ``"contr.poly"``, ``"contr.SAS"`` (or
        formulaic's ``"sum"``, ...). The type III table (``m.anova()``) is the same under
        any coding, as lmerTest's.
    data_name : str, optional
        The name the summary's ``Data:`` line gives the data (lme4 prints the name of
        the R variable). By default ``data.attrs["name"]`` when that is a string (the
        frames of :mod:`reml_engine.datasets` carry theirs), else no ``Data:`` line.

    Returns
    -------
    LmerFit
        The fit at the global optimum, with every local optimum in ``optima``, the
        boundary diagnosis and the compound-symmetry fit.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
    >>> round(m.fixef["x"], 4), m.boundary is None
    (0.451, True)

    A formula from an R script:

    >>> m = rl.lmer("distance ~ poly(age, 2) + Sex + (1|Subject)", rl.datasets.orthodont(), dialect="R")
    >>> round(m.criterion, 3)
    427.959
    """
    REML = check_bool(REML, "REML")
    check_na_action(na_action)
    dialect = check_dialect(dialect)
    check_contrasts(contrasts)
    if not isinstance(formula, str):
        if isinstance(data, str) and "~" in data:
            raise ModelDataError(
                f"the formula comes first: call lmer(formula, data), not lmer(data, formula) (got a "
                f"{type(formula).__name__} and then the formula {data!r})"
            )
        raise ModelDataError(f"formula must be a string like 'y ~ x + (1|g)', got {type(formula).__name__}")
    if not isinstance(data, pd.DataFrame):
        return lmer_lazy(formula, data, REML=REML, na_action=na_action, dialect=dialect, contrasts=contrasts)
    design = build_design(formula, data, na_action=na_action, dialect=dialect, contrasts=contrasts)
    call = LmerCall(formula, data.copy(deep=False), REML, na_action, dialect, contrasts)
    return replace(fit_design(design, REML=REML), call=call, data_name=_data_name(data, data_name))


def _data_name(data: pd.DataFrame, data_name) -> str | None:
    """The name for the ``Data:`` line: ``data_name``, else the frame's ``attrs["name"]``."""
    if data_name is not None:
        if not isinstance(data_name, str):
            raise TypeError(f"data_name must be a string, got {type(data_name).__name__}")
        return data_name
    name = data.attrs.get("name")
    return name if isinstance(name, str) and name else None


def fit(X, y, groups, REML: bool = True, names=None) -> LmerFit:
    """Fit the random-intercept model from arrays.

    Parameters
    ----------
    X : array (n, p)
        Fixed-effect design, including the intercept column if wanted.
    y : array (n,)
    groups : array (n,)
        Group labels of any type (strings, integers, categoricals).
    REML : bool
    names : sequence of str, optional
        Column names of X (default ``x0, x1, ...``).
    """
    REML = check_bool(REML, "REML")
    design = design_from_arrays(X, y, groups, names)
    return fit_design(design, REML=REML)


def load_seed() -> pd.DataFrame:
    """The bundled example: 4 groups of 3 where lme4 returns a local optimum."""
    with resources.files("reml_engine").joinpath("data/seed.csv").open() as fh:
        return pd.read_csv(fh)


__all__ = ["fit", "lmer", "load_seed"]
