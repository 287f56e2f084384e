"""Command line: ``reml-engine fit DATA.csv "y ~ x + (1|g)" [--ml] [--json]``.

Prints the lme4-style summary (with the engine's notes), or JSON with the estimates and
the diagnosis. A file or formula that cannot be fitted gives one line on stderr, starting
``reml-engine: error:``, and a non-zero exit status; never a traceback. Warnings about
the data (rows dropped, columns dropped, scales) go to stderr as one line each.

Exit status: 0 fitted, 1 the data or formula cannot be fitted, 2 bad command line
(argparse's convention), 3 an unexpected internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings

import pandas as pd

from .api import lmer

EXIT_OK = 0
EXIT_DATA_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
#: Bytes read from the start of a file to tell binary data (NUL bytes) from text.
BINARY_SNIFF_BYTES = 8192


def _finite_or_none(value):
    """JSON has no NaN or inf: write null for them."""
    value = float(value)
    return value if math.isfinite(value) else None


def _series(values: pd.Series) -> dict:
    return {str(k): _finite_or_none(v) for k, v in values.items()}


def fit_to_json(m) -> dict:
    """The estimates and the diagnosis of a fit, as plain JSON-ready values."""
    cs = m.compound_symmetry
    return {
        "formula": m.formula,
        "method": "REML" if m.REML else "ML",
        "criterion": _finite_or_none(m.criterion),
        "loglik": _finite_or_none(m.loglik),
        "aic": _finite_or_none(m.aic),
        "bic": _finite_or_none(m.bic),
        "nobs": int(m.nobs),
        "ngroups": int(m.ngroups),
        "group": str(m.group_name),
        "fixef": _series(m.fixef),
        "se": _series(m.se),
        "vcov": {str(r): _series(m.vcov.loc[r]) for r in m.vcov.index},
        "sigma2": _finite_or_none(m.sigma2),
        "var_group": _finite_or_none(m.var_group),
        "theta": _finite_or_none(m.theta),
        "icc": _finite_or_none(m.icc),
        "singular": bool(m.singular),
        "dropped_columns": list(m.dropped_columns),
        "optima": [
            {
                "kind": o.kind,
                "tau": _finite_or_none(o.tau),
                "theta": _finite_or_none(o.theta),
                "var_group": _finite_or_none(o.var_group),
                "sigma2": _finite_or_none(o.sigma2),
                "criterion": _finite_or_none(o.criterion),
                "is_global": bool(o.is_global),
                "is_lme4_default": bool(o.is_lme4_default),
                "fixef": _series(o.fixef),
            }
            for o in m.optima
        ],
        "boundary": None
        if m.boundary is None
        else {
            "reason": m.boundary.reason,
            "derivative": _finite_or_none(m.boundary.derivative),
            "extended_icc": _finite_or_none(m.boundary.extended_icc),
            "extended_criterion": _finite_or_none(m.boundary.extended_criterion),
        },
        "compound_symmetry": {
            "icc": _finite_or_none(cs.icc),
            "criterion": _finite_or_none(cs.criterion),
            "sigma2": _finite_or_none(cs.sigma2),
            "at_limit": bool(cs.at_limit),
            "fixef": _series(cs.fixef),
        },
        "notes": list(m.notes),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reml-engine",
        description="Exact REML/ML fits of random-intercept models, with every local optimum.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit_cmd = sub.add_parser("fit", help="fit a model to a CSV file")
    fit_cmd.add_argument("data", help="CSV file with a header row ('-' reads standard input)")
    fit_cmd.add_argument("formula", help='lme4-style formula, e.g. "y ~ x + (1|g)"')
    fit_cmd.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit_cmd.add_argument("--json", action="store_true", help="print JSON instead of the summary")
    fit_cmd.add_argument(
        "--na-action", choices=("omit", "raise"), default="omit",
        help="drop rows with missing values (default, with a warning) or stop",
    )
    return parser


def _read_csv(path: str) -> pd.DataFrame:
    source = sys.stdin if path == "-" else path
    if path != "-" and os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a CSV file")
    if path != "-":
        with open(path, "rb") as fh:
            if b"\0" in fh.read(BINARY_SNIFF_BYTES):
                raise ValueError(f"{path!r} is not a text CSV file (it holds binary data)")
    try:
        return pd.read_csv(source)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path!r} is empty: no header row and no data") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path!r} is not a text CSV file (it cannot be decoded as UTF-8)") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path!r} cannot be read as CSV: {' '.join(str(err).split())}") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _run(args) -> int:

    try:
        data = _read_csv(args.data)
    except FileNotFoundError:
        print(f"reml-engine: error: no such file: {args.data!r}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except (OSError, ValueError) as err:
        print(f"reml-engine: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_DATA_ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = lmer(args.formula, data, REML=not args.ml, na_action=args.na_action)
        except ValueError as err:  # ModelDataError and the optimizer's degenerate-model errors
            print(f"reml-engine: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_DATA_ERROR
    for w in caught:
        print(f"reml-engine: warning: {_one_line(w.message)}", file=sys.stderr)
    if args.json:
        print(json.dumps(fit_to_json(m), indent=2, allow_nan=False))
    else:
        print(m.summary(), end="")
    sys.stdout.flush()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m reml_engine`` and the ``reml-engine`` script."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("reml-engine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # never a traceback on the command line
        print(f"reml-engine: internal error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR

