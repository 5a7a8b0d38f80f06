"""Who each client is: AbuseIPDB reputation (cached in SQLite) and offline country and ASN.

Reputation comes from AbuseIPDB's API v2 ``GET {base_url}/check``. Only public addresses are
sent, flagged clients first and then the rest by rank, at most ``max_lookups`` a run (cache hits
do not count), a few at a time. A lookup that fails for any reason is ``unknown``: never a score of
0, and never cached. A 401 or 429 stops the lookups for the rest of the run (the 429 with the time
the quota resets); so do repeated connection failures.

The API key is sent in the ``Key`` header and nowhere else: it is not logged, cached or reported.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from log_analyser_core.enrich.cache import CacheStore, KeyValueCache
from log_analyser_core.enrich.geolocation import build_locator, is_public, locate_all
from log_analyser_core.errors import ConfigError
from log_analyser_core.results import EnrichmentSummary, Evidence, Geo, Reputation, Severity

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.abuseipdb.com/api/v2"
NAMESPACE = "abuseipdb"
FREE_TIER_DAILY_CHECKS = 1000
UNREACHABLE_AFTER = 3          # consecutive connection failures before giving up for the run
RETRY_STATUSES = frozenset({500, 502, 503, 504})
TEXT_FIELD_CHARS = 200         # longest ISP, domain or usage type kept from an answer


@dataclass(frozen=True)
class EnrichmentSettings:
    """How to enrich; built once by the CLI. Times in seconds."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    max_age_days: int = 90           # AbuseIPDB's maxAgeInDays: reports of the last N days (1-365)
    max_lookups: int = FREE_TIER_DAILY_CHECKS   # network lookups per run; cache hits are free
    concurrency: int = 4             # requests in flight at once
    timeout: float = 10.0            # connect and read timeout of one request (each network read)
    request_deadline: float = 30.0   # one request's whole time, body included (a trickling server)
    deadline: float = 300.0          # the whole run's lookups; those not done by then are skipped
    max_body_bytes: int = 64 * 1024  # a /check answer is under 1 KiB; a larger one is refused
    retries: int = 3                 # on 5xx answers, timeouts and dropped connections
    backoff: float = 0.5             # urllib3 backoff factor: retries at once, then after 1 s, 2 s, ...
    cache_path: Path | None = None   # None: the user cache directory
    cache_ttl: float = 86_400.0
    refresh: bool = False            # ignore cached answers (fresh ones are still stored)
    geoip_dbs: tuple[str, ...] = ()  # MaxMind .mmdb files, asked before geoip2fast
    evidence_min_score: int = 50     # abuse confidence that becomes reputation evidence


