"""Every ``python`` block of README.md and docs/*.md runs as written, and prints what the docs show.

The convention (also in docs/index.md, "How the docs are kept true"):

* The ``python`` blocks of a page run in order, top to bottom, in one namespace per page (as
  a reader pasting them into one session would), with pandas' default display options and
  the current directory a fresh temporary folder.
* A ``text`` block that directly follows a ``python`` block (nothing but blank lines
  between) is that block's expected output: everything the block prints. A line holding
  only ``...`` stands for any number of lines left out. Numbers may differ by one unit in
  their last printed digit (rounding on another machine; shown with the same number of
  decimals; integers must be equal), and ``N evaluations`` (the
  optimizer's work, not a result) is not compared; everything else must match, apart from
  runs of spaces.
* A block must not emit warnings: a reader would see them and the docs do not show them.
* ``<!-- not run: reason -->`` on the line before a block keeps it from running (a shell
  session, placeholders for the reader's own files or cluster); the reason is required.
  ``<!-- requires: matplotlib -->`` (or ``dask``, ...) skips the block, and the page's later
  blocks, where that package is not installed.

``bash`` blocks are not run here: the command line is tested in ``tests/frontend/test_cli.py``. The
walkthrough's output blocks are written by ``docs/make_figures.py``; when an output changes,
the failure shows the block, what the page says, what it printed now and the difference.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->$")
REQUIRES = re.compile(r"^<!--\s*requires:\s*(?P<modules>[\w.]+(?:\s*,\s*[\w.]+)*)\s*-->$")
MARKER = re.compile(r"^<!--\s*(not run|requires)\b")
ELLIPSIS = "..."
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: Seconds a page may take to run (the longest takes a few).
PAGE_TIMEOUT = 600
#: Printed details that describe the optimizer's work, not the result: not compared.
VOLATILE = re.compile(r"\b\d+ evaluations\b")


@dataclass(frozen=True)
class Block:
    """A fenced ``python`` block, with its expected output when the page shows one."""

    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    expected: str | None = None
    expected_line: int | None = None
    not_run: str | None = None
    requires: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}, python block at line {self.line}"


def parse_blocks(path: Path, text: str | None = None) -> list[Block]:
    """The page's ``python`` blocks in order, each with its marker and expected output."""
    lines = (path.read_text() if text is None else text).splitlines()
    fences = []  # (lang, opening line index, closing line index, body)
    k = 0
    while k < len(lines):
        match = FENCE.match(lines[k])
        if match is None:
            k += 1
            continue
        end = next((j for j in range(k + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise AssertionError(f"{path.name}:{k + 1}: a code fence is not closed")
        fences.append((match["lang"], k, end, "\n".join(lines[k + 1:end]) + "\n"))
        k = end + 1
    blocks = []
    for index, (lang, start, end, body) in enumerate(fences):
        if lang != "python":
            continue
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        not_run = requires = None
        if MARKER.match(before):
            if (match := NOT_RUN.match(before)) is not None:
                not_run = match["reason"]
            elif (match := REQUIRES.match(before)) is not None:
                requires = tuple(m.strip() for m in match["modules"].split(","))
            else:
                raise AssertionError(f"{path.name}:{start}: write '<!-- not run: reason -->' or "
                                     f"'<!-- requires: module -->', got {before!r}")
        expected = expected_line = None
        if index + 1 < len(fences):
            lang_next, start_next, _, body_next = fences[index + 1]
            if lang_next == "text" and all(not lines[j].strip() for j in range(end + 1, start_next)):
                expected, expected_line = body_next, start_next + 1
        blocks.append(Block(path, start + 1, body, expected, expected_line, not_run, requires or ()))
    return blocks


# -- comparing what was printed with what the page shows ------------------------------------


def _digits(token: str) -> tuple[int, bool]:
    """Decimal places shown, and whether the number is in exponent form."""
    mantissa, e, _ = token.lower().partition("e")
    return len(mantissa.partition(".")[2]), bool(e)


def _last_digit_unit(token: str) -> float:
    mantissa, _, exponent = token.lower().partition("e")
    return 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))


def lines_match(expected: str, actual: str) -> bool:
    """Equal apart from runs of spaces, the optimizer's evaluation count and numbers shown
    with the same digits that differ by at most one unit in their last digit."""
    expected, actual = VOLATILE.sub("N evaluations", expected), VOLATILE.sub("N evaluations", actual)
    if NUMBER.sub("#", expected).split() != NUMBER.sub("#", actual).split():
        return False
    for a, b in zip(NUMBER.findall(expected), NUMBER.findall(actual), strict=True):
        if _digits(a) != _digits(b) or (_digits(a) == (0, False) and int(a) != int(b)):
            return False  # other digits shown, or another count
        if abs(float(a) - float(b)) > _last_digit_unit(a) * (1 + 1e-9):
            return False
    return True


def _normalize(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def output_matches(expected: str, actual: str) -> bool:
    """``actual`` is ``expected``, where a line ``...`` stands for any number of lines."""
    want, got = _normalize(expected), _normalize(actual)
    segments: list[list[str]] = [[]]
    for line in want:
        if line.strip() == ELLIPSIS:
            segments.append([])
        else:
            segments[-1].append(line)
    if len(segments) == 1:
        return len(want) == len(got) and all(map(lines_match, want, got))
    position = 0
    for k, segment in enumerate(segments):
        if not segment:
            continue
        first, last = k == 0, k == len(segments) - 1
        candidates = [position] if first else range(position, len(got) - len(segment) + 1)
        if last:
            candidates = [len(got) - len(segment)] if len(got) - len(segment) >= position else []
        found = next((start for start in candidates
                      if all(map(lines_match, segment, got[start:start + len(segment)]))), None)
        if found is None:
            return False
        position = found + len(segment)
    return True


# -- running a page ---------------------------------------------------------------------------


def execute_page(path: Path) -> list[dict]:
    """Run the page's blocks in one namespace, in this process; one record per block run:
    ``line``, ``printed``, ``warnings``, ``error`` (a traceback) or ``skipped``."""
    records = []
    namespace: dict = {"__name__": "__main__"}
    missing: tuple[str, ...] = ()
    for block in parse_blocks(path):
        if block.not_run is not None:
            continue
        missing = missing or tuple(m for m in block.requires if importlib.util.find_spec(m) is None)
        if missing:
            records.append({"line": block.line, "skipped": f"needs {', '.join(missing)}"})
            continue
        buffer = io.StringIO()
        # Line numbers in tracebacks are the page's own.
        code = compile("\n" * (block.line) + block.code, str(block.path), "exec")
        record: dict = {"line": block.line}
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buffer):
            warnings.simplefilter("always")
            try:
                exec(code, namespace)  # noqa: S102 - the project's own documentation
            except Exception as error:  # noqa: BLE001 - reported with the block
                record["error"] = "".join(traceback.format_exception(error)[-4:])
        record["printed"] = buffer.getvalue()
        record["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        records.append(record)
        if "error" in record:
            break  # later blocks build on this one
    return records


def _report(block: Block, title: str, body: str) -> str:
    return f"{block.where}: {title}\n--- code ---\n{block.code.rstrip()}\n{body}"


def check_page(path: Path, records: list[dict]) -> tuple[list[str], list[str]]:
    """(failures, skipped): a message per block that failed or was skipped."""
    blocks = {block.line: block for block in parse_blocks(path)}
    failures, skipped = [], []
    for record in records:
        block = blocks[record["line"]]
        if "skipped" in record:
            skipped.append(f"{block.where}: {record['skipped']}")
            continue
        if "error" in record:
            failures.append(_report(block, "raised an error", f"--- printed before ---\n{record['printed']}"
                                                             f"--- error ---\n{record['error']}"))
            continue
        for warning in record["warnings"]:
            failures.append(_report(block, "emitted a warning the page does not show", f"--- warning ---\n{warning}"))
        if block.expected is not None and not output_matches(block.expected, record["printed"]):
            diff = "\n".join(difflib.unified_diff(_normalize(block.expected), _normalize(record["printed"]),
                                                  "the page", "printed now", lineterm=""))
            failures.append(_report(
                block, f"prints something else than the text block at line {block.expected_line}",
                f"--- expected (the page) ---\n{block.expected.rstrip()}\n"
                f"--- actual (printed now) ---\n{record['printed'].rstrip()}\n--- diff ---\n{diff}"))
    return failures, skipped


PAGES_WITH_CODE = [path for path in DOC_FILES if "```python" in path.read_text()]


@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=[p.name for p in PAGES_WITH_CODE])
def test_page_runs_and_prints_what_it_shows(path, tmp_path):
    """Each page in a fresh Python process started in an empty folder: pandas' default
    display options, nothing set up by the test session."""
    if not any(block.not_run is None for block in parse_blocks(path)):
        pytest.skip(f"every python block of {path.name} is marked not run")
    out = tmp_path / "records.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, __file__, str(path), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=PAGE_TIMEOUT)
    assert result.returncode == 0, result.stderr
    failures, skipped = check_page(path, json.loads(out.read_text()))
    assert not failures, "\n\n".join(failures)
    if skipped:
        pytest.skip("; ".join(skipped))


def test_pages_with_code_are_covered():
    """README.md and docs/*.md are the pages checked; the pages with python blocks are
    all among them (docs/mechanics has formulas, checked by test_docs_formulas.py)."""
    with_code = {p for p in ROOT.glob("**/*.md")
                 if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)  # .git, .venv-ci
                 and "```python" in p.read_text()}
    assert with_code <= set(DOC_FILES)
    assert (ROOT / "README.md") in with_code


