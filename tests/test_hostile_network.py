"""Hostile servers and caches cannot hang or crash the run (issue 22, items 7, 8 and 13): a
server on 127.0.0.1 that trickles its body, sends too much, or answers with malformed chat
completions; cached reputations of the wrong type; a cache that cannot be used at all."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from abuseipdb_server import TEST_KEY

import enrichment
from enrichment import EnrichmentSettings, lookup_reputations
from log_analyser_core.enrich.cache import CacheStore
from log_analyser_core.explain import llm_client

Reply = Callable[[BaseHTTPRequestHandler], None]


class RawServer:
    """Answers every request with ``reply(handler)``, which writes whatever bytes it likes."""

    def __init__(self, reply: Reply) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    reply(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up: what the test wants

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> RawServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def body(data: bytes, status: int = 200) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return reply


def trickle(every: float = 5.0) -> Reply:
    """Headers at once, then one byte of a 1,000-byte body every ``every`` seconds."""
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(every)
    return reply


def reputation_settings(url: str, **changes) -> EnrichmentSettings:
    base = {"api_key": TEST_KEY, "base_url": url + "/api/v2", "timeout": 10.0, "retries": 0, "concurrency": 1}
    return EnrichmentSettings(**{**base, **changes})


def test_a_trickling_reputation_server_is_cut_off_at_the_request_deadline():
    with RawServer(trickle()) as server:
        started = time.monotonic()
        report = lookup_reputations(["8.8.8.8"], reputation_settings(server.url, request_deadline=2.0))
        took = time.monotonic() - started
    rep = report.reputations["8.8.8.8"]
    assert rep.status == "unknown" and rep.detail == "AbuseIPDB answer not complete within 2 s"
    assert took < 9   # the deadline, plus at most one 5 s gap between bytes


def test_the_enrichment_run_has_an_overall_deadline():
    with RawServer(trickle(1.0)) as server:
        started = time.monotonic()
        report = lookup_reputations(["8.8.8.8", "1.1.1.1", "9.9.9.9", "8.8.4.4"],
                                    reputation_settings(server.url, request_deadline=60.0, deadline=2.5))
        took = time.monotonic() - started
    assert took < 6
    assert report.reputations["8.8.8.8"].detail == "AbuseIPDB answer not complete within 60 s"
    assert report.stopped == "the enrichment deadline (2.5 s) passed"
    assert [report.reputations[ip].status for ip in ("1.1.1.1", "9.9.9.9", "8.8.4.4")] == ["skipped"] * 3


def test_an_oversized_reputation_answer_is_refused():
    huge = b'{"data": {"abuseConfidenceScore": 5, "isp": "' + b"x" * 200_000 + b'"}}'
    with RawServer(body(huge)) as server:
        report = lookup_reputations(["8.8.8.8"], reputation_settings(server.url))
    assert report.reputations["8.8.8.8"].detail == "AbuseIPDB answer larger than 65,536 bytes"


@pytest.mark.parametrize("cached", [
    {"abuse_score": 50, "total_reports": "many"},
    {"abuse_score": True},
    {"abuse_score": 500},
    {"abuse_score": 5, "isp": {"nested": 1}},
    {"abuse_score": 5, "is_tor": "yes"},
    {"abuse_score": 5, "unexpected": 1},
    ["abuse_score", 5],
])
def test_a_cached_reputation_of_the_wrong_type_is_a_miss_and_asked_again(abuseipdb, tmp_path, cached):
    settings = EnrichmentSettings(api_key=TEST_KEY, base_url=abuseipdb.url, timeout=3.0, retries=0)
    with CacheStore(tmp_path / "cache.sqlite3") as cache:
        cache.put(enrichment.NAMESPACE, enrichment._cache_key("8.8.8.8", settings), cached, 3600)
        report = lookup_reputations(["8.8.8.8"], settings, cache)
    assert report.cache_hits == 0 and abuseipdb.asked() == ["8.8.8.8"]
    assert report.reputations["8.8.8.8"].status == "ok"


def test_a_cached_long_text_is_clipped():
    rep = enrichment._from_cache({"abuse_score": 5, "isp": "i" * 10_000, "total_reports": 3})
    assert rep is not None and len(rep.isp) == enrichment.TEXT_FIELD_CHARS and rep.total_reports == 3


def test_an_unusable_cache_warns_once_not_once_per_lookup(abuseipdb, tmp_path, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    settings = EnrichmentSettings(api_key=TEST_KEY, base_url=abuseipdb.url, timeout=3.0, retries=0)
    ips = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "8.8.4.4", "1.0.0.1"]
    with caplog.at_level(logging.WARNING), CacheStore(blocked / "cache.sqlite3") as cache:
        report = lookup_reputations(ips, settings, cache)
    assert all(report.reputations[ip].status == "ok" for ip in ips)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "cache" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def chat(content: object = '{"summary": "x"}', message: object = None) -> bytes:
    import json

    message = {"role": "assistant", "content": content, "refusal": None} if message is None else message
    return json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}).encode()


def backend(url: str, **changes) -> llm_client.OpenAIBackend:
    options = {"timeout": 10.0, "max_retries": 0, **changes}
    return llm_client.OpenAIBackend("test-key", url + "/v1", **options)


REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("data, failure", [
    (chat(message="just a string"), "the server's response is not a chat completion"),
    (chat(content={"summary": "an object"}), "the server's response is not a chat completion (content or refusal "
                                             "is not text)"),
    (b"\xff\xfe{\"choices\": []}", "unreadable response (not UTF-8 JSON)"),
    (b"[1, 2, 3]", "the server's response is not a chat completion"),
    (b'{"choices": "none"}', "the server's response is not a chat completion"),
    (b"", "unreadable response (not UTF-8 JSON)"),
])
def test_a_malformed_chat_completion_is_a_failed_reply_not_a_crash(data, failure):
    with RawServer(body(data)) as server:
        reply = backend(server.url).complete(REQUEST)
    assert reply.content is None and reply.failure == failure and not reply.fatal


def test_a_well_formed_chat_completion_still_reads():
    with RawServer(body(chat('{"a": 1}'))) as server:
        reply = backend(server.url).complete(REQUEST)
    assert reply.content == '{"a": 1}' and reply.failure is None


def test_a_trickling_llm_server_is_cut_off_at_the_call_deadline():
    with RawServer(trickle()) as server:
        started = time.monotonic()
        reply = backend(server.url, deadline=2.0).complete(REQUEST)
        took = time.monotonic() - started
    assert reply.failure == "no complete answer within 2 s" and took < 9


def test_an_oversized_llm_answer_is_refused():
    with RawServer(body(chat("x" * 3_000_000))) as server:
        reply = backend(server.url).complete(REQUEST)
    assert reply.failure == f"the answer is larger than {llm_client.MAX_BODY_BYTES:,} bytes"


def test_a_long_refusal_is_clipped():
    with RawServer(body(chat(None, {"role": "assistant", "content": None, "refusal": "no" * 5000}))) as server:
        reply = backend(server.url).complete(REQUEST)
    assert reply.refusal is not None and len(reply.refusal) == llm_client.REFUSAL_CHARS
