"""The result vocabulary: what the pipeline returns and every report writer reads.

Severities, the attack-type taxonomy, the evidence a stage attaches to a client (which rule, how
often, and example log lines), one ``Finding`` per client, the run's ``Summary`` and the whole
``AnalysisResult``. Writers import this module and nothing of the pipeline.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, overload

if TYPE_CHECKING:   # annotations only: the vocabulary does not load Polars
    import polars as pl

# 1.1: contributions, explanation (and the optional stages' fields); 1.2: examples' rebuilt;
# 1.3: the summary's not_access and recovered
SCHEMA_VERSION = "1.3"


class Severity(enum.IntEnum):
    """Finding severities, ordered so that comparisons mean 'at least as severe'."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of {names})") from None


class AttackType(enum.StrEnum):
    """One taxonomy, used in JSON ``attack_types``, CSV, reports and evaluation."""

    SQLI = "sqli"
    XSS = "xss"
    PATH_TRAVERSAL = "path_traversal"
    RCE = "rce"                          # command injection, RCE/CVE exploit probes, log4shell
    SCANNER = "scanner"                  # vulnerability scanners
    DIR_BRUTEFORCE = "dir_bruteforce"    # content discovery
    BRUTE_FORCE = "brute_force"          # many login attempts from one client
    CREDENTIAL_STUFFING = "credential_stuffing"
    DOS = "dos"                          # request floods
    BAD_BOT = "bad_bot"                  # scrapers, secret-file probes, fake crawlers
    DATA_EXFILTRATION = "data_exfiltration"
    SSRF = "ssrf"                        # server-side request forgery (URLs of internal or metadata hosts)
    PROTOCOL_VIOLATION = "protocol_violation"   # malformed or evasive HTTP (CRS protocol enforcement)
    CRAWLER = "crawler"                  # well-behaved known crawlers: not attackers


# Shown wherever an example line is not the logged text (the writers mark it; see ExampleLine.rebuilt).
REBUILT_MARK = "rebuilt"
REBUILT_NOTE = ("not the logged line: rebuilt in combined format from the parsed fields, because its input could "
                "not be read again (standard input, or a file no longer at that path); times are written "
                "at offset +0000, and fields the log's format has beyond the combined ones are not shown")


@dataclass(frozen=True)
class ExampleLine:
    """A log line that supports a piece of evidence, with where it came from.

    ``rebuilt`` is True when ``raw`` is not the logged text but a combined-format line rebuilt from
    the event's parsed fields (``log_input.rebuilt_line``), as for lines read from standard input.
    """

    source: str
    line_number: int
    raw: str
    rebuilt: bool = False


@dataclass(frozen=True)
class Evidence:
    """One detection stage's finding about one client.

    ``kind`` names the stage ("rule", "signature", "sigma", "reputation", ...); ``rule_id`` and
    ``title`` identify what matched; ``count`` is how many requests matched.
    """

    kind: str
    rule_id: str
    title: str
    severity: Severity
    attack_type: AttackType | None
    count: int
    examples: tuple[ExampleLine, ...] = ()
    tags: tuple[str, ...] = ()
    matched: str | None = None   # the value that matched (clipped), where the stage records it (CRS)


@dataclass(frozen=True)
class Reputation:
    """What a reputation service says of an address. ``status`` is "ok" when the lookup
    answered; "unknown" (failed lookup: never a score of 0) or "skipped" (not looked up)."""

    status: str
    abuse_score: int | None = None       # 0-100 abuse confidence
    total_reports: int | None = None
    last_reported: str | None = None     # ISO 8601
    usage_type: str | None = None
    isp: str | None = None
    domain: str | None = None
    is_tor: bool | None = None
    detail: str | None = None            # why it is unknown or skipped


@dataclass(frozen=True)
class Geo:
    """Offline country and network owner of an address; fields are None when unknown."""

    country: str | None = None           # ISO 3166-1 alpha-2
    asn: int | None = None
    as_org: str | None = None


