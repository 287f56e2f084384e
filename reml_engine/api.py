"""The public entry points: :func:`lmer` (formula and data), :func:`fit` (arrays) and the
bundled example data.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import numpy as np
import pandas as pd

from .core.fitting import fit_design
from .core.many import ManyFits, fit_many_design
from .core.results import LmerCall, LmerFit
from .core.terms_fitting import fit_terms_design
from .core.terms_results import TermsFit
from .errors import ModelDataError
from .frontend.arguments import check_bool, check_na_action
from .frontend.design import FixedEncoding, build_design, design_from_arrays
from .frontend.formula_dialect import DEFAULT_DIALECT, check_contrasts, check_dialect
from .frontend.many_design import build_many_design, many_design_from_arrays, response_columns
from .frontend.terms_design import build_terms_design, uses_terms_engine
from .progress import StageProgress, check_progress
from .scaleout.dask import lmer_lazy


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, na_action: str = "omit", *,
         dialect: str = DEFAULT_DIALECT, contrasts: dict | None = None, weights=None,
         offset=None, data_name: str | None = None, progress="auto", keep_data: bool = False
         ) -> LmerFit | TermsFit | ManyFits:
    """Fit ``response ~ fixed terms + (1|group)`` by REML (default) or ML.

    Parameters
    ----------
    formula : str
        lme4-style formula with random-intercept terms, e.g.
        ``"y ~ x * cat + np.log(z) + (1|g)"``; ``(1|a:b)`` groups by the combination of
        columns a and b. The fixed part is built by formulaic, in the ``dialect`` it is
        written in. Several responses on the same design, ``"cbind(y1, y2) ~ x + (1|g)"``
        (R's form) or ``"y1 + y2 ~ x + (1|g)"`` (formulaic's, python dialect only), give a
        :class:`~reml_engine.core.many.ManyFits`: one fit per response, equal to
        ``lmer("y1 ~ x + (1|g)", data)`` and so on, the statistics computed in one pass
        (a response with missing values is fitted on its own rows, see
        :mod:`reml_engine.frontend.many_design`).
        Several terms, ``(1|subj) + (1|item)`` or ``(1|school/class)``
        (lme4's ``school`` and ``class:school``), and ``offset(z)`` terms are fitted by
        the several-terms engine (:mod:`reml_engine.varcomp`) into a
        :class:`~reml_engine.core.terms_results.TermsFit`; see ``docs/several_terms.md``.
        Random slopes ``(x|g)`` are refused.
    data : pandas.DataFrame, or data too large for memory
        A ``dask.dataframe.DataFrame``, a Parquet path or glob (``"data/*.parquet"``,
        read lazily), an iterable of DataFrames (chunks), a function returning such an
        iterator, or a structured (memory-mapped) NumPy array: fitted chunk by chunk
        from mergeable statistics (:mod:`reml_engine.scaleout.chunked`,
        :mod:`reml_engine.scaleout.dask`; several terms, weights and offsets:
        :mod:`reml_engine.scaleout.terms`), with ``fitted``/``resid`` None.
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
        ``data`` or one positive number per row (a column name for chunked, Dask or
        Parquet data). Fitted by the several-terms engine (for one term too, into a
        ``TermsFit``).
    offset : str or array-like, optional
        A known part of the linear predictor (added to the formula's ``offset()`` terms),
        a column or one number per row; as ``weights``.
    data_name : str, optional
        The name the summary's ``Data:`` line gives the data (lme4 prints the name of
        the R variable). By default ``data.attrs["name"]`` when that is a string (the
        frames of :mod:`reml_engine.datasets` carry theirs), else no ``Data:`` line.
    progress : bool, "auto" or callable
        Progress on stderr for long fits (:mod:`reml_engine.progress`). ``"auto"``
        (default) shows nothing for fits shorter than 10 s
        (``PROGRESS_AFTER_SECONDS``), then a line per stage of an in-memory fit, or
        every 5 s while chunks are read (with the share done and the time left when
        the number of rows is known beforehand: a list of chunks, an array; Dask's
        progress bar for Dask and Parquet data). True shows them from the start, False
        never. A callable is called as ``progress(rows, chunks)``: after every chunk,
        after each pass over Dask partitions, and once for a DataFrame (one chunk).
        What the engine decides (rows and columns dropped, the optima found) is logged
        to the ``logging`` logger ``"reml_engine"``.
    keep_data : bool
        Several responses only (a single response's fit always keeps its rows): the
        ``ManyFits`` keeps the statistics of each response, not the rows, so each
        response's fit has ``fitted``/``resid`` None and refuses ``predict`` (as a fit
        from chunks); ``True`` keeps a private copy of the rows for them.

    Returns
    -------
    LmerFit, TermsFit or ManyFits
        One random term without weights or offset: the :class:`LmerFit` at the global
        optimum, with every local optimum in ``optima``, the boundary diagnosis and the
        compound-symmetry fit. Otherwise a
        :class:`~reml_engine.core.terms_results.TermsFit` (``varcorr()``, ``ngroups``
        and ``ranef`` per term, every local optimum, the terms at the boundary).
        Several responses give a ``ManyFits``.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
    >>> round(float(m.fixef["x"]), 4), m.boundary is None
    (0.451, True)

    A formula from an R script:

    >>> m = rl.lmer("distance ~ poly(age, 2) + Sex + (1|Subject)", rl.datasets.orthodont(), dialect="R")
    >>> round(m.criterion, 3)
    427.959
    """
    REML = check_bool(REML, "REML")
    keep_data = check_bool(keep_data, "keep_data")
    check_na_action(na_action)
    progress = check_progress(progress)
    dialect = check_dialect(dialect)
    check_contrasts(contrasts)
    if not isinstance(formula, str):
        if isinstance(data, str) and "~" in data:
            raise ModelDataError(
                f"the formula comes first: call lmer(formula, data), not lmer(data, formula) (got a "
                f"{type(formula).__name__} and then the formula {data!r})"
            )
        raise ModelDataError(f"formula must be a string like 'y ~ x + (1|g)', got {type(formula).__name__}")
    responses = response_columns(formula, dialect)
    several_terms = uses_terms_engine(formula, weights, offset)
    if responses is not None:
        if several_terms:
            raise ModelDataError(
                f"formula {formula!r} has {len(responses)} responses: several responses are fitted with one random "
                "term and no weights or offsets; fit each response with its own formula"
            )
        return _lmer_many(formula, responses, data, REML, na_action, dialect, contrasts, keep_data)
    if several_terms:
        if not isinstance(data, pd.DataFrame):
            # Chunked, Dask and Parquet data: weights= and offset= name columns.
            return lmer_lazy(formula, data, REML=REML, na_action=na_action, dialect=dialect, contrasts=contrasts,
                             weights=weights, offset=offset, progress=progress)
        stages = StageProgress(progress)
        design = build_terms_design(formula, data, na_action, weights=weights, offset=offset, dialect=dialect,
                                    contrasts=contrasts)
        stages.rows_read(len(data))
        stages.stage(f"design of {len(data):,} rows")
        fitted = fit_terms_design(design, REML=REML)
        stages.stage("fit")
        return fitted
    if not isinstance(data, pd.DataFrame):
        return lmer_lazy(formula, data, REML=REML, na_action=na_action, dialect=dialect, contrasts=contrasts,
                         progress=progress)
    stages = StageProgress(progress)
    design = build_design(formula, data, na_action=na_action, dialect=dialect, contrasts=contrasts)
    stages.rows_read(len(data))
    stages.stage(f"design of {len(data):,} rows")
    call = LmerCall(formula, data.copy(deep=False), REML, na_action, dialect, contrasts)
    fitted = replace(fit_design(design, REML=REML), call=call, data_name=_data_name(data, data_name))
    stages.stage("statistics and fit")
    return fitted


def _data_name(data: pd.DataFrame, data_name) -> str | None:
    """The name for the ``Data:`` line: ``data_name``, else the frame's ``attrs["name"]``."""
    if data_name is not None:
        if not isinstance(data_name, str):
            raise TypeError(f"data_name must be a string, got {type(data_name).__name__}")
        return data_name
    name = data.attrs.get("name")
    return name if isinstance(name, str) and name else None


def _lmer_many(formula, responses, data, REML, na_action, dialect, contrasts, keep_data) -> ManyFits:
    """Several responses from a formula: those without missing values from one pass, each
    of the others fitted on its own rows (:mod:`reml_engine.frontend.many_design`)."""
    if not isinstance(data, pd.DataFrame):
        raise ModelDataError(
            f"formula {formula!r} has {len(responses)} responses: several responses are fitted from a pandas "
            f"DataFrame only, not from {type(data).__name__} (chunked, Dask or Parquet data): fit each response "
            "with its own formula"
        )
    many, apart = build_many_design(formula, responses, data, na_action, dialect=dialect, contrasts=contrasts)
    shared = fit_many_design(many, REML, keep_data) if many is not None else None
    if not apart:
        return shared
    separate = {name: lmer(f, data, REML=REML, na_action=na_action, dialect=dialect, contrasts=contrasts)
                for name, f in apart.items()}
    if not keep_data:
        # As the responses from one pass: fits from statistics, without the rows.
        separate = {name: replace(f, design=None, group_codes=None, call=None,
                                  fixed_encoding=FixedEncoding(f.design.formula, f.design.model_spec,
                                                               f.design.numeric_columns))
                    for name, f in separate.items()}
    return ManyFits.combine(responses, shared, separate)


def fit(X, y, groups, REML: bool = True, names=None, *, response_names=None,
        keep_data: bool = False) -> LmerFit | ManyFits:
    """Fit the random-intercept model from arrays.

    Parameters
    ----------
    X : array (n, p)
        Fixed-effect design, including the intercept column if wanted.
    y : array (n,), or (n, k) for k responses on the same design
        With k responses (a 2-d array or a DataFrame), one pass over the rows computes
        the statistics of all of them, and each response gets its own fit, equal to
        ``fit(X, y[:, j], groups)``: a :class:`~reml_engine.core.many.ManyFits`. On
        large data the pass and the responses' scans run on the cores this process may
        use (``reml_engine.core.workers.MAX_THREADS`` sets a limit); the numbers are the
        same whatever the number of threads.
    groups : array (n,)
        Group labels of any type (strings, integers, categoricals).
    REML : bool
    names : sequence of str, optional
        Column names of X (default ``x0, x1, ...``).
    response_names : sequence of str, optional
        Names of the k responses (default: a DataFrame's columns, else ``y0, y1, ...``).
    keep_data : bool
        For k responses: the ``ManyFits`` keeps each response's statistics, not the rows
        (Y is read once, never copied nor referenced), so each response's fit has
        ``fitted``/``resid`` None and refuses ``predict``, as a fit from chunks; ``True``
        keeps a private copy of X, Y and the groups for them (as large as Y). Either way,
        changing Y after the call changes no fit.

    Returns
    -------
    LmerFit, or ManyFits for a 2-d y

    Examples
    --------
    >>> import numpy as np, reml_engine as rl
    >>> seed = rl.load_seed()
    >>> X = np.column_stack([np.ones(len(seed)), seed.x])
    >>> m = rl.fit(X, seed.y, seed.f, names=["(Intercept)", "x"])
    >>> round(m.criterion, 4)
    16.1726
    """
    REML = check_bool(REML, "REML")
    keep_data = check_bool(keep_data, "keep_data")
    if isinstance(y, pd.DataFrame) or np.ndim(y) >= 2:
        return fit_many_design(many_design_from_arrays(X, y, groups, names, response_names), REML=REML,
                               keep_data=keep_data)
    if response_names is not None:
        raise ModelDataError("response_names is for a 2-d y (k responses); name a single response's fit by "
                             "its formula, or pass y as a one-column 2-d array")
    design = design_from_arrays(X, y, groups, names)
    return fit_design(design, REML=REML)


#: The arguments of :func:`lmer` that ``update()`` can change besides formula, data and REML.
UPDATE_ARGUMENTS = ("na_action", "dialect", "contrasts", "data_name")


def update(fit: LmerFit, formula: str | None = None, data: pd.DataFrame | None = None, REML: bool | None = None,
           **kwargs) -> LmerFit:
    """Refit a model with some of the arguments of its :func:`lmer` call changed, as lme4's
    ``update()``; the fit itself is unchanged.

    Parameters
    ----------
    fit : LmerFit
        A fit made by :func:`lmer` from a pandas DataFrame (it records its call).
    formula : str, optional
        The new formula, in R's ``update.formula`` form: ``.`` stands for the old
        response on the left and the old right-hand side (random term included) on the
        right, so ``". ~ . - x"`` drops ``x``, ``". ~ . + z"`` adds ``z``,
        ``"log(.) ~ ."`` transforms the response and ``". ~ . - (1|g) + (1|h)"``
        changes the grouping; the fixed terms are then written out one by one, as R
        writes them (``age * Sex`` minus ``age:Sex`` is ``age + Sex``). A formula
        without ``.`` on the right replaces the old one as written. See
        :mod:`reml_engine.frontend.formula_update`.
    data : pandas.DataFrame, optional
        New data (by default the data of the call, as they were then).
    REML : bool, optional
        REML or ML (by default the call's).
    **kwargs
        Other arguments of :func:`lmer`: ``na_action``, ``dialect``, ``contrasts``,
        ``data_name``.

    Returns
    -------
    LmerFit

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())
    >>> m0 = m.update(". ~ . - Days", REML=False)
    >>> m0.formula, round(float(m0.criterion), 2)
    ('Reaction ~ (1|Subject)', 1910.54)
    """
    from .frontend.formula_update import update_formula

    call = fit.call
    if call is None:
        raise ModelDataError("update() refits a model made by rl.lmer(formula, data) from a pandas DataFrame; "
                             "this fit was made from arrays, statistics or chunks: call the fitting function again")
    unknown = sorted(set(kwargs) - set(UPDATE_ARGUMENTS))
    if unknown:
        raise TypeError(f"update() got unexpected argument(s) {', '.join(map(repr, unknown))}; it takes formula, "
                        f"data, REML and {', '.join(UPDATE_ARGUMENTS)}")
    if formula is not None and not isinstance(formula, str):
        raise ModelDataError(f"formula must be a string such as '. ~ . - x', got {type(formula).__name__}")
    if data is not None and not isinstance(data, pd.DataFrame):
        raise ModelDataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    arguments = {
        "REML": call.REML if REML is None else check_bool(REML, "REML"),
        "na_action": kwargs.get("na_action", call.na_action),
        "dialect": kwargs.get("dialect", call.dialect),
        "contrasts": kwargs.get("contrasts", call.contrasts),
    }
    new_formula = call.formula if formula is None else update_formula(call.formula, formula)
    if "data_name" in kwargs:
        arguments["data_name"] = kwargs["data_name"]
    elif data is None and fit.data_name is not None:
        arguments["data_name"] = fit.data_name
    return lmer(new_formula, call.data if data is None else data, **arguments)


def refit(fit: LmerFit | TermsFit, newresp) -> LmerFit | TermsFit:
    """The same model fitted to a new response, as lme4's ``refit(m, newresp)``: the same
    fixed-effect design, groups, prior weights and offset, the same REML or ML; the fit
    itself is unchanged. Simulation studies and parametric bootstraps refit this way.

    Parameters
    ----------
    fit : LmerFit or TermsFit
        A fit made in memory (by :func:`lmer` or :func:`fit`); a fit from chunks, Dask or
        Parquet keeps no rows to refit.
    newresp : array-like of float
        The new response (on the scale of the formula's left-hand side: for
        ``log(y) ~ ...`` the new ``log(y)``), in the order of the data's rows, one value
        per row fitted (``m.nobs``) or, as lme4 accepts, one per row of the data when
        rows were dropped for missing values (the dropped rows' values are then ignored).
        Values are taken by position: a pandas Series is not aligned on its index.

    Returns
    -------
    LmerFit or TermsFit
        Of the same kind as ``fit``. It records no call (``update()`` needs the data the
        new response came from: pass ``data=`` there instead).

    Examples
    --------
    >>> import numpy as np
    >>> import reml_engine as rl
    >>> sleepstudy = rl.datasets.sleepstudy()
    >>> m = rl.lmer("Reaction ~ Days + (1|Subject)", sleepstudy)
    >>> m_log = m.refit(np.log(sleepstudy["Reaction"]))
    >>> print(f"{m_log.fixef['Days']:.6f}")
    0.033668
    """
    kind = "several-term " if isinstance(fit, TermsFit) else ""
    if not isinstance(fit, (LmerFit, TermsFit)):
        raise ModelDataError(f"refit() takes a fit from rl.lmer or rl.fit, got {type(fit).__name__}")
    if fit.design is None:
        raise ModelDataError(
            f"refit() needs the {kind}fit's design (X, groups, weights); this fit was made from statistics "
            "(chunks, Dask or Parquet), which keep no rows: fit the new response with the fitting function"
        )
    design = fit.design.design if isinstance(fit, TermsFit) else fit.design
    y = _new_response(newresp, fit, design)
    if isinstance(fit, TermsFit):
        new = replace(fit.design, design=replace(design, y=y))
        return fit_terms_design(new, REML=fit.REML)
    refitted = fit_design(replace(design, y=y), REML=fit.REML)
    return replace(refitted, data_name=fit.data_name)


def _new_response(newresp, fit, design) -> np.ndarray:
    """``newresp`` as the float response of the rows fitted, checked (see :func:`refit`)."""
    if isinstance(newresp, (str, bytes)) or not hasattr(newresp, "__len__"):
        raise ModelDataError(f"newresp must be an array of numbers, got {type(newresp).__name__}")
    try:
        values = np.asarray(newresp, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelDataError("newresp must be numbers: it has values that are not numbers") from None
    if values.ndim != 1:
        raise ModelDataError(f"newresp must be one-dimensional, got shape {values.shape}")
    n = len(design.y)
    if isinstance(fit, TermsFit):
        n_data, kept = len(fit.design.data_index), fit.design.rows
    else:
        kept = design.kept_rows
        n_data = len(design.data_index) if design.data_index is not None else n
    if len(values) == n_data and n_data != n:
        values = values[kept]
    elif len(values) != n:
        counts = f"{n} (the rows fitted)" if n_data == n else f"{n} (the rows fitted) or {n_data} (the data's rows)"
        raise ModelDataError(f"newresp has {len(values)} values; the model needs {counts}")
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ModelDataError(
            f"newresp has {int(bad.sum())} missing or infinite value(s) among the rows fitted (first at fitted row "
            f"{first}); refit() keeps the rows of the fit"
        )
    return values.copy()


def load_seed() -> pd.DataFrame:
    """The bundled example: 4 groups of 3 where lme4 returns a local optimum."""
    with resources.files("reml_engine").joinpath("data/seed.csv").open() as fh:
        return pd.read_csv(fh)


__all__ = ["fit", "lmer", "load_seed", "refit", "update"]
