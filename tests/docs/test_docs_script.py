"""The docs figure script runs, and the walkthrough's output blocks are what the library prints.

``docs/make_figures.py`` is run into a temporary folder (Agg backend). Its figures must
exist and be small, every figure the docs link to must be made by it (and committed), and
the output blocks it writes into ``walkthrough_seed.md`` must match the committed page.
Numbers are compared with a tolerance, so a change in the last printed digit from
rounding on another machine does not fail, but a changed result or layout does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCRIPT = DOCS / "make_figures.py"
WALKTHROUGH = "walkthrough_seed.md"

#: Seconds the script may take (it takes a few).
SCRIPT_TIMEOUT = 300
#: Largest committed figure, in bytes: figures stay small PNGs.
MAX_FIGURE_BYTES = 150_000
#: Printed numbers agree within this relative or absolute difference.
NUMBER_RTOL = 2e-3
NUMBER_ATOL = 1e-4

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: Printed details that describe the optimizer's work, not the result: not compared.
VOLATILE = re.compile(r"\d+ evaluations")
OUTPUT_BLOCK = re.compile(r"```text\n(.*?)```\n<!-- /run -->", re.DOTALL)
FIGURE_LINK = re.compile(r"\]\((?:\.\./)?(figures/[^)]+\.png)\)")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("docs")
    # The checkout's reml_engine, whatever an installed copy (the script's folder is docs/).
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(DOCS.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(SCRIPT), str(outdir)], capture_output=True, text=True,
                            timeout=SCRIPT_TIMEOUT, env=env, cwd=outdir)
    assert result.returncode == 0, result.stderr
    return outdir


def _blocks(text: str) -> list[str]:
    return OUTPUT_BLOCK.findall(text)


def _same_up_to_rounding(committed: str, fresh: str) -> bool:
    """Equal text once numbers are replaced by a placeholder, and numbers close."""
    committed, fresh = VOLATILE.sub("evaluations", committed), VOLATILE.sub("evaluations", fresh)
    if NUMBER.sub("#", committed).split() != NUMBER.sub("#", fresh).split():
        return False
    for a, b in zip(NUMBER.findall(committed), NUMBER.findall(fresh), strict=True):
        x, y = float(a), float(b)
        if abs(x - y) > NUMBER_ATOL + NUMBER_RTOL * max(abs(x), abs(y)):
            return False
    return True


def test_script_writes_every_figure(generated):
    figures = sorted(p.name for p in (generated / "figures").glob("*.png"))
    assert figures, "no figures written"
    for name in figures:
        path = generated / "figures" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 0 < path.stat().st_size <= MAX_FIGURE_BYTES


def test_every_linked_figure_is_made_by_the_script_and_committed(generated):
    made = {p.name for p in (generated / "figures").glob("*.png")}
    linked = set()
    for page in DOCS.rglob("*.md"):
        linked.update(Path(link).name for link in FIGURE_LINK.findall(page.read_text()))
    assert linked, "the docs link no figures"
    assert linked <= made
    committed = {p.name for p in (DOCS / "figures").glob("*.png")}
    assert made == committed, "run `python docs/make_figures.py` and commit docs/figures"


def test_walkthrough_output_is_what_the_library_prints(generated):
    committed = _blocks((DOCS / WALKTHROUGH).read_text())
    fresh = _blocks((generated / WALKTHROUGH).read_text())
    assert len(committed) == len(fresh) > 0
    for k, (old, new) in enumerate(zip(committed, fresh, strict=True)):
        assert new.strip(), f"output block {k} is empty"
        assert _same_up_to_rounding(old, new), (
            f"output block {k} of docs/{WALKTHROUGH} is stale: run `python docs/make_figures.py`.\n"
            f"--- committed ---\n{old}\n--- now ---\n{new}"
        )


def test_comparison_catches_a_changed_number():
    assert _same_up_to_rounding("slope 0.4510 (SE 0.0409)", "slope 0.4511 (SE 0.0409)")
    assert not _same_up_to_rounding("slope 0.4510 (SE 0.0409)", "slope 0.4610 (SE 0.0409)")
    assert not _same_up_to_rounding("slope 0.4510", "intercept 0.4510")
    assert _same_up_to_rounding("1382 evaluations, 2 local minima", "1659 evaluations, 2 local minima")
    assert not _same_up_to_rounding("1382 evaluations, 2 local minima", "1382 evaluations, 1 local minima")


def test_walkthrough_prose_numbers_are_r_values():
    """The numbers the walkthrough's text quotes, as R computes them, and as the library does."""
    from reference_data import load_extra_reference, load_reference

    import reml_engine as rl

    text = (DOCS / WALKTHROUGH).read_text()
    ref, extra = load_reference(), load_extra_reference()
    seed = rl.load_seed()
    wb = rl.lmer("y ~ within(x) + between(x) + (1|f)", seed)
    wb_ref = ref["seed_within_between"]
    quoted = {
        # "within slope 0.4625 (SE 0.037), between slope 0.0057 (SE 0.003)"
        "0.4625 (SE 0.037)": (wb.fixef["within(x)"], wb.se["within(x)"], wb_ref["reml"]["fixef"]["x_w"],
                              wb_ref["reml"]["se"]["x_w"]),
        "0.0057 (SE 0.003)": (wb.fixef["between(x)"], wb.se["between(x)"], wb_ref["reml"]["fixef"]["x_b"],
                              wb_ref["reml"]["se"]["x_b"]),
    }
    for phrase, (coef, se, coef_r, se_r) in quoted.items():
        assert phrase in text
        assert coef == pytest.approx(coef_r, rel=1e-6) and se == pytest.approx(se_r, rel=1e-5)
    assert "negative ICC (-0.43)" in text
    assert wb.compound_symmetry.icc == pytest.approx(wb_ref["gls_cs"]["rho"], rel=1e-4)
    assert round(wb_ref["gls_cs"]["rho"], 2) == -0.43
    hausman = rl.hausman("y ~ x + (1|f)", seed)
    assert "(p = 0.04)" in text
    assert hausman.p_value == pytest.approx(extra["hausman"]["seed"]["reml_global"]["p_value"], rel=1e-4)
    assert round(hausman.p_value, 2) == 0.04
    contextual = next(row for row in extra["mundlak"]["seed"]["coefficients"] if row["term"] == "xbar")
    assert "-0.457, with $F(1, 9) = 152$" in text
    mundlak = rl.mundlak("y ~ x + (1|f)", seed)
    assert mundlak.estimates.iloc[0] == pytest.approx(contextual["estimate"], rel=1e-6)
    assert mundlak.f_statistic == pytest.approx(contextual["t_value"] ** 2, rel=1e-5)
    assert (round(contextual["estimate"], 3), round(contextual["t_value"] ** 2)) == (-0.457, 152)
    assert "about ±1.4 and ±6.2" in text
    assert sorted(round(abs(v), 1) for v in ref["seed_x"]["reml"]["ranef"].values()) == [1.3, 1.4, 6.2, 6.2]
