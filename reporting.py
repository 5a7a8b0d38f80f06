"""Report writers: a registry of small renderers over one immutable AnalysisResult.

Every string that came from a log was written by an attacker: the terminal gets no control
characters, CSV cells cannot start a formula, JSON is escaped by the encoder.
"""
from __future__ import annotations

import bisect
import csv
import dataclasses
import inspect
import io
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import orjson
import polars as pl

from log_analyser_core.errors import ConfigError
from log_analyser_core.report import exports, json_columns, junit, markdown
from log_analyser_core.report import table as report_table
from log_analyser_core.report.model import fmt_span, iso_time
from log_analyser_core.report.text import RESET, SEVERITY_COLOURS, terminal_safe  # noqa: F401 - part of the writers API
from log_analyser_core.results import (
    SCHEMA_VERSION,
    AnalysisResult,
    Deviation,
    EnrichmentSummary,
    Evidence,
    Finding,
    Findings,
    Geo,
    LLMNote,
    QuietFinding,
    Reputation,
    Severity,
)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_safe(value: object) -> object:
    """Text cells with control characters shown as visible escapes (``\\x1b``), and spreadsheet
    formulas neutralised: a cell whose first character after any leading white space is
    = + - @ (or that starts with TAB, CR or LF) gets a leading quote."""
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_START) or value.lstrip().startswith(_FORMULA_START):
        value = "'" + value
    return terminal_safe(value)


def _time(value: datetime | None) -> str | None:
    """Machine outputs (JSON) keep UTC: ISO 8601 ending in 'Z', iso_time's text, written by orjson
    (about 3x faster than isoformat on an aware time: two per client in the JSON report)."""
    if not value:
        return None
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()


def summary_line(result: AnalysisResult, colour: bool = False) -> str:
    """One line: lines parsed, clients, flagged by severity (in severity colours if ``colour``), time span."""
    s = result.summary
    parts = [f"parsed {s.parsed_lines:,} of {s.total_lines:,} lines"]
    apart = sum(s.not_access.values())
    counts = [f"{s.unparsed_lines:,} unparsed"] if s.unparsed_lines else []
    counts += [f"{apart:,} not access lines"] if apart else []
    if counts:
        parts[0] += f" ({', '.join(counts)})"
    parts.append(f"{s.clients:,} clients")
    worst = ", ".join(f"{SEVERITY_COLOURS[label]}{n} {label}{RESET}" if colour else f"{n} {label}"
                      for label, n in s.by_severity.items() if n)
    parts.append(f"{s.flagged:,} flagged" + (f" ({worst})" if worst else ""))
    if s.excluded:
        parts.append("excluded because " + ", ".join(f"{why}: {n:,}" for why, n in s.excluded.items()))
    if s.time_start and s.time_end:
        parts.append(fmt_span(s.time_start, s.time_end, s.tz, seconds=False))
    return " | ".join(parts)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def render_table(result: AnalysisResult, top: int = 20, colour: bool = False, width: int | None = None,
                 everything: bool = False) -> str:
    """The terminal table (log_analyser_core.report.table): flagged clients, the next few highest
    scores, then a line counting the rest; ``width`` None never cuts a cell."""
    return report_table.render_table(result, top=top, colour=colour, width=width, everything=everything)


def reputation_json(rep: Reputation | None) -> dict[str, object] | None:
    return None if rep is None else {"source": "abuseipdb", **dataclasses.asdict(rep)}


def geo_json(geo: Geo | None) -> dict[str, object] | None:
    return None if geo is None else dataclasses.asdict(geo)


def enrichment_columns(finding: Finding) -> dict[str, object]:
    """CSV columns for reputation and geography (present only when enrichment ran)."""
    rep, geo = finding.reputation or Reputation(status="skipped"), finding.geo or Geo()
    return {"reputation_status": rep.status, "abuse_score": rep.abuse_score, "abuse_reports": rep.total_reports,
            "abuse_last_reported": rep.last_reported, "usage_type": rep.usage_type, "isp": rep.isp,
            "domain": rep.domain, "is_tor": rep.is_tor, "country": geo.country, "asn": geo.asn,
            "as_org": geo.as_org}