@dataclass(frozen=True)
class LLMNote:
    """A language model's advisory note on a finding. It never changes a score, flag or
    severity; ``status`` says whether the answer was valid ("ok") or why it was set aside."""

    status: str
    model: str
    summary: str | None = None
    attack_type: str | None = None
    severity: str | None = None
    confidence: float | None = None
    recommended_actions: tuple[str, ...] = ()
    detail: str | None = None            # why the answer was set aside or is missing


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
    internal: bool = False                      # a private, loopback or link-local address
    detector_scores: dict[str, float] = field(default_factory=dict)
    contributions: dict[str, tuple[Contribution, ...]] = field(default_factory=dict)  # per detector, flagged only
    explanation: tuple[str, ...] = ()           # the contributions as sentences
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
    excluded: dict[str, int] = field(default_factory=dict)   # allowlist: 'excluded because' -> count
    enrichment: EnrichmentSummary | None = None    # only when enrichment ran
    tz: str = "UTC"   # the zone (--tz) human-facing reports show times in; every datetime here stays UTC
    not_access: dict[str, int] = field(default_factory=dict)   # lines that are not access lines, by kind
    recovered: int = 0   # parsed lines read by the second pass (quotes inside quoted fields)

    @property
    def unparsed_lines(self) -> int:
        """Lines that should have parsed and did not (blank, header and error-log lines are not)."""
        return self.total_lines - self.parsed_lines - sum(self.not_access.values())


@dataclass(frozen=True)
class FeatureInfo:
    """What a per-client feature means, for readers of a report (the registry is features/client.py)."""

    name: str
    unit: str
    description: str


# Log lines read back for a few events: the frame with String ``raw`` and Boolean ``rebuilt``
# columns added (parsing.sources.with_raw). Writers call it through the result, so that they
# need no parser of their own.
LineReader = Callable[["pl.DataFrame"], "pl.DataFrame"]   # strings: Polars is not loaded here


class QuietFinding(NamedTuple):
    """A quiet client's Finding as its fields: not flagged, no reasons, deviations, evidence or
    contributions, not internal, not enriched or explained (a tuple costs a fraction of the object)."""

    ip: str
    rank: int
    score: float
    severity: Severity
    requests: int
    errors: int
    first_seen: datetime
    last_seen: datetime
    detector_scores: dict[str, float]
    features: dict[str, float | None]

    def finding(self) -> Finding:
        return Finding(ip=self.ip, rank=self.rank, flagged=False, score=self.score, severity=self.severity,
                       requests=self.requests, errors=self.errors, first_seen=self.first_seen,
                       last_seen=self.last_seen, reasons=(), deviations=(), detector_scores=self.detector_scores,
                       features=self.features)


