"""Speed of the enrichment stage's parts: offline geography, the SQLite cache, and AbuseIPDB
lookups against the tests' local stand-in on 127.0.0.1 (client overhead, not the real service).

Figures are medians over --runs runs, with fixed seeds.

    python bench/bench_enrichment.py --ips 100000 --runs 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def public_ips(count: int, seed: int) -> list[str]:
    from log_analyser_core.enrich.geolocation import is_public

    rng = np.random.default_rng(seed)
    octets = rng.integers(1, 255, size=(count * 2, 4))
    ips = [".".join(map(str, row)) for row in octets]
    return [ip for ip in ips if is_public(ip)][:count]


def geo_rate(ips: list[str]) -> float:
    from log_analyser_core.enrich.geolocation import PackagedGeo, locate_all

    geo = PackagedGeo()
    geo.locate("8.8.8.8")   # load the data outside the timing
    start = time.perf_counter()
    locate_all(ips, geo)
    return len(ips) / (time.perf_counter() - start)


def cache_rates(ips: list[str]) -> tuple[float, float]:
    from log_analyser_core.enrich.cache import CacheStore

    with tempfile.TemporaryDirectory() as folder, CacheStore(Path(folder) / "c.sqlite3") as store:
        start = time.perf_counter()
        for ip in ips:
            store.put("bench", ip, {"abuse_score": 50, "isp": "x"}, 3600)
        put = len(ips) / (time.perf_counter() - start)
        start = time.perf_counter()
        for ip in ips:
            store.get("bench", ip)
        return put, len(ips) / (time.perf_counter() - start)


def lookup_rate(ips: list[str], concurrency: int) -> float:
    from abuseipdb_server import TEST_KEY, FakeAbuseIPDB

    from enrichment import EnrichmentSettings, lookup_reputations

    with FakeAbuseIPDB() as server:
        settings = EnrichmentSettings(api_key=TEST_KEY, base_url=server.url, concurrency=concurrency,
                                      max_lookups=len(ips))
        start = time.perf_counter()
        report = lookup_reputations(ips, settings)
        elapsed = time.perf_counter() - start
    assert report.lookups == len(ips)
    return len(ips) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ips", type=int, default=100_000, help="addresses for geography (default 100000)")
    parser.add_argument("--cache-ips", type=int, default=5_000, help="cache entries written and read")
    parser.add_argument("--lookups", type=int, default=500, help="AbuseIPDB lookups against the local stand-in")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ips = public_ips(args.ips, seed=0)
    rows = {
        "geography (geoip2fast), lookups/s": [geo_rate(ips) for _ in range(args.runs)],
        "cache put, entries/s": [], "cache get, entries/s": [],
        "AbuseIPDB stand-in, concurrency 4, lookups/s": [lookup_rate(ips[:args.lookups], 4) for _ in range(args.runs)],
    }
    for _ in range(args.runs):
        put, get = cache_rates(ips[:args.cache_ips])
        rows["cache put, entries/s"].append(put)
        rows["cache get, entries/s"].append(get)
    for name, values in rows.items():
        print(f"{name:<48} median {statistics.median(values):>10,.0f}  (runs: {len(values)})")


if __name__ == "__main__":
    main()