def enrichment_summary_json(summary: EnrichmentSummary) -> dict[str, object]:
    document = dataclasses.asdict(summary)
    document["quota_reset"] = _time(summary.quota_reset)
    document["by_country"], document["by_asn"] = list(summary.by_country), list(summary.by_asn)
    return document


LLM_COLUMNS = ("llm_status", "llm_model", "llm_attack_type", "llm_severity", "llm_confidence", "llm_summary",
               "llm_actions", "llm_detail")


def llm_cells(note: LLMNote | None) -> dict[str, object]:
    """The model's note as CSV cells (all empty when the finding has none)."""
    if note is None:
        return dict.fromkeys(LLM_COLUMNS, "")
    return {"llm_status": str(note.status), "llm_model": note.model, "llm_attack_type": note.attack_type or "",
            "llm_severity": note.severity or "", "llm_confidence": "" if note.confidence is None else note.confidence,
            "llm_summary": note.summary or "", "llm_actions": " | ".join(note.recommended_actions),
            "llm_detail": note.detail or ""}


def csv_row(finding: Finding, enriched: bool = False, llm: bool = False, tz: str = "UTC") -> dict[str, object]:
    """One CSV row; first and last seen as ISO 8601 in ``tz`` with its offset (UTC as 'Z')."""
    row: dict[str, object] = {
        "rank": finding.rank, "ip": finding.ip, "flagged": finding.flagged, "score": finding.score,
        "severity": _LABELS[finding.severity], "attack_types": ";".join(finding.attack_types),
        "requests": finding.requests, "errors": finding.errors,
        "first_seen": iso_time(finding.first_seen, tz), "last_seen": iso_time(finding.last_seen, tz),
        "reasons": " | ".join(finding.reasons), "explanation": " | ".join(finding.explanation),
        "internal": finding.internal,
        "evidence": " | ".join(f"{e.kind}:{e.rule_id} x{e.count}" for e in finding.evidence),
    }
    if enriched:
        row.update(enrichment_columns(finding))
    row.update({name: value for name, value in finding.features.items() if name not in row})
    if llm:
        row.update(llm_cells(finding.llm_note))
    return {key: csv_safe(value) for key, value in row.items()}


def render_csv(result: AnalysisResult) -> str:
    """One row per client with every feature, score, severity and flag; llm_* columns (the model's
    note) only when the run asked a model (--explain). Times are in the --tz zone, with its offset."""
    buffer = io.StringIO()
    enriched = result.summary.enrichment is not None
    llm = any(f.llm_note is not None for f in result.findings)
    rows = [csv_row(f, enriched, llm, result.summary.tz) for f in result.findings]
    header = list(rows[0]) if rows else ["rank", "ip", "flagged", "score", "severity"]
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _round(value: float) -> float:
    """Six significant digits: stable across platforms' last-bit float differences."""
    return float(f"{value:.6g}")


_LABELS = {severity: severity.label for severity in Severity}   # an enum property costs a lookup per finding


def finding_json(finding: Finding, enriched: bool = False) -> dict[str, object]:
    """The finding as the JSON report lists it, for orjson (which writes NaN as null); it shares the
    finding's ``features`` dict, so do not change that in place."""
    document: dict[str, object] = {
        "ip": finding.ip, "rank": finding.rank, "flagged": finding.flagged, "score": finding.score,
        "severity": _LABELS[finding.severity], "attack_types": list(finding.attack_types),
        "reasons": list(finding.reasons), "requests": finding.requests, "errors": finding.errors,
        "first_seen": _time(finding.first_seen), "last_seen": _time(finding.last_seen),
        "internal": finding.internal, "evidence": [evidence_json(e) for e in finding.evidence],
        "detector_scores": finding.detector_scores,
        "contributions": {name: [{"feature": c.feature, "value": _round(c.value), "typical": _round(c.typical),
                                  "contribution": _round(c.contribution), "share": round(c.share, 3)}
                                 for c in items] for name, items in finding.contributions.items()},
        "explanation": list(finding.explanation),
        "deviations": [deviation_json(d) for d in finding.deviations],
        "features": finding.features,   # as it is: orjson writes NaN (and infinities) as null
        **({"llm_note": llm_note_json(finding.llm_note)} if finding.llm_note is not None else {}),
    }
    if enriched:
        document.update(reputation=reputation_json(finding.reputation), geo=geo_json(finding.geo))
    return document


