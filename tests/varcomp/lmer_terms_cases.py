"""Reading the reference cases with several random-intercept terms for the front-end
tests (``rl.lmer``), and one fit per case and criterion, cached for the test session.

* ``tests/data/multi/`` (from ``/work/shared/reference/multi``): lme4's global optimum and
  default answer for six designs;
* ``tests/data/terms_front/`` (``tests/data/r/make_terms_front_reference.R``): lme4 with
  prior weights and offsets, fitted values and residuals.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pandas as pd

import reml_engine as rl

DATA = Path(__file__).parent.parent / "data"
MULTI = DATA / "multi"
TERMS_FRONT = DATA / "terms_front"


@functools.cache
def multi_reference() -> dict:
    with open(MULTI / "reference.json") as fh:
        return json.load(fh)


@functools.cache
def terms_front_reference() -> dict:
    with open(TERMS_FRONT / "reference.json") as fh:
        cases = json.load(fh)
    cases.pop("_about", None)
    return cases


def read_case_csv(path: Path, grouping: tuple[str, ...]) -> pd.DataFrame:
    """The CSV with its grouping columns read as text (as R's factors) and the other
    columns as numbers where every value is one."""
    data = pd.read_csv(path, dtype={c: str for c in grouping})
    return data


def grouping_columns(formula: str) -> tuple[str, ...]:
    from reml_engine.frontend.formula import random_term_specs

    return tuple(dict.fromkeys(c for spec in random_term_specs(formula) for c in spec.columns))


@functools.cache
def multi_data(case: str) -> pd.DataFrame:
    ref = multi_reference()[case]
    return read_case_csv(MULTI / ref["file"], grouping_columns(ref["formula"]))


@functools.cache
def multi_fit(case: str, REML: bool):
    ref = multi_reference()[case]
    return rl.lmer(ref["formula"], multi_data(case), REML=REML)


@functools.cache
def front_data(case: str) -> pd.DataFrame:
    ref = terms_front_reference()[case]
    return read_case_csv(TERMS_FRONT / ref["file"], grouping_columns(ref["formula"]))


@functools.cache
def front_fit(case: str, REML: bool):
    ref = terms_front_reference()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these data need no row or column dropped
        return rl.lmer(ref["formula"], front_data(case), REML=REML, weights=ref["weights"])
