"""Reading real logs the way users have them: auto-detection on real files, rotated sets,
the client behind proxies, time zones and time windows, example lines fetched back."""
from __future__ import annotations

import gzip
import io
import sys
from datetime import UTC, datetime

import pytest
from conftest import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import file_parser as fp
import log_analyser
from log_analyser_core import pipeline as analysis
from log_analyser_core.errors import ConfigError, InputError
from log_analyser_core.parsing import reader as log_reader
from log_analyser_core.parsing import sources as log_input
from log_analyser_core.parsing.reader import read_lines
from log_analyser_core.parsing.sources import InputOptions, order_rotated, parse_networks, parse_time_bound, real_client

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("relative", "expected"), [
    ("public/elastic_examples/apache_logs", "combined"),
    ("public/nielsbasjes_yauaa/hackers-access.log", "combined"),
    ("public/ocatak_apache-http-logs/acunetix.txt", "combined"),
    ("public/ocatak_apache-http-logs/netsparker.txt", "combined"),
    ("public/ocatak_apache-http-logs/w3af.txt", "combined"),
    ("public/slrbl_webhawk/2021_all.log", "combined"),
    ("public/slrbl_webhawk/access.log.2022-12-22", "combined"),
    ("seeds/Apache-Log-Analyser/test_access.log", "common"),
])
def test_real_logs_are_detected_as_their_format(shared, relative, expected):
    path = str(shared / relative)
    stats = fp.parse([path]).stats
    assert stats.formats == {path: expected}
    assert stats.parsed_lines / stats.total_lines >= 0.999


def test_quote_wrapped_scanner_lines_keep_their_inner_quotes(shared):
    path = shared / "public/ocatak_apache-http-logs/w3af.txt"
    first = fp.parse([str(path)]).events.row(0, named=True)
    assert (first["client_ip"], first["path"], first["status"], first["user_agent"]) == (
        "192.168.4.163", "/", 200, "w3af.org")


def test_syslog_forwarded_lines_lose_their_prefix(shared):
    path = str(shared / "seeds/Anomaly-detection-tool/synthetic_logs_1k.csv")
    result = fp.parse([path], log_format='%h %A %{remote}p %v %l %u %t "%r" %>s %b %D "%{Referer}i" "%{User-Agent}i"')
    assert result.stats.parsed_lines == 1000
    first = result.events.row(0, named=True)
    assert (first["client_ip"], first["vhost"], first["status"], first["tz_offset_min"]) == (
        "10.141.146.187", "abc.example.net", 503, 330)


def line(second: int, ip: str = "192.0.2.1", extra: str = "") -> str:
    return f'{ip} - - [10/Mar/2026:09:00:{second:02d} +0000] "GET /s{second} HTTP/1.1" 200 1 "-" "ua"{extra}\n'


def test_rotated_sets_are_read_oldest_first(tmp_path):
    (tmp_path / "access.log").write_text(line(3))
    (tmp_path / "access.log.1").write_text(line(2))
    with gzip.open(tmp_path / "access.log.2.gz", "wt") as handle:
        handle.write(line(1))
    (tmp_path / "access.log.10.gz").write_bytes(gzip.compress(line(0).encode()))
    events = fp.parse([str(tmp_path / "access.log*")]).events
    assert events["path"].to_list() == ["/s0", "/s1", "/s2", "/s3"]
    assert events["timestamp"].is_sorted()


def test_rotation_order_of_dated_and_numbered_names():
    names = ["a.log", "a.log-20260102", "a.log-20260101.gz", "b.log.1", "b.log", "b.log.3.gz"]
    assert order_rotated(names) == ["a.log-20260101.gz", "a.log-20260102", "a.log", "b.log.3.gz", "b.log.1", "b.log"]


