"""The engines compared, each timed on the same data in the same run.

* ``floor``: numpy's ``X'X`` and ``X'y``, the least any fit must do with the rows;
* ``reml_engine (arrays)``: :func:`reml_engine.fit` on X, y and the group labels;
* ``reml_engine (formula)``: :func:`reml_engine.lmer` on a DataFrame with a formula;
* ``statsmodels``: ``MixedLM.from_formula(...).fit(reml=True)``;
* ``lme4``: ``lmer()`` through ``Rscript benchmarks/lme4_fit.R``, which times the
  ``lmer()`` call inside R;
* ``mixedlm``: ``mixedlm.lmer(formula, frame)``, a port of lme4 to Python with a Rust core;
* ``interlace-lme``: ``interlace.fit(fixed formula, frame, groups=...)``, profiled REML
  with sparse matrices and L-BFGS-B;
* ``FLASH-MM`` (many responses only, :mod:`benchmarks.many`): ``flash_mm.lmmfit``.

The peers are optional: each one is used when it is installed (``pip install -e
".[bench]"``; R with lme4 for lme4) and skipped with the reason otherwise.

Every engine returns a :class:`Run`: timings, peak memory, and its estimates
(``tau = var_group / sigma2`` and the fixed effects in the column order of X, whatever
order and spelling the engine uses, see :func:`align_fixef`), which
:mod:`benchmarks.harness` compares with reml_engine's fit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import importlib.metadata
import json
import math
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import reml_engine as rl

from .simulate import FACTOR, Config, Dataset, column_names, level_names

HERE = Path(__file__).parent
LME4_SCRIPT = HERE / "lme4_fit.R"

FLOOR = "numpy floor"
REML_ARRAYS = "reml_engine (arrays)"
REML_FORMULA = "reml_engine (formula)"
STATSMODELS = "statsmodels"
LME4 = "lme4"
MIXEDLM = "mixedlm"
INTERLACE = "interlace-lme"
FLASHMM = "FLASH-MM"
#: The peers of the single-response grid, in the order of the tables.
PEERS = (STATSMODELS, LME4, MIXEDLM, INTERLACE)
ENGINES = (FLOOR, REML_ARRAYS, REML_FORMULA, *PEERS)
#: Distribution names of the Python peers (``importlib.metadata``) and their modules.
PYTHON_PEERS = {
    STATSMODELS: ("statsmodels", "statsmodels.api"),
    MIXEDLM: ("mixedlm", "mixedlm"),
    INTERLACE: ("interlace-lme", "interlace"),
    FLASHMM: ("FLASH-MM", "flash_mm"),
}
#: Spellings of the intercept across the engines.
INTERCEPT_NAMES = ("(Intercept)", "Intercept", "const")


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
        Fixed effects in the column order of X (empty for the floor; NaN where the
        engine's name for a column was not recognized).
    skipped : str
        Why the engine was not run, or did not finish (empty when it ran).
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


# --- which peers are installed ------------------------------------------------------------


@functools.cache
def peer_version(name: str) -> str | None:
    """The installed version of a peer, or None when it is not installed (or not usable)."""
    if name == LME4:
        return r_info().get("lme4")
    distribution, module = PYTHON_PEERS[name]
    try:
        importlib.import_module(module)
    except Exception:  # an installed peer that does not import is as good as absent
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def missing_reason(name: str) -> str:
    if name == LME4:
        return "Rscript with lme4 not installed"
    return f"{PYTHON_PEERS[name][0]} not installed (pip install -e \".[bench]\")"


def statsmodels_available() -> bool:
    return peer_version(STATSMODELS) is not None


@functools.cache
def r_info() -> dict:
    """``{"Rscript": path, "lme4": version, "R": version string}`` when R with lme4 is
    installed, else ``{}`` (one R start, cached)."""
    path = shutil.which("Rscript")
    if path is None:
        return {}
    check = subprocess.run(
        [path, "-e", "if (requireNamespace('lme4', quietly=TRUE)) "
                     "cat(as.character(packageVersion('lme4')), R.version.string, sep='|')"],
        capture_output=True, text=True)
    fields = check.stdout.strip().split("|")
    if check.returncode != 0 or len(fields) != 2:
        return {}
    return {"Rscript": path, "lme4": fields[0], "R": fields[1]}


def rscript() -> str | None:
    """Path of Rscript when R with lme4 is installed, else None."""
    return r_info().get("Rscript")


def python_version() -> str:
    return sys.version.split()[0]


# --- timing and memory --------------------------------------------------------------------


def status_kb(key: str) -> float:
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
    before = status_kb("VmRSS:")
    result = call()
    peak = status_kb("VmHWM:")
    return result, max(peak - before, 0.0) / 1024.0


def time_calls(call: Callable[[], object], repeats: int, budget: float, min_timed: int = 0,
               first_call: list[float] | None = None) -> tuple[object, list[float], float]:
    """Time ``call`` up to ``repeats`` times while the total stays within ``budget`` seconds.

    The first call is a warm-up (numba compiles or loads its kernels, caches fill) and
    is not counted when the budget allows at least one more, or when ``min_timed`` (the
    fewest calls timed after the warm-up, whatever the budget) is at least 1; otherwise
    it is the only timing (and memory) measured. With more calls, the last one measures
    the peak memory, so that compilation never counts there. The warm-up's time is
    appended to ``first_call`` when given. Returns the last result, the timings and the
    peak extra memory (MB).
    """
    warmup: list[float] = []
    start = time.perf_counter()
    result, peak = peak_extra_memory(lambda: _timed(call, warmup))
    if first_call is not None:
        first_call.append(warmup[0])
    if repeats == 1 or (min_timed < 1 and time.perf_counter() - start + warmup[0] > budget):
        return result, warmup, peak
    timings: list[float] = []
    while len(timings) < repeats - 1 and (
            len(timings) + 1 < min_timed or time.perf_counter() - start + 2 * (timings or warmup)[-1] <= budget):
        result = _timed(call, timings)
    result, peak = peak_extra_memory(lambda: _timed(call, timings))
    return result, timings, peak


def _timed(call, timings: list[float]):
    t0 = time.perf_counter()
    result = call()
    timings.append(time.perf_counter() - t0)
    return result


@contextlib.contextmanager
def memory_cap(extra_gb: float | None):
    """Limit this process's address space to its current size plus ``extra_gb`` GB.

    An engine that asks for more gets a ``MemoryError`` (numpy and numba raise it when an
    allocation fails) instead of driving a shared machine into swapping or the OOM
    killer. ``None`` (or a platform without ``/proc``) leaves the limit alone. Only the
    soft limit changes, and it is restored afterwards; child processes started inside
    the block inherit it.
    """
    current_kb = status_kb("VmSize:")
    if extra_gb is None or not math.isfinite(current_kb):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(current_kb * 1024 + extra_gb * 2**30)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def guarded(engine: str, call: Callable[[], Run], memory_gb: float | None) -> Run:
    """``call()`` under the memory cap; a failure becomes a skipped :class:`Run` with its reason.

    A peer that fails (an exception of its own, a convergence error) is recorded, not
    fatal: the run goes on with the other engines.
    """
    try:
        with memory_cap(memory_gb):
            return call()
    except MemoryError as err:
        return Run(engine, skipped=f"out of memory under the {memory_gb:g} GB cap ({_short(err)})")
    except Exception as err:
        return Run(engine, skipped=f"failed: {type(err).__name__}: {_short(err)}")


def _short(err: BaseException, length: int = 200) -> str:
    return " ".join(str(err).split())[:length]


# --- estimates in one order ---------------------------------------------------------------


def factor_spellings(factor: str, levels: list[str]) -> dict[str, str]:
    """Every engine's name for the indicator column of a level -> reml_engine's name for it.

    The level ``L0003`` of ``f`` is ``f[T.L0003]`` in reml_engine, statsmodels and
    interlace-lme (formulaic/patsy), ``C(f)[T.L0003]`` in patsy with an explicit
    ``C()``, ``fL0003`` in lme4 and ``f.3`` in mixedlm (which numbers the levels in
    their order instead of naming them). ``levels`` are in order, the first (the
    reference level) has no column.
    """
    spellings = {}
    for k, level in enumerate(levels[1:], start=1):
        ours = f"{factor}[T.{level}]"
        for other in (ours, f"C({factor})[T.{level}]", f"{factor}{level}", f"{factor}.{k}"):
            spellings[other] = ours
    return spellings


def fixef_spellings(config: Config) -> dict[str, str]:
    """Every engine's name for a fixed-effect column of a grid configuration -> reml_engine's."""
    spellings = {name: name for name in column_names(config)}
    spellings.update({name: "(Intercept)" for name in INTERCEPT_NAMES})
    spellings.update(factor_spellings(FACTOR, level_names(config.factor_levels)))
    return spellings


def align(values: Mapping[str, float], names: list[str], spellings: Mapping[str, str]) -> np.ndarray:
    """``values`` (by an engine's names) in the order of ``names`` (reml_engine's); NaN where
    the engine did not name a column, so that a naming mismatch cannot pass as agreement."""
    position = {name: j for j, name in enumerate(names)}
    out = np.full(len(names), np.nan)
    for name, value in values.items():
        ours = spellings.get(str(name), str(name))
        if ours in position:
            out[position[ours]] = float(value)
    return out


def align_fixef(values: Mapping[str, float], config: Config) -> np.ndarray:
    """The fixed effects in the column order of X (NaN for a column the engine did not name)."""
    return align(values, column_names(config), fixef_spellings(config))


# --- reml_engine and the floor --------------------------------------------------------------


def run_floor(data: Dataset, repeats: int, budget: float) -> Run:
    X, y = data.X, data.y
    _, seconds, peak = time_calls(lambda: (X.T @ X, X.T @ y), repeats, budget)
    return Run(FLOOR, tuple(seconds), peak)


def run_reml_arrays(data: Dataset, repeats: int, budget: float) -> tuple[Run, rl.LmerFit]:
    """reml_engine from arrays; like the formula fit, always timed after an untimed first call
    (``min_timed=1``): a first call may compile kernels that the harness's warm-up did not
    reach, and a fit takes seconds at most, so the extra call fits any budget."""
    fit, seconds, peak = time_calls(lambda: rl.fit(data.X, data.y, data.groups), repeats, budget, min_timed=1)
    return Run(REML_ARRAYS, tuple(seconds), peak, fit.tau, fit.fixef.to_numpy()), fit


def run_reml_formula(data: Dataset, frame, repeats: int, budget: float) -> Run:
    formula = data.config.formula()
    fit, seconds, peak = time_calls(lambda: rl.lmer(formula, frame), repeats, budget, min_timed=1)
    return Run(REML_FORMULA, tuple(seconds), peak, fit.tau, align_fixef(fit.fixef, data.config))


# --- the Python peers -------------------------------------------------------------------------


def fit_statsmodels(frame, fixed_formula: str, REML: bool, group: str = "g") -> tuple[float, pd.Series]:
    """statsmodels' MixedLM with default settings; returns (tau, fixef by name) or raises."""
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sm.MixedLM.from_formula(fixed_formula, frame, groups=frame[group])
        result = model.fit(reml=REML)
    tau = float(result.cov_re.iloc[0, 0]) / float(result.scale)
    return tau, pd.Series(result.fe_params, dtype=np.float64)


