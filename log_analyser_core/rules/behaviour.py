"""Behavioural detection rules as data: per-client thresholds over time windows.

Rules are YAML files (one rule or a list of rules per file; the package ships ``behaviours/``).
Each rule selects events with a ``filter`` and counts them per client in one of two windows:

* ``bucket`` -- a CrowdSec-style leaky bucket: every matching event pours ``1`` (or its bytes,
  ``weight: bytes``) into the client's bucket, which leaks one unit every ``leak_speed`` seconds;
  the rule fires when the level exceeds ``capacity``. ``baseline`` raises the capacity to
  ``factor`` x the ``quantile`` of every client's peak level, so floods are judged against the
  site's own traffic.
* ``window`` -- fail2ban's ``maxretry`` events within ``findtime`` seconds.

``distinct: COLUMN`` counts only the first event of each distinct value (distinct 404 paths,
distinct user agents). Both windows are evaluated for many clients at once with Polars
expressions over the events sorted by client (the bucket level has the closed form
``1 + A_i - cummin(A)_i`` with ``A_i = cumsum(w)_{<i} - t_i / leak_speed``), never a per-event
Python loop, and with as few windows over the clients (``.over``) as can be: those cost seconds
each over a million one-request clients. A big log is read one partition of clients at a time
(see ``detect``).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeGuard

import polars as pl
import yaml

from log_analyser_core.errors import RulesError
from log_analyser_core.parsing import events as log_events
from log_analyser_core.parsing import sources as log_input
from log_analyser_core.results import AttackType, Evidence, ExampleLine, Severity
from log_analyser_core.rules import lists as knowledge_lists
from log_analyser_core.rules.packs import package_pack

log = logging.getLogger(__name__)

RULE_FIELDS = {"id", "title", "description", "attack_type", "severity", "filter", "bucket", "window", "tags",
               "per_agent_when_shared"}
FILTER_FIELDS = {"methods", "path", "path_not", "query", "target", "text", "user_agent", "user_agent_not", "referer",
                 "protocol", "protocol_not", "status", "local_hours", "min_bytes", "client_never", "malformed"}
BUCKET_FIELDS = {"capacity", "leak_speed", "distinct", "weight", "baseline"}
WINDOW_FIELDS = {"maxretry", "findtime", "distinct"}
DISTINCT_COLUMNS = {"path", "query", "user_agent", "referer", "target"}
EXAMPLES = 3
PARTITION_EVENTS = 2**20   # events the rules read at once (a partition of the clients, see detect)
# the event columns prepare reads (filters, distinct keys, the bucket's time and weight)
_READ_COLUMNS = ("timestamp", "tz_offset_min", "client_ip", "status", "bytes", "method", "path", "query",
                 "user_agent", "referer", "protocol")


@dataclass(frozen=True)
class Bucket:
    """Leaky bucket: fires when the level (events, or bytes with ``weight='bytes'``) exceeds capacity."""

    capacity: float
    leak_speed: float                 # seconds for one unit to leak out
    distinct: str | None = None
    weight: str | None = None         # None (each event weighs 1) or "bytes"
    baseline_quantile: float | None = None
    baseline_factor: float = 1.0


@dataclass(frozen=True)
class Window:
    """fail2ban: fires when ``maxretry`` matching events fall within ``findtime`` seconds."""

    maxretry: int
    findtime: float
    distinct: str | None = None


@dataclass(frozen=True)
class BehaviourRule:
    id: str
    title: str
    attack_type: AttackType | None
    severity: Severity
    condition: pl.Expr                # over the events table (see prepare); True = the event matches
    window: Bucket | Window
    source: str
    tags: tuple[str, ...] = ()
    regexes: tuple[tuple[str, str], ...] = ()   # (column, pattern) the condition reads, see _add_regex_columns
    per_agent_when_shared: bool = False   # on a shared address, count each (address, user agent) apart


class _Collector:
    """Gathers every validation error of a run, pySigma's collect-errors style."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, source: str, rule_id: str, field: str, message: str) -> None:
        self.errors.append(f"{source}: rule {rule_id!r}: {field}: {message}")


def default_rule_dir() -> Path:
    """The behaviour rules shipped with the package (package data of ``log_analyser_core.rules``)."""
    return package_pack("behaviours", "*.yaml", "behaviour")


def rule_files(paths: Sequence[str | Path] | None = None) -> list[Path]:
    """YAML files under the given files or folders (default: the shipped ``behaviours/``)."""
    found: list[Path] = []
    for path in map(Path, paths or [default_rule_dir()]):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in {".yml", ".yaml"})
        elif path.is_file():
            found.append(path)
        else:
            raise RulesError("no such rule file or folder", path=str(path))
    return found


