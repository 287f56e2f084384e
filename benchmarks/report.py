"""Write the results: CSV (every number), Markdown (the tables of docs/benchmarks.md), PNG.

Rendering only: nothing here runs an engine or recomputes a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import engines as E

ENGINE_STYLE = {
    E.FLOOR: ("black", "o"),
    E.REML_ARRAYS: ("tab:blue", "s"),
    E.REML_FORMULA: ("tab:cyan", "D"),
    E.STATSMODELS: ("tab:orange", "^"),
    E.LME4: ("tab:green", "v"),
}


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of the frame's columns, values already formatted as text."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _seconds(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    if value < 1e-3:
        return f"{1e6 * value:.0f} us"
    if value < 1.0:
        return f"{1e3 * value:.1f} ms"
    return f"{value:.2f} s"


def _ratio(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.3g}x"


def _sci(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.1e}"


def grid_markdown(table: pd.DataFrame) -> str:
    """One row per configuration: medians, ratios, agreement, skips."""
    keys = ["nobs", "ngroups", "p", "balanced"]
    lines = []
    for key, block in table.groupby(keys, sort=False):
        by = block.set_index("engine")

        def get(engine, column, by=by):
            return by.loc[engine, column] if engine in by.index else math.nan

        row = {
            "N": f"{key[0]:.0e}", "G": f"{key[1]:.0e}" if key[1] >= 1e3 else str(key[1]), "p": key[2],
            "groups": "bal." if key[3] else "unbal.",
            "floor": _seconds(get(E.FLOOR, "median_s")),
            "arrays": f"{_seconds(get(E.REML_ARRAYS, 'median_s'))} ({_ratio(get(E.REML_ARRAYS, 'ratio_to_floor'))} floor)",
            "formula": _seconds(get(E.REML_FORMULA, "median_s")),
        }
        for peer in (E.STATSMODELS, E.LME4):
            if peer not in by.index:
                continue
            if by.loc[peer, "skipped"]:
                row[peer] = "skipped"
            else:
                row[peer] = (f"{_seconds(get(peer, 'median_s'))} "
                             f"({_ratio(get(peer, 'ratio_to_reml_formula'))} formula)")
                row[f"{peer} crit. diff"] = _sci(get(peer, "criterion_diff"))
                row[f"{peer} fixef diff"] = _sci(get(peer, "max_rel_fixef_diff"))
        lines.append(row)
    return markdown_table(pd.DataFrame(lines).fillna("-"))


def skipped_markdown(table: pd.DataFrame) -> str:
    skipped = table[table.skipped.astype(str) != ""]
    if skipped.empty:
        return "No engine was skipped."
    rows = [{"N": f"{r.nobs:.0e}", "G": r.ngroups, "p": r.p, "balanced": r.balanced,
             "engine": r.engine, "reason": r.skipped} for r in skipped.itertuples()]
    return markdown_table(pd.DataFrame(rows))


def plot_time_vs_n(table: pd.DataFrame, path: Path) -> None:
    """Median time against N per engine, log axes; one panel per (N/G, p)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = table[np.isfinite(table.median_s)].assign(per_group=table.nobs // table.ngroups.clip(lower=1))
    panels = sorted({(int(round(r.nobs / r.ngroups, -1)), r.p) for r in table.itertuples()})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, sharey=True)
    for ax, (per_group, p) in zip(axes[0], panels, strict=True):
        sub = table[(np.round(table.nobs / table.ngroups, -1) == per_group) & (table.p == p)]
        for engine, (color, marker) in ENGINE_STYLE.items():
            for balanced, style in ((True, "-"), (False, "--")):
                line = sub[(sub.engine == engine) & (sub.balanced == balanced)].sort_values("nobs")
                if len(line):
                    ax.loglog(line.nobs, line.median_s, style, color=color, marker=marker, ms=4,
                              label=engine if balanced else None)
        ax.set_title(f"N/G ~ {per_group}, p = {p}")
        ax.set_xlabel("rows N")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("median seconds per fit")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8,
                       title="solid: balanced\ndashed: unbalanced", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_criterion_timing(table: pd.DataFrame, path: Path) -> None:
    """Time per criterion evaluation against N, for G = N/100 and N/10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharex=True)
    for balanced, style in ((True, "-"), (False, "--")):
        for per_group, color in ((100, "tab:blue"), (10, "tab:red")):
            sub = table[(table.balanced == balanced)
                        & (np.round(table.nobs / table.ngroups, -1) == per_group)].sort_values("nobs")
            label = f"G = N/{per_group}, {'balanced' if balanced else 'unbalanced'}"
            axes[0].loglog(sub.nobs, sub.single_eval_us, style, color=color, marker="o", ms=4, label=label)
            axes[1].loglog(sub.nobs, sub.scan_per_point_us, style, color=color, marker="o", ms=4)
    axes[0].set_title("one evaluation (criterion at one tau)")
    axes[1].set_title("per point of the vectorized scan")
    # Wide fixed ranges: flat means flat on a scale of decades, not of noise.
    axes[0].set_ylim(1.0, 1e4)
    axes[1].set_ylim(0.1, 1e3)
    for row in table[~table.balanced].itertuples():
        axes[1].annotate(f"U={row.distinct_sizes}", (row.nobs, row.scan_per_point_us), fontsize=6,
                         textcoords="offset points", xytext=(2, 4))
    for ax in axes:
        ax.set_xlabel("rows N")
        ax.set_ylabel("microseconds")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
