"""The Spark engine against the local one: every finding the same, on real and labelled logs.

Both engines run engines/partition.py per partition of clients, Spark on ``local[2]`` with the
events hashed into several partitions (PARTITION_EVENTS lowered), so these tests also prove that
splitting the clients changes nothing: flagged, severity, score, attack types, evidence rule ids
and example lines (file, line number and text) are compared one by one.
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest
from conftest import DATA, ROOT

import log_analyser
from log_analyser_core.engines import spark as spark_engine
from log_analyser_core.errors import ConfigError, ExitCode
from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.verdict import Allowlist

# Slow (a JVM starts); the tests that need pyspark and Java are marked heavy as well (CI's core jobs lack
# the spark extra), while those of the pure-Python helpers run everywhere.
pytestmark = pytest.mark.slow
LOCAL = spark_engine.SparkOptions(master="local[2]", conf=(("spark.sql.shuffle.partitions", "4"),))


@pytest.fixture(scope="module")
def spark():
    # the executors' Python workers import this checkout's modules, as the driver does
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return spark_engine.session(LOCAL)


@pytest.fixture
def small_partitions(monkeypatch):
    """Several partitions of clients even on these small logs (so that a client's partition matters)."""
    monkeypatch.setattr(spark_engine, "PARTITION_EVENTS", 2_000)


def findings(result) -> dict[str, tuple]:
    return {f.ip: (f.flagged, f.severity, round(f.score, 6), f.attack_types, tuple(e.rule_id for e in f.evidence),
                   tuple((x.source, x.line_number, x.raw) for e in f.evidence for x in e.examples))
            for f in result.findings}


def assert_same_findings(local, remote) -> None:
    assert remote.summary.total_lines == local.summary.total_lines
    assert remote.summary.parsed_lines == local.summary.parsed_lines
    assert remote.summary.unparsed_by_reason == local.summary.unparsed_by_reason
    assert remote.summary.detectors == local.summary.detectors
    assert remote.summary.excluded == local.summary.excluded
    mine, theirs = findings(local), findings(remote)
    assert set(mine) == set(theirs)
    differ = {ip: (mine[ip], theirs[ip]) for ip in mine if mine[ip] != theirs[ip]}
    assert not differ, f"{len(differ)} of {len(mine)} clients differ, e.g. {next(iter(differ.items()))}"
    assert any(f.evidence for f in local.findings), "a log with no evidence at all proves little"


def both(paths: list[str], **settings) -> tuple:
    settings = {"detectors": ("iforest",), **settings}   # the detectors run on the driver either way: the
    return (analyse(paths, Settings(**settings)),         # autoencoder would add minutes and prove nothing more
            analyse(paths, Settings(engine="spark", spark=LOCAL, **settings)))


@pytest.mark.heavy
def test_same_findings_on_apache_logs_with_an_allowlist(spark, shared, small_partitions):
    # 1,753 clients, Googlebot among them (a crawler locally); the allowlist's request patterns now apply
    allow = Allowlist(networks=(), user_agents=("pingdom",), paths=(r"^/favicon\.ico$",))
    local, remote = both([str(shared / "public/elastic_examples/apache_logs")], allowlist=allow)
    assert_same_findings(local, remote)
    assert local.summary.excluded, "the allowlist kept requests out"


@pytest.mark.heavy
def test_same_findings_on_hackers_access_log(spark, shared, small_partitions):
    local, remote = both([str(shared / "public/nielsbasjes_yauaa/hackers-access.log")])
    assert_same_findings(local, remote)


@pytest.mark.heavy
def test_same_findings_on_the_scanner_logs_read_together(spark, shared, small_partitions):
    folder = shared / "public/ocatak_apache-http-logs"
    local, remote = both([str(folder / name) for name in ("acunetix.txt", "netsparker.txt", "w3af.txt")])
    assert_same_findings(local, remote)


@pytest.mark.heavy
def test_same_findings_on_a_labelled_set(spark, tmp_path, small_partitions):
    import make_labelled

    lines, _ = make_labelled.generate(20_000, seed=3)
    path = tmp_path / "labelled.log"
    path.write_text("\n".join(lines.to_list()) + "\n", encoding="utf-8")
    local, remote = both([str(path)])
    assert_same_findings(local, remote)
    assert any("rule" == e.kind for f in remote.findings for e in f.evidence)


@pytest.mark.heavy
def test_same_findings_when_the_detectors_fit_on_a_sample(spark, shared, small_partitions, monkeypatch):
    # past FIT_CLIENTS Spark brings only the sample to the driver: the same clients the local engine picks
    import anomaly_detector as detect

    monkeypatch.setattr(detect, "FIT_CLIENTS", 400)
    local, remote = both([str(shared / "public/elastic_examples/apache_logs")])
    assert local.summary.clients > 400
    assert_same_findings(local, remote)


@pytest.mark.heavy
def test_the_model_scores_in_the_executors_python_workers(spark):
    # the driver sends the scoring function out; each Arrow batch of clients is scored in a Python worker
    import numpy as np

    done = spark_engine.run([str(DATA / "small.log")], Settings(engine="spark", spark=LOCAL, max_unparsed_ratio=1.0),
                            None)

    def where(rows):
        return {"pid": np.full(rows.height, float(os.getpid()))}
    table, scores = done.scored(where, ("pid",))
    assert table.height == 7 and len(scores["pid"]) == 7
    assert float(os.getpid()) not in set(scores["pid"].tolist())


@pytest.mark.heavy
def test_a_run_scores_the_forest_on_the_executors_only(spark, monkeypatch):
    # the pipeline's scoring function, wrapped: calls on the driver are recorded here, those on the
    # executors (a pickled copy of the wrapper and its list) are not
    import anomaly_detector as detect

    on_driver: list = []
    original = detect.detector_scores

    def recorded(baseline, table, names=None):
        on_driver.append(tuple(names) if names is not None else None)
        return original(baseline, table, names)
    monkeypatch.setattr(detect, "detector_scores", recorded)
    path = [str(DATA / "small.log")]
    local, remote = both(path, max_unparsed_ratio=1.0)
    assert on_driver == [("iforest",)], "the local engine scores here, once"
    assert_same_findings(local, remote)


@pytest.mark.heavy
def test_same_findings_against_a_trained_model(spark, shared, tmp_path, small_partitions):
    # with --model the loaded baseline is the model the executors apply (its autoencoder, if the deep
    # extra can train one, scores on the driver: see anomaly_detector.ROW_EXACT_DETECTORS)
    from log_analyser_core.detectors import autoencoder
    from log_analyser_core.pipeline import train

    path = [str(shared / "public/elastic_examples/apache_logs")]
    detectors = ("iforest", "autoencoder") if autoencoder.available() else ("iforest",)
    train(path, str(tmp_path / "model"), Settings(detectors=detectors))
    local, remote = both(path, detectors=None, model=str(tmp_path / "model"))
    assert set(detectors) <= set(remote.summary.detectors)
    assert_same_findings(local, remote)


@pytest.mark.heavy
def test_awkward_lines_are_counted_and_shown_with_their_line_numbers(spark):
    local, remote = both([str(DATA / "small.log")], max_unparsed_ratio=1.0)
    assert_same_findings(local, remote)
    shown = remote.unparsed.select("line_number", "reason", "raw").rows()
    assert shown == local.unparsed.select("line_number", "reason", "raw").rows()[:len(shown)] and shown


@pytest.mark.heavy
@pytest.mark.parametrize("parts", [2, 3, 11])
def test_every_partition_of_clients_is_its_own_task(spark, parts):
    # so that local[N] and a cluster run the per-client stages on `parts` cores, not fewer
    from pyspark.sql import functions as F

    events = spark.createDataFrame([(f"198.51.100.{i}",) for i in range(200)], "client_ip string")
    split = spark_engine.by_client(events, parts).groupBy(F.spark_partition_id().alias("task")).count()
    assert split.count() == parts


@pytest.mark.heavy
def test_training_reads_the_same_table_in_another_zone(spark, small_partitions):
    # train() asks for the features only (no plan): the night-time feature still follows --tz
    from polars.testing import assert_frame_equal

    from log_analyser_core.engines import engine

    settings = Settings(tz="Asia/Kolkata", spark=LOCAL, max_unparsed_ratio=1.0)
    path = [str(DATA / "small.log")]
    local, remote = (engine.named(name).aggregate(path, settings) for name in ("polars", "spark"))
    assert remote.detected is None
    assert_frame_equal(local.features(), remote.features())


@pytest.mark.heavy
def test_cli_engine_spark(spark, tmp_path):
    out = tmp_path / "r.json"
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--engine", "spark", "--spark-master", "local[2]",
                              "--spark-conf", "spark.sql.shuffle.partitions=4", "-o", str(out)])
    assert code == ExitCode.OK and '"clients": 7' in out.read_text()


