"""Display-ready views of an AnalysisResult shared by the PDF, HTML and terminal writers.

Everything here returns plain, unescaped text and numbers; each writer escapes for its own medium.
Nothing here scores: it only counts and formats what the pipeline already decided.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from log_analyser_core.results import (
    REBUILT_MARK,
    AnalysisResult,
    Evidence,
    ExampleLine,
    FeatureInfo,
    Finding,
    Geo,
    LLMNote,
    Reputation,
    flagged_findings,
)

# Key features drawn as client-vs-typical bars, besides the client's own deviations.
KEY_FEATURES = ("requests", "peak_rpm", "error_4xx_ratio", "distinct_paths", "status_404", "sensitive_ratio")
SEVERITY_HEX = {"critical": "#ff4d4f", "high": "#ff8c1a", "medium": "#f2c200", "low": "#3fa7d6",
                "info": "#8c96a0"}
TIMELINE_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)  # seconds
TIMELINE_MAX_POINTS = 150


@dataclass(frozen=True)
class FeatureBar:
    """One feature of a client next to the site's typical (median) client, in the feature's unit."""

    feature: str
    description: str
    unit: str
    value: float
    typical: float
    z: float | None     # robust z-score when the feature is one of the client's deviations


def pick_findings(result: AnalysisResult, limit: int) -> list[Finding]:
    """Flagged findings first (they are already ranked), topped up with the next highest scores."""
    flagged = flagged_findings(result.findings)
    others = [f for f in result.findings if not f.flagged]
    return (flagged + others)[:limit]


NEXT_UNFLAGGED = 5   # unflagged clients a findings table shows after the flagged ones, room permitting


def flagged_then_next(result: AnalysisResult, limit: int, extra: int = NEXT_UNFLAGGED
                      ) -> tuple[list[Finding], list[Finding]]:
    """(flagged findings, at most ``limit``; then up to ``extra`` of the highest-scoring unflagged ones
    scoring above 0, while the two lists stay within ``limit``)."""
    flagged = flagged_findings(result.findings)[:limit]
    room = min(extra, limit - len(flagged))
    return flagged, [f for f in result.findings if not f.flagged and f.score > 0][:max(room, 0)]


def typical_values(result: AnalysisResult) -> dict[str, float]:
    """Median of every numeric feature over all clients (the 'typical client')."""
    table = result.features
    medians = {}
    for name in (info.name for info in result.feature_info):
        if name in table.columns and table.height:
            value = table[name].cast(pl.Float64, strict=False).fill_nan(None).median()
            medians[name] = float(value) if value is not None else 0.0  # type: ignore[arg-type]
    return medians


def feature_index(result: AnalysisResult) -> dict[str, FeatureInfo]:
    """The result's features by name: unit and description."""
    return {info.name: info for info in result.feature_info}


def feature_bars(finding: Finding, typical: dict[str, float], feature_info: dict[str, FeatureInfo]
                 ) -> list[FeatureBar]:
    """The client's deviations (largest first), then the key features not already listed."""
    bars = []
    for d in finding.deviations:
        feature = feature_info[d.feature]
        bars.append(FeatureBar(d.feature, feature.description, feature.unit, d.value, d.typical, d.z))
    listed = {d.feature for d in finding.deviations}
    for name in KEY_FEATURES:
        value = finding.features.get(name)
        if name in listed or name not in feature_info or value is None or value != value:
            continue
        feature = feature_info[name]
        bars.append(FeatureBar(name, feature.description, feature.unit, float(value), typical.get(name, 0.0), None))
    return bars


def fmt_number(value: float | None) -> str:
    """Compact number: integers without decimals, ratios and rates with up to 3 significant digits."""
    if value is None or value != value:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


# --- times: every datetime in a result is UTC; human-facing writers show them in the --tz zone,
# machine outputs (JSON, exports) keep UTC. Every writer formats times through these helpers.

def in_zone(value: datetime, tz: str = "UTC") -> datetime:
    """An aware time as wall-clock time in ``tz`` (an IANA name such as Europe/Berlin)."""
    return value.astimezone(UTC if tz == "UTC" else ZoneInfo(tz))


def zone_abbreviation(value: datetime, tz: str = "UTC") -> str:
    """The zone's abbreviation at that moment: 'UTC', 'CET' in winter and 'CEST' in summer for Europe/Berlin."""
    return "UTC" if tz == "UTC" else in_zone(value, tz).strftime("%Z")


