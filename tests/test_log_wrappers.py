"""Logs as real deployments write them: collector envelopes (syslog, CRI, Docker), combined with a
lead or trailing fields of its own, unknown variables in custom formats, error-log and header
lines interleaved, and quoted fields that hold quotes."""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from conftest import DATA

import file_parser as fp
from log_analyser_core.errors import InputError

COMBINED = ('203.0.113.9 - - [10/Mar/2026:09:00:01 +0100] "GET /a?x=1 HTTP/1.1" 200 512 "https://ref.example/" '
            '"Mozilla/5.0 (X11)"')
OTHER = '2001:db8::7 - - [10/Mar/2026:09:00:02 +0100] "POST /login HTTP/1.1" 401 0 "-" "curl/8.5 \\"q\\""'


def parse_text(tmp_path, text: str, **kwargs) -> fp.ParsedLog:
    path = tmp_path / "access.log"
    path.write_text(text, encoding="utf-8")
    return fp.parse([str(path)], **kwargs)


def docker(line: str, stream: str = "stdout", end: str = "\n") -> str:
    return json.dumps({"log": line + end, "stream": stream, "time": "2026-03-10T08:00:01.123456789Z"})


WRAPPED = {
    "syslog": ["<150>Mar 10 08:00:01 web1 nginx[2869]: {}", "Mar 10 08:00:01 web1 nginx[2869]: {}"],
    "syslog-no-pri-no-host": ["Mar  9 08:00:01 nginx: {}"],
    "syslog-host-only": ["Mar 10 08:00:01 web1 {}"],
    "syslog-bare": ["Mar 10 08:00:01 {}"],
    "rfc5424": ['<165>1 2026-03-10T08:00:01.003Z web1 nginx 2869 access [origin ip="10.0.0.1" x="a\\"]b"] {}',
                "<165>1 2026-03-10T08:00:01Z web1 nginx - - - {}"],
    "cri": ["2026-03-10T08:00:01.123456789Z stdout F {}", "2026-03-10T08:00:01.5+00:00 stdout F {}"],
}


@pytest.mark.parametrize("kind", sorted(WRAPPED))
def test_wrapped_lines_parse_and_the_summary_names_the_wrapper(tmp_path, kind):
    envelopes = WRAPPED[kind]
    lines = [envelopes[i % len(envelopes)].format(line) for i, line in enumerate([COMBINED, OTHER] * 3)]
    result = parse_text(tmp_path, "\n".join(lines) + "\n")
    wrapper = "cri" if kind == "cri" else "syslog"
    assert result.stats.formats == {str(tmp_path / "access.log"): f"{wrapper} + combined"}
    assert result.stats.parsed_lines == 6 and result.stats.unparsed_lines == 0
    first, second = result.events.row(0, named=True), result.events.row(1, named=True)
    assert (first["client_ip"], first["path"], first["timestamp"]) == (
        "203.0.113.9", "/a", datetime(2026, 3, 10, 8, 0, 1, tzinfo=UTC))
    assert (second["client_ip"], second["user_agent"]) == ("2001:db8::7", 'curl/8.5 "q"')


def test_a_fixed_format_behind_a_wrapper(tmp_path):
    text = "\n".join(f"Mar 10 08:00:01 web1 nginx: {line}" for line in [COMBINED, OTHER]) + "\n"
    result = parse_text(tmp_path, text, format_name="combined")
    assert result.stats.parsed_lines == 2 and list(result.stats.formats.values()) == ["syslog + combined"]


def test_docker_json_file_with_stderr_error_lines_and_split_lines(tmp_path):
    error = "2026/03/10 08:00:01 [error] 31#31: *1 open() \"/x\" failed (2: No such file or directory)"
    lines = [docker(COMBINED), docker(OTHER), docker(error, stream="stderr"),
             docker("I0310 08:00:01.000000       7 controller.go:190] Configuration changes detected", "stderr"),
             docker(COMBINED[:40], end=""), docker(COMBINED[40:])]
    result = parse_text(tmp_path, "\n".join(lines) + "\n")
    assert list(result.stats.formats.values()) == ["docker + combined"]
    assert result.stats.parsed_lines == 2
    assert result.stats.not_access == {"error-log line": 2}
    # a line the collector split is counted as unparsed (it should have parsed), never hidden
    assert result.stats.unparsed_by_reason == {"partial line (split by docker)": 1,
                                               "does not match the combined format": 1}


def test_traefik_json_in_cri_envelope(tmp_path):
    line = (DATA / "formats" / "traefik-json.log").read_text(encoding="utf-8").splitlines()[0]
    result = parse_text(tmp_path, f"2026-03-10T09:00:01.1Z stdout F {line}\n" * 2)
    assert list(result.stats.formats.values()) == ["cri + traefik-json"]
    assert result.events["client_ip"].cast(str).to_list() == ["192.168.2.1"] * 2


