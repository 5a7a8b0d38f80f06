"""Blocklists, CrowdSec decisions and ECS JSON Lines."""
from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from dataclasses import replace

import polars as pl
import pytest
import reportdata

from log_analyser_core.report import exports
from log_analyser_core.results import AttackType, Severity


@pytest.fixture(scope="module")
def mixed(hostile_result):
    """The hostile result with IPv6, an IPv4-mapped IPv6 address and a crawler among the flagged."""
    flagged = [i for i, f in enumerate(hostile_result.findings) if f.flagged]
    findings = list(hostile_result.findings)
    findings[flagged[0]] = replace(findings[flagged[0]], ip="2001:db8::dead:beef", severity=Severity.CRITICAL)
    findings[flagged[1]] = replace(findings[flagged[1]], ip="::ffff:192.0.2.9", severity=Severity.HIGH)
    findings[flagged[2]] = replace(findings[flagged[2]], attack_types=(AttackType.CRAWLER.value,),
                                   severity=Severity.HIGH)
    for i in flagged[3:]:   # only the two above are high or worse
        findings[i] = replace(findings[i], severity=min(findings[i].severity, Severity.MEDIUM))
    return replace(hostile_result, findings=tuple(findings))


def addresses(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_blocked_keeps_valid_addresses_and_rejects_markup(mixed):
    kept, rejected = exports.blocked(mixed, Severity.LOW)
    assert rejected == [reportdata.MARKUP_IP]
    ips = [f.ip for f in kept]
    assert "192.0.2.9" in ips and "2001:db8::dead:beef" in ips          # mapped address folded
    assert all(ipaddress.ip_address(ip) for ip in ips)
    crawler = next(f.ip for f in mixed.findings if f.attack_types == ("crawler",))
    assert crawler not in ips
    assert [f.rank for f in kept] == sorted(f.rank for f in kept)


def test_severity_threshold(mixed):
    high = addresses(exports.render_blocklist(mixed, Severity.HIGH))
    assert sorted(high) == sorted(["2001:db8::dead:beef", "192.0.2.9"])
    everything = addresses(exports.render_blocklist(mixed, Severity.INFO))
    flagged = sum(f.flagged for f in mixed.findings)
    assert len(everything) == flagged - 2   # minus the markup 'address' and the crawler


def test_plain_list_header_says_what_was_left_out(mixed):
    text = exports.render_blocklist(mixed, Severity.LOW)
    assert "1 flagged client(s) left out" in text and reportdata.MARKUP_IP not in text


def test_nginx_deny_lines(mixed):
    lines = addresses(exports.render_nginx(mixed, Severity.LOW))
    assert lines and all(re.fullmatch(r"deny [0-9a-f.:]+;  # score [\d.]+ \w+ [\w,]+", line) for line in lines)


def test_apache_require_not_ip(mixed):
    text = exports.render_apache(mixed, Severity.LOW)
    body = addresses(text)
    assert body[0] == "<RequireAll>" and body[1].strip() == "Require all granted" and body[-1] == "</RequireAll>"
    rules = [line.strip() for line in body if "Require not ip" in line]
    assert len(rules) == len(exports.blocked(mixed, Severity.LOW)[0])
    assert all(re.fullmatch(r"Require not ip [0-9a-f.:]+", rule) for rule in rules)


def test_iptables_restore_files_split_by_family(mixed):
    v4 = exports.render_iptables(mixed, Severity.LOW)
    v6 = exports.render_ip6tables(mixed, Severity.LOW)
    for text, suffix, family in ((v4, "/32", 4), (v6, "/128", 6)):
        rules = addresses(text)
        assert rules[:3] == ["*filter", f":{exports.CHAIN} - [0:0]", f"-F {exports.CHAIN}"] and rules[-1] == "COMMIT"
        for rule in rules[3:-1]:
            match = re.fullmatch(rf"-A {exports.CHAIN} -s (\S+){suffix} -j DROP", rule)
            assert match and ipaddress.ip_address(match.group(1)).version == family
    assert "2001:db8::dead:beef/128" in v6 and "1 IPv6 address(es)" in v4


def test_nftables_sets(mixed):
    text = exports.render_nftables(mixed, Severity.LOW)
    assert "table inet log_analyser {" in text and text.count("{") == text.count("}")
    v4 = re.search(r"set blocklist_v4 \{\s+type ipv4_addr\s+elements = \{ ([^}]*) \}", text).group(1).split(", ")
    v6 = re.search(r"set blocklist_v6 \{\s+type ipv6_addr\s+elements = \{ ([^}]*) \}", text).group(1).split(", ")
    assert "192.0.2.9" in v4 and v6 == ["2001:db8::dead:beef"]
    assert "ip saddr @blocklist_v4 drop" in text and "ip6 saddr @blocklist_v6 drop" in text


def test_nftables_without_addresses_has_no_empty_element_list(small_result):
    unflagged = replace(small_result, findings=tuple(replace(f, flagged=False) for f in small_result.findings))
    text = exports.render_nftables(unflagged, Severity.CRITICAL)
    assert "elements" not in text and "type ipv4_addr" in text


def test_crowdsec_decisions(mixed):
    decisions = json.loads(exports.render_crowdsec(mixed, Severity.LOW))
    assert {d["value"] for d in decisions} == {f.ip for f in exports.blocked(mixed, Severity.LOW)[0]}
    for decision in decisions:
        assert decision["scope"] == "ip" and decision["type"] == "ban" and decision["duration"] == "24h"
        assert decision["origin"] == "log_analyser" and decision["reason"].startswith("log_analyser: score")


def test_ecs_json_lines(hostile_result):
    lines = exports.render_ecs(hostile_result).splitlines()
    flagged = [f for f in hostile_result.findings if f.flagged]
    assert len(lines) == len(flagged)
    docs = [json.loads(line) for line in lines]
    xss = next(d for d in docs if d["source"]["ip"] == reportdata.XSS_IP)
    finding = next(f for f in flagged if f.ip == reportdata.XSS_IP)
    assert xss["event"]["kind"] == "alert" and xss["event"]["severity"] == int(finding.severity)
    assert xss["http"]["request"]["method"] == "GET" and xss["url"]["path"] == "/search"
    agents = Counter(hostile_result.events.filter(pl.col("client_ip") == reportdata.XSS_IP)["user_agent"])
    assert xss["user_agent"]["original"] == min(agents, key=lambda agent: (-agents[agent], agent))
    assert xss["source"]["geo"]["country_iso_code"] and xss["rule"]["id"] == [finding.evidence[0].rule_id]
    assert xss["@timestamp"].endswith("Z") and xss["event"]["risk_score"] == finding.score
    assert xss["log_analyser"]["reputation"]["abuse_score"] == 87


def test_ecs_minimum_severity(hostile_result):
    assert len(exports.render_ecs(hostile_result, Severity.HIGH).splitlines()) == len(
        hostile_result.at_least(Severity.HIGH))
