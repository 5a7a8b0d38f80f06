"""Access logs in any supported format into one canonical events table.

Lines are read in large chunks and every step is a Polars expression over a whole column:
no Python code runs per line. Lines that do not parse are counted and kept with a reason.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast
from zoneinfo import ZoneInfo

import polars as pl

from log_analyser_core.errors import ConfigError, InputError
from log_analyser_core.parsing import formats as log_formats
from log_analyser_core.parsing import quote_split, variants, wrappers
from log_analyser_core.parsing.events import EVENT_SCHEMA, canonical
from log_analyser_core.parsing.formats import LogFormat, compile_format, detection_candidates, preset
from log_analyser_core.parsing.presets import PRESETS
from log_analyser_core.parsing.reader import Progress, iter_chunks, read_ahead, resolve_sources
from log_analyser_core.parsing.reasons import ERROR_LOG, JOINED_PIECE, NOT_ACCESS_REASONS, unparsed_reason
from log_analyser_core.parsing.sources import InputOptions, order_rotated, resolve_real_ip
from log_analyser_core.parsing.wrappers import Wrapper

log = logging.getLogger(__name__)

UNCOUNTED_REASONS = NOT_ACCESS_REASONS   # the former name
# source and reason repeat on every row: dictionary-encoded, so a long path is not stored once per line
UNPARSED_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.Categorical(), "line_number": pl.Int64(), "reason": pl.Categorical(), "raw": pl.String(),
}
UNPARSED_RAW_CHARS = 2_000   # an unparsed line is kept this long: enough to see what it was

DETECTION_SAMPLE = 2000
VARIANT_BELOW = 0.98   # when no preset reads this share of the sample, combined variants are inferred
_FIELDS = "#Fields:"   # the W3C directive naming a block's columns
UNUSABLE_FIELDS = "under an unusable #Fields: line"   # the reason for each line of a skipped W3C block


@dataclass(frozen=True)
class ParseStats:
    """Line counts for a whole run; ``unparsed_by_reason`` maps a reason to its line count."""

    total_lines: int
    parsed_lines: int
    unparsed_by_reason: dict[str, int]
    formats: dict[str, str] = field(default_factory=dict)  # source -> format name used ('cri + combined')
    outside_window: int = 0          # parsed lines skipped by --since/--until (not in the counts above)
    notes: tuple[str, ...] = ()      # what the reader assumed (e.g. a zone for offset-less times)
    not_access: dict[str, int] = field(default_factory=dict)   # kind (NOT_ACCESS_REASONS) -> lines
    recovered: int = 0               # parsed lines read by the second, anchored pass (unescaped quotes)

    @property
    def unparsed_lines(self) -> int:
        """Lines that should have parsed and did not (not-access lines are not among them)."""
        return self.total_lines - self.parsed_lines - sum(self.not_access.values())


@dataclass(frozen=True)
class ParsedLog:
    events: pl.DataFrame      # EVENT_SCHEMA, one row per parsed line
    unparsed: pl.DataFrame    # UNPARSED_SCHEMA, one row per line that did not parse
    stats: ParseStats


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
    access = lines.filter(~lines.str.contains(ERROR_LOG))   # error-log lines interleaved tell nothing
    lines = access if access.len() else lines
    shaped = _shaped_candidates(lines)
    candidates = shaped or detection_candidates()
    best, best_rate = candidates[0], -1.0
    for candidate in candidates:
        rate = _match_rate(lines, candidate)
        if rate > best_rate:
            best, best_rate = candidate, rate
        if best_rate == 1.0:   # no later candidate can read more (ties go to the earlier one)
            break
    if not shaped and best_rate < VARIANT_BELOW:   # combined with a lead or trailing fields of its own?
        variant = variants.infer(lines)
        rate = _match_rate(lines, variant) if variant is not None else 0.0
        if variant is not None and rate > best_rate:
            log.info("format %s: read as log_format '%s'", variant.name, variant.source)
            best, best_rate = variant, rate
    return best, best_rate


def _shaped_candidates(lines: pl.Series) -> list[LogFormat]:
    """Candidates recognised by the file's shape (header lines, JSON objects), else none."""
    first = lines[0]
    fields = lines.filter(lines.str.starts_with(_FIELDS))
    if fields.len():
        data = lines.filter(~lines.str.starts_with("#"))
        name = "cloudfront" if "x-edge-location" in fields[0] else "w3c"
        return [_from_header(name, fields[0], data[0] if data.len() else " ")]
    if cast(float, lines.str.starts_with("{").mean() or 0.0) > 0.5:
        return [preset(name) for name, spec in PRESETS.items() if spec.kind == "json"]
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
                   for i, f in enumerate(formats) if f is not None)
        return hits / int(data.sum()) if data.any() else 0.0
    if fmt.regex is not None:
        data = lines.filter(~lines.str.starts_with(fmt.header_prefix)) if fmt.header_prefix else lines
        return cast(float, data.str.contains(fmt.regex).mean() or 0.0) if data.len() else 0.0
    groups = lines.alias("raw").to_frame().select(_json_groups(fmt))
    return float(cast(float, (groups["client_ip"].is_not_null() & groups["time_any"].is_not_null()).mean() or 0.0))


