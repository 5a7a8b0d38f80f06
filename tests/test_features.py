from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

import file_parser as fp
from log_analyser_core.features import client as ip_features

RATIOS = [f.name for f in ip_features.FEATURES if f.unit == "ratio"]


def events(rows: list[dict]) -> pl.DataFrame:
    base = {name: None for name in fp.EVENT_SCHEMA}
    frame = pl.DataFrame([{**base, **row} for row in rows], schema=fp.EVENT_SCHEMA)
    return frame


def test_registry_is_complete_and_documented():
    assert len(ip_features.FEATURES) >= 15
    assert len(set(ip_features.FEATURE_NAMES)) == len(ip_features.FEATURES)
    for feature in ip_features.FEATURES:
        assert feature.unit and feature.description and "{v" in feature.reason


def test_small_log_values():
    table = ip_features.compute(fp.parse([str(DATA / "small.log")]).events)
    scanner = table.filter(pl.col("client_ip") == "198.51.100.99").row(0, named=True)
    assert scanner["requests"] == 8 and scanner["status_404"] == 6 and scanner["status_403"] == 1
    assert scanner["distinct_404_paths"] == 6 and scanner["distinct_paths"] == 8
    assert scanner["error_4xx_ratio"] == pytest.approx(7 / 8) and scanner["error_5xx_ratio"] == pytest.approx(1 / 8)
    assert scanner["night_ratio"] == 1.0          # 03:10 server-local time (+0100)
    assert scanner["sensitive_ratio"] == pytest.approx(6 / 8)
    assert scanner["special_char_density"] > 0.0  # ../ and %27 in the URLs
    assert scanner["active_seconds"] == 4.0 and scanner["peak_rpm"] == 8.0
    browser = table.filter(pl.col("client_ip") == "203.0.113.5").row(0, named=True)
    assert browser["static_ratio"] == pytest.approx(2 / 4) and browser["distinct_user_agents"] == 1
    assert browser["night_ratio"] == 0.0 and browser["bytes_total"] == 5120 + 2048 + 8192 + 7000
    junk = table.filter(pl.col("client_ip") == "192.0.2.200").row(0, named=True)
    assert junk["unusual_method_ratio"] == 1.0  # TLS handshake and empty requests have no method


def test_burstiness_periodic_vs_bursty():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    periodic = [{"client_ip": "a", "timestamp": start + timedelta(seconds=10 * i), "path": "/"} for i in range(30)]
    bursty = [{"client_ip": "b", "timestamp": start + timedelta(seconds=s), "path": "/"}
              for s in [0, 1, 2, 3, 600, 601, 602, 1800, 1801, 3600]]
    table = ip_features.compute(events(periodic + bursty))
    values = dict(zip(table["client_ip"], table["burstiness"], strict=True))
    assert values["a"] == pytest.approx(-1.0) and values["b"] > 0.2


def test_request_time_features_absent_when_not_logged():
    table = ip_features.compute(fp.parse([str(DATA / "small.log")]).events)
    used = ip_features.logged_features(table)
    assert "request_time_mean" not in used and "requests" in used


_row = st.fixed_dictionaries({
    "client_ip": st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1"]),
    "timestamp": st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2020, 1, 3),
                              timezones=st.just(UTC)),
    "tz_offset_min": st.sampled_from([0, 60, -300]),
    "method": st.sampled_from(["GET", "POST", "DELETE", None]),
    "path": st.sampled_from(["/", "/a.css", "/wp-login.php", "/x?y", None]),
    "query": st.sampled_from([None, "a=1", "q=%27--"]),
    "status": st.sampled_from([200, 301, 401, 403, 404, 500, None]),
    "bytes": st.integers(0, 10**7),
    "user_agent": st.sampled_from(["ua1", "ua2", None]),
})


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_row, min_size=1, max_size=40))
def test_feature_invariants(rows):
    table = ip_features.compute(events(rows))
    assert table["requests"].sum() == len(rows)
    assert table.height == len({r["client_ip"] for r in rows})
    for name in RATIOS:
        assert table[name].is_between(0.0, 1.0).all(), name
    assert (table["distinct_404_paths"] <= table["status_404"]).all()
    assert (table["burstiness"].is_between(-1.0, 1.0)).all()
    assert (table["peak_rpm"] <= table["requests"]).all()


def aggregated_over_every_client(frame: pl.DataFrame) -> pl.DataFrame:
    """Every feature aggregated over every client in one group_by: what compute finds, also for
    the features it takes from their ``one_request`` value for clients with one request."""
    aggregations = [feature.expr().cast(pl.Float64).alias(feature.name) for feature in ip_features.FEATURES]
    aggregations += [pl.col("timestamp").min().alias("first_seen"), pl.col("timestamp").max().alias("last_seen"),
                     (pl.col("status") >= 400).sum().cast(pl.Int64).alias("errors")]
    return (frame.lazy().with_columns(ip_features._row_helpers()).group_by("client_ip").agg(aggregations)
            .sort("client_ip").collect())


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_row, min_size=1, max_size=40),
       st.lists(st.integers(0, 99), min_size=1, max_size=40))
def test_one_request_clients_get_what_the_aggregation_gives(rows, addresses):
    """Clients with one request and with many (each row's address drawn from many, as from an
    IPv6 prefix): the same table as aggregating every feature over every client."""
    rows = [{**row, "client_ip": f"2001:db8::{addresses[i % len(addresses)]:x}"} for i, row in enumerate(rows)]
    frame = events(rows)
    assert any(ip_features.FEATURES[k].one_request is not None for k in range(len(ip_features.FEATURES)))
    assert ip_features.compute(frame).equals(aggregated_over_every_client(frame))
    missing_time = frame.with_columns(pl.lit(None, dtype=frame.schema["timestamp"]).alias("timestamp"))
    assert ip_features.compute(missing_time).equals(aggregated_over_every_client(missing_time))
