"""The parts of the LLM stage that need the ``llm`` extra: the answer model (pydantic) and a
Chat Completions backend on the official ``openai`` SDK, for OpenAI or any compatible server.

Imported lazily by ``explanations``; importing it without the extra raises ImportError.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field

from log_analyser_core.results import AttackType, Severity

log = logging.getLogger(__name__)
MAX_ACTIONS = 5
SUMMARY_CHARS = 1500      # longer answers are not a short note: rejected as schema violations
ACTION_CHARS = 300
MAX_BODY_BYTES = 1024 * 1024   # a chat completion of a few thousand tokens is a few kilobytes
REFUSAL_CHARS = 500

SeverityLabel = Literal["info", "low", "medium", "high", "critical"]


class AnalystAnswer(BaseModel):
    """What the model must answer; mirrors ``explanations.response_schema()``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str = Field(min_length=1, max_length=SUMMARY_CHARS)
    attack_type: AttackType | None
    severity: SeverityLabel
    confidence: float = Field(ge=0.0, le=1.0)
    recommended_actions: tuple[str, ...] = Field(max_length=MAX_ACTIONS)

    def severity_level(self) -> Severity:
        return Severity.parse(self.severity)


def parse_answer(content: str) -> AnalystAnswer:
    """Validate a model's JSON answer; raises pydantic.ValidationError when it breaks the schema."""
    answer = AnalystAnswer.model_validate_json(content)
    too_long = [a for a in answer.recommended_actions if not a.strip() or len(a) > ACTION_CHARS]
    if too_long:
        raise ValueError(f"a recommended action is empty or longer than {ACTION_CHARS} characters")
    return answer


@dataclass(frozen=True)
class Reply:
    """One request's outcome. ``content`` is the answer text; otherwise ``failure`` says why not.
    ``fatal`` failures (unreachable server, rejected key, unknown model) stop all further requests."""

    content: str | None = None
    refusal: str | None = None
    failure: str | None = None
    fatal: bool = False
    truncated: bool = False


class OpenAIBackend:
    """Sends Chat Completions requests with the ``openai`` SDK (retries 429/5xx with backoff).

    ``timeout`` bounds each network read; ``deadline`` the whole call, body included: a server
    that trickles one byte every few seconds never trips a read timeout. The body is read as a
    stream, at most ``max_body_bytes``, and checked field by field (a compatible server may send
    anything), so a malformed answer is a failed note, never an exception."""

    def __init__(self, api_key: str, base_url: str | None, timeout: float, max_retries: int,
                 deadline: float | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url or None, timeout=timeout,
                                    max_retries=max_retries)
        self.timeout = timeout
        self.max_retries = max_retries
        self.deadline = deadline if deadline is not None else timeout * (max_retries + 1) + 30
        self.max_body_bytes = max_body_bytes

    @property
    def url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def complete(self, body: dict[str, Any]) -> Reply:
        """POST ``body`` to ``/chat/completions``; never raises for HTTP or server trouble."""
        ends = time.monotonic() + self.deadline
        try:
            with self.client.chat.completions.with_streaming_response.create(**body) as response:
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > self.max_body_bytes:
                        return Reply(failure=f"the answer is larger than {self.max_body_bytes:,} bytes")
                    if time.monotonic() > ends:
                        return Reply(failure=f"no complete answer within {self.deadline:g} s")
        except openai.APIError as exc:
            return self._failure(exc)
        return completion_reply(bytes(data))

    def _failure(self, exc: openai.APIError) -> Reply:
        tries = f"after {self.max_retries + 1} attempts"
        if isinstance(exc, openai.APITimeoutError):
            return Reply(failure=f"no answer within {self.timeout:g} s ({tries})")
        if isinstance(exc, openai.APIConnectionError):
            return Reply(failure=f"cannot reach {self.url}", fatal=True)
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return Reply(failure=f"{self.url} rejected the API key (HTTP {exc.status_code})", fatal=True)
        if isinstance(exc, openai.NotFoundError):
            return Reply(failure=f"{self.url} does not know this model or endpoint (HTTP 404)", fatal=True)
        if isinstance(exc, openai.RateLimitError):
            quota = getattr(exc, "code", None) == "insufficient_quota"
            return Reply(failure="quota exhausted (HTTP 429)" if quota else f"rate limited (HTTP 429, {tries})",
                         fatal=quota)
        if isinstance(exc, openai.BadRequestError):
            return Reply(failure=f"{self.url} rejected the request (HTTP 400: {_clip(exc.message)})", fatal=True)
        if isinstance(exc, openai.APIStatusError):
            return Reply(failure=f"server error (HTTP {exc.status_code}, {tries})")
        return Reply(failure=f"unreadable response ({type(exc).__name__})")


def completion_reply(data: bytes) -> Reply:
    """A Reply from a chat completion's body, every field checked: a body that is not UTF-8 JSON,
    a ``message`` that is not an object, a ``content`` that is not text all fail the request."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return Reply(failure="unreadable response (not UTF-8 JSON)")
    choices = document.get("choices") if isinstance(document, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(message, dict):
        return Reply(failure="the server's response is not a chat completion")
    content, refusal = message.get("content"), message.get("refusal")
    if not isinstance(content, str | None) or not isinstance(refusal, str | None):
        return Reply(failure="the server's response is not a chat completion (content or refusal is not text)")
    if refusal:
        return Reply(refusal=_clip(refusal, REFUSAL_CHARS))
    return Reply(content=content or "", truncated=choice.get("finish_reason") == "length")


def _clip(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
