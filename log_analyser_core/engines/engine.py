"""Where parsing and the per-client stages run: this machine (Polars) or a Spark cluster.

The pipeline picks one engine per run (``for_settings``) and asks it for the parsed log, the
per-client features and what the request-level stages found; ``train`` and ``analyse`` both go
through it, so a baseline learns the same features it is later compared with. Both engines run
the same per-client code (engines/partition.py): the local engine on every client at once, Spark
on each partition of the clients.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl

import anomaly_detector as detect
import file_parser
from log_analyser_core.engines import partition
from log_analyser_core.engines import spark as spark_engine
from log_analyser_core.features import client as ip_features
from log_analyser_core.parsing import reader as log_reader
from log_analyser_core.parsing.sources import InputOptions

if TYPE_CHECKING:
    from log_analyser_core.verdict import Allowlist

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


# Scores of the rows of a per-client table: detector name -> one value per row (anomaly_detector.detector_scores).
Scores = Callable[[pl.DataFrame], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Aggregated:
    """A parsed log, its per-client table and what the request-level stages found. ``features``
    computes the table when called (one row per client, features/client.py's columns, sorted by
    client_ip) and ``detected`` the evidence, so that the caller decides on which thread;
    ``detected`` is None when no Plan was given (training reads the features only).

    A run that scores asks ``fitting(random_state)`` for (the clients to fit the detectors on: every
    one up to anomaly_detector.FIT_CLIENTS, else fit_sample's sample; the features with data in the
    whole table), then ``scored(score, names)`` for (the whole table, ``score`` applied to it: the
    scores of ``names``), applied where the engine keeps the table: here, or Spark's executors."""

    parsed: file_parser.ParsedLog
    features: Callable[[], pl.DataFrame]
    detected: Callable[[], partition.Detected] | None = None
    fitting: Callable[[int], tuple[pl.DataFrame, list[str]]] | None = None
    scored: Callable[[Scores, tuple[str, ...]], tuple[pl.DataFrame, dict[str, np.ndarray]]] | None = None

    @classmethod
    def of_table(cls, parsed: file_parser.ParsedLog, features: Callable[[], pl.DataFrame],
                 detected: Callable[[], partition.Detected] | None = None) -> Aggregated:
        """The table computed (once) on this machine, fitted on and scored here."""
        table = cache(features)

        def fitting(random_state: int) -> tuple[pl.DataFrame, list[str]]:
            return detect.fit_sample(table(), random_state), ip_features.logged_features(table())

        def scored(score: Scores, names: tuple[str, ...]) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
            return table(), score(table())
        return cls(parsed, table, detected, fitting, scored)


class Engine(Protocol):
    name: str
    keeps_events: bool   # whether ``parsed.events`` holds the requests (Spark leaves them on the cluster)

    def sources(self, patterns: Sequence[str]) -> list[str]:
        """The inputs named by ``patterns`` (paths, globs, '-'), as this engine reads them."""

    def notes(self, settings: InputSettings) -> list[str]:
        """What a run on this engine leaves out, for the summary; raises ConfigError for settings it
        cannot honour. Called before any work."""

    def aggregate(self, sources: Sequence[str], settings: InputSettings,
                  progress: file_parser.Progress | None = None, plan: partition.Plan | None = None) -> Aggregated:
        """Parse ``sources`` and say how to run the per-client stages of ``plan`` on them."""


class LocalEngine:
    """Polars on this machine: every request parsed into the events table, one partition of all clients."""

    name = "polars"
    keeps_events = True

    def sources(self, patterns: Sequence[str]) -> list[str]:
        return log_reader.resolve_sources(patterns)

    def notes(self, settings: InputSettings) -> list[str]:
        return []

    def aggregate(self, sources: Sequence[str], settings: InputSettings,
                  progress: file_parser.Progress | None = None, plan: partition.Plan | None = None) -> Aggregated:
        options = InputOptions(tz=settings.tz, real_ip_header=settings.real_ip_header,
                               trusted_proxies=settings.trusted_proxies, since=settings.since, until=settings.until,
                               max_decompressed=settings.max_decompressed)
        parsed = file_parser.parse(sources, format_name=settings.format_name, log_format=settings.log_format,
                                   json_fields=settings.json_fields, max_unparsed_ratio=settings.max_unparsed_ratio,
                                   progress=progress, options=options)
        features = partial(partition.features, parsed.events, plan or partition.Plan(tz=settings.tz))
        detected = partial(partition.detect, parsed.events, plan) if plan is not None else None
        return Aggregated.of_table(parsed, features, detected)


class SparkEngine:
    """A Spark cluster parses and runs the per-client stages on partitions of the clients; the
    per-client table, the evidence (with its example lines) and the line counts come back."""

    name = "spark"
    keeps_events = False

    def sources(self, patterns: Sequence[str]) -> list[str]:
        return list(patterns)   # URIs (s3a://, hdfs://) and globs are Spark's to resolve

    def notes(self, settings: InputSettings) -> list[str]:
        return []

    def aggregate(self, sources: Sequence[str], settings: InputSettings,
                  progress: file_parser.Progress | None = None, plan: partition.Plan | None = None) -> Aggregated:
        done = spark_engine.run(sources, settings, plan)
        empty = pl.DataFrame(schema=file_parser.EVENT_SCHEMA)
        parsed = file_parser.ParsedLog(events=empty, unparsed=done.unparsed_examples, stats=done.stats)
        detected = done.detected
        return Aggregated(parsed, done.features, (lambda: detected) if detected is not None else None,
                          done.fitting, done.scored)


ENGINES: dict[str, Callable[[], Engine]] = {"polars": LocalEngine, "spark": SparkEngine}


def named(name: str) -> Engine:
    """The engine called ``name`` (Settings.engine): polars or spark."""
    return ENGINES[name]()
