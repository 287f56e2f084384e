"""Timing of whole k-term fits (statistics, problem, global search) against lme4 and mixedlm.

Run from the repository root::

    python -m benchmarks.varcomp_fit small                     # the six reference cases
    python -m benchmarks.varcomp_fit insteval --insteval /work/tmp/insteval.csv
    python -m benchmarks.varcomp_fit subjects_items --rows 1000000 --subjects 10000 --items 1000
    python -m benchmarks.varcomp_fit cells --rows 1000000      # + (1|subj:item)
    python -m benchmarks.varcomp_fit panels --subjects 20000 --items 20000 --rows 400000
    python -m benchmarks.varcomp_fit subjects_items --rows 10000000 --subjects 100000 --peers none --repeat 1

A fit is timed from the raw arrays to the global search's record: coding the factors,
the statistics pass (:func:`compute_vc_stats`), building the problem (:class:`VCProblem`),
lme4's start and :func:`find_optima_terms` (REML), as one call would. Each time is the
median of ``--repeat`` calls after one warm-up call (numba's compilation and caches are
not counted); ``--repeat 1`` times a single call without warm-up. The peers run on the
same data in the same run: lme4's ``lmer()`` through ``benchmarks/lme4_fit.R`` (timed
inside R around ``lmer()`` only, after a warm-up fit) and ``mixedlm.lmer`` (timed around
the call). The criterion each engine reaches is printed next to its time (lme4 and
mixedlm report ``REMLcrit()``); the machine's load average is recorded before and
after, and the ``OPENBLAS_NUM_THREADS`` / ``NUMBA_NUM_THREADS`` of the environment.

``--engine-root PATH`` imports reml_engine from another checkout (for before/after
tables: the same script, the same data). One JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MULTI = ROOT / "tests" / "data" / "multi"


def _median_time(fn, repeat: int):
    """(median seconds, all seconds, last result): one warm-up call first unless repeat == 1."""
    if repeat > 1:
        fn()
    times, result = [], None
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- data -------------------------------------------------------------------------------


def small_cases() -> dict:
    """The six reference cases of tests/data/multi: X, y, factors in lme4's term order,
    the data frame and formula for the peers."""
    import re

    import pandas as pd
    from formulaic import model_matrix

    with open(MULTI / "reference.json") as fh:
        reference = json.load(fh)
    cases = {}
    for name, ref in reference.items():
        response, rhs = (s.strip() for s in ref["formula"].split("~"))
        bars = re.findall(r"\(\s*1\s*\|\s*([^)]+?)\s*\)", rhs)
        fixed = re.sub(r"\+?\s*\(\s*1\s*\|[^)]*\)", "", rhs).strip().rstrip("+").strip() or "1"
        raw = pd.read_csv(MULTI / ref["file"], dtype=str)
        data = raw.copy()
        for column in data.columns:
            converted = pd.to_numeric(data[column], errors="coerce")
            if converted.notna().all():
                data[column] = converted
        factors = {}
        for bar in bars:
            parts = [p.strip() for p in bar.split("/")]
            for depth in range(len(parts), 0, -1):
                columns = parts[:depth]
                labels = raw[columns[0]].astype(str)
                for column in columns[1:]:
                    labels = labels + ":" + raw[column].astype(str)
                factors[":".join(reversed(columns))] = labels.to_numpy()
        frame = raw.copy()
        frame[response] = data[response]
        for column in data.columns:
            if column not in factors and pd.api.types.is_numeric_dtype(data[column]):
                frame[column] = data[column]
        cases[name] = {"X": np.asarray(model_matrix(fixed, data), dtype=float),
                       "y": data[response].to_numpy(dtype=float), "factors": factors,
                       "frame": frame, "formula": ref["formula"], "factor_columns": ()}
    return cases


def subjects_items(rows: int, subjects: int, items: int, seed: int = 0) -> dict:
    """``y ~ x + (1|subj) + (1|item)``: each subject sees a binomial number of items drawn
    at random (:func:`benchmarks.varcomp_eval.subjects_items_data`)."""
    from .varcomp_eval import subjects_items_data

    X, y, factors = subjects_items_data(rows, subjects, items, seed)
    return _simulated(X, y, factors, "y ~ x + (1 | subj) + (1 | item)")


def cells(rows: int, subjects: int, items: int, replicates: int, seed: int = 0) -> dict:
    """``y ~ x + (1|subj) + (1|item) + (1|subj:item)``, every observed cell ``replicates`` times."""
    from .varcomp_eval import subjects_items_cells_data

    X, y, factors = subjects_items_cells_data(rows, subjects, items, replicates, seed)
    return _simulated(X, y, factors, "y ~ x + (1 | subj) + (1 | item) + (1 | subj:item)")


def _simulated(X, y, factors, formula) -> dict:
    import pandas as pd

    frame = pd.DataFrame({"y": y, "x": X[:, 1], "subj": factors["subj"].astype(str),
                          "item": factors["item"].astype(str)})
    return {"X": X, "y": y, "factors": factors, "frame": frame, "formula": formula, "factor_columns": ()}


def insteval(path: str) -> dict:
    """``y ~ service + studage + (1|s) + (1|d) + (1|dept)`` on lme4's InstEval."""
    import pandas as pd

    from .varcomp_eval import insteval_data

    X, y, factors = insteval_data(path)
    frame = pd.read_csv(path, dtype={"s": str, "d": str, "dept": str, "studage": str})
    return {"X": X, "y": y, "factors": factors, "frame": frame,
            "formula": "y ~ service + studage + (1 | s) + (1 | d) + (1 | dept)", "factor_columns": ("studage",)}