@pytest.mark.heavy
@pytest.mark.parametrize("format_name", ["auto", "w3c"])
def test_w3c_logs_are_refused_not_misparsed(spark, format_name):
    # A W3C file's columns can change at every #Fields: header block; only the local engine follows them.
    with pytest.raises(ConfigError, match=r"does not read w3c \(W3C extended\) logs.*#Fields:") as raised:
        analyse([str(DATA / "formats/w3c_blocks.log")], Settings(engine="spark", spark=LOCAL, format_name=format_name))
    assert raised.value.hint == "use the default engine, --engine polars"


@pytest.mark.parametrize("pair", ["novalue", "=x"])
def test_bad_spark_conf(pair):
    with pytest.raises(ConfigError, match="key=value"):
        spark_engine.parse_conf([pair])


def test_stdin_is_refused():
    with pytest.raises(ConfigError, match="standard input"):
        spark_engine.spark_paths(["-"])


def test_remote_uris_pass_through():
    assert spark_engine.spark_paths(["s3a://bucket/logs/*.gz", "hdfs://nn/x"]) == ["s3a://bucket/logs/*.gz", "hdfs://nn/x"]


def test_files_keep_the_names_they_were_given():
    names = spark_engine.source_names(["logs/a b.log", "s3a://bucket/x.log"])
    assert spark_engine._shown("file:" + os.path.abspath("logs/a%20b.log"), names) == "logs/a b.log"
    assert spark_engine._shown("file:/elsewhere/c.log", names) == "/elsewhere/c.log"
    assert spark_engine._shown("s3a://bucket/x.log", names) == "s3a://bucket/x.log"