def test_error_log_lines_blank_lines_and_headers_are_counted_apart(tmp_path):
    apache_error = ("[Tue Mar 10 09:00:01.123456 2026] [core:error] [pid 123:tid 456] [client 198.51.100.1:5555] "
                    "AH00126: Invalid URI in request")
    nginx_error = '2026/03/10 09:00:01 [warn] 12#12: *3 an upstream response is buffered, client: 203.0.113.9'
    # the error log is the majority: the brute force in the access lines must still be analysed
    text = "\n".join([COMBINED, "", "#Version: 1.0", apache_error, nginx_error, nginx_error, nginx_error, OTHER,
                      "garbage"]) + "\n"
    result = parse_text(tmp_path, text)
    stats = result.stats
    assert stats.parsed_lines == 2 and stats.total_lines == 9
    assert stats.not_access == {"error-log line": 4, "blank line": 1, "header line": 1}
    assert stats.unparsed_by_reason == {"does not match the combined format": 1} and stats.unparsed_lines == 1
    assert result.unparsed["line_number"].to_list() == [9]   # only the line that should have parsed is kept


def test_only_not_access_lines_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no log lines"):
        parse_text(tmp_path, "\n#comment\n2026/03/10 09:00:01 [error] 1#1: x\n")


def test_a_client_address_that_is_not_an_address_is_unparsed(tmp_path):
    text = "\n".join([COMBINED, COMBINED.replace("203.0.113.9", "evil.example"),
                      COMBINED.replace("203.0.113.9", "fe80::1%eth0;drop"),
                      COMBINED.replace("203.0.113.9", "192.0.2.1:8443"),
                      COMBINED.replace("203.0.113.9", "2001:DB8:0:0::1")]) + "\n"
    result = parse_text(tmp_path, text)
    assert result.events["client_ip"].cast(str).to_list() == ["203.0.113.9", "192.0.2.1", "2001:db8::1"]
    assert result.stats.unparsed_by_reason == {"client address is not an IP address": 2}


VARIANTS = [
    ("www.example.org {} 0.003 \"10.0.0.1, 10.0.0.2\"", "combined+vhost+request_time+forwarded_for",
     "www.example.org", 0.003),
    ("shop.example.org:8443 {} 0.250 0.249", "combined+vhost:port+request_time+upstream_time", "shop.example.org",
     0.25),
    ("{} 0.003 0.002 \"198.51.100.7\" 5f9c0b8e4c8d4a3b9e2f1a0b7c6d5e4f",
     "combined+request_time+upstream_time+forwarded_for+request_id", None, 0.003),
    ("{} \"198.51.100.7\" 0.010 0.009", "combined+forwarded_for+request_time+upstream_time", None, 0.01),
]


@pytest.mark.parametrize(("template", "name", "vhost", "seconds"), VARIANTS)
def test_combined_variants_are_detected_and_named(tmp_path, caplog, template, name, vhost, seconds):
    caplog.set_level(logging.INFO, logger="file_parser")
    result = parse_text(tmp_path, "\n".join(template.format(line) for line in [COMBINED, OTHER] * 2) + "\n")
    assert list(result.stats.formats.values()) == [name]
    assert result.stats.parsed_lines == 4
    first = result.events.row(0, named=True)
    assert (first["client_ip"], first["vhost"], first["request_time"]) == ("203.0.113.9", vhost, seconds)
    assert f"format {name}: read as log_format '" in caplog.text


def test_forwarded_for_from_a_detected_variant_gives_the_real_client(tmp_path):
    text = "\n".join(f'{line} "198.51.100.7, 10.0.0.1" 0.010 0.009' for line in [COMBINED] * 3) + "\n"
    result = parse_text(tmp_path, text, options=fp.InputOptions(real_ip_header="x-forwarded-for"))
    assert result.events["client_ip"].cast(str).unique().to_list() == ["198.51.100.7"]


def test_unknown_variables_are_opaque_fields_and_named_with_verbose(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="file_parser")
    log_format = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
                  '"$http_user_agent" $request_id "$ssl_protocol/$ssl_cipher" $upstream_response_time $geoip_country')
    text = (f'{COMBINED} 5f9c0b8e "TLSv1.3/TLS_AES_128_GCM_SHA256" 0.001, 0.002 : 0.003 DE\n'
            f'{OTHER} - "-/-" - \n')
    result = parse_text(tmp_path, text, log_format=log_format)
    assert result.stats.parsed_lines == 2
    assert "read over as opaque fields: $request_id, $geoip_country" in caplog.text
    apache = parse_text(tmp_path, f"{COMBINED} TLSv1.3 x\n",
                        log_format='%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %{SSL_PROTOCOL}x %{c}Z')
    assert apache.stats.parsed_lines == 1 and "read over as opaque fields: %{c}Z" in caplog.text


