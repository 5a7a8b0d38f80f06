"""Every preset: a hand-written golden sample parsed field by field, detected automatically,
and producing exactly the canonical schema."""
from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from conftest import DATA

import file_parser as fp
from log_analyser_core.errors import ConfigError, InputError
from log_analyser_core.parsing.events import EVENT_SCHEMA
from log_analyser_core.parsing.presets import PRESETS

FORMATS = DATA / "formats"
LONG = "/search/" + "a%2Fb" * 800
FIELDS = ("timestamp", "tz_offset_min", "client_ip", "method", "path", "query", "protocol", "status", "bytes",
          "referer", "user_agent", "vhost", "request_time")


def at(second: int, hour: int = 9, micro: int = 0) -> datetime:
    return datetime(2026, 3, 10, hour, 0, second, micro, tzinfo=UTC)


# preset -> one tuple of FIELDS per data line, written by hand from the sample files.
GOLDEN = {
    "combined": [
        (at(1, 8), 60, "203.0.113.9", "GET", "/a/b", "x=1&y=2", "HTTP/1.1", 200, 512, "https://ref.example/",
         "Mozilla/5.0 (X11)", None, None),
        (at(2, 8), 60, "2001:db8::7", "POST", "/login", None, "HTTP/2.0", 401, 0, None,
         'curl/8.5.0 "quoted" \\ back', None, None),
        (at(3, 14) .replace(minute=30), -330, "198.51.100.2", "GET", LONG, None, "HTTP/1.1", 404, 153, None,
         "Mozilla/5.0 (Linux; Android 14) Яндекс.Браузер/24.1 测试", None, None),
    ],
    "common": [
        (at(1), 0, "192.0.2.1", "GET", "/", None, "HTTP/1.0", 200, 2326, None, None, None, None),
        (at(1, 8), 120, "192.0.2.5", "GET", "/x", "y=%27", "HTTP/1.1", 304, 0, None, None, None, None),
        (at(2), 0, "2001:db8::1", None, None, None, None, 400, 0, None, None, None, None),
    ],
    "vcombined": [
        (at(1, 8), 60, "203.0.113.9", "GET", "/index.php", "id=1", "HTTP/1.1", 200, 512, None, "Mozilla/5.0",
         "www.example.org", None),
        (at(2, 8), 60, "2001:db8::2", "HEAD", "/", None, "HTTP/1.1", 301, 0, "https://shop.example.org/",
         "Wget/1.21", "shop.example.org", None),
    ],
    "vcommon": [
        (at(1, 8), 60, "203.0.113.9", "GET", "/wp-login.php", None, "HTTP/1.1", 404, 196, None, None,
         "www.example.org", None),
        (at(5, 8), 60, "198.51.100.4", "PUT", "/api/item/3", None, "HTTP/1.1", 204, 0, None, None,
         "blog.example.org", None),
    ],
    "main": [
        (at(1), 0, "10.0.0.2", "GET", "/api", "q=1", "HTTP/1.1", 200, 15, None, "Go-http-client/1.1", None, None),
        (at(2), 0, "10.0.0.3", "GET", "/health", None, "HTTP/1.1", 200, 2, None, "kube-probe/1.29", None, None),
        (at(3), 0, "10.0.0.2", "GET", "/x", None, "HTTP/1.1", 200, 1, None, "ua", None, None),
    ],
    "traefik": [
        (at(1), 0, "192.168.2.1", "GET", "/whoami", None, "HTTP/1.1", 200, 1234, None, "curl/7.64.0", None, 0.002),
        (at(2), 0, "2001:db8::9", "POST", "/api/login", None, "HTTP/2.0", 401, 17, "https://app.example/",
         "Mozilla/5.0 (Macintosh)", None, 0.153),
        # Traefik does not escape quotes: the user agent's own quotes are read by the second pass
        (at(3), 0, "203.0.113.66", "GET", "/admin", None, "HTTP/1.1", 403, 19, None, 'Mozilla/5.0 "hidden" x', None,
         0.004),
    ],
    "litespeed": [
        (at(1), 0, "203.0.113.9", "GET", "/wp-login.php", None, "HTTP/1.1", 200, 4519, None, "Mozilla/5.0 (X11)", None,
         None),
        (at(2), 0, "2001:db8::14", "GET", "/", "p=1", "HTTP/2", 301, 0, "https://example.com/", "Go-http-client/2.0",
         None, None),
    ],
    "ingress-nginx": [
        (at(1), 0, "192.168.1.1", "GET", "/api/items", "page=2", "HTTP/1.1", 200, 15, None, "curl/8.5.0", None, 0.003),
        # two upstreams tried: $upstream_addr, _response_length, _response_time and _status are lists
        (at(2), 0, "2001:db8::12", "POST", "/login", None, "HTTP/2.0", 502, 150, "https://app.example/", "Mozilla/5.0",
         None, 0.25),
    ],
    "npm": [
        (at(1), 0, "203.0.113.9", "GET", "/login", "next=%2F", None, 200, 612, None, "Mozilla/5.0 (X11)",
         "app.example.com", None),
        (at(2), 0, "2001:db8::13", "GET", "/.git/config", None, None, 404, 0, "https://evil.example/",
         "curl/8.5 \\x22x\\x22", "files.example.com", None),
    ],
    "haproxy": [
        (at(1), 0, "10.0.1.2", "GET", "/index.html", "a=1", "HTTP/1.1", 200, 2750, None, None, None, 0.109),
        # IPv6 client without brackets, captured headers holding braces, a bad request, logasap '+' times
        (at(2), 0, "2001:db8::c", None, None, None, None, 400, 187, None, None, None, 0.005),
        (at(3), 0, "198.51.100.7", "POST", "/login", None, "HTTP/1.1", 503, 212, None, None, None, 0.003),
    ],
    "haproxy-clf": [
        (at(1), 0, "10.0.1.2", "GET", "/index.html", None, "HTTP/1.1", 200, 2750, None, None, None, 0.109),
        (at(2), 0, "2001:db8::d", "GET", "/x", "id=1%27", "HTTP/1.1", 404, 0, None, None, None, 0.003),
    ],
    "envoy": [
        (at(1, micro=310000), 0, "10.0.35.28", "POST", "/api/v1/locations", None, "HTTP/2", 204, 0, None, "nsq2http",
         "locations", 0.226),
        # Envoy does not escape quotes either; the client is the leftmost X-Forwarded-For address
        (at(2), 0, "203.0.113.9", "GET", "/search", "q=1", "HTTP/1.1", 404, 19, None, 'Mozilla/5.0 "quoted" agent',
         "shop.example", 0.001),
    ],
    "envoy-json": [
        (at(1), 0, "203.0.113.9", "GET", "/productpage", "u=1", "HTTP/1.1", 200, 5293, None, "curl/8.5.0",
         "bookinfo.example", 0.035),
        (at(2, micro=500000), 0, "2001:db8::e", "POST", "/login", None, "HTTP/2", 403, 19, None,
         'python-requests/2.31 "x"', "bookinfo.example", 0.001),
    ],
    "traefik-json": [
        (at(1), 0, "192.168.2.1", "GET", "/whoami", "x=1", "HTTP/1.1", 200, 1234, None, "curl/7.64.0",
         "whoami.example", 0.002153),
        (at(2, micro=250000), 0, "2001:db8::9", "POST", "/api/login", None, "HTTP/2.0", 401, 17,
         "https://app.example/", 'Mozilla/5.0 "x"', "api.example", 0.153),
    ],
    "cloudflare": [
        (at(1), 0, "203.0.113.9", "GET", "/wp-login.php", "redirect_to=%2F", "HTTP/2", 200, 5120, None,
         "Mozilla/5.0 (Windows NT 10.0)", "www.example.com", 0.045),
        # EdgeStartTimestamp as unixnano (the older Logpush default)
        (at(2, micro=500000), 0, "2001:db8::f", "POST", "/xmlrpc.php", None, "HTTP/1.1", 403, 0,
         "https://evil.example/", None, "www.example.com", None),
    ],
    "gcp-lb": [
        (at(1, micro=123456), 0, "203.0.113.9", "GET", "/index.html", "lang=en", "HTTP/1.1", 200, 2048,
         "https://www.example.com/", "Mozilla/5.0 (X11; Linux x86_64)", "www.example.com", 0.012345),
        (at(2), 0, "2001:db8::10", "GET", "/.env", None, None, 404, 0, None, "zgrab/0.x", "34.120.0.1", 0.002),
    ],
    "azure-frontdoor": [
        (at(1, micro=123456), 0, "203.0.113.9", "GET", "/shop", "id=7", None, 200, 6542, None, "Mozilla/5.0 (iPhone)",
         "www.contoso.com", 0.034),
        (at(2), 0, "2001:db8::11", "POST", "/login", None, None, 403, 0, "https://www.contoso.com/", "sqlmap/1.8",
         "www.contoso.com", 1.5),
    ],
    "squid": [
        (at(1, micro=779000), 0, "192.168.0.224", "GET", "/index.html", "a=1", None, 200, 411, None, None,
         "www.example.com", None),
        (at(2, micro=1000), 0, "192.168.0.225", "CONNECT", "evil.example:443", None, None, 403, 3900, None, None,
         None, None),
    ],
    "awselb": [
        (at(1, micro=945958), 0, "192.168.131.39", "GET", "/shop", "item=2", "HTTP/1.1", 200, 29, None,
         "curl/7.38.0", "www.example.com", 0.001048),
        (at(2, micro=1), 0, "203.0.113.77", "GET", "/", None, "HTTP/1.1", 503, 0, None,
         "Mozilla/5.0 (Windows NT 10.0)", "www.example.com", None),
    ],
    "awsalb": [
        (at(1, micro=186641), 0, "192.168.131.39", "GET", "/login", "next=%2F", "HTTP/1.1", 200, 57, None,
         "curl/7.46.0", "www.example.com", 0.048),
        (at(2, micro=186641), 0, "203.0.113.5", "POST", "/v1/upload", None, "HTTP/1.1", 460, 0, None, None,
         "api.example.com", None),
    ],
    "awss3": [
        (at(1), 0, "192.0.2.3", "GET", "/DOC-EXAMPLE-BUCKET1", "versioning", "HTTP/1.1", 200, 113, None,
         "S3Console/0.4", "DOC-EXAMPLE-BUCKET1", 0.007),
        (at(2), 0, "2001:db8::5", "GET", "/DOC-EXAMPLE-BUCKET1/backup/db.sql", None, "HTTP/1.1", 403, 243,
         "https://evil.example/", "aws-cli/2.15 Python/3.11", "DOC-EXAMPLE-BUCKET1", 0.019),
        # bare '-' for the request-URI, referer and agent
        (at(3), 0, "192.0.2.9", None, None, None, None, 200, 113, None, None, "DOC-EXAMPLE-BUCKET1", 0.007),
    ],
    "w3c": [
        (at(1), 0, "203.0.113.9", "GET", "/default.aspx", "id=7", None, 200, None, "https://ref.example/",
         "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", None, 0.125),
        (at(2), 0, "2001:db8::3", "POST", "/owa/auth.owa", None, None, 401, None, None, "python-requests/2.31",
         None, 0.015),
    ],
    "cloudfront": [
        (at(1), 0, "192.0.2.100", "GET", "/index.html", None, "HTTP/2.0", 200, 392, None,
         "Mozilla/5.0 (Windows NT 10.0; Win64; x64) 测", "d111111abcdef8.cloudfront.net", 0.001),
        (at(2), 0, "2001:db8::4", "GET", "/.env", "a=1&b=%27", "HTTP/1.1", 403, 0, None, "zgrab/0.x",
         "d111111abcdef8.cloudfront.net", 0.25),
    ],
    "caddy": [
        (at(1, micro=524102), 0, "203.0.113.50", "GET", "/blog", "page=2", "HTTP/2.0", 200, 10900,
         "https://example.com/", 'Mozilla/5.0 "x" é', "example.com", 0.000929675),
        (at(2, micro=250000), 0, "2001:db8::8", "POST", "/xmlrpc.php", None, "HTTP/1.1", 405, 0, None,
         "python-requests/2.31", "example.com", 0.05),
    ],
    "json": [
        (at(1), 60, "203.0.113.9", "GET", "/a", "b=1", "HTTP/1.1", 200, 612, None, 'curl/8.0 "x"', "example.org",
         0.004),
        (at(2), 0, "2001:db8::6", "POST", "/wp-login.php", None, "HTTP/1.1", 403, 0, None, "Mozilla/5.0", None, 0.12),
    ],
    "csv": [
        (at(1), 0, "203.0.113.9", "GET", "/index.html", None, "HTTP/1.1", 200, 1043, None,
         'Mozilla/5.0 (X11, Linux) "quoted"', None, 0.012),
        (at(2), 60, "2001:db8::a", "POST", "/login", "next=%2F", "HTTP/1.1", 401, 0, None, "curl/8.5", None, 0.3),
        (at(3), 0, "198.51.100.3", "GET", "/.git/config", None, "HTTP/1.1", 404, 0, None, None, None, None),
    ],
}


