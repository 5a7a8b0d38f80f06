"""Each hand-written payload signature family against the CRS stage, request by request.

For every family (sig-sqli, sig-xss, sig-path-traversal, sig-rce, sig-ssrf) and log: the requests
it flags, how many of those CRS also flags (anomaly score at the threshold) at PL1 and PL2, and
the ones only the family flags. CSIC 2010 is labelled (requests whose payload a log shows:
anomalous vs normal), so there the family-only hits split into caught attacks and false
positives; the other logs are unlabelled and the family-only requests are printed (a few each)
to read by hand.

    python bench/eval_signature_families.py [--sample 4]

Logs (read from ../shared, never copied): CSIC 2010, the ocatak Acunetix / Netsparker / w3af runs,
yauaa's hackers-access.log, elastic's apache_logs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PUBLIC = ROOT.parent / "shared" / "data" / "public"
CRS = ROOT.parent / "shared" / "data" / "knowledge" / "coreruleset"
LOGS = {"ocatak acunetix": "ocatak_apache-http-logs/acunetix.txt",
        "ocatak netsparker": "ocatak_apache-http-logs/netsparker.txt",
        "ocatak w3af": "ocatak_apache-http-logs/w3af.txt",
        "hackers-access.log": "nielsbasjes_yauaa/hackers-access.log",
        "apache_logs": "elastic_examples/apache_logs"}


def csic_sets(folder: Path) -> dict[str, pl.DataFrame]:
    import csic

    import file_parser
    sets = {}
    for kind in ("anomalous", "normal"):
        requests = [r for r in csic.read(kind) if r.visible]
        path = folder / f"{kind}.log"
        path.write_text("".join(csic.log_line(r, i) + "\n" for i, r in enumerate(requests)), encoding="latin-1")
        sets[f"CSIC {kind}"] = file_parser.parse([str(path)]).events
    return sets


def flagged(events: pl.DataFrame, rulesets: dict[int, object]) -> tuple[pl.DataFrame, dict[int, set[int]]]:
    from log_analyser_core.rules import signatures
    from log_analyser_core.rules.crs import stage
    families = signatures.matches(events)
    crs = {level: set(stage.matches(events, ruleset)["_row"].to_list()) for level, ruleset in rulesets.items()}
    return families, crs


def report(name: str, events: pl.DataFrame, families: pl.DataFrame, crs: dict[int, set[int]],
           sample: int) -> dict[str, tuple[int, int, int]]:
    out = {}
    print(f"{name}: {events.height:,} requests; CRS flags " + ", ".join(
        f"PL{level} {len(rows):,}" for level, rows in crs.items()))
    for family in families.columns:
        rows = set(families.with_row_index("_row").filter(pl.col(family))["_row"].to_list())
        only = {level: rows - crs_rows for level, crs_rows in crs.items()}
        out[family] = (len(rows), len(only[1]), len(only[2]))
        print(f"  {family:<20} {len(rows):6,} flagged; not CRS PL1 {len(only[1]):5,}; not CRS PL2 {len(only[2]):5,}")
        for row in sorted(only[2])[:sample]:
            event = events.row(row, named=True)
            target = event["path"] + ("?" + event["query"] if event["query"] else "")
            print(f"      {target[:110]!r} ua={str(event['user_agent'])[:40]!r} ref={str(event['referer'])[:40]!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=4, help="family-only requests printed per family")
    args = parser.parse_args()
    import file_parser
    from log_analyser_core.rules.crs import stage
    rulesets = {level: stage.load(CRS, level) for level in (1, 2)}
    with tempfile.TemporaryDirectory() as folder:
        logs = csic_sets(Path(folder))
        logs |= {name: file_parser.parse([str(PUBLIC / path)]).events for name, path in LOGS.items()}
        for name, events in logs.items():
            families, crs = flagged(events, rulesets)
            report(name, events, families, crs, args.sample)


if __name__ == "__main__":
    main()
