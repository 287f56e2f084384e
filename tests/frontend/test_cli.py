"""The command line, run as a subprocess: summary, JSON, and files or formulas it cannot fit."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from reference_data import REFERENCE, load_reference

from reml_engine.cli import main

SEED = str(REFERENCE / "seed.csv")
SLEEP = str(REFERENCE / "sleepstudy.csv")
REF = load_reference()
#: The JSON carries full precision: lme4 and the engine agree to about 1e-6 relative.
LME4_RTOL = 1e-5
#: Generous bound on one CLI run (imports and numba cache load included).
TIMEOUT = 120


def run(*args: str, stdin: str | None = None, command=None) -> subprocess.CompletedProcess:
    cmd = command or [sys.executable, "-m", "reml_engine"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=TIMEOUT, input=stdin,
        cwd=Path(__file__).parents[2],
    )


def assert_one_line_error(result, pattern: str) -> None:
    """``result``: a CompletedProcess, or (exit code, stdout, stderr) from :func:`in_process`."""
    if isinstance(result, tuple):
        result = subprocess.CompletedProcess([], *result)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reml-engine: error:"), lines[0]
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_summary():
    result = run("fit", SEED, "y ~ x + (1|f)")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Linear mixed model fit by REML")
    criterion = REF["seed_x"]["reml"]["criterion"]
    # lme4 prints the criterion rounded to one decimal.
    assert f"REML criterion at convergence: {criterion:.1f}" in out
    assert "lme4's lmer() from its default start" in out
    assert result.stderr == ""


def _check_sleepstudy_json(out: dict, key: str) -> None:
    ref = REF["sleepstudy"][key]
    assert out["method"] == ("REML" if key == "reml" else "ML")
    assert out["criterion"] == pytest.approx(ref["criterion"], rel=LME4_RTOL)
    assert out["fixef"] == pytest.approx(ref["fixef"], rel=LME4_RTOL)
    assert out["se"] == pytest.approx(ref["se"], rel=LME4_RTOL)
    assert out["var_group"] == pytest.approx(ref["var_group"], rel=LME4_RTOL)
    assert out["sigma2"] == pytest.approx(ref["sigma2"], rel=LME4_RTOL)
    assert out["nobs"] == ref["nobs"] and out["ngroups"] == ref["ngroups"]
    assert out["boundary"] is None


def test_json_matches_lme4():
    result = run("fit", SLEEP, "Reaction ~ Days + (1|Subject)", "--json")
    assert result.returncode == 0, result.stderr
    _check_sleepstudy_json(json.loads(result.stdout), "reml")


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """main() called directly: the same code path without the cost of a new interpreter."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_ml_matches_lme4(capsys):
    code, out, _ = in_process(capsys, "fit", SLEEP, "Reaction ~ Days + (1|Subject)", "--json", "--ml")
    assert code == 0
    _check_sleepstudy_json(json.loads(out), "ml")


def test_json_reports_the_local_optima_and_the_boundary(capsys):
    code, stdout, _ = in_process(capsys, "fit", SEED, "y ~ x + (1|f)", "--json", "--ml")
    out = json.loads(stdout)
    ref = REF["seed_x"]["ml"]
    assert out["criterion"] == pytest.approx(ref["criterion"], rel=LME4_RTOL)
    assert out["boundary"]["reason"] == "negative_icc"
    assert out["compound_symmetry"]["icc"] < 0
    assert [o["kind"] for o in out["optima"]] == ["boundary", "interior"]
    assert sum(o["is_global"] for o in out["optima"]) == 1


def test_warnings_go_to_stderr_on_one_line(tmp_path, capsys):
    data = Path(SEED).read_text().splitlines()
    data[3] = ",".join(["", *data[3].split(",")[1:]])  # a missing response
    path = tmp_path / "seed_missing.csv"
    path.write_text("\n".join(data) + "\n")
    code, _, err = in_process(capsys, "fit", str(path), "y ~ x + (1|f)")
    assert code == 0
    assert err.strip() == "reml-engine: warning: dropped 1 of 12 rows with missing values ('y': 1)"


def test_reads_standard_input(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(Path(SEED).read_text()))
    code, out, _ = in_process(capsys, "fit", "-", "y ~ x + (1|f)", "--json")
    assert code == 0 and json.loads(out)["nobs"] == 12


