"""The CLI, in process: exit codes, one-line errors, outputs."""
from __future__ import annotations

import builtins
import csv
import gzip
import io
import json
import re
import subprocess
import sys

import jsonschema
import pytest
from conftest import DATA, ROOT

import log_analyser
from log_analyser_core import pipeline as analysis
from log_analyser_core import results
from log_analyser_core.errors import ExitCode

SMALL = str(DATA / "small.log")


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_table_to_stdout_summary_to_stderr(capsys):
    code, out, err = run(capsys, "-f", SMALL)
    assert code == ExitCode.OK
    assert "198.51.100.99" in out.splitlines()[2] and "critical" in out and "sqli" in out
    assert "parsed 22 of 23 lines (1 unparsed)" in err and "1 flagged" in err


def test_csv_and_json_outputs_follow_the_extension(capsys, tmp_path):
    csv_path, json_path = tmp_path / "r.csv", tmp_path / "r.json"
    code, out, _ = run(capsys, "-f", SMALL, "-o", str(csv_path), "-o", str(json_path))
    assert code == ExitCode.OK and out == ""
    assert len(list(csv.DictReader(csv_path.open()))) == 7
    assert json.loads(json_path.read_text())["summary"]["clients"] == 7


def test_output_format_override_to_stdout(capsys):
    code, out, _ = run(capsys, "-f", SMALL, "-o", "-", "--output-format", "json")
    assert code == ExitCode.OK and json.loads(out)["schema_version"] == results.SCHEMA_VERSION


def test_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((DATA / "small.log").read_bytes())))
    code, out, _ = run(capsys, "-f", "-")
    assert code == ExitCode.OK and "198.51.100.99" in out


@pytest.mark.parametrize(("options", "expected"), [
    (["--fail-on", "critical"], ExitCode.FINDINGS), (["--fail-on", "info", "--threshold", "90"], ExitCode.OK)])
def test_fail_on_gates_ci(capsys, options, expected):
    assert run(capsys, "-f", SMALL, *options)[0] == expected


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "-f", str(tmp_path / "nope.log"))
    assert code == ExitCode.INPUT and "no such file" in one_line_error(err)


def test_directory(capsys, tmp_path):
    code, _, err = run(capsys, "-f", str(tmp_path))
    assert code == ExitCode.INPUT and "is a directory" in one_line_error(err)


def test_permission_denied(capsys, tmp_path, monkeypatch):
    # CI runs as root, which the OS lets read anything: make open() refuse this one file instead.
    secret = tmp_path / "secret.log"
    secret.write_text("x\n")
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(secret):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", refusing_open)
    code, _, err = run(capsys, "-f", str(secret))
    assert code == ExitCode.INPUT and "permission denied" in one_line_error(err)


def test_empty_file(capsys, tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("")
    code, _, err = run(capsys, "-f", str(empty))
    assert code == ExitCode.INPUT and "empty" in one_line_error(err)


def test_truncated_gzip(capsys, tmp_path):
    data = gzip.compress((DATA / "small.log").read_bytes() * 200)
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[:-40])
    code, _, err = run(capsys, "-f", str(cut))
    assert code == ExitCode.INPUT and "truncated" in one_line_error(err)


def test_wrong_format_suggests_format_flag(capsys, tmp_path):
    other = tmp_path / "other.log"
    other.write_text("2025-11-02 192.168.0.1 GET /index.html\n" * 5)
    code, _, err = run(capsys, "-f", str(other))
    assert code == ExitCode.INPUT and "--format" in one_line_error(err)


@pytest.mark.parametrize("argv", [
    ["-f", SMALL, "--fail-on", "urgent"], ["-f", SMALL, "--top", "x"], ["--bogus"], [],
])
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == ExitCode.USAGE and "usage:" in err


@pytest.mark.parametrize("argv", [
    ["--threshold", "120"], ["--contamination", "0.9"], ["--tz", "Mars/Olympus"], ["--format", "apache2"],
    ["--log-format", "%h %Q"], ["-o", "report.xlsx"],
])
def test_bad_settings_are_one_line_usage_errors(capsys, argv):
    code, _, err = run(capsys, "-f", SMALL, *argv)
    assert code == ExitCode.USAGE
    one_line_error(err)


def test_unwritable_output(capsys, tmp_path):
    code, _, err = run(capsys, "-f", SMALL, "-o", str(tmp_path / "no" / "such" / "dir.csv"))
    assert code == ExitCode.USAGE and "cannot write report" in one_line_error(err)


