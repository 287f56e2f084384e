"""``m.lme4_default`` is the optimum lme4's ``lmer()`` returns, checked against lmer() itself.

``tests/data/r/make_lme4_start.R`` fits, with lme4 1.1-31's default settings, plm's
``Cigar`` (``price ~ pop + (1|state)``), the reference cases, 300 simulated data sets with
two local minima (567 REML and ML fits with two minima) and 60 more screened so that lmer
stops in another basin than a descent from its start reaches (BOBYQA's first steps cross
the barrier). It records lmer's start theta0, where lmer stopped and its criterion, and
for some fits every evaluation lmer made (``verbose = 3``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference_data import case_data, case_formula

import reml_engine as rl
from reml_engine.core.lme4_path import bobyqa_1d, lme4_path_of_stats
from reml_engine.core.lme4_start import lme4_start_from_rows

DATA = Path(__file__).parents[1] / "data"
REF = json.loads((DATA / "lme4_start.json").read_text())

#: lmer stops within its tolerances (ftol_abs = 1e-8 on the criterion) of the optimum it
#: reaches; its criterion there agrees with the exact local minimum to this.
LMER_CRITERION_ATOL = 1e-6
#: nloptr prints theta and the criterion with 6 decimals (verbose = 3).
TRACE_ATOL = 1e-6


def _quiet(formula, data, REML):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.lmer(formula, data, REML=REML)


def _simulated_fit(record, REML):
    data = pd.DataFrame({"y": record["y"], "x": record["x"], "g": record["g"]})
    return _quiet("y ~ x + (1|g)", data, REML)


def _optimum_lmer_returned(m, criterion):
    """The local minimum whose criterion is lmer's (the one lmer stopped at)."""
    gaps = [abs(o.criterion - criterion) for o in m.optima]
    k = int(np.argmin(gaps))
    assert gaps[k] < 1e-4 * max(1.0, abs(criterion)), "lmer stopped away from every local minimum"
    return m.optima[k]


@pytest.mark.parametrize("key", ["reml", "ml"])
def test_cigar_lme4_returns_the_boundary_fit_53_worse(key):
    """plm's Cigar: lmer starts at theta0 = 0.118 and stops at the boundary, 53.5 worse than
    the global optimum at theta = 2.5. The old prediction (a descent from theta = 1) said
    lme4 reaches the global one."""
    ref = REF["cigar"][key]
    m = _quiet("price ~ pop + (1|state)", pd.read_csv(DATA / "cigar.csv"), key == "reml")
    assert m.lme4_start_theta == pytest.approx(ref["theta0"], rel=1e-10)
    assert ref["theta"] == 0.0
    assert m.lme4_default.kind == "boundary"
    assert m.lme4_default.criterion == pytest.approx(ref["criterion"], abs=LMER_CRITERION_ATOL)
    assert m.criterion == pytest.approx(ref["global_criterion"], abs=LMER_CRITERION_ATOL)
    assert m.lme4_default.criterion - m.criterion == pytest.approx(
        53.5 if key == "reml" else 45.35, abs=0.05)
    note = next(n for n in m.notes if n.startswith("lme4's lmer()"))
    assert "the boundary var_group = 0" in note and f"{ref['theta0']:.4g}" in note


@pytest.mark.parametrize("key", ["reml", "ml"])
@pytest.mark.parametrize("case", sorted(REF["cases"]))
def test_reference_cases_lme4_default_is_what_lmer_returned(case, key):
    ref = REF["cases"][case][key]
    m = _quiet(case_formula(case), case_data(case), key == "reml")
    assert m.lme4_start_theta == pytest.approx(ref["theta0"], rel=1e-10)
    assert m.lme4_default.criterion == pytest.approx(ref["criterion"], abs=LMER_CRITERION_ATOL)
    assert m.lme4_default.theta == pytest.approx(ref["theta"], rel=1e-3, abs=1e-4)


def test_seed_lme4_still_stops_at_the_boundary():
    ref = REF["cases"]["seed_x"]["reml"]
    m = _quiet("y ~ x + (1|f)", rl.load_seed(), True)
    assert round(m.lme4_start_theta, 3) == 0.153
    assert m.lme4_default.kind == "boundary" and ref["theta"] == 0.0
    assert not m.lme4_default.is_global


