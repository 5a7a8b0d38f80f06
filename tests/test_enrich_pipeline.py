"""--enrich end to end: the pipeline, every report format and the CLI against a local AbuseIPDB."""
from __future__ import annotations

import csv
import io
import json
import sqlite3

import jsonschema
import pytest
from abuseipdb_server import TEST_KEY, closed_port_url
from conftest import ROOT

import log_analyser
import reporting
from enrichment import EnrichmentSettings
from log_analyser_core.enrich.cache import CacheStore
from log_analyser_core.errors import ExitCode
from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.results import Severity

SAMPLE = str(ROOT / "examples" / "access.log")
FLAGGED = ["91.145.72.37", "151.94.124.1", "185.160.112.131"]   # the sample's planted attackers
BENIGN_BUT_REPORTED = "109.151.116.167"



def enrichment_notes(err: str) -> list[str]:
    """The run's note lines, but for the ones saying which anomaly detectors ran, that no CRS is installed
    and that no --model was given."""
    return [line for line in err.splitlines()
            if line.startswith("note:")
            and not line.startswith(("note: detectors:", "note: CRS:", "note: no --model:"))]

def enrich_settings(url: str, cache, **overrides) -> EnrichmentSettings:
    base = {"api_key": TEST_KEY, "base_url": url, "cache_path": cache, "timeout": 3.0, "retries": 1,
            "backoff": 0.01}
    return EnrichmentSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def plain():
    return analyse([SAMPLE])


@pytest.fixture
def enriched(abuseipdb, tmp_path):
    abuseipdb.scores.update({FLAGGED[0]: 100, FLAGGED[1]: 60, BENIGN_BUT_REPORTED: 95})
    abuseipdb.fields[FLAGGED[0]] = {"isp": "=cmd|' /C calc'!A0 \x1b[31mevil", "domain": "\u202etxt.exe"}
    abuseipdb.script[FLAGGED[2]] = ["500"]
    result = analyse([SAMPLE], Settings(enrichment=enrich_settings(abuseipdb.url, tmp_path / "c.sqlite3")))
    return result, abuseipdb


def by_ip(result):
    return {f.ip: f for f in result.findings}


def test_flagged_clients_are_looked_up_first(enriched):
    result, server = enriched
    asked = server.asked()
    # four requests in flight at once: arrival order may shuffle within a window of that size
    assert all(asked.index(ip) < 3 + 4 for ip in FLAGGED)
    assert len(set(asked)) == result.summary.clients


def test_reputation_corroborates_but_never_flags_on_its_own(enriched, plain):
    result, _ = enriched
    before, after = by_ip(plain), by_ip(result)
    for ip, finding in after.items():
        reputation = [e for e in finding.evidence if e.kind == "reputation"]
        behaviour = [e for e in finding.evidence if e.kind != "reputation"]
        if not reputation:
            assert (finding.score, finding.flagged) == (before[ip].score, before[ip].flagged)
        else:
            assert finding.score >= before[ip].score
        if finding.flagged and not before[ip].flagged:
            assert behaviour, ip    # only behaviour makes an attacker
    assert after[FLAGGED[0]].score > before[FLAGGED[0]].score or before[FLAGGED[0]].score == 100.0
    assert [f.rank for f in result.findings] == list(range(1, len(result.findings) + 1))


def test_findings_carry_reputation_geo_and_evidence(enriched):
    findings = by_ip(enriched[0])
    top = findings[FLAGGED[0]]
    assert top.reputation.abuse_score == 100 and top.reputation.is_tor and top.geo.country == "FI"
    assert [(e.kind, e.severity) for e in top.evidence if e.kind == "reputation"] == [("reputation", Severity.HIGH)]
    assert [e.severity for e in findings[FLAGGED[1]].evidence if e.kind == "reputation"] == [Severity.MEDIUM]
    assert findings[FLAGGED[2]].reputation.status == "unknown"
    assert not [e for e in findings[FLAGGED[2]].evidence if e.kind == "reputation"]
    benign = findings[BENIGN_BUT_REPORTED]
    assert benign.evidence and not benign.flagged    # reputation alone makes nobody an attacker


def test_summary_has_rollups_and_a_note_for_the_failure(enriched):
    summary = enriched[0].summary
    rollup = summary.enrichment
    assert rollup.status == "partial" and rollup.by_status == {"ok": summary.clients - 1, "unknown": 1}
    assert sum(c["clients"] for c in rollup.by_country) == summary.clients
    assert sum(a["clients"] for a in rollup.by_asn) == summary.clients
    assert sum(c["flagged"] for c in rollup.by_country) == summary.flagged
    assert rollup.by_country[0]["flagged"] >= rollup.by_country[-1]["flagged"]
    assert any("failed for 1 clients" in note for note in summary.notes)


