"""The figures the issue sets as targets, each measured on its own.

* the headline size N = 1e6, G = 1e4, p = 6 (all engines, through :mod:`benchmarks.harness`);
* time per criterion evaluation against N and G;
* peak memory of a fit at N = 1e7, p = 6, in a fresh process;
* a fresh process importing reml_engine and fitting the seed data, with a cold and a
  warm numba cache.
"""

from __future__ import annotations

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

HEADLINE = Config(1_000_000, 10_000, 6, True)
MEMORY_CONFIG = Config(10_000_000, 100_000, 6, True)
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


def criterion_timing(sizes, rows_per_group=(100, 10), seed: int = 0, log=print) -> pd.DataFrame:
    """Seconds per criterion evaluation, alone and within the vectorized scan, per data set."""
    from reml_engine.optimizer import scan_grid

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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def import_and_seed_fit(warm_processes: int = WARM_PROCESSES) -> dict:
    """Wall time of a fresh process importing reml_engine and fitting the seed data.

    The first process runs with an empty numba cache directory (it compiles every
    kernel and writes the cache); the next ones find the cache warm.
    """
    runs = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for _ in range(1 + warm_processes):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", SEED_SCRIPT], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            import_s, fit_s = map(float, out.stdout.split())
            runs.append({"wall_s": wall, "import_s": import_s, "fit_s": fit_s})
    warm = pd.DataFrame(runs[1:])
    return {
        "cold_wall_s": runs[0]["wall_s"], "cold_import_s": runs[0]["import_s"], "cold_fit_s": runs[0]["fit_s"],
        "warm_wall_s": float(warm.wall_s.median()), "warm_import_s": float(warm.import_s.median()),
        "warm_fit_s": float(warm.fit_s.median()), "warm_processes": warm_processes,
    }


def stage_breakdown(config: Config = HEADLINE, repeats: int = 7) -> pd.DataFrame:
    """Median seconds of each stage of a fit, run one at a time, next to the floor.

    The stages are the pipeline's own functions: building the design from arrays (the
    data checks) or from a DataFrame and formula, coding the groups, the one-pass
    statistics kernel, and everything after the statistics (rank check, global
    optimization, result), of which the optimizer alone is also timed.
    """
    from reml_engine.design import build_design, design_from_arrays
    from reml_engine.groups import factorize_groups
    from reml_engine.model import fit_stats
    from reml_engine.optimizer import find_optima
    from reml_engine.stats import compute_group_stats, pilot_shift

    data = simulate(config)
    frame = data.frame()
    design = design_from_arrays(data.X, data.y, data.groups)
    codes = factorize_groups(design.groups)
    shift = pilot_shift(data.X, data.y, 0)
    stats = compute_group_stats(data.X, data.y, codes, shift, skip_columns=(0,))
    pooled = stats.pooled(stats.shift)
    stages = {
        "numpy floor: X'X and X'y": lambda: (data.X.T @ data.X, data.X.T @ data.y),
        "whole fit from arrays": lambda: rl.fit(data.X, data.y, data.groups),
        "  design_from_arrays (checks)": lambda: design_from_arrays(data.X, data.y, data.groups),
        "  factorize_groups": lambda: factorize_groups(design.groups),
        "  compute_group_stats (kernel)": lambda: compute_group_stats(data.X, data.y, codes, shift,
                                                                      skip_columns=(0,)),
        "  fit_stats (after the statistics)": lambda: fit_stats(stats, design.column_names, 0),
        "    find_optima (the global scan)": lambda: find_optima(pooled, True),
        "whole fit from DataFrame + formula": lambda: rl.lmer(config.formula(), frame),
        "  build_design (formula)": lambda: build_design(config.formula(), frame),
    }
    rows = []
    for name, call in stages.items():
        call()
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - t0)
        rows.append({"stage": name, "median_ms": 1e3 * float(np.median(seconds)),
                     "min_ms": 1e3 * float(np.min(seconds))})
    return pd.DataFrame(rows)
