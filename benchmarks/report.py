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
    E.MIXEDLM: ("tab:red", "P"),
    E.INTERLACE: ("tab:purple", "X"),
}


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of the frame's columns, values already formatted as text."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def seconds_text(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    if value < 1e-3:
        return f"{1e6 * value:.0f} us"
    if value < 1.0:
        return f"{1e3 * value:.1f} ms"
    return f"{value:.2f} s"


def ratio_text(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.3g}x"


def sci_text(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.1e}"


GRID_KEYS = ["nobs", "ngroups", "p", "factor_levels", "balanced"]


def _peers_in(table: pd.DataFrame) -> list[str]:
    return [e for e in table.engine.unique() if e not in (E.FLOOR, E.REML_ARRAYS, E.REML_FORMULA)]


def _point(key, by) -> dict:
    nobs, ngroups, p, levels, balanced = key
    return {
        "N": f"{nobs:.0e}", "G": f"{ngroups:.0e}" if ngroups >= 1e3 else str(ngroups),
        "p": f"{p} ({levels}-level factor)" if levels else str(p),
        "groups": "bal." if balanced else "unbal.",
        "load": f"{by.load_average.median():.1f}",
    }


def grid_markdown(table: pd.DataFrame) -> str:
    """One row per configuration: medians, and each peer's time as a multiple of
    reml_engine's formula fit measured in the same run (the like-for-like comparison:
    all start from a DataFrame and a formula)."""
    table = _with_factor_column(table)
    peers = _peers_in(table)
    lines = []
    for key, block in table.groupby(GRID_KEYS, sort=False):
        by = block.set_index("engine")

        def get(engine, column, by=by):
            return by.loc[engine, column] if engine in by.index else math.nan

        row = _point(key, block)
        row["floor"] = seconds_text(get(E.FLOOR, "median_s"))
        row["arrays"] = (_skip_or(by, E.REML_ARRAYS) or
                         f"{seconds_text(get(E.REML_ARRAYS, 'median_s'))} "
                         f"({ratio_text(get(E.REML_ARRAYS, 'ratio_to_floor'))} floor)")
        row["formula"] = _skip_or(by, E.REML_FORMULA) or seconds_text(get(E.REML_FORMULA, "median_s"))
        for peer in peers:
            row[peer] = (_skip_or(by, peer) or f"{seconds_text(get(peer, 'median_s'))} "
                         f"({ratio_text(get(peer, 'ratio_to_reml_formula'))})")
        lines.append(row)
    return markdown_table(pd.DataFrame(lines).fillna("-"))


def _skip_or(by, engine) -> str:
    if engine not in by.index:
        return "-"
    return "skipped" if str(by.loc[engine, "skipped"] or "") not in ("", "nan") else ""


def agreement_markdown(table: pd.DataFrame) -> str:
    """Per configuration and peer: criterion above reml_engine's optimum at the peer's
    estimate, largest relative fixed-effect difference, and the verdict."""
    table = _with_factor_column(table)
    peers = _peers_in(table)
    lines = []
    for key, block in table.groupby(GRID_KEYS, sort=False):
        by = block.set_index("engine")
        row = _point(key, block)
        for peer in peers:
            if peer not in by.index or _skip_or(by, peer):
                row[peer] = "skipped" if peer in by.index else "-"
                continue
            row[peer] = (f"{sci_text(by.loc[peer, 'criterion_diff'])} / "
                         f"{sci_text(by.loc[peer, 'max_rel_fixef_diff'])} / {_text(by.loc[peer, 'verdict']) or '-'}")
        lines.append(row)
    return markdown_table(pd.DataFrame(lines).fillna("-"))


def _with_factor_column(table: pd.DataFrame) -> pd.DataFrame:
    """Results written before wide designs existed have no ``factor_levels`` column."""
    table = table if "factor_levels" in table else table.assign(factor_levels=0)
    if "verdict" not in table:
        table = table.assign(verdict="")
    return table


def grid_report(table: pd.DataFrame) -> str:
    """``grid.md``: times and ratios, agreement, and every skip with its reason."""
    return "\n\n".join([
        "Median time per fit; in brackets, the peer's time as a multiple of reml_engine's formula "
        "fit in the same run (the arrays fit: of numpy's X'X). `load`: the 1-minute load average.",
        grid_markdown(table),
        "Agreement: criterion above reml_engine's optimum at the peer's estimate / largest "
        "fixed-effect difference relative to max(|beta|, se) / verdict.",
        agreement_markdown(table),
        skipped_markdown(table),
    ]) + "\n"


def skipped_markdown(table: pd.DataFrame) -> str:
    table = _with_factor_column(table)
    skipped = table[~table.skipped.astype(str).isin(["", "nan"])]
    if skipped.empty:
        return "No engine was skipped."
    rows = [{"N": f"{r.nobs:.0e}", "G": r.ngroups, "p": r.p, "balanced": r.balanced,
             "engine": r.engine, "reason": r.skipped} for r in skipped.itertuples()]
    return markdown_table(pd.DataFrame(rows))


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else str(value)


