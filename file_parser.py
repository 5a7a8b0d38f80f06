"""Access logs in any supported format into one canonical events table.

Lines are read in large chunks and every step is a Polars expression over a whole column:
no Python code runs per line. Lines that do not parse are counted and kept with a reason.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import cast
from zoneinfo import ZoneInfo

import polars as pl

from log_analyser_core.errors import ConfigError, InputError
from log_analyser_core.parsing import formats as log_formats
from log_analyser_core.parsing.events import EVENT_SCHEMA, canonical
from log_analyser_core.parsing.formats import LogFormat, compile_format, detection_candidates, preset
from log_analyser_core.parsing.reader import Progress, iter_chunks, read_ahead, resolve_sources
from log_analyser_core.parsing.sources import InputOptions, order_rotated, resolve_real_ip

log = logging.getLogger(__name__)

UNPARSED_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(), "line_number": pl.Int64(), "reason": pl.String(), "raw": pl.String(),
}
UNCOUNTED_REASONS = ("blank line", "header line")   # not log lines: left out of the unparsed ratio

DETECTION_SAMPLE = 2000
_SYSLOG_PREFIX = r"^<\d{1,3}>(?:\d )?[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [^\s:]+: "
_FIELDS = "#Fields:"   # the W3C directive naming a block's columns


@dataclass(frozen=True)
class ParseStats:
    """Line counts for a whole run; ``unparsed_by_reason`` maps a reason to its line count."""

    total_lines: int
    parsed_lines: int
    unparsed_by_reason: dict[str, int]
    formats: dict[str, str] = field(default_factory=dict)  # source -> format name used
    outside_window: int = 0          # parsed lines skipped by --since/--until (not in the counts above)
    notes: tuple[str, ...] = ()      # what the reader assumed (e.g. a zone for offset-less times)

    @property
    def unparsed_lines(self) -> int:
        return self.total_lines - self.parsed_lines


@dataclass(frozen=True)
class ParsedLog:
    events: pl.DataFrame      # EVENT_SCHEMA, one row per parsed line
    unparsed: pl.DataFrame    # UNPARSED_SCHEMA, one row per line that did not parse
    stats: ParseStats


def _strip_syslog(raw: pl.Expr) -> pl.Expr:
    """Access logs forwarded through syslog lose their '<PRI>Mmm dd hh:mm:ss host tag[pid]: ' prefix."""
    return raw.str.replace(_SYSLOG_PREFIX, "")


def _unwrap(raw: pl.Expr) -> pl.Expr:
    """Lines wrapped in an extra pair of double quotes (some exports do this) lose that pair."""
    wrapped = raw.str.starts_with('"') & raw.str.ends_with('"') & (raw.str.len_chars() > 1)
    return pl.when(wrapped).then(raw.str.slice(1, raw.str.len_chars() - 2)).otherwise(raw)


def detect_format(sample: pl.Series) -> tuple[LogFormat, float]:
    """The format that reads the most sample lines, and the fraction it reads.

    JSON lines, W3C ``#Fields:`` headers and CSV header rows are recognised by their shape;
    other lines are tried against every line preset (ties go to the earlier preset).
    """
    lines = sample.filter(sample.str.strip_chars() != "").head(DETECTION_SAMPLE)
    if lines.len() == 0:
        return detection_candidates()[0], 0.0
    lines = lines.to_frame().select(_unwrap(pl.col("raw"))).to_series()
    candidates = _shaped_candidates(lines) or detection_candidates()
    best, best_rate = candidates[0], -1.0
    for candidate in candidates:
        rate = _match_rate(lines, candidate)
        if rate > best_rate:
            best, best_rate = candidate, rate
    return best, best_rate


def _shaped_candidates(lines: pl.Series) -> list[LogFormat]:
    """Candidates recognised by the file's shape (header lines, JSON objects), else none."""
    first = lines[0]
    fields = lines.filter(lines.str.starts_with(_FIELDS))
    if fields.len():
        data = lines.filter(~lines.str.starts_with("#"))
        name = "cloudfront" if "x-edge-location" in fields[0] else "w3c"
        return [log_formats.from_header(name, fields[0], data[0] if data.len() else " ")]
    if cast(float, lines.str.starts_with("{").mean() or 0.0) > 0.5:
        return [preset("caddy"), preset("json")]
    if "," in first and not first[:1].isdigit() and first.count('"') == 0:
        try:
            return [log_formats.compile_csv(first)]
        except ConfigError:
            return []
    return []


