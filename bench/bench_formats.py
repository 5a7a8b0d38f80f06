"""Parse throughput (lines/s) per log format preset, on logs of --lines lines.

``combined`` reads a generated log (bench/loggen.py); every other preset reads its golden sample
(tests/data/formats/NAME.log) repeated to the same length. Each run is a fresh process that times
only ``file_parser.parse``; presets alternate within a run so that load on a shared machine hits
them alike, and the figures are medians over --runs runs. ``--baseline DIR`` also measures
another checkout (e.g. main before a change) on the same files, alternating with this one run by
run, and prints the median of the per-run time ratios (this / baseline): on a shared machine the
ratio of neighbouring runs is steadier than either time.

    python bench/bench_formats.py --lines 1000000 --runs 5 --presets combined traefik
    python bench/bench_formats.py --baseline /tmp/main-before --presets combined --runs 7
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
SAMPLES = ROOT / "tests" / "data" / "formats"
CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import file_parser
start = time.perf_counter()
r = file_parser.parse([{path!r}], format_name={name!r}, max_unparsed_ratio=1.0)
print(time.perf_counter() - start, r.stats.total_lines, r.stats.parsed_lines)
"""


def sample_log(name: str, lines: int, folder: Path, seed: int) -> Path:
    path = folder / f"{name}-{lines}.log"
    if path.exists():
        return path
    if name == "combined":
        sys.path.insert(0, str(ROOT / "bench"))
        import loggen

        generated = loggen.generate(lines, seed).lines.head(lines)
        generated.to_frame().write_csv(path, include_header=False, quote_style="never")
        return path
    text = (SAMPLES / f"{name}.log").read_text(encoding="utf-8").splitlines()
    header = [line for line in text if line.startswith("#")][:4] if name in ("w3c", "cloudfront") else []
    if name == "csv":
        header, text = text[:1], text[1:]
    data = [line for line in text if line.strip() and not line.startswith("#")]
    body = (data * (lines // len(data) + 1))[:lines - len(header)]
    path.write_text("\n".join(header + body) + "\n", encoding="utf-8")
    return path


def run_once(root: str, path: Path, name: str) -> tuple[float, int, int]:
    code = CHILD.format(root=root, path=str(path), name=name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    seconds, total, parsed = out.stdout.split()
    return float(seconds), int(total), int(parsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", nargs="+", help="default: every preset with a golden sample")
    parser.add_argument("--baseline", help="another checkout to compare with, run by run")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "log_analyser_bench_formats"))
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    names = args.presets or sorted(p.stem for p in SAMPLES.glob("*.log") if p.stem != "w3c_blocks")
    paths = {name: sample_log(name, args.lines, folder, args.seed) for name in names}
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    roots = {"this": str(ROOT), **({"baseline": args.baseline} if args.baseline else {})}
    times: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for _ in range(args.runs):
        for name in names:
            for label, root in roots.items():
                try:
                    seconds, total, parsed = run_once(root, paths[name], name)
                except subprocess.CalledProcessError:   # e.g. a preset the baseline does not have
                    continue
                times.setdefault((label, name), []).append(seconds)
                counts[(label, name)] = (total, parsed)
    for name in names:
        for label in roots:
            if (label, name) not in times:
                continue
            total, parsed = counts[(label, name)]
            runs = times[(label, name)]
            median = statistics.median(runs)
            print(f"{name:>16} {label:>8}: median {median:6.2f} s over {len(runs)} runs = "
                  f"{total / median:>11,.0f} lines/s ({parsed:,} of {total:,} parsed; "
                  f"runs {', '.join(f'{t:.2f}' for t in runs)})")
        if ("baseline", name) in times and ("this", name) in times:
            ratios = [a / b for a, b in zip(times[("this", name)], times[("baseline", name)], strict=True)]
            print(f"{name:>16}    ratio: this / baseline time, median {statistics.median(ratios):.3f} "
                  f"({', '.join(f'{r:.3f}' for r in ratios)})")
    print(json.dumps({f"{label}:{name}": [round(t, 3) for t in ts] for (label, name), ts in times.items()}))


if __name__ == "__main__":
    main()
