"""The whole pipeline on Spark (local[1], local[2]) next to the local Polars engine, same logs.

Each run is a fresh process running the CLI as a user does (``log_analyser -f LOG -o report.json``,
``--engine spark --spark-master local[N]`` for Spark: parse, features, behaviour rules, signatures,
Sigma, the Isolation Forest fitted on the log, verdicts, the JSON report). For each it prints the
wall time; the CPU time of every process of the run, in all and apart (the driver's Python,
Spark's JVM, its Python workers); the peak RSS of the driver's Python process, of the JVM (in local
mode the driver and the executor are one JVM), of the largest Python worker and of the whole
process tree (sampled every 0.2 s); the
load average before and after (the machine may be shared); and the clients flagged, which must be
the same on every engine. Spark's time includes starting the JVM. Medians over --runs runs.

    python bench/bench_spark.py --lines 1000000 5000000 --runs 1
    python bench/bench_spark.py --lines 5000000 --engines 'local[2]' --conf spark.driver.memory=2g

The scaling ratio is local[1]'s wall time over local[2]'s, from the same invocation.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_pipeline import CHILD_ENV, ensure_log  # noqa: E402

CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
import log_analyser
code = log_analyser.main({argv!r})
seconds = time.perf_counter() - start
assert code == 0, code
TICK = os.sysconf("SC_CLK_TCK")

def descendants(root):
    children = {{}}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{{pid}}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(pid), fields))
    found, todo = [], [root]
    while todo:
        for pid, fields in children.get(todo.pop(), []):
            found.append((pid, fields))
            todo.append(pid)
    return found

def peak_mb(pid):
    try:
        with open(f"/proc/{{pid}}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0

def name(pid):
    try:
        with open(f"/proc/{{pid}}/cmdline", "rb") as f:
            return f.read().split(b"\\0")[0].decode(errors="replace")
    except OSError:
        return "?"

# still running: Spark's JVM and its Python workers (the daemon's reaped workers are in its cutime)
tree = [(pid, fields, name(pid).endswith("java")) for pid, fields in descendants(os.getpid())]
def cpu(java):   # utime stime cutime cstime
    return sum(int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]) for _, f, j in tree if j == java) / TICK
own = resource.getrusage(resource.RUSAGE_SELF)
jvm = max((peak_mb(pid) for pid, _, java in tree if java), default=0.0)
workers = max((peak_mb(pid) for pid, _, java in tree if not java), default=0.0)
report = json.load(open({out!r}))
driver_cpu = own.ru_utime + own.ru_stime
print(json.dumps({{"seconds": seconds, "cpu_s": driver_cpu + cpu(True) + cpu(False), "driver_cpu_s": driver_cpu,
                  "jvm_cpu_s": cpu(True), "worker_cpu_s": cpu(False),
                  "driver_mb": own.ru_maxrss / 1024, "jvm_mb": jvm, "worker_mb": workers,
                  "clients": report["summary"]["clients"], "flagged": report["summary"]["flagged"]}}))
"""
ENGINES = {"polars": "", "local[1]": "local[1]", "local[2]": "local[2]"}


def tree_rss_mb(root: int) -> float:
    """The summed RSS of ``root`` and every process under it, now."""
    parents: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(pid))
        rss[int(pid)] = int(fields[21])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(parents.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(master: str, path: Path, out: Path, conf: list[str]) -> dict:
    argv = ["-f", str(path), "-o", str(out), "-q"]
    if master:
        argv += ["--engine", "spark", "--spark-master", master] + [a for c in conf for a in ("--spark-conf", c)]
    code = CHILD.format(root=str(ROOT), argv=argv, out=str(out))
    env = {**CHILD_ENV, "PYTHONPATH": str(ROOT)}   # Spark's Python workers import this checkout too
    load_before = os.getloadavg()[0]
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    peak = [0.0]

    def sample() -> None:
        while child.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(child.pid))
            time.sleep(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{master or 'polars'} failed:\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "tree_mb": peak[0], "load": (load_before, os.getloadavg()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a Spark setting for the Spark runs (repeatable)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "log_analyser_bench"))
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    for lines in args.lines:
        path = ensure_log(lines, 0, folder)
        seconds = {}
        for engine in args.engines:
            runs = [measure(ENGINES[engine], path, folder / "report.json", args.conf) for _ in range(args.runs)]
            seconds[engine] = statistics.median(r["seconds"] for r in runs)
            first = runs[0]
            loads = ", ".join(f"{r['load'][0]:.1f}->{r['load'][1]:.1f}" for r in runs)
            print(f"{lines:>10,} lines  {engine:>8}: wall {seconds[engine]:6.1f} s, "
                  f"CPU {statistics.median(r['cpu_s'] for r in runs):6.1f} s (driver Python "
                  f"{statistics.median(r['driver_cpu_s'] for r in runs):.1f}, JVM "
                  f"{statistics.median(r['jvm_cpu_s'] for r in runs):.1f}, Python workers "
                  f"{statistics.median(r['worker_cpu_s'] for r in runs):.1f}), peak RSS: driver Python "
                  f"{statistics.median(r['driver_mb'] for r in runs):,.0f} MB, JVM "
                  f"{statistics.median(r['jvm_mb'] for r in runs):,.0f} MB, Python worker "
                  f"{statistics.median(r['worker_mb'] for r in runs):,.0f} MB, all processes "
                  f"{statistics.median(r['tree_mb'] for r in runs):,.0f} MB; {first['clients']:,} clients, "
                  f"{first['flagged']:,} flagged; load average {loads} (median of {args.runs})", flush=True)
        if "local[1]" in seconds and "local[2]" in seconds:
            print(f"{lines:>10,} lines  local[1] / local[2] wall time: "
                  f"{seconds['local[1]'] / seconds['local[2]']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
