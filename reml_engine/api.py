"""The public entry points: :func:`lmer` (formula and data), :func:`fit` (arrays) and the
bundled example data.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from .core.fitting import fit_design
from .core.results import LmerFit
from .core.terms_fitting import fit_terms_design
from .core.terms_results import TermsFit
from .errors import ModelDataError
from .frontend.arguments import check_bool, check_na_action
from .frontend.design import build_design, design_from_arrays
from .frontend.formula import count_random_terms, has_offset_term
from .frontend.formula_dialect import DEFAULT_DIALECT, check_contrasts, check_dialect
from .frontend.terms_design import build_terms_design
from .scaleout.dask import lmer_lazy


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, na_action: str = "omit", *,
         dialect: str = DEFAULT_DIALECT, contrasts: dict | None = None, weights=None,
         offset=None) -> LmerFit | TermsFit:
    """Fit ``response ~ fixed terms + (1|group)`` by REML (default) or ML.

    Parameters
    ----------
    formula : str
        lme4-style formula with random-intercept terms, e.g.
        ``"y ~ x * cat + np.log(z) + (1|g)"``; ``(1|a:b)`` groups by the combination of
        columns a and b. The fixed part is built by formulaic, in the ``dialect`` it is
        written in. Several terms, ``(1|subj) + (1|item)`` or ``(1|school/class)``
        (lme4's ``school`` and ``class:school``), and ``offset(z)`` terms are fitted by
        the several-terms engine (:mod:`reml_engine.varcomp`) into a
        :class:`~reml_engine.core.terms_results.TermsFit`; see ``docs/several_terms.md``.
        Random slopes ``(x|g)`` are refused.
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
    weights : str or array-like, optional
        lmer's prior (precision) weights: residual variance ``sigma2 / w``; a column of
        ``data`` or one positive number per row. Fitted by the several-terms engine
        (for one term too, into a ``TermsFit``).
    offset : str or array-like, optional
        A known part of the linear predictor (added to the formula's ``offset()`` terms),
        a column or one number per row; as ``weights``.

    Returns
    -------
    LmerFit or TermsFit
        One random term without weights or offset: the :class:`LmerFit` at the global
        optimum, with every local optimum in ``optima``, the boundary diagnosis and the
        compound-symmetry fit. Otherwise a
        :class:`~reml_engine.core.terms_results.TermsFit` (``varcorr()``, ``ngroups``
        and ``ranef`` per term, every local optimum, the terms at the boundary).

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
    if count_random_terms(formula) > 1 or weights is not None or offset is not None or has_offset_term(formula):
        if not isinstance(data, pd.DataFrame):
            raise ModelDataError(
                "several random terms, weights and offsets are fitted from a pandas DataFrame in memory; chunked, "
                f"Dask and Parquet fits take one random term (got {type(data).__name__})"
            )
        design = build_terms_design(formula, data, na_action, weights=weights, offset=offset, dialect=dialect,
                                    contrasts=contrasts)
        return fit_terms_design(design, REML=REML)
    if not isinstance(data, pd.DataFrame):
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


__all__ = ["fit", "lmer", "load_seed"]
