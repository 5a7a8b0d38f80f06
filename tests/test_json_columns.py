"""Issue 22 item 6: the columns a million distinct clients are written from say what one client at
a time says. The JSON of quiet findings written a column at a time (report/json_columns.py), the
verdicts of clients without evidence judged all at once (verdict.Judged), Python's rounding done
by NumPy (verdict.round_like_python), medians a column at a time and the deviations sorted at once."""
from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anomaly_detector as detect
import reporting
from log_analyser_core import verdict
from log_analyser_core.report import json_columns
from log_analyser_core.results import AttackType, Deviation, Evidence, QuietFinding, Severity

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(FLOATS, min_size=1, max_size=50))
def test_a_float_column_is_written_as_orjson_writes_each_float(values):
    frame = pl.DataFrame({"x": pl.Series(values, dtype=pl.Float64)})
    written = frame.select(json_columns.value_text("x", pl.Float64()))["x"].to_list()
    assert written == [orjson.dumps(v).decode() for v in values]   # NaN and infinities: null


def test_floats_of_every_magnitude_are_written_as_orjson_writes_them():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(size=20_000), np.exp(rng.uniform(-700, 700, 20_000)),
                             np.round(rng.uniform(0, 100, 20_000), 1), rng.integers(0, 2**62, 5_000).astype(float),
                             [0.0, -0.0, 1e15, 1e16, 1e17, 1e21, 1e22, 1e-5, 1e-7, 5e-324, 1.7976931348623157e308]])
    written = pl.DataFrame({"x": values}).select(json_columns.value_text("x", pl.Float64()))["x"].to_list()
    assert written == orjson.dumps(values.tolist()).decode()[1:-1].split(",")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(
    st.one_of(st.none(), st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                                      timezones=st.just(UTC))),
    st.one_of(st.none(), st.text(max_size=12))), min_size=1, max_size=20))
def test_times_and_strings_are_written_as_orjson_writes_them_or_left_to_it(rows):
    times, texts = [t for t, _ in rows], [s for _, s in rows]
    frame = pl.DataFrame({"t": pl.Series(times, dtype=pl.Datetime("us", "UTC")),
                          "s": pl.Series(texts, dtype=pl.String)})
    made = json_columns.texts(frame, ["{", ",", "}"], ["t", "s"],
                              lambda _, v: orjson.dumps(v, option=orjson.OPT_UTC_Z).decode())
    assert made is not None
    assert made.to_list() == ["{" + orjson.dumps(t, option=orjson.OPT_UTC_Z).decode() + "," + orjson.dumps(s).decode()
                              + "}" for t, s in zip(frame["t"].to_list(), texts, strict=True)]


def test_a_column_of_an_unwritten_type_is_left_to_the_caller():
    frame = pl.DataFrame({"x": [[1, 2]]})
    assert json_columns.texts(frame, ["", ""], ["x"], lambda _, v: "") is None


def _quiet_frame(rows: int) -> tuple[pl.DataFrame, list[QuietFinding]]:
    rng = np.random.default_rng(3)
    start = datetime(2026, 12, 7, tzinfo=UTC)
    ips = [f"2001:db8::{k:x}" for k in range(rows)]
    ips[1] = 'host"name\\with\x1bescape'   # not an address, but a writer must not care
    seconds, micros = rng.integers(0, 10**6, rows), rng.integers(0, 2, rows) * rng.integers(0, 10**6, rows)
    seen = [start + timedelta(seconds=int(s), microseconds=int(u)) for s, u in zip(seconds, micros, strict=True)]
    scores = np.round(rng.uniform(0, 60, rows), 1)
    features = {"requests": rng.integers(1, 9, rows).astype(float), "bytes_total": rng.exponential(1e4, rows),
                "request_time_mean": np.where(rng.uniform(size=rows) < 0.3, np.nan, rng.uniform(size=rows))}
    frame = pl.DataFrame({
        "_position": np.arange(rows), "_client_ip": ips, "_rank": np.arange(rows) + 1, "_score": scores,
        "_severity": [detect.severity_for(s).label for s in scores], "_requests": features["requests"].astype(int),
        "_errors": rng.integers(0, 3, rows), "_first_seen": pl.Series(seen, dtype=pl.Datetime("us", "UTC")),
        "_last_seen": pl.Series(seen, dtype=pl.Datetime("us", "UTC")), "_detector:iforest": scores * 2,
        **{name: pl.Series(values).fill_nan(None) if name == "request_time_mean" else values
           for name, values in features.items()}})
    quiet = [QuietFinding(row["_client_ip"], row["_rank"], row["_score"], detect.severity_for(row["_score"]),
                          row["_requests"], row["_errors"], row["_first_seen"], row["_last_seen"],
                          {"iforest": row["_detector:iforest"]}, {name: row[name] for name in features})
             for row in frame.iter_rows(named=True)]
    return frame, quiet


