"""Parsing and per-client feature aggregation on Apache Spark (``--engine spark``).

The heavy part of a run, reading the lines and aggregating them per client, runs on a Spark
cluster (or ``local[N]``); only the per-client feature table comes back, which is small. The anomaly
detectors, the allowlist's networks, the marking of internal addresses, enrichment and reporting then
run locally on it. No single requests come back, so the stages that read them (behaviour rules,
payload signatures, Sigma rules, the crawler check, the allowlist's user-agent and path patterns) do
not run at all, here or locally: the anomaly score is the verdict, and analysis.analyse says so in
the run summary.

Formats come from the same ``log_formats`` definitions the local engine uses (the regex is
translated to Java's dialect), and every feature in ``ip_features.FEATURES`` has a Spark twin here;
tests/test_spark_engine.py proves both engines give the same table. pyspark is imported lazily,
only here.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

import file_parser
from log_analyser_core.errors import ConfigError, InputError, MissingExtraError
from log_analyser_core.features import client as ip_features
from log_analyser_core.parsing import events as log_events
from log_analyser_core.parsing.formats import LogFormat, compile_format, preset

log = logging.getLogger(__name__)

_NAMED_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")
_CLF = "dd/MMM/yyyy:HH:mm:ss"
_REMOTE_SCHEMES = ("s3a://", "s3://", "s3n://", "hdfs://", "gs://", "abfs://", "abfss://", "wasbs://", "file://")


@dataclass(frozen=True)
class SparkOptions:
    """Where and how to run: ``master`` is local[N], spark://..., yarn, k8s://... or sc://host:port."""

    master: str = "local[*]"
    conf: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SparkAggregate:
    """What comes back from the cluster: the per-client table and the line counts."""

    features: pl.DataFrame            # the same columns and types as ip_features.compute()
    stats: file_parser.ParseStats
    unparsed_examples: pl.DataFrame   # file_parser.UNPARSED_SCHEMA; line numbers are not known (null)


def _pyspark() -> tuple[Any, Any, Any]:
    try:
        from pyspark.sql import SparkSession, Window
        from pyspark.sql import functions as F
    except ImportError:
        raise MissingExtraError("--engine spark", "spark", "pyspark") from None
    return SparkSession, F, Window


