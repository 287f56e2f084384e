"""The engines compared, each timed on the same data in the same run.

* ``floor``: numpy's ``X'X`` and ``X'y``, the least any fit must do with the rows;
* ``reml_engine (arrays)``: :func:`reml_engine.fit` on X, y and the group labels;
* ``reml_engine (formula)``: :func:`reml_engine.lmer` on a DataFrame with a formula;
* ``statsmodels``: ``MixedLM.from_formula(...).fit(reml=True)``;
* ``lme4``: ``lmer()`` through ``Rscript benchmarks/lme4_fit.R``, which times the
  ``lmer()`` call inside R.

Every engine returns a :class:`Run`: timings, peak memory, and its estimates
(``tau = var_group / sigma2`` and the fixed effects in the column order of X), which
:mod:`benchmarks.harness` compares with reml_engine's fit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import reml_engine as rl

from .simulate import Dataset

HERE = Path(__file__).parent
LME4_SCRIPT = HERE / "lme4_fit.R"

FLOOR = "numpy floor"
REML_ARRAYS = "reml_engine (arrays)"
REML_FORMULA = "reml_engine (formula)"
STATSMODELS = "statsmodels"
LME4 = "lme4"
ENGINES = (FLOOR, REML_ARRAYS, REML_FORMULA, STATSMODELS, LME4)


@dataclass(frozen=True)
class Run:
    """Timings and estimates of one engine on one data set.

    Attributes
    ----------
    engine : str
    seconds : tuple of float
        Wall-clock time of each timed call.
    peak_extra_mb : float
        Peak resident memory during one call above the resident memory before it
        (NaN where not measured).
    tau : float
        ``var_group / sigma2`` estimated (NaN for the floor).
    fixef : ndarray
        Fixed effects in the column order of X (empty for the floor).
    skipped : str
        Why the engine was not run (empty when it ran).
    """

    engine: str
    seconds: tuple[float, ...] = ()
    peak_extra_mb: float = float("nan")
    tau: float = float("nan")
    fixef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    skipped: str = ""

    @property
    def median(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")


def _status_kb(key: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def peak_extra_memory(call: Callable[[], object]) -> tuple[object, float]:
    """Run ``call`` once; return its result and the peak resident memory it added (MB).

    Linux only: the process's high-water mark is reset (``/proc/self/clear_refs``)
    before the call and read after it. Elsewhere the memory is NaN.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return call(), float("nan")
    before = _status_kb("VmRSS:")
    result = call()
    peak = _status_kb("VmHWM:")
    return result, max(peak - before, 0.0) / 1024.0


def time_calls(call: Callable[[], object], repeats: int, budget: float) -> tuple[object, list[float], float]:
    """Time ``call`` up to ``repeats`` times while the total stays within ``budget`` seconds.

    The first call is a warm-up (numba compiles or loads its kernels, caches fill) and
    is not counted when the budget allows at least one more; otherwise it is the only
    timing (and memory) measured. With more calls, the last one measures the peak
    memory, so that compilation never counts there. Returns the last result, the timings and the peak extra memory (MB).
    """
    warmup: list[float] = []
    start = time.perf_counter()
    result, peak = peak_extra_memory(lambda: _timed(call, warmup))
    if repeats == 1 or time.perf_counter() - start + warmup[0] > budget:
        return result, warmup, peak
    timings: list[float] = []
    while len(timings) < repeats - 1 and time.perf_counter() - start + 2 * (timings or warmup)[-1] <= budget:
        result = _timed(call, timings)
    result, peak = peak_extra_memory(lambda: _timed(call, timings))
    return result, timings, peak


def _timed(call, timings: list[float]):
    t0 = time.perf_counter()
    result = call()
    timings.append(time.perf_counter() - t0)
    return result


def run_floor(data: Dataset, repeats: int, budget: float) -> Run:
    X, y = data.X, data.y
    _, seconds, peak = time_calls(lambda: (X.T @ X, X.T @ y), repeats, budget)
    return Run(FLOOR, tuple(seconds), peak)


def run_reml_arrays(data: Dataset, repeats: int, budget: float) -> tuple[Run, rl.LmerFit]:
    fit, seconds, peak = time_calls(lambda: rl.fit(data.X, data.y, data.groups), repeats, budget)
    return Run(REML_ARRAYS, tuple(seconds), peak, fit.tau, fit.fixef.to_numpy()), fit


def run_reml_formula(data: Dataset, frame, repeats: int, budget: float) -> Run:
    formula = data.config.formula()
    fit, seconds, peak = time_calls(lambda: rl.lmer(formula, frame), repeats, budget)
    return Run(REML_FORMULA, tuple(seconds), peak, fit.tau, fit.fixef.to_numpy())


def statsmodels_available() -> bool:
    try:
        import statsmodels.api  # noqa: F401
    except ImportError:
        return False
    return True


def fit_statsmodels(frame, fixed_formula: str, REML: bool):
    """statsmodels' MixedLM with default settings; returns (tau, fixef) or raises."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.MixedLM.from_formula(fixed_formula, frame, groups=frame["g"])
        result = model.fit(reml=REML)
    tau = float(result.cov_re.iloc[0, 0]) / float(result.scale)
    return tau, np.asarray(result.fe_params, dtype=np.float64)


def run_statsmodels(data: Dataset, frame, repeats: int, budget: float) -> Run:
    fixed = data.config.formula().replace(" + (1|g)", "")
    (tau, fixef), seconds, peak = time_calls(lambda: fit_statsmodels(frame, fixed, True), repeats, budget)
    return Run(STATSMODELS, tuple(seconds), peak, tau, fixef)


def rscript() -> str | None:
    """Path of Rscript when R with lme4 is installed, else None."""
    path = shutil.which("Rscript")
    if path is None:
        return None
    check = subprocess.run([path, "-e", "cat(requireNamespace('lme4', quietly=TRUE))"],
                           capture_output=True, text=True)
    return path if check.stdout.strip().endswith("TRUE") else None


def run_lme4(data: Dataset, frame, repeats: int, budget: float, workdir: str | None = None) -> Run:
    """Time ``lmer()`` inside R (one untimed warm-up fit, then ``repeats`` timed fits)."""
    path = rscript()
    if path is None:
        return Run(LME4, skipped="Rscript with lme4 not installed")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        csv = os.path.join(tmp, "data.csv")
        frame.to_csv(csv, index=False)
        out = subprocess.run([path, str(LME4_SCRIPT), csv, data.config.formula(), str(repeats)],
                             capture_output=True, text=True, timeout=max(600.0, 20 * budget))
    if out.returncode != 0:
        return Run(LME4, skipped=f"lme4 failed: {out.stderr.strip()[-200:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    names = ["(Intercept)"] + [f"x{j}" for j in range(1, data.config.p)]
    fixef = np.array([result["fixef"][name] for name in names])
    theta = result["theta"]
    theta = theta[0] if isinstance(theta, list) else theta
    seconds = result["timings_seconds"]
    seconds = seconds if isinstance(seconds, list) else [seconds]
    peak = float(result.get("peak_extra_mb", float("nan")) or float("nan"))
    return Run(LME4, tuple(float(s) for s in seconds), peak, float(theta) ** 2, fixef)


def python_version() -> str:
    return sys.version.split()[0]
