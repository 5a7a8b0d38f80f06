"""One verdict per client: anomaly score and every stage's Evidence fused into score, severity and types.

Fusion (scores 0-100, higher = more suspicious):

* the strongest *behavioural* evidence (any kind except the corroborating ones such as
  "reputation") sets a base from its severity (SEVERITY_SCORE); each further attack type adds
  TYPE_BONUS, and the Isolation Forest score adds up to ANOMALY_BONUS;
* without behavioural evidence the client scores ANOMALY_ONLY_WEIGHT x its anomaly score, plus
  corroborating evidence, capped at CORROBORATION_CAP: an unusual client or a bad reputation alone
  never reaches the medium band;
* a client whose user agent is a known crawler and that shows no attack is ``crawler`` and capped at
  CRAWLER_CAP; a crawler claim with attack evidence becomes ``bad_bot`` first.

Attack types are listed primary first: a confident (high or worse) scanner identification, then
severity, then TYPE_PRECEDENCE.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from log_analyser_core.errors import ConfigError
from log_analyser_core.parsing import events as log_events
from log_analyser_core.parsing.address import canonical
from log_analyser_core.parsing.address import parse as parse_address
from log_analyser_core.results import AttackType, Evidence, Severity
from log_analyser_core.rules.behaviour import regex_problem

SEVERITY_SCORE = {Severity.INFO: 5.0, Severity.LOW: 25.0, Severity.MEDIUM: 50.0, Severity.HIGH: 70.0,
                  Severity.CRITICAL: 85.0}
TYPE_BONUS, MAX_TYPE_BONUS = 5.0, 15.0
ANOMALY_BONUS = 10.0                 # the anomaly score's share on top of behavioural evidence
ANOMALY_ONLY_WEIGHT = 0.5            # an anomaly with no evidence reaches at most 50 (medium at >= 80)
CORROBORATING_KINDS = frozenset({"reputation"})
CORROBORATION_CAP = 35.0
CRAWLER_CAP = 15.0
CRAWLER_SHARE = 0.5                  # share of a client's requests with a crawler user agent
SCANNER_BREADTH = 3                  # this many payload/discovery families from one client = a scanner
BREADTH_SEVERITY = Severity.HIGH     # counting only confident evidence (a stray medium Sigma hit is not a family)
BREADTH_TYPES = frozenset({AttackType.SQLI, AttackType.XSS, AttackType.PATH_TRAVERSAL, AttackType.RCE,
                           AttackType.SSRF, AttackType.DIR_BRUTEFORCE})
# Most specific explanation first: a fast login brute force or content discovery also floods, so
# `dos` is what is left when nothing more specific explains the volume.
TYPE_PRECEDENCE = (AttackType.SCANNER, AttackType.RCE, AttackType.SQLI, AttackType.XSS, AttackType.PATH_TRAVERSAL,
                   AttackType.SSRF, AttackType.BRUTE_FORCE, AttackType.CREDENTIAL_STUFFING, AttackType.DIR_BRUTEFORCE,
                   AttackType.DATA_EXFILTRATION, AttackType.BAD_BOT, AttackType.PROTOCOL_VIOLATION, AttackType.DOS,
                   AttackType.CRAWLER)
CRAWLER_AGENTS = re.compile(
    r"(googlebot|google-inspectiontool|adsbot-google|bingbot|bingpreview|msnbot|yandex(bot|images)|baiduspider"
    r"|duckduckbot|applebot|slurp|sogou|petalbot|seznambot|qwantify|ahrefsbot|semrushbot|mj12bot|dotbot"
    r"|facebookexternalhit|twitterbot|linkedinbot|exabot|ia_archiver|archive\.org_bot|uptimerobot)", re.I)
INTERNAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "::1/128", "fc00::/7", "fe80::/10"))


@dataclass(frozen=True)
class Verdict:
    score: float                               # 0-100, higher = more suspicious
    attack_types: tuple[str, ...]              # AttackType values, primary first
    evidence: tuple[Evidence, ...]             # strongest first
    internal: bool = False
    allowlisted: str | None = None             # why the client is excluded, when it is


@dataclass(frozen=True)
class Allowlist:
    """Clients and requests never reported as attacks (``--allow FILE``)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    user_agents: tuple[str, ...] = ()          # regular expressions, case-insensitive
    paths: tuple[str, ...] = ()

    def network_for(self, ip: str) -> str | None:
        text = canonical(ip) if self.networks else None
        if text is None:
            return None
        address = ipaddress.ip_address(text)
        return next((str(n) for n in self.networks if address.version == n.version and address in n), None)