def many_markdown(table: pd.DataFrame) -> str:
    """The many-responses part: time for all k responses, ratios, agreement, notes."""
    rows = []
    for r in table.to_dict("records"):
        skipped = _text(r.get("skipped"))
        compared = r.get("compared_columns")
        agreement = "-"
        if compared is not None and np.isfinite(compared) and compared > 0:
            agreement = (f"{int(r['same_optimum'])}/{int(compared)} same optimum, "
                         f"{int(r['negative_variance'])} negative variances, fixef diff "
                         f"{sci_text(r['max_rel_fixef_diff_same_optimum'])}")
        rows.append({
            "engine": r["engine"], "N": f"{r['nobs']:.0e}", "G": r["ngroups"], "p": r["p"], "k": r["k"],
            "time for k": "skipped" if skipped else seconds_text(r["seconds_for_k"]),
            "vs many API": ratio_text(r.get("ratio_to_many_api", math.nan)),
            "vs FLASH-MM": ratio_text(r.get("ratio_to_flash", math.nan)),
            "agreement with the loop": agreement,
            "load": f"{r['load_average']:.1f}",
            "note": skipped or _text(r.get("note")) or "-",
        })
    return markdown_table(pd.DataFrame(rows))


def terms_markdown(table: pd.DataFrame) -> str:
    """The several-terms part: per data set and engine, time, ratio, criterion, agreement."""
    rows = []
    for r in table.to_dict("records"):
        skipped = _text(r.get("skipped"))
        if not _text(r.get("engine")):
            rows.append({"data": r["data"], "engine": "-", "time": "skipped", "note": skipped})
            continue
        rows.append({
            "data": r["data"], "N": f"{r['nobs']:,}", "levels": r["levels"], "engine": r["engine"],
            "time": "skipped" if skipped else seconds_text(r["median_s"]),
            "vs reml_engine": ratio_text(r.get("ratio_to_reml_engine", math.nan)),
            "REML criterion": "-" if skipped else f"{r['criterion']:.6f}",
            "crit. diff": sci_text(r.get("criterion_diff")), "fixef diff": sci_text(r.get("max_rel_fixef_diff")),
            "peak memory": _memory_text(r.get("peak_mb"), r.get("process_peak_mb")),
            "load": f"{r['load_average']:.1f}",
            "note": skipped or _first_call_text(r.get("first_call_s")),
        })
    references = {r["data"]: _text(r.get("reference")) for r in table.to_dict("records") if _text(r.get("reference"))}
    note = ("Criterion and fixed-effect differences are against, per data set: "
            + "; ".join(f"{data}: {ref}" for data, ref in references.items()) + ".") if references else ""
    return markdown_table(pd.DataFrame(rows).fillna("-")) + ("\n\n" + note if note else "")


def _first_call_text(seconds) -> str:
    seconds = float("nan") if seconds is None else float(seconds)
    return f"first call in its process {seconds_text(seconds)} (not timed)" if math.isfinite(seconds) else "-"


def _memory_text(added_mb, process_mb) -> str:
    """The fit's added peak memory, and the process's peak (data included) when known."""
    added = float("nan") if added_mb is None else float(added_mb)
    process = float("nan") if process_mb is None else float(process_mb)
    if not math.isfinite(added):
        return "-"
    text = f"+{added / 1024:.2f} GB" if added >= 1024 else f"+{added:.0f} MB"
    return text + (f" ({process / 1024:.2f} GB in all)" if math.isfinite(process) else "")


def plot_time_vs_n(table: pd.DataFrame, path: Path) -> None:
    """Median time against N per engine, log axes; one panel per (N/G, p)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _with_factor_column(table)
    # Wide designs are a series of their own (p varies with N): the grid tables show them.
    table = table[np.isfinite(table.median_s) & (table.factor_levels == 0)]
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
    """Time per criterion evaluation against N, for G = N/100 and N/10, saved to ``path``."""
    import matplotlib.pyplot as plt

    fig = criterion_timing_figure(table)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def criterion_timing_figure(table: pd.DataFrame):
    """The figure of :func:`plot_criterion_timing` (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharex=True)
    colors = {100: "tab:blue", 10: "tab:red"}
    styles = {True: "-", False: "--"}
    for balanced, style in styles.items():
        for per_group, color in colors.items():
            sub = table[(table.balanced == balanced)
                        & (np.round(table.nobs / table.ngroups, -1) == per_group)].sort_values("nobs")
            axes[0].loglog(sub.nobs, sub.single_eval_us, style, color=color, marker="o", ms=4)
            axes[1].loglog(sub.nobs, sub.scan_per_point_us, style, color=color, marker="o", ms=4)
            if not balanced:
                # Above the upper (G = N/100) series, below the lower: the labels do not overlap.
                offset = (2, 5) if per_group == 100 else (2, -10)
                for row in sub.itertuples():
                    axes[1].annotate(f"U={row.distinct_sizes}", (row.nobs, row.scan_per_point_us), fontsize=6,
                                     color=color, textcoords="offset points", xytext=offset)
    axes[0].set_title("one evaluation (criterion at one tau)")
    axes[1].set_title("per point of the vectorized scan")
    # Wide fixed ranges: flat means flat on a scale of decades, not of noise.
    axes[0].set_ylim(1.0, 1e4)
    axes[1].set_ylim(0.1, 1e3)
    # Room on the right for the last labels.
    axes[0].set_xlim(table.nobs.min() / 1.6, table.nobs.max() * 3.0)
    for ax in axes:
        ax.set_xlabel("rows N")
        ax.set_ylabel("microseconds")
        ax.grid(True, which="major", alpha=0.3)
    # Colour says G, line style says balance: one legend entry each, without markers, and
    # long enough handles that a dashed line shows as dashed.
    handles = [Line2D([], [], color=c, lw=2, label=f"G = N/{per_group}") for per_group, c in colors.items()]
    handles += [Line2D([], [], color="0.3", ls=ls, lw=1.5, label="balanced" if b else "unbalanced (U: distinct sizes)")
                for b, ls in styles.items()]
    axes[0].legend(handles=handles, fontsize=7, handlelength=4)
    fig.tight_layout()
    return fig


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
