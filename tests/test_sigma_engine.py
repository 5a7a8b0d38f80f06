from __future__ import annotations

import textwrap
import urllib.parse
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

import file_parser
from log_analyser_core.results import AttackType, Severity
from log_analyser_core.rules import sigma_compile, sigma_engine

PACK = ROOT / "sigma"
CASES = ROOT / "tests" / "sigma_cases"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
HEADER = """\
title: {title}
id: {id}
status: experimental
description: test rule
author: tests
date: 2026-11-22
tags:
    - attack.initial-access
    - attack.t1190
logsource:
    category: webserver
"""


def line(request: str, status: int = 200, ua: str = FIREFOX, referer: str = "-", ip: str = "203.0.113.7") -> str:
    return f'{ip} - - [22/Nov/2026:10:00:00 +0000] "{request} HTTP/1.1" {status} 512 "{referer}" "{ua}"'


def hit_lines(tmp_path: Path, rules: sigma_engine.RuleSet, lines: list[str], log_format: str | None = None) -> dict:
    """rule id -> line numbers it matches."""
    path = tmp_path / "access.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = file_parser.parse([str(path)], format_name="combined", log_format=log_format).events
    hits = sigma_engine.matches(events, rules)
    numbers = events["line_number"]
    found: dict[str, list[int]] = {}
    for row, rule in hits.iter_rows():
        found.setdefault(rule, []).append(numbers[row])
    return found


def write_rule(folder: Path, name: str, detection: str, rule_id: str = "11111111-1111-4111-8111-111111111111",
               title: str = "Test Rule", level: str = "high") -> Path:
    body = textwrap.indent(detection.rstrip("\n") + "\n", "    ")
    text = HEADER.format(title=title, id=rule_id) + "detection:\n" + body
    path = folder / name
    path.write_text(text + f"falsepositives:\n    - none\nlevel: {level}\n", encoding="utf-8")
    return path


# --- our rule pack -------------------------------------------------------------------------------

PACK_RULES = sorted(PACK.glob("*.yml"))


def test_the_pack_has_at_least_25_clean_rules():
    ruleset = sigma_engine.check([PACK])
    assert len(ruleset.rules) == len(PACK_RULES) >= 25
    assert ruleset.problems == ()   # no error, no unsupported feature, no validator warning


@pytest.mark.parametrize("path", PACK_RULES, ids=lambda p: p.stem)
def test_pack_rule_metadata_is_complete(path):
    rule = yaml.safe_load(path.read_text())
    for key in ("title", "id", "status", "description", "references", "author", "date", "tags", "falsepositives",
                "level"):
        assert rule.get(key), f"{path.name}: {key} missing"
    assert rule["logsource"] == {"category": "webserver"}
    assert any(tag.startswith("attack.") for tag in rule["tags"])


def test_every_pack_rule_has_a_case_and_every_case_a_rule():
    assert {p.stem for p in PACK_RULES} == {p.stem for p in CASES.glob("*.yml")}


@pytest.mark.parametrize("path", PACK_RULES, ids=lambda p: p.stem)
def test_pack_rule_against_its_case(path, tmp_path):
    case = yaml.safe_load((CASES / path.name).read_text())
    lines = case["log"].splitlines()
    assert set(case["hits"]) < set(range(1, len(lines) + 1)), "a case needs lines that must not match"
    ruleset = sigma_engine.load([path])
    (rule,) = ruleset.rules
    assert rule.attack_type == AttackType(case["attack_type"])
    assert hit_lines(tmp_path, ruleset, lines).get(rule.id, []) == case["hits"]


def test_builtin_dir_is_the_pack():
    assert sigma_engine.builtin_dir().resolve() == PACK.resolve()   # package data: a link to sigma/


def test_the_pack_is_installed_with_the_package():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "sigma_pack/*.yml" in setuptools["package-data"]["log_analyser_core.rules"]
    assert all(p.suffix == ".yml" for p in PACK.iterdir())   # the glob takes every file of the pack


def test_a_missing_pack_is_a_rules_error_naming_where_it_looked(monkeypatch, tmp_path):
    from log_analyser_core.errors import RulesError
    from log_analyser_core.rules import packs

    monkeypatch.setattr(packs.resources, "files", lambda package: tmp_path)
    with pytest.raises(RulesError, match=f"no \\*.yml files in {tmp_path}/sigma_pack"):
        sigma_engine.builtin_dir()


