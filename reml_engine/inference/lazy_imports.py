"""Modules imported on first use, to keep ``import reml_engine`` fast.

``scipy.stats`` alone takes about 0.3 s to import, more than the rest of reml_engine
on top of numpy, pandas, numba and formulaic; only the inference functions (p-values,
quantiles) need it. ``sps.chi2.sf(...)`` through :data:`scipy_stats` imports it the
first time an attribute is read.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for a module and imports it when one of its attributes is first read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        module = importlib.import_module(self._name)
        return getattr(module, attribute)


scipy_stats = LazyModule("scipy.stats")
