"""The figures the issue sets as targets, each measured on its own.

* the headline size N = 1e6, G = 1e4, p = 6 (all engines, through :mod:`benchmarks.harness`);
* time per criterion evaluation against N and G;
* peak memory of a fit at N = 1e7, p = 6, in a fresh process;
* a fresh process importing reml_engine and fitting the seed data, with a cold and a
  warm numba cache;
* the stage breakdown of one fit (each stage of the pipeline timed alone).

Each has a tiny version for ``--quick`` (CI), so that none can break unseen.

The stage breakdown times the pipeline's public stages one by one (``rl.design_from_arrays``
or ``rl.build_design``, ``rl.sufficient_statistics``, ``rl.criterion_problem``,
``rl.find_optima``, ``rl.build_fit``; see ``docs/pipeline.md``) and, inside the statistics
stage, the group coding and the kernel. :func:`stage_function` finds each stage by name, at
the top level first, then in the module that holds it; a stage that cannot be found or
called is reported with the reason and fails the run, so that a change of the pipeline
shows up in CI instead of breaking this part silently.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np
import pandas as pd

import reml_engine as rl

from .simulate import Config, simulate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADLINE = Config(1_000_000, 10_000, 6, True)
MEMORY_CONFIG = Config(10_000_000, 100_000, 6, True)
#: The tiny versions run by ``--quick``.
QUICK_HEADLINE = Config(10_000, 100, 6, True)
QUICK_MEMORY_CONFIG = Config(100_000, 1_000, 6, True)
QUICK_STAGES = Config(10_000, 100, 6, True)
#: Where each stage of the pipeline lives when it is not a top-level name of reml_engine.
STAGE_HOMES = {
    "design_from_arrays": ("reml_engine.frontend.design",),
    "build_design": ("reml_engine.frontend.design",),
    "sufficient_statistics": ("reml_engine.core.statistics",),
    "factorize_groups": ("reml_engine.frontend.groups",),
    "pilot_shift": ("reml_engine.core.statistics",),
    "compute_group_stats": ("reml_engine.core.statistics",),
    "criterion_problem": ("reml_engine.core.problem",),
    "find_optima": ("reml_engine.core.optimizer",),
    "build_fit": ("reml_engine.core.fitting",),
    "scan_grid": ("reml_engine.core.optimizer",),
}
#: Single criterion evaluations timed per data set (median taken).
EVALUATION_REPEATS = 200
#: Fresh processes with a warm cache for the import-and-fit figure (median taken).
WARM_PROCESSES = 5

SEED_SCRIPT = """
import time
t0 = time.perf_counter()
import reml_engine as rl
t1 = time.perf_counter()
m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def stage_function(name: str):
    """The pipeline stage ``name``: ``reml_engine.<name>`` or the first module of
    ``STAGE_HOMES[name]`` that has it; LookupError naming every place tried."""
    if hasattr(rl, name):
        return getattr(rl, name)
    for module_name in STAGE_HOMES[name]:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(f"stage {name!r} is in none of reml_engine, {', '.join(STAGE_HOMES[name])}")


