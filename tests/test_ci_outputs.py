"""Outputs for CI pipelines: the Markdown summary (and $GITHUB_STEP_SUMMARY), the JUnit XML report
checked against the Ant JUnit schema, the GitHub Action's entry point, and scripts/test."""
from __future__ import annotations

import dataclasses
import re
import subprocess
from datetime import UTC, datetime

import pytest
import xmlschema
import yaml
from conftest import DATA, GOLDEN, ROOT
from test_reporting import check_golden

import log_analyser
import reporting
from log_analyser_core.cli import action
from log_analyser_core.errors import ExitCode
from log_analyser_core.report.junit import render_junit
from log_analyser_core.report.markdown import md_escape, render_markdown
from log_analyser_core.results import Severity

SMALL = str(DATA / "small.log")
JUNIT_XSD = DATA / "junit-ant.xsd"   # written from the Ant JUnit format; sources cited in the file
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def junit_schema():
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def test_markdown_golden(small_result):
    check_golden("small.md", render_markdown(small_result))


def test_junit_golden(small_result):
    check_golden("small.junit.xml", render_junit(small_result, Severity.HIGH, now=NOW, hostname="ci"))


def test_junit_is_valid_against_the_ant_schema_with_and_without_fail_on(junit_schema, small_result, hostile_result):
    for result in (small_result, hostile_result):
        for fail_on in (None, Severity.INFO, Severity.CRITICAL):
            junit_schema.validate(render_junit(result, fail_on, now=NOW, hostname="ci"))


def test_the_schema_rejects_what_reporters_would(junit_schema, small_result):
    """The schema is not a rubber stamp: a case without a classname or a zoned timestamp fails."""
    document = render_junit(small_result, Severity.HIGH, now=NOW, hostname="ci")
    assert not junit_schema.is_valid(document.replace(' classname="log_analyser.sqli"', ""))
    assert not junit_schema.is_valid(document.replace('timestamp="2026-03-10T09:00:00"',
                                                      'timestamp="2026-03-10T09:00:00Z"'))


def test_junit_has_one_case_per_flagged_client_failed_at_or_above_fail_on(junit_schema, hostile_result):
    flagged = [f for f in hostile_result.findings if f.flagged]
    document = junit_schema.to_dict(render_junit(hostile_result, Severity.HIGH, now=NOW, hostname="ci"))
    suite = document["testsuite"][0]
    cases = suite["testcase"]
    assert [case["@name"] for case in cases] == [f.ip for f in flagged]
    failed = [case["@name"] for case in cases if "failure" in case]
    assert failed == [f.ip for f in flagged if f.severity >= Severity.HIGH]
    assert suite["@tests"] == len(flagged) and suite["@failures"] == len(failed) and suite["@errors"] == 0
    quiet = junit_schema.to_dict(render_junit(hostile_result, None, now=NOW, hostname="ci"))
    assert all("failure" not in case for case in quiet["testsuite"][0]["testcase"])


def test_junit_escapes_what_xml_cannot_hold(junit_schema, hostile_result):
    import reportdata

    document = render_junit(hostile_result, Severity.INFO, now=NOW, hostname="ci")
    junit_schema.validate(document)
    names = [case["@name"] for case in junit_schema.to_dict(document)["testsuite"][0]["testcase"]]
    assert reportdata.MARKUP_IP in names                       # escaped by the XML writer, read back whole
    assert "<img" not in document and "\x1b" not in document


def test_markdown_escapes_attacker_text():
    hostile = "x|y [click](https://evil.example) <img src=x onerror=alert(1)> @admin #1 `a` *b* \x1b[31m\u202e"
    text = md_escape(hostile)
    unescaped = re.sub(r"\\\\", "", text)   # drop escaped backslashes, then every markup character must be escaped
    assert re.search(r"(?<!\\)[\[\]|`*_~@#:]", unescaped) is None, text
    assert "<" not in text and ">" not in text and "\x1b" not in text and "\u202e" not in text
    assert "&lt;img" in text and "\\@admin" in text and "\\x1b" in text and "https\\://" in text


def test_markdown_of_a_hostile_log_keeps_one_row_per_flagged_client(hostile_result):
    text = render_markdown(hostile_result)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| #", "| ---"))]
    flagged = [f for f in hostile_result.findings if f.flagged]
    assert len(rows) == len(flagged)
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 8 for row in rows)   # 7 cells: no pipe got through


