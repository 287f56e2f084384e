"""Example data sets, as lme4, nlme and R users know them, as pandas DataFrames.

Each function returns a new DataFrame with R's column names, R's row order and R's column
types: numbers stored as doubles in R are ``float64``, R integers ``int64``, and factors
are pandas categoricals with R's levels in R's order (``ordered=True`` where R's factor is
ordered, as the grouping factors of nlme's grouped data are). The data were exported from
R by ``reml_engine/datasets/make_datasets.R`` (R 4.2.2, lme4 1.1-31, nlme 3.1-162, mlmRev
1.0-8) and are shipped with the package; nothing is downloaded.

=============  ==========  ======  =========================================================
function       R source    rows    lme4 users fit
=============  ==========  ======  =========================================================
sleepstudy     lme4        180     ``Reaction ~ Days + (1|Subject)``
dyestuff       lme4        30      ``Yield ~ 1 + (1|Batch)``
dyestuff2      lme4        30      ``Yield ~ 1 + (1|Batch)``
penicillin     lme4        144     ``diameter ~ 1 + (1|plate) + (1|sample)``
pastes         lme4        60      ``strength ~ 1 + (1|batch/cask)``
insteval       lme4        73,421  ``y ~ service + (1|s) + (1|d)``
oats           nlme        72      ``yield ~ nitro + (1|Block/Variety)``
machines       nlme        54      ``score ~ Machine + (1|Worker) + (1|Worker:Machine)``
orthodont      nlme        108     ``distance ~ age + Sex + (1|Subject)``
milk           nlme        1,337   ``protein ~ Time + Diet + (1|Cow)``
exam           mlmRev      4,059   ``normexam ~ standLRT + sex + schgend + (1|school)``
warpbreaks     datasets    54      ``breaks ~ wool + (1|tension)``
seed           reml_engine 12      ``y ~ x + (1|f)``
=============  ==========  ======  =========================================================

Examples
--------
>>> import reml_engine as rl
>>> sleepstudy = rl.datasets.sleepstudy()
>>> sleepstudy.shape, sleepstudy["Subject"].cat.categories[:3].tolist()
((180, 3), ['308', '309', '310'])
>>> m = rl.lmer("Reaction ~ Days + (1|Subject)", sleepstudy)
>>> print(f"{m.fixef['Days']:.4f}")
10.4673
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import pandas as pd

#: The catalogue the R script writes: per data set its file, size and column types.
CATALOGUE = "datasets.json"

#: pandas dtype of each R storage type that is read as it is.
_NUMERIC_DTYPES = {"double": "float64", "integer": "int64"}
#: R storage types that become pandas categoricals.
_FACTOR_TYPES = ("factor", "ordered")


@functools.cache
def _catalogue() -> dict:
    with resources.files(__name__).joinpath("data", CATALOGUE).open() as fh:
        return {name: entry for name, entry in json.load(fh).items() if not name.startswith("_")}


@functools.cache
def _read(name: str) -> pd.DataFrame:
    """Parse a data set once; callers get copies (:func:`_load`)."""
    entry = _catalogue()[name]
    columns = entry["columns"]
    dtypes = {c["name"]: ("str" if c["type"] in _FACTOR_TYPES else _NUMERIC_DTYPES[c["type"]]) for c in columns}
    with resources.files(__name__).joinpath("data", entry["file"]).open("rb") as fh:
        frame = pd.read_csv(
            fh,
            dtype=dtypes,
            compression="gzip" if entry["file"].endswith(".gz") else None,
            # Labels are text as R has them; only an empty field is missing.
            keep_default_na=False,
            na_values=[""],
        )
    for column in columns:
        if column["type"] not in _FACTOR_TYPES:
            continue
        labels = frame[column["name"]]
        values = pd.Categorical(labels, categories=column["levels"], ordered=column["type"] == "ordered")
        if (values.isna() & labels.notna().to_numpy()).any():
            raise RuntimeError(
                f"reml_engine's copy of {name} is damaged: column {column['name']} has labels that are not "
                "among its levels; reinstall reml_engine"
            )
        frame[column["name"]] = values
    if list(frame.columns) != [c["name"] for c in columns] or len(frame) != entry["nrow"]:
        raise RuntimeError(f"reml_engine's copy of {name} is damaged (columns or rows); reinstall reml_engine")
    return frame


def _load(name: str) -> pd.DataFrame:
    # A deep copy: changing the returned frame never changes what the next call returns.
    frame = _read(name).copy(deep=True)
    # The summary's "Data:" line (reml_engine.lmer reads attrs["name"]).
    frame.attrs["name"] = name
    return frame


def sleepstudy() -> pd.DataFrame:
    """Reaction times of 18 subjects over 10 days of sleep deprivation (lme4's ``sleepstudy``).

    180 rows, 3 columns: ``Reaction`` (average reaction time that day, ms), ``Days`` (days of
    sleep deprivation, 0 to 9) and ``Subject`` (a factor, 18 levels ``"308"`` to
    ``"372"``). Days 0 and 1 were adaptation and training, day 2 the baseline (Belenky et
    al., 2003, *Journal of Sleep Research* 12, 1-12).

    lme4 users fit ``Reaction ~ Days + (Days|Subject)``; the random-intercept model is
    ``Reaction ~ Days + (1|Subject)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("Reaction ~ Days + (1|Subject)", rl.datasets.sleepstudy())
    >>> print(f"var_group {m.var_group:.2f}, sigma2 {m.sigma2:.2f}")
    var_group 1378.18, sigma2 960.46
    """
    return _load("sleepstudy")


def dyestuff() -> pd.DataFrame:
    """Yield of dyestuff from 5 preparations of each of 6 batches (lme4's ``Dyestuff``).

    30 rows, 2 columns: ``Batch`` (a factor, levels ``"A"`` to ``"F"``: the batch of the
    intermediate product) and ``Yield`` (grams of standard colour). From Davies and
    Goldsmith (1972), *Statistical Methods in Research and Production*, section 6.4.

    lme4 users fit ``Yield ~ 1 + (1|Batch)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("Yield ~ 1 + (1|Batch)", rl.datasets.dyestuff())
    >>> print(f"var_group {m.var_group:.2f}, sigma2 {m.sigma2:.2f}")
    var_group 1764.05, sigma2 2451.25
    """
    return _load("dyestuff")


def dyestuff2() -> pd.DataFrame:
    """Constructed data in the layout of ``dyestuff`` whose batch variance is estimated at 0
    (lme4's ``Dyestuff2``).

    30 rows, 2 columns: ``Batch`` (a factor, levels ``"A"`` to ``"F"``) and ``Yield``. Box and
    Tiao (1973), *Bayesian Inference in Statistical Analysis*, section 5.1.2, made them up
    to show a between-batch mean square below the within-batch one.

    lme4 users fit ``Yield ~ 1 + (1|Batch)`` (a boundary fit).

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.

    Examples
    --------
    >>> import reml_engine as rl
    >>> m = rl.lmer("Yield ~ 1 + (1|Batch)", rl.datasets.dyestuff2())
    >>> print(m.var_group, m.boundary.reason)
    0.0 negative_icc
    """
    return _load("dyestuff2")


def penicillin() -> pd.DataFrame:
    """Zones of growth inhibition of 6 penicillin samples on each of 24 plates (lme4's
    ``Penicillin``).

    144 rows, 3 columns: ``diameter`` (of the zone, mm), ``plate`` (a factor, levels ``"a"``
    to ``"x"``) and ``sample`` (a factor, levels ``"A"`` to ``"F"``). From Davies and
    Goldsmith (1972), section 6.6.

    lme4 users fit the crossed model ``diameter ~ 1 + (1|plate) + (1|sample)``; with one
    random term, ``diameter ~ sample + (1|plate)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("penicillin")


def pastes() -> pd.DataFrame:
    """Strength of a chemical paste: 2 assays of each of 3 casks from each of 10 deliveries
    (lme4's ``Pastes``).

    60 rows, 4 columns: ``strength``, ``batch`` (a factor, levels ``"A"`` to ``"J"``: the
    delivery), ``cask`` (a factor, levels ``"a"`` to ``"c"``: the cask within the delivery)
    and ``sample`` (a factor, 30 levels ``"A:a"`` to ``"J:c"``: the cask itself). From Davies
    and Goldsmith (1972), section 6.5.

    lme4 users fit the nested model ``strength ~ 1 + (1|batch/cask)``; with one random term,
    ``strength ~ 1 + (1|sample)`` (the same as ``(1|batch:cask)``).

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("pastes")


def insteval() -> pd.DataFrame:
    """73,421 ratings of lectures at ETH Zurich by students (lme4's ``InstEval``).

    73,421 rows, 7 columns: ``s`` (a factor, 2,972 students), ``d`` (a factor, 1,128
    lecturers), ``studage`` (ordered factor ``"2" < "4" < "6" < "8"``: the student's
    semester), ``lectage`` (ordered factor ``"1"`` to ``"6"``: semesters since the lecture),
    ``service`` (a factor ``"0"``/``"1"``: lecture held for another department), ``dept``
    (a factor, 14 departments in lme4's level order) and ``y`` (the rating, integers 1 to
    5). Anonymized by its authors.

    lme4 users fit ``y ~ service + (1|s) + (1|d)`` and larger crossed models; with one random
    term, ``y ~ service + (1|d)``. ``studage`` and ``lectage`` are ordered: R codes them by
    orthogonal polynomials (``contr.poly``) when they enter the fixed part.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("insteval")


def oats() -> pd.DataFrame:
    """Yates' split-plot experiment: 3 varieties of oats and 4 nitrogen levels in 6 blocks
    (nlme's ``Oats``).

    72 rows, 4 columns: ``Block`` (an ordered factor, nlme's levels ``"VI" < "V" < "III" <
    "IV" < "II" < "I"``), ``Variety`` (a factor: ``"Golden Rain"``, ``"Marvellous"``,
    ``"Victory"``, on whole plots), ``nitro`` (nitrogen, 0 to 0.6 cwt per acre, on
    subplots) and ``yield`` (bushels per acre).

    lme4 users fit ``yield ~ nitro + (1|Block/Variety)``; with one random term,
    ``yield ~ nitro + Variety + (1|Block)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("oats")


def machines() -> pd.DataFrame:
    """Productivity scores of 6 workers, each on 3 brands of machine 3 times (nlme's
    ``Machines``).

    54 rows, 3 columns: ``Worker`` (an ordered factor, nlme's levels ``"6" < "2" < "4" <
    "1" < "3" < "5"``), ``Machine`` (a factor, ``"A"``, ``"B"``, ``"C"``) and ``score``. From
    Milliken and Johnson (1992), *Analysis of Messy Data*, volume I, p. 285.

    lme4 users fit ``score ~ Machine + (1|Worker) + (1|Worker:Machine)``; with one random
    term, ``score ~ Machine + (1|Worker)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("machines")


def orthodont() -> pd.DataFrame:
    """An orthodontic distance measured on 27 children at ages 8, 10, 12 and 14 (nlme's
    ``Orthodont``).

    108 rows, 4 columns: ``distance`` (pituitary to pterygomaxillary fissure, mm), ``age``
    (years), ``Subject`` (an ordered factor, 27 levels ``"M01"``... and ``"F01"``..., nlme's
    order: by mean distance within sex) and ``Sex`` (a factor, ``"Male"`` then
    ``"Female"``, so R's reference level is ``Male``). From Potthoff and Roy (1964),
    *Biometrika* 51, 313-326.

    lme4 users fit ``distance ~ age + Sex + (1|Subject)`` (or ``(age|Subject)``).

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("orthodont")


def milk() -> pd.DataFrame:
    """Protein content of the milk of 79 cows on 3 diets, weekly after calving (nlme's
    ``Milk``).

    1,337 rows, 4 columns: ``protein``, ``Time`` (weeks since calving), ``Cow`` (an ordered
    factor, 79 levels in nlme's order) and ``Diet`` (a factor: ``"barley"``,
    ``"barley+lupins"``, ``"lupins"``). From Diggle, Liang and Zeger (1994), *Analysis of
    Longitudinal Data*.

    A random-intercept model of it: ``protein ~ Time + Diet + (1|Cow)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("milk")


def exam() -> pd.DataFrame:
    """Exam scores of 4,059 students in 65 inner-London schools (mlmRev's ``Exam``).

    4,059 rows, 10 columns: ``school`` (a factor, 65 levels), ``normexam`` (normalized exam
    score), ``schgend`` (a factor: ``"mixed"``, ``"boys"``, ``"girls"``), ``schavg`` (the
    school's mean intake score), ``vr`` and ``intake`` (factors: ``"bottom 25%"``,
    ``"mid 50%"``, ``"top 25%"``), ``standLRT`` (standardized London reading test score),
    ``sex`` (a factor, ``"F"``, ``"M"``), ``type`` (a factor, ``"Mxd"``, ``"Sngl"``) and
    ``student`` (a factor: the student's id within the school). From Goldstein, Rasbash et
    al. (1993), *Oxford Review of Education* 19, 425-433.

    lme4 users fit ``normexam ~ standLRT + sex + schgend + (1|school)``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("exam")


def warpbreaks() -> pd.DataFrame:
    """Warp breaks per loom for 2 wools at 3 tensions, 9 looms each (R's ``warpbreaks``).

    54 rows, 3 columns: ``breaks`` (number of breaks, stored as doubles as in R), ``wool``
    (a factor, ``"A"``, ``"B"``) and ``tension`` (a factor, ``"L"``, ``"M"``, ``"H"``, in
    that order). From Tippett (1950), *Technological Applications of Statistics*, p. 106.

    R fits ``lm(breaks ~ wool * tension)``; reml_engine's tests fit
    ``breaks ~ wool + (1|tension)`` (three groups).

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    return _load("warpbreaks")


def seed() -> pd.DataFrame:
    """The example of the docs: 12 rows in 4 groups of 3 where lme4 stops at a local optimum
    (the same as ``rl.load_seed()``).

    12 rows, 5 columns: ``y``, ``x``, ``f`` (the group, integers 1 to 4), ``x_b`` (the group
    mean of ``x``) and ``x_w`` (``x`` minus it). Within a group ``y`` rises with ``x``;
    between groups it does not.

    lme4 users fit ``y ~ x + (1|f)``: lme4 returns the boundary ``var_group = 0`` (REML
    criterion 20.593), the global optimum is interior (16.173). See
    ``docs/walkthrough_seed.md``.

    Returns
    -------
    pandas.DataFrame
        A new frame on every call.
    """
    with resources.files("reml_engine").joinpath("data", "seed.csv").open() as fh:
        return pd.read_csv(fh)


#: Every data set of this module, by function name.
NAMES = (
    "sleepstudy",
    "dyestuff",
    "dyestuff2",
    "penicillin",
    "pastes",
    "insteval",
    "oats",
    "machines",
    "orthodont",
    "milk",
    "exam",
    "warpbreaks",
    "seed",
)


def available() -> pd.DataFrame:
    """One row per data set: its name, R source, size and first docstring line.

    Returns
    -------
    pandas.DataFrame
        Columns ``name``, ``source`` (R object and package), ``rows``, ``columns`` and
        ``description``.

    Examples
    --------
    >>> import reml_engine as rl
    >>> print(rl.datasets.available()[["name", "source", "rows"]].head(3).to_string(index=False))
          name           source  rows
    sleepstudy lme4::sleepstudy   180
      dyestuff   lme4::Dyestuff    30
     dyestuff2  lme4::Dyestuff2    30
    """
    catalogue = _catalogue()
    rows = []
    for name in NAMES:
        entry = catalogue.get(name)
        function = globals()[name]
        if entry is None:
            frame = function()
            source, nrow, ncol = "reml_engine", len(frame), frame.shape[1]
        else:
            source = f"{entry['package']}::{entry['object']}"
            nrow, ncol = entry["nrow"], len(entry["columns"])
        rows.append({"name": name, "source": source, "rows": nrow, "columns": ncol,
                     "description": " ".join(function.__doc__.split("\n\n")[0].replace("``", "").split())})
    return pd.DataFrame(rows)


__all__ = ["NAMES", "available", *NAMES]
