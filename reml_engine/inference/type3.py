"""Type III hypotheses over the terms of a formula, as lmerTest's ``anova(m, type = 3)``.

The hypotheses are built for the *treatment-coded* version of the model and carried over
to the model's own coding, as lmerTest does: the F-tests are then the same whatever
full-rank coding the categorical variables have (``contr.sum``, ``contr.poly`` for
ordered factors, ``contr.helmert``, ``contr.SAS``). Everything is computed on a small
synthetic grid holding every combination of factor levels (numeric variables random), not
on the data, since it is a property of the coding alone; the fit's stateful transforms
(``poly``, ``scale``) keep their fitted coefficients there.

1. Build the treatment-coded design ``X_T`` (the model's formula with every categorical
   variable treatment-coded, first level as reference) and the map ``M`` with
   ``X = X_T M``, so that ``beta_T = M beta``.
2. Write every column of the over-parametrized design (an intercept, then for each term
   all of its cells: ``x1:cat[a]``, ``x1:cat[b]``, ... with no level left out) as a
   linear combination of the columns of ``X_T``: the rows of ``L`` (cells x p).
3. Going from the highest-order terms down, replace the columns of ``L`` of a term by
   their residuals after regression on the columns of the terms that *contain* it (more
   variables, the same numeric ones). This is what makes the hypothesis for ``x1`` in
   ``x1 * cat`` the slope averaged over the levels of ``cat``. The same column
   operations, applied to the identity, give ``E``.
4. The term's columns of ``E``, transposed, are its hypothesis rows on ``beta_T``
   (lmerTest reads them as the rows of ``L`` that are model columns, which are the rows
   of ``E`` there); times ``M``, on the model's coefficients.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd

from ..errors import ModelDataError
from ..frontend.design import encoded_column
from ..frontend.formula import INTERCEPT_NAME, lme4_column_names
from ..frontend.transforms import formula_context

#: Largest number of factor-level combinations put on the synthetic grid.
GRID_MAX_CELLS = 20_000
#: Hypothesis rows whose absolute sum is below this are dropped (lmerTest's 1e-8).
ZERO_ROW_TOL = 1e-8
#: Entries smaller than this relative to the largest are rounding (lmerTest zapsmall).
ZAP_RTOL = 1e-10
#: Seed of the random numeric values on the synthetic grid.
GRID_SEED = 20_041
#: Largest relative residual of ``X = X_T M`` on the grid: the model's coding and its
#: treatment-coded version span the same columns up to rounding.
CODING_MAP_RTOL = 1e-8


def _factor_kind(spec, factor) -> str:
    state = spec.encoder_state.get(str(factor)) or spec.encoder_state.get(getattr(factor, "expr", ""))
    if state is None:
        return "numerical"
    return str(getattr(state[0], "value", state[0])).lower()


def data_variables(spec) -> tuple[dict[str, list], list[str]]:
    """The data columns a fixed part reads: the categorical ones with their fitted levels
    (in order), and the others (numbers), by name."""
    raw = sorted(spec.variables_by_source.get("data", set()))
    categorical = {}
    # A factor is a column (cat) or a column wrapped in C() (C(k), k numbers).
    for factor, (kind, state) in spec.encoder_state.items():
        column = encoded_column(factor, pd.Index(raw))
        if column is not None and str(getattr(kind, "value", kind)).lower() == "categorical":
            categorical[column] = list(state["categories"])
    numeric = [name for name in raw if name not in categorical]
    return categorical, numeric


def _synthetic_grid(spec, n_columns: int) -> pd.DataFrame:
    categorical, numeric = data_variables(spec)
    n_cells = int(np.prod([len(v) for v in categorical.values()])) if categorical else 1
    if n_cells > GRID_MAX_CELLS:
        raise ModelDataError(
            f"the type III table needs every combination of factor levels ({n_cells}); "
            f"more than {GRID_MAX_CELLS} is not supported"
        )
    reps = n_columns + 1
    rng = np.random.default_rng(GRID_SEED)
    cells = list(itertools.product(*categorical.values())) or [()]
    rows = [cell for cell in cells for _ in range(reps)]
    grid = pd.DataFrame({name: [r[k] for r in rows] for k, name in enumerate(categorical)})
    for name, levels in categorical.items():
        grid[name] = pd.Categorical(grid[name], categories=levels)
    for name in numeric:
        # Values in (1, 2): valid for log, sqrt and inverse transforms.
        grid[name] = rng.uniform(1.0, 2.0, size=len(rows))
    if not len(grid.columns):
        grid = pd.DataFrame(index=range(len(rows)))
    return grid


def grid_matrix(spec, grid: pd.DataFrame, context: dict) -> np.ndarray:
    """``spec`` materialized on the grid (a copy: formulaic may update the spec it
    materializes with, see :func:`reml_engine.frontend.design.model_spec_copy`)."""
    matrix = copy.deepcopy(spec).get_model_matrix(grid, na_action="ignore", context=context)
    return np.asarray(matrix.to_numpy(dtype=np.float64))


def _treatment_c(data, contrasts=None, *, levels=None, spans_intercept: bool = True):
    """formulaic's ``C()`` with treatment coding whatever coding it is given (step 1)."""
    from formulaic.transforms import C
    from formulaic.transforms.contrasts import TreatmentContrasts

    return C(data, TreatmentContrasts(), levels=levels, spans_intercept=spans_intercept)


