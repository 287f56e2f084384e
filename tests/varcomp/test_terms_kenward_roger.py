"""Kenward-Roger's df and adjusted covariance for fits with several random-intercept terms
(:mod:`reml_engine.inference.terms_kenward_roger`), checked against

* pbkrtest (through lmerTest's ``summary(m, ddf = "Kenward-Roger")`` and ``contest``) in
  ``tests/data/multi/inference_reference.json``
  (``tests/data/r/make_terms_inference_reference.R``): at lme4's own estimate, where the
  two computations see the same numbers, to 1e-8; at the engine's estimate (which is lme4's
  to the optimizer's last digits) to the issue's tolerances;
* the closed-form Kenward-Roger of one term (:func:`reml_engine.inference.ddf.kenward_roger_state`):
  a one-term model with unit prior weights is fitted as a TermsFit and must give the same
  numbers (the general path against the fast one);
* a brute-force dense computation (explicit ``G_i`` matrices, as Kenward and Roger write
  it) for a fit with prior weights, which pbkrtest does not treat (it takes ``dV/dsigma2 = I``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from varcomp.lmer_terms_cases import MULTI, front_fit, multi_data, multi_fit, multi_reference
from varcomp.test_terms_inference import INFERENCE_CASES, inference_reference, lme4_name, r_table

import reml_engine as rl
from reml_engine.core.terms_results import TermsFit
from reml_engine.inference import terms_kenward_roger
from reml_engine.inference.ddf import kenward_roger_terms
from reml_engine.inference.terms_kenward_roger import kenward_roger_dense

#: The same computation at the same estimate: rounding only.
SAME_ESTIMATE_RTOL = 1e-8
#: The issue's tolerance on df.
DF_RTOL = 1e-3
#: Adjusted SEs at the engine's estimate against pbkrtest's at lme4's: the unadjusted SEs
#: already differ by up to 3e-5 relative there (Penicillin), lme4's optimizer stopping short.
SE_RTOL = 1e-4
#: Two exact computations of the same quantity (closed form, dense, brute force).
EXACT_RTOL = 1e-9


def kr_table(state) -> pd.DataFrame:
    p = state.phi.shape[0]
    eye = np.eye(p)
    return pd.DataFrame({"df": [kenward_roger_terms(state, eye[[j]]).den_df for j in range(p)],
                         "se": np.sqrt(np.diag(state.vcov_adjusted))})


@pytest.mark.parametrize("case", INFERENCE_CASES)
def test_kenward_roger_at_lme4s_estimate_is_pbkrtests(case):
    """The dense computation fed lme4's variances gives pbkrtest's df and adjusted SEs."""
    ref = inference_reference()[case]["reml"]
    expected = r_table(ref["kenward_roger"])
    theta, sigma = np.atleast_1d(ref["theta"]), ref["glance"]["sigma"]
    m = multi_fit(case, True)
    assert list(m.term_names) == [g for g in ref["varcorr"]["group"] if g != "Residual"]
    design = m.design
    state = kenward_roger_dense(design.design.X, design.terms.codes, design.terms.nlevels, (theta * sigma) ** 2,
                                sigma**2, design.weights)
    table = kr_table(state)
    np.testing.assert_allclose(table["df"], expected["df"], rtol=SAME_ESTIMATE_RTOL)
    np.testing.assert_allclose(table["se"], expected["se"], rtol=SAME_ESTIMATE_RTOL)


@pytest.mark.parametrize("case", INFERENCE_CASES)
def test_kenward_roger_table_as_lmertest(case):
    expected = r_table(inference_reference()[case]["reml"]["kenward_roger"])
    m = multi_fit(case, True)
    table = m.coef_table("kenward-roger").rename(index=lme4_name)
    assert list(table.index) == list(expected.index)
    np.testing.assert_allclose(table["df"], expected["df"], rtol=DF_RTOL)
    np.testing.assert_allclose(table["se"], expected["se"], rtol=SE_RTOL)
    np.testing.assert_allclose(table["t"], expected["t"], rtol=SE_RTOL)
    np.testing.assert_allclose(table["p"], expected["p"], rtol=10 * DF_RTOL)
    # tidy() and conf_int() read the same table.
    tidy = m.tidy("kenward-roger")
    fixed = tidy[tidy["effect"] == "fixed"]
    np.testing.assert_allclose(fixed["df"], expected["df"], rtol=DF_RTOL)
    np.testing.assert_allclose(fixed["std.error"], expected["se"], rtol=SE_RTOL)


def test_kenward_roger_contrast_as_contest():
    ref = inference_reference()["sim_subjects_items"]["reml"]["contrast"]
    m = multi_fit("sim_subjects_items", True)
    test = m.contrast_test(np.array(ref["L"], dtype=float), ddf="kenward-roger")
    expected = ref["Kenward-Roger"]
    assert test.method == "kenward-roger"
    assert test.num_df == expected["num_df"]
    assert test.den_df == pytest.approx(expected["den_df"], rel=DF_RTOL)
    assert test.f_value == pytest.approx(expected["f_value"], rel=SE_RTOL)
    assert test.mean_sq == pytest.approx(expected["mean_sq"], rel=SE_RTOL)


def test_one_row_contrast_gives_the_table_row():
    m = multi_fit("oats", True)
    test = m.contrast_test({"nitro": 1.0}, ddf="kr")
    row = m.coef_table("kr").loc["nitro"]
    assert test.den_df == pytest.approx(row["df"], rel=1e-12)
    assert test.f_value == pytest.approx(row["t"] ** 2, rel=1e-12)


def test_summary_with_kenward_roger():
    expected = r_table(inference_reference()["oats"]["reml"]["kenward_roger"])
    text = multi_fit("oats", True).summary("Kenward-Roger")
    assert text.splitlines()[0].startswith("Linear mixed model fit by REML. t-tests use Kenward-Roger's method")
    lines = text.splitlines()
    start = lines.index("Fixed effects:")
    rows = {line.split()[0]: line.split() for line in lines[start + 2:start + 4]}
    for name, row in rows.items():
        assert float(row[2]) == pytest.approx(expected.loc[name, "se"], abs=1e-3)
        assert float(row[3]) == pytest.approx(expected.loc[name, "df"], abs=1e-3)


# -- the general path against the closed form of one term -------------------------------
def one_term_pairs():
    """(LmerFit, TermsFit) of the same one-term model: unit prior weights make a TermsFit.
    Interior optima, and one at var_group = 0 (sim_negative_icc)."""
    unbalanced = pd.read_csv(MULTI.parent / "reference" / "sim_unbalanced.csv")
    negative = pd.read_csv(MULTI.parent / "reference" / "sim_negative_icc.csv")
    for data, formula in [(rl.load_seed(), "y ~ x + (1|f)"), (rl.datasets.sleepstudy(), "Reaction ~ Days + (1|Subject)"),
                          (unbalanced, "y ~ x1 * cat + (1|g)"), (negative, "y ~ x1 + x2 + cat + (1|g)")]:
        data = data.assign(w=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield formula, rl.lmer(formula, data), rl.lmer(formula, data, weights="w")


def test_general_path_equals_the_closed_form_of_one_term():
    boundary = 0
    for formula, single, terms in one_term_pairs():
        assert isinstance(terms, TermsFit), formula
        boundary += single.var_group == 0
        ours, closed = terms.coef_table("kenward-roger"), single.coef_table("kenward-roger")
        np.testing.assert_allclose(ours["df"], closed["df"], rtol=EXACT_RTOL, err_msg=formula)
        np.testing.assert_allclose(ours["se"], closed["se"], rtol=EXACT_RTOL, err_msg=formula)
        L = np.eye(len(single.fixef))
        a, b = terms.contrast_test(L, ddf="kr"), single.contrast_test(L, ddf="kr")
        assert a.den_df == pytest.approx(b.den_df, rel=EXACT_RTOL), formula
        assert a.f_value == pytest.approx(b.f_value, rel=EXACT_RTOL), formula
    assert boundary >= 1


# -- prior weights: a brute-force dense computation --------------------------------------
def brute_force_kenward_roger(X, codes, variances, sigma2, weights):
    """Kenward and Roger's formulas with every matrix written out (n x n)."""
    G = [(c[:, None] == c[None, :]).astype(float) for c in codes] + [np.diag(1.0 / weights)]
    V = sum(g * G_i for g, G_i in zip([*variances, sigma2], G, strict=True))
    V_inv = np.linalg.inv(V)
    phi = np.linalg.inv(X.T @ V_inv @ X)
    P = [-X.T @ V_inv @ G_i @ V_inv @ X for G_i in G]
    Q = [[X.T @ V_inv @ G_i @ V_inv @ G_j @ V_inv @ X for G_j in G] for G_i in G]
    k = len(G)
    info = np.array([[0.5 * (np.trace(V_inv @ G[i] @ V_inv @ G[j]) - 2 * np.trace(phi @ Q[i][j])
                             + np.trace(phi @ P[i] @ phi @ P[j])) for j in range(k)] for i in range(k)])
    W = np.linalg.inv(info)
    U = sum(W[i, j] * (Q[i][j] - P[i] @ phi @ P[j]) for i in range(k) for j in range(k))
    return phi + 2 * phi @ U @ phi