def check(paths: Sequence[str | Path] | None = None) -> list[str]:
    """Every problem in the rule files, as 'FILE: rule ID: FIELD: message' lines (empty when valid);
    for a `rules check` command."""
    try:
        load_rules(paths)
    except RulesError as exc:
        return list(getattr(exc, "problems", [str(exc)]))
    return []


def load_rules(paths: Sequence[str | Path] | None = None) -> list[BehaviourRule]:
    """Load and validate every rule; raises one RulesError listing all problems found
    (also in its ``problems`` attribute, one string each)."""
    errors = _Collector()
    rules: list[BehaviourRule] = []
    for path in rule_files(paths):
        rules += _load_file(path, errors)
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            errors.add(rule.source, rule.id, "id", "duplicate rule id")
        seen.add(rule.id)
    if errors.errors:
        error = RulesError(f"{len(errors.errors)} rule error(s): " + "; ".join(errors.errors),
                           hint="fix the fields named; every error found is listed")
        error.problems = list(errors.errors)
        raise error
    return rules


def _load_file(path: Path, errors: _Collector) -> list[BehaviourRule]:
    try:
        # libyaml's safe loader where PyYAML was built with it: the same documents, about 10x faster
        documents = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        errors.add(str(path), "-", "file", f"cannot read YAML: {str(exc).splitlines()[0]}")
        return []
    documents = documents if isinstance(documents, list) else [documents]
    rules = []
    for index, document in enumerate(documents):
        rule = compile_rule(document, str(path), errors, index)
        if rule is not None:
            rules.append(rule)
    return rules


def compile_rule(document: object, source: str, errors: _Collector, index: int = 0) -> BehaviourRule | None:
    """One YAML mapping into a BehaviourRule, or None with the problems added to ``errors``."""
    before = len(errors.errors)
    if not isinstance(document, dict):
        errors.add(source, f"#{index + 1}", "rule", "must be a mapping")
        return None
    rule_id = str(document.get("id") or f"#{index + 1}")
    def bad(field: str, message: str) -> None:
        errors.add(source, rule_id, field, message)
    for key in sorted(set(document) - RULE_FIELDS):
        bad(key, "unknown field")
    for key in ("id", "title", "severity", "filter"):
        if key not in document:
            bad(key, "missing")
    if ("bucket" in document) == ("window" in document):
        bad("bucket", "exactly one of 'bucket' or 'window' is required")
    severity = _enum(document.get("severity", "info"), Severity.parse, "severity", bad)
    attack = document.get("attack_type")
    attack_type = _enum(attack, AttackType, "attack_type", bad) if attack is not None else None
    regexes: list[tuple[str, str]] = []
    condition = _condition(document.get("filter"), bad, regexes)
    window = (_bucket(document["bucket"], bad) if "bucket" in document
              else _window(document["window"], bad) if "window" in document else None)
    if len(errors.errors) > before or condition is None or window is None or severity is None:
        return None
    shared = document.get("per_agent_when_shared", False)
    if not isinstance(shared, bool):
        bad("per_agent_when_shared", "must be true or false")
        return None
    return BehaviourRule(id=rule_id, title=str(document["title"]), attack_type=attack_type, severity=severity,
                         condition=condition, window=window, source=source, regexes=tuple(regexes),
                         tags=tuple(str(t) for t in document.get("tags", ())), per_agent_when_shared=shared)


def _enum(value, parse, field, bad):
    try:
        return parse(str(value))
    except (ValueError, KeyError):
        bad(field, f"unknown value {value!r}")
        return None


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid regular expression for Polars (Rust regex syntax: no
    look-around or back-references), or None when it is."""
    try:
        re.compile(pattern)
        pl.Series([""]).str.contains(pattern)
    except (re.error, pl.exceptions.PolarsError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _regex(value, field, bad) -> str | None:
    """A filter's regex: a string, or ``{list: NAME}`` for a knowledge list (see rules.lists)."""
    if isinstance(value, dict):
        if set(value) != {"list"}:
            bad(field, "a mapping here must be {list: NAME}")
            return None
        try:
            value = knowledge_lists.pattern(str(value["list"]))
        except RulesError as exc:
            bad(field, str(exc))
            return None
    problem = regex_problem(str(value))
    if problem:
        bad(field, f"invalid regular expression: {problem}")
        return None
    return "(?i)" + str(value)


