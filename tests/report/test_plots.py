"""Profile and caterpillar plots, rendered with the Agg backend: what is drawn is what the
fit (and lme4) says."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, case_formula, load_reference

import reml_engine as rl

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: lme4's optimizer precision (conditional modes and variances).
RTOL_LME4 = 1e-5


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("case", ["seed_x", "sim_contextual", "sleepstudy", "dyestuff2"])
def test_profile_plot_marks_exactly_the_fits_optima(case):
    m = rl.lmer(case_formula(case), case_data(case))
    plot = m.plot_profile()
    assert [(o.tau, o.criterion, o.is_global, o.is_lme4_default) for o in plot.optima] == [
        (o.tau, o.criterion, o.is_global, o.is_lme4_default) for o in m.optima
    ]
    drawn = np.asarray(plot.optima_artist.get_offsets(), dtype=float)
    np.testing.assert_allclose(drawn[:, 0], [o.icc for o in m.optima], rtol=1e-14, atol=0)
    np.testing.assert_allclose(drawn[:, 1], [o.criterion for o in m.optima], rtol=1e-14, atol=0)
    assert plot.lme4_default.tau == m.lme4_default.tau
    assert plot.compound_symmetry.icc == pytest.approx(m.compound_symmetry.icc, rel=1e-14)
    max_size = m.design.groups.value_counts().max()
    assert plot.ax.get_xlim() == pytest.approx((-1.0 / (max_size - 1.0), 1.0))
    # The drawn curve passes through every marked optimum.
    x, y = plot.ax.lines[0].get_data()
    for o in m.optima:
        at = np.flatnonzero(np.isclose(x, o.icc, rtol=0, atol=1e-15))
        assert at.size and y[at[0]] == pytest.approx(o.criterion, rel=1e-12)
    plot.figure.canvas.draw()  # renders without error


def test_seed_profile_shows_lme4s_boundary_stop_and_the_global_interior_optimum():
    ref = load_reference()["seed_x"]
    plot = rl.lmer("y ~ x + (1|f)", rl.load_seed()).plot_profile()
    assert plot.lme4_default.tau == 0.0
    assert plot.lme4_default.criterion == pytest.approx(ref["reml_lme4_default"]["criterion"], rel=1e-6)
    assert plot.profile.global_optimum.criterion == pytest.approx(ref["reml"]["criterion"], rel=1e-6)
    assert plot.compound_symmetry.icc == pytest.approx(ref["gls_cs"]["rho"], rel=1e-5)


def test_ml_profile_of_a_reml_fit_marks_the_ml_fits_optima():
    data = case_data("seed_x")
    ml = rl.lmer("y ~ x + (1|f)", data, REML=False)
    plot = rl.lmer("y ~ x + (1|f)", data).plot_profile(REML=False)
    assert [o.tau for o in plot.optima] == pytest.approx([o.tau for o in ml.optima], rel=1e-10)
    assert [o.criterion for o in plot.optima] == pytest.approx([o.criterion for o in ml.optima], rel=1e-12)
    assert [o.is_lme4_default for o in plot.optima] == [o.is_lme4_default for o in ml.optima]
    assert "deviance" in plot.ax.get_ylabel()


def test_caterpillar_plot_draws_lme4s_modes_and_intervals():
    ref = load_reference()["sleepstudy"]["reml"]
    m = rl.lmer(case_formula("sleepstudy"), case_data("sleepstudy"))
    ax = m.plot_ranef()
    container = ax.containers[0]
    modes = np.asarray(container.lines[0].get_xdata(), dtype=float)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    expected_modes = np.array([ref["ranef"][label] for label in labels])
    np.testing.assert_allclose(modes, expected_modes, rtol=RTOL_LME4)
    assert np.all(np.diff(modes) >= 0)  # sorted
    segments = container.lines[2][0].get_segments()
    half_widths = np.array([(seg[1][0] - seg[0][0]) / 2 for seg in segments])
    expected = 1.959963984540054 * np.sqrt([ref["ranef_condvar"][label] for label in labels])
    np.testing.assert_allclose(half_widths, expected, rtol=RTOL_LME4)


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    with pytest.raises(ImportError, match=r"reml_engine\[plot\]"):
        m.plot_profile()


def test_a_compound_symmetry_optimum_at_the_limit_is_pointed_at():
    # Pairs that sum to zero: the within-pair correlation is -1, the limit of V.
    rng = np.random.default_rng(0)
    half = rng.normal(size=8)
    y = np.column_stack([half, -half]).ravel()
    data = pd.DataFrame({"y": y, "g": np.repeat(np.arange(8), 2)})
    m = rl.lmer("y ~ 1 + (1|g)", data)
    assert m.compound_symmetry.at_limit
    plot = m.plot_profile()
    assert plot.compound_symmetry.kind == "limit"
    assert any("without bound" in text.get_text() for text in plot.ax.texts)
    low, _ = plot.ax.get_ylim()
    assert low <= min(o.criterion for o in m.optima)
    plot.figure.canvas.draw()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_seed_profile_shows_the_global_optimum_apart_on_a_log_tau_panel():
    """The seed's global optimum (ICC 0.9995, tau ~ 2000 in lme4's fit) sits against ICC = 1;
    the log10(tau) panel draws it away from the edges, on the curve, its line labelled."""
    ref = load_reference()["seed_x"]["reml"]
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    plot = m.plot_profile()
    panel = plot.log_tau_ax
    best = m.global_optimum
    assert best.icc > 0.999
    low, high = panel.get_xlim()
    assert low + 1.0 < np.log10(best.tau) < high - 1.0
    tau_lme4 = ref["var_group"] / ref["sigma2"]
    assert np.log10(best.tau) == pytest.approx(np.log10(tau_lme4), abs=1e-3)
    drawn = np.asarray(panel.collections[0].get_offsets(), dtype=float)
    np.testing.assert_allclose(drawn, [[np.log10(o.tau), o.criterion] for o in m.optima if o.tau > 0], rtol=1e-14)
    x, y = panel.lines[0].get_data()
    at = np.flatnonzero(np.isclose(x, np.log10(best.tau), rtol=0, atol=1e-12))
    assert at.size and y[at[0]] == pytest.approx(ref["criterion"], rel=1e-6)
    labels = panel.get_legend_handles_labels()[1]
    assert any(label.startswith("global optimum: tau = ") for label in labels)
    # The boundary var_group = 0 is off the log axis: a line at lme4's default-start criterion.
    boundary = load_reference()["seed_x"]["reml_lme4_default"]["criterion"]
    assert any(label.endswith(f"{boundary:.3f}") for label in labels)


@pytest.mark.parametrize("case", ["seed_x", "dyestuff", "dyestuff2", "sim_contextual"])
def test_profile_labels_stay_inside_their_panel_and_apart(case):
    plot = rl.lmer(case_formula(case), case_data(case)).plot_profile()
    plot.figure.canvas.draw()
    renderer = plot.figure.canvas.get_renderer()
    for ax in (plot.ax, plot.log_tau_ax):
        frame = ax.get_window_extent(renderer)
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
        for box in boxes:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        for i in range(len(boxes)):
            for j in range(i):
                assert not _overlap(boxes[i], boxes[j])


def test_every_plot_returns_a_plot_and_old_axes_calls_still_work():
    from reml_engine.report.plots import Plot

    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    profile, ranef = m.plot_profile(), m.plot_ranef()
    assert isinstance(profile, Plot) and isinstance(ranef, Plot)
    for plot in (profile, ranef):
        assert isinstance(plot.figure, matplotlib.figure.Figure) and plot.ax in plot.figure.axes
    # plot_ranef returned the Axes before: the Axes' calls still reach them.
    assert ranef.figure is ranef.ax.figure and ranef.get_title() == ranef.ax.get_title()
    assert ranef.containers is ranef.ax.containers
    # With an ax given: only that panel, unless a log-tau ax is given too.
    fig, (left, right) = plt.subplots(1, 2)
    assert m.plot_profile(ax=left).log_tau_ax is None
    assert m.plot_profile(ax=left, log_tau_ax=right).log_tau_ax is right