def test_new_writers_are_picked_by_extension():
    assert reporting.format_for("summary.md") == ("markdown", "summary.md")
    assert reporting.format_for("report.junit.xml") == ("junit", "report.junit.xml")
    assert reporting.format_for("TEST-log.xml") == ("junit", "TEST-log.xml")


def test_step_summary_is_appended_when_github_sets_it(capsys, tmp_path, monkeypatch):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert log_analyser.main(["-f", SMALL, "-q"]) == ExitCode.OK
    text = summary.read_text()
    assert text.startswith("earlier step\n## log_analyser\n") and "`198.51.100.99`" in text
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert log_analyser.main(["-f", SMALL, "-q"]) == ExitCode.OK
    assert summary.read_text() == text
    capsys.readouterr()


# --- the GitHub Action ----------------------------------------------------------------------------

def test_action_inputs_are_the_ones_the_entry_point_reads():
    spec = yaml.safe_load((ROOT / "action.yml").read_text())
    assert spec["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert set(spec["inputs"]) == set(action.inputs({}))
    assert spec["inputs"]["logs"]["required"] is True and spec["inputs"]["fail-on"]["default"] == "high"
    assert set(spec["outputs"]) == {"report", "junit", "exit-code"}


def test_the_action_image_is_the_dockerfiles_last_stage_and_runs_the_entry_point():
    text = (ROOT / "Dockerfile").read_text()
    last = text[text.rindex("\nFROM "):]
    assert last.split("\n", 2)[1].endswith(" AS action")
    assert 'ENTRYPOINT ["python", "-m", "log_analyser_core.cli.action"]' in last
    assert "\nUSER " not in last   # GitHub runs container actions as root


def test_action_entry_point_runs_the_analysis_and_sets_outputs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outputs, summary = tmp_path / "output", tmp_path / "summary.md"
    environ = {"INPUT_LOGS": f"{SMALL} '{DATA / 'small.log'}'", "INPUT_FAIL-ON": "high",
               "INPUT_REPORT": "out.html", "INPUT_JUNIT": "out.junit.xml", "INPUT_ARGS": "--threshold 40 -q",
               "GITHUB_OUTPUT": str(outputs)}
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = action.main(environ)
    assert code == ExitCode.FINDINGS
    assert outputs.read_text().splitlines() == ["report=out.html", "junit=out.junit.xml", "exit-code=10"]
    assert (tmp_path / "out.html").read_text().startswith("<!DOCTYPE html>")
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(str(tmp_path / "out.junit.xml"))
    assert "## log_analyser" in summary.read_text()
    capsys.readouterr()


def test_action_argv_and_a_bad_input():
    assert action.analyser_argv("a.log 'b c.log'", "", "r.json", "", "--top 5") == \
        ["-f", "a.log", "b c.log", "-o", "r.json", "--top", "5"]
    with pytest.raises(Exception, match="'logs' input is empty"):
        action.analyser_argv("  ", "high", "", "", "")
    assert action.main({"INPUT_LOGS": "'unclosed"}) == ExitCode.USAGE


# --- the test command for a bare machine ----------------------------------------------------------

def test_scripts_test_installs_what_the_tests_use_and_ci_runs_it():
    script = (ROOT / "scripts" / "test").read_text()
    packages = set(re.findall(r"^\s+([a-z0-9.+-]+)\s", script.split("apt_packages=(")[1].split(")")[0], re.M))
    assert {"chromium", "chromium-driver", "poppler-utils", "nginx-light", "apache2-bin", "nftables",
            "iptables", "openjdk-17-jre-headless"} <= packages
    assert script.rstrip().endswith("""pip install -e '.[dev]' && pytest "$@\"""")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test" in ci and "bash .ci/check-files" in ci and "apt-get" not in ci
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "test")], check=True)


def test_golden_files_exist_for_the_ci_writers():
    assert (GOLDEN / "small.md").exists() and (GOLDEN / "small.junit.xml").exists()


def test_markdown_without_findings(small_result):
    calm = dataclasses.replace(small_result, findings=tuple(dataclasses.replace(f, flagged=False)
                                                             for f in small_result.findings))
    assert "No client looks suspicious." in render_markdown(calm)