def fit_mixedlm(frame, formula: str, REML: bool) -> tuple[float, pd.Series]:
    """``mixedlm.lmer`` with its defaults (an adaptive start from the OLS residuals, not lme4's
    theta = 1; L-BFGS-B on exact gradients with COBYQA as fallback; lme4's restart at the
    edge); (tau, fixef by name)."""
    import mixedlm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = mixedlm.lmer(formula, frame, REML=REML)
    theta = float(np.asarray(result.theta, dtype=np.float64)[0])
    return theta**2, pd.Series(result.fixef(), dtype=np.float64)


def fit_interlace(frame, fixed_formula: str, REML: bool, group: str = "g") -> tuple[float, pd.Series]:
    """``interlace.fit`` with its defaults (L-BFGS-B from theta = 1); (tau, fixef by name)."""
    import interlace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = interlace.fit(fixed_formula, frame, groups=group, method="REML" if REML else "ML")
    theta = float(np.asarray(result.theta, dtype=np.float64)[0])
    return theta**2, pd.Series(result.fe_params, dtype=np.float64)


def run_python_peer(engine: str, data: Dataset, frame, repeats: int, budget: float) -> Run:
    """Time one Python peer on the grid's data (REML, its default settings)."""
    config = data.config
    if engine == STATSMODELS:
        call = functools.partial(fit_statsmodels, frame, config.fixed_formula(), True)
    elif engine == MIXEDLM:
        call = functools.partial(fit_mixedlm, frame, config.formula(), True)
    elif engine == INTERLACE:
        call = functools.partial(fit_interlace, frame, config.fixed_formula(), True)
    else:
        raise ValueError(f"not a Python peer of the grid: {engine}")
    (tau, fixef), seconds, peak = time_calls(call, repeats, budget)
    return Run(engine, tuple(seconds), peak, tau, align_fixef(fixef, config))


