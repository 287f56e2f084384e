"""Fixtures of the metamorphic suite (the helpers themselves are in relations.py)."""

from __future__ import annotations

import pytest

from .relations import reference_cases


@pytest.fixture(params=reference_cases(), ids=lambda case: case.name)
def reference_case(request):
    """Each single-term reference case, with lme4's values."""
    return request.param
