"""`log_analyser rules check DIR...` and `log_analyser rules list`: validate and show Sigma rules."""
from __future__ import annotations

import argparse
import sys

from log_analyser_core.cli.common import add_rules_options
from log_analyser_core.errors import ExitCode


def build_parser() -> argparse.ArgumentParser:
    from log_analyser_core.rules.crs.install import DEFAULT_VERSION as DEFAULT_CRS_VERSION

    parser = argparse.ArgumentParser(prog="log_analyser rules", description="Validate and list Sigma rules; "
                                     "install the OWASP Core Rule Set.")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate rule folders and list every problem at once (exit 4 on errors)")
    check.add_argument("dirs", nargs="+", metavar="DIR", help="folders or files of Sigma rules")
    check.add_argument("--strict", action="store_true", help="also exit 4 on validator warnings")
    listing = actions.add_parser("list", help="show the rules a run would use, and those skipped")
    add_rules_options(listing)
    update = actions.add_parser("update", help="download and install a rule set, checksum verified, into the user "
                                "data dir: SigmaHQ's released rules (to use with --rules DIR), or with --crs an "
                                "OWASP CRS release (used by every run from then on)")
    update.add_argument("--crs", nargs="?", const=DEFAULT_CRS_VERSION, default=None, metavar="VERSION",
                        help=f"install OWASP CRS release VERSION (default {DEFAULT_CRS_VERSION}) instead of SigmaHQ")
    update.add_argument("--package", default="core", help="SigmaHQ: core (default), core+, core++, "
                        "emerging-threats or all")
    update.add_argument("--url", default=None, help="SigmaHQ: the GitHub release API URL (default: "
                        "LOG_ANALYSER_SIGMAHQ_URL, else SigmaHQ's latest release); --crs: the archive URL, "
                        "{version} replaced (default: the GitHub release)")
    update.add_argument("--sha256", default=None, metavar="HEX",
                        help="--crs: the archive's expected SHA-256 (default: read from <archive URL>.sha256)")
    update.add_argument("--dest", metavar="DIR", help="SigmaHQ: install under DIR (default: the user data dir)")
    return parser


def run(argv: list[str]) -> ExitCode:
    """Check or list rules; exit 4 (RULES) when `check` finds errors (or warnings with --strict)."""
    args = build_parser().parse_args(argv)
    if args.action == "update":
        return _update_crs(args) if args.crs else _update_sigmahq(args)
    return _check(args) if args.action == "check" else _list(args)


def _update_sigmahq(args: argparse.Namespace) -> ExitCode:
    import os
    from pathlib import Path

    from log_analyser_core.rules import sigmahq

    url = args.url or os.environ.get("LOG_ANALYSER_SIGMAHQ_URL") or sigmahq.RELEASE_URL
    done = sigmahq.update(args.package, url, Path(args.dest) if args.dest else None)
    print(f"installed SigmaHQ {done.tag} ({done.package}, sha256 {done.sha256[:12]}...): {done.rules} webserver "
          f"rules ({done.skipped} for other log sources left out); use them with --rules {done.folder}",
          file=sys.stderr)
    print(done.folder)
    return ExitCode.OK


def _update_crs(args: argparse.Namespace) -> ExitCode:
    from log_analyser_core.rules.crs import install

    folder = install.update(args.crs, url_template=args.url or install.RELEASE_URL, sha256=args.sha256)
    print(f"installed OWASP CRS {args.crs} in {folder}; runs use it unless --crs or --no-crs is given",
          file=sys.stderr)
    return ExitCode.OK


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
