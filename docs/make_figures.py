"""Make the figures of the docs and the output blocks of the seed walkthrough.

Usage::

    python docs/make_figures.py [OUTDIR]

Writes ``OUTDIR/figures/*.png`` and ``OUTDIR/walkthrough_seed.md``. ``OUTDIR`` defaults to
the ``docs`` folder itself, which refreshes the committed figures and walkthrough in place;
CI runs it into a temporary folder (``tests/docs/test_docs_script.py``) and compares.

The walkthrough is a template that this script runs: every fenced ``python`` block between
``<!-- run -->`` and ``<!-- /run -->`` is executed, in order and in one namespace, and the
``text`` block that follows it is replaced by what the code printed. So the code a reader
sees is the code that made the output next to it. The figures are made by the functions
below, each from the library's own plotting or profile functions.

matplotlib is needed (``pip install 'reml_engine[plot]'``); the Agg backend is used, so no
display is required.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import reml_engine as rl  # noqa: E402

DOCS = Path(__file__).resolve().parent
WALKTHROUGH = "walkthrough_seed.md"

#: Resolution of the saved figures: small files that still read well on a web page.
FIGURE_DPI = 80
#: Size of the single-panel figures, in inches.
FIGURE_SIZE = (6.4, 4.0)
#: log10(tau) range of the figures drawn against tau (the seed's optima are at 0 and ~2000).
LOG10_TAU_RANGE = (-3.0, 6.0)
#: Points of the curves drawn against log10(tau).
CURVE_POINTS = 400

RUN_BLOCK = re.compile(
    r"(<!-- run -->\n```python\n)(?P<code>.*?)(```\n+```text\n)(?P<output>.*?)(```\n<!-- /run -->)",
    re.DOTALL,
)


# -- figures -------------------------------------------------------------------------------


def _tau_grid() -> np.ndarray:
    return np.logspace(*LOG10_TAU_RANGE, CURVE_POINTS)


def _save(fig, outdir: Path, name: str) -> Path:
    path = outdir / "figures" / name
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def figure_seed_data(outdir: Path) -> Path:
    """The seed data with the within, between and pooled slopes."""
    seed = rl.load_seed()
    table = rl.compare_fe_re("y ~ x + (1|f)", seed).set_index("estimator")
    beta_w = table.loc["within (fixed effects)", "coef"]
    beta_b = table.loc["between", "coef"]
    beta_ols = table.loc["pooled OLS", "coef"]
    means = seed.groupby("f")[["x", "y"]].mean()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for k, (level, rows) in enumerate(seed.groupby("f")):
        colour = f"C{k}"
        ax.scatter(rows["x"], rows["y"], color=colour, s=25, label=f"group {level}")
        xs = np.array([rows["x"].min() - 0.5, rows["x"].max() + 0.5])
        ax.plot(xs, means.loc[level, "y"] + beta_w * (xs - means.loc[level, "x"]), color=colour, lw=1.2)
    xs = np.array([seed["x"].min() - 1, seed["x"].max() + 1])
    ax.plot(xs, seed["y"].mean() + beta_b * (xs - seed["x"].mean()), color="k", ls="--", lw=1,
            label=f"between slope {beta_b:.4f}")
    ax.plot(xs, seed["y"].mean() + beta_ols * (xs - seed["x"].mean()), color="0.5", ls=":", lw=1,
            label=f"pooled OLS slope {beta_ols:.4f}")
    ax.scatter(means["x"], means["y"], marker="x", color="k", s=40, label="group means")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"Seed data: within-group slope {beta_w:.4f} (solid lines), between-group slope {beta_b:.4f}",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)
    return _save(fig, outdir, "seed_data.png")


def figure_seed_profile(outdir: Path) -> Path:
    """The library's profile plot of the seed fit (REML): against the ICC, where the global
    optimum (ICC 0.9995) sits against the right edge, and against log10(tau), where it is apart."""
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    plot = m.plot_profile()
    return _save(plot.figure, outdir, "seed_profile.png")


def figure_seed_parts(outdir: Path) -> Path:
    """The three parts of the REML criterion against log10(tau), each relative to tau = 0."""
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    taus = _tau_grid()
    N, p = m.nobs, len(m.fixef)
    points = [m.profile_criterion(tau=t) for t in taus]
    zero = m.profile_criterion(tau=0.0)

    def fit_term(point):
        return (N - p) * (1 + np.log(2 * np.pi * point.pwrss / (N - p)))

    curves = {
        "log|H| (rises)": [q.logdet_V - zero.logdet_V for q in points],
        "log|X'H^-1 X| (falls; REML only)": [q.logdet_XtVinvX - zero.logdet_XtVinvX for q in points],
        "(N-p)(1 + log(2 pi pwrss/(N-p))) (falls)": [fit_term(q) - fit_term(zero) for q in points],
    }
    total = [q.criterion - zero.criterion for q in points]
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    x = np.log10(taus)
    for k, (label, values) in enumerate(curves.items()):
        ax.plot(x, values, color=f"C{k}", lw=1.2, label=label)
    ax.plot(x, total, color="k", lw=2, label="REML criterion (sum)")
    for o in m.optima:
        if o.tau > 0:
            ax.axvline(np.log10(o.tau), color="C3", ls=":", lw=1,
                       label=f"{'global' if o.is_global else 'local'} optimum, tau = {o.tau:.4g}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("log10(tau),  tau = var_group / sigma2")
    ax.set_ylabel("change since tau = 0")
    ax.set_title("Seed data: the REML criterion and its three parts", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, outdir, "seed_parts.png")


def figure_seed_slope_path(outdir: Path) -> Path:
    """The GLS slope of x as tau grows, between the between and within estimators."""
    seed = rl.load_seed()
    m = rl.lmer("y ~ x + (1|f)", seed)
    table = rl.compare_fe_re("y ~ x + (1|f)", seed).set_index("estimator")
    taus = _tau_grid()
    slopes = [m.profile_criterion(tau=t).fixef["x"] for t in taus]
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    ax.plot(np.log10(taus), slopes, color="C0", lw=2, label="generalized least squares slope of x at tau")
    for name, style in (("within (fixed effects)", "-"), ("between", "--"), ("pooled OLS", ":")):
        ax.axhline(table.loc[name, "coef"], color="0.4", ls=style, lw=1, label=f"{name}: {table.loc[name, 'coef']:.4f}")
    for o in m.optima:
        if o.tau > 0:
            ax.axvline(np.log10(o.tau), color="C3", ls=":", lw=1,
                       label=f"{'global' if o.is_global else 'local'} optimum, tau = {o.tau:.4g}")
            ax.annotate(f"global optimum\nslope {o.fixef['x']:.3f}", (np.log10(o.tau), o.fixef["x"]),
                        xytext=(-90, -40), textcoords="offset points", fontsize=7,
                        arrowprops={"arrowstyle": "->", "lw": 0.8})
    ax.set_xlabel("log10(tau),  tau = var_group / sigma2")
    ax.set_ylabel("slope of x")
    ax.set_title("Seed data: the slope moves from the between to the within estimate", fontsize=9)
    ax.legend(fontsize=7, loc="center left")
    return _save(fig, outdir, "seed_slope_path.png")


def figure_seed_ml_vs_reml(outdir: Path) -> Path:
    """REML criterion and ML deviance of the seed model against log10(tau)."""
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    taus = _tau_grid()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for k, REML in enumerate((True, False)):
        name = "REML criterion" if REML else "ML deviance"
        values = np.array([m.profile_criterion(tau=t, REML=REML).criterion for t in taus])
        at_zero = m.profile_criterion(tau=0.0, REML=REML).criterion
        ax.plot(np.log10(taus), values, color=f"C{k}", lw=1.5, label=f"{name} (at tau = 0: {at_zero:.3f})")
        ax.axhline(at_zero, color=f"C{k}", ls=":", lw=0.8)
    ax.set_xlabel("log10(tau),  tau = var_group / sigma2")
    ax.set_ylabel("criterion")
    ax.set_title("Seed data: REML's global minimum is inside, ML's at tau = 0 (dotted lines)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, outdir, "seed_ml_vs_reml.png")


def figure_balanced_profiles(outdir: Path) -> Path:
    """Dyestuff (interior optimum) and Dyestuff2 (boundary, negative ICC) side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 5.0))
    for ax, name in zip(axes, ("dyestuff", "dyestuff2"), strict=True):
        m = rl.lmer("Yield ~ 1 + (1|Batch)", getattr(rl.datasets, name)())
        m.plot_profile(ax=ax)
        ax.set_title(f"{name}: ICC {m.icc:.3f}, compound symmetry {m.compound_symmetry.icc:.3f}", fontsize=9)
    fig.tight_layout()
    return _save(fig, outdir, "balanced_profiles.png")


