"""Immutability: after any call on a fit, failed or not, every attribute of the fit is as
it was, and every later result is what a twin fit that never saw the call gives."""

from __future__ import annotations

import dataclasses
import functools
import pickle

import numpy as np
import pandas as pd
import pytest

import reml_engine as rl

from .relations import (
    fit_quietly,
    reference_cases,
    slow_unless,
)


def _text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: f"#{v}")


def _bad_calls(case):
    """Calls that fail on a fit of ``case``: name -> call."""
    data = case.complete()
    calls = {
        "predict, newdata without the response (fine) and a column missing":
            lambda m: m.predict(data.drop(columns=[*case.predictors[:1], case.response])),
        "predict, newdata not a DataFrame": lambda m: m.predict(data.to_dict("list")),
        "predict, X of the wrong shape": lambda m: m.predict(X=np.ones((3, 40)), groups=[1, 2, 3]),
        "predict, group labels of another type": lambda m: m.predict(data.assign(**{case.group: 1.5})),
        "coef_table, unknown ddf": lambda m: m.coef_table(ddf="none"),
        "contrast_test, L of the wrong shape": lambda m: m.contrast_test(np.ones((1, 40))),
        "confint, unknown method": lambda m: m.confint("none"),
        "confint, level 1.5": lambda m: m.confint("wald", level=1.5),
        "simulate, nsim 0": lambda m: m.simulate(0),
        "test_random_intercept, unknown method": lambda m: m.test_random_intercept("none"),
        "profile_criterion, text tau": lambda m: m.profile_criterion("a"),
        "anova, unknown ddf": lambda m: m.anova(ddf="none"),
        "bootstrap, 0 replicates": lambda m: m.bootstrap(0),
        "confint, boot with 0 replicates": lambda m: m.confint("boot", n_boot=0),
    }
    for column in case.numeric:
        calls[f"predict, newdata with text in numeric column {column}"] = (
            lambda m, c=column: m.predict(data.assign(**{c: _text(data[c])})))
    for column in case.factors:
        calls[f"predict, newdata with an unseen level of {column}"] = (
            lambda m, c=column: m.predict(data.assign(**{c: "never seen"})))
        calls[f"predict, newdata with numbers in factor {column}"] = (
            lambda m, c=column: m.predict(data.assign(**{c: np.arange(len(data), dtype=float)})))
    return calls


#: Results of a fit that later calls read: each must be the same as the twin's.
LATER_RESULTS = {
    "fixef": lambda m, data: m.fixef,
    "vcov": lambda m, data: m.vcov,
    "ranef": lambda m, data: m.ranef,
    "fitted": lambda m, data: m.fitted,
    "predict()": lambda m, data: m.predict(),
    "predict(newdata)": lambda m, data: m.predict(data),
    "predict(newdata, re=False)": lambda m, data: m.predict(data, re=False),
    "coef_table": lambda m, data: m.coef_table(),
    "anova": lambda m, data: m.anova(),
    "confint wald": lambda m, data: m.confint("wald"),
    "summary": lambda m, data: m.summary(),
    "simulate": lambda m, data: m.simulate(2, seed=1),
}


def _outcome(call, *args):
    try:
        return "value", call(*args)
    except Exception as err:  # the outcome of a failing call is its error
        return "error", f"{type(err).__name__}: {err}"


def _assert_same_outcome(got, want, what: str) -> None:
    assert got[0] == want[0], f"{what}: {got} instead of {want}"
    a, b = got[1], want[1]
    if isinstance(b, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=what)
    elif isinstance(b, pd.Series):
        pd.testing.assert_series_equal(a, b, obj=what)
    elif isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        assert a == b, what


def _state(fit) -> dict[str, bytes]:
    """Every field of the fit (and of its design), pickled: a change anywhere shows."""
    state = {}
    for f in dataclasses.fields(fit):
        value = getattr(fit, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for g in dataclasses.fields(value):
                state[f"{f.name}.{g.name}"] = pickle.dumps(getattr(value, g.name))
        else:
            state[f.name] = pickle.dumps(value)
    return state


@functools.cache
def _twin_results(name: str) -> dict:
    """The later results of a fit that never saw a failing call."""
    case = next(c for c in reference_cases() if c.name == name)
    twin = fit_quietly(rl.lmer, case.formula, case.data)
    return {key: fit_quietly(_outcome, later, twin, case.data) for key, later in LATER_RESULTS.items()}


def _calls():
    for case in reference_cases():
        for name, call in _bad_calls(case).items():
            yield pytest.param(case, call, id=f"{case.name}, {name}")


def _check(case, call):
    fit = fit_quietly(rl.lmer, case.formula, case.data)
    fit.fitted  # computed once and cached: part of the state from now on  # noqa: B018
    before = _state(fit)
    fit_quietly(_outcome, call, fit)
    changed = [name for name, value in _state(fit).items() if value != before[name]]
    assert not changed, f"{case.name}: the call changed {changed}"
    for key, later in LATER_RESULTS.items():
        _assert_same_outcome(fit_quietly(_outcome, later, fit, case.data), _twin_results(case.name)[key],
                             f"{case.name}, {key} after the call")


@pytest.mark.parametrize("case, call", slow_unless(_calls()))
def test_a_failed_call_changes_nothing(case, call):
    _check(case, call)
