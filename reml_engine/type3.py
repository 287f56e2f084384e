"""Type III hypotheses over the terms of a formula, as lmerTest's ``anova(m, type = 3)``.

For each term the hypothesis is built in three steps:

1. Write every column of the over-parametrized design (an intercept, then for each term
   all of its cells: ``x1:cat[a]``, ``x1:cat[b]``, ... with no level left out) as a
   linear combination of the model's columns. This is a property of the coding alone,
   so it is computed on a small synthetic grid holding every combination of factor
   levels (numeric variables random), not on the data.
2. Going from the highest-order terms down, replace the coefficients of a term by their
   residuals after regression on the coefficients of the terms that *contain* it
   (more variables, the same numeric ones). This is what makes the hypothesis for
   ``x1`` in ``x1 * cat`` the slope averaged over the levels of ``cat``.
3. Read the rows of the over-parametrized coefficients that are model columns
   (with treatment coding, ``cat[T.b]`` is the indicator ``cat[b]``); the term's
   columns of that square matrix, transposed, are its hypothesis rows.

Only treatment-coded factors (formulaic's default) are supported, as in lmerTest's main
path; other codings raise.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .checks import ModelDataError
from .design import encoded_column, model_spec_copy

#: Largest number of factor-level combinations put on the synthetic grid.
GRID_MAX_CELLS = 20_000
#: Hypothesis rows whose absolute sum is below this are dropped (lmerTest's 1e-8).
ZERO_ROW_TOL = 1e-8
#: Entries smaller than this relative to the largest are rounding (lmerTest zapsmall).
ZAP_RTOL = 1e-10
#: Seed of the random numeric values on the synthetic grid.
GRID_SEED = 20_041


def _factor_kind(spec, factor) -> str:
    state = spec.encoder_state.get(str(factor)) or spec.encoder_state.get(getattr(factor, "expr", ""))
    if state is None:
        return "numerical"
    return str(getattr(state[0], "value", state[0])).lower()


def _synthetic_grid(spec, n_columns: int) -> pd.DataFrame:
    raw = sorted(spec.variables_by_source.get("data", set()))
    categorical = {}
    # A factor is a column (cat) or a column wrapped in C() (C(k), k numbers).
    for factor, (kind, state) in spec.encoder_state.items():
        column = encoded_column(factor, pd.Index(raw))
        if column is not None and str(getattr(kind, "value", kind)).lower() == "categorical":
            categorical[column] = list(state["categories"])
    numeric = [name for name in raw if name not in categorical]
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


def type3_hypotheses(fit) -> dict[str, np.ndarray]:
    """Type III hypothesis matrices, one per term (intercept excluded).

    Parameters
    ----------
    fit : LmerFit
        A fit made from a formula (``rl.lmer``).

    Returns
    -------
    dict mapping term label (formulaic's, e.g. ``"x1:cat"``) to an array (rows, p)
    over the fit's coefficients ``fit.fixef``.
    """
    import formulaic

    design = getattr(fit, "design", None)
    spec = getattr(design, "model_spec", None)
    if spec is None:
        raise ModelDataError("a type III table needs a fit made from a formula (rl.lmer)")
    names = list(fit.fixef.index)
    if not [t for t in spec.terms if str(t) != "1"] or not names:
        return {}  # no terms besides the intercept: nothing to test (lmerTest's table is empty)
    spec_names = ["(Intercept)" if c == "Intercept" else str(c) for c in spec.column_names]
    kept = [spec_names.index(n) for n in names]
    grid = _synthetic_grid(spec, len(spec_names))
    try:
        # A copy: formulaic may update the spec it materializes with (see model_spec_copy).
        grid_spec = model_spec_copy(design)
        X = np.asarray(grid_spec.get_model_matrix(grid, na_action="ignore").to_numpy(dtype=np.float64))[:, kept]
    except Exception as err:  # transforms that need the fitting data's context
        raise ModelDataError(f"cannot rebuild the design on a grid of factor levels: {err}") from None

    terms = [t for t in spec.terms if str(t) != "1"]
    term_vars = {str(t): {str(f) for f in t.factors} for t in terms}
    numerics = {
        str(t): {str(f) for f in t.factors if _factor_kind(spec, f) != "categorical"} for t in terms
    }
    columns_of = {}
    for struct in spec.structure:
        label = str(struct.term)
        cols = ["(Intercept)" if c == "Intercept" else str(c) for c in struct.columns]
        columns_of[label] = [names.index(c) for c in cols if c in names]

    blocks = [np.ones((len(grid), 1))] if "(Intercept)" in names else []
    for t in terms:
        mm = formulaic.model_matrix(f"0 + {t}", grid, na_action="ignore")
        blocks.append(np.asarray(mm.to_numpy(dtype=np.float64)))
    over = np.hstack(blocks)
    # Each over-parametrized column in terms of the model's columns: (r, p).
    L = np.linalg.lstsq(X, over, rcond=None)[0].T
    L[np.abs(L) < ZAP_RTOL * np.abs(L).max()] = 0.0

    order = sorted(terms, key=lambda t: -len(t.factors))
    for t in order:
        label = str(t)
        containing = [
            str(o) for o in terms
            if term_vars[label] < term_vars[str(o)] and numerics[label] == numerics[str(o)]
        ]
        cols = columns_of.get(label, [])
        basis_cols = [c for o in containing for c in columns_of.get(o, [])]
        if cols and basis_cols:
            basis = L[:, basis_cols]
            coef = np.linalg.lstsq(basis, L[:, cols], rcond=None)[0]
            L[:, cols] = L[:, cols] - basis @ coef
    L[np.abs(L) < ZAP_RTOL * max(np.abs(L).max(), 1.0)] = 0.0

    # Rows of the over-parametrized coefficients that are model columns.
    match = []
    for j in range(X.shape[1]):
        hits = np.flatnonzero(np.all(np.isclose(over, X[:, [j]], rtol=0, atol=1e-12), axis=0))
        if not len(hits):
            raise ModelDataError(
                f"column {names[j]!r} is not a cell indicator: the type III table needs treatment-coded factors"
            )
        match.append(int(hits[0]))
    square = L[match, :]  # (p, p): rows model columns, columns model columns

    hypotheses = {}
    for t in terms:
        cols = columns_of.get(str(t), [])
        if not cols:
            continue
        H = square[:, cols].T
        H = H[np.abs(H).sum(axis=1) > ZERO_ROW_TOL]
        if len(H):
            hypotheses[str(t)] = H
    return hypotheses