class Findings(Sequence[Finding]):
    """Every client's Finding in rank order, most of them made only when read.

    ``loud`` holds, by position (0 = rank 1), the findings made at once: the flagged clients and
    those whose verdict adds to their finding. ``make(positions)`` gives the others at those
    ascending positions, each the one an eager run would have made: a quiet client (not flagged,
    no evidence, no deviation: nearly every one of a million distinct clients) as a QuietFinding
    tuple, one that deviates from the typical client as a Finding with its reasons. A slice is a
    tuple; two sequences of findings compare equal when their findings do, in order. Writers may
    read ``parts`` instead: the quiet ones stay tuples; or ``rows(start, stop)``, when given: the
    findings between those positions that are not in ``loud`` as one Polars frame, a column per
    value: ``_position`` (0 = rank 1), ``_client_ip``, ``_rank``, ``_score``, ``_severity`` (its
    label), ``_requests``, ``_errors``, ``_first_seen``, ``_last_seen``, ``_detector:<name>`` for
    each detector score in order, then the features in order; with the reasons and deviations of
    those that deviate, by position (the others have none).
    """

    CHUNK = 4096   # findings made at once while iterating

    def __init__(self, size: int, loud: dict[int, Finding],
                 make: Callable[[list[int]], list[QuietFinding | Finding]],
                 rows: Callable[[int, int], tuple[pl.DataFrame, dict[int, tuple[tuple[str, ...], tuple]]]] | None
                 = None) -> None:
        self._size, self.loud, self._make, self.rows = size, loud, make, rows

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> Finding: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Finding, ...]: ...

    def __getitem__(self, index: int | slice) -> Finding | tuple[Finding, ...]:
        if isinstance(index, slice):
            return self._made(range(self._size)[index])
        position = range(self._size)[index]   # IndexError as a tuple's, negative indices too
        found = self.loud.get(position)
        if found is not None:
            return found
        made = self._make([position])[0]
        return made if isinstance(made, Finding) else made.finding()

    def __iter__(self) -> Iterator[Finding]:
        for start in range(0, self._size, self.CHUNK):
            yield from self._made(range(start, min(start + self.CHUNK, self._size)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None   # type: ignore[assignment]   # like a list's: equality is by content

    def __repr__(self) -> str:
        return f"Findings({self._size} clients, {len(self.loud)} not quiet)"

    def flagged(self) -> list[Finding]:
        """The flagged findings in rank order (all of them loud: none is made)."""
        return [self.loud[k] for k in sorted(self.loud) if self.loud[k].flagged]

    def parts(self, start: int, stop: int) -> list[Finding | QuietFinding]:
        """The findings from position ``start`` to ``stop``: those not made at once as ``make`` gives
        them (a quiet one as a QuietFinding tuple)."""
        positions = range(start, min(stop, self._size))
        quiet = [k for k in positions if k not in self.loud]
        made = iter(self._make(quiet) if quiet else ())
        return [self.loud[k] if k in self.loud else next(made) for k in positions]

    def _made(self, positions: range) -> tuple[Finding, ...]:
        return tuple(f if isinstance(f, Finding) else f.finding()
                     for f in (self.parts(positions.start, positions.stop) if positions.step == 1
                               else [self[k] for k in positions]))


def flagged_findings(findings: Sequence[Finding]) -> list[Finding]:
    """The flagged findings in rank order, without making a lazy sequence's quiet ones."""
    if isinstance(findings, Findings):
        return findings.flagged()
    return [f for f in findings if f.flagged]


@dataclass(frozen=True)
class AnalysisResult:
    summary: Summary
    findings: Sequence[Finding]     # every client once, highest score first, then by IP (a tuple or Findings)
    features: pl.DataFrame          # one row per client (ip_features.compute)
    unparsed: pl.DataFrame          # file_parser.UNPARSED_SCHEMA
    events: pl.DataFrame            # file_parser.EVENT_SCHEMA
    feature_info: tuple[FeatureInfo, ...] = ()   # what each feature column of ``features`` means, in registry order
    read_lines: LineReader | None = field(default=None, repr=False, compare=False)

    def at_least(self, severity: Severity) -> list[Finding]:
        """Flagged findings whose severity is ``severity`` or worse."""
        return [f for f in flagged_findings(self.findings) if f.severity >= severity]


@dataclass(frozen=True)
class Deviation:
    """How far one client's feature lies above the site's typical client."""

    feature: str
    value: float
    typical: float
    z: float      # robust z-score: (value - median) / max(1.4826 * MAD, floor), log scale if heavy-tailed


@dataclass(frozen=True)
class Contribution:
    """One feature's part in a detector's score for one client.

    ``contribution`` is in the detector's own unit (forest: path length removed, in splits;
    autoencoder: squared reconstruction error of the scaled feature); ``share`` is its fraction of
    the client's positive contributions (0-1). Higher = pushed the client towards anomalous.
    """

    feature: str
    value: float
    typical: float
    contribution: float
    share: float


@dataclass(frozen=True)
class EnrichmentSummary:
    """Run-level enrichment facts for the report: how lookups went, and clients by country and ASN."""

    status: str                       # ok | partial | unavailable | skipped (no API key)
    lookups: int                      # AbuseIPDB requests answered this run
    cache_hits: int
    by_status: dict[str, int]         # reputation status -> clients
    stopped: str | None               # why lookups stopped early
    quota_reset: datetime | None
    geo_source: str
    by_country: tuple[dict[str, object], ...]   # {country, clients, flagged, requests}, most flagged first
    by_asn: tuple[dict[str, object], ...]       # {asn, as_org, clients, flagged, requests}
    reputation_source: str = "abuseipdb"