@pytest.mark.parametrize(("peer", "header", "trusted", "expected"), [
    ("10.0.0.1", "198.51.100.7, 10.0.0.1", "", "198.51.100.7"),          # no list: leftmost
    ("10.0.0.1", "203.0.113.9, 198.51.100.7, 10.0.0.2", "10.0.0.0/8", "198.51.100.7"),  # rightmost untrusted
    ("203.0.113.1", "198.51.100.7", "10.0.0.0/8", "203.0.113.1"),        # untrusted peer: header ignored
    ("10.0.0.1", "-", "", "10.0.0.1"),                                    # absent
    ("10.0.0.1", "garbage, <script>", "", "10.0.0.1"),                    # garbage
    ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.0/8", "10.0.0.3"),         # all trusted: leftmost
    ("10.0.0.1", "[2001:db8::5]", "", "2001:db8::5"),
    ("10.0.0.1", "198.51.100.7:4711", "", "198.51.100.7"),
    ("10.0.0.1", "fe80::1%1\n-I INPUT 1 -j ACCEPT\n#", "", "10.0.0.1"),   # a scope is free text: refused
    ("10.0.0.1", "fe80::1%1;include'evil.conf';#", "", "10.0.0.1"),
    ("10.0.0.1", "fe80::1%eth0, 198.51.100.7", "", "198.51.100.7"),         # the next hop is an address
    ("10.0.0.1", "::ffff:198.51.100.7", "", "198.51.100.7"),
])
def test_real_client_choice(peer, header, trusted, expected):
    assert real_client(peer, header, parse_networks(trusted)) == expected


def test_real_ip_header_keeps_peer_and_client(tmp_path):
    path = tmp_path / "main.log"
    path.write_text((DATA / "formats/main.log").read_text())
    options = InputOptions(real_ip_header="x-forwarded-for", trusted_proxies=parse_networks("10.0.0.0/8"))
    events = fp.parse([str(path)], options=options).events
    assert events["client_ip"].cast(str).to_list() == ["198.51.100.23", "10.0.0.3", "10.0.0.2"]
    assert events["peer_ip"].cast(str).to_list() == ["10.0.0.2", "10.0.0.3", "10.0.0.2"]


def test_real_ip_header_the_format_does_not_log_falls_back_to_the_peer(tmp_path):
    path = tmp_path / "c.log"
    path.write_text(line(1))
    events = fp.parse([str(path)], options=InputOptions(real_ip_header="cf-connecting-ip")).events
    assert events["client_ip"].cast(str).to_list() == ["192.0.2.1"]


def test_bad_trusted_proxy_is_a_config_error():
    with pytest.raises(ConfigError, match="not-a-net"):
        parse_networks("10.0.0.0/8,not-a-net")


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", datetime(2026, 3, 9, 12, 0, tzinfo=UTC)), ("30m", datetime(2026, 3, 10, 11, 30, tzinfo=UTC)),
    ("7d", datetime(2026, 3, 3, 12, 0, tzinfo=UTC)), ("2026-03-10", datetime(2026, 3, 10, tzinfo=UTC)),
    ("2026-03-10T08:00:00+01:00", datetime(2026, 3, 10, 7, 0, tzinfo=UTC)),
])
def test_time_bounds(text, expected):
    assert parse_time_bound(text, NOW) == expected


def test_time_bound_without_offset_is_read_in_tz_and_garbage_is_an_error():
    assert parse_time_bound("2026-03-10 10:00", NOW, "Europe/Berlin") == datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    with pytest.raises(ConfigError, match="yesterday"):
        parse_time_bound("yesterday", NOW)


def test_since_until_window_and_its_note(tmp_path):
    path = tmp_path / "w.log"
    path.write_text("".join(line(s) for s in range(10)))
    options = InputOptions(since=datetime(2026, 3, 10, 9, 0, 3, tzinfo=UTC),
                           until=datetime(2026, 3, 10, 9, 0, 6, tzinfo=UTC))
    result = fp.parse([str(path)], options=options)
    assert result.events["path"].to_list() == ["/s3", "/s4", "/s5"]
    assert result.stats.outside_window == 7 and "7 lines outside" in result.stats.notes[0]
    with pytest.raises(InputError, match="window"):
        fp.parse([str(path)], options=InputOptions(since=datetime(2027, 1, 1, tzinfo=UTC)))


def test_times_without_offset_take_tz_and_say_so(tmp_path):
    path = tmp_path / "n.json"
    path.write_text('{"remote_addr": "192.0.2.1", "time": "2026-03-10T10:00:01", "request": "GET / HTTP/1.1"}\n')
    result = fp.parse([str(path)], options=InputOptions(tz="Europe/Berlin"))
    event = result.events.row(0, named=True)
    assert event["timestamp"] == datetime(2026, 3, 10, 9, 0, 1, tzinfo=UTC) and event["tz_offset_min"] == 60
    assert "no UTC offset; read in Europe/Berlin" in result.stats.notes[0]