def figure_within_between_profile(outdir: Path) -> Path:
    """The profile of the within-between model of the seed data: one optimum."""
    m = rl.lmer("y ~ within(x) + between(x) + (1|f)", rl.load_seed())
    plot = m.plot_profile()
    return _save(plot.figure, outdir, "seed_within_between_profile.png")


def figure_seed_ranef(outdir: Path) -> Path:
    """Caterpillar plot of the random intercepts at the global optimum."""
    m = rl.lmer("y ~ x + (1|f)", rl.load_seed())
    plot = m.plot_ranef()
    plot.figure.set_size_inches(*FIGURE_SIZE)
    return _save(plot.figure, outdir, "seed_ranef.png")


FIGURES: tuple[Callable[[Path], Path], ...] = (
    figure_seed_data,
    figure_seed_profile,
    figure_seed_parts,
    figure_seed_slope_path,
    figure_seed_ml_vs_reml,
    figure_balanced_profiles,
    figure_within_between_profile,
    figure_seed_ranef,
)


# -- the walkthrough's output blocks ---------------------------------------------------------


def run_blocks(template: str) -> str:
    """Execute the template's ``run`` blocks and put what each printed after it."""
    namespace: dict = {"__name__": "walkthrough"}

    def replace(match: re.Match) -> str:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(match["code"], WALKTHROUGH, "exec"), namespace)  # noqa: S102 - our own doc
        output = "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())
        return f"{match[1]}{match['code']}{match[3]}{output}\n{match[5]}"

    # pandas' default display options, as a reader has them: the code rounds what it prints.
    return RUN_BLOCK.sub(replace, template)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(textwrap.dedent(__doc__).split("\n\n")[1], file=sys.stderr)
        return 2
    outdir = Path(argv[0]) if argv else DOCS
    (outdir / "figures").mkdir(parents=True, exist_ok=True)
    for make in FIGURES:
        print(make(outdir))
    template = (DOCS / WALKTHROUGH).read_text()
    if not RUN_BLOCK.search(template):
        raise RuntimeError(f"{WALKTHROUGH} has no <!-- run --> blocks")
    target = outdir / WALKTHROUGH
    target.write_text(run_blocks(template))
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