def test_findings_written_from_columns_are_those_written_one_by_one():
    frame, quiet = _quiet_frame(2_000)
    reasoned = {k: ((f"{k} requests, typical 1", 'a "quoted" reason'),
                    (Deviation("requests", float(k), 1.0, 3.14159), Deviation("bytes_total", 1e6, 1e3, 12.0)))
                for k in range(0, 2_000, 7)}
    pieces, columns = reporting._quiet_layout(frame)
    made = json_columns.texts(reporting._with_reasons(frame, reasoned), pieces, columns, reporting._encode_one,
                              written=("_reasons", "_deviations"))
    assert made is not None
    expected = [reporting.quiet_json(q) if k not in reasoned else reporting.finding_json(
        dataclasses.replace(q.finding(), reasons=reasoned[k][0], deviations=reasoned[k][1]), False)
        for k, q in enumerate(quiet)]
    assert made.to_list() == [json_columns.indented(document) for document in expected]
    assert '"host\\"name\\\\with\\u001bescape"' in made[1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False) | st.sampled_from(
    [0.05, 0.15, 0.25, 2.675, -0.0, 1e15 + 0.25, math.inf, -math.inf, math.nan]), min_size=1, max_size=40))
def test_rounding_to_tenths_and_millionths_rounds_as_python_does(values):
    for digits in (1, 6):
        rounded = verdict.round_like_python(np.array(values, dtype=np.float64), digits)
        assert [repr(x) for x in rounded.tolist()] == [repr(round(v, digits)) for v in values]


def test_rounding_a_million_scores_agrees_with_python():
    values = np.random.default_rng(5).uniform(0, 100, 1_000_000)
    values[::7] = np.round(values[::7], 2)   # many ties at the second decimal
    assert verdict.round_like_python(values).tolist() == [round(v, 1) for v in values.tolist()]
    assert verdict.round_like_python(values, 6).tolist() == [round(v, 6) for v in values.tolist()]


def test_column_medians_are_numpys():
    rng = np.random.default_rng(11)
    for shape in [(1, 3), (2, 4), (1001, 5), (1000, 1)]:
        X = rng.normal(size=shape)
        assert np.array_equal(detect.column_medians(X), np.median(X, axis=0))
    X = rng.normal(size=(50, 3))
    X[4, 1] = np.nan
    assert np.array_equal(detect.column_medians(X), np.median(X, axis=0), equal_nan=True)


def test_deviations_sorted_at_once_are_those_sorted_one_by_one():
    rng = np.random.default_rng(2)
    z = np.round(rng.normal(2, 3, size=(500, 6)), 0)   # ties, and rows with none above the bar
    z[3, 2] = np.nan
    values = rng.uniform(0, 10, size=(500, 6)).tolist()
    typical = rng.uniform(size=6)
    features = ["requests", "bytes_total", "status_404", "post_ratio", "night_ratio", "path_entropy"]
    at_once = detect.top_deviations_of(z, values, typical, features, 3)
    def one_by_one(k: int) -> list[Deviation]:   # each client's features sorted on their own
        order = np.argsort(-z[k], kind="stable")
        picked = [i for i in order if z[k, i] >= detect.REASON_MIN_Z][:3]
        return [Deviation(features[i], float(values[k][i]), float(typical[i]), float(z[k, i])) for i in picked]
    assert at_once == [one_by_one(k) for k in range(500)]
    assert any(not found for found in at_once) and any(len(found) == 3 for found in at_once)


def test_verdicts_judged_at_once_are_those_fused_one_by_one():
    rng = np.random.default_rng(9)
    ips = [f"198.51.100.{k}" for k in range(200)] + ["10.0.0.1", "192.168.1.9"]
    anomaly = np.round(rng.uniform(0, 100, len(ips)), 3).tolist()
    anomaly[3], anomaly[4] = 0.3, -0.0   # a tie at the second decimal after halving; a negative zero
    evidence = {ips[7]: [Evidence(kind="rule", rule_id="x", severity=Severity.HIGH, title="t",
                                  attack_type=AttackType.SQLI, count=2)]}
    judged = verdict.judge(ips, anomaly, evidence, crawlers={ips[9]})
    for ip, score in zip(ips, anomaly, strict=True):
        one = verdict.fuse(score, evidence.get(ip, []), crawler=ip == ips[9], internal=verdict.is_internal(ip))
        assert judged.by_ip[ip] == one and repr(judged.by_ip[ip].score) == repr(one.score)
    assert set(judged.by_ip.made) == {ips[7], ips[9], "10.0.0.1", "192.168.1.9"}   # type: ignore[attr-defined]
    scores, allowed, adds = judged.columns(ips)
    assert scores.tolist() == [judged.by_ip[ip].score for ip in ips]
    assert not allowed.any() and adds.tolist() == [verdict.adds_to(judged.by_ip[ip]) for ip in ips]
    more = [Evidence(kind="reputation", rule_id="r", severity=Severity.HIGH, title="reported", attack_type=None,
                     count=1)]
    assert judged.rejudge(ips[0], more) == verdict.fuse(anomaly[0], more)
    assert "203.0.113.1" not in judged.by_ip and len(judged.by_ip) == len(ips)
    with pytest.raises(KeyError):
        judged.by_ip["203.0.113.1"]
