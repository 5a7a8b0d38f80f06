"""log_analyser command line: parse arguments, build Settings, run the pipeline, write reports.

``run()`` raises; ``main()`` maps errors to one line on stderr and an exit code.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import NoReturn

from log_analyser_core.errors import AnalyserError, ConfigError, ExitCode
from log_analyser_core.results import Severity

# Polars allocates through jemalloc, which keeps freed pages for a while. The stages free and allocate
# hundreds of MB in turn, so the peak RSS of a big log was largely memory already freed (5M lines:
# 2.1 GiB, 1.4 GiB returning it at once). Returning every page at once costs system time, though
# (1M lines: +1.4 s of CPU, a fifth of the run), so a small input keeps freed pages a quarter of a
# second. Polars reads this when it is first imported: main() sets it before anything imports Polars.
RETURN_FREED_MEMORY = "background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0"
RETURN_FREED_MEMORY_SOON = "background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0"
LARGE_INPUT_BYTES = 512 * 2**20

log = logging.getLogger("log_analyser")

EPILOG = """\
examples:
  log_analyser -f access.log                      ranked table of suspicious clients
  log_analyser -f access.log -o report.csv        one CSV row per client, every feature
  log_analyser -f 'logs/access.log*' -o out.json  globs, rotated and .gz/.bz2/.xz files
  zcat access.log.gz | log_analyser -f -          read standard input
  log_analyser -f access.log --fail-on high       exit 10 when a high or critical finding exists
  log_analyser -f access.log --all --width 120    every client, in a 120-column table
  log_analyser -f access.log -o summary.md -o report.junit.xml   Markdown summary and JUnit XML for CI
  log_analyser -f access.log --allow allow.yaml   never report allowlisted IPs, agents or paths
  log_analyser evaluate -f dev.log --labels labels.csv   precision, recall and type accuracy
  log_analyser -f access.log --enrich -o r.csv    add AbuseIPDB reputation, country and ASN
  log_analyser cache stats                        what the lookup cache holds (cache clear empties it)
  log_analyser -f access.log --explain --dry-run-llm   show what an LLM would be sent; send nothing
  log_analyser -f access.log -o r.pdf -o r.html   PDF report and self-contained HTML dashboard
  log_analyser -f access.log -o deny.conf         nginx deny include of high and critical clients
  log_analyser -f access.log --details 192.0.2.9  one client's full evidence
  log_analyser -f access.log --rules my-rules/    add a folder of Sigma rules to the built-in pack
  log_analyser rules check my-rules/              validate Sigma rules, listing every problem
  log_analyser rules list                         show the Sigma rules that run, and those skipped
  log_analyser rules update                       fetch SigmaHQ's released webserver rules (checksum verified)
  log_analyser train -f known_good.log --save model/   fit a baseline on traffic you trust
  log_analyser -f today.log --model model/        score against that baseline
  log_analyser -f access.log --follow --model model/ -o deny.conf   live: alert lines, blocklist kept current

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
                        help="write a report (repeatable); the format follows the extension: .csv .json .txt "
                        ".pdf .html .jsonl (ECS) .conf (nginx) .apache.conf .iptables .ip6tables .nft "
                        ".crowdsec.json, blocklist.txt; or FORMAT:PATH; '-' writes to stdout. "
                        "Without -o a table is printed")
    _add_input_options(parser)
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="flagged clients in the terminal table (default 20; e.g. --top 50); the next few "
                        "highest scores follow them, and one line counts the rest")
    parser.add_argument("--all", dest="all_clients", action="store_true",
                        help="list every client in the table, not only the flagged ones and the next few")
    parser.add_argument("--width", type=int, metavar="N",
                        help="fit the table to N columns (default: the terminal's width, or $COLUMNS; "
                        "a file or pipe gets the whole table)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the table or reports: no summary, hints or 'wrote' lines on stderr "
                        "(errors still show)")
    parser.add_argument("--threshold", type=float, default=40.0, metavar="SCORE",
                        help="flag clients scoring at least SCORE on 0-100 (default 40 = medium; e.g. --threshold 60)")
    parser.add_argument("--contamination", type=float, metavar="FRACTION",
                        help="instead of --threshold, flag this fraction of clients (e.g. --contamination 0.01)")
    parser.add_argument("--fail-on", metavar="SEVERITY", type=_severity,
                        help="exit with code 10 if a flagged client is at least this severe: "
                        "info, low, medium, high, critical (e.g. --fail-on high)")
    _add_detection_options(parser)
    _add_report_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed for the models (default 0)")
    _add_model_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="say more: chosen formats and the first unparsed lines")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks on errors")
    parser.add_argument("--version", action=_VersionAction, help="print the version and the GeoIP data date")
    _add_enrichment_options(parser)
    _add_llm_options(parser)
    _add_rules_options(parser)
    _add_config_options(parser)
    _add_engine_options(parser)
    from log_analyser_core.cli.follow import add_follow_options

    add_follow_options(parser, _duration)
    return parser


