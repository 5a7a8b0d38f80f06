"""Reports are written whole or not at all, and hostile text cannot break a CSV cell or an SVG
chart (issue 22, items 9, 11 and 15)."""
from __future__ import annotations

import csv
import io
import os
import resource
import stat
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from conftest import DATA, ROOT

import log_analyser
import reporting
from log_analyser_core.cli import output
from log_analyser_core.errors import ConfigError, ExitCode
from log_analyser_core.report import charts

SMALL = str(DATA / "small.log")


def cli(*argv: str, stdout=subprocess.PIPE, limit: int | None = None) -> subprocess.CompletedProcess:
    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, "-m", "log_analyser", "-f", SMALL, "--detectors", "iforest", *argv],
                          cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=small_files if limit else None)


def test_a_failed_write_keeps_the_previous_report_and_leaves_no_temporary_file(tmp_path):
    report = tmp_path / "report.json"
    old = "{\"previous\": true}\n" * 10
    report.write_text(old)
    blocklist = tmp_path / "deny.conf"
    done = cli("-o", str(report), "-o", str(blocklist), limit=1024)   # the JSON report is larger than 1 KiB
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert f"error: {report}: cannot write report: File too large" in done.stderr.splitlines()
    assert report.read_text() == old
    assert blocklist.read_text().startswith("#")   # the report after it was still written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deny.conf", "report.json"]


def run(capsys, *argv: str) -> tuple[int, str]:
    code = log_analyser.main(["-f", SMALL, "--detectors", "iforest", *argv])
    return code, capsys.readouterr().err


def test_a_report_replaces_the_old_one_and_keeps_its_mode(tmp_path, capsys):
    report = tmp_path / "report.csv"
    report.write_text("old\n")
    report.chmod(0o640)
    fresh = tmp_path / "fresh.csv"
    code, err = run(capsys, "-o", str(report), "-o", str(fresh))
    assert code == 0, err
    assert report.read_text().startswith("rank,ip,")
    assert oct(report.stat().st_mode & 0o777) == oct(0o640)
    umask = os.umask(0)
    os.umask(umask)
    assert oct(fresh.stat().st_mode & 0o777) == oct(0o666 & ~umask)   # as open() would have made it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.csv", "report.csv"]


def test_a_report_to_a_fifo_is_written_in_place_not_renamed_over_it(tmp_path, capsys):
    fifo = tmp_path / "reports.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    code, err = run(capsys, "-o", f"csv:{fifo}")
    reader.join(timeout=30)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received[0].startswith(b"rank,ip,")


def test_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    code, err = run(capsys, "-o", str(tmp_path / "no" / "r.csv"))
    assert code == ExitCode.USAGE
    assert f"error: {tmp_path / 'no' / 'r.csv'}: cannot write report: No such file or directory" in err


@pytest.mark.parametrize("argv", [(), ("-o", "json:-")])
def test_a_full_stdout_is_exit_2(argv, capsys, monkeypatch):
    with open("/dev/full", "wb") as full:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(full, encoding="utf-8"))
        code, err = run(capsys, *argv)
    assert code == ExitCode.USAGE
    assert "error: cannot write to standard output: No space left on device" in err.splitlines()
    assert "Traceback" not in err


def test_a_closed_stdout_is_exit_2():
    """In a child process: the exit's own flush of standard output must not fail again."""
    child = subprocess.Popen([sys.executable, "-m", "log_analyser", "-f", SMALL, "--detectors", "iforest"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()
    assert child.wait(timeout=120) == ExitCode.USAGE
    assert child.stderr.read().splitlines() == ["error: cannot write to standard output: Broken pipe"]


def test_bytes_to_a_full_stdout_raise_a_config_error(monkeypatch):
    with open("/dev/full", "wb", buffering=0) as full:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(full, encoding="utf-8"))
        with pytest.raises(ConfigError, match="cannot write to standard output: No space left on device"):
            output.write(b"%PDF-1.7 ...", "-")


def test_stdout_errors_raise_a_config_error(monkeypatch):
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(sys, "stdout", Full())
    with pytest.raises(ConfigError, match="cannot write to standard output: No space left on device"):
        output.write("table", "-")


@pytest.mark.parametrize("value, expected", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("  =1+1", "'  =1+1"),
    ("\n=1+1", "'\\x0a=1+1"),
    ("\t@SUM(A1)", "'\\x09@SUM(A1)"),
    ("\u3000+1", "'\u3000+1"),            # ideographic space: white space too
    ("a\x1b[31mred\x07", "a\\x1b[31mred\\x07"),
    ("line\r\nbreak", "line\\x0d\\x0abreak"),
    ("\u202eevil", "\\u202eevil"),
    ("plain text", "plain text"),
    (-1.5, -1.5),
])
def test_csv_cells_escape_controls_and_neutralise_formulas_after_white_space(value, expected):
    assert reporting.csv_safe(value) == expected


