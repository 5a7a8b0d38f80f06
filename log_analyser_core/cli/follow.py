"""`log_analyser -f LOG --follow`: the live mode's options, their checks and the run."""
from __future__ import annotations

import argparse
import shlex
import sys

from log_analyser_core.cli.common import duration
from log_analyser_core.errors import ConfigError, ExitCode


def add_follow_options(parser: argparse.ArgumentParser) -> None:
    """The live-mode options (the default command's: `log_analyser -f LOG --follow`)."""
    group = parser.add_argument_group("live mode (see README: Live mode)")
    group.add_argument("--follow", action="store_true",
                       help="keep reading the logs as they grow (tail -F: rotation, files that appear later), "
                       "alert on each client that reaches --threshold or rises in severity, keep the -o reports "
                       "and blocklists current; ends cleanly on SIGTERM or Ctrl-C")
    group.add_argument("--alerts", metavar="FILE",
                       help="append alert lines (JSON, one per alert) to FILE instead of standard output")
    group.add_argument("--on-change", metavar="COMMAND",
                       help="run COMMAND after the -o files are rewritten (split like a shell would, run "
                       "without one; e.g. --on-change 'systemctl reload nginx')")
    group.add_argument("--from-start", action="store_true",
                       help="read the files from their beginning (default: from their end, as tail -F)")
    group.add_argument("--checkpoint", metavar="FILE",
                       help="where the follower keeps its place (default: in the user data directory)")
    group.add_argument("--idle-ttl", type=duration, default=3600.0, metavar="DURATION",
                       help="forget a client silent this long (default 1h)")
    group.add_argument("--max-events", type=int, default=150_000, metavar="N",
                       help="requests kept in memory in all (default 150000, about 100 bytes each; a follower's "
                       "RSS stayed under 400 MB with it in the README's bench); beyond it clients are forgotten, "
                       "those that look benign and were seen least recently first")
    group.add_argument("--refit-interval", type=duration, default=600.0, metavar="DURATION",
                       help="without --model, refit the anomaly baseline on the live clients this often "
                       "(default 10m)")


def check(args: argparse.Namespace) -> None:
    """Refuse what has no meaning in live mode (ConfigError: exit 2); also refuse the live options without it."""
    if not args.follow:
        for flag in ("alerts", "on_change", "checkpoint"):
            if getattr(args, flag):
                raise ConfigError(f"--{flag.replace('_', '-')} needs --follow")
        if args.from_start:
            raise ConfigError("--from-start needs --follow")
        return
    refused = {"--fail-on": args.fail_on is not None, "--contamination": args.contamination is not None,
               "--engine spark": args.engine == "spark", "--enrich": args.enrich, "--explain": args.explain,
               "--details": bool(args.details), "-f -": "-" in args.files}
    for flag, given in refused.items():
        if given:
            raise ConfigError(f"{flag} cannot be used with --follow",
                              hint=_WHY.get(flag, "it reads a finished log"))
    if "-" in args.output:
        raise ConfigError("-o - cannot be used with --follow", hint="alerts go to standard output; write to files")
    if args.on_change is not None and not shlex.split(args.on_change):
        raise ConfigError("--on-change is empty")
    if args.max_events < 1000:
        raise ConfigError(f"--max-events must be at least 1000, not {args.max_events}")


_WHY = {"--fail-on": "a live run never finishes with a verdict; alerts report each client as it crosses "
                     "--threshold",
        "--contamination": "a fraction of clients changes with every new client; use --threshold",
        "-f -": "follow files, not standard input"}


def run(args: argparse.Namespace, settings) -> ExitCode:
    import signal
    from pathlib import Path

    import reporting
    from log_analyser_core.live.follow import FollowOptions, Screen, follow
    from log_analyser_core.live.store import Limits

    targets = tuple(reporting.format_for(path, args.output_format) for path in args.output)
    options = FollowOptions(
        patterns=tuple(args.files), from_start=args.from_start, alerts_path=args.alerts, reports=targets,
        report_options={"top": args.top, "severity": args.block_severity, "pages": args.pdf_pages},
        on_change=tuple(shlex.split(args.on_change)) if args.on_change else (),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        limits=Limits(idle_ttl=args.idle_ttl, max_events=args.max_events), refit_interval=args.refit_interval)
    terminal = sys.stdout.isatty()
    def table(result) -> str:
        import os
        import shutil

        colour = "NO_COLOR" not in os.environ
        return reporting.render_table(result, top=args.top, colour=colour, width=shutil.get_terminal_size().columns)
    screen = Screen(sys.stdout, table) if terminal else None
    # on a terminal the table is the view (alert lines only to --alerts FILE); elsewhere alert lines to stdout
    stream = None if terminal else sys.stdout

    def ready(files: int) -> None:
        print(f"following {files} file(s) of {', '.join(args.files)}; alerts to "
              f"{args.alerts or ('the table' if terminal else 'standard output')}", file=sys.stderr, flush=True)
    sent, caught = follow(settings, options, screen=screen, alerts_stream=stream, ready=ready)
    print(f"follow: stopped; {sent} alert(s) sent this run; checkpoint written", file=sys.stderr)
    return ExitCode.INTERRUPTED if caught == signal.SIGINT else ExitCode.OK
