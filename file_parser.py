"""Access logs in any supported format into one canonical events table.

Lines are read in large chunks and every step is a Polars expression over a whole column:
no Python code runs per line. Lines that do not parse are counted and kept with a reason.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import io
import logging
import lzma
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import polars as pl

from analyser_errors import ConfigError, InputError
from log_formats import LogFormat, compile_format, detection_candidates, preset

log = logging.getLogger(__name__)

# The one canonical events schema. Every format produces exactly these columns, in this order.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),   # the request time, normalised to UTC
    "tz_offset_min": pl.Int16(),             # the offset the server logged, minutes east of UTC
    "client_ip": pl.String(),
    "method": pl.String(),
    "path": pl.String(),
    "query": pl.String(),                    # without the leading '?'; null when absent
    "protocol": pl.String(),
    "request": pl.String(),                  # the request line as logged (garbage kept verbatim)
    "status": pl.Int16(),
    "bytes": pl.Int64(),
    "referer": pl.String(),
    "user_agent": pl.String(),
    "vhost": pl.String(),
    "request_time": pl.Float64(),            # seconds; null when the format does not log it
    "raw": pl.String(),
    "line_number": pl.Int64(),               # 1-based, per source file
    "source": pl.String(),
}
UNPARSED_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(), "line_number": pl.Int64(), "reason": pl.String(), "raw": pl.String(),
}

CHUNK_BYTES = 32 * 1024 * 1024
DETECTION_SAMPLE = 2000
_CLF_TIME = "%d/%b/%Y:%H:%M:%S"
_REQUEST_LINE = r"^(?P<method>[A-Za-z][A-Za-z_-]{0,23}) (?P<target>\S+)(?: (?P<protocol>[A-Za-z]+/[0-9.]+))?$"
_SEPARATOR = b"\x1f"  # ASCII unit separator: never in a log line; a block containing it takes the slow path
_MAGIC: dict[bytes, Callable[..., Any]] = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ParseStats:
    """Line counts for a whole run; ``unparsed_by_reason`` maps a reason to its line count."""

    total_lines: int
    parsed_lines: int
    unparsed_by_reason: dict[str, int]
    formats: dict[str, str] = field(default_factory=dict)  # source -> format name used

    @property
    def unparsed_lines(self) -> int:
        return self.total_lines - self.parsed_lines


@dataclass(frozen=True)
class ParsedLog:
    events: pl.DataFrame      # EVENT_SCHEMA, one row per parsed line
    unparsed: pl.DataFrame    # UNPARSED_SCHEMA, one row per line that did not parse
    stats: ParseStats


def resolve_sources(patterns: Sequence[str]) -> list[str]:
    """Expand globs; ``-`` stands for standard input. A pattern matching nothing is an error."""
    sources: list[str] = []
    for pattern in patterns:
        if pattern == "-" or not glob.has_magic(pattern):
            sources.append(pattern)
            continue
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise InputError(f"no file matches {pattern!r}")
        sources.extend(matches)
    return sources


def _open(source: str) -> tuple[BinaryIO, BinaryIO]:
    """The decompressed stream and the raw one (for progress), decompressing by magic bytes."""
    try:
        raw: BinaryIO = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise InputError("no such file", path=source) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a log file", path=source) from None
    except PermissionError:
        raise InputError("permission denied", path=source) from None
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    head = buffered.peek(6)[:6]
    for magic, opener in _MAGIC.items():
        if head.startswith(magic):
            return opener(buffered, "rb"), buffered
    return buffered, buffered


def _read(stream: BinaryIO, size: int, source: str) -> bytes:
    try:
        return stream.read(size)
    except (EOFError, OSError, lzma.LZMAError) as exc:
        raise InputError(f"cannot read: {exc}", path=source,
                         hint="the file is truncated or corrupt") from None


def iter_chunks(source: str, progress: Progress | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[pl.Series]:
    """Yield the file's lines as String Series of roughly ``chunk_bytes`` each, in order.

    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes, the way Apache logs them.
    """
    stream, raw = _open(source)
    carry, position = b"", 0
    try:
        while True:
            block = _read(stream, chunk_bytes, source)
            if progress and source != "-":
                now = raw.tell()
                progress(now - position)
                position = now
            if not block:
                break
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield _split(block[:cut - 1])
        if carry:
            yield _split(carry)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _split(block: bytes) -> pl.Series:
    """The block's lines. Valid UTF-8 goes through Polars' multi-threaded reader (one column,
    a separator byte that the block does not contain); anything else is split in Python so that
    every line, with its bytes, is kept exactly."""
    expected = block.count(b"\n") + 1
    if _SEPARATOR not in block and (block.isascii() or _is_utf8(block)):
        lines = pl.read_csv(io.BytesIO(block), has_header=False, separator=_SEPARATOR.decode(), quote_char=None,
                            schema={"raw": pl.String}).to_series().fill_null("")
        if lines.len() == expected:
            return lines.str.strip_suffix("\r")
    text = block.decode("utf-8", errors="backslashreplace")
    return pl.Series("raw", text.split("\n")).str.strip_suffix("\r")


def _is_utf8(block: bytes) -> bool:
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _unwrap(raw: pl.Expr) -> pl.Expr:
    """Lines wrapped in an extra pair of double quotes (some exports do this) lose that pair."""
    wrapped = raw.str.starts_with('"') & raw.str.ends_with('"') & (raw.str.len_chars() > 1)
    return pl.when(wrapped).then(raw.str.slice(1, raw.str.len_chars() - 2)).otherwise(raw)


def detect_format(sample: pl.Series) -> tuple[LogFormat, float]:
    """The preset that matches the most sample lines, and the fraction it matches."""
    lines = sample.filter(sample.str.strip_chars() != "").head(DETECTION_SAMPLE)
    if lines.len() == 0:
        return detection_candidates()[0], 0.0
    lines = lines.to_frame().select(_unwrap(pl.col("raw"))).to_series()
    best, best_rate = None, -1.0
    for candidate in detection_candidates():
        rate = cast(float, lines.str.contains(candidate.regex).mean() or 0.0)
        if rate > best_rate:
            best, best_rate = candidate, rate
    assert best is not None
    return best, best_rate


def _quoted(name: str) -> pl.Expr:
    """A quoted field with its backslash escapes undone; '-' (not sent) becomes null."""
    text = pl.col(name).str.replace_all(r'\\(["\\])', "$1")
    return pl.when(text == "-").then(None).otherwise(text)


def _timestamp(groups: set[str], tz: str) -> tuple[pl.Expr, pl.Expr]:
    """(UTC timestamp, logged offset in minutes); times without an offset are taken in ``tz``."""
    if "time_clf" in groups:
        text = pl.col("time_clf").str.strip_chars("[] ")
        aware = text.str.to_datetime(f"{_CLF_TIME} %z", strict=False, time_unit="us")
        local = text.str.slice(0, 20).str.to_datetime(_CLF_TIME, strict=False, time_unit="us")
    elif "time_iso" in groups:
        text = pl.col("time_iso").str.replace(r"Z$", "+00:00")
        aware = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
        local = text.str.slice(0, 19).str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us")
    else:
        none = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
        return none, pl.lit(None, dtype=pl.Int16)
    assumed = local.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    utc = pl.coalesce(aware.dt.convert_time_zone("UTC"), assumed.dt.convert_time_zone("UTC"))
    offset = (local - utc.dt.replace_time_zone(None)).dt.total_minutes()
    return utc, offset


def _request_time(groups: set[str]) -> pl.Expr:
    def number(name: str) -> pl.Expr:
        return pl.col(name).cast(pl.Float64, strict=False)
    if "request_time_us" in groups:
        return number("request_time_us") / 1e6
    if "request_time_ms" in groups:
        return number("request_time_ms") / 1e3
    if "request_time_s" in groups:
        return number("request_time_s")
    if "request_time_tail" in groups:
        tail = pl.col("request_time_tail")
        return pl.when(tail.str.contains(r"\.")).then(number("request_time_tail")) \
            .otherwise(number("request_time_tail") / 1e6)
    return pl.lit(None, dtype=pl.Float64)


def _client_ip() -> pl.Expr:
    ip = pl.col("client_ip").str.strip_chars("[]").str.to_lowercase()
    return ip.str.replace(r"^::ffff:(\d+\.\d+\.\d+\.\d+)$", "$1")


def _canonical(fmt: LogFormat, tz: str, source: str) -> list[pl.Expr]:
    """Expressions turning the format's regex groups into EVENT_SCHEMA columns."""
    groups = set(fmt.groups)
    request = _quoted("request") if "request" in groups else pl.lit(None, dtype=pl.String)
    parts = request.str.extract_groups(_REQUEST_LINE)
    target = pl.col("target") if "target" in groups else parts.struct.field("target")
    halves = target.str.splitn("?", 2)
    path = pl.col("path") if "path" in groups else halves.struct.field("field_0")
    query = pl.col("query_raw").str.strip_prefix("?") if "query_raw" in groups else halves.struct.field("field_1")
    query = pl.when(query == "").then(None).otherwise(query)

    def opt(name: str, expr: pl.Expr | None = None) -> pl.Expr:
        return (expr if expr is not None else pl.col(name)) if name in groups else pl.lit(None)
    timestamp, offset = _timestamp(groups, tz)
    columns = {
        "timestamp": timestamp, "tz_offset_min": offset, "client_ip": _client_ip(),
        "method": pl.col("method") if "method" in groups else parts.struct.field("method"),
        "path": path, "query": query,
        "protocol": pl.col("protocol") if "protocol" in groups else parts.struct.field("protocol"),
        "request": request,
        "status": opt("status", pl.col("status").cast(pl.Int16, strict=False)),
        "bytes": opt("bytes", pl.col("bytes").cast(pl.Int64, strict=False).fill_null(0)),
        "referer": opt("referer", _quoted("referer")), "user_agent": opt("user_agent", _quoted("user_agent")),
        "vhost": opt("vhost"), "request_time": _request_time(groups),
        "raw": pl.col("raw"), "line_number": pl.col("line_number"), "source": pl.lit(source),
    }
    return [expr.cast(EVENT_SCHEMA[name]).alias(name) for name, expr in columns.items()]


