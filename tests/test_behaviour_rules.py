from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

import file_parser
from log_analyser_core.errors import RulesError
from log_analyser_core.pipeline import analyse
from log_analyser_core.rules import behaviour as behaviour_rules

CASES = DATA.parent / "behaviour_cases"
RULES = {rule.id: rule for rule in behaviour_rules.load_rules()}
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
LINE = '{ip} - - [{ts} +0100] "{request}" {status} {bytes} "-" "{ua}"'
BACKGROUND = [  # two ordinary visitors in every case: no rule may fire for them
    {"ip": "198.51.100.1", "count": 12, "every": 20, "path": ["/", "/static/site.css", "/static/app.js", "/about"]},
    {"ip": "198.51.100.2", "count": 8, "every": 45, "path": ["/blog/post-{i}", "/static/site.css"]},
]


def render(requests: list[dict]) -> str:
    """A combined log from the case's request groups, in time order."""
    rows = []
    for group in requests:
        start = datetime.strptime("10/Mar/2026:" + group.get("start", "10:00:00"), "%d/%b/%Y:%H:%M:%S")
        paths = group.get("path", "/")
        paths = paths if isinstance(paths, list) else [paths]
        for i in range(group["count"]):
            when = start + timedelta(seconds=i * group["every"])
            request = group.get("request", f'{group.get("method", "GET")} {paths[i % len(paths)]} HTTP/1.1')
            rows.append((when, LINE.format(
                ip=group["ip"], ts=when.strftime("%d/%b/%Y:%H:%M:%S"), request=request.format(i=i),
                status=group.get("status", 200),
                bytes=group.get("bytes", 1200), ua=str(group.get("ua", BROWSER)).format(i=i))))
    return "\n".join(line for _, line in sorted(rows, key=lambda row: row[0])) + "\n"


def case_files():
    return sorted(CASES.glob("*.yaml"))


def test_every_rule_has_a_case_and_every_case_a_rule():
    assert {path.stem for path in case_files()} == set(RULES)


@pytest.mark.parametrize("case", case_files(), ids=lambda path: path.stem)
def test_rule_case(case, tmp_path):
    spec = yaml.safe_load(case.read_text())
    rule = RULES[case.stem]
    log = tmp_path / "case.log"
    log.write_text(render(spec["requests"] + BACKGROUND))
    findings = {f.ip: f for f in analyse([str(log)]).findings}
    for ip, finding in findings.items():
        fired = [e for e in finding.evidence if e.rule_id == rule.id]
        assert bool(fired) == (ip in spec["expect"]), (ip, [e.rule_id for e in finding.evidence])
        if fired:
            assert fired[0].count >= 1 and 1 <= len(fired[0].examples) <= 3
            assert all(x.raw.startswith(ip) and x.line_number >= 1 for x in fired[0].examples)
            if rule.attack_type is not None:
                assert rule.attack_type.value in finding.attack_types


def test_a_shared_address_is_judged_per_user_agent_and_said_to_be_shared(tmp_path):
    spec = yaml.safe_load((CASES / "user-agent-rotation.yaml").read_text())
    log = tmp_path / "office.log"
    log.write_text(render(spec["requests"] + BACKGROUND))
    events = file_parser.parse([str(log)]).events
    assert behaviour_rules.shared_addresses(events) == {"198.51.100.90": 6}   # not the rotating client
    rotation = RULES["user-agent-rotation"]
    assert "198.51.100.90" in behaviour_rules.detect(events, [replace(rotation, per_agent_when_shared=False)])
    found = behaviour_rules.detect(events, [rotation])
    assert [e.rule_id for e in found["203.0.113.62"]] == ["user-agent-rotation"]
    (note,) = found["198.51.100.90"]
    assert note.rule_id == "shared-address" and note.attack_type is None and "looks shared" in note.title
    office = {f.ip: f for f in analyse([str(log)]).findings}["198.51.100.90"]
    assert not office.flagged and "shared-address" in [e.rule_id for e in office.evidence]


