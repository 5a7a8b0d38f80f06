"""Live verdicts: new lines in, the touched clients judged again with the batch pipeline's own code.

Each batch of new lines is parsed (format detected per file, as in a batch run) and matched
against the payload signatures and Sigma rules (PayloadEvidence: they read single requests, so
each request once), then added to the ClientStore; the clients that sent them are judged on all
their kept events: their features (features.client), anomaly score against the baseline, the
behaviour rules (the same rule files and code; a ``baseline`` bucket's quantile spans every live
client through ``peer_peaks``), then pipeline.judged_findings. So a client's verdict is what a
batch run over its requests gives.

Judging a client costs in proportion to its kept requests, so a client is judged again at once
only when that is cheap or may matter: it is small (SMALL_CLIENT_EVENTS requests or fewer), a new
request of its failed (status 400 or more) or matched a signature, Sigma or CRS rule, it holds
GROWTH times the requests it held when last judged, or REJUDGE_SECONDS have passed since then.
Otherwise it waits for the first of these (so the verdict of a large client sending successful
requests lags them by REJUDGE_SECONDS at most); the last judgement of a run (judge_all) takes
every client.

The anomaly baseline is the ``--model`` directory when given (recommended: scores do not drift);
otherwise detectors fitted on the live clients' features, first once MIN_CLIENTS clients are
known and again every ``refit_interval`` seconds. Until that first fit, only evidence scores.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import polars as pl

import anomaly_detector as detect
import file_parser
from log_analyser_core import pipeline, verdict
from log_analyser_core.engines.partition import in_zone
from log_analyser_core.features import client as ip_features
from log_analyser_core.live.checkpoint import Checkpoint
from log_analyser_core.live.evidence import PayloadEvidence
from log_analyser_core.live.store import ClientStore, Limits
from log_analyser_core.live.tail import Chunk, Place
from log_analyser_core.parsing.sources import InputOptions
from log_analyser_core.results import AnalysisResult, Finding, Severity, Summary
from log_analyser_core.rules import behaviour as behaviour_rules

log = logging.getLogger(__name__)

REFIT_SECONDS = 600.0   # without --model: the live clients' baseline is fitted again this often
SMALL_CLIENT_EVENTS = 50   # clients with no more kept requests than this are judged on each batch ...
GROWTH = 2.0               # ... the others once they hold this many times their requests at the last judgement,
REJUDGE_SECONDS = 3.0      # or this long after it, or at once when a new request failed or matched a payload rule


@dataclass
class Counts:
    """Lines read so far: all, parsed, and the rest by reason."""

    lines: int = 0
    parsed: int = 0
    unparsed: Counter = field(default_factory=Counter)


class Monitor:
    """The live state: kept events, the flagged clients' current findings, alerts sent and the baseline."""

    def __init__(self, settings: pipeline.Settings, limits: Limits | None = None,
                 refit_interval: float = REFIT_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.refit_interval = refit_interval
        self.clock = clock
        self.behaviours = pipeline.load_behaviours(settings)
        crs, self.crs_notes = pipeline.crs_rules(settings)
        self.payload = PayloadEvidence(pipeline.sigma_rules(settings), crs)
        self.peer_peaks: dict[str, pl.DataFrame] = {}
        self.store = ClientStore(limits or Limits(), on_evict=self._forget)
        self.findings: dict[str, Finding] = {}
        self.alerted: dict[str, Severity] = {}   # the severity each client was last alerted at
        self.judged: dict[str, tuple[int, float]] = {}   # client -> (its kept requests, clock) when last judged
        self.suspects: set[str] = set()          # clients whose last verdict had evidence (evicted last)
        self.waiting: set[str] = set()           # clients with requests not judged yet
        self.readers: dict[str, file_parser.SourceReader] = {}
        self.counts = Counts()
        self._check_model: Callable[[list[str], str], None] | None = None
        self.model = self._load_model(settings)
        self.rolling: detect.Baseline | None = None
        self.fitted_at: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refit")
        self._fitting: Future[detect.Baseline] | None = None
        self.options = InputOptions(tz=settings.tz, real_ip_header=settings.real_ip_header,
                                    trusted_proxies=settings.trusted_proxies, since=settings.since,
                                    until=settings.until)

    def _load_model(self, settings: pipeline.Settings) -> detect.Baseline | None:
        if not settings.model:
            return None
        from log_analyser_core.detectors import model_store

        loaded = model_store.load(settings.model, settings.detectors)
        # checked against the log's features, as a batch run checks its log (ConfigError; see update)
        self._check_model = partial(model_store.check_features, loaded)
        return loaded.baseline

    @property
    def baseline(self) -> detect.Baseline | None:
        return self.model if self.model is not None else self.rolling

    def parse(self, chunks: Sequence[Chunk]) -> pl.DataFrame:
        """The events (EVENT_SCHEMA) of new lines, each file read as a batch run reads it (its
        collector's envelope taken off, its format); unparsed lines are counted by reason."""
        frames = []
        for chunk in chunks:
            lines = pl.Series("raw", chunk.lines, dtype=pl.String)
            reader = self.readers.get(chunk.source)
            if reader is None:
                reader = self.readers[chunk.source] = file_parser.SourceReader.of(
                    chunk.source, lines, format_name=self.settings.format_name, log_format=self.settings.log_format,
                    json_fields=self.settings.json_fields)
                log.info("%s: format %s (%.0f%% of sampled lines match)", chunk.source, reader.name, 100 * reader.rate)
            good, bad, blank = reader.parse(lines, chunk.first_line, self.options)
            self.counts.lines += lines.len()
            self.counts.parsed += good.height
            self.counts.unparsed.update(dict(bad["reason"].value_counts().iter_rows()))
            if blank:   # counted, never parsed, as in a batch run
                self.counts.unparsed["blank line"] += blank
            frames.append(good.select(list(file_parser.EVENT_SCHEMA)))
        return pl.concat(frames, rechunk=False) if frames else pl.DataFrame(schema=file_parser.EVENT_SCHEMA)

    def update(self, chunks: Sequence[Chunk]) -> list[Finding]:
        """Read new lines (none: only judge the clients whose wait is over); the new findings of the
        clients judged (see the module docstring for which)."""
        now = self.clock()
        events = self.parse(chunks)
        matched = self.payload.add(self._not_allowed(events))
        failed = events.filter(pl.col("status") >= 400)["client_ip"].unique().cast(pl.String).to_list()
        touched = self.store.add(events, now)
        if self._check_model is not None and len(self.store.last_seen) >= pipeline.TRAIN_MIN_CLIENTS:
            # once enough clients tell what the log records (one client's burstiness can be null)
            self._check_model(ip_features.logged_features(ip_features.compute(self.store.events)),
                              ", ".join(self.readers))
            self._check_model = None
        if self.model is None and self._refit_due(now):
            self.start_refit(now)
        return self.judge(self._due(touched, matched | set(failed), now))

    def _due(self, touched: set[str], urgent: set[str], now: float) -> set[str]:
        """Which of the clients with unjudged requests to judge now (``urgent`` ones at once); the
        rest keep waiting."""
        due = urgent & touched
        for ip in (touched | self.waiting) - due:
            kept, then = self.judged.get(ip, (0, -float("inf")))
            held = self.store.kept.get(ip, 0)
            if held <= SMALL_CLIENT_EVENTS or held >= GROWTH * kept or now - then >= REJUDGE_SECONDS:
                due.add(ip)
        self.waiting = (self.waiting | touched) - due
        return due

    def _refit_due(self, now: float) -> bool:
        if self._fitting is not None:
            return False
        if self.fitted_at is None:
            return len(self.store.last_seen) >= pipeline.TRAIN_MIN_CLIENTS
        return now - self.fitted_at >= self.refit_interval

    def start_refit(self, now: float) -> None:
        """Fit the rolling baseline on every live client's kept events, on a thread, so that alerts
        are not held up by the fit (see refitted())."""
        events, self.fitted_at = self.store.events, now
        self._fitting = self._pool.submit(self._fit, events)

    def _fit(self, events: pl.DataFrame) -> detect.Baseline:
        table = ip_features.compute(in_zone(events, self.settings.tz))
        fitted = detect.fit_baseline(table, ip_features.logged_features(table), self._detectors(),
                                     n_estimators=self.settings.n_estimators, random_state=self.settings.random_state)
        log.info("fitted the rolling baseline on %d live clients", table.height)
        return fitted

    def _detectors(self) -> tuple[str, ...]:
        """--detectors, else the Isolation Forest alone: the autoencoder's fit takes minutes, not seconds."""
        return detect.resolve_detectors(self.settings.detectors or ("iforest",))

    def refitted(self) -> list[Finding]:
        """Once a refit has finished: the new baseline in use and every live client judged again."""
        if self._fitting is None or not self._fitting.done():
            return []
        self.rolling, self._fitting = self._fitting.result(), None
        return self.judge_all()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def judge(self, clients: Iterable[str]) -> list[Finding]:
        """The findings of ``clients`` from their kept events (also kept as their current finding)."""
        clients = list(clients)
        if not clients:
            return []
        events = self.store.of(clients)
        if not events.height:
            return []
        table = ip_features.compute(in_zone(events, self.settings.tz))
        baseline = self.baseline
        if baseline is not None:
            used = list(baseline.features)
            fused, own = detect.score_with(baseline, table, self.settings.fusion)
        else:
            used, fused, own = ip_features.logged_features(table), np.zeros(table.height), {}
        found = self._detected(events)
        scored = pipeline.Scored(table, baseline, used, fused, own, [])
        _, findings = pipeline.judged_findings(found, scored, self.settings, baseline)
        now = self.clock()
        for ip in table["client_ip"].cast(pl.String):
            self.judged[ip] = (self.store.kept.get(ip, 0), now)
        for finding in findings:   # only the flagged are kept: memory grows with attackers, not clients
            if finding.flagged:
                self.findings[finding.ip] = finding
            else:
                self.findings.pop(finding.ip, None)
            if finding.flagged or finding.evidence:
                self.suspects.add(finding.ip)
            else:
                self.suspects.discard(finding.ip)
        return findings

    def _not_allowed(self, events: pl.DataFrame) -> pl.DataFrame:
        """``events`` without the allowlisted requests (user agents and paths of --allow)."""
        if self.settings.allowlist is None or not events.height:
            return events
        return events.filter(~verdict.allowed_requests(events, self.settings.allowlist)[0])

    def _detected(self, events: pl.DataFrame) -> pipeline.Detected:
        """The request-level evidence of the clients of ``events`` (their kept requests): behaviour
        rules over those requests, signatures and Sigma as gathered batch by batch (PayloadEvidence).
        Example lines stay rebuilt from the parsed fields: a rotated file no longer holds them at
        their line numbers."""
        behaviour = behaviour_rules.detect(self._not_allowed(events), self.behaviours, peer_peaks=self.peer_peaks)
        clients = events["client_ip"].unique().cast(pl.String).to_list()
        evidence = {ip: [*behaviour.get(ip, []), *self.payload.of(ip)] for ip in clients}
        return pipeline.Detected({ip: items for ip, items in evidence.items() if items}, {},
                                 verdict.crawler_clients(events))

    def warm_up(self) -> None:
        """Run every stage once on a made-up request (nothing is kept), and import scikit-learn for
        the rolling baseline, so that the first alert does not wait for imports and first-use setup."""
        if self.model is None:
            import sklearn.ensemble  # noqa: F401 - imported for its side effect: loaded before the first fit
        text = '192.0.2.1 - - [01/Jan/2026:00:00:00 +0000] "GET /?q=1 HTTP/1.1" 200 1 "-" "warm-up"'
        events, _ = file_parser.parse_lines(pl.Series("raw", [text]), file_parser.preset("combined"))
        events = events.select(list(file_parser.EVENT_SCHEMA))
        PayloadEvidence(self.payload.sigma, self.payload.crs).add(events)
        table = ip_features.compute(events)
        behaviour_rules.detect(events, self.behaviours)
        if self.baseline is not None:
            detect.score_with(self.baseline, table, self.settings.fusion)

    def judge_all(self) -> list[Finding]:
        """Every live client judged again (at the end, so that each verdict sees the final peers)."""
        self.waiting = set()
        return self.judge(list(self.store.last_seen))

    def compact(self) -> set[str]:
        """Apply the store's limits (see store.ClientStore.compact); the clients with evidence go last."""
        return self.store.compact(self.clock(), suspects=self.suspects | set(self.payload.found))

    def alerts(self, findings: Iterable[Finding]) -> list[tuple[Finding, str, Severity | None]]:
        """(finding, ``new`` or ``escalated``, severity alerted before) for each flagged client
        alerted for the first time or whose severity rose; a severity that falls is not alerted."""
        due = []
        for finding in findings:
            before = self.alerted.get(finding.ip)
            if finding.flagged and (before is None or finding.severity > before):
                due.append((finding, "new" if before is None else "escalated", before))
                self.alerted[finding.ip] = finding.severity
        return due

    def rank_of(self, finding: Finding) -> int:
        """The finding's rank among the flagged live clients (1 = most suspicious)."""
        key = (-round(finding.score, 6), finding.ip)
        return 1 + sum((-round(f.score, 6), f.ip) < key for f in self.findings.values())

    def checkpoint(self, places: list[Place]) -> Checkpoint:
        return Checkpoint(places=places, alerted=dict(self.alerted), last_seen=dict(self.store.last_seen),
                          events=self.store.events)

    def restore(self, state: Checkpoint) -> None:
        """Resume from a checkpoint: the kept events and alerts, every client judged again (no alerts:
        their alerted severities come back with them)."""
        self.store.load(state.events, state.last_seen)
        self.alerted = {ip: s for ip, s in state.alerted.items() if ip in self.store.last_seen}
        if self.store.events.height:
            self.payload.add(self._not_allowed(self.store.events))
            self.judge_all()

    def _forget(self, clients: set[str]) -> None:
        for ip in clients:
            self.findings.pop(ip, None)
            self.alerted.pop(ip, None)
            self.judged.pop(ip, None)
        self.waiting -= clients
        self.suspects -= clients
        self.payload.forget(clients)
        wanted = pl.Series(list(clients), dtype=pl.String).implode()
        self.peer_peaks = {rule: peaks.filter(~pl.col("client_ip").is_in(wanted))
                           for rule, peaks in self.peer_peaks.items()}

    def result(self, sources: Sequence[str]) -> AnalysisResult:
        """The flagged live clients' current findings as one result, ranked as a batch run ranks them
        (``clients`` in the summary counts every live client)."""
        ranked = sorted(self.findings.values(), key=lambda f: (-round(f.score, 6), f.ip))
        findings = tuple(replace(f, rank=rank) for rank, f in enumerate(ranked, start=1))
        severities = Counter(f.severity.label for f in findings if f.flagged)
        baseline = self.baseline
        summary = Summary(
            sources=tuple(sources), formats={s: r.name for s, r in self.readers.items()},
            total_lines=self.counts.lines, parsed_lines=self.counts.parsed,
            unparsed_by_reason=dict(self.counts.unparsed.most_common()), clients=len(self.store.last_seen),
            flagged=sum(f.flagged for f in findings),
            by_severity={s.label: severities.get(s.label, 0) for s in reversed(Severity)},
            time_start=min((f.first_seen for f in findings), default=None),
            time_end=max((f.last_seen for f in findings), default=None),
            detectors=(*(baseline.detectors if baseline else ()), "rules", "signatures",
                       *(("sigma",) if self.payload.sigma.rules else ()), *(("crs",) if self.payload.crs else ())),
            features_used=tuple(baseline.features if baseline else ()), notes=self.notes(), tz=self.settings.tz)
        return AnalysisResult(summary=summary, findings=findings, features=pl.DataFrame(),
                              unparsed=pl.DataFrame(schema=file_parser.UNPARSED_SCHEMA),
                              events=pl.DataFrame(schema=file_parser.EVENT_SCHEMA))

    def notes(self) -> tuple[str, ...]:
        if self.model is not None:
            scoring = f"live mode: scored against the baseline model {self.settings.model}"
        elif self.rolling is None:
            scoring = f"live mode: fewer than {pipeline.TRAIN_MIN_CLIENTS} clients so far, no anomaly scores yet"
        else:
            scoring = f"live mode: anomaly baseline fitted on the live clients every {self.refit_interval:g} s"
        return (scoring, *self.crs_notes)