def _over_parametrized(spec, terms, grid: pd.DataFrame, context: dict, intercept: bool) -> np.ndarray:
    """Every cell of every term, with the fit's transform and level states (step 2)."""
    blocks = [np.ones((len(grid), 1))] if intercept else []
    for term in terms:
        # Without an intercept and alone, a term's categorical variables are coded by
        # indicators of all their levels, whatever their contrasts.
        term_spec = spec.update(formula=f"0 + {term}", structure=None, ensure_full_rank=False)
        blocks.append(grid_matrix(term_spec, grid, context))
    return np.hstack(blocks)


def _coding_map(X_T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``M`` with ``X = X_T M`` (step 1); an error if the codings do not span the same columns."""
    M = np.linalg.lstsq(X_T, X, rcond=None)[0]
    residual = np.linalg.norm(X_T @ M - X) / max(np.linalg.norm(X), 1.0)
    if residual > CODING_MAP_RTOL:
        raise ModelDataError(
            "the type III table could not relate the model's coding to treatment coding (a coding that is not "
            "full rank, or a rank-deficient fit): test the terms with contrast_test instead"
        )
    M[np.abs(M) < ZAP_RTOL * max(np.abs(M).max(), 1.0)] = 0.0
    return M


def type3_hypotheses(fit) -> dict[str, np.ndarray]:
    """Type III hypothesis matrices, one per term (intercept excluded).

    Parameters
    ----------
    fit : LmerFit or TermsFit
        A fit made from a formula (``rl.lmer``, in memory or chunk by chunk, one random
        term or several: the hypotheses depend on the fixed part's encoding, not on the
        rows or the random terms), with any full-rank coding of its categorical variables.

    Returns
    -------
    dict mapping term label (formulaic's, e.g. ``"x1:cat"``) to an array (rows, p)
    over the fit's coefficients ``fit.fixef``.
    """
    # A chunked fit has no design but keeps its encoding (LmerFit.encoding); a fit with
    # several random terms keeps the fixed part's in its TermsEncoding's ``fixed``.
    encoding = getattr(fit, "encoding", None) or getattr(fit, "design", None)
    encoding = getattr(encoding, "fixed", encoding)
    spec = getattr(encoding, "model_spec", None)
    if spec is None:
        raise ModelDataError("a type III table needs a fit made from a formula (rl.lmer)")
    names = list(fit.fixef.index)
    terms = [t for t in spec.terms if str(t) != "1"]
    if not terms or not names:
        return {}  # no terms besides the intercept: nothing to test (lmerTest's table is empty)
    spec_names = list(lme4_column_names(spec.column_names))
    kept = [spec_names.index(n) for n in names]
    grid = _synthetic_grid(spec, len(spec_names))
    context = formula_context()
    try:
        X = grid_matrix(spec, grid, context)[:, kept]
        # Its own column names (formulaic checks a spec's structure against them).
        X_T = grid_matrix(spec.update(structure=None), grid, {**context, "C": _treatment_c})[:, kept]
        over = _over_parametrized(spec, terms, grid, context, INTERCEPT_NAME in names)
    except ModelDataError:
        raise
    except Exception as err:  # transforms that need the fitting data's context
        raise ModelDataError(f"cannot rebuild the design on a grid of factor levels: {err}") from None
    M = _coding_map(X_T, X)

    term_vars = {str(t): {str(f) for f in t.factors} for t in terms}
    numerics = {
        str(t): {str(f) for f in t.factors if _factor_kind(spec, f) != "categorical"} for t in terms
    }
    columns_of = {}
    for struct in spec.structure:
        cols = list(lme4_column_names(struct.columns))
        columns_of[str(struct.term)] = [names.index(c) for c in cols if c in names]

    # Each over-parametrized column in terms of the treatment-coded columns: (cells, p).
    L = np.linalg.lstsq(X_T, over, rcond=None)[0].T
    L[np.abs(L) < ZAP_RTOL * np.abs(L).max()] = 0.0
    E = np.eye(len(names))
    for t in sorted(terms, key=lambda t: -len(t.factors)):
        label = str(t)
        containing = [
            str(o) for o in terms
            if term_vars[label] < term_vars[str(o)] and numerics[label] == numerics[str(o)]
        ]
        cols = columns_of.get(label, [])
        basis_cols = [c for o in containing for c in columns_of.get(o, [])]
        if cols and basis_cols:
            coef = np.linalg.lstsq(L[:, basis_cols], L[:, cols], rcond=None)[0]
            L[:, cols] -= L[:, basis_cols] @ coef
            E[:, cols] -= E[:, basis_cols] @ coef
    E[np.abs(E) < ZAP_RTOL * max(np.abs(E).max(), 1.0)] = 0.0

    hypotheses = {}
    for t in terms:
        cols = columns_of.get(str(t), [])
        if not cols:
            continue
        H = E[:, cols].T @ M
        H[np.abs(H) < ZAP_RTOL * max(np.abs(H).max(), 1.0)] = 0.0
        H = H[np.abs(H).sum(axis=1) > ZERO_ROW_TOL]
        if len(H):
            hypotheses[str(t)] = H
    return hypotheses
