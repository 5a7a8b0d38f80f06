"""Test helpers for the LLM stage: a local Chat Completions server on 127.0.0.1 and a SQLite cache.

``ChatServer`` speaks the OpenAI Chat Completions API over real HTTP, checks that each request asks
for structured output (``response_format`` of type ``json_schema``), records every request exactly
as received, and answers as its ``script`` says: a function from the request body (and how many
requests came before) to a ``Scripted`` response. ``agree`` answers validly, echoing our verdict.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema


@dataclass
class Scripted:
    """One scripted response: an HTTP status and JSON payload, or an answer's content; optional delay."""

    content: str | None = None
    status: int = 200
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    finish_reason: str = "stop"
    refusal: str | None = None


def evidence_of(body: dict[str, Any]) -> dict[str, Any]:
    """The EVIDENCE JSON in a request's user message."""
    text = body["messages"][1]["content"]
    start = text.index("EVIDENCE:\n") + len("EVIDENCE:\n")
    return json.loads(text[start:text.index("\n\n", start)])


def answer(body: dict[str, Any], **override: Any) -> Scripted:
    """A valid answer that agrees with the verdict we sent; ``override`` replaces fields."""
    verdict = evidence_of(body)["verdict"]
    client = json.loads(body["messages"][1]["content"].split("\n", 1)[0].removeprefix("CLIENT: "))
    note = {"summary": f"Client {client} probed the site: {verdict['severity']} risk.",
            "attack_type": (verdict["attack_types"] or ["scanner"])[0], "severity": verdict["severity"],
            "confidence": 0.8, "recommended_actions": [f"Block {client} at the firewall", "Review the 404s"]}
    note.update(override)
    return Scripted(content=json.dumps(note))


def agree(body: dict[str, Any], index: int) -> Scripted:
    return answer(body)


def error(status: int, **headers: str) -> Scripted:
    kinds = {429: "rate_limit_exceeded", 401: "invalid_api_key", 500: "server_error"}
    return Scripted(status=status, headers=headers,
                    payload={"error": {"message": f"scripted {status}", "type": kinds.get(status, "error"),
                                       "code": kinds.get(status)}})


class ChatServer:
    """A scripted OpenAI-compatible server; use as a context manager. ``url`` is the base URL (.../v1)."""

    def __init__(self, script: Callable[[dict[str, Any], int], Scripted] = agree) -> None:
        self.script = script
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner._serve(self, raw)

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        if handler.path != "/v1/chat/completions":
            return self._send(handler, Scripted(status=404, payload={"error": {"message": "not found"}}))
        body = json.loads(raw)
        with self.lock:
            index = len(self.bodies)
            self.bodies.append(body)
            self.raw.append(raw)
            self.headers.append(dict(handler.headers))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            problem = _structured_output_problem(body)
            reply = self.script(body, index) if not problem else Scripted(
                status=400, payload={"error": {"message": problem}})
            time.sleep(reply.delay)
        finally:
            with self.lock:
                self.in_flight -= 1
        self._send(handler, reply, body)

    def _send(self, handler: BaseHTTPRequestHandler, reply: Scripted, body: dict | None = None) -> None:
        payload = reply.payload if reply.status != 200 or reply.content is None and reply.refusal is None else {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1767225600, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}
        data = json.dumps(payload).encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer


def _structured_output_problem(body: dict[str, Any]) -> str | None:
    """Why a request is not a valid structured-output request, as a real server would reject it."""
    try:
        response_format = body["response_format"]
        assert response_format["type"] == "json_schema"
        spec = response_format["json_schema"]
        assert spec["name"] and spec["strict"] is True
        jsonschema.Draft202012Validator.check_schema(spec["schema"])
        assert body["messages"] and body["model"]
    except (KeyError, AssertionError, TypeError, jsonschema.SchemaError) as exc:
        return f"invalid structured output request: {exc!r}"
    return None


class SQLiteCache:
    """A small real implementation of explanations.AnswerCache over SQLite, with an injectable clock."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        with closing(sqlite3.connect(self.path)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS cache (namespace TEXT, key TEXT, value TEXT, expires REAL, "
                       "PRIMARY KEY (namespace, key))")

    def get(self, namespace: str, key: str) -> str | None:
        with closing(sqlite3.connect(self.path)) as db:
            row = db.execute("SELECT value FROM cache WHERE namespace = ? AND key = ? AND expires > ?",
                             (namespace, key, self.clock())).fetchone()
        return row[0] if row else None

    def put(self, namespace: str, key: str, value: str, ttl_seconds: int) -> None:
        with closing(sqlite3.connect(self.path)) as db, db:
            db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)",
                       (namespace, key, value, self.clock() + ttl_seconds))

    def keys(self) -> list[tuple[str, str]]:
        with closing(sqlite3.connect(self.path)) as db:
            return db.execute("SELECT namespace, key FROM cache ORDER BY key").fetchall()
