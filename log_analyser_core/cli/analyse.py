"""The default command, `log_analyser -f LOG [options]`: flags into Settings, the pipeline, the reports.

log_analyser.py parses the arguments (with the config-file and environment layers); ``run`` takes
the parsed flags from there, raises AnalyserError on expected failures and returns an ExitCode.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from log_analyser_core.cli.common import configure_logging, named_as_flags, version
from log_analyser_core.cli.output import to_stdout, write
from log_analyser_core.errors import ConfigError, ExitCode

log = logging.getLogger("log_analyser")


def run(args: argparse.Namespace) -> ExitCode:
    """Analyse the logs named by the parsed flags and write the reports; FINDINGS when --fail-on is met."""
    from log_analyser_core.cli import follow

    configure_logging(args)
    follow.check(args)
    if not args.follow and args.engine == "polars":
        from log_analyser_core.detectors import forest, forest_process

        if not (args.model and forest.saved_as_trees(args.model)):   # such a model needs no scikit-learn
            forest_process.start_early(args.files)   # importing scikit-learn beside this process's imports
    settings = build_settings(args)
    if args.follow:
        return follow.run(args, settings)
    from log_analyser_core.engines.engine import named
    from log_analyser_core.pipeline import analyse, collector_paused
    from reporting import summary_line

    files = named(settings.engine).sources(args.files)   # local paths resolved; Spark URIs as given
    bar = _progress_bar(files, quiet=args.quiet)
    # The PDF and HTML writers import fpdf2 and Pillow when they run, not on a thread during the analysis:
    # with matplotlib gone that is 0.3 s of CPU, and the thread, contending for the GIL, cost more than it
    # hid (issue 19, sample log, 8 alternating runs at load 6-8: reports added 2.0 s wall, 1.1 s CPU with
    # it, 1.5 s and 0.9 s without).
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
    with collector_paused():
        _write_reports(result, args)
    to_stdout()
    _say(args, summary_line(result, colour=_colour(sys.stderr)))
    if settings.format_name == "auto" and not settings.log_format and not settings.json_fields:
        _say(args, _detected_formats(result.summary.formats))
    for note in result.summary.notes:
        if args.verbose or not note.startswith("detectors:"):   # which models ran: -v, JSON and the PDF say
            _say(args, f"note: {note}")
    if settings.model is None and named(settings.engine).keeps_events:
        from log_analyser_core.pipeline import NO_MODEL_HINT

        _say(args, f"note: {NO_MODEL_HINT}")
    from log_analyser_core.cli import messages

    if args.fail_on is not None and result.at_least(args.fail_on):
        _say(args, messages.fail_on_line(result, args.fail_on) or "")
        return ExitCode.FINDINGS
    has_key = bool(settings.enrichment and settings.enrichment.api_key) or bool(os.environ.get("ABUSEIPDB_API_KEY"))
    for hint in messages.next_steps(result, args.output, settings.enrichment is not None, has_key, args.details):
        _say(args, hint)
    return ExitCode.OK


def build_settings(args: argparse.Namespace, now: datetime | None = None):
    """The run's Settings from the flags (Settings checks its own values; errors name the flags)."""
    from log_analyser_core.engines.spark import SparkOptions, parse_conf
    from log_analyser_core.parsing.sources import parse_networks
    from log_analyser_core.pipeline import Settings
    from log_analyser_core.verdict import load_allowlist

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, not {args.top}")
    if args.width is not None and args.width < 40:
        raise ConfigError(f"--width must be at least 40 columns, not {args.width}")
    allowlist = load_allowlist(args.allow) if args.allow else None
    spark = SparkOptions(master=args.spark_master, conf=parse_conf(args.spark_conf))
    with named_as_flags():
        settings = Settings(
            format_name=args.format_name, log_format=args.log_format, json_fields=args.json_fields, tz=args.tz,
            real_ip_header=args.real_ip_header, trusted_proxies=parse_networks(args.trusted_proxies or ""),
            max_decompressed=args.max_decompressed,
            threshold=args.threshold, contamination=args.contamination, random_state=args.seed,
            enrichment=enrichment_settings(args), explain=_explain_settings(args),
            rules_dirs=tuple(args.rules_dirs), builtin_rules=not args.no_builtin_rules, detectors=args.detectors,
            model=args.model, fusion=args.fusion, rule_paths=tuple(args.behaviour_rules), allowlist=allowlist,
            engine=args.engine, spark=spark, crs=args.crs, crs_auto=not args.no_crs, paranoia=args.paranoia,
            crs_settings=_crs_settings(args.crs_settings))
        return _with_time_window(settings, args, now)