def _add_detection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--behaviour-rules", action="append", default=[], metavar="PATH",
                        help="extra behaviour rule files or folders (YAML thresholds over time windows), used "
                        "beside the shipped ones (repeatable; e.g. --behaviour-rules site-rules/)")
    parser.add_argument("--allow", metavar="FILE",
                        help="allowlist YAML with ips (addresses/CIDRs), user_agents and paths (regexes): "
                        "never reported as attacks, counted in the summary; with --engine spark only the ips "
                        "apply (e.g. --allow allow.yaml)")


class _VersionAction(argparse.Action):
    """--version, computed only when asked (reading the GeoIP data date takes a fraction of a second)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from log_analyser_core.enrich.geolocation import packaged_data_version

        sys.stdout.write(f"{parser.prog} {version()}\ngeography: {packaged_data_version()}\n")
        parser.exit()


def _add_enrichment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "enrichment", "who each client is: AbuseIPDB reputation (key from ABUSEIPDB_API_KEY, a .env file or "
        "--api-key-file) and offline country and ASN")
    group.add_argument("--enrich", action="store_true",
                       help="add AbuseIPDB abuse score, reports, ISP, usage type, Tor flag, country and ASN")
    group.add_argument("--api-key-file", metavar="PATH", help="read the AbuseIPDB API key from this file")
    group.add_argument("--abuseipdb-url", metavar="URL",
                       help="AbuseIPDB API base URL (default $ABUSEIPDB_BASE_URL or https://api.abuseipdb.com/api/v2)")
    group.add_argument("--max-age-days", type=int, default=90, metavar="DAYS",
                       help="count abuse reports of the last DAYS days, 1-365 (default 90)")
    group.add_argument("--max-lookups", type=int, default=1000, metavar="N",
                       help="AbuseIPDB requests per run, flagged clients first; cached answers are free "
                       "(default 1000, the free plan's daily quota)")
    group.add_argument("--cache", metavar="PATH", help="lookup cache file (default: in the user cache directory)")
    group.add_argument("--cache-ttl", type=_duration, default=86_400.0, metavar="DURATION",
                       help="keep AbuseIPDB answers this long: seconds or 30m, 24h, 7d (default 24h)")
    group.add_argument("--refresh", action="store_true", help="ask AbuseIPDB again even for cached addresses")
    group.add_argument("--geoip-db", action="append", default=[], metavar="MMDB",
                       help="a MaxMind GeoLite2/GeoIP2 Country, City or ASN .mmdb file, used before the bundled "
                       "data (repeatable)")


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], text[-1].lower()) if text and text[-1].lower() in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 3600, 30m, 24h, 7d)")
    return seconds


def enrichment_settings(args: argparse.Namespace):
    """EnrichmentSettings from the flags, the environment and a .env file; None without --enrich."""
    if not args.enrich:
        return None
    from pathlib import Path

    from enrichment import EnrichmentSettings, resolve_api_key, resolve_base_url
    from log_analyser_core.enrich.geolocation import MaxMindGeo

    for path in args.geoip_db:
        MaxMindGeo(path)   # a bad file fails now, not after the log has been read
    if not 1 <= args.max_age_days <= 365:
        raise ConfigError(f"--max-age-days must be between 1 and 365, not {args.max_age_days}")
    if args.max_lookups < 0:
        raise ConfigError(f"--max-lookups must be at least 0, not {args.max_lookups}")
    return EnrichmentSettings(api_key=resolve_api_key(args.api_key_file), base_url=resolve_base_url(args.abuseipdb_url),
                              max_age_days=args.max_age_days, max_lookups=args.max_lookups,
                              cache_path=Path(args.cache) if args.cache else None, cache_ttl=args.cache_ttl,
                              refresh=args.refresh, geoip_dbs=tuple(args.geoip_db))


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    from log_analyser_core.explain.explanations import DEFAULT_MODEL

    group = parser.add_argument_group(
        "LLM explanations (advisory; need the llm extra and OPENAI_API_KEY, any value for a local server)")
    group.add_argument("--explain", action="store_true",
                       help="ask a language model for an analyst's note on each top flagged finding; "
                       "it never changes a score, severity or the exit code")
    group.add_argument("--explain-top", type=int, default=10, metavar="N",
                       help="explain at most N flagged findings, best ranked first (default 10; e.g. --explain-top 3)")
    group.add_argument("--llm-model", default=os.environ.get("LOG_ANALYSER_LLM_MODEL") or DEFAULT_MODEL,
                       metavar="NAME", help=f"model name (default {DEFAULT_MODEL}, or LOG_ANALYSER_LLM_MODEL; "
                       "e.g. --llm-model llama3.1:8b)")
    group.add_argument("--llm-base-url", default=os.environ.get("OPENAI_BASE_URL"), metavar="URL",
                       help="any OpenAI-compatible server (default OPENAI_BASE_URL, else api.openai.com; "
                       "e.g. --llm-base-url http://localhost:11434/v1 for Ollama)")
    group.add_argument("--llm-redact", action="append", choices=("ips",), default=[], metavar="WHAT",
                       help="also pseudonymise: ips (every IP address becomes ip-N; secrets, e-mails and "
                       "users are always redacted)")
    group.add_argument("--dry-run-llm", action="store_true",
                       help="print (on stderr) exactly what would be sent to the model, and send nothing")


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    from reporting import WRITERS

    parser.add_argument("--output-format", choices=tuple(WRITERS), metavar="FORMAT",
                        help=f"report format regardless of the -o extension: {', '.join(WRITERS)} "
                        "(e.g. -o - --output-format json)")
    parser.add_argument("--details", action="append", default=[], metavar="IP",
                        help="print one client's full evidence instead of the table (repeatable; "
                        "e.g. --details 91.145.72.37)")
    parser.add_argument("--block-severity", type=_severity, default=Severity.HIGH, metavar="SEVERITY",
                        help="blocklists (nginx, apache, iptables, nftables, crowdsec, plain) list flagged "
                        "clients at least this severe (default high; e.g. --block-severity medium)")
    parser.add_argument("--pdf-pages", type=_pages, default=20, metavar="N",
                        help="pages of per-client detail in the PDF report (default 20)")


def _pages(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of pages, not {text!r}")
    return int(text)


def _add_rules_options(parser: argparse.ArgumentParser) -> None:
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


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "configuration", "precedence: defaults < config file < environment (LOG_ANALYSER_<OPTION>, .env) < flags")
    group.add_argument("--config", metavar="PATH",
                       help="TOML file of defaults, keys named like the long options (e.g. threshold = 60); "
                       "default: $LOG_ANALYSER_CONFIG, else ~/.config/log_analyser/config.toml if present")
    group.add_argument("--env-file", metavar="PATH",
                       help="KEY=value file read into the environment (default: ./.env if present); "
                       "variables already set win")


class _FormatAction(argparse.Action):
    """``--format NAME``; ``--format list`` prints the presets and exits, like --version."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values == "list":
            from log_analyser_core.parsing.presets import PRESETS

            rows = [f"  {name:<15} {spec.description}" for name, spec in PRESETS.items()]
            print("log formats (--format NAME; auto detects):", *rows, sep="\n")
            parser.exit()
        setattr(namespace, self.dest, values)


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """How the logs are read: format, proxies, time zone and time window."""
    group = parser.add_argument_group("input")
    group.add_argument("--format", dest="format_name", default="auto", metavar="NAME", action=_FormatAction,
                       help="log format preset: auto (default, detected per file and reported), combined, common, "
                       "vcombined, vcommon, nginx, main, traefik, squid, awselb, awsalb, awss3, w3c, cloudfront, "
                       "caddy, json, csv; '--format list' describes them")
    group.add_argument("--log-format", metavar="STRING",
                       help="a custom format, as in your server config: Apache LogFormat "
                       "('%%h %%l %%u %%t \"%%r\" %%>s %%b') or nginx log_format ('$remote_addr ...')")
    group.add_argument("--json-fields", metavar="MAP",
                       help="JSON lines: which keys hold the event fields, over the defaults "
                       "(e.g. client_ip=remote,timestamp=time,user_agent=req.ua)")
    group.add_argument("--real-ip-header", choices=("x-forwarded-for", "cf-connecting-ip", "x-real-ip"),
                       help="take the client address from this header where the format logs it; "
                       "the connecting address is kept as peer_ip")
    group.add_argument("--trusted-proxies", metavar="CIDR,...",
                       help="proxies whose --real-ip-header is believed; the client is the rightmost "
                       "untrusted hop (default: trust every peer and take the leftmost address)")
    group.add_argument("--tz", default="UTC", metavar="ZONE",
                       help="zone for timestamps logged without an offset, for --since/--until dates without "
                       "one, for the night-time feature, and in which the table summary, --details, CSV, HTML and "
                       "PDF show times (JSON and exports stay UTC) (default UTC; e.g. Europe/Berlin)")
    group.add_argument("--since", metavar="TIME",
                       help="only events at or after TIME: relative (24h, 30m, 7d) or ISO 8601 (2026-03-10T08:00)")
    group.add_argument("--until", metavar="TIME", help="only events before TIME (same forms as --since)")