def run_statsmodels(data: Dataset, frame, repeats: int, budget: float) -> Run:
    return run_python_peer(STATSMODELS, data, frame, repeats, budget)


# --- lme4 through R -----------------------------------------------------------------------------


class Lme4Session:
    """One R process running ``lme4_fit.R --serve`` for every lme4 fit of a run.

    R and lme4 take about 1.5 s of CPU to start (more on a loaded machine); a run fits
    lme4 on many data sets, so the session starts once and stays. Each fit is still timed
    inside R, around ``lmer()`` only. A fit that outlasts its timeout stops the session
    (the next fit starts a new one) and raises ``subprocess.TimeoutExpired``.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._stderr = None

    def _start(self) -> subprocess.Popen:
        path = rscript()
        if path is None:
            raise RuntimeError(missing_reason(LME4))
        # R's warnings go to a file: a pipe nobody reads would fill and block R.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen([path, str(LME4_SCRIPT), "--serve"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        return self._process

    def fit(self, csv: str, formula: str, repeats: int, factors=(), timeout: float = 600.0) -> dict:
        process = self._process if self._process is not None and self._process.poll() is None else self._start()
        process.stdin.write("\t".join([csv, formula, str(repeats), ",".join(factors)]) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            alive = process.poll() is None
            self.close()
            if alive:
                raise subprocess.TimeoutExpired(f"lme4 on {csv}", timeout)
            raise RuntimeError(f"lme4 failed: R stopped ({self._error_tail()})")
        result = json.loads(line)
        if "error" in result:
            raise RuntimeError(f"lme4 failed: {result['error'][:300]}")
        return result

    def _error_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return " ".join(self._stderr.read().split())[-300:]

    def close(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None


@functools.cache
def lme4_session() -> Lme4Session:
    """The run's lme4 session (closed when the interpreter exits)."""
    session = Lme4Session()
    atexit.register(session.close)
    return session


