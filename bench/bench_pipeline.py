"""Throughput, scaling and peak memory of the pipeline on generated combined logs, and the same
file through GoAccess for comparison.

Each measurement runs in a fresh process (peak RSS and CPU time read with wait4: the process and the
children it waited for, so a run's forest process counts: its CPU time added, the larger peak RSS);
the modes alternate within each run so that load on a shared machine hits them alike; the
figures are medians over --runs runs. GoAccess is installed from Debian's packages if missing.

    python bench/bench_pipeline.py --lines 500000 1000000 --runs 5 --one-line
    python bench/bench_pipeline.py --lines 5000000 --runs 1 --no-goaccess
    python bench/bench_pipeline.py --lines --reports --runs 5 --no-goaccess --no-model

Modes: ``parse`` (file_parser.parse alone), ``end-to-end`` (``log_analyser -f LOG -o report.json``:
the defaults, the Isolation Forest fitted on the log) and ``end-to-end --model`` (scored against a
baseline with the Isolation Forest and the autoencoder, trained once on a generated log without
attackers; the autoencoder scores with NumPy).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The children's environment, taken before loggen imports Polars here: Polars writes its allocator's
# settings into os.environ on import, and a child that inherited them would keep them over the CLI's
# own (log_analyser.RETURN_FREED_MEMORY), so it would not measure what a user's run does.
CHILD_ENV = dict(os.environ)

MODES = {
    "parse": "import file_parser; r = file_parser.parse([PATH]); n = r.stats.total_lines",
    # the CLI as a user (or the Docker image) runs it: no --model, so the Isolation Forest fits on the log
    "end-to-end": ("import log_analyser; code = log_analyser.main(['-f', PATH, '-o', OUT]); "
                   "assert code == 0"),
    # scored against a baseline trained once with both detectors (bench trains it first, see ensure_model)
    "end-to-end --model": ("import log_analyser; code = log_analyser.main(['-f', PATH, '--model', MODEL, '-o', OUT]); "
                           "assert code == 0"),
}
MODEL_LINES = 200_000   # the trusted period the baseline is trained on (no attackers, another seed)
CHILD = """
import sys, time
sys.path.insert(0, {root!r})
PATH, OUT, MODEL = {path!r}, {out!r}, {model!r}
{body}
"""
ONE_LINE = '203.0.113.9 - - [02/Mar/2026:01:00:00 +0000] "GET /.env HTTP/1.1" 404 12 "-" "curl/8.5"\n'


def ensure_log(lines: int, seed: int, folder: Path, attackers: bool = True) -> Path:
    """The generated log, made in a child process: Linux counts the RSS a process had before it
    executed another program in that program's peak (ru_maxrss), so a bench process that had grown
    generating a log would report its own size as every mode's peak."""
    path = folder / (f"access-{lines}-{seed}.log" if attackers else f"good-{lines}-{seed}.log")
    if not path.exists():
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import loggen; "
                f"loggen.generate({lines}, {seed}, attackers={attackers}).lines.to_frame()"
                f".write_csv({str(path)!r}, include_header=False, quote_style='never')")
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def ensure_model(folder: Path, seed: int) -> Path:
    """A baseline with the Isolation Forest and the autoencoder, trained on a log without attackers."""
    model = folder / f"model-{MODEL_LINES}-{seed + 1}"
    if not (model / "iforest.npz").exists():   # a model of the current format (2: the forest as arrays)
        good = ensure_log(MODEL_LINES, seed + 1, folder, attackers=False)
        subprocess.run([sys.executable, "-m", "log_analyser", "train", "-f", str(good), "--save", str(model),
                        "--detectors", "iforest,autoencoder"], check=True, cwd=ROOT, env=CHILD_ENV)
    return model


def ensure_goaccess() -> str | None:
    found = shutil.which("goaccess")
    if found:
        return found
    print("goaccess missing: installing it from Debian's packages (apt-get install goaccess)", file=sys.stderr)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "goaccess"], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"cannot install goaccess ({exc}); skipping the comparison", file=sys.stderr)
        return None
    return shutil.which("goaccess")


def timed(command: list[str], timeout: float = 900.0) -> dict:
    """Wall seconds, CPU seconds (user + system) and peak RSS (bytes) of one child process; a child
    still running after ``timeout`` seconds is killed and TimeoutError raised, so that one stuck child
    cannot hold up a whole bench."""
    # stderr goes to a file, not a pipe: GoAccess writes its progress there (hundreds of KB on a slow
    # machine), and a pipe nobody reads until the child exits fills up and stops it for good
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=CHILD_ENV, cwd=ROOT)
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        timer.cancel()
        if seconds >= timeout:
            raise TimeoutError(f"{command[:3]} ran over {timeout:.0f} s and was killed")
        stderr.seek(0)
        error = stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {error[-500:]}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024}


def commands(path: Path, folder: Path, goaccess: str | None, model: Path | None) -> dict[str, list[str]]:
    out = folder / "report.json"
    runs = {mode: [sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(path), out=str(out),
                                                      model=str(model), body=body)]
            for mode, body in MODES.items() if model is not None or "MODEL" not in body}
    if goaccess:
        runs["goaccess"] = [goaccess, str(path), "--log-format=COMBINED", "--no-global-config",
                            "-o", str(folder / "goaccess.json")]
    return runs