def _input_settings(args: argparse.Namespace, now: datetime | None = None) -> dict:
    """Settings fields for the input options; relative times count back from ``now``."""
    from file_parser import validate_timezone
    from log_analyser_core.parsing.sources import parse_networks, parse_time_bound

    tz = validate_timezone(args.tz)
    now = now or datetime.now(UTC)
    since = parse_time_bound(args.since, now, tz) if args.since else None
    until = parse_time_bound(args.until, now, tz) if args.until else None
    if since and until and since >= until:
        raise ConfigError(f"--since ({since:%Y-%m-%dT%H:%M:%SZ}) is not before --until ({until:%Y-%m-%dT%H:%M:%SZ})")
    if args.trusted_proxies and not args.real_ip_header:
        raise ConfigError("--trusted-proxies needs --real-ip-header")
    return {"format_name": args.format_name, "log_format": args.log_format, "json_fields": args.json_fields,
            "tz": tz, "since": since, "until": until, "real_ip_header": args.real_ip_header,
            "trusted_proxies": parse_networks(args.trusted_proxies or "")}


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (where parsing and per-client aggregation run)")
    group.add_argument("--engine", choices=("polars", "spark"), default="polars",
                       help="polars: this machine (default); spark: a Spark cluster, for logs too big for one "
                       "machine; it returns per-client features, not requests, so rules, signatures and Sigma "
                       "do not run and the anomaly score is the verdict (needs the spark extra; e.g. "
                       "--engine spark -f 's3a://bucket/logs/*.gz')")
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