# --- the SigmaHQ webserver rules -----------------------------------------------------------------

def test_every_sigmahq_webserver_rule_loads_and_runs_or_is_reported(shared):
    folder = shared / "sigmahq-webserver"
    files = sigma_engine.rule_files([folder])
    assert len(files) == 86
    ruleset = sigma_engine.check([folder])
    assert ruleset.of_kind("error") == []
    unsupported = ruleset.of_kind("unsupported")
    assert len(ruleset.rules) + len(unsupported) == 86
    assert len(ruleset.rules) >= 80
    assert {p.message.split(" (")[0] for p in unsupported} <= {"field 'cs-username'", "field 'cs-content-type'"}
    assert all(p.path.endswith(".yml") and p.rule_id for p in unsupported)


SIGMAHQ_SAMPLES = [  # rule id, a line that must match, one that must not
    ("5513deaf-f49a-46c2-a6c8-3f111b5cb453",  # SQLi keywords, GET, not 404; '+' decodes to a space
     line("GET /item?id=1+UNION+SELECT+1,2"), line("GET /item?id=1+UNION+SELECT+1,2", status=404)),
    ("7cb02516-6d95-4ffc-8eee-162075e111ac",  # IIS tilde: contains, endswith, method and status lists
     line("GET /abcdef~1/a.aspx", status=200), line("GET /abcdef~1/a.aspx", status=404)),
    ("3007fec6-e761-4319-91af-e32e20ac43f5",  # CVE-2021-41773
     line("GET /cgi-bin/.%2e/.%2e/.%2e/etc/passwd"), line("GET /cgi-bin/.%2e/.%2e/.%2e/etc/passwd", status=403)),
    ("44b53b1c-e60f-4a7b-948e-3435a7918478",  # F5 BIG-IP: two selections ANDed
     line("GET /tmui/login.jsp/..;/tmui/locallb/workspace/fileRead.jsp"), line("GET /tmui/login.jsp")),
    ("412d55bc-7737-4d25-9542-5b396867ce55",  # JNDIExploit keywords over the raw line
     line("GET /Basic/Command/Base64/d2hvYW1p"), line("GET /Basic/docs")),
    ("19aa4f58-94ca-45ff-bc34-92e533c0994a",  # recon user agents, case-insensitive
     line("GET /", ua="sqlmap/1.8#stable"), line("GET /", ua="SQLMapper-Browser 2.0")),
    ("7745c2ea-24a5-4290-b680-04359cb84b35",  # path traversal, matched after URL-decoding
     line("GET /x?f=..%2f..%2f..%2fetc%2fpasswd"), line("GET /x?f=etc/passwd")),
    ("65354b83-a2ea-4ea6-8414-3ab38be0d409",  # XSS keywords, not 404
     line("GET /s?q=%3Csvg%20onload=alert(1)%3E"), line("POST /s?q=%3Csvg%20onload=alert(1)%3E")),
    ("5ea8faa8-db8b-45be-89b0-151b84c82702",  # log4j keywords and not filter
     line("GET /?x=${jndi:ldap://198.51.100.9/a}"), line("GET /?x=${jndi:ldap://w.nessus.org/nessus}")),
]


@pytest.fixture(scope="module")
def sigmahq(shared):
    return sigma_engine.load([shared / "sigmahq-webserver"])


@pytest.mark.parametrize(("rule_id", "hit", "miss"), SIGMAHQ_SAMPLES, ids=[s[0][:8] for s in SIGMAHQ_SAMPLES])
def test_sigmahq_sample_rules_hit_and_miss(sigmahq, tmp_path, rule_id, hit, miss):
    ruleset = sigma_engine.RuleSet((), tuple(r for r in sigmahq.rules if r.id == rule_id))
    assert len(ruleset.rules) == 1
    assert hit_lines(tmp_path, ruleset, [hit, miss]) == {rule_id: [1]}