def test_a_csv_report_with_control_characters_reads_back_one_row_per_finding(hostile_result):
    note_text = "summary\x1b[2J\r\n=HYPERLINK(\"http://x\")"
    findings = list(hostile_result.findings)
    findings[0] = replace(findings[0], reasons=(" =1+2", "\x00nul", note_text))
    result = replace(hostile_result, findings=tuple(findings))
    text = reporting.render_csv(result)
    assert not any(c in text for c in "\x00\x1b\r")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(findings) and len(text.splitlines()) == len(findings) + 1
    assert rows[0]["reasons"] == "' =1+2 | \\x00nul | summary\\x1b[2J\\x0d\\x0a=HYPERLINK(\"http://x\")"


def test_a_chart_label_with_control_characters_and_dollars_is_valid_svg():
    fig = charts.bar_chart([("10.0.0.1\x1b[31m", 5.0), ("$\\frac{a}{$", 3.0), ("\x00\x0c\u202e", 1.0)],
                           "Top flagged clients", "#c00")
    svg = charts.to_svg(fig)
    root = ET.fromstring(svg)   # raises on a character XML 1.0 does not allow
    assert root.tag.endswith("svg")


def test_chart_text_is_svg_text_in_a_declared_font_and_escaped():
    """The HTML page's charts keep their text as text (not glyph outlines), in DejaVu Sans with
    fallbacks; a label from the log is XML text, never markup."""
    fig = charts.bar_chart([("<b onclick=x>10.0.0.1</b>", 5.0)], "Top flagged clients", "#c00")
    svg = charts.to_svg(fig)
    root = ET.fromstring(svg)
    assert "DejaVu Sans" in root.get("font-family") and "sans-serif" in root.get("font-family")
    texts = [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Top flagged clients" in texts and "<b onclick=x>10.0.0.1</b>" in texts
    assert b"<b " not in svg and b"<path" not in svg


def test_time_axis_has_no_tick_at_a_time_the_clocks_skipped():
    """Europe/Berlin skips 02:00-03:00 on 2026-03-29: the ticks go 01:30, 03:00, half an hour apart."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    low, high = (datetime(2026, 3, 29, h, 0, tzinfo=berlin).timestamp() for h in (0, 4))
    ticks = charts._time_ticks(low, high, "Europe/Berlin", room=500)
    assert [label for _, label in ticks] == ["29 00:00", "29 00:30", "29 01:00", "29 01:30", "29 03:00", "29 03:30",
                                             "29 04:00"]
    assert {b - a for (a, _), (b, _) in zip(ticks, ticks[1:], strict=False)} == {1800}


def test_pieces_are_written_behind_their_making_in_order_and_either_side_failing_is_raised():
    from log_analyser_core.report.files import write_behind

    sink = io.BytesIO()
    write_behind(sink, (b"%d," % k for k in range(1000)))
    assert sink.getvalue() == b"".join(b"%d," % k for k in range(1000))

    class Full(io.BytesIO):
        def write(self, data, /):
            if self.tell() > 100:
                raise OSError(28, "No space left on device")
            return super().write(data)

    made = []

    def pieces():
        for k in range(10_000):
            made.append(k)
            yield b"x" * 50
    with pytest.raises(OSError, match="No space left"):
        write_behind(Full(), pieces())
    assert len(made) < 10_000   # the maker stopped soon after the writer failed

    def broken():
        yield b"first"
        raise ValueError("a writer's bug")
    sink = io.BytesIO()
    with pytest.raises(ValueError, match="a writer's bug"):
        write_behind(sink, broken())
    assert sink.getvalue() == b"first"
    assert not [t for t in threading.enumerate() if t.name == "report-writer"]