def test_json_report_validates_and_contains_the_enrichment(enriched):
    document = json.loads(reporting.render_json(enriched[0], version="test"))
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    first = document["findings"][0]
    assert first["reputation"]["abuse_score"] == 100 and first["geo"]["country"] == "FI"
    assert document["summary"]["enrichment"]["by_country"][0]["clients"] >= 1
    assert TEST_KEY not in json.dumps(document)


def test_csv_has_reputation_and_geo_columns_and_no_formulas(enriched):
    rows = {row["ip"]: row for row in csv.DictReader(io.StringIO(reporting.render_csv(enriched[0])))}
    top = rows[FLAGGED[0]]
    assert top["abuse_score"] == "100" and top["country"] == "FI" and top["reputation_status"] == "ok"
    assert top["isp"].startswith("'=cmd")
    assert rows[FLAGGED[2]]["reputation_status"] == "unknown" and rows[FLAGGED[2]]["abuse_score"] == ""


def test_table_shows_abuse_and_origin_escaped(enriched):
    table = reporting.render_table(enriched[0], top=5)
    assert "abuse" in table.splitlines()[0] and "origin" in table.splitlines()[0]
    assert "100% tor" in table and "FI DNA Oyj" in table and "\x1b" not in table
    line = next(line for line in table.splitlines() if FLAGGED[2] in line)
    assert " ? " in line                      # unknown, not 0


def test_without_enrich_nothing_is_added(plain):
    assert plain.summary.enrichment is None and all(f.reputation is None and f.geo is None for f in plain.findings)
    assert "reputation" not in json.loads(reporting.render_json(plain))["findings"][0]


def test_no_network_gives_the_full_analysis_with_enrichment_unavailable(tmp_path, plain):
    settings = enrich_settings(closed_port_url(), tmp_path / "c.sqlite3")
    result = analyse([SAMPLE], Settings(enrichment=settings))
    assert [(f.ip, f.score, f.flagged) for f in result.findings] == [(f.ip, f.score, f.flagged) for f in plain.findings]
    assert result.summary.enrichment.status == "unavailable"
    assert {f.reputation.status for f in result.findings} == {"unknown", "skipped"}
    assert all(f.reputation.abuse_score is None for f in result.findings)
    assert sum(f.geo.country is not None for f in result.findings) >= 40      # geography needs no network
    assert any("could not be reached" in note for note in result.summary.notes)
    assert CacheStore(tmp_path / "c.sqlite3").stats().entries == 0


# -- the CLI ---------------------------------------------------------------------------------------

def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def keyed(monkeypatch, abuseipdb):
    monkeypatch.setenv("ABUSEIPDB_API_KEY", TEST_KEY)
    monkeypatch.setenv("ABUSEIPDB_BASE_URL", abuseipdb.url)
    return abuseipdb


def test_cli_enrich_uses_the_cache_on_the_second_run(capsys, keyed, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    report = tmp_path / "r.json"
    code, _, err = run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(cache), "-o", str(report))
    assert code == ExitCode.OK and not enrichment_notes(err)
    assert len(keyed.requests) == 43
    assert run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(cache), "-o", str(report))[0] == ExitCode.OK
    assert len(keyed.requests) == 43                          # all from the cache
    assert json.loads(report.read_text())["summary"]["enrichment"]["cache_hits"] == 43
    run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(cache), "--refresh", "--max-lookups", "5", "-o", str(report))
    assert len(keyed.requests) == 48
    with sqlite3.connect(cache) as raw:
        assert TEST_KEY not in "".join(str(row) for row in raw.execute("SELECT * FROM entries"))


def test_cli_enrich_table(capsys, keyed, tmp_path):
    code, out, err = run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(tmp_path / "c"), "--top", "3")
    assert code == ExitCode.OK and "origin" in out and "FI DNA Oyj" in out
    assert TEST_KEY not in out + err


def test_cli_without_a_key_prints_one_notice_and_succeeds(capsys, tmp_path, monkeypatch, abuseipdb):
    monkeypatch.chdir(tmp_path)                               # no .env here
    code, out, err = run(capsys, "-f", SAMPLE, "--enrich")
    notes = enrichment_notes(err)
    assert code == ExitCode.OK and len(notes) == 1 and "no API key" in notes[0]
    assert "FI DNA Oyj" in out and abuseipdb.requests == []


def test_cli_reads_the_key_from_a_file(capsys, tmp_path, monkeypatch, abuseipdb):
    key_file = tmp_path / "key"
    key_file.write_text(TEST_KEY + "\n")
    monkeypatch.setenv("ABUSEIPDB_BASE_URL", abuseipdb.url)
    code, _, err = run(capsys, "-f", SAMPLE, "--enrich", "--api-key-file", str(key_file), "--cache",
                       str(tmp_path / "c"), "--max-lookups", "3", "--abuseipdb-url", abuseipdb.url)
    assert code == ExitCode.OK and len(abuseipdb.requests) == 3 and not enrichment_notes(err)


