"""Throughput of the Sigma stage: every SigmaHQ webserver rule plus our pack over a generated log.

The log is parsed once per run (not timed); what is timed is rule evaluation and evidence building
(``sigma_engine.evaluate``: wall time, and CPU time summed over threads, which a shared machine
disturbs less), and separately loading + compiling the rules. Each run is a fresh
process; the figures are medians over --runs runs.

    python bench/bench_sigma.py --lines 1000000 --runs 5
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
SIGMAHQ = ROOT.parent / "shared" / "data" / "sigmahq-webserver"
sys.path.insert(0, str(ROOT / "bench"))

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import file_parser
from log_analyser_core.rules import sigma_engine
events = file_parser.parse([{path!r}]).events
start = time.perf_counter()
rules = sigma_engine.load([sigma_engine.builtin_dir()] + ([{sigmahq!r}] if {sigmahq!r} else []))
loaded = time.perf_counter()
cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
found = sigma_engine.evaluate(events, rules)
done = time.perf_counter()
cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu
print(json.dumps({{"lines": events.height, "rules": len(rules.rules), "load": loaded - start,
                  "evaluate": done - loaded, "cpu": cpu, "clients_with_hits": len(found)}}))
"""


def ensure_log(lines: int, seed: int, folder: Path) -> Path:
    import loggen

    path = folder / f"access-{lines}-{seed}.log"
    if not path.exists():
        generated = loggen.generate(lines, seed)
        path.write_text("\n".join(generated.lines.to_list()) + "\n", encoding="utf-8")
    return path


def measure(path: Path, sigmahq: str) -> dict:
    code = CHILD.format(root=str(ROOT), path=str(path), sigmahq=sigmahq)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigmahq", default=str(SIGMAHQ),
                        help="folder of SigmaHQ webserver rules ('' for the built-in pack alone)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "log_analyser_bench"))
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    path = ensure_log(args.lines, args.seed, folder)
    runs = [measure(path, args.sigmahq) for _ in range(args.runs)]
    first = runs[0]
    evaluate = statistics.median(r["evaluate"] for r in runs)
    load = statistics.median(r["load"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    print(f"{first['lines']:,} lines, {first['rules']} rules, {first['clients_with_hits']} clients with hits, "
          f"{args.runs} runs")
    each = ", ".join(f"{r['evaluate']:.2f}" for r in runs)
    print(f"evaluate: median {evaluate:.2f} s ({first['lines'] / evaluate:,.0f} lines/s); all runs {each}")
    print(f"evaluate CPU time (user + system, all threads): median {cpu:.2f} s")
    print(f"load + compile rules: median {load:.2f} s")


if __name__ == "__main__":
    main()