def _match_rate(lines: pl.Series, fmt: LogFormat) -> float:
    if _is_w3c(fmt):  # each data line against the #Fields: header above it
        try:
            which, formats = FieldsHeaders(fmt).blocks(lines)
        except ConfigError:   # a later header without c-ip or date: parse() reports it with file and line
            return 0.0
        data = ~lines.str.starts_with("#")
        hits = sum(int(lines.filter(data & (which == i)).str.contains(cast(str, f.regex)).sum())
                   for i, f in enumerate(formats))
        return hits / int(data.sum()) if data.any() else 0.0
    if fmt.regex is not None:
        data = lines.filter(~lines.str.starts_with(fmt.header_prefix)) if fmt.header_prefix else lines
        return cast(float, data.str.contains(fmt.regex).mean() or 0.0) if data.len() else 0.0
    groups = lines.alias("raw").to_frame().select(_json_groups(fmt))
    return float(cast(float, (groups["client_ip"].is_not_null() & groups["time_any"].is_not_null()).mean() or 0.0))


def _json_groups(fmt: LogFormat) -> list[pl.Expr]:
    """One column per mapped field, from the first JSON path that is present."""
    raw = pl.col("raw")
    return [pl.coalesce([raw.str.json_path_match(path) for path in paths]).alias(group)
            for group, paths in fmt.json_fields]


def _captured(fmt: LogFormat) -> list[pl.Expr]:
    if fmt.regex is None:
        return [*_json_groups(fmt)]
    raw = _strip_syslog(pl.col("raw")) if fmt.syslog else pl.col("raw")
    unwrapped = raw if any(d == "csv" for _, d in fmt.decoders) else _unwrap(raw)
    return [unwrapped.str.extract_groups(fmt.regex).alias("_m")]


def _reason(fmt: LogFormat) -> pl.Expr:
    header = pl.col("raw").str.starts_with(fmt.header_prefix) if fmt.header_prefix else pl.lit(False)
    return (pl.when(pl.col("raw").str.contains(r"^\s*$")).then(pl.lit("blank line"))
            .when(header).then(pl.lit("header line"))
            .when(pl.col("client_ip").is_null()).then(pl.lit(f"does not match the {fmt.name} format"))
            .when(pl.col("timestamp").is_null()).then(pl.lit("unreadable timestamp"))
            .otherwise(None))


