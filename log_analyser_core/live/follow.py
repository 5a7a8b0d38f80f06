"""The live loop: poll the files, judge the clients that sent new lines, alert, keep reports current.

SIGTERM and SIGINT end the loop after the batch in hand; the reports are written from a last
judgement of every live client and the checkpoint is saved, so a restart resumes where this run
stopped without alerting again.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from log_analyser_core import pipeline
from log_analyser_core.errors import ConfigError
from log_analyser_core.live import checkpoint as checkpoints
from log_analyser_core.live.monitor import REFIT_SECONDS, Monitor
from log_analyser_core.live.outputs import AlertSink, Reports, alert_json
from log_analyser_core.live.store import Limits
from log_analyser_core.live.tail import Chunk, Tailer
from log_analyser_core.results import AnalysisResult, Finding

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25          # wait between polls when no new line came
BATCH_SECONDS = 1.0          # new lines are gathered this long and judged together (each batch has a fixed cost) ...
BATCH_LINES = 50_000         # ... or until this many: a follower catching up holds one such batch, not minutes of lines
COMPACT_SECONDS = 10.0       # idle eviction and memory limits applied this often (and after a batch that overfills)
CHECKPOINT_SECONDS = 10.0    # places and alert state are saved this often (and at the end) ...
EVENTS_CHECKPOINT_SECONDS = 60.0   # ... the kept events this often (and at the end)


@dataclass(frozen=True)
class FollowOptions:
    """What a follower reads and writes, besides the analysis Settings."""

    patterns: tuple[str, ...]
    from_start: bool = False
    alerts_path: str | None = None            # None: alert lines to ``alerts_stream``
    reports: tuple[tuple[str, str], ...] = ()  # (format, path) of each -o
    report_options: dict = field(default_factory=dict)
    on_change: tuple[str, ...] = ()           # argv run after each rewrite of the reports
    checkpoint: Path | None = None            # None: checkpoints.default_path(patterns)
    limits: Limits = Limits()
    refit_interval: float = REFIT_SECONDS


@dataclass
class Screen:
    """The table redrawn on a terminal after each change (``render`` gives its text)."""

    stream: TextIO
    render: Callable[[AnalysisResult], str]

    def show(self, result: AnalysisResult) -> None:
        self.stream.write("\x1b[H\x1b[2J" + self.render(result))
        self.stream.flush()


@dataclass
class Follower:
    settings: pipeline.Settings
    options: FollowOptions
    alerts_stream: TextIO | None = None
    screen: Screen | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    ready: Callable[[int], None] | None = None   # called once the first poll placed every file

    def run(self) -> int:
        """Follow until ``stop`` is set; returns the number of alerts sent."""
        sink = AlertSink(self.alerts_stream, self.options.alerts_path)   # first: an unwritable file fails fast
        path = self.options.checkpoint or checkpoints.default_path(self.options.patterns)
        saved = checkpoints.load(path)
        monitor = Monitor(self.settings, self.options.limits, self.options.refit_interval)
        monitor.warm_up()
        if saved is not None:
            monitor.restore(saved)
            log.info("resumed from the checkpoint %s (%d clients)", path, len(saved.last_seen))
        tailer = Tailer(self.options.patterns, from_start=self.options.from_start,
                        places=saved.places if saved else ())
        reports = Reports(self.options.reports, self.options.report_options, self.options.on_change)
        sent = 0
        try:
            sent = self._loop(monitor, tailer, reports, sink, path)
        finally:
            # the last judgement sees every peer (baseline buckets), as a batch run over the kept events would
            monitor.judge_all()
            reports.refresh(monitor.result(self.options.patterns), force=True)
            checkpoints.save(path, monitor.checkpoint(tailer.places_now()))
            tailer.close()
            sink.close()
            monitor.close()
        return sent

    def _loop(self, monitor: Monitor, tailer: Tailer, reports: Reports, sink: AlertSink, path: Path) -> int:
        sent, first, pending = 0, True, Pending()
        compacted = saved = saved_events = time.monotonic()
        batched = -BATCH_SECONDS   # when the last batch was judged: the first lines go at once
        while not self.stop.is_set():
            chunks = tailer.poll() if pending.lines < BATCH_LINES else []
            if first and self.ready is not None:
                self.ready(len(tailer.places_now()))
            first = False
            pending.add(chunks)
            now = time.monotonic()
            judged = pending.lines >= BATCH_LINES or (pending.lines > 0 and now - batched >= BATCH_SECONDS)
            if judged:
                batched = now
                sent += self._update(monitor, reports, sink, pending.take())
            elif not pending.lines:   # no new line: clients whose wait is over, a finished refit
                sent += self._update(monitor, reports, sink, [])
            if now - compacted >= COMPACT_SECONDS or (judged and monitor.store.full):
                if monitor.compact():
                    self._refresh(monitor, reports, [])
                compacted = now
            if not pending.lines and now - saved >= CHECKPOINT_SECONDS:   # places past judged lines only
                with_events = now - saved_events >= EVENTS_CHECKPOINT_SECONDS
                try:
                    checkpoints.save(path, monitor.checkpoint(tailer.places_now()), events=with_events)
                except ConfigError as exc:   # a full disk, say: keep following; the last save reports it
                    log.error("%s", exc)
                saved, saved_events = now, now if with_events else saved_events
            if not chunks and not pending.lines and pending.read:
                log.info("caught up: %s", ", ".join(f"{p.path} line {p.lines}" for p in tailer.places_now()))
                pending.read = False
            if not judged:   # after a batch, poll again at once: more lines came while it was judged
                self.stop.wait(min(POLL_SECONDS, max(0.01, batched + BATCH_SECONDS - now)) if pending.lines
                               else POLL_SECONDS)
        return sent + self._update(monitor, reports, sink, pending.take())

    def _update(self, monitor: Monitor, reports: Reports, sink: AlertSink, chunks: list[Chunk]) -> int:
        """Judge new lines (and the clients whose wait is over), alert, refresh; returns alerts sent."""
        findings = monitor.update(chunks) + monitor.refitted()
        if not findings:
            return 0
        sent = self._alert(monitor, findings, sink)
        self._refresh(monitor, reports, findings)
        return sent

    def _alert(self, monitor: Monitor, findings: list[Finding], sink: AlertSink) -> int:
        due = monitor.alerts(findings)
        for finding, kind, before in due:
            sink.send(alert_json(replace(finding, rank=monitor.rank_of(finding)), kind, before))
        return len(due)

    def _refresh(self, monitor: Monitor, reports: Reports, findings: list[Finding]) -> None:
        if not reports.targets and self.screen is None:
            return
        result = monitor.result(self.options.patterns)
        changed = reports.refresh(result)
        if self.screen is not None and (changed or any(f.flagged for f in findings)):
            self.screen.show(result)


@dataclass
class Pending:
    """Lines read but not judged yet, consecutive lines of one file joined into one chunk."""

    chunks: list[Chunk] = field(default_factory=list)
    lines: int = 0
    read: bool = False   # lines were read since the last "caught up"

    def add(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            last = self.chunks[-1] if self.chunks else None
            if last is not None and last.source == chunk.source and \
                    last.first_line + len(last.lines) == chunk.first_line:
                last.lines.extend(chunk.lines)
            else:
                self.chunks.append(Chunk(chunk.source, chunk.first_line, list(chunk.lines)))
            self.lines += len(chunk.lines)
            self.read = True

    def take(self) -> list[Chunk]:
        taken, self.chunks, self.lines = self.chunks, [], 0
        return taken


def stop_on_signals(stop: threading.Event) -> Callable[[], int | None]:
    """SIGTERM and SIGINT set ``stop`` (the loop ends cleanly) instead of killing the process;
    returns a function that restores the handlers and says which signal came (or None)."""
    caught: list[int] = []

    def handler(signum, _frame) -> None:
        caught.append(signum)
        stop.set()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> int | None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        return caught[0] if caught else None
    return restore


def follow(settings: pipeline.Settings, options: FollowOptions, *, screen: Screen | None = None,
           alerts_stream: TextIO | None = sys.stdout, ready: Callable[[int], None] | None = None,
           ) -> tuple[int, int | None]:
    """Follow ``options.patterns`` until SIGTERM or SIGINT: (alerts sent, the signal that ended it)."""
    stop = threading.Event()
    restore = stop_on_signals(stop)
    try:
        sent = Follower(settings, options, alerts_stream=alerts_stream, screen=screen, stop=stop,
                        ready=ready).run()
    finally:
        caught = restore()
    return sent, caught


__all__: Sequence[str] = ("FollowOptions", "Follower", "Screen", "follow")
