"""--explain and --dry-run-llm through the CLI, in process, against the local Chat Completions server."""
from __future__ import annotations

import csv
import json
import logging
import re

import jsonschema
import pytest
from conftest import ROOT
from llm_server import ChatServer, answer
from test_explanations import BRUTE, INJECTOR, attack_log_lines, closed_port_url, gullible

import log_analyser
from log_analyser_core.errors import ExitCode

DRY_RUN_HEADER = re.compile(r"--- request (\d+) of (\d+): POST (\S+)\n")


@pytest.fixture(scope="module")
def attack_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm-cli") / "access.log"
    path.write_text("\n".join(attack_log_lines()) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-123")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("LOG_ANALYSER_LLM_MODEL", raising=False)


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def dry_run_bodies(err: str) -> list[dict]:
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(err, match.end())[0] for match in DRY_RUN_HEADER.finditer(err)]


def test_dry_run_prints_exactly_what_is_sent_and_sends_nothing(capsys, attack_log, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")         # a dry run needs no key
    with ChatServer() as server:
        code, out, err = run(capsys, "-f", attack_log, "--explain", "--dry-run-llm", "--llm-base-url", server.url)
        assert code == ExitCode.OK and server.bodies == []
        printed = dry_run_bodies(err)
        assert f"3 request(s) would be sent to {server.url}/chat/completions; nothing was sent" in err
        assert [m.group(3) for m in DRY_RUN_HEADER.finditer(err)] == [f"{server.url}/chat/completions"] * 3
        assert "LLM notes" not in out and "note: LLM" not in err
        monkeypatch.setenv("OPENAI_API_KEY", "test-key-123")
        code, _, _ = run(capsys, "-f", attack_log, "--explain", "--llm-base-url", server.url)
    assert code == ExitCode.OK and len(printed) == 3
    assert sorted(server.bodies, key=json.dumps) == sorted(printed, key=json.dumps)   # sent a few at a time


def test_dry_run_shows_the_redaction(capsys, attack_log):
    code, _, err = run(capsys, "-f", attack_log, "--dry-run-llm", "--llm-redact", "ips")
    assert code == ExitCode.OK and "https://api.openai.com/v1/chat/completions" in err
    sent = json.dumps(dry_run_bodies(err))
    assert BRUTE not in sent and "hunter" not in sent and "ip-1" in sent and "[REDACTED]" in sent


def test_the_model_changes_no_verdict_and_no_exit_code(capsys, attack_log):
    plain = run(capsys, "-f", attack_log, "--fail-on", "high")
    with ChatServer(gullible) as server:
        explained = run(capsys, "-f", attack_log, "--fail-on", "high", "--explain", "--llm-base-url", server.url)
    assert plain[0] == explained[0] == ExitCode.FINDINGS
    assert explained[1].startswith(plain[1])
    notes = explained[1].removeprefix(plain[1])
    assert "set aside (contradicts_evidence): drops the severity to info" in notes
    assert explained[2].count("note: LLM notes from gpt-5.4-mini (advisory): 2 contradicts_evidence, 1 ok") == 1


def hostile(body, index):
    return answer(body, summary="Client \x1b[31mowned\x1b[0m the site \u202eexe.txt",
                  recommended_actions=["=HYPERLINK(\"http://evil\")", "Block it"])


def test_reports_show_the_note_labelled_as_the_models_and_escaped(capsys, attack_log, tmp_path):
    csv_path, json_path, txt_path = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "r.txt"
    with ChatServer(hostile) as server:
        code, _, _ = run(capsys, "-f", attack_log, "--explain", "--llm-base-url", server.url, "--llm-model", "m1",
                         "-o", str(csv_path), "-o", str(json_path), "-o", str(txt_path))
    assert code == ExitCode.OK
    document = json.loads(json_path.read_text())
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    noted = [f for f in document["findings"] if "llm_note" in f]
    assert len(noted) == 3 and all(f["llm_note"]["advisory"] is True and f["llm_note"]["model"] == "m1"
                                   for f in noted)
    assert noted[0]["llm_note"]["summary"].startswith("Client \x1b[31mowned")    # JSON escapes it itself
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    by_ip = {row["ip"]: row for row in rows}
    assert by_ip[INJECTOR]["llm_status"] == "ok" and by_ip[INJECTOR]["llm_model"] == "m1"
    assert by_ip[INJECTOR]["llm_actions"].startswith("'=HYPERLINK")
    assert by_ip["10.1.0.1"]["llm_status"] == ""
    table = txt_path.read_text()
    assert "LLM notes (the model's advisory view; our scores and severities above stand)" in table
    assert "\x1b" not in table and "\u202e" not in table and "\\x1b[31mowned" in table


def test_csv_has_no_llm_columns_without_explain(capsys, attack_log, tmp_path):
    path = tmp_path / "r.csv"
    run(capsys, "-f", attack_log, "-o", str(path))
    assert not [c for c in next(csv.reader(path.open())) if c.startswith("llm_")]


def test_unreachable_server_says_once_why_and_succeeds(capsys, attack_log):
    code, out, err = run(capsys, "-f", attack_log, "--explain", "--llm-base-url", closed_port_url())
    assert code == ExitCode.OK and "LLM notes" not in out
    assert len(re.findall(r"^note: LLM explanations skipped: cannot reach", err, re.M)) == 1


def test_base_url_and_model_from_the_environment(capsys, attack_log, monkeypatch):
    with ChatServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("LOG_ANALYSER_LLM_MODEL", "env-model")
        code, out, _ = run(capsys, "-f", attack_log, "--explain", "--explain-top", "1")
    assert code == ExitCode.OK and [b["model"] for b in server.bodies] == ["env-model"]
    assert "env-model says" in out


@pytest.mark.parametrize("argv", [["--explain-top", "0"], ["--llm-base-url", "ftp://example.org"],
                                  ["--llm-base-url", "localhost:11434"]])
def test_bad_llm_settings_are_one_line_usage_errors(capsys, attack_log, argv):
    code, _, err = run(capsys, "-f", attack_log, "--explain", *argv)
    assert code == ExitCode.USAGE and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_unknown_redaction_is_a_usage_error(capsys, attack_log):
    code, _, err = run(capsys, "-f", attack_log, "--llm-redact", "names")
    assert code == ExitCode.USAGE and "invalid choice" in err


def test_help_documents_the_llm_options(capsys):
    _, out, _ = run(capsys, "--help")
    for option in ("--explain", "--explain-top", "--llm-model", "--llm-base-url", "--llm-redact", "--dry-run-llm",
                   "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        assert option in out


@pytest.fixture
def restore_logging():
    """--debug points the root logger at pytest's captured stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_api_key_never_reaches_logs_or_reports(capsys, attack_log, tmp_path, monkeypatch, restore_logging):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key-42")
    report = tmp_path / "r.json"
    with ChatServer() as server:
        code, out, err = run(capsys, "-f", attack_log, "--explain", "--llm-base-url", server.url, "--debug",
                             "-o", str(report))
    assert code == ExitCode.OK and "openai" in err                    # the SDK's debug log is on
    assert server.headers[0]["authorization"] == "Bearer sk-very-secret-key-42"
    for text in (out, err, report.read_text()):
        assert "sk-very-secret-key-42" not in text


def test_a_rerun_is_answered_from_the_shared_sqlite_cache(capsys, attack_log, tmp_path):
    import sqlite3

    cache = tmp_path / "cache.sqlite3"
    with ChatServer() as server:
        first = run(capsys, "-f", attack_log, "--explain", "--llm-base-url", server.url, "--cache", str(cache))
        sent = len(server.bodies)
        second = run(capsys, "-f", attack_log, "--explain", "--llm-base-url", server.url, "--cache", str(cache))
    assert first[0] == second[0] == ExitCode.OK and sent == 3
    assert len(server.bodies) == sent                      # the second run sent nothing
    assert "LLM notes" in second[1] and first[1] == second[1]
    with sqlite3.connect(cache) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        dump = "\n".join(db.iterdump())
    assert tables and "llm_explanations" in dump and "test-key-123" not in dump