def bench_size(lines: int, args: argparse.Namespace, folder: Path, goaccess: str | None, model: Path | None) -> None:
    path = ensure_log(lines, args.seed, folder)
    count = sum(1 for _ in open(path, "rb"))
    print(f"\nlog: {path} ({count:,} lines, {path.stat().st_size / 1e6:.0f} MB)")
    results: dict[str, list[dict]] = {}
    compare = goaccess if count <= args.goaccess_max_lines else None
    for _ in range(args.runs):
        taken = {}
        try:
            for mode, command in commands(path, folder, compare, model).items():  # alternate modes within a run
                if args.modes and mode not in args.modes:
                    continue
                taken[mode] = timed(command)
        except TimeoutError as exc:   # the whole run is left out, so that the ratios pair runs of one round
            print(f"run left out: {exc}", flush=True)
            continue
        for mode, measured in taken.items():
            results.setdefault(mode, []).append(measured)
        print("run:", json.dumps({m: [round(t["seconds"], 2), round(t["cpu"], 2), t["rss"] // 2**20]
                                  for m, t in taken.items()}), flush=True)
    for mode, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        print(f"{mode:>18}: median {seconds:6.2f} s over {len(runs)} runs = {count / seconds:>9,.0f} lines/s, "
              f"CPU {cpu:5.1f} s, peak RSS {rss / 2**20:,.0f} MiB")
    def ratio(first: str, second: str) -> None:
        if first in results and second in results:
            ratios = [a["seconds"] / b["seconds"] for a, b in zip(results[first], results[second], strict=True)]
            print(f"  {first} / {second} wall time: median {statistics.median(ratios):.2f}x "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})")
    ratio("goaccess", "end-to-end")
    ratio("goaccess", "end-to-end --model")
    ratio("end-to-end --model", "end-to-end")
    print(json.dumps({"lines": count, **{m: [round(r["seconds"], 3) for r in rs] for m, rs in results.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="*", default=[1_000_000],
                        help="sizes of the generated logs (none: only --one-line and --reports)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-goaccess", action="store_true", help="skip the GoAccess comparison")
    parser.add_argument("--goaccess-max-lines", type=int, default=1_100_000,
                        help="run GoAccess only on logs up to this many lines (it reads ~23k lines/s)")
    parser.add_argument("--no-model", action="store_true", help="skip the --model runs (and training the model)")
    parser.add_argument("--modes", nargs="+", choices=[*MODES, "goaccess"], help="only these modes (default all)")
    parser.add_argument("--one-line", action="store_true", help="also time a one-line log end to end")
    parser.add_argument("--reports", action="store_true",
                        help="also time what -o report.pdf -o report.html add to a run on examples/access.log")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "log_analyser_bench"))
    args = parser.parse_args()
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    goaccess = None if args.no_goaccess else ensure_goaccess()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    model = None if args.no_model else ensure_model(folder, args.seed)
    if args.one_line:
        bench_one_line(folder, args.runs)
    if args.reports:
        bench_reports_added(folder, args.runs)
    for lines in args.lines:
        bench_size(lines, args, folder, goaccess, model)


REPORTS_TARGET = 1.5   # seconds the PDF and HTML reports may add to a run on the sample log (issue 19)


def bench_reports_added(folder: Path, runs: int) -> None:
    """What the PDF and HTML reports add to a run on the sample log: ``-o report.json`` against
    ``-o report.json -o report.pdf -o report.html``, alternating, each in a fresh process; the
    median added wall and CPU time against REPORTS_TARGET."""
    sample = str(ROOT / "examples" / "access.log")
    base = [sys.executable, "-m", "log_analyser", "-f", sample, "-q", "-o", str(folder / "sample.json")]
    both = [*base, "-o", str(folder / "sample.pdf"), "-o", str(folder / "sample.html")]
    timed(both)   # a first run fills the rule-pack cache and the page cache
    pairs = [(timed(base), timed(both)) for _ in range(runs)]
    for label, key in (("wall", "seconds"), ("CPU", "cpu")):
        added = [b[key] - a[key] for a, b in pairs]
        median = {side: statistics.median(p[i][key] for p in pairs) for i, side in enumerate(("without", "with"))}
        verdict = "met" if statistics.median(added) <= REPORTS_TARGET else "not met"
        print(f"\nPDF + HTML on examples/access.log, {label}: median {median['without']:.2f} s "
              f"without, {median['with']:.2f} s with; added per run: median "
              f"{statistics.median(added):.2f} s ({', '.join(f'{a:.2f}' for a in added)}); "
              f"target <= {REPORTS_TARGET} s {verdict}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)


def bench_one_line(folder: Path, runs: int) -> None:
    """`log_analyser -f one.log -o report.json` in a fresh process, as a CI job or cron run starts it;
    the first run (which fills the rule-pack cache) is not counted."""
    path = folder / "one-line.log"
    path.write_text(ONE_LINE, encoding="utf-8")
    command = [sys.executable, "-m", "log_analyser", "-f", str(path), "-o", str(folder / "one-line.json")]
    timed(command)
    times = [timed(command) for _ in range(runs)]
    seconds = statistics.median(t["seconds"] for t in times)
    each = ", ".join(f"{t['seconds']:.2f}" for t in times)
    print(f"\none-line log end to end: median {seconds:.2f} s over {runs} runs ({each}), "
          f"CPU {statistics.median(t['cpu'] for t in times):.2f} s, "
          f"peak RSS {statistics.median(t['rss'] for t in times) / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
