"""Timing of the k-term engine: the statistics pass and one evaluation of the criterion.

Run from the repository root::

    python -m benchmarks.varcomp_eval insteval --insteval /path/to/insteval.csv
    python -m benchmarks.varcomp_eval subjects_items --rows 1000000 --subjects 10000 --items 1000
    python -m benchmarks.varcomp_eval subjects_items --replicates 2      # + (1|subj:item)
    python -m benchmarks.varcomp_eval school_class --rows 1000000 --schools 1000 --classes 100000

``insteval`` reads lme4's InstEval as written by R (columns s, d, dept, service,
studage, y; see ``--help``): ``y ~ service + studage + (1|s) + (1|d) + (1|dept)``.
``subjects_items`` simulates ``y ~ x + (1|subj) + (1|item)`` with each subject seeing a
binomial number of items (mean ``rows / subjects``) drawn at random (about 10% of the
cells at the default sizes); with ``--replicates r`` every cell is observed r times and
the model adds ``(1|subj:item)``. ``school_class`` simulates ``y ~ x + (1|school/class)``
(classes of unequal sizes in schools).

Each stage is timed on its own (best of ``--repeat`` runs after one warm-up run, so that
numba's compilation is not counted) and printed as one JSON line: coding the factors,
the statistics pass, building the problem (components, pooling), one evaluation without
and with the gradient, and the one-dimensional reduction of the smallest term. Speed is
measured here, never asserted in the tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats

#: Variance ratios at which the criterion is timed (one per term).
TAU = 0.5


def _best_of(fn, repeat: int):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def insteval_data(path: str):
    import pandas as pd

    df = pd.read_csv(path)
    studage = df["studage"].astype(int)
    X = np.column_stack([np.ones(len(df)), df["service"].to_numpy(float),
                         (studage == 4).to_numpy(float), (studage == 6).to_numpy(float),
                         (studage == 8).to_numpy(float)])
    factors = {"s": df["s"].to_numpy(), "d": df["d"].to_numpy(), "dept": df["dept"].to_numpy()}
    return X, df["y"].to_numpy(float), factors


def subjects_items_data(rows: int, subjects: int, items: int, seed: int = 0):
    """Each subject sees a binomial number of items (mean ``rows / subjects``) drawn at
    random: unequal subject sizes, as in real data."""
    rng = np.random.default_rng(seed)
    per_subject = rng.binomial(items, min(1.0, rows / (subjects * items)), subjects)
    subj = np.repeat(np.arange(subjects, dtype=np.int64), per_subject)
    item = rng.integers(0, items, subj.size)
    x = rng.normal(size=subj.size)
    y = (0.5 * x + rng.normal(size=subjects)[subj] * 0.8 + rng.normal(size=items)[item] * 0.6
         + rng.normal(size=subj.size))
    X = np.column_stack([np.ones(subj.size), x])
    return X, y, {"subj": subj, "item": item}


def subjects_items_cells_data(rows: int, subjects: int, items: int, replicates: int, seed: int = 0):
    """Cells of subjects x items each observed ``replicates`` times, ``(1|subj:item)`` added."""
    rng = np.random.default_rng(seed)
    cells = rows // replicates
    per_subject = rng.binomial(items, min(1.0, cells / (subjects * items)), subjects)
    subj = np.repeat(np.arange(subjects, dtype=np.int64), per_subject)
    item = rng.integers(0, items, subj.size)
    subj, item = np.repeat(subj, replicates), np.repeat(item, replicates)
    cell = subj * items + item
    x = rng.normal(size=subj.size)
    y = (0.5 * x + rng.normal(size=subjects)[subj] * 0.8 + rng.normal(size=items)[item] * 0.6
         + rng.normal(size=subjects * items)[cell] * 0.4 + rng.normal(size=subj.size))
    X = np.column_stack([np.ones(subj.size), x])
    return X, y, {"subj": subj, "item": item, "subj:item": cell}


def school_class_data(rows: int, schools: int, classes: int, seed: int = 0):
    """Classes nested in schools, both of unequal sizes."""
    rng = np.random.default_rng(seed)
    klass = np.sort(rng.integers(0, classes, rows))
    school = (np.arange(classes) * schools // classes)[klass]
    x = rng.normal(size=rows)
    y = 0.3 * x + rng.normal(size=schools)[school] * 0.5 + rng.normal(size=classes)[klass] * 0.4 + rng.normal(size=rows)
    return np.column_stack([np.ones(rows), x]), y, {"class:school": klass, "school": school}


def run(X, y, factors, repeat: int, label: str) -> dict:
    t_code, terms = _best_of(lambda: RandomTerms.from_labels(factors), repeat)
    t_stats, stats = _best_of(lambda: compute_vc_stats(X, y, terms), repeat)
    t_problem, problem = _best_of(lambda: VCProblem(stats), max(1, repeat // 2))
    tau = np.full(problem.k, TAU)
    t_eval, ev = _best_of(lambda: problem.evaluate(tau, gradient=False), repeat)
    t_grad, ev_grad = _best_of(lambda: problem.evaluate(tau, gradient=True), repeat)
    smallest = int(np.argmin(problem.nlevels))
    t_reduce, _ = _best_of(lambda: problem.reduce_to_term(smallest, tau), max(1, repeat // 2))
    return {
        "case": label,
        "rows": int(len(y)),
        "levels": dict(zip(problem.term_names, problem.nlevels, strict=True)),
        "plan": problem.plan,
        "seconds": {
            "code_factors": t_code,
            "statistics_pass": t_stats,
            "build_problem": t_problem,
            "evaluate": t_eval,
            "evaluate_with_gradient": t_grad,
            f"reduce_to_term({problem.term_names[smallest]})": t_reduce,
        },
        "criterion": ev.criterion,
        "gradient": ev_grad.gradient.tolist(),
        "pair_cells": {f"{stats.names[a]}x{stats.names[b]}": t.nnz for (a, b), t in stats.pairs.items()},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["insteval", "subjects_items", "school_class"])
    parser.add_argument("--insteval", default="/work/tmp/insteval.csv",
                        help="CSV written by R: write.csv(data.frame(s, d, dept, service, studage, y), ...)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--replicates", type=int, default=1)
    parser.add_argument("--schools", type=int, default=1_000)
    parser.add_argument("--classes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.case == "insteval":
        X, y, factors = insteval_data(args.insteval)
        label = "InstEval"
    elif args.case == "school_class":
        X, y, factors = school_class_data(args.rows, args.schools, args.classes)
        label = f"school/class {args.rows:.0e} rows"
    elif args.replicates > 1:
        X, y, factors = subjects_items_cells_data(args.rows, args.subjects, args.items, args.replicates)
        label = f"subjects x items + cells {args.rows:.0e} rows"
    else:
        X, y, factors = subjects_items_data(args.rows, args.subjects, args.items)
        label = f"subjects x items {args.rows:.0e} rows"
    print(json.dumps(run(X, y, factors, args.repeat, label)))


if __name__ == "__main__":
    main()