def lme4_fit(csv: str, formula: str, repeats: int, factors=(), timeout: float = 600.0) -> dict:
    """``benchmarks/lme4_fit.R`` on a CSV, in the run's R session; its JSON result.

    Raises RuntimeError when R or the fit fails and ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds. ``factors`` names the columns R must treat as factors even when
    their values look like numbers (InstEval's ``studage``), so that every engine codes
    them alike.
    """
    return lme4_session().fit(csv, formula, repeats, factors, timeout)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def run_lme4(data: Dataset, frame, repeats: int, budget: float, workdir: str | None = None) -> Run:
    """Time ``lmer()`` inside R (one untimed warm-up fit, then ``repeats`` timed fits)."""
    if rscript() is None:
        return Run(LME4, skipped=missing_reason(LME4))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        csv = os.path.join(tmp, "data.csv")
        frame.to_csv(csv, index=False)
        try:
            result = lme4_fit(csv, data.config.formula(), repeats, timeout=max(600.0, 20 * budget))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            return Run(LME4, skipped=_short(err))
    theta = as_list(result["theta"])[0]
    seconds = as_list(result["timings_seconds"])
    peak = float(result.get("peak_extra_mb", float("nan")) or float("nan"))
    fixef = align_fixef(result["fixef"], data.config)
    return Run(LME4, tuple(float(s) for s in seconds), peak, float(theta) ** 2, fixef)
