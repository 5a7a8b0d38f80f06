"""The pipeline as a library: ``analyse(sources, settings) -> AnalysisResult``.

parse (file_parser) -> per-client features (ip_features) -> anomaly scores and reasons
(anomaly_detector) -> one immutable result that every report writer renders.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

import anomaly_detector as detect
import file_parser
import ip_features
import spark_engine
from anomaly_detector import Deviation
from evidence import Evidence, Geo, LLMNote, Reputation, Severity

log = logging.getLogger(__name__)
SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; built once by the CLI (or a caller) and never changed."""

    format_name: str = "auto"
    log_format: str | None = None      # a custom Apache LogFormat / nginx log_format string
    tz: str = "UTC"                    # zone for timestamps that carry no offset
    threshold: float = 40.0            # flag clients scoring at least this (0-100)
    contamination: float | None = None  # or: flag this fraction of clients, highest scores first
    n_estimators: int = 200
    random_state: int = 0
    max_unparsed_ratio: float = 0.5    # more unparsed lines than this is an input error
    reasons: int = 3                   # reasons listed per client
    engine: str = "polars"             # "polars" (local) or "spark" (parse and aggregate on Spark)
    spark: spark_engine.SparkOptions = spark_engine.SparkOptions()


@dataclass(frozen=True)
class Finding:
    """One client's verdict. ``score`` is 0-100, higher = more suspicious."""

    ip: str
    rank: int
    flagged: bool
    score: float
    severity: Severity
    requests: int
    errors: int
    first_seen: datetime
    last_seen: datetime
    reasons: tuple[str, ...]
    deviations: tuple[Deviation, ...]
    attack_types: tuple[str, ...] = ()          # evidence.AttackType values
    evidence: tuple[Evidence, ...] = ()         # what the rule and signature stages found
    reputation: Reputation | None = None        # filled by enrichment (--enrich)
    geo: Geo | None = None                      # filled by enrichment
    llm_note: LLMNote | None = None             # filled by the explanation stage (--explain)
    detector_scores: dict[str, float] = field(default_factory=dict)
    features: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    sources: tuple[str, ...]
    formats: dict[str, str]
    total_lines: int
    parsed_lines: int
    unparsed_by_reason: dict[str, int]
    clients: int
    flagged: int
    by_severity: dict[str, int]
    time_start: datetime | None
    time_end: datetime | None
    detectors: tuple[str, ...]
    features_used: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def unparsed_lines(self) -> int:
        return self.total_lines - self.parsed_lines


@dataclass(frozen=True)
class AnalysisResult:
    summary: Summary
    findings: tuple[Finding, ...]   # every client once, highest score first, then by IP
    features: pl.DataFrame          # one row per client (ip_features.compute)
    unparsed: pl.DataFrame          # file_parser.UNPARSED_SCHEMA
    events: pl.DataFrame            # file_parser.EVENT_SCHEMA

    def at_least(self, severity: Severity) -> list[Finding]:
        """Flagged findings whose severity is ``severity`` or worse."""
        return [f for f in self.findings if f.flagged and f.severity >= severity]


def analyse(sources: Sequence[str], settings: Settings = Settings(),
            progress: file_parser.Progress | None = None) -> AnalysisResult:
    """Run the whole pipeline over ``sources`` (paths, globs or '-' for stdin)."""
    parsed, table = _aggregate(sources, settings, progress)
    used = ip_features.logged_features(table)
    scores, detector_scores, notes = detect.score_clients(table, used, n_estimators=settings.n_estimators,
                                                          random_state=settings.random_state)
    flagged = _flags(scores, settings)
    findings = _findings(table, used, scores, detector_scores, flagged, settings)
    summary = _summary(parsed, table, findings, used, tuple(detector_scores), notes)
    return AnalysisResult(summary=summary, findings=tuple(findings), features=table,
                          unparsed=parsed.unparsed, events=parsed.events)


def _aggregate(sources: Sequence[str], settings: Settings,
               progress: file_parser.Progress | None) -> tuple[file_parser.ParsedLog, pl.DataFrame]:
    """Parse and aggregate per client, locally or on Spark; Spark returns no event rows."""
    if settings.engine == "spark":
        done = spark_engine.aggregate(sources, options=settings.spark, format_name=settings.format_name,
                                      log_format=settings.log_format, tz=settings.tz,
                                      max_unparsed_ratio=settings.max_unparsed_ratio)
        empty = pl.DataFrame(schema=file_parser.EVENT_SCHEMA)
        return file_parser.ParsedLog(events=empty, unparsed=done.unparsed_examples, stats=done.stats), done.features
    parsed = file_parser.parse(sources, format_name=settings.format_name, log_format=settings.log_format,
                               tz=settings.tz, max_unparsed_ratio=settings.max_unparsed_ratio, progress=progress)
    return parsed, ip_features.compute(parsed.events)


def _flags(scores: np.ndarray, settings: Settings) -> np.ndarray:
    if settings.contamination is None:
        return scores >= settings.threshold
    count = math.ceil(settings.contamination * len(scores))
    order = np.argsort(-scores, kind="stable")[:count]
    flags = np.zeros(len(scores), dtype=bool)
    flags[order] = True
    return flags & (scores > 0)


def _findings(table: pl.DataFrame, used: list[str], scores: np.ndarray, detector_scores: dict[str, np.ndarray],
              flagged: np.ndarray, settings: Settings) -> list[Finding]:
    z, typical = detect.robust_z(table, used)
    rows = table.to_dicts()
    order = sorted(range(len(rows)), key=lambda i: (-round(float(scores[i]), 6), rows[i]["client_ip"]))
    findings = []
    for rank, i in enumerate(order, start=1):
        row = rows[i]
        values = [row[name] or 0.0 for name in used]
        deviations = detect.top_deviations(z[i], values, typical, used, settings.reasons) if used else []
        score = round(float(scores[i]), 1)
        reasons = [detect.describe(d, row) for d in deviations]
        if flagged[i] and not reasons:
            reasons = ["an unusual combination of features, none far from typical on its own"]
        findings.append(Finding(
            ip=row["client_ip"], rank=rank, flagged=bool(flagged[i]), score=score,
            severity=detect.severity_for(score), requests=int(row["requests"]), errors=int(row["errors"]),
            first_seen=row["first_seen"], last_seen=row["last_seen"],
            reasons=tuple(reasons), deviations=tuple(deviations),
            detector_scores={name: round(float(values[i]), 1) for name, values in detector_scores.items()},
            features={name: row[name] for name in ip_features.FEATURE_NAMES},
        ))
    return findings


def _summary(parsed: file_parser.ParsedLog, table: pl.DataFrame, findings: list[Finding], used: list[str],
             detectors: tuple[str, ...], notes: list[str]) -> Summary:
    severities = Counter(f.severity.label for f in findings if f.flagged)
    return Summary(
        sources=tuple(parsed.stats.formats), formats=dict(parsed.stats.formats),
        total_lines=parsed.stats.total_lines, parsed_lines=parsed.stats.parsed_lines,
        unparsed_by_reason=dict(parsed.stats.unparsed_by_reason), clients=len(findings),
        flagged=sum(f.flagged for f in findings),
        by_severity={s.label: severities.get(s.label, 0) for s in reversed(Severity)},
        time_start=table["first_seen"].min() if table.height else None,  # type: ignore[arg-type]
        time_end=table["last_seen"].max() if table.height else None,     # type: ignore[arg-type]
        detectors=detectors, features_used=tuple(used), notes=tuple(notes),
    )
