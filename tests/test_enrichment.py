"""AbuseIPDB lookups over real HTTP to a local stand-in, the cache around them, and offline geography."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from abuseipdb_server import RESET_EPOCH, TEST_KEY, closed_port_url

import enrichment
from enrichment import EnrichmentSettings, lookup_reputations, reputation_evidence
from log_analyser_core.enrich.cache import CacheStore
from log_analyser_core.errors import ConfigError
from log_analyser_core.results import Reputation, Severity

PUBLIC = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "185.220.101.1", "2001:4860:4860::8888"]


def settings(server_url: str, **overrides) -> EnrichmentSettings:
    # a generous timeout, so that a loaded machine does not turn an answer into a failure
    fast = {"api_key": TEST_KEY, "base_url": server_url, "timeout": 3.0, "retries": 2, "backoff": 0.01,
            "concurrency": 2}
    return EnrichmentSettings(**{**fast, **overrides})


@pytest.fixture
def cache(tmp_path):
    with CacheStore(tmp_path / "cache.sqlite3") as store:
        yield store


def test_a_200_answer_fills_every_field(abuseipdb):
    abuseipdb.scores["8.8.8.8"] = 97
    report = lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, max_age_days=30))
    assert report.reputations["8.8.8.8"] == Reputation(
        status="ok", abuse_score=97, total_reports=291, last_reported="2026-03-01T12:34:56+00:00",
        usage_type="Data Center/Web Hosting/Transit", isp="Example Hosting GmbH", domain="example.net", is_tor=True)
    request = abuseipdb.requests[0]
    assert request["path"] == "/api/v2/check"
    assert request["query"] == {"ipAddress": "8.8.8.8", "maxAgeInDays": "30"}
    assert request["headers"]["Key"] == TEST_KEY and request["headers"]["Accept"] == "application/json"
    assert report.lookups == 1 and report.stopped is None


def test_a_clean_address_scores_zero_only_when_the_service_says_so(abuseipdb):
    report = lookup_reputations(["1.1.1.1"], settings(abuseipdb.url))
    assert report.reputations["1.1.1.1"].status == "ok" and report.reputations["1.1.1.1"].abuse_score == 0


def test_private_reserved_and_documentation_addresses_are_never_sent(abuseipdb):
    local = ["10.0.0.1", "192.168.1.9", "127.0.0.1", "169.254.1.1", "192.0.2.10", "198.51.100.7", "203.0.113.5",
             "2001:db8::42", "::1", "fe80::1", "224.0.0.1", "0.0.0.0", "not-an-ip"]
    report = lookup_reputations([*local, "8.8.8.8"], settings(abuseipdb.url))
    assert abuseipdb.asked() == ["8.8.8.8"]
    assert all(report.reputations[ip].status == "skipped" for ip in local)


def test_a_rejected_key_stops_all_lookups(abuseipdb):
    bad = settings(abuseipdb.url, api_key="wrong-key", concurrency=1)
    report = lookup_reputations(PUBLIC, bad)
    assert len(abuseipdb.requests) == 1
    assert report.reputations[PUBLIC[0]].status == "unknown"
    assert all(report.reputations[ip].status == "skipped" for ip in PUBLIC[1:])
    assert "rejected the API key (HTTP 401)" in report.stopped and "wrong-key" not in report.stopped


def test_422_is_unknown_for_that_address_only(abuseipdb):
    abuseipdb.script["8.8.8.8"] = ["422"]
    report = lookup_reputations(["8.8.8.8", "1.1.1.1"], settings(abuseipdb.url))
    rep = report.reputations["8.8.8.8"]
    assert rep.status == "unknown" and rep.abuse_score is None and "HTTP 422" in rep.detail
    assert "max age in days" in rep.detail
    assert report.reputations["1.1.1.1"].status == "ok" and report.stopped is None


def test_429_stops_asking_and_reports_when_the_quota_resets(abuseipdb):
    abuseipdb.script["1.1.1.1"] = ["429"]
    report = lookup_reputations(PUBLIC, settings(abuseipdb.url, concurrency=1))
    assert abuseipdb.asked() == ["8.8.8.8", "1.1.1.1"]          # nothing after the 429
    assert report.reputations["8.8.8.8"].status == "ok"
    assert report.reputations["1.1.1.1"].status == "unknown" and report.reputations["1.1.1.1"].abuse_score is None
    assert {report.reputations[ip].status for ip in PUBLIC[2:]} == {"skipped"}
    assert report.quota_reset == datetime.fromtimestamp(RESET_EPOCH, UTC)
    assert report.stopped == "AbuseIPDB daily quota exhausted (HTTP 429; resets at 2027-01-15 08:00 UTC)"


def test_429_with_only_retry_after(abuseipdb, monkeypatch):
    headers = {"Retry-After": "3600"}
    reset = enrichment._reset_time(headers, now=1_000_000.0)
    assert reset == datetime.fromtimestamp(1_003_600, UTC)
    assert enrichment._reset_time({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 0) == \
        datetime(2026, 10, 21, 7, 28, tzinfo=UTC)
    assert enrichment._reset_time({"Retry-After": "soon"}, 0) is None


def test_5xx_is_retried_with_backoff(abuseipdb):
    abuseipdb.script["8.8.8.8"] = ["500", "500", "ok"]
    abuseipdb.scores["8.8.8.8"] = 40
    report = lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, retries=2))
    assert len(abuseipdb.requests) == 3 and report.reputations["8.8.8.8"].abuse_score == 40


def test_persistent_5xx_is_unknown_after_the_retries(abuseipdb):
    abuseipdb.script["8.8.8.8"] = ["500"]
    report = lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, retries=2))
    assert len(abuseipdb.requests) == 3
    assert report.reputations["8.8.8.8"] == Reputation(status="unknown", detail="HTTP 500: Server Error")


def test_a_slow_answer_times_out_and_is_retried(abuseipdb):
    abuseipdb.script["8.8.8.8"] = ["slow:4", "ok"]
    report = lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, timeout=1.0))
    assert report.reputations["8.8.8.8"].status == "ok" and len(abuseipdb.requests) == 2


def test_an_answer_that_never_comes_in_time_is_unknown(abuseipdb):
    abuseipdb.script["8.8.8.8"] = ["slow:3"]
    report = lookup_reputations(["8.8.8.8", "1.1.1.1"], settings(abuseipdb.url, timeout=1.0, retries=1))
    assert report.reputations["8.8.8.8"] == Reputation(status="unknown", detail="AbuseIPDB timed out")
    assert report.reputations["1.1.1.1"].status == "ok"


@pytest.mark.parametrize("step", ["badjson", "html"])
def test_an_unreadable_body_is_unknown_and_not_cached(abuseipdb, cache, step):
    abuseipdb.script["8.8.8.8"] = [step]
    report = lookup_reputations(["8.8.8.8"], settings(abuseipdb.url), cache)
    assert report.reputations["8.8.8.8"] == Reputation(status="unknown", detail="malformed answer from AbuseIPDB")
    assert cache.stats().entries == 0


def test_answers_are_cached_and_failures_are_not(abuseipdb, cache):
    abuseipdb.scores["8.8.8.8"] = 80
    abuseipdb.script["1.1.1.1"] = ["500"]
    first = lookup_reputations(["8.8.8.8", "1.1.1.1"], settings(abuseipdb.url, retries=0), cache)
    assert first.lookups == 1 and first.reputations["1.1.1.1"].status == "unknown"
    abuseipdb.requests.clear()
    abuseipdb.script["1.1.1.1"] = ["ok"]
    second = lookup_reputations(["8.8.8.8", "1.1.1.1"], settings(abuseipdb.url), cache)
    assert abuseipdb.asked() == ["1.1.1.1"]                      # the failure is asked again
    assert second.cache_hits == 1 and second.reputations["8.8.8.8"] == first.reputations["8.8.8.8"]


def test_refresh_asks_again_and_a_different_max_age_is_a_different_entry(abuseipdb, cache):
    lookup_reputations(["8.8.8.8"], settings(abuseipdb.url), cache)
    lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, refresh=True), cache)
    lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, max_age_days=7), cache)
    lookup_reputations(["8.8.8.8"], settings(abuseipdb.url, max_age_days=7), cache)
    assert len(abuseipdb.requests) == 3


def test_max_lookups_counts_network_requests_only(abuseipdb, cache):
    lookup_reputations(PUBLIC[:2], settings(abuseipdb.url), cache)
    report = lookup_reputations(PUBLIC, settings(abuseipdb.url, max_lookups=2), cache)
    assert report.cache_hits == 2 and report.lookups == 2
    assert report.reputations[PUBLIC[4]] == Reputation(status="skipped", detail="beyond --max-lookups 2")


def test_concurrency_is_bounded(abuseipdb):
    ips = [f"8.8.{i}.{i}" for i in range(12)]
    for ip in ips:
        abuseipdb.script[ip] = ["slow:0.1"]
    report = lookup_reputations(ips, settings(abuseipdb.url, concurrency=3))
    assert all(rep.status == "ok" for rep in report.reputations.values())
    assert 2 <= abuseipdb.max_in_flight <= 3


def test_no_network_at_all_gives_unknown_and_gives_up_quickly():
    ips = [f"8.8.{i}.1" for i in range(50)]
    report = lookup_reputations(ips, settings(closed_port_url(), concurrency=1))
    assert "could not be reached" in report.stopped
    statuses = [report.reputations[ip].status for ip in ips]
    assert statuses[:enrichment.UNREACHABLE_AFTER] == ["unknown"] * enrichment.UNREACHABLE_AFTER
    assert set(statuses) == {"unknown", "skipped"} and report.lookups == 0
    assert all(report.reputations[ip].abuse_score is None for ip in ips)


def test_no_key_sends_nothing(abuseipdb):
    report = lookup_reputations(PUBLIC, settings(abuseipdb.url, api_key=None))
    assert abuseipdb.requests == []
    assert {rep.detail for rep in report.reputations.values()} == {"no AbuseIPDB API key"}


def test_the_key_is_never_logged_cached_or_reported(abuseipdb, cache, tmp_path, caplog):
    abuseipdb.scores["8.8.8.8"] = 99
    abuseipdb.script["1.1.1.1"] = ["429"]
    with caplog.at_level(logging.DEBUG):
        report = lookup_reputations(["8.8.8.8", "1.1.1.1"], settings(abuseipdb.url, concurrency=1), cache)
    cache.close()
    assert TEST_KEY not in caplog.text and TEST_KEY not in repr(report) and TEST_KEY not in repr(settings("x"))
    for path in tmp_path.iterdir():
        assert TEST_KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(("score", "severity"), [(49, None), (50, Severity.MEDIUM), (74, Severity.MEDIUM),
                                                 (75, Severity.HIGH), (100, Severity.HIGH)])
def test_reputation_evidence_thresholds(score, severity):
    evidence = reputation_evidence(Reputation(status="ok", abuse_score=score, total_reports=12, is_tor=True), 40)
    assert (evidence.severity if evidence else None) == severity
    if evidence:
        assert evidence.kind == "reputation" and evidence.count == 40 and evidence.attack_type is None
        assert evidence.tags == ("abuseipdb", "tor") and f"{score}%" in evidence.title


def test_no_evidence_from_unknown_or_skipped():
    assert reputation_evidence(Reputation(status="unknown", detail="HTTP 500"), 10) is None
    assert reputation_evidence(Reputation(status="skipped"), 10) is None
    assert reputation_evidence(None, 10) is None


# -- the API key and base URL ---------------------------------------------------------------------

def test_key_precedence_file_then_environment_then_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("ABUSEIPDB_API_KEY=from-dotenv\n")
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert enrichment.resolve_api_key(None, {}, str(dotenv)) == "from-dotenv"
    assert enrichment.resolve_api_key(None, {"ABUSEIPDB_API_KEY": "from-env"}, str(dotenv)) == "from-env"
    assert enrichment.resolve_api_key(str(key_file), {"ABUSEIPDB_API_KEY": "from-env"}, str(dotenv)) == "from-file"


def test_dotenv_is_found_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("OTHER=1\nABUSEIPDB_API_KEY='quoted-key'\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert enrichment.resolve_api_key(None, {}) == "quoted-key"


def test_no_key_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert enrichment.resolve_api_key(None, {}) is None


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read"), ("", "empty"),
                                                  ("two words", "spaces or control")])
def test_bad_key_files_are_config_errors_that_do_not_show_the_key(tmp_path, content, message):
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        enrichment.resolve_api_key(str(path), {})
    assert "two words" not in str(caught.value)


def test_base_url_from_flag_environment_or_default():
    assert enrichment.resolve_base_url(None, {}) == enrichment.DEFAULT_BASE_URL
    assert enrichment.resolve_base_url(None, {"ABUSEIPDB_BASE_URL": "http://127.0.0.1:9/api/v2/"}) == \
        "http://127.0.0.1:9/api/v2"
    assert enrichment.resolve_base_url("http://localhost:1/v2", {"ABUSEIPDB_BASE_URL": "http://x"}) == \
        "http://localhost:1/v2"
    with pytest.raises(ConfigError, match="not an http"):
        enrichment.resolve_base_url("ftp://example.org", {})


# -- the stage as a whole, with an in-memory service ----------------------------------------------

class RecordingService:
    """A ReputationService without HTTP: scores by address, and the order it was asked in."""

    def __init__(self, scores: dict[str, int]) -> None:
        self.scores = scores
        self.asked: list[str] = []

    def check(self, ip: str) -> Reputation:
        self.asked.append(ip)
        return Reputation(status="ok", abuse_score=self.scores.get(ip, 0), total_reports=1)


@dataclass(frozen=True)
class Client:
    ip: str
    rank: int
    flagged: bool
    requests: int = 10


def test_enrich_asks_flagged_clients_first_then_by_rank():
    clients = [Client("8.8.8.8", 1, False), Client("1.1.1.1", 2, True), Client("9.9.9.9", 3, False),
               Client("10.0.0.1", 4, True), Client("185.220.101.1", 5, True)]
    service = RecordingService({"185.220.101.1": 90})
    found = enrichment.enrich(clients, EnrichmentSettings(api_key="k", concurrency=1, max_lookups=3),
                              cache=None, service=service)
    assert service.asked == ["1.1.1.1", "185.220.101.1", "8.8.8.8"]
    assert found.reputation["9.9.9.9"].detail == "beyond --max-lookups 3"
    assert found.reputation["10.0.0.1"].status == "skipped"
    assert list(found.evidence) == ["185.220.101.1"] and found.geo["1.1.1.1"].country == "AU"
    assert found.notes == ()


def test_enrich_works_with_an_in_memory_cache():
    class MemoryCache:
        def __init__(self) -> None:
            self.data: dict[tuple[str, str], object] = {}

        def get(self, namespace, key):
            return self.data.get((namespace, key))

        def put(self, namespace, key, value, ttl_seconds):
            self.data[(namespace, key)] = value

    cache, service = MemoryCache(), RecordingService({})
    settings_ = EnrichmentSettings(api_key="k", concurrency=1)
    lookup_reputations(["8.8.8.8"], settings_, cache, service)
    lookup_reputations(["8.8.8.8"], settings_, cache, service)
    assert service.asked == ["8.8.8.8"] and len(cache.data) == 1


def test_a_proxy_from_the_environment_is_used(abuseipdb, monkeypatch):
    # the stand-in accepts absolute-form requests, as a forwarding proxy receives them
    monkeypatch.setenv("http_proxy", abuseipdb.url.rsplit("/api/", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    report = lookup_reputations(["8.8.8.8"], settings("http://abuseipdb.invalid/api/v2"))
    assert report.reputations["8.8.8.8"].status == "ok" and abuseipdb.asked() == ["8.8.8.8"]
    monkeypatch.setenv("no_proxy", "abuseipdb.invalid")
    assert enrichment._proxy_for("http://abuseipdb.invalid/api/v2") is None
    assert enrichment._proxy_for("http://127.0.0.1:9/api/v2") is None


def test_answer_strings_are_clipped_before_reports_and_cache_see_them():
    import json

    body = json.dumps({"data": {"abuseConfidenceScore": 5, "isp": "I" * 50_000_000, "domain": "d" * 300}}).encode()
    reputation = enrichment.parse_check(body)
    assert reputation.isp == "I" * enrichment.TEXT_FIELD_CHARS and len(reputation.domain) == enrichment.TEXT_FIELD_CHARS
