"""A local stand-in for AbuseIPDB's API v2 ``GET /api/v2/check`` on 127.0.0.1 (a free port).

It answers with the documented body and headers (``X-RateLimit-Limit``, ``X-RateLimit-Remaining``,
and on 429 ``Retry-After`` and ``X-RateLimit-Reset``), checks the ``Key`` header like the real
service, and can be scripted per address: ``server.script[ip] = ["500", "ok"]`` answers 500 to the
first request for ip and 200 to every later one (the last step repeats).

Steps: ``ok``, ``401``, ``422``, ``429``, ``500``, ``badjson``, ``slow:SECONDS`` (then ok), ``html``.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TEST_KEY = "k3y-not-a-real-abuseipdb-key-0123456789abcdef"
RESET_EPOCH = 1_800_000_000            # 2027-01-15 08:00 UTC, what the 429 says the quota resets at
AUTH_ERROR = ("Authentication failed. Your API key is either missing, incorrect, or revoked. Note: The APIv2 "
              "key differs from the APIv1 key.")


def check_body(ip: str, score: int) -> dict[str, object]:
    """The documented 200 body of /check."""
    return {"data": {
        "ipAddress": ip, "isPublic": True, "ipVersion": 6 if ":" in ip else 4, "isWhitelisted": False,
        "abuseConfidenceScore": score, "countryCode": "DE", "countryName": "Germany",
        "usageType": "Data Center/Web Hosting/Transit", "isp": "Example Hosting GmbH", "domain": "example.net",
        "hostnames": [], "isTor": score >= 90, "totalReports": score * 3, "numDistinctUsers": score,
        "lastReportedAt": "2026-03-01T12:34:56+00:00" if score else None,
    }}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass   # a client that timed out and hung up is part of the script, not a failure


class FakeAbuseIPDB:
    def __init__(self, key: str = TEST_KEY, limit: int = 1000) -> None:
        self.key = key
        self.limit = limit
        self.script: dict[str, list[str]] = {}
        self.scores: dict[str, int] = {}
        self.fields: dict[str, dict[str, object]] = {}   # ip -> fields replacing those of the 200 body
        self.requests: list[dict[str, object]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/v2"

    def __enter__(self) -> FakeAbuseIPDB:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def asked(self) -> list[str]:
        """The addresses asked about, in arrival order."""
        return [str(r["ip"]) for r in self.requests]

    def _step(self, ip: str) -> str:
        with self.lock:
            steps = self.script.get(ip, ["ok"])
            return steps.pop(0) if len(steps) > 1 else steps[0]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:   # keep pytest output clean
                pass

            def do_GET(self) -> None:
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                self._counted = True
                try:
                    self._answer()
                finally:
                    self._leave()

            def _leave(self) -> None:
                # leaves the count before the answer is written: once the client has the answer it may
                # send its next request before this thread has returned
                if getattr(self, "_counted", False):
                    self._counted = False
                    with fake.lock:
                        fake.in_flight -= 1

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                ip = query.get("ipAddress", "")
                with fake.lock:
                    fake.requests.append({"path": parts.path, "ip": ip, "query": query,
                                          "headers": dict(self.headers.items())})
                if parts.path != "/api/v2/check":
                    return self._json(404, {"errors": [{"detail": "Not found", "status": 404}]})
                if self.headers.get("Key") != fake.key:
                    return self._json(401, {"errors": [{"detail": AUTH_ERROR, "status": 401}]})
                step = fake._step(ip)
                if step.startswith("slow:"):
                    time.sleep(float(step.split(":")[1]))
                    step = "ok"
                getattr(self, f"_step_{step}")(ip, query)

            def _step_ok(self, ip: str, query: dict[str, str]) -> None:
                body = check_body(ip, fake.scores.get(ip, 0))
                body["data"].update(fake.fields.get(ip, {}))   # type: ignore[union-attr]
                self._json(200, body, {"X-RateLimit-Remaining": str(fake.limit - len(fake.requests))})

            def _step_401(self, ip: str, query: dict[str, str]) -> None:
                self._json(401, {"errors": [{"detail": AUTH_ERROR, "status": 401}]})

            def _step_422(self, ip: str, query: dict[str, str]) -> None:
                self._json(422, {"errors": [{"detail": "The max age in days must be between 1 and 365.",
                                             "status": 422, "source": {"parameter": "maxAgeInDays"}}]})

            def _step_429(self, ip: str, query: dict[str, str]) -> None:
                body = {"errors": [{"detail": f"Daily rate limit of {fake.limit} requests exceeded for this "
                                              "endpoint. See headers for additional details.", "status": 429}]}
                self._json(429, body, {"Retry-After": "29642", "X-RateLimit-Remaining": "0",
                                       "X-RateLimit-Reset": str(RESET_EPOCH)})

            def _step_500(self, ip: str, query: dict[str, str]) -> None:
                self._json(500, {"errors": [{"detail": "Server Error", "status": 500}]})

            def _step_badjson(self, ip: str, query: dict[str, str]) -> None:
                self._raw(200, b'{"data": {"ipAddress": "' + ip.encode() + b'", "abuseConf', "application/json")

            def _step_html(self, ip: str, query: dict[str, str]) -> None:
                self._raw(200, b"<html><body>Maintenance</body></html>", "text/html")

            def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                self._leave()
                self._raw(status, json.dumps(body).encode(), "application/json", headers)

            def _raw(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-RateLimit-Limit", str(fake.limit))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: a run with no network at all."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v2"
