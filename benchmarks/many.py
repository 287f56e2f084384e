"""Many responses, one design: k outcomes fitted on the same X and groups.

Issue 13's target: N = 1e4, G = 100, p = 5, k = 10,000 responses, at least 100x faster
than looping the single fit and faster than FLASH-MM on the same data. Three ways to fit
them, timed on the same data in the same run:

* ``reml_engine (loop)``: ``rl.fit(X, Y[:, j], groups)`` column by column. Looping over
  all k columns would take longer than the rest of the run, so it runs on the first
  ``loop_columns`` columns and the total is extrapolated linearly (each column is an
  independent fit of the same cost); the row says so;
* ``FLASH-MM``: ``flash_mm.lmmfit(Y.T, X, Z, d=G)`` on the same data (it takes the
  responses as rows and a dense indicator matrix Z). After an untimed warm-up, it fits all
  k columns when the time it took on a first batch predicts less than ``max_seconds``;
  otherwise it fits as many columns as fit in half that time and the total is extrapolated
  in proportion (which counts the shared part, ``X'X``, ``Z'Z``, ``Z'X``, k/m times
  instead of once: an upper bound, by a little), and the row says so;
* ``reml_engine (many)``: ``rl.fit(X, Y, groups)`` with Y of shape (n, k), when
  reml_engine accepts a 2-d Y. Until it does, a probe on tiny data gets reml_engine's
  error, and the row is skipped with that error as the reason.

Agreement: on the columns both fitted, each peer's ``tau`` is put into reml_engine's
criterion (:func:`reml_engine.criterion` with the column's statistics), exactly as in
the grid; at the same optimum the fixed effects must agree (the run fails otherwise).
FLASH-MM's Fisher scoring does not constrain the variance to be non-negative, so some of
its estimates are negative: they are counted, not failed.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

import reml_engine as rl

from . import engines as E
from . import harness

REML_LOOP = "reml_engine (loop)"
REML_MANY = "reml_engine (many)"
#: Share of the responses simulated with no group variance at all (the boundary case).
ZERO_VARIANCE_SHARE = 0.1
#: Columns FLASH-MM fits first, to predict its time for all k.
FLASH_FIRST_BATCH = 20


@dataclass(frozen=True)
class ManyConfig:
    """N rows, G groups, p fixed effects (intercept included), k responses."""

    nobs: int
    ngroups: int
    p: int
    k: int
    loop_columns: int

    @property
    def label(self) -> str:
        return f"N={self.nobs:.0e} G={self.ngroups} p={self.p} k={self.k}"


FULL = ManyConfig(10_000, 100, 5, 10_000, loop_columns=200)
QUICK = ManyConfig(1_000, 20, 3, 30, loop_columns=10)


def simulate_many(config: ManyConfig, seed: int = 0):
    """X (n, p) with its intercept, Y (n, k) and group labels; each response has its own
    coefficients and group variance (uniform on [0, 1], a tenth of them exactly 0)."""
    rng = np.random.default_rng(seed)
    n, G, p, k = config.nobs, config.ngroups, config.p, config.k
    groups = rng.permutation(np.arange(n, dtype=np.int64) % G)
    X = np.column_stack([np.ones(n), rng.standard_normal((n, p - 1))])
    beta = rng.normal(0.0, 1.0, (p, k))
    var_group = rng.uniform(0.0, 1.0, k)
    var_group[rng.random(k) < ZERO_VARIANCE_SHARE] = 0.0
    Y = X @ beta
    Y += rng.standard_normal((G, k))[groups] * np.sqrt(var_group)
    Y += rng.standard_normal((n, k))
    return X, Y, groups


def _loop(X, Y, groups, columns: int) -> tuple[list[rl.LmerFit], list[float]]:
    fits, seconds = [], []
    for j in range(columns):
        t0 = time.perf_counter()
        fits.append(rl.fit(X, Y[:, j], groups))
        seconds.append(time.perf_counter() - t0)
    return fits, seconds


def _flash(X, Y, Z, G):
    import flash_mm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return flash_mm.lmmfit(np.ascontiguousarray(Y.T), X, Z, d=[G], method="REML")


def many_api_available() -> str:
    """Empty when ``rl.fit(X, Y, groups)`` accepts Y of shape (n, k); else why not."""
    rng = np.random.default_rng(0)
    n = 60
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    Y = rng.standard_normal((n, 2))
    groups = np.arange(n) % 6
    try:
        rl.fit(X, Y, groups)
    except Exception as err:
        return f"rl.fit(X, Y, groups) with Y of shape (n, k) not available yet: {type(err).__name__}: {err}"[:300]
    return ""


def many_estimates(result, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(tau (k,), fixef (k, p)) from the many-response result, or None when its form is
    not one this harness knows: a sequence of fits, or an object with per-response
    ``tau`` and ``fixef`` (k x p, p x k, or a DataFrame of either)."""
    try:
        if isinstance(result, list | tuple) and len(result) == k:
            return (np.array([float(r.tau) for r in result]),
                    np.array([np.asarray(r.fixef, dtype=np.float64) for r in result]))
        tau = np.asarray(result.tau, dtype=np.float64).reshape(-1)
        fixef = np.asarray(result.fixef, dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(tau) != k or fixef.ndim != 2:
        return None
    return tau, (fixef if fixef.shape[0] == k else fixef.T)


def compare(fits: list[rl.LmerFit], tau: np.ndarray, fixef: np.ndarray) -> dict:
    """Agreement of per-column estimates with reml_engine's looped fits (same columns)."""
    m = min(len(fits), len(tau))
    crit_diff = np.array([rl.criterion(max(tau[j], 0.0), fits[j].stats, True) - fits[j].criterion
                          for j in range(m)])
    fixef_diff = np.array([
        np.max(np.abs(fixef[j] - fits[j].fixef.to_numpy())
               / np.maximum(np.abs(fits[j].fixef.to_numpy()), fits[j].se.to_numpy()))
        for j in range(m)])
    # A negative variance (FLASH-MM does not constrain it) evaluates as tau = 0, which is
    # the optimum when the variance sits at the boundary; it is still another estimate.
    same = (np.abs(crit_diff) <= harness.SAME_OPTIMUM_TOL) & (tau[:m] >= 0)
    return {
        "compared_columns": m,
        "same_optimum": int(same.sum()),
        "negative_variance": int((tau[:m] < 0).sum()),
        "below_reml_engine": int((crit_diff < -harness.SAME_OPTIMUM_TOL).sum()),
        "max_criterion_diff": float(np.max(crit_diff)) if m else math.nan,
        "max_rel_fixef_diff_same_optimum": float(np.max(fixef_diff[same])) if same.any() else math.nan,
        "max_rel_fixef_diff": float(np.max(fixef_diff)) if m else math.nan,
    }


def run_many(config: ManyConfig, settings: harness.Settings, log=print) -> pd.DataFrame:
    """One row per engine: time for k responses (measured or extrapolated), and agreement."""
    X, Y, groups = simulate_many(config, settings.seed)
    k, G = config.k, config.ngroups
    rows = []
    base = {"nobs": config.nobs, "ngroups": G, "p": config.p, "k": k}

    # Warm up (numba loads or compiles its kernels), then loop over the first columns.
    rl.fit(X, Y[:, 0], groups)
    m = min(k, config.loop_columns)
    fits, seconds = _loop(X, Y, groups, m)
    loop_total = float(np.sum(seconds)) * k / m
    rows.append({**base, "engine": REML_LOOP, "columns_timed": m, "seconds_timed": float(np.sum(seconds)),
                 "seconds_for_k": loop_total, "extrapolated": m < k,
                 "note": (f"extrapolated from the first {m} of {k} columns "
                          f"(median {1e3 * np.median(seconds):.1f} ms per column)") if m < k else "",
                 "skipped": ""})
    log(f"many responses {config.label}: loop {loop_total:.1f} s for k = {k}"
        + (f" (from {m} columns)" if m < k else ""))

    rows.append({**base, **_run_flash(X, Y, groups, G, fits, settings, log)})
    rows.append({**base, **_run_many_api(X, Y, groups, fits, settings, log)})
    table = pd.DataFrame(rows)
    table["ratio_to_many_api"] = table.seconds_for_k / _value(table, REML_MANY)
    table["ratio_to_flash"] = table.seconds_for_k / _value(table, E.FLASHMM)
    table["load_average"] = os.getloadavg()[0]
    return table


def _value(table: pd.DataFrame, engine: str) -> float:
    row = table[table.engine == engine]
    return float(row.seconds_for_k.iloc[0]) if len(row) else math.nan


def _run_flash(X, Y, groups, G, fits, settings, log) -> dict:
    if E.peer_version(E.FLASHMM) is None:
        return {"engine": E.FLASHMM, "skipped": E.missing_reason(E.FLASHMM)}
    k = Y.shape[1]
    Z = np.zeros((len(groups), G))
    Z[np.arange(len(groups)), groups] = 1.0

    def timed(columns: int):
        t0 = time.perf_counter()
        result = _flash(X, Y[:, :columns], Z, G)
        return result, time.perf_counter() - t0

    try:
        with E.memory_cap(settings.memory_gb):
            timed(min(k, 2))  # warm-up: first calls into scipy and BLAS, untimed
            first = min(k, FLASH_FIRST_BATCH)
            result, t_first = timed(first)
            columns, t_columns, total, note = first, t_first, t_first, ""
            predicted = t_first * k / first
            if first < k and predicted <= settings.max_seconds:
                columns = k
                result, t_columns = timed(k)
                total = t_columns
            elif first < k:
                columns = int(min(k, max(2 * first, first * settings.max_seconds / 2 / t_first)))
                result, t_columns = timed(columns)
                total = t_columns * k / columns
                note = (f"extrapolated in proportion from the first {columns} of {k} columns "
                        f"({t_columns:.2f} s; all k predicted {predicted:.0f} s > limit "
                        f"{settings.max_seconds:.0f} s)")
    except MemoryError as err:
        return {"engine": E.FLASHMM, "skipped": f"out of memory under the {settings.memory_gb:g} GB cap ({err})"}
    except Exception as err:
        return {"engine": E.FLASHMM, "skipped": f"failed: {type(err).__name__}: {err}"[:300]}
    theta = result["theta"].to_numpy()
    tau = theta[0] / theta[1]
    fixef = result["coef"].to_numpy().T
    agreement = compare(fits, tau, fixef)
    # FLASH-MM's p column against the two-sided t-test of its own t and df.
    from scipy.stats import t as t_dist

    two_sided = 2 * t_dist.sf(np.abs(result["t"].to_numpy()), result["df"])
    with np.errstate(divide="ignore", invalid="ignore"):
        p_ratio = np.nanmedian(result["p"].to_numpy() / two_sided)
    log(f"many responses: FLASH-MM {total:.1f} s for k = {k}" + (f" ({note})" if note else ""))
    return {"engine": E.FLASHMM, "columns_timed": columns, "seconds_timed": t_columns,
            "seconds_for_k": total, "extrapolated": bool(note), "note": note, "skipped": "",
            "p_value_over_two_sided_t": float(p_ratio),
            "not_converged": int((np.abs(result["dlogL"].to_numpy()) > 1e-5).any(axis=0).sum()),
            **agreement}


def _run_many_api(X, Y, groups, fits, settings, log) -> dict:
    reason = many_api_available()
    if reason:
        log(f"many responses: {REML_MANY} skipped: {reason}")
        return {"engine": REML_MANY, "skipped": reason}
    k = Y.shape[1]
    try:
        with E.memory_cap(settings.memory_gb):
            result, seconds, _ = E.time_calls(lambda: rl.fit(X, Y, groups), settings.repeats, settings.budget)
    except MemoryError as err:
        return {"engine": REML_MANY, "skipped": f"out of memory under the {settings.memory_gb:g} GB cap ({err})"}
    row = {"engine": REML_MANY, "columns_timed": k, "seconds_timed": float(np.median(seconds)),
           "seconds_for_k": float(np.median(seconds)), "extrapolated": False, "note": "", "skipped": ""}
    estimates = many_estimates(result, k)
    if estimates is None:
        row["note"] = f"agreement not checked: result of type {type(result).__name__} not recognized"
    else:
        row.update(compare(fits, *estimates))
    log(f"many responses: {REML_MANY} {row['seconds_for_k']:.2f} s for k = {k}")
    return row


def disagreements(table: pd.DataFrame) -> list[str]:
    """Columns where an engine reached the looped fit's optimum with other fixed effects,
    or got below it."""
    problems = []
    for row in table.to_dict("records"):
        if row["engine"] == REML_LOOP or not row.get("compared_columns"):
            continue
        tol = harness.PEER_FIXEF_TOL.get(row["engine"], harness.FIXEF_AGREEMENT_TOL)
        if row.get("below_reml_engine", 0) > 0:
            problems.append(f"{row['engine']} (many responses): {row['below_reml_engine']} columns below "
                            "reml_engine's optimum")
        if row.get("same_optimum", 0) > 0 and not row["max_rel_fixef_diff_same_optimum"] <= tol:
            problems.append(f"{row['engine']} (many responses): fixed effects differ by "
                            f"{row['max_rel_fixef_diff_same_optimum']:.3g} at the same optimum")
    return problems