def load_allowlist(path: str | Path) -> Allowlist:
    """YAML with optional lists ``ips`` (addresses or CIDRs), ``user_agents`` and ``paths`` (regexes)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read allowlist: {str(exc).splitlines()[0]}", path=str(path)) from None
    if not isinstance(data, dict) or not set(data) <= {"ips", "user_agents", "paths"}:
        raise ConfigError("allowlist must be a mapping of ips, user_agents and paths", path=str(path))
    try:
        networks = tuple(_network(str(item)) for item in data.get("ips") or ())
    except ValueError as exc:
        raise ConfigError(f"allowlist: {exc}", path=str(path)) from None
    patterns = {key: tuple(str(p) for p in data.get(key) or ()) for key in ("user_agents", "paths")}
    for key, items in patterns.items():
        for pattern in items:
            if problem := regex_problem(pattern):
                raise ConfigError(f"allowlist {key}: invalid regular expression {pattern!r}: {problem}",
                                  path=str(path))
    return Allowlist(networks=networks, **patterns)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An allowlist entry: an address (canonical, see parsing.address) or a CIDR network."""
    address, slash, prefix = text.strip().partition("/")
    if canonical(address) is None:
        raise ValueError(f"{text!r} is not an IP address or network")
    return ipaddress.ip_network(f"{canonical(address)}{slash}{prefix}", strict=False)


def allowed_requests(events: pl.DataFrame, allow: Allowlist) -> tuple[pl.Series, dict[str, int]]:
    """(boolean mask of allowlisted requests, request count per 'excluded because' reason)."""
    mask = pl.Series([False] * events.height, dtype=pl.Boolean)
    counts: dict[str, int] = {}
    for column, patterns, label in (("user_agent", allow.user_agents, "user agent"), ("path", allow.paths, "path")):
        for pattern in patterns:
            hit = log_events.text_matches(events[column], "(?i)" + pattern)
            if hit.any():
                counts[f"{label} matches {pattern!r} (requests)"] = int(hit.sum())
            mask = mask | hit
    return mask, counts


def is_internal(ip: str) -> bool:
    """True for RFC 1918, carrier-grade NAT, loopback, link-local and unique-local addresses
    (analysed like any other and marked; documentation ranges such as 192.0.2.0/24 are not internal)."""
    address = parse_address(ip)
    if address is None:
        return False
    return any(address in network for network in INTERNAL_NETWORKS if network.version == address.version)


# Text an internal address can start with (canonical form: IPv4 dotted, IPv6 lower case and
# compressed): every other client is not internal without being parsed. A million distinct
# clients cost one regex over the column, not a million ipaddress objects.
_MAYBE_INTERNAL = r"(?i)^(?:10\.|172\.|192\.168\.|100\.|127\.|169\.254\.|f[c-f][0-9a-f]{2}:|[0:]*:)"


def internal_clients(ips: Sequence[str]) -> set[str]:
    """The ``ips`` (canonical text) that is_internal() holds internal, checked in one pass."""
    maybe = pl.Series(ips, dtype=pl.String).str.contains(_MAYBE_INTERNAL).fill_null(False)
    return {ip for ip, hit in zip(ips, maybe.to_list(), strict=True) if hit and is_internal(ip)}


def crawler_clients(events: pl.DataFrame) -> set[str]:
    """Clients that mostly present a known crawler user agent (CRAWLER_SHARE of their requests)."""
    if not events.height:
        return set()
    claims = log_events.text_matches(events["user_agent"], "(?i)" + CRAWLER_AGENTS.pattern)
    share = events.select("client_ip").with_columns(claims.alias("claim")).group_by("client_ip").agg(
        pl.col("claim").mean())
    return set(share.filter(pl.col("claim") >= CRAWLER_SHARE)["client_ip"].cast(pl.String))


def _type_order(item: Evidence) -> tuple:
    known = item.attack_type in TYPE_PRECEDENCE
    precedence = TYPE_PRECEDENCE.index(item.attack_type) if known else len(TYPE_PRECEDENCE)
    # a confident scanner identification (tool agent, test token, breadth) names the client first
    identity = 0 if item.attack_type == AttackType.SCANNER and item.severity >= Severity.HIGH else 1
    return identity, -int(item.severity), precedence, -item.count, item.rule_id