def test_not_run_markers_give_a_reason_and_are_few():
    blocks = [b for path in DOC_FILES for b in parse_blocks(path)]
    not_run = [b for b in blocks if b.not_run is not None]
    assert all(b.not_run for b in not_run)
    assert len(not_run) <= len(blocks) // 4, [b.where for b in not_run]


# -- the convention itself --------------------------------------------------------------------


PAGE = textwrap.dedent("""\
    Text.

    ```python
    x = 2
    print(x + 1)
    ```

    ```text
    3
    ```

    <!-- not run: a placeholder -->
    ```python
    undefined_name
    ```

    ```python
    print(f"{x / 3:.4f}")
    ```
    Prose, so the next block is not an output.
    ```text
    not compared
    ```
    """)


def test_parser_reads_outputs_and_markers():
    blocks = parse_blocks(ROOT / "page.md", PAGE)
    assert [(b.line, b.expected, b.not_run) for b in blocks] == [
        (3, "3\n", None), (13, None, "a placeholder"), (17, None, None)]
    with pytest.raises(AssertionError, match="not run: reason"):
        parse_blocks(ROOT / "page.md", "<!-- not run -->\n```python\nx\n```\n")


def test_comparison_catches_changes():
    assert output_matches("slope 0.4510 (SE 0.0409)", "slope 0.4511 (SE 0.0409)\n")
    assert not output_matches("slope 0.4510 (SE 0.0409)", "slope 0.4512 (SE 0.0409)")
    assert not output_matches("slope 0.4510", "intercept 0.4510")
    assert not output_matches("Number of obs: 12", "Number of obs: 13")
    assert output_matches("p = 6.08e-07", "p = 6.09e-07") and not output_matches("p = 6.08e-07", "p = 6.08e-06")
    assert output_matches("1382 evaluations, 2 local minima", "1659 evaluations, 2 local minima")
    assert not output_matches("2 local minima", "3 local minima")
    assert output_matches("x     0.0000", "x    -0.0000")
    assert not output_matches("0.0083", "0.008333") and not output_matches("0.4510", "0.451")
    assert not output_matches("1e-07", "0.0000001")
    assert not output_matches("a\nb", "a\nb\nc")


