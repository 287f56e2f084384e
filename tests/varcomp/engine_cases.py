"""Reading the reference cases with several random-intercept terms into the engine.

``tests/data/multi/`` holds the six lme4 cases of ``/work/shared/reference/multi`` (data
and values, copied unchanged); ``tests/data/multi_weights/`` the weighted cases written
by ``tests/data/r/make_multi_weights_reference.R``. The designs (fixed-effect columns
and grouping factors, in lme4's term order and naming) are spelled out here by hand,
from each case's formula.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reml_engine.varcomp import RandomTerms, VCProblem, compute_vc_stats

DATA = Path(__file__).resolve().parent.parent / "data"
MULTI = DATA / "multi"
MULTI_WEIGHTS = DATA / "multi_weights"


@dataclass(frozen=True)
class Design:
    """A model's pieces: X with column names, y, factors in lme4's term order."""

    X: np.ndarray
    columns: tuple[str, ...]
    y: np.ndarray
    factors: dict[str, np.ndarray]
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None

    def problem(self, **kwargs) -> VCProblem:
        terms = RandomTerms.from_labels(self.factors)
        return VCProblem(compute_vc_stats(self.X, self.y, terms, self.weights, self.offset), **kwargs)


def _read(path: Path, text_columns) -> pd.DataFrame:
    return pd.read_csv(path, dtype={c: str for c in text_columns})


def _join(*columns: pd.Series) -> np.ndarray:
    """lme4's interaction labels ``a:b``."""
    out = columns[0].astype(str)
    for c in columns[1:]:
        out = out + ":" + c.astype(str)
    return out.to_numpy()


def load_multi_reference() -> dict:
    with open(MULTI / "reference.json") as fh:
        return json.load(fh)


def multi_design(name: str) -> Design:
    """The design of one of the six cases (formulas in tests/data/multi/README.md)."""
    if name == "penicillin":
        df = _read(MULTI / "penicillin.csv", ["plate", "sample"])
        return Design(np.ones((len(df), 1)), ("(Intercept)",), df["diameter"].to_numpy(float),
                      {"plate": df["plate"].to_numpy(), "sample": df["sample"].to_numpy()})
    if name == "pastes":
        df = _read(MULTI / "pastes.csv", ["batch", "cask", "sample"])
        return Design(np.ones((len(df), 1)), ("(Intercept)",), df["strength"].to_numpy(float),
                      {"cask:batch": _join(df["cask"], df["batch"]), "batch": df["batch"].to_numpy()})
    if name == "oats":
        df = _read(MULTI / "oats.csv", ["Block", "Variety"])
        X = np.column_stack([np.ones(len(df)), df["nitro"].to_numpy(float)])
        return Design(X, ("(Intercept)", "nitro"), df["yield"].to_numpy(float),
                      {"Variety:Block": _join(df["Variety"], df["Block"]), "Block": df["Block"].to_numpy()})
    if name == "sim_subjects_items":
        df = _read(MULTI / "sim_subjects_items.csv", ["subj", "item", "cond"])
        X = np.column_stack([np.ones(len(df)), df["x"].to_numpy(float), (df["cond"] == "b").to_numpy(float)])
        return Design(X, ("(Intercept)", "x", "condb"), df["y"].to_numpy(float),
                      {"subj": df["subj"].to_numpy(), "item": df["item"].to_numpy()})
    if name == "sim_nested_boundary":
        df = _read(MULTI / "sim_nested_boundary.csv", ["class", "school", "region"])
        X = np.column_stack([np.ones(len(df)), df["x"].to_numpy(float)])
        return Design(X, ("(Intercept)", "x"), df["y"].to_numpy(float),
                      {"class:(school:region)": _join(df["class"], df["school"], df["region"]),
                       "school:region": _join(df["school"], df["region"]),
                       "region": df["region"].to_numpy()})
    if name == "sim_crossed_seedlike":
        df = _read(MULTI / "sim_crossed_seedlike.csv", ["subj", "item"])
        X = np.column_stack([np.ones(len(df)), df["x"].to_numpy(float)])
        return Design(X, ("(Intercept)", "x"), df["y"].to_numpy(float),
                      {"subj": df["subj"].to_numpy(), "item": df["item"].to_numpy()})
    raise KeyError(name)


MULTI_CASES = ["penicillin", "pastes", "oats", "sim_subjects_items", "sim_nested_boundary", "sim_crossed_seedlike"]


def theta_of(values: dict, design: Design) -> np.ndarray:
    """lme4's theta (keys ``term.(Intercept)``) in the design's term order."""
    by_term = {key.removesuffix(".(Intercept)"): value for key, value in values["theta"].items()}
    return np.array([by_term[name] for name in design.factors])


def load_weights_reference() -> dict:
    with open(MULTI_WEIGHTS / "reference.json") as fh:
        return json.load(fh)


def weights_design(name: str) -> Design:
    """The weighted cell-mean designs of make_multi_weights_reference.R."""
    if name in ("scotssec", "scotssec_offset"):
        df = _read(MULTI_WEIGHTS / "scotssec_cells.csv", ["primary", "second", "sex"])
        X = np.column_stack([np.ones(len(df)), df["verbal"].to_numpy(float), (df["sex"] == "F").to_numpy(float)])
        offset = df["social_offset"].to_numpy(float) if name == "scotssec_offset" else None
        return Design(X, ("(Intercept)", "verbal", "sexF"), df["attain"].to_numpy(float),
                      {"primary": df["primary"].to_numpy(), "second": df["second"].to_numpy()},
                      weights=df["n"].to_numpy(float), offset=offset)
    if name == "exam":
        df = _read(MULTI_WEIGHTS / "exam_cells.csv", ["school", "intake", "sex"])
        X = np.column_stack([np.ones(len(df)), df["standLRT"].to_numpy(float), (df["sex"] == "M").to_numpy(float)])
        return Design(X, ("(Intercept)", "standLRT", "sexM"), df["normexam"].to_numpy(float),
                      {"intake:school": _join(df["intake"], df["school"]), "school": df["school"].to_numpy()},
                      weights=df["n"].to_numpy(float))
    raise KeyError(name)


WEIGHT_CASES = ["scotssec", "scotssec_offset", "exam"]
