from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import threading
from datetime import UTC, datetime

import polars as pl
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

import file_parser as fp
from log_analyser_core.errors import ConfigError, InputError
from log_analyser_core.parsing.reader import read_lines

COMBINED = ('203.0.113.9 - - [10/Mar/2026:09:00:01 +0100] "GET /a/b?x=1&y=2 HTTP/1.1" 200 512 '
            '"https://ref.example/" "Mozilla/5.0 (X11)"')


def parse_text(tmp_path, text: str, **kwargs) -> fp.ParsedLog:
    path = tmp_path / "access.log"
    path.write_text(text, encoding="utf-8")
    return fp.parse([str(path)], **kwargs)


@pytest.mark.parametrize("name", ["combined", "common", "nginx"])
def test_every_preset_produces_exactly_the_event_schema(tmp_path, name):
    result = parse_text(tmp_path, COMBINED + "\n" if name != "common" else COMBINED.rsplit(' "h', 1)[0][:-22] + "\n",
                        format_name=name, max_unparsed_ratio=1.0)
    assert result.events.schema == pl.Schema(fp.EVENT_SCHEMA)
    assert result.unparsed.schema == pl.Schema(fp.UNPARSED_SCHEMA)


def test_combined_line_fields(tmp_path):
    event = parse_text(tmp_path, COMBINED + "\n").events.row(0, named=True)
    assert event["timestamp"] == datetime(2026, 3, 10, 8, 0, 1, tzinfo=UTC)
    assert event["tz_offset_min"] == 60
    assert (event["client_ip"], event["method"]) == ("203.0.113.9", "GET")
    assert (event["path"], event["query"]) == ("/a/b", "x=1&y=2")
    assert (event["protocol"], event["status"], event["bytes"]) == ("HTTP/1.1", 200, 512)
    assert (event["referer"], event["user_agent"]) == ("https://ref.example/", "Mozilla/5.0 (X11)")
    assert event["request_time"] is None and event["line_number"] == 1 and event["request"] is None
    assert event["peer_ip"] == event["client_ip"]
    assert read_lines(event["source"], [1]) == {1: COMBINED}  # raw text is fetched back, not stored


def test_awkward_lines_parse_as_events(tmp_path):
    result = fp.parse([str(DATA / "small.log")])
    events = {(e["line_number"]): e for e in result.events.iter_rows(named=True)}
    assert events[6]["client_ip"] == "2001:db8::42"
    assert events[7]["client_ip"] == "192.0.2.10"  # IPv4-mapped IPv6 folded to IPv4
    assert events[5]["bytes"] == 0 and events[5]["status"] == 304  # '-' bytes
    assert events[9]["user_agent"] == '=HYPERLINK("http://evil.example")'  # escaped quotes undone
    assert events[17]["method"] is None and events[17]["request"].startswith("\\x16\\x03\\x01")  # TLS junk
    assert events[18]["request"] == "" and events[18]["status"] == 400
    assert result.stats.total_lines == 23 and result.stats.parsed_lines == 22
    assert result.unparsed.row(0, named=True)["line_number"] == 21


def test_nginx_trailing_request_time_and_apache_microseconds(tmp_path):
    text = (COMBINED + " 0.250\n") + (COMBINED + " 125000\n")
    times = parse_text(tmp_path, text).events["request_time"].to_list()
    assert times == [0.25, 0.125]


def test_timestamp_without_offset_takes_the_given_zone(tmp_path):
    line = '192.0.2.1 - - [25/Oct/2025:08:13:47 ] "GET / HTTP/1.1" 200 10\n'
    utc = parse_text(tmp_path, line).events.row(0, named=True)
    berlin = parse_text(tmp_path, line, tz="Europe/Berlin").events.row(0, named=True)
    assert utc["timestamp"] == datetime(2025, 10, 25, 8, 13, 47, tzinfo=UTC)
    assert berlin["timestamp"] == datetime(2025, 10, 25, 6, 13, 47, tzinfo=UTC)
    assert berlin["tz_offset_min"] == 120


def test_lines_wrapped_in_quotes_are_unwrapped(tmp_path):
    result = parse_text(tmp_path, f'"{COMBINED}"\n' * 3)
    assert result.stats.parsed_lines == 3
    assert result.events["user_agent"].to_list() == ["Mozilla/5.0 (X11)"] * 3