def _condition(spec: object, bad, regexes: list[tuple[str, str]]) -> pl.Expr | None:
    """The filter mapping as one boolean expression (every key must hold)."""
    if not isinstance(spec, dict) or not spec:
        bad("filter", "must be a non-empty mapping")
        return None
    parts: list[pl.Expr] = []
    for key, value in spec.items():
        if key not in FILTER_FIELDS:
            bad(f"filter.{key}", f"unknown field (one of {', '.join(sorted(FILTER_FIELDS))})")
            continue
        expr = _filter_part(key, value, lambda message, key=key: bad(f"filter.{key}", message), regexes)
        if expr is not None:
            parts.append(expr.fill_null(False))
    return pl.all_horizontal(parts) if parts else None


# filter key -> column; "target" is path?query; "text" matches if any of target, referer, user agent does
_REGEX_COLUMNS = {"path": "path", "query": "query", "target": "_target", "user_agent": "user_agent",
                  "referer": "referer", "protocol": "protocol"}
_TEXT_COLUMNS = ("_target", "referer", "user_agent")


def _regex_column(column: str, pattern: str) -> str:
    return f"_re|{column}|{pattern}"


def _filter_part(key: str, value: object, bad, regexes: list[tuple[str, str]]) -> pl.Expr | None:
    if key == "text":
        pattern = _regex(value, key, lambda _f, message: bad(message))
        if pattern is None:
            return None
        regexes.extend((column, pattern) for column in _TEXT_COLUMNS)
        return pl.any_horizontal(pl.col(_regex_column(column, pattern)) for column in _TEXT_COLUMNS)
    if key in _REGEX_COLUMNS or key in {"path_not", "user_agent_not", "protocol_not", "client_never"}:
        column = "path" if key == "client_never" else _REGEX_COLUMNS[key.removesuffix("_not")]
        pattern = _regex(value, key, lambda _f, message: bad(message))
        if pattern is None:
            return None
        regexes.append((column, pattern))
        matched = pl.col(_regex_column(column, pattern))
        if key == "client_never":  # the client never requested a path like this (e.g. page assets)
            return ~matched.any().over("client_ip")
        return ~matched if key.endswith("_not") else matched
    if key == "malformed":   # the request line was not HTTP (TLS to port 80, binary junk, text)
        if not isinstance(value, bool):
            bad("must be true or false")
            return None
        return pl.col("method").is_null() == value
    if key == "methods":
        return pl.col("method").is_in([str(m).upper() for m in _as_list(value)])
    if key == "status":
        return _status(value, bad)
    if key == "local_hours":
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(h, int) for h in value)):
            bad("must be [start_hour, end_hour), e.g. [0, 6]")
            return None
        return pl.col("_local_hour").is_between(value[0], value[1] - 1)
    if not isinstance(value, int | float):
        bad("must be a number")
        return None
    return pl.col("bytes") >= value


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def _status(value: object, bad) -> pl.Expr | None:
    """Status codes: numbers and classes such as '4xx'."""
    parts = []
    for item in _as_list(value):
        text = str(item).lower()
        if re.fullmatch(r"[1-5]xx", text):
            low = int(text[0]) * 100
            parts.append(pl.col("status").is_between(low, low + 99))
        elif text.isdigit():
            parts.append(pl.col("status") == int(text))
        else:
            bad(f"not a status code or class: {item!r}")
            return None
    return pl.any_horizontal(parts)


def _positive(spec: dict, key: str, bad, field: str) -> float | None:
    value = spec.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        bad(f"{field}.{key}", "must be a non-negative number")
        return None
    return float(value)


def _distinct(spec: dict, bad, field: str) -> str | None:
    column = spec.get("distinct")
    if column is not None and column not in DISTINCT_COLUMNS:
        bad(f"{field}.distinct", f"one of {', '.join(sorted(DISTINCT_COLUMNS))}")
    return column


def _known_mapping(spec: object, field: str, known: set[str], bad) -> TypeGuard[dict]:
    """Whether ``spec`` is a mapping (reported if not); each key outside ``known`` is reported."""
    if not isinstance(spec, dict):
        bad(field, "must be a mapping")
        return False
    for key in sorted(set(spec) - known):
        bad(f"{field}.{key}", "unknown field")
    return True


def _bucket(spec: object, bad) -> Bucket | None:
    if not _known_mapping(spec, "bucket", BUCKET_FIELDS, bad):
        return None
    capacity, leak = _positive(spec, "capacity", bad, "bucket"), _positive(spec, "leak_speed", bad, "bucket")
    if spec.get("weight") not in (None, "bytes"):
        bad("bucket.weight", "only 'bytes' is supported")
    baseline = spec.get("baseline") or {}
    if not isinstance(baseline, dict) or not set(baseline) <= {"quantile", "factor"}:
        bad("bucket.baseline", "must be a mapping with 'quantile' and 'factor'")
        baseline = {}
    if baseline and not 0 < float(baseline.get("quantile", 0)) <= 1:
        bad("bucket.baseline.quantile", "must be in (0, 1]")
    if capacity is None or leak is None or leak == 0:
        if leak == 0:
            bad("bucket.leak_speed", "must be above 0")
        return None
    return Bucket(capacity=capacity, leak_speed=leak, distinct=_distinct(spec, bad, "bucket"),
                  weight=spec.get("weight"), baseline_quantile=baseline.get("quantile"),
                  baseline_factor=float(baseline.get("factor", 1.0)))


