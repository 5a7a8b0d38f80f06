from __future__ import annotations

import csv
import io
import json
import os

import jsonschema
import pytest
from conftest import DATA, GOLDEN, ROOT

import reporting
from analyser_errors import ConfigError
from analysis import Settings, analyse


@pytest.fixture(scope="module")
def small_result():
    # a relative path, so the golden files do not depend on where the checkout lives; the forest
    # alone, so they do not depend on whether the deep extra (TensorFlow) is installed
    here = os.getcwd()
    os.chdir(DATA)
    try:
        return analyse(["small.log"], Settings(detectors=("iforest",)))
    finally:
        os.chdir(here)


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
    ("\tx", "'\tx"), ("plain", "plain"), (12, 12),
])
def test_csv_safe(value, expected):
    assert reporting.csv_safe(value) == expected


def test_terminal_safe_escapes_controls_and_bidi():
    hostile = "ok\x1b[31mred\x07\u202etxt.exe\x9b"
    assert reporting.terminal_safe(hostile) == "ok\\x1b[31mred\\x07\\u202etxt.exe\\x9b"


def test_table_truncates_long_reasons_and_colours_only_when_asked(small_result):
    plain = reporting.render_table(small_result)
    coloured = reporting.render_table(small_result, colour=True)
    assert "\x1b[" not in plain and "\x1b[" in coloured
    assert all(len(line) <= 160 for line in plain.splitlines())


@pytest.mark.parametrize(("path", "override", "kind"), [
    ("r.csv", None, "csv"), ("R.JSON", None, "json"), ("t.txt", None, "table"), ("-", "json", "json"),
])
def test_format_for(path, override, kind):
    assert reporting.format_for(path, override) == kind


def test_format_for_unknown_extension():
    with pytest.raises(ConfigError, match="--output-format"):
        reporting.format_for("report.xlsx")