def _breadth(evidence: Sequence[Evidence]) -> Evidence | None:
    """A derived scanner verdict when one client tried many attack families."""
    families = sorted({e.attack_type for e in evidence
                       if e.attack_type in BREADTH_TYPES and e.severity >= BREADTH_SEVERITY})
    if len(families) < SCANNER_BREADTH:
        return None
    return Evidence(kind="verdict", rule_id="scanner-by-breadth", severity=Severity.HIGH,
                    title=f"{len(families)} attack families from one client ({', '.join(families)}): "
                          "an automated scanner", attack_type=AttackType.SCANNER, count=len(families))


def order_types(evidence: Iterable[Evidence]) -> tuple[str, ...]:
    types: list[str] = []
    for item in sorted(evidence, key=_type_order):
        if item.attack_type is not None and item.attack_type.value not in types:
            types.append(item.attack_type.value)
    return tuple(types)


# What a flood's own URIs and agents also trip (random 404 paths, rotating agents, cache busting):
# they do not explain the volume, so a confident flood is `dos` first whatever they say. A payload,
# a login attack or a confident tool identification (a scanner's or a discovery tool's user agent,
# high severity) does explain it, and stays first.
FLOOD_EXPLAINERS = frozenset({AttackType.SQLI, AttackType.XSS, AttackType.PATH_TRAVERSAL, AttackType.RCE,
                              AttackType.SSRF, AttackType.BRUTE_FORCE, AttackType.CREDENTIAL_STUFFING})
IDENTIFIED_TOOLS = frozenset({AttackType.SCANNER, AttackType.DIR_BRUTEFORCE})


def _flood_first(types: tuple[str, ...], evidence: Sequence[Evidence]) -> tuple[str, ...]:
    """``dos`` first when a high-severity flood is what explains the client (see FLOOD_EXPLAINERS)."""
    flood = any(e.attack_type == AttackType.DOS and e.severity >= Severity.HIGH for e in evidence)
    explained = any(e.attack_type in FLOOD_EXPLAINERS or (e.attack_type in IDENTIFIED_TOOLS
                                                          and e.severity >= Severity.HIGH) for e in evidence)
    if not flood or explained:
        return types
    return (AttackType.DOS.value,) + tuple(t for t in types if t != AttackType.DOS.value)


def fuse(anomaly: float, evidence: Sequence[Evidence], *, crawler: bool = False, internal: bool = False,
         allowlisted: str | None = None) -> Verdict:
    """One client's verdict from its 0-100 anomaly score and all evidence gathered about it."""
    if not evidence and not crawler:   # most clients of a big log: the score is the anomaly's alone
        return Verdict(score=round(_anomaly_only(anomaly), 1), attack_types=(), evidence=(), internal=internal,
                       allowlisted=allowlisted)
    behaviour = [e for e in evidence if e.kind not in CORROBORATING_KINDS]
    support = [e for e in evidence if e.kind in CORROBORATING_KINDS]
    derived = _breadth(behaviour)
    behaviour = behaviour + [derived] if derived else behaviour
    attacks = [e for e in behaviour if e.attack_type is not None]
    if crawler and attacks:
        behaviour.append(Evidence(kind="verdict", rule_id="crawler-claim-contradicted", severity=Severity.MEDIUM,
                                  title="claims to be a search engine crawler but behaves like an attacker",
                                  attack_type=AttackType.BAD_BOT, count=len(attacks)))
    ordered = tuple(sorted(behaviour, key=_type_order)) + tuple(sorted(support, key=_type_order))
    score = _score(anomaly, behaviour, support)
    types = _flood_first(order_types(behaviour), behaviour) if attacks or crawler else ()
    if crawler and attacks:
        types = (AttackType.BAD_BOT.value,) + tuple(t for t in types if t != AttackType.BAD_BOT.value)
    elif crawler:
        score, types = min(score, CRAWLER_CAP), (AttackType.CRAWLER.value,)
    return Verdict(score=round(score, 1), attack_types=types, evidence=ordered, internal=internal,
                   allowlisted=allowlisted)


def _score(anomaly: float, behaviour: Sequence[Evidence], support: Sequence[Evidence]) -> float:
    corroboration = max((SEVERITY_SCORE[e.severity] for e in support), default=0.0) / 4
    if not behaviour:
        return _anomaly_only(anomaly, corroboration)
    base = max(SEVERITY_SCORE[e.severity] for e in behaviour)
    types = {e.attack_type for e in behaviour if e.attack_type is not None}
    bonus = min(TYPE_BONUS * max(len(types) - 1, 0), MAX_TYPE_BONUS) + ANOMALY_BONUS * anomaly / 100
    return min(max(base + bonus + corroboration, ANOMALY_ONLY_WEIGHT * anomaly), 100.0)


