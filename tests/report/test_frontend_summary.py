"""The printed summary: parsed back, its numbers match the fit and lme4's values.

Nothing is compared against a stored copy of our own output: every number is read from
the text and checked against the fit's attributes and, for the reference cases, against
lme4 (``reference.json``) within the precision it is printed with.
"""

from __future__ import annotations

import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from reference_data import CASE_NAMES, case_data, case_formula, lme4_name, load_reference

import reml_engine as rl
from reml_engine.report.render import format_number

REFERENCE = load_reference()
#: lme4's estimates agree with the engine's to about 1e-6 relative at the optimum.
LME4_RTOL = 1e-5
NUMBER = r"-?(?:\d+\.\d+(?:e[+-]\d+)?|\d+|NaN)"


def printed_tolerance(text: str) -> float:
    """Half a unit in the last printed digit."""
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def assert_printed(text: str, *values: float) -> None:
    """The printed number is each value, rounded as printed (values: the fit, lme4)."""
    printed = float(text)
    for value in values:
        tol = printed_tolerance(text) + LME4_RTOL * abs(value)
        assert abs(printed - value) <= tol, (text, value)


def section(summary: str, title: str) -> list[str]:
    """The lines of a section, from its title to the next blank line."""
    lines = summary.splitlines()
    start = lines.index(title)
    end = next((k for k in range(start + 1, len(lines)) if not lines[k].strip()), len(lines))
    return lines[start + 1 : end]


def table(lines: list[str]) -> dict[str, list[str]]:
    """Rows of a printed table by label: the numbers at the end of each line."""
    rows = {}
    for line in lines[1:]:
        numbers = re.findall(rf"(?<![\w(.])({NUMBER})(?=\s|$)", line)
        label = line[: line.find(numbers[0])].strip() if numbers else line.strip()
        rows[label] = numbers
    return rows


@pytest.fixture(scope="module")
def fits():
    return {name: rl.lmer(case_formula(name), case_data(name)) for name in CASE_NAMES}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reml_summary_numbers_match_fit_and_lme4(fits, name):
    m = fits[name]
    ref = REFERENCE[name]["reml"]
    text = m.summary()
    assert text.startswith("Linear mixed model fit by REML")
    assert f"Formula: {case_formula(name)}" in text
    crit = re.search(rf"REML criterion at convergence: ({NUMBER})", text).group(1)
    assert_printed(crit, m.criterion, ref["criterion"])

    random = table(section(text, "Random effects:"))
    group_row = next(v for k, v in random.items() if k.startswith(str(m.group_name)) and "(Intercept)" in k)
    resid_row = random["Residual"]
    assert_printed(group_row[0], m.var_group, ref["var_group"])
    assert_printed(group_row[1], np.sqrt(m.var_group), np.sqrt(ref["var_group"]))
    assert_printed(resid_row[0], m.sigma2, ref["sigma2"])
    assert_printed(resid_row[1], np.sqrt(m.sigma2), np.sqrt(ref["sigma2"]))
    obs = re.search(r"Number of obs: (\d+), groups:\s+(\S+), (\d+)", text)
    assert int(obs.group(1)) == m.nobs == ref["nobs"]
    assert obs.group(2) == m.group_name
    assert int(obs.group(3)) == m.ngroups == ref["ngroups"]

    # lmerTest's layout: Estimate, Std. Error, df, t value, Pr(>|t|), stars, legend.
    lines = section(text, "Fixed effects:")
    assert lines[0].split() == ["Estimate", "Std.", "Error", "df", "t", "value", "Pr(>|t|)"]
    fixed = table(lines[: lines.index("---")] if "---" in lines else lines)
    assert len(fixed) == len(m.fixef)
    df_ref = ref["df_satterthwaite"]
    for k, (coef, (est, se, df, t, *_)) in enumerate(fixed.items()):
        lme4 = lme4_name(coef)
        assert_printed(est, m.fixef[coef], ref["fixef"][lme4])
        assert_printed(se, m.se[coef], ref["se"][lme4])
        assert_printed(df, df_ref[lme4] if isinstance(df_ref, dict) else df_ref[k])
        assert_printed(t, ref["fixef"][lme4] / ref["se"][lme4])

    resid_quantiles = table(section(text, "Scaled residuals:"))[""]
    y = case_data(name)[m.response_name].to_numpy()
    # Conditional residuals from lme4's fitted values where we have them.
    expected = np.quantile(m.resid.dropna() / np.sqrt(m.sigma2), [0, 0.25, 0.5, 0.75, 1])
    for printed, value in zip(resid_quantiles, expected, strict=True):
        assert_printed(printed, value)
    head = np.asarray(ref["fitted_head"])
    np.testing.assert_allclose(m.resid[: len(head)], y[: len(head)] - head, atol=1e-6)


@pytest.mark.parametrize("name", ["sleepstudy", "sim_unbalanced", "seed_x"])
def test_correlation_of_fixed_effects_matches_lme4(fits, name):
    m = fits[name]
    ref = REFERENCE[name]["reml"]
    lines = section(m.summary(), "Correlation of Fixed Effects:")
    names = list(m.fixef.index)
    lme4_order = list(ref["fixef"])  # vcov rows and columns are in lme4's order
    pos = [lme4_order.index(lme4_name(n)) for n in names]
    vcov = np.asarray(ref["vcov"], dtype=float)[np.ix_(pos, pos)]
    sd = np.sqrt(np.diag(vcov))
    corr = vcov / np.outer(sd, sd)
    for i, line in enumerate(lines[1:], start=1):
        values = re.findall(r"-?\d\.\d{3}", line[len(names[i]):])
        assert len(values) == i
        for j, v in enumerate(values):
            assert abs(float(v) - corr[i, j]) <= 0.0005 + 1e-6


