"""Throughput and peak memory of the pipeline on generated combined logs.

Each measurement runs in a fresh process (so peak RSS is that run's own); the figures are
medians over --runs runs.

    python bench/bench_pipeline.py --lines 1000000 --runs 5
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

MODES = {
    "parse": "import file_parser; r = file_parser.parse([PATH]); n = r.stats.total_lines",
    "end-to-end": ("import log_analyser; code = log_analyser.main(['-f', PATH, '-o', OUT]); "
                   "assert code == 0; n = sum(1 for _ in open(PATH, 'rb'))"),
}
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
PATH, OUT = {path!r}, {out!r}
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"lines": n, "seconds": elapsed, "rss": rss}}))
"""


def ensure_log(lines: int, seed: int, folder: Path) -> Path:
    import loggen

    path = folder / f"access-{lines}-{seed}.log"
    if not path.exists():
        generated = loggen.generate(lines, seed)
        path.write_text("\n".join(generated.lines.to_list()) + "\n", encoding="utf-8")
    return path


def measure(mode: str, path: Path, out: Path) -> dict:
    code = CHILD.format(root=str(ROOT), path=str(path), out=str(out), body=MODES[mode])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "log_analyser_bench"))
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    path = ensure_log(args.lines, args.seed, folder)
    print(f"log: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    for mode in MODES:
        runs = [measure(mode, path, folder / "report.json") for _ in range(args.runs)]
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss"] for r in runs)
        lines = runs[0]["lines"]
        print(f"{mode:>11}: {lines:,} lines, median {seconds:.2f} s over {args.runs} runs = "
              f"{lines / seconds:,.0f} lines/s, peak RSS {rss / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
