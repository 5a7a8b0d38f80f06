"""Per-request payload detection: the hand-written signatures, the Sigma pack and libinjection.

* CSIC 2010 (../shared/data/public/realivanivani_net-traffic-classifier): 36,000 normal test requests
  and 25,065 anomalous ones. An access log records the request line, not a POST body, so each
  request is scored twice: *as logged* (path and query only) and *with the body* (a POST body read
  as the query string, to compare the payload detectors on every payload).
* ocatak scanner logs: every request of the three scanner runs, counted by detector (no per-request
  labels there: the counts and their overlap are what can be compared).

Detectors: ``signatures`` (sig-sqli, sig-xss; all: any signature), ``sigma`` (any rule of the
built-in pack), ``tool`` (signatures or Sigma: what the analysis sees per request), and
``libinjection`` (``libinjection-python``: is_sql_injection / is_xss on each URL-decoded parameter
value and on the whole decoded target).

    python bench/eval_payloads.py [--data ../shared/data/public]
"""
from __future__ import annotations

import argparse
import gzip
import sys
import zipfile
from pathlib import Path
from urllib.parse import unquote_plus

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import file_parser  # noqa: E402
from log_analyser_core.rules import sigma_engine, signatures  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "public"
CSIC = "realivanivani_net-traffic-classifier/csic_dataset.zip"


def csic_requests(path: Path, member: str) -> list[tuple[str, str, str, str]]:
    """(method, path, query as logged, body) of each request in one CSIC file: a request line
    (``METHOD http://localhost:8080/...``), headers, a blank line, and for a POST its body line."""
    text = gzip.decompress(zipfile.ZipFile(path).read(f"csic_dataset/{member}")).decode("latin-1")
    requests: list[list[str]] = []
    in_headers = False
    for line in text.replace("\r\n", "\n").split("\n"):
        first = line.split(" ", 2)
        if len(first) == 3 and first[0] in ("GET", "POST", "PUT") and first[1].startswith("http://"):
            where, _, query = first[1].split("localhost:8080", 1)[-1].partition("?")
            requests.append([first[0], where, query, ""])
            in_headers = True
        elif in_headers and not line:
            in_headers = False
        elif requests and not in_headers and line and requests[-1][0] != "GET" and not requests[-1][3]:
            requests[-1][3] = line
    return [(m, w, q, b) for m, w, q, b in requests]


def libinjection_hits(targets: list[str]) -> tuple[list[bool], list[bool]]:
    try:
        import libinjection
    except ImportError:
        sys.exit("this comparison needs libinjection: pip install libinjection-python")

    sqli, xss = [], []
    for target in targets:
        values = [unquote_plus(unquote_plus(part.partition("=")[2])) for part in target.split("&")] + [
            unquote_plus(target)]
        sqli.append(any(libinjection.is_sql_injection(v)["is_sqli"] for v in values if v))
        xss.append(any(libinjection.is_xss(v)["is_xss"] for v in values if v))
    return sqli, xss


def tool_hits(frame: pl.DataFrame, rules: sigma_engine.RuleSet) -> pl.DataFrame:
    sig = signatures.matches(frame)
    sigma = pl.Series("sigma", [False] * frame.height)
    hits = sigma_engine.matches(frame, rules)
    if hits.height:
        sigma = pl.Series("sigma", pl.select(pl.int_range(frame.height).is_in(hits["_row"].implode())).to_series())
    return sig.with_columns(sigma.alias("sigma"))


def events_frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    """An events table (the columns the detectors read) for (method, path, query) rows."""
    frame = pl.DataFrame({"method": [r[0] for r in rows], "path": [r[1] for r in rows],
                          "query": [r[2] or None for r in rows]}, schema={"method": pl.String, "path": pl.String,
                                                                        "query": pl.String})
    others = {name: pl.lit(None, dtype) for name, dtype in file_parser.EVENT_SCHEMA.items()
              if name not in frame.columns}
    frame = frame.with_columns(**others).with_columns(status=pl.lit(200, pl.Int16),
                                                      user_agent=pl.lit("Mozilla/5.0", pl.Categorical))
    return frame.select(list(file_parser.EVENT_SCHEMA)).with_columns(pl.col("method").cast(pl.Categorical))