@pytest.mark.parametrize("family", ["simulated", "start_decides"])
def test_simulated_two_optima_lme4_default_is_what_lmer_returned(family):
    """On every fit with two local minima, the optimum we say lmer returns is the one it
    returned (and the old rule, a descent from theta = 1, is wrong on some)."""
    fits = agree = 0
    for record in REF[family]:
        for key in ("reml", "ml"):
            if family == "start_decides":
                if record["criterion_name"] != key:
                    continue
                ref = record
            else:
                ref = record[key]
            m = _simulated_fit(record, key == "reml")
            if len(m.optima) < 2:
                continue
            fits += 1
            returned = _optimum_lmer_returned(m, ref["criterion"])
            assert m.lme4_start_theta == pytest.approx(ref["theta0"], rel=1e-9)
            agree += m.lme4_default is returned or m.lme4_default.tau == returned.tau
    assert fits >= (500 if family == "simulated" else 50)
    assert agree == fits


def _settled(theta_ref) -> int:
    """Index after which every evaluation of lmer is within 5% of where it stopped: from
    there on the search only refines inside its basin."""
    theta_ref = np.atleast_1d(theta_ref)
    far = np.abs(theta_ref - theta_ref[-1]) > 0.05 * max(theta_ref[-1], 1e-3)
    return int(np.flatnonzero(far)[-1]) + 1 if far.any() else 0


def _our_trace(m) -> np.ndarray:
    """The emulated evaluations from theta0 computed as R computes it (to the last bit)."""
    trace = []
    lme4_path_of_stats(m.stats, m.REML, lme4_start_from_rows(m.design.y, m.group_codes), trace)
    return np.array(trace)


def _fitted_records():
    """(label, fit, record) for every fit with lmer's evaluations recorded."""
    cigar = pd.read_csv(DATA / "cigar.csv")
    for key in ("reml", "ml"):
        yield f"cigar/{key}", _quiet("price ~ pop + (1|state)", cigar, key == "reml"), REF["cigar"][key]
        for case in sorted(REF["cases"]):
            yield f"{case}/{key}", _quiet(case_formula(case), case_data(case), key == "reml"), REF["cases"][case][key]
    for k, record in enumerate(REF["start_decides"]):
        yield f"start_decides/{k}", _simulated_fit(record, record["criterion_name"] == "reml"), record


def test_bobyqa_path_is_lmers_own_evaluations():
    """Every evaluation lmer made (nloptr's verbose trace: theta and criterion, 6 decimals)
    is the one the emulated BOBYQA makes, in order, at least until lmer settles in its
    basin; on almost every fit to the last one. Where they part later, NLopt itself run on
    this engine's criterion parts there too: lme4's criterion and this one differ in the
    last digits, and BOBYQA's final steps hinge on comparisons that close."""
    full = total = 0
    for label, m, record in _fitted_records():
        ours, theirs = _our_trace(m), np.atleast_1d(record["trace_theta"])
        values = np.atleast_1d(record["trace_criterion"])
        k = _settled(theirs)
        assert len(ours) >= k, label
        np.testing.assert_allclose(ours[:k, 0], theirs[:k], atol=TRACE_ATOL, rtol=0, err_msg=label)
        np.testing.assert_allclose(ours[:k, 1], values[:k], atol=TRACE_ATOL, rtol=1e-7, err_msg=label)
        total += 1
        full += len(ours) == len(theirs) and np.allclose(ours[:, 0], theirs, atol=TRACE_ATOL, rtol=0)
    assert total == 2 * (1 + len(REF["cases"])) + len(REF["start_decides"])
    assert full >= total - 10, (full, total)


def test_start_from_rows_is_rs_and_from_stats_agrees_to_rounding():
    """R's theta0 (15 digits in the JSON) from the rows with R's arithmetic, and from the
    statistics to rounding."""
    for record in REF["start_decides"][:10] + REF["simulated"][:10]:
        key = record.get("criterion_name", "reml")
        ref = record if "theta0" in record else record[key]
        m = _simulated_fit(record, key == "reml")
        assert lme4_start_from_rows(m.design.y, m.group_codes) == pytest.approx(ref["theta0"], rel=1e-14)
        assert m.lme4_start_theta == pytest.approx(ref["theta0"], rel=1e-12)


def test_bobyqa_1d_finds_the_minimum_of_a_quadratic():
    """Closed form: a quadratic is minimized to within the final trust radius."""
    x, value = bobyqa_1d(lambda t: (t - 3.7) ** 2 + 1.0, 0.4)
    assert x == pytest.approx(3.7, abs=1e-6)
    assert value == pytest.approx(1.0, abs=1e-10)
    # At the bound when the minimum is below it.
    x, value = bobyqa_1d(lambda t: (t + 2.0) ** 2, 1.0)
    assert x == 0.0 and value == 4.0
