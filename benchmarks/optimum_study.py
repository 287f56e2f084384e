"""How often does each engine reach the global optimum of the criterion?

Two families of small data sets:

* **contextual**: as the seed data, the group means of x lie far apart and y is centred
  within the groups (only a small group-level jitter remains), so the between-group
  slope is near zero while the within-group slope is not. The criterion then often has
  two local minima, at tau = 0 and at a large tau;
* **ordinary**: a random-intercept model with a moderate group variance (sometimes
  zero), where one minimum is the rule.

Each data set is fitted by REML and by ML with every engine's default settings (lme4,
statsmodels, mixedlm and interlace-lme, those installed). The
verdict uses one yardstick for all: reml_engine's exact criterion
(:func:`reml_engine.criterion`) evaluated at the engine's ``tau``, against the global
minimum found independently by a dense scan (``DENSE_POINTS`` values of tau, log-spaced,
plus tau = 0) and reml_engine's own optimum, whichever is lower.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import reml_engine as rl

from . import engines as E

HERE = Path(__file__).parent
LME4_STUDY_SCRIPT = HERE / "lme4_study.R"

#: Points of the independent dense scan in tau (log-spaced from DENSE_TAU_MIN to
#: DENSE_TAU_MAX, about 460 per unit of log(tau) against the optimizer's 20), plus tau = 0.
DENSE_POINTS = 20_001
DENSE_TAU_MIN = 1e-10
DENSE_TAU_MAX = 1e10
#: An estimate reaches the global optimum when its criterion is within this of the
#: global minimum (criterion units, -2 log-likelihood).
GLOBAL_TOL = 1e-4
#: reml_engine's optimum must not sit above the dense scan's minimum by more than this
#: relative rounding margin (the scan only samples, so it can only be higher).
SCAN_RTOL = 1e-10
FORMULA = "y ~ x + (1|g)"


@dataclass(frozen=True)
class StudyData:
    kind: str
    index: int
    frame: pd.DataFrame


def contextual(rng: np.random.Generator, index: int) -> StudyData:
    """Group means of x far apart, y centred within groups, as in the seed data."""
    ngroups = int(rng.integers(4, 9))
    sizes = rng.integers(3, 7, ngroups)
    g = np.repeat(np.arange(ngroups), sizes)
    x_between = rng.normal(0.0, 10.0, ngroups)
    x_within = rng.normal(0.0, 1.0, len(g))
    y = rng.uniform(0.2, 0.8) * x_within + rng.normal(0.0, 0.3, len(g))
    y -= (np.bincount(g, y) / sizes)[g]
    y += rng.normal(0.0, 0.05, ngroups)[g]
    frame = pd.DataFrame({"y": y, "x": x_between[g] + x_within, "g": [f"s{k}" for k in g]})
    return StudyData("contextual", index, frame)


def ordinary(rng: np.random.Generator, index: int) -> StudyData:
    """A random intercept of moderate (sometimes zero) variance, unbalanced groups."""
    ngroups = int(rng.integers(5, 31))
    sizes = rng.integers(2, 11, ngroups)
    g = np.repeat(np.arange(ngroups), sizes)
    var_group = rng.choice([0.0, 0.05, 0.3, 1.0])
    x = rng.normal(0.0, 1.0, len(g)) + rng.normal(0.0, 0.5, ngroups)[g]
    y = 1.0 + 0.5 * x + rng.normal(0.0, np.sqrt(var_group), ngroups)[g] + rng.normal(0.0, 1.0, len(g))
    frame = pd.DataFrame({"y": y, "x": x, "g": [f"s{k}" for k in g]})
    return StudyData("ordinary", index, frame)


def datasets(n_each: int, seed: int = 0) -> list[StudyData]:
    rng = np.random.default_rng(seed)
    return [contextual(rng, i) for i in range(n_each)] + [ordinary(rng, i) for i in range(n_each)]


def dense_scan(stats: rl.PooledStats, REML: bool) -> tuple[np.ndarray, np.ndarray]:
    """The criterion at tau = 0 and ``DENSE_POINTS`` log-spaced values of tau."""
    taus = np.concatenate([[0.0], np.geomspace(DENSE_TAU_MIN, DENSE_TAU_MAX, DENSE_POINTS)])
    return taus, rl.evaluate(taus, stats, REML).criterion


def basin_edges(optima, taus: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The tau of the highest scan point between each pair of neighbouring local minima.

    A local optimizer started anywhere between two such edges descends to the minimum
    between them: an estimate's basin tells a premature stop on the way to the global
    minimum apart from convergence to another local minimum.
    """
    edges = []
    for left, right in zip(optima[:-1], optima[1:], strict=True):
        inside = (taus > left.tau) & (taus < right.tau) & np.isfinite(values)
        if inside.any():
            edges.append(taus[inside][np.argmax(values[inside])])
        else:
            edges.append(0.5 * (left.tau + right.tau))
    return np.asarray(edges)