def rows(result: fp.ParsedLog) -> list[tuple]:
    events = result.events.select(pl.col(name).cast(pl.String) if EVENT_SCHEMA[name] == pl.Categorical()
                                  else pl.col(name) for name in FIELDS)
    return [tuple(pytest.approx(v) if isinstance(v, float) else v for v in row) for row in events.iter_rows()]


def test_every_preset_has_a_golden_sample():
    assert set(GOLDEN) | {"nginx"} == set(PRESETS)


RECOVERED = {"traefik": 1, "envoy": 1}   # lines whose quoted fields hold unescaped quotes
SAME_AS = {"litespeed": "combined"}      # presets that auto-detection cannot tell from another


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_sample_parses_field_by_field(name):
    result = fp.parse([str(FORMATS / f"{name}.log")], format_name=name)
    assert rows(result) == GOLDEN[name]
    assert result.stats.unparsed_lines == 0 and result.stats.recovered == RECOVERED.get(name, 0)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_auto_detection_picks_the_preset(name):
    path = str(FORMATS / f"{name}.log")
    result = fp.parse([path])
    assert result.stats.formats == {path: SAME_AS.get(name, name)}
    assert rows(result) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_produces_exactly_the_event_schema(name):
    sample = FORMATS / f"{'combined' if name == 'nginx' else name}.log"
    result = fp.parse([str(sample)], format_name=name)
    assert result.events.schema == pl.Schema(EVENT_SCHEMA)
    assert result.unparsed.schema == pl.Schema(fp.UNPARSED_SCHEMA)
    assert result.events.height > 0


