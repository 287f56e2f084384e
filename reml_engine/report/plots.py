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
class ProfilePlot:
    """A drawn profile plot and what it marks.

    Attributes
    ----------
    figure, ax : matplotlib Figure and Axes
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
    """

    figure: object
    ax: object
    profile: CriterionProfile
    optima: tuple[MarkedOptimum, ...]
    lme4_default: MarkedOptimum
    compound_symmetry: MarkedOptimum
    optima_artist: object


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


def plot_profile(fit, REML: bool | None = None, ax=None, n_points: int | None = None) -> ProfilePlot:
    """Draw the REML criterion (or ML deviance) against the intra-class correlation.

    The x axis runs from the lower limit of the ICC, ``-1/(max n_g - 1)`` (where V
    stops being positive definite), up to 1. Marked: the boundary var_group = 0 (the
    random-intercept model lives to its right), every local optimum over
    var_group >= 0 (the global one filled), the optimum lme4 would stop at from its
    default start (ringed), and the compound-symmetry optimum (a diamond, possibly at
    negative ICC).

    Parameters
    ----------
    fit : LmerFit
    REML : bool, optional
        Which criterion; default the fit's own.
    ax : matplotlib Axes, optional
        Drawn on a new figure when not given.
    n_points : int, optional
        Points of the curve.

    Returns
    -------
    ProfilePlot
    """
    plt = _pyplot()
    profile = criterion_profile(fit, REML) if n_points is None else criterion_profile(fit, REML, n_points)
    created = ax is None
    if created:
        figure, ax = plt.subplots(figsize=(7.0, 5.5))
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
        ax.annotate(f"{o.criterion:.3f}", (o.icc, o.criterion), textcoords="offset points", xytext=(6, 8),
                    fontsize=8)

    ax.set_xlim(profile.icc_lower, 1.0)
    ax.set_ylim(*_y_limits(profile))
    ax.set_xlabel("intra-class correlation  var_group / (var_group + sigma2)")
    ax.set_ylabel(name)
    ax.set_title(f"Profiled {name}" + (f": {fit.formula}" if getattr(fit, "formula", None) else ""))
    # Below the axes: inside, it would hide optima that sit in any corner.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    if created:
        figure.tight_layout()
    return ProfilePlot(figure, ax, profile, optima, default, cs, artist)


def plot_ranef(fit, ax=None, sort: bool = True):
    """Caterpillar plot: conditional modes of the random intercepts +/- 1.96 conditional SD.

    Parameters
    ----------
    fit : LmerFit
    ax : matplotlib Axes, optional
    sort : bool
        Order the groups by their mode.

    Returns
    -------
    matplotlib Axes
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
    return ax


__all__ = ["ProfilePlot", "plot_profile", "plot_ranef"]
