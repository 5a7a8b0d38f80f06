"""Where parsing and per-client aggregation run: this machine (Polars) or a Spark cluster.

The pipeline picks one engine per run (``for_settings``) and asks it for the parsed log and the
per-client features; ``train`` and ``analyse`` both go through it, so a baseline learns the
same features it is later compared with. Spark returns the aggregate and no request rows, so on
Spark the request-level stages (behaviour rules, signatures, Sigma) have nothing to read:
``reads_requests`` says so, once, instead of tests of the engine's name across the pipeline.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import polars as pl

import file_parser
from log_analyser_core.engines import spark as spark_engine
from log_analyser_core.errors import ConfigError
from log_analyser_core.features import client as ip_features
from log_analyser_core.parsing import reader as log_reader
from log_analyser_core.parsing.sources import InputOptions

if TYPE_CHECKING:
    from log_analyser_core.verdict import Allowlist

SPARK_NOTE = ("engine spark: Spark returns no single requests, so the behaviour rules, payload signatures, Sigma "
              "rules and crawler check did not run; the anomaly score is the verdict")


class InputSettings(Protocol):
    """The Settings fields an engine reads (pipeline.Settings has them all; read-only there)."""

    @property
    def format_name(self) -> str: ...

    @property
    def log_format(self) -> str | None: ...

    @property
    def json_fields(self) -> str | None: ...

    @property
    def tz(self) -> str: ...

    @property
    def real_ip_header(self) -> str | None: ...

    @property
    def trusted_proxies(self) -> tuple: ...

    @property
    def since(self) -> datetime | None: ...

    @property
    def until(self) -> datetime | None: ...

    @property
    def max_decompressed(self) -> int | None: ...

    @property
    def max_unparsed_ratio(self) -> float: ...

    @property
    def allowlist(self) -> Allowlist | None: ...

    @property
    def spark(self) -> spark_engine.SparkOptions: ...


@dataclass(frozen=True)
class Aggregated:
    """A parsed log and its per-client table. ``features`` computes the table when called (one row
    per client, features/client.py's columns), so that the caller decides on which thread."""

    parsed: file_parser.ParsedLog
    features: Callable[[], pl.DataFrame]


class Engine(Protocol):
    name: str
    reads_requests: bool   # whether ``parsed.events`` holds the requests (rules, signatures and Sigma need them)

    def sources(self, patterns: Sequence[str]) -> list[str]:
        """The inputs named by ``patterns`` (paths, globs, '-'), as this engine reads them."""

    def notes(self, settings: InputSettings) -> list[str]:
        """What a run on this engine leaves out, for the summary; raises ConfigError for settings it
        cannot honour. Called before any work."""

    def aggregate(self, sources: Sequence[str], settings: InputSettings,
                  progress: file_parser.Progress | None = None) -> Aggregated:
        """Parse ``sources`` and say how to aggregate them per client."""


class LocalEngine:
    """Polars on this machine: every request parsed into the events table, features in one group_by."""

    name = "polars"
    reads_requests = True

    def sources(self, patterns: Sequence[str]) -> list[str]:
        return log_reader.resolve_sources(patterns)

    def notes(self, settings: InputSettings) -> list[str]:
        return []

    def aggregate(self, sources: Sequence[str], settings: InputSettings,
                  progress: file_parser.Progress | None = None) -> Aggregated:
        options = InputOptions(tz=settings.tz, real_ip_header=settings.real_ip_header,
                               trusted_proxies=settings.trusted_proxies, since=settings.since, until=settings.until,
                               max_decompressed=settings.max_decompressed)
        parsed = file_parser.parse(sources, format_name=settings.format_name, log_format=settings.log_format,
                                   json_fields=settings.json_fields, max_unparsed_ratio=settings.max_unparsed_ratio,
                                   progress=progress, options=options)
        return Aggregated(parsed, lambda: ip_features.compute(in_zone(parsed.events, settings.tz)))


class SparkEngine:
    """A Spark cluster parses and aggregates; only the per-client table comes back."""

    name = "spark"
    reads_requests = False

    def sources(self, patterns: Sequence[str]) -> list[str]:
        return list(patterns)   # URIs (s3a://, hdfs://) and globs are Spark's to resolve

    def notes(self, settings: InputSettings) -> list[str]:
        """Spark applies the allowlist's networks (to clients); its user-agent and path patterns match
        requests and cannot apply, and an allowlist of nothing but patterns is refused rather than ignored."""
        allow = settings.allowlist
        if allow is None or not (allow.user_agents or allow.paths):
            return [SPARK_NOTE]
        if not allow.networks:
            raise ConfigError("--engine spark cannot apply an allowlist of only user_agents and paths patterns: they "
                              "match single requests, which Spark does not return",
                              hint="list the clients under ips, or use the default engine, --engine polars")
        return [SPARK_NOTE, "engine spark: the allowlist's ips were applied; its user_agents and paths patterns "
                "match single requests and were not"]

    def aggregate(self, sources: Sequence[str], settings: InputSettings,
                  progress: file_parser.Progress | None = None) -> Aggregated:
        done = spark_engine.aggregate(sources, options=settings.spark, format_name=settings.format_name,
                                      log_format=settings.log_format, tz=settings.tz,
                                      max_unparsed_ratio=settings.max_unparsed_ratio)
        empty = pl.DataFrame(schema=file_parser.EVENT_SCHEMA)
        parsed = file_parser.ParsedLog(events=empty, unparsed=done.unparsed_examples, stats=done.stats)
        return Aggregated(parsed, lambda: done.features)


ENGINES: dict[str, Callable[[], Engine]] = {"polars": LocalEngine, "spark": SparkEngine}


def named(name: str) -> Engine:
    """The engine called ``name`` (Settings.engine): polars or spark."""
    return ENGINES[name]()


def in_zone(events: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Events whose local offset is that of ``tz`` (for the night-time feature) when a zone other
    than UTC is set; by default the offset each server logged is used. The result keeps its own."""
    if tz == "UTC":
        return events
    local = pl.col("timestamp").dt.convert_time_zone(tz).dt.replace_time_zone(None)
    offset = (local - pl.col("timestamp").dt.replace_time_zone(None)).dt.total_minutes().cast(pl.Int16)
    return events.with_columns(offset.alias("tz_offset_min"))