def deviation_json(d: Deviation) -> dict[str, object]:
    return {"feature": d.feature, "value": d.value, "typical": d.typical, "z": round(d.z, 2)}


def quiet_json(quiet: QuietFinding) -> dict[str, object]:
    """finding_json of a quiet client's finding (results.QuietFinding), the same keys in the same
    order, made from its fields without making the Finding (a million distinct clients)."""
    return {"ip": quiet.ip, "rank": quiet.rank, "flagged": False, "score": quiet.score,
            "severity": _LABELS[quiet.severity], "attack_types": [], "reasons": [], "requests": quiet.requests,
            "errors": quiet.errors, "first_seen": _time(quiet.first_seen), "last_seen": _time(quiet.last_seen),
            "internal": False, "evidence": [], "detector_scores": quiet.detector_scores, "contributions": {},
            "explanation": [], "deviations": [], "features": quiet.features}


def evidence_json(item: Evidence) -> dict[str, object]:
    return {"kind": item.kind, "rule_id": item.rule_id, "title": item.title, "severity": item.severity.label,
            "attack_type": item.attack_type.value if item.attack_type else None, "count": item.count,
            "tags": list(item.tags), **({"matched": item.matched} if item.matched is not None else {}),
            "examples": [{"source": x.source, "line_number": x.line_number, "raw": x.raw, "rebuilt": x.rebuilt}
                         for x in item.examples]}


def llm_note_json(note: LLMNote) -> dict[str, object]:
    """The model's note, marked advisory: it never changed the finding's score or severity."""
    return {"advisory": True, "status": str(note.status), "model": note.model, "summary": note.summary,
            "attack_type": note.attack_type, "severity": note.severity, "confidence": note.confidence,
            "recommended_actions": list(note.recommended_actions), "detail": note.detail}


def result_json(result: AnalysisResult, version: str = "",
                findings: Sequence[Finding] | None = None) -> dict[str, object]:
    """The JSON report as a dict; ``findings`` (default: all the result's) are those it lists."""
    findings = result.findings if findings is None else findings
    s = result.summary
    summary = {
        "sources": list(s.sources), "formats": s.formats, "total_lines": s.total_lines,
        "parsed_lines": s.parsed_lines, "unparsed_lines": s.unparsed_lines,
        "unparsed_by_reason": s.unparsed_by_reason, "clients": s.clients, "flagged": s.flagged,
        "by_severity": s.by_severity, "time_start": _time(s.time_start), "time_end": _time(s.time_end),
        "detectors": list(s.detectors), "features_used": list(s.features_used), "notes": list(s.notes),
        "excluded": s.excluded, "not_access": s.not_access, "recovered": s.recovered,
    }
    if s.enrichment is not None:
        summary["enrichment"] = enrichment_summary_json(s.enrichment)
    enriched = s.enrichment is not None
    return {"schema_version": SCHEMA_VERSION, "generator": {"name": "log_analyser", "version": version},
            "summary": summary, "findings": [finding_json(f, enriched) for f in findings]}


JSON_BATCH = 256   # findings encoded at once: one orjson call each, not one per finding
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY


def render_json(result: AnalysisResult, version: str = "") -> str:
    """The versioned JSON report (schema: schemas/report.schema.json)."""
    return "".join(stream_json(result, version))


def stream_json(result: AnalysisResult, version: str = "") -> Iterator[str]:
    """The JSON report in pieces, one finding at a time, text identical to the whole document
    indented by orjson: a run over a million distinct clients never holds its JSON at once."""
    for piece in _json_pieces(result, version, encoded=False):
        yield cast(str, piece)