def test_prior_weights_enter_the_residual_derivative():
    m = front_fit("penicillin_w", True)
    assert m.weighted
    design = m.design
    expected = brute_force_kenward_roger(design.design.X, design.terms.codes, m.variances.to_numpy(), m.sigma2,
                                         design.weights)
    np.testing.assert_allclose(m._kenward_roger.vcov_adjusted, expected, rtol=EXACT_RTOL)


# -- what is refused ---------------------------------------------------------------------
def test_ml_fits_are_refused():
    with pytest.raises(ValueError, match="REML"):
        multi_fit("pastes", False).coef_table("kenward-roger")


def test_fits_above_the_size_limit_are_refused(monkeypatch):
    monkeypatch.setattr(terms_kenward_roger, "KR_MAX_NOBS", 50)
    m = rl.lmer(multi_reference()["oats"]["formula"], multi_data("oats"))
    with pytest.raises(ValueError, match=r"72 rows, more than KR_MAX_NOBS = 50.*satterthwaite"):
        m.coef_table("kenward-roger")
    assert m.coef_table()["df"].notna().all()  # Satterthwaite still works


def test_kenward_roger_on_exam_cells_as_lmertest():
    """The docs' example (docs/several_terms.md): an unbalanced nested design where the
    Kenward-Roger df differ from Satterthwaite's (tests/data/multi/kr_exam_reference.json)."""
    with open(MULTI / "kr_exam_reference.json") as fh:
        ref = json.load(fh)
    exam = rl.datasets.exam()
    cells = (exam.groupby(["school", "intake", "sex"], observed=True)
                 .agg(normexam=("normexam", "mean"), standLRT=("standLRT", "mean")).reset_index())
    m = rl.lmer(ref["formula"], cells)
    assert m.nobs == ref["nobs"]
    assert m.criterion == pytest.approx(ref["criterion"], abs=1e-6)
    expected = r_table(ref["kenward_roger"])
    table = m.coef_table("kenward-roger").rename(index=lme4_name)
    assert list(table.index) == list(expected.index)
    np.testing.assert_allclose(table["df"], expected["df"], rtol=DF_RTOL)
    np.testing.assert_allclose(table["se"], expected["se"], rtol=SE_RTOL)
    assert (np.abs(m.coef_table()["df"].to_numpy() - table["df"].to_numpy()) > 1).all()


