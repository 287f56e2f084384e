"""pytest's shared set-up: the hypothesis profile and the reference fixture. The helpers
that read the reference cases are in :mod:`reference_data`."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from reference_data import load_reference

# CI runs the property tests on the same examples every time (a failure there is then
# reproducible, not a draw of the day); HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def reference() -> dict:
    return load_reference()
