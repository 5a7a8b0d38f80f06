from __future__ import annotations

import polars as pl
import pytest

from log_analyser_core import verdict
from log_analyser_core.errors import ConfigError
from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.results import AttackType, Evidence, Severity

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def ev(attack: AttackType | None, severity: Severity = Severity.HIGH, kind: str = "rule", rule: str = "r",
       count: int = 3) -> Evidence:
    return Evidence(kind=kind, rule_id=rule, title=rule, severity=severity, attack_type=attack, count=count)


def test_anomaly_alone_never_reaches_high():
    judged = verdict.fuse(100.0, [])
    assert judged.score <= 50 and judged.attack_types == ()


def test_evidence_severity_sets_the_band_and_anomaly_adds_a_little():
    quiet = verdict.fuse(0.0, [ev(AttackType.SQLI)])
    loud = verdict.fuse(90.0, [ev(AttackType.SQLI)])
    assert 60 <= quiet.score < loud.score < 80
    assert verdict.fuse(0.0, [ev(AttackType.RCE, Severity.CRITICAL)]).score >= 80


def test_reputation_alone_never_makes_an_attacker():
    bad = Evidence(kind="reputation", rule_id="abuseipdb", title="reported 900 times", severity=Severity.CRITICAL,
                   attack_type=AttackType.BAD_BOT, count=900)
    alone = verdict.fuse(10.0, [bad])
    assert alone.score < 40 and alone.attack_types == ()
    with_behaviour = verdict.fuse(10.0, [bad, ev(AttackType.DIR_BRUTEFORCE, Severity.MEDIUM)])
    assert with_behaviour.score > verdict.fuse(10.0, [ev(AttackType.DIR_BRUTEFORCE, Severity.MEDIUM)]).score


def test_evidence_from_any_stage_counts():
    sigma = ev(AttackType.XSS, kind="sigma", rule="sigma-1234")
    judged = verdict.fuse(0.0, [sigma])
    assert judged.attack_types == ("xss",) and judged.score >= 60 and judged.evidence == (sigma,)


def test_scanner_identity_beats_payload_severity():
    judged = verdict.fuse(0.0, [ev(AttackType.RCE, Severity.CRITICAL), ev(AttackType.SCANNER, Severity.HIGH)])
    assert judged.attack_types[0] == "scanner"


def test_many_attack_families_mean_a_scanner():
    judged = verdict.fuse(0.0, [ev(AttackType.SQLI), ev(AttackType.XSS), ev(AttackType.PATH_TRAVERSAL)])
    assert judged.attack_types[0] == "scanner"
    assert judged.evidence[0].rule_id == "scanner-by-breadth"


def test_specific_types_before_flood():
    judged = verdict.fuse(0.0, [ev(AttackType.DOS), ev(AttackType.BRUTE_FORCE)])
    assert judged.attack_types == ("brute_force", "dos")


def test_a_flood_is_dos_whatever_its_uris_or_agents():
    # random 404 paths trip directory brute force, rotating agents user-agent rotation: the flood explains both
    judged = verdict.fuse(0.0, [ev(AttackType.DIR_BRUTEFORCE, Severity.MEDIUM), ev(AttackType.BAD_BOT, Severity.MEDIUM),
                                ev(AttackType.DOS, Severity.HIGH)])
    assert judged.attack_types[0] == "dos"
    # a discovery tool's own agent (high) or a payload explains the volume instead
    tool = verdict.fuse(0.0, [ev(AttackType.DIR_BRUTEFORCE, Severity.HIGH), ev(AttackType.DOS, Severity.HIGH)])
    assert tool.attack_types[0] == "dir_bruteforce"
    payload = verdict.fuse(0.0, [ev(AttackType.SQLI, Severity.HIGH), ev(AttackType.DOS, Severity.HIGH)])
    assert payload.attack_types[0] == "sqli"
    # a weak (medium) flood signal does not take over
    assert verdict.fuse(0.0, [ev(AttackType.BAD_BOT, Severity.MEDIUM), ev(AttackType.DOS, Severity.MEDIUM)]) \
        .attack_types[0] == "bad_bot"


def test_known_crawler_is_not_an_attacker_but_a_misbehaving_one_is_a_bad_bot():
    crawler = verdict.fuse(60.0, [ev(None, Severity.LOW)], crawler=True)
    assert crawler.attack_types == ("crawler",) and crawler.score <= verdict.CRAWLER_CAP
    fake = verdict.fuse(0.0, [ev(AttackType.DIR_BRUTEFORCE, Severity.MEDIUM)], crawler=True)
    assert fake.attack_types[0] == "bad_bot" and fake.score >= 40