def test_cs_host_reads_the_virtual_host_when_the_format_logs_it(sigmahq, tmp_path):
    rule_id = "a4e068b5-e27c-4f21-85b3-e69e5a4f7ce1"   # CVE-2023-4966: cs-host|re: '.{150}'
    ruleset = sigma_engine.RuleSet((), tuple(r for r in sigmahq.rules if r.id == rule_id))
    request = '203.0.113.7 - - [22/Nov/2026:10:00:00 +0000] "GET /oauth/idp/.well-known/openid-configuration HTTP/1.1"'
    lines = [f"{'a' * 160}.example {request} 200 10", f"gw.example {request} 200 10"]
    assert hit_lines(tmp_path, ruleset, lines, log_format='%v %h %l %u %t "%r" %>s %b') == {rule_id: [1]}


def test_fields_empty_on_every_line_are_noted(sigmahq, tmp_path):
    path = tmp_path / "access.log"
    path.write_text(line("GET /", referer="https://example.org/") + "\n")
    events = file_parser.parse([str(path)]).events
    notes = sigma_engine.unrecorded_fields(events, sigmahq)
    assert notes == ["1 Sigma rules read cs-host, which is empty on every line of this log"]


# --- engine semantics ----------------------------------------------------------------------------

def one_rule(tmp_path: Path, detection: str) -> sigma_engine.RuleSet:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    write_rule(folder, "rule.yml", detection)
    return sigma_engine.load([folder])


@pytest.mark.parametrize(("detection", "lines", "expected"), [
    ("selection:\n    cs-uri-stem|contains: '../'\ncondition: selection",            # decoded, double-decoded
     [line("GET /a/..%2fb"), line("GET /a/%252e%252e%252fb"), line("GET /a/b")], [1, 2]),
    ("selection:\n    cs-uri-stem|contains: '%2e%2e'\ncondition: selection",          # as sent, any case
     [line("GET /a/%2E%2E/b"), line("GET /a/../b")], [1]),
    ("selection:\n    cs-uri-query|contains|cased: 'Admin'\ncondition: selection",
     [line("GET /Admin"), line("GET /admin")], [1]),
    ("selection:\n    cs-uri-stem|re: '^/[A-Z]+$'\ncondition: selection",                # re is case-sensitive
     [line("GET /ABC"), line("GET /abc")], [1]),
    ("selection:\n    cs-uri-stem|re|i: '^/[A-Z]+$'\ncondition: selection",
     [line("GET /ABC"), line("GET /abc"), line("GET /a1")], [1, 2]),
    ("selection:\n    cs-uri-stem: '/a*c'\ncondition: selection",                       # inner wildcard
     [line("GET /abbbc"), line("GET /abbbcd")], [1]),
    ("selection:\n    c-ip|cidr: '198.51.100.0/24'\ncondition: selection",
     [line("GET /", ip="198.51.100.77"), line("GET /", ip="198.51.101.1"), line("GET /", ip="2001:db8::1")], [1]),
    ("selection:\n    c-ip|cidr: '2001:db8::/32'\ncondition: selection",
     [line("GET /", ip="2001:db8::1"), line("GET /", ip="2001:db9::1")], [1]),
    ("selection:\n    cs-referer: null\ncondition: selection",                         # '-' is no referer
     [line("GET /"), line("GET /", referer="https://example.org/")], [1]),
    ("selection:\n    cs-referer|contains: 'evil'\ncondition: not selection",          # NOT over a missing field
     [line("GET /"), line("GET /", referer="https://evil.example/")], [1]),
    ("sel_a:\n    cs-method: POST\nsel_b:\n    sc-status: 201\ncondition: all of them",
     [line("POST /c", status=201), line("POST /c", status=200), line("GET /c", status=201)], [1]),
    ("sel_a:\n    cs-method: POST\nsel_b:\n    sc-status|gte: 500\ncondition: 1 of sel_*",
     [line("POST /c"), line("GET /c", status=503), line("GET /c")], [1, 2]),
    ("keywords:\n    '|all':\n        - 'union'\n        - 'select'\ncondition: keywords",
     [line("GET /?q=union+select"), line("GET /?q=union")], [1]),
    ("selection:\n    cs-uri-query|base64offset|contains: 'whoami'\ncondition: selection",
     [line("GET /?c=d2hvYW1p"), line("GET /?c=whoami")], [1]),
    ("selection:\n    cs-referer|exists: true\ncondition: selection",
     [line("GET /", referer="https://example.org/"), line("GET /")], [1]),
    ("selection:\n    cs-uri-query|fieldref: cs-uri-stem\ncondition: selection",   # no query: URI == path
     [line("GET /a"), line("GET /a?b=1")], [1]),
    ("selection:\n    cs-uri-query|windash|contains: ' -exec '\ncondition: selection",
     [line("GET /?c=run+/exec+x"), line("GET /?c=run+-exec+x"), line("GET /?c=execute")], [1, 2]),
    ("selection:\n    cs-user-agent|contains|all:\n        - 'curl'\n        - '8.'\ncondition: selection",
     [line("GET /", ua="curl/8.5.0"), line("GET /", ua="curl/7.1")], [1]),
])
def test_engine_semantics(tmp_path, detection, lines, expected):
    ruleset = one_rule(tmp_path, detection)
    assert hit_lines(tmp_path, ruleset, lines).get(ruleset.rules[0].id, []) == expected


