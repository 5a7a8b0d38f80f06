"""Live mode under load: lines appended at a steady rate while `log_analyser --follow` runs.

A writer appends generated benign traffic (bench/loggen.py: 200k lines of 666 clients, timestamps
rewritten to the wall clock, other client addresses on each pass through them) at --rate lines a
second, in 20 ms ticks; every --attack-every seconds it writes a new
attacker's five refused logins, the fifth of which crosses the login-failures rule. Measured:
alert latency (from writing that fifth line to the alert line arriving, median and p99), the
follower's CPU share (user + system seconds / wall seconds, from /proc) and its RSS every 5 s
(flat: every sample after the first minute within +-10% of their median).

    python bench/bench_follow.py --rate 2000 20000 --seconds 600
    python bench/bench_follow.py --in-process 2000 20000     # CPU per line, batches of that size
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = dict(os.environ)   # before Polars is imported here (it writes its allocator settings into os.environ)
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))   # this checkout's modules, not an installed copy
TICK = 0.02
_TIME = re.compile(r"\[[^\]]+\]")


def benign_lines(count: int) -> list[str]:
    import loggen

    return loggen.generate(count, seed=5, attackers=False).lines.to_list()


def stamp() -> str:
    return datetime.now(UTC).strftime("[%d/%b/%Y:%H:%M:%S +0000]")


class Writer(threading.Thread):
    """Appends ``rate`` lines a second to ``path`` and plants attackers; ``planted[ip]`` = monotonic
    time the crossing line was written."""

    def __init__(self, path: Path, rate: int, seconds: float, attack_every: float, pool: list[str]) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.seconds, self.attack_every, self.pool = path, rate, seconds, attack_every, pool
        self.planted: dict[str, float] = {}
        self.written = 0

    def run(self) -> None:
        start = time.monotonic()
        next_attack, attacker, position = start + 5.0, 0, 0
        with open(self.path, "a", encoding="utf-8") as handle:
            while (now := time.monotonic()) - start < self.seconds:
                due = int((now - start) * self.rate) - self.written
                if due > 0:
                    when = stamp()
                    chunk = [self._line(position + i, when) for i in range(due)]
                    position += due
                    handle.write("".join(chunk))
                    self.written += due
                if now >= next_attack:
                    attacker += 1
                    ip = f"203.0.{attacker // 250}.{attacker % 250 + 1}"
                    when = stamp()
                    handle.write("".join(f'{ip} - - {when} "POST /login HTTP/1.1" 401 12 "-" "hydra"\n'
                                         for _ in range(5)))
                    handle.flush()
                    self.planted[ip] = time.monotonic()
                    next_attack += self.attack_every
                handle.flush()
                time.sleep(TICK)


    def _line(self, position: int, when: str) -> str:
        """The pool's line at ``position`` with the time now and, from the second pass through the pool
        on, other clients (the first octet changes each pass): new visitors keep arriving, as on a site."""
        text = _TIME.sub(when, self.pool[position % len(self.pool)], count=1)
        rounds = position // len(self.pool)
        if rounds:
            text = f"{11 + rounds % 180}{text[text.index('.'):]}"
        return text + "\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return 0.0


def run(rate: int, seconds: float, attack_every: float, pool: list[str], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "access.log"
        log.touch()
        command = [sys.executable, "-m", "log_analyser", "-f", str(log), "--follow",
                   "--checkpoint", str(Path(tmp) / "cp.json"), "-o", str(Path(tmp) / "deny.conf"), *extra]
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**CHILD_ENV, "PYTHONUNBUFFERED": "1"})
        assert child.stderr is not None and child.stdout is not None
        while "following" not in (child.stderr.readline() or "following"):
            pass
        arrived: dict[str, float] = {}

        def read_alerts() -> None:
            for text in child.stdout:  # type: ignore[union-attr]
                arrived.setdefault(json.loads(text)["ip"], time.monotonic())
        threading.Thread(target=read_alerts, daemon=True).start()
        threading.Thread(target=lambda: child.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
        writer = Writer(log, rate, seconds, attack_every, pool)
        cpu0, wall0 = cpu_seconds(child.pid), time.monotonic()
        writer.start()
        samples: list[tuple[float, float]] = []
        loads: list[float] = []   # the machine's 1-minute load average, sampled with the RSS
        while writer.is_alive():
            time.sleep(5.0)
            samples.append((time.monotonic() - wall0, rss_mib(child.pid)))
            loads.append(os.getloadavg()[0])
        time.sleep(5.0)   # the last attackers' alerts
        cpu_used = cpu_seconds(child.pid) - cpu0
        cpu = cpu_used / (time.monotonic() - wall0)
        child.terminate()
        child.wait(timeout=120)
    latencies = sorted(arrived[ip] - t for ip, t in writer.planted.items() if ip in arrived)
    later = [rss for at, rss in samples if at >= 60.0]
    middle = statistics.median(later) if later else float("nan")
    return {
        "load_average_1m_min_median_max": [round(min(loads), 1), round(statistics.median(loads), 1),
                                           round(max(loads), 1)] if loads else None,
        "rate": rate, "seconds": seconds, "lines_written": writer.written, "attackers": len(writer.planted),
        "alerted": len(latencies),
        "latency_median_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)
        if latencies else None,
        "cpu_share": round(cpu, 2),
        "cpu_us_per_line": round(1e6 * cpu_used / max(writer.written, 1), 1),
        "rss_mib_first_minute_end": round(next((r for a, r in samples if a >= 60.0), float("nan")), 1),
        "rss_mib_after_minute_min_max": [round(min(later), 1), round(max(later), 1)] if later else None,
        "rss_mib_after_minute_median": round(middle, 1),
        "rss_flat_10pct": bool(later) and all(abs(r - middle) <= 0.1 * middle for r in later),
        "rss_mib_by_minute": [round(r, 1) for a, r in samples if int(a) % 60 < 5],
    }


def cpu_per_batch(pool: list[str], batch: int, batches: int = 30) -> dict:
    """CPU (all threads) of Monitor.update in this process, ``batch`` lines at a time, as in a follower
    that is behind: what a line costs, without the waiting for a CPU that a loaded machine adds.
    The first five batches (warm-up, store filling) are left out."""
    from log_analyser_core.live.monitor import Monitor
    from log_analyser_core.live.tail import Chunk
    from log_analyser_core.pipeline import Settings

    monitor, writer = Monitor(Settings()), Writer(Path(), 0, 0, 0, pool)
    monitor.warm_up()
    cpu = wall = 0.0
    for k in range(batches):
        lines = [writer._line(k * batch + i, stamp()).rstrip("\n") for i in range(batch)]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        monitor.update([Chunk("access.log", 1 + k * batch, lines)])
        if k % 5 == 4:
            monitor.compact()
        if k >= 5:
            cpu, wall = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0
    monitor.close()
    measured = (batches - 5) * batch
    return {"batch_lines": batch, "kept_events": monitor.store.events.height,
            "cpu_us_per_line": round(1e6 * cpu / measured, 1), "lines_per_cpu_second": round(measured / cpu),
            "wall_lines_per_second": round(measured / wall), "load_average_1m": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, nargs="+", default=[2000, 20000], help="lines a second")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--attack-every", type=float, default=10.0, help="seconds between planted attackers")
    parser.add_argument("--max-events", type=int, help="the follower's --max-events (default: its own default)")
    parser.add_argument("--in-process", type=int, nargs="*", metavar="BATCH",
                        help="instead: CPU per line of the live stages in this process, at these batch sizes")
    args = parser.parse_args()
    pool = benign_lines(200_000)
    if args.in_process is not None:
        for batch in args.in_process or [2000, 20000]:
            print(json.dumps(cpu_per_batch(pool, batch)), flush=True)
        return
    for rate in args.rate:
        extra = ["--max-events", str(args.max_events)] if args.max_events else []
        print(json.dumps(run(rate, args.seconds, args.attack_every, pool, extra)), flush=True)


if __name__ == "__main__":
    main()