def build_settings(args: argparse.Namespace, now: datetime | None = None):
    from log_analyser_core.pipeline import Settings

    if not 0.0 <= args.threshold <= 100.0:
        raise ConfigError(f"--threshold must be between 0 and 100, not {args.threshold}")
    if args.contamination is not None and not 0.0 < args.contamination <= 0.5:
        raise ConfigError(f"--contamination must be in (0, 0.5], not {args.contamination}")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, not {args.top}")
    if args.width is not None and args.width < 40:
        raise ConfigError(f"--width must be at least 40 columns, not {args.width}")
    from log_analyser_core.engines.spark import SparkOptions, parse_conf
    from log_analyser_core.verdict import load_allowlist

    allowlist = load_allowlist(args.allow) if args.allow else None
    spark = SparkOptions(master=args.spark_master, conf=parse_conf(args.spark_conf))
    return Settings(**_input_settings(args, now), threshold=args.threshold, contamination=args.contamination,
                    random_state=args.seed, enrichment=enrichment_settings(args), explain=_explain_settings(args),
                    rules_dirs=tuple(args.rules_dirs), builtin_rules=not args.no_builtin_rules,
                    detectors=args.detectors, model=args.model, fusion=args.fusion,
                    rule_paths=tuple(args.behaviour_rules), allowlist=allowlist, engine=args.engine, spark=spark,
                    crs=args.crs, crs_auto=not args.no_crs, paranoia=args.paranoia,
                    crs_settings=_crs_settings(args.crs_settings))