def fmt_time(value: datetime | None, tz: str = "UTC", seconds: bool = True) -> str:
    """'2026-03-10 09:00:01 UTC'; in another zone its wall time and abbreviation ('2026-03-10 10:00:01 CET');
    '-' for no time."""
    if not value:
        return "-"
    pattern = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{in_zone(value, tz).strftime(pattern)} {zone_abbreviation(value, tz)}"


def fmt_span(start: datetime | None, end: datetime | None, tz: str = "UTC", seconds: bool = True) -> str:
    """'START to END' in ``tz``, a zone other than UTC named after it by its IANA name. With seconds each
    end carries its abbreviation ('2026-03-10 09:00:01 UTC to 2026-03-10 10:00:01 UTC'); without, the
    abbreviation is written once when both ends share it ('2026-03-10 10:00 to 2026-03-10 11:00 CET
    (Europe/Berlin)'), else at each end ('... 01:30 CET to 2026-03-29 04:30 CEST (Europe/Berlin)')."""
    if not (start and end):
        return ""
    if seconds or zone_abbreviation(start, tz) != zone_abbreviation(end, tz):
        text = f"{fmt_time(start, tz, seconds)} to {fmt_time(end, tz, seconds)}"
    else:
        text = f"{in_zone(start, tz):%Y-%m-%d %H:%M} to {fmt_time(end, tz, seconds=False)}"
    return text if tz == "UTC" else f"{text} ({tz})"


def iso_time(value: datetime | None, tz: str = "UTC") -> str | None:
    """ISO 8601 with an explicit offset: UTC as 'Z' ('2026-03-10T09:00:01Z'), another zone with its
    offset at that moment ('2026-03-10T10:00:01+01:00'); None for no time."""
    if not value:
        return None
    return value.isoformat().replace("+00:00", "Z") if tz == "UTC" else in_zone(value, tz).isoformat()


def reputation_text(rep: Reputation | None) -> str | None:
    """One sentence on the reputation lookup, or None when it was not done."""
    if rep is None:
        return None
    if rep.status != "ok":
        return f"reputation {rep.status}" + (f": {rep.detail}" if rep.detail else "")
    parts = [f"abuse confidence {rep.abuse_score}/100" if rep.abuse_score is not None else "abuse confidence unknown"]
    if rep.total_reports is not None:
        parts.append(f"{rep.total_reports:,} reports")
    if rep.last_reported:
        parts.append(f"last reported {rep.last_reported}")
    for label, value in (("usage", rep.usage_type), ("ISP", rep.isp), ("domain", rep.domain)):
        if value:
            parts.append(f"{label} {value}")
    if rep.is_tor:
        parts.append("Tor exit node")
    return ", ".join(parts)


def geo_text(geo: Geo | None) -> str | None:
    if geo is None or not (geo.country or geo.asn or geo.as_org):
        return None
    parts = [geo.country or "country unknown"]
    if geo.asn:
        parts.append(f"AS{geo.asn}" + (f" {geo.as_org}" if geo.as_org else ""))
    elif geo.as_org:
        parts.append(geo.as_org)
    return ", ".join(parts)


def llm_lines(note: LLMNote | None) -> list[str]:
    """The advisory note as lines; says so when the model's answer was set aside."""
    if note is None:
        return []
    if note.status != "ok":
        return [f"{note.model}: note set aside ({note.status})"]
    lines = [f"{note.model} (advisory; never changes the score)"]
    if note.summary:
        lines.append(note.summary)
    verdict = [f"attack type {note.attack_type}" if note.attack_type else "",
               f"severity {note.severity}" if note.severity else "",
               f"confidence {note.confidence:.0%}" if note.confidence is not None else ""]
    if any(verdict):
        lines.append(", ".join(v for v in verdict if v))
    lines.extend(f"action: {action}" for action in note.recommended_actions)
    return lines


def example_place(example: ExampleLine) -> str:
    """Where an example line is from: 'access.log:12', and for a line that is not the logged text
    '-:12 (rebuilt)' (writers explain the mark once with ``evidence.REBUILT_NOTE``)."""
    mark = f" ({REBUILT_MARK})" if example.rebuilt else ""
    return f"{example.source}:{example.line_number}{mark}"