@pytest.mark.parametrize(("detection", "named"), [
    ("selection:\n    cs-username: admin\ncondition: selection", "field 'cs-username'"),
    ("selection:\n    cs-uri-stem|expand: '%path%'\ncondition: selection", "placeholders"),
])
def test_unsupported_features_are_named_and_skipped(tmp_path, detection, named):
    folder = tmp_path / "rules"
    folder.mkdir()
    write_rule(folder, "rule.yml", detection)
    ruleset = sigma_engine.load([folder])
    assert ruleset.rules == ()
    (problem,) = ruleset.of_kind("unsupported")
    assert named in problem.message and problem.rule_id == "11111111-1111-4111-8111-111111111111"
    assert any(named in note for note in ruleset.notes())


def test_a_regex_outside_the_re2_dialect_is_an_error_naming_the_rule(tmp_path):
    write_rule(tmp_path, "rule.yml", "selection:\n    cs-uri-stem|re: '(?<=a)b'\ncondition: selection")
    (error,) = sigma_engine.check([tmp_path]).of_kind("error")
    assert error.rule_id == "11111111-1111-4111-8111-111111111111" and "(?<=a)b" in error.message
    assert error.path.endswith("rule.yml")


def test_rules_of_other_logsources_are_counted_not_run(tmp_path):
    (tmp_path / "proc.yml").write_text(HEADER.format(title="T", id="22222222-2222-4222-8222-222222222222")
                                       .replace("category: webserver", "category: process_creation")
                                       + "detection:\n    sel:\n        Image: x\n    condition: sel\nlevel: low\n")
    ruleset = sigma_engine.check([tmp_path])
    assert ruleset.rules == () and ruleset.other_logsource == 1


def test_check_lists_every_error_with_file_and_rule_id(tmp_path):
    write_rule(tmp_path, "a_bad_condition.yml", "selection:\n    cs-method: GET\ncondition: selection and nothing\n",
               rule_id="33333333-3333-4333-8333-333333333333")
    write_rule(tmp_path, "b_bad_modifier.yml", "selection:\n    cs-method|nosuchmodifier: GET\ncondition: selection\n",
               rule_id="44444444-4444-4444-8444-444444444444")
    (tmp_path / "c_not_yaml.yml").write_text("title: [unclosed\n")
    write_rule(tmp_path, "d_good.yml", "selection:\n    cs-method: GET\ncondition: selection\n",
               rule_id="55555555-5555-4555-8555-555555555555")
    write_rule(tmp_path, "e_duplicate.yml", "selection:\n    cs-method: PUT\ncondition: selection\n",
               rule_id="55555555-5555-4555-8555-555555555555")
    errors = sigma_engine.check([tmp_path]).of_kind("error")
    where = {(Path(e.path).name, e.rule_id) for e in errors}
    assert ("a_bad_condition.yml", "33333333-3333-4333-8333-333333333333") in where
    assert ("b_bad_modifier.yml", "44444444-4444-4444-8444-444444444444") in where
    assert any(name == "c_not_yaml.yml" for name, _ in where)
    assert ("e_duplicate.yml", "55555555-5555-4555-8555-555555555555") in where
    with pytest.raises(sigma_engine.RulesError) as raised:
        sigma_engine.load([tmp_path])
    assert "3 more errors" in str(raised.value) and raised.value.exit_code == 4