def stream_json_bytes(result: AnalysisResult, version: str = "") -> Iterator[bytes]:
    """stream_json encoded as UTF-8 for a file: the quiet clients' pieces come encoded from Polars,
    without a Python string of each to encode again (a million clients' JSON is over a gigabyte)."""
    for piece in _json_pieces(result, version, encoded=True):
        yield piece.encode() if isinstance(piece, str) else piece


def _json_pieces(result: AnalysisResult, version: str, encoded: bool) -> Iterator[str | bytes]:
    """stream_json's pieces; those of the quiet clients as bytes when ``encoded``."""
    # orjson: the standard library's encoder drops to pure Python when indenting (1 s for a 5M-line log's 25 MB)
    head = orjson.dumps(result_json(result, version, findings=()), option=_JSON_OPTIONS).decode()
    if not result.findings:
        yield head
        return
    yield head[:head.rindex("[]")] + "[\n"
    enriched = result.summary.enrichment is not None
    findings = result.findings
    if isinstance(findings, Findings) and findings.rows is not None and not enriched:
        yield from _items_from_columns(findings, encoded)
        yield "\n  ]\n}\n"
        return
    for start in range(0, len(findings), JSON_BATCH):
        if isinstance(findings, Findings):   # quiet clients encoded from their fields (an enriched run has a tuple)
            batch = [finding_json(f, enriched) if isinstance(f, Finding) else quiet_json(f)
                     for f in findings.parts(start, start + JSON_BATCH)]
        else:
            batch = [finding_json(finding, enriched) for finding in findings[start:start + JSON_BATCH]]
        yield ("" if start == 0 else ",\n") + _joined_items(batch)
    yield "\n  ]\n}\n"


def _joined_items(documents: list[dict[str, object]]) -> str:
    """``documents`` as items of the report's "findings" list, joined by commas, in one orjson call."""
    text = orjson.dumps(documents, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
    # "[\n  {...},\n  {...}\n]": its items one level deep, those of the report's "findings" two
    # (JSON text holds no raw newline but those of the indentation)
    return "  " + text[2:-2].replace("\n", "\n  ")


JSON_ROWS = 8192   # rank positions whose quiet findings are encoded as columns at once


def _items_from_columns(findings: Findings, encoded: bool) -> Iterator[str | bytes]:
    """The report's findings, joined by commas: the loud ones encoded one by one, the quiet ones a
    column at a time (json_columns), each text the one quiet_json's dict encodes to; a piece per
    JSON_ROWS findings, in bytes when ``encoded``. Two pieces are made at once, on two threads
    (most of the work is Polars', which releases the GIL), and given in order."""
    assert findings.rows is not None
    layout = _quiet_layout(findings.rows(0, 0)[0])   # an empty frame: its columns
    loud = sorted(findings.loud)
    starts = iter(range(0, len(findings), JSON_ROWS))
    make = partial(_piece, findings, layout, loud, encoded)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="json") as pool:
        ahead = deque(pool.submit(make, start) for start in itertools.islice(starts, 2))
        first = True
        while ahead:
            piece = ahead.popleft().result()
            following = next(starts, None)
            if following is not None:
                ahead.append(pool.submit(make, following))
            if not first:
                yield b",\n" if encoded else ",\n"
            yield piece
            first = False