@pytest.mark.parametrize(("ip", "internal"), [
    ("10.1.2.3", True), ("192.168.4.25", True), ("172.20.0.1", True), ("127.0.0.1", True), ("fd00::1", True),
    ("fe80::1", True), ("100.64.0.9", True), ("8.8.8.8", False), ("192.0.2.10", False), ("2001:db8::1", False),
    ("not-an-ip", False),
])
def test_internal(ip, internal):
    assert verdict.is_internal(ip) is internal


def test_crawler_clients_from_user_agents():
    events = pl.DataFrame({"client_ip": ["a", "a", "b", "c"],
                           "user_agent": [GOOGLEBOT, GOOGLEBOT, "Mozilla/5.0", None]})
    assert verdict.crawler_clients(events) == {"a"}


def test_allowlist_file(tmp_path):
    path = tmp_path / "allow.yaml"
    path.write_text("ips: [10.0.0.0/8, 203.0.113.9]\nuser_agents: ['^UptimeRobot/']\npaths: ['^/healthz$']\n")
    allow = verdict.load_allowlist(path)
    assert allow.network_for("10.9.9.9") == "10.0.0.0/8" and allow.network_for("203.0.113.9") == "203.0.113.9/32"
    assert allow.network_for("11.0.0.1") is None and allow.network_for("::1") is None


@pytest.mark.parametrize("text", ["ips: [nope]\n", "hosts: [a]\n", "paths: ['(']\n", "- a\n"])
def test_bad_allowlist_is_a_config_error(tmp_path, text):
    path = tmp_path / "allow.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="allowlist"):
        verdict.load_allowlist(path)


def test_allowlist_excludes_clients_and_requests_and_says_why(tmp_path):
    lines = [f'203.0.113.9 - - [10/Mar/2026:10:00:{i:02d} +0000] "GET /.env HTTP/1.1" 404 10 "-" "x"' for i in range(5)]
    lines += [f'198.51.100.4 - - [10/Mar/2026:10:01:{i:02d} +0000] "GET /.git/config HTTP/1.1" 404 10 "-" '
              f'"UptimeRobot/2.0"' for i in range(5)]
    lines += [f'198.51.100.{n} - - [10/Mar/2026:10:02:{n:02d} +0000] "GET / HTTP/1.1" 200 10 "-" "y"'
              for n in range(10, 14)]
    log = tmp_path / "a.log"
    log.write_text("\n".join(lines) + "\n")
    plain = {f.ip: f for f in analyse([str(log)]).findings}
    assert plain["203.0.113.9"].flagged and plain["198.51.100.4"].flagged
    allow = verdict.Allowlist(networks=(verdict.ipaddress.ip_network("203.0.113.0/24"),), user_agents=("^uptimerobot",))
    result = analyse([str(log)], Settings(allowlist=allow))
    findings = {f.ip: f for f in result.findings}
    assert not findings["203.0.113.9"].flagged and findings["203.0.113.9"].reasons[0].startswith("allowlisted")
    assert not findings["198.51.100.4"].flagged and not findings["198.51.100.4"].evidence
    assert result.summary.excluded == {"user agent matches '^uptimerobot' (requests)": 5,
                                       "ip in 203.0.113.0/24 (clients)": 1}



def test_anomaly_only_verdicts_keep_the_score_and_apply_networks_and_internal_marking():
    allow = verdict.Allowlist(networks=(verdict.ipaddress.ip_network("203.0.113.0/24"),), user_agents=("^x",))
    judged = verdict.anomaly_only(["203.0.113.9", "10.1.2.3", "198.51.100.4", "203.0.113.10"],
                                  [90.0, 75.5, 12.25, 3.0], allow)
    assert [v.score for v in judged.by_ip.values()] == [90.0, 75.5, 12.25, 3.0]   # not halved as in fuse()
    assert [v.allowlisted for v in judged.by_ip.values()] == ["203.0.113.0/24", None, None, "203.0.113.0/24"]
    assert [v.internal for v in judged.by_ip.values()] == [False, True, False, False]
    assert all(v.evidence == () and v.attack_types == () for v in judged.by_ip.values())
    assert judged.excluded == {"ip in 203.0.113.0/24 (clients)": 2}
