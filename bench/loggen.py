"""Deterministic generator of realistic combined-format access logs, with optional planted attackers.

Benign traffic: browsers fetching pages and their assets (Zipf-popular pages, lognormal activity,
exponential think times, a daily rhythm), a few broken links and form posts. Planted attackers:
a vulnerability scanner, a login brute force and a request flood. Everything is vectorised.

    python bench/loggen.py --lines 1000000 --seed 0 -o /tmp/access.log --labels /tmp/labels.csv
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import polars as pl

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
)
ASSETS = ("/static/css/site.css", "/static/js/app.js", "/static/js/vendor.js", "/static/img/logo.svg",
          "/static/img/hero.webp", "/static/fonts/inter.woff2", "/favicon.ico")
SCANNER_PATHS = ("/.env", "/.git/config", "/.git/HEAD", "/wp-login.php", "/wp-admin/", "/phpmyadmin/",
                 "/admin/", "/administrator/", "/server-status", "/backup.sql", "/config.php.bak",
                 "/.aws/credentials", "/cgi-bin/test.cgi", "/index.php?page=../../../../etc/passwd",
                 "/search?q=%27%20OR%201%3D1--", "/?s=%3Cscript%3Ealert(1)%3C/script%3E",
                 "/actuator/env", "/manager/html", "/solr/admin/", "/xmlrpc.php")
START = np.datetime64("2026-03-02T00:00:00")
TZ = "Europe/Paris"


@dataclass(frozen=True)
class Generated:
    lines: pl.Series        # the log lines, in time order
    labels: pl.DataFrame    # ip, label (attack/benign), attack_type


def _ips(rng: np.random.Generator, n: int) -> np.ndarray:
    octets = rng.integers(1, 254, size=(n * 2, 4))
    octets[:, 0] = rng.choice([23, 37, 45, 62, 78, 81, 86, 91, 109, 151, 176, 185, 193, 212], size=n * 2)
    ips = np.unique(np.array([".".join(map(str, row)) for row in octets]))
    return rng.permutation(ips)[:n]


def _benign(rng: np.random.Generator, n_lines: int, ips: np.ndarray) -> pl.DataFrame:
    n_clients = len(ips)
    activity = rng.lognormal(0.0, 1.0, n_clients)
    client = rng.choice(n_clients, size=n_lines, p=activity / activity.sum())
    client.sort(kind="stable")
    # each client's visit starts at a random time of day weighted to daytime, then think times
    day_start = rng.beta(5, 3, n_clients) * 86400 * 0.95
    gaps = rng.exponential(25.0, n_lines)
    first = np.r_[True, client[1:] != client[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n_lines), 0))
    offset = np.cumsum(gaps) - np.cumsum(gaps)[group_start]
    seconds = day_start[client] + offset
    is_asset = rng.random(n_lines) < 0.55
    page_rank = np.minimum(rng.zipf(1.6, n_lines), 400)
    pages = np.char.add("/blog/post-", page_rank.astype(str))
    pages = np.where(page_rank == 1, "/", np.where(page_rank < 8, np.char.add("/products/item-", page_rank.astype(str)), pages))
    assets = np.array(ASSETS)[rng.integers(0, len(ASSETS), n_lines)]
    path = np.where(is_asset, assets, pages)
    paged = (~is_asset) & (rng.random(n_lines) < 0.08)
    path = np.where(paged, np.char.add(path, "?page=2"), path)
    status = rng.choice([200, 304, 301, 404], size=n_lines, p=[0.89, 0.08, 0.015, 0.015])
    post = (~is_asset) & (rng.random(n_lines) < 0.03)
    path = np.where(post, "/comments", path)
    size = np.where(is_asset, rng.lognormal(10.2, 1.0, n_lines), rng.lognormal(9.4, 0.6, n_lines)).astype(np.int64)
    size = np.where(status == 304, 0, size)
    return pl.DataFrame({
        "ip": ips[client], "seconds": seconds, "method": np.where(post, "POST", "GET"), "path": path,
        "status": status, "bytes": size, "referer": np.where(is_asset, "https://shop.example.com/", "-"),
        "ua": np.array(BROWSERS)[client % len(BROWSERS)],
    })


ATTACK_LINES = 600 + 400 + 3000   # the scanner's, the brute force's and the flood's lines (generate adds them)


def _attackers(rng: np.random.Generator, ips: np.ndarray) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    scanner, brute, flood = ips
    n_scan, n_brute, n_flood = 600, 400, 3000
    random_dirs = np.char.add("/", rng.integers(10**5, 10**6, n_scan).astype(str))
    scan_paths = np.where(rng.random(n_scan) < 0.5, np.array(SCANNER_PATHS)[rng.integers(0, len(SCANNER_PATHS), n_scan)],
                          random_dirs)
    frames = [
        pl.DataFrame({"ip": scanner, "seconds": 7200 + np.sort(rng.uniform(0, 300, n_scan)), "method": "GET",
                      "path": scan_paths, "status": rng.choice([404, 403, 200], n_scan, p=[0.85, 0.1, 0.05]),
                      "bytes": rng.integers(150, 600, n_scan), "referer": "-",
                      "ua": "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)"}),
        pl.DataFrame({"ip": brute, "seconds": 30000 + np.sort(rng.uniform(0, 1200, n_brute)), "method": "POST",
                      "path": "/wp-login.php", "status": rng.choice([200, 401], n_brute, p=[0.5, 0.5]),
                      "bytes": rng.integers(3000, 3200, n_brute), "referer": "-", "ua": "python-requests/2.32.3"}),
        pl.DataFrame({"ip": flood, "seconds": 50000 + np.sort(rng.uniform(0, 120, n_flood)), "method": "GET",
                      "path": "/", "status": 200, "bytes": rng.integers(14000, 15000, n_flood), "referer": "-",
                      "ua": BROWSERS[0]}),
    ]
    labels = [(scanner, "scanner"), (brute, "brute_force"), (flood, "dos")]
    return pl.concat(frames, how="vertical_relaxed"), labels


def _dirbuster(rng: np.random.Generator, ips: np.ndarray) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
    """A directory brute force (800 distinct guessed paths, nearly all 404) and, as its benign look-alikes,
    monitors that fetch one missing path over and over (many 404s, but one distinct 404 path)."""
    buster, monitors = ips[0], ips[1:]
    n = 800
    words = np.char.add(np.char.add("/", rng.integers(10**5, 10**7, n).astype(str)), "/")
    frames = [pl.DataFrame({"ip": buster, "seconds": 40000 + np.sort(rng.uniform(0, 900, n)), "method": "GET",
                            "path": words, "status": rng.choice([404, 301], n, p=[0.98, 0.02]),
                            "bytes": rng.integers(150, 400, n), "referer": "-", "ua": BROWSERS[3]})]
    for k, ip in enumerate(monitors):
        m = int(rng.integers(200, 900))
        frames.append(pl.DataFrame({"ip": ip, "seconds": np.sort(rng.uniform(0, 86000, m)), "method": "GET",
                                    "path": "/health/status.json" if k % 2 else "/apple-touch-icon.png",
                                    "status": 404, "bytes": rng.integers(150, 400, m), "referer": "-",
                                    "ua": BROWSERS[k % len(BROWSERS)]}))
    labels = [(buster, "attack", "dirbuster")] + [(ip, "benign", "") for ip in monitors]
    return pl.concat(frames, how="vertical_relaxed"), labels


def generate(n_lines: int, seed: int = 0, attackers: bool = True, dirbuster: bool = False) -> Generated:
    """``n_lines`` benign lines (plus 4,000 attacker lines if ``attackers``), sorted by time.

    ``dirbuster`` adds a directory brute force and four benign monitors that keep fetching one missing path.
    """
    rng = np.random.default_rng(seed)
    n_clients = max(40, n_lines // 300)
    ips = _ips(rng, n_clients + 3)
    frame = _benign(rng, n_lines, ips[:n_clients])
    labels = [(ip, "benign", "") for ip in ips[:n_clients]]
    if attackers:
        attack_frame, attack_labels = _attackers(rng, ips[n_clients:])
        frame = pl.concat([frame, attack_frame], how="vertical_relaxed")
        labels += [(ip, "attack", kind) for ip, kind in attack_labels]
    if dirbuster:
        extra_rng = np.random.default_rng(seed + 1)  # its own stream: the default output stays unchanged
        buster_frame, buster_labels = _dirbuster(extra_rng, np.setdiff1d(_ips(extra_rng, 20), ips)[:5])
        frame = pl.concat([frame, buster_frame], how="vertical_relaxed")
        labels += buster_labels
    stamp = (pl.lit(START) + pl.duration(microseconds=(pl.col("seconds") * 1e6).cast(pl.Int64)))
    stamp = stamp.dt.replace_time_zone(TZ).dt.strftime("%d/%b/%Y:%H:%M:%S %z")
    frame = frame.sort("seconds", "ip", maintain_order=True)
    lines = frame.select(pl.format('{} - - [{}] "{} {} HTTP/1.1" {} {} "{}" "{}"', "ip", stamp, "method", "path",
                                   "status", "bytes", "referer", "ua").alias("line")).to_series()
    seen = set(frame["ip"].unique().to_list())
    label_frame = pl.DataFrame(labels, schema=["ip", "label", "attack_type"], orient="row")
    return Generated(lines=lines, labels=label_frame.filter(pl.col("ip").is_in(seen)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-attackers", action="store_true")
    parser.add_argument("--dirbuster", action="store_true", help="add a directory brute force and 404 monitors")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--labels")
    args = parser.parse_args()
    generated = generate(args.lines, args.seed, attackers=not args.no_attackers,
                         dirbuster=args.dirbuster)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(generated.lines.to_list()) + "\n")
    if args.labels:
        generated.labels.write_csv(args.labels)


if __name__ == "__main__":
    main()
