"""The first ten minutes: the terminal table (beautifultable), what the CLI says after a run, and the
install hints for pip, pipx and the Docker image."""
from __future__ import annotations

import dataclasses

import pytest
from conftest import DATA

import log_analyser
import reporting
from log_analyser_core.cli import messages
from log_analyser_core.errors import ExitCode, install_hint, installed_by
from log_analyser_core.report import table as report_table
from log_analyser_core.results import Severity

SMALL = str(DATA / "small.log")


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def with_flags(result, flagged: int, scores=None):
    """``result`` with its first ``flagged`` findings flagged (high) and the others not."""
    findings = []
    for i, f in enumerate(result.findings):
        score = scores[i] if scores else f.score
        findings.append(dataclasses.replace(f, flagged=i < flagged, score=score,
                                            severity=Severity.HIGH if i < flagged else Severity.INFO))
    return dataclasses.replace(result, findings=tuple(findings))


# --- which rows -----------------------------------------------------------------------------------

def test_table_lists_flagged_then_the_next_few_then_counts_the_rest(hostile_result):
    chosen = report_table.choose_rows(hostile_result)
    flagged = [f for f in hostile_result.findings if f.flagged]
    assert chosen.shown[:len(flagged)] == flagged
    extra = chosen.shown[len(flagged):]
    assert 0 < len(extra) <= report_table.NEXT_UNFLAGGED and all(not f.flagged and f.score > 0 for f in extra)
    assert chosen.quiet == len(hostile_result.findings) - len(chosen.shown)
    text = reporting.render_table(hostile_result)
    assert text.splitlines()[len(chosen.shown) + 2] == f"… and {chosen.quiet} clients with nothing suspicious"


def test_all_lists_every_client(hostile_result):
    text = reporting.render_table(hostile_result, everything=True)
    assert "nothing suspicious" not in text
    assert len(text.split("\nLLM notes")[0].strip().splitlines()) == len(hostile_result.findings) + 2


def test_top_caps_the_flagged_rows_and_says_how_many_more(small_result):
    many = with_flags(small_result, 5)
    chosen = report_table.choose_rows(many, top=2)
    assert [f.rank for f in chosen.shown] == [1, 2] and chosen.more_flagged == 3
    text = reporting.render_table(many, top=2)
    assert "… and 3 more flagged clients (--top N or --all lists them)" in text
    assert "… and 2 clients with nothing suspicious" in text


def test_clients_scored_zero_are_not_listed_after_the_flagged(small_result):
    quiet = reporting.render_table(small_result)
    assert "192.0.2.10" not in quiet and "… and 6 clients with nothing suspicious" in quiet


# --- how it looks ---------------------------------------------------------------------------------

def test_a_file_or_pipe_gets_whole_cells_and_a_terminal_width_cuts_only_the_reason(hostile_result):
    import reportdata

    whole = reporting.render_table(hostile_result).split("\nLLM notes")[0]
    assert reportdata.MARKUP_IP in whole and "..." not in whole
    reasons = [f.reasons[0] for f in hostile_result.findings if f.flagged]
    assert all(reporting.terminal_safe(reason) in whole for reason in reasons)
    for width in (60, 80, 120):
        lines = reporting.render_table(hostile_result, width=width).split("\nLLM notes")[0].splitlines()
        assert max(len(line) for line in lines) <= width, width
        # the attack type is never the one cut: its column keeps its width
        for finding in (f for f in hostile_result.findings if f.flagged):
            assert f" {finding.attack_types[0]} " in "\n".join(lines) + " "


def test_critical_and_high_have_different_styles_and_numbers_one_style(small_result):
    styles = reporting.SEVERITY_COLOURS
    assert len(set(styles.values())) == len(styles)
    assert "41" in styles["critical"].split(";")[-1]            # reversed: a red background
    assert styles["critical"] != styles["high"]
    text = reporting.render_table(with_flags(small_result, 2), colour=True)
    assert f"{styles['high']}high{reporting.RESET}" in text


def test_counts_in_reasons_use_thousands_separators(hostile_result):
    import re

    counts = re.findall(r"\((\d[\d,]*)x\)", "\n".join(r for f in hostile_result.findings for r in f.reasons))
    assert counts and all(int(c.replace(",", "")) < 1000 or "," in c for c in counts)


@pytest.mark.parametrize(("flag", "terminal", "columns", "environ", "expected"), [
    (None, True, 132, {}, 132), (None, False, 80, {}, None), (100, False, 80, {}, 100),
    (None, False, 80, {"COLUMNS": "150"}, 150), (90, True, 132, {"COLUMNS": "150"}, 90),
    (None, True, 132, {"COLUMNS": "x"}, 132),
])
def test_table_width_precedence(flag, terminal, columns, environ, expected):
    assert messages.table_width(flag, terminal, columns, environ) == expected


def test_width_flag_and_columns_reach_the_table(capsys, monkeypatch):
    code, out, _ = run(capsys, "-f", SMALL, "--width", "60")
    assert code == ExitCode.OK and max(len(line) for line in out.splitlines()) <= 60
    monkeypatch.setenv("COLUMNS", "70")
    code, out, _ = run(capsys, "-f", SMALL)
    assert max(len(line) for line in out.splitlines()) <= 70 and "..." in out
    monkeypatch.delenv("COLUMNS")
    code, out, _ = run(capsys, "-f", SMALL)
    assert "SQL Injection - Tautologies and Time Delays in URI (1x)" in out   # a pipe: never cut
    assert run(capsys, "-f", SMALL, "--width", "10")[0] == ExitCode.USAGE