@pytest.mark.parametrize(
    "make_file, formula, pattern",
    [
        (None, "y ~ x + (1|f)", "no such file"),
        (lambda p: p.write_bytes(bytes(range(256)) * 4), "y ~ x + (1|f)", "not a text CSV file"),
        (lambda p: p.write_text(""), "y ~ x + (1|f)", "is empty"),
        (lambda p: p.write_text('y,x,f\n1,2,"a\n'), "y ~ x + (1|f)", "cannot be read as CSV"),
        ("seed", "y ~ z + (1|f)", "'z'"),
        ("seed", "y ~ x", "no random-intercept term"),
        ("seed", "y ~ x +* (1|f)", "cannot parse"),
        ("seed", "y ~ x + (1|x_b:x_w:f:y)", "levels for 12 observations"),
        (lambda p: p.write_text("y,x,f\na,1,1\nb,2,2\n"), "y ~ x + (1|f)", "response 'y' is not numeric"),
    ],
    ids=["missing", "binary", "empty", "unclosed-quote", "unknown-column", "no-random-term", "syntax",
         "singletons", "text-response"],
)
def test_bad_files_and_formulas_give_one_line_errors(tmp_path, capsys, make_file, formula, pattern):
    path = tmp_path / "data.csv"
    if make_file == "seed":
        path = Path(SEED)
    elif make_file is not None:
        make_file(path)
    assert_one_line_error(in_process(capsys, "fit", str(path), formula), pattern)


