"""`log_analyser evaluate -f LOG --labels labels.csv [--json]`: detection quality against per-IP labels."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from log_analyser_core.cli.common import named_as_flags
from log_analyser_core.errors import ConfigError, ExitCode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="log_analyser evaluate",
                                     description="Score detection quality against per-IP labels.")
    parser.add_argument("-f", "--file", dest="files", action="extend", nargs="+", required=True, metavar="LOG",
                        help="access log(s) to analyse: paths, globs, '-' for stdin")
    parser.add_argument("--labels", required=True, help="CSV with ip,label,attack_type (label: attack/benign)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-o", "--output", metavar="PATH", help="write the report to PATH instead of stdout")
    parser.add_argument("--format", dest="format_name", default="auto", metavar="NAME",
                        help="log format preset (log_analyser --format list), default auto")
    parser.add_argument("--threshold", type=float, default=40.0, metavar="SCORE",
                        help="flag clients scoring at least SCORE (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the models (default 0)")
    return parser


def run(argv: list[str]) -> ExitCode:
    """Analyse the log, score the findings against the labels, write the scores (text or JSON)."""
    from log_analyser_core.evaluation import read_labels, render, score
    from log_analyser_core.parsing.reader import resolve_sources
    from log_analyser_core.pipeline import Settings, analyse

    args = build_parser().parse_args(argv)
    with named_as_flags():
        settings = Settings(format_name=args.format_name, threshold=args.threshold, random_state=args.seed)
    labels = read_labels(args.labels)
    result = analyse(resolve_sources(args.files), settings)
    scores = score(result.findings, labels)
    text = json.dumps(asdict(scores), indent=2) + "\n" if args.json else render(scores)
    if not args.output:
        sys.stdout.write(text)
        return ExitCode.OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write report: {exc.strerror}", path=args.output) from None
    return ExitCode.OK
