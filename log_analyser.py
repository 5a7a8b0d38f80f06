"""log_analyser command line: parse arguments, build Settings, run the pipeline, write reports.

``run()`` raises; ``main()`` maps errors to one line on stderr and an exit code.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata

from analyser_errors import AnalyserError, ConfigError, ExitCode
from evidence import Severity

log = logging.getLogger("log_analyser")

EPILOG = """\
examples:
  log_analyser -f access.log                      ranked table of suspicious clients
  log_analyser -f access.log -o report.csv        one CSV row per client, every feature
  log_analyser -f 'logs/access.log*' -o out.json  globs, rotated and .gz/.bz2/.xz files
  zcat access.log.gz | log_analyser -f -          read standard input
  log_analyser -f access.log --fail-on high       exit 10 when a high or critical finding exists

exit codes:
  0    success (no finding at or above --fail-on)
  2    usage or configuration error
  3    input that cannot be read or parsed
  4    detection rules that do not load
  10   a finding at or above --fail-on SEVERITY (for CI gating)
  70   internal error (a bug: please report it with --debug output)
  130  interrupted
"""


def version() -> str:
    try:
        return metadata.version("log_analyser")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="log_analyser", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Rank the clients in web server access logs by how much they look like attackers, "
                    "and say why.")
    parser.add_argument("-f", "--file", dest="files", action="extend", nargs="+", required=True,
                        metavar="LOG", help="access log(s) to read: paths, globs, '-' for stdin; .gz, .bz2 "
                        "and .xz are decompressed (e.g. -f access.log access.log.1.gz)")
    parser.add_argument("-o", "--output", action="append", default=[], metavar="PATH",
                        help="write a report; the format follows the extension (.csv, .json, .txt); "
                        "'-' writes to stdout (e.g. -o report.csv). Without -o a table is printed")
    parser.add_argument("--output-format", choices=("table", "csv", "json"),
                        help="report format regardless of the -o extension (e.g. -o - --output-format json)")
    parser.add_argument("--format", dest="format_name", default="auto", metavar="NAME",
                        help="log format preset: auto (default, detected per file), combined, common, nginx")
    parser.add_argument("--log-format", metavar="STRING",
                        help="a custom format, as in your server config: Apache LogFormat "
                        "('%%h %%l %%u %%t \"%%r\" %%>s %%b') or nginx log_format ('$remote_addr ...')")
    parser.add_argument("--tz", default="UTC", metavar="ZONE",
                        help="time zone for timestamps logged without an offset (default UTC; e.g. Europe/Berlin)")
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="rows in the terminal table (default 20; e.g. --top 50)")
    parser.add_argument("--threshold", type=float, default=40.0, metavar="SCORE",
                        help="flag clients scoring at least SCORE on 0-100 (default 40 = medium; e.g. --threshold 60)")
    parser.add_argument("--contamination", type=float, metavar="FRACTION",
                        help="instead of --threshold, flag this fraction of clients (e.g. --contamination 0.01)")
    parser.add_argument("--fail-on", metavar="SEVERITY", type=_severity,
                        help="exit with code 10 if a flagged client is at least this severe: "
                        "info, low, medium, high, critical (e.g. --fail-on high)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the models (default 0)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="say more: chosen formats and the first unparsed lines")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _add_engine_options(parser)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (where parsing and per-client aggregation run)")
    group.add_argument("--engine", choices=("polars", "spark"), default="polars",
                       help="polars: this machine (default); spark: a Spark cluster, for logs too big for one "
                       "machine (needs the spark extra; e.g. --engine spark -f 's3a://bucket/logs/*.gz')")
    group.add_argument("--spark-master", default="local[*]", metavar="URL",
                       help="Spark master: local[N], spark://host:7077, yarn, k8s://..., or sc://host:15002 for "
                       "Spark Connect (no local Java needed) (default local[*])")
    group.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                       help="a Spark setting, repeatable (e.g. --spark-conf spark.executor.memory=8g)")


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_settings(args: argparse.Namespace):
    from analysis import Settings
    from file_parser import validate_timezone

    if not 0.0 <= args.threshold <= 100.0:
        raise ConfigError(f"--threshold must be between 0 and 100, not {args.threshold}")
    if args.contamination is not None and not 0.0 < args.contamination <= 0.5:
        raise ConfigError(f"--contamination must be in (0, 0.5], not {args.contamination}")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, not {args.top}")
    from spark_engine import SparkOptions, parse_conf

    spark = SparkOptions(master=args.spark_master, conf=parse_conf(args.spark_conf))
    return Settings(format_name=args.format_name, log_format=args.log_format, tz=validate_timezone(args.tz),
                    threshold=args.threshold, contamination=args.contamination, random_state=args.seed,
                    engine=args.engine, spark=spark)


def _progress_bar(files: Sequence[str]):
    """A byte-counting progress callback on stderr, shown only on a TTY and after one second."""
    from tqdm import tqdm

    sizes = [os.path.getsize(f) for f in files if f != "-" and os.path.isfile(f)]
    bar = tqdm(total=sum(sizes) or None, unit="B", unit_scale=True, delay=1.0, leave=False,
               file=sys.stderr, disable=not sys.stderr.isatty(), desc="reading")
    return bar


def _colour(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _write_reports(result, args: argparse.Namespace) -> None:
    import reporting

    if not args.output:
        sys.stdout.write(reporting.render_table(result, top=args.top, colour=_colour(sys.stdout)))
        return
    for path in args.output:
        kind = reporting.format_for(path, args.output_format)
        options = {"top": args.top} if kind == "table" else {"version": version()} if kind == "json" else {}
        text = reporting.WRITERS[kind](result, **options)
        if path == "-":
            sys.stdout.write(text)
            continue
        try:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        except OSError as exc:
            raise ConfigError(f"cannot write report: {exc.strerror}", path=path) from None
        log.info("wrote %s report to %s", kind, path)


def _show_unparsed(result, limit: int = 5) -> None:
    from reporting import terminal_safe

    for row in result.unparsed.head(limit).iter_rows(named=True):
        print(f"unparsed {terminal_safe(row['source'])}:{row['line_number']}: {row['reason']}: "
              f"{terminal_safe(row['raw'][:200])}", file=sys.stderr)


# Subcommands beside the default analysis (`log_analyser NAME ...`): name -> runner(argv).
# Each runner parses its own arguments, raises AnalyserError on expected failures and returns
# an ExitCode. A log file with one of these names is read with `-f ./NAME`.
COMMANDS: dict[str, Callable[[list[str]], ExitCode]] = {}


def run(argv: Sequence[str] | None = None) -> ExitCode:
    """Dispatch a subcommand, or analyse logs and write reports; raises AnalyserError on expected failures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return analyse_command(argv)


def analyse_command(argv: list[str]) -> ExitCode:
    """The default command: `log_analyser -f LOG [options]`."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    settings = build_settings(args)
    from analysis import analyse
    from file_parser import resolve_sources
    from reporting import summary_line

    files = resolve_sources(args.files) if settings.engine == "polars" else args.files
    bar = _progress_bar(files)
    try:
        result = analyse(files, settings, progress=bar.update)
    finally:
        bar.close()
    if args.verbose:
        _show_unparsed(result)
    _write_reports(result, args)
    sys.stdout.flush()
    print(summary_line(result), file=sys.stderr)
    for note in result.summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.fail_on is not None and result.at_least(args.fail_on):
        return ExitCode.FINDINGS
    return ExitCode.OK


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run() with errors mapped to one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return int(run(argv))
    except AnalyserError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. piped into head): not an error
        return int(ExitCode.OK)
    except SystemExit as exc:  # argparse: --help, --version and usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) else int(ExitCode.USAGE)
    except Exception:
        traceback.print_exc()
        print("error: internal error (a bug; please report it with the traceback above)", file=sys.stderr)
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