def write_rule(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_errors_name_file_rule_and_field_and_are_all_reported(tmp_path):
    path = write_rule(tmp_path, """
- id: bad-one
  title: t
  severity: huge
  filter: {pathz: x, status: [4xx, teapot]}
  bucket: {capacity: -1, leak_speed: 2}
- id: bad-two
  title: t
  severity: low
  filter: {path: '(unclosed'}
  window: {maxretry: 1.5, findtime: 10}
""")
    with pytest.raises(RulesError) as caught:
        behaviour_rules.load_rules([path])
    text = str(caught.value)
    for fragment in ("rule 'bad-one': severity", "rule 'bad-one': filter.pathz", "rule 'bad-one': filter.status",
                     "rule 'bad-one': bucket.capacity", "rule 'bad-two': filter.path",
                     "rule 'bad-two': window.maxretry"):
        assert fragment in text
    assert str(path) in text
    problems = behaviour_rules.check([path])
    assert len(problems) == 6 and all(p.startswith(f"{path}: rule 'bad-") for p in problems)


def test_shipped_rules_check_clean():
    assert behaviour_rules.check() == []


@pytest.mark.parametrize(("text", "fragment"), [
    ("id: a\ntitle: t\nseverity: low\nfilter: {path: x}\n", "exactly one of 'bucket' or 'window'"),
    ("id: a\ntitle: t\nseverity: low\nfilter: {path: x}\nwindow: {maxretry: 1, findtime: 1}\nextra: 1\n", "extra"),
    ("- id: a\n  title: t\n  severity: low\n  filter: {path: x}\n  window: {maxretry: 1, findtime: 1}\n" * 2,
     "duplicate rule id"),
    ("id: [unclosed\n", "cannot read YAML"),
    ("id: a\ntitle: t\nseverity: low\nfilter: {path: 'admin(?!/)'}\nwindow: {maxretry: 1, findtime: 1}\n",
     "filter.path: invalid regular expression"),   # look-ahead: Python accepts it, Polars does not
    ("id: a\ntitle: t\nseverity: low\nattack_type: hacking\nfilter: {path: x}\nwindow: {maxretry: 1, findtime: 1}\n",
     "attack_type"),
])
def test_invalid_rules(tmp_path, text, fragment):
    with pytest.raises(RulesError, match="rule error"):
        behaviour_rules.load_rules([write_rule(tmp_path, text)])
    with pytest.raises(RulesError) as caught:
        behaviour_rules.load_rules([write_rule(tmp_path, text)])
    assert fragment in str(caught.value)


def test_missing_rule_path(tmp_path):
    with pytest.raises(RulesError, match="no such rule file"):
        behaviour_rules.load_rules([tmp_path / "nope.yaml"])


def reference_levels(times: list[float], weights: list[float], leak_speed: float) -> list[float]:
    """The leaky bucket event by event: leak since the last event (never below empty), then pour."""
    level, last, levels = 0.0, None, []
    for t, w in zip(times, weights, strict=True):
        if last is not None:
            level = max(0.0, level - (t - last) / leak_speed)
        level += w
        levels.append(level)
        last = t
    return levels


@settings(max_examples=60, deadline=None, derandomize=True)
@given(gaps=st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=40),
       weights=st.lists(st.integers(1, 5000), min_size=40, max_size=40),
       leak_speed=st.floats(0.1, 30), by_bytes=st.booleans())
def test_vectorised_bucket_equals_the_event_by_event_bucket(gaps, weights, leak_speed, by_bytes):
    times = list(np.cumsum(gaps))
    weights = weights[:len(times)] if by_bytes else [1] * len(times)
    frame = pl.DataFrame({"client_ip": ["a"] * len(times), "_t": times, "bytes": weights})
    bucket = behaviour_rules.Bucket(capacity=1, leak_speed=leak_speed, weight="bytes" if by_bytes else None)
    levels = behaviour_rules._levelled(frame, bucket)["_level"].to_list()
    assert levels == pytest.approx(reference_levels(times, weights, leak_speed), rel=1e-6, abs=1e-6)


# The rules' per-client steps as Polars windows over the clients (how they were written before
# the windows cost minutes over a million one-request clients): the reference the faster forms
# that read each client's rows together must equal exactly.
def windowed_levels(matched: pl.DataFrame, bucket: behaviour_rules.Bucket) -> list[float]:
    ones = pl.col("_t").is_not_null().cast(pl.Float64)
    weight = pl.col("bytes").cast(pl.Float64).fill_null(0.0) if bucket.weight == "bytes" else ones
    before = weight.cum_sum().over("client_ip") - weight
    height = (before - pl.col("_t") / bucket.leak_speed).alias("_height")
    steps = matched.with_columns(height, weight.alias("_weight"))
    return steps.select(pl.col("_height") - pl.col("_height").cum_min().over("client_ip")
                        + pl.col("_weight")).to_series().to_list()


def windowed_window_hits(matched: pl.DataFrame, window: behaviour_rules.Window) -> pl.DataFrame:
    earlier = pl.col("_t").shift(window.maxretry - 1).over("client_ip")
    return matched.filter((pl.col("_t") - earlier) <= window.findtime)


def windowed_matched(rule, prepared, mask, matched_rows=behaviour_rules._matched):
    matched = matched_rows(rule, prepared, mask)
    return matched.with_columns(pl.int_range(pl.len()).over("client_ip").alias("_n"))


def clients_frame(sizes: list[int], gaps: list[float], weights: list[int | None]) -> pl.DataFrame:
    """Events of clients with ``sizes`` events each, each client's rows together as prepare sorts them."""
    ips = [f"2001:db8::{k:x}" for k, size in enumerate(sizes) for _ in range(size)]
    times = np.cumsum([gaps[i % len(gaps)] for i in range(len(ips))]).tolist()
    return pl.DataFrame({"client_ip": pl.Series(ips, dtype=pl.Categorical), "_t": times,
                         "bytes": [weights[i % len(weights)] for i in range(len(ips))]},
                        schema_overrides={"bytes": pl.Int64})


@settings(max_examples=80, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=30),
       gaps=st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=20),
       weights=st.lists(st.none() | st.integers(0, 10**9), min_size=1, max_size=20),
       leak_speed=st.floats(0.01, 30), by_bytes=st.booleans())