def _window(spec: object, bad) -> Window | None:
    if not _known_mapping(spec, "window", WINDOW_FIELDS, bad):
        return None
    maxretry, findtime = _positive(spec, "maxretry", bad, "window"), _positive(spec, "findtime", bad, "window")
    if maxretry is None or findtime is None:
        return None
    if maxretry < 1 or maxretry != int(maxretry):
        bad("window.maxretry", "must be a whole number of at least 1")
        return None
    return Window(maxretry=int(maxretry), findtime=findtime, distinct=_distinct(spec, bad, "window"))


def prepare(events: pl.DataFrame, rules: Sequence[BehaviourRule], rows: pl.Series | None = None) -> pl.DataFrame:
    """The narrow table the rules run on, sorted per client by time: the event's row in ``events``
    (``_row``), the client, time in seconds (``_t``), the fields filters read as they are (status,
    bytes, method, local hour), one boolean per regex the rules read and one key per ``distinct``
    column. No text is copied, so the sort and the per-rule filters stay small on big logs.
    ``rows`` (UInt32 row numbers) limits it to those events."""
    if rows is not None:
        events = events.select(_READ_COLUMNS)[rows]
    local = pl.col("timestamp") + pl.duration(minutes=pl.col("tz_offset_min").fill_null(0))
    narrow = events.select(
        (pl.int_range(pl.len(), dtype=pl.UInt32) if rows is None else pl.lit(rows)).alias("_row"), "client_ip",
        (pl.col("timestamp").dt.epoch("us").cast(pl.Float64) / 1e6).alias("_t"),
        "status", "bytes", "method", local.dt.hour().alias("_local_hour"),
    ).with_columns(_regex_columns(events, rules))
    keys = sorted({rule.window.distinct for rule in rules if rule.window.distinct})
    narrow = narrow.with_columns(_distinct_key(events, name).alias(_column(name)) for name in keys)
    # events arrive in file and line order, so maintain_order keeps ties in the order they were logged;
    # a log written in time order (most are) already has each client's events in time order: a stable
    # sort on the client alone gives the same table at about a third of the cost
    seconds = narrow.get_column("_t")
    in_time_order = seconds.null_count() == 0 and seconds.is_sorted()
    return narrow.sort(log_input.client_order(events), *([] if in_time_order else ["_t"]), maintain_order=True)


def _target(events: pl.DataFrame) -> pl.Series:
    """path?query, the request target as filters match it."""
    return events.select(pl.col("path").fill_null("") + pl.lit("?") + pl.col("query").fill_null("")).to_series()


def _distinct_key(events: pl.DataFrame, name: str) -> pl.Series:
    """A key that is equal exactly when the column's values are: the category code of a categorical
    column, else a 64-bit hash of the text (the target is hashed from path and query)."""
    if name == "target":
        return events.select(pl.struct("path", "query").hash(seed=0)).to_series()
    column = events[name]
    return column.to_physical() if column.dtype == pl.Categorical else column.hash(seed=0)

def _levelled(matched: pl.DataFrame, bucket: Bucket) -> pl.DataFrame:
    """``matched`` with each event's leaky-bucket level (``_level``, events or bytes), per client:
    the closed form of the Lindley recursion, ``height - cummin(height) + weight``."""
    # Integer weights (each event 1, or its bytes), summed per client from one running total: exact,
    # so equal to a per-client float sum, and no window over a million one-event clients.
    weight = (pl.col("bytes").fill_null(0) if bucket.weight == "bytes" else pl.col("_t").is_not_null()).cast(pl.Int64)
    running = weight.cum_sum() - weight
    before = running - pl.when(_first_of_client()).then(running).forward_fill()
    levelled = matched.with_columns(
        (before.cast(pl.Float64) - pl.col("_t") / bucket.leak_speed).alias("_height"),
        weight.cast(pl.Float64).alias("_weight"), _only_event().alias("_only"))
    lowest = levelled["_height"].clone()
    # a client's only event is its own lowest height (its level is its weight): the per-client
    # running minimum, a window over the clients, is needed for clients with two or more events only
    several = levelled.select(pl.arg_where(~pl.col("_only"))).to_series()
    if several.len():
        lowest = lowest.scatter(several, levelled[several].select(
            pl.col("_height").cum_min().over("client_ip")).to_series())
    return levelled.select(pl.exclude("_height", "_weight", "_only"),
                           (pl.col("_height") - lowest + pl.col("_weight")).alias("_level"))


