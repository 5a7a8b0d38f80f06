"""The whole pipeline on Spark (local[1], local[2]) next to the local Polars engine, same logs.

Each run is a fresh process running analyse() (parse, features, behaviour rules, signatures,
Sigma, detectors, verdicts) and prints wall time, the driver process's peak RSS and the clients
flagged (the same on every engine); medians over --runs runs. Spark's time includes starting the
JVM; its driver's peak is the Python process's (the JVM and its workers are apart).

    python bench/bench_spark.py --lines 1000000 --runs 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_pipeline import ensure_log  # noqa: E402

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
from log_analyser_core.engines.spark import SparkOptions
from log_analyser_core.pipeline import Settings, analyse
engine = "spark" if {master!r} else "polars"
settings = Settings(engine=engine, spark=SparkOptions(master={master!r} or "local[*]"), detectors=("iforest",))
result = analyse([{path!r}], settings)
print(json.dumps({{"seconds": time.perf_counter() - start, "clients": len(result.findings),
                  "flagged": result.summary.flagged,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
ENGINES = {"polars": "", "spark local[1]": "local[1]", "spark local[2]": "local[2]"}


def measure(master: str, path: Path) -> dict:
    code = CHILD.format(root=str(ROOT), master=master, path=str(path))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}   # Spark's Python workers import this checkout too
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "log_analyser_bench"))
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    for lines in args.lines:
        path = ensure_log(lines, 0, folder)
        for engine, master in ENGINES.items():
            runs = [measure(master, path) for _ in range(args.runs)]
            seconds = statistics.median(r["seconds"] for r in runs)
            peak = statistics.median(r["peak_mb"] for r in runs)
            print(f"{lines:>10,} lines  {engine:>14}: median {seconds:6.1f} s over {args.runs} runs, driver peak "
                  f"{peak:,.0f} MB ({lines / seconds:,.0f} lines/s, {runs[0]['clients']:,} clients, "
                  f"{runs[0]['flagged']:,} flagged)", flush=True)


if __name__ == "__main__":
    main()