def test_levels_of_one_and_many_event_clients_equal_the_windowed_levels(sizes, gaps, weights, leak_speed, by_bytes):
    frame = clients_frame(sizes, gaps, weights)
    bucket = behaviour_rules.Bucket(capacity=1, leak_speed=leak_speed, weight="bytes" if by_bytes else None)
    levelled = behaviour_rules._levelled(frame, bucket)
    assert levelled.drop("_level").equals(frame)
    assert levelled["_level"].to_list() == windowed_levels(frame, bucket)   # exactly, not approximately


@settings(max_examples=80, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=30),
       gaps=st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=20),
       maxretry=st.integers(1, 6), findtime=st.floats(0, 120))
def test_window_hits_of_one_and_many_event_clients_equal_the_windowed_hits(sizes, gaps, maxretry, findtime):
    frame = clients_frame(sizes, gaps, [1])
    window = behaviour_rules.Window(maxretry=maxretry, findtime=findtime)
    assert behaviour_rules._window_hits(frame, window).equals(windowed_window_hits(frame, window))


def windowed_rules(monkeypatch) -> None:
    """The behaviour rules with their per-client steps as windows over the clients."""
    monkeypatch.setattr(behaviour_rules, "_matched", windowed_matched)
    monkeypatch.setattr(behaviour_rules, "_window_hits", windowed_window_hits)
    monkeypatch.setattr(behaviour_rules, "_levelled", lambda matched, bucket: matched.with_columns(
        pl.Series("_level", windowed_levels(matched, bucket), dtype=pl.Float64)))


@pytest.mark.parametrize("distinct", [False, True], ids=["cases", "every-line-its-own-client"])
def test_rules_find_what_the_windowed_rules_find(tmp_path, monkeypatch, distinct):
    """Every case's clients in one log, and the same lines each from an address of its own (as an
    attacker owning an IPv6 prefix can send them): the same evidence as the rules written with
    windows over the clients."""
    requests = [group for case in case_files() for group in yaml.safe_load(case.read_text())["requests"]]
    text = render(requests + BACKGROUND)
    if distinct:
        text = "".join(f"2001:db8::{k:x}{line[line.index(' '):]}\n" for k, line in enumerate(text.splitlines()))
    log = tmp_path / "cases.log"
    log.write_text(text)
    events = file_parser.parse([str(log)]).events
    rules = list(RULES.values())
    found = behaviour_rules.detect(events, rules)
    assert found and (distinct or "request-flood" in {e.rule_id for e in found["203.0.113.70"]})
    with monkeypatch.context() as patched:
        windowed_rules(patched)
        assert behaviour_rules.detect(events, rules) == found


def test_window_counts_maxretry_within_findtime():
    frame = pl.DataFrame({"client_ip": ["a"] * 4 + ["b"] * 3, "_t": [0.0, 50, 100, 101, 0, 100, 200]})
    hits = behaviour_rules._window_hits(frame, behaviour_rules.Window(maxretry=3, findtime=100))
    assert hits["client_ip"].to_list() == ["a", "a"]   # b never has 3 within 100 s


@pytest.mark.parametrize("partition_events", [1, 7, 100])
def test_rules_per_partition_of_clients_find_what_one_pass_finds(tmp_path, partition_events):
    """Every case's clients in one log, the rules run over partitions of a few clients each (of one
    with partition_events=1) and in one pass: the same evidence. The request flood shows only when its
    baseline is taken over every client: alone in a partition, a client never reaches 20x its own peak."""
    requests = [group for case in case_files() for group in yaml.safe_load(case.read_text())["requests"]]
    log = tmp_path / "cases.log"
    log.write_text(render(requests + BACKGROUND))
    events = file_parser.parse([str(log)]).events
    rules = list(RULES.values())
    whole = behaviour_rules.detect(events, rules)
    assert behaviour_rules.detect(events, rules, partition_events=partition_events) == whole
    assert "request-flood" in {e.rule_id for e in whole["203.0.113.70"]}


@settings(max_examples=80, deadline=None, derandomize=True)
@given(clients=st.lists(st.integers(0, 9), min_size=1, max_size=60), size=st.integers(1, 20))
def test_partitions_hold_whole_clients_in_sort_order(clients, size):
    events = pl.DataFrame({"client_ip": pl.Series([f"10.0.0.{c}" for c in clients], dtype=pl.Categorical)})
    codes = events["client_ip"].to_physical().to_list()
    found = list(behaviour_rules._partitions(events, size))
    assert (found[0] is None) == (events.height <= size)   # None: every row, when one partition holds them
    parts = [list(range(events.height)) if rows is None else rows.to_list() for rows in found]
    assert sorted(row for rows in parts for row in rows) == list(range(events.height))
    keys = [sorted({codes[row] for row in rows}) for rows in parts]
    assert all(a[-1] < b[0] for a, b in zip(keys, keys[1:], strict=False))   # whole clients, in order
    for rows, held in zip(parts, keys, strict=True):   # full before its last client starts
        assert sum(codes[row] != held[-1] for row in rows) < size
