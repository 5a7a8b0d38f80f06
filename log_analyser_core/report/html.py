"""The HTML report: one self-contained page (no network) with summary cards, charts, a sortable and
filterable findings table and a detail panel per client.

Every string from the log is escaped here, on the server side; the page's own script only sorts,
filters and toggles what is already there. A strict Content-Security-Policy allows nothing but that
script and stylesheet (by hash) and ``data:`` images (the charts, SVG drawn by report.charts).
"""
from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable

from log_analyser_core.report import charts, model
from log_analyser_core.report.html_assets import CSS, JS
from log_analyser_core.report.text import terminal_safe
from log_analyser_core.results import (
    REBUILT_MARK,
    REBUILT_NOTE,
    AnalysisResult,
    ExampleLine,
    FeatureInfo,
    Finding,
    Severity,
)

TABLE_ROWS = 1000        # findings listed (flagged first); each listed client gets a detail panel
SAMPLE_LINES = 5         # first log lines of a client shown in its panel
EXAMPLES_PER_EVIDENCE = 5
EXAMPLE_CHARS = 2000


def esc(value: object) -> str:
    """Text safe in HTML content and quoted attributes, control and bidi characters made visible."""
    return html.escape(terminal_safe(str(value)), quote=True)


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def content_security_policy() -> str:
    """The page's CSP: its own inline script and style by hash, data: images, nothing else."""
    return (f"default-src 'none'; script-src {_hash(JS)}; style-src {_hash(CSS)}; img-src data:; "
            "base-uri 'none'; form-action 'none'")


def _svg_image(fig, alt: str, wide: bool = False) -> str:
    data = base64.b64encode(charts.to_svg(fig)).decode()
    cls = ' class="wide"' if wide else ""
    return f'<figure{cls}><img alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}"></figure>'


def _cards(result: AnalysisResult) -> str:
    s = result.summary
    cards = [(f"{s.parsed_lines:,}", "lines parsed", ""), (f"{s.unparsed_lines:,}", "lines unparsed", ""),
             (f"{s.clients:,}", "clients", ""), (f"{s.flagged:,}", "flagged", "")]
    cards += [(f"{n:,}", label, f" sev-{label}") for label, n in s.by_severity.items()]
    return "".join(f'<div class="card{cls}"><b>{esc(value)}</b><span>{esc(label)}</span></div>'
                   for value, label, cls in cards)


def _charts(result: AnalysisResult) -> str:
    figures = charts.standard_charts(result, charts.DARK, timeline_size=(13.0, 2.6))
    titles = {"timeline": "Requests over time", "top_ips": "Top flagged clients", "attack_types": "Attack types",
              "status_codes": "Status codes", "countries": "Countries"}
    return "".join(_svg_image(fig, titles[name], wide=name == "timeline") for name, fig in figures.items())


def _severity_badge(finding: Finding) -> str:
    if not finding.flagged:
        return '<span class="sev none">-</span>'
    label = finding.severity.label
    return f'<span class="sev sev-{label}">{label}</span>'


def _row(finding: Finding, index: int, enriched: bool) -> str:
    types = " ".join(finding.attack_types)
    reason = finding.reasons[0] if finding.reasons and finding.flagged else ""
    cells = [
        f'<td class="num">{finding.rank}</td>',
        f'<td class="ip">{esc(finding.ip)}</td>',
        f'<td class="num">{finding.score:.1f}</td>',
        f'<td data-v="{int(finding.severity) if finding.flagged else -1}">{_severity_badge(finding)}</td>',
        f'<td class="num" data-v="{finding.requests}">{finding.requests:,}</td>',
        f'<td class="num" data-v="{finding.errors}">{finding.errors:,}</td>',
        f'<td class="types">{esc(", ".join(finding.attack_types))}</td>',
        *([f"<td>{esc(model.country(finding))}</td>"] if enriched else []),
        f'<td class="reason">{esc(reason)}</td>',
    ]
    return (f'<tr tabindex="0" data-detail="d-{index}" data-flagged="{int(finding.flagged)}" '
            f'data-sev="{int(finding.severity)}" data-types="{esc(types)}" '
            f'data-country="{esc(model.country(finding))}">'
            + "".join(cells) + "</tr>")