def parse_conf(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` strings from --spark-conf into pairs; raises ConfigError naming a bad one."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--spark-conf wants key=value, not {pair!r}")
        parsed.append((key.strip(), value))
    return tuple(parsed)


def session(options: SparkOptions) -> Any:
    """A SparkSession for ``options``; Spark Connect for ``sc://`` masters (no local JVM needed)."""
    SparkSession, _, _ = _pyspark()
    builder = SparkSession.builder.appName("log_analyser")
    settings = [("spark.sql.session.timeZone", "UTC"), *options.conf]
    if options.master.startswith("sc://"):
        builder = builder.remote(options.master)  # a token, if the server wants one: sc://host:port/;token=...
    else:
        builder = builder.master(options.master)
        settings.insert(0, ("spark.ui.showConsoleProgress", "false"))  # static: only for a new local session
    for key, value in settings:
        builder = builder.config(key, value)
    return builder.getOrCreate()


def java_regex(fmt: LogFormat) -> tuple[str, dict[str, int]]:
    """The format's regex in Java's dialect (unnamed groups) and each group's number."""
    assert fmt.regex is not None, "JSON-lines formats have no regex"
    numbers = dict(re.compile(fmt.regex).groupindex)
    return _NAMED_GROUP.sub("(", fmt.regex), numbers


def spark_paths(sources: Sequence[str]) -> list[str]:
    """Local paths as absolute file:// URIs; remote URIs (s3a://, hdfs://, ...) and globs pass through."""
    paths = []
    for source in sources:
        if source == "-":
            raise ConfigError("--engine spark cannot read standard input", hint="give files or URIs with -f")
        paths.append(source if source.startswith(_REMOTE_SCHEMES) else "file://" + os.path.abspath(source))
    return paths


def _format(spark: Any, paths: list[str], format_name: str | None, custom: str | None) -> LogFormat:
    if custom:
        return compile_format(custom)
    if format_name not in (None, "auto"):
        return require_support(preset(format_name))
    sample = [row.value for row in spark.read.text(paths).limit(file_parser.DETECTION_SAMPLE).collect()]
    if not sample:
        raise InputError("no log lines to analyse (the input is empty)", path=", ".join(paths))
    fmt, rate = file_parser.detect_format(pl.Series("raw", sample, dtype=pl.String))
    log.info("spark input: format %s (%.0f%% of sampled lines match)", fmt.name, 100 * rate)
    return require_support(fmt)


def require_support(fmt: LogFormat) -> LogFormat:
    """``fmt`` if this engine reads it, else a ConfigError that says why (rather than a run that
    reports every line unparsed). Spark reads regex formats with CLF or ISO 8601 times."""
    if fmt.name in ("w3c", "cloudfront"):
        raise ConfigError(f"--engine spark does not read {fmt.name} (W3C extended) logs: one file can hold several "
                          "#Fields: header blocks with different columns, which only the local engine follows",
                          hint="use the default engine, --engine polars")
    if fmt.regex is None or not {"time_clf", "time_iso"} & set(fmt.groups):
        raise ConfigError(f"--engine spark does not read the {fmt.name} format (its timestamps are not CLF or "
                          "ISO 8601)", hint="use the default engine, --engine polars")
    return fmt


# --- parsing: the Spark twin of file_parser._canonical -------------------------------------------

def _unwrap(F: Any, raw: Any) -> Any:
    wrapped = raw.startswith('"') & raw.endswith('"') & (F.length(raw) > 1)
    return F.when(wrapped, F.expr("substring(raw, 2, length(raw) - 2)")).otherwise(raw)


def _groups(F: Any, text: Any, fmt: LogFormat) -> dict[str, Any]:
    regex, numbers = java_regex(fmt)
    matched = text.rlike(regex)
    return {name: F.when(matched, F.regexp_extract(text, regex, number)) for name, number in numbers.items()}


def _quoted(F: Any, column: Any) -> Any:
    text = F.regexp_replace(column, r'\\(["\\])', "$1")
    return F.when(text == "-", F.lit(None)).otherwise(text)


def _timestamp(F: Any, g: dict[str, Any], tz: str) -> tuple[Any, Any]:
    if "time_clf" in g:
        text = F.regexp_replace(g["time_clf"], r"^[\[\] ]+|[\[\] ]+$", "")
        aware = F.try_to_timestamp(text, F.lit(f"{_CLF} Z"))
        local = F.try_to_timestamp(F.substring(text, 1, 20), F.lit(_CLF))
    elif "time_iso" in g:
        text = F.regexp_replace(g["time_iso"], "Z$", "+00:00")
        aware = F.try_to_timestamp(text, F.lit("yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX"))
        local = F.try_to_timestamp(F.substring(text, 1, 19), F.lit("yyyy-MM-dd'T'HH:mm:ss"))
    else:
        return F.lit(None).cast("timestamp"), F.lit(None).cast("short")
    utc = F.coalesce(aware, F.to_utc_timestamp(local, tz))
    offset = ((F.unix_micros(local) - F.unix_micros(utc)) / 60_000_000).cast("short")
    return utc, offset


def _number(column: Any, kind: str = "double") -> Any:
    return column.try_cast(kind)


def _request_time(F: Any, g: dict[str, Any]) -> Any:
    for name, divisor in (("request_time_us", 1e6), ("request_time_ms", 1e3), ("request_time_s", 1.0)):
        if name in g:
            return _number(g[name]) / divisor
    if "request_time_tail" in g:
        tail = F.when(g["request_time_tail"] != "", g["request_time_tail"])
        return F.when(tail.contains("."), _number(tail)).otherwise(_number(tail) / 1e6)
    return F.lit(None).cast("double")


def _canonical(F: Any, fmt: LogFormat, tz: str) -> dict[str, Any]:
    """Spark columns equal to file_parser.EVENT_SCHEMA's for the columns the features use."""
    g = _groups(F, F.col("_text"), fmt)
    request = _quoted(F, g["request"]) if "request" in g else F.lit(None).cast("string")
    request_regex = log_events._REQUEST_LINE.replace("(?P<method>", "(").replace("(?P<target>", "(") \
        .replace("(?P<protocol>", "(")
    is_request = request.rlike(request_regex)
    target = g["target"] if "target" in g else F.when(is_request, F.regexp_extract(request, request_regex, 2))
    method = g["method"] if "method" in g else F.when(is_request, F.regexp_extract(request, request_regex, 1))
    path = g["path"] if "path" in g else F.substring_index(F.col("_target_tmp"), "?", 1)
    query = F.regexp_replace(g["query_raw"], r"^\?", "") if "query_raw" in g \
        else F.when(F.col("_target_tmp").contains("?"), F.expr("substr(_target_tmp, instr(_target_tmp, '?') + 1)"))
    timestamp, offset = _timestamp(F, g, tz)
    ip = F.lower(F.regexp_replace(g["client_ip"], r"^[\[\]]+|[\[\]]+$", ""))
    return {
        "timestamp": timestamp, "tz_offset_min": offset,
        "client_ip": F.regexp_replace(ip, r"^::ffff:(\d+\.\d+\.\d+\.\d+)$", "$1"),
        "method": method, "path": path, "query": F.when(query != "", query), "_target_tmp": target,
        "status": _number(g["status"], "short") if "status" in g else F.lit(None).cast("short"),
        "bytes": F.coalesce(_number(g["bytes"], "long"), F.lit(0)) if "bytes" in g else F.lit(None).cast("long"),
        "user_agent": _quoted(F, g["user_agent"]) if "user_agent" in g else F.lit(None).cast("string"),
        "request_time": _request_time(F, g),
    }


def parse_frame(spark: Any, paths: list[str], fmt: LogFormat, tz: str) -> Any:
    """Canonical event columns plus ``_reason`` (null for parsed lines) and ``source``."""
    _, F, _ = _pyspark()
    lines = spark.read.text(paths).select(F.col("value").alias("raw"), F.input_file_name().alias("source"))
    lines = lines.withColumn("_text", _unwrap(F, F.col("raw")))
    columns = _canonical(F, fmt, tz)
    target = columns.pop("_target_tmp")
    frame = lines.withColumn("_target_tmp", target).select(
        "raw", "source", *[column.alias(name) for name, column in columns.items()])
    reason = (F.when(F.trim(F.col("raw")) == "", F.lit("blank line"))
              .when(F.col("client_ip").isNull(), F.lit(f"does not match the {fmt.name} format"))
              .when(F.col("timestamp").isNull(), F.lit("unreadable timestamp")))
    return frame.withColumn("_reason", reason)


# --- features: the Spark twin of every ip_features.FEATURES entry -----------------------------

def _ratio(F: Any, condition: Any) -> Any:
    return F.avg(condition.cast("double"))


def _n_unique(F: Any, column: Any) -> Any:
    """Distinct values counting null as one value, as Polars' n_unique does."""
    return F.count_distinct(column) + F.max(column.isNull().cast("int"))


def _seconds(F: Any, later: Any, earlier: Any) -> Any:
    return (F.unix_micros(later) - F.unix_micros(earlier)) / 1e6


def _simple_features(F: Any) -> dict[str, Callable[[], Any]]:
    status, method, path = F.col("status"), F.col("method"), F.col("path")
    active = _seconds(F, F.max("timestamp"), F.min("timestamp"))
    local_hour = F.hour(F.col("timestamp") + F.make_interval(mins=F.coalesce(F.col("tz_offset_min"), F.lit(0))))
    night = local_hour.between(ip_features.NIGHT_HOURS[0], ip_features.NIGHT_HOURS[1] - 1)
    target = F.concat(F.coalesce(path, F.lit("")), F.lit("?"), F.coalesce(F.col("query"), F.lit("")))
    return {
        "requests": lambda: F.count(F.lit(1)),
        "request_rate": lambda: F.count(F.lit(1)) / (F.greatest(active, F.lit(60.0)) / 60.0),
        "active_seconds": lambda: active,
        "error_4xx_ratio": lambda: _ratio(F, status.between(400, 499)),
        "error_5xx_ratio": lambda: _ratio(F, status.between(500, 599)),
        "status_401": lambda: F.sum((status == 401).cast("int")),
        "status_403": lambda: F.sum((status == 403).cast("int")),
        "status_404": lambda: F.sum((status == 404).cast("int")),
        "distinct_paths": lambda: _n_unique(F, path),
        "distinct_404_paths": lambda: F.coalesce(
            F.count_distinct(F.when(status == 404, path))
            + F.max(((status == 404) & path.isNull()).cast("int")), F.lit(0)),
        "static_ratio": lambda: _ratio(F, F.coalesce(path.rlike(ip_features.STATIC_EXTENSIONS), F.lit(False))),
        "distinct_user_agents": lambda: _n_unique(F, F.col("user_agent")),
        "post_ratio": lambda: _ratio(F, method == "POST"),
        "unusual_method_ratio": lambda: _ratio(
            F, ~F.coalesce(method.isin(*ip_features.COMMON_METHODS), F.lit(False))),
        "bytes_total": lambda: F.sum("bytes"),
        "bytes_max": lambda: F.max("bytes"),
        "request_time_mean": lambda: F.avg("request_time"),
        "request_time_max": lambda: F.max("request_time"),
        "night_ratio": lambda: _ratio(F, night),
        "sensitive_ratio": lambda: _ratio(F, F.coalesce(path.rlike(ip_features.SENSITIVE_PATHS), F.lit(False))),
        "query_length_mean": lambda: F.avg(F.coalesce(F.length("query"), F.lit(0))),
        "special_char_density": lambda: F.sum(F.regexp_count(target, F.lit(ip_features.SPECIAL_CHARS)))
        / F.greatest(F.sum(F.length(target)), F.lit(1)),
    }


# Features that need more than one grouping; computed by _windowed_features.
WINDOWED = ("peak_rpm", "burstiness", "path_entropy")


def _windowed_features(F: Any, Window: Any, events: Any) -> Any:
    per_minute = (events.groupBy("client_ip", F.date_trunc("minute", "timestamp").alias("_minute")).count()
                  .groupBy("client_ip").agg(F.max("count").alias("peak_rpm")))
    by_path = events.groupBy("client_ip", "path").count()
    share = F.col("count") / F.sum("count").over(Window.partitionBy("client_ip"))
    entropy = (by_path.withColumn("_p", share).groupBy("client_ip")
               .agg((-F.sum(F.col("_p") * F.log2("_p"))).alias("path_entropy")))
    ordered = Window.partitionBy("client_ip").orderBy("timestamp")
    gaps = events.select("client_ip", _seconds(F, F.col("timestamp"), F.lag("timestamp").over(ordered)).alias("_gap"))
    mean, std = F.avg("_gap"), F.stddev_samp("_gap")
    bursty = gaps.groupBy("client_ip").agg(
        F.coalesce(F.when((mean + std) > 0, (std - mean) / (std + mean)).otherwise(0.0), F.lit(0.0))
        .alias("burstiness"))
    return per_minute.join(entropy, "client_ip").join(bursty, "client_ip")


def feature_frame(events: Any) -> Any:
    """One Spark row per client: every registered feature plus first_seen, last_seen, errors."""
    _, F, Window = _pyspark()
    simple = _simple_features(F)
    missing = set(ip_features.FEATURE_NAMES) - set(simple) - set(WINDOWED)
    if missing:  # a feature added to the registry needs its Spark twin here
        raise NotImplementedError(f"no Spark definition for features: {sorted(missing)}")
    aggregates = [simple[name]().alias(name) for name in simple]
    aggregates += [F.min("timestamp").alias("first_seen"), F.max("timestamp").alias("last_seen"),
                   F.sum((F.col("status") >= 400).cast("long")).alias("errors")]
    table = events.groupBy("client_ip").agg(*aggregates)
    return table.join(_windowed_features(F, Window, events), "client_ip")


def _to_polars(frame: Any) -> pl.DataFrame:
    table = pl.from_arrow(frame.toArrow())
    assert isinstance(table, pl.DataFrame)
    casts: dict[str, pl.DataType | type[pl.DataType]] = {name: pl.Float64 for name in ip_features.FEATURE_NAMES}
    casts |= {"first_seen": pl.Datetime("us", "UTC"), "last_seen": pl.Datetime("us", "UTC"), "errors": pl.Int64}
    table = table.with_columns(
        [pl.col(name).cast(dtype) for name, dtype in casts.items() if name != "first_seen" and name != "last_seen"]
        + [pl.col(name).dt.replace_time_zone("UTC") if table.schema[name].time_zone is None  # type: ignore[attr-defined]
           else pl.col(name).dt.convert_time_zone("UTC") for name in ("first_seen", "last_seen")])
    order = ["client_ip", *ip_features.FEATURE_NAMES, "first_seen", "last_seen", "errors"]
    table = table.select(order).with_columns(pl.col("first_seen", "last_seen").dt.cast_time_unit("us"))
    # the same types as the local engine's table (client_ip is categorical there), sorted by address
    return table.sort("client_ip").with_columns(pl.col("client_ip").cast(pl.Categorical))


def aggregate(sources: Sequence[str], *, options: SparkOptions, format_name: str | None = "auto",
              log_format: str | None = None, tz: str = "UTC", max_unparsed_ratio: float = 0.5) -> SparkAggregate:
    """Parse ``sources`` on Spark and return the per-client feature table and line counts."""
    spark = session(options)
    paths = spark_paths(sources)
    fmt = _format(spark, paths, format_name, log_format)
    frame = parse_frame(spark, paths, fmt, tz).cache()
    try:
        reasons = {row["_reason"]: row["count"] for row in frame.groupBy("_reason").count().collect()}
        parsed = int(reasons.pop(None, 0))
        events = frame.filter(frame["_reason"].isNull())
        table = _to_polars(feature_frame(events))
        examples = frame.filter(frame["_reason"].isNotNull()).limit(20).select("source", "_reason", "raw").collect()
    finally:
        frame.unpersist()
    total = parsed + sum(reasons.values())
    not_access = {reason: reasons.pop(reason) for reason in file_parser.NOT_ACCESS_REASONS if reason in reasons}
    stats = file_parser.ParseStats(total_lines=total, parsed_lines=parsed,
                                   unparsed_by_reason=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                                   formats={source: fmt.name for source in sources}, not_access=not_access)
    unparsed = pl.DataFrame([{"source": r["source"], "line_number": None, "reason": r["_reason"], "raw": r["raw"]}
                             for r in examples], schema=file_parser.UNPARSED_SCHEMA)
    empty = pl.DataFrame(schema=file_parser.EVENT_SCHEMA)
    file_parser._check_quality(file_parser.ParsedLog(empty, unparsed, stats), sources, max_unparsed_ratio)
    return SparkAggregate(features=table, stats=stats, unparsed_examples=unparsed)
