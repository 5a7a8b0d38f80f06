"""`log_analyser cache stats|clear [--cache PATH]`: inspect or empty the lookup cache."""
from __future__ import annotations

import argparse
import logging
import sys

from log_analyser_core.errors import ExitCode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="log_analyser cache", description="Inspect or empty the lookup cache "
                                     "(AbuseIPDB answers and other stages' stored results).")
    parser.add_argument("action", choices=("stats", "clear"))
    parser.add_argument("--cache", metavar="PATH", help="cache file (default: in the user cache directory)")
    parser.add_argument("--namespace", metavar="NAME", help="clear only this namespace (e.g. abuseipdb)")
    parser.add_argument("--expired", action="store_true", help="clear only expired entries")
    return parser


def run(argv: list[str]) -> ExitCode:
    """Print what the cache holds, or remove entries (all, one namespace, or only expired ones)."""
    from pathlib import Path

    from log_analyser_core.enrich.cache import CacheStore, default_cache_path

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr, force=True)
    path = Path(args.cache) if args.cache else default_cache_path()
    if not path.exists():
        print(f"cache: {path} (no cache file yet)")
        return ExitCode.OK
    with CacheStore(path) as store:
        if args.action == "clear":
            removed = store.clear(args.namespace, expired_only=args.expired)
            print(f"removed {removed:,} entries from {path}")
        else:
            _print_stats(store.stats())
    return ExitCode.OK


def _print_stats(stats) -> None:
    state = "" if stats.enabled else ", not in use"
    print(f"cache: {stats.path} (schema {stats.schema_version}, {stats.size_bytes / 1024:,.1f} KiB{state})")
    print(f"{'namespace':<20} {'entries':>9} {'expired':>9}")
    for ns in stats.namespaces:
        print(f"{ns.namespace:<20} {ns.entries:>9,} {ns.expired:>9,}")
    print(f"{'total':<20} {stats.entries:>9,}")