def parse_lines(lines: pl.Series, fmt: LogFormat, *, source: str = "<lines>", first_line: int = 1,
                tz: str = "UTC") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a column of raw lines with one format: (events, unparsed) frames."""
    reason = (pl.when(pl.col("raw").str.strip_chars() == "").then(pl.lit("blank line"))
              .when(pl.col("client_ip").is_null()).then(pl.lit(f"does not match the {fmt.name} format"))
              .when(pl.col("timestamp").is_null()).then(pl.lit("unreadable timestamp"))
              .otherwise(None))
    events = (
        lines.alias("raw").to_frame().lazy()
        .with_row_index("line_number", offset=first_line)
        .with_columns(pl.col("line_number").cast(pl.Int64),
                      _unwrap(pl.col("raw")).str.extract_groups(fmt.regex).alias("_m"))
        .unnest("_m")
        .select(_canonical(fmt, tz, source))
        .with_columns(reason.alias("_reason"))
        .collect(engine="streaming")  # morsel-parallel: uses every core on one column
    )
    good = events.filter(pl.col("_reason").is_null()).drop("_reason")
    bad = events.filter(pl.col("_reason").is_not_null()).select(
        "source", "line_number", pl.col("_reason").alias("reason"), "raw")
    return good, bad


def _format_for(name: str | None, custom: str | None) -> LogFormat | None:
    if custom:
        return compile_format(custom)
    if name in (None, "auto"):
        return None
    return preset(name)


def parse(sources: Sequence[str], *, format_name: str | None = "auto", log_format: str | None = None,
          tz: str = "UTC", max_unparsed_ratio: float = 0.5, progress: Progress | None = None) -> ParsedLog:
    """Parse every source into one events table.

    ``format_name`` is a preset name or ``auto`` (detected per source from its first lines);
    ``log_format`` is a custom Apache/nginx format string and wins over ``format_name``.
    Raises InputError when nothing can be read, or when more than ``max_unparsed_ratio``
    of the lines do not parse (the format is probably wrong).
    """
    fixed = _format_for(format_name, log_format)
    events, unparsed, formats = [], [], {}
    for source in resolve_sources(sources):
        next_line = 1
        for chunk in iter_chunks(source, progress):
            if source not in formats:
                fmt, rate = (fixed, 1.0) if fixed else detect_format(chunk)
                formats[source] = fmt
                log.info("%s: format %s (%.0f%% of sampled lines match)", source, fmt.name, 100 * rate)
            good, bad = parse_lines(chunk, formats[source], source=source, first_line=next_line, tz=tz)
            events.append(good)
            unparsed.append(bad)
            next_line += chunk.len()
    result = _assemble(events, unparsed, {s: f.name for s, f in formats.items()})
    _check_quality(result, sources, max_unparsed_ratio)
    return result


def _assemble(events: list[pl.DataFrame], unparsed: list[pl.DataFrame], formats: dict[str, str]) -> ParsedLog:
    events_df = pl.concat(events) if events else pl.DataFrame(schema=EVENT_SCHEMA)
    unparsed_df = pl.concat(unparsed) if unparsed else pl.DataFrame(schema=UNPARSED_SCHEMA)
    reasons = Counter(dict(unparsed_df.group_by("reason").len().iter_rows()))
    stats = ParseStats(total_lines=events_df.height + unparsed_df.height, parsed_lines=events_df.height,
                       unparsed_by_reason=dict(reasons.most_common()), formats=formats)
    return ParsedLog(events=events_df, unparsed=unparsed_df, stats=stats)


def _check_quality(result: ParsedLog, sources: Sequence[str], max_unparsed_ratio: float) -> None:
    stats = result.stats
    named = ", ".join(sources)
    blank = stats.unparsed_by_reason.get("blank line", 0)
    if stats.total_lines - blank == 0:
        raise InputError("no log lines to analyse (the input is empty)", path=named)
    ratio = stats.unparsed_lines / stats.total_lines
    if ratio > max_unparsed_ratio:
        used = ", ".join(sorted(set(stats.formats.values())))
        raise InputError(f"only {stats.parsed_lines} of {stats.total_lines} lines parse as {used}",
                         path=named, hint="choose the format with --format NAME or --log-format '...'")


def validate_timezone(tz: str) -> str:
    """Return ``tz`` if Polars knows the zone, else raise ConfigError."""
    try:
        pl.Series([0]).cast(pl.Datetime("us")).dt.replace_time_zone(tz)
    except Exception:  # polars raises its own ComputeError family for unknown zones
        raise ConfigError(f"unknown time zone {tz!r}", hint="use an IANA name such as Europe/Berlin") from None
    return tz


def escape_path(path: str) -> str:
    """A source path as it is safe to show (used by writers for file names from the command line)."""
    return os.fspath(path)
