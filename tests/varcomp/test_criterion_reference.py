"""The engine at lme4's theta against lme4's values (R 4.2.2, lme4 1.1-31).

* The six cases of ``tests/data/multi`` (crossed, nested, 3-level nesting with a
  variance near 0, the seed-like crossed case): REMLcrit/deviance, fixed effects, their
  standard errors, sigma2 and the first term's conditional modes, at the global optimum
  and at lme4's default answer.
* Prior weights and offsets on real data (mlmRev's ScotsSec and Exam as weighted cell
  means, ``tests/data/r/make_multi_weights_reference.R``): the same at lme4's optimum,
  plus lme4's own criterion (``devFunOnly``) at theta away from the optimum and on the
  boundary, and every term's conditional modes and variances (``condVar``).
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_cases import (
    MULTI_CASES,
    WEIGHT_CASES,
    load_multi_reference,
    load_weights_reference,
    multi_design,
    theta_of,
    weights_design,
)

pytestmark = pytest.mark.reference

MULTI = load_multi_reference()
WEIGHTS = load_weights_reference()

#: lme4 reports the criterion to full precision at its theta: agreement is to rounding.
CRITERION_RTOL = 1e-10
FIXEF_RTOL = 1e-8
SE_RTOL = 1e-7
RANEF_ATOL = 1e-7


def _check_fit(problem, design, values, REML):
    theta = theta_of(values, design)
    tau = theta**2
    ev = problem.evaluate(tau, REML=REML)
    assert ev.criterion == pytest.approx(values["criterion"], rel=CRITERION_RTOL)
    beta, vcov, sigma2 = problem.fixed_effects(tau, REML=REML)
    fixef = np.array([values["fixef"][name] for name in design.columns])
    se = np.array([values["se"][name] for name in design.columns])
    assert np.allclose(beta, fixef, rtol=FIXEF_RTOL, atol=FIXEF_RTOL * np.abs(fixef).max())
    assert np.allclose(ev.beta, beta, rtol=1e-12, atol=1e-12 * np.abs(fixef).max())
    assert np.allclose(np.sqrt(np.diag(vcov)), se, rtol=SE_RTOL)
    assert sigma2 == pytest.approx(values["sigma2"], rel=SE_RTOL)
    return tau


@pytest.mark.parametrize("REML", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("name", MULTI_CASES)
def test_multi_cases_at_lme4_theta(name, REML):
    design = multi_design(name)
    problem = design.problem()
    case = MULTI[name]
    assert problem.nobs == case["reml"]["nobs"]
    assert dict(zip(problem.term_names, problem.nlevels, strict=True)) == case["reml"]["ngroups"]
    for key in (("reml", "reml_lme4_default") if REML else ("ml", "ml_lme4_default")):
        _check_fit(problem, design, case[key], REML)


@pytest.mark.parametrize("name", MULTI_CASES)
def test_multi_cases_conditional_modes(name):
    design = multi_design(name)
    problem = design.problem()
    values = MULTI[name]["reml"]
    tau = theta_of(values, design) ** 2
    first = problem.term_names[0]
    modes = problem.ranef(tau)[first]["mode"]
    expected = values["ranef_first"]
    assert len(modes) == len(expected)
    got = np.array([modes[label] for label in expected])
    assert np.allclose(got, np.array(list(expected.values())), rtol=1e-7, atol=RANEF_ATOL)


def test_multi_cases_structure_and_plan():
    """Nested cases take the closed form, crossed ones the dense blocks."""
    plans = {name: multi_design(name).problem().plan for name in MULTI_CASES}
    for name in ("pastes", "oats", "sim_nested_boundary"):
        assert plans[name].startswith("nested"), plans[name]
    for name in ("penicillin", "sim_subjects_items", "sim_crossed_seedlike"):
        assert plans[name].startswith("crossed"), plans[name]
    assert multi_design("penicillin").problem().structure.relation(0, 1) == "crossed"
    assert multi_design("sim_subjects_items").problem().structure.relation(0, 1) == "partially crossed"
    assert multi_design("pastes").problem().structure.relation(0, 1) == "nested"


@pytest.mark.parametrize("REML", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("name", WEIGHT_CASES)
def test_prior_weights_and_offset_at_lme4_theta(name, REML):
    design = weights_design(name)
    problem = design.problem()
    values = WEIGHTS[name]["reml" if REML else "ml"]
    assert problem.nobs == values["nobs"]
    tau = _check_fit(problem, design, values, REML)
    _, vcov, _ = problem.fixed_effects(tau, REML=REML)
    assert np.allclose(vcov, np.array(values["vcov"]), rtol=1e-7, atol=1e-12)
    # lme4's deviance function away from the optimum and on the boundary.
    for probe in values["probes"]:
        theta = np.array(probe["theta"], dtype=float)
        assert problem.evaluate(theta**2, REML=REML, gradient=False).criterion == pytest.approx(
            probe["criterion"], rel=CRITERION_RTOL)


@pytest.mark.parametrize("name", WEIGHT_CASES)
def test_prior_weights_conditional_modes_and_variances(name):
    design = weights_design(name)
    problem = design.problem()
    values = WEIGHTS[name]["reml"]
    tau = theta_of(values, design) ** 2
    ranef = problem.ranef(tau)
    for term, expected in values["ranef"].items():
        frame = ranef[term]
        labels = [str(label) for label in expected["levels"]]
        assert len(frame) == len(labels)
        assert np.allclose(frame.loc[labels, "mode"].to_numpy(), expected["mode"], rtol=1e-7, atol=RANEF_ATOL)
        assert np.allclose(frame.loc[labels, "condvar"].to_numpy(), expected["condvar"], rtol=1e-7, atol=1e-12)