def test_a_wrong_format_loses_only_the_reported_lines(tmp_path):
    path = tmp_path / "mixed.log"
    combined = (FORMATS / "combined.log").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(combined * 3 + ['{"not": "a log line"}']) + "\n", encoding="utf-8")
    stats = fp.parse([str(path)]).stats
    assert stats.formats[str(path)] == "combined"
    assert stats.parsed_lines == 9 and stats.unparsed_by_reason == {"does not match the combined format": 1}


def test_w3c_fields_header_decides_the_columns(tmp_path):
    path = tmp_path / "u_ex260310.log"
    path.write_text("#Fields: time c-ip cs-method cs-uri-stem sc-status date\n"
                    "09:00:01 192.0.2.44 GET /x 500 2026-03-10\n", encoding="utf-8")
    event = fp.parse([str(path)]).events.row(0, named=True)
    assert (event["timestamp"], event["client_ip"], event["status"]) == (at(1), "192.0.2.44", 500)


# tests/data/formats/w3c_blocks.log: IIS (CRLF lines) restarted with more logging fields, so the file holds two
# header blocks whose #Fields: lists differ in length and column positions (c-ip is the 9th field, then the 10th).
W3C_BLOCKS = FORMATS / "w3c_blocks.log"
W3C_BLOCKS_GOLDEN = [
    (at(1), 0, "203.0.113.9", "GET", "/default.aspx", "id=7", None, 200, None, None, None, None, None),
    (at(2), 0, "2001:db8::3", "POST", "/owa/auth.owa", None, None, 401, None, None, None, None, None),
    (at(1, 9).replace(minute=5), 0, "2001:db8::3", "GET", "/search", "q=%27%20OR%201%3D1--&page=2", "HTTP/1.1", 500,
     5120, None, "sqlmap/1.8.2#stable (https://sqlmap.org)", "shop.example.org", 0.047),
    (at(2, 9).replace(minute=5), 0, "198.51.100.7", "GET", "/default.aspx", None, "HTTP/2", 304, 0,
     "https://shop.example.org/", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "shop.example.org", 0.003),
]
W3C_BLOCKS_UNPARSED = [(12, "does not match the w3c format")]   # the 8 header lines are counted apart


