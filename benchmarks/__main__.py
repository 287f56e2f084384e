"""``python -m benchmarks [--quick] [--parts grid,headline,...]``: run and write the results.

Parts (``--parts``, comma-separated; all by default):

* ``machine``: what the numbers were measured on (``machine.json``);
* ``grid``: every engine on N 1e3 to 1e7, G 10 to 1e6, p 2 and 10, and the wide designs
  (p up to 1001 through a factor) (``grid.csv``, ``grid.md``, ``time_vs_n.png``);
* ``headline``: N = 1e6, G = 1e4, p = 6, every engine (``headline.csv``, ``headline.md``);
* ``stages``: the stage breakdown of one fit (``stages.csv``, ``stages.md``);
* ``criterion``: time per criterion evaluation against N and G (``criterion_timing.*``);
* ``memory``: peak memory of a fit at N = 1e7 in a fresh process (``memory.json``);
* ``import``: a fresh process importing reml_engine and fitting the seed (``import.json``);
* ``study``: how often each engine reaches the global optimum (``study.csv``, ``study.md``);
* ``parquet``: a fit from Parquet files on disk against pyarrow's read (``parquet.json``);
* ``many``: k responses on one design: reml_engine's loop, FLASH-MM, ``rl.fit(X, Y, groups)``
  (``many.csv``, ``many.md``);
* ``wide``: issue 13's wide target, N = 2e4 with a 1000-level factor (p = 1001): time and
  peak memory of reml_engine and lme4, memory as a multiple of the design matrix
  (``wide.csv``, ``wide.md``);
* ``terms``: several random terms: InstEval, subjects x items, a crossed fit at 1e7 rows
  (``terms.csv``, ``terms.md``).

``--quick`` runs every part at a tiny size (CI). The run fails (exit 1) when a peer at
reml_engine's optimum disagrees on the fixed effects, an engine gets below reml_engine's
optimum, reml_engine misses the dense scan's optimum in the study, or a stage of the
breakdown cannot be run. Peers and R are optional: each one missing is recorded as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import bench_parquet, harness, headline, many, optimum_study, report, terms
from . import engines as E

RESULTS = Path(__file__).parent / "results"
PARTS = ("machine", "grid", "headline", "stages", "criterion", "memory", "import", "study",
         "parquet", "many", "terms", "wide")
QUICK_GRID = list(harness.QUICK_GRID)
#: Rows of the Parquet part (the standalone ``bench_parquet.py`` defaults to 2e8).
PARQUET_ROWS, QUICK_PARQUET_ROWS = 20_000_000, 20_000
#: Fresh processes of each kind (fit, pyarrow read) in the full run, alternated.
PARQUET_ROUNDS = 2
#: Time limit per fit of the several-terms part (the issue's targets are fits that take
#: lme4 minutes; the grid's limit would skip the very comparisons asked for).
TERMS_MAX_SECONDS = 900.0


def machine() -> dict:
    """What the numbers were measured on, and which peers (with their versions)."""
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
    for peer in (*E.PEERS, E.FLASHMM):
        info[peer] = E.peer_version(peer) or "not installed"
    if E.r_info():
        info["R"] = E.r_info()["R"]
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


def _peers(args) -> tuple[str, ...]:
    chosen = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(E.PEERS))
    if unknown:
        raise SystemExit(f"unknown peer(s) {unknown}; choose from {list(E.PEERS)}")
    dropped = {E.LME4} if args.no_lme4 else set()
    dropped |= {E.STATSMODELS} if args.no_statsmodels else set()
    return tuple(p for p in chosen if p not in dropped)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every part at a tiny size (CI)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--peers", default=",".join(E.PEERS),
                        help="comma-separated peers of the grid, headline and study (default: all; "
                             "those not installed are recorded as such)")
    parser.add_argument("--no-lme4", action="store_true", help="skip lme4 even when Rscript is installed")
    parser.add_argument("--no-statsmodels", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip a peer predicted to take longer than this per fit")
    parser.add_argument("--max-seconds-terms", type=float, default=None,
                        help=f"time limit per fit of the terms part (default {TERMS_MAX_SECONDS:g})")
    parser.add_argument("--memory-cap-gb", type=float, default=None,
                        help=f"address space each in-process engine may add (default {harness.MEMORY_CAP_GB:g})")
    parser.add_argument("--study-size", type=int, default=None, help="data sets per study family")
    parser.add_argument("--max-n", type=float, default=1e7,
                        help="largest N of any part (a larger data set is skipped, and says so)")
    parser.add_argument("--responses", type=int, default=None, help="k of the many-responses part")
    args = parser.parse_args(argv)

    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    peers = _peers(args)
    memory = args.memory_cap_gb or harness.MEMORY_CAP_GB
    if args.quick:
        settings = harness.Settings(repeats=2, budget=0.5, max_seconds=args.max_seconds or 5.0, peers=peers,
                                    memory_gb=memory)
    else:
        settings = harness.Settings(repeats=7, budget=10.0, max_seconds=args.max_seconds or 120.0, peers=peers,
                                    memory_gb=memory)
    started = time.perf_counter()
    durations: dict[str, float] = {}
    problems: list[str] = []
    # The threaded statistics pass is warmed up only when the run may reach its size.
    harness.warm_up(0 if args.quick else int(args.max_n))

    for part in parts:
        t0 = time.perf_counter()
        problems += PART_RUNNERS[part](args, settings, out)
        durations[part] = time.perf_counter() - t0
        print(f"[{part}: {durations[part]:.1f} s]", flush=True)

    total = time.perf_counter() - started
    report.write_json({"quick": args.quick, "total_seconds": total, "part_seconds": durations,
                       "load_average_at_end": os.getloadavg()[0]}, out / "run.json")
    print(f"done in {total:.0f} s; results in {out}")
    if problems:
        print("AGREEMENT CHECK FAILED:\n  " + "\n  ".join(problems))
        raise SystemExit(1)


def _machine(args, settings, out) -> list[str]:
    report.write_json(machine(), out / "machine.json")
    return []


def _grid(args, settings, out) -> list[str]:
    configs = QUICK_GRID if args.quick else harness.grid([n for n in harness.FULL_SIZES if n <= args.max_n])
    table = harness.run_grid(configs, settings)
    table.to_csv(out / "grid.csv", index=False)
    (out / "grid.md").write_text(report.grid_report(table))
    report.plot_time_vs_n(table, out / "time_vs_n.png")
    return harness.disagreements(table)


def _too_large(nobs: int, args, out: Path, name: str) -> bool:
    """A part whose data exceed ``--max-n`` writes why it did not run, and is skipped."""
    if nobs <= args.max_n:
        return False
    reason = f"skipped: N = {nobs:.0e} is above --max-n {args.max_n:.0e}"
    print(f"{name}: {reason}")
    (out / f"{name}.md").write_text(reason + "\n")
    return True


def _headline(args, settings, out) -> list[str]:
    config = headline.QUICK_HEADLINE if args.quick else headline.HEADLINE
    if _too_large(config.nobs, args, out, "headline"):
        return []
    big = harness.Settings(repeats=settings.repeats if args.quick else 5, budget=settings.budget if args.quick else 60.0,
                           max_seconds=float("inf"), peers=settings.peers, memory_gb=settings.memory_gb)
    table = harness.run_grid([config], big)
    table.to_csv(out / "headline.csv", index=False)
    (out / "headline.md").write_text(report.grid_report(table))
    return harness.disagreements(table)


def _stages(args, settings, out) -> list[str]:
    config = headline.QUICK_STAGES if args.quick else headline.HEADLINE
    if _too_large(config.nobs, args, out, "stages"):
        return []
    stages = headline.stage_breakdown(config, repeats=3 if args.quick else 7)
    stages.to_csv(out / "stages.csv", index=False)
    shown = stages.assign(median_ms=stages.median_ms.map("{:.1f}".format),
                          min_ms=stages.min_ms.map("{:.1f}".format),
                          load_average=stages.load_average.map("{:.1f}".format))
    (out / "stages.md").write_text(report.markdown_table(shown) + "\n")
    print(stages.to_string())
    return [f"stage breakdown: {r.stage.strip()}: {r.error}" for r in stages.itertuples() if r.error]


def _criterion(args, settings, out) -> list[str]:
    sizes = (1_000, 10_000) if args.quick else harness.FULL_SIZES
    timing = headline.criterion_timing([n for n in sizes if n <= args.max_n])
    timing.to_csv(out / "criterion_timing.csv", index=False)
    report.plot_criterion_timing(timing, out / "criterion_timing.png")
    return []


def _memory(args, settings, out) -> list[str]:
    config = headline.QUICK_MEMORY_CONFIG if args.quick else headline.MEMORY_CONFIG
    if _too_large(config.nobs, args, out, "memory"):
        return []
    result = headline.memory_probe(config)
    result["load_average"] = os.getloadavg()[0]
    print(json.dumps(result))
    report.write_json(result, out / "memory.json")
    return []


def _import(args, settings, out) -> list[str]:
    if args.quick:
        result = headline.import_and_seed_fit(warm_processes=0, fresh_cache=False)
    else:
        result = headline.import_and_seed_fit()
    print(json.dumps(result))
    report.write_json(result, out / "import.json")
    return []


def _study(args, settings, out) -> list[str]:
    n_each = args.study_size or (2 if args.quick else 200)
    study = optimum_study.run_study(n_each, peers=settings.peers)
    study.to_csv(out / "study.csv", index=False)
    summary = optimum_study.summarize(study).reset_index()
    for column in summary.columns:
        if column.endswith("_%"):
            summary[column] = summary[column].map(lambda v: f"{v:.1f}")
    (out / "study.md").write_text(report.markdown_table(summary) + "\n")
    ours = study[study.engine == "reml_engine"]
    if not (ours.reached_global.all() and ours.reml_engine_below_scan.all()):
        return ["reml_engine missed the dense scan's global optimum on some data set"]
    return []


def _parquet(args, settings, out) -> list[str]:
    reason = bench_parquet.missing_reason()
    if reason:
        result = {"skipped": reason}
    elif args.quick:
        result = bench_parquet.run_parquet(QUICK_PARQUET_ROWS, groups=100, rows_per_file=5_000)
    else:
        result = bench_parquet.run_parquet(int(min(PARQUET_ROWS, args.max_n)), rounds=PARQUET_ROUNDS)
    print(json.dumps(result))
    report.write_json(result, out / "parquet.json")
    return []


def _wide(args, settings, out) -> list[str]:
    config = harness.QUICK_WIDE_TARGET if args.quick else harness.WIDE_TARGET
    if _too_large(config.nobs, args, out, "wide"):
        return []
    # lme4 takes minutes at p = 1001: its warm-up fit and one timed fit, no time cap.
    wide = harness.Settings(repeats=settings.repeats if args.quick else 3, budget=settings.budget if args.quick else 60.0,
                            max_seconds=float("inf"), peers=tuple(p for p in settings.peers if p == E.LME4),
                            memory_gb=settings.memory_gb, lme4_repeats=1)
    table = harness.run_grid([config], wide)
    # The design matrix X alone (float64, N x p), which the target is stated against.
    table["design_mb"] = config.nobs * config.p * 8 / 2**20
    table["peak_over_design"] = table.peak_extra_mb / table.design_mb
    table.to_csv(out / "wide.csv", index=False)
    (out / "wide.md").write_text(report.grid_report(table))
    return harness.disagreements(table)


def _many(args, settings, out) -> list[str]:
    config = many.QUICK if args.quick else many.FULL
    if _too_large(config.nobs, args, out, "many"):
        return []
    if args.responses:
        config = many.ManyConfig(config.nobs, config.ngroups, config.p, args.responses,
                                 min(config.loop_columns, args.responses))
    table = many.run_many(config, settings)
    table.to_csv(out / "many.csv", index=False)
    (out / "many.md").write_text(report.many_markdown(table) + "\n")
    return many.disagreements(table)


def _terms(args, settings, out) -> list[str]:
    loaders = terms.quick_datasets() if args.quick else terms.full_datasets()
    limit = args.max_seconds_terms or (settings.max_seconds if args.quick else TERMS_MAX_SECONDS)
    table = terms.run_terms(loaders, replace(settings, max_seconds=limit), max_rows=args.max_n)
    table.to_csv(out / "terms.csv", index=False)
    (out / "terms.md").write_text(report.terms_markdown(table) + "\n")
    return terms.disagreements(table)


PART_RUNNERS = {"machine": _machine, "grid": _grid, "headline": _headline, "stages": _stages,
                "criterion": _criterion, "memory": _memory, "import": _import, "study": _study,
                "parquet": _parquet, "many": _many, "terms": _terms,
                "wide": _wide}


if __name__ == "__main__":
    main()