def test_kenward_roger_intervals_use_the_adjusted_se():
    """conf_int(ddf="kenward-roger") is lmerTest's interval of the KR t-test (estimate -/+
    qt(0.975, df) times the adjusted SE), for several terms and for one (it took the
    unadjusted SE before)."""
    from scipy import stats

    expected = r_table(inference_reference()["penicillin"]["reml"]["kenward_roger"])
    m = multi_fit("penicillin", True)
    ci = m.conf_int(ddf="kenward-roger")
    half = stats.t.ppf(0.975, expected["df"]) * expected["se"]
    np.testing.assert_allclose(ci[0], expected["estimate"] - half, rtol=SE_RTOL)
    np.testing.assert_allclose(ci[1], expected["estimate"] + half, rtol=SE_RTOL)
    single = rl.lmer("y ~ x1 * cat + (1|g)", pd.read_csv(MULTI.parent / "reference" / "sim_unbalanced.csv"))
    table = single.coef_table("kenward-roger")
    assert not np.allclose(table["se"], single.se, rtol=1e-6)  # an adjustment to see
    half = stats.t.ppf(0.975, table["df"]) * table["se"]
    ci = single.conf_int(ddf="kenward-roger")
    np.testing.assert_allclose(ci[1] - ci[0], 2 * half, rtol=1e-12)


def test_module_level_functions_take_several_term_fits():
    """rl.coef_table and rl.contrast_test answer for a TermsFit as its methods do (they
    read the one-term statistics before and raised AttributeError)."""
    m = multi_fit("sim_subjects_items", True)
    for ddf in ("satterthwaite", "kenward-roger", "residual"):
        pd.testing.assert_frame_equal(rl.coef_table(m, ddf), m.coef_table(ddf))
        assert rl.contrast_test(m, {"x": 1.0}, ddf=ddf) == m.contrast_test({"x": 1.0}, ddf=ddf)
