"""Command line: ``python -m reml_engine fit DATA.csv "y ~ x + (1|g)" [--ml] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    from . import lmer

    parser = argparse.ArgumentParser(prog="reml-engine", description="Fit a random-intercept model.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_cmd = sub.add_parser("fit", help="fit a model to a CSV file")
    fit_cmd.add_argument("data", help="CSV file")
    fit_cmd.add_argument("formula", help='lme4-style formula, e.g. "y ~ x + (1|g)"')
    fit_cmd.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit_cmd.add_argument("--json", action="store_true", help="print JSON instead of the summary")
    args = parser.parse_args(argv)
    try:
        data = pd.read_csv(args.data)
        m = lmer(args.formula, data, REML=not args.ml)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        print(f"reml-engine: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "formula": args.formula,
            "REML": m.REML,
            "criterion": m.criterion,
            "fixef": m.fixef.to_dict(),
            "se": m.se.to_dict(),
            "sigma2": m.sigma2,
            "var_group": m.var_group,
            "icc": m.icc,
            "optima": [{"tau": o.tau, "criterion": o.criterion, "kind": o.kind} for o in m.optima],
            "boundary": None if m.boundary is None else m.boundary.reason,
            "notes": list(m.notes),
        }
        print(json.dumps(out, indent=2))
    else:
        print(m.summary(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
