"""Live mode's parts in-process: the tailer on real files, the bounded store, atomic reports and
--on-change, and batch and live verdicts on the same finished log."""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT

import file_parser
from log_analyser_core import pipeline
from log_analyser_core.live import tail
from log_analyser_core.live.monitor import Monitor
from log_analyser_core.live.outputs import Reports, atomic_write
from log_analyser_core.live.store import ClientStore, Limits
from log_analyser_core.live.tail import Chunk, Place, Tailer


def lines(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix} {n}\n" for n in range(start, start + count)]


def write(path: Path, text: list[str] | str, mode: str = "a") -> None:
    with open(path, mode, encoding="utf-8") as handle:
        handle.write("".join(text))


def read_all(tailer: Tailer) -> list[tuple[str, int, str]]:
    """(file name, line number, text) of every whole line the next polls return."""
    got = []
    while chunks := tailer.poll():
        got += [(Path(c.source).name, c.first_line + i, text) for c in chunks for i, text in enumerate(c.lines)]
    return got


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_the_end_and_waits_for_a_whole_line(tmp_path):
    log = tmp_path / "access.log"
    write(log, lines("old", 3) + ["half"])
    tailer = Tailer([str(log)])
    assert read_all(tailer) == []
    write(log, " done\n")
    assert read_all(tailer) == [("access.log", 4, "half done")]
    write(log, lines("new", 2))
    assert [text for _, _, text in read_all(tailer)] == ["new 0", "new 1"]


def test_lines_split_at_newlines_only(tmp_path):
    log = tmp_path / "access.log"
    log.touch()
    tailer = Tailer([str(log)])
    tailer.poll()
    log.write_bytes("ua\u2028x\x85y\x1cz\r\n\xff\n".encode() + b"\xff\n")
    assert read_all(tailer) == [("access.log", 1, "ua\u2028x\x85y\x1cz"), ("access.log", 2, "\xff"),
                                ("access.log", 3, "\\xff")]   # as the batch reader gives it


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path):
    log, clock = tmp_path / "access.log", Clock()
    log.touch()
    tailer = Tailer([str(log)], clock=clock)
    tailer.poll()
    write(log, lines("a", 2))
    os.rename(log, tmp_path / "access.log.1")
    write(tmp_path / "access.log.1", lines("a", 1, start=2))   # the server has not reopened yet
    write(log, lines("b", 2))
    got = read_all(tailer)
    assert sorted(text for _, _, text in got) == ["a 0", "a 1", "a 2", "b 0", "b 1"]
    assert ("access.log", 1, "b 0") in got   # the new file is numbered from 1
    clock.now += tail.GONE_GRACE_SECONDS + 1
    tailer.poll()
    assert [p.path for p in tailer.places_now()] == [str(log)]   # the old file let go


def test_a_glob_follows_a_renamed_file_without_reading_it_twice(tmp_path):
    log = tmp_path / "access.log"
    log.touch()
    tailer = Tailer([str(tmp_path / "access.log*")])
    tailer.poll()
    write(log, lines("a", 3))
    assert len(read_all(tailer)) == 3
    os.rename(log, tmp_path / "access.log.1")
    write(log, lines("b", 1))
    assert read_all(tailer) == [("access.log", 1, "b 0")]


def test_copy_truncate_to_the_same_size_is_noticed(tmp_path):
    log = tmp_path / "access.log"
    log.touch()
    tailer = Tailer([str(log)])
    tailer.poll()
    write(log, lines("a", 3))
    read_all(tailer)
    shutil.copyfile(log, tmp_path / "access.log.1")
    write(log, lines("b", 3), mode="w")   # truncated, then as many bytes written again before the next poll
    assert [text for _, _, text in read_all(tailer)] == ["b 0", "b 1", "b 2"]


def test_a_line_longer_than_a_poll_reads_is_read_whole_and_the_lines_after_it_too(tmp_path, monkeypatch):
    monkeypatch.setattr(tail, "READ_BYTES", 64)
    log = tmp_path / "access.log"
    log.touch()
    tailer = Tailer([str(log)])
    assert tailer.poll() == []
    write(log, "x" * 200)   # no newline yet: waits for it
    assert read_all(tailer) == []
    write(log, "\n" + "".join(lines("short", 2)))
    assert read_all(tailer) == [("access.log", 1, "x" * 200), ("access.log", 2, "short 0"),
                                ("access.log", 3, "short 1")]


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path):
    tailer = Tailer([str(tmp_path / "*.log")])
    assert tailer.poll() == []
    write(tmp_path / "late.log", lines("x", 2))
    assert read_all(tailer) == [("late.log", 1, "x 0"), ("late.log", 2, "x 1")]


