"""The configuration grid: every engine on the same data, timings, ratios, agreement.

For each :class:`~benchmarks.simulate.Config` the data are simulated once, then each
engine is timed on them in turn (:mod:`benchmarks.engines`). Two caps keep a run finite
on a shared machine, and both leave their reason in the results, never a silent gap:

* **time**: a peer is skipped when the time it took at a smaller point of the same
  series (same N/G, same kind of design), scaled by ``N p^2``, predicts more than
  ``max_seconds`` for this one (:class:`TimeCaps`);
* **memory**: every in-process engine runs under an address-space cap
  (:func:`benchmarks.engines.memory_cap`), so one that asks for more than the cap fails
  with a ``MemoryError`` and is recorded as such.

Agreement with reml_engine's fit is judged on reml_engine's exact criterion: each
engine's ``tau`` is put into :func:`reml_engine.criterion` with reml_engine's
sufficient statistics, so ``criterion_diff`` is how far above the global optimum the
engine's estimate sits on the same scale for every engine. A peer at the same optimum
must agree on the fixed effects (the run fails otherwise); a peer elsewhere is recorded
with a verdict (stopped short, another local optimum, a negative variance) and does not
fail the run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import reml_engine as rl
from reml_engine.core.statistics import PARALLEL_CHUNK_ROWS

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
#: The fixed-effect tolerance per engine. Every peer gets the same one: all of them
#: reach 1e-6 or better on the grid's data when they stop within SAME_OPTIMUM_TOL
#: (statsmodels, the loosest, 2e-6); a peer that needs more is a finding, not a setting.
PEER_FIXEF_TOL = {engine: FIXEF_AGREEMENT_TOL for engine in (*E.PEERS, E.FLASHMM, E.REML_FORMULA)}
#: Default address-space cap for each in-process engine call (GB above the process's
#: current size): a third of this machine's memory, so a fit that asks for more fails
#: alone instead of taking the shared machine down.
MEMORY_CAP_GB = 8.0

FULL_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1_000, 10_000)
ROWS_PER_GROUP = (100, 10)
P_VALUES = (2, 10)
#: Wide designs: p up to 1000 through a fixed factor (issue 13's table: N = 3000, G = 50,
#: x + a 56-level factor, p = 57; N = 2e4, G = 200, x + a 1000-level factor).
WIDE = (
    Config(3_000, 50, 57, True, 56),
    Config(10_000, 100, 201, True, 200),
    Config(20_000, 200, 1_001, True, 1_000),
    Config(100_000, 1_000, 101, True, 100),
)
#: Issue 13's wide target (the ``wide`` part): N = 2e4, G = 200, x + a 1000-level factor
#: (p = 1001): peak memory at most twice the design matrix, time below lme4's. ``--quick``
#: runs the same shape at N = 600 with a 30-level factor.
WIDE_TARGET = Config(20_000, 200, 1_001, True, 1_000)
QUICK_WIDE_TARGET = Config(600, 20, 31, True, 30)
#: The tiny grid of ``--quick`` (CI): both group layouts, p = 2 and 10, and one wide design.
QUICK_GRID = (
    Config(1_000, 100, 2, True),
    Config(1_000, 100, 10, False),
    Config(10_000, 100, 10, True),
    Config(600, 20, 31, False, 30),
)


def grid(sizes: Iterable[int], rows_per_group=ROWS_PER_GROUP, p_values=P_VALUES, wide=WIDE) -> list[Config]:
    """Every combination, then the wide designs; smallest N first (the time cap needs the
    smaller sizes of a series first)."""
    sizes = sorted(sizes)
    configs = [
        Config(n, n // per_group, p, balanced)
        for n in sizes
        for per_group in rows_per_group
        for p in p_values
        for balanced in (True, False)
    ]
    return configs + sorted((c for c in wide if c.nobs <= max(sizes)), key=lambda c: c.nobs)


@dataclass
class Settings:
    """How hard to try: repeats per engine, time and memory caps, which peers."""

    repeats: int = 7
    budget: float = 10.0
    max_seconds: float = 120.0
    peers: tuple[str, ...] = E.PEERS
    seed: int = 0
    memory_gb: float | None = None
    #: Timed lme4 fits after its warm-up (None: as many as ``repeats`` and the budget allow).
    lme4_repeats: int | None = None


@dataclass
class TimeCaps:
    """Predicts an engine's time at a point from the last point of the same series it ran.

    The prediction scales the measured time by the ratio of the ``work`` (``N p^2`` for a
    fit, whatever the caller measures work in); a point predicted above ``max_seconds``
    is skipped with the prediction as its reason.
    """

    max_seconds: float
    measured: dict = field(default_factory=dict)

    def predicted(self, engine: str, series, work: float) -> tuple[float, str]:
        last = self.measured.get((engine, series))
        if last is None:
            return math.nan, ""
        work_then, seconds, where = last
        return seconds * work / work_then, f"took {seconds:.2g} s at {where}"

    def reason(self, engine: str, series, work: float) -> str:
        predicted, basis = self.predicted(engine, series, work)
        if not predicted > self.max_seconds:
            return ""
        return f"predicted {predicted:.0f} s ({basis}, scaled by the work) > limit {self.max_seconds:.0f} s"

    def record(self, engine: str, series, work: float, seconds: float, where: str) -> None:
        if math.isfinite(seconds):
            self.measured[(engine, series)] = (work, seconds, where)


def _series(config: Config) -> tuple:
    if config.wide:
        return ("wide", config.balanced)
    return (config.nobs // config.ngroups, config.p, config.balanced)


def _where(config: Config) -> str:
    return f"N={config.nobs:.0e}, p={config.p}"


def _relative_fixef_diff(fixef: np.ndarray, fit: rl.LmerFit) -> float:
    ref = fit.fixef.to_numpy()
    if len(fixef) != len(ref) or not np.isfinite(fixef).all():
        return math.nan
    scale = np.maximum(np.abs(ref), fit.se.to_numpy())
    return float(np.max(np.abs(fixef - ref) / scale))


def agreement(run: E.Run, fit: rl.LmerFit | None, REML: bool = True) -> tuple[float, float]:
    """(criterion above reml_engine's optimum at the run's tau, largest relative fixef diff)."""
    if fit is None or not np.isfinite(run.tau):
        return math.nan, math.nan
    crit = rl.criterion(max(run.tau, 0.0), fit.stats, REML)
    return crit - fit.criterion, _relative_fixef_diff(run.fixef, fit)


def verdict(run: E.Run, fit: rl.LmerFit | None, crit_diff: float, REML: bool = True) -> str:
    """Where an engine's estimate sits relative to reml_engine's optima."""
    if run.skipped:
        return "skipped"
    if fit is None or not np.isfinite(run.tau):
        return ""
    if run.tau < 0:
        return "negative variance"
    if crit_diff < -SAME_OPTIMUM_TOL:
        return "below reml_engine's optimum"
    if crit_diff <= SAME_OPTIMUM_TOL:
        return "same optimum"
    crit = fit.criterion + crit_diff
    others = [o for o in fit.optima if o.tau != fit.tau]
    if any(abs(crit - o.criterion) <= SAME_OPTIMUM_TOL for o in others):
        return "other local optimum"
    return "stopped short"


def warm_up(largest: int | None = None) -> None:
    """Fit data sets from arrays and from a formula, untimed: numba loads (or compiles)
    reml_engine's kernels here, so that no timing of the run includes it, even when a
    point's time budget allows only one call.

    A small size, and, when the run has points of ``largest`` rows or more (None: any
    run), one just large enough for the statistics pass to split the rows over threads
    (its parallel kernels are others, and compiling them takes seconds when numba's
    cache is empty or stale, as after any change to the kernels' source: a first
    1e6-row point once timed 9-18 s instead of 15 ms that way)."""
    sizes = [(2_000, 20)]
    threaded = 2 * PARALLEL_CHUNK_ROWS
    if largest is None or largest >= threaded:
        sizes.append((threaded, 1_000))
    for rows, groups in sizes:
        data = simulate(Config(rows, groups, 3, True))
        rl.fit(data.X, data.y, data.groups)
        rl.lmer(data.config.formula(), data.frame())


def run_grid(configs: list[Config], settings: Settings, log=print) -> pd.DataFrame:
    """Run every engine on every configuration; one row per (configuration, engine)."""
    warm_up(max((config.nobs for config in configs), default=0))
    caps = TimeCaps(settings.max_seconds)
    rows = []
    for config in configs:
        data = simulate(config, settings.seed)
        frame = data.frame()
        runs, fit = _run_point(data, frame, settings, caps)
        for run in runs:
            crit_diff, fixef_diff = agreement(run, fit)
            rows.append(_row(config, fit, run, crit_diff, fixef_diff, verdict(run, fit, crit_diff)))
        log(_progress(config, runs))
        del data, frame
    return add_ratios(pd.DataFrame(rows))


def _run_point(data, frame, settings: Settings, caps: TimeCaps) -> tuple[list[E.Run], rl.LmerFit | None]:
    config, repeats, budget, memory = data.config, settings.repeats, settings.budget, settings.memory_gb
    runs: list[E.Run] = [E.run_floor(data, repeats, budget)]
    fits: list[rl.LmerFit] = []

    def arrays() -> E.Run:
        run, fit = E.run_reml_arrays(data, repeats, budget)
        fits.append(fit)
        return run

    runs.append(E.guarded(E.REML_ARRAYS, arrays, memory))
    runs.append(E.guarded(E.REML_FORMULA, lambda: E.run_reml_formula(data, frame, repeats, budget), memory))
    for peer in settings.peers:
        if E.peer_version(peer) is None:
            runs.append(E.Run(peer, skipped=E.missing_reason(peer)))
            continue
        series = _series(config)
        skip = caps.reason(peer, series, config.work)
        if skip:
            runs.append(E.Run(peer, skipped=skip))
            continue
        if peer == E.LME4:
            lme4_repeats = _lme4_repeats(caps, series, config.work, settings)
            run = E.guarded(peer, lambda r=lme4_repeats: E.run_lme4(data, frame, r, budget), None)
        else:
            run = E.guarded(peer, lambda p=peer: E.run_python_peer(p, data, frame, repeats, budget), memory)
        caps.record(peer, series, config.work, run.median, _where(config))
        runs.append(run)
    return runs, (fits[0] if fits else None)


def disagreements(table: pd.DataFrame) -> list[str]:
    """Rows where a peer reached reml_engine's optimum but its fixed effects differ, or
    where any engine's estimate sits below reml_engine's optimum on its own criterion."""
    problems = []
    checked = table[table.engine.isin(list(PEER_FIXEF_TOL))]
    for row in checked.itertuples():
        if not np.isfinite(row.criterion_diff):  # skipped, or reml_engine did not fit
            continue
        where = f"{row.engine} at N={row.nobs}, G={row.ngroups}, p={row.p}"
        if row.criterion_diff < -SAME_OPTIMUM_TOL:
            problems.append(f"{where}: criterion {row.criterion_diff:.3g} below reml_engine's optimum")
        if row.same_optimum and not row.max_rel_fixef_diff <= PEER_FIXEF_TOL[row.engine]:
            problems.append(f"{where}: fixed effects differ by {row.max_rel_fixef_diff:.3g} at the same optimum")
    return problems


def _lme4_repeats(caps: TimeCaps, series, work: float, settings: Settings) -> int:
    """lme4 runs a warm-up fit, then the timed ones: fewer repeats for slow sizes."""
    if settings.lme4_repeats is not None:
        return settings.lme4_repeats
    predicted, _ = caps.predicted(E.LME4, series, work)
    if not math.isfinite(predicted):
        return max(1, min(settings.repeats, 3))
    return int(max(1, min(settings.repeats, settings.budget // max(predicted, 1e-9))))


def _row(config: Config, fit: rl.LmerFit | None, run: E.Run, crit_diff: float, fixef_diff: float,
         where: str) -> dict:
    return {
        "nobs": config.nobs,
        "ngroups": fit.ngroups if fit is not None else config.ngroups,
        "p": config.p,
        "factor_levels": config.factor_levels,
        "balanced": config.balanced,
        "distinct_sizes": len(fit.stats.sizes) if fit is not None else math.nan,
        "engine": run.engine,
        "median_s": run.median,
        "repeats": len(run.seconds),
        "peak_extra_mb": run.peak_extra_mb,
        "input_mb": config.input_bytes / 2**20,
        "tau": run.tau,
        "criterion_diff": crit_diff,
        "max_rel_fixef_diff": fixef_diff,
        # A negative tau evaluates as tau = 0, which can be reml_engine's optimum; its fixed
        # effects are those of the negative tau, so it is not the same optimum.
        "same_optimum": where == "same optimum" if np.isfinite(crit_diff) else None,
        "verdict": where,
        "skipped": run.skipped,
        # Other work on the machine slows every engine alike; kept to judge the noise.
        "load_average": os.getloadavg()[0],
    }


KEYS = ["nobs", "ngroups", "p", "factor_levels", "balanced"]


def add_ratios(table: pd.DataFrame, keys=KEYS) -> pd.DataFrame:
    """Each engine's median over the floor's and over both reml_engine entries, same config."""
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
