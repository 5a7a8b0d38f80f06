"""Shared addresses on real logs: what judging the rules a shared address trips per (IP, user agent)
changes, beside judging them per IP.

For each log: the addresses that carry at least four browser user agents (the candidates), the
ones ``behaviour.shared_addresses`` calls shared (each agent fetched page assets with under 20 %
errors), and, for those, the behaviour evidence of the ``per_agent_when_shared`` rules (user-agent
rotation, credential stuffing, volume) with and without the per-agent judgement.

    python bench/eval_shared_addresses.py [--logs PATH ...]

Default logs (read from ../shared, never copied): elastic's apache_logs, the four webhawk logs and
yauaa's hackers-access.log.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PUBLIC = ROOT.parent / "shared" / "data" / "public"
LOGS = ("elastic_examples/apache_logs", "slrbl_webhawk/2021_all.log", "slrbl_webhawk/access-2018-12-15.log",
        "slrbl_webhawk/access.log.2021-10-22", "slrbl_webhawk/access.log.2022-12-22",
        "nielsbasjes_yauaa/hackers-access.log")


def candidates(events: pl.DataFrame) -> pl.DataFrame:
    """Addresses with >= SHARED_MIN_AGENTS distinct browser user agents: address, agents, requests."""
    from log_analyser_core.rules import behaviour
    agent = pl.col("user_agent").cast(pl.String).str.to_lowercase()
    return (events.select(pl.col("client_ip").cast(pl.String), agent.alias("ua"))
            .filter(pl.col("ua").str.contains(behaviour._BROWSER) & ~pl.col("ua").str.contains(behaviour._BOT))
            .group_by("client_ip").agg(pl.col("ua").n_unique().alias("agents"), pl.len().alias("requests"))
            .filter(pl.col("agents") >= behaviour.SHARED_MIN_AGENTS).sort("agents", descending=True))


def rule_ids(evidence: dict, ip: str) -> set[str]:
    return {e.rule_id for e in evidence.get(ip, []) if e.kind != "context"}


def measure(path: Path) -> None:
    import file_parser
    from log_analyser_core.rules import behaviour
    events = file_parser.parse([str(path)]).events
    rules = behaviour.load_rules()
    per_agent = {r.id for r in rules if r.per_agent_when_shared}
    whole_ip = [dataclasses.replace(r, per_agent_when_shared=False) for r in rules]
    found = candidates(events)
    shared = behaviour.shared_addresses(events)
    with_split, without = behaviour.detect(events, rules), behaviour.detect(events, whole_ip)
    print(f"{path.name}: {events.height:,} requests, {events['client_ip'].n_unique():,} addresses; "
          f"{found.height} carry >= {behaviour.SHARED_MIN_AGENTS} browser agents, {len(shared)} judged shared")
    for ip, agents, requests in found.iter_rows():
        before = rule_ids(without, ip) & per_agent
        after = rule_ids(with_split, ip) & per_agent
        verdict = "shared" if ip in shared else "not shared"
        print(f"  {ip:<16} {agents:3} browser agents, {requests:5} requests, {verdict:<10} per-IP rules "
              f"{sorted(before) or '-'} -> per-agent {sorted(after) or '-'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="*", type=Path, default=[PUBLIC / p for p in LOGS])
    for path in parser.parse_args().logs:
        measure(path)


if __name__ == "__main__":
    main()