def test_example_lines_are_fetched_by_source_and_line_number(tmp_path):
    path = tmp_path / "e.log.gz"
    path.write_bytes(gzip.compress("".join(line(s) for s in range(5)).encode()))
    events = fp.parse([str(path)]).events
    wanted = events.filter(events["path"] == "/s3").row(0, named=True)
    assert read_lines(str(wanted["source"]), [wanted["line_number"]]) == {4: line(3).rstrip("\n")}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=30),
       ending=st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]), chunk=st.integers(1, 64), step=st.integers(1, 64),
       data=st.data())
def test_lines_read_back_are_the_lines_the_parser_read(tmp_path, monkeypatch, lines, ending, chunk, step, data):
    # lines are numbered as the parser's reader numbers them, whether read through the line index
    # left by the parse or from the top: with bytes that are not UTF-8, carriage returns, blank
    # lines, and lines straddling blocks and index steps of any size
    path = tmp_path / "b.log"
    path.write_bytes(b"\n".join([b"a first line: no compression magic", *lines]) + ending)
    monkeypatch.setattr(log_reader, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(log_reader, "INDEX_STEP", step)
    monkeypatch.setattr(log_reader, "_INDEXES", {})
    read = [text for block in log_reader.iter_chunks(str(path)) for text in block.to_list()]
    wanted = data.draw(st.lists(st.integers(0, len(read) + 2)))
    expected = {n: read[n - 1] for n in wanted if 1 <= n <= len(read)}
    index = log_reader._INDEXES[str(path)]
    content = path.read_bytes()   # each indexed line starts at its offset
    assert all(content.count(b"\n", 0, offset) + 1 == number and content[offset - 1:offset] in (b"", b"\n")
               for number, offset in zip(index.lines, index.offsets, strict=True))
    assert read_lines(str(path), wanted) == expected
    log_reader._INDEXES.clear()
    assert read_lines(str(path), wanted) == expected


def test_example_lines_are_read_back_from_a_file_and_marked_rebuilt_from_stdin(tmp_path, monkeypatch):
    # a custom format with the request time (%D, microseconds) at the end, which combined cannot hold
    custom = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D'
    logged = [f'203.0.113.9 - - [10/Mar/2026:09:00:0{i} +0100] "GET /item?id=1%27%20OR%201%3D1-- HTTP/1.1" 500 0 '
              f'"-" "sqlmap/1.8" 98765{i}' for i in range(3)]
    path = tmp_path / "a.log"
    path.write_text("\n".join(logged) + "\n", encoding="utf-8")
    from_file = fp.parse([str(path)], log_format=custom).events
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    from_stdin = fp.parse(["-"], log_format=custom).events
    read = log_input.with_raw(from_file)
    assert read["raw"].to_list() == logged and read["rebuilt"].to_list() == [False] * 3
    rebuilt = log_input.with_raw(from_stdin)
    assert rebuilt["rebuilt"].to_list() == [True] * 3
    assert all("98765" not in raw and "+0000]" in raw for raw in rebuilt["raw"])
    assert log_input.with_rebuilt(from_file)["rebuilt"].to_list() == [True] * 3   # rebuilt until read back
    # the detection stages rebuild every example; analysis reads back what it can and clears the mark
    for events, is_rebuilt in ((from_file, False), (from_stdin, True)):
        examples = [x for items in analysis.detections(events, analysis.Settings())[0].values()
                    for e in items for x in e.examples]
        assert examples and all(x.rebuilt is is_rebuilt for x in examples)
        assert all((x.raw == logged[x.line_number - 1]) is not is_rebuilt for x in examples)


def test_cli_input_options(tmp_path, capsys):
    path = tmp_path / "main.log"
    path.write_text((DATA / "formats/main.log").read_text())
    code = log_analyser.main(["-f", str(path), "--real-ip-header", "x-forwarded-for", "--trusted-proxies",
                              "10.0.0.0/8", "--since", "2026-03-10T09:00:02Z", "-o", "-", "--output-format", "json"])
    assert code == 0
    out = capsys.readouterr()
    assert '"ip": "10.0.0.3"' in out.out and "198.51.100.23" not in out.out
    assert "1 line outside the --since/--until window skipped" in out.err
    assert "format: main (detected)" in out.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--trusted-proxies", "10.0.0.0/8"], "needs --real-ip-header"),
    (["--since", "2026-03-11", "--until", "2026-03-10"], "is not before --until"),
    (["--since", "soon"], "cannot read time 'soon'"),
])
def test_cli_input_option_errors(tmp_path, capsys, argv, message):
    path = tmp_path / "a.log"
    path.write_text(line(1))
    assert log_analyser.main(["-f", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_format_list(capsys):
    assert log_analyser.main(["--format", "list"]) == 0
    out = capsys.readouterr().out
    assert "cloudfront" in out and "awsalb" in out and out.count("\n") >= 16


def test_tz_sets_the_zone_of_the_night_time_feature(tmp_path):
    from log_analyser_core.pipeline import Settings, analyse

    path = tmp_path / "night.log"  # 02:00 UTC is night in UTC but 11:00 in Tokyo
    path.write_text("".join(line(s).replace("09:00:", "02:00:", 1).replace("192.0.2.1", f"192.0.2.{s % 4}")
                            for s in range(12)))
    utc = analyse([str(path)], Settings()).features["night_ratio"].to_list()
    tokyo = analyse([str(path)], Settings(tz="Asia/Tokyo"))
    assert utc == [1.0] * 4 and tokyo.features["night_ratio"].to_list() == [0.0] * 4
    assert tokyo.events["tz_offset_min"].to_list() == [0] * 12  # the logged offset is kept


def test_the_cli_sets_the_allocator_before_polars_loads_unless_the_user_configured_it(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    path = tmp_path / "a.log"
    path.write_text("".join(line(s) for s in range(30)))
    code = ("import os, sys, log_analyser; assert 'polars' not in sys.modules; "
            f"assert log_analyser.main(['-f', {str(path)!r}, '-o', {str(tmp_path / 'r.json')!r}]) == 0; "
            "print(os.environ['_RJEM_MALLOC_CONF'])")
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | {"PYTHONPATH": str(ROOT)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env | extra,
                           check=True).stdout.strip() for extra in ({}, {"_RJEM_MALLOC_CONF": "narenas:2"})]
    # Polars puts its own defaults first and the configured value after them, which wins
    assert runs[0].endswith("," + log_analyser.RETURN_FREED_MEMORY_SOON)
    assert runs[1].endswith(",narenas:2") and "background_thread" not in runs[1]


def test_freed_memory_goes_back_at_once_on_large_compressed_or_piped_inputs(tmp_path):
    small, large = tmp_path / "small.log", tmp_path / "large.log"
    small.write_text(line(0))
    with open(large, "wb") as sparse:   # takes no disk space
        sparse.truncate(log_analyser.LARGE_INPUT_BYTES)
    soon, at_once = log_analyser.RETURN_FREED_MEMORY_SOON, log_analyser.RETURN_FREED_MEMORY
    assert log_analyser.allocator_settings(["-f", str(small), "-o", "r.json"]) == soon
    assert log_analyser.allocator_settings(["evaluate", "--file", str(small), "--labels", "l.csv"]) == soon
    assert log_analyser.allocator_settings(["-f", str(small), str(tmp_path / "missing.log")]) == soon
    assert log_analyser.allocator_settings(["-f", str(large)]) == at_once
    assert log_analyser.allocator_settings(["-f", str(tmp_path / "*.log")]) == at_once   # globs add up
    assert log_analyser.allocator_settings(["-f", str(small), "-f", str(large)]) == at_once
    assert log_analyser.allocator_settings(["-f", "-"]) == at_once
    assert log_analyser.allocator_settings(["-f", str(small) + ".gz"]) == at_once
    assert log_analyser.allocator_settings(["-f", str(small), "--follow"]) == at_once   # live mode runs for days
    assert log_analyser.allocator_settings(["-f"]) == at_once   # a usage error, reported by the real parser


