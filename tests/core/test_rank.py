"""Rank-deficient fixed effects: later collinear columns are dropped, as lme4 does."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, lme4_name, load_closure_reference

import reml_engine as rl
from reml_engine.core.identifiability import RANK_TOL


def test_collinear_column_dropped_with_named_warning():
    df = case_data("sim_unbalanced")
    df["x1_twice"] = 2 * df["x1"] - 1
    with pytest.warns(rl.ModelDataWarning, match=r"dropping 1 column.*'x1_twice'"):
        m = rl.lmer("y ~ x1 + x1_twice + x2 + (1|g)", df)
    base = rl.lmer("y ~ x1 + x2 + (1|g)", df)
    assert list(m.fixef.index) == ["(Intercept)", "x1", "x2"]
    assert m.dropped_columns == ("x1_twice",)
    # The criterion depends on the kept columns: equal to the model without the dropped one.
    assert m.criterion == pytest.approx(base.criterion, rel=1e-12)
    assert np.allclose(m.fixef, base.fixef, rtol=1e-10)


def test_earlier_column_kept_later_dropped():
    df = case_data("sim_unbalanced")
    df["z"] = df["x2"] * 3.0
    with pytest.warns(rl.ModelDataWarning, match="'x2'"):
        m = rl.lmer("y ~ z + x2 + (1|g)", df)
    assert list(m.fixef.index) == ["(Intercept)", "z"]


def test_empty_interaction_cell_dropped():
    """An interaction column that is all zero (a level never seen with x) is dropped."""
    df = case_data("sim_unbalanced")
    df.loc[df["cat"] == "c", "x1"] = 0.0
    with pytest.warns(rl.ModelDataWarning, match=r"x1:cat\[T.c\]"):
        m = rl.lmer("y ~ x1 * cat + (1|g)", df)
    assert "x1:cat[T.c]" not in m.fixef.index
    assert len(m.fixef) == 5


def test_arrays_path_drops_duplicate_column():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(10), 5)
    x = rng.normal(size=50)
    X = np.column_stack([np.ones(50), x, x])
    y = x + rng.normal(size=10)[g] + rng.normal(size=50)
    with pytest.warns(rl.ModelDataWarning, match="'b'"):
        m = rl.fit(X, y, g, names=["(Intercept)", "a", "b"])
    assert list(m.fixef.index) == ["(Intercept)", "a"]
    assert m.fixef["a"] == pytest.approx(rl.fit(X[:, :2], y, g, names=["(Intercept)", "a"]).fixef["a"], rel=1e-12)


def test_large_offset_column_is_not_mistaken_for_collinear():
    """x shifted by 1e5 is still far from collinear with the intercept (ratio 1e-5 > 1e-7)."""
    df = pd.DataFrame(rl.load_seed())
    df["x"] = df["x"] + 1e5
    m = rl.lmer("y ~ x + (1|f)", df)
    assert "x" in m.fixef.index


# -- the rank decision at the rounding of the cross-products -------------------------------
#
# lme4's tolerance (a residual of 1e-7 of the column's norm, 1e-14 of its square) lies
# below the rounding of cross-products read in one pass (about 1e-13 of the squared
# norm), so a decision read off them alone would be left to rounding. Where a column's
# residual is that small, the fit reads the rows again in a basis where the residual is
# computed row by row; rows that cannot be read again drop the column, saying so.


def _quiet(fitter, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rl.ModelDataWarning)
        return fitter(*args, **kwargs)


def _one_row_at_a_new_level() -> pd.DataFrame:
    """sim_unbalanced and a copy of its sixth row at a new level 'x' of cat (as in
    make_closure_reference.R): x1:cat[T.x] = x1[5] * cat[T.x] exactly."""
    data = case_data("sim_unbalanced")
    return pd.concat([data, data.iloc[[5]].assign(cat="x")], ignore_index=True)


def _forms(data: pd.DataFrame, formula: str) -> dict:
    """The same rows in memory (in several orders) and in chunks (first chunks of several
    sizes, so that the chunks' common shift is more or less off the means)."""
    from reml_engine.scaleout.chunked import lmer_chunks

    forms = {f"in memory, order {seed}": lambda s=seed: rl.lmer(formula, data.sample(frac=1.0, random_state=s))
             for seed in range(4)}
    for first in (5, 20, 100, 300):
        chunks = [data.iloc[:first], data.iloc[first:]]
        forms[f"chunks, first {first} rows"] = lambda c=chunks: lmer_chunks(formula, c)
    return forms


def test_an_exactly_redundant_column_is_dropped_on_every_input_form():
    """lme4 drops x1:catx; its residual read off one-pass cross-products is rounding,
    some 1e-13 of its squared norm, against a threshold of 1e-14: the decision was left to
    rounding (the chunked fit kept it and reported a criterion 30 units off)."""
    ref = load_closure_reference()["one_row_at_a_new_level"]
    data = _one_row_at_a_new_level()
    for form, fit in _forms(data, "y ~ x1 * cat + x2 + (1|g)").items():
        m = _quiet(fit)
        assert m.dropped_columns == ("x1:cat[T.x]",), form
        assert m.criterion == pytest.approx(ref["criterion"], abs=1e-6), form
        assert [lme4_name(c) for c in m.fixef.index] == list(ref["fixef"]), form
        np.testing.assert_allclose(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-5, err_msg=form)


def test_a_split_column_is_dropped_on_every_input_form():
    """x1 = xa + xb + xc (x1 split by cat): xc is redundant, in memory and in chunks
    whose shift comes from 5 to 300 first rows."""
    data = case_data("sim_unbalanced")
    data = data.assign(**{f"x{level}": data["x1"] * (data["cat"] == level) for level in "abc"})
    formula = "y ~ x1 + xa + xb + xc + x2 + (1|g)"
    expected = _quiet(rl.lmer, "y ~ x1 + xa + xb + x2 + (1|g)", data)
    for form, fit in _forms(data, formula).items():
        m = _quiet(fit)
        assert m.dropped_columns == ("xc",), form
        assert m.criterion == pytest.approx(expected.criterion, rel=1e-10), form


def _residual_norm(X: np.ndarray, j: int, earlier: list[int]) -> float:
    """Norm of the residual of column j (centred) on the earlier columns, by numpy's least
    squares (an outside computation: Householder QR of the rows)."""
    centred = X - X.mean(axis=0)
    centred[:, 0] = 1.0
    coef = np.linalg.lstsq(centred[:, earlier], centred[:, j], rcond=None)[0]
    return float(np.linalg.norm(centred[:, j] - centred[:, earlier] @ coef))


@pytest.mark.parametrize("shift", [1e6, 1e7, 1e8, 1.7e9])
def test_interaction_with_a_shifted_predictor_is_dropped_as_lmes_tolerance_says(shift):
    """x1 * cat with x1 + shift: the residual of x1:cat[T.b] on the earlier columns does
    not move with the shift, its centred norm grows with it; below 1e-7 of it lme4's
    rule drops the column. The residuals come from the unshifted design (well
    conditioned), the centred norms from the shifted one; the fit must decide as they
    say, in memory and in chunks."""
    from reml_engine.frontend.design import build_design

    data = case_data("sim_unbalanced")
    shifted = data.assign(x1=data["x1"] + shift)
    formula = "y ~ x1 * cat + x2 + (1|g)"
    base = _quiet(build_design, formula, data)
    names = list(base.column_names)
    X_shifted = _quiet(build_design, formula, shifted).X
    earlier = [names.index(n) for n in ("(Intercept)", "x1", "cat[T.b]", "cat[T.c]", "x2")]
    expected = []
    for name in ("x1:cat[T.b]", "x1:cat[T.c]"):
        j = names.index(name)
        ratio = _residual_norm(base.X, j, earlier) / np.linalg.norm(X_shifted[:, j] - X_shifted[:, j].mean())
        assert not 1 / 1.5 < ratio / RANK_TOL < 1.5, f"{name} at {shift:g} must not sit at the threshold"
        if ratio <= RANK_TOL:
            expected.append(name)
        else:
            earlier.append(j)
    for form, fit in _forms(shifted, formula).items():
        assert _quiet(fit).dropped_columns == tuple(expected), form


@pytest.mark.parametrize("shift, undecided", [(1e6, ()), (1e7, ("x1:cat[T.b]", "x1:cat[T.c]"))])
def test_rows_read_once_drop_the_columns_they_cannot_decide_on_and_say_so(shift, undecided):
    """A one-shot iterator cannot be read again. At x1 + 1e6 the interaction keeps 5e-12
    of its squared norm, which its cross-products resolve: the in-memory decision. At
    1e7 it keeps 5e-14 (lme4 keeps it: 2.2e-7 of its norm), within the rounding of the
    cross-products: dropped, with a warning that names the columns and says why."""
    from reml_engine.scaleout.chunked import lmer_chunks

    data = case_data("sim_unbalanced").assign(x1=lambda d: d["x1"] + shift)
    formula = "y ~ x1 * cat + x2 + (1|g)"
    assert _quiet(rl.lmer, formula, data).dropped_columns == ()
    chunks = (data.iloc[i:i + 150] for i in range(0, len(data), 150))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", rl.ModelDataWarning)
        m = lmer_chunks(formula, chunks, levels={"cat": ["a", "b", "c"]})
    assert m.dropped_columns == undecided
    said = [str(w.message) for w in record if "cannot tell from a linear combination" in str(w.message)]
    assert bool(said) == bool(undecided)
    if undecided:
        assert ", ".join(map(repr, undecided)) in said[0]
        assert m.criterion == pytest.approx(_quiet(rl.lmer, "y ~ x1 + cat + x2 + (1|g)", data).criterion, rel=1e-9)
