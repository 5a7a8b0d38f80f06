"""Live mode (--follow): a real follower in a subprocess, lines appended to real files in a temp dir.

Each follower start costs a few seconds of imports, so the tests wait on what the follower says
(its "following" line, "caught up" lines with -v, alert lines) rather than on fixed sleeps.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import log_analyser
from log_analyser_core.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 40.0   # a loaded 2-core machine: imports alone can take several seconds
WAIT_TIMEOUT = 20.0


def line(ip: str, second: int, path: str = "/index.html", method: str = "GET", status: int = 200,
         agent: str = "Mozilla/5.0") -> str:
    minute, sec = divmod(second, 60)
    return (f'{ip} - - [07/Dec/2026:10:{minute:02d}:{sec:02d} +0000] "{method} {path} HTTP/1.1" {status} 512 '
            f'"-" "{agent}"\n')


def login_failures(ip: str, count: int, start: int = 0) -> list[str]:
    """``count`` refused logins a second apart: the 5th reaches the login-failures rule (high)."""
    return [line(ip, start + i, "/login", "POST", 401, "python-requests/2.32") for i in range(count)]


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()


class Follower:
    """``log_analyser --follow`` in a subprocess; stdout (alert lines) and stderr read on threads,
    each line stamped with time.monotonic() as it arrives."""

    def __init__(self, tmp: Path, *args: str) -> None:
        command = [sys.executable, "-m", "log_analyser", "--follow", "-v", "--checkpoint", str(tmp / "cp.json"),
                   *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self.alerts: queue.Queue[tuple[float, dict]] = queue.Queue()
        self.stderr: list[str] = []
        self._said = threading.Condition()
        threading.Thread(target=self._read_alerts, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.wait_said("following ", START_TIMEOUT)

    def _read_alerts(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            self.alerts.put((time.monotonic(), json.loads(text)))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            with self._said:
                self.stderr.append(text)
                self._said.notify_all()

    def wait_said(self, needle: str, timeout: float = WAIT_TIMEOUT, after: int = 0) -> int:
        """Wait until a stderr line (from index ``after``) contains ``needle``; returns the count of lines then."""
        deadline = time.monotonic() + timeout
        with self._said:
            while not any(needle in text for text in self.stderr[after:]):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"follower never said {needle!r}: {''.join(self.stderr)}")
                self._said.wait(min(left, 0.5))
            return len(self.stderr)

    def caught_up(self, path: Path, lines: int, after: int = 0) -> int:
        return self.wait_said(f"{path} line {lines}", after=after)

    def next_alert(self, timeout: float = WAIT_TIMEOUT) -> tuple[float, dict]:
        return self.alerts.get(timeout=timeout)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(how)
        code = self.process.wait(timeout=WAIT_TIMEOUT)
        time.sleep(0.2)   # the reader threads take the last lines
        return code


@pytest.fixture
def follower(tmp_path):
    started: list[Follower] = []

    def start(*args: str) -> Follower:
        started.append(Follower(tmp_path, *args))
        return started[-1]
    yield start
    for each in started:
        if each.process.poll() is None:
            each.process.kill()
            each.process.wait()


def requests_by_client(checkpoint: Path) -> dict[str, int]:
    """The requests the follower holds per client, from the checkpoint it wrote as it stopped."""
    import polars as pl

    events = pl.read_parquet(checkpoint.with_suffix(".parquet"))
    return dict(events.group_by(pl.col("client_ip").cast(pl.String)).len().iter_rows())


def test_first_alert_within_5_seconds_of_the_crossing_line(tmp_path, follower):
    log = tmp_path / "access.log"
    log.touch()
    live = follower("-f", str(log))
    append(log, [line(f"198.51.100.{n}", n) for n in range(1, 30)])
    attempts = login_failures("203.0.113.9", 5, start=40)
    append(log, attempts[:4])
    append(log, attempts[4:])
    crossed = time.monotonic()
    arrived, alert = live.next_alert()
    assert alert["ip"] == "203.0.113.9" and alert["alert"]["kind"] == "new"
    assert alert["severity"] in ("high", "critical")
    assert "brute_force" in alert["attack_types"]
    print(f"first alert {arrived - crossed:.2f} s after the crossing line")
    assert arrived - crossed < 5.0, f"first alert {arrived - crossed:.1f} s after the crossing line"
    assert live.stop() == ExitCode.OK
    later = [live.alerts.get()[1] for _ in range(live.alerts.qsize())]
    # the benign clients raised nothing; the attacker may escalate once the rolling baseline is fitted
    assert all(a["ip"] == "203.0.113.9" and a["alert"]["kind"] == "escalated" for a in later), later


def test_rename_and_copy_truncate_rotation_and_a_late_file_lose_and_repeat_no_line(tmp_path, follower):
    log = tmp_path / "access.log"
    append(log, [line("192.0.2.1", n) for n in range(10)])   # before the start: skipped (tail -F starts at the end)
    live = follower("-f", str(log), str(tmp_path / "late*.log"))
    append(log, [line("192.0.2.2", n) for n in range(40)])
    seen = live.caught_up(log, 50)
    append(tmp_path / "late-vhost.log", [line("192.0.2.9", n) for n in range(5)])   # appears later: read whole
    os.rename(log, tmp_path / "access.log.1")   # rename rotation; the server writes a little more to the old file
    append(tmp_path / "access.log.1", [line("192.0.2.2", 100 + n) for n in range(7)])
    append(log, [line("192.0.2.3", n) for n in range(25)])
    seen = live.caught_up(log, 25, after=seen)
    shutil.copyfile(log, tmp_path / "access.log.2")   # copy-truncate rotation
    with open(log, "r+b") as handle:
        handle.truncate(0)
    append(log, [line("192.0.2.4", n) for n in range(60)])   # longer than before: the size alone cannot tell
    live.caught_up(log, 60, after=seen)
    assert live.stop() == ExitCode.OK
    kept = requests_by_client(tmp_path / "cp.json")
    assert kept == {"192.0.2.2": 47, "192.0.2.3": 25, "192.0.2.4": 60, "192.0.2.9": 5}


def test_a_restart_resumes_without_alerting_again(tmp_path, follower):
    log = tmp_path / "access.log"
    log.touch()
    first = follower("-f", str(log))
    append(log, login_failures("203.0.113.9", 5))
    assert first.next_alert()[1]["ip"] == "203.0.113.9"
    assert first.stop(signal.SIGINT) == ExitCode.INTERRUPTED   # Ctrl-C: ends as cleanly as SIGTERM
    assert any("checkpoint written" in text for text in first.stderr)
    assert not any("Traceback" in text for text in first.stderr)
    append(log, login_failures("203.0.113.9", 3, start=5))   # written while no follower ran
    second = follower("-f", str(log))
    append(log, login_failures("203.0.113.77", 5, start=20))
    _, alert = second.next_alert()
    assert alert["ip"] == "203.0.113.77"
    second.caught_up(log, 13)
    assert second.stop() == ExitCode.OK
    assert second.alerts.empty(), "the client alerted before the restart was alerted again"


def test_fail_on_is_refused_with_follow(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.touch()
    assert log_analyser.main(["-f", str(log), "--follow", "--fail-on", "high"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: --fail-on cannot be used with --follow") and err.count("\n") == 1


def test_live_options_need_follow(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.write_text(line("192.0.2.1", 1))
    assert log_analyser.main(["-f", str(log), "--on-change", "true"]) == ExitCode.USAGE
    assert "--on-change needs --follow" in capsys.readouterr().err


def test_an_unwritable_alerts_file_is_a_one_line_error(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.touch()
    code = log_analyser.main(["-f", str(log), "--follow", "--alerts", str(tmp_path / "no" / "alerts.jsonl"),
                              "--checkpoint", str(tmp_path / "cp.json")])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot write alerts" in err and err.count("\n") == 1


def test_on_a_terminal_the_table_is_redrawn(tmp_path):
    import pty

    log = tmp_path / "access.log"
    log.touch()
    leader, follower_end = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    process = subprocess.Popen([sys.executable, "-m", "log_analyser", "-f", str(log), "--follow",
                                "--checkpoint", str(tmp_path / "cp.json")], cwd=ROOT, stdout=follower_end,
                               stderr=subprocess.PIPE, text=True, env=env)
    os.close(follower_end)
    screen = bytearray()
    threading.Thread(target=lambda: _read_pty(leader, screen), daemon=True).start()
    try:
        assert process.stderr is not None
        while "following" not in (process.stderr.readline() or "following"):
            pass
        append(log, login_failures("203.0.113.9", 5))
        deadline = time.monotonic() + WAIT_TIMEOUT
        while b"203.0.113.9" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_TIMEOUT) == ExitCode.OK
    finally:
        if process.poll() is None:
            process.kill()
    assert screen.startswith(b"\x1b[H\x1b[2J") and b"203.0.113.9" in screen
    assert b'"alert"' not in screen   # alert lines go to --alerts FILE on a terminal, not into the table


def _read_pty(fd: int, into: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:   # the other end closed
            return
        if not data:
            return
        into.extend(data)
