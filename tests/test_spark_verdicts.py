"""What a ``--engine spark`` run decides from the per-client table that Spark returns: the allowlist's
networks, internal addresses, the refusal of an allowlist that cannot apply, and the summary's notes.
No Spark session: the local engine builds the same table (tests/test_spark_engine.py proves it) in
place of spark_engine.aggregate, and everything after aggregation is the Spark branch of analyse()."""
from __future__ import annotations

import ipaddress

import polars as pl
import pytest

import file_parser
import log_analyser
from log_analyser_core import verdict
from log_analyser_core.engines import spark as spark_engine
from log_analyser_core.engines.engine import SPARK_NOTE
from log_analyser_core.errors import ConfigError, ExitCode, RulesError
from log_analyser_core.features import client as ip_features
from log_analyser_core.pipeline import Settings, analyse

FOREST = ("iforest",)
INTERNAL_FLOOD = "10.20.30.40"


def local_aggregate(sources, *, options, format_name="auto", log_format=None, tz="UTC", max_unparsed_ratio=0.5):
    """spark_engine.aggregate's result, computed on this machine."""
    parsed = file_parser.parse(sources, format_name=format_name, log_format=log_format, tz=tz,
                               max_unparsed_ratio=max_unparsed_ratio)
    return spark_engine.SparkAggregate(features=ip_features.compute(parsed.events), stats=parsed.stats,
                                       unparsed_examples=parsed.unparsed)


@pytest.fixture
def no_spark(monkeypatch):
    monkeypatch.setattr(spark_engine, "aggregate", local_aggregate)


@pytest.fixture(scope="module")
def office_log(planted_log, tmp_path_factory):
    """The planted log with its flood coming from an internal address; (path, scanner ip)."""
    path, labels = planted_log
    attackers = dict(zip(*labels.filter(pl.col("label") == "attack")[["attack_type", "ip"]], strict=True))
    text = path.read_text(encoding="utf-8").replace(f"{attackers['dos']} ", f"{INTERNAL_FLOOD} ")
    copy = tmp_path_factory.mktemp("office") / "access.log"
    copy.write_text(text, encoding="utf-8")
    return str(copy), attackers["scanner"]


def allowlist(*networks: str, user_agents: tuple[str, ...] = (), paths: tuple[str, ...] = ()) -> verdict.Allowlist:
    return verdict.Allowlist(networks=tuple(ipaddress.ip_network(n) for n in networks), user_agents=user_agents,
                             paths=paths)


def test_allowlisted_networks_are_never_flagged_and_internal_clients_are_marked_as_locally(no_spark, office_log):
    path, scanner = office_log
    allow = allowlist(f"{scanner}/32")
    there = analyse([path], Settings(engine="spark", detectors=FOREST, allowlist=allow))
    found = {f.ip: f for f in there.findings}
    # the scanner scores high enough to be flagged, and is not: it is allowlisted, and the report says why
    assert found[scanner].score >= Settings().threshold and not found[scanner].flagged
    assert found[scanner].reasons[0] == f"allowlisted: ip in {scanner}/32"
    assert there.summary.excluded == {f"ip in {scanner}/32 (clients)": 1}
    assert found[INTERNAL_FLOOD].internal and found[INTERNAL_FLOOD].flagged
    assert there.summary.notes.count(SPARK_NOTE) == 1 and not any("allowlist" in n for n in there.summary.notes)
    here = analyse([path], Settings(detectors=FOREST, allowlist=allow))
    assert {f.ip for f in there.findings if f.internal} == {f.ip for f in here.findings if f.internal}
    assert there.summary.excluded == here.summary.excluded


def test_request_patterns_are_named_as_not_applied_while_the_networks_are(no_spark, office_log):
    path, scanner = office_log
    allow = allowlist(f"{scanner}/32", user_agents=("^UptimeRobot/",), paths=("^/healthz$",))
    result = analyse([path], Settings(engine="spark", detectors=FOREST, allowlist=allow))
    assert not next(f for f in result.findings if f.ip == scanner).flagged
    assert [n for n in result.summary.notes if "allowlist" in n] == [
        "engine spark: the allowlist's ips were applied; its user_agents and paths patterns match single requests "
        "and were not"]


def test_an_allowlist_of_only_request_patterns_is_refused_before_spark_starts(monkeypatch, capsys, tmp_path):
    def must_not_run(*args, **kwargs):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(spark_engine, "aggregate", must_not_run)
    allow = tmp_path / "allow.yaml"
    allow.write_text("user_agents: ['^UptimeRobot/']\n")
    with pytest.raises(ConfigError, match="cannot apply an allowlist of only user_agents and paths patterns"):
        analyse(["unused.log"], Settings(engine="spark", allowlist=verdict.load_allowlist(allow)))
    code = log_analyser.main(["-f", "unused.log", "--engine", "spark", "--allow", str(allow)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and err.count("\n") == 1
    assert err.startswith("error: --engine spark cannot apply an allowlist of only user_agents and paths patterns")
    assert err.rstrip().endswith("(list the clients under ips, or use the default engine, --engine polars)")


def test_the_note_says_the_request_level_stages_did_not_run(no_spark, planted_log):
    result = analyse([str(planted_log[0])], Settings(engine="spark", detectors=FOREST))
    assert SPARK_NOTE in result.summary.notes and "did not run" in SPARK_NOTE
    assert not any("ran only locally" in n for n in result.summary.notes)
    assert result.summary.detectors == FOREST and not result.summary.excluded
    assert all(f.evidence == () and f.attack_types == () for f in result.findings)


def test_sigma_rules_are_not_loaded_where_they_cannot_run(no_spark, office_log, tmp_path):
    path, _ = office_log
    broken = tmp_path / "rules"
    broken.mkdir()
    (broken / "bad.yml").write_text("title: not a rule\ndetection: [\n", encoding="utf-8")
    with pytest.raises(RulesError):   # locally, a broken rule folder stops the run before parsing
        analyse([path], Settings(detectors=FOREST, rules_dirs=(str(broken),)))
    there = analyse([path], Settings(engine="spark", detectors=FOREST, rules_dirs=(str(broken),)))
    sigma_notes = [n for n in there.summary.notes if "Sigma rule" in n and ("skipped" in n or " read " in n)]
    assert there.findings and sigma_notes == []