def test_missing_rules_folder_is_a_rules_error(tmp_path):
    with pytest.raises(sigma_engine.RulesError, match="no such rules folder"):
        sigma_engine.check([tmp_path / "nope"])


@pytest.mark.parametrize("chunk_events", [1, 3, 7])
def test_matching_in_chunks_finds_what_one_pass_finds(tmp_path, chunk_events):
    """Requests repeated across chunks, and a keyword rule, which reads lines rebuilt per chunk."""
    write_rule(tmp_path, "keyword.yml", "keywords:\n    - 'union'\ncondition: keywords",
               rule_id="66666666-6666-4666-8666-666666666666")
    ruleset = sigma_engine.load([PACK, tmp_path])
    lines = [line("GET /.env", 404), line("GET /?q=union+select"), line("GET /"),
             line("GET /.git/config", 404, ip="198.51.100.9")] * 5
    path = tmp_path / "access.log"
    path.write_text("\n".join(lines) + "\n")
    events = file_parser.parse([str(path)]).events
    whole = sigma_engine.matches(events, ruleset)
    assert "66666666-6666-4666-8666-666666666666" in set(whole["rule"]) and whole["rule"].n_unique() > 2
    assert sigma_engine.matches(events, ruleset, chunk_events=chunk_events).equals(whole)


# --- evidence ------------------------------------------------------------------------------------

def test_evaluate_builds_evidence_per_client(tmp_path):
    lines = [line("GET /.env", 404, ip="198.51.100.9")] * 5 + [line("GET /.git/config", 404, ip="198.51.100.9"),
                                                               line("GET /", ip="203.0.113.5")]
    path = tmp_path / "access.log"
    path.write_text("\n".join(lines) + "\n")
    events = file_parser.parse([str(path)]).events
    found = sigma_engine.evaluate(events, sigma_engine.load([PACK]))
    assert set(found) == {"198.51.100.9"}
    dotenv, vcs = found["198.51.100.9"]
    assert (dotenv.kind, dotenv.count, dotenv.severity, dotenv.attack_type) == ("sigma", 5, Severity.MEDIUM,
                                                                               AttackType.BAD_BOT)
    assert dotenv.rule_id == "bfa5ae40-cae9-4c97-a7c9-b8740bbf5bd9" and "attack.t1552.001" in dotenv.tags
    assert [e.line_number for e in dotenv.examples] == [1, 2, 3]
    assert dotenv.examples[0].raw == lines[0] and dotenv.examples[0].source == str(path)
    assert vcs.count == 1 and vcs.examples[0].line_number == 6


@pytest.mark.parametrize(("title", "tags", "expected"), [
    ("SQL Injection Strings In URI", ["attack.t1190"], AttackType.SQLI),
    ("Log4Shell - JNDI Lookup in URI, User-Agent or Referer", [], AttackType.RCE),
    ("Some Exploit", ["attack.t1595.002"], AttackType.SCANNER),
    ("Some CVE", ["cve.2021-1234"], AttackType.RCE),
    ("Something", ["attack.discovery"], None),
])
def test_attack_type_from_title_or_tags(title, tags, expected):
    assert sigma_engine.attack_type_of(title, tags) == expected


# --- URL decoding --------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e, exclude_characters="+%"), max_size=40),
       st.integers(min_value=1, max_value=2))
def test_url_decode_undoes_single_and_double_percent_encoding(text, times):
    # text without '%': decoding twice cannot tell a double-encoded '%' from a single-encoded one
    encoded = text
    for _ in range(times):
        encoded = urllib.parse.quote(encoded, safe="")
    decoded = pl.select(sigma_compile.url_decode(pl.lit(encoded))).item()
    assert decoded == text


def test_url_decode_plus_overlong_and_non_ascii():
    values = ["a+b", "%c0%ae%c0%ae%c0%af", "%C3%A9t%C3%A9", "100%", "%zz"]
    decoded = pl.select(sigma_compile.url_decode(pl.lit(pl.Series(values)))).to_series().to_list()
    assert decoded == ["a b", "../", "%C3%A9t%C3%A9", "100%", "%zz"]