# --- what the CLI says after the table ------------------------------------------------------------

def test_hints_after_the_table_name_the_top_client_and_the_html_report(capsys, monkeypatch):
    monkeypatch.delenv("ABUSEIPDB_API_KEY", raising=False)
    code, _, err = run(capsys, "-f", SMALL)
    hints = [line for line in err.splitlines() if line.startswith("hint:")]
    assert code == ExitCode.OK and len(hints) == 2
    assert hints[0].startswith(f"hint: log_analyser -f {SMALL} --details 198.51.100.99")
    assert "-o report.html" in hints[1]
    assert not any(line.startswith("note: detectors:") for line in err.splitlines())   # jargon: -v only
    assert "note: detectors: iforest" in run(capsys, "-f", SMALL, "-v", "--detectors", "iforest")[2]


def test_with_an_html_report_the_hint_is_enrich(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("ABUSEIPDB_API_KEY", raising=False)
    _, _, err = run(capsys, "-f", SMALL, "-o", str(tmp_path / "r.html"))
    assert "hint: --enrich adds country and network; set ABUSEIPDB_API_KEY for reputation too" in err
    monkeypatch.setenv("ABUSEIPDB_API_KEY", "k" * 80)
    _, _, err = run(capsys, "-f", SMALL, "-o", str(tmp_path / "r.html"))
    assert "--enrich" not in err


def test_hints_quote_what_they_print(small_result):
    hostile = dataclasses.replace(small_result.findings[0], ip="1.2.3.4;rm -rf ~\x1b[2J")
    result = dataclasses.replace(small_result, findings=(hostile, *small_result.findings[1:]))
    hint = messages.next_steps(result, [], False, False)[0]
    assert "--details '1.2.3.4;rm -rf ~\\x1b[2J'" in hint and "\x1b" not in hint


def test_fail_on_says_which_clients_triggered_it(capsys):
    code, _, err = run(capsys, "-f", SMALL, "--fail-on", "high")
    assert code == ExitCode.FINDINGS
    assert "fail-on high: 1 client is high or worse: 198.51.100.99 (critical) (exit code 10)" in err
    code, _, err = run(capsys, "-f", SMALL, "--fail-on", "high", "--threshold", "95")
    assert code == ExitCode.OK and "fail-on" not in err


def test_fail_on_line_names_five_and_counts_the_rest(small_result):
    many = with_flags(small_result, 7)
    line = messages.fail_on_line(many, Severity.MEDIUM)
    assert line is not None and "7 clients are medium or worse" in line and "and 2 more" in line
    assert messages.fail_on_line(many, Severity.CRITICAL) is None


def test_every_file_written_is_announced_and_quiet_silences_it_all(capsys, tmp_path):
    csv_path, deny, junit = tmp_path / "r.csv", tmp_path / "deny.conf", tmp_path / "r.junit.xml"
    code, out, err = run(capsys, "-f", SMALL, "-o", str(csv_path), "-o", str(deny), "-o", str(junit),
                         "--fail-on", "high")
    assert code == ExitCode.FINDINGS and out == ""
    assert f"wrote {csv_path} (7 clients)" in err.splitlines()
    assert f"wrote {deny} (1 client listed)" in err.splitlines()
    assert f"wrote {junit} (1 client flagged)" in err.splitlines()
    code, out, err = run(capsys, "-f", SMALL, "-q", "-o", str(csv_path), "--fail-on", "high")
    assert code == ExitCode.FINDINGS and out == "" and err == ""
    code, out, err = run(capsys, "-f", SMALL, "-q")
    assert out.startswith("# client") and err == ""


def test_quiet_keeps_errors(capsys):
    code, _, err = run(capsys, "-q", "-f", str(DATA / "missing.log"))
    assert code == ExitCode.INPUT and err.startswith("error: ")


# --- install hints --------------------------------------------------------------------------------

def test_installed_by_tells_pip_pipx_and_the_image_apart(tmp_path):
    assert installed_by(str(tmp_path / "venv")) == "pip"
    assert installed_by("/root/.local/share/pipx/venvs/log-analyser") == "pipx"
    assert installed_by("/home/ana/.local/pipx/venvs/log_analyser") == "pipx"
    image = tmp_path / "opt-venv"
    image.mkdir()
    (image / ".log_analyser-image").touch()
    assert installed_by(str(image)) == "docker"


def test_install_hint_names_the_command_for_each_install():
    assert install_hint("deep", "pip") == "pip install '.[deep]' in the log_analyser source tree"
    assert install_hint("deep", "pipx") == "pipx install --force '.[deep]' in the log_analyser source tree"
    assert install_hint("deep", "docker") == ("use the image's full variant (tag full), or build it: docker build "
                                              "--target runtime --build-arg VARIANT=full -t log_analyser:full .")
    assert install_hint("spark", "docker") == ("no image variant has it: pip install '.[spark]' in the "
                                               "log_analyser source tree")


def test_pdf_and_html_need_no_extra():
    import tomllib

    from conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {dep.split(">")[0].split("=")[0] for dep in project["dependencies"]}
    assert {"fpdf2", "matplotlib", "beautifultable", "requests"} <= core
    assert project["optional-dependencies"]["report"] == []   # kept so '.[report]' still installs
