from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import jsonschema
import pytest
from conftest import GOLDEN, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

import reporting
from log_analyser_core.errors import ConfigError
from log_analyser_core.report import model as report_model
from log_analyser_core.report.details import render_details


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites the file (review the diff)."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_table_golden(small_result):
    check_golden("small.table.txt", reporting.render_table(small_result, top=10)
                 + reporting.summary_line(small_result) + "\n")


def test_csv_golden(small_result):
    check_golden("small.csv", reporting.render_csv(small_result))


def test_json_golden(small_result):
    check_golden("small.json", reporting.render_json(small_result, version="test"))


@pytest.mark.parametrize("clients", [1, reporting.JSON_BATCH, reporting.JSON_BATCH + 1, 3 * reporting.JSON_BATCH - 7])
def test_streamed_json_is_the_whole_document_indented(small_result, clients):
    """Findings encoded a batch at a time (and features with NaN as they are): the text orjson
    gives for the whole report, with NaN features written as null."""
    import orjson

    first = small_result.findings[0]
    findings = tuple(dataclasses.replace(first, ip=f"2001:db8::{k:x}", rank=k + 1,
                                         features={**first.features, "burstiness": float("nan")})
                     for k in range(clients))
    result = dataclasses.replace(small_result, findings=findings)
    document = reporting.result_json(result, version="test")
    for item in document["findings"]:
        item["features"] = {name: None if value != value else value for name, value in item["features"].items()}
    whole = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()
    assert reporting.render_json(result, version="test") == whole
    assert json.loads(whole)["findings"][-1]["features"]["burstiness"] is None


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.sampled_from([UTC, ZoneInfo("UTC"), None])))
def test_json_times_are_iso_time_text(value):
    assert reporting._time(value) == report_model.iso_time(value)


def test_json_matches_schema_and_lists_every_client_once(small_result):
    document = json.loads(reporting.render_json(small_result, version="test"))
    schema = json.loads((ROOT / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
    ips = [f["ip"] for f in document["findings"]]
    assert len(ips) == len(set(ips)) == small_result.features.height
    assert document["summary"]["unparsed_lines"] == 1


def test_csv_has_one_row_per_client_and_no_formula_cells(small_result):
    rows = list(csv.DictReader(io.StringIO(reporting.render_csv(small_result))))
    assert len(rows) == small_result.summary.clients
    assert {"score", "severity", "flagged", "status_404", "path_entropy"} <= set(rows[0])
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "@")), value


@pytest.mark.parametrize(("value", "expected"), [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1", "'+1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\\x09x"), ("plain", "plain"), (12, 12),
])
def test_csv_safe(value, expected):
    assert reporting.csv_safe(value) == expected


def test_terminal_safe_escapes_controls_and_bidi():
    hostile = "ok\x1b[31mred\x07\u202etxt.exe\x9b"
    assert reporting.terminal_safe(hostile) == "ok\\x1b[31mred\\x07\\u202etxt.exe\\x9b"


def test_table_clips_long_reasons_to_a_width_and_colours_only_when_asked(small_result):
    plain = reporting.render_table(small_result)
    coloured = reporting.render_table(small_result, colour=True)
    assert "\x1b[" not in plain and "\x1b[" in coloured
    assert "SQL Injection - Tautologies and Time Delays in URI (1x)" in plain   # no width: nothing cut
    narrow = reporting.render_table(small_result, width=60)
    assert all(len(line) <= 60 for line in narrow.splitlines()) and narrow.splitlines()[2].endswith("...")
    assert f"{reporting.SEVERITY_COLOURS['critical']}critical" in coloured and coloured.count(reporting.RESET) == 1


def test_table_fits_80_columns_with_long_addresses(hostile_result):
    import reportdata

    for width in (80, 100, 200):
        lines = reporting.render_table(hostile_result, top=50, width=width).splitlines()
        assert max(len(line) for line in lines) <= width
    narrow = reporting.render_table(hostile_result, top=50, width=80).split("\nLLM notes")[0]   # the table itself
    assert reportdata.MARKUP_IP not in narrow and reportdata.MARKUP_IP[:10] in narrow     # clipped with ...
    wide = reporting.render_table(hostile_result, top=50, width=200)
    assert reportdata.MARKUP_IP in wide and "..." not in wide.split("\nLLM notes")[0]


