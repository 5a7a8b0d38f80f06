"""Distinct clients cost what ordinary traffic costs: 1M lines from 1M distinct addresses (IPv6
makes them free for an attacker) against 1M ordinary lines, end to end with a JSON report.

Each run is a fresh `python -m log_analyser` under /usr/bin/time -v (wall time, CPU time - user
plus system - and peak RSS are that process's own); the two inputs alternate within each run;
figures are medians over --runs. On a shared machine compare CPU time: wall time there measures
the other users too.

The target (issue 22): the distinct-client log within 4x the time and 3x the memory of the
ordinary one. Each distinct client is still scored, judged and written to the JSON report (about
1.3 kB of JSON each; a quiet one is written from its row, with no Finding object), so the ratios
grow with the line count: quote them at the size measured.

    python bench/bench_hostile.py --lines 1000000 --runs 3
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def write_logs(folder: Path, lines: int) -> dict[str, Path]:
    """The ordinary log (loggen's traffic) and the same lines each from its own IPv6 address."""
    import loggen
    import polars as pl

    # loggen adds its 4,000 attack lines to the benign ones asked for: exactly ``lines`` in all
    ordinary = loggen.generate(max(lines - loggen.ATTACK_LINES, 1), seed=1).lines
    distinct = pl.DataFrame({"line": ordinary}).select(
        # decimal groups of at most four digits are valid hexadecimal groups: one address per line
        pl.format("2001:db8:{}:{}::1", (pl.int_range(pl.len()) // 10000).cast(pl.String),
                  (pl.int_range(pl.len()) % 10000).cast(pl.String))
        + pl.col("line").str.replace(r"^\S+", "")).to_series()
    paths = {"ordinary": folder / "ordinary.log", "distinct": folder / "distinct.log"}
    for name, series in (("ordinary", ordinary), ("distinct", distinct)):
        paths[name].write_text("\n".join(series.to_list()) + "\n", encoding="utf-8")
    return paths


def measure(log: Path, out: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one end-to-end run writing a JSON report."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "log_analyser", "-f", str(log),
               "--detectors", "iforest", "-o", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{log.name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    cpu = [float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", done.stderr)]
    assert wall and rss and len(cpu) == 2, done.stderr[-2000:]
    seconds = int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])
    return seconds, sum(cpu), int(rss[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        logs = write_logs(Path(folder), args.lines)
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in logs}
        for _ in range(args.runs):
            for name, log in logs.items():
                figures[name].append(measure(log, Path(folder) / f"{name}.json"))
        medians = {name: tuple(statistics.median(run[k] for run in runs) for k in range(3))
                   for name, runs in figures.items()}
    for name, (seconds, cpu, mb) in medians.items():
        print(f"{name:<9} {args.lines:>10,} lines  {seconds:7.1f} s wall  {cpu:7.1f} s CPU  {mb:8.0f} MB peak RSS  "
              f"(median of {args.runs})")
    (t0, c0, m0), (t1, c1, m1) = medians["ordinary"], medians["distinct"]
    print(f"distinct / ordinary: {t1 / t0:.2f}x wall time, {c1 / c0:.2f}x CPU time (target <= 4), "
          f"{m1 / m0:.2f}x memory (target <= 3)")


if __name__ == "__main__":
    main()
