"""Hostile input does not break the run (issue 22): numbers out of range, compressed bombs,
corrupt deflate data. Each case goes through the CLI in process and checks the exit code and
the one-line error, or that the line is unparsed with its reason."""
from __future__ import annotations

import bz2
import gzip
import io
import sys

import polars as pl
import pytest

import file_parser as fp
import log_analyser
from log_analyser_core.cli.common import size as size_type
from log_analyser_core.errors import ExitCode, InputError

LINE = '203.0.113.{n} - - [10/Mar/2026:09:00:0{s} +0000] "GET /a HTTP/1.1" 200 {bytes} "-" "curl/8"'


def combined(*byte_counts: str) -> str:
    return "".join(LINE.format(n=i % 9 + 1, s=i % 9, bytes=b) + "\n" for i, b in enumerate(byte_counts))


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("name, text, reason", [
    ("combined.log", combined("99999999999999999999", "9223372036854775808", "12", "13"), "bytes out of range"),
    ("json.log", '{"remote_addr":"192.0.2.1","time":"2026-03-10T09:00:00Z","request":"GET / HTTP/1.1",'
                 '"status":200,"bytes":1e30}\n' +
     '{"remote_addr":"192.0.2.2","time":"2026-03-10T09:00:00Z","request":"GET / HTTP/1.1","status":200,'
     '"bytes":12}\n' * 3, "bytes out of range"),
    ("json-epoch.log", '{"remote_addr":"192.0.2.1","time":1e20,"request":"GET / HTTP/1.1","status":200}\n' +
     '{"remote_addr":"192.0.2.2","time":1773133200,"request":"GET / HTTP/1.1","status":200}\n' * 3,
     "unreadable timestamp"),
    ("export.csv", "ts,ip,request,status,bytes\n1e20,192.0.2.1,GET / HTTP/1.1,200,1\n"
                   "2026-03-10T09:00:00Z,192.0.2.1,GET / HTTP/1.1,200,1e30\n" +
     "2026-03-10T09:00:00Z,192.0.2.2,GET / HTTP/1.1,200,5\n" * 4, None),
    ("squid.log", "100000000000000000000.000 5 192.0.2.1 TCP_MISS/200 10 GET http://a.example/ - DIRECT/- text/html\n"
     + "1773133200.000 5 192.0.2.2 TCP_MISS/200 10 GET http://a.example/ - DIRECT/- text/html\n" * 3,
     "unreadable timestamp"),
])
def test_a_number_out_of_range_makes_its_line_unparsed_not_a_crash(tmp_path, capsys, name, text, reason):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    parsed = fp.parse([str(path)])
    assert parsed.stats.parsed_lines >= 2
    reasons = parsed.stats.unparsed_by_reason
    if reason is None:   # the CSV file holds one of each
        assert reasons["unreadable timestamp"] == 1 and reasons["bytes out of range"] == 1
    else:
        assert reasons[reason] >= 1
    code, out, err = run(capsys, "-f", str(path), "--detectors", "iforest")
    assert code == ExitCode.OK, err


def test_blank_lines_are_counted_not_kept(tmp_path):
    path = tmp_path / "access.log"
    path.write_text(combined("1", "2") + "\n" * 100_000 + " \t\n" + combined("3"), encoding="utf-8")
    parsed = fp.parse([str(path)])
    assert parsed.stats.not_access == {"blank line": 100_001} and parsed.stats.unparsed_by_reason == {}
    assert parsed.stats.total_lines == 100_004 and parsed.unparsed.height == 0
    assert parsed.events["line_number"].to_list() == [1, 2, 100_004]


def test_unparsed_rows_do_not_repeat_the_source_path_as_text(tmp_path):
    path = tmp_path / ("d" * 200) / "access.log"
    path.parent.mkdir()
    path.write_text(combined("1", "2", "3") + "garbage\n" * 2, encoding="utf-8")
    unparsed = fp.parse([str(path)], max_unparsed_ratio=1.0).unparsed
    assert unparsed.height == 2 and unparsed.schema == pl.Schema(fp.UNPARSED_SCHEMA)
    assert isinstance(unparsed.schema["source"], pl.Categorical)   # one code per row, the path once


