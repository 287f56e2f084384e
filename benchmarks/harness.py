"""The configuration grid: every engine on the same data, timings, ratios, agreement.

For each :class:`~benchmarks.simulate.Config` the data are simulated once, then each
engine is timed on them in turn (:mod:`benchmarks.engines`). A peer is skipped when the
time it took on the previous, ten times smaller, size of the same series predicts more
than ``max_seconds`` for this one; the skip and its reason are part of the results.

Agreement with reml_engine's fit is judged on reml_engine's exact criterion: each
engine's ``tau`` is put into :func:`reml_engine.criterion` with reml_engine's
sufficient statistics, so ``criterion_diff`` is how far above the global optimum the
engine's estimate sits on the same scale for every engine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

import reml_engine as rl

from . import engines as E
from .simulate import Config, simulate

#: Estimates whose criterion is within this of reml_engine's global minimum (REML
#: criterion units, -2 log-likelihood) reached the same optimum; peers stop their
#: iterations at about this precision.
SAME_OPTIMUM_TOL = 1e-4
#: At the same optimum, fixed effects agree to this fraction of max(|beta|, se): a
#: criterion within SAME_OPTIMUM_TOL allows tau to differ by a few 1e-3 of its standard
#: error, and beta moves with tau.
FIXEF_AGREEMENT_TOL = 1e-3

FULL_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1_000, 10_000)
ROWS_PER_GROUP = (100, 10)
P_VALUES = (2, 10)


def grid(sizes: Iterable[int], rows_per_group=ROWS_PER_GROUP, p_values=P_VALUES) -> list[Config]:
    """Every combination, smallest N first (the skip rule needs the smaller sizes first)."""
    return [
        Config(n, n // per_group, p, balanced)
        for n in sorted(sizes)
        for per_group in rows_per_group
        for p in p_values
        for balanced in (True, False)
    ]


@dataclass
class Settings:
    """How hard to try: repeats per engine, time limits, which peers."""

    repeats: int = 7
    budget: float = 10.0
    max_seconds: float = 120.0
    peers: tuple[str, ...] = (E.STATSMODELS, E.LME4)
    seed: int = 0


def _series(config: Config) -> tuple:
    return (config.nobs // config.ngroups, config.p, config.balanced)


def _relative_fixef_diff(fixef: np.ndarray, fit: rl.LmerFit) -> float:
    ref = fit.fixef.to_numpy()
    if len(fixef) != len(ref):
        return math.nan
    scale = np.maximum(np.abs(ref), fit.se.to_numpy())
    return float(np.max(np.abs(fixef - ref) / scale))


def agreement(run: E.Run, fit: rl.LmerFit, REML: bool = True) -> tuple[float, float]:
    """(criterion above reml_engine's optimum at the run's tau, largest relative fixef diff)."""
    if not np.isfinite(run.tau):
        return math.nan, math.nan
    crit = rl.criterion(max(run.tau, 0.0), fit.stats, REML)
    return crit - fit.criterion, _relative_fixef_diff(run.fixef, fit)


def run_grid(configs: list[Config], settings: Settings, log=print) -> pd.DataFrame:
    """Run every engine on every configuration; one row per (configuration, engine)."""
    last: dict[tuple, tuple[int, float]] = {}
    rows = []
    for config in configs:
        data = simulate(config, settings.seed)
        frame = data.frame()
        runs: list[E.Run] = [E.run_floor(data, settings.repeats, settings.budget)]
        arrays, fit = E.run_reml_arrays(data, settings.repeats, settings.budget)
        runs.append(arrays)
        runs.append(E.run_reml_formula(data, frame, settings.repeats, settings.budget))
        for peer in settings.peers:
            key = (peer, _series(config))
            skip = _predicted_skip(last.get(key), config.nobs, settings.max_seconds)
            if skip:
                runs.append(E.Run(peer, skipped=skip))
                continue
            if peer == E.STATSMODELS:
                run = E.run_statsmodels(data, frame, settings.repeats, settings.budget)
            else:
                run = E.run_lme4(data, frame, _lme4_repeats(last.get(key), config.nobs, settings),
                                 settings.budget)
            if run.seconds:
                last[key] = (config.nobs, run.median)
            runs.append(run)
        for run in runs:
            crit_diff, fixef_diff = agreement(run, fit)
            rows.append(_row(config, fit, run, crit_diff, fixef_diff))
        log(_progress(config, runs))
        del data, frame
    return add_ratios(pd.DataFrame(rows))


def disagreements(table: pd.DataFrame) -> list[str]:
    """Rows where a peer reached reml_engine's optimum but its fixed effects differ, or
    where any engine's estimate sits below reml_engine's optimum on its own criterion."""
    problems = []
    for row in table[table.engine.isin([E.STATSMODELS, E.LME4, E.REML_FORMULA])].itertuples():
        if not np.isfinite(row.criterion_diff):  # skipped
            continue
        where = f"{row.engine} at N={row.nobs}, G={row.ngroups}, p={row.p}"
        if row.criterion_diff < -SAME_OPTIMUM_TOL:
            problems.append(f"{where}: criterion {row.criterion_diff:.3g} below reml_engine's optimum")
        if row.same_optimum and not row.max_rel_fixef_diff <= FIXEF_AGREEMENT_TOL:
            problems.append(f"{where}: fixed effects differ by {row.max_rel_fixef_diff:.3g} at the same optimum")
    return problems


def _predicted_skip(previous, nobs: int, max_seconds: float) -> str:
    if previous is None:
        return ""
    n_prev, seconds = previous
    predicted = seconds * nobs / n_prev
    if predicted > max_seconds:
        return f"predicted {predicted:.0f} s (took {seconds:.2g} s at N={n_prev:.0e}) > limit {max_seconds:.0f} s"
    return ""


def _lme4_repeats(previous, nobs: int, settings: Settings) -> int:
    """lme4 runs a warm-up fit, then the timed ones: fewer repeats for slow sizes."""
    if previous is None:
        return max(1, min(settings.repeats, 3))
    n_prev, seconds = previous
    predicted = seconds * nobs / n_prev
    return int(max(1, min(settings.repeats, settings.budget // max(predicted, 1e-9))))


def _row(config: Config, fit: rl.LmerFit, run: E.Run, crit_diff: float, fixef_diff: float) -> dict:
    return {
        "nobs": config.nobs,
        "ngroups": fit.ngroups,
        "p": config.p,
        "balanced": config.balanced,
        "distinct_sizes": len(fit.stats.sizes),
        "engine": run.engine,
        "median_s": run.median,
        "repeats": len(run.seconds),
        "peak_extra_mb": run.peak_extra_mb,
        "input_mb": config.input_bytes / 2**20,
        "tau": run.tau,
        "criterion_diff": crit_diff,
        "max_rel_fixef_diff": fixef_diff,
        "same_optimum": bool(abs(crit_diff) <= SAME_OPTIMUM_TOL) if np.isfinite(crit_diff) else None,
        "skipped": run.skipped,
        # Other work on the machine slows every engine alike; kept to judge the noise.
        "load_average": os.getloadavg()[0],
    }


def add_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Each engine's median over the floor's and over both reml_engine entries, same config."""
    keys = ["nobs", "ngroups", "p", "balanced"]
    table = table.copy()
    for ref, column in ((E.FLOOR, "ratio_to_floor"), (E.REML_ARRAYS, "ratio_to_reml_arrays"),
                        (E.REML_FORMULA, "ratio_to_reml_formula")):
        base = table[table.engine == ref].set_index(keys)["median_s"]
        joined = table.join(base.rename("_base"), on=keys)
        table[column] = joined["median_s"] / joined["_base"]
    return table


def _progress(config: Config, runs: list[E.Run]) -> str:
    parts = [f"{r.engine}: {'skip' if r.skipped else f'{1e3 * r.median:.1f} ms'}" for r in runs]
    return f"{config.label}: " + ", ".join(parts)