# --- engines ----------------------------------------------------------------------------


def fit_reml_engine(X, y, factors):
    """One whole fit; (summary, problem, seconds per stage)."""
    from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats, find_optima_terms
    from reml_engine.varcomp.lme4_start import lme4_start_theta_from_data

    t0 = time.perf_counter()
    terms = RandomTerms.from_labels(factors)
    t1 = time.perf_counter()
    stats = compute_vc_stats(X, y, terms)
    t2 = time.perf_counter()
    problem = VCProblem(stats)
    t3 = time.perf_counter()
    start = lme4_start_theta_from_data(y, list(factors.values()))
    summary = find_optima_terms(problem, True, lme4_start=start)
    t4 = time.perf_counter()
    return summary, problem, {"code_factors": t1 - t0, "statistics": t2 - t1, "problem": t3 - t2,
                              "search": t4 - t3}


def run_reml_engine(case: dict, repeat: int) -> dict:
    seconds, times, (summary, problem, stages) = _median_time(
        lambda: fit_reml_engine(case["X"], case["y"], case["factors"]), repeat)
    best = summary.global_optimum
    return {"seconds": seconds, "timings": times, "stages_last": stages, "plan": problem.plan,
            "search": summary.search, "n_evaluations": summary.n_evaluations,
            "n_reductions": summary.n_reductions, "criterion": best.criterion,
            "theta": np.sqrt(best.tau).tolist(), "optima": len(summary.optima)}


def run_lme4(case: dict, repeat: int, workdir: str, timeout: float) -> dict:
    csv = os.path.join(workdir, "data.csv")
    case["frame"].to_csv(csv, index=False)
    args = ["Rscript", str(HERE / "lme4_fit.R"), csv, case["formula"], str(repeat if repeat > 1 else 0)]
    if case["factor_columns"]:
        args.append(",".join(case["factor_columns"]))
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-300:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"seconds": result["median_seconds"], "timings": result["timings_seconds"],
            "criterion": result["reml_criterion"], "theta": result["theta"]}


def run_mixedlm(case: dict, repeat: int) -> dict:
    import warnings

    import mixedlm

    frame = case["frame"].copy()
    for column in case["factor_columns"]:
        frame[column] = frame[column].astype("category")

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mixedlm.lmer(case["formula"], frame, REML=True)

    try:
        seconds, times, result = _median_time(fit, repeat)
    except Exception as err:  # a peer's failure is reported, not raised
        return {"error": f"{type(err).__name__}: {str(err)[:200]}"}
    criterion = None
    for name in ("REMLcrit", "deviance"):
        value = getattr(result, name, None)
        if value is not None:
            try:
                criterion = float(value() if callable(value) else value)
                break
            except Exception:  # noqa: S112
                continue
    return {"seconds": seconds, "timings": times, "criterion": criterion,
            "theta": np.asarray(result.theta, dtype=float).tolist()}


def run_case(label: str, case: dict, args) -> dict:
    out = {"case": label, "rows": int(len(case["y"])),
           "levels": {name: int(len(np.unique(f))) for name, f in case["factors"].items()},
           "load_before": _load()}
    out["reml_engine"] = run_reml_engine(case, args.repeat)
    peers = [] if args.peers == "none" else args.peers.split(",")
    with tempfile.TemporaryDirectory() as workdir:
        if "lme4" in peers:
            try:
                out["lme4"] = run_lme4(case, args.peer_repeat, workdir, args.timeout)
            except subprocess.TimeoutExpired:
                out["lme4"] = {"error": f"timed out after {args.timeout} s"}
    if "mixedlm" in peers:
        out["mixedlm"] = run_mixedlm(case, args.peer_repeat)
    out["load_after"] = _load()
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for peer in ("lme4", "mixedlm"):
        if "seconds" in out.get(peer, {}):
            out[f"speedup_vs_{peer}"] = out[peer]["seconds"] / out["reml_engine"]["seconds"]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["small", "insteval", "subjects_items", "cells", "panels"])
    parser.add_argument("--insteval", default="/work/tmp/insteval.csv")
    parser.add_argument("--rows", type=float, default=1e6)
    parser.add_argument("--subjects", type=float, default=1e4)
    parser.add_argument("--items", type=float, default=1e3)
    parser.add_argument("--replicates", type=int, default=2)
    parser.add_argument("--only", default="", help="small: comma-separated case names")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peer-repeat", type=int, default=3)
    parser.add_argument("--peers", default="lme4,mixedlm", help="comma-separated, or 'none'")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--engine-root", default=None, help="import reml_engine from this checkout")
    args = parser.parse_args(argv)
    if args.engine_root:
        sys.path.insert(0, os.path.abspath(args.engine_root))
    import reml_engine

    env = {key: os.environ.get(key) for key in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    header = {"engine": os.path.dirname(reml_engine.__file__), "env": env, "cores": os.cpu_count()}
    print(json.dumps(header), flush=True)
    rows, subjects, items = int(args.rows), int(args.subjects), int(args.items)
    if args.case == "small":
        wanted = [c for c in args.only.split(",") if c]
        for name, case in small_cases().items():
            if not wanted or name in wanted:
                print(json.dumps(run_case(name, case, args)), flush=True)
        return
    if args.case == "insteval":
        label, case = "InstEval", insteval(args.insteval)
    elif args.case == "cells":
        label, case = f"subjects x items + cells {rows:.0e}", cells(rows, subjects, items, args.replicates)
    else:
        label, case = f"subjects x items {rows:.0e} ({subjects} x {items})", subjects_items(rows, subjects, items)
    print(json.dumps(run_case(label, case, args)), flush=True)


if __name__ == "__main__":
    main()
