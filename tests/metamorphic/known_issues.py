"""What fails today: the registry of known bugs that some variants of the suite hit.

Issue 10's items and the bugs this suite found beyond them (A: a predictor far from 0
called constant within groups; B: rank decisions left to the rounding of one-pass
cross-products; C: backticked grouping columns; D: predict of an intercept-only model)
are fixed, each with a regression test outside this suite; the registry is empty.

When a relation finds a new bug that cannot be fixed at once, add an entry here and
mark the tests of the variants it hits with :func:`xfail_marks`, through a predicate
that says when a variant hits it (checked on every run: a predicate too wide makes a
strict xfail pass, which fails; one too narrow lets a test fail). Remove the entry, the
predicate and the marks with the fix.
"""

from __future__ import annotations

import pytest

#: Known bugs by name, each with what fails (none today).
KNOWN_ISSUES: dict[object, str] = {}


def xfail_marks(items) -> list:
    """Strict xfail marks for the known issue items a test hits (none: no marks)."""
    items = sorted(set(i for i in items if i in KNOWN_ISSUES), key=str)
    if not items:
        return []
    return [pytest.mark.xfail(strict=True, reason="; ".join(KNOWN_ISSUES[i] for i in items))]