@pytest.mark.parametrize(("path", "override", "kind"), [
    ("r.csv", None, "csv"), ("R.JSON", None, "json"), ("t.txt", None, "table"), ("-", "json", "json"),
    ("r.pdf", None, "pdf"), ("r.html", None, "html"), ("blocklist.txt", None, "blocklist"),
    ("deny.conf", None, "nginx"), ("site.apache.conf", None, "apache"), ("x.crowdsec.json", None, "crowdsec"),
    ("f.jsonl", None, "ecs"), ("f.ndjson", None, "ecs"), ("v4.iptables", None, "iptables"),
    ("v6.ip6tables", None, "ip6tables"), ("set.nft", None, "nftables"), ("x.ips", None, "blocklist"),
    ("summary.md", None, "markdown"), ("report.junit.xml", None, "junit"),
])
def test_format_for(path, override, kind):
    assert reporting.format_for(path, override) == (kind, path)


@pytest.mark.parametrize(("argument", "kind", "path"), [
    ("nginx:/etc/nginx/deny.inc", "nginx", "/etc/nginx/deny.inc"), ("blocklist:-", "blocklist", "-"),
    ("crowdsec:out.json", "crowdsec", "out.json"),
])
def test_format_prefix(argument, kind, path):
    assert reporting.format_for(argument) == (kind, path)


def test_render_passes_only_accepted_options(small_result):
    options = {"top": 1, "version": "v", "severity": reporting.exports.Severity.MEDIUM, "pages": 1}
    assert reporting.render("blocklist", small_result, **options).splitlines()[-1] == "198.51.100.99"
    assert len(reporting.render("table", small_result, **options).splitlines()) == 4   # + the '… and N' line
    assert isinstance(reporting.render("pdf", small_result, **options), bytes)


def test_format_for_unknown_extension():
    with pytest.raises(ConfigError, match="--output-format"):
        reporting.format_for("report.xlsx")


def in_zone(result, tz: str):
    """The same result, shown in ``tz`` (what --tz sets: Summary.tz)."""
    return dataclasses.replace(result, summary=dataclasses.replace(result.summary, tz=tz))


def test_tz_shows_the_summary_csv_and_details_in_the_zone_and_json_stays_utc(small_result):
    berlin = in_zone(small_result, "Europe/Berlin")
    assert reporting.summary_line(berlin).endswith(" | 2026-03-10 03:10 to 2026-03-10 09:08 CET (Europe/Berlin)")
    assert reporting.summary_line(small_result).endswith(" | 2026-03-10 02:10 to 2026-03-10 08:08 UTC")
    assert reporting.render_json(berlin, version="test") == reporting.render_json(small_result, version="test")
    utc_rows = list(csv.DictReader(io.StringIO(reporting.render_csv(small_result))))
    local_rows = list(csv.DictReader(io.StringIO(reporting.render_csv(berlin))))
    assert local_rows[0]["first_seen"] == "2026-03-10T03:10:00+01:00"
    for utc, local in zip(utc_rows, local_rows, strict=True):
        for column in ("first_seen", "last_seen"):   # the same instant, written with Berlin's offset
            assert local[column].endswith("+01:00") and utc[column].endswith("Z")
            assert datetime.fromisoformat(local[column]) == datetime.fromisoformat(utc[column])
        assert {k: v for k, v in local.items() if not k.endswith("_seen")} == \
            {k: v for k, v in utc.items() if not k.endswith("_seen")}
    details = render_details(berlin, "198.51.100.99")
    assert "2026-03-10 03:10:00 CET to 2026-03-10 03:10:04 CET" in details and "UTC" not in details


@pytest.mark.parametrize(("tz", "seconds", "expected"), [
    ("UTC", False, "2026-03-29 00:30 to 2026-03-29 02:30 UTC"),
    ("UTC", True, "2026-03-29 00:30:00 UTC to 2026-03-29 02:30:00 UTC"),
    ("Europe/Berlin", False, "2026-03-29 01:30 CET to 2026-03-29 04:30 CEST (Europe/Berlin)"),   # clocks go forward
    ("Asia/Kolkata", False, "2026-03-29 06:00 to 2026-03-29 08:00 IST (Asia/Kolkata)"),
    ("America/New_York", True, "2026-03-28 20:30:00 EDT to 2026-03-28 22:30:00 EDT (America/New_York)"),
])
def test_time_span_in_a_zone_names_it(tz, seconds, expected):
    start, end = datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 3, 29, 2, 30, tzinfo=UTC)
    assert report_model.fmt_span(start, end, tz, seconds=seconds) == expected
    assert report_model.iso_time(start) == "2026-03-29T00:30:00Z"
