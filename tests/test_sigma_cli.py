"""The Sigma stage through the CLI and analyse(): rules subcommand, --rules, evidence on findings."""
from __future__ import annotations

import json

from conftest import DATA, ROOT
from test_sigma_engine import line, write_rule

import log_analyser
from log_analyser_core.errors import ExitCode
from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.results import Severity

SMALL = str(DATA / "small.log")
PACK = ROOT / "sigma"


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rules_check_passes_on_the_pack(capsys):
    code, out, err = run(capsys, "rules", "check", str(PACK), "--strict")
    assert code == ExitCode.OK and out == ""
    assert f"{len(list(PACK.glob('*.yml')))} rules run, 0 unsupported, 0 errors, 0 warnings" in err


def test_rules_check_lists_every_error_and_exits_4(capsys, tmp_path):
    write_rule(tmp_path, "a.yml", "selection:\n    cs-method: GET\ncondition: nothing",
               rule_id="33333333-3333-4333-8333-333333333333")
    write_rule(tmp_path, "b.yml", "selection:\n    cs-method|bogus: GET\ncondition: selection",
               rule_id="44444444-4444-4444-8444-444444444444")
    write_rule(tmp_path, "c.yml", "selection:\n    cs-username: bob\ncondition: selection",
               rule_id="66666666-6666-4666-8666-666666666666")
    code, out, err = run(capsys, "rules", "check", str(tmp_path))
    assert code == ExitCode.RULES
    errors = [row for row in out.splitlines() if row.startswith("error: ")]
    assert len(errors) == 2
    assert any("a.yml: rule 33333333-3333-4333-8333-333333333333" in row for row in errors)
    assert any("b.yml: rule 44444444-4444-4444-8444-444444444444" in row for row in errors)
    assert any(row.startswith("unsupported: ") and "cs-username" in row for row in out.splitlines())
    assert "2 errors" in err


def test_rules_list_shows_the_pack_and_added_folders(capsys, tmp_path):
    write_rule(tmp_path, "mine.yml", "selection:\n    cs-uri-stem: /secret\ncondition: selection",
               rule_id="77777777-7777-4777-8777-777777777777", title="My Own Rule")
    code, out, _ = run(capsys, "rules", "list", "--rules", str(tmp_path))
    assert code == ExitCode.OK
    assert "77777777-7777-4777-8777-777777777777" in out and "My Own Rule" in out
    assert "bfa5ae40-cae9-4c97-a7c9-b8740bbf5bd9  medium    bad_bot" in out
    code, out, _ = run(capsys, "rules", "list", "--no-builtin-rules", "--rules", str(tmp_path))
    assert out.count("\n") == 1


def test_analysis_with_broken_rules_exits_4_with_one_line(capsys, tmp_path):
    write_rule(tmp_path, "a.yml", "selection:\n    cs-method: GET\ncondition: nothing",
               rule_id="33333333-3333-4333-8333-333333333333")
    code, out, err = run(capsys, "-f", SMALL, "--rules", str(tmp_path))
    assert code == ExitCode.RULES and out == ""
    (message,) = err.strip().splitlines()
    assert message.startswith("error: ") and "a.yml: rule 33333333-3333-4333-8333-333333333333" in message


def test_added_rules_attach_evidence_to_findings(capsys, tmp_path):
    write_rule(tmp_path, "about.yml", "selection:\n    cs-uri-stem: /about\ncondition: selection",
               rule_id="88888888-8888-4888-8888-888888888888", title="About Page Probe", level="critical")
    code, out, _ = run(capsys, "-f", SMALL, "--rules", str(tmp_path), "-o", "-", "--output-format", "json")
    report = {f["ip"]: f for f in json.loads(out)["findings"]}
    assert report["2001:db8::42"]["flagged"] and report["2001:db8::42"]["severity"] == "critical"
    assert code == ExitCode.OK


def test_findings_carry_sigma_evidence_and_attack_types():
    result = analyse([SMALL])
    findings = {f.ip: f for f in result.findings}
    scanner = findings["198.51.100.99"]
    assert {"path_traversal", "sqli", "bad_bot", "dir_bruteforce"} <= set(scanner.attack_types)
    titles = {e.title for e in scanner.evidence}
    assert "Sensitive File Probe - Dotenv Files" in titles
    sigma = [e for e in scanner.evidence if e.kind == "sigma"]
    assert sigma and all(e.examples and e.examples[0].line_number >= 9 for e in sigma)
    assert scanner.flagged and scanner.severity >= Severity.HIGH
    assert all(not f.evidence for ip, f in findings.items() if ip != "198.51.100.99")


def test_without_sigma_rules_the_other_stages_still_judge():
    result = analyse([SMALL], Settings(builtin_rules=False))
    scanner = next(f for f in result.findings if f.ip == "198.51.100.99")
    assert scanner.evidence and not [e for e in scanner.evidence if e.kind == "sigma"]
    assert {"sqli", "path_traversal"} <= set(scanner.attack_types) and scanner.severity >= Severity.HIGH


def test_low_level_rules_do_not_flag_on_their_own(tmp_path):
    log = tmp_path / "access.log"
    benign = [line(f"GET /page-{i}", ip=f"203.0.113.{i}") for i in range(1, 30)]
    log.write_text("\n".join([*benign, line("TRACE /", 405, ip="198.51.100.5")]) + "\n")
    finding = next(f for f in analyse([str(log)]).findings if f.ip == "198.51.100.5")
    assert finding.attack_types == ("scanner",) and finding.evidence[0].severity == Severity.LOW
    assert finding.flagged == (finding.score >= Settings().threshold)   # by its score alone