def test_places_resume_by_inode(tmp_path):
    log = tmp_path / "access.log"
    write(log, lines("a", 2))
    first = Tailer([str(log)], from_start=True)
    read_all(first)
    places = first.places_now()
    first.close()
    write(log, lines("a", 2, start=2))
    resumed = Tailer([str(log)], places=places)
    assert read_all(resumed) == [("access.log", 3, "a 2"), ("access.log", 4, "a 3")]
    assert Place.from_json(places[0].to_json()) == places[0]


def events(ips: list[str]) -> pl.DataFrame:
    text = [f'{ip} - - [07/Dec/2026:10:00:{n % 60:02d} +0000] "GET / HTTP/1.1" 200 5 "-" "x"'
            for n, ip in enumerate(ips)]
    good, _ = file_parser.parse_lines(pl.Series("raw", text), file_parser.preset("combined"))
    return good.select(list(file_parser.EVENT_SCHEMA))


def test_the_store_keeps_each_clients_latest_events_and_evicts_idle_clients():
    evicted: list[set[str]] = []
    store = ClientStore(Limits(idle_ttl=60, per_client=3, max_events=1000), on_evict=evicted.append)
    store.add(events(["192.0.2.1"] * 5), now=0)
    store.add(events(["192.0.2.2"] * 2), now=50)
    assert store.compact(now=61) == {"192.0.2.1"}
    assert store.events["client_ip"].cast(pl.String).to_list() == ["192.0.2.2"] * 2
    store.add(events(["192.0.2.2"] * 4), now=62)
    store.compact(now=62)
    assert store.events.height == 3 and evicted == [{"192.0.2.1"}]


def test_the_store_drops_the_least_recently_seen_clients_over_its_event_limit():
    store = ClientStore(Limits(idle_ttl=1e9, per_client=100, max_events=10))
    for k in range(4):
        store.add(events([f"192.0.2.{k}"] * 4), now=k)
    assert store.compact(now=5) == {"192.0.2.0", "192.0.2.1"}
    assert store.events.height == 8


def test_over_its_event_limit_the_store_evicts_the_least_recently_seen_failing_clients_later_suspects_last():
    """Passing visitors make room first: a client with a failed request (a slow login attack between
    attempts) counts as seen FAILED_GRACE_SECONDS later than it was, one with evidence idle_ttl later."""
    from log_analyser_core.live.store import FAILED_GRACE_SECONDS

    assert FAILED_GRACE_SECONDS == 600
    store = ClientStore(Limits(idle_ttl=3600, per_client=100, max_events=10))
    store.add(events(["192.0.2.0"] * 3), now=0)                                            # a suspect
    store.add(events(["192.0.2.1"] * 3).with_columns(pl.lit(401, pl.Int16).alias("status")), now=0)
    for k, seen in ((2, 100), (3, 200), (4, 700)):                                          # benign
        store.add(events([f"192.0.2.{k}"] * 3), now=seen)
    assert store.full
    assert store.compact(now=700, suspects={"192.0.2.0"}) == {"192.0.2.2", "192.0.2.3"}
    store.add(events(["192.0.2.5"] * 3), now=1000)
    assert store.compact(now=1000, suspects={"192.0.2.0"}) == {"192.0.2.1"}   # its 600 s of grace are over
    store.add(events(["192.0.2.6"] * 6), now=1100)
    assert store.compact(now=1100, suspects={"192.0.2.0"}) == {"192.0.2.4", "192.0.2.5"}
    assert not store.full and set(store.last_seen) == {"192.0.2.0", "192.0.2.6"}


def test_live_sigma_examples_are_rebuilt_not_read_back_from_a_file_rotated_since(tmp_path):
    """Line 1 of the followed name is now another request (copy-truncate): an example read back by
    its line number would show that one; live mode rebuilds it from the parsed fields instead."""
    from log_analyser_core.live.evidence import PayloadEvidence

    log = tmp_path / "access.log"
    text = '192.0.2.5 - - [07/Dec/2026:10:00:00 +0000] "GET /.git/config HTTP/1.1" 404 5 "-" "curl/8"'
    parsed, _ = file_parser.parse_lines(pl.Series("raw", [text]), file_parser.preset("combined"))
    parsed = parsed.select(list(file_parser.EVENT_SCHEMA)).with_columns(
        pl.lit(str(log)).cast(pl.Categorical).alias("source"))
    log.write_text('198.51.100.1 - - [07/Dec/2026:10:05:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x"\n')
    payload = PayloadEvidence(pipeline.sigma_rules(pipeline.Settings()))
    payload.add(parsed)
    sigma = [e for e in payload.of("192.0.2.5") if e.kind == "sigma"]
    assert sigma and all(x.rebuilt and "/.git/config" in x.raw for e in sigma for x in e.examples)


