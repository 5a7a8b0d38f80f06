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
    assert parsed.stats.unparsed_by_reason == {"blank line": 100_001}
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
    assert log_analyser._size(size) == expected


def test_a_bad_size_is_a_usage_error(capsys):
    code, _, err = run(capsys, "-f", "x.log", "--max-decompressed", "lots")
    assert code == ExitCode.USAGE and "not a size: 'lots'" in err
