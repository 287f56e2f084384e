"""``python -m benchmarks [--quick] [--parts grid,headline,...]``: run and write the results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import engines as E
from . import harness, headline, optimum_study, report
from .simulate import Config

RESULTS = Path(__file__).parent / "results"
PARTS = ("machine", "grid", "headline", "stages", "criterion", "memory", "import", "study")
QUICK_GRID = [
    Config(1_000, 100, 2, True),
    Config(1_000, 100, 10, False),
    Config(10_000, 1_000, 2, False),
    Config(10_000, 100, 10, True),
]


def machine() -> dict:
    """What the numbers were measured on."""
    import numba
    import scipy

    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": E.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "numba": numba.__version__,
        "load_average_at_start": os.getloadavg()[0],
    }
    if E.statsmodels_available():
        import statsmodels

        info["statsmodels"] = statsmodels.__version__
    path = E.rscript()
    if path:
        out = subprocess.run([path, "-e", "cat(R.version.string, as.character(packageVersion('lme4')), sep='|')"],
                             capture_output=True, text=True)
        info["R"], info["lme4"] = out.stdout.strip().split("|")
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes only, under a minute (CI)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--no-lme4", action="store_true", help="skip lme4 even when Rscript is installed")
    parser.add_argument("--no-statsmodels", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip a peer predicted to take longer than this per fit")
    parser.add_argument("--study-size", type=int, default=None, help="data sets per study family")
    parser.add_argument("--max-n", type=float, default=1e7, help="largest N of the grid")
    args = parser.parse_args(argv)

    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    peers = tuple(p for p in (E.STATSMODELS, E.LME4)
                  if not (p == E.LME4 and (args.no_lme4 or E.rscript() is None))
                  and not (p == E.STATSMODELS and (args.no_statsmodels or not E.statsmodels_available())))
    if args.quick:
        settings = harness.Settings(repeats=3, budget=1.0, max_seconds=args.max_seconds or 5.0, peers=peers)
    else:
        settings = harness.Settings(repeats=7, budget=10.0, max_seconds=args.max_seconds or 120.0, peers=peers)
    started = time.perf_counter()
    problems: list[str] = []

    if "machine" in parts:
        report.write_json(machine(), out / "machine.json")
    if "grid" in parts:
        configs = QUICK_GRID if args.quick else harness.grid([n for n in harness.FULL_SIZES if n <= args.max_n])
        table = harness.run_grid(configs, settings)
        table.to_csv(out / "grid.csv", index=False)
        (out / "grid.md").write_text(report.grid_markdown(table) + "\n\n" + report.skipped_markdown(table) + "\n")
        report.plot_time_vs_n(table, out / "time_vs_n.png")
        problems += harness.disagreements(table)
    if "headline" in parts and not args.quick:
        big = harness.Settings(repeats=5, budget=60.0, max_seconds=float("inf"), peers=peers)
        table = harness.run_grid([headline.HEADLINE], big)
        table.to_csv(out / "headline.csv", index=False)
        (out / "headline.md").write_text(report.grid_markdown(table) + "\n")
    if "stages" in parts and not args.quick:
        stages = headline.stage_breakdown()
        stages.to_csv(out / "stages.csv", index=False)
        shown = stages.assign(median_ms=stages.median_ms.map("{:.1f}".format),
                              min_ms=stages.min_ms.map("{:.1f}".format))
        (out / "stages.md").write_text(report.markdown_table(shown) + "\n")
        print(stages.to_string())
    if "criterion" in parts:
        sizes = (1_000, 10_000, 100_000) if args.quick else harness.FULL_SIZES
        timing = headline.criterion_timing([n for n in sizes if n <= args.max_n])
        timing.to_csv(out / "criterion_timing.csv", index=False)
        report.plot_criterion_timing(timing, out / "criterion_timing.png")
    if "memory" in parts and not args.quick:
        result = headline.memory_probe()
        print(json.dumps(result))
        report.write_json(result, out / "memory.json")
    if "import" in parts:
        result = headline.import_and_seed_fit(warm_processes=2 if args.quick else headline.WARM_PROCESSES)
        print(json.dumps(result))
        report.write_json(result, out / "import.json")
    if "study" in parts:
        n_each = args.study_size or (10 if args.quick else 200)
        study = optimum_study.run_study(n_each, with_lme4=E.LME4 in peers,
                                        with_statsmodels=E.STATSMODELS in peers)
        study.to_csv(out / "study.csv", index=False)
        summary = optimum_study.summarize(study).reset_index()
        for column in summary.columns:
            if column.endswith("_%"):
                summary[column] = summary[column].map(lambda v: f"{v:.1f}")
        (out / "study.md").write_text(report.markdown_table(summary) + "\n")
        ours = study[study.engine == "reml_engine"]
        if not (ours.reached_global.all() and ours.reml_engine_below_scan.all()):
            problems.append("reml_engine missed the dense scan's global optimum on some data set")
    print(f"done in {time.perf_counter() - started:.0f} s; results in {out}")
    if problems:
        print("AGREEMENT CHECK FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