def test_internal_error_prints_traceback_and_exits_70(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(analysis, "analyse", broken)
    code, _, err = run(capsys, "-f", SMALL)
    assert code == ExitCode.INTERNAL and "Traceback" in err and "RuntimeError: boom" in err


def test_interrupted_exits_130(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(analysis, "analyse", interrupted)
    code, _, err = run(capsys, "-f", SMALL)
    assert code == ExitCode.INTERRUPTED and one_line_error(err) == "error: interrupted"


def test_debug_shows_the_traceback_of_expected_errors(capsys, tmp_path):
    code, _, err = run(capsys, "-f", str(tmp_path / "nope.log"), "--debug")
    assert code == ExitCode.INPUT and "Traceback" in err and err.rstrip().endswith("no such file")


def test_verbose_shows_unparsed_lines(capsys):
    code, _, err = run(capsys, "-f", SMALL, "--verbose")
    assert code == ExitCode.OK and "unparsed small.log:21" in err.replace(str(DATA) + "/", "")


def test_help_documents_every_option_and_exit_code(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == ExitCode.OK
    for option in ("--file", "--output", "--output-format", "--format", "--log-format", "--tz", "--top",
                   "--threshold", "--contamination", "--fail-on", "--seed", "--verbose", "--debug", "--version"):
        assert option in out
    for code_ in ExitCode:
        assert f"\n  {int(code_):<4} " in out, code_


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == ExitCode.OK and out.startswith("log_analyser ")


def test_no_colour_when_not_a_tty_or_no_color(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = run(capsys, "-f", SMALL)
    assert "\x1b[" not in out


def test_sample_log_in_the_repo_runs(capsys):
    code, out, err = run(capsys, "-f", str(ROOT / "examples" / "access.log"))
    assert code == ExitCode.OK and "critical" in out and "parsed 10,000 of 10,000 lines" in err


def test_extra_rules_file_adds_a_detection(capsys, tmp_path):
    rules = tmp_path / "site.yaml"
    rules.write_text("id: about-page-watch\ntitle: Reads the about page\nattack_type: bad_bot\nseverity: high\n"
                     "filter: {path: '^/about$'}\nwindow: {maxretry: 1, findtime: 1}\n")
    code, out, _ = run(capsys, "-f", SMALL, "--behaviour-rules", str(rules), "-o", "-", "--output-format", "json")
    findings = {f["ip"]: f for f in json.loads(out)["findings"]}
    assert code == ExitCode.OK
    assert [e["rule_id"] for e in findings["2001:db8::42"]["evidence"]] == ["about-page-watch"]
    assert findings["2001:db8::42"]["flagged"] and findings["2001:db8::42"]["attack_types"] == ["bad_bot"]


def test_broken_rules_exit_4_with_one_line(capsys, tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text("id: x\ntitle: t\nseverity: huge\nfilter: {path: a}\nwindow: {maxretry: 1, findtime: 1}\n")
    code, _, err = run(capsys, "-f", SMALL, "--behaviour-rules", str(rules))
    assert code == ExitCode.RULES and "rule 'x': severity" in one_line_error(err)


def test_allowlist_from_the_cli(capsys, tmp_path):
    allow = tmp_path / "allow.yaml"
    allow.write_text("ips: [198.51.100.0/24]\n")
    code, out, err = run(capsys, "-f", SMALL, "--allow", str(allow), "--fail-on", "info")
    assert code == ExitCode.OK and "0 flagged" in err and "excluded because ip in 198.51.100.0/24 (clients): 2" in err


def test_bad_allowlist_is_a_usage_error(capsys, tmp_path):
    allow = tmp_path / "allow.yaml"
    allow.write_text("ips: [not-an-address]\n")
    code, _, err = run(capsys, "-f", SMALL, "--allow", str(allow))
    assert code == ExitCode.USAGE and "allowlist" in one_line_error(err)


def test_internal_clients_are_marked_in_the_table(capsys, tmp_path):
    log = tmp_path / "office.log"
    log.write_text((DATA / "small.log").read_text().replace("203.0.113.5 ", "10.1.2.3 "))
    code, out, _ = run(capsys, "-f", str(log), "--all")   # an unflagged client: listed with --all
    assert code == ExitCode.OK and "10.1.2.3 (internal)" in out


def test_tz_shows_the_summary_in_the_zone_and_json_stays_utc(capsys, tmp_path):
    # Berlin's clocks go forward at 01:00 UTC on 2026-03-29: the span starts in CET and ends in CEST.
    log = tmp_path / "dst.log"
    log.write_text("".join(f'{ip} - - [29/Mar/2026:{time} +0000] "GET /{n} HTTP/1.1" 200 10 "-" "curl/8.5"\n'
                           for n, (ip, time) in enumerate([("192.0.2.1", "00:30:00"), ("192.0.2.2", "01:15:00"),
                                                           ("192.0.2.3", "02:30:00")])))
    report = tmp_path / "r.json"
    code, _, err = run(capsys, "-f", str(log), "--tz", "Europe/Berlin", "-o", str(report))
    assert code == ExitCode.OK
    assert err.splitlines()[0] == f"wrote {report} (3 clients)"
    assert err.splitlines()[1] == ("parsed 3 of 3 lines | 3 clients | 0 flagged | "
                                   "2026-03-29 01:30 CET to 2026-03-29 04:30 CEST (Europe/Berlin)")
    document = json.loads(report.read_text())
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    assert (document["summary"]["time_start"], document["summary"]["time_end"]) == (
        "2026-03-29T00:30:00Z", "2026-03-29T02:30:00Z")
    assert {f["ip"]: f["first_seen"] for f in document["findings"]}["192.0.2.2"] == "2026-03-29T01:15:00Z"
    code, _, err = run(capsys, "-f", str(log), "-o", str(tmp_path / "default.json"))
    assert err.splitlines()[1].endswith(" | 2026-03-29 00:30 to 2026-03-29 02:30 UTC")   # after "wrote ..."
    # every request is at night in UTC and in Berlin, so even the night-time feature agrees: the same JSON
    assert (tmp_path / "default.json").read_text() == report.read_text()


# --- example lines: read back from a file, rebuilt from the parsed fields (and marked) from stdin --

LOGGED = (DATA / "small.log").read_text(encoding="utf-8").splitlines()
ATTACKER = "198.51.100.99"   # small.log's one flagged client, with rule, signature and Sigma evidence


def evidence_examples(document: dict) -> list[dict]:
    return [x for f in document["findings"] for e in f["evidence"] for x in e["examples"]]


def quoted_lines(text: str, source: str) -> list[str]:
    """The lines of --details output that quote a log line of ``source`` ('SOURCE:N...: LINE')."""
    return [line.strip() for line in text.splitlines() if re.match(rf"\s+{re.escape(source)}:\d+[ :]", line)]


def test_stdin_examples_are_marked_rebuilt_in_json(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((DATA / "small.log").read_bytes())))
    code, out, _ = run(capsys, "-f", "-", "-o", "-", "--output-format", "json")
    document = json.loads(out)
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    shown = evidence_examples(document)
    assert code == ExitCode.OK and len(shown) >= 8
    assert all(x["source"] == "-" and x["rebuilt"] is True for x in shown)
    # and they are indeed not the logged lines: small.log is logged at +0100, a rebuilt line says +0000
    assert all(x["raw"] != LOGGED[x["line_number"] - 1] and "+0000]" in x["raw"] for x in shown)


def test_file_examples_are_the_logged_lines_unmarked(capsys):
    code, out, _ = run(capsys, "-f", SMALL, "-o", "-", "--output-format", "json")
    shown = evidence_examples(json.loads(out))
    assert code == ExitCode.OK and len(shown) >= 8
    assert all(x["rebuilt"] is False and x["raw"] == LOGGED[x["line_number"] - 1] for x in shown)


def test_piped_details_mark_every_example_line_rebuilt():
    # a real pipe into a separate process, as `zcat access.log.gz | log_analyser -f - --details IP`
    done = subprocess.run([sys.executable, str(ROOT / "log_analyser.py"), "-f", "-", "--details", ATTACKER],
                          input=(DATA / "small.log").read_bytes(), capture_output=True, timeout=300, check=False)
    out = done.stdout.decode()
    quoted = quoted_lines(out, "-")
    assert done.returncode == ExitCode.OK and len(quoted) >= 8 + 3   # evidence examples and first requests
    assert all(re.match(r"-:\d+ \(rebuilt\): ", line) for line in quoted), quoted
    assert ("(rebuilt): not the logged line: rebuilt in combined format from the parsed fields"
            in " ".join(out.split()))


def test_file_details_quote_the_logged_lines_unmarked(capsys):
    code, out, _ = run(capsys, "-f", SMALL, "--details", ATTACKER)
    quoted = quoted_lines(out, SMALL)
    assert code == ExitCode.OK and len(quoted) >= 8 + 3 and "(rebuilt)" not in out
    for line in quoted:
        number, text = re.fullmatch(rf"{re.escape(SMALL)}:(\d+): (.*)", line).groups()
        assert text == LOGGED[int(number) - 1]
