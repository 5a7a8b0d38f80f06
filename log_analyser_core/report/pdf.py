"""The PDF report: a cover summary, charts, a findings table and a page per top finding.

fpdf2 lays the pages out; report.charts draws the charts as pictures. Text uses the DejaVu TrueType
fonts that matplotlib ships (core PDF fonts are Latin-1 only and fail on a Cyrillic user agent). Strings from
the log have control characters escaped and are wrapped (long words broken), so none leaves the page.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from log_analyser_core.errors import MissingExtraError
from log_analyser_core.report import charts, drawing, model
from log_analyser_core.report.text import terminal_safe
from log_analyser_core.results import (
    REBUILT_MARK,
    REBUILT_NOTE,
    AnalysisResult,
    ExampleLine,
    FeatureInfo,
    Finding,
    flagged_findings,
)

log = logging.getLogger(__name__)
FONT = "DejaVu"
MONO = "DejaVuMono"
TABLE_ROWS = 40          # rows in the findings table
CELL_CHARS = 300         # characters of one value in a table cell or heading (a row must fit a page)
PARAGRAPH_CHARS = 2000   # characters of one paragraph (paragraphs may break across pages)
EXAMPLES_PER_EVIDENCE = 5
SAMPLE_LINES = 3         # first log lines of each client on its page
EXAMPLE_CHARS = 600      # an example log line is cut after this many characters
RGB = {name: tuple(int(code[i:i + 2], 16) for i in (1, 3, 5)) for name, code in model.SEVERITY_HEX.items()}


def _fpdf():
    try:
        import fpdf
    except ImportError:
        raise MissingExtraError("the PDF report", "report", "fpdf2") from None
    return fpdf


def _font_dir() -> Path:
    """matplotlib's bundled DejaVu fonts: Unicode TrueType fonts without copying one into the repo."""
    return drawing.font_dir()