def _first_of_client() -> pl.Expr:
    """True at each client's first row of a table holding each client's rows together (see prepare)."""
    return pl.col("client_ip").ne_missing(pl.col("client_ip").shift(1))


def _only_event() -> pl.Expr:
    """True at the rows of clients with one row, in a table holding each client's rows together."""
    return _first_of_client() & pl.col("client_ip").ne_missing(pl.col("client_ip").shift(-1))


def _bucket_hits(matched: pl.DataFrame, bucket: Bucket) -> pl.DataFrame:
    """The events that overflow the bucket's own capacity, with their level (``_level``)."""
    return _levelled(matched, bucket).filter(pl.col("_level") > bucket.capacity)


@dataclass
class _Baseline:
    """A ``baseline`` bucket rule over every partition of clients: its capacity is a quantile of
    every client's peak level, known once all partitions are read. Only a client whose peak exceeds
    the rule's own capacity can overflow the raised one, so until then only those clients' events
    are kept (with their level); of the others, only the peak."""

    bucket: Bucket
    peaks: list[pl.DataFrame] = field(default_factory=list)   # client_ip, _level (its peak)
    kept: list[pl.DataFrame] = field(default_factory=list)
    others: pl.Series | None = None   # peaks of clients outside this run (live mode), for the quantile

    def add(self, matched: pl.DataFrame) -> None:
        levelled = _levelled(matched, self.bucket)
        peaks = levelled.group_by("client_ip").agg(pl.col("_level").max())
        self.peaks.append(peaks)
        over = peaks.filter(pl.col("_level") > self.bucket.capacity)["client_ip"]
        self.kept.append(levelled.filter(pl.col("client_ip").is_in(over.implode())))

    def own_peaks(self) -> pl.DataFrame:
        """Each client of this run with its peak level (client_ip as text)."""
        if not self.peaks:
            return pl.DataFrame(schema={"client_ip": pl.String, "_level": pl.Float64})
        return pl.concat(self.peaks).select(pl.col("client_ip").cast(pl.String), pl.col("_level").cast(pl.Float64))

    def matched_and_hits(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the kept clients' events, those that overflow the capacity raised to the baseline)."""
        assert self.bucket.baseline_quantile is not None, "only made for baseline buckets"
        matched = pl.concat(self.kept)
        levels = [self.own_peaks()["_level"], *([self.others] if self.others is not None else [])]
        return matched, matched.filter(pl.col("_level") > self.capacity(levels))

    def capacity(self, levels: Sequence[pl.Series]) -> float:
        """The capacity raised to ``baseline_factor`` times the quantile of every client's peak
        ``levels``."""
        assert self.bucket.baseline_quantile is not None, "only made for baseline buckets"
        levels = [series.cast(pl.Float64) for series in levels]
        baseline = float(pl.concat(levels).quantile(self.bucket.baseline_quantile, "lower") or 0.0) if levels else 0.0
        return max(self.bucket.capacity, self.bucket.baseline_factor * baseline)


def _window_hits(matched: pl.DataFrame, window: Window) -> pl.DataFrame:
    """The events that close a window of ``maxretry`` events within ``findtime`` seconds."""
    back = window.maxretry - 1
    # the client's event ``back`` events earlier: the table's (each client's rows are together, see
    # prepare) when it is the same client's, not a window over the clients
    same = pl.col("client_ip").eq_missing(pl.col("client_ip").shift(back))
    earlier = pl.when(same).then(pl.col("_t").shift(back))
    return matched.filter((pl.col("_t") - earlier) <= window.findtime)


def _regex_columns(events: pl.DataFrame, rules: Sequence[BehaviourRule]) -> list[pl.Series]:
    """One boolean column per (column, pattern) the rules read, matched on the column's distinct
    values only: user agents, paths and referers repeat a lot, so this is many times faster."""
    wanted = sorted({pair for rule in rules for pair in rule.regexes})
    columns = []
    for column in sorted({column for column, _ in wanted}):
        patterns = {_regex_column(c, pattern): pattern for c, pattern in wanted if c == column}
        values = _target(events) if column == "_target" else events[column]
        columns += [mask.alias(name) for name, mask in log_events.text_masks(values, patterns).items()]
    return columns


def _matched(rule: BehaviourRule, prepared: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    """The events the rule counts (its filter ``mask``, then the first of each ``distinct`` value),
    numbered per client (``_n``)."""
    keep = ["_row", "client_ip", "_t", "bytes", *([_column(rule.window.distinct)] if rule.window.distinct else [])]
    matched = prepared.select(keep).filter(mask)   # the few columns kept, not all of them, are filtered
    if rule.window.distinct:
        matched = matched.unique(subset=["client_ip", _column(rule.window.distinct)], keep="first",
                                 maintain_order=True)
    # each client's rows are together (prepare sorts them): numbered from the client's first row,
    # not by a window over the clients (a million one-request clients made those the rules' cost)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    return matched.with_columns((row - pl.when(_first_of_client()).then(row).forward_fill()).alias("_n"))


def _evidence(rule: BehaviourRule, matched: pl.DataFrame, hits: pl.DataFrame,
              events: pl.DataFrame) -> dict[str, Evidence]:
    """Evidence per client ip with ``hits`` (rows of ``matched``, the rule's events), example
    lines fetched from ``events`` by row."""
    if not hits.height:
        return {}
    counts = dict(matched.filter(pl.col("client_ip").is_in(hits["client_ip"].unique().implode()))
                  .group_by("client_ip").len().iter_rows())
    examples = log_input.with_rebuilt(events[_examples(matched, hits, rule.window)["_row"]])
    found: dict[str, list[ExampleLine]] = {}
    for ip, source, number, raw, rebuilt in examples.select("client_ip", "source", "line_number", "raw",
                                                            "rebuilt").iter_rows():
        found.setdefault(ip, []).append(ExampleLine(source, number, raw, rebuilt))
    return {ip: Evidence(kind="rule", rule_id=rule.id, title=rule.title, severity=rule.severity,
                         attack_type=rule.attack_type, count=int(counts[ip]), examples=tuple(lines),
                         tags=rule.tags) for ip, lines in found.items()}


def _examples(matched: pl.DataFrame, hits: pl.DataFrame, window: Bucket | Window) -> pl.DataFrame:
    """Up to EXAMPLES events per client from where the first trigger starts: the first event of
    the window that reached ``maxretry``, or the event that overflowed the bucket."""
    back = window.maxretry - 1 if isinstance(window, Window) else 0
    start = hits.group_by("client_ip").agg((pl.col("_n").min() - back).alias("_start"))
    return (matched.join(start, on="client_ip", maintain_order="left").filter(pl.col("_n") >= pl.col("_start"))
            .group_by("client_ip", maintain_order=True).head(EXAMPLES))


def _column(name: str) -> str:
    return "_target" if name == "target" else name


def detect(events: pl.DataFrame, rules: Iterable[BehaviourRule], partition_events: int = PARTITION_EVENTS, *,
           peer_peaks: dict[str, pl.DataFrame] | None = None,
           capacities: Mapping[str, float] | None = None) -> dict[str, list[Evidence]]:
    """Evidence from every rule, by client ip (rules in the given order). On a shared address (see
    ``shared_addresses``) the rules marked ``per_agent_when_shared`` count each user agent apart,
    and the client gets a note saying the address looks shared. ``peer_peaks``: see _detect.
    ``capacities`` (rule id -> events or bytes) are the ``baseline`` buckets' capacities when
    ``events`` is one part of the clients: fitted over all of them by ``site_capacities`` from
    every part's ``baseline_peaks``."""
    rules = [_fixed(rule, capacities) for rule in rules] if capacities is not None else list(rules)
    shared = shared_addresses(events) if any(r.per_agent_when_shared for r in rules) else {}
    if not shared:
        return _detect(events, rules, partition_events, peer_peaks=peer_peaks)
    per_agent = [r for r in rules if r.per_agent_when_shared]
    evidence = _detect(events, [r for r in rules if not r.per_agent_when_shared], partition_events,
                       peer_peaks=peer_peaks)
    split = _split_shared(events, shared)
    for key, items in _detect(split, per_agent, partition_events, peer_peaks=peer_peaks).items():
        ip = key.split(AGENT_MARK)[0]
        for item in items:
            known = [e.rule_id for e in evidence.get(ip, [])]
            if item.rule_id not in known:   # one item per rule: the first user agent that tripped it
                evidence.setdefault(ip, []).append(item)
    for ip, agents in shared.items():
        evidence.setdefault(ip, []).append(Evidence(
            kind="context", rule_id="shared-address", severity=Severity.INFO, attack_type=None, count=agents,
            title=f"the address looks shared ({agents} browser user agents, each fetching page assets with few "
                  "errors, like people behind one NAT or proxy): user-agent rotation, credential stuffing and "
                  "volume are judged per user agent"))
    return evidence


def _split_shared(events: pl.DataFrame, shared: Mapping[str, int]) -> pl.DataFrame:
    """``events`` with each shared address's user agents as clients of their own."""
    return events.with_columns(pl.when(pl.col("client_ip").cast(pl.String).is_in(list(shared)))
                               .then(pl.col("client_ip").cast(pl.String) + AGENT_MARK
                                     + pl.col("user_agent").cast(pl.String).hash(seed=0).cast(pl.String))
                               .otherwise(pl.col("client_ip").cast(pl.String)).cast(pl.Categorical)
                               .alias("client_ip"))


def is_baseline(rule: BehaviourRule) -> bool:
    return isinstance(rule.window, Bucket) and rule.window.baseline_quantile is not None


def _fixed(rule: BehaviourRule, capacities: Mapping[str, float]) -> BehaviourRule:
    """A ``baseline`` bucket rule as a plain bucket of the site-wide capacity fitted for it."""
    if not is_baseline(rule):
        return rule
    assert isinstance(rule.window, Bucket), "a baseline rule is a bucket"
    bucket = replace(rule.window, capacity=capacities.get(rule.id, rule.window.capacity), baseline_quantile=None)
    return replace(rule, window=bucket)


def baseline_peaks(events: pl.DataFrame, rules: Iterable[BehaviourRule]) -> dict[str, pl.Series]:
    """Each ``baseline`` bucket rule's peak level per client of ``events`` (rule id -> one value a
    client the rule counts, a user agent apart on shared addresses as ``detect`` counts them)."""
    rules = [rule for rule in rules if is_baseline(rule)]
    if not rules or not events.height:
        return {}
    shared = shared_addresses(events) if any(r.per_agent_when_shared for r in rules) else {}
    split = _split_shared(events, shared) if shared else events
    peaks: dict[str, list[pl.Series]] = {}
    for frame, group in ((events, [r for r in rules if not r.per_agent_when_shared]),
                         (split, [r for r in rules if r.per_agent_when_shared])):
        if not group:
            continue
        for rows in _partitions(frame, PARTITION_EVENTS):
            prepared = prepare(frame, group, rows)
            for rule in group:
                matched = _matched(rule, prepared, prepared.select(rule.condition).to_series())
                if matched.height:
                    baseline = _Baseline(rule.window)   # type: ignore[arg-type]
                    baseline.add(matched)
                    peaks.setdefault(rule.id, []).append(baseline.own_peaks()["_level"])
    return {rule_id: pl.concat(series) for rule_id, series in peaks.items()}


def site_capacities(peaks: Mapping[str, Sequence[pl.Series]], rules: Iterable[BehaviourRule]) -> dict[str, float]:
    """The ``baseline`` buckets' capacities from every client's peak (``baseline_peaks`` of every
    part of the clients): what ``_Baseline`` raises the capacity to in one pass over all clients."""
    capacities = {}
    for rule in rules:
        if is_baseline(rule):
            assert isinstance(rule.window, Bucket), "a baseline rule is a bucket"
            capacities[rule.id] = _Baseline(rule.window).capacity(list(peaks.get(rule.id, ())))
    return capacities


# Shared addresses: an office NAT, a campus network, a mobile CGNAT. A user agent behaves like a
# person when it is a browser's, fetched page assets and met few errors.
AGENT_MARK = "\x1fua:"
SHARED_MIN_AGENTS = 4
PERSON_MAX_ERROR_SHARE = 0.2
_BROWSER = r"^mozilla/5\.0 \((windows|macintosh|x11|linux|iphone|ipad)[^)]*\).*(chrome|firefox|safari|edg)/"
_BOT = r"(bot|crawl|spider|curl|wget|python|scan|http|java|go-http|headless)"
_ASSET = r"\.(css|js|png|jpe?g|gif|svg|webp|ico|woff2?)(\?|$)"


def shared_addresses(events: pl.DataFrame) -> dict[str, int]:
    """Addresses carrying at least SHARED_MIN_AGENTS browser user agents that each behave like a
    person (fetched page assets, under PERSON_MAX_ERROR_SHARE errors): address -> such agents."""
    if not events.height:
        return {}
    # Browser agents are picked once per distinct agent, and requests are grouped by a number per
    # lower-cased agent: no text column as long as the log (on 5M lines that text took 1.6 GB).
    agents = events.get_column("user_agent").unique().to_frame()
    agents = (agents.with_columns(pl.col("user_agent").cast(pl.String).fill_null("").str.to_lowercase().alias("_ua"))
              .filter(pl.col("_ua").str.contains(_BROWSER) & ~pl.col("_ua").str.contains(_BOT))
              .select("user_agent", pl.col("_ua").rank("dense").alias("_agent")))
    asset = log_events.text_matches(events.get_column("path"), f"(?i){_ASSET}")   # on the distinct paths
    people = (events.select("client_ip", "user_agent", asset.alias("asset"), (pl.col("status") >= 400).alias("error"))
              .join(agents, on="user_agent")
              .group_by("client_ip", "_agent").agg(pl.col("asset").any(), pl.col("error").mean())
              .filter(pl.col("asset") & (pl.col("error") < PERSON_MAX_ERROR_SHARE))
              .group_by("client_ip").len().filter(pl.col("len") >= SHARED_MIN_AGENTS))
    return {str(ip): count for ip, count in people.iter_rows()}


def _detect(events: pl.DataFrame, rules: Iterable[BehaviourRule], partition_events: int = PARTITION_EVENTS, *,
            peer_peaks: dict[str, pl.DataFrame] | None = None) -> dict[str, list[Evidence]]:
    """Evidence from every rule, by client ip (rules in the given order). The rules run on one
    partition of clients at a time, of about ``partition_events`` events, so that only its narrow
    table and windows are in memory at once: a rule reads each client's events apart, so this
    finds what one pass over all clients would, but for ``baseline`` buckets (see _Baseline).

    ``peer_peaks`` (live mode, where ``events`` holds only the clients that just sent requests):
    by rule id, the peak levels (client_ip, _level) of every client seen so far, so that a
    ``baseline`` bucket's quantile is over all of them as in a batch run; updated in place with
    this run's clients' peaks."""
    rules = list(rules)
    if not events.height or not rules:
        return {}
    found: list[dict[str, Evidence]] = [{} for _ in rules]
    baselines = {i: _Baseline(rule.window) for i, rule in enumerate(rules)
                 if isinstance(rule.window, Bucket) and rule.window.baseline_quantile is not None}
    present = events["client_ip"].cast(pl.String).unique().implode()
    for i, baseline in baselines.items():
        if peer_peaks is not None and rules[i].id in peer_peaks:
            baseline.others = peer_peaks[rules[i].id].filter(~pl.col("client_ip").is_in(present))["_level"]
    for rows in _partitions(events, partition_events):
        for i, more in _partition_evidence(events, rows, rules, baselines):
            found[i].update(more)
    for i, baseline in baselines.items():
        if peer_peaks is not None:
            earlier = peer_peaks.get(rules[i].id)
            kept = [earlier.filter(~pl.col("client_ip").is_in(present))] if earlier is not None else []
            peer_peaks[rules[i].id] = pl.concat([*kept, baseline.own_peaks()])
        if baseline.kept:
            found[i] = _evidence(rules[i], *baseline.matched_and_hits(), events)
    evidence: dict[str, list[Evidence]] = {}
    for per_client in found:
        for ip, item in per_client.items():
            evidence.setdefault(ip, []).append(item)
    return evidence


def _partition_evidence(events: pl.DataFrame, rows: pl.Series | None, rules: list[BehaviourRule],
                        baselines: dict[int, _Baseline]) -> Iterator[tuple[int, dict[str, Evidence]]]:
    """(rule index, evidence by client ip) from the clients at ``rows`` of ``events``, for each rule
    they match; the events of a rule in ``baselines`` are added there instead."""
    prepared = prepare(events, rules, rows)
    # every rule's filter in one select, so Polars evaluates them in parallel
    masks = prepared.select(rule.condition.alias(str(i)) for i, rule in enumerate(rules))
    for i, rule in enumerate(rules):
        matched = _matched(rule, prepared, masks[str(i)])
        if not matched.height:
            continue
        if i in baselines:
            baselines[i].add(matched)
            continue
        hits = (_bucket_hits(matched, rule.window) if isinstance(rule.window, Bucket)
                else _window_hits(matched, rule.window))
        yield i, _evidence(rule, matched, hits, events)


def _partitions(events: pl.DataFrame, size: int) -> Iterator[pl.Series | None]:
    """Row numbers (UInt32) of consecutive runs of clients in the order ``prepare`` sorts them, of
    about ``size`` events each (a client is never split; one with more events is a partition of its
    own); one ``None`` (every row) when the log holds no more than ``size`` events."""
    if events.height <= size:
        yield None
        return
    key = log_input.client_order(events).alias("_key")
    # select first: a group_by on the table itself would copy every column of a table read in chunks
    clients = events.select(key).group_by("_key").len().sort("_key")
    # a client's partition: where its first event falls in the sorted table, in steps of ``size``
    first = pl.col("len").cum_sum() - pl.col("len")
    bounds = clients.group_by((first // size).alias("_part"), maintain_order=True).agg(
        pl.col("_key").first().alias("low"), pl.col("_key").last().alias("high"))
    for low, high in bounds.select("low", "high").iter_rows():
        yield events.select(key.is_between(low, high)).to_series().arg_true().cast(pl.UInt32)