def test_a_compressed_input_past_the_decompressed_cap_is_exit_3(tmp_path, capsys):
    path = tmp_path / "bomb.log.bz2"
    path.write_bytes(bz2.compress(b"\n" * 3_000_000))
    assert path.stat().st_size < 200
    code, _, err = run(capsys, "-f", str(path), "--max-decompressed", "1M")
    assert code == ExitCode.INPUT
    assert one_line_error(err) == (f"error: {path}: decompresses to more than 1,048,576 bytes "
                                   "(raise the limit with --max-decompressed SIZE, or 0 for none)")


def test_the_decompressed_cap_can_be_lifted_and_blank_lines_alone_are_an_empty_input(tmp_path, capsys):
    path = tmp_path / "blank.log.gz"
    path.write_bytes(gzip.compress(b"\n" * 3_000_000))
    code, _, err = run(capsys, "-f", str(path), "--max-decompressed", "0")
    assert code == ExitCode.INPUT and "no log lines to analyse" in one_line_error(err)


def test_the_cap_counts_decompressed_bytes_only(tmp_path):
    plain = tmp_path / "plain.log"
    plain.write_text(combined(*"123456789"), encoding="utf-8")
    compressed = tmp_path / "packed.log.gz"
    compressed.write_bytes(gzip.compress(plain.read_bytes()))
    options = fp.InputOptions(max_decompressed=100)
    assert fp.parse([str(plain)], options=options).stats.parsed_lines == 9
    with pytest.raises(InputError, match="decompresses to more than 100 bytes"):
        fp.parse([str(compressed)], options=options)


def corrupt_gzip() -> bytes:
    data = bytearray(gzip.compress(combined(*map(str, range(2000))).encode()))
    data[20:60] = bytes(b ^ 0x55 for b in data[20:60])
    return bytes(data)


def test_corrupt_deflate_data_in_a_gz_file_is_exit_3(tmp_path, capsys):
    path = tmp_path / "access.log.gz"
    path.write_bytes(corrupt_gzip())
    code, _, err = run(capsys, "-f", str(path))
    assert code == ExitCode.INPUT
    line = one_line_error(err)
    assert line.startswith(f"error: {path}: cannot read: ") and "(the file is truncated or corrupt)" in line


def test_corrupt_deflate_data_on_stdin_is_exit_3(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(corrupt_gzip()))))
    code, _, err = run(capsys, "-f", "-")
    assert code == ExitCode.INPUT and one_line_error(err).startswith("error: -: cannot read: ")


@pytest.mark.parametrize("size, expected", [("500M", 500 * 2**20), ("20G", 20 * 2**30), ("1024", 1024), ("0", 0)])
def test_sizes_read_with_binary_units(size, expected):
    assert size_type(size) == expected


def test_a_bad_size_is_a_usage_error(capsys):
    code, _, err = run(capsys, "-f", "x.log", "--max-decompressed", "lots")
    assert code == ExitCode.USAGE and "not a size: 'lots'" in err


MAIN = ('{peer} - - [10/Mar/2026:09:00:0{s} +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8" "{xff}"\n')


def test_client_addresses_take_their_one_canonical_form(tmp_path):
    path = tmp_path / "access.log"
    peers = ["2001:DB8:0:0:0:0:0:1", "::ffff:192.0.2.7", "[2001:db8::2]", "192.0.2.8"]
    path.write_text("".join(MAIN.format(peer=p, s=i, xff="-") for i, p in enumerate(peers)), encoding="utf-8")
    events = fp.parse([str(path)], format_name="main").events
    assert events["client_ip"].cast(pl.String).to_list() == ["2001:db8::1", "192.0.2.7", "2001:db8::2", "192.0.2.8"]


def test_a_client_that_is_not_an_address_makes_its_line_unparsed_with_its_reason(tmp_path):
    path = tmp_path / "access.log"
    peers = ["192.0.2.1", "fe80::1%eth0", "<script>", "h" * 5000, "192.0.2.2"]
    path.write_text("".join(MAIN.format(peer=p, s=i, xff="-") for i, p in enumerate(peers)), encoding="utf-8")
    parsed = fp.parse([str(path)], format_name="main", max_unparsed_ratio=1.0)
    assert parsed.events["client_ip"].cast(pl.String).to_list() == ["192.0.2.1", "192.0.2.2"]
    assert parsed.stats.unparsed_by_reason == {"client address is not an IP address": 3}
    assert parsed.unparsed["raw"].str.len_chars().max() == fp.UNPARSED_RAW_CHARS   # kept, clipped


