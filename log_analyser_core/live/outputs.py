"""What live mode writes: alert lines, reports rewritten atomically, and the --on-change command."""
from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

import reporting
from log_analyser_core.errors import ConfigError
from log_analyser_core.report.files import replace_atomically
from log_analyser_core.results import AnalysisResult, Finding, Severity

log = logging.getLogger(__name__)

ON_CHANGE_TIMEOUT = 60.0   # seconds an --on-change command may run


def atomic_write(path: str | Path, content: str | bytes) -> None:
    """Replace ``path`` with ``content`` at once (report.files.replace_atomically), so a reader
    (nginx reloading) never sees half a file; an existing file keeps its permissions."""
    replace_atomically(str(path), [content.encode("utf-8") if isinstance(content, str) else content])


def alert_json(finding: Finding, kind: str, previous: Severity | None, now: datetime | None = None) -> str:
    """One alert line: the finding as in the JSON report, and ``alert``: why it is sent (``new``: first
    at the threshold; ``escalated``: its severity rose), the severity before and when (UTC)."""
    document = reporting.finding_json(finding)
    document["alert"] = {"kind": kind, "previous_severity": previous.label if previous is not None else None,
                         "time": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")}
    return orjson.dumps(document).decode() + "\n"


class AlertSink:
    """Alert lines to a stream (standard output) or appended to a file, flushed one by one."""

    def __init__(self, stream: TextIO | None = None, path: str | None = None) -> None:
        try:
            self._owned = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ConfigError(f"cannot write alerts: {exc.strerror}", path=path) from None
        self.stream = self._owned or stream

    def send(self, line: str) -> None:
        if self.stream is not None:
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


class Reports:
    """The -o reports, rewritten atomically when the flagged set changes; then --on-change runs.
    ``on_change`` is an argv (already split with shlex): it runs without a shell and no log data
    is ever put into it."""

    def __init__(self, targets: Sequence[tuple[str, str]], options: dict, on_change: Sequence[str] = ()) -> None:
        self.targets = list(targets)
        self.options = options
        self.on_change = list(on_change)
        self._written: frozenset | None = None
        self._contents: dict[str, str | bytes] = {}   # what each report last held

    @staticmethod
    def flagged_set(result: AnalysisResult) -> frozenset:
        return frozenset((f.ip, f.severity) for f in result.findings if f.flagged)

    def refresh(self, result: AnalysisResult, force: bool = False) -> bool:
        """Render the reports again if the flagged clients or their severities changed (or ``force``),
        and rewrite those whose content changed; whether any was rewritten (then --on-change ran)."""
        flagged = self.flagged_set(result)
        if not self.targets or (flagged == self._written and not force):
            return False
        changed = False
        for kind, path in self.targets:
            content = reporting.render(kind, result, **self.options)
            if self._contents.get(path) == content:
                continue   # e.g. a blocklist when only a medium client came: nginx need not reload
            try:
                atomic_write(path, content)
            except OSError as exc:
                log.error("%s report to %s failed: %s", kind, path, exc.strerror)
                continue
            self._contents[path] = content
            changed = True
        self._written = flagged
        if changed and self.on_change:
            self._run_on_change()
        return changed

    def _run_on_change(self) -> None:
        try:
            done = subprocess.run(self.on_change, stdin=subprocess.DEVNULL, timeout=ON_CHANGE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("--on-change %s failed: %s", self.on_change[0], exc)
            return
        if done.returncode:
            log.error("--on-change %s exited with %d", self.on_change[0], done.returncode)