def assert_w3c_blocks(result: fp.ParsedLog) -> None:
    assert rows(result) == W3C_BLOCKS_GOLDEN
    assert result.events["line_number"].to_list() == [5, 6, 11, 13]
    assert result.unparsed.select("line_number", "reason").rows() == W3C_BLOCKS_UNPARSED
    assert (result.stats.total_lines, result.stats.parsed_lines, result.stats.unparsed_lines) == (13, 4, 1)
    assert result.stats.unparsed_by_reason == {"does not match the w3c format": 1}
    assert result.stats.not_access == {"header line": 8}


def test_w3c_each_block_is_read_with_its_own_fields_header():
    assert_w3c_blocks(fp.parse([str(W3C_BLOCKS)], format_name="w3c"))


def test_w3c_auto_detection_picks_w3c_for_a_file_with_several_header_blocks(caplog):
    caplog.set_level("INFO", logger="file_parser")
    result = fp.parse([str(W3C_BLOCKS)])
    assert result.stats.formats == {str(W3C_BLOCKS): "w3c"}
    assert_w3c_blocks(result)
    assert "format w3c (80% of sampled lines match)" in caplog.text   # 4 of 5 data lines, each by its own block


def test_w3c_header_in_force_carries_across_chunks(monkeypatch):
    whole = fp.iter_chunks
    monkeypatch.setattr(fp, "iter_chunks",
                        lambda source, progress=None, **kw: whole(source, progress, chunk_bytes=150, **kw))
    assert len(list(fp.iter_chunks(str(W3C_BLOCKS)))) >= 8   # the second header's block spans several chunks
    assert_w3c_blocks(fp.parse([str(W3C_BLOCKS)], format_name="w3c"))


