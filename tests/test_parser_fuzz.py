"""A bounded fuzz test of the parser over every preset: real lines (the golden samples, written
from the vendors' documentation, and lines of real public logs), mutated the way an attacker or a
broken collector would (quotes, backslashes, brackets, bytes cut or repeated, an envelope put
around), never raise; every line is counted exactly once, as parsed, unparsed or not an access
line; and no parsed line has a client or peer address that is not an IP address."""
from __future__ import annotations

import polars as pl
from conftest import DATA, SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import file_parser as fp
from log_analyser_core.parsing import formats as log_formats
from log_analyser_core.parsing import wrappers
from log_analyser_core.parsing.address import canonical
from log_analyser_core.parsing.presets import PRESETS

FORMATS = DATA / "formats"


def sample_lines(name: str) -> list[str]:
    path = FORMATS / f"{'combined' if name == 'nginx' else name}.log"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if name == "combined":   # and real lines from a public log
        real = SHARED / "public" / "elastic_examples" / "apache_logs"
        with open(real, encoding="utf-8", errors="replace") as handle:
            lines += [next(handle).rstrip("\n") for _ in range(40)]
    return lines


SAMPLES = {name: sample_lines(name) for name in PRESETS}
FORMATS_BY_NAME = {name: log_formats.preset(name) for name in PRESETS}
PIECES = ['"', '\\"', "\\", " ", "[", "]", "{", "}", ":", ",", "-", "%", "$", "::1", "999.1.1.1", "fe80::1%x",
          '"GET / HTTP/1.1"', "\t", "é", "\\x00", "#", "0", "1" * 30, '{"log":"', "stderr"]


@st.composite
def mutated(draw, lines: list[str]) -> str:
    line = draw(st.sampled_from(lines))
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, len(line)))
        kind = draw(st.sampled_from(["insert", "delete", "repeat", "truncate"]))
        if kind == "insert":
            line = line[:where] + draw(st.sampled_from(PIECES)) + line[where:]
        elif kind == "delete":
            line = line[:where] + line[where + draw(st.integers(1, 8)):]
        elif kind == "repeat":
            line = line[:where] + line[where:where + draw(st.integers(1, 20))] + line[where:]
        else:
            line = line[:where]
    return line


@st.composite
def batches(draw) -> tuple[str, list[str], wrappers.Wrapper | None]:
    name = draw(st.sampled_from(sorted(PRESETS)))
    lines = draw(st.lists(mutated(SAMPLES[name]), min_size=1, max_size=12))
    wrapper = draw(st.sampled_from([None, *wrappers.WRAPPERS]))
    if wrapper is not None and wrapper.json_path is None:
        prefix = {"cri": "2026-03-10T09:00:01.5Z stdout F ", "syslog": "<150>Mar 10 09:00:01 web1 nginx[1]: "}
        lines = [prefix[wrapper.name] + line for line in lines]
    return name, lines, wrapper


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_mutated_real_lines_never_raise_and_every_line_is_counted_once(batch):
    name, lines, wrapper = batch
    good, bad = fp.parse_lines(pl.Series(lines, dtype=pl.String), FORMATS_BY_NAME[name], wrapper=wrapper)
    numbers = sorted(good["line_number"].to_list() + bad["line_number"].to_list())
    assert numbers == list(range(1, len(lines) + 1)), (name, lines)
    not_access = int(bad["reason"].is_in(fp.NOT_ACCESS_REASONS).sum())
    assert good.height + (bad.height - not_access) + not_access == len(lines)
    for column in ("client_ip", "peer_ip"):
        for address in good[column].cast(pl.String).to_list():
            assert address is not None and canonical(address) == address, (name, column, address, lines)


def test_parse_counts_add_up_over_a_file_of_every_kind_of_line(tmp_path):
    lines = [*SAMPLES["combined"][:5], "", "#Version: 1.0", "2026/03/10 09:00:01 [error] 1#1: boom",
             SAMPLES["combined"][0].replace('"GET', '"GET "x"', 1), "garbage", "10.0.0.1 - - [x] oops"]
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = fp.parse([str(path)], max_unparsed_ratio=1.0).stats
    assert stats.parsed_lines + stats.unparsed_lines + sum(stats.not_access.values()) == stats.total_lines == 11
    assert stats.not_access == {"blank line": 1, "header line": 1, "error-log line": 1}
    assert stats.recovered == 1 and stats.unparsed_lines == 2
