"""The reference cases (lme4, lmerTest, pbkrtest, nlme, RLRsim values) and the helpers
that read them, for every test directory (``tests`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"


def load_reference() -> dict:
    with open(REFERENCE / "reference.json") as fh:
        return json.load(fh)


def load_extra_reference() -> dict:
    with open(REFERENCE / "extra_reference.json") as fh:
        return json.load(fh)


def load_inference_reference() -> dict:
    with open(REFERENCE / "inference_reference.json") as fh:
        return json.load(fh)


def load_closure_reference() -> dict:
    """lme4's fits of the small cases behind issue 10's last fixes
    (``tests/data/r/make_closure_reference.R``)."""
    with open(DATA / "closure_reference.json") as fh:
        return json.load(fh)


def fit_case(name: str, REML: bool = True):
    """The reference case's model fitted by reml_engine, warnings (rank, scale) silenced."""
    import warnings

    import reml_engine as rl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.lmer(case_formula(name), case_data(name), REML=REML)


def load_cases() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "cases.tsv", sep="\t")


def case_data(name: str) -> pd.DataFrame:
    cases = load_cases().set_index("name")
    return pd.read_csv(REFERENCE / cases.loc[name, "file"])


def case_formula(name: str) -> str:
    return load_cases().set_index("name").loc[name, "formula"]


def lme4_name(name: str) -> str:
    """formulaic's column name in lme4's spelling: 'x1:cat[T.b]' -> 'x1:catb'."""
    return re.sub(r"\[T\.([^\]]+)\]", r"\1", name)


def as_list(value) -> list:
    """R's jsonlite writes length-one vectors as scalars."""
    return value if isinstance(value, list) else [value]


CASE_NAMES = list(load_cases()["name"])
#: Cases where nlme's gls(corCompSymm) stops at a local optimum of the compound-symmetry
#: criterion that is not the global one (sim_contextual: rho = -0.16, criterion 58.31,
#: where the global optimum is at tau = 1040, criterion 12.64).
NLME_AT_A_LOCAL_OPTIMUM = ("sim_contextual",)


MULTI_REAL = DATA / "multi_real"


@functools.cache
def load_multi_real_reference() -> dict:
    """Real data sets with two to four random-intercept terms: lme4's global optimum,
    lme4's default answer and lmerTest's Satterthwaite df
    (``tests/data/r/make_multi_real_reference.R``)."""
    with open(MULTI_REAL / "reference.json") as fh:
        cases = json.load(fh)
    cases.pop("_about", None)
    return cases


def multi_real_data(case: str) -> pd.DataFrame:
    """The case's CSV with the grouping columns read as text, as R's factors. The rows are
    complete, and no text is a missing value (Alfalfa's ``Date`` has a level ``None``)."""
    from reml_engine.frontend.formula import random_term_specs

    ref = load_multi_real_reference()[case]
    grouping = {c for spec in random_term_specs(ref["formula"]) for c in spec.columns}
    return pd.read_csv(MULTI_REAL / ref["file"], dtype={c: str for c in grouping},
                       keep_default_na=False)
