"""The PDF report, rendered back with poppler (pdftotext, pdftoppm, pdfinfo): text, page count,
Unicode, nothing off the page."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import reportdata
from conftest import DATA
from test_reporting import check_golden, in_zone

import reporting
from log_analyser_core.errors import MissingExtraError


def poppler(tool: str, *args: str) -> str:
    assert shutil.which(tool), f"install Debian's poppler-utils for {tool}"
    return subprocess.run([tool, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def hostile_pdf(hostile_result, tmp_path_factory):
    path = tmp_path_factory.mktemp("pdf") / "report.pdf"
    path.write_bytes(reporting.render_pdf(hostile_result, version="test"))
    return path


def pages(path) -> int:
    return int(re.search(r"^Pages:\s+(\d+)", poppler("pdfinfo", str(path)), re.M).group(1))


def text(path, *args: str) -> str:
    return poppler("pdftotext", "-enc", "UTF-8", *args, str(path), "-")


def test_small_report_text_golden_and_page_count(small_result, tmp_path):
    path = tmp_path / "small.pdf"
    path.write_bytes(reporting.render_pdf(small_result, version="test"))
    # cover, charts, findings table, and the one flagged client, whose rule hits run to a second page
    assert pages(path) == 5
    check_golden("small.pdf.txt", text(path))


def test_tz_shows_the_pdf_time_span_and_client_times_in_the_zone(small_result, tmp_path):
    path = tmp_path / "berlin.pdf"
    path.write_bytes(reporting.render_pdf(in_zone(small_result, "Europe/Berlin"), version="test"))
    content = text(path)
    assert "2026-03-10 03:10:00 CET to 2026-03-10 09:08:00 CET (Europe/Berlin)" in content   # the cover
    assert "2026-03-10 03:10:00 CET to 2026-03-10 03:10:04 CET" in content   # the flagged client's page
    assert "UTC" not in content


def page_tops(path) -> list[str]:
    """The first line of text on every page."""
    return [text(path, "-f", str(n), "-l", str(n)).strip().splitlines()[0] for n in range(1, pages(path) + 1)]


def test_page_per_flagged_finding_up_to_the_limit(hostile_result, hostile_pdf, tmp_path):
    flagged = [f for f in hostile_result.findings if f.flagged]
    tops = page_tops(hostile_pdf)
    assert tops[:3] == ["Web access log analysis", "Overview", "Findings"]
    starts = [top for top in tops if top.startswith("#")]
    assert starts == [f"#{f.rank} {f.ip}" for f in flagged]    # each finding starts a page, in rank order
    assert len(tops) >= 3 + len(flagged)
    limited = tmp_path / "limited.pdf"
    limited.write_bytes(reporting.render_pdf(hostile_result, pages=2))
    assert [top for top in page_tops(limited) if top.startswith("#")] == starts[:2]


def test_every_section_is_rendered(hostile_result, hostile_pdf):
    content = text(hostile_pdf)
    summary = hostile_result.summary
    assert "Web access log analysis" in content
    assert f"{summary.total_lines:,} read, {summary.parsed_lines:,} parsed" in content
    assert "Requests over time" not in content   # charts are pictures, not text
    for finding in [f for f in hostile_result.findings if f.flagged]:
        assert f"#{finding.rank}  {finding.ip}" in content or f"#{finding.rank} {finding.ip}" in content
        assert finding.evidence[0].rule_id in content
    for phrase in ("Why it stands out", "Client compared with the typical client", "Evidence",
                   "Language-model note", "abuse confidence 87/100", "ООО Ромашка", "test-model",
                   "block at the edge", "First requests"):
        assert phrase in content, phrase


def test_cyrillic_user_agent_and_escaped_controls(hostile_pdf):
    content = text(hostile_pdf)
    assert "Тестовый агент" in content
    assert "\x1b" not in content and "\u202e" not in content
    assert "\\x1b[31m" in content and "\\u202e" in content


def test_no_text_off_the_page(hostile_pdf):
    # the 1,000-character path and the long user agents wrap inside the margins
    layout = text(hostile_pdf, "-bbox")
    width = float(re.search(r'<page width="([\d.]+)"', layout).group(1))
    right_edges = [float(x) for x in re.findall(r'xMax="([\d.]+)"', layout)]
    assert right_edges and max(right_edges) <= width - 20   # inside the 15 mm (42 pt) margin, with slack
    assert "a" * 100 in text(hostile_pdf, "-raw").replace("\n", "")


def test_pages_render_to_pictures(hostile_pdf, tmp_path):
    poppler("pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "2", str(hostile_pdf), str(tmp_path / "page"))
    from PIL import Image

    pictures = sorted(tmp_path.glob("page-*.png"))
    assert len(pictures) == 2
    for name in pictures:
        with Image.open(name) as image:
            assert len(image.convert("RGB").getcolors(1 << 16) or []) > 10, name   # drawn, not blank


def test_missing_report_extra_names_the_fix(small_result, monkeypatch):
    monkeypatch.setitem(sys.modules, "fpdf", None)
    with pytest.raises(MissingExtraError, match=r"\(pip install '\.\[report\]' in the log_analyser source tree\)"):
        reporting.render_pdf(small_result)


def test_markup_in_the_log_is_text_in_the_pdf(hostile_pdf):
    content = text(hostile_pdf)
    assert reportdata.MARKUP_IP in content.replace("\n", "")


def test_characters_without_a_glyph_are_escaped_not_dropped(tmp_path, caplog):
    from log_analyser_core.pipeline import Settings, analyse

    files = []
    for n, agent in enumerate(("Mozilla/5.0 中文爬虫 😀", "curl/8.5 ✓")):
        path = tmp_path / f"part{n}.log"
        path.write_text("".join(f'203.0.113.{i % 4 + 1} - - [02/Mar/2026:03:0{n}:{i:02d} +0100] "GET /{i} HTTP/1.1" '
                                f'{404 if i % 4 == 0 else 200} 5 "-" "{agent}"\n' for i in range(40)), encoding="utf-8")
        files.append(str(path))
    result = analyse(files, Settings(threshold=0.0))
    pdf = tmp_path / "u.pdf"
    with caplog.at_level("WARNING"):
        pdf.write_bytes(reporting.render_pdf(result))
    assert not [r for r in caplog.records if "missing" in r.getMessage()]
    content = text(pdf)
    assert "\\u4e2d\\u6587" in content and "\\U0001f600" in content
    assert re.search(r"part0\.log\s+\(combined\)\s+\S*part1\.log", content) and "\\x0a" not in content


def test_lines_rebuilt_from_standard_input_are_marked(piped_and_file_results, tmp_path):
    piped, from_file = piped_and_file_results
    path = tmp_path / "piped.pdf"
    path.write_bytes(reporting.render_pdf(piped, version="test"))
    content = text(path)
    quoted = [line for line in content.splitlines() if re.match(r"-:\d+", line)]
    assert len(quoted) >= 8 and all(re.match(r"-:\d+ \(rebuilt\): ", line) for line in quoted), quoted
    assert "(rebuilt): not the logged line: rebuilt in combined format from the parsed fields" in " ".join(
        content.split())
    path.write_bytes(reporting.render_pdf(from_file, version="test"))
    content = text(path)
    source = from_file.summary.sources[0]
    assert sum(line.startswith(f"{source}:") for line in content.splitlines()) >= 8 and "(rebuilt)" not in content


def test_huge_strings_from_a_log_or_an_api_are_clipped_not_fatal(hostile_result, tmp_path):
    """A 6,000-character 'address' and a megabyte ISP name once made fpdf2 refuse a row taller than a page."""
    from dataclasses import replace

    from log_analyser_core.results import Reputation

    findings = list(hostile_result.findings)
    first = next(i for i, f in enumerate(findings) if f.flagged)
    findings[first] = replace(findings[first], ip="fe80::1%" + "x" * 6000,
                              reputation=Reputation(status="ok", abuse_score=90, isp="I" * 1_000_000))
    path = tmp_path / "huge.pdf"
    path.write_bytes(reporting.render_pdf(replace(hostile_result, findings=tuple(findings)), version="test"))
    content = text(path)
    assert "more characters]" in content
    assert "x" * 2001 not in content.replace("\n", "")   # a paragraph keeps 2,000 characters, a cell 300


def test_findings_page_lists_flagged_then_the_highest_unflagged_marked(hostile_pdf, hostile_result):
    findings = text(hostile_pdf, "-layout").split("\fFindings\n", 1)[1].split("\f", 1)[0]
    flagged = [f for f in hostile_result.findings if f.flagged]
    unflagged = [f for f in hostile_result.findings if not f.flagged and f.score > 0]
    assert f"The {len(flagged)} flagged clients, worst first" in findings
    assert "not flagged" in findings and unflagged[0].ip in findings
    assert findings.index(flagged[-1].ip) < findings.index(unflagged[0].ip)
    quiet = [f for f in hostile_result.findings if not f.flagged and f.score == 0]
    assert not any(f" {f.ip} " in findings for f in quiet)   # the 0.0 clients are left out


def test_attack_type_chart_counts_each_flagged_client_once_by_its_primary_type(hostile_result):
    from log_analyser_core.report import model

    counts = dict(model.attack_type_counts(hostile_result))
    flagged = [f for f in hostile_result.findings if f.flagged]
    assert sum(counts.values()) == len(flagged)
    assert counts == {kind: sum(1 for f in flagged if f.attack_types[:1] == (kind,)) for kind in counts}


def test_cover_names_only_the_stages_that_ran(small_result, hostile_result):
    import dataclasses

    from log_analyser_core.report.pdf import stages_run

    assert stages_run(small_result) == ["Isolation Forest", "behaviour rules", "payload signatures", "Sigma rules"]
    without_sigma = dataclasses.replace(small_result, summary=dataclasses.replace(
        small_result.summary, detectors=("iforest", "rules", "signatures")))
    assert "Sigma rules" not in stages_run(without_sigma)
    assert "language-model notes (advisory)" in stages_run(hostile_result)   # it carries LLM notes


def test_the_pipeline_lists_sigma_only_when_rules_loaded(tmp_path):
    from log_analyser_core.pipeline import Settings, analyse

    log = tmp_path / "a.log"
    log.write_text((DATA / "small.log").read_text())
    result = analyse([str(log)], Settings(detectors=("iforest",), builtin_rules=False))
    assert "sigma" not in result.summary.detectors and "rules" in result.summary.detectors