def parse_lines(lines: pl.Series, fmt: LogFormat, *, source: str = "<lines>", first_line: int = 1,
                tz: str = "UTC", options: InputOptions | None = None,
                line_numbers: pl.Series | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a column of raw lines with one format: (events, unparsed) frames.

    Lines are numbered from ``first_line`` on, or take ``line_numbers`` (one per line) when given.
    ``events`` has EVENT_SCHEMA plus ``_naive`` (time logged without an offset); ``unparsed``
    has UNPARSED_SCHEMA.
    """
    options = options or InputOptions(tz=tz)
    real_ip_group = log_formats.REAL_IP_HEADERS.get(options.real_ip_header or "")
    numbered = (lines.alias("raw").to_frame().with_row_index("line_number", offset=first_line)
                if line_numbers is None else pl.DataFrame({"raw": lines, "line_number": line_numbers}))
    frame = numbered.lazy().with_columns(pl.col("line_number").cast(pl.Int64), *_captured(fmt))
    if fmt.regex is not None:
        frame = frame.unnest("_m")
    first, second, final = canonical(fmt, options.tz, source, real_ip_group)
    events = (frame.with_columns(first).with_columns(second).select(*final, "raw")
              .with_columns(_reason(fmt).alias("_reason"))
              .collect(engine="streaming"))  # morsel-parallel: uses every core on one column
    good = events.filter(pl.col("_reason").is_null()).drop("_reason", "raw")
    bad = events.filter(pl.col("_reason").is_not_null()).select(
        pl.col("source").cast(pl.String), "line_number", pl.col("_reason").alias("reason"), "raw")
    if real_ip_group:
        good = good.with_columns(resolve_real_ip(good, "_real_ip_hdr", options.trusted_proxies)
                                 .cast(pl.Categorical).alias("client_ip")).drop("_real_ip_hdr")
    return good, bad


@dataclass
class FieldsHeaders:
    """The W3C ``#Fields:`` directive in force in one source, carried from chunk to chunk.

    IIS starts a new header block (``#Software``, ``#Version``, ``#Date``, ``#Fields``) whenever
    the service restarts or its logging fields change, so one file can hold several field lists.
    Each data line is read with the ``#Fields:`` line above it; lines above the first one use
    ``initial`` (the format given, or detected from the file's first lines). One format is
    compiled per distinct field list and separator.
    """

    initial: LogFormat
    source: str = "<lines>"
    current: tuple[str, int] | None = None   # the last #Fields: line read so far, and its line number
    compiled: dict[tuple[str, bool], LogFormat] = field(default_factory=dict)

    def format_for(self, header: tuple[str, int] | None, sample: str) -> LogFormat:
        """The format for data lines under ``header`` (its text and line number; None before the
        first); ``sample`` is one of those lines, whose tabs choose the separator. A header that
        names no c-ip or date is a ConfigError naming the source and line."""
        if header is None:
            return self.initial
        text, line = header
        key = (text, "\t" in sample)
        if key not in self.compiled:
            try:
                fmt = log_formats.compile_w3c(text, sample, name=self.initial.name)
            except ConfigError as exc:
                raise ConfigError(exc.message, hint=exc.hint, path=self.source, line=line) from None
            self.compiled[key] = replace(fmt, syslog=self.initial.syslog)
        return self.compiled[key]

    def blocks(self, lines: pl.Series, first_line: int = 1) -> tuple[pl.Series, list[LogFormat]]:
        """Which format reads each line of a chunk: one index per line into the distinct formats,
        and those formats. Block k of the chunk starts at its k-th ``#Fields:`` line (block 0
        continues the header in force); only blocks with data lines compile a format. Advances
        ``current``."""
        is_header = lines.str.starts_with(_FIELDS).fill_null(False)
        block = is_header.cum_sum()
        numbers = (is_header.arg_true() + first_line).to_list()
        headers = [self.current, *zip(lines.filter(is_header).to_list(), numbers, strict=True)]
        data = ~lines.str.starts_with("#") & (lines.str.strip_chars() != "")
        samples = (pl.DataFrame({"block": block, "raw": lines}).filter(data)
                   .group_by("block").agg(pl.col("raw").first()).sort("block").iter_rows())
        used = {number: self.format_for(headers[number], sample) for number, sample in samples}
        self.current = headers[-1]
        distinct = list(dict.fromkeys(used.values())) or [self.initial]
        index = pl.Series([distinct.index(used[n]) if n in used else 0 for n in range(len(headers))],
                          dtype=pl.UInt32)
        return index.gather(block), distinct


def _parse_chunk(lines: pl.Series, fmt: LogFormat, headers: FieldsHeaders | None, *, source: str,
                 first_line: int, options: InputOptions) -> tuple[pl.DataFrame, pl.DataFrame]:
    """parse_lines, with W3C lines read under the ``#Fields:`` header above them: one parse per
    distinct field list in the chunk, results put back in line order."""
    if headers is None:
        return parse_lines(lines, fmt, source=source, first_line=first_line, options=options)
    which, formats = headers.blocks(lines, first_line)
    if len(formats) == 1:
        return parse_lines(lines, formats[0], source=source, first_line=first_line, options=options)
    numbers = pl.int_range(first_line, first_line + lines.len(), dtype=pl.Int64, eager=True)
    parts = [parse_lines(lines.filter(which == i), block_format, source=source, options=options,
                         line_numbers=numbers.filter(which == i)) for i, block_format in enumerate(formats)]
    good = pl.concat([part[0] for part in parts]).sort("line_number")
    bad = pl.concat([part[1] for part in parts]).sort("line_number")
    return good, bad


def _is_w3c(fmt: LogFormat) -> bool:
    return fmt.name in ("w3c", "cloudfront") and fmt.header_prefix == "#"


def _format_for(name: str | None, custom: str | None, json_fields: str | None) -> LogFormat | None:
    if custom:
        return compile_format(custom)
    if json_fields:
        return log_formats.compile_json("json", log_formats.parse_json_mapping(json_fields))
    if name in (None, "auto"):
        return None
    return preset(name)


def source_format(sample: pl.Series, *, format_name: str | None = "auto", log_format: str | None = None,
                  json_fields: str | None = None) -> tuple[LogFormat, float]:
    """The format one source's lines are read with, from its first lines ``sample`` (as parse() does
    for each source), and the fraction of sampled lines it reads. Live mode calls this per file."""
    return _format_from_sample(_format_for(format_name, log_format, json_fields), sample)


def _format_from_sample(fixed: LogFormat | None, chunk: pl.Series) -> tuple[LogFormat, float]:
    """The format for one source: detected, or the fixed one (header-driven presets read the
    file's own header when it has one). A syslog prefix on most lines is stripped first."""
    syslog = cast(float, chunk.head(DETECTION_SAMPLE).str.contains(_SYSLOG_PREFIX).mean() or 0.0) > 0.5
    if syslog:
        chunk = chunk.to_frame("raw").select(_strip_syslog(pl.col("raw"))).to_series()
    fmt, rate = _unprefixed_format(fixed, chunk)
    return (replace(fmt, syslog=True), rate) if syslog else (fmt, rate)


def _unprefixed_format(fixed: LogFormat | None, chunk: pl.Series) -> tuple[LogFormat, float]:
    if fixed is None:
        return detect_format(chunk)
    if fixed.header_prefix and fixed.name in ("w3c", "cloudfront", "csv"):
        lines = chunk.filter(chunk.str.strip_chars() != "").head(DETECTION_SAMPLE)
        if fixed.name == "csv":
            header = lines[0] if lines.len() else None
        else:
            found = lines.filter(lines.str.starts_with(_FIELDS))
            header = found[0] if found.len() else None
        data = lines.filter(~lines.str.starts_with("#"))
        return log_formats.from_header(fixed.name, header, data[0] if data.len() else " "), 1.0
    return fixed, 1.0


def parse(sources: Sequence[str], *, format_name: str | None = "auto", log_format: str | None = None,
          tz: str = "UTC", max_unparsed_ratio: float = 0.5, progress: Progress | None = None,
          options: InputOptions | None = None, json_fields: str | None = None) -> ParsedLog:
    """Parse every source into one events table, rotated sets in time order.

    ``format_name`` is a preset name or ``auto`` (detected per source from its first lines);
    ``log_format`` is a custom Apache/nginx format string and wins over ``format_name``;
    ``json_fields`` a JSON field mapping (``client_ip=addr,timestamp=time``). ``options`` adds
    the real-client header, trusted proxies and a time window. Raises InputError when nothing
    can be read, or when more than ``max_unparsed_ratio`` of the lines do not parse.
    """
    options = options or InputOptions(tz=tz)
    fixed = _format_for(format_name, log_format, json_fields)
    run = _Run()
    for source in order_rotated(resolve_sources(sources)):
        next_line, headers = 1, None
        for chunk in read_ahead(iter_chunks(source, progress)):
            if source not in run.formats:
                fmt, rate = _format_from_sample(fixed, chunk)
                run.formats[source] = fmt
                headers = FieldsHeaders(fmt, source) if _is_w3c(fmt) else None
                log.info("%s: format %s (%.0f%% of sampled lines match)", source, fmt.name, 100 * rate)
            good, bad = _parse_chunk(chunk, run.formats[source], headers, source=source, first_line=next_line,
                                     options=options)
            run.add(source, _window(good, options), bad)
            next_line += chunk.len()
    result = run.assemble(options)
    _check_quality(result, sources, max_unparsed_ratio)
    return result


def within_window(events: pl.DataFrame, options: InputOptions) -> pl.DataFrame:
    """The events inside the --since/--until window of ``options`` (all of them without one)."""
    return _window(events, options)[0]


def _window(events: pl.DataFrame, options: InputOptions) -> tuple[pl.DataFrame, int]:
    """Events inside [since, until), and how many fell outside."""
    if options.since is None and options.until is None:
        return events, 0
    keep = pl.lit(True)
    if options.since is not None:
        keep = keep & (pl.col("timestamp") >= options.since)
    if options.until is not None:
        keep = keep & (pl.col("timestamp") < options.until)
    kept = events.filter(keep)
    return kept, events.height - kept.height


@dataclass
class _Run:
    """What one parse() call has gathered so far."""

    formats: dict[str, LogFormat] = field(default_factory=dict)
    events: list[pl.DataFrame] = field(default_factory=list)
    unparsed: list[pl.DataFrame] = field(default_factory=list)
    naive: Counter = field(default_factory=Counter)
    outside: int = 0

    def add(self, source: str, windowed: tuple[pl.DataFrame, int], bad: pl.DataFrame) -> None:
        good, outside = windowed
        self.naive[source] += int(good["_naive"].sum())
        self.events.append(good.drop("_naive"))
        self.unparsed.append(bad)
        self.outside += outside

    def assemble(self, options: InputOptions) -> ParsedLog:
        events = pl.concat(self.events, rechunk=False) if self.events else pl.DataFrame(schema=EVENT_SCHEMA)
        unparsed = pl.concat(self.unparsed) if self.unparsed else pl.DataFrame(schema=UNPARSED_SCHEMA)
        reasons = Counter(dict(unparsed.group_by("reason").len().iter_rows()))
        notes = [f"{source}: {count:,} timestamps carry no UTC offset; read in {options.tz} (--tz)"
                 for source, count in self.naive.items() if count]
        if self.outside:
            lines = "line" if self.outside == 1 else "lines"
            notes.append(f"{self.outside:,} {lines} outside the --since/--until window skipped")
        stats = ParseStats(total_lines=events.height + unparsed.height, parsed_lines=events.height,
                           unparsed_by_reason=dict(reasons.most_common()),
                           formats={s: f.name for s, f in self.formats.items()},
                           outside_window=self.outside, notes=tuple(notes))
        return ParsedLog(events=events, unparsed=unparsed, stats=stats)


def _check_quality(result: ParsedLog, sources: Sequence[str], max_unparsed_ratio: float) -> None:
    stats = result.stats
    named = ", ".join(sources)
    uncounted = sum(stats.unparsed_by_reason.get(reason, 0) for reason in UNCOUNTED_REASONS)
    lines = stats.total_lines - uncounted
    if lines == 0 and stats.outside_window:
        raise InputError("no log lines inside the --since/--until window", path=named)
    if lines == 0:
        raise InputError("no log lines to analyse (the input is empty)", path=named)
    ratio = (stats.unparsed_lines - uncounted) / lines
    if ratio > max_unparsed_ratio:
        used = ", ".join(sorted(set(stats.formats.values())))
        raise InputError(f"only {stats.parsed_lines} of {lines} lines parse as {used}",
                         path=named, hint="choose the format with --format NAME or --log-format '...'")


def validate_timezone(tz: str) -> str:
    """Return ``tz`` if Polars (parsing) and zoneinfo (reports) both know the zone, else raise ConfigError."""
    try:
        pl.Series([0]).cast(pl.Datetime("us")).dt.replace_time_zone(tz)
        ZoneInfo(tz)
    except Exception:  # polars raises its own ComputeError family for unknown zones, zoneinfo a KeyError or ValueError
        raise ConfigError(f"unknown time zone {tz!r}", hint="use an IANA name such as Europe/Berlin") from None
    return tz


def escape_path(path: str) -> str:
    """A source path as it is safe to show (used by writers for file names from the command line)."""
    return os.fspath(path)