def _options(values: list[str], everything: str) -> str:
    return f'<option value="">{esc(everything)}</option>' + "".join(
        f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)


def _filters(findings: list[Finding], enriched: bool) -> str:
    """Severity, attack type, country (only when a client has one: enrichment ran) and free-text filters."""
    types = sorted({t for f in findings for t in f.attack_types})
    countries = sorted({model.country(f) for f in findings if model.country(f)})
    country = (f'<label>country <select id="f-country">{_options(countries, "any")}</select></label>'
               if enriched else "")
    severities = "".join(f'<option value="{int(s)}">{s.label} or worse</option>' for s in reversed(Severity))
    return ('<div class="filters">'
            '<label>severity <select id="f-sev"><option value="">any</option>'
            f'<option value="flagged">flagged</option>{severities}</select></label>'
            f'<label>attack type <select id="f-type">{_options(types, "any")}</select></label>'
            f'{country}'
            '<input id="f-text" type="search" placeholder="search address, reason, type" aria-label="search">'
            '<span id="count"></span></div>')


def _table(findings: list[Finding], enriched: bool) -> str:
    columns = (("#", "num"), ("client", "text"), ("score", "num"), ("severity", "num"), ("requests", "num"),
               ("errors", "num"), ("attack types", "text"), *([("country", "text")] if enriched else []),
               ("top reason", "text"))
    head = "".join(f'<th data-type="{kind}" scope="col">{name}</th>' for name, kind in columns)
    body = "".join(_row(f, i, enriched) for i, f in enumerate(findings))
    return (f'<div class="tablewrap"><table id="findings"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _bars(bars: list[model.FeatureBar]) -> str:
    if not bars:
        return ""
    rows = []
    for bar in bars:
        top = max(bar.value, bar.typical, 1e-12)
        width_client, width_typical = 100 * max(bar.value, 0) / top, 100 * max(bar.typical, 0) / top
        z = f", z {bar.z:.1f}" if bar.z is not None else ""
        rows.append(
            f"<tr><td>{esc(bar.description)} <span class=legend>({esc(bar.unit)}{z})</span></td>"
            f'<td class="num">{esc(model.fmt_number(bar.value))}</td>'
            f'<td class="num">{esc(model.fmt_number(bar.typical))}</td>'
            '<td><svg class="bar" viewBox="0 0 100 14" preserveAspectRatio="none" role="img" '
            f'aria-label="client versus typical"><rect class="client" y="1" height="5" width="{width_client:.2f}"/>'
            f'<rect class="typical" y="8" height="5" width="{width_typical:.2f}"/></svg></td></tr>')
    legend = '<p class="legend"><i class="client"></i>this client<i class="typical"></i>typical client</p>'
    return ('<h3>Compared with the typical client</h3><table class="bars"><thead><tr><th>feature</th>'
            f'<th>client</th><th>typical</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>{legend}')


def _pre(example: ExampleLine) -> str:
    """A log line with where it came from, marked when it is rebuilt rather than the logged text."""
    raw = example.raw if len(example.raw) <= EXAMPLE_CHARS else example.raw[:EXAMPLE_CHARS] + "…"
    mark = (f' <span class="rebuilt" title="{esc(REBUILT_NOTE)}">({REBUILT_MARK})</span>'
            if example.rebuilt else "")
    return f"<pre>{esc(example.source)}:{example.line_number}{mark}: {esc(raw)}</pre>"


def _rebuilt_note(examples: Iterable[ExampleLine]) -> str:
    """The mark explained once per panel, when the panel shows a rebuilt line."""
    if not model.any_rebuilt(examples):
        return ""
    return f'<p class="legend"><span class="rebuilt">({REBUILT_MARK})</span>: {esc(REBUILT_NOTE)}</p>'


def _evidence(finding: Finding) -> str:
    if not finding.evidence:
        return ""
    parts = ["<h3>Evidence</h3>"]
    for item in finding.evidence:
        parts.append(f"<p>{esc(model.evidence_heading(item))}</p>")
        if item.tags:
            parts.append(f'<p class="legend">tags: {esc(", ".join(item.tags))}</p>')
        parts.extend(_pre(example) for example in item.examples[:EXAMPLES_PER_EVIDENCE])
    return "".join(parts)


def _facts(finding: Finding, tz: str) -> str:
    facts = [("score", f"{finding.score:.1f} / 100"), ("severity", finding.severity.label if finding.flagged
                                                           else f"{finding.severity.label} (not flagged)"),
             ("requests", f"{finding.requests:,} ({finding.errors:,} errors)"),
             ("first seen", model.fmt_time(finding.first_seen, tz)),
             ("last seen", model.fmt_time(finding.last_seen, tz)),
             ("attack types", ", ".join(finding.attack_types) or "none named"),
             ("detectors", ", ".join(f"{k} {v:.1f}" for k, v in finding.detector_scores.items()) or "-")]
    facts += [(k, v) for k, v in (("location", model.geo_text(finding.geo)),
                                  ("reputation", model.reputation_text(finding.reputation))) if v]
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"


def _detail(finding: Finding, index: int, typical: dict[str, float], info: dict[str, FeatureInfo],
            samples: list[ExampleLine], tz: str) -> str:
    parts = [f'<section class="detail" id="d-{index}" hidden><h2>#{finding.rank} {esc(finding.ip)}</h2>',
             _facts(finding, tz)]
    if finding.reasons:
        parts.append("<h3>Why it stands out</h3><ul>"
                     + "".join(f"<li>{esc(r)}</li>" for r in finding.reasons) + "</ul>")
    parts.append(_bars(model.feature_bars(finding, typical, info)))
    parts.append(_evidence(finding))
    note = model.llm_lines(finding.llm_note)
    if note:
        parts.append("<h3>Language-model note</h3>" + "".join(f"<p>{esc(line)}</p>" for line in note))
    if samples:
        parts.append("<h3>First requests</h3>" + "".join(_pre(example) for example in samples))
    shown = [x for item in finding.evidence for x in item.examples[:EXAMPLES_PER_EVIDENCE]]
    parts.append(_rebuilt_note([*shown, *samples]))
    return "".join(parts) + "</section>"


def render_html(result: AnalysisResult, version: str = "") -> str:
    """The self-contained HTML dashboard as one string."""
    s = result.summary
    findings = model.pick_findings(result, TABLE_ROWS)
    enriched = any(model.country(f) for f in findings)   # a country column only when it would hold one
    typical = model.typical_values(result)
    samples = model.sample_requests(result, [f.ip for f in findings], SAMPLE_LINES)
    info = model.feature_index(result)
    details = "".join(_detail(f, i, typical, info, samples.get(f.ip, []), s.tz) for i, f in enumerate(findings))
    span = model.fmt_span(s.time_start, s.time_end, s.tz) or "-"
    notes = "".join(f'<p class="notes">note: {esc(n)}</p>' for n in s.notes)
    table = _filters(findings, enriched) + _table(findings, enriched)
    listed = (f"<p class=meta>{len(findings):,} of {len(result.findings):,} clients listed, flagged first.</p>"
              if len(findings) < len(result.findings) else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(content_security_policy())}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="log_analyser {esc(version)}">
<title>log_analyser report</title>
<style>{CSS}</style>
</head><body>
<header><h1>Web access log analysis</h1>
<p class="meta">{esc(", ".join(s.sources))} · {esc(span)}</p></header>
<main>
<section class="cards">{_cards(result)}</section>{notes}
<section class="charts">{_charts(result)}</section>
<div class="layout"><section><h2>Findings</h2>{listed}{table}</section>
<aside id="detail"><p id="detail-empty" class="empty">Select a client to see its evidence.</p>{details}</aside>
</div></main>
<script>{JS}</script>
</body></html>
"""
