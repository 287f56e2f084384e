"""Command line: ``reml-engine fit DATA "y ~ x + (1|g)" [--ml] [--json] [--ddf ...] [--intervals ...] [--ranef]``.

``DATA`` is a CSV or TSV file (the delimiter, one of ``, \t ; |``, is sniffed from the
first lines; ``--sep`` sets it), a Parquet file (``.parquet``/``.pq``, or any file that
starts with Parquet's magic bytes), or ``-`` for text on standard input. Prints the
lmerTest-style summary (df and p-values, with the engine's notes), or with ``--json`` the
estimates, the t tests, the diagnosis and how many rows were read, used and dropped.
``--intervals {profile,wald,boot}`` adds confidence intervals and ``--ranef`` the
conditional modes of the random intercepts, in either output.

A file or formula that cannot be fitted gives one line on stderr, starting
``reml-engine: error:``, and a non-zero exit status; never a traceback. An error about an
option names the command-line flag (``--na-action``), not the Python keyword. Warnings
about the data (rows dropped, columns dropped, scales) go to stderr as one line each.

Exit status: 0 fitted, 1 the data or formula cannot be fitted, 2 bad command line
(argparse's convention), 3 an unexpected internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import warnings

import pandas as pd

from .api import lmer

EXIT_OK = 0
EXIT_DATA_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
#: Bytes read from the start of a file to tell binary data (NUL bytes) from text, and
#: to sniff the delimiter of a text file.
BINARY_SNIFF_BYTES = 8192
#: Delimiters a text file may use (sniffed in this order of preference when ambiguous).
DELIMITERS = ",\t;|"
#: Parquet files start (and end) with these bytes.
PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq")
#: ``--ddf`` choices (lmerTest's ``summary(ddf=)``) and the engine's names for them.
DDF_CHOICES = {"Satterthwaite": "satterthwaite", "Kenward-Roger": "kenward-roger", "lme4": None}
INTERVAL_METHODS = ("profile", "wald", "boot")
#: Python keywords in the library's messages, and the flags that set them here.
FLAG_NAMES = {"na_action": "--na-action", "REML": "--ml", "level": "--level", "n_boot": "--n-boot",
              "method": "--intervals", "ddf": "--ddf", "dialect": "--dialect"}


def _finite_or_none(value):
    """JSON has no NaN or inf: write null for them."""
    value = float(value)
    return value if math.isfinite(value) else None


def _series(values: pd.Series) -> dict:
    return {str(k): _finite_or_none(v) for k, v in values.items()}


def fit_to_json(m, ddf: str | None = "satterthwaite", rows_read: int | None = None) -> dict:
    """The estimates, t tests and diagnosis of a fit, as plain JSON-ready values.

    ``ddf``: the df method of ``coefficients`` (None: estimates, SEs and t only, lme4's
    table); ``rows_read``: rows in the data file, for the ``rows`` record."""
    cs = m.compound_symmetry
    design = getattr(m, "design", None)
    dropped = int(getattr(design, "n_dropped_rows", 0) or 0)
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
        "rows": {
            "read": int(rows_read if rows_read is not None else m.nobs + dropped),
            "used": int(m.nobs),
            "dropped_missing": dropped,
        },
        "fixef": _series(m.fixef),
        "se": _series(m.se),
        "ddf": ddf,
        "coefficients": _coefficients(m, ddf),
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


def _coefficients(m, ddf: str | None) -> dict:
    """Per coefficient: estimate, se, t (and df and two-sided p on ``ddf``'s df)."""
    if ddf is None:
        t = m.fixef / m.se.where(m.se > 0)
        return {str(k): {"estimate": _finite_or_none(m.fixef[k]), "se": _finite_or_none(m.se[k]),
                         "t": _finite_or_none(t[k])} for k in m.fixef.index}
    table = m.coef_table(ddf)
    return {str(k): {"estimate": _finite_or_none(row["estimate"]), "se": _finite_or_none(row["se"]),
                     "df": _finite_or_none(row["df"]), "t": _finite_or_none(row["t"]), "p": _finite_or_none(row["p"])}
            for k, row in table.iterrows()}


def intervals_to_json(table: pd.DataFrame) -> dict:
    """``{parameter: [lower, upper]}`` (null where an interval is not defined)."""
    return {str(k): [_finite_or_none(lo), _finite_or_none(hi)]
            for k, lo, hi in zip(table.index, table["lower"], table["upper"], strict=True)}


def ranef_to_json(ranef: pd.DataFrame) -> dict:
    """``{level: {"mode": ..., "condvar": ...}}``."""
    return {str(k): {"mode": _finite_or_none(mode), "condvar": _finite_or_none(condvar)}
            for k, mode, condvar in zip(ranef.index, ranef["mode"], ranef["condvar"], strict=True)}


def _version() -> str:
    from . import __version__

    return f"reml-engine {__version__}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reml-engine",
        description="Exact REML/ML fits of random-intercept models, with every local optimum.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    fit_cmd = sub.add_parser("fit", help="fit a model to a CSV, TSV or Parquet file")
    fit_cmd.add_argument("data", help="CSV/TSV file with a header row, or a Parquet file ('-' reads text from "
                                      "standard input)")
    fit_cmd.add_argument("formula", help='lme4-style formula, e.g. "y ~ x + (1|g)"')
    fit_cmd.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit_cmd.add_argument("--json", action="store_true", help="print JSON instead of the summary")
    fit_cmd.add_argument(
        "--na-action", choices=("omit", "raise"), default="omit",
        help="drop rows with missing values (default, with a warning) or stop",
    )
    fit_cmd.add_argument("--sep", default=None,
                         help="delimiter of a text file (default: sniffed among comma, tab, ';' and '|'); "
                              "'\\t' for tab")
    fit_cmd.add_argument("--dialect", choices=("python", "R"), default="python",
                         help="the formula's language: formulaic's (default) or R's (I(x^2), factor(x), poly)")
    fit_cmd.add_argument("--ddf", choices=tuple(DDF_CHOICES), default="Satterthwaite",
                         help="df of the fixed effects' t tests and p-values (lmerTest's summary(ddf=)); "
                              "'lme4' prints lme4's table without them")
    fit_cmd.add_argument("--intervals", choices=INTERVAL_METHODS, default=None,
                         help="add confidence intervals (profile likelihood, Wald, or parametric bootstrap)")
    fit_cmd.add_argument("--level", type=float, default=0.95, help="coverage of --intervals (default 0.95)")
    fit_cmd.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates of --intervals boot")
    fit_cmd.add_argument("--seed", type=int, default=None, help="seed of --intervals boot")
    fit_cmd.add_argument("--ranef", action="store_true",
                         help="add the conditional modes (and variances) of the random intercepts")
    return parser


def sniff_delimiter(sample: str) -> str:
    """The delimiter of a text table from its first lines: one of :data:`DELIMITERS`
    (csv's sniffer, restricted to them), else the one that splits the header line the
    most, else a comma."""
    lines = sample.splitlines()
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        sample = "\n".join(lines[:-1])  # the last line may be cut off mid-row
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = lines[0] if lines else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _check_sep(sep: str | None) -> str | None:
    if sep is None:
        return None
    sep = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
    if len(sep) != 1 or sep in "\"\n\r":
        raise ValueError(f"--sep must be one character such as ',' or '\\t', got {sep!r}")
    return sep


def _is_parquet(path: str) -> bool:
    if path.lower().endswith(PARQUET_SUFFIXES):
        return True
    with open(path, "rb") as fh:
        return fh.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


def _read_parquet(path: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as err:
        raise ValueError(f"{path!r} is a Parquet file; reading it needs pyarrow ({_one_line(err)})") from None
    except Exception as err:  # pyarrow's errors for damaged files
        raise ValueError(f"{path!r} cannot be read as Parquet: {_one_line(err)}") from None


def read_data(path: str, sep: str | None = None) -> pd.DataFrame:
    """The data of ``fit``: Parquet, or delimited text with its delimiter sniffed (see the module)."""
    sep = _check_sep(sep)
    if path != "-" and os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a data file")
    if path != "-" and _is_parquet(path):
        return _read_parquet(path)
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, "rb") as fh:
            head = fh.read(BINARY_SNIFF_BYTES)
        if b"\0" in head:
            raise ValueError(f"{path!r} is not a text CSV file (it holds binary data) nor a Parquet file")
        try:
            with open(path, encoding="utf-8", newline="") as fh:
                text = fh.read()
        except UnicodeDecodeError:
            raise ValueError(f"{path!r} is not a text CSV file (it cannot be decoded as UTF-8)") from None
    if not text.strip():
        raise ValueError(f"{path!r} is empty: no header row and no data")
    delimiter = sep or sniff_delimiter(text[:BINARY_SNIFF_BYTES])
    kind = {"\t": "TSV", ",": "CSV"}.get(delimiter, f"text with {delimiter!r} between fields")
    try:
        return pd.read_csv(io.StringIO(text), sep=delimiter)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path!r} is empty: no header row and no data") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path!r} cannot be read as {kind}: {' '.join(str(err).split())}") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _flag_names(message: str) -> str:
    """The library's keyword arguments in a message as this command's flags:
    ``na_action='omit'`` is ``--na-action omit``."""
    for keyword, flag in FLAG_NAMES.items():
        message = re.sub(rf"\b{keyword}\s*=\s*'([^']*)'", rf"{flag} \1", message)
        if "_" in keyword:  # a bare name only where it cannot be an ordinary word ("REML criterion")
            message = re.sub(rf"(?<![\w-]){keyword}\b(?!\()", flag, message)
    return message


