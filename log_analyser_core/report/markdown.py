"""A Markdown summary for CI job pages (GitHub's step summary, GitLab and Gitea comments).

Every string from the log is escaped: Markdown punctuation gets a backslash, ``< > &`` become
entities (GitHub renders inline HTML), and control characters show as visible escapes.
"""
from __future__ import annotations

import re

from log_analyser_core.report.model import fmt_span
from log_analyser_core.results import AnalysisResult, Finding, flagged_findings

MAX_ROWS = 50          # flagged clients listed; the rest are counted
REASON_CHARS = 160
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Inside a table cell only these mean something: emphasis, code, links, pipes, strikethrough, and
# GitHub's @mentions, #references and autolinked URLs (scheme colons).
_MARKDOWN = re.compile(r"([\\`*_\[\]|~@#:])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_escape(text: str) -> str:
    """``text`` safe in a Markdown table cell: no markup, links, HTML or line breaks survive."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                        else f"\\u{ord(m.group(0)):04x}", text)
    text = "".join(_ENTITIES.get(ch, ch) for ch in text)
    return _MARKDOWN.sub(r"\\\1", text)


def _row(finding: Finding) -> str:
    reason = finding.reasons[0] if finding.reasons else ""
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS - 1] + "…"
    cells = [str(finding.rank), f"`{finding.ip}`" if _plain_address(finding.ip) else md_escape(finding.ip),
             f"{finding.score:.1f}", f"**{finding.severity.label}**", md_escape(", ".join(finding.attack_types)),
             f"{finding.requests:,}", md_escape(reason)]
    return "| " + " | ".join(cells) + " |"


def _plain_address(text: str) -> bool:
    """An address made only of hex digits, dots and colons can sit in a code span unescaped."""
    return bool(re.fullmatch(r"[0-9A-Fa-f.:]{2,45}", text))


def render_markdown(result: AnalysisResult) -> str:
    """The summary: one line of totals, then the flagged clients worst first (at most MAX_ROWS)."""
    s = result.summary
    flagged = flagged_findings(result.findings)
    worst = ", ".join(f"{n} {label}" for label, n in s.by_severity.items() if n)
    lines = ["## log_analyser", "",
             f"{s.parsed_lines:,} of {s.total_lines:,} lines from {len(s.sources)} file(s), {s.clients:,} clients, "
             f"**{s.flagged:,} flagged**" + (f" ({worst})" if worst else "")
             + (f", {fmt_span(s.time_start, s.time_end, s.tz, seconds=False)}" if s.time_start and s.time_end else ""),
             ""]
    if not flagged:
        return "\n".join([*lines, "No client looks suspicious.", ""])
    lines += ["| # | client | score | severity | attack types | requests | top reason |",
              "| ---: | --- | ---: | --- | --- | ---: | --- |"]
    lines += [_row(f) for f in flagged[:MAX_ROWS]]
    if len(flagged) > MAX_ROWS:
        lines += ["", f"… and {len(flagged) - MAX_ROWS:,} more flagged clients (see the JSON or CSV report)."]
    return "\n".join(lines) + "\n"
