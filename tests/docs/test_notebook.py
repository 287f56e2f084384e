"""The tour notebook (``docs/notebooks/tour.ipynb``) runs in a real kernel, every result it
shows has an HTML form, and nothing it shows is a traceback or a dumped array.

It needs nbclient, nbformat and ipykernel (the ``test`` extra) and matplotlib (the
``plot`` extra). Without them the test is skipped, and says which one is missing, except
where ``REML_ENGINE_REQUIRE_NOTEBOOK=1`` (CI's ``.ci/run`` sets it): there a missing
package fails the test, so that CI cannot pass without running the notebook.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

import reml_engine as rl
from reml_engine.report.render import format_number

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebooks" / "tour.ipynb"
#: Packages the notebook test needs.
NEEDED = ("nbclient", "nbformat", "ipykernel", "matplotlib")
#: Seconds one cell may take (the first fit compiles or loads the numba kernels).
CELL_TIMEOUT = 600
#: A text output longer than this would be a dumped array, not a result.
MAX_TEXT_OUTPUT = 6_000
#: What numpy prints for an array (``array([``, or numbers around the ``...`` of a long one).
DUMPED_ARRAY = re.compile(r"array\(\[|\d,?\s+\.\.\.,?\s+-?\d")


def _missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def executed():
    missing = _missing()
    if missing:
        reason = (f"the notebook test needs {', '.join(missing)} (pip install -e '.[test,plot]')")
        if os.environ.get("REML_ENGINE_REQUIRE_NOTEBOOK") == "1":
            pytest.fail(reason + "; REML_ENGINE_REQUIRE_NOTEBOOK=1 requires it")
        pytest.skip(reason)
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The checkout's reml_engine in the kernel, whatever an installed copy; no display needed.
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "MPLBACKEND")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), old["PYTHONPATH"] or ""])
    os.environ.pop("MPLBACKEND", None)  # the notebook's %matplotlib inline chooses the backend
    try:
        client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT)}})
        client.execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def _code_cells(notebook):
    return [c for c in notebook.cells if c.cell_type == "code"]


@pytest.mark.slow
def test_tour_runs_without_errors_and_every_result_is_html(executed):
    for cell in _code_cells(executed):
        for out in cell.outputs:
            assert out.output_type != "error", f"{cell.source!r}: {out.get('ename')}: {out.get('evalue')}"
            text = out.get("text", "") + out.get("data", {}).get("text/plain", "")
            assert "Traceback" not in text, cell.source
            assert len(text) <= MAX_TEXT_OUTPUT and not DUMPED_ARRAY.search(text), (cell.source, text[:300])
        if "html" in cell.metadata.get("tags", []):
            results = [o for o in cell.outputs if o.output_type == "execute_result"]
            assert results and "text/html" in results[-1].data, cell.source


@pytest.mark.slow
def test_tour_shows_the_global_fit_its_df_and_the_profile_figure(executed):
    cells = _code_cells(executed)
    fit_html = next(o.data["text/html"] for o in cells[0].outputs if o.output_type == "execute_result")
    # The kernel's fit is the one this process makes (checked against lme4 elsewhere).
    m = rl.lmer("y ~ x + (1|f)", data=rl.load_seed())
    assert "t-tests use Satterthwaite&#x27;s method" in fit_html
    for value in (m.fixef["x"], m.se["x"], m.coef_table().loc["x", "df"], m.var_group, m.sigma2):
        assert f">{format_number(value)}<" in fit_html
    plot_cell = next(c for c in cells if "plot_profile" in c.source)
    kinds = {kind for o in plot_cell.outputs for kind in o.get("data", {})}
    assert {"image/png", "text/html"} <= kinds
    summary = next(c for c in cells if "summary()" in c.source)
    assert "Pr(>|t|)" in summary.outputs[0]["text"] and "explain()" in summary.outputs[0]["text"]