def test_cli_with_no_network_succeeds_and_says_so(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ABUSEIPDB_API_KEY", TEST_KEY)
    code, out, err = run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(tmp_path / "c"),
                         "--abuseipdb-url", closed_port_url())
    assert code == ExitCode.OK and "critical" in out and "could not be reached" in err
    assert "Traceback" not in err and "urllib3" not in err


def test_cli_rejected_key_is_a_note_not_a_failure(capsys, tmp_path, monkeypatch, abuseipdb):
    monkeypatch.setenv("ABUSEIPDB_API_KEY", "not-the-key")
    code, _, err = run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(tmp_path / "c"),
                       "--abuseipdb-url", abuseipdb.url)
    assert code == ExitCode.OK and "rejected the API key (HTTP 401)" in err and "not-the-key" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-age-days", "0"], "--max-age-days"), (["--max-lookups", "-1"], "--max-lookups"),
    (["--geoip-db", "/nonexistent.mmdb"], "GeoIP database not found"),
    (["--abuseipdb-url", "file:///etc/passwd"], "not an http"),
    (["--api-key-file", "/nonexistent/key"], "cannot read the API key file"),
])
def test_cli_bad_enrichment_settings_are_one_line_usage_errors(capsys, argv, message):
    code, _, err = run(capsys, "-f", SAMPLE, "--enrich", *argv)
    lines = [line for line in err.splitlines() if line]
    assert code == ExitCode.USAGE and len(lines) == 1 and message in lines[0], err


def test_cli_bad_cache_ttl_is_a_usage_error(capsys):
    code, _, err = run(capsys, "-f", SAMPLE, "--enrich", "--cache-ttl", "forever")
    assert code == ExitCode.USAGE and "not a duration" in err


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("30m", 1800), ("24h", 86400), ("7d", 604800),
                                               ("0", 0)])
def test_durations(text, seconds):
    assert log_analyser._duration(text) == seconds


def test_cache_subcommand_stats_and_clear(capsys, tmp_path):
    path = tmp_path / "c.sqlite3"
    assert "no cache file yet" in run(capsys, "cache", "stats", "--cache", str(path))[1]
    with CacheStore(path) as store:
        for i in range(3):
            store.put("abuseipdb", str(i), i, 60)
        store.put("llm", "x", 1, 60)
    code, out, _ = run(capsys, "cache", "stats", "--cache", str(path))
    assert code == ExitCode.OK and "abuseipdb" in out and "total" in out and " 4" in out
    code, out, _ = run(capsys, "cache", "clear", "--cache", str(path), "--namespace", "llm")
    assert code == ExitCode.OK and "removed 1 entries" in out
    assert "removed 3 entries" in run(capsys, "cache", "clear", "--cache", str(path))[1]


def test_cache_subcommand_uses_the_user_cache_dir_by_default(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code, out, _ = run(capsys, "cache", "stats")
    assert code == ExitCode.OK and str(tmp_path / "log_analyser" / "cache.sqlite3") in out
    assert run(capsys, "cache", "bogus")[0] == ExitCode.USAGE


def test_version_names_the_geoip_data_date(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == ExitCode.OK and out.startswith("log_analyser ")
    assert "geoip2fast" in out and "GeoLite2 data of 20" in out


def test_help_documents_the_enrichment_options(capsys):
    out = run(capsys, "--help")[1]
    for option in ("--enrich", "--api-key-file", "--abuseipdb-url", "--max-age-days", "--max-lookups", "--cache",
                   "--cache-ttl", "--refresh", "--geoip-db", "ABUSEIPDB_API_KEY", "cache stats"):
        assert option in out, option


def test_cli_quota_exhausted_says_when_it_resets(capsys, keyed, tmp_path):
    keyed.script[FLAGGED[1]] = ["429"]
    code, out, err = run(capsys, "-f", SAMPLE, "--enrich", "--cache", str(tmp_path / "c"), "-o",
                         str(tmp_path / "r.json"))
    notes = enrichment_notes(err)
    assert code == ExitCode.OK and len(notes) == 1
    assert "quota exhausted (HTTP 429; resets at 2027-01-15 08:00 UTC): no reputation for" in notes[0]
    enrichment_ = json.loads((tmp_path / "r.json").read_text())["summary"]["enrichment"]
    assert enrichment_["quota_reset"] == "2027-01-15T08:00:00Z" and enrichment_["status"] == "partial"
    assert len(keyed.requests) < 10                            # stopped asking