def test_quotes_inside_quoted_fields_never_hide_a_line(tmp_path):
    log_format = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D'
    hidden = COMBINED.replace("Mozilla/5.0 (X11)", 'x" "y" 200 1 "z') + " 1000"
    result = parse_text(tmp_path, f"{COMBINED} 2000\n{hidden}\n", log_format=log_format)
    assert result.stats.parsed_lines == 2 and result.stats.recovered == 1
    recovered = result.events.row(1, named=True)
    assert (recovered["client_ip"], recovered["status"], recovered["request_time"]) == ("203.0.113.9", 200, 0.001)
    assert "1 lines with quotes inside quoted fields read by a second pass" in result.stats.notes[0]


def test_csv_export_with_unescaped_quotes_is_recovered(tmp_path):
    text = ('ip,timestamp,request,status,user_agent\n'
            '192.0.2.1,2026-03-10T09:00:01Z,GET / HTTP/1.1,200,"plain"\n'
            '192.0.2.2,2026-03-10T09:00:02Z,GET /x HTTP/1.1,404,"sqlmap "quoted" agent"\n')
    result = parse_text(tmp_path, text)
    assert result.stats.parsed_lines == 2 and result.stats.recovered == 1
    assert result.events["status"].to_list() == [200, 404]
    assert result.stats.not_access == {"header line": 1}


def test_a_pod_log_that_is_mostly_its_error_log_still_reads_the_brute_force(tmp_path):
    access = [f'2026-03-10T09:01:{i:02d}.1Z stdout F 198.51.100.66 - - [10/Mar/2026:09:01:{i:02d} +0000] '
              f'"POST /wp-login.php HTTP/1.1" 401 0 "-" "python-requests/2.31"' for i in range(40)]
    errors = [f'2026-03-10T09:02:{i % 60:02d}.1Z stderr F 2026/03/10 09:02:{i % 60:02d} [error] 31#31: *{i} '
              'open() "/x" failed (2: No such file or directory), client: 198.51.100.66' for i in range(150)]
    result = parse_text(tmp_path, "\n".join(access + errors) + "\n")
    assert list(result.stats.formats.values()) == ["cri + combined"]
    assert result.stats.parsed_lines == 40 and result.stats.not_access == {"error-log line": 150}
    plain = parse_text(tmp_path, "\n".join(line.split(" ", 3)[3] for line in access + errors) + "\n")
    assert list(plain.stats.formats.values()) == ["combined"] and plain.stats.parsed_lines == 40


def test_cri_pieces_of_a_long_line_are_joined(tmp_path):
    agent = "A" * 300   # an attacker's long user agent: the runtime writes the line in pieces
    line = COMBINED.replace("Mozilla/5.0 (X11)", agent)
    pieces = [line[:100], line[100:250], line[250:]]
    text = "\n".join([f"2026-03-10T08:00:01Z stdout F {OTHER}",
                      *(f"2026-03-10T08:00:02Z stdout {'P' if i < 2 else 'F'} {p}" for i, p in enumerate(pieces)),
                      f"2026-03-10T08:00:03Z stdout F {OTHER}", f"2026-03-10T08:00:04Z stdout P {line[:50]}"]) + "\n"
    result = parse_text(tmp_path, text)
    assert result.events["line_number"].to_list() == [1, 2, 5]
    assert result.events.row(1, named=True)["user_agent"] == agent
    assert result.stats.not_access == {"piece joined to the line it continues": 2}
    assert result.stats.unparsed_by_reason == {"partial line (split by cri)": 1}   # its end never came


def test_epoch_times_out_of_range_are_unreadable_not_an_error():
    import polars as pl

    line = ('{"ClientIP":"192.0.2.1","ClientRequestMethod":"GET","ClientRequestURI":"/","EdgeResponseStatus":200,'
            '"EdgeStartTimestamp":17731773133202500000000}')
    squid = "99999999999999999999.123 5 192.0.2.1 TCP_MISS/200 10 GET http://example.com/ - DIRECT/1.2.3.4 -"
    for text, name in ((line, "cloudflare"), (squid, "squid")):
        good, bad = fp.parse_lines(pl.Series([text]), fp.preset(name))
        assert good.height == 0 and bad["reason"].to_list() == ["unreadable timestamp"]
