"""`log_analyser rules check DIR...` and `log_analyser rules list`: validate and show Sigma rules."""
from __future__ import annotations

import argparse
import sys

from log_analyser_core.cli.common import add_rules_options
from log_analyser_core.errors import ExitCode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="log_analyser rules", description="Validate and list Sigma rules.")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate rule folders and list every problem at once (exit 4 on errors)")
    check.add_argument("dirs", nargs="+", metavar="DIR", help="folders or files of Sigma rules")
    check.add_argument("--strict", action="store_true", help="also exit 4 on validator warnings")
    listing = actions.add_parser("list", help="show the rules a run would use, and those skipped")
    add_rules_options(listing)
    return parser


def run(argv: list[str]) -> ExitCode:
    """Check or list rules; exit 4 (RULES) when `check` finds errors (or warnings with --strict)."""
    args = build_parser().parse_args(argv)
    return _check(args) if args.action == "check" else _list(args)


def _check(args: argparse.Namespace) -> ExitCode:
    from log_analyser_core.report.text import terminal_safe
    from log_analyser_core.rules import sigma_engine

    ruleset = sigma_engine.check(args.dirs)
    for problem in ruleset.problems:
        print(f"{problem.kind}: {terminal_safe(str(problem))}")
    counts = {kind: len(ruleset.of_kind(kind)) for kind in ("error", "unsupported", "warning")}
    print(f"{len(ruleset.rules)} rules run, {counts['unsupported']} unsupported, {counts['error']} errors, "
          f"{counts['warning']} warnings, {ruleset.other_logsource} not webserver", file=sys.stderr)
    failed = counts["error"] or (args.strict and counts["warning"])
    return ExitCode.RULES if failed else ExitCode.OK


def _list(args: argparse.Namespace) -> ExitCode:
    from log_analyser_core.report.text import terminal_safe
    from log_analyser_core.rules import sigma_engine

    folders = ([sigma_engine.builtin_dir()] if not args.no_builtin_rules else []) + args.rules_dirs
    ruleset = sigma_engine.load(folders)
    for rule in ruleset.rules:
        kind = rule.attack_type.value if rule.attack_type else "-"
        print(f"{rule.id}  {rule.severity.label:<8}  {kind:<18}  {terminal_safe(rule.title)}")
    for problem in ruleset.of_kind("unsupported"):
        print(f"skipped {terminal_safe(str(problem))}")
    print(f"{len(ruleset.rules)} rules from {len(folders)} folders", file=sys.stderr)
    return ExitCode.OK