class LookupStopped(Exception):
    """Raised by a check to stop all lookups for the rest of the run."""

    def __init__(self, reason: str, reputation: Reputation, reset_at: datetime | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reputation = reputation
        self.reset_at = reset_at


class ConnectionFailed(Exception):
    """One request got no answer at all (refused, unresolvable, timed out); enough of them in a
    row and the service is taken to be unreachable for the rest of the run."""


class ReputationService(Protocol):
    def check(self, ip: str) -> Reputation: ...


def _unknown(detail: str) -> Reputation:
    return Reputation(status="unknown", detail=detail)


def _reset_time(headers: Mapping[str, str], now: float) -> datetime | None:
    """When the quota resets: ``X-RateLimit-Reset`` (epoch seconds) or ``Retry-After`` (seconds or a date)."""
    reset, retry_after = headers.get("X-RateLimit-Reset"), headers.get("Retry-After")
    try:
        if reset:
            return datetime.fromtimestamp(float(reset), UTC)
        if retry_after and retry_after.strip().isdigit():
            return datetime.fromtimestamp(now + int(retry_after), UTC)
        if retry_after:
            return parsedate_to_datetime(retry_after).astimezone(UTC)
    except (ValueError, OverflowError, TypeError):
        log.debug("unreadable rate-limit headers: %r / %r", reset, retry_after)
    return None


def _error_detail(body: bytes) -> str | None:
    try:
        errors = json.loads(body)["errors"]
        return str(errors[0]["detail"])[:200]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def parse_check(body: bytes) -> Reputation:
    """A Reputation from a 200 answer's body; ``unknown`` when the body is not the documented shape."""
    try:
        data = json.loads(body)["data"]
        score = data["abuseConfidenceScore"]
    except (ValueError, KeyError, TypeError):
        return _unknown("malformed answer from AbuseIPDB")
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 100:
        return _unknown("malformed answer from AbuseIPDB")

    def text(name: str) -> str | None:   # clipped: an answer's strings reach every report and the cache
        value = data.get(name)
        return value[:TEXT_FIELD_CHARS] if isinstance(value, str) and value else None
    reports = data.get("totalReports")
    tor = data.get("isTor")
    return Reputation(status="ok", abuse_score=score, total_reports=reports if isinstance(reports, int) else None,
                      last_reported=text("lastReportedAt"), usage_type=text("usageType"), isp=text("isp"),
                      domain=text("domain"), is_tor=tor if isinstance(tor, bool) else None)


def _proxy_for(url: str) -> str | None:
    """The proxy from ``https_proxy`` / ``http_proxy`` for ``url``, unless ``no_proxy`` or loopback exempts it."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    host = parts.hostname or ""
    if not proxy or host == "localhost" or host.startswith("127.") or host == "::1":
        return None
    return None if urllib.request.proxy_bypass(host) else proxy


class AbuseIPDBClient:
    """AbuseIPDB API v2 over a requests Session with urllib3's Retry mounted: retries with
    exponential backoff on 5xx, timeouts and dropped connections; a connection pool of
    ``concurrency`` sockets shared by the worker threads."""

    def __init__(self, settings: EnrichmentSettings, clock: Callable[[], float] = time.time) -> None:
        if not settings.api_key:
            raise ValueError("AbuseIPDBClient needs an API key")
        self._url = settings.base_url.rstrip("/") + "/check"
        self._max_age = str(settings.max_age_days)
        self._clock = clock
        self._timeout = (settings.timeout, settings.timeout)   # connect, read
        # Retry-After is not obeyed: a 503 saying "come back tomorrow" must not hang the run.
        retry = Retry(total=settings.retries, connect=min(1, settings.retries), other=0, allowed_methods={"GET"},
                      status_forcelist=RETRY_STATUSES, backoff_factor=settings.backoff, backoff_max=30,
                      respect_retry_after_header=False, raise_on_status=False)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(1, settings.concurrency), pool_block=True,
                              max_retries=retry)
        self._session = requests.Session()
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update({"Key": settings.api_key, "Accept": "application/json",
                                      "User-Agent": "log_analyser (+reputation lookups)"})
        # The proxy is chosen here (loopback never goes through one); None stops requests taking the
        # environment's proxy for a scheme anyway.
        proxy = _proxy_for(self._url)
        self._proxies: dict[str, str | None] = {"http": proxy, "https": proxy}
        self._request_deadline = settings.request_deadline
        self._max_body = settings.max_body_bytes
        self.ends_at: float | None = None   # time.monotonic() after which no request may run on

    def check(self, ip: str) -> Reputation:
        """AbuseIPDB's view of one public address; raises LookupStopped on 401/403, 429 and when
        the service cannot be reached; any other failure is an ``unknown`` Reputation."""
        try:
            response = self._session.get(self._url, params={"ipAddress": ip, "maxAgeInDays": self._max_age},
                                         timeout=self._timeout, allow_redirects=False, stream=True,
                                         proxies=self._proxies)  # type: ignore[arg-type]
        except requests.RequestException as exc:
            return self._failed(_cause(exc))
        try:
            body = self._body(response)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            return self._failed(exc)
        finally:
            response.close()
        return self._answer(response, body) if isinstance(body, bytes) else body

    def _body(self, response: requests.Response) -> bytes | Reputation:
        """The body, read as it arrives: an ``unknown`` Reputation instead when it is larger than
        max_body_bytes or still arriving at the deadline (each read's timeout never fires on a
        server that sends one byte every few seconds)."""
        ends = time.monotonic() + self._request_deadline
        if self.ends_at is not None:
            ends = min(ends, self.ends_at)
        data = bytearray()
        while chunk := response.raw.read1(self._max_body + 1):
            data += chunk
            if len(data) > self._max_body:
                return _unknown(f"AbuseIPDB answer larger than {self._max_body:,} bytes")
            if time.monotonic() > ends:
                return _unknown(f"AbuseIPDB answer not complete within {self._request_deadline:g} s")
        return bytes(data)

    def _failed(self, reason: BaseException | None) -> Reputation:
        # NewConnectionError is a subclass of ConnectTimeoutError: test it first
        if isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.NameResolutionError):
            raise ConnectionFailed(f"AbuseIPDB could not be reached ({type(reason).__name__})")
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            raise ConnectionFailed("AbuseIPDB timed out")
        return _unknown(f"AbuseIPDB request failed ({type(reason).__name__})")

    def _answer(self, response: requests.Response, body: bytes) -> Reputation:
        status = response.status_code
        if status == 200:
            return parse_check(body)
        detail = _error_detail(body)
        if status in (401, 403):
            raise LookupStopped(f"AbuseIPDB rejected the API key (HTTP {status})", _unknown(f"HTTP {status}"))
        if status == 429:
            reset = _reset_time(response.headers, self._clock())
            when = f"; resets at {reset:%Y-%m-%d %H:%M} UTC" if reset else ""
            raise LookupStopped(f"AbuseIPDB daily quota exhausted (HTTP 429{when})", _unknown("HTTP 429"), reset)
        return _unknown(f"HTTP {status}" + (f": {detail}" if detail else ""))


def _cause(exc: requests.RequestException) -> BaseException:
    """The urllib3 error under a requests exception (requests wraps it, often inside MaxRetryError)."""
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner if isinstance(inner, BaseException) else exc


@dataclass(frozen=True)
class ReputationReport:
    reputations: dict[str, Reputation]   # every address asked about, in priority order
    lookups: int                         # requests that got an answer
    cache_hits: int
    stopped: str | None = None           # why lookups stopped early, if they did
    quota_reset: datetime | None = None


def _cache_key(ip: str, settings: EnrichmentSettings) -> str:
    return f"{ip}|maxAgeInDays={settings.max_age_days}"


def _to_cache(rep: Reputation) -> dict[str, object]:
    return {"abuse_score": rep.abuse_score, "total_reports": rep.total_reports, "last_reported": rep.last_reported,
            "usage_type": rep.usage_type, "isp": rep.isp, "domain": rep.domain, "is_tor": rep.is_tor}


_CACHED_TEXT = ("last_reported", "usage_type", "isp", "domain")


def _from_cache(value: object) -> Reputation | None:
    """A cached reputation, each field checked for its type and range (the file is the user's and
    may have been edited or written by an older version); None, a miss, when any field is wrong."""
    if not isinstance(value, dict) or set(value) - {"abuse_score", "total_reports", "is_tor", *_CACHED_TEXT}:
        return None
    score, reports, tor = value.get("abuse_score"), value.get("total_reports"), value.get("is_tor")
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 100:
        return None
    if not (reports is None or _is_int(reports) and reports >= 0) or not isinstance(tor, bool | None):
        return None
    texts = {name: value.get(name) for name in _CACHED_TEXT}
    if not all(isinstance(text, str | None) for text in texts.values()):
        return None
    clipped = {name: text[:TEXT_FIELD_CHARS] if text else None for name, text in texts.items()}
    return Reputation(status="ok", abuse_score=score, total_reports=reports, is_tor=tor, **clipped)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Batch:
    """Lookups for a list of addresses on a few threads; the first LookupStopped ends the batch."""

    def __init__(self, service: ReputationService, concurrency: int, deadline: float | None = None) -> None:
        self.service = service
        self.concurrency = max(1, concurrency)
        self.deadline = deadline
        self.ends_at = time.monotonic() + deadline if deadline is not None else None
        if self.ends_at is not None and isinstance(service, AbuseIPDBClient):
            service.ends_at = self.ends_at
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stopped: LookupStopped | None = None
        self.failures = 0
        self.answered = 0

    def run(self, ips: Sequence[str]) -> dict[str, Reputation]:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="abuseipdb") as pool:
            results = list(pool.map(self._one, ips))
        return {ip: rep for ip, rep in zip(ips, results, strict=True) if rep is not None}

    def _one(self, ip: str) -> Reputation | None:
        if self.stop.is_set():
            return None
        if self.ends_at is not None and time.monotonic() > self.ends_at:
            self._halt(LookupStopped(f"the enrichment deadline ({self.deadline:g} s) passed",
                                     _unknown("enrichment deadline")))
            return None
        try:
            rep = self.service.check(ip)
        except LookupStopped as exc:
            self._halt(exc)
            return exc.reputation
        except ConnectionFailed as exc:
            return self._connection_failed(exc)
        with self.lock:
            self.failures = 0
            self.answered += rep.status == "ok"
        return rep

    def _halt(self, exc: LookupStopped) -> None:
        with self.lock:
            if self.stopped is None:
                self.stopped = exc
            self.stop.set()

    def _connection_failed(self, exc: ConnectionFailed) -> Reputation:
        with self.lock:
            self.failures += 1
            give_up = self.failures >= UNREACHABLE_AFTER
        if give_up:
            self._halt(LookupStopped(f"{exc} {UNREACHABLE_AFTER} times in a row", _unknown(str(exc))))
        return _unknown(str(exc))


def lookup_reputations(ips: Sequence[str], settings: EnrichmentSettings, cache: KeyValueCache | None = None,
                       service: ReputationService | None = None) -> ReputationReport:
    """Reputation for ``ips`` (in priority order: flagged first, then by rank).

    Private and reserved addresses are ``skipped`` and never sent; so is everything when there is
    no API key, and everything past ``max_lookups`` that is not in the cache.
    """
    reputations: dict[str, Reputation] = {}
    to_ask: list[str] = []
    hits = 0
    for ip in ips:
        public = is_public(ip)
        cached = None if settings.refresh or cache is None or not public else \
            _from_cache(cache.get(NAMESPACE, _cache_key(ip, settings)))
        if not public:
            reputations[ip] = Reputation(status="skipped", detail="private or reserved address, never sent")
        elif cached is not None:
            reputations[ip], hits = cached, hits + 1
        elif not settings.api_key:
            reputations[ip] = Reputation(status="skipped", detail="no AbuseIPDB API key")
        elif len(to_ask) < settings.max_lookups:
            to_ask.append(ip)
        else:
            reputations[ip] = Reputation(status="skipped", detail=f"beyond --max-lookups {settings.max_lookups}")
    batch = _Batch(service or AbuseIPDBClient(settings), settings.concurrency, settings.deadline) if to_ask else None
    answers = batch.run(to_ask) if batch else {}
    stopped = batch.stopped if batch else None
    for ip in to_ask:
        rep = answers.get(ip) or Reputation(status="skipped", detail=stopped.reason if stopped else "not asked")
        reputations[ip] = rep
        if rep.status == "ok" and cache is not None:
            cache.put(NAMESPACE, _cache_key(ip, settings), _to_cache(rep), settings.cache_ttl)
    return ReputationReport(reputations=reputations, lookups=batch.answered if batch else 0, cache_hits=hits,
                            stopped=stopped.reason if stopped else None,
                            quota_reset=stopped.reset_at if stopped else None)


def reputation_evidence(rep: Reputation | None, requests: int, min_score: int = 50) -> Evidence | None:
    """Evidence for an abuse confidence of ``min_score`` or more: medium below 75, high from 75.

    It is corroboration, not proof: the fusion must never flag a client on reputation alone.
    ``count`` is the client's request count (every request came from the reported address).
    """
    if rep is None or rep.status != "ok" or rep.abuse_score is None or rep.abuse_score < min_score:
        return None
    reports = f", {rep.total_reports:,} reports" if rep.total_reports is not None else ""
    tags = ("abuseipdb",) + (("tor",) if rep.is_tor else ())
    return Evidence(kind="reputation", rule_id="abuseipdb.abuse_confidence",
                    title=f"AbuseIPDB abuse confidence {rep.abuse_score}%{reports}",
                    severity=Severity.HIGH if rep.abuse_score >= 75 else Severity.MEDIUM,
                    attack_type=None, count=requests, tags=tags)


@dataclass(frozen=True)
class Enrichment:
    """What enrichment found, by client IP, for analysis to attach to the findings."""

    reputation: dict[str, Reputation]
    geo: dict[str, Geo]
    evidence: dict[str, tuple[Evidence, ...]]
    report: ReputationReport
    geo_source: str
    notes: tuple[str, ...]


class Client(Protocol):
    """The parts of a Finding that enrichment reads (read-only: Findings are frozen)."""

    @property
    def ip(self) -> str: ...
    @property
    def rank(self) -> int: ...
    @property
    def flagged(self) -> bool: ...
    @property
    def requests(self) -> int: ...


def enrich(findings: Sequence[Client], settings: EnrichmentSettings, cache: KeyValueCache | None = None,
           service: ReputationService | None = None) -> Enrichment:
    """Geography for every client and reputation in priority order (flagged first, then by rank)."""
    locator = build_locator(settings.geoip_dbs)
    geo = locate_all((f.ip for f in findings), locator)
    order = [f.ip for f in sorted(findings, key=lambda f: (not f.flagged, f.rank))]
    owned = cache is None and settings.api_key is not None
    cache = CacheStore(settings.cache_path) if owned else cache
    try:
        report = lookup_reputations(order, settings, cache, service)
    finally:
        if owned and isinstance(cache, CacheStore):
            cache.close()
    evidence: dict[str, tuple[Evidence, ...]]
    evidence = {f.ip: (e,) for f in findings
                if (e := reputation_evidence(report.reputations.get(f.ip), f.requests, settings.evidence_min_score))}
    return Enrichment(reputation=report.reputations, geo=geo, evidence=evidence, report=report,
                      geo_source=locator.description, notes=_notes(report, settings))


def _notes(report: ReputationReport, settings: EnrichmentSettings) -> tuple[str, ...]:
    counts = Counter(rep.status for rep in report.reputations.values())
    if not settings.api_key:
        return ("AbuseIPDB lookups skipped: no API key (set ABUSEIPDB_API_KEY, add it to a .env file, "
                "or use --api-key-file)",)
    notes = []
    if report.stopped:
        notes.append(f"{report.stopped}: no reputation for {counts['unknown'] + _not_asked(report)} clients")
    elif counts["unknown"]:
        notes.append(f"AbuseIPDB lookups failed for {counts['unknown']} clients: their reputation is unknown")
    return tuple(notes)


def _not_asked(report: ReputationReport) -> int:
    return sum(rep.status == "skipped" and rep.detail == report.stopped for rep in report.reputations.values())


class EnrichedClient(Client, Protocol):
    @property
    def geo(self) -> Geo | None: ...
    @property
    def reputation(self) -> Reputation | None: ...


def _status(report: ReputationReport, counts: Counter[str], has_key: bool) -> str:
    if not has_key:
        return "skipped"
    if (counts["unknown"] or report.stopped) and not (report.lookups or report.cache_hits):
        return "unavailable"
    return "partial" if counts["unknown"] or report.stopped else "ok"


def _rollup(findings: Sequence[EnrichedClient], key: Callable[[Geo], tuple]) -> list[tuple[tuple, dict[str, int]]]:
    groups: dict[tuple, dict[str, int]] = {}
    for f in findings:
        group = groups.setdefault(key(f.geo or Geo()), {"clients": 0, "flagged": 0, "requests": 0})
        group["clients"] += 1
        group["flagged"] += f.flagged
        group["requests"] += f.requests
    return sorted(groups.items(), key=lambda kv: (-kv[1]["flagged"], -kv[1]["clients"], str(kv[0])))


def summarise(findings: Sequence[EnrichedClient], enrichment: Enrichment, has_key: bool) -> EnrichmentSummary:
    """Counts of lookups and statuses, and per-country and per-ASN rollups of enriched findings."""
    report = enrichment.report
    counts = Counter(f.reputation.status for f in findings if f.reputation is not None)
    countries = [{"country": k[0], **v} for k, v in _rollup(findings, lambda g: (g.country,))]
    networks = [{"asn": k[0], "as_org": k[1], **v} for k, v in _rollup(findings, lambda g: (g.asn, g.as_org))]
    return EnrichmentSummary(status=_status(report, counts, has_key), lookups=report.lookups,
                             cache_hits=report.cache_hits, by_status=dict(sorted(counts.items())),
                             stopped=report.stopped, quota_reset=report.quota_reset, geo_source=enrichment.geo_source,
                             by_country=tuple(countries), by_asn=tuple(networks))


KEY_VARIABLE = "ABUSEIPDB_API_KEY"
URL_VARIABLE = "ABUSEIPDB_BASE_URL"


def resolve_api_key(key_file: str | None = None, environ: Mapping[str, str] | None = None,
                    dotenv_path: str | None = None) -> str | None:
    """The AbuseIPDB key: ``key_file`` (--api-key-file), else ``ABUSEIPDB_API_KEY`` in the
    environment, else in a ``.env`` file (``dotenv_path``, or the nearest one from the working
    directory up). None when there is none. Errors never include the key itself."""
    environ = os.environ if environ is None else environ
    if key_file is not None:
        try:
            key, origin = Path(key_file).read_text(encoding="utf-8").strip(), "the key file"
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ConfigError(f"cannot read the API key file: {reason.lower()}", path=key_file) from None
    elif environ.get(KEY_VARIABLE):
        key, origin = environ[KEY_VARIABLE].strip(), KEY_VARIABLE
    else:
        from dotenv import dotenv_values, find_dotenv

        path = dotenv_path or find_dotenv(usecwd=True)
        key, origin = ((dotenv_values(path).get(KEY_VARIABLE) or "").strip() if path else ""), ".env"
    if key_file is not None and not key:
        raise ConfigError("the API key file is empty", path=key_file)
    if key and not _printable_token(key):
        raise ConfigError(f"the AbuseIPDB API key from {origin} contains spaces or control characters",
                          hint="it must be one line of letters and digits")
    return key or None


def _printable_token(text: str) -> bool:
    return text.isascii() and text.isprintable() and not any(ch.isspace() for ch in text)


def resolve_base_url(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """--abuseipdb-url, else ABUSEIPDB_BASE_URL, else the real API; must be an http(s) URL."""
    environ = os.environ if environ is None else environ
    url = (flag or environ.get(URL_VARIABLE) or DEFAULT_BASE_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"not an http(s) URL for AbuseIPDB: {url!r}", hint="e.g. https://api.abuseipdb.com/api/v2")
    return url.rstrip("/")
