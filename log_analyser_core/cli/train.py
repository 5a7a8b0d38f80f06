"""`log_analyser train -f LOG --save DIR`: fit the anomaly detectors on trusted traffic and save them."""
from __future__ import annotations

import argparse
import sys

from log_analyser_core.cli.common import EXIT_CODES, configure_logging, detector_list, named_as_flags
from log_analyser_core.errors import ExitCode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="log_analyser train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the anomaly detectors on a period of traffic you trust and save them, so that later "
        "logs are scored against it (log_analyser -f today.log --model DIR): a site-wide attack then "
        "cannot hide by being the majority.",
        epilog="examples:\n  log_analyser train -f known_good.log --save model/\n"
        "  log_analyser train --upgrade model/     a model saved by an earlier version, in this version's format\n\n"
        + EXIT_CODES)
    parser.add_argument("-f", "--file", dest="files", action="extend", nargs="+", metavar="LOG",
                        help="access log(s) of trusted traffic: paths, globs, '-' for stdin (required with --save)")
    parser.add_argument("--save", metavar="DIR",
                        help="model directory to write (created; an existing model there is replaced)")
    parser.add_argument("--upgrade", metavar="DIR",
                        help="rewrite a model saved by an earlier version (format 1: its forest as iforest.skops) "
                        "in this version's format, which scores without scikit-learn; no log needed")
    parser.add_argument("--format", dest="format_name", default="auto", metavar="NAME",
                        help="log format preset (log_analyser --format list), default auto")
    parser.add_argument("--log-format", metavar="STRING", help="a custom Apache LogFormat or nginx log_format")
    parser.add_argument("--tz", default="UTC", metavar="ZONE", help="zone for timestamps without an offset")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the models (default 0)")
    parser.add_argument("--detectors", type=detector_list, metavar="LIST",
                        help="detectors to train, comma-separated (default: every installed one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="say more")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks on errors")
    return parser


def run(argv: list[str]) -> ExitCode:
    """Fit and save a baseline model; one summary line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.upgrade and (args.files or args.save):
        parser.error("--upgrade takes the model directory alone (no -f or --save)")
    if not args.upgrade and not (args.files and args.save):
        parser.error("the following arguments are required: -f/--file, --save (or --upgrade DIR)")
    configure_logging(args)
    if args.upgrade:
        from log_analyser_core.detectors import model_store

        upgraded = model_store.upgrade(args.upgrade)
        print(f"{args.upgrade}: " + (f"upgraded to model format {model_store.FORMAT_VERSION} (its forest as arrays, "
                                     "scored without scikit-learn)" if upgraded else
                                     f"in model format {model_store.FORMAT_VERSION} already"), file=sys.stderr)
        return ExitCode.OK
    from log_analyser_core.parsing.reader import resolve_sources
    from log_analyser_core.pipeline import Settings, train

    with named_as_flags():
        settings = Settings(format_name=args.format_name, log_format=args.log_format, tz=args.tz,
                            random_state=args.seed, detectors=args.detectors)
    summary = train(resolve_sources(args.files), args.save, settings)
    print(f"trained {' and '.join(summary['detectors'])} on {summary['clients']:,} clients "
          f"({summary['parsed_lines']:,} lines) -> {args.save}", file=sys.stderr)
    for name, needs in summary["skipped"].items():
        print(f"note: {name} not trained: {summary['clients']:,} clients are too few to fit it (needs {needs})",
              file=sys.stderr)
    return ExitCode.OK