def _crs_settings(values: list[str]) -> tuple[tuple[str, str], ...]:
    from log_analyser_core.rules.crs.stage import parse_setting

    try:
        return tuple(parse_setting(value) for value in values)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _with_time_window(settings, args: argparse.Namespace, now: datetime | None = None):
    """``settings`` with --since and --until, read in its (checked) zone; relative times count back
    from ``now``."""
    from log_analyser_core.parsing.sources import parse_time_bound

    now = now or datetime.now(UTC)
    since = parse_time_bound(args.since, now, settings.tz) if args.since else None
    until = parse_time_bound(args.until, now, settings.tz) if args.until else None
    return dataclasses.replace(settings, since=since, until=until)


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


def _explain_settings(args: argparse.Namespace):
    from log_analyser_core.explain.explanations import ExplainSettings

    if args.explain_top < 1:
        raise ConfigError(f"--explain-top must be at least 1, not {args.explain_top}")
    url = args.llm_base_url or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"--llm-base-url must be an http:// or https:// URL, not {url!r}")
    return ExplainSettings(enabled=args.explain and not args.dry_run_llm, top=args.explain_top,
                           model=args.llm_model, base_url=url, redact_ips="ips" in args.llm_redact)


def _llm_cache(args: argparse.Namespace):
    """The shared SQLite cache (--cache or the user cache dir), where LLM answers are kept."""
    from pathlib import Path

    from log_analyser_core.enrich.cache import CacheStore

    return CacheStore(Path(args.cache) if args.cache else None)


class _NoProgress:
    """The progress bar when none is shown (-q, or stderr is not a terminal: CI jobs, cron)."""

    def update(self, n: float | None = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(files: Sequence[str], quiet: bool = False):
    """A byte-counting progress callback on stderr, shown only on a TTY, after one second and without -q."""
    if quiet or not sys.stderr.isatty():   # tqdm (and the multiprocessing lock it makes) is not even imported
        return _NoProgress()
    from tqdm import tqdm

    sizes = [os.path.getsize(f) for f in files if f != "-" and os.path.isfile(f)]
    bar = tqdm(total=sum(sizes) or None, unit="B", unit_scale=True, delay=1.0, leave=False,
               file=sys.stderr, desc="reading")
    return bar


def _show_unparsed(result, limit: int = 5) -> None:
    from log_analyser_core.report.text import terminal_safe

    for row in result.unparsed.head(limit).iter_rows(named=True):
        print(f"unparsed {terminal_safe(row['source'])}:{row['line_number']}: {row['reason']}: "
              f"{terminal_safe(row['raw'][:200])}", file=sys.stderr)


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


def _write_reports(result, args: argparse.Namespace) -> None:
    import reporting

    if args.details:
        from log_analyser_core.report.details import render_details

        texts = [render_details(result, ip, colour=_colour(sys.stdout)) for ip in args.details]
        to_stdout("\n".join(texts))
    elif not args.output:
        to_stdout(reporting.render_table(result, top=args.top, colour=_colour(sys.stdout),
                                         width=_table_width(args, sys.stdout), everything=args.all_clients))
    targets = [reporting.format_for(path, args.output_format) for path in args.output]
    options = {"top": args.top, "version": version(), "severity": args.block_severity, "pages": args.pdf_pages,
               "everything": args.all_clients, "width": args.width, "fail_on": args.fail_on}
    failed: list[Exception] = []
    for kind, path in targets:   # one failing report (a full disk, a bug) must not cost the blocklists after it
        try:
            write(reporting.stream(kind, result, **options), path)
        except Exception as exc:   # noqa: BLE001 - re-raised below, once every other report is written
            if failed:   # the first failure is raised below, and main() prints it once
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


def _detected_formats(formats: dict[str, str]) -> str:
    """'format: combined (detected)', or one entry per file when the files differ."""
    from log_analyser_core.report.text import terminal_safe

    if len(set(formats.values())) == 1:
        return f"format: {next(iter(formats.values()))} (detected)"
    return "formats (detected): " + ", ".join(f"{terminal_safe(s)}: {f}" for s, f in formats.items())


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