def test_unparsed_lines_are_counted_with_reasons(tmp_path):
    bad_time = COMBINED.replace("10/Mar/2026", "99/Foo/2026")
    result = parse_text(tmp_path, f"{COMBINED}\n{COMBINED}\n\ngarbage\n{bad_time}\n", max_unparsed_ratio=0.9)
    assert result.stats.parsed_lines == 2 and result.stats.total_lines == 5
    assert result.stats.unparsed_by_reason == {"does not match the combined format": 1, "unreadable timestamp": 1}
    assert result.stats.not_access == {"blank line": 1} and result.stats.unparsed_lines == 2
    assert result.unparsed["line_number"].to_list() == [4, 5]   # a blank line is counted, not kept


def test_mostly_unparsed_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="only 1 of 3 lines parse") as error:
        parse_text(tmp_path, f"{COMBINED}\nnope\nnope\n")
    assert "--format" in str(error.value)


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_compressed_inputs_are_read_transparently(tmp_path, opener):
    path = tmp_path / "access.log.x"
    with opener(path, "wt") as handle:
        handle.write(f"{COMBINED}\n" * 10)
    assert fp.parse([str(path)]).stats.parsed_lines == 10


def test_truncated_gzip_is_an_input_error(tmp_path):
    data = gzip.compress(f"{COMBINED}\n".encode() * 2000)
    path = tmp_path / "cut.log.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        fp.parse([str(path)])


def test_globs_and_several_files_keep_per_file_line_numbers(tmp_path):
    for name in ("access.log", "access.log.1"):
        (tmp_path / name).write_text(f"{COMBINED}\n{COMBINED}\n")
    result = fp.parse([str(tmp_path / "access.log*")])
    assert result.events["line_number"].to_list() == [1, 2, 1, 2]
    assert result.events["source"].n_unique() == 2


def test_glob_matching_nothing_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no file matches"):
        fp.parse([str(tmp_path / "*.nothing")])
    with pytest.raises(InputError, match="no such file"):
        fp.parse([str(tmp_path / "missing.log")])


def test_stdin_is_read(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{COMBINED}\n{COMBINED}".encode())))
    assert fp.parse(["-"]).stats.parsed_lines == 2


def test_invalid_utf8_is_kept_visible(tmp_path):
    path = tmp_path / "bytes.log"
    path.write_bytes(COMBINED.replace("X11", "X11 \xff\xfe").encode("latin-1") + b"\n")
    assert fp.parse([str(path)]).events["user_agent"][0] == "Mozilla/5.0 (X11 \\xff\\xfe)"


def test_chunk_boundaries_do_not_split_lines(tmp_path):
    path = tmp_path / "access.log"
    expected = [COMBINED.replace("/a/b", f"/p{i}") for i in range(500)]
    path.write_text("\n".join(expected) + "\n")
    chunks = list(fp.iter_chunks(str(path), chunk_bytes=1000))
    assert len(chunks) > 50 and pl.concat(chunks).to_list() == expected


def test_empty_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="empty"):
        parse_text(tmp_path, "")


def test_unknown_preset_and_unknown_directive_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown log format 'apache2'"):
        parse_text(tmp_path, COMBINED, format_name="apache2")
    with pytest.raises(ConfigError, match="%Z"):
        parse_text(tmp_path, COMBINED, log_format='%h %Z %t "%r" %>s %b')


def test_custom_apache_format_with_duration(tmp_path):
    line = '192.0.2.4 - - [10/Mar/2026:09:00:01 +0000] "GET /x HTTP/1.1" 200 5 "-" "ua" 1500\n'
    result = parse_text(tmp_path, line, log_format='%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D')
    assert result.events["request_time"][0] == pytest.approx(0.0015)