def test_missing_extra_names_the_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--engine", "spark"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "(pip install '.[spark]' in the log_analyser source tree)" in err


def test_the_default_engine_needs_no_pyspark(capsys, monkeypatch, tmp_path):
    # pyspark is an optional extra: a run on this machine never imports it
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    out = tmp_path / "r.json"
    assert log_analyser.main(["-f", str(DATA / "small.log"), "-o", str(out), "-q"]) == ExitCode.OK
    assert '"clients": 7' in out.read_text()


def test_missing_java_is_one_line(capsys, monkeypatch, tmp_path):
    pytest.importorskip("pyspark")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))   # no java here
    assert shutil.which("java") is None
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--engine", "spark", "--spark-master", "local[1]"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "needs Java 17 or later" in err and "openjdk-17-jre-headless" in err
    spark_engine.require_java("sc://localhost:15002")   # Spark Connect needs no local JVM


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
    import socket
    import subprocess
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SPARK_CONNECT_AUTHENTICATE_TOKEN": "test-token",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
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


@pytest.fixture
def own_environment():
    """The process environment restored after the test: a Connect session leaves
    SPARK_CONNECT_MODE_ENABLED set, which would make every later session of this process a Connect one."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.heavy
def test_spark_connect_gives_the_same_findings(connect_server, small_partitions, own_environment):
    from pyspark.sql import SparkSession

    classic = SparkSession.getActiveSession()   # one process holds a classic or a Connect session
    if classic is not None:
        classic.stop()
    path = [str(DATA / "small.log")]
    local = analyse(path, Settings(max_unparsed_ratio=1.0))
    try:
        remote = analyse(path, Settings(engine="spark", max_unparsed_ratio=1.0,
                                        spark=spark_engine.SparkOptions(master=connect_server)))
    finally:
        SparkSession.builder.remote(connect_server).getOrCreate().stop()
    assert_same_findings(local, remote)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def standalone_master(tmp_path):
    """A classic Spark standalone cluster on loopback: a master and one worker (one core), each its
    own JVM started with pyspark's spark-class, so the executor and its Python workers are not the
    driver's (the plan, the rules and the format travel pickled, as on a real cluster)."""
    import subprocess
    import time

    from pyspark.find_spark_home import _find_spark_home

    spark_class = os.path.join(_find_spark_home(), "bin", "spark-class")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    master_log = (tmp_path / "master.log").open("w")
    processes = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(port), "--webui-port", str(_free_port())],
                                  env=env, stdout=master_log, stderr=subprocess.STDOUT)]
    try:
        processes.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
             "--memory", "1g", "--webui-port", str(_free_port()), "--work-dir", str(tmp_path / "work")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 240
        while "Registering worker" not in (tmp_path / "master.log").read_text():
            assert time.monotonic() < deadline, "the standalone worker did not register"
            assert all(p.poll() is None for p in processes), "the standalone master or worker exited"
            time.sleep(1)
        yield url
    finally:
        for process in reversed(processes):
            process.kill()
            process.wait()
        master_log.close()


@pytest.mark.heavy
def test_a_standalone_cluster_gives_the_same_findings(standalone_master, shared, small_partitions):
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()   # one process holds one SparkContext: this run's master is new
    if active is not None:
        active.stop()
    conf = (("spark.pyspark.python", sys.executable), ("spark.executorEnv.PYTHONPATH", str(ROOT)),
            ("spark.driver.host", "127.0.0.1"), ("spark.sql.shuffle.partitions", "4"))
    path = [str(shared / "public/elastic_examples/apache_logs")]
    local = analyse(path, Settings(detectors=("iforest",)))
    try:
        remote = analyse(path, Settings(engine="spark", detectors=("iforest",),
                                        spark=spark_engine.SparkOptions(master=standalone_master, conf=conf)))
        active = SparkSession.getActiveSession()
        assert active is not None and active.sparkContext.master == standalone_master
    finally:
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
    assert_same_findings(local, remote)