def _crs_settings(values: list[str]) -> tuple[tuple[str, str], ...]:
    from log_analyser_core.rules.crs.stage import parse_setting

    try:
        return tuple(parse_setting(value) for value in values)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _explain_settings(args: argparse.Namespace):
    from log_analyser_core.explain.explanations import ExplainSettings

    if args.explain_top < 1:
        raise ConfigError(f"--explain-top must be at least 1, not {args.explain_top}")
    url = args.llm_base_url or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"--llm-base-url must be an http:// or https:// URL, not {url!r}")
    return ExplainSettings(enabled=args.explain and not args.dry_run_llm, top=args.explain_top,
                           model=args.llm_model, base_url=url, redact_ips="ips" in args.llm_redact)


def _print_llm_dry_run(result, settings) -> None:
    """--dry-run-llm: every request body exactly as it would be POSTed, on stderr."""
    import json

    from log_analyser_core.explain import explanations

    requests = explanations.plan(result, settings.explain)
    url = f"{explanations.base_url(settings.explain)}/chat/completions"
    print(f"LLM dry run: {len(requests)} request(s) would be sent to {url}; nothing was sent", file=sys.stderr)
    for number, request in enumerate(requests, start=1):
        print(f"--- request {number} of {len(requests)}: POST {url}", file=sys.stderr)
        print(json.dumps(request.body, indent=2, ensure_ascii=True), file=sys.stderr)


MODEL_SAFETY = ("models are read without unpickling: scikit-learn objects with skops (only scikit-learn's "
                "own types are trusted), the Keras network in safe mode; still, load only models you made")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """--detectors and --model: which anomaly detectors score, and against what."""
    parser.add_argument("--detectors", type=_detector_list, metavar="LIST",
                        help="anomaly detectors, comma-separated: iforest, autoencoder (default: every one "
                        "whose dependencies are installed; the autoencoder needs the deep extra, "
                        "pip install '.[deep]' in the source tree; e.g. --detectors iforest)")
    parser.add_argument("--model", metavar="DIR",
                        help="score against a baseline saved by 'log_analyser train' instead of against the "
                        f"log itself (e.g. --model model/); {MODEL_SAFETY}")
    parser.add_argument("--fusion", choices=("min", "mean", "max"), default="mean",
                        help="how the detectors' 0-100 scores combine: mean (default), min (both must agree: "
                        "fewer false alarms, may miss what one detector alone sees) or max (either one suffices)")


def _detector_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError("name at least one detector: iforest, autoencoder")
    return names


def _progress_bar(files: Sequence[str], quiet: bool = False):
    """A byte-counting progress callback on stderr, shown only on a TTY, after one second and without -q."""
    from tqdm import tqdm

    sizes = [os.path.getsize(f) for f in files if f != "-" and os.path.isfile(f)]
    bar = tqdm(total=sum(sizes) or None, unit="B", unit_scale=True, delay=1.0, leave=False,
               file=sys.stderr, disable=quiet or not sys.stderr.isatty(), desc="reading")
    return bar


