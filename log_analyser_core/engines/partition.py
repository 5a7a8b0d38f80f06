"""The per-client stages, run on one partition of the clients: the contract both engines call.

A partition holds every event of its clients (a client is never split), so what it finds about a
client is what one pass over the whole log finds: its features (features/client.py), the behaviour
rules, payload signatures, Sigma and CRS evidence, the allowlist's request patterns and the crawler
check. The local engine runs it on all the events at once; Spark runs it on each hash partition of
the clients (``mapInArrow`` on the whole partition) and merges the parts. The one site-wide quantity these
stages read, the ``baseline`` buckets' capacity, is fitted from every client's peak
(``Plan.capacities``); the detectors are fitted on the driver from the per-client table and
score it where it is (engines/spark.py: on the executors).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import polars as pl

from log_analyser_core import verdict
from log_analyser_core.features import client as ip_features
from log_analyser_core.results import Evidence
from log_analyser_core.rules import behaviour as behaviour_rules
from log_analyser_core.rules import sigma_engine, signatures
from log_analyser_core.rules.crs import stage as crs_stage

if TYPE_CHECKING:
    from log_analyser_core.verdict import Allowlist


@dataclass(frozen=True)
class Plan:
    """What every partition runs with; picklable (Spark ships it to the executors with the task).
    ``capacities`` None: the baseline buckets are fitted over the events given (all of them)."""

    tz: str = "UTC"
    allowlist: Allowlist | None = None
    rule_paths: tuple[str, ...] = ()
    sigma_rules: sigma_engine.RuleSet | None = None
    crs_rules: crs_stage.RuleSet | None = None
    capacities: Mapping[str, float] | None = None

    def behaviour_rules(self) -> list[behaviour_rules.BehaviourRule]:
        return behaviour_rules.load_rules([behaviour_rules.default_rule_dir(), *self.rule_paths])


@dataclass(frozen=True)
class Detected:
    """What the request-level stages found about the clients of one or more partitions."""

    evidence: dict[str, list[Evidence]] = field(default_factory=dict)   # by client ip
    excluded: dict[str, int] = field(default_factory=dict)              # allowlisted requests by reason
    crawlers: set[str] = field(default_factory=set)

    @classmethod
    def merged(cls, parts: Iterable[Detected]) -> Detected:
        """The parts of disjoint sets of clients as one."""
        evidence: dict[str, list[Evidence]] = {}
        excluded: Counter[str] = Counter()
        crawlers: set[str] = set()
        for part in parts:
            evidence.update(part.evidence)
            excluded.update(part.excluded)
            crawlers |= part.crawlers
        return cls(evidence, dict(excluded), crawlers)


def features(events: pl.DataFrame, plan: Plan) -> pl.DataFrame:
    """One row per client of ``events`` (ip_features.compute's table), night-time in ``plan.tz``."""
    return ip_features.compute(in_zone(events, plan.tz))


def detect(events: pl.DataFrame, plan: Plan) -> Detected:
    """Evidence by client ip from the behaviour rules, payload signatures, Sigma rules and CRS, the
    requests the allowlist kept out of them, and the clients that are crawlers."""
    crawlers = verdict.crawler_clients(events)
    excluded: dict[str, int] = {}
    if plan.allowlist is not None:
        mask, excluded = verdict.allowed_requests(events, plan.allowlist)
        events = events.filter(~mask)
    evidence = behaviour_rules.detect(events, plan.behaviour_rules(), capacities=plan.capacities)
    for ip, items in signatures.detect(events).items():
        evidence.setdefault(ip, []).extend(items)
    for ip, matched in (sigma_engine.evaluate(events, plan.sigma_rules) if plan.sigma_rules else {}).items():
        evidence.setdefault(ip, []).extend(matched)
    for ip, matched in (crs_stage.evaluate(events, plan.crs_rules) if plan.crs_rules else {}).items():
        evidence.setdefault(ip, []).extend(matched)
    return Detected(evidence, excluded, crawlers)


def baseline_peaks(events: pl.DataFrame, plan: Plan) -> dict[str, pl.Series]:
    """The baseline buckets' peak level per client of this partition (rule id -> values), from
    the requests the allowlist leaves to the rules, as ``detect`` reads them."""
    if plan.allowlist is not None:
        events = events.filter(~verdict.allowed_requests(events, plan.allowlist)[0])
    return behaviour_rules.baseline_peaks(events, plan.behaviour_rules())


def fitted(plan: Plan, peaks: Mapping[str, list[pl.Series]]) -> Plan:
    """``plan`` with the baseline buckets' capacities fitted from every partition's peaks."""
    return replace(plan, capacities=behaviour_rules.site_capacities(peaks, plan.behaviour_rules()))


def in_zone(events: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Events whose local offset is that of ``tz`` (for the night-time feature) when a zone other
    than UTC is set; by default the offset each server logged is used. The result keeps its own."""
    if tz == "UTC":
        return events
    local = pl.col("timestamp").dt.convert_time_zone(tz).dt.replace_time_zone(None)
    offset = (local - pl.col("timestamp").dt.replace_time_zone(None)).dt.total_minutes().cast(pl.Int16)
    return events.with_columns(offset.alias("tz_offset_min"))
