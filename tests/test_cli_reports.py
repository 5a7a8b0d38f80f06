"""The CLI's report options: several -o at once, PDF/HTML/blocklists, --details, colour and width
on a real pseudo-terminal."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
from conftest import DATA, ROOT

import log_analyser
from log_analyser_core.errors import ExitCode

SMALL = str(DATA / "small.log")


def run(capsys, *argv):
    code = log_analyser.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_one_analysis_writes_every_format(capsys, tmp_path):
    names = ["r.pdf", "r.html", "blocklist.txt", "deny.conf", "r.apache.conf", "r.iptables", "r.ip6tables",
             "r.nft", "r.crowdsec.json", "r.jsonl", "r.csv", "r.json", "table.txt"]
    argv = ["-f", SMALL, "--block-severity", "medium"]
    for name in names:
        argv += ["-o", str(tmp_path / name)]
    code, out, err = run(capsys, *argv)
    assert code == ExitCode.OK and out == "" and err.count("parsed 22 of 23 lines") == 1
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "blocklist.txt").read_text().splitlines()[-1] == "198.51.100.99"
    assert "deny 198.51.100.99;" in (tmp_path / "deny.conf").read_text()
    assert "Require not ip 198.51.100.99" in (tmp_path / "r.apache.conf").read_text()
    assert json.loads((tmp_path / "r.crowdsec.json").read_text())[0]["value"] == "198.51.100.99"
    assert json.loads((tmp_path / "r.jsonl").read_text())["source"]["ip"] == "198.51.100.99"
    assert (tmp_path / "table.txt").read_text().startswith("# client")


def test_block_severity_defaults_to_high(capsys, tmp_path):
    # the small log's scanner is critical (SQL injection, traversal, probes): listed at every level
    path, strict = tmp_path / "blocklist.txt", tmp_path / "critical-blocklist.txt"
    assert run(capsys, "-f", SMALL, "-o", str(path))[0] == ExitCode.OK
    assert [line for line in path.read_text().splitlines() if not line.startswith("#")] == ["198.51.100.99"]
    assert run(capsys, "-f", SMALL, "-o", str(strict), "--block-severity", "critical")[0] == ExitCode.OK
    assert [line for line in strict.read_text().splitlines() if not line.startswith("#")] == ["198.51.100.99"]


def test_format_prefix_and_pdf_to_stdout(capsysbinary):
    code = log_analyser.main(["-f", SMALL, "-o", "pdf:-"])
    out, _ = capsysbinary.readouterr()
    assert code == ExitCode.OK and out.startswith(b"%PDF-") and out.rstrip().endswith(b"%%EOF")


def test_details_view(capsys):
    code, out, _ = run(capsys, "-f", SMALL, "--details", "198.51.100.99")
    assert code == ExitCode.OK
    assert out.startswith("client 198.51.100.99: rank 1 of 7, score 89.8 (critical)")
    assert "why it stands out" in out and "88% of 8 requests returned 4xx" in out
    assert "first 8 requests" in out and "small.log:16:" in out
    assert "\x1b" not in out


def test_details_escapes_terminal_controls(capsys):
    code, out, _ = run(capsys, "-f", SMALL, "--details", "203.0.113.77")
    assert code == ExitCode.OK and "\\x1b[31mred" in out and "\x1b" not in out


def test_details_of_an_unknown_client(capsys):
    code, out, err = run(capsys, "-f", SMALL, "--details", "192.0.2.254")
    assert code == ExitCode.USAGE and out == ""
    assert err.strip().splitlines() == ["error: no client '192.0.2.254' in the log "
                                        "(--details takes an address from the table)"]


def test_unknown_output_extension(capsys, tmp_path):
    code, _, err = run(capsys, "-f", SMALL, "-o", str(tmp_path / "r.xlsx"))
    assert code == ExitCode.USAGE and "FORMAT:PATH" in err


@pytest.fixture(scope="module")
def hostile_log(tmp_path_factory):
    import reportdata

    return reportdata.write_hostile_log(tmp_path_factory.mktemp("hostile-log"))


def on_terminal(*argv: str, columns: int = 80, no_color: bool = False) -> str:
    """Run the CLI with stdout on a pseudo-terminal of ``columns`` columns; return what it showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(ROOT)
    if no_color:
        env["NO_COLOR"] = "1"
    process = subprocess.Popen([sys.executable, str(ROOT / "log_analyser.py"), *argv], stdout=follower,
                               stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:   # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_terminal_gets_colour_unless_no_color():
    coloured = on_terminal("-f", SMALL)
    assert "\x1b[1;97;41mcritical" in coloured   # reversed: critical does not look like high (bold red)
    assert "\x1b[" not in on_terminal("-f", SMALL, no_color=True)


def test_table_follows_the_terminal_width():
    narrow = on_terminal("-f", SMALL, "--details", "198.51.100.99", columns=80)
    assert narrow.startswith("client 198.51.100.99")
    table = on_terminal("-f", SMALL, columns=60, no_color=True).splitlines()
    assert max(len(line) for line in table) <= 60 and table[2].endswith("...")
    wide = on_terminal("-f", SMALL, columns=160, no_color=True).splitlines()
    assert "critical sqli   SQL Injection" in wide[2] and wide[2].endswith("(1x)")


@pytest.mark.parametrize("columns", [80, 160])
def test_table_on_a_terminal_of_80_and_160_columns(hostile_log, columns):
    """The sample with a long address and long reasons, on a real pseudo-terminal: every line fits,
    the attack type is never the part cut, and the line counting the quiet clients follows."""
    lines = on_terminal("-f", str(hostile_log), "--threshold", "30", columns=columns, no_color=True).splitlines()
    table = lines[:lines.index(next(line for line in lines if line.startswith("… and")))]
    assert max(len(line) for line in lines) <= columns
    assert table[0].split() == ["#", "client", "reqs", "errs", "score", "severity", "attack", "top", "reason"]
    rows = table[2:]
    assert rows and all(row.split()[5] in ("critical", "high", "medium", "low", "info", "-") for row in rows)
    assert [row.split()[6] for row in rows[:4]] == ["scanner", "brute_force", "xss", "dos"]
    flood = "Request flood (sustained request rate far above the site's clients) (3,000x)"
    if columns == 160:
        assert any(row.endswith(flood) for row in rows) and "<img/src=x/onerror=window.__xss=7>" in table[6]
    else:
        assert not any(flood in row for row in rows) and any(row.endswith("...") for row in rows)


def test_piped_output_has_no_colour_and_whole_cells(capsys):
    code, out, _ = run(capsys, "-f", SMALL)
    assert code == ExitCode.OK and "\x1b[" not in out
    assert "SQL Injection - Tautologies and Time Delays in URI (1x)" in out and "..." not in out


def test_every_format_renders_a_log_too_small_to_score(capsys, tmp_path):
    log = tmp_path / "two.log"
    log.write_text('192.0.2.1 - - [10/Mar/2026:09:00:01 +0000] "GET / HTTP/1.1" 200 5 "-" "a"\n'
                   '192.0.2.2 - - [10/Mar/2026:09:00:02 +0000] "GET /x HTTP/1.1" 404 5 "-" "b"\n')
    argv = ["-f", str(log)]
    for kind in ("pdf", "html", "blocklist", "nginx", "apache", "iptables", "ip6tables", "nftables", "crowdsec",
                 "ecs", "csv", "json", "table"):
        argv += ["-o", f"{kind}:{tmp_path / kind}"]
    code, _, err = run(capsys, *argv)
    assert code == ExitCode.OK and "too few to compare" in err
    assert (tmp_path / "pdf").read_bytes().startswith(b"%PDF-")
    assert "192.0.2.2" in (tmp_path / "html").read_text()
    assert (tmp_path / "ecs").read_text() == "" and json.loads((tmp_path / "crowdsec").read_text()) == []


def test_bad_pdf_pages_is_a_usage_error(capsys):
    code, _, err = run(capsys, "-f", SMALL, "--pdf-pages", "-3")
    assert code == ExitCode.USAGE and "whole number of pages" in err


def test_help_lists_the_report_formats(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == ExitCode.OK and "nftables, crowdsec, ecs" in out and "--details IP" in out


def test_details_accepts_other_spellings_of_an_address(capsys):
    for spelling, ip in (("2001:0db8:0000::0042", "2001:db8::42"), ("::ffff:192.0.2.10", "192.0.2.10")):
        code, out, _ = run(capsys, "-f", SMALL, "--details", spelling)
        assert code == ExitCode.OK and out.startswith(f"client {ip}:")


def test_a_failing_report_does_not_stop_the_ones_after_it(capsys, tmp_path):
    deny = tmp_path / "deny.conf"
    code, _, err = run(capsys, "-f", SMALL, "-o", str(tmp_path / "missing" / "r.pdf"), "-o", str(deny))
    assert code == ExitCode.USAGE and "cannot write report" in err
    assert "deny 198.51.100.99;" in deny.read_text()