def test_a_client_is_alerted_when_it_first_reaches_the_threshold_and_when_its_severity_rises():
    from dataclasses import replace

    from log_analyser_core.results import Severity

    monitor = Monitor(pipeline.Settings(crs_auto=False))
    finding = next(f for f in monitor.update([login_failures("192.0.2.66")]) if f.flagged)
    monitor.close()
    assert [(f.ip, kind, before) for f, kind, before in monitor.alerts([finding])] == \
        [("192.0.2.66", "new", None)]
    assert monitor.alerts([finding]) == []                                   # the same severity: once
    lower = replace(finding, severity=Severity.MEDIUM)
    assert monitor.alerts([lower]) == []                                     # a fall is not alerted
    higher = replace(finding, severity=Severity.CRITICAL)
    assert [(kind, before) for _, kind, before in monitor.alerts([higher])] == [("escalated", finding.severity)]
    assert monitor.alerts([replace(finding, flagged=False)]) == []           # below the threshold: nothing


def test_alert_lines_are_appended_to_the_alerts_file_one_whole_line_each(tmp_path):
    from log_analyser_core.live.outputs import AlertSink

    path = tmp_path / "alerts.jsonl"
    path.write_text('{"earlier": 1}\n')
    for text in ('{"ip": "192.0.2.1"}\n', '{"ip": "192.0.2.2"}\n'):
        sink = AlertSink(None, str(path))
        sink.send(text)
        assert path.read_text().endswith(text)   # flushed at once: a reader (tail -f, a SIEM agent) sees it
        sink.close()
    assert [json.loads(t) for t in path.read_text().splitlines()] == [
        {"earlier": 1}, {"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}]


def test_a_large_client_sending_successful_requests_is_judged_again_later_not_on_each_batch():
    """Judging costs in proportion to a client's kept requests: a large client's successful requests
    wait (REJUDGE_SECONDS at most, or until it doubles); a failed request is judged at once."""
    from log_analyser_core.live import monitor as live

    clock = Clock()
    monitor = Monitor(pipeline.Settings(crs_auto=False), clock=clock)

    def batch(status: int, count: int, first: int) -> list[Chunk]:
        text = [f'192.0.2.7 - - [07/Dec/2026:10:00:{n % 60:02d} +0000] "GET /p{n} HTTP/1.1" {status} 5 "-" "x"'
                for n in range(first, first + count)]
        return [Chunk("access.log", first + 1, text)]

    def judged(chunks: list[Chunk]) -> bool:
        return [f.ip for f in monitor.update(chunks)] == ["192.0.2.7"]
    assert judged(batch(200, live.SMALL_CLIENT_EVENTS + 10, 0))       # a new client
    clock.now += 1
    assert not judged(batch(200, 5, 100)) and monitor.waiting == {"192.0.2.7"}
    assert not judged([])                                              # nothing new, its wait not over
    clock.now += live.REJUDGE_SECONDS
    assert judged([]) and not monitor.waiting                         # over: judged without a new line
    assert not judged(batch(200, 5, 200))
    assert judged(batch(404, 1, 300))                                  # a failed request: at once
    assert not judged(batch(200, 5, 400))
    assert judged(batch(200, 2 * monitor.store.kept["192.0.2.7"], 500))   # doubled
    monitor.close()


def test_atomic_write_replaces_the_file_and_keeps_its_permissions(tmp_path):
    target = tmp_path / "deny.conf"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "deny 192.0.2.1;\n")
    assert target.read_text() == "deny 192.0.2.1;\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["deny.conf"]   # no temporary file left behind


def login_failures(ip: str) -> Chunk:
    text = [f'{ip} - - [07/Dec/2026:10:00:{n:02d} +0000] "POST /login HTTP/1.1" 401 5 "-" "x"' for n in range(6)]
    return Chunk("access.log", 1, text)


def test_on_change_runs_without_a_shell_and_only_when_a_report_changed(tmp_path):
    monitor = Monitor(pipeline.Settings())
    monitor.update([login_failures("192.0.2.66")])
    result = monitor.result(["access.log"])
    monitor.close()
    marker = tmp_path / "ran; touch pwned"
    script = "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'x' if p.exists() " \
             "else 'x')"
    targets = [("nginx", str(tmp_path / "deny.conf")), ("nftables", str(tmp_path / "blocklist.nft")),
               ("crowdsec", str(tmp_path / "decisions.crowdsec.json"))]
    reports = Reports(targets, {}, (sys.executable, "-c", script, str(marker)))
    assert reports.refresh(result)
    assert not reports.refresh(result)   # the same flagged set: nothing rewritten, nothing run
    assert reports.refresh(result, force=True) is False   # rendered again, same content: not rewritten
    assert marker.read_text() == "x" and not (tmp_path / "pwned").exists()
    assert "deny 192.0.2.66;" in (tmp_path / "deny.conf").read_text()
    assert all("192.0.2.66" in Path(path).read_text() for _, path in targets)


@pytest.fixture(scope="module")
def baseline_model(tmp_path_factory):
    import loggen

    trusted = tmp_path_factory.mktemp("trusted")
    log = trusted / "good.log"
    log.write_text("\n".join(loggen.generate(3000, seed=11, attackers=False).lines.to_list()) + "\n")
    pipeline.train([str(log)], str(trusted / "model"), pipeline.Settings(detectors=("iforest",)))
    return trusted / "model"


CRS = ROOT.parent / "shared" / "data" / "knowledge" / "coreruleset"


def docker_json_file(line: str) -> str:
    """The line as Docker's json-file driver logs it."""
    return json.dumps({"log": line + "\n", "stream": "stdout", "time": "2026-03-10T08:00:00.000000000Z"})


@pytest.mark.parametrize("case", ["plain", "docker", "crs"])
def test_batch_and_follow_give_the_same_verdicts_on_a_finished_log(tmp_path, baseline_model, monkeypatch, case):
    """Plain combined lines; the same lines in Docker json-file envelopes (live mode takes them off as
    a batch run does); and with the OWASP CRS stage, which live mode runs on each batch."""
    import loggen

    if case == "crs" and not CRS.is_dir():
        pytest.skip(f"no CRS at {CRS}")
    log = tmp_path / "access.log"   # benign traffic with a planted scanner, login brute force and flood
    text = loggen.generate(8000, seed=3).lines.to_list()
    log.write_text("\n".join(map(docker_json_file, text) if case == "docker" else text) + "\n")
    settings = pipeline.Settings(model=str(baseline_model), crs=str(CRS) if case == "crs" else None,
                                 crs_auto=case == "crs")
    batch = pipeline.analyse([str(log)], settings)
    monkeypatch.setattr(tail, "READ_BYTES", 2**19)   # several batches, as when lines arrive over time
    monitor, tailer, batches = Monitor(settings), Tailer([str(log)], from_start=True), 0
    while chunks := tailer.poll():
        monitor.update(chunks)
        batches += 1
    live = monitor.judge_all()
    result = monitor.result([str(log)])
    monitor.close()
    assert batches >= 3

    def verdicts(findings):
        return {f.ip: (f.flagged, f.severity, f.score, f.attack_types, f.requests,
                       sorted((e.kind, e.rule_id, e.count) for e in f.evidence)) for f in findings}
    assert verdicts(live) == verdicts(batch.findings)
    flagged = result.findings
    assert [(f.ip, f.rank) for f in flagged] == [(f.ip, f.rank) for f in batch.findings if f.flagged]
    assert len(flagged) >= 3   # the planted attackers: the comparison is not vacuous
    assert result.summary.formats == batch.summary.formats
    assert result.summary.parsed_lines == batch.summary.parsed_lines == len(text)
    if case == "docker":
        assert result.summary.formats == {str(log): "docker + combined"}
    kinds = {e.kind for f in flagged for e in f.evidence}
    assert ("crs" in kinds) == (case == "crs") and ("crs" in result.summary.detectors) == (case == "crs")


def test_a_baseline_bucket_judged_alone_sees_its_peers_through_peer_peaks(tmp_path):
    """Live mode judges only the clients of each batch: the flood rule's site baseline (a quantile of
    every client's peak) must still span all clients, as in a batch run."""
    import loggen

    from log_analyser_core.rules import behaviour

    generated = loggen.generate(8000, seed=3)
    log = tmp_path / "access.log"
    log.write_text("\n".join(generated.lines.to_list()) + "\n")
    events = file_parser.parse([str(log)]).events
    flooder = generated.labels.filter(pl.col("attack_type") == "dos")["ip"][0]
    rules = behaviour.load_rules([behaviour.default_rule_dir()])
    is_flooder = pl.col("client_ip").cast(pl.String) == flooder
    batch = behaviour.detect(events, rules)[flooder]
    peers: dict[str, pl.DataFrame] = {}
    behaviour.detect(events.filter(~is_flooder), rules, peer_peaks=peers)
    alone = behaviour.detect(events.filter(is_flooder), rules, peer_peaks=peers)[flooder]
    assert alone == batch
    assert any(e.attack_type == "dos" for e in batch)
    without_peers = behaviour.detect(events.filter(is_flooder), rules).get(flooder, [])
    assert not any(e.attack_type == "dos" for e in without_peers)   # its own peak as the baseline: no flood


def test_the_loop_redraws_the_table_and_writes_everything_when_stopped(tmp_path):
    import io
    import threading
    import time

    from log_analyser_core.live import checkpoint
    from log_analyser_core.live.follow import Follower, FollowOptions, Screen

    log = tmp_path / "access.log"
    log.touch()
    options = FollowOptions(patterns=(str(log),), reports=(("nginx", str(tmp_path / "deny.conf")),),
                            checkpoint=tmp_path / "cp.json")
    screen, alerts = io.StringIO(), io.StringIO()
    ready = threading.Event()
    follower = Follower(pipeline.Settings(), options, alerts_stream=alerts,
                        screen=Screen(screen, lambda result: f"{len(result.findings)} client(s)\n"),
                        ready=lambda files: ready.set())
    thread = threading.Thread(target=follower.run)
    thread.start()
    assert ready.wait(30)
    write(log, [text + "\n" for text in login_failures("192.0.2.66").lines])
    deadline = time.monotonic() + 30
    while "192.0.2.66" not in alerts.getvalue() and time.monotonic() < deadline:
        time.sleep(0.1)
    follower.stop.set()
    thread.join(30)
    assert screen.getvalue() == "\x1b[H\x1b[2J1 client(s)\n"   # the flagged ones
    assert '"kind":"new"' in alerts.getvalue()
    assert "deny 192.0.2.66;" in (tmp_path / "deny.conf").read_text()
    saved = checkpoint.load(tmp_path / "cp.json")
    assert saved is not None and saved.places[0].lines == 6 and set(saved.alerted) == {"192.0.2.66"}
    assert saved.events.height == 6


def test_an_alert_line_is_a_finding_of_the_json_report_schema():
    import json

    import jsonschema

    from log_analyser_core.live.outputs import alert_json
    from log_analyser_core.results import Severity

    root = Path(__file__).resolve().parents[1]
    schema = json.loads((root / "schemas" / "report.schema.json").read_text())
    monitor = Monitor(pipeline.Settings())
    finding = next(f for f in monitor.update([login_failures("192.0.2.66")]) if f.flagged)
    monitor.close()
    document = json.loads(alert_json(finding, "escalated", Severity.MEDIUM))
    finding_schema = {"$defs": schema["$defs"], **schema["$defs"]["finding"]}
    jsonschema.validate(document, finding_schema)
    assert document["alert"]["kind"] == "escalated" and document["alert"]["previous_severity"] == "medium"
    assert document["alert"]["time"].endswith("Z")


def test_a_failed_judgement_leaves_the_checkpoint_before_the_lines_it_never_judged(tmp_path, monkeypatch):
    import io
    import threading

    from log_analyser_core.live import checkpoint
    from log_analyser_core.live.follow import Follower, FollowOptions
    from log_analyser_core.live.monitor import Monitor

    log = tmp_path / "access.log"
    log.touch()
    options = FollowOptions(patterns=(str(log),), checkpoint=tmp_path / "cp.json")
    ready, failures = threading.Event(), []

    def failing_update(self, chunks):
        failures.append(len(chunks))
        raise RuntimeError("judging failed")

    monkeypatch.setattr(Monitor, "update", failing_update)
    follower = Follower(pipeline.Settings(), options, alerts_stream=io.StringIO(),
                        ready=lambda files: ready.set())
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            follower.run()
        except RuntimeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(30)
    write(log, [text + "\n" for text in login_failures("192.0.2.67").lines])
    thread.join(60)
    assert not thread.is_alive() and failures and outcome   # the loop ended on the failure
    saved = checkpoint.load(tmp_path / "cp.json")
    assert saved is None or all(place.lines == 0 for place in saved.places)   # a restart reads the 6 lines again