def _safe(pdf, text: object, limit: int = CELL_CHARS) -> str:
    """Control characters escaped, and characters the fonts cannot draw (CJK, most emoji) shown as
    ``\\uXXXX`` instead of silently vanishing from the evidence; clipped after ``limit`` characters
    with a visible marker, so that no string from a log or an API can make a table row taller than
    a page (fpdf2 refuses such a row)."""
    text = str(text)
    if len(text) > limit:
        text = f"{text[:limit]}… [{len(text) - limit:,} more characters]"
    lines = (terminal_safe(line) for line in text.split("\n"))   # our own line breaks stay
    return "\n".join("".join(c if ord(c) in pdf.glyphs else _escape(c) for c in line) for line in lines)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _document(title: str):
    fpdf: Any = _fpdf()

    class Report(fpdf.FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(FONT, size=7)
            self.set_text_color(120, 120, 120)
            self.cell(0, 5, f"{title}  ·  page {self.page_no()} of {{nb}}", align="C")

    pdf = Report(format="A4")
    fonts = _font_dir()
    pdf.add_font(FONT, "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font(FONT, "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_font(MONO, "", str(fonts / "DejaVuSansMono.ttf"))
    # code points every font of the report can draw (the monospace font has the fewest)
    pdf.glyphs = frozenset(pdf.fonts["dejavumono"].cmap) & frozenset(pdf.fonts["dejavu"].cmap)
    pdf.set_auto_page_break(True, margin=16)
    pdf.set_margins(15, 15, 15)
    pdf.set_title(title)
    pdf.set_creator("log_analyser")
    return pdf


def _heading(pdf, text: str, size: int = 14) -> None:
    pdf.set_font(FONT, "B", size)
    pdf.set_text_color(20, 20, 20)
    _lines(pdf, _safe(pdf, text), size * 0.5)
    pdf.ln(1.5)


def _para(pdf, text: str, size: float = 9.5, font: str = FONT, colour=(30, 30, 30)) -> None:
    pdf.set_font(font, "", size)
    pdf.set_text_color(*colour)
    _lines(pdf, _safe(pdf, text, PARAGRAPH_CHARS), size * 0.48)


def _lines(pdf, text: str, height: float) -> None:
    """``text`` across the page in the current font, one cell per line, wrapped as fpdf2's multi_cell
    wraps words (after the last space that fits, else mid-word); page breaks come between lines. fpdf2
    measures a growing line again at every character it adds, which made paragraphs most of the PDF's
    time; here each character is looked up once."""
    for line in _word_wrap(text, pdf.current_font.cw, pdf.font_size_pt * 0.001 / pdf.k, pdf.epw - 2 * pdf.c_margin):
        pdf.cell(0, height, line, new_x="LMARGIN", new_y="NEXT")


def _word_wrap(text: str, widths, scale: float, room: float) -> list[str]:
    """``text`` (our own line breaks kept) cut into lines at most ``room`` wide, a character being
    ``widths[ord(char)] * scale`` wide. As fpdf2's WORD wrap: a space that does not fit ends the line
    and is dropped; else the line ends at its last space (dropped), else before the character."""
    lines = []
    for paragraph in text.split("\n"):
        start, width, space = 0, 0.0, -1
        i = 0
        while i < len(paragraph):
            advance = widths[ord(paragraph[i])] * scale
            if width + advance > room + 1e-9 and i > start:
                if paragraph[i] == " ":
                    lines.append(paragraph[start:i])
                    start = i + 1
                elif space >= start:
                    lines.append(paragraph[start:space])
                    start = space + 1
                else:
                    lines.append(paragraph[start:i])
                    start = i
                i, width, space = start, 0.0, -1
                continue
            if paragraph[i] == " ":
                space = i
            width += advance
            i += 1
        lines.append(paragraph[start:])
    return lines


def _plain(pdf, size: float) -> None:
    """Reset colours and font before a table (tables take the current fill and text colour)."""
    pdf.set_fill_color(255, 255, 255)
    pdf.set_text_color(30, 30, 30)
    pdf.set_font(FONT, "", size)


def _pairs(pdf, rows: list[tuple[str, str]]) -> None:
    """A two-column 'label: value' block; values wrap inside their column."""
    _plain(pdf, 9.5)
    with pdf.table(col_widths=(45, 135), first_row_as_headings=False, borders_layout="NONE", v_align="TOP",
                   text_align=("LEFT", "LEFT"), wrapmode="WORD", line_height=5) as table:
        for label, value in rows:
            row = table.row()
            row.cell(label)
            row.cell(_safe(pdf, value))
    pdf.ln(2)


def _cover(pdf, result: AnalysisResult, version: str) -> None:
    s = result.summary
    pdf.add_page()
    _heading(pdf, "Web access log analysis", 20)
    _para(pdf, f"log_analyser {version}", 9, colour=(110, 110, 110))
    pdf.ln(4)
    unparsed = ", ".join(f"{reason} {n:,}" for reason, n in s.unparsed_by_reason.items())
    _pairs(pdf, [
        ("Log files", "\n".join(f"{src} ({s.formats.get(src, '?')})" for src in s.sources) or "-"),
        ("Time span", model.fmt_span(s.time_start, s.time_end, s.tz) or "-"),
        ("Lines", f"{s.total_lines:,} read, {s.parsed_lines:,} parsed, {s.unparsed_lines:,} unparsed"
                  + (f" ({unparsed})" if unparsed else "")),
        ("Clients", f"{s.clients:,} distinct addresses, {s.flagged:,} flagged"),
        ("Stages that ran", ", ".join(stages_run(result)) or "none"),
    ])
    _severity_boxes(pdf, s.by_severity)
    for note in s.notes:
        _para(pdf, f"Note: {note}", 9, colour=(150, 60, 0))
    flagged = flagged_findings(result.findings)[:5]
    if flagged:
        pdf.ln(3)
        _heading(pdf, "Most suspicious clients", 12)
        for f in flagged:
            reason = f.reasons[0] if f.reasons else ""
            _para(pdf, f"#{f.rank}  {f.ip}  score {f.score:.1f} ({f.severity.label}): {reason}")


STAGE_NAMES = {"iforest": "Isolation Forest", "autoencoder": "autoencoder", "rules": "behaviour rules",
               "signatures": "payload signatures", "sigma": "Sigma rules"}


def stages_run(result: AnalysisResult) -> list[str]:
    """What looked at this log, by name: the detectors and rule stages in the summary, then
    enrichment and the language model when they ran."""
    s = result.summary
    names = [STAGE_NAMES.get(stage, stage) for stage in s.detectors]
    if s.enrichment is not None:
        names.append("enrichment (reputation, country and network)")
    if any(f.llm_note is not None for f in result.findings):
        names.append("language-model notes (advisory)")
    return names


def _severity_boxes(pdf, by_severity: dict[str, int]) -> None:
    """One coloured box per severity with its count of flagged clients."""
    pdf.ln(2)
    x, y, width = pdf.l_margin, pdf.get_y(), 34
    for i, (label, count) in enumerate(by_severity.items()):
        pdf.set_fill_color(*RGB[label])
        pdf.rect(x + i * (width + 2), y, width, 16, style="F")
        pdf.set_xy(x + i * (width + 2), y + 1.5)
        pdf.set_text_color(255, 255, 255)
        pdf.set_font(FONT, "B", 13)
        pdf.cell(width, 7, f"{count:,}", align="C")
        pdf.set_xy(x + i * (width + 2), y + 8.5)
        pdf.set_font(FONT, "", 8)
        pdf.cell(width, 5, label, align="C")
    pdf.set_xy(x, y + 20)


def _charts(pdf, result: AnalysisResult) -> None:
    figures = charts.standard_charts(result, charts.LIGHT)
    pdf.add_page()
    _heading(pdf, "Overview")
    pdf.image(charts.to_image(figures.pop("timeline")), w=180)
    pdf.ln(3)
    names = list(figures)
    for i in range(0, len(names), 2):
        y = pdf.get_y()
        if y + 64 > pdf.h - pdf.b_margin:
            pdf.add_page()
            y = pdf.get_y()
        for j, name in enumerate(names[i:i + 2]):
            pdf.image(charts.to_image(figures[name]), x=pdf.l_margin + j * 91, y=y, w=89)
        pdf.set_y(y + 64)


def _findings_table(pdf, result: AnalysisResult) -> None:
    pdf.add_page()
    _heading(pdf, "Findings")
    flagged, unflagged = model.flagged_then_next(result, TABLE_ROWS)
    if flagged:
        more = f" of {result.summary.flagged:,}" if result.summary.flagged > len(flagged) else ""
        text = (f"The {len(flagged):,}{more} flagged clients, worst first" if len(flagged) > 1 or more
                else "The flagged client")
    else:
        text = "No client was flagged"
    if unflagged:
        which = f"{len(unflagged)} highest-scoring clients" if len(unflagged) > 1 else "highest-scoring client"
        text += f"; then the {which} below the threshold, marked 'not flagged'"
    _para(pdf, f"{text}. {len(result.findings):,} clients in all.", 9)
    pdf.ln(2)
    rows = flagged + unflagged
    if not rows:
        return
    _plain(pdf, 7.5)
    with pdf.table(col_widths=(8, 32, 11, 15, 17, 13, 28, 56), wrapmode="WORD", line_height=4,
                   text_align=("RIGHT", "LEFT", "RIGHT", "LEFT", "RIGHT", "RIGHT", "LEFT", "LEFT"),
                   headings_style=_fpdf().fonts.FontFace(emphasis="BOLD", fill_color=(230, 233, 238))) as table:
        table.row(["#", "client", "score", "severity", "requests", "errors", "attack types", "top reason"])
        for f in rows:
            severity = f.severity.label if f.flagged else "not flagged"
            table.row([str(f.rank), _safe(pdf, f.ip), f"{f.score:.1f}", severity, f"{f.requests:,}",
                       f"{f.errors:,}", ", ".join(f.attack_types) or "-",
                       _safe(pdf, f.reasons[0]) if f.reasons and f.flagged else ""])


def _finding_page(pdf, finding: Finding, typical: dict[str, float], info: dict[str, FeatureInfo],
                  samples: list[ExampleLine], tz: str) -> None:
    pdf.add_page()
    _heading(pdf, f"#{finding.rank}  {finding.ip}")
    label = finding.severity.label if finding.flagged else "not flagged"
    pdf.set_fill_color(*RGB[finding.severity.label])
    pdf.set_text_color(255, 255, 255)
    pdf.set_font(FONT, "B", 10)
    pdf.cell(60, 7, f" score {finding.score:.1f} · {label}", fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    rows = [("Requests", f"{finding.requests:,} ({finding.errors:,} errors)"),
            ("Active", f"{model.fmt_time(finding.first_seen, tz)} to {model.fmt_time(finding.last_seen, tz)}"),
            ("Attack types", ", ".join(finding.attack_types) or "none named"),
            ("Detector scores", ", ".join(f"{k} {v:.1f}" for k, v in finding.detector_scores.items()) or "-")]
    rows += [(name, text) for name, text in (("Location", model.geo_text(finding.geo)),
                                             ("Reputation", model.reputation_text(finding.reputation))) if text]
    _pairs(pdf, rows)
    if finding.reasons:
        _heading(pdf, "Why it stands out", 11)
        for reason in finding.reasons:
            _para(pdf, f"• {reason}")
        pdf.ln(2)
    _bars_table(pdf, model.feature_bars(finding, typical, info))
    _evidence(pdf, finding)
    lines = model.llm_lines(finding.llm_note)
    if lines:
        _heading(pdf, "Language-model note", 11)
        for line in lines:
            _para(pdf, line)
        pdf.ln(2)
    if samples:
        _heading(pdf, "First requests", 11)
        for example in samples:
            _example(pdf, example)
    shown = [x for item in finding.evidence for x in item.examples[:EXAMPLES_PER_EVIDENCE]]
    if model.any_rebuilt([*shown, *samples]):
        pdf.ln(2)
        _para(pdf, f"({REBUILT_MARK}): {REBUILT_NOTE}", 8, colour=(100, 100, 100))


def _bars_table(pdf, bars: list[model.FeatureBar]) -> None:
    if not bars:
        return
    _heading(pdf, "Client compared with the typical client", 11)
    _plain(pdf, 8)
    with pdf.table(col_widths=(80, 30, 30, 20), wrapmode="WORD", line_height=4.5,
                   text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT")) as table:
        table.row(["feature", "this client", "typical", "z"])
        for bar in bars:
            table.row([f"{bar.description} ({bar.unit})", model.fmt_number(bar.value), model.fmt_number(bar.typical),
                       f"{bar.z:.1f}" if bar.z is not None else ""])
    pdf.ln(3)


def _evidence(pdf, finding: Finding) -> None:
    if not finding.evidence:
        return
    _heading(pdf, "Evidence", 11)
    for item in finding.evidence:
        _para(pdf, model.evidence_heading(item), 9.5)
        if item.tags:
            _para(pdf, "tags: " + ", ".join(item.tags), 8, colour=(100, 100, 100))
        for example in item.examples[:EXAMPLES_PER_EVIDENCE]:
            _example(pdf, example)
        pdf.ln(2)


def _example(pdf, example: ExampleLine) -> None:
    """A log line in monospace, cut after EXAMPLE_CHARS and wrapped; '(rebuilt)' after its line
    number when it is not the logged text."""
    raw = example.raw if len(example.raw) <= EXAMPLE_CHARS else example.raw[:EXAMPLE_CHARS] + "…"
    size = 7.5
    pdf.set_font(MONO, "", size)
    pdf.set_text_color(60, 60, 60)
    for line in _mono_lines(pdf, _safe(pdf, f"{model.example_place(example)}: {raw}", PARAGRAPH_CHARS)):
        pdf.cell(0, size * 0.48, line, new_x="LMARGIN", new_y="NEXT")


def _mono_lines(pdf, text: str) -> list[str]:
    """``text`` in lines that fit the page in the (current) monospace font, broken at the last space
    that fits, else mid-word. Every glyph of the font is equally wide, so a line holds a fixed number
    of characters; fpdf2's multi_cell measures the growing line again at each character, which made
    the example lines (up to 600 characters each) most of the time the PDF took."""
    per_line = max(1, int(pdf.epw / pdf.get_string_width("M")))
    lines = []
    for rest in text.split("\n"):
        while len(rest) > per_line:
            cut = rest.rfind(" ", 0, per_line + 1)
            lines.append(rest[:cut] if cut > 0 else rest[:per_line])
            rest = rest[cut + 1:] if cut > 0 else rest[per_line:]
        lines.append(rest)
    return lines


def render_pdf(result: AnalysisResult, version: str = "", pages: int = 20) -> bytes:
    """The whole PDF report as bytes; ``pages`` = most finding pages (flagged clients, by rank)."""
    pdf = _document("log_analyser report")
    end = result.summary.time_end
    pdf.set_creation_date(end if end else datetime(2000, 1, 1, tzinfo=UTC))  # deterministic output
    _cover(pdf, result, version)
    _charts(pdf, result)
    _findings_table(pdf, result)
    typical = model.typical_values(result)
    flagged = flagged_findings(result.findings)[:pages]
    samples = model.sample_requests(result, [f.ip for f in flagged], SAMPLE_LINES)
    info = model.feature_index(result)
    for finding in flagged:
        _finding_page(pdf, finding, typical, info, samples.get(finding.ip, []), result.summary.tz)
    return bytes(pdf.output())