def rates(flags: dict[str, list[bool]], attack: list[bool]) -> None:
    n_attack, n_normal = sum(attack), len(attack) - sum(attack)
    for name, hit in flags.items():
        tp = sum(h and a for h, a in zip(hit, attack, strict=True))
        fp = sum(h and not a for h, a in zip(hit, attack, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        print(f"    {name:<22} recall {tp / n_attack:.3f} ({tp:,}/{n_attack:,})  false-positive rate "
              f"{fp / n_normal:.4f} ({fp:,}/{n_normal:,})  precision {precision:.3f}")


def csic(data: Path, rules: sigma_engine.RuleSet) -> None:
    normal = csic_requests(data / CSIC, "normalTrafficTest.txt.gz")
    anomalous = csic_requests(data / CSIC, "anomalousTrafficTest.txt.gz")
    attack = [False] * len(normal) + [True] * len(anomalous)
    everything = normal + anomalous
    for view, rows in (("as logged (request line)", [(m, p, q) for m, p, q, _ in everything]),
                       ("with the body (POST body as the query)",
                        [(m, p, "&".join(x for x in (q, b) if x)) for m, p, q, b in everything])):
        frame = events_frame(rows)
        hits = tool_hits(frame, rules)
        sqli, xss = libinjection_hits([r[2] for r in rows])
        sig_any = hits.drop("sigma").select(pl.any_horizontal(pl.all())).to_series().to_list()
        print(f"CSIC 2010, {view}: {len(normal):,} normal, {len(anomalous):,} anomalous requests")
        rates({"signatures sqli": hits["sig-sqli"].to_list(), "libinjection sqli": sqli,
               "signatures xss": hits["sig-xss"].to_list(), "libinjection xss": xss,
               "signatures sqli|xss": [a or b for a, b in zip(hits["sig-sqli"], hits["sig-xss"], strict=True)],
               "libinjection sqli|xss": [a or b for a, b in zip(sqli, xss, strict=True)],
               "signatures (all)": sig_any, "sigma pack": hits["sigma"].to_list(),
               "tool (signatures|sigma)": [a or b for a, b in zip(sig_any, hits["sigma"], strict=True)]}, attack)


def ocatak(data: Path, rules: sigma_engine.RuleSet) -> None:
    for name in ("acunetix.txt", "netsparker.txt", "w3af.txt"):
        events = file_parser.parse([str(data / "ocatak_apache-http-logs" / name)]).events
        hits = tool_hits(events, rules)
        targets = events.select(pl.col("query").fill_null("")).to_series().to_list()
        sqli, xss = libinjection_hits(targets)
        sig_sqli, sig_xss = hits["sig-sqli"].to_list(), hits["sig-xss"].to_list()
        both_sqli = sum(a and b for a, b in zip(sig_sqli, sqli, strict=True))
        both_xss = sum(a and b for a, b in zip(sig_xss, xss, strict=True))
        tool = int(hits.select(pl.any_horizontal(pl.all())).to_series().sum())
        print(f"ocatak {name}: {events.height:,} requests; sqli: signatures {sum(sig_sqli):,}, libinjection "
              f"{sum(sqli):,}, both {both_sqli:,}; xss: signatures {sum(sig_xss):,}, libinjection {sum(xss):,}, "
              f"both {both_xss:,}; tool (signatures|sigma) {tool:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    rules = sigma_engine.load([sigma_engine.builtin_dir()])
    csic(args.data, rules)
    ocatak(args.data, rules)


if __name__ == "__main__":
    main()
