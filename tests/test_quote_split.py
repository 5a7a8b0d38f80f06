"""The quote-split reading of combined, common, vhost and nginx lines captures exactly what the
format's full regex captures: on the golden samples, the shared real logs, hostile lines and
generated lines rich in quotes, backslashes and brackets."""
from __future__ import annotations

import orjson
import polars as pl
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import file_parser
from log_analyser_core.parsing import quote_split, wrappers
from log_analyser_core.parsing.formats import compile_format, preset
from log_analyser_core.parsing.wrappers import Wrapper

REAL_LOGS = ("public/elastic_examples/apache_logs", "public/nielsbasjes_yauaa/hackers-access.log",
             "public/slrbl_webhawk/2021_all.log", "public/slrbl_webhawk/access-2018-12-15.log",
             "public/ocatak_apache-http-logs/acunetix.txt", "public/ocatak_apache-http-logs/w3af.txt")
GOLDEN = {"combined": "combined", "common": "common", "vcombined": "vcombined", "vcommon": "vcommon",
          "main": "main", "nginx": "combined"}
HOSTILE = [
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\\"b HTTP/1.1" 200 5 "-" "x"',           # escaped quote
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\\\\" 200 5 "-" "ua \\\\"',                # escaped backslash
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "a\\" 200 5 "-" "x"',       # right quote count, request never closes
    '"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x""',              # wrapped in quotes
    '1.2.3.4 - a"b [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x"',              # quote in %u
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x" 0.004',          # request time
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x" 1234  ',         # microseconds
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x" abc',            # junk tail
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-"',                    # no agent
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5',                        # common
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "" 400 - "-" "-"',                              # empty request
    '1.2.3.4 - john doe [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x"',         # space in %u
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2000 5 "-" "x"',               # bad status
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "\\x16\\x03\\x01" 400 226 "-" "-"',              # TLS on port 80
    'www.example.com:443 1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x"',
    'www.example.com 1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5',
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x" "10.0.0.1, 10.0.0.2"',
    '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "x" "-" 0.5',
    '', '   ', '"', '""""""', '- - - [] "" - - "" ""', '1.2.3.4 - - [x] "a" 200 - "b" "c"\t',
]

SYSLOG = wrappers.candidates(pl.Series(["<150>Jan 28 08:10:00 web1 nginx: x"]))[0]   # host and tag


def _numbered(lines: pl.Series) -> pl.DataFrame:
    return (lines.alias("raw").to_frame().with_row_index("line_number", offset=1)
            .with_columns(pl.col("line_number").cast(pl.Int64)))


def _regex_groups(lines: pl.Series, fmt, line: pl.Expr) -> pl.DataFrame:
    return (_numbered(lines).with_columns(line.alias("_line"))
            .with_columns(file_parser._line_text(fmt).str.extract_groups(fmt.regex).alias("_m")).unnest("_m"))


def assert_same_captures(lines: pl.Series, fmt, wrapper: Wrapper | None = None) -> None:
    line = wrapper.strip(pl.col("raw")) if wrapper else pl.col("raw")
    split = quote_split.capture(_numbered(lines), fmt, line, file_parser._line_text(fmt))
    assert split is not None, f"{fmt.name} has no split layout"
    regex = _regex_groups(lines, fmt, line)
    assert_frame_equal(split.select(regex.columns), regex)


def assert_same_events(lines: list[str], fmt, wrapper: Wrapper | None = None) -> None:
    """parse_lines with the split and with the regex alone: the same events (``_line``-derived
    columns, ``_recovered`` included) and the same unparsed lines with the same reasons."""
    series = pl.Series(lines, dtype=pl.String)
    fast = file_parser.parse_lines(series, fmt, wrapper=wrapper)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quote_split, "layout", lambda fmt: None)
        slow = file_parser.parse_lines(series, fmt, wrapper=wrapper)
    assert_frame_equal(fast[0], slow[0], categorical_as_str=True)
    assert_frame_equal(fast[1], slow[1])


