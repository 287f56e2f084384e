"""m.explain() and m.summary(ddf=...) (issue 14): the explanation states what the fit holds
and agrees with lme4's optima (tests/data/reference/reference.json); the summary's ddf
choices print what lmerTest prints (tests/data/r/make_summary_ddf_reference.R)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from reference_data import load_reference
from test_result_names import _section_tokens

import reml_engine as rl

REF = load_reference()
SUMMARIES = json.loads((Path(__file__).parents[1] / "data" / "reference" / "summary_ddf_reference.json").read_text())
CASES = {
    "sleepstudy_reml": ("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy),
    "orthodont_reml": ("distance ~ age + Sex + (1|Subject)", rl.datasets.orthodont),
}


def paragraphs(text: str) -> dict[str, str]:
    """The explanation's paragraphs by their first word, unwrapped."""
    out = {}
    for block in text.strip().split("\n\n"):
        flat = " ".join(block.split())
        out.setdefault(flat.split(":")[0].split(" (")[0], flat)
    return out


@pytest.fixture(scope="module")
def seed_reml():
    return rl.lmer("y ~ x + (1|f)", rl.load_seed())


def test_explain_two_optima_and_lme4s_local_one(seed_reml):
    text = seed_reml.explain()
    assert all(len(line) <= 88 for line in text.splitlines())
    p = paragraphs(text)
    assert set(p) == {"Fitted", "Optima", "Boundary", "lme4", "Compound symmetry"}
    # lme4's two minima (each reached by lmer from a start next to it).
    lme4 = REF["seed_x"]["reml"]["local_optima"]["criterion"]
    assert "has 2 local minima" in p["Optima"]
    assert f"REML criterion {min(lme4):.4f}" in p["Optima"] and f"REML criterion {max(lme4):.4f}" in p["Optima"]
    assert "Boundary: none" in p["Boundary"]
    assert f"(REML criterion {max(lme4) - min(lme4):.4f} worse)" in p["lme4"] and "the boundary var_group = 0" in p["lme4"]
    assert f"start = list(theta = {REF['seed_x']['reml']['theta']:.4f}" in p["lme4"]
    assert f"ICC = {seed_reml.compound_symmetry.icc:.4g}" in p["Compound symmetry"]


def test_explain_boundary_names_its_reason():
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed(), REML=False)
    assert REF["seed_x"]["ml"]["singular"]  # lme4: var_group = 0 as well
    p = paragraphs(m.explain())
    assert p["Boundary"].startswith("Boundary (negative_icc: the data point to a negative within-group correlation)")
    assert " ".join(m.boundary.message.split()) in p["Boundary"]
    assert "reaches this same optimum" in p["lme4"]
    assert "Compound symmetry" not in p  # the boundary's reason says it


def test_explain_one_interior_optimum():
    m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())
    p = paragraphs(m.explain())
    assert "has one local minimum" in p["Optima"]
    assert re.search(r"var_group = 1378 > 0", p["Boundary"])
    assert "reaches this same optimum" in p["lme4"]
    assert m.explain() == m.explain()  # a string built from the fit, not a changed fit


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("ddf", ["Satterthwaite", "Kenward-Roger", "lme4"])
def test_summary_ddf_prints_what_lmertest_prints(name, ddf):
    formula, data = CASES[name]
    m = rl.lmer(formula, data())
    ours, theirs = m.summary(ddf=ddf), SUMMARIES[name][ddf]
    first = ours.splitlines()[0]
    if ddf == "lme4":
        assert first.startswith("Linear mixed model fit by REML [") and "t-tests" not in first
    else:
        assert first.startswith(f"Linear mixed model fit by REML. t-tests use {ddf}'s method")
    assert _section_tokens(ours, "Fixed effects:") == _section_tokens(theirs, "Fixed effects:")


def test_summary_kenward_roger_uses_the_adjusted_standard_errors():
    """seed: pbkrtest's adjusted SE of x (0.04187) differs from the model's (0.04091)."""
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    lines = {tokens[0]: tokens for tokens in _section_tokens(m.summary(ddf="Kenward-Roger"), "Fixed effects:")[2:4]}
    ref = REF["seed_x"]["reml"]
    assert float(lines["x"][2]) == pytest.approx(ref["se_kenward_roger"]["x"], abs=5e-6)
    assert float(lines["x"][3]) == pytest.approx(ref["df_kenward_roger"]["x"], abs=5e-3)


@pytest.mark.parametrize("ddf", ["F", "Satterthwait", None, 3])
def test_summary_ddf_is_checked(seed_reml, ddf):
    with pytest.raises(rl.ModelDataError, match="'Satterthwaite', 'Kenward-Roger', 'lme4'"):
        seed_reml.summary(ddf=ddf)


def test_summary_accepts_the_engines_names(seed_reml):
    assert seed_reml.summary("kenward-roger") == seed_reml.summary("Kenward-Roger")
    assert seed_reml.summary() == seed_reml.summary("satterthwaite")
    assert "t-tests use residual df method" in seed_reml.summary("residual")


def test_sigma_is_lme4s(seed_reml):
    assert seed_reml.sigma == pytest.approx(REF["seed_x"]["reml"]["sigma2"] ** 0.5, rel=1e-5)
