"""The fixed cost of one fit on small data, before and after a change, in one run (issue 13).

``python -m benchmarks.small_fit BEFORE_TREE [AFTER_TREE] [--rounds R] [--calls C]``

Each round times ``rl.fit(X, y, groups)`` (what ``benchmarks.engines.run_reml_arrays``
times) on the four small configurations, ``C`` warm calls each, in a fresh process for
each tree in turn (before, after, before, ...), so that both see the same load; then
mixedlm's formula fit (``benchmarks.engines.fit_mixedlm``) on the same data in this
process. Times are the CPU time of the calling thread (``time.thread_time``: on a
shared machine the wall clock counts the other sessions' work too) and, for mixedlm,
also the wall clock (its Rust core may use threads of its own, which the thread's CPU
time does not count). Medians over all rounds are printed, with the fitted tau of each
tree (the estimates must agree).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("Config(1000, 10, 2, True)", "Config(1000, 100, 10, True)", "Config(1000, 100, 10, False)",
           "Config(3000, 50, 57, True, 56)")
#: Untimed calls before the timed ones (numba's kernels load, caches fill).
WARMUP_CALLS = 3


def _worker(calls: int) -> None:
    """Time the tree on sys.path[0]; print {label: [seconds...], label + " tau": tau} as JSON."""
    import reml_engine as rl
    from benchmarks.simulate import Config, simulate  # noqa: F401 (eval below)

    out = {}
    for text in CONFIGS:
        data = simulate(eval(text))
        for _ in range(WARMUP_CALLS):
            fit = rl.fit(data.X, data.y, data.groups)
        seconds = []
        for _ in range(calls):
            start = time.thread_time()
            fit = rl.fit(data.X, data.y, data.groups)
            seconds.append(time.thread_time() - start)
        out[text] = seconds
        out[text + " tau"] = float(fit.tau)
    print(json.dumps(out))


def _mixedlm(calls: int) -> dict[str, tuple[list[float], list[float]]]:
    from benchmarks import engines as E
    from benchmarks.simulate import Config, simulate  # noqa: F401 (eval below)

    out = {}
    for text in CONFIGS:
        data = simulate(eval(text))
        frame = data.frame()
        for _ in range(WARMUP_CALLS):
            E.fit_mixedlm(frame, data.config.formula(), True)
        cpu, wall = [], []
        for _ in range(calls):
            start, start_wall = time.thread_time(), time.perf_counter()
            E.fit_mixedlm(frame, data.config.formula(), True)
            cpu.append(time.thread_time() - start)
            wall.append(time.perf_counter() - start_wall)
        out[text] = (cpu, wall)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.calls)
        return
    trees = {"before": args.before, "after": args.after}
    times: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    taus: dict[str, dict[str, float]] = {name: {} for name in trees}
    peer: dict[str, tuple[list[float], list[float]]] = {}
    here = Path(__file__).resolve().parent
    for _ in range(args.rounds):
        for name, tree in trees.items():
            # reml_engine and benchmarks.simulate from the tree measured, the worker from here.
            code = f"import sys; sys.path[:0] = [{tree!r}, {str(here)!r}]; import small_fit; small_fit._worker({args.calls})"
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tree)
            for key, value in json.loads(result.stdout).items():
                if key.endswith(" tau"):
                    taus[name][key[:-4]] = value
                else:
                    times[name].setdefault(key, []).extend(value)
        for key, (cpu, wall) in _mixedlm(args.calls).items():
            old = peer.get(key, ([], []))
            peer[key] = (old[0] + cpu, old[1] + wall)
    print("| data | before | after | mixedlm (thread CPU / wall) | tau before | tau after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in CONFIGS:
        before = statistics.median(times["before"][key]) * 1e3
        after = statistics.median(times["after"][key]) * 1e3
        cpu, wall = (statistics.median(v) * 1e3 for v in peer[key])
        print(f"| {key} | {before:.2f} ms | {after:.2f} ms | {cpu:.2f} / {wall:.2f} ms | "
              f"{taus['before'][key]!r} | {taus['after'][key]!r} |")


if __name__ == "__main__":
    main()
