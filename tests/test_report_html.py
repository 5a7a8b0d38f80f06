"""The HTML dashboard, checked as markup and in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium): no console errors, sorting, filtering, the detail panel,
and an XSS corpus planted in the log that never runs, with and without the CSP."""
from __future__ import annotations

import html
import html.parser
import os
import re
import shutil

import polars as pl
import pytest
import reportdata
from test_reporting import in_zone

import reporting
from log_analyser_core.report import charts as report_charts
from log_analyser_core.report import html as report_html
from log_analyser_core.report import model as report_model
from log_analyser_core.results import REBUILT_NOTE

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1400,1000")


@pytest.fixture(scope="module")
def page(hostile_result, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(reporting.render_html(hostile_result, version="test"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Debian's chromium and chromium-driver (scripts/test); elsewhere CHROME_BIN and CHROMEDRIVER name a Chrome
    # for Testing and its driver (the GitHub workflow's setup-chrome step)
    binary = os.environ.get("CHROME_BIN") or shutil.which("chromium")
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    assert binary and driver_path, "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def load(browser, path):
    browser.get(path.as_uri())
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def visible_rows(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#findings tbody tr')).filter(r => !r.hidden)"
        ".map(r => Array.from(r.cells).map(c => c.getAttribute('data-v') ?? c.textContent))")


def no_script_ran(browser) -> None:
    assert browser.execute_script("return [window.__xss, window.parent.__xss]") == [None, None]
    assert browser.execute_script("return document.scripts.length") == 1
    for selector in ("img[src='x']", "svg[onload]", "iframe", "b[onmouseover]", "body style"):
        assert browser.find_elements("css selector", selector) == [], selector


class Markup(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_markup_has_no_injected_elements_or_handlers(hostile_result):
    document = reporting.render_html(hostile_result, version="test")
    parser = Markup()
    parser.feed(document)
    assert [tag for tag, _ in parser.tags].count("script") == 1
    assert [tag for tag, _ in parser.tags].count("style") == 1
    assert not [tag for tag, _ in parser.tags if tag in ("iframe", "object", "embed", "link", "base", "form")]
    assert not [(tag, a) for tag, attrs in parser.tags for a in attrs if a.startswith("on")]
    assert all(attrs["src"].startswith("data:image/svg+xml;base64,") for tag, attrs in parser.tags if tag == "img")
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in document
    assert "\\u202e" in document and "\u202e" not in document and "\x1b" not in document


def test_content_security_policy_is_strict(hostile_result):
    document = reporting.render_html(hostile_result, version="test")
    policy = report_html.content_security_policy()
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy and "http" not in policy
    assert document.index("Content-Security-Policy") < document.index("<style>")


def test_page_loads_without_console_errors_or_network(browser, page):
    assert load(browser, page) == []
    assert browser.title == "log_analyser report"
    requests = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
    assert requests == []
    images = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth > 0)")
    assert images and all(images)   # every chart decoded


def test_xss_corpus_never_runs(browser, page, hostile_result):
    load(browser, page)
    no_script_ran(browser)
    for index in range(len(hostile_result.findings[:30])):
        browser.execute_script(f"document.querySelector('tr[data-detail=\"d-{index}\"]').click()")
    no_script_ran(browser)
    panel = browser.execute_script(
        "var p = document.querySelector('section.detail:not([hidden])'); return p ? p.textContent : ''")
    assert panel


def test_escaping_alone_stops_the_corpus(browser, page, tmp_path):
    # Without the CSP, only the escaping stands between the corpus and the page.
    document = page.read_text(encoding="utf-8")
    bare = tmp_path / "no-csp.html"
    bare.write_text("\n".join(line for line in document.splitlines() if "Content-Security-Policy" not in line),
                    encoding="utf-8")
    assert load(browser, bare) == []
    no_script_ran(browser)
    xss_row = browser.find_element("css selector", "#findings tbody tr td.ip")
    assert xss_row.text


def test_csp_blocks_an_injected_inline_script(browser, page, tmp_path):
    # If escaping ever failed, the CSP must still refuse the script.
    document = page.read_text(encoding="utf-8").replace("</main>", "</main><script>window.__xss=99</script>")
    attacked = tmp_path / "attacked.html"
    attacked.write_text(document, encoding="utf-8")
    errors = load(browser, attacked)
    assert browser.execute_script("return window.__xss") is None
    assert any("Content Security Policy" in entry["message"] for entry in errors)


def test_table_sorts_by_clicked_column(browser, page, hostile_result):
    load(browser, page)
    header = browser.find_elements("css selector", "#findings th")[4]   # requests
    header.click()
    ascending = [int(row[4]) for row in visible_rows(browser)]
    assert ascending == sorted(ascending) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = [int(row[4]) for row in visible_rows(browser)]
    assert descending == sorted(ascending, reverse=True)
    assert descending[0] == max(f.requests for f in hostile_result.findings)
    browser.find_elements("css selector", "#findings th")[1].click()   # client, text
    clients = [row[1].lower() for row in visible_rows(browser)]
    assert clients == sorted(clients)


def test_filters_by_severity_type_country_and_text(browser, page, hostile_result):
    from selenium.webdriver.support.ui import Select

    load(browser, page)
    assert len(visible_rows(browser)) == len(hostile_result.findings)
    Select(browser.find_element("id", "f-sev")).select_by_visible_text("medium or worse")
    medium = [f for f in hostile_result.findings if f.flagged and f.severity >= 2]
    assert sorted(row[1] for row in visible_rows(browser)) == sorted(f.ip for f in medium)
    assert browser.find_element("id", "count").text == f"{len(medium)} of {len(hostile_result.findings)} clients shown"
    Select(browser.find_element("id", "f-sev")).select_by_value("")
    Select(browser.find_element("id", "f-type")).select_by_value("xss")
    xss = {f.ip for f in hostile_result.findings if "xss" in f.attack_types}
    assert {row[1] for row in visible_rows(browser)} == xss
    Select(browser.find_element("id", "f-type")).select_by_value("")
    Select(browser.find_element("id", "f-country")).select_by_value("RU")
    assert {row[1] for row in visible_rows(browser)} == {f.ip for f in hostile_result.findings
                                                         if f.geo and f.geo.country == "RU"}
    Select(browser.find_element("id", "f-country")).select_by_value("")
    browser.find_element("id", "f-text").send_keys(reportdata.XSS_IP)
    assert [row[1] for row in visible_rows(browser)] == [reportdata.XSS_IP]


def test_detail_panel_shows_the_clicked_client(browser, page, hostile_result):
    load(browser, page)
    target = next(f for f in hostile_result.findings if f.ip == reportdata.XSS_IP)
    row = next(r for r in browser.find_elements("css selector", "#findings tbody tr")
               if r.find_element("css selector", "td.ip").text == target.ip)
    row.click()
    panels = [p for p in browser.find_elements("css selector", "section.detail") if p.is_displayed()]
    assert len(panels) == 1
    text = panels[0].get_property("textContent")   # .text would leave out what is scrolled out of view
    assert target.ip in text and target.reasons[0] in text
    assert "<script>window.__xss=1</script>" in text               # shown as text, not run
    assert "abuse confidence 87/100" in text and "ООО Ромашка" in text and "test-model" in text
    assert target.evidence[0].rule_id in text and "First requests" in text
    assert len(panels[0].find_elements("css selector", "svg.bar rect.client")) >= len(target.deviations)


def test_screenshot_renders(browser, page, tmp_path):
    load(browser, page)
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").resize((64, 64)).getcolors(64 * 64)
    assert colours and len(colours) > 20   # a drawn page, not a blank one


def test_tz_shows_the_html_time_span_and_client_times_in_the_zone(small_result):
    document = reporting.render_html(in_zone(small_result, "Europe/Berlin"), version="test")
    assert "small.log · 2026-03-10 03:10:00 CET to 2026-03-10 09:08:00 CET (Europe/Berlin)</p>" in document
    assert "<dt>first seen</dt><dd>2026-03-10 03:10:00 CET</dd>" in document
    assert " UTC" not in document
    assert "2026-03-10 02:10:00 UTC to 2026-03-10 08:08:00 UTC</p>" in reporting.render_html(small_result)


def tick_labels(result) -> tuple[str, list[str]]:
    chart = report_charts.timeline_chart(result)
    return chart.title, list(chart.ticks)


def test_timeline_is_bucketed_and_labelled_in_the_zone(small_result):
    # small.log runs from 02:10 to 08:08 UTC: 03:10 to 09:08 in Berlin (CET, UTC+1)
    assert tick_labels(small_result) == ("Requests over time (UTC, per 5 min)", [f"03-10 {h:02d}" for h in range(2, 9)])
    assert tick_labels(in_zone(small_result, "Europe/Berlin")) == (
        "Requests over time (Europe/Berlin, per 5 min)", [f"03-10 {h:02d}" for h in range(3, 10)])
    utc, width = report_model.timeline(small_result)
    kolkata, same_width = report_model.timeline(in_zone(small_result, "Asia/Kolkata"))
    assert kolkata["bucket"].dtype == pl.Datetime("us", "Asia/Kolkata") and width == same_width == 300
    assert kolkata["bucket"].dt.convert_time_zone("UTC").equals(utc["bucket"])   # +05:30: same 5-minute buckets
    assert kolkata.drop("bucket").equals(utc.drop("bucket"))


CHART_TEXT_OUTSIDE = """
var frame = document.documentElement.getBoundingClientRect();
return Array.from(document.querySelectorAll('text')).filter(function (text) {
  var box = text.getBoundingClientRect();
  return box.left < frame.left || box.top < frame.top || box.right > frame.right || box.bottom > frame.bottom;
}).map(function (text) { return text.textContent; });
"""


def test_chart_text_stays_inside_each_chart(browser, hostile_result, tmp_path):
    """The charts' SVG keeps its text as text, laid out with DejaVu Sans metrics: drawn by Chromium,
    every title, label and tick of the hostile log's charts lies inside its picture."""
    figures = report_charts.standard_charts(hostile_result, report_charts.DARK, timeline_size=(13.0, 2.6))
    assert "countries" in figures   # the hostile result is enriched: every chart is drawn
    for name, chart in figures.items():
        path = tmp_path / f"{name}.svg"
        path.write_bytes(report_charts.to_svg(chart))
        browser.get(path.as_uri())
        assert browser.execute_script("return document.querySelectorAll('text').length") > 2, name
        assert browser.execute_script(CHART_TEXT_OUTSIDE) == [], name


def quoted(document: str, source: str) -> list[str]:
    """The <pre> blocks quoting a log line of ``source``."""
    return [block for block in re.findall(r"<pre>(.*?)</pre>", document, re.S) if block.startswith(f"{source}:")]


def test_lines_rebuilt_from_standard_input_are_marked(piped_and_file_results):
    piped, from_file = piped_and_file_results
    document = reporting.render_html(piped, version="test")
    blocks = quoted(document, "-")
    assert len(blocks) >= 8 and all(re.match(r'-:\d+ <span class="rebuilt" title="not the logged line', block)
                                    for block in blocks)
    assert f'<span class="rebuilt">(rebuilt)</span>: {html.escape(REBUILT_NOTE, quote=True)}</p>' in document
    plain = reporting.render_html(from_file, version="test")
    source = str(from_file.summary.sources[0])
    assert len(quoted(plain, source)) >= 8 and 'class="rebuilt"' not in plain


def test_the_rebuilt_mark_is_visible_in_the_panel(browser, piped_and_file_results, tmp_path):
    piped, _ = piped_and_file_results
    path = tmp_path / "piped.html"
    path.write_text(reporting.render_html(piped, version="test"), encoding="utf-8")
    assert load(browser, path) == []
    browser.find_element("css selector", "#findings tbody tr").click()   # the flagged client, ranked first
    (panel,) = [p for p in browser.find_elements("css selector", "section.detail") if p.is_displayed()]
    marks = panel.find_elements("css selector", "pre .rebuilt")
    assert marks and marks[0].is_displayed() and marks[0].text == "(rebuilt)"
    assert "standard input" in panel.find_element("css selector", "p.legend .rebuilt").find_element(
        "xpath", "..").text


CLIPPED_CELLS = """
var wrap = document.querySelector('.tablewrap').getBoundingClientRect();
var aside = document.querySelector('aside').getBoundingClientRect();
var clipped = [];
document.querySelectorAll('#findings th, #findings td').forEach(function (cell) {
  var box = cell.getBoundingClientRect();
  if (cell.scrollWidth > cell.clientWidth + 1 || box.right > wrap.right + 1 || box.left < wrap.left - 1
      || (aside.top < box.bottom && aside.bottom > box.top && box.right > aside.left)) {
    clipped.push(cell.cellIndex + ':' + cell.textContent.slice(0, 40));
  }
});
var table = document.querySelector('.tablewrap');
return {clipped: clipped, overflow: table.scrollWidth - table.clientWidth};
"""


@pytest.mark.parametrize("width", [1280, 1920])
@pytest.mark.parametrize("which", ["hostile", "small"])
def test_no_findings_cell_is_clipped_from_1280_pixels(browser, hostile_result, small_result, tmp_path, width, which):
    """At 1280 px and wider every cell of the findings table is whole: none wider than its box, none
    cut by the scrolling frame or under the detail panel; a screenshot shows the page drawn."""
    from PIL import Image

    result = hostile_result if which == "hostile" else small_result
    path = tmp_path / "report.html"
    path.write_text(reporting.render_html(result, version="test"), encoding="utf-8")
    browser.set_window_size(width, 1000)
    try:
        load(browser, path)
        assert browser.execute_script("return window.innerWidth") >= width - 20
        found = browser.execute_script(CLIPPED_CELLS)
        shot = tmp_path / f"dashboard-{width}.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(1400, 1000)
    assert found == {"clipped": [], "overflow": 0}
    with Image.open(shot) as image:
        assert image.size[0] >= width - 20
        assert len(image.convert("RGB").resize((64, 64)).getcolors(64 * 64) or []) > 20   # a drawn page


def test_a_clipped_cell_would_be_found(browser, small_result, tmp_path):
    """The check above can fail: with the page squeezed to 500 px (set through the CSSOM, which the
    page's CSP allows), the table no longer fits its frame."""
    path = tmp_path / "squeezed.html"
    path.write_text(reporting.render_html(small_result, version="test"), encoding="utf-8")
    browser.set_window_size(1280, 1000)
    try:
        load(browser, path)
        browser.execute_script("document.body.style.width = '500px'")
        found = browser.execute_script(CLIPPED_CELLS)
    finally:
        browser.set_window_size(1400, 1000)
    assert found["clipped"] or found["overflow"] > 0


def test_no_country_column_or_filter_without_enrichment(small_result, hostile_result):
    plain = reporting.render_html(small_result, version="test")
    assert ">country</th>" not in plain and 'id="f-country"' not in plain
    enriched = reporting.render_html(hostile_result, version="test")
    assert ">country</th>" in enriched and 'id="f-country"' in enriched
