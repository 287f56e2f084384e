"""Estimated marginal means of a factor and their contrasts, as R's emmeans on an lmer fit.

The reference grid (emmeans' ``ref_grid``) holds every combination of the levels of the
categorical variables of the fixed part, with each numeric variable at its mean over the
rows fitted (emmeans' ``cov.reduce = mean``: the mean of ``x``, also where the model
uses ``np.log(x)`` or ``x:f``). The marginal mean of a level of ``spec`` is the average of
the fixed part's predictions over the grid's rows at that level, every combination of the
other factors weighted equally (emmeans' default ``weights = "equal"``). Each mean, and
each contrast of means, is a linear combination ``l' beta`` of the fixed effects, so

* its standard error is ``sqrt(l' Cov(beta) l)`` (Kenward-Roger: pbkrtest's adjusted
  covariance, as emmeans uses it);
* its df are those of the one-row contrast ``l`` (:func:`linear_combinations`):
  Satterthwaite's (lmerTest's, emmeans' ``lmer.df = "satterthwaite"``), Kenward-Roger's
  (``lmer.df = "kenward-roger"``, REML fits; emmeans' own default below 3000 rows), or
  ``n - p``;
* the interval is ``estimate +/- t_{df} se``.

Pairwise comparisons (:meth:`MarginalMeans.pairs`, emmeans' ``pairs()``) are every
difference ``level_i - level_j``, ``i < j``, with p-values and intervals adjusted for the
family by Tukey's method by default (the studentized range of ``k`` means on each
contrast's df: ``p = P(Q_{k, df} >= sqrt(2) |t|)``), or Holm's step-down method (with
Bonferroni's intervals, as emmeans: Holm's method has none of its own), Sidak's,
Bonferroni's, or none.

With ``by="g"`` (emmeans' ``emmeans(m, "f", by = "g")``, or ``"f | g"``) the means are
of each level of ``f`` within each level of ``g`` (averaged over the other factors only),
and every contrast is taken within a level of ``g``: each level of ``g`` is a family of
its own for the adjustment, as in emmeans.
The type III table's grid and factor listing (:mod:`reml_engine.inference.type3`) build
the reference grid, so the means are the same under any coding of the factors.

Examples
--------
>>> import reml_engine as rl
>>> m = rl.lmer("protein ~ Time + Diet + (1|Cow)", rl.datasets.milk())
>>> emm = m.emmeans("Diet")
>>> emm.table["emmean"].round(4).tolist()
[3.5258, 3.4295, 3.3215]
>>> emm.pairs().table.index.tolist()
['barley - (barley+lupins)', 'barley - lupins', '(barley+lupins) - lupins']
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.terms_results import TermsFit
from ..errors import ModelDataError
from ..frontend.design import encoded_column
from ..frontend.formula import lme4_column_names
from ..frontend.transforms import formula_context
from .ddf import kenward_roger_state, kenward_roger_terms, satterthwaite_df, satterthwaite_state
from .fixed_tests import normalize_ddf
from .lazy_imports import scipy_stats as sps
from .type3 import GRID_MAX_CELLS, data_variables, grid_matrix

#: The multiplicity adjustments of ``pairs()`` and ``contrast()`` (emmeans' names).
ADJUSTMENTS = ("tukey", "holm", "sidak", "bonferroni", "none")
#: emmeans' default adjustment of pairwise comparisons.
PAIRS_ADJUST = "tukey"
#: Default confidence level of the intervals (emmeans').
DEFAULT_LEVEL = 0.95
#: Levels with these characters are put in parentheses in a contrast's label, as emmeans'
#: default ``parens`` option does (``"barley - (barley+lupins)"``).
LABEL_PARENS = re.compile(r"-|\+|/|\*")


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number strictly between 0 and 1 (0.95 for 95% intervals), got {level!r}")
    return float(level)


def _check_adjust(adjust) -> str:
    key = str(adjust).strip().lower() if isinstance(adjust, str) else None
    if key not in ADJUSTMENTS:
        raise ValueError(f"adjust must be one of {', '.join(map(repr, ADJUSTMENTS))} (emmeans' names), got {adjust!r}")
    return key


# -- the degrees of freedom of one-row contrasts ---------------------------------------------
def _kenward_roger_by_ftest(fit, L: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance and KR df of each row from the fit's own one-row F-test.

    For one row pbkrtest's F scaling is exactly 1, so ``F = diff^2 / (l' Phi_A l)``;
    testing ``l' beta = estimate - s`` makes ``diff = s`` (``s`` the estimate's size, so
    that rounding in ``diff`` stays relative to ``s``).
    """
    var = np.empty(len(L))
    df = np.empty(len(L))
    for k, (row, value) in enumerate(zip(L, estimate, strict=True)):
        scale = max(1.0, abs(float(value)))
        test = fit.contrast_test(row[None, :], rhs=float(value) - scale, ddf="kenward-roger")
        var[k] = scale**2 / test.f_value
        df[k] = test.den_df
    return var, df