def any_rebuilt(examples: Iterable[ExampleLine]) -> bool:
    return any(example.rebuilt for example in examples)


def evidence_heading(item: Evidence) -> str:
    """'[high] rule sqli-union (sqli): SQL injection UNION probe, 12 requests'."""
    kind = f" ({item.attack_type.value})" if item.attack_type else ""
    noun = "request" if item.count == 1 else "requests"
    return f"[{item.severity.label}] {item.kind} {item.rule_id}{kind}: {item.title}, {item.count:,} {noun}"


def country(finding: Finding) -> str:
    return finding.geo.country if finding.geo and finding.geo.country else ""


def timeline(result: AnalysisResult) -> tuple[pl.DataFrame, int]:
    """Requests per time bucket split into flagged clients and the rest, bucketed in the display zone
    (``summary.tz``: hour and day buckets start at its whole hours and midnights).

    Returns (frame with columns bucket (aware datetime in that zone), flagged, other; bucket width in seconds).
    """
    events = result.events
    if not events.height:
        return pl.DataFrame({"bucket": [], "flagged": [], "other": []}), 60
    span = (events["timestamp"].max() - events["timestamp"].min())  # type: ignore[operator]
    seconds = span.total_seconds() if isinstance(span, timedelta) else 0.0
    width = next((w for w in TIMELINE_BUCKETS if seconds / w <= TIMELINE_MAX_POINTS), TIMELINE_BUCKETS[-1])
    flagged = [f.ip for f in result.findings if f.flagged]
    frame = (events.lazy()
             .select(_display_zone(pl.col("timestamp"), result.summary.tz).dt.truncate(f"{width}s").alias("bucket"),
                     pl.col("client_ip").is_in(flagged).alias("is_flagged"))
             .group_by("bucket")
             .agg(pl.col("is_flagged").sum().cast(pl.Int64).alias("flagged"),
                  (~pl.col("is_flagged")).sum().cast(pl.Int64).alias("other"))
             .sort("bucket").collect())
    return frame, width


def _display_zone(stamp: pl.Expr, tz: str) -> pl.Expr:
    return stamp if tz == "UTC" else stamp.dt.convert_time_zone(tz)


def status_counts(result: AnalysisResult, limit: int = 12) -> list[tuple[str, int]]:
    """The most frequent HTTP status codes, most frequent first ('none' for unparsed requests)."""
    if not result.events.height:
        return []
    counts = (result.events.select(pl.col("status").cast(pl.String).fill_null("none"))
              .group_by("status").len().sort(["len", "status"], descending=[True, False]).head(limit))
    return [(row[0], row[1]) for row in counts.iter_rows()]


def attack_type_counts(result: AnalysisResult) -> list[tuple[str, int]]:
    """Flagged clients per primary attack type (each client counted once, by its first type), most
    frequent first; 'unclassified' when a stage named none. Secondary types (a scanner's bad_bot
    user agent) would otherwise outnumber what the attackers actually did."""
    counts: dict[str, int] = {}
    for f in result.findings:
        if f.flagged:
            kind = f.attack_types[0] if f.attack_types else "unclassified"
            counts[kind] = counts.get(kind, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def country_counts(result: AnalysisResult, limit: int = 12) -> list[tuple[str, int]]:
    """Flagged clients per country (only when enrichment filled geo), most frequent first."""
    counts: dict[str, int] = {}
    for f in result.findings:
        if f.flagged and country(f):
            counts[country(f)] = counts.get(country(f), 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


def sample_requests(result: AnalysisResult, ips: list[str], per_client: int = 5) -> dict[str, list[ExampleLine]]:
    """The first ``per_client`` log lines of each client in ``ips`` (one pass over the events)."""
    if not ips or not result.events.height or result.read_lines is None:
        return {}
    rows = (result.events.lazy().with_columns(pl.col("client_ip", "source").cast(pl.String))
            .filter(pl.col("client_ip").is_in(ips))
            .sort(["source", "line_number"])
            .group_by("client_ip", maintain_order=True).head(per_client).collect())
    rows = result.read_lines(rows).select("client_ip", "source", "line_number", "raw", "rebuilt")
    samples: dict[str, list[ExampleLine]] = {}
    for ip, source, line_number, raw, rebuilt in rows.iter_rows():
        samples.setdefault(ip, []).append(ExampleLine(source, line_number, raw, rebuilt))
    return samples
