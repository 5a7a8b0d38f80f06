"""The CRS stage measured: rule-set load time, recall and false positives on CSIC 2010 beside the
hand-written payload signatures, and the stage's share of an end-to-end run.

    python bench/bench_crs.py quality              # CSIC 2010 at PL1 and PL2, signatures beside
    python bench/bench_crs.py load                 # load time of the rule set, PL1-PL4
    python bench/bench_crs.py cost --log 1m.log    # the stage alone vs whole runs with and without CRS

CRS is read from ../shared/data/knowledge/coreruleset (never copied into the repository).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CRS = ROOT.parent / "shared" / "data" / "knowledge" / "coreruleset"


def quality(levels: tuple[int, ...] = (1, 2)) -> None:
    """Per CSIC request (one client each): flagged by CRS (anomaly score over the threshold) or by
    the signatures; anomalous requests whose payload a log shows (a query in the URL) vs normal ones."""
    import csic

    import file_parser
    from log_analyser_core.rules import signatures
    from log_analyser_core.rules.crs import stage

    with tempfile.TemporaryDirectory() as folder:
        sets = {}
        for kind in ("anomalous", "normal"):
            requests = [r for r in csic.read(kind) if r.visible]
            path = Path(folder) / f"{kind}.log"
            path.write_text("".join(csic.log_line(r, i) + "\n" for i, r in enumerate(requests)), encoding="latin-1")
            sets[kind] = file_parser.parse([str(path)]).events
        signed = {kind: set(events.with_row_index("_row").filter(
            pl.any_horizontal(signatures.matches(events)))["_row"].to_list()) for kind, events in sets.items()}
        print(f"CSIC 2010, requests whose payload a log shows: {sets['anomalous'].height:,} anomalous, "
              f"{sets['normal'].height:,} normal")
        _row("signatures", signed, sets)
        for level in levels:
            ruleset = stage.load(CRS, level)
            started = time.perf_counter()
            hits = {kind: stage.matches(events, ruleset) for kind, events in sets.items()}
            seconds = time.perf_counter() - started
            flagged = {kind: set(h["_row"].to_list()) for kind, h in hits.items()}
            _row(f"CRS PL{level}", flagged, sets, f" ({seconds:.1f} s)")
            only_signatures = signed["anomalous"] - flagged["anomalous"]
            print(f"  anomalous caught by the signatures and not CRS PL{level}: {len(only_signatures)}; "
                  f"normal flagged by the signatures and not CRS: {len(signed['normal'] - flagged['normal'])}")
            _families(hits, ruleset)


def _row(name: str, flagged: dict[str, set[int]], sets: dict[str, pl.DataFrame], extra: str = "") -> None:
    recall = len(flagged["anomalous"]) / sets["anomalous"].height
    false = len(flagged["normal"]) / sets["normal"].height
    print(f"{name:<12} recall {recall:6.1%} ({len(flagged['anomalous']):,})  false positives {false:6.2%} "
          f"({len(flagged['normal']):,}){extra}")


def _families(hits: dict[str, pl.DataFrame], ruleset) -> None:
    """Flagged requests by the attack types of the rules that fired (a request may count in several)."""
    from log_analyser_core.rules.crs import stage

    kinds = {r.id: stage.attack_type_of(r.rule.tags) for r in ruleset.rules}
    for kind, frame in hits.items():
        per_request: dict[int, set[str]] = {}
        for row, rule in frame.select("_row", "rule").iter_rows():
            per_request.setdefault(row, set()).add(str(kinds.get(rule) or "other"))
        counts = Counter(t for types in per_request.values() for t in types)
        print(f"  {kind}: " + ", ".join(f"{t} {n:,}" for t, n in counts.most_common()))


def load(runs: int = 5) -> None:
    from log_analyser_core.rules.crs import stage

    for level in (1, 2, 3, 4):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            ruleset = stage.load(CRS, level)
            times.append(time.perf_counter() - started)
        print(f"PL{level}: {len(ruleset.rules)} rules, {len(ruleset.unsupported)} unsupported, "
              f"load median {statistics.median(times):.3f} s over {runs} runs")


def cost(log: Path, runs: int) -> None:
    import file_parser
    from log_analyser_core.rules.crs import stage

    events = file_parser.parse([str(log)]).events
    ruleset = stage.load(CRS, 1)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        stage.evaluate(events, ruleset)
        times.append(time.perf_counter() - started)
    print(f"stage alone on {events.height:,} events: median {statistics.median(times):.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in times)})")
    for name, extra in (("without CRS", ["--no-crs"]), ("with CRS PL1", ["--crs", str(CRS)])):
        command = [sys.executable, "-m", "log_analyser", "-f", str(log), "--detectors", "iforest",
                   "-o", "json:/dev/null", *extra]
        walls = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
        runs_text = ", ".join(f"{t:.2f}" for t in walls)
        print(f"end to end {name}: median {statistics.median(walls):.2f} s (runs {runs_text})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "load", "cost"))
    parser.add_argument("--log", type=Path, help="cost: the log to run on (bench/loggen.py makes one)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.what == "quality":
        quality()
    elif args.what == "load":
        load()
    else:
        if args.log is None:
            parser.error("cost needs --log")
        cost(args.log, args.runs)


if __name__ == "__main__":
    main()
