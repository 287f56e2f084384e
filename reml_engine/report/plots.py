"""Figures of a fit: the profiled criterion against the ICC, and a caterpillar plot.

Plotting is separate from the maths: the curve and the optima come from
:func:`reml_engine.report.criterion_curve.criterion_profile` and the fit itself; this module only
draws them. matplotlib is an optional extra (``pip install 'reml_engine[plot]'``),
imported when a plot is asked for.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import reml_engine as rl
>>> m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
>>> plot = m.plot_profile()
>>> [round(o.criterion, 3) for o in plot.optima]
[20.593, 16.173]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .criterion_curve import CriterionProfile, MarkedOptimum, criterion_profile

#: Two-sided 95% normal quantile for the caterpillar plot's intervals.
Z_95 = 1.959963984540054
#: Above this many groups the caterpillar plot leaves out the level labels.
MAX_LABELLED_LEVELS = 60
#: Fraction of the marked criterion range added above and below it on the y axis.
Y_MARGIN = 0.15
#: The y axis is scaled to the curve up to this ICC (and to every marked optimum).
Y_RANGE_ICC_MAX = 0.99


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib, an optional extra: pip install 'reml_engine[plot]' "
            "(or pip install matplotlib)"
        ) from err
    return plt


@dataclass(frozen=True)
class Plot:
    """What every plotting method of a fit returns: the figure and its main axes.

    The figure is made with pyplot (unless an ``ax`` was passed), so a notebook shows it
    below the cell as any pyplot figure and ``plt.show()`` shows it in a script; the
    result itself shows as a short line (``repr``) or a small table (``_repr_html_``),
    never as the arrays drawn.

    Attributes
    ----------
    figure : matplotlib Figure
    ax : matplotlib Axes
        The main panel.
    """

    figure: object
    ax: object

    def savefig(self, *args, **kwargs):
        """``figure.savefig``."""
        return self.figure.savefig(*args, **kwargs)

    def __repr__(self) -> str:
        from .notebook import short_repr

        return short_repr(type(self).__name__, title=self.ax.get_title())

    def _repr_html_(self) -> str:
        from .notebook import html_result

        return html_result(f"{type(self).__name__}: {self.ax.get_title()}")


@dataclass(frozen=True, repr=False)
class RanefPlot(Plot):
    """The caterpillar plot (:func:`plot_ranef`).

    Until this release ``plot_ranef`` returned the Axes; the Axes' attributes are still
    reachable on the result (``plot.containers``, ``plot.set_xlim(...)``), so code written
    for it keeps working.
    """

    def __getattr__(self, name: str):
        # Only called for names the result does not have: those of the Axes it wraps.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(object.__getattribute__(self, "ax"), name)


@dataclass(frozen=True, repr=False)
class ProfilePlot(Plot):
    """A drawn profile plot and what it marks.

    Attributes
    ----------
    figure : matplotlib Figure
    ax : matplotlib Axes
        The criterion against the ICC.
    profile : CriterionProfile
        The curve and the optima drawn.
    optima : tuple of MarkedOptimum
        Every local optimum over var_group >= 0 as marked (``fit.optima`` for the
        fit's own criterion).
    lme4_default : MarkedOptimum
        The optimum lme4's default start would stop at (ringed).
    compound_symmetry : MarkedOptimum
        The compound-symmetry optimum (negative ICC allowed).
    optima_artist : matplotlib collection
        The scatter of ``optima``: its offsets are the (ICC, criterion) drawn.
    log_tau_ax : matplotlib Axes or None
        The criterion against log10(tau) (tau > 0), where optima at an ICC close to 1
        are apart; drawn on a figure the plot makes, or on the ``log_tau_ax`` passed.
    """

    profile: CriterionProfile
    optima: tuple[MarkedOptimum, ...]
    lme4_default: MarkedOptimum
    compound_symmetry: MarkedOptimum
    optima_artist: object
    log_tau_ax: object = None

    def __repr__(self) -> str:
        from .notebook import short_repr

        best = self.profile.global_optimum
        return short_repr("ProfilePlot", REML=self.profile.REML, optima=len(self.optima), global_tau=best.tau,
                          global_icc=best.icc, global_criterion=best.criterion)

    def _repr_html_(self) -> str:
        from .notebook import profile_html

        return profile_html(self.profile, f"Profile plot: {self.ax.get_title()}")


def _y_limits(profile: CriterionProfile) -> tuple[float, float]:
    """Limits that show every marked optimum and the curve around them.

    The criterion falls to -infinity at the positive-definite limit when the
    compound-symmetry optimum is there; the axis does not follow it.
    """
    marked = [o.criterion for o in profile.optima] + [profile.boundary_criterion]
    if profile.compound_symmetry.kind != "limit":
        marked.append(profile.compound_symmetry.criterion)
    # The criterion climbs steeply as ICC -> 1 (tau -> infinity); that end does not set the axis.
    body = np.isfinite(profile.criterion) & (profile.icc <= Y_RANGE_ICC_MAX)
    finite = profile.criterion[body]
    low, high = min(marked), max(marked)
    upper = max(high, float(np.quantile(finite, 0.9))) if finite.size else high
    span = max(upper - low, 1.0)
    return low - Y_MARGIN * span, upper + Y_MARGIN * span


def _label_side(x: float, right_edge: float) -> dict:
    """Annotation placement that keeps a label inside the axes and off its marker: to the
    upper right of a point in the left part of the axis, to the upper left near its right
    end."""
    if x > right_edge:
        return {"xytext": (-12, 10), "ha": "right"}
    return {"xytext": (12, 10), "ha": "left"}


def _optimum_label(o: MarkedOptimum) -> str:
    where = "var_group = 0" if o.kind == "boundary" else f"ICC {o.icc:.4g}"
    return f"{'global' if o.is_global else 'local'} optimum, {where}: {o.criterion:.3f}"


def _draw_log_tau(ax, profile: CriterionProfile, name: str) -> None:
    """The criterion against log10(tau) over tau > 0, the optima marked as on the ICC panel
    and the boundary var_group = 0 (off this axis) as a horizontal line at its value."""
    x = np.log10(profile.log_tau)
    ax.plot(x, profile.log_tau_criterion, color="C0", lw=1.5)
    ax.axhline(profile.boundary_criterion, color="0.4", lw=1.0, ls="--",
               label=f"{name} at var_group = 0: {profile.boundary_criterion:.3f}")
    inside = [o for o in profile.optima if o.tau > 0]
    if inside:
        ax.scatter([np.log10(o.tau) for o in inside], [o.criterion for o in inside], s=45, zorder=4,
                   facecolors=["C3" if o.is_global else "white" for o in inside], edgecolors="C3")
    for o in inside:
        if o.is_global:
            ax.axvline(np.log10(o.tau), color="C3", lw=0.8, ls=":",
                       label=f"global optimum: tau = {o.tau:.4g} (ICC {o.icc:.4g})")
        if o.is_lme4_default:
            ax.scatter([np.log10(o.tau)], [o.criterion], s=220, facecolors="none", edgecolors="C2", lw=1.8, zorder=5)
    span = x[-1] - x[0]
    for o in inside:
        ax.annotate(f"{o.criterion:.3f}", (np.log10(o.tau), o.criterion), textcoords="offset points", fontsize=8,
                    **_label_side(np.log10(o.tau), x[-1] - 0.3 * span))
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("log10(tau),  tau = var_group / sigma2")
    ax.set_ylabel(name)
    ax.set_title("the same criterion against log10(tau), tau > 0", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)


def plot_profile(fit, REML: bool | None = None, ax=None, n_points: int | None = None,
                 log_tau_ax=None) -> ProfilePlot:
    """Draw the REML criterion (or ML deviance) against the intra-class correlation.

    The x axis runs from the lower limit of the ICC, ``-1/(max n_g - 1)`` (where V
    stops being positive definite), up to 1. Marked: the boundary var_group = 0 (the
    random-intercept model lives to its right), every local optimum over
    var_group >= 0 (the global one filled), the optimum lme4 would stop at from its
    default start (ringed), and the compound-symmetry optimum (a diamond, possibly at
    negative ICC). A second panel draws the criterion against log10(tau) over tau > 0,
    where optima that the ICC axis crowds against 1 (ICC 0.9995 is tau = 2000) are apart.

    Parameters
    ----------
    fit : LmerFit
    REML : bool, optional
        Which criterion; default the fit's own.
    ax : matplotlib Axes, optional
        The ICC panel. Without it, a new figure with both panels is made.
    n_points : int, optional
        Points of the curve.
    log_tau_ax : matplotlib Axes, optional
        Where to draw the log10(tau) panel when ``ax`` is given (it is left out when
        neither is passed with ``ax``).

    Returns
    -------
    ProfilePlot
        Its ``figure``, ``ax`` and ``log_tau_ax``, and the optima drawn.
    """
    plt = _pyplot()
    profile = criterion_profile(fit, REML) if n_points is None else criterion_profile(fit, REML, n_points)
    created = ax is None
    if created:
        figure, (ax, log_tau_ax) = plt.subplots(1, 2, figsize=(12.0, 5.5), width_ratios=(3, 2))
    else:
        figure = ax.figure
    name = "REML criterion" if profile.REML else "deviance (-2 log-likelihood)"

    ax.axvspan(profile.icc_lower, 0.0, color="0.93", zorder=0, label="negative ICC: compound symmetry only")
    ax.plot(profile.icc, profile.criterion, color="C0", lw=1.5, label=name)
    ax.axvline(0.0, color="0.4", lw=1.0, ls="--", label="boundary var_group = 0")
    ax.axvline(profile.icc_lower, color="0.6", lw=0.8, ls=":")

    optima = profile.optima
    xs = np.array([o.icc for o in optima])
    ys = np.array([o.criterion for o in optima])
    faces = ["C3" if o.is_global else "white" for o in optima]
    artist = ax.scatter(xs, ys, s=45, facecolors=faces, edgecolors="C3", zorder=4,
                        label="local optima (filled: global)")
    default = profile.lme4_default
    ax.scatter([default.icc], [default.criterion], s=220, facecolors="none", edgecolors="C2", lw=1.8,
               zorder=5, label="where lme4's default start stops")
    cs = profile.compound_symmetry
    ax.scatter([cs.icc], [cs.criterion], marker="D", s=45, color="C1", zorder=4,
               label=f"compound symmetry (ICC {cs.icc:.3g})")
    if cs.kind == "limit":
        # Off the axis: the criterion falls without bound towards the limit.
        ax.annotate("compound symmetry: the criterion falls\nwithout bound towards this limit",
                    xy=(profile.icc_lower, 0.0), xycoords=("data", "axes fraction"), xytext=(12, 30),
                    textcoords="offset points", fontsize=8, color="C1",
                    arrowprops={"arrowstyle": "->", "color": "C1"})
    for o in optima:
        # Beside the lme4 ring, not on it; to the left near ICC = 1, so that it stays inside.
        ax.annotate(_optimum_label(o), (o.icc, o.criterion), textcoords="offset points", fontsize=8,
                    **_label_side(o.icc, 0.5))

    ax.set_xlim(profile.icc_lower, 1.0)
    ax.set_ylim(*_y_limits(profile))
    ax.set_xlabel("intra-class correlation  var_group / (var_group + sigma2)")
    ax.set_ylabel(name)
    ax.set_title(f"Profiled {name}" + (f": {fit.formula}" if getattr(fit, "formula", None) else ""))
    # Below the axes: inside, it would hide optima that sit in any corner.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    if log_tau_ax is not None:
        _draw_log_tau(log_tau_ax, profile, name)
    if created:
        figure.tight_layout()
    return ProfilePlot(figure, ax, profile, optima, default, cs, artist, log_tau_ax)


def plot_ranef(fit, ax=None, sort: bool = True) -> RanefPlot:
    """Caterpillar plot: conditional modes of the random intercepts +/- 1.96 conditional SD.

    Parameters
    ----------
    fit : LmerFit
    ax : matplotlib Axes, optional
    sort : bool
        Order the groups by their mode.

    Returns
    -------
    RanefPlot
        Its ``figure`` and ``ax`` (the Axes' own attributes are reachable on it too, as
        when this function returned the Axes).
    """
    plt = _pyplot()
    ranef = fit.ranef.sort_values("mode") if sort else fit.ranef
    modes = ranef["mode"].to_numpy()
    half_width = Z_95 * np.sqrt(ranef["condvar"].to_numpy())
    created = ax is None
    if created:
        height = min(2.0 + 0.18 * len(ranef), 12.0)
        _, ax = plt.subplots(figsize=(6.0, height))
    rows = np.arange(len(ranef))
    ax.errorbar(modes, rows, xerr=half_width, fmt="o", color="C0", ms=4, capsize=2, lw=1)
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    if len(ranef) <= MAX_LABELLED_LEVELS:
        ax.set_yticks(rows)
        ax.set_yticklabels([str(level) for level in ranef.index])
    else:
        ax.set_yticks([])
    ax.set_ylabel(fit.group_name)
    ax.set_xlabel("conditional mode of the random intercept  (+/- 1.96 conditional SD)")
    if fit.var_group == 0:
        ax.set_title("random intercepts (var_group = 0: all modes are 0)")
    else:
        ax.set_title("random intercepts")
    if created:
        ax.figure.tight_layout()
    return RanefPlot(ax.figure, ax)


__all__ = ["Plot", "ProfilePlot", "RanefPlot", "plot_profile", "plot_ranef"]