def _anomaly_only(anomaly: float, corroboration: float = 0.0) -> float:
    """The score of a client with no behaviour evidence: half its anomaly score, raised by
    corroboration up to CORROBORATION_CAP."""
    return min(ANOMALY_ONLY_WEIGHT * anomaly + corroboration, max(CORROBORATION_CAP, ANOMALY_ONLY_WEIGHT * anomaly))


@dataclass(frozen=True)
class _Inputs:
    anomaly: float
    evidence: tuple[Evidence, ...]
    crawler: bool


class Judged(Mapping[str, Verdict]):
    """Verdicts by client ip, as judge() gives them: those of the clients with evidence, a crawler
    claim, an allowlisted network or an internal address made at once (``made``); every other
    client's (its anomaly score alone: nearly all of a million distinct clients) made when read.
    ``ips`` are the clients in judge()'s order; ``plain`` their scores without evidence."""

    def __init__(self, ips: Sequence[str], plain: np.ndarray, made: dict[str, Verdict], at: dict[str, int]) -> None:
        self.ips, self.plain, self.made, self.at = ips, plain, made, at   # at: the made ones' places in ips
        self._index: dict[str, int] | None = None

    def position(self, ip: str) -> int:
        """The client's place in ``ips`` (KeyError when it was not judged)."""
        if ip in self.at:
            return self.at[ip]
        if self._index is None:
            self._index = {address: k for k, address in enumerate(self.ips)}
        return self._index[ip]

    def __getitem__(self, ip: str) -> Verdict:
        found = self.made.get(ip)
        if found is not None:
            return found
        return Verdict(score=float(self.plain[self.position(ip)]), attack_types=(), evidence=())

    def __contains__(self, ip: object) -> bool:
        if ip in self.made:
            return True
        try:
            self.position(ip)   # type: ignore[arg-type]
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.ips)

    def __len__(self) -> int:
        return len(self.ips)


