"""Time to render each report format from one analysis of a generated log, and the output sizes.

The log is analysed once; each writer then renders the same result --runs times and the median
is printed. The largest inputs to the writers are the events (timeline, sample lines) and the
number of clients (HTML rows and panels, PDF pages).

    python bench/bench_reports.py --lines 200000 --runs 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

FORMATS = ("table", "csv", "json", "pdf", "html", "nginx", "nftables", "crowdsec", "ecs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import loggen

    import reporting
    from log_analyser_core.pipeline import analyse
    from log_analyser_core.results import Severity

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "access.log"
        path.write_text("\n".join(loggen.generate(args.lines, args.seed).lines.to_list()) + "\n", encoding="utf-8")
        result = analyse([str(path)])
    print(f"{result.summary.parsed_lines:,} lines, {result.summary.clients:,} clients, "
          f"{result.summary.flagged:,} flagged; median of {args.runs} runs")
    options = {"top": 20, "version": "bench", "severity": Severity.MEDIUM, "pages": 20}
    print(f"{'format':<10} {'seconds':>8} {'size':>12}")
    for kind in FORMATS:
        times, size = [], 0
        for _ in range(args.runs):
            start = time.perf_counter()
            output = reporting.render(kind, result, **options)
            times.append(time.perf_counter() - start)
            size = len(output if isinstance(output, bytes) else output.encode())
        print(f"{kind:<10} {statistics.median(times):>8.3f} {size:>12,}")


if __name__ == "__main__":
    main()
