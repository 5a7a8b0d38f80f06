"""The whole per-client pipeline on Apache Spark (``--engine spark``), with the local engine's code.

Spark reads the lines (any Hadoop file system: s3a://, hdfs://, gs://, local files), numbers them
per file, and parses each Arrow batch with file_parser.parse_lines (``mapInArrow``): the same
parser the local engine runs. The events are then repartitioned by a hash of the client address
and each partition of clients runs engines/partition.py (``mapInArrow`` on the whole partition): features,
behaviour rules, payload signatures, Sigma, CRS, the crawler check and the allowlist. What comes
back to the driver is the evidence with its example lines (read on the executors, so the file
may be remote) and the per-client table, one row per client, which stays cached on the cluster.
The one site-wide quantity of those stages, the baseline buckets' capacity, is fitted on the driver
from every client's peak (a first, small pass) and shipped with the plan. The anomaly detectors
are fitted on the driver from the per-client table (every client up to
anomaly_detector.FIT_CLIENTS, else a sample by address: only that comes to the driver), and the
fitted model (or the --model baseline) is broadcast and scores each Arrow batch of per-client rows
on the executors (``mapInArrow``) with the local engine's function; the scored rows come back.
pyspark is imported lazily, only here.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import polars as pl

import anomaly_detector as detect
import file_parser
from log_analyser_core.engines import partition
from log_analyser_core.errors import ConfigError, InputError, MissingExtraError
from log_analyser_core.features import client as ip_features
from log_analyser_core.parsing.formats import LogFormat
from log_analyser_core.parsing.sources import InputOptions, order_rotated
from log_analyser_core.rules import behaviour as behaviour_rules

if TYPE_CHECKING:
    from log_analyser_core.parsing.wrappers import Wrapper

log = logging.getLogger(__name__)

_REMOTE_SCHEMES = ("s3a://", "s3://", "s3n://", "hdfs://", "gs://", "abfs://", "abfss://", "wasbs://", "file://")
# Events per partition of clients, about: one partition is one Polars table in one task's memory
# (~1 KB an event at the peak of the rules and Sigma, so ~0.5 GB per task at this size).
PARTITION_EVENTS = 500_000
PARSE_BATCH_LINES = 100_000   # lines per Arrow batch handed to the parser
UNPARSED_EXAMPLES = 100   # unparsed lines brought back to show (the counts are complete)
BLANK = "blank line"   # counted with the lines that are not access lines, as file_parser.parse counts them
_STRINGS = (pl.Categorical, pl.String)


@dataclass(frozen=True)
class SparkOptions:
    """Where and how to run: ``master`` is local[N], spark://..., yarn, k8s://... or sc://host:port."""

    master: str = "local[*]"
    conf: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SparkRun:
    """What comes back from the cluster: the evidence and the line counts, and the per-client
    table, which stays cached on the cluster (``clients``, one row per client, CLIENT_SCHEMA) until
    ``scored`` or ``features`` brings it back (and releases it)."""

    clients: Any                           # a cached Spark DataFrame
    logged: list[str]                      # the features with data in the whole table (logged_features)
    detected: partition.Detected | None    # None: no plan given (training)
    stats: file_parser.ParseStats
    unparsed_examples: pl.DataFrame        # file_parser.UNPARSED_SCHEMA: the first UNPARSED_EXAMPLES

    def features(self) -> pl.DataFrame:
        """The whole per-client table: the same columns, types and order as ip_features.compute()."""
        try:
            return _table(_collected(self.clients.select(*_TABLE_COLUMNS)))
        finally:
            self.clients.unpersist()

    def fitting(self, random_state: int) -> tuple[pl.DataFrame, list[str]]:
        """(the clients to fit the detectors on, as anomaly_detector.fit_sample draws them from the
        whole table: every client up to FIT_CLIENTS, else those of lowest fit_keys; the features
        with data in the whole table). Only the sample comes to the driver."""
        table = self.clients.select(*_TABLE_COLUMNS)
        if self.clients.count() > detect.FIT_CLIENTS:
            keyed = table.mapInArrow(_keyed_function(random_state), f"{CLIENT_TABLE_SCHEMA}, `_key` long")
            table = keyed.orderBy("_key", "client_ip").limit(detect.FIT_CLIENTS).drop("_key")
        return _table(_collected(table)), self.logged

    def scored(self, score: Callable[[pl.DataFrame], dict[str, np.ndarray]],
               names: tuple[str, ...]) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
        """(the whole per-client table, the scores ``score`` gives its rows: ``names`` -> one value per
        row). ``score`` (the fitted model) is broadcast to the executors, which apply it to each
        Arrow batch of per-client rows (``mapInArrow``); the scored rows come back."""
        try:
            schema = ", ".join([CLIENT_TABLE_SCHEMA, *(f"`_score_{name}` double" for name in names)])
            model = _broadcast(self.clients.sparkSession, score)
            rows = _collected(self.clients.select(*_TABLE_COLUMNS).mapInArrow(_scoring_function(model, names), schema))
        finally:
            self.clients.unpersist()
        rows = rows.sort("client_ip")
        return _table(rows), {name: rows[f"_score_{name}"].to_numpy() for name in names}