@pytest.mark.parametrize("relative", [
    "public/elastic_examples/apache_logs", "public/nielsbasjes_yauaa/hackers-access.log",
    "public/ocatak_apache-http-logs/acunetix.txt", "public/ocatak_apache-http-logs/netsparker.txt",
    "public/ocatak_apache-http-logs/w3af.txt", "public/slrbl_webhawk/2021_all.log",
    "public/slrbl_webhawk/access-2018-12-15.log", "public/slrbl_webhawk/access.log.2021-10-22",
    "public/slrbl_webhawk/access.log.2022-12-22", "seeds/Apache-Log-Analyser/access.log",
    "seeds/Apache-Log-Analyser/apache.txt", "seeds/Apache-Log-Analyser/test_access.log",
    "seeds/cybersecurity-log-analyzer/apache_sample.log",
])
def test_real_logs_parse_at_least_999_per_mille(shared, relative):
    stats = fp.parse([str(shared / relative)]).stats
    assert stats.parsed_lines / stats.total_lines >= 0.999, stats.unparsed_by_reason


# --- property test: render a combined line from generated fields, parse it back -----------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
_path = st.from_regex(r"/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,30}", fullmatch=True)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.ip_addresses(v=6).map(lambda a: a.compressed).filter(lambda s: not s.startswith("::ffff:"))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@settings(max_examples=150, deadline=None, derandomize=True)
@given(ip=st.one_of(_ipv4, _ipv6), method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "PROPFIND"]),
       path=_path, query=st.one_of(st.none(), st.from_regex(r"[a-z0-9=&%+]{1,20}", fullmatch=True)),
       status=st.integers(100, 599), size=st.one_of(st.none(), st.integers(0, 10**12)),
       referer=_text, agent=_text,
       moment=st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2090, 1, 1)),
       offset=st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15))
def test_combined_round_trip(ip, method, path, query, status, size, referer, agent, moment, offset):
    sign = "+" if offset >= 0 else "-"
    stamp = moment.strftime("%d/%b/%Y:%H:%M:%S") + f" {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    target = path + (f"?{query}" if query else "")
    line = (f'{ip} - - [{stamp}] "{method} {target} HTTP/1.1" {status} {"-" if size is None else size} '
            f'"{_escape(referer) or "-"}" "{_escape(agent) or "-"}"')
    events, bad = fp.parse_lines(pl.Series([line]), fp.preset("combined"))
    assert bad.height == 0, line
    event = events.row(0, named=True)
    assert event["client_ip"] == ip and event["method"] == method and event["path"] == path
    assert event["query"] == query and event["status"] == status and event["bytes"] == (size or 0)
    assert event["referer"] == (referer or None) if referer != "-" else event["referer"] is None
    assert event["user_agent"] == (agent or None) if agent != "-" else event["user_agent"] is None
    assert event["tz_offset_min"] == offset
    expected = moment.replace(microsecond=0) - __import__("datetime").timedelta(minutes=offset)
    assert event["timestamp"].replace(tzinfo=None) == expected


def test_read_ahead_keeps_the_order_and_raises_a_reading_error_where_it_happened():
    def chunks():
        yield pl.Series(["a"])
        yield pl.Series(["b"])
        raise InputError("cannot read: truncated", path="x.gz")

    seen = []
    with pytest.raises(InputError, match="truncated"):
        for chunk in fp.read_ahead(chunks()):
            seen.append(chunk.to_list())
    assert seen == [["a"], ["b"]]


def test_read_ahead_stops_reading_when_the_consumer_stops():
    produced = []

    def chunks():
        for i in range(100):
            produced.append(i)
            yield pl.Series([i])

    reader = fp.read_ahead(chunks())
    assert next(reader).to_list() == [0]
    reader.close()
    assert len(produced) <= 4   # one being parsed, one queued, one in the reader's hands: not all 100


def test_a_named_pipe_is_read_like_a_file_with_progress_on(tmp_path):
    # what the shell passes for `log_analyser -f <(zcat access.log.gz)`: /dev/fd/N, a pipe that cannot seek
    read_end, write_end = os.pipe()
    text = "".join(f"{COMBINED}\n" for _ in range(50)).encode()
    writer = threading.Thread(target=lambda: (os.write(write_end, text), os.close(write_end)))
    writer.start()
    seen: list[int] = []
    try:
        result = fp.parse([f"/dev/fd/{read_end}"], progress=seen.append)
    finally:
        writer.join()
        os.close(read_end)
    assert result.stats.parsed_lines == 50 and result.stats.unparsed_lines == 0