def test_forwarded_values_that_are_not_addresses_are_refused_and_counted(tmp_path):
    path = tmp_path / "access.log"
    values = ["198.51.100.9", "fe80::1%1;include'evil.conf';#", "unknown, 198.51.100.10", "-", "x" * 50]
    path.write_text("".join(MAIN.format(peer="10.0.0.1", s=i, xff=v) for i, v in enumerate(values)), "utf-8")
    parsed = fp.parse([str(path)], format_name="main", options=fp.InputOptions(real_ip_header="x-forwarded-for"))
    clients = parsed.events["client_ip"].cast(pl.String).to_list()
    assert clients == ["198.51.100.9", "10.0.0.1", "198.51.100.10", "10.0.0.1", "10.0.0.1"]
    assert any(note.startswith("3 lines carry a forwarded-for value that is not an IP address")
               for note in parsed.stats.notes)


def test_allowlist_and_enrichment_use_the_same_notion_of_an_address(tmp_path):
    from log_analyser_core.enrich.geolocation import is_public
    from log_analyser_core.errors import ConfigError
    from log_analyser_core.verdict import Allowlist, is_internal, load_allowlist

    allow = tmp_path / "allow.yaml"
    allow.write_text("ips: ['::FFFF:192.0.2.1', 192.0.2.0/24, '2001:DB8::1']\n")
    networks = load_allowlist(allow).networks
    assert [str(n) for n in networks] == ["192.0.2.1/32", "192.0.2.0/24", "2001:db8::1/128"]
    allow.write_text("ips: ['fe80::1%eth0']\n")
    with pytest.raises(ConfigError, match="is not an IP address or network"):
        load_allowlist(allow)
    listed = Allowlist(networks=networks)
    assert listed.network_for("::ffff:192.0.2.5") == "192.0.2.0/24"
    assert listed.network_for("192.0.2.1") == "192.0.2.1/32"
    assert listed.network_for("2001:db8::1%x") is None
    assert not is_public("8.8.8.8%eth0") and is_public("8.8.8.8") and not is_internal("fe80::1%eth0")


# Item 6: a million distinct clients. The per-client shortcuts must give what the slow paths give.

_ADDRESSES = ["10.1.2.3", "8.8.8.8", "::1", "0:0:0:0:0:0:0:1", "FE80::1", "fe80::1", "fd12:3456::1", "fc::1",
              "2001:db8::1", "2001:DB8:0:0:1:0:0:1", "2001:db8:0:0:1::", "172.16.0.1", "172.32.0.1", "100.64.1.1",
              "169.254.1.1", "192.168.1.1", "127.0.0.1", "febf::1", "fec0::1", "::ffff:10.0.0.1", "::1.2.3.4",
              "1:0:0:2:0:0:0:3", "fe80::1%eth0", "::ffff:0:0", "2001:0db8:0000:0000:0000:ff00:0042:8329", "1::"]


def test_the_fast_ipv6_path_gives_what_ipaddress_gives():
    import ipaddress

    from log_analyser_core.parsing import address

    def slow(text: str) -> str | None:
        if "%" in text:
            return None
        parsed = ipaddress.ip_address(text)
        return str(getattr(parsed, "ipv4_mapped", None) or parsed)
    assert [address.canonical(a) for a in _ADDRESSES] == [slow(a) for a in _ADDRESSES]


def test_internal_clients_are_those_is_internal_names():
    from log_analyser_core import verdict

    assert verdict.internal_clients(_ADDRESSES) == {a for a in _ADDRESSES if verdict.is_internal(a)}
    assert "10.1.2.3" in verdict.internal_clients(_ADDRESSES) and "8.8.8.8" not in verdict.internal_clients(_ADDRESSES)


def test_alike_clients_are_scored_once_with_the_same_scores():
    import numpy as np

    import anomaly_detector

    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(anomaly_detector.DISTINCT_ROWS_FROM * 2, 6)), 0)   # few distinct rows
    detector = anomaly_detector.IsolationForestDetector(n_estimators=20, random_state=0).fit(X[:500])
    unique, inverse = anomaly_detector._distinct_rows(X)
    assert len(unique) < len(X) / 2 and np.array_equal(unique[inverse], X)
    row_by_row = -detector.forest_.score_samples(detector.scaler_.transform(X))
    assert np.array_equal(detector.score_samples(X), row_by_row)