def _pyspark() -> tuple[Any, Any]:
    try:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F
    except ImportError:
        raise MissingExtraError("--engine spark", "spark", "pyspark") from None
    return SparkSession, F


def parse_conf(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` strings from --spark-conf into pairs; raises ConfigError naming a bad one."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--spark-conf wants key=value, not {pair!r}")
        parsed.append((key.strip(), value))
    return tuple(parsed)


def require_java(master: str) -> None:
    """Raise ConfigError unless a local JVM can start: every master but Spark Connect (sc://) runs
    its driver in one. pyspark finds Java through JAVA_HOME, else ``java`` on the PATH."""
    if master.startswith("sc://"):
        return
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return
    if not home and shutil.which("java"):
        return
    where = f"JAVA_HOME={home} has no bin/java" if home else "no java on the PATH and JAVA_HOME is not set"
    raise ConfigError(f"--engine spark needs Java 17 or later to run Spark ({where})",
                      hint="install a JRE (apt-get install openjdk-17-jre-headless) or use sc:// Spark Connect")


def session(options: SparkOptions) -> Any:
    """A SparkSession for ``options``; Spark Connect for ``sc://`` masters (no local JVM needed)."""
    SparkSession, _ = _pyspark()
    require_java(options.master)
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


def spark_paths(sources: Sequence[str]) -> list[str]:
    """Local paths as absolute file:// URIs; remote URIs (s3a://, hdfs://, ...) and globs pass through."""
    paths = []
    for source in sources:
        if source == "-":
            raise ConfigError("--engine spark cannot read standard input", hint="give files or URIs with -f")
        paths.append(source if source.startswith(_REMOTE_SCHEMES) else "file://" + os.path.abspath(source))
    return paths


def source_names(sources: Sequence[str]) -> dict[str, str]:
    """Spark's name of each local file given by path (file:/abs/path, %-encoded) -> the path as given,
    so that findings name the files as the local engine does; other files keep Spark's name."""
    return {"file:" + os.path.abspath(s): s for s in sources if not s.startswith(_REMOTE_SCHEMES)}


def _shown(spark_name: str, names: dict[str, str]) -> str:
    plain = unquote(spark_name)
    return names.get(plain, plain[len("file:"):] if plain.startswith("file:/") else plain)


def require_support(fmt: LogFormat) -> LogFormat:
    """``fmt`` if this engine reads it, else a ConfigError that says why."""
    if fmt.name in ("w3c", "cloudfront"):
        raise ConfigError(f"--engine spark does not read {fmt.name} (W3C extended) logs: one file can hold several "
                          "#Fields: header blocks with different columns, which only the local engine follows",
                          hint="use the default engine, --engine polars")
    return fmt


def _format(lines: Any, settings: Any) -> tuple[Wrapper | None, LogFormat]:
    """The format of the log (one for the run): given, or detected from its first lines.
    ``settings``: engine.InputSettings (not imported: engine.py imports this module)."""
    fixed = file_parser._format_for(settings.format_name, settings.log_format, settings.json_fields)
    if fixed is not None and fixed.name in ("w3c", "cloudfront"):
        require_support(fixed)
    sample = [row.raw for row in lines.select("raw").limit(file_parser.DETECTION_SAMPLE).collect()]
    wrapper, fmt, rate = file_parser._format_from_sample(fixed, pl.Series("raw", sample, dtype=pl.String))
    log.info("spark input: format %s (%.0f%% of sampled lines match)", fmt.name, 100 * rate)
    return wrapper, require_support(fmt)


# --- the schemas rows travel in between Python and the JVM ----------------------------------------

def _spark_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "timestamp"
    if isinstance(dtype, _STRINGS):
        return "string"
    return {pl.Int16: "short", pl.Int64: "long", pl.Float64: "double", pl.Boolean: "boolean"}[dtype.base_type()]


_EVENT_COLUMNS = {**file_parser.EVENT_SCHEMA, "raw": pl.String(), "_reason": pl.String(), "_outside": pl.Boolean(),
                  "_naive": pl.Boolean(), "_recovered": pl.Boolean(), "_refused": pl.Boolean()}
PARSED_SCHEMA = ", ".join(f"`{name}` {_spark_type(dtype)}" for name, dtype in _EVENT_COLUMNS.items())
_CLIENT_COLUMNS = {"client_ip": pl.String(), **{name: pl.Float64() for name in ip_features.FEATURE_NAMES},
                   "first_seen": pl.Datetime("us", "UTC"), "last_seen": pl.Datetime("us", "UTC"),
                   "errors": pl.Int64(), "crawler": pl.Boolean(), "evidence": pl.Binary(), "excluded": pl.Binary()}
CLIENT_SCHEMA = ", ".join(f"`{name}` {_spark_type(dtype) if dtype != pl.Binary else 'binary'}"
                          for name, dtype in _CLIENT_COLUMNS.items())
PEAKS_SCHEMA = "rule_id string, peak double"
_TABLE_COLUMNS = ["client_ip", *ip_features.FEATURE_NAMES, "first_seen", "last_seen", "errors"]
_TABLE_TYPES = {name: _CLIENT_COLUMNS[name] for name in _TABLE_COLUMNS}   # the per-client table's columns
CLIENT_TABLE_SCHEMA = ", ".join(f"`{name}` {_spark_type(dtype)}" for name, dtype in _TABLE_TYPES.items())


def _arrow(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> Any:
    """``frame`` as an Arrow table of exactly ``columns`` (categoricals as plain strings), which
    is what Spark checks the function's result against."""
    import pyarrow as pa

    casts = [pl.col(name).cast(pl.String) if isinstance(dtype, _STRINGS) else pl.col(name).cast(dtype)
             for name, dtype in columns.items()]
    table = frame.select(casts).to_arrow()
    schema = pa.schema([pa.field(name, pa.string() if table.schema.field(name).type == pa.large_string()
                                 else pa.binary() if table.schema.field(name).type == pa.large_binary()
                                 else table.schema.field(name).type) for name in columns])
    return table.cast(schema)


# --- on the executors ------------------------------------------------------------------------------

def _parse_batches(batches: Iterator[Any], fmt: LogFormat, wrapper: Wrapper | None, options: InputOptions,
                   numbering: pl.DataFrame, names: dict[str, str]) -> Iterator[Any]:
    """mapInArrow: lines (raw, _file, _block, _id) -> events and unparsed lines (PARSED_SCHEMA)."""
    for batch in batches:
        lines = pl.from_arrow(batch)
        assert isinstance(lines, pl.DataFrame)
        lines = lines.join(numbering, on=["_file", "_block"], how="left").with_columns(
            (pl.col("_id") - pl.col("_first_id") + pl.col("_first_line")).alias("line_number"))
        for (spark_name,), part in lines.group_by("_file", maintain_order=True):
            yield from _arrow(_parsed(part, fmt, wrapper, options, _shown(str(spark_name), names)),
                              _EVENT_COLUMNS).to_batches()


def _parsed(lines: pl.DataFrame, fmt: LogFormat, wrapper: Wrapper | None, options: InputOptions,
            source: str) -> pl.DataFrame:
    blank = lines["raw"].str.contains(r"^\s*$")
    blanks = lines.filter(blank).select(pl.lit(source).alias("source"), "line_number",
                                        pl.lit(BLANK).alias("_reason"), pl.lit("").alias("raw"))
    lines = lines.filter(~blank)   # counted, never parsed, as file_parser.parse does
    good, bad = file_parser.parse_lines(lines["raw"], fmt, source=source, options=options,
                                        line_numbers=lines["line_number"], wrapper=wrapper)
    inside = pl.lit(True)
    if options.since is not None:
        inside = inside & (pl.col("timestamp") >= options.since)
    if options.until is not None:
        inside = inside & (pl.col("timestamp") < options.until)
    good = good.join(lines.select("line_number", "raw"), on="line_number", how="left", maintain_order="left")
    good = good.with_columns((~inside).alias("_outside"), pl.lit(None, pl.String).alias("_reason"))
    bad = bad.select(pl.col("source").cast(pl.Categorical), "line_number", "raw", pl.col("reason").alias("_reason"))
    return pl.concat([good.with_columns(pl.col(c).cast(pl.String) for c in ("client_ip", "peer_ip", "method",
                                                                              "protocol", "request", "referer",
                                                                              "user_agent", "vhost", "source")),
                      bad.with_columns(pl.col("source").cast(pl.String)), blanks], how="diagonal_relaxed")


def _events(table: Any, order: dict[str, int]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A partition's rows as the local engine's events (EVENT_SCHEMA, in file and line order), and
    their raw lines by (source, line_number)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.sort(pl.col("source").replace_strict(order, default=len(order)), "line_number")
    events = frame.select(pl.col(name).cast(dtype) for name, dtype in file_parser.EVENT_SCHEMA.items())
    return events, frame.select("source", "line_number", "raw")


def _with_lines(detected: partition.Detected, raw: pl.DataFrame) -> partition.Detected:
    """Evidence whose example lines are the logged text, read from this partition's rows."""
    from dataclasses import replace

    wanted = {x.line_number for items in detected.evidence.values() for e in items for x in e.examples}
    text = {(s, n): r for s, n, r in raw.filter(pl.col("line_number").is_in(list(wanted))).iter_rows()}

    def real(x):
        place = (x.source, x.line_number)
        return replace(x, raw=text[place], rebuilt=False) if place in text else x
    evidence = {ip: [replace(e, examples=tuple(real(x) for x in e.examples)) for e in items]
                for ip, items in detected.evidence.items()}
    return replace(detected, evidence=evidence)


def _client_rows(table: Any, plan: partition.Plan, order: dict[str, int], detect: bool = True) -> Any:
    """One partition of clients' events -> one row per client (CLIENT_SCHEMA), its
    evidence left empty unless ``detect``."""
    events, raw = _events(table, order)
    features = partition.features(events, plan)
    rows = features.with_columns(pl.col("client_ip").cast(pl.String))
    if not detect:
        rows = rows.with_columns(pl.lit(False).alias("crawler"), pl.lit(None, pl.Binary).alias("evidence"),
                                 pl.lit(None, pl.Binary).alias("excluded"))
        return _arrow(rows, _CLIENT_COLUMNS)
    detected = _with_lines(partition.detect(events, plan), raw)
    ips = rows["client_ip"].to_list()
    found = [pickle.dumps(detected.evidence[ip]) if ip in detected.evidence else None for ip in ips]
    excluded = [pickle.dumps(detected.excluded) if i == 0 else None for i in range(len(ips))]
    rows = rows.with_columns(pl.Series("crawler", [ip in detected.crawlers for ip in ips], dtype=pl.Boolean),
                             pl.Series("evidence", found, dtype=pl.Binary),
                             pl.Series("excluded", excluded, dtype=pl.Binary))
    return _arrow(rows, _CLIENT_COLUMNS)


def _peak_rows(table: Any, plan: partition.Plan, order: dict[str, int]) -> Any:
    """One partition of clients' events -> each baseline bucket's peak per client."""
    events, _ = _events(table, order)
    peaks = [pl.DataFrame({"rule_id": rule_id, "peak": series.cast(pl.Float64)})
             for rule_id, series in partition.baseline_peaks(events, plan).items()]
    frame = pl.concat(peaks) if peaks else pl.DataFrame(schema={"rule_id": pl.String, "peak": pl.Float64})
    return _arrow(frame, {"rule_id": pl.String(), "peak": pl.Float64()})


def _scoring_function(model: Any, names: tuple[str, ...]) -> Any:
    """mapInArrow: per-client rows -> the same rows with a ``_score_<name>`` column per detector,
    from the broadcast ``model`` (a Broadcast of the pickled scoring function, or with Spark
    Connect, which has no broadcast variables, the function itself, which travels with the plan)."""
    def apply(batches):
        score = _unbroadcast(model)
        for batch in batches:
            if not batch.num_rows:
                continue
            rows = pl.from_arrow(batch)
            assert isinstance(rows, pl.DataFrame)
            scores = score(rows)
            rows = rows.with_columns(pl.Series(f"_score_{name}", scores[name], dtype=pl.Float64) for name in names)
            yield from _arrow(rows, {**_TABLE_TYPES, **{f"_score_{name}": pl.Float64() for name in names}}).to_batches()
    return apply


def _keyed_function(random_state: int) -> Any:
    """mapInArrow: per-client rows -> the same rows with anomaly_detector.fit_keys' ``_key``."""
    def apply(batches):
        for batch in batches:
            rows = pl.from_arrow(batch)
            assert isinstance(rows, pl.DataFrame)
            keys = detect.fit_keys(rows["client_ip"].cast(pl.String).to_list(), random_state)
            yield from _arrow(rows.with_columns(pl.Series("_key", keys, dtype=pl.Int64)),
                              {**_TABLE_TYPES, "_key": pl.Int64()}).to_batches()
    return apply


def _broadcast(spark: Any, score: Any) -> Any:
    """``score`` as a broadcast variable (pickled once, read once per executor), or as it is on
    Spark Connect, which has no SparkContext to broadcast with."""
    context = getattr(spark, "sparkContext", None)   # Connect raises an AttributeError for it
    if context is None:
        return score
    from pyspark import cloudpickle

    return context.broadcast(cloudpickle.dumps(score))


def _unbroadcast(model: Any) -> Any:
    if callable(model):
        return model
    return pickle.loads(model.value)


def _collected(frame: Any) -> pl.DataFrame:
    rows = pl.from_arrow(frame.toArrow())
    assert isinstance(rows, pl.DataFrame)
    return rows


# --- on the driver ---------------------------------------------------------------------------------

def run(sources: Sequence[str], settings: Any, plan: partition.Plan | None) -> SparkRun:
    """Parse ``sources`` on Spark and run ``plan``'s per-client stages on partitions of the clients
    (features only when ``plan`` is None). Raises InputError when nothing (or too little) parses."""
    _, F = _pyspark()
    spark = session(settings.spark)
    paths = spark_paths(sources)
    names = source_names(sources)
    lines = spark.read.text(paths).select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("_file"),
                                          F.col("_metadata.file_block_start").alias("_block"),
                                          F.monotonically_increasing_id().alias("_id"))
    numbering = _numbering(lines.groupBy("_file", "_block").agg(F.min("_id").alias("_first_id"),
                                                                F.count(F.lit(1)).alias("_lines")).toArrow())
    if numbering.is_empty():
        raise InputError("no log lines to analyse (the input is empty)", path=", ".join(sources))
    wrapper, fmt = _format(lines, settings)
    options = InputOptions(tz=settings.tz, real_ip_header=settings.real_ip_header,
                           trusted_proxies=settings.trusted_proxies, since=settings.since, until=settings.until)
    files = sorted(set(numbering["_file"].to_list()))
    order = {name: rank for rank, name in enumerate(order_rotated([_shown(f, names) for f in files]))}
    # fewer, larger batches to parse: each parse_lines call has a fixed cost of a few milliseconds
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(PARSE_BATCH_LINES))
    parse = partial(_parse_batches, fmt=fmt, wrapper=wrapper, options=options, numbering=numbering, names=names)
    parsed = lines.mapInArrow(parse, PARSED_SCHEMA).persist()
    events = None
    try:
        stats, unparsed = _stats(parsed, F, fmt, wrapper, [_shown(f, names) for f in files], options)
        file_parser._check_quality(file_parser.ParsedLog(pl.DataFrame(schema=file_parser.EVENT_SCHEMA), unparsed,
                                                         stats), sources, settings.max_unparsed_ratio)
        parts = max(1, math.ceil(stats.parsed_lines / PARTITION_EVENTS))
        events = by_client(parsed.filter(F.col("_reason").isNull() & ~F.col("_outside"))
                           .drop("_reason", "_outside", "_naive", "_recovered"), parts).persist()  # for both passes
        detects = plan is not None
        if plan is not None and plan.capacities is None:
            plan = _fit_baselines(events, plan, order)
        rows_of = _per_partition(_client_rows, plan or partition.Plan(tz=settings.tz), order, detect=detects)
        clients = events.mapInArrow(rows_of, CLIENT_SCHEMA).persist()   # until scored: see SparkRun
        # what the request-level stages found (a row per client with some), and what the table logs
        found = _collected(clients.filter(F.col("evidence").isNotNull() | F.col("crawler")
                                          | F.col("excluded").isNotNull())
                           .select("client_ip", "crawler", "evidence", "excluded"))
        logged = _logged(clients, F)
    finally:
        parsed.unpersist()
        if events is not None:
            events.unpersist()
    return SparkRun(clients, logged, _detected(found) if detects else None, stats, unparsed)


def _logged(clients: Any, F: Any) -> list[str]:
    """ip_features.logged_features of the whole table, counted on the cluster."""
    counts = clients.select(F.count(F.lit(1)).alias("_rows"),
                            *(F.count(F.col(name)).alias(name) for name in ip_features.FEATURE_NAMES)).first()
    return [name for name in ip_features.FEATURE_NAMES if counts[name] > 0] if counts["_rows"] else []


def by_client(events: Any, parts: int) -> Any:
    """``events`` in ``parts`` Spark partitions by a hash of the client address: each is one
    partition of clients, handed whole to mapInArrow. (Grouping by a partition number instead
    would hash the numbers again: 0 and 1 both land in the same one of 2 partitions.)"""
    return events.repartition(parts, "client_ip")


def _per_partition(function: Any, plan: partition.Plan, order: dict[str, int], **options: bool) -> Any:
    """``function`` of one partition's events as one Arrow table, with its plan, as a mapInArrow
    function of the partition's batches (a plain function: pyspark fails on a functools.partial)."""
    def apply(batches):
        import pyarrow as pa

        batches = [batch for batch in batches if batch.num_rows]
        if batches:   # a partition no client hashed to has no events
            yield from function(pa.Table.from_batches(batches), plan, order, **options).to_batches()
    return apply


def _numbering(blocks: Any) -> pl.DataFrame:
    """Per (file, block): the first row id and its line number in the file (blocks in file order)."""
    frame = pl.from_arrow(blocks)
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return frame
    frame = frame.sort("_file", "_block")
    return frame.with_columns((pl.col("_lines").cum_sum().over("_file") - pl.col("_lines") + 1).alias("_first_line")
                              ).select("_file", "_block", "_first_id", "_first_line")


def _fit_baselines(events: Any, plan: partition.Plan, order: dict[str, int]) -> partition.Plan:
    """``plan`` with the baseline buckets' capacities fitted from every client's peak."""
    if not any(behaviour_rules.is_baseline(rule) for rule in plan.behaviour_rules()):
        return plan
    peaks = pl.from_arrow(events.mapInArrow(_per_partition(_peak_rows, plan, order), PEAKS_SCHEMA).toArrow())
    assert isinstance(peaks, pl.DataFrame)
    by_rule = {str(rule_id): [part["peak"]] for (rule_id,), part in peaks.group_by("rule_id")}
    return partition.fitted(plan, by_rule)


def _table(rows: pl.DataFrame) -> pl.DataFrame:
    """The per-client table as ip_features.compute() gives it: sorted by client_ip, categorical."""
    table = rows.select(_TABLE_COLUMNS).sort("client_ip")
    return table.with_columns(pl.col("client_ip").cast(pl.Categorical),
                              pl.col("first_seen", "last_seen").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))


def _detected(rows: pl.DataFrame) -> partition.Detected:
    parts = [partition.Detected(
        evidence={ip: pickle.loads(found)} if found is not None else {},
        excluded=pickle.loads(excluded) if excluded is not None else {},
        crawlers={ip} if crawler else set())
        for ip, crawler, found, excluded in rows.select("client_ip", "crawler", "evidence", "excluded").iter_rows()]
    return partition.Detected.merged(parts)


def _stats(parsed: Any, F: Any, fmt: LogFormat, wrapper: Wrapper | None, sources: list[str],
           options: InputOptions) -> tuple[file_parser.ParseStats, pl.DataFrame]:
    """The line counts (file_parser.ParseStats, as the local engine counts them) and the first
    UNPARSED_EXAMPLES unparsed lines."""
    counts = parsed.groupBy("_reason", "_outside").agg(
        F.count(F.lit(1)).alias("lines"), F.sum(F.col("_naive").cast("long")).alias("naive"),
        F.sum(F.col("_recovered").cast("long")).alias("recovered"),
        F.sum(F.col("_refused").cast("long")).alias("refused")).collect()
    reasons: dict[str, int] = {}
    parsed_lines = outside = naive = recovered = refused = 0
    for row in counts:
        if row["_reason"] is not None:
            reasons[row["_reason"]] = reasons.get(row["_reason"], 0) + row["lines"]
        elif row["_outside"]:
            outside += row["lines"]
        else:
            parsed_lines, naive, recovered = row["lines"], int(row["naive"] or 0), int(row["recovered"] or 0)
            refused = int(row["refused"] or 0)
    not_access = {reason: reasons.pop(reason) for reason in (*file_parser.NOT_ACCESS_REASONS, BLANK)
                  if reason in reasons}
    examples = (parsed.filter(F.col("_reason").isNotNull()
                              & ~F.col("_reason").isin(*file_parser.NOT_ACCESS_REASONS, BLANK))
                .orderBy("source", "line_number").limit(UNPARSED_EXAMPLES)
                .select("source", "line_number", F.col("_reason").alias("reason"), "raw").collect())
    unparsed = pl.DataFrame([row.asDict() for row in examples], schema=file_parser.UNPARSED_SCHEMA)
    name = f"{wrapper.name} + {fmt.name}" if wrapper else fmt.name
    notes = file_parser.run_notes({", ".join(sources): naive}, outside, recovered, options.tz, refused)
    stats = file_parser.ParseStats(
        total_lines=parsed_lines + sum(reasons.values()) + sum(not_access.values()), parsed_lines=parsed_lines,
        unparsed_by_reason=dict(sorted(reasons.items(), key=lambda kv: -kv[1])), formats=dict.fromkeys(sources, name),
        outside_window=outside, notes=tuple(notes), not_access=not_access, recovered=recovered)
    return stats, unparsed