def _kenward_roger_rows(fit, L: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance (adjusted covariance) and KR df of each row of ``L``.

    The one dispatch point of Kenward-Roger here: one random term from pbkrtest's pieces
    in closed form (:func:`reml_engine.inference.ddf.kenward_roger_state`); several terms
    through the fit's ``contrast_test(..., ddf="kenward-roger")``, which says so clearly
    where the method is not available.
    """
    if isinstance(fit, TermsFit):
        return _kenward_roger_by_ftest(fit, L, estimate)
    state = kenward_roger_state(fit)
    var = np.einsum("ka,ab,kb->k", L, state.vcov_adjusted, L)
    df = np.array([kenward_roger_terms(state, L[[k]]).den_df for k in range(len(L))])
    return var, df


def linear_combinations(fit, L, ddf: str = "satterthwaite") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate, standard error and df of each row of ``L`` (linear combinations of
    the fixed effects), each as a one-row contrast of lmerTest's or pbkrtest's.

    Parameters
    ----------
    fit : LmerFit or TermsFit
    L : array (m, p)
        One linear combination per row, over ``fit.fixef``.
    ddf : {"satterthwaite", "kenward-roger", "residual"}

    Returns
    -------
    (estimate, se, df) : three float arrays (m,)
    """
    method = normalize_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    estimate = L @ fit.fixef.to_numpy()
    if method == "kenward-roger":
        var, df = _kenward_roger_rows(fit, L, estimate)
        return estimate, np.sqrt(var), df
    var = np.einsum("ka,ab,kb->k", L, fit.vcov.to_numpy(), L)
    if method == "satterthwaite":
        state = fit._satterthwaite if isinstance(fit, TermsFit) else satterthwaite_state(fit)
        df = satterthwaite_df(state, L)
    else:
        df = np.full(len(L), float(fit.nobs - len(fit.fixef)))
    return estimate, np.sqrt(var), df


# -- the reference grid -----------------------------------------------------------------------
def _fixed_design(fit):
    """The fit's fixed-part design, with the formulaic spec the grid is built with."""
    design = getattr(fit, "design", None)
    design = getattr(design, "design", design)  # a TermsFit's TermsDesign holds the Design
    if design is None or getattr(design, "model_spec", None) is None:
        raise ModelDataError("marginal means need a fit made by rl.lmer(formula, data) from a DataFrame (the "
                             "reference grid is built from the formula); this fit was made from arrays, "
                             "statistics or chunks")
    return design


def _covariate_means(fit, design, numeric: list[str]) -> dict[str, float]:
    """Each numeric variable's mean over the rows fitted (emmeans' ``cov.reduce = mean``)."""
    means = {}
    call = getattr(fit, "call", None)
    for name in numeric:
        if name in design.column_names:  # the variable itself is a column of X
            means[name] = float(design.X[:, design.column_names.index(name)].mean())
        elif call is not None and name in call.data.columns:
            rows = call.data[name] if design.kept_rows is None else call.data[name][design.kept_rows]
            means[name] = float(pd.to_numeric(rows).mean())
        else:
            raise ModelDataError(
                f"the reference grid puts {name!r} at its mean, but {name!r} enters this model only through other "
                f"columns ({', '.join(design.column_names)}) and the fit keeps no copy of the data: add {name!r} "
                "as a term of its own, or fit a model with one random term"
            )
    return means


@dataclass(frozen=True)
class ReferenceGrid:
    """The rows of the reference grid averaged into each level's marginal mean.

    Attributes
    ----------
    spec : str
    weights : pandas.DataFrame
        One row per level of ``spec``, one column per fixed effect: the mean is
        ``weights @ fixef``.
    averaged_over : tuple of str
        The other categorical variables, averaged with equal weights.
    covariates : dict
        Each numeric variable's value on the grid (its mean).
    in_interaction : bool
        ``spec`` is part of an interaction term (emmeans warns that the means may then
        mislead).
    by : str or None
        The factor within whose levels the means are taken; ``weights`` is then indexed
        by (level of ``by``, level of ``spec``).
    """

    spec: str
    weights: pd.DataFrame
    averaged_over: tuple[str, ...]
    covariates: dict
    in_interaction: bool
    by: str | None = None


def _categorical(name, role: str, categorical: dict, numeric: list[str], design) -> str:
    """``name`` checked as a categorical variable of the fixed part (``role``: "spec", "by")."""
    if not isinstance(name, str):
        raise ModelDataError(f"{role} must name a categorical variable of the fixed part, as a string; got "
                             f"{type(name).__name__} {name!r}")
    if name not in categorical:
        listed = ", ".join(map(repr, categorical)) or "none"
        if name in numeric:
            raise ModelDataError(f"{name!r} is a numeric variable of the model: marginal means are for a categorical "
                                 f"variable (the model's are: {listed}); the grid puts {name!r} at its mean")
        raise ModelDataError(f"{name!r} is not a variable of the fixed part {design.formula.fixed if design.formula else ''}"
                             f"; its categorical variables are: {listed}")
    return name


def split_spec(spec, by=None) -> tuple[object, object]:
    """emmeans' ``"f | g"`` (also ``"~ f | g"``) read as ``spec="f", by="g"``."""
    if isinstance(spec, str) and "|" in spec:
        if by is not None:
            raise ModelDataError(f"spec {spec!r} names its 'by' factor after '|' and by={by!r} names another: "
                                 "give one of them")
        spec, by = (part.strip() for part in spec.lstrip().removeprefix("~").split("|", 1))
    elif isinstance(spec, str):
        spec = spec.lstrip().removeprefix("~").strip()
    return spec, by


def reference_grid(fit, spec: str, by: str | None = None) -> ReferenceGrid:
    """The reference grid of ``fit`` averaged over everything but ``spec`` (and ``by``;
    see the module).

    Parameters
    ----------
    fit : LmerFit or TermsFit
        A fit made by :func:`reml_engine.lmer` from a DataFrame.
    spec : str
        A categorical variable of the fixed part (a data column, e.g. ``"Diet"``, also
        for ``C(k)``).
    by : str, optional
        Another categorical variable: the means of ``spec`` within each of its levels.

    Returns
    -------
    ReferenceGrid
    """
    design = _fixed_design(fit)
    model_spec = design.model_spec
    categorical, numeric = data_variables(model_spec)
    _categorical(spec, "spec", categorical, numeric, design)
    if by is not None:
        _categorical(by, "by", categorical, numeric, design)
        if by == spec:
            raise ModelDataError(f"by={by!r} is the variable of the means itself: give another factor, or no by")
    if getattr(fit, "has_offset", False):
        raise ModelDataError("marginal means of a model with an offset are not supported (emmeans adds the offset "
                             "at its mean): fit the model without it or compute the means with predict()")
    n_cells = math.prod(len(levels) for levels in categorical.values())
    if n_cells > GRID_MAX_CELLS:
        raise ModelDataError(f"the reference grid has {n_cells} combinations of factor levels; more than "
                             f"{GRID_MAX_CELLS} is not supported")
    cells = list(itertools.product(*categorical.values()))
    grid = pd.DataFrame({name: [cell[k] for cell in cells] for k, name in enumerate(categorical)})
    for name, levels in categorical.items():
        grid[name] = pd.Categorical(grid[name], categories=levels)
    covariates = _covariate_means(fit, design, numeric)
    for name, value in covariates.items():
        grid[name] = value
    names = list(fit.fixef.index)
    spec_names = list(lme4_column_names(model_spec.column_names))
    dropped = [n for n in spec_names if n not in names]
    if dropped:
        raise ModelDataError(f"the fit dropped the column(s) {', '.join(map(repr, dropped))} as linear combinations "
                             "of others (rank-deficient design): its marginal means are not all estimable; drop "
                             "the aliased terms from the formula")
    try:
        X = grid_matrix(model_spec, grid, formula_context())[:, [spec_names.index(n) for n in names]]
    except Exception as err:  # transforms that need the fitting data's context
        raise ModelDataError(f"cannot rebuild the design on the reference grid: {err}") from None
    levels = categorical[spec]
    codes = grid[spec].cat.codes.to_numpy()
    if by is None:
        weights = np.stack([X[codes == k].mean(axis=0) for k in range(len(levels))])
        index = pd.Index(levels, name=spec)
    else:
        by_codes = grid[by].cat.codes.to_numpy()
        by_levels = categorical[by]
        weights = np.stack([X[(by_codes == b) & (codes == k)].mean(axis=0)
                            for b in range(len(by_levels)) for k in range(len(levels))])
        index = pd.MultiIndex.from_product([by_levels, levels], names=[by, spec])
    in_interaction = False
    for term in model_spec.terms:
        columns = {encoded_column(str(f), pd.Index([*categorical, *numeric])) for f in term.factors}
        in_interaction |= spec in columns and len(columns) > 1
    return ReferenceGrid(
        spec,
        pd.DataFrame(weights, index=index, columns=names),
        tuple(name for name in categorical if name not in (spec, by)),
        covariates,
        in_interaction,
        by,
    )


# -- results ----------------------------------------------------------------------------------
def _render(table: pd.DataFrame, notes: tuple[str, ...]) -> str:
    return "\n".join([table.to_string(float_format=lambda v: f"{v:.6g}"), *notes])


def _level_text(level) -> str:
    """A level as R prints it (``0.2``, ``1``; not ``0.20000000000000001`` or ``1.0``)."""
    if isinstance(level, numbers.Real) and not isinstance(level, bool):
        return f"{float(level):.15g}"
    return str(level)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _pair_labels(spec: str, levels) -> list[str]:
    """The levels as emmeans labels them in contrasts: prefixed by the variable's name when
    every level reads as a number (``nitro0 - nitro0.2``), in parentheses when a level
    holds ``-``, ``+``, ``/`` or ``*`` (``barley - (barley+lupins)``)."""
    texts = [_level_text(level) for level in levels]
    if texts and all(_is_number(t) for t in texts):
        return [f"{spec}{t}" for t in texts]
    return [f"({t})" if LABEL_PARENS.search(t) else t for t in texts]


def _holm(p_raw: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest p-value times ``m - i + 1``, made
    non-decreasing in that order, at most 1."""
    m = len(p_raw)
    order = np.argsort(p_raw, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p_raw[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted


def _adjusted(t: np.ndarray, df: np.ndarray, adjust: str, level: float, n_means: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p-values and interval half-width multipliers, adjusted for the family."""
    m = len(t)
    p_raw = 2.0 * sps.t.sf(np.abs(t), df)
    if adjust == "tukey":
        p = sps.studentized_range.sf(np.sqrt(2.0) * np.abs(t), n_means, df)
        crit = sps.studentized_range.ppf(level, n_means, df) / np.sqrt(2.0)
    elif adjust == "holm":  # Holm's p-values; Bonferroni's intervals (emmeans does the same)
        p = _holm(p_raw)
        crit = sps.t.ppf(1.0 - (1.0 - level) / (2.0 * m), df)
    elif adjust == "sidak":
        p = 1.0 - (1.0 - p_raw) ** m
        crit = sps.t.ppf(0.5 + 0.5 * level ** (1.0 / m), df)
    elif adjust == "bonferroni":
        p = np.minimum(1.0, m * p_raw)
        crit = sps.t.ppf(1.0 - (1.0 - level) / (2.0 * m), df)
    else:
        p = p_raw
        crit = sps.t.ppf(0.5 + 0.5 * level, df)
    return np.asarray(p, dtype=np.float64), np.asarray(crit, dtype=np.float64)


class _ShownTable:
    """A result that reads and prints like its table (``_table``) with its ``notes``: the
    table a copy on each access, ``result[column]``, and the table and notes as its text."""

    @property
    def table(self) -> pd.DataFrame:
        return self._table.copy()

    def __getitem__(self, key):
        return self.table[key]

    def __str__(self) -> str:
        return _render(self._table, self.notes)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        from ..report.notebook import shown_table_html

        return shown_table_html(self, self._title())


# repr=False: the text of the table (_ShownTable.__repr__), not the dataclass's fields.
@dataclass(frozen=True, repr=False)
class ContrastTable(_ShownTable):
    """Contrasts of marginal means (emmeans' ``pairs()`` / ``contrast()`` summary with
    ``infer = TRUE``).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per contrast: ``estimate``, ``se``, ``df``, ``t``, ``p`` and the interval
        ``lower``, ``upper``, both adjusted by ``adjust`` (a copy on each access).
    adjust : str
    level : float
    weights : pandas.DataFrame
        The contrasts' linear combinations of the fixed effects (a copy on each access).
    notes : tuple of str
    """

    _table: pd.DataFrame = field(repr=False)
    adjust: str
    level: float
    _weights: pd.DataFrame = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def weights(self) -> pd.DataFrame:
        return self._weights.copy()

    def _title(self) -> str:
        return f"Contrasts of marginal means (adjustment: {self.adjust})"


@dataclass(frozen=True, repr=False)
class MarginalMeans(_ShownTable):
    """Estimated marginal means of one factor (emmeans' ``emmeans(m, "f")``, or
    ``emmeans(m, "f", by = "g")``).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per level: ``emmean``, ``se``, ``df`` and the (unadjusted) interval
        ``lower``, ``upper`` (a copy on each access); indexed by (level of ``by``, level
        of ``spec``) with ``by``.
    spec : str
    ddf : str
        The df method (``"satterthwaite"``, ``"kenward-roger"``, ``"residual"``).
    level : float
    grid : ReferenceGrid
        The linear combinations behind the means (``grid.weights``).
    notes : tuple of str
    by : str or None
        The factor within whose levels the means are taken and compared.
    """

    _table: pd.DataFrame = field(repr=False)
    spec: str
    ddf: str
    level: float
    grid: ReferenceGrid = field(repr=False)
    notes: tuple[str, ...]
    fit: object = field(repr=False)
    by: str | None = None

    def _title(self) -> str:
        return f"Estimated marginal means of {self.spec}" + (f" by {self.by}" if self.by is not None else "")

    def _families(self) -> list[tuple[object, np.ndarray]]:
        """(level of ``by`` or None, positions of its rows in the table): each family of
        contrasts, in the table's order."""
        if self.by is None:
            return [(None, np.arange(len(self._table)))]
        by_values = self._table.index.get_level_values(0)
        return [(b, np.flatnonzero(by_values == b)) for b in dict.fromkeys(by_values)]

    @property
    def _levels(self) -> pd.Index:
        """The levels of ``spec``, in the table's order (within one level of ``by``)."""
        index = self._table.index
        return index if self.by is None else index.get_level_values(1)[self._families()[0][1]]

    def _stacked(self, rows: dict[str, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
        """Contrast weights over the levels of ``spec`` put in every family: the weights over
        the table's rows, and each row's family."""
        names = list(rows)
        weights = np.array([rows[name] for name in names]).reshape(len(names), -1)
        n = len(self._table)
        blocks, labels, family = [], [], []
        for f, (b, positions) in enumerate(self._families()):
            block = np.zeros((len(names), n))
            block[:, positions] = weights
            blocks.append(block)
            labels.extend(names if b is None else [(b, name) for name in names])
            family.extend([f] * len(names))
        index = (pd.Index(labels, name="contrast") if self.by is None
                 else pd.MultiIndex.from_tuples(labels, names=[self.by, "contrast"]))
        return pd.DataFrame(np.vstack(blocks), index=index, columns=self._table.index), np.array(family)

    def contrast(self, contrasts, adjust: str = "none", level: float | None = None) -> ContrastTable:
        """Contrasts of the means, as emmeans' ``contrast(emm, list(...))``.

        Parameters
        ----------
        contrasts : dict or pandas.DataFrame
            ``{name: weights}``, the weights a sequence with one number per level (in the
            table's order) or a dict ``{level: weight}`` (other levels 0); or a DataFrame
            with one row per contrast and the levels as columns. With ``by``, the same
            contrasts within each level of ``by``.
        adjust : {"none", "holm", "sidak", "bonferroni"}
            Adjustment of the p-values and intervals for the family (each level of ``by``
            is a family); ``"tukey"`` is for pairwise comparisons: :meth:`pairs`.
        level : float, optional
            Confidence level (by default the means').

        Returns
        -------
        ContrastTable
        """
        adjust = _check_adjust(adjust)
        if adjust == "tukey":
            raise ValueError("adjust='tukey' is for the pairwise comparisons of pairs(); use 'holm', 'sidak', "
                             "'bonferroni' or 'none' for other contrasts")
        levels = self._levels
        if isinstance(contrasts, pd.DataFrame):
            unknown = [c for c in contrasts.columns if c not in levels]
            if unknown:
                raise ModelDataError(f"contrast columns {unknown!r} are not levels of {self.spec!r} "
                                     f"({list(levels)!r})")
            rows = {name: row.to_numpy(dtype=np.float64)
                    for name, row in contrasts.reindex(columns=levels, fill_value=0.0).iterrows()}
        elif isinstance(contrasts, dict) and contrasts:
            rows = {}
            for name, weights in contrasts.items():
                if isinstance(weights, dict):
                    unknown = [k for k in weights if k not in levels]
                    if unknown:
                        raise ModelDataError(f"contrast {name!r} weights level(s) {unknown!r}, not levels of "
                                             f"{self.spec!r} ({list(levels)!r})")
                    rows[name] = pd.Series(weights, dtype=np.float64).reindex(levels, fill_value=0.0).to_numpy()
                else:
                    values = np.asarray(weights, dtype=np.float64)
                    if values.shape != (len(levels),):
                        raise ModelDataError(f"contrast {name!r} has {values.size} weights; {self.spec!r} has "
                                             f"{len(levels)} levels ({list(levels)!r})")
                    rows[name] = values
        else:
            raise ModelDataError("contrasts must be a non-empty dict {name: weights} or a DataFrame of weights "
                                 "with the levels as columns")
        C, family = self._stacked(rows)
        return self._contrasts(C, family, adjust, level, len(rows))

    def pairs(self, adjust: str = PAIRS_ADJUST, level: float | None = None) -> ContrastTable:
        """Every pairwise difference ``a - b`` of the means, as emmeans' ``pairs(emm)``.

        Parameters
        ----------
        adjust : {"tukey", "holm", "sidak", "bonferroni", "none"}
            Adjustment of the p-values and intervals for the family of comparisons (each
            level of ``by`` is a family); Tukey's (the studentized range), emmeans'
            default for ``pairs()``.
        level : float, optional
            Confidence level of the intervals (by default the means').

        Returns
        -------
        ContrastTable
            Rows ``"a - b"`` for the levels in order (``a`` before ``b``), labelled as
            emmeans labels them: a level with ``-``, ``+``, ``/`` or ``*`` in its name in
            parentheses, numbers prefixed by the variable's name (``nitro0 - nitro0.2``);
            with ``by``, indexed by (level of ``by``, contrast).
        """
        adjust = _check_adjust(adjust)
        labels = _pair_labels(self.spec, self._levels)
        k = len(labels)
        rows = {}
        for i, j in itertools.combinations(range(k), 2):
            weights = np.zeros(k)
            weights[i], weights[j] = 1.0, -1.0
            rows[f"{labels[i]} - {labels[j]}"] = weights
        C, family = self._stacked(rows)
        return self._contrasts(C, family, adjust, level, k)

    def _contrasts(self, C: pd.DataFrame, family: np.ndarray, adjust: str, level: float | None,
                   n_means: int) -> ContrastTable:
        level = self.level if level is None else _check_level(level)
        L = C.to_numpy(dtype=np.float64) @ self.grid.weights.to_numpy()
        estimate, se, df = linear_combinations(self.fit, L, self.ddf)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = estimate / se
        p, crit = np.empty(len(t)), np.empty(len(t))
        for f in np.unique(family):
            rows = family == f
            p[rows], crit[rows] = _adjusted(t[rows], df[rows], adjust, level, n_means)
        table = pd.DataFrame({"estimate": estimate, "se": se, "df": df, "t": t, "p": p,
                              "lower": estimate - crit * se, "upper": estimate + crit * se}, index=C.index)
        m = int(np.sum(family == family[0]))
        notes = [f"degrees of freedom: {self.ddf}"]
        within = f", within each level of {self.by}" if self.by is not None else ""
        if adjust != "none" and m > 1:
            family_text = f"{n_means} estimates" if adjust == "tukey" else f"{m} tests"
            if adjust == "holm":
                notes.append(f"p-values adjusted by the holm method for {family_text}{within}; {level:g} intervals "
                             "by the bonferroni method (Holm's method has no intervals of its own)")
            else:
                notes.append(f"p-values and {level:g} intervals adjusted by the {adjust} method for "
                             f"{family_text}{within}")
        else:
            notes.append(f"confidence level {level:g}, no adjustment")
        weights = pd.DataFrame(L, index=C.index, columns=self.grid.weights.columns)
        return ContrastTable(table, adjust, level, weights, tuple(notes))


def emmeans(fit, spec: str, ddf: str = "satterthwaite", level: float = DEFAULT_LEVEL,
            by: str | None = None) -> MarginalMeans:
    """Estimated marginal means of the levels of ``spec`` (see the module).

    Parameters
    ----------
    fit : LmerFit or TermsFit
        A fit made by :func:`reml_engine.lmer` from a DataFrame.
    spec : str
        A categorical variable of the fixed part; ``"f | g"`` reads as ``by="g"``.
    ddf : {"satterthwaite", "kenward-roger", "residual"}
        Satterthwaite's df (default; emmeans' ``lmer.df = "satterthwaite"``),
        Kenward-Roger's with the adjusted covariance (REML fits), or ``n - p``.
    level : float
        Confidence level of the intervals.
    by : str, optional
        Another categorical variable: the means of ``spec`` within each of its levels
        (emmeans' ``by``), compared within each level by ``pairs()`` and ``contrast()``.

    Returns
    -------
    MarginalMeans

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("score ~ Machine + (1|Worker) + (1|Worker:Machine)", rl.datasets.machines())
    >>> print(m.emmeans("Machine").table[["emmean", "se", "df"]].round(4))
              emmean      se      df
    Machine
    A        52.3556  2.4858  8.5217
    B        60.3222  2.4858  8.5217
    C        66.2722  2.4858  8.5217
    """
    method = normalize_ddf(ddf)
    level = _check_level(level)
    spec, by = split_spec(spec, by)
    grid = reference_grid(fit, spec, by)
    estimate, se, df = linear_combinations(fit, grid.weights.to_numpy(), method)
    half = sps.t.ppf(0.5 + 0.5 * level, df) * se
    table = pd.DataFrame({"emmean": estimate, "se": se, "df": df, "lower": estimate - half,
                          "upper": estimate + half}, index=grid.weights.index.copy())
    notes = []
    if grid.averaged_over:
        notes.append(f"averaged over the levels of: {', '.join(grid.averaged_over)}")
    if grid.covariates:
        notes.append("at the means: " + ", ".join(f"{name} = {value:.6g}" for name, value in grid.covariates.items()))
    if grid.in_interaction:
        notes.append(f"{spec} is part of an interaction: the means may mislead (emmeans' note)")
    notes.append(f"degrees of freedom: {method}; confidence level {level:g}")
    return MarginalMeans(table, spec, method, level, grid, tuple(notes), fit, by)


__all__ = ["ADJUSTMENTS", "ContrastTable", "MarginalMeans", "ReferenceGrid", "emmeans", "linear_combinations",
           "reference_grid"]
