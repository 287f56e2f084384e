"""What the formula path costs over the arrays fit on small data (issue 13).

``python -m benchmarks.formula_overhead --before DIR`` times, on the small designs of
issue 13, ``rl.fit(X, y, groups)``, ``rl.lmer(formula, frame)`` and mixedlm's
``lmer(formula, frame)`` with the tree in DIR (an export of the commit before a change,
e.g. ``git archive <commit> | tar -x -C DIR``) and with this tree, in child processes that
alternate (before, after, before, ...) so that the load of a shared machine falls on both
alike. Each child times every call ``--repeats`` times after a warm-up, the engines
interleaved call by call, by wall clock and by the CPU time of the calling thread
(``time.thread_time``, which a loaded machine inflates less); the medians of each round and
the median over the rounds are printed. Without ``--before`` only this tree is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: The designs: (label, N, G, p, balanced, factor levels).
DESIGNS = (
    ("N=1e3 G=10 p=2", 1000, 10, 2, True, 0),
    ("N=1e3 G=100 p=10", 1000, 100, 10, True, 0),
    ("N=1e3 G=100 p=10 unbalanced", 1000, 100, 10, False, 0),
    ("N=3000 G=50 p=57 (56-level factor)", 3000, 50, 57, True, 56),
)
#: "arrays": rl.fit on the simulated X; "design X": rl.fit on the X, y and groups the
#: formula's design built (the same numbers, possibly another memory order, whose rounding
#: can move the optimizer by a few evaluations); "formula": rl.lmer.
ENGINES = ("arrays", "design X", "formula", "mixedlm")


def _child(repeats: int, peers: bool) -> dict:
    """Timings of this process's reml_engine (first on sys.path) on every design."""
    import reml_engine as rl
    from reml_engine.frontend.design import build_design

    from .engines import MIXEDLM, align_fixef, fit_mixedlm, peer_version
    from .simulate import Config, simulate

    use_mixedlm = peers and peer_version(MIXEDLM) is not None
    out = {}
    for label, nobs, ngroups, p, balanced, levels in DESIGNS:
        data = simulate(Config(nobs, ngroups, p, balanced, levels))
        frame, formula = data.frame(), data.config.formula()
        design = build_design(formula, frame)
        calls = {
            "arrays": lambda data=data: rl.fit(data.X, data.y, data.groups),
            "design X": lambda design=design: rl.fit(design.X, design.y, design.groups),
            "formula": lambda frame=frame, formula=formula: rl.lmer(formula, frame),
        }
        if use_mixedlm:
            calls["mixedlm"] = lambda frame=frame, formula=formula: fit_mixedlm(frame, formula, True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = {name: call() for name, call in calls.items()}  # warm-up
            wall = {name: [] for name in calls}
            cpu = {name: [] for name in calls}
            for _ in range(repeats):
                for name, call in calls.items():
                    w0, c0 = time.perf_counter(), time.thread_time()
                    call()
                    cpu[name].append(time.thread_time() - c0)
                    wall[name].append(time.perf_counter() - w0)
        same = np.allclose(align_fixef(results["formula"].fixef, data.config), results["arrays"].fixef.to_numpy(),
                           rtol=1e-9, atol=0)
        out[label] = {
            "wall_ms": {name: 1e3 * float(np.median(v)) for name, v in wall.items()},
            "cpu_ms": {name: 1e3 * float(np.median(v)) for name, v in cpu.items()},
            "formula_equals_arrays": bool(same),
        }
    return {"reml_engine": rl.__file__, "load": os.getloadavg()[0], "designs": out}


def _run_child(root: Path, repeats: int, peers: bool) -> dict:
    """One child: reml_engine imported from ``root``, this module and the data from this tree."""
    code = (f"import sys, json; sys.path.insert(0, {str(root)!r}); import reml_engine; "
            f"sys.path[0] = {str(ROOT)!r}; from benchmarks.formula_overhead import _child; "
            f"print(json.dumps(_child({repeats}, {peers})))")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a tree of the commit before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--json", type=Path, help="write every round here")
    args = parser.parse_args(argv)
    sides = {"after": ROOT} if args.before is None else {"before": args.before.resolve(), "after": ROOT}
    rounds = {side: [] for side in sides}
    for number in range(args.rounds):
        for side, root in sides.items():
            result = _run_child(root, args.repeats, not args.no_peers)
            rounds[side].append(result)
            print(f"round {number + 1} {side}: load {result['load']:.1f} ({result['reml_engine']})", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))
    print(table(rounds))


def table(rounds: dict) -> str:
    """The medians over the rounds, one row per design and side (a markdown table)."""
    lines = ["| data | side | arrays CPU | formula CPU | formula - arrays CPU | formula - fit of its design's X, CPU "
             "| mixedlm CPU | arrays wall | formula wall | mixedlm wall | load |", "| --- " * 11 + "|"]
    for label, *_ in DESIGNS:
        for side, results in rounds.items():
            def median(kind, engine, results=results, label=label):
                return float(np.median([r["designs"][label][kind].get(engine, np.nan) for r in results]))
            wall = {e: median("wall_ms", e) for e in ENGINES}
            cpu = {e: median("cpu_ms", e) for e in ENGINES}
            load = float(np.median([r["load"] for r in results]))
            same = all(r["designs"][label]["formula_equals_arrays"] for r in results)
            lines.append(
                f"| {label} | {side}{'' if same else ' (fixed effects differ!)'} | {cpu['arrays']:.2f} ms | "
                f"{cpu['formula']:.2f} ms | **{cpu['formula'] - cpu['arrays']:+.2f} ms** | "
                f"{cpu['formula'] - cpu['design X']:+.2f} ms | {cpu['mixedlm']:.2f} ms | "
                f"{wall['arrays']:.1f} ms | {wall['formula']:.1f} ms | {wall['mixedlm']:.1f} ms | {load:.1f} |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
