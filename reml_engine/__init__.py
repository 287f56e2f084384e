"""reml_engine: exact profiled REML and ML for linear mixed models with random intercepts.

The pipeline, one module per stage::

    design (formula, checks) -> stats (numba kernels, pooled by group size)
    -> criterion (closed form in tau) -> optimizer (global scan, every local minimum)
    -> diagnosis (boundary, negative ICC) -> results -> render

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
>>> round(m.criterion, 4)
16.1726
>>> [round(o.criterion, 3) for o in m.optima]
[20.593, 16.173]
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from . import datasets as datasets  # rl.datasets.sleepstudy(), ...: the example data
from .anova import AnovaResult, OLSFit, anova, ols
from .checks import ModelDataError, ModelDataWarning, check_bool
from .coef_table import anova_type3, coef_table, contrast_test
from .compare import compare_fe_re
from .confint import confint
from .criterion import CriterionParts, criterion, criterion_derivative, criterion_parts, evaluate
from .design import build_design, check_na_action, design_from_arrays
from .estimators import LeastSquaresFit, between_estimator, pooled_estimator, within_estimator
from .formula_dialect import DEFAULT_DIALECT, check_contrasts, check_dialect
from .hausman import HausmanTest, MundlakTest, hausman, mundlak
from .model import fit_design, fit_stats
from .optimizer import DegenerateCriterionError, Optimum, OptSummary, find_optima
from .profile import CriterionProfile, ProfilePoint, criterion_profile, profile_criterion
from .results import Boundary, CompoundSymmetryFit, LmerFit, LocalOptimum
from .stats import GroupStats, PooledStats, compute_group_stats
from .vartest import VarianceTest, test_random_intercept
from .within_between import between, within

__version__ = "0.1.0"


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, na_action: str = "omit", *,
         dialect: str = DEFAULT_DIALECT, contrasts: dict | None = None) -> LmerFit:
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
        from mergeable statistics (:mod:`reml_engine.chunked`,
        :mod:`reml_engine.distributed`), with ``fitted``/``resid`` None.
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
        :mod:`reml_engine.formula_dialect`.
    contrasts : dict, optional
        lmer's ``contrasts=``: ``{column: coding}`` with R's ``"contr.treatment"``,
        ``"contr.sum"``, ``"contr.helmert"``, ``"contr.poly"``, ``"contr.SAS"`` (or
        formulaic's ``"sum"``, ...). The type III table (``m.anova()``) is the same under
        any coding, as lmerTest's.

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
        from .distributed import lmer_lazy

        return lmer_lazy(formula, data, REML=REML, na_action=na_action, dialect=dialect, contrasts=contrasts)
    design = build_design(formula, data, na_action=na_action, dialect=dialect, contrasts=contrasts)
    return fit_design(design, REML=REML)


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


__all__ = [
    "Boundary",
    "CompoundSymmetryFit",
    "CriterionParts",
    "DegenerateCriterionError",
    "GroupStats",
    "LmerFit",
    "LocalOptimum",
    "ModelDataError",
    "ModelDataWarning",
    "OptSummary",
    "Optimum",
    "PooledStats",
    "compute_group_stats",
    "CriterionProfile",
    "HausmanTest",
    "LeastSquaresFit",
    "MundlakTest",
    "ProfilePoint",
    "between",
    "between_estimator",
    "compare_fe_re",
    "criterion_profile",
    "hausman",
    "mundlak",
    "pooled_estimator",
    "profile_criterion",
    "within",
    "within_estimator",
    "criterion",
    "criterion_derivative",
    "criterion_parts",
    "evaluate",
    "find_optima",
    "fit",
    "fit_stats",
    "lmer",
    "load_seed",
    "AnovaResult",
    "OLSFit",
    "VarianceTest",
    "anova",
    "anova_type3",
    "coef_table",
    "confint",
    "contrast_test",
    "ols",
    "test_random_intercept",
]
