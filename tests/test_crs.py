"""The CRS stage: rules read from the shared CRS v4 checkout, evidence per client through analyse()
and the CLI, paranoia levels, what an access log cannot run, and `rules update --crs` against a
release archive served from 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import crs_release
import pytest

import file_parser
import log_analyser
from log_analyser_core.errors import ExitCode, RulesError
from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.results import AttackType, Severity
from log_analyser_core.rules.crs import install, stage

FOREST = ("iforest",)


@pytest.fixture(scope="module")
def crs_dir(shared) -> Path:
    return shared / "knowledge" / "coreruleset"


@pytest.fixture(scope="module")
def pl1(crs_dir):
    return stage.load(crs_dir, 1)


def line(ip: str, request: str, user_agent: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
         referer: str = "-", second: int = 0) -> str:
    return (f'{ip} - - [01/Mar/2026:10:00:{second:02d} +0000] "{request}" 200 512 "{referer}" "{user_agent}"')


ATTACKS = {   # client -> (request line, user agent, referer, attack type CRS gives it)
    "203.0.113.1": ("GET /item.php?id=1%27%20or%20%271%27=%271 HTTP/1.1", None, "-", AttackType.SQLI),
    "203.0.113.2": ("GET /search?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1", None, "-", AttackType.XSS),
    "203.0.113.3": ("GET /view?file=../../../../etc/passwd HTTP/1.1", None, "-", AttackType.PATH_TRAVERSAL),
    "203.0.113.4": ("GET /run?cmd=;cat%20/etc/passwd HTTP/1.1", None, "-", AttackType.RCE),
    "203.0.113.5": ("GET / HTTP/1.1", "sqlmap/1.7.2#stable (https://sqlmap.org)", "-", AttackType.SCANNER),
    "203.0.113.6": ("GET /fetch?url=http://169.254.169.254/latest/meta-data/ HTTP/1.1", None, "-", AttackType.SSRF),
    "203.0.113.7": ("GET / HTTP/1.1", None, "https://x.example/?q=<script>alert(1)</script>", AttackType.XSS),
}
BENIGN = ["GET / HTTP/1.1", "GET /static/app.js HTTP/1.1", "GET /search?q=red+shoes&page=2 HTTP/1.1",
          "GET /blog/2026/03/hello-world HTTP/1.1", "POST /login HTTP/1.1"]


@pytest.fixture(scope="module")
def attack_log(tmp_path_factory) -> Path:
    rows = [line(f"198.51.100.{i % 20 + 1}", BENIGN[i % len(BENIGN)], second=i % 60) for i in range(200)]
    for ip, (request, agent, referer, _) in ATTACKS.items():
        rows.append(line(ip, request, **({"user_agent": agent} if agent else {}), referer=referer))
    path = tmp_path_factory.mktemp("crs") / "access.log"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_each_attack_is_found_with_its_type_and_no_benign_client(attack_log, pl1):
    events = file_parser.parse([str(attack_log)]).events
    found = stage.evaluate(events, pl1)
    assert set(found) == set(ATTACKS)
    for ip, (_, _, _, kind) in ATTACKS.items():
        assert kind in {e.attack_type for e in found[ip]}, (ip, [(e.rule_id, e.attack_type) for e in found[ip]])


def test_evidence_carries_rule_message_tags_level_matched_value_and_lines(attack_log, pl1):
    events = file_parser.parse([str(attack_log)]).events
    sqli = {e.rule_id: e for e in stage.evaluate(events, pl1)["203.0.113.1"]}
    item = sqli["942100"]
    assert item.kind == "crs" and item.title == "SQL Injection Attack Detected via libinjection"
    assert item.severity == Severity.HIGH and item.count == 1 and "attack-sqli" in item.tags
    assert "paranoia-level/1" in item.tags
    assert item.matched == "ARGS:id=1' or '1'='1"
    assert item.examples[0].line_number == 201 and "item.php" in item.examples[0].raw


def test_matched_values_are_clipped(tmp_path, pl1):
    path = tmp_path / "a.log"
    path.write_text(line("203.0.113.9", "GET /?q=%3Cscript%3E" + "a" * 500 + " HTTP/1.1") + "\n")
    found = stage.evaluate(file_parser.parse([str(path)]).events, pl1)["203.0.113.9"]
    assert all(len(e.matched or "") <= len("ARGS:q=") + stage.MATCHED_CHARS + 1 for e in found)


def test_higher_paranoia_runs_more_rules_and_finds_more(crs_dir, pl1, tmp_path):
    pl2 = stage.load(crs_dir, 2)
    assert len(pl2.rules) > len(pl1.rules) and pl1.paranoia == 1 and pl2.paranoia == 2
    assert {r.rule.paranoia_level for r in pl2.rules} == {1, 2}
    # a lone SQL comment sequence: PL2's 942440 fires, nothing at PL1
    path = tmp_path / "a.log"
    path.write_text(line("203.0.113.9", "GET /?a=1%27;--%20x HTTP/1.1") + "\n")
    events = file_parser.parse([str(path)]).events
    low = {e.rule_id for items in stage.evaluate(events, pl1).values() for e in items}
    high = {e.rule_id for items in stage.evaluate(events, pl2).values() for e in items}
    assert low < high


def test_below_the_anomaly_threshold_is_no_evidence(tmp_path, crs_dir):
    # HTTP/1.7 is not an allowed version: 920430, CRITICAL, 5 points, as much as the default threshold
    path = tmp_path / "a.log"
    path.write_text(line("203.0.113.9", "GET / HTTP/1.7") + "\n")
    events = file_parser.parse([str(path)]).events
    assert stage.matches(events, stage.load(crs_dir, 1)).select("rule", "score").rows() == [(920430, 5)]
    assert stage.matches(events, stage.load(crs_dir, 1, threshold=6)).height == 0


def test_rules_a_log_cannot_run_are_named(pl1):
    assert 920280 in pl1.unsupported and "Host" in pl1.unsupported[920280]          # a missing Host header
    assert 920180 in pl1.unsupported and "Content-Length" in pl1.unsupported[920180]
    assert {r.id for r in pl1.rules}.isdisjoint(pl1.unsupported)
    (note,) = stage.notes(pl1)
    assert f"{len(pl1.unsupported)} need what an access log lacks" in note and "920180" in note


def test_a_folder_without_crs_rules_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError, match="no REQUEST-9"):
        stage.load(tmp_path)


def test_analyse_with_crs_flags_the_attackers_and_notes_it(attack_log, crs_dir):
    result = analyse([str(attack_log)], Settings(detectors=FOREST, crs=str(crs_dir)))
    flagged = {f.ip for f in result.findings if f.flagged}
    assert set(ATTACKS) <= flagged
    assert "crs" in result.summary.detectors
    assert any(n.startswith("CRS: ") and "paranoia level 1" in n for n in result.summary.notes)
    ssrf = next(f for f in result.findings if f.ip == "203.0.113.6")
    assert "ssrf" in ssrf.attack_types


def test_without_crs_a_run_says_so_once_and_runs_its_other_stages(attack_log):
    result = analyse([str(attack_log)], Settings(detectors=FOREST))
    assert [n for n in result.summary.notes if n.startswith("CRS:")] == [stage.NO_CRS_NOTE]
    assert "crs" not in result.summary.detectors and "sigma" in result.summary.detectors
    off = analyse([str(attack_log)], Settings(detectors=FOREST, crs_auto=False))
    assert not [n for n in off.summary.notes if n.startswith("CRS:")]


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_crs_and_paranoia_flags(capsys, attack_log, crs_dir):
    code, out, err = run(capsys, "-f", str(attack_log), "--crs", str(crs_dir), "--paranoia", "2", "-o", "-",
                         "--output-format", "json", "--detectors", "iforest")
    assert code == ExitCode.OK and "paranoia level 2" in err
    report = json.loads(out)
    evidence = [e for f in report["findings"] for e in f["evidence"] if e["kind"] == "crs"]
    assert evidence and all("matched" in e for e in evidence)
    assert not [e for f in report["findings"] for e in f["evidence"] if e["kind"] != "crs" and "matched" in e]


def test_cli_a_missing_crs_folder_is_one_line_and_exit_4(capsys, attack_log, tmp_path):
    code, out, err = run(capsys, "-f", str(attack_log), "--crs", str(tmp_path / "nowhere"))
    lines = [x for x in err.splitlines() if x]
    assert code == ExitCode.RULES and len(lines) == 1 and lines[0].startswith("error: --crs ")


def test_cli_paranoia_out_of_range_is_a_usage_error(capsys, attack_log):
    code, _, err = run(capsys, "-f", str(attack_log), "--paranoia", "5")
    assert code == ExitCode.USAGE and "--paranoia" in err


# `rules update --crs`: a release archive built here from the shared checkout, served on 127.0.0.1.

@pytest.fixture
def release_server(crs_dir):
    """Serves /v4.99.0/coreruleset-4.99.0-minimal.tar.gz and its .sha256 (and a tampered one)."""
    archive = crs_release.archive(crs_dir, "4.99.0")
    digest = hashlib.sha256(archive).hexdigest()
    files = {"/v4.99.0/coreruleset-4.99.0-minimal.tar.gz": archive,
             "/v4.99.0/coreruleset-4.99.0-minimal.tar.gz.sha256":
                 f"{digest}  coreruleset-4.99.0-minimal.tar.gz\n".encode(),
             "/v4.98.0/coreruleset-4.98.0-minimal.tar.gz": archive + b"tampered",
             "/v4.98.0/coreruleset-4.98.0-minimal.tar.gz.sha256": f"{digest}  x\n".encode()}
    with crs_release.serve(files) as (base, requests):
        yield f"{base}/v{{version}}/coreruleset-{{version}}-minimal.tar.gz", requests


def test_rules_update_installs_a_verified_release_that_runs_then_use(capsys, release_server, attack_log,
                                                                     monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url, requests = release_server
    code, _, err = run(capsys, "rules", "update", "--crs", "4.99.0", "--url", url)
    assert code == ExitCode.OK and "installed OWASP CRS 4.99.0" in err
    archive = "/v4.99.0/coreruleset-4.99.0-minimal.tar.gz"
    assert requests == [archive, archive + ".sha256"]
    folder = install.installed()
    assert folder == tmp_path / "data" / "log_analyser" / "crs" / "4.99.0"
    assert (folder / "rules" / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf").is_file()
    assert not list(folder.rglob("*.py"))   # only the rules folder is unpacked
    result = analyse([str(attack_log)], Settings(detectors=FOREST))   # no --crs: the installed one
    assert "crs" in result.summary.detectors


def test_rules_update_refuses_an_archive_whose_sha256_differs(capsys, release_server, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url, _ = release_server
    code, _, err = run(capsys, "rules", "update", "--crs", "4.98.0", "--url", url)
    lines = [x for x in err.splitlines() if x]
    assert code == ExitCode.RULES and len(lines) == 1 and "SHA-256" in lines[0]
    assert install.installed() is None and not (tmp_path / "data" / "log_analyser" / "crs" / "4.98.0").exists()


def test_rules_update_with_a_given_digest_and_a_bad_version(capsys, release_server, monkeypatch, tmp_path, crs_dir):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url, requests = release_server
    digest = hashlib.sha256(crs_release.archive(crs_dir, "4.99.0")).hexdigest()
    code, _, _ = run(capsys, "rules", "update", "--crs", "4.99.0", "--url", url, "--sha256", digest)
    assert code == ExitCode.OK and len(requests) == 1      # the .sha256 file was not needed
    code, _, err = run(capsys, "rules", "update", "--crs", "../../etc", "--url", url)
    assert code == ExitCode.RULES and "not a CRS version" in err


def test_rules_update_takes_the_digest_github_lists_when_no_sha256_file_is_published(tmp_path, crs_dir):
    # CRS publishes no .sha256 files; GitHub's release API lists each asset's digest
    archive = crs_release.archive(crs_dir, "4.99.0")
    name = "coreruleset-4.99.0-minimal.tar.gz"
    release = {"tag_name": "v4.99.0", "assets": [
        {"name": "coreruleset-4.99.0.tar.gz", "digest": "sha256:" + "0" * 64},
        {"name": name, "digest": "sha256:" + hashlib.sha256(archive).hexdigest()}]}
    files = {f"/coreruleset/coreruleset/releases/download/v4.99.0/{name}": archive,
             "/repos/coreruleset/coreruleset/releases/tags/v4.99.0": json.dumps(release).encode(),
             f"/tampered/coreruleset/releases/download/v4.99.0/{name}": archive + b"x",
             "/repos/tampered/coreruleset/releases/tags/v4.99.0": json.dumps(release).encode(),
             "/coreruleset/coreruleset/releases/download/v4.98.0/coreruleset-4.98.0-minimal.tar.gz": archive,
             "/repos/coreruleset/coreruleset/releases/tags/v4.98.0":   # an asset uploaded before GitHub kept digests
                 json.dumps({"assets": [{"name": "coreruleset-4.98.0-minimal.tar.gz", "digest": None}]}).encode()}
    with crs_release.serve(files) as (base, requests):
        template = base + "/coreruleset/coreruleset/releases/download/v{version}/coreruleset-{version}-minimal.tar.gz"
        folder = install.update("4.99.0", url_template=template, base=tmp_path / "crs", github_api=base)
        assert (folder / "rules" / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf").is_file()
        assert requests[1:] == [f"/coreruleset/coreruleset/releases/download/v4.99.0/{name}.sha256",
                                "/repos/coreruleset/coreruleset/releases/tags/v4.99.0"]
        with pytest.raises(RulesError, match="SHA-256"):
            tampered = template.replace("/coreruleset/coreruleset/", "/tampered/coreruleset/")
            install.update("4.99.0", url_template=tampered, base=tmp_path / "bad", github_api=base)
        assert install.installed(tmp_path / "bad") is None
        with pytest.raises(RulesError, match="neither"):   # no digest at all: nothing installed
            install.update("4.98.0", url_template=template, base=tmp_path / "none", github_api=base)
        assert install.installed(tmp_path / "none") is None


def test_restricted_files_and_extensions_are_low_severity_policy_evidence(tmp_path, pl1):
    # a site may serve sample.log on purpose (elastic's apache_logs does): typed, but never flags alone
    path = tmp_path / "a.log"
    path.write_text(line("203.0.113.9", "GET /files/sample.log HTTP/1.1") + "\n"
                    + line("203.0.113.10", "GET /.env HTTP/1.1") + "\n")
    found = stage.evaluate(file_parser.parse([str(path)]).events, pl1)
    assert [(e.rule_id, e.severity) for e in found["203.0.113.9"]] == [("920440", Severity.LOW)]
    assert [(e.rule_id, e.severity) for e in found["203.0.113.10"]] == [("930130", Severity.LOW)]


def test_crs_settings_switch_rules_and_the_threshold(tmp_path, crs_dir):
    # two Latin-1 encoded arguments: 920250 (not UTF-8) twice, 6 points: over the default threshold of 5
    path = tmp_path / "a.log"
    path.write_text(line("203.0.113.9", "GET /tienda?nombre=Jam%F3n&ciudad=Sol%E0 HTTP/1.1") + "\n")
    events = file_parser.parse([str(path)]).events
    assert set(stage.matches(events, stage.load(crs_dir, 1))["rule"]) == {920250}
    latin1 = stage.load(crs_dir, 1, settings=(("crs_validate_utf8_encoding", "0"),))
    assert 920250 in latin1.inactive and stage.matches(events, latin1).height == 0
    lenient = stage.load(crs_dir, 1, settings=(("inbound_anomaly_score_threshold", "10"),))
    assert lenient.threshold == 10 and stage.matches(events, lenient).height == 0


def test_cli_crs_set(capsys, attack_log, crs_dir):
    code, _, err = run(capsys, "-f", str(attack_log), "--crs", str(crs_dir), "--detectors", "iforest",
                       "--crs-set", "inbound_anomaly_score_threshold=10", "--top", "1")
    assert code == ExitCode.OK and "anomaly threshold 10" in err
    code, _, err = run(capsys, "-f", str(attack_log), "--crs-set", "no equals sign")
    lines = [x for x in err.splitlines() if x]
    assert code == ExitCode.USAGE and len(lines) == 1 and "--crs-set wants NAME=VALUE" in lines[0]


def test_without_libinjection_its_two_rules_are_unsupported_and_named(monkeypatch, crs_dir):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "libinjection" else real(name, *rest))
    ruleset = stage.load(crs_dir, 1)
    assert "log_analyser[crs]" in ruleset.unsupported[942100] and 941100 in ruleset.unsupported
    assert {r.id for r in ruleset.rules} & {942100, 941100} == set()
