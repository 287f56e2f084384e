"""The reference cases with several random-intercept terms (tests/data/multi), read for the
optimizer's tests without the engine: fixed-effects matrix, one label array per term in
lme4's order and naming, and the lme4 values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from formulaic import model_matrix

MULTI = Path(__file__).parent.parent / "data" / "multi"


def load_multi_reference() -> dict:
    with open(MULTI / "reference.json") as fh:
        return json.load(fh)


def _expand(term: str) -> list[str]:
    """lme4's expansion of one grouping expression: ``a/b/c`` -> ``c:(b:a)``, ``b:a``, ``a``."""
    if "/" not in term:
        return [term]
    parts = [t.strip() for t in term.split("/")]
    names = []
    inner = parts[0]
    names.append(inner)
    for part in parts[1:]:
        wrapped = inner if ":" not in inner else f"({inner})"
        inner = f"{part}:{wrapped}"
        names.append(inner)
    return names[::-1]


def _labels(data: pd.DataFrame, name: str) -> np.ndarray:
    columns = re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", name)
    labels = data[columns[0]].astype(str)
    for column in columns[1:]:
        labels = labels + ":" + data[column].astype(str)
    return labels.to_numpy()


def parse_formula(formula: str) -> tuple[str, str, list[str]]:
    """(response, fixed-effects right-hand side, random term names in lme4's order)."""
    response, rhs = (s.strip() for s in formula.split("~"))
    bars = re.findall(r"\(\s*1\s*\|\s*([^)]+?)\s*\)", rhs)
    fixed = re.sub(r"\+?\s*\(\s*1\s*\|[^)]*\)", "", rhs).strip().rstrip("+").strip() or "1"
    terms = []
    for bar in bars:
        terms += _expand(bar)
    return response, fixed, terms


def case_problem_data(case: str) -> dict:
    """X, y, factors (one label array per term, lme4's order) and the term names."""
    ref = load_multi_reference()[case]
    response, fixed, terms = parse_formula(ref["formula"])
    raw = pd.read_csv(MULTI / ref["file"], dtype=str)
    data = raw.copy()
    for column in data.columns:
        converted = pd.to_numeric(data[column], errors="coerce")
        # A column whose every value is a number is numeric (the grouping columns are text).
        if converted.notna().all():
            data[column] = converted
    X = model_matrix(fixed, data)
    factors = [_labels(raw, term) for term in terms]
    return {
        "X": np.asarray(X, dtype=float),
        "columns": list(X.columns),
        "y": data[response].to_numpy(dtype=float),
        "factors": factors,
        "terms": terms,
        "reference": ref,
    }


def load_lme4_default_cases() -> dict:
    """The simulated designs of tests/data/r/make_multi_lme4_default.R (data included)."""
    with open(MULTI / "lme4_default.json") as fh:
        cases = json.load(fh)
    cases.pop("_about", None)
    return cases


def simulated_problem_data(case: dict) -> dict:
    """X, y, factors (lme4's term order), weights and offset of a simulated design."""
    data = pd.DataFrame(case["data"])
    formula = re.sub(r"\+\s*offset\((\w+)\)", "", case["formula"])
    offset = re.search(r"offset\((\w+)\)", case["formula"])
    response, fixed, _ = parse_formula(formula)
    X = model_matrix(fixed, data)
    factors = [_labels(data.astype(str), term) for term in case["terms"]]
    return {
        "X": np.asarray(X, dtype=float),
        "y": data[response].to_numpy(dtype=float),
        "factors": factors,
        "terms": case["terms"],
        "weights": None if case.get("weights") is None else data[case["weights"]].to_numpy(dtype=float),
        "offset": None if offset is None else data[offset.group(1)].to_numpy(dtype=float),
    }