def _colour(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _table_width(args: argparse.Namespace, stream) -> int | None:
    """--width, $COLUMNS or the terminal's width; None (the whole table) for a file or pipe."""
    from log_analyser_core.cli.messages import table_width

    is_terminal = stream.isatty()
    columns = os.get_terminal_size(stream.fileno()).columns if is_terminal else 80
    return table_width(args.width, is_terminal, columns)


def _say(args: argparse.Namespace, line: str) -> None:
    """A message for the person at the terminal, on stderr; -q silences it."""
    if not args.quiet:
        print(line, file=sys.stderr)


def _write_reports(result, args: argparse.Namespace) -> None:
    import reporting

    if args.details:
        from log_analyser_core.report.details import render_details

        texts = [render_details(result, ip, colour=_colour(sys.stdout)) for ip in args.details]
        sys.stdout.write("\n".join(texts))
    elif not args.output:
        sys.stdout.write(reporting.render_table(result, top=args.top, colour=_colour(sys.stdout),
                                                width=_table_width(args, sys.stdout), everything=args.all_clients))
    targets = [reporting.format_for(path, args.output_format) for path in args.output]
    options = {"top": args.top, "version": version(), "severity": args.block_severity, "pages": args.pdf_pages,
               "everything": args.all_clients, "width": args.width, "fail_on": args.fail_on}
    failed: list[Exception] = []
    for kind, path in targets:   # one failing report (a full disk, a bug) must not cost the blocklists after it
        try:
            _write(reporting.render(kind, result, **options), path)
        except Exception as exc:   # noqa: BLE001 - re-raised below, once every other report is written
            if failed:   # the first failure is the run's error line; later ones are told here
                log.error("%s report to %s failed: %s", kind, path, exc)
            failed.append(exc)
            continue
        if path != "-":
            _say(args, _wrote(kind, path, result, args))
    _step_summary(result, args)
    if failed:
        raise failed[0]


def _wrote(kind: str, path: str, result, args: argparse.Namespace) -> str:
    from log_analyser_core.cli import messages

    listed = None
    if kind in messages.BLOCKLISTS:
        listed = messages.blocked_count(result, args.block_severity)
    elif kind == "table":
        from log_analyser_core.report.table import choose_rows

        listed = len(choose_rows(result, args.top, args.all_clients).shown)
    return messages.wrote_line(kind, path, result, listed)


def _step_summary(result, args: argparse.Namespace) -> None:
    """In a GitHub Actions job, append the Markdown summary to $GITHUB_STEP_SUMMARY."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    from log_analyser_core.report.markdown import render_markdown

    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(render_markdown(result) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot append to GITHUB_STEP_SUMMARY: {exc.strerror}", path=path) from None


def _write(content: str | bytes, path: str) -> None:
    """Write a report to ``path`` ('-' = stdout); text as UTF-8, bytes (PDF) as they are."""
    if path == "-":
        if isinstance(content, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(content)
        else:
            sys.stdout.write(content)
        return
    try:
        if isinstance(content, bytes):
            with open(path, "wb") as handle:
                handle.write(content)
        else:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
    except OSError as exc:
        raise ConfigError(f"cannot write report: {exc.strerror}", path=path) from None


def _show_unparsed(result, limit: int = 5) -> None:
    from reporting import terminal_safe

    for row in result.unparsed.head(limit).iter_rows(named=True):
        print(f"unparsed {terminal_safe(row['source'])}:{row['line_number']}: {row['reason']}: "
              f"{terminal_safe(row['raw'][:200])}", file=sys.stderr)


def rules_command(argv: list[str]) -> ExitCode:
    """`log_analyser rules check DIR...` and `log_analyser rules list`: validate and show Sigma rules."""
    from log_analyser_core.rules.crs.install import DEFAULT_VERSION as DEFAULT_CRS_VERSION

    parser = argparse.ArgumentParser(prog="log_analyser rules", description="Validate and list Sigma rules; "
                                     "install the OWASP Core Rule Set.")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate rule folders and list every problem at once (exit 4 on errors)")
    check.add_argument("dirs", nargs="+", metavar="DIR", help="folders or files of Sigma rules")
    check.add_argument("--strict", action="store_true", help="also exit 4 on validator warnings")
    listing = actions.add_parser("list", help="show the rules a run would use, and those skipped")
    _add_rules_options(listing)
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
    args = parser.parse_args(argv)
    if args.action == "update":
        return _update_crs(args) if args.crs else _rules_update(args)
    from log_analyser_core.rules import sigma_engine
    from reporting import terminal_safe

    if args.action == "check":
        ruleset = sigma_engine.check(args.dirs)
        for problem in ruleset.problems:
            print(f"{problem.kind}: {terminal_safe(str(problem))}")
        counts = {kind: len(ruleset.of_kind(kind)) for kind in ("error", "unsupported", "warning")}
        print(f"{len(ruleset.rules)} rules run, {counts['unsupported']} unsupported, {counts['error']} errors, "
              f"{counts['warning']} warnings, {ruleset.other_logsource} not webserver", file=sys.stderr)
        failed = counts["error"] or (args.strict and counts["warning"])
        return ExitCode.RULES if failed else ExitCode.OK
    folders = ([sigma_engine.builtin_dir()] if not args.no_builtin_rules else []) + args.rules_dirs
    ruleset = sigma_engine.load(folders)
    for rule in ruleset.rules:
        kind = rule.attack_type.value if rule.attack_type else "-"
        print(f"{rule.id}  {rule.severity.label:<8}  {kind:<18}  {terminal_safe(rule.title)}")
    for problem in ruleset.of_kind("unsupported"):
        print(f"skipped {terminal_safe(str(problem))}")
    print(f"{len(ruleset.rules)} rules from {len(folders)} folders", file=sys.stderr)
    return ExitCode.OK


def _rules_update(args: argparse.Namespace) -> ExitCode:
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


# Subcommands beside the default analysis (`log_analyser NAME ...`): name -> runner(argv).
# Each runner parses its own arguments, raises AnalyserError on expected failures and returns
# an ExitCode. A log file with one of these names is read with `-f ./NAME`.
COMMANDS: dict[str, Callable[[list[str]], ExitCode]] = {"rules": rules_command}


def cache_command(argv: list[str]) -> ExitCode:
    """`log_analyser cache stats|clear [--cache PATH]`: inspect or empty the lookup cache."""
    from pathlib import Path

    from log_analyser_core.enrich.cache import CacheStore, default_cache_path

    parser = argparse.ArgumentParser(prog="log_analyser cache", description="Inspect or empty the lookup cache "
                                     "(AbuseIPDB answers and other stages' stored results).")
    parser.add_argument("action", choices=("stats", "clear"))
    parser.add_argument("--cache", metavar="PATH", help="cache file (default: in the user cache directory)")
    parser.add_argument("--namespace", metavar="NAME", help="clear only this namespace (e.g. abuseipdb)")
    parser.add_argument("--expired", action="store_true", help="clear only expired entries")
    args = parser.parse_args(argv)
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
            _print_cache_stats(store.stats())
    return ExitCode.OK


def _print_cache_stats(stats) -> None:
    state = "" if stats.enabled else ", not in use"
    print(f"cache: {stats.path} (schema {stats.schema_version}, {stats.size_bytes / 1024:,.1f} KiB{state})")
    print(f"{'namespace':<20} {'entries':>9} {'expired':>9}")
    for ns in stats.namespaces:
        print(f"{ns.namespace:<20} {ns.entries:>9,} {ns.expired:>9,}")
    print(f"{'total':<20} {stats.entries:>9,}")


COMMANDS["cache"] = cache_command


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="log_analyser train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the anomaly detectors on a period of traffic you trust and save them, so that later "
        "logs are scored against it (log_analyser -f today.log --model DIR): a site-wide attack then "
        "cannot hide by being the majority.",
        epilog="example:\n  log_analyser train -f known_good.log --save model/\n\n" + EPILOG.split("\n\n")[1])
    parser.add_argument("-f", "--file", dest="files", action="extend", nargs="+", required=True, metavar="LOG",
                        help="access log(s) of trusted traffic: paths, globs, '-' for stdin")
    parser.add_argument("--save", required=True, metavar="DIR",
                        help="model directory to write (created; an existing model there is replaced)")
    parser.add_argument("--format", dest="format_name", default="auto", metavar="NAME",
                        help="log format preset (log_analyser --format list), default auto")
    parser.add_argument("--log-format", metavar="STRING", help="a custom Apache LogFormat or nginx log_format")
    parser.add_argument("--tz", default="UTC", metavar="ZONE", help="zone for timestamps without an offset")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the models (default 0)")
    parser.add_argument("--detectors", type=_detector_list, metavar="LIST",
                        help="detectors to train, comma-separated (default: every installed one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="say more")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks on errors")
    return parser


def train_command(argv: list[str]) -> ExitCode:
    """`log_analyser train -f LOG --save DIR`: fit and save a baseline model."""
    args = build_train_parser().parse_args(argv)
    _configure_logging(args)
    from file_parser import validate_timezone
    from log_analyser_core.parsing.reader import resolve_sources
    from log_analyser_core.pipeline import Settings, train

    settings = Settings(format_name=args.format_name, log_format=args.log_format, tz=validate_timezone(args.tz),
                        random_state=args.seed, detectors=args.detectors)
    summary = train(resolve_sources(args.files), args.save, settings)
    print(f"trained {' and '.join(summary['detectors'])} on {summary['clients']:,} clients "
          f"({summary['parsed_lines']:,} lines) -> {args.save}", file=sys.stderr)
    return ExitCode.OK


COMMANDS["train"] = train_command
def _evaluate(argv: list[str]) -> ExitCode:
    from log_analyser_core.evaluation import evaluate_command

    return evaluate_command(argv)


COMMANDS["evaluate"] = _evaluate


def run(argv: Sequence[str] | None = None) -> ExitCode:
    """Dispatch a subcommand, or analyse logs and write reports; raises AnalyserError on expected failures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return analyse_command(argv)


def analyse_command(argv: list[str]) -> ExitCode:
    """The default command: `log_analyser -f LOG [options]`."""
    from log_analyser_core.cli import config, follow

    args = config.parse_arguments(build_parser, argv)
    _configure_logging(args)
    follow.check(args)
    settings = build_settings(args)
    if args.follow:
        return follow.run(args, settings)
    from log_analyser_core.parsing.reader import resolve_sources
    from log_analyser_core.pipeline import analyse
    from reporting import summary_line

    files = resolve_sources(args.files) if settings.engine == "polars" else args.files
    bar = _progress_bar(files, quiet=args.quiet)
    with contextlib.ExitStack() as stack:
        llm_cache = stack.enter_context(_llm_cache(args)) if settings.explain.enabled else None
        try:
            result = analyse(files, settings, progress=bar.update, llm_cache=llm_cache)
        finally:
            bar.close()
    if args.verbose:
        _show_unparsed(result)
    if args.dry_run_llm:
        _print_llm_dry_run(result, settings)
    _write_reports(result, args)
    sys.stdout.flush()
    _say(args, summary_line(result, colour=_colour(sys.stderr)))
    if settings.format_name == "auto" and not settings.log_format and not settings.json_fields:
        _say(args, _detected_formats(result.summary.formats))
    for note in result.summary.notes:
        if args.verbose or not note.startswith("detectors:"):   # which models ran: -v, JSON and the PDF say
            _say(args, f"note: {note}")
    from log_analyser_core.cli import messages

    if args.fail_on is not None and result.at_least(args.fail_on):
        _say(args, messages.fail_on_line(result, args.fail_on) or "")
        return ExitCode.FINDINGS
    has_key = bool(settings.enrichment and settings.enrichment.api_key) or bool(os.environ.get("ABUSEIPDB_API_KEY"))
    for hint in messages.next_steps(result, args.output, settings.enrichment is not None, has_key, args.details):
        _say(args, hint)
    return ExitCode.OK


def _llm_cache(args: argparse.Namespace):
    """The shared SQLite cache (--cache or the user cache dir), where LLM answers are kept."""
    from pathlib import Path

    from log_analyser_core.enrich.cache import CacheStore

    return CacheStore(Path(args.cache) if args.cache else None)
def _detected_formats(formats: dict[str, str]) -> str:
    """'format: combined (detected)', or one entry per file when the files differ."""
    from reporting import terminal_safe

    if len(set(formats.values())) == 1:
        return f"format: {next(iter(formats.values()))} (detected)"
    return "formats (detected): " + ", ".join(f"{terminal_safe(s)}: {f}" for s, f in formats.items())


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr, force=True)
    # urllib3 logs every retry; failed lookups are summed up in one note instead
    logging.getLogger("urllib3").setLevel(logging.DEBUG if args.debug else logging.ERROR)


class _Peek(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:   # the real parser reports usage errors
        raise ValueError(message)


def allocator_settings(argv: Sequence[str]) -> str:
    """jemalloc's settings for a run over the ``-f`` inputs in ``argv``: freed memory returned at
    once when they are large (LARGE_INPUT_BYTES on disk, all told), read from standard input or
    compressed (their size is not known); soon after otherwise."""
    peek = _Peek(add_help=False)
    peek.add_argument("-f", "--file", nargs="+", action="extend", default=[])
    try:
        patterns = peek.parse_known_args(argv)[0].file
    except ValueError:
        return RETURN_FREED_MEMORY
    size = 0
    for pattern in patterns:
        if pattern == "-" or pattern.endswith((".gz", ".bz2", ".xz")):
            return RETURN_FREED_MEMORY
        for path in glob.glob(pattern) if glob.has_magic(pattern) else [pattern]:
            with contextlib.suppress(OSError):
                size += os.path.getsize(path)
    return RETURN_FREED_MEMORY if size >= LARGE_INPUT_BYTES else RETURN_FREED_MEMORY_SOON


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run() with errors mapped to one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("_RJEM_MALLOC_CONF", allocator_settings(argv))   # a value the user set is kept
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