def test_w3c_headers_are_per_file_and_lines_above_the_first_use_the_format_given(tmp_path):
    headerless = tmp_path / "excerpt.log"   # cut from a default IIS log: no header block of its own
    headerless.write_text("2026-03-10 09:00:03 10.0.0.5 GET /a - 443 - 192.0.2.7 Wget/1.21 - 404 0 2 9\n", "utf-8")
    sources = [str(W3C_BLOCKS), str(headerless)]
    result = fp.parse(sources, format_name="w3c")
    last = result.events.row(-1, named=True)
    assert (last["client_ip"], last["path"], last["status"], last["user_agent"], last["request_time"]) == (
        "192.0.2.7", "/a", 404, "Wget/1.21", pytest.approx(0.009))
    assert result.stats.parsed_lines == 5


@pytest.mark.parametrize("format_name", ["w3c", "auto"])
def test_w3c_header_without_client_address_skips_its_block_with_a_count(tmp_path, format_name, caplog):
    path = tmp_path / "u_ex260310.log"
    path.write_text("#Fields: date time c-ip cs-method cs-uri-stem sc-status\n"
                    "2026-03-10 09:00:01 192.0.2.44 GET /x 500\n"
                    "2026-03-10 09:00:01 192.0.2.45 GET /x 500\n"
                    "#Fields: date time cs-method cs-uri-stem sc-status\n"
                    "2026-03-10 09:00:02 GET /y 200\n"
                    "#Fields: date time c-ip cs-method cs-uri-stem sc-status\n"
                    "2026-03-10 09:00:03 192.0.2.46 GET /z 404\n", encoding="utf-8")
    result = fp.parse([str(path)], format_name=format_name)
    assert result.events["client_ip"].cast(str).to_list() == ["192.0.2.44", "192.0.2.45", "192.0.2.46"]
    assert result.stats.unparsed_by_reason == {fp.UNUSABLE_FIELDS: 1}
    assert result.stats.not_access == {"header line": 3}
    assert result.unparsed.filter(pl.col("reason") == fp.UNUSABLE_FIELDS)["line_number"].to_list() == [5]
    assert f"{path}:4: " in caplog.text and "names no c-ip or date field" in caplog.text


@pytest.mark.parametrize("first", [True, False])
def test_w3c_file_with_only_unusable_fields_lines_is_an_input_error(tmp_path, first):
    path = tmp_path / "u_ex260310.log"
    good = "#Fields: date time c-ip cs-method cs-uri-stem sc-status\n" if not first else ""
    path.write_text(good + "#Fields: date time cs-method cs-uri-stem sc-status\n"
                    "2026-03-10 09:00:02 GET /y 200\n2026-03-10 09:00:03 GET /z 200\n", encoding="utf-8")
    with pytest.raises(InputError, match="only 0 of 2 lines parse"):
        fp.parse([str(path)], format_name="w3c")


def test_csv_header_with_unknown_columns_and_no_address_is_an_error(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("when,who\n2026-03-10T09:00:01Z,x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no client address"):
        fp.parse([str(path)], format_name="csv")


def test_json_field_mapping_from_the_command_line(tmp_path):
    path = tmp_path / "app.log"
    path.write_text('{"peer": "192.0.2.8", "at": "2026-03-10T09:00:01Z", "req": {"line": "GET /q HTTP/1.1"},'
                    ' "code": 204}\n', encoding="utf-8")
    result = fp.parse([str(path)], json_fields="client_ip=peer,timestamp=at,request=req.line,status=code")
    event = result.events.row(0, named=True)
    assert (event["client_ip"], event["timestamp"], event["path"], event["status"]) == ("192.0.2.8", at(1), "/q", 204)
    with pytest.raises(ConfigError, match="bad JSON field mapping"):
        fp.parse([str(path)], json_fields="colour=peer")
