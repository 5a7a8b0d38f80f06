"""The README's Reports table matches the writer registry: every documented file ending picks the
documented format, and every format is documented."""
from __future__ import annotations

import re

from conftest import ROOT

import reporting


def documented() -> list[tuple[list[str], list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reports", 1)[1].split("| format |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return [(re.findall(r"`([^`]+)`", row[0]), re.findall(r"`(\.[^`]+)`", row[1])) for row in rows]


def test_every_documented_ending_picks_its_format():
    rows = documented()
    assert rows
    for formats, endings in rows:
        for ending in endings:
            assert reporting.format_for("report" + ending)[0] in formats, ending


def test_every_format_is_documented():
    assert {name for formats, _ in documented() for name in formats} == set(reporting.WRITERS)
