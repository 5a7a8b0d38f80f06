"""The Spark engine against the local one: same per-client table, same counts, same verdicts."""
from __future__ import annotations

import gzip
import ipaddress
import math
import sys

import polars as pl
import pytest
from conftest import DATA

import file_parser
import log_analyser
from log_analyser_core import verdict
from log_analyser_core.engines import spark as spark_engine
from log_analyser_core.engines.engine import SPARK_NOTE
from log_analyser_core.errors import ConfigError, ExitCode
from log_analyser_core.features import client as ip_features
from log_analyser_core.pipeline import Settings, analyse

# Slow (a JVM starts); the tests that need pyspark and Java are marked heavy as well (CI's core jobs lack
# the spark extra), while those of the pure-Python helpers run everywhere.
pytestmark = pytest.mark.slow
LOCAL = spark_engine.SparkOptions(master="local[2]", conf=(("spark.sql.shuffle.partitions", "4"),))
COUNTS = {f.name for f in ip_features.FEATURES if f.unit in ("requests", "paths", "agents", "bytes")}
CUSTOM = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D %v'


@pytest.fixture(scope="module")
def spark():
    session = spark_engine.session(LOCAL)
    yield session


def assert_same_tables(local: pl.DataFrame, remote: pl.DataFrame) -> None:
    assert remote.columns == local.columns and remote.schema == local.schema
    assert remote["client_ip"].to_list() == local["client_ip"].to_list()
    assert remote["first_seen"].to_list() == local["first_seen"].to_list()
    assert remote["last_seen"].to_list() == local["last_seen"].to_list()
    assert remote["errors"].to_list() == local["errors"].to_list()
    for name in ip_features.FEATURE_NAMES:
        for ip, a, b in zip(local["client_ip"], local[name], remote[name], strict=True):
            if name in COUNTS or a is None or b is None:
                assert a == b, (name, ip, a, b)
            else:
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (name, ip, a, b)


def both(spark, paths: list[str], **kwargs):
    local = file_parser.parse(paths, max_unparsed_ratio=1.0, **kwargs)
    remote = spark_engine.aggregate(paths, options=LOCAL, max_unparsed_ratio=1.0, **kwargs)
    return local, ip_features.compute(local.events), remote


def write(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    import loggen

    lines = loggen.generate(4000, seed=11).lines.to_list()
    folder = tmp_path_factory.mktemp("spark")
    return folder, lines


@pytest.mark.heavy
def test_combined_with_awkward_lines(spark):
    local, table, remote = both(spark, [str(DATA / "small.log")])
    assert_same_tables(table, remote.features)
    assert remote.stats.total_lines == local.stats.total_lines
    assert remote.stats.unparsed_by_reason == local.stats.unparsed_by_reason


@pytest.mark.heavy
def test_generated_combined_gzip_and_several_files(spark, generated, tmp_path):
    _, lines = generated
    plain = write(tmp_path, "access.log", lines[:2000])
    packed = tmp_path / "access.log.1.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines[2000:]) + "\n")
    local, table, remote = both(spark, [plain, str(packed)])
    assert_same_tables(table, remote.features)
    assert remote.stats.parsed_lines == local.stats.parsed_lines == len(lines)


@pytest.mark.heavy
def test_common_format_without_offset_in_a_zone(spark, shared):
    path = [str(shared / "seeds/Apache-Log-Analyser/access.log")]
    local, table, remote = both(spark, path, tz="America/New_York")
    assert_same_tables(table, remote.features)
    assert remote.stats.formats[path[0]] == "common"


@pytest.mark.heavy
def test_nginx_with_request_time(spark, generated, tmp_path):
    _, lines = generated
    timed = [f"{line} {i % 997 / 1000:.3f}" for i, line in enumerate(lines[:1500])]
    local, table, remote = both(spark, [write(tmp_path, "nginx.log", timed)], format_name="nginx")
    assert table["request_time_mean"].null_count() == 0
    assert_same_tables(table, remote.features)


@pytest.mark.heavy
def test_custom_apache_format(spark, generated, tmp_path):
    _, lines = generated
    custom = [f"{line} {1000 + i * 37} shop.example.com" for i, line in enumerate(lines[:1500])]
    local, table, remote = both(spark, [write(tmp_path, "custom.log", custom)], log_format=CUSTOM)
    assert local.stats.parsed_lines == 1500 and table["request_time_max"].max() > 0
    assert_same_tables(table, remote.features)


@pytest.mark.heavy
def test_scanner_log_wrapped_in_quotes(spark, shared):
    local, table, remote = both(spark, [str(shared / "public/ocatak_apache-http-logs/w3af.txt")])
    assert_same_tables(table, remote.features)


@pytest.mark.heavy
def test_same_anomaly_scores_and_flagged_attackers(spark, planted_log):
    # The anomaly detectors see the same table, so they score every client the same. The stages that
    # read single requests (behaviour rules, signatures, Sigma) need the events, which Spark does not
    # send back: locally they add evidence, so the local engine may flag more, never less.
    path, labels = planted_log
    forest = ("iforest",)
    here = analyse([str(path)], Settings(detectors=forest))
    there = analyse([str(path)], Settings(engine="spark", spark=LOCAL, detectors=forest))
    assert {f.ip: f.detector_scores for f in there.findings} == {f.ip: f.detector_scores for f in here.findings}
    flagged_there = {f.ip for f in there.findings if f.flagged}
    attackers = set(labels.filter(pl.col("label") == "attack")["ip"])
    assert attackers <= flagged_there <= {f.ip for f in here.findings if f.flagged}
    assert there.summary.total_lines == here.summary.total_lines


@pytest.mark.heavy
def test_allowlisted_networks_and_internal_clients_on_spark(spark, planted_log, tmp_path):
    # The allowlist's networks and the internal marking apply to the per-client table Spark returns; its
    # user-agent and path patterns match single requests, which do not come back, and a note says so.
    path, labels = planted_log
    attackers = dict(zip(*labels.filter(pl.col("label") == "attack")[["attack_type", "ip"]], strict=True))
    scanner, office = attackers["scanner"], "10.20.30.40"
    lines = path.read_text(encoding="utf-8").replace(f"{attackers['dos']} ", f"{office} ").splitlines()
    allow = verdict.Allowlist(networks=(ipaddress.ip_network(f"{scanner}/32"),), user_agents=("^UptimeRobot/",))
    result = analyse([write(tmp_path, "office.log", lines)],
                     Settings(engine="spark", spark=LOCAL, detectors=("iforest",), allowlist=allow))
    found = {f.ip: f for f in result.findings}
    assert found[scanner].score >= Settings().threshold and not found[scanner].flagged
    assert found[scanner].reasons[0] == f"allowlisted: ip in {scanner}/32"
    assert result.summary.excluded == {f"ip in {scanner}/32 (clients)": 1}
    assert found[office].flagged and [f.ip for f in result.findings if f.internal] == [office]
    assert SPARK_NOTE in result.summary.notes
    assert any(n.startswith("engine spark: the allowlist's ips were applied") for n in result.summary.notes)


@pytest.mark.heavy
def test_cli_engine_spark(capsys, tmp_path):
    out = tmp_path / "r.json"
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--engine", "spark", "--spark-master", "local[2]",
                              "--spark-conf", "spark.sql.shuffle.partitions=4", "-o", str(out)])
    assert code == ExitCode.OK and '"clients": 7' in out.read_text()