def test_ml_summary_criterion_table_matches_lme4():
    m = rl.lmer(case_formula("sleepstudy"), case_data("sleepstudy"), REML=False)
    ref = REFERENCE["sleepstudy"]["ml"]
    text = m.summary()
    assert text.startswith("Linear mixed model fit by maximum likelihood")
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.split() == ["AIC", "BIC", "logLik", "deviance", "df.resid"])
    aic, bic, loglik, deviance, df_resid = lines[k + 1].split()
    assert_printed(aic, ref["aic"])
    assert_printed(bic, ref["bic"])
    assert_printed(loglik, ref["loglik"])
    assert_printed(deviance, ref["criterion"])
    assert int(df_resid) == ref["nobs"] - len(ref["fixef"]) - 2


def test_notes_follow_the_summary(fits):
    """The seed case: lme4 stops at the boundary (20.593), the global optimum is 16.173."""
    m = fits["seed_x"]
    text = m.summary()
    notes = " ".join(" ".join(section(text, "Notes:")).split())
    for note in m.notes:
        assert " ".join(note.split()) in notes
    found = {round(float(v), 3) for v in re.findall(r"criterion (\d+\.\d{4})", notes)}
    assert round(REFERENCE["seed_x"]["reml_lme4_default"]["criterion"], 3) in found
    assert round(REFERENCE["seed_x"]["reml"]["criterion"], 3) in found
    assert "2 local minima" in text


def test_boundary_fit_prints_its_reason():
    m = rl.lmer(case_formula("dyestuff2"), case_data("dyestuff2"))
    text = m.summary()
    assert "boundary (singular) fit" in text
    flat = " ".join(text.split())
    assert " ".join(m.boundary.message.split()) in flat


def test_varcorr_matches_lme4(fits):
    m = fits["sleepstudy"]
    ref = REFERENCE["sleepstudy"]["reml"]
    vc = m.varcorr()
    assert list(vc.index) == ["Subject", "Residual"]
    np.testing.assert_allclose(vc["variance"], [ref["var_group"], ref["sigma2"]], rtol=LME4_RTOL)
    np.testing.assert_allclose(vc["sd"], np.sqrt([ref["var_group"], ref["sigma2"]]), rtol=LME4_RTOL)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.text, self.balanced = [], [], True

    def handle_starttag(self, tag, attrs):
        if tag not in ("br",):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        self.balanced &= bool(self.stack) and self.stack.pop() == tag

    def handle_data(self, data):
        self.text.append(data)


def test_html_has_the_sections_and_numbers(fits):
    m = fits["sleepstudy"]
    page = m._repr_html_()
    parser = _Collector()
    parser.feed(page)
    assert parser.balanced and not parser.stack
    text = " ".join(parser.text)
    for caption in ["Scaled residuals", "Random effects", "Fixed effects", "Correlation of fixed effects"]:
        assert caption in text
    for value in [m.fixef["Days"], m.se["Days"], m.var_group, m.sigma2, m.criterion]:
        assert format_number(value) in text


@pytest.mark.parametrize(
    "value, printed",
    [(251.40510485, "251.4051"), (-0.00012345, "-1.234e-04"), (2.5e12, "2.500e+12"), (0.0, "0.0000"), (7, "7")],
)
def test_format_number(value, printed):
    assert format_number(value) == printed


def test_readme_quick_start_is_what_the_library_prints_and_what_lme4_says():
    """The README quotes the seed summary (checked line by line) and lme4's local fit
    (checked against reference.json's default-start fit)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):]
    block = re.search(r"```text\n(.*?)```", quick, re.DOTALL).group(1)
    summary = " ".join(rl.lmer("y ~ x + (1|f)", data=rl.load_seed()).summary().split())
    for part in block.split("..."):
        assert " ".join(part.split()) in summary
    lme4 = REFERENCE["seed_x"]["reml_lme4_default"]
    assert f"slope of x of {lme4['fixef']['x']:.4f}" in " ".join(quick.split())
    assert f"(SE {lme4['se']['x']:.4f})" in quick
    assert f"REML criterion {lme4['criterion']:.3f}" in " ".join(quick.split())
    assert lme4["singular"] and "boundary (singular) fit" in lme4["messages"]


#: A summary note is short: at most this many lines at the notes' width (the long form is
#: m.explain()).
MAX_NOTE_LINES = 3


@pytest.mark.parametrize("case", [k for k in REFERENCE if not k.startswith("_")])
@pytest.mark.parametrize("REML", [True, False])
def test_summary_notes_are_short_and_point_to_explain(case, REML):
    from reml_engine.report.render import EXPLAIN_LINE, NOTE_WIDTH

    m = rl.lmer(case_formula(case), case_data(case), REML=REML)
    for note in m.notes:
        lines = textwrap.wrap(note, NOTE_WIDTH - 2, break_long_words=False, break_on_hyphens=False)
        assert len(lines) <= MAX_NOTE_LINES, note
    if m.notes:
        text = m.summary()
        assert text.rstrip().endswith(EXPLAIN_LINE)
        assert "m.explain()" in " ".join(parse_html_text(m._repr_html_()))
    # What a note leaves out, explain() says: why lme4's fit differs, in full.
    if not m.lme4_default.is_global:
        assert "m.explain() says why" in " ".join(m.notes)
        assert "Why:" in m.explain()


def parse_html_text(page: str) -> list[str]:
    parser = _Collector()
    parser.feed(page)
    return parser.text