@dataclass(frozen=True)
class Verdicts:
    by_ip: Mapping[str, Verdict] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)   # 'excluded because' reason -> count
    inputs: dict[str, _Inputs] = field(default_factory=dict)   # of the verdicts made at once (Judged.made)
    anomaly: Mapping[str, float] | None = None    # every client's anomaly score, when judged from evidence

    def rejudge(self, ip: str, more: Sequence[Evidence]) -> Verdict:
        """The client's verdict with later stages' evidence (e.g. reputation) added."""
        before = self.by_ip[ip]
        if not more or before.allowlisted:
            return before
        given = self.inputs.get(ip)
        if given is None:   # judged on its anomaly score alone
            assert self.anomaly is not None, "verdicts judged without evidence are not judged again"
            given = _Inputs(self.anomaly[ip], (), False)
        return fuse(given.anomaly, [*given.evidence, *more], crawler=given.crawler, internal=before.internal)

    def columns(self, ips: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ``ips``: each verdict's score, whether it is allowlisted, and whether it adds anything
        to its client's Finding (evidence, types, internal, allowlisted), as arrays."""
        by_ip = self.by_ip
        if isinstance(by_ip, Judged) and (ips is by_ip.ips or list(ips) == list(by_ip.ips)):
            scores, allowed = by_ip.plain.copy(), np.zeros(len(ips), dtype=bool)
            adds = np.zeros(len(ips), dtype=bool)
            for ip, judged in by_ip.made.items():
                k = by_ip.at[ip]
                scores[k], allowed[k], adds[k] = judged.score, judged.allowlisted is not None, adds_to(judged)
            return scores, allowed, adds
        judged_all = [by_ip[ip] for ip in ips]
        return (np.array([v.score for v in judged_all], dtype=np.float64),
                np.array([v.allowlisted is not None for v in judged_all], dtype=bool),
                np.array([adds_to(v) for v in judged_all], dtype=bool))

    def notable(self) -> Mapping[str, Verdict]:
        """The verdicts that may add to their client's Finding (adds_to): those Judged made at once,
        or every one."""
        return self.by_ip.made if isinstance(self.by_ip, Judged) else self.by_ip


def adds_to(judged: Verdict) -> bool:
    """Whether the verdict changes its client's Finding: evidence, attack types, an internal address
    or an allowlisted network."""
    return bool(judged.evidence or judged.attack_types or judged.internal or judged.allowlisted)


class _Anomaly(Mapping[str, float]):
    """Each judged client's anomaly score, looked up through Judged's positions."""

    def __init__(self, judged: Judged, anomaly: np.ndarray) -> None:
        self.judged, self.scores = judged, anomaly

    def __getitem__(self, ip: str) -> float:
        return float(self.scores[self.judged.position(ip)])

    def __iter__(self) -> Iterator[str]:
        return iter(self.judged.ips)

    def __len__(self) -> int:
        return len(self.judged.ips)


def _allowlisted(ips: Sequence[str], allow: Allowlist | None) -> tuple[list[str | None], dict[str, int]]:
    """Each client's allowlisted network (None when it is not in one), and the clients counted per network."""
    networks = [allow.network_for(ip) if allow else None for ip in ips]
    excluded: dict[str, int] = {}
    for network in networks:
        if network:
            key = f"ip in {network} (clients)"
            excluded[key] = excluded.get(key, 0) + 1
    return networks, excluded


def judge(ips: Sequence[str], anomaly: Sequence[float], evidence: dict[str, list[Evidence]],
          crawlers: set[str], allow: Allowlist | None = None) -> Verdicts:
    """Verdicts for every client (``ips`` and ``anomaly`` aligned); allowlisted clients keep a verdict
    (their evidence is dropped and they are never flagged) and are counted per network. A client
    with nothing but its anomaly score gets ``round(ANOMALY_ONLY_WEIGHT * anomaly, 1)``, computed
    for all such clients at once (Judged)."""
    networks, excluded = _allowlisted(ips, allow) if allow else ([], {})
    internal = internal_clients(ips)
    values = np.asarray(anomaly, dtype=np.float64)
    special = set(evidence) | set(crawlers) | internal
    if allow:
        special |= {ip for ip, network in zip(ips, networks, strict=True) if network}
    made: dict[str, Verdict] = {}
    inputs: dict[str, _Inputs] = {}
    at: dict[str, int] = {}
    if special:
        for k, ip in enumerate(ips):
            if ip not in special:
                continue
            at[ip] = k
            network = networks[k] if allow else None
            given = inputs[ip] = _Inputs(float(values[k]), tuple([] if network else evidence.get(ip, [])),
                                         ip in crawlers)
            made[ip] = fuse(given.anomaly, given.evidence, crawler=given.crawler, internal=ip in internal,
                            allowlisted=network)
    # fuse()'s score of a client without evidence: min(w * a, max(cap, w * a)) is w * a, rounded
    plain = round_like_python(ANOMALY_ONLY_WEIGHT * values + 0.0)   # + 0.0: as in fuse(), -0.0 is 0.0
    judged = Judged(ips, plain, made, at)
    return Verdicts(by_ip=judged, excluded=excluded, inputs=inputs, anomaly=_Anomaly(judged, values))


def round_like_python(values: np.ndarray, digits: int = 1) -> np.ndarray:
    """``round(x, digits)`` of each value, as Python rounds (the decimal nearest the float, then the
    float nearest that): NumPy's multiply-and-round agrees except near a half, or where the product
    is too big to be exact to a millionth; those few are rounded by Python."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.round(values, digits)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values * 10.0 ** digits
        doubtful = ~(np.abs(scaled) < 1e9) | (np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-6)
    at = np.flatnonzero(doubtful)
    rounded[at] = [round(float(x), digits) for x in values[at]]
    return rounded


def anomaly_only(ips: Sequence[str], anomaly: Sequence[float], allow: Allowlist | None = None) -> Verdicts:
    """Verdicts when only the per-client table is known, not the requests (``--engine spark``): the
    score is the 0-100 anomaly score unchanged, as there is no evidence to weigh it against. Internal
    addresses are marked and the allowlist's networks apply as in judge(); its user-agent and path
    patterns match single requests and cannot. Such verdicts are not rejudged (no ``inputs``)."""
    networks, excluded = _allowlisted(ips, allow)
    internal = internal_clients(ips)
    by_ip = {ip: Verdict(score=float(score), attack_types=(), evidence=(), internal=ip in internal,
                         allowlisted=network) for ip, score, network in zip(ips, anomaly, networks, strict=True)}
    return Verdicts(by_ip=by_ip, excluded=excluded)
