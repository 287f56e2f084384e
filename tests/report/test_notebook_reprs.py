"""What a notebook shows of each result: well-formed HTML whose numbers are the result's own
(those are checked against lme4/lmerTest/RLRsim elsewhere; the fit's df and p-values are
checked here against lmerTest's printed summary too), and a short ``repr`` that never
dumps the arrays a result holds (a profile curve's thousand points, a bootstrap's
replicates)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.report.notebook import MAX_HTML_ROWS, cell_text

#: Longest ``repr`` of a result: a line or two (the anova table's repr prints its rows).
MAX_REPR_CHARS = 400
#: Longest HTML of a small result (a test, a plot's optima): no arrays in it.
MAX_SMALL_HTML_CHARS = 6_000
#: Printed numbers have 4 decimals or 4 significant digits.
PRINTED_RTOL = 1e-3
PRINTED_ATOL = 1e-4
SUMMARIES = json.loads((Path(__file__).parents[1] / "data" / "reference" / "summary_ddf_reference.json").read_text())


class _Tables(HTMLParser):
    """The tables of an HTML fragment (header cells; rows as label + cells), its text, and
    whether every tag opened was closed in order."""

    VOID = {"br"}

    def __init__(self, page: str):
        super().__init__()
        self.stack, self.balanced, self.text = [], True, []
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append({"header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag):
        self.balanced &= bool(self.stack) and self.stack.pop() == tag
        if tag in ("th", "td") and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            in_head = "thead" in self.stack
            table = self.tables[-1]
            (table["header"].extend if in_head else table["rows"].append)(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> _Tables:
    parsed = _Tables(page)
    assert parsed.balanced and not parsed.stack, page[:300]
    return parsed


def table_with(parsed: _Tables, *columns: str) -> pd.DataFrame:
    """The first table whose header holds ``columns``, as strings indexed by row label."""
    for table in parsed.tables:
        if all(c in table["header"] for c in columns):
            rows = [r for r in table["rows"] if len(r) == len(table["header"])]
            return pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows], columns=table["header"][1:])
    raise AssertionError(f"no table with {columns}: {[t['header'] for t in parsed.tables]}")


def assert_shown(cell: str, value) -> None:
    """A cell shows ``value``: as the number it prints (to its printed digits) or as text."""
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        assert cell == cell_text(value)
        return
    assert float(cell) == pytest.approx(float(value), rel=PRINTED_RTOL, abs=PRINTED_ATOL), (cell, value)


def assert_fields(parsed: _Tables, obj, fields) -> None:
    row = table_with(parsed, *fields).iloc[0]
    for name in fields:
        assert_shown(row[name], getattr(obj, name))


@pytest.fixture(scope="module")
def seed_fit():
    return rl.lmer("y ~ x + (1|f)", rl.load_seed())


@pytest.fixture(scope="module")
def sleep_fit():
    return rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())


def _printed_fixed_effects(summary: str) -> pd.DataFrame:
    block = summary[summary.index("Fixed effects:"):].splitlines()[2:]
    rows = {}
    for line in block:
        if not line.strip() or line.startswith("---"):
            break
        name, *values = line.split()
        rows[name] = values
    return pd.DataFrame.from_dict(rows, orient="index").iloc[:, :5].set_axis(
        ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"], axis=1)


@pytest.mark.parametrize("ddf, title", [("Satterthwaite", "Satterthwaite's"), ("Kenward-Roger", "Kenward-Roger's")])
def test_fit_html_shows_lmerTests_df_and_names_the_method(sleep_fit, ddf, title):
    from reml_engine.report.render import render_html, summary_ddf

    page = render_html(sleep_fit, summary_ddf(ddf))
    parsed = parse(page)
    assert f"t-tests use {title} method" in " ".join(parsed.text)
    shown = table_with(parsed, "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)")
    lmertest = _printed_fixed_effects(SUMMARIES["sleepstudy_reml"][ddf])
    for name in ("(Intercept)", "Days"):
        for column in ("Estimate", "Std. Error", "df"):
            printed = lmertest.loc[name, column]
            decimals = len(printed.split(".")[1]) if "." in printed else 0
            assert float(shown.loc[name, column]) == pytest.approx(float(printed), abs=0.51 * 10.0**-decimals)
        assert float(shown.loc[name, "Pr(>|t|)"]) < 2e-16  # lmerTest prints "<2e-16"


def test_fit_html_is_the_default_repr_and_matches_the_fit(seed_fit):
    parsed = parse(seed_fit._repr_html_())
    assert "t-tests use Satterthwaite's method" in " ".join(parsed.text)
    shown = table_with(parsed, "Estimate", "df", "Pr(>|t|)")
    table = seed_fit.coef_table()
    for name in seed_fit.fixef.index:
        assert_shown(shown.loc[name, "Estimate"], seed_fit.fixef[name])
        assert_shown(shown.loc[name, "df"], table.loc[name, "df"])
        assert_shown(shown.loc[name, "Pr(>|t|)"], table.loc[name, "p"])
    random = table_with(parsed, "Variance", "Std.Dev.")
    assert_shown(random.loc["f", "Variance"], seed_fit.var_group)
    assert_shown(random.loc["Residual", "Variance"], seed_fit.sigma2)
    # The scaled residuals are rounded as the text summary rounds them.
    residuals = table_with(parsed, "Min", "Median", "Max")
    assert residuals.iloc[0]["Median"] == "0.0000"


def test_terms_fit_html_has_a_row_per_term_and_satterthwaite_df():
    m = rl.lmer("strength ~ 1 + (1|batch) + (1|batch:cask)", rl.datasets.pastes())
    parsed = parse(m._repr_html_())
    text = " ".join(parsed.text)
    assert "t-tests use Satterthwaite's method" in text and "Number of obs: 60" in text
    random = table_with(parsed, "Variance", "Std.Dev.")
    for name, variance in zip(m.term_names, m.tau * m.sigma2, strict=True):
        assert_shown(random.loc[name, "Variance"], variance)
    fixed = table_with(parsed, "Estimate", "df", "Pr(>|t|)")
    table = m.coef_table()
    assert_shown(fixed.loc["(Intercept)", "df"], table.loc["(Intercept)", "df"])
    for obj in (m, *m.optima, m.opt_summary):
        assert len(repr(obj)) <= MAX_REPR_CHARS, (type(obj).__name__, len(repr(obj)))


def test_variance_test_html_and_repr(seed_fit):
    test = seed_fit.test_random_intercept("exact", n_sim=2000, seed=1)
    assert test.null_sample.size == 2000
    parsed = parse(test._repr_html_())
    assert_fields(parsed, test, ("statistic", "p_value", "method", "n_sim", "mc_se"))
    assert len(repr(test)) <= MAX_REPR_CHARS and "null_sample" not in repr(test)
    assert len(test._repr_html_()) <= MAX_SMALL_HTML_CHARS


def test_f_and_t_test_html(sleep_fit):
    f = sleep_fit.contrast_test([[0, 1]])
    assert_fields(parse(f._repr_html_()), f, ("sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value"))
    from reml_engine.inference.fixed_tests import contrast_t

    t = contrast_t(sleep_fit, [0, 1])
    assert_fields(parse(t._repr_html_()), t, ("estimate", "se", "df", "t_value", "p_value", "lower", "upper"))
    assert len(repr(f)) <= MAX_REPR_CHARS and len(repr(t)) <= MAX_REPR_CHARS


def test_hausman_and_mundlak_html(seed_fit):
    seed = rl.load_seed()
    h = rl.hausman("y ~ x + (1|f)", seed)
    parsed = parse(h._repr_html_())
    assert_fields(parsed, h, ("statistic", "df", "p_value", "optimum", "tau"))
    slopes = table_with(parsed, "b_within", "b_random", "difference")
    assert_shown(slopes.loc["x", "b_within"], h.b_within["x"])
    assert_shown(slopes.loc["x", "b_random"], h.b_random["x"])
    m = rl.mundlak("y ~ x + (1|f)", seed)
    parsed = parse(m._repr_html_())
    assert_fields(parsed, m, ("statistic", "df", "f_statistic", "den_df", "p_value"))
    effects = table_with(parsed, "estimate", "se")
    term = m.terms[0]
    assert_shown(effects.loc[term, "estimate"], m.estimates[term])
    assert_shown(effects.loc[term, "se"], np.sqrt(m.vcov.loc[term, term]))
    for result in (h, m):
        assert len(repr(result)) <= MAX_REPR_CHARS
        assert len(result._repr_html_()) <= MAX_SMALL_HTML_CHARS


def test_anova_html_shows_the_table_and_notes(seed_fit):
    seed = rl.load_seed()
    result = rl.anova(rl.lmer("y ~ 1 + (1|f)", seed), seed_fit)
    parsed = parse(result._repr_html_())
    shown = table_with(parsed, "npar", "AIC", "deviance")
    for label, row in result.table.iterrows():
        for column in ("npar", "AIC", "deviance"):
            assert_shown(shown.loc[str(label), column], row[column])
    text = " ".join(parsed.text)
    assert all(note[:40] in text for note in result.notes)
    assert len(repr(result)) <= MAX_REPR_CHARS + len(str(result))


def test_profile_plot_shows_its_optima_not_its_curve(seed_fit):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = seed_fit.plot_profile()
    try:
        assert len(plot.profile.icc) > 500
        text = repr(plot)
        assert len(text) <= MAX_REPR_CHARS and "array" not in text
        page = plot._repr_html_()
        assert len(page) <= MAX_SMALL_HTML_CHARS
        optima = table_with(parse(page), "tau", "icc", "criterion", "is_global")
        for k, o in enumerate(seed_fit.optima):
            row = optima.iloc[k]
            assert_shown(row["tau"], o.tau)
            assert_shown(row["criterion"], o.criterion)
            assert_shown(row["is_global"], o.is_global)
        profile = plot.profile
        assert len(repr(profile)) <= MAX_REPR_CHARS and len(profile._repr_html_()) <= MAX_SMALL_HTML_CHARS
        ranef = seed_fit.plot_ranef()
        assert isinstance(ranef, type(plot).__mro__[1])  # one kind of result: a Plot
        assert len(repr(ranef)) <= MAX_REPR_CHARS
        parse(ranef._repr_html_())
    finally:
        plt.close("all")


def test_profile_point_and_bootstrap_reprs(seed_fit):
    point = seed_fit.profile_criterion(tau=1.0)
    parsed = parse(point._repr_html_())
    assert_fields(parsed, point, ("tau", "icc", "criterion", "pwrss", "sigma2", "var_group"))
    assert len(repr(point)) <= MAX_REPR_CHARS
    boot = seed_fit.bootstrap(n_boot=200, seed=1, progress=False)
    assert len(repr(boot)) <= MAX_REPR_CHARS
    intervals = table_with(parse(boot._repr_html_()), "lower", "upper")
    expected = boot.percentile_intervals()
    for name in expected.index:
        assert_shown(intervals.loc[name, "lower"], expected.loc[name, "lower"])
        assert_shown(intervals.loc[name, "upper"], expected.loc[name, "upper"])


def test_many_fits_html_shows_the_first_rows_and_counts_the_rest():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(12), 4)
    X = np.column_stack([np.ones(48), rng.standard_normal(48)])
    k = MAX_HTML_ROWS + 5
    Y = rng.standard_normal((48, k)) + rng.standard_normal((12, k))[groups]
    fits = rl.fit(X, Y, groups)
    page = fits._repr_html_()
    parsed = parse(page)
    shown = table_with(parsed, "tau", "var_group", "sigma2", "criterion")
    assert len(shown) == MAX_HTML_ROWS
    assert "5 more rows" in " ".join(parsed.text)
    for name in shown.index[:3]:
        fit = fits[name]
        assert_shown(shown.loc[name, "tau"], fit.tau)
        assert_shown(shown.loc[name, "sigma2"], fit.sigma2)
        assert_shown(shown.loc[name, "criterion"], fit.criterion)
    assert len(repr(fits)) <= MAX_REPR_CHARS


def test_reprs_of_fits_and_optima_are_short(seed_fit, sleep_fit):
    for obj in (seed_fit, sleep_fit, *seed_fit.optima, seed_fit.compound_symmetry, seed_fit.opt_summary):
        assert len(repr(obj)) <= MAX_REPR_CHARS, (type(obj).__name__, len(repr(obj)))


def test_text_is_escaped():
    from reml_engine.report.notebook import html_notes, html_table

    page = html_table(pd.DataFrame({"<b>": ["<script>"]}, index=["a&b"])) + html_notes(["x < 1 & y > 2"])
    parsed = parse(page)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert re.search(r"x &lt; 1 &amp; y &gt; 2", page)
    assert table_with(parsed, "<b>").loc["a&b", "<b>"] == "<script>"


def test_marginal_means_and_contrasts_html_show_their_tables():
    oats = rl.lmer("yield ~ C(nitro) * Variety + (1|Block)", rl.datasets.oats())
    emm = oats.emmeans("Variety", by="nitro")
    for result, columns in ((emm, ("emmean", "se", "df")), (emm.pairs(adjust="holm"), ("estimate", "se", "p"))):
        parsed = parse(result._repr_html_())
        assert parsed.balanced
        shown = table_with(parsed, *columns)
        for label, row in result.table.iterrows():
            for column in columns:
                assert_shown(shown.loc[", ".join(map(str, label)), column], row[column])
        text = " ".join(parsed.text)
        assert all(note[:40] in text for note in result.notes)
    assert "by nitro" in emm._repr_html_()