def _json_groups(fmt: LogFormat, raw: pl.Expr | None = None) -> list[pl.Expr]:
    """One column per mapped field, from the first JSON path that is present."""
    raw = pl.col("raw") if raw is None else raw
    return [pl.coalesce([raw.str.json_path_match(path) for path in paths]).alias(group)
            for group, paths in fmt.json_fields]


def _captured(fmt: LogFormat) -> list[pl.Expr]:
    """The format's groups, read from ``_line`` (the line out of its wrapper)."""
    line = pl.col("_line")
    if fmt.regex is None:
        return [*_json_groups(fmt, line)]
    return [_line_text(fmt).str.extract_groups(fmt.regex).alias("_m")]


def _line_text(fmt: LogFormat) -> pl.Expr:
    """The line as the format reads it: ``_line`` unwrapped from an extra pair of quotes."""
    line = pl.col("_line")
    return line if any(d == "csv" for _, d in fmt.decoders) else _unwrap(line)


def parse_lines(lines: pl.Series, fmt: LogFormat, *, source: str = "<lines>", first_line: int = 1,
                tz: str = "UTC", options: InputOptions | None = None,
                line_numbers: pl.Series | None = None, wrapper: Wrapper | None = None,
                recover: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a column of raw lines with one format: (events, unparsed) frames.

    Lines are numbered from ``first_line`` on, or take ``line_numbers`` (one per line) when given.
    ``wrapper`` is the collector's envelope, taken off each line first. Lines the format does not
    match get a second, anchored pass (``fmt.lenient``: quoted fields may hold quotes), when
    ``recover``. ``events`` has EVENT_SCHEMA plus ``_naive`` (time logged without an offset) and
    ``_recovered`` (read by the second pass); ``unparsed`` has UNPARSED_SCHEMA, not-access lines
    (NOT_ACCESS_REASONS) included.
    """
    options = options or InputOptions(tz=tz)
    real_ip_group = log_formats.REAL_IP_HEADERS.get(options.real_ip_header or "")
    numbered = (lines.alias("raw").to_frame().with_row_index("line_number", offset=first_line)
                if line_numbers is None else pl.DataFrame({"raw": lines, "line_number": line_numbers}))
    pieces = None
    if wrapper is not None and wrapper.name == "cri":
        numbered, pieces = wrappers.join_pieces(numbered.with_columns(pl.col("line_number").cast(pl.Int64)))
    line = wrapper.strip(pl.col("raw")) if wrapper else pl.col("raw")
    numbered = numbered.with_columns(pl.col("line_number").cast(pl.Int64))
    events = _events(numbered, fmt, line, canonical(fmt, options.tz, source, real_ip_group))
    read = pl.col("client_ip").is_not_null() & pl.col("timestamp").is_not_null()
    parsed = events.select(read & pl.col("_bad_number").is_null()).to_series()
    # most chunks parse whole: their columns are kept as they are, not copied by a filter
    good = events.drop("raw", "_line", "_matched", "_bad_number")
    good = (good if parsed.all() else good.filter(parsed)).with_columns(_recovered=pl.lit(False),
                                                                         _refused=pl.lit(False))
    # a line that reads but holds a number that does not fit its column: unparsed, with that reason
    reason = pl.when(read).then(pl.col("_bad_number")).otherwise(unparsed_reason(fmt, wrapper))
    bad = events.filter(~parsed).select(
        pl.col("source").cast(pl.String), "line_number", reason.alias("reason"), "raw")
    if pieces is not None and pieces.height:   # joined into the line they continue: counted apart
        bad = pl.concat([bad, pieces.select(pl.lit(source).alias("source"), "line_number",
                                            pl.lit(JOINED_PIECE).alias("reason"), "raw")]).sort("line_number")
    if real_ip_group:
        client, refused = resolve_real_ip(good, "_real_ip_hdr", options.trusted_proxies)
        good = good.with_columns(client.cast(pl.Categorical).alias("client_ip"), refused.alias("_refused")) \
            .drop("_real_ip_hdr")
    lenient = fmt.lenient
    mismatch = bad["reason"] == f"does not match the {fmt.name} format"
    if recover and lenient is not None and mismatch.any():
        good, bad = _recover(good, bad, mismatch, replace(fmt, regex=lenient), source=source, options=options,
                             wrapper=wrapper)
    return good, _kept(bad)


def _events(numbered: pl.DataFrame, fmt: LogFormat, line: pl.Expr, stages: list[list[pl.Expr]]) -> pl.DataFrame:
    """``numbered`` read with ``fmt`` through the ``canonical`` stages, with ``raw``, ``_line`` and
    ``_matched``. Formats with a quote-split layout (combined, common, nginx...) are split and
    canonicalised in one pass; the few lines the split cannot read are read again with the regex
    and put in their place."""
    split = quote_split.split_groups(numbered, fmt, line)
    if split is None:
        return _canonical(_regex_groups(numbered, fmt, line), stages)
    events = _canonical(split, stages, "_ok")
    missed = (~events["_ok"]).arg_true()
    events = events.drop("_ok")
    if missed.len() == 0:
        return events
    again = _canonical(_regex_groups(numbered[missed], fmt, line), stages)
    return events.with_columns(events[name].scatter(missed, again[name]) for name in events.columns)


def _regex_groups(numbered: pl.DataFrame, fmt: LogFormat, line: pl.Expr) -> pl.LazyFrame:
    frame = numbered.lazy().with_columns(line.alias("_line")).with_columns(*_captured(fmt))
    return frame.unnest("_m") if fmt.regex is not None else frame


def _canonical(frame: pl.LazyFrame, stages: list[list[pl.Expr]], *kept: str) -> pl.DataFrame:
    first, second, final = stages
    return (frame.with_columns(first).with_columns(second).select(*final, "raw", "_line", "_matched", *kept)
            .collect(engine="streaming"))  # morsel-parallel: uses every core on one column


def _kept(bad: pl.DataFrame) -> pl.DataFrame:
    """Unparsed rows as they are kept: UNPARSED_SCHEMA, the text clipped to UNPARSED_RAW_CHARS."""
    return bad.with_columns(pl.col("raw").str.slice(0, UNPARSED_RAW_CHARS)).cast(UNPARSED_SCHEMA)  # type: ignore[arg-type]


def _recover(good: pl.DataFrame, bad: pl.DataFrame, mismatch: pl.Series, lenient: LogFormat, *, source: str,
             options: InputOptions, wrapper: Wrapper | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The second pass: lines the format did not match, read again with ``lenient`` (each quoted
    field may hold quotes; the fields around them, from both ends of the line, pin them down).
    Servers such as Traefik and Envoy do not escape a quote in a user agent, so without this an
    attacker could hide every request he makes."""
    retry = bad.filter(mismatch)
    found, still = parse_lines(retry["raw"], lenient, source=source, options=options,
                               line_numbers=retry["line_number"], wrapper=wrapper, recover=False)
    if found.height == 0:
        return good, bad
    good = pl.concat([good, found.with_columns(_recovered=pl.lit(True))]).sort("line_number")
    bad = pl.concat([_kept(bad.filter(~mismatch)), still]).sort("line_number")
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
    compiled: dict[tuple[str, bool], LogFormat | None] = field(default_factory=dict)

    def format_for(self, header: tuple[str, int] | None, sample: str) -> LogFormat | None:
        """The format for data lines under ``header`` (its text and line number; None before the
        first); ``sample`` is one of those lines, whose tabs choose the separator. A header that
        names no c-ip or date gives None (its block is skipped, each line unparsed), with one
        warning naming the source and line."""
        if header is None:
            return self.initial
        text, line = header
        key = (text, "\t" in sample)
        if key not in self.compiled:
            try:
                fmt: LogFormat | None = log_formats.compile_w3c(text, sample, name=self.initial.name)
            except ConfigError as exc:
                log.warning("%s:%d: %s; the lines under it are skipped", self.source, line, exc.message)
                fmt = None
            self.compiled[key] = fmt
        return self.compiled[key]

    def blocks(self, lines: pl.Series,
               line_numbers: pl.Series | int = 1) -> tuple[pl.Series, list[LogFormat | None]]:
        """Which format reads each line of a chunk: one index per line into the distinct formats,
        and those formats (None for a block under an unusable header). Block k of the chunk starts
        at its k-th ``#Fields:`` line (block 0 continues the header in force); only blocks with data
        lines compile a format. ``line_numbers``: one per line, or the first line's number.
        Advances ``current``."""
        is_header = lines.str.starts_with(_FIELDS).fill_null(False)
        block = is_header.cum_sum()
        numbers = (is_header.arg_true() + line_numbers).to_list() if isinstance(line_numbers, int) \
            else line_numbers.filter(is_header).to_list()
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
                 first_line: int, options: InputOptions, wrapper: Wrapper | None = None,
                 line_numbers: pl.Series | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """parse_lines, with W3C lines read under the ``#Fields:`` header above them: one parse per
    distinct field list in the chunk, results put back in line order. ``line_numbers`` (one per
    line) when lines were left out of the chunk, else numbered from ``first_line``."""
    if headers is None:
        return parse_lines(lines, fmt, source=source, first_line=first_line, options=options, wrapper=wrapper,
                           line_numbers=line_numbers)
    if wrapper is not None:   # the #Fields: lines are read out of the envelope too
        lines = wrappers.unwrap(lines, wrapper)
    numbers = pl.int_range(first_line, first_line + lines.len(), dtype=pl.Int64, eager=True) \
        if line_numbers is None else line_numbers
    which, formats = headers.blocks(lines, numbers)
    if len(formats) == 1 and formats[0] is not None:
        return parse_lines(lines, formats[0], source=source, options=options, line_numbers=numbers)
    parts = [_parse_block(lines.filter(which == i), block_format, source=source, options=options,
                          line_numbers=numbers.filter(which == i)) for i, block_format in enumerate(formats)]
    good = pl.concat([part[0] for part in parts]).sort("line_number")
    bad = pl.concat([part[1] for part in parts]).sort("line_number")
    return good, bad


def _parse_block(lines: pl.Series, fmt: LogFormat | None, *, source: str, options: InputOptions,
                 line_numbers: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """parse_lines for one W3C block; a block under an unusable ``#Fields:`` line (None) is all
    unparsed, its header lines as header lines (counted apart)."""
    if fmt is not None:
        return parse_lines(lines, fmt, source=source, options=options, line_numbers=line_numbers)
    reason = pl.when(pl.col("raw").str.starts_with("#")).then(pl.lit("header line")).otherwise(pl.lit(UNUSABLE_FIELDS))
    bad = pl.DataFrame({"raw": lines, "line_number": line_numbers}).select(
        pl.lit(source).alias("source"), "line_number", reason.alias("reason"),
        pl.col("raw").str.slice(0, UNPARSED_RAW_CHARS))
    extra = {"_naive": pl.Boolean(), "_recovered": pl.Boolean(), "_refused": pl.Boolean()}
    return pl.DataFrame(schema={**EVENT_SCHEMA, **extra}), bad.cast(UNPARSED_SCHEMA)  # type: ignore[arg-type]


def _without_blanks(chunk: pl.Series, first_line: int) -> tuple[pl.Series, pl.Series | None, int]:
    """(the chunk's non-blank lines, their line numbers or None when none was blank, blank lines).
    Blank lines are counted, never parsed nor stored: 100 MB of newlines compress to a few bytes."""
    blank = ~chunk.str.contains(r"\S")   # no character that is not white space (half the cost of ^\s*$)
    count = int(blank.sum())
    if count == 0:
        return chunk, None, 0
    numbers = pl.int_range(first_line, first_line + chunk.len(), dtype=pl.Int64, eager=True)
    return chunk.filter(~blank), numbers.filter(~blank), count


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


@dataclass
class SourceReader:
    """How one source's lines are read, chosen from its first lines as parse() chooses: the
    collector's envelope taken off (or None), the format, and for W3C the ``#Fields:`` header in
    force. Live mode keeps one per followed file and feeds it each batch of new lines."""

    source: str
    wrapper: Wrapper | None
    fmt: LogFormat
    rate: float                              # the share of sampled lines the format reads
    headers: FieldsHeaders | None = None

    @classmethod
    def of(cls, source: str, sample: pl.Series, *, format_name: str | None = "auto", log_format: str | None = None,
           json_fields: str | None = None) -> SourceReader:
        wrapper, fmt, rate = _format_from_sample(_format_for(format_name, log_format, json_fields), sample)
        return cls(source, wrapper, fmt, rate, FieldsHeaders(fmt, source) if _is_w3c(fmt) else None)

    @property
    def name(self) -> str:
        """The format's name, after the envelope's (``docker + combined``)."""
        return f"{self.wrapper.name} + {self.fmt.name}" if self.wrapper else self.fmt.name

    def parse(self, lines: pl.Series, first_line: int,
              options: InputOptions) -> tuple[pl.DataFrame, pl.DataFrame, int]:
        """(events inside the options' time window, unparsed lines, blank lines) of the source's next
        ``lines``, numbered from ``first_line``; see parse_lines."""
        kept, numbers, blank = _without_blanks(lines, first_line)
        good, bad = _parse_chunk(kept, self.fmt, self.headers, source=self.source, first_line=first_line,
                                 options=options, wrapper=self.wrapper, line_numbers=numbers)
        return _window(good, options)[0], bad, blank


def _format_from_sample(fixed: LogFormat | None, chunk: pl.Series) -> tuple[Wrapper | None, LogFormat, float]:
    """The wrapper and format for one source: detected, or the fixed format (header-driven presets
    read the file's own header when it has one). A collector's envelope (syslog, CRI, Docker) on
    most lines is taken off first; of the envelopes that fit, the one whose lines parse best wins."""
    sample = chunk.head(DETECTION_SAMPLE * 2)
    found = wrappers.candidates(sample.head(DETECTION_SAMPLE))
    plain: tuple[Wrapper | None, LogFormat, float] = (None, *_unprefixed_format(fixed, sample, rated=bool(found)))
    best = None
    for wrapper in found:   # the access lines inside: not what the container wrote to stderr, nor pieces
        kept = sample.to_frame("raw").filter(~wrapper.stderr(pl.col("raw")) & ~wrapper.partial(pl.col("raw")))
        fmt, rate = _unprefixed_format(fixed, wrappers.unwrap(kept.to_series(), wrapper), rated=True)
        if best is None or rate > best[2]:
            best = (wrapper, fmt, rate)
    return plain if best is None or plain[2] > best[2] else best   # the envelope on most lines wins ties


def _unprefixed_format(fixed: LogFormat | None, chunk: pl.Series, rated: bool = False) -> tuple[LogFormat, float]:
    """The format and the share of sampled lines it reads (1.0 for a fixed format unless ``rated``)."""
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
        fixed = (log_formats.from_header if fixed.name == "csv" else _from_header)(
            fixed.name, header, data[0] if data.len() else " ")
        if not rated:
            return fixed, 1.0
    if not rated:
        return fixed, 1.0
    lines = chunk.filter(chunk.str.strip_chars() != "").head(DETECTION_SAMPLE)
    return fixed, (_match_rate(lines, fixed) if lines.len() else 0.0)


def _from_header(name: str, header: str | None, sample: str) -> LogFormat:
    """A W3C format from a file's first ``#Fields:`` line; an unusable one gives the preset (its
    block is then skipped by FieldsHeaders, which reads the same line)."""
    try:
        return log_formats.from_header(name, header, sample)
    except ConfigError:
        return preset(name)


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
        next_line, headers, wrapper = 1, None, None
        for chunk in read_ahead(iter_chunks(source, progress, max_decompressed=options.max_decompressed)):
            if source not in run.formats:
                wrapper, fmt, rate = _format_from_sample(fixed, chunk)
                run.formats[source] = fmt
                run.wrappers[source] = wrapper
                headers = FieldsHeaders(fmt, source) if _is_w3c(fmt) else None
                log.info("%s: format %s (%.0f%% of sampled lines match)", source, run.name(source), 100 * rate)
                if fmt.ignored:
                    log.info("%s: read over as opaque fields: %s", source, ", ".join(fmt.ignored))
            lines, numbers, blank = _without_blanks(chunk, next_line)
            if blank:   # counted by kind, like other lines that are not access lines
                run.not_access["blank line"] += blank
            good, bad = _parse_chunk(lines, run.formats[source], headers, source=source, first_line=next_line,
                                     options=options, wrapper=wrapper, line_numbers=numbers)
            run.add(source, _window(good, options), bad)
            next_line += chunk.len()
    result = run.assemble(options)
    _check_quality(result, sources, max_unparsed_ratio)
    return result


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
    wrappers: dict[str, Wrapper | None] = field(default_factory=dict)
    events: list[pl.DataFrame] = field(default_factory=list)
    unparsed: list[pl.DataFrame] = field(default_factory=list)
    naive: Counter = field(default_factory=Counter)
    not_access: Counter = field(default_factory=Counter)
    recovered: int = 0
    outside: int = 0
    refused: int = 0   # kept lines whose --real-ip-header held a value that is not an address

    def name(self, source: str) -> str:
        """The source's format as the summary names it: 'combined', or 'cri + combined'."""
        wrapper = self.wrappers.get(source)
        return f"{wrapper.name} + {self.formats[source].name}" if wrapper else self.formats[source].name

    def add(self, source: str, windowed: tuple[pl.DataFrame, int], bad: pl.DataFrame) -> None:
        good, outside = windowed
        self.naive[source] += int(good["_naive"].sum())
        self.recovered += int(good["_recovered"].sum())
        self.refused += int(good["_refused"].sum())
        self.events.append(good.drop("_naive", "_recovered", "_refused"))
        apart = bad["reason"].is_in(NOT_ACCESS_REASONS)
        if apart.any():   # counted by kind, not kept
            self.not_access.update(dict(bad.filter(apart).group_by("reason").len().iter_rows()))
            bad = bad.filter(~apart)
        self.unparsed.append(bad)
        self.outside += outside

    def assemble(self, options: InputOptions) -> ParsedLog:
        events = pl.concat(self.events, rechunk=False) if self.events else pl.DataFrame(schema=EVENT_SCHEMA)
        unparsed = pl.concat(self.unparsed) if self.unparsed else pl.DataFrame(schema=UNPARSED_SCHEMA)
        reasons = Counter(dict(unparsed.group_by("reason").len().iter_rows()))
        notes = run_notes(self.naive, self.outside, self.recovered, options.tz, self.refused)
        not_access = sum(self.not_access.values())
        stats = ParseStats(total_lines=events.height + unparsed.height + not_access, parsed_lines=events.height,
                           unparsed_by_reason=dict(reasons.most_common()),
                           formats={s: self.name(s) for s in self.formats},
                           outside_window=self.outside, notes=tuple(notes),
                           not_access=dict(self.not_access.most_common()), recovered=self.recovered)
        return ParsedLog(events=events, unparsed=unparsed, stats=stats)


def run_notes(naive: Mapping[str, int], outside: int, recovered: int, tz: str, refused: int = 0) -> list[str]:
    """The summary's notes on a parse: timestamps without an offset (per source), lines outside
    the --since/--until window, lines read by the second pass, forwarded-for values refused."""
    notes = [f"{source}: {count:,} timestamps carry no UTC offset; read in {tz} (--tz)"
             for source, count in naive.items() if count]
    if outside:
        lines = "line" if outside == 1 else "lines"
        notes.append(f"{outside:,} {lines} outside the --since/--until window skipped")
    if recovered:
        notes.append(f"{recovered:,} lines with quotes inside quoted fields read by a second pass")
    if refused:
        notes.append(f"{refused:,} lines carry a forwarded-for value that is not an IP address "
                     "(refused: the next valid hop, else the connecting address, is the client)")
    return notes


def _check_quality(result: ParsedLog, sources: Sequence[str], max_unparsed_ratio: float) -> None:
    stats = result.stats
    named = ", ".join(sources)
    lines = stats.parsed_lines + stats.unparsed_lines
    if lines == 0 and stats.outside_window:
        raise InputError("no log lines inside the --since/--until window", path=named)
    if lines == 0:
        raise InputError("no log lines to analyse (the input is empty)", path=named)
    ratio = stats.unparsed_lines / lines
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