def test_bad_file_as_a_subprocess(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("y x f\n1 2 3\n")  # spaces are no delimiter: one column named 'y x f'
    assert_one_line_error(run("fit", str(path), "y ~ x + (1|f)"), "response column 'y'")
    assert_one_line_error(run("fit", str(tmp_path / "absent.csv"), "y ~ x + (1|f)"), "no such file")


def test_directory_is_an_error(tmp_path, capsys):
    assert_one_line_error(in_process(capsys, "fit", str(tmp_path), "y ~ x + (1|f)"), "is a directory")


def test_bad_command_line_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", SEED])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_broken_pipe_is_quiet():
    """The reader goes away before the output is written (as `| head -0`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reml_engine", "fit", SLEEP, "Reaction ~ Days + (1|Subject)", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2],
    )
    proc.stdout.close()
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


@pytest.mark.skipif(shutil.which("reml-engine") is None, reason="package not installed (pip install -e .)")
def test_console_script():
    result = run("fit", SEED, "y ~ x + (1|f)", "--json", command=[shutil.which("reml-engine")])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["criterion"] == pytest.approx(REF["seed_x"]["reml"]["criterion"], rel=LME4_RTOL)


# -- issue 14: version, TSV/Parquet input, p-values, intervals, ranef, rows, flags ----------

NAMES = json.loads((REFERENCE / "names_reference.json").read_text())
SLEEP_FORMULA = "Reaction ~ Days + (1|Subject)"
#: lmerTest's Satterthwaite df go through numerical derivatives.
DF_RTOL = 1e-4
#: lme4 interpolates its profile with splines: 1e-3 of the interval's scale.
PROFILE_RTOL = 1e-3


def test_version(capsys):
    import reml_engine

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"reml-engine {reml_engine.__version__}"


@pytest.mark.parametrize("sep, suffix", [("\t", ".tsv"), ("\t", ".txt"), (";", ".csv"), ("|", ".dat")],
                         ids=["tsv", "tab-txt", "semicolon", "pipe"])
def test_delimiter_is_sniffed(tmp_path, capsys, sep, suffix):
    path = tmp_path / f"sleep{suffix}"
    pd.read_csv(SLEEP).to_csv(path, sep=sep, index=False)
    code, out, err = in_process(capsys, "fit", str(path), SLEEP_FORMULA, "--json")
    assert code == 0, err
    _check_sleepstudy_json(json.loads(out), "reml")


def test_sep_flag_and_its_check(tmp_path, capsys):
    path = tmp_path / "sleep.txt"
    pd.read_csv(SLEEP).to_csv(path, sep="\t", index=False)
    code, out, _ = in_process(capsys, "fit", str(path), SLEEP_FORMULA, "--json", "--sep", "\\t")
    assert code == 0 and json.loads(out)["nobs"] == 180
    assert_one_line_error(in_process(capsys, "fit", str(path), SLEEP_FORMULA, "--sep", "ab"), "--sep must be one")


@pytest.mark.parametrize("name", ["sleep.parquet", "sleep.bin"])
def test_parquet_input(tmp_path, capsys, name):
    pytest.importorskip("pyarrow")
    path = tmp_path / name  # .bin: recognised by Parquet's magic bytes
    pd.read_csv(SLEEP).to_parquet(path)
    code, out, err = in_process(capsys, "fit", str(path), SLEEP_FORMULA, "--json")
    assert code == 0, err
    _check_sleepstudy_json(json.loads(out), "reml")


def test_damaged_parquet_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    assert_one_line_error(in_process(capsys, "fit", str(path), SLEEP_FORMULA), "cannot be read as Parquet")


def test_p_values_match_lmertest(capsys):
    ref = NAMES["sleepstudy_reml"]
    code, out, _ = in_process(capsys, "fit", SLEEP, SLEEP_FORMULA, "--json")
    coefs = json.loads(out)["coefficients"]
    assert json.loads(out)["ddf"] == "satterthwaite"
    for name in ref["params"]:
        assert coefs[name]["estimate"] == pytest.approx(ref["params"][name], rel=LME4_RTOL)
        assert coefs[name]["t"] == pytest.approx(ref["tvalues"][name], rel=LME4_RTOL)
        assert coefs[name]["df"] == pytest.approx(ref["df"][name], rel=DF_RTOL)
        assert coefs[name]["p"] == pytest.approx(ref["pvalues"][name], rel=DF_RTOL * 10)
    code, text, _ = in_process(capsys, "fit", SLEEP, SLEEP_FORMULA)
    assert "t-tests use Satterthwaite's method" in text and "Pr(>|t|)" in text


def test_kenward_roger_and_lme4_tables(capsys):
    ref = REF["seed_x"]["reml"]
    _, out, _ = in_process(capsys, "fit", SEED, "y ~ x + (1|f)", "--json", "--ddf", "Kenward-Roger")
    coefs = json.loads(out)["coefficients"]
    assert coefs["x"]["df"] == pytest.approx(ref["df_kenward_roger"]["x"], rel=1e-4)
    assert coefs["x"]["se"] == pytest.approx(ref["se_kenward_roger"]["x"], rel=1e-4)
    _, out, _ = in_process(capsys, "fit", SEED, "y ~ x + (1|f)", "--json", "--ddf", "lme4")
    assert set(json.loads(out)["coefficients"]["x"]) == {"estimate", "se", "t"}
    _, text, _ = in_process(capsys, "fit", SEED, "y ~ x + (1|f)", "--ddf", "lme4")
    assert "Pr(>|t|)" not in text and "t-tests" not in text


def test_profile_intervals_match_lme4(capsys):
    ref = REF["sleepstudy"]["reml"]["profile_ci"]
    code, out, err = in_process(capsys, "fit", SLEEP, SLEEP_FORMULA, "--json", "--intervals", "profile")
    assert code == 0, err
    intervals = json.loads(out)["intervals"]
    assert intervals["method"] == "profile" and intervals["level"] == 0.95
    values = intervals["values"]
    for ours, theirs in [("sd_group", "sd_(Intercept)|Subject"), ("sigma", "sigma"), ("(Intercept)", "(Intercept)"),
                         ("Days", "Days")]:
        lo, hi = ref[theirs]
        assert values[ours] == pytest.approx([lo, hi], abs=PROFILE_RTOL * max(abs(lo), abs(hi))), ours
    code, text, _ = in_process(capsys, "fit", SLEEP, SLEEP_FORMULA, "--intervals", "wald", "--level", "0.9")
    assert "Confidence intervals (wald, 90%):" in text


def test_ranef_match_lme4(capsys):
    ref = NAMES["sleepstudy_reml"]["ranef"]
    _, out, _ = in_process(capsys, "fit", SLEEP, SLEEP_FORMULA, "--json", "--ranef")
    ranef = json.loads(out)["ranef"]
    assert list(ranef) == list(ref)
    assert [ranef[k]["mode"] for k in ref] == pytest.approx(list(ref.values()), rel=1e-4, abs=1e-6)
    _, text, _ = in_process(capsys, "fit", SLEEP, SLEEP_FORMULA, "--ranef")
    assert "Random effects (conditional modes):" in text and "condvar" in text


def test_json_reports_rows_read_used_and_dropped(tmp_path, capsys):
    data = pd.read_csv(SLEEP)
    data.loc[[2, 49], "Reaction"] = float("nan")
    data.loc[99, "Days"] = float("nan")
    path = tmp_path / "holes.csv"
    data.to_csv(path, index=False)
    code, out, err = in_process(capsys, "fit", str(path), SLEEP_FORMULA, "--json")
    assert code == 0
    assert json.loads(out)["rows"] == {"read": 180, "used": NAMES["sleepstudy_na"]["nobs"], "dropped_missing": 3}
    assert json.loads(out)["criterion"] == pytest.approx(NAMES["sleepstudy_na"]["REMLcrit"], rel=LME4_RTOL)
    assert "dropped 3 of 180 rows" in err


def test_errors_name_the_flags(tmp_path, capsys):
    path = tmp_path / "seed_missing.csv"
    lines = Path(SEED).read_text().splitlines()
    lines[3] = ",".join(["", *lines[3].split(",")[1:]])
    path.write_text("\n".join(lines) + "\n")
    result = in_process(capsys, "fit", str(path), "y ~ x + (1|f)", "--na-action", "raise")
    assert_one_line_error(result, "use --na-action omit")
    assert "na_action" not in result[2]
    assert_one_line_error(in_process(capsys, "fit", SEED, "y ~ x + (1|f)", "--intervals", "wald", "--level", "2"),
                          "--level must be between 0 and 1")
    assert_one_line_error(in_process(capsys, "fit", SEED, "y ~ x + (1|f)", "--intervals", "wald", "--n-boot", "5"),
                          "--n-boot and --seed are for --intervals boot")
    assert_one_line_error(in_process(capsys, "fit", SEED, "y ~ I(x^2) + (1|f)"), "or pass --dialect R to read")


def test_r_dialect_flag(capsys):
    code, out, err = in_process(capsys, "fit", SEED, "y ~ I(x^2) + (1|f)", "--json", "--dialect", "R")
    assert code == 0, err
    assert "I(x ** 2.0)" in json.loads(out)["fixef"]
