"""What the subcommands share: argument types, shared options, the version, logging setup.

Argument types raise ``argparse.ArgumentTypeError`` so that argparse prints a usage error (exit 2).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from importlib import metadata

from log_analyser_core.errors import ConfigError, SettingError
from log_analyser_core.results import Severity

EXIT_CODES = """\
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


def duration(text: str) -> float:
    """Seconds from ``3600``, ``30m``, ``24h`` or ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], text[-1].lower()) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)")
    return seconds


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def size(text: str) -> int:
    """Bytes from '500M', '20G' or '1048576' (binary units)."""
    number, unit = text.strip().upper().removesuffix("B"), ""
    if number[-1:] in _SIZE_UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 500M or 20G)") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 500M or 20G)")
    return int(value)


def severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pages(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of pages, not {text!r}")
    return int(text)


def detector_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError("name at least one detector: iforest, autoencoder")
    return names


def add_rules_options(parser: argparse.ArgumentParser) -> None:
    """--rules and --no-builtin-rules: which Sigma folders run (the analysis and `rules list`)."""
    parser.add_argument("--rules", dest="rules_dirs", action="append", default=[], metavar="DIR",
                        help="add a folder (or file) of Sigma rules to the built-in pack; repeatable "
                        "(e.g. --rules ~/sigma/rules/web)")
    parser.add_argument("--no-builtin-rules", action="store_true",
                        help="run only the --rules folders, not the built-in Sigma rule pack")
    parser.add_argument("--crs", metavar="DIR", default=None,
                        help="an OWASP Core Rule Set folder (a release, a checkout or its rules/) whose request "
                        "rules run over the log; default: the one `log_analyser rules update --crs` installed")
    parser.add_argument("--no-crs", action="store_true", help="do not run the Core Rule Set, even if installed")
    parser.add_argument("--crs-set", dest="crs_settings", action="append", default=[], metavar="NAME=VALUE",
                        help="a CRS setting as crs-setup.conf sets it, repeatable (e.g. crs_validate_utf8_encoding=0 "
                        "for a Latin-1 site, inbound_anomaly_score_threshold=10)")
    parser.add_argument("--paranoia", type=int, choices=(1, 2, 3, 4), default=1, metavar="N",
                        help="CRS paranoia level 1-4: higher runs more rules, with more false positives "
                        "(default 1)")


def configure_logging(args: argparse.Namespace) -> None:
    """Log lines on stderr: warnings, or more with --verbose / --debug."""
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr, force=True)
    # urllib3 logs every retry; failed lookups are summed up in one note instead
    logging.getLogger("urllib3").setLevel(logging.DEBUG if args.debug else logging.ERROR)


# Settings fields whose flag is not the field's name with dashes.
FLAG_NAMES = {"random_state": "--seed", "format_name": "--format", "rule_paths": "--behaviour-rules",
              "rules_dirs": "--rules"}


def flag(setting: str) -> str:
    """The command-line flag that sets a Settings field (threshold -> --threshold)."""
    return FLAG_NAMES.get(setting, "--" + setting.replace("_", "-"))


@contextlib.contextmanager
def named_as_flags() -> Iterator[None]:
    """Settings' own errors, re-raised naming the flags: '--threshold must be between 0 and 100'."""
    try:
        yield
    except SettingError as exc:
        raise ConfigError(exc.render(flag), hint=exc.hint) from None