@pytest.mark.parametrize("name", quote_split.SPLIT_PRESETS)
def test_every_split_preset_rebuilds_its_own_regex(name):
    assert quote_split.layout(preset(name)) is not None


def test_other_formats_keep_the_regex():
    assert quote_split.layout(preset("traefik")) is None and quote_split.layout(preset("awselb")) is None
    assert quote_split.layout(compile_format('%h "rt=%T" %t "%r" %>s %b')) is None


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_samples_and_hostile_lines_read_alike(name):
    golden = (DATA / "formats" / f"{GOLDEN[name]}.log").read_text(encoding="utf-8").splitlines()
    assert_same_captures(pl.Series(golden + HOSTILE), preset(name))


@pytest.mark.parametrize("name", list(GOLDEN))
def test_syslog_prefixed_lines_read_alike(name):
    golden = (DATA / "formats" / f"{GOLDEN[name]}.log").read_text(encoding="utf-8").splitlines()
    prefixed = [f"<150>Jan 28 08:10:00 web1 nginx: {line}" for line in golden + HOSTILE]
    assert_same_captures(pl.Series(prefixed), preset(name), SYSLOG)
    assert_same_events(prefixed, preset(name), SYSLOG)


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_and_hostile_lines_give_identical_events_and_reasons(name):
    golden = (DATA / "formats" / f"{GOLDEN[name]}.log").read_text(encoding="utf-8").splitlines()
    noise = ["2024/05/01 10:00:00 [error] 12#12: *1 open() failed", "#Version: 1.0", "\t", "x" * 300]
    assert_same_events(golden + HOSTILE + noise, preset(name))


def test_collector_envelopes_give_identical_events():
    golden = (DATA / "formats" / "combined.log").read_text(encoding="utf-8").splitlines() + HOSTILE
    cri = [f"2024-05-01T10:00:00.123Z {'stderr' if i % 7 == 0 else 'stdout'} {'P' if i % 5 == 0 else 'F'} {line}"
           for i, line in enumerate(golden)]
    docker = [orjson.dumps({"log": line + ("\n" if i % 6 else ""), "stream": "stdout", "time": "t"}).decode()
              for i, line in enumerate(golden)]
    for lines, name in ((cri, "cri"), (docker, "docker")):
        wrapper = next(w for w in wrappers.WRAPPERS if w.name == name)
        assert_same_events(lines, preset("combined"), wrapper)


@pytest.mark.parametrize("log", REAL_LOGS)
def test_shared_real_logs_give_identical_events(shared, log, monkeypatch):
    path = str(shared / log)
    fast = file_parser.parse([path], format_name="combined", max_unparsed_ratio=1.0)
    monkeypatch.setattr(quote_split, "layout", lambda fmt: None)
    slow = file_parser.parse([path], format_name="combined", max_unparsed_ratio=1.0)
    assert fast.stats == slow.stats and fast.events.height > 1000
    assert_frame_equal(fast.events, slow.events, categorical_as_str=True)
    assert_frame_equal(fast.unparsed, slow.unparsed)


_PIECES = st.sampled_from(['"', '\\', ' ', '[', ']', '-', '1.2.3.4', '10/Oct/2000:13:55:36 -0700', 'GET / HTTP/1.1',
                           '200', '5', 'x', '\t', '0.5', ':', 'a b', '""', '\\"'])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PIECES, max_size=30).map("".join), min_size=1, max_size=20),
       st.sampled_from(quote_split.SPLIT_PRESETS))
def test_generated_lines_read_alike(lines, name):
    assert_same_captures(pl.Series(lines, dtype=pl.String), preset(name))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=8).map(" ".join), st.sampled_from(["combined", "main"]))
def test_hostile_lines_glued_together_read_alike(line, name):
    assert_same_captures(pl.Series([line]), preset(name))