def _piece(findings: Findings, layout: tuple[list[str], list[str]], loud: list[int], encoded: bool,
           start: int) -> str | bytes:
    """The findings from rank position ``start`` to the next JSON_ROWS, joined by commas."""
    assert findings.rows is not None
    stop = min(start + JSON_ROWS, len(findings))
    frame, reasoned = findings.rows(start, stop)
    made: pl.Series | list[str] | None = []
    if frame.height:
        made = json_columns.texts(_with_reasons(frame, reasoned), layout[0], layout[1], _encode_one,
                                  written=("_reasons", "_deviations"))
        if made is None:   # a value of a type the columns do not write: the dicts, as everywhere else
            made = [json_columns.indented(quiet_json(f) if isinstance(f, QuietFinding) else finding_json(f, False))
                    for k, f in enumerate(findings.parts(start, stop), start=start) if k not in findings.loud]
    here = loud[bisect.bisect_left(loud, start):bisect.bisect_left(loud, stop)]
    items = pl.concat([
        pl.DataFrame({"position": frame["_position"], "text": pl.Series(made, dtype=pl.String)}),
        pl.DataFrame({"position": pl.Series(here, dtype=pl.Int64), "text": _loud_items(findings, here)},
                     schema={"position": pl.Int64, "text": pl.String})])
    text = items.sort("position")["text"].str.join(",\n")
    return text.cast(pl.Binary).item() if encoded else text.item()


def _with_reasons(frame: pl.DataFrame, reasoned: dict[int, tuple[tuple[str, ...], tuple]]) -> pl.DataFrame:
    """``frame`` with the JSON text of each finding's reasons and deviations (``reasoned``: those
    of the findings that have any, by position), nested as finding_json's are."""
    reasons, deviations = ["[]"] * frame.height, ["[]"] * frame.height
    if reasoned:
        rows = np.searchsorted(frame["_position"].to_numpy(), np.fromiter(reasoned, dtype=np.int64))
        for k, (said, found) in zip(rows.tolist(), reasoned.values(), strict=True):
            reasons[k] = _nested(list(said))
            deviations[k] = _nested([deviation_json(d) for d in found])
    return frame.with_columns(pl.Series("_reasons", reasons, dtype=pl.String),
                              pl.Series("_deviations", deviations, dtype=pl.String))


def _nested(value: list) -> str:
    """A list's JSON as the value of a finding's member, the finding an item of the report's list."""
    if not value:
        return "[]"
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() \
        .replace("\n", "\n      ")


_ITEM_SEPARATOR = "\n    },\n    {\n"   # between two findings indented as the report's items, and nowhere else


def _loud_items(findings: Findings, positions: list[int]) -> list[str]:
    """The loud findings at ``positions``, each indented as an item of the report's "findings"
    list: encoded in one call, then cut apart (JSON text holds no raw newline, and the items'
    own members are indented deeper than the separator)."""
    if not positions:
        return []
    parts = _joined_items([finding_json(findings.loud[k], False) for k in positions]).split(_ITEM_SEPARATOR)
    assert len(parts) == len(positions), "one item per finding"
    last = len(parts) - 1
    return [("" if k == 0 else "    {\n") + part + ("" if k == last else "\n    }") for k, part in enumerate(parts)]


def _quiet_layout(frame: pl.DataFrame) -> tuple[list[str], list[str]]:
    """The template pieces of a quiet finding's JSON and the columns of ``frame`` that fill them."""
    detectors = [name.split(":", 1)[1] for name in frame.columns if name.startswith("_detector:")]
    features = [name for name in frame.columns if not name.startswith("_")]
    sample = quiet_json(QuietFinding("", 0, 0.0, Severity.INFO, 0, 0, datetime.now(UTC), datetime.now(UTC),
                                     dict.fromkeys(detectors, 0.0), dict.fromkeys(features, 0.0)))
    values: dict[tuple[str, ...], str] = {
        ("ip",): "_client_ip", ("rank",): "_rank", ("score",): "_score", ("severity",): "_severity",
        ("reasons",): "_reasons", ("requests",): "_requests", ("errors",): "_errors",
        ("first_seen",): "_first_seen", ("last_seen",): "_last_seen", ("deviations",): "_deviations",
        **{("detector_scores", name): f"_detector:{name}" for name in detectors},
        **{("features", name): name for name in features}}
    pieces, ordered = json_columns.template(sample, list(values))
    return pieces, [values[path] for path in ordered]


def _encode_one(column: str, value: object) -> str:
    """One value the column expressions leave to orjson (a string it escapes, a time out of range)."""
    return orjson.dumps(_time(value) if isinstance(value, datetime) else value).decode()