def _intervals(m, args) -> pd.DataFrame:
    """``m.confint`` for ``--intervals``, with the bootstrap's options."""
    if not 0.0 < args.level < 1.0:
        raise ValueError(f"--level must be between 0 and 1 (0.95 for 95% intervals), got {args.level}")
    if args.intervals != "boot" and (args.n_boot is not None or args.seed is not None):
        raise ValueError("--n-boot and --seed are for --intervals boot")
    extra = {}
    if args.intervals == "boot":
        if args.n_boot is not None and args.n_boot < 1:
            raise ValueError(f"--n-boot must be a whole number >= 1, got {args.n_boot}")
        extra = {"n_boot": args.n_boot, "seed": args.seed}
    return m.confint(args.intervals, args.level, **extra)[["lower", "upper"]]


def _text_sections(m, args, intervals: pd.DataFrame | None) -> str:
    """The summary, then the intervals and the random effects when asked for."""
    parts = [m.summary(ddf=args.ddf)]
    if intervals is not None:
        title = f"Confidence intervals ({args.intervals}, {100 * args.level:g}%):"
        parts.append(f"{title}\n{intervals.to_string(float_format=lambda v: f'{v:.6g}')}\n")
    if args.ranef:
        table = m.ranef.rename_axis(m.group_name)
        parts.append(f"Random effects (conditional modes):\n{table.to_string(float_format=lambda v: f'{v:.6g}')}\n")
    return "\n".join(parts)


def _run(args) -> int:

    try:
        data = read_data(args.data, args.sep)
    except FileNotFoundError:
        print(f"reml-engine: error: no such file: {args.data!r}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except (OSError, ValueError) as err:
        print(f"reml-engine: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_DATA_ERROR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = lmer(args.formula, data, REML=not args.ml, na_action=args.na_action, dialect=args.dialect)
            intervals = None if args.intervals is None else _intervals(m, args)
        except ValueError as err:  # ModelDataError and the optimizer's degenerate-model errors
            print(f"reml-engine: error: {_flag_names(_one_line(err))}", file=sys.stderr)
            return EXIT_DATA_ERROR
    for w in caught:
        print(f"reml-engine: warning: {_flag_names(_one_line(w.message))}", file=sys.stderr)
    if args.json:
        out = fit_to_json(m, DDF_CHOICES[args.ddf], rows_read=len(data))
        if intervals is not None:
            out["intervals"] = {"method": args.intervals, "level": args.level, "values": intervals_to_json(intervals)}
        if args.ranef:
            out["ranef"] = ranef_to_json(m.ranef)
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        print(_text_sections(m, args, intervals), end="")
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