@pytest.mark.heavy
@pytest.mark.parametrize("format_name", ["auto", "w3c"])
def test_w3c_logs_are_refused_not_misparsed(spark, format_name):
    # A W3C file's columns can change at every #Fields: header block; only the local engine follows them.
    with pytest.raises(ConfigError, match=r"does not read w3c \(W3C extended\) logs.*#Fields:") as raised:
        spark_engine.aggregate([str(DATA / "formats/w3c_blocks.log")], options=LOCAL, format_name=format_name)
    assert raised.value.hint == "use the default engine, --engine polars"


def test_java_regex_keeps_group_numbers():
    regex, numbers = spark_engine.java_regex(file_parser.preset("combined"))
    assert "?P<" not in regex and numbers["client_ip"] == 1 and numbers["user_agent"] == 7


@pytest.mark.parametrize("pair", ["novalue", "=x"])
def test_bad_spark_conf(pair):
    with pytest.raises(ConfigError, match="key=value"):
        spark_engine.parse_conf([pair])


def test_stdin_is_refused():
    with pytest.raises(ConfigError, match="standard input"):
        spark_engine.spark_paths(["-"])


def test_remote_uris_pass_through():
    assert spark_engine.spark_paths(["s3a://bucket/logs/*.gz", "hdfs://nn/x"]) == ["s3a://bucket/logs/*.gz", "hdfs://nn/x"]


def test_missing_extra_names_the_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--engine", "spark"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "Traceback" not in err
    assert "(pip install '.[spark]' in the log_analyser source tree)" in err


CONNECT_SERVER = """
import sys, time
from pyspark.sql import SparkSession
SparkSession.builder.remote("local[2]").config("spark.connect.grpc.binding.port", sys.argv[1]).getOrCreate()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def connect_server(tmp_path):
    """A Spark Connect server on loopback, with an authentication token, in its own process."""
    import os
    import socket
    import subprocess
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SPARK_CONNECT_AUTHENTICATE_TOKEN": "test-token"}
    server = subprocess.Popen([sys.executable, "-c", CONNECT_SERVER, str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, "the Spark Connect server exited"
            time.sleep(1)
        else:
            raise AssertionError("the Spark Connect server did not start")
        yield f"sc://localhost:{port}/;token=test-token"  # a token to a non-local host means TLS
    finally:
        server.kill()
        server.wait()


@pytest.mark.heavy
def test_spark_connect_gives_the_same_table(connect_server):
    from pyspark.sql import SparkSession

    classic = SparkSession.getActiveSession()   # one process holds a classic or a Connect session
    if classic is not None:
        classic.stop()
    path = [str(DATA / "small.log")]
    local = ip_features.compute(file_parser.parse(path, max_unparsed_ratio=1.0).events)
    try:
        remote = spark_engine.aggregate(path, options=spark_engine.SparkOptions(master=connect_server),
                                        max_unparsed_ratio=1.0)
    finally:
        SparkSession.builder.remote(connect_server).getOrCreate().stop()
    assert_same_tables(local, remote.features)