def run_study(n_each: int, seed: int = 0, peers=(E.STATSMODELS, E.LME4, E.MIXEDLM, E.INTERLACE),
              log=print) -> pd.DataFrame:
    """One row per (data set, REML/ML, engine): the criterion gap to the global minimum.

    ``peers`` not installed are left out (the grid records them as skipped).
    """
    peers = [peer for peer in peers if E.peer_version(peer) is not None]
    sets = datasets(n_each, seed)
    lme4 = _lme4_fits(sets) if E.LME4 in peers else {}
    rows = []
    for data in sets:
        for REML in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = rl.lmer(FORMULA, data.frame, REML=REML)
            taus, values = dense_scan(fit.stats, REML)
            scan_min = float(np.nanmin(values))
            global_min = min(scan_min, fit.criterion)
            edges = basin_edges(fit.optima, taus, values)
            global_basin = [o.is_global for o in fit.optima].index(True)
            base = {"kind": data.kind, "index": data.index, "REML": REML, "nobs": fit.nobs,
                    "ngroups": fit.ngroups, "n_local_optima": len(fit.optima),
                    "global_min": global_min, "scan_min": scan_min,
                    # reml_engine's optimum can only be below a sampled scan, up to rounding.
                    "reml_engine_below_scan": bool(
                        fit.criterion <= scan_min + SCAN_RTOL * abs(scan_min))}
            estimates = {"reml_engine": (fit.tau, "")}
            for peer in peers:
                if peer == E.LME4:
                    estimates[peer] = lme4.get((data.kind, data.index, REML), (np.nan, "no result"))
                else:
                    estimates[peer] = _python_peer_tau(peer, data.frame, REML)
            for engine, (tau, error) in estimates.items():
                gap = rl.criterion(max(tau, 0.0), fit.stats, REML) - global_min if np.isfinite(tau) else np.nan
                reached = bool(np.isfinite(gap) and gap <= GLOBAL_TOL)
                in_global_basin = bool(np.isfinite(tau) and np.searchsorted(edges, tau) == global_basin)
                rows.append({**base, "engine": engine, "tau": tau, "criterion_gap": gap,
                             "reached_global": reached,
                             "stopped_short": not reached and in_global_basin,
                             "other_optimum": np.isfinite(tau) and not in_global_basin,
                             "error": error})
    table = pd.DataFrame(rows)
    log(summarize(table).to_string())
    return table


def _python_peer_tau(peer: str, frame: pd.DataFrame, REML: bool) -> tuple[float, str]:
    """The peer's tau with its default settings, or NaN and its error."""
    fixed = FORMULA.replace(" + (1|g)", "")
    fits = {E.STATSMODELS: lambda: E.fit_statsmodels(frame, fixed, REML),
            E.MIXEDLM: lambda: E.fit_mixedlm(frame, FORMULA, REML),
            E.INTERLACE: lambda: E.fit_interlace(frame, fixed, REML)}
    try:
        tau, _ = fits[peer]()
    except Exception as err:  # a failed fit counts as not reaching the optimum
        return np.nan, f"{type(err).__name__}: {err}"[:200]
    return tau, ""


def _lme4_fits(sets: list[StudyData]) -> dict:
    """All lme4 fits in one R session: the data sets are written to a temporary directory."""
    path = E.rscript()
    if path is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = []
        for data in sets:
            file = os.path.join(tmp, f"{data.kind}_{data.index}.csv")
            data.frame.to_csv(file, index=False)
            manifest.append({"id": f"{data.kind}_{data.index}", "file": file, "formula": FORMULA})
        manifest_path = os.path.join(tmp, "manifest.tsv")
        pd.DataFrame(manifest).to_csv(manifest_path, sep="\t", index=False)
        out = subprocess.run([path, str(LME4_STUDY_SCRIPT), manifest_path], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    fits = {}
    for line in out.stdout.splitlines():
        result = json.loads(line)
        kind, index = result["id"].rsplit("_", 1)
        key = (kind, int(index), bool(result["REML"]))
        if "error" in result:
            fits[key] = (np.nan, result["error"])
        else:
            theta = result["theta"][0] if isinstance(result["theta"], list) else result["theta"]
            fits[key] = (float(theta) ** 2, "")
    return fits


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Share reaching the global optimum, per engine, data family and criterion."""
    table = table.assign(criterion=np.where(table.REML, "REML", "ML"))
    share = table.groupby(["kind", "criterion", "engine"]).agg(
        datasets=("reached_global", "size"),
        multiple_optima=("n_local_optima", lambda n: int((n > 1).sum())),
        reached_global=("reached_global", "mean"),
        stopped_short=("stopped_short", "mean"),
        other_optimum=("other_optimum", "mean"),
        failed=("error", lambda e: int((e != "").sum())),
    )
    for column in ("reached_global", "stopped_short", "other_optimum"):
        share[column] = 100.0 * share[column]
    return share.rename(columns={c: f"{c}_%" for c in ("reached_global", "stopped_short", "other_optimum")})
