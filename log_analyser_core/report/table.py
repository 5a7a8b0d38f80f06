"""The terminal table, drawn with beautifultable.

Which clients it lists: the flagged ones (at most ``top``), then the next few highest scores so the
reader sees where the threshold fell, then one line counting the rest. ``width`` fits it to a terminal
(the reason column gives way, ending in an ellipsis); ``width=None`` (a file or a pipe) never cuts it.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from beautifultable import ALIGN_LEFT, ALIGN_RIGHT, WEP_ELLIPSIS, BeautifulTable

from log_analyser_core.report.text import RESET, SEVERITY_COLOURS, terminal_safe
from log_analyser_core.results import AnalysisResult, Finding, Geo, Reputation, flagged_findings

NEXT_UNFLAGGED = 3     # unflagged clients shown after the flagged ones: where the threshold fell
MIN_REASON = 24        # the reason column keeps at least this much before the client column gives way
MIN_CLIENT = 15        # an IPv4 address always fits
ORIGIN_WIDTH = 22
UNLIMITED = 10_000     # beautifultable needs a number; a file or pipe gets the whole text


@dataclass(frozen=True)
class TableRows:
    """The findings a table lists, and how many it leaves out (flagged and not)."""

    shown: list[Finding]
    more_flagged: int
    quiet: int


def choose_rows(result: AnalysisResult, top: int = 20, everything: bool = False) -> TableRows:
    """Flagged findings (at most ``top``), then up to NEXT_UNFLAGGED of the highest unflagged ones
    scoring above 0; ``everything`` lists every client."""
    if everything:
        return TableRows(list(result.findings), 0, 0)
    flagged = flagged_findings(result.findings)
    others = [f for f in result.findings if not f.flagged]
    room = min(NEXT_UNFLAGGED, max(top - len(flagged), 0))
    next_ones = [f for f in others[:room] if f.score > 0]
    return TableRows(flagged[:top] + next_ones, max(len(flagged) - top, 0), len(others) - len(next_ones))


def _abuse_cell(rep: Reputation | None) -> str:
    """'97%' (+ ' tor'), '?' for a failed lookup, '-' when not looked up."""
    if rep is None or rep.status == "skipped":
        return "-"
    if rep.status != "ok" or rep.abuse_score is None:
        return "?"
    return f"{rep.abuse_score}%" + (" tor" if rep.is_tor else "")


def _origin_cell(geo: Geo | None) -> str:
    if geo is None or not (geo.country or geo.as_org or geo.asn):
        return "-"
    network = f"AS{geo.asn} " if geo.asn is not None else ""
    text = " ".join(part for part in (geo.country or "??", network + (geo.as_org or "")) if part).strip()
    return _clip(terminal_safe(text), ORIGIN_WIDTH)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def _row(finding: Finding, enriched: bool) -> list[str]:
    """Cells as plain text; numbers as '3,000' and scores with one decimal everywhere."""
    safe = terminal_safe
    attack = finding.attack_types[0] if finding.attack_types and finding.flagged else ""
    reason = safe(finding.reasons[0]) if finding.reasons and finding.flagged else ""
    severity = finding.severity.label if finding.flagged else "-"
    who = [_abuse_cell(finding.reputation), _origin_cell(finding.geo)] if enriched else []
    ip = safe(finding.ip) + (" (internal)" if finding.internal else "")
    return [f"{finding.rank:,}", ip, f"{finding.requests:,}", f"{finding.errors:,}", f"{finding.score:.1f}",
            severity, *who, attack, reason]


def _widths(rows: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """Column widths: every column its longest cell, the reason (last) what is left of ``width`` after
    the one-space gaps, taken from the client column down to MIN_CLIENT if need be."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if width is None:
        return widths
    reason, widths[-1] = widths[-1], 0
    room = width - sum(widths) - (len(widths) - 1)
    want = min(reason, MIN_REASON)
    if room < want and widths[1] > MIN_CLIENT:
        give = min(widths[1] - MIN_CLIENT, want - room)
        widths[1] -= give
        room += give
    widths[-1] = max(min(reason, room), min(reason, 4))
    return widths


def render_table(result: AnalysisResult, top: int = 20, colour: bool = False, width: int | None = None,
                 everything: bool = False) -> str:
    """The ranked table (see choose_rows), at most ``width`` characters wide (None: as wide as it needs);
    severities in SEVERITY_COLOURS when ``colour``; then a line counting the clients left out."""
    if not result.findings:
        return "no clients\n"
    enriched = result.summary.enrichment is not None
    chosen = choose_rows(result, top, everything)
    header = ["#", "client", "reqs", "errs", "score", "severity", *(["abuse", "origin"] if enriched else []),
              "attack", "top reason"]
    right = {"#", "reqs", "errs", "score", "abuse"}
    rows = [_row(f, enriched) for f in chosen.shown]
    table = BeautifulTable(maxwidth=UNLIMITED, default_alignment=ALIGN_LEFT, default_padding=0,
                           detect_numerics=False)
    table.set_style(BeautifulTable.STYLE_COMPACT)
    table.columns.header = header
    for row in rows:
        if colour and row[5] in SEVERITY_COLOURS:
            row = [*row[:5], f"{SEVERITY_COLOURS[row[5]]}{row[5]}{RESET}", *row[6:]]
        table.rows.append(row)
    table.columns.width = _widths([header, *[_row(f, enriched) for f in chosen.shown]], width)
    table.columns.width_exceed_policy = WEP_ELLIPSIS
    for name in header:
        table.columns.alignment[name] = ALIGN_RIGHT if name in right else ALIGN_LEFT
    lines = [line.rstrip() for line in str(table).splitlines()]
    lines += _left_out(chosen)
    return "\n".join(lines) + "\n" + render_llm_notes(chosen.shown, width or 100)


def _left_out(chosen: TableRows) -> list[str]:
    lines = []
    if chosen.more_flagged:
        lines.append(f"… and {chosen.more_flagged:,} more flagged clients (--top N or --all lists them)")
    if chosen.quiet > 0:
        noun = "client" if chosen.quiet == 1 else "clients"
        lines.append(f"… and {chosen.quiet:,} {noun} with nothing suspicious")
    return lines


def render_llm_notes(findings: Sequence[Finding], width: int = 100) -> str:
    """The language model's notes under the table, labelled as the model's; empty without --explain."""
    noted = [f for f in findings if f.llm_note is not None]
    if not noted:
        return ""
    lines = ["", "LLM notes (the model's advisory view; our scores and severities above stand)"]
    for finding in noted:
        note = finding.llm_note
        assert note is not None
        head = f"  #{finding.rank} {terminal_safe(finding.ip)}  {terminal_safe(note.model)}"
        if note.status not in ("ok", "contradicts_evidence"):
            lines.append(f"{head}: no usable answer ({note.status}: {terminal_safe(note.detail or '')})")
            continue
        kind = terminal_safe(note.attack_type or "no attack type")
        lines.append(f"{head} says: {kind}, {terminal_safe(note.severity or '?')}, "
                     f"confidence {note.confidence or 0:.2f}")
        if note.status != "ok":
            lines.append(f"     set aside ({note.status}): {terminal_safe(note.detail or '')}")
        lines += textwrap.wrap(terminal_safe(note.summary or ""), width, initial_indent="     ",
                               subsequent_indent="     ")
        if note.recommended_actions:
            actions = "; ".join(terminal_safe(a) for a in note.recommended_actions)
            lines += textwrap.wrap(f"next: {actions}", width, initial_indent="     ", subsequent_indent="       ")
    return "\n".join(_clip(line, width) for line in lines) + "\n"
