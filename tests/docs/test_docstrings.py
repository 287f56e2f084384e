"""The examples in the package's docstrings run and print what they say.

numpy 2 prints scalars as ``np.float64(0.451)``; the examples show what a user reads
(``0.451``), so they run under numpy's 1.25 print style, set for the test and restored.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import reml_engine

#: Modules that need an optional extra to import (skipped without it).
OPTIONAL = {"reml_engine.report.plots": "matplotlib", "reml_engine.scaleout.dask": "dask"}


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(reml_engine.__path__, "reml_engine."):
        if info.name == "reml_engine._moved" or info.name.endswith("__main__"):
            continue
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and ">>> " in open(spec.origin).read():
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert "reml_engine.api" in MODULES and len(MODULES) >= 10


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    saved = np.get_printoptions()
    np.set_printoptions(legacy="1.25")
    try:
        finder = doctest.DocTestFinder(exclude_empty=True)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        for test in finder.find(module, name):
            runner.run(test)
    finally:
        np.set_printoptions(**saved)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples in {name} failed (see output)"
