"""The Spark engine (local[2]) next to the local Polars engine on the same generated logs.

Each run is a fresh process running parse + per-client aggregation (the part --engine spark moves to
a cluster) and prints wall time; medians over --runs runs. Spark's time includes starting the JVM.

    python bench/bench_spark.py --lines 1000000 5000000 --runs 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_pipeline import ensure_log  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
if {engine!r} == "spark":
    from log_analyser_core.engines import spark as spark_engine
    options = spark_engine.SparkOptions(master="local[2]")
    table = spark_engine.aggregate([{path!r}], options=options).features
else:
    import file_parser, ip_features
    table = ip_features.compute(file_parser.parse([{path!r}]).events)
print(json.dumps({{"seconds": time.perf_counter() - start, "clients": table.height}}))
"""


def measure(engine: str, path: Path) -> dict:
    code = CHILD.format(root=str(ROOT), engine=engine, path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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
        for engine in ("polars", "spark"):
            runs = [measure(engine, path) for _ in range(args.runs)]
            seconds = statistics.median(r["seconds"] for r in runs)
            print(f"{lines:>10,} lines  {engine:>6}: median {seconds:6.1f} s over {args.runs} runs "
                  f"({lines / seconds:,.0f} lines/s, {runs[0]['clients']:,} clients)")


if __name__ == "__main__":
    main()
