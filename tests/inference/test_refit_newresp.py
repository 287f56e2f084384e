"""refit(m, newresp) (issue 14, lme4's ``refit``) against lme4: the values of
tests/data/r/make_refit_reference.R (lme4's refit() and lmer() on the data with the
response replaced)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl
from reml_engine.errors import ModelDataError
from reml_engine.scaleout.chunked import lmer_chunks

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "refit" / "refit_reference.json").read_text())
CASES = {name: case for name, case in REFERENCE.items() if not name.startswith("_")}
#: lme4's optimizer stops near 1e-7 relative in theta even with a tight rhoend.
CRITERION_TOL = 1e-6
ESTIMATE_RTOL = 1e-5

NEW_RESPONSES = {
    "log(Reaction)": lambda d: np.log(d["Reaction"]),
    "sqrt(Reaction)": lambda d: np.sqrt(d["Reaction"]),
    "rev(strength)": lambda d: d["strength"].to_numpy()[::-1],
    "diameter^2 / 10": lambda d: d["diameter"] ** 2 / 10,
}


def _case(name):
    case = CASES[name]
    data = getattr(rl.datasets, case["data"])()
    for row in case.get("missing_days", []):
        data.loc[data.index[row - 1], "Days"] = np.nan  # R's rows count from 1
    return case, data


def _fit(case, data):
    with pytest.warns(rl.ModelDataWarning) if data.isna().any().any() else _no_warning():
        return rl.lmer(case["formula"], data, REML=case["REML"], progress=False)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _check(fit, expected):
    assert fit.criterion == pytest.approx(expected["criterion"], abs=CRITERION_TOL)
    assert fit.nobs == expected["nobs"]
    for name, value in expected["fixef"].items():
        assert fit.fixef[name] == pytest.approx(value, rel=ESTIMATE_RTOL, abs=1e-8)
    se = fit.se if hasattr(fit, "se") else fit.bse
    for name, value in expected["se"].items():
        assert se[name] == pytest.approx(value, rel=1e-4)
    assert fit.sigma == pytest.approx(expected["sigma"], rel=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refit_is_lmer_on_the_new_response(name):
    """lmer() on the data with the response replaced (R's update(m, data = ...)), REML and ML."""
    case, data = _case(name)
    m = _fit(case, data)
    before = (m.criterion, m.fixef.copy())
    refitted = m.refit(NEW_RESPONSES[case["newresp"]](data))
    _check(refitted, case["direct"])
    # the fit it came from is unchanged
    assert m.criterion == before[0] and m.fixef.equals(before[1])


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if not c["REML"]))
def test_ml_refit_equals_lme4_refit(name):
    case, data = _case(name)
    refitted = _fit(case, data).refit(NEW_RESPONSES[case["newresp"]](data))
    _check(refitted, case["refit"])


def test_lme4_reml_refit_reports_another_criterion():
    """Why REML cases are checked against lmer() on the new data: lme4 1.1-31's refit() of a
    REML fit with a slope reports a higher criterion than lmer() finds for the same data
    (a fact of the reference file; reml_engine's refit equals lmer)."""
    case = CASES["sleepstudy_log_reml"]
    assert case["refit"]["criterion"] < case["direct"]["criterion"] - 1  # lme4's refit differs by 2.83


def test_refit_with_own_response_is_the_fit():
    d = rl.datasets.sleepstudy()
    m = rl.lmer("Reaction ~ Days + (1|Subject)", d, progress=False)
    again = m.refit(d["Reaction"])
    assert again.criterion == pytest.approx(m.criterion, abs=1e-10)
    np.testing.assert_allclose(again.fixef, m.fixef, rtol=1e-12)
    assert again.theta == pytest.approx(m.theta, rel=1e-10)


def test_refit_keeps_the_optima_search():
    """The seed data: a refit to the same response finds the global optimum and lists both."""
    seed = rl.load_seed()
    m = rl.lmer("y ~ x + (1|f)", seed, progress=False)
    again = rl.api.refit(m, seed["y"].to_numpy())
    assert [o.criterion for o in again.optima] == pytest.approx([o.criterion for o in m.optima], abs=1e-9)


def test_refit_several_terms_is_lmer_on_the_new_response():
    p = rl.datasets.pastes()
    m = rl.lmer("strength ~ 1 + (1|batch/cask)", p, progress=False)
    new = np.log(p["strength"])
    q = p.assign(strength=new)
    direct = rl.lmer("strength ~ 1 + (1|batch/cask)", q, progress=False)
    refitted = m.refit(new)
    assert refitted.criterion == pytest.approx(direct.criterion, abs=1e-10)
    np.testing.assert_allclose(refitted.varcorr()["variance"], direct.varcorr()["variance"], rtol=1e-9)


def test_refit_weighted_several_terms_keeps_weights():
    d = rl.datasets.sleepstudy().assign(w=lambda f: 1.0 + (f["Days"] % 3))
    m = rl.lmer("Reaction ~ Days + (1|Subject)", d, weights="w", progress=False)
    new = d["Reaction"] * 0.5 + d["Days"]
    direct = rl.lmer("Reaction ~ Days + (1|Subject)", d.assign(Reaction=new), weights="w", progress=False)
    assert m.refit(new).criterion == pytest.approx(direct.criterion, abs=1e-10)


def test_refit_takes_the_datas_length_when_rows_were_dropped():
    case, data = _case("sleepstudy_dropped_rows")
    m = _fit(case, data)
    full = np.sqrt(data["Reaction"]).to_numpy()
    kept = data["Days"].notna().to_numpy()
    a = m.refit(full)
    b = m.refit(full[kept])
    assert a.criterion == b.criterion


@pytest.mark.parametrize(
    ("newresp", "message"),
    [
        (np.ones(10), "newresp has 10 values; the model needs 180"),
        ("Reaction", "newresp must be an array of numbers"),
        (np.ones((180, 2)), "one-dimensional"),
        (np.r_[np.nan, np.ones(179)], "1 missing or infinite value"),
        (np.array(["a"] * 180), "must be numbers"),
    ],
)
def test_refit_refuses_bad_responses(newresp, message):
    m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy(), progress=False)
    with pytest.raises(ModelDataError, match=message.replace("(", r"\(")):
        m.refit(newresp)


def test_refit_counts_both_lengths_when_rows_were_dropped():
    case, data = _case("sleepstudy_dropped_rows")
    m = _fit(case, data)
    with pytest.raises(ModelDataError, match=r"176 \(the rows fitted\) or 180 \(the data's rows\)"):
        m.refit(np.ones(5))


def test_refit_of_a_chunked_fit_is_refused():
    d = rl.datasets.sleepstudy()
    m = lmer_chunks("Reaction ~ Days + (1|Subject)", [d.iloc[:90], d.iloc[90:]], progress=False)
    with pytest.raises(ModelDataError, match="keep no rows"):
        m.refit(d["Reaction"])


def test_refit_does_not_keep_the_callers_array():
    d = rl.datasets.sleepstudy()
    m = rl.lmer("Reaction ~ Days + (1|Subject)", d, progress=False)
    new = np.log(d["Reaction"].to_numpy())
    refitted = m.refit(new)
    before = refitted.criterion, refitted.fitted.copy()
    new[:] = 0.0
    assert refitted.criterion == before[0]
    pd.testing.assert_series_equal(refitted.fitted, before[1])