def criterion_timing(sizes, rows_per_group=(100, 10), seed: int = 0, log=print) -> pd.DataFrame:
    """Seconds per criterion evaluation, alone and within the vectorized scan, per data set."""
    scan_grid = stage_function("scan_grid")

    rows = []
    for n in sizes:
        for per_group in rows_per_group:
            for balanced in (True, False):
                config = Config(n, n // per_group, 6, balanced)
                data = simulate(config, seed)
                stats = rl.fit(data.X, data.y, data.groups).stats
                del data
                single = []
                for _ in range(EVALUATION_REPEATS):
                    t0 = time.perf_counter()
                    rl.criterion(1.0, stats, True)
                    single.append(time.perf_counter() - t0)
                taus = scan_grid(stats)
                scan = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    rl.evaluate(taus, stats, True)
                    scan.append(time.perf_counter() - t0)
                rows.append({
                    "nobs": n, "ngroups": stats.ngroups, "balanced": balanced,
                    "distinct_sizes": len(stats.sizes),
                    "single_eval_us": 1e6 * float(np.median(single)),
                    "scan_points": len(taus),
                    "scan_per_point_us": 1e6 * float(np.median(scan)) / len(taus),
                })
                log(f"criterion evaluation {config.label}: {rows[-1]['single_eval_us']:.0f} us, "
                    f"{rows[-1]['scan_per_point_us']:.2f} us per scan point, U = {len(stats.sizes)}")
    return pd.DataFrame(rows)


def memory_probe(config: Config = MEMORY_CONFIG) -> dict:
    """Peak memory of a fit from arrays, then from a DataFrame, in a fresh process."""
    code = (
        "import json, sys; from benchmarks.headline import _memory_in_process; "
        f"print(json.dumps(_memory_in_process({config.nobs}, {config.ngroups}, {config.p})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_in_process(nobs: int, ngroups: int, p: int) -> dict:
    from .engines import peak_extra_memory

    config = Config(nobs, ngroups, p, True)
    small = simulate(Config(10_000, 100, p, True))
    rl.fit(small.X, small.y, small.groups)  # compile/load the kernels first
    rl.lmer(small.config.formula(), small.frame())
    data = simulate(config)
    input_mb = (data.X.nbytes + data.y.nbytes + data.groups.nbytes) / 2**20
    t0 = time.perf_counter()
    _, arrays_extra = peak_extra_memory(partial(rl.fit, data.X, data.y, data.groups))
    arrays_s = time.perf_counter() - t0
    frame = data.frame()
    del data
    frame_mb = frame.memory_usage(index=False).sum() / 2**20
    t0 = time.perf_counter()
    _, formula_extra = peak_extra_memory(partial(rl.lmer, config.formula(), frame))
    formula_s = time.perf_counter() - t0
    return {
        "nobs": nobs, "ngroups": ngroups, "p": p,
        "input_mb": input_mb, "arrays_extra_mb": arrays_extra, "arrays_seconds": arrays_s,
        "arrays_ratio": (input_mb + arrays_extra) / input_mb,
        "frame_mb": frame_mb, "formula_extra_mb": formula_extra, "formula_seconds": formula_s,
        "formula_ratio": (frame_mb + formula_extra) / frame_mb,
    }


def import_and_seed_fit(warm_processes: int = WARM_PROCESSES, fresh_cache: bool = True) -> dict:
    """Wall time of a fresh process importing reml_engine and fitting the seed data.

    With ``fresh_cache`` the first process runs with an empty numba cache directory (it
    compiles every kernel and writes the cache: the ``cold_*`` figures) and the next
    ones find the cache warm. Without it (``--quick``) every process uses the usual
    cache, and the first one is reported as ``first_*``: cold or warm, whatever the cache
    held.
    """
    runs = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache) if fresh_cache else dict(os.environ)
        for _ in range(1 + warm_processes):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", SEED_SCRIPT], capture_output=True, text=True,
                                 env=env, cwd=ROOT)
            wall = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            import_s, fit_s = map(float, out.stdout.split())
            runs.append({"wall_s": wall, "import_s": import_s, "fit_s": fit_s})
    warm = pd.DataFrame(runs[1:], columns=["wall_s", "import_s", "fit_s"])
    first = "cold" if fresh_cache else "first"
    return {
        f"{first}_wall_s": runs[0]["wall_s"], f"{first}_import_s": runs[0]["import_s"],
        f"{first}_fit_s": runs[0]["fit_s"],
        "warm_wall_s": float(warm.wall_s.median()), "warm_import_s": float(warm.import_s.median()),
        "warm_fit_s": float(warm.fit_s.median()), "warm_processes": warm_processes,
        "load_average": os.getloadavg()[0],
    }


def stage_breakdown(config: Config = HEADLINE, repeats: int = 7) -> pd.DataFrame:
    """Median seconds of each stage of a fit, run one at a time, next to the floor.

    The stages are the pipeline's own functions, in the order ``rl.fit`` runs them:
    building the design from arrays (the array checks), the sufficient statistics (of
    which the group coding and the one-pass kernel are also timed alone), the criterion
    problem (identifiability checks, rank, centring), the global optimization and the
    result; then the formula front end. A stage that cannot be found or called gets its
    reason in ``error`` (and NaN times).
    """
    data = simulate(config)
    frame = data.frame()
    state: dict = {}

    def design():
        state["design"] = stage_function("design_from_arrays")(data.X, data.y, data.groups)
        return state["design"]

    def statistics():
        state["statistics"] = stage_function("sufficient_statistics")(state["design"])
        return state["statistics"]

    def codes():
        state["codes"] = stage_function("factorize_groups")(state["design"].groups)
        return state["codes"]

    def kernel():
        shift = stage_function("pilot_shift")(data.X, data.y, 0)
        return stage_function("compute_group_stats")(data.X, data.y, state["codes"], shift)

    def problem():
        state["problem"] = stage_function("criterion_problem")(state["statistics"], True)
        return state["problem"]

    def optimizer():
        state["summary"] = stage_function("find_optima")(state["problem"])
        return state["summary"]

    def result():
        return stage_function("build_fit")(state["problem"], state["summary"])

    stages = {
        "numpy floor: X'X and X'y": lambda: (data.X.T @ data.X, data.X.T @ data.y),
        "whole fit from arrays": lambda: rl.fit(data.X, data.y, data.groups),
        "  design_from_arrays (checks)": design,
        "  sufficient_statistics": statistics,
        "    factorize_groups": codes,
        "    compute_group_stats (kernel)": kernel,
        "  criterion_problem (checks, rank, centring)": problem,
        "  find_optima (the global scan)": optimizer,
        "  build_fit (optima as fits, lme4's pick, diagnosis)": result,
        "whole fit from DataFrame + formula": lambda: rl.lmer(config.formula(), frame),
        "  build_design (formula)": lambda: stage_function("build_design")(config.formula(), frame),
    }
    rows = []
    for name, call in stages.items():
        try:
            call()
        except Exception as err:  # reported, and the run fails on it (see __main__)
            rows.append({"stage": name, "median_ms": np.nan, "min_ms": np.nan,
                         "error": f"{type(err).__name__}: {err}"[:300]})
            continue
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - t0)
        rows.append({"stage": name, "median_ms": 1e3 * float(np.median(seconds)),
                     "min_ms": 1e3 * float(np.min(seconds)), "error": ""})
    table = pd.DataFrame(rows)
    table["load_average"] = os.getloadavg()[0]
    return table
