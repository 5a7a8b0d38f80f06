"""What the LLM stage costs on our side: building the redacted requests for the top findings
(example-line selection over the events table, redaction, budgeting) and redaction throughput.

The model's own latency is not ours to measure; requests go out three at a time. Medians of --runs.

    python bench/bench_explain.py --lines 1000000 --runs 5
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


def median_seconds(action, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    import bench_pipeline

    from log_analyser_core.explain import explanations, redaction
    from log_analyser_core.pipeline import Settings, analyse

    with tempfile.TemporaryDirectory(prefix="bench_explain_") as folder:
        path = bench_pipeline.ensure_log(args.lines, 0, Path(folder))
        result = analyse([str(path)], Settings(contamination=0.05))
    settings = explanations.ExplainSettings(top=args.top, redact_ips=True)
    requests = explanations.plan(result, settings)
    plan_s = median_seconds(lambda: explanations.plan(result, settings), args.runs)
    raw = result.events["raw"].head(100_000).to_list()
    redact_s = median_seconds(lambda: [redaction.redact(line) for line in raw], args.runs)
    tokens = statistics.median(explanations._tokens(r.body) for r in requests)
    print(f"{result.summary.parsed_lines:,} events, {len(requests)} requests planned")
    print(f"plan (select lines, redact, budget) for top {args.top}: {plan_s * 1000:.0f} ms median")
    print(f"estimated prompt size per request: {tokens:.0f} tokens median")
    print(f"redaction: {len(raw) / redact_s:,.0f} lines/s median")


if __name__ == "__main__":
    main()