def render_pdf(result: AnalysisResult, version: str = "", pages: int = 20) -> bytes:
    """The PDF report (report_pdf; needs the ``report`` extra)."""
    from log_analyser_core.report import pdf as report_pdf

    return report_pdf.render_pdf(result, version=version, pages=pages)


def render_html(result: AnalysisResult, version: str = "") -> str:
    """The self-contained HTML dashboard (report_html; needs the ``report`` extra)."""
    from log_analyser_core.report import html as report_html

    return report_html.render_html(result, version=version)


Renderer = Callable[..., str | bytes]
WRITERS: dict[str, Renderer] = {
    "table": render_table, "csv": render_csv, "json": render_json, "pdf": render_pdf, "html": render_html,
    "blocklist": exports.render_blocklist, "nginx": exports.render_nginx, "apache": exports.render_apache,
    "iptables": exports.render_iptables, "ip6tables": exports.render_ip6tables,
    "nftables": exports.render_nftables, "crowdsec": exports.render_crowdsec, "ecs": exports.render_ecs,
    "markdown": markdown.render_markdown, "junit": junit.render_junit,
}
# Longest match wins, so 'x.crowdsec.json' is CrowdSec and 'x.json' the JSON report.
EXTENSIONS = {
    ".csv": "csv", ".json": "json", ".txt": "table", ".pdf": "pdf", ".html": "html", ".htm": "html",
    ".jsonl": "ecs", ".ndjson": "ecs", ".ecs.json": "ecs", ".crowdsec.json": "crowdsec",
    ".conf": "nginx", ".nginx": "nginx", ".nginx.conf": "nginx", ".apache.conf": "apache", ".htaccess": "apache",
    ".iptables": "iptables", ".ip6tables": "ip6tables", ".nft": "nftables", ".nftables": "nftables",
    ".blocklist": "blocklist", ".ips": "blocklist", ".md": "markdown", ".markdown": "markdown",
    ".xml": "junit", ".junit.xml": "junit",
}
# A .txt file named like a blocklist is one: '-o blocklist.txt', '-o denylist-high.txt'.
BLOCKLIST_NAMES = ("blocklist", "blacklist", "denylist", "blocked")


def format_for(path: str, override: str | None = None) -> tuple[str, str]:
    """(writer name, path) for an ``-o`` argument: ``override`` if given, else a ``FORMAT:PATH``
    prefix (``nginx:deny.inc``), else the file name's extension."""
    if override:
        if override not in WRITERS:
            raise ConfigError(f"unknown output format {override!r}", hint=f"one of {', '.join(WRITERS)}")
        return override, path
    prefix, colon, rest = path.partition(":")
    if colon and prefix in WRITERS and rest:
        return prefix, rest
    name = Path(path).name.lower()
    matches = [suffix for suffix in EXTENSIONS if name.endswith(suffix)]
    if not matches:
        raise ConfigError(f"cannot tell the report format from {path!r}",
                          hint="use an extension such as .csv .json .html .pdf .conf .nft .jsonl, "
                               "FORMAT:PATH or --output-format")
    kind = EXTENSIONS[max(matches, key=len)]
    if kind == "table" and any(word in name for word in BLOCKLIST_NAMES):
        kind = "blocklist"
    return kind, path


def stream(kind: str, result: AnalysisResult, **options: object) -> Iterator[str | bytes]:
    """``render`` in pieces: the JSON report one finding at a time, the others whole."""
    if kind == "json":
        version = options.get("version", "")
        return stream_json_bytes(result, version if isinstance(version, str) else "")
    return iter([render(kind, result, **options)])


def render(kind: str, result: AnalysisResult, **options: object) -> str | bytes:
    """Run writer ``kind``, passing only the ``options`` its signature accepts (e.g. ``top`` to the
    table, ``version`` to JSON, ``severity`` to blocklists). PDF returns bytes, the rest text."""
    writer = WRITERS[kind]
    accepted = inspect.signature(writer).parameters
    return writer(result, **{key: value for key, value in options.items() if key in accepted})