def test_ellipsis_stands_for_lines_left_out():
    printed = "head\none\ntwo\nmiddle\nthree\ntail\n"
    assert output_matches("head\n...\nmiddle\n...\ntail", printed)
    assert output_matches("...\nmiddle\n...", printed)
    assert not output_matches("head\n...\nmissing\n...\ntail", printed)
    assert not output_matches("one\n...\ntail", printed)  # the first line is 'head'
    assert not output_matches("head\n...\nthree", printed)  # the last line is 'tail'
    assert not output_matches("head\n...\nthree\n...\none\n...", printed)  # order matters



def _check_text(tmp_path: Path, text: str) -> tuple[list[str], list[str]]:
    page = tmp_path / "page.md"
    page.write_text(text)
    return check_page(page, execute_page(page))


@pytest.fixture
def root_is_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    return tmp_path


def test_a_page_that_matches_passes(root_is_tmp):
    assert _check_text(root_is_tmp, PAGE) == ([], [])


def test_a_changed_output_shows_block_expected_actual_and_diff(root_is_tmp):
    failures, _ = _check_text(root_is_tmp, PAGE.replace("3\n```", "4\n```", 1))
    assert len(failures) == 1
    message = failures[0]
    assert "page.md, python block at line 3" in message and "text block at line 8" in message
    for part in ("--- code ---\nx = 2", "--- expected (the page) ---\n4", "--- actual (printed now) ---\n3",
                 "-4\n+3"):
        assert part in message


def test_errors_warnings_and_missing_packages_are_reported(root_is_tmp):
    page = "```python\nimport warnings\nwarnings.warn('careful')\n```\n\n```python\n1 / 0\n```\n\n```python\nprint(1)\n```\n"
    failures, _ = _check_text(root_is_tmp, page)
    assert len(failures) == 2
    assert "emitted a warning" in failures[0] and "UserWarning: careful" in failures[0]
    assert "raised an error" in failures[1] and "ZeroDivisionError" in failures[1]
    assert 'page.md", line 7' in failures[1]  # the page's own line number
    page = "<!-- requires: no_such_module_here -->\n```python\nx = 1\n```\n\n```python\nprint(x)\n```\n"
    failures, skipped = _check_text(root_is_tmp, page)
    assert failures == [] and len(skipped) == 2 and "no_such_module_here" in skipped[0]


if __name__ == "__main__":
    # python tests/docs/test_docs_blocks.py PAGE OUT.json: run PAGE's blocks, write the records.
    Path(sys.argv[2]).write_text(json.dumps(execute_page(Path(sys.argv[1]).resolve())))
