"""Redaction of secrets and personal data, and IP pseudonyms, before log text is sent anywhere."""
from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from log_analyser_core.explain import explanations, llm_client, redaction


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /login?user=bob&password=hunter2 HTTP/1.1", "GET /login?user=bob&password=[REDACTED] HTTP/1.1"),
    ("GET /cb?code=abc&state=x HTTP/1.1", "GET /cb?code=[REDACTED]&state=x HTTP/1.1"),
    ("GET /?access_token=a.b.c&page=2", "GET /?access_token=[REDACTED]&page=2"),
    ("GET /?API_KEY=123;sessionid=9", "GET /?API_KEY=[REDACTED];sessionid=[REDACTED]"),
    ("GET /?auth=x&authToken=y&keyword=sqli", "GET /?auth=[REDACTED]&authToken=[REDACTED]&keyword=sqli"),
    ('"PHPSESSID=abc123; theme=dark"', '"PHPSESSID=[REDACTED]; theme=dark"'),
    ('"Authorization: Basic dXNlcjpwYXNz"', '"Authorization: [REDACTED]"'),
    ('"Cookie: a=1; b=2" "curl/8"', '"Cookie: [REDACTED]" "curl/8"'),
    ("x-api-key=abcdef", "x-api-key=[REDACTED]"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Bearer [REDACTED]"),
    ("ref eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end", "ref [REDACTED] end"),
    ('"https://admin:s3cret@example.org/"', '"https://admin:[REDACTED]@example.org/"'),
    ("mail bob.smith+x@mail.example.co.uk now", "mail [EMAIL] now"),
    ("GET /?to=bob%40example.com", "GET /?to=[EMAIL]"),
    ('1.2.3.4 - alice [10/Oct/2025:13:55:36 +0000] "GET / HTTP/1.1"',
     '1.2.3.4 - [USER] [10/Oct/2025:13:55:36 +0000] "GET / HTTP/1.1"'),
    ('1.2.3.4 - - [10/Oct/2025:13:55:36 +0000] "GET /a?b=c HTTP/1.1" 200', None),
    ("GET /search?q=1'+OR+'1'='1 HTTP/1.1", None),
])
def test_redact(text, expected):
    assert redaction.redact(text) == (text if expected is None else expected)


def test_pseudonyms_are_consistent_and_restorable():
    names = redaction.IPPseudonyms()
    text = "203.0.113.9 asked 2001:db8::1 then ::ffff:203.0.113.9 at [10/Oct/2025:13:55:36 and 10:00:00"
    hidden = names.apply(text)
    assert hidden == "ip-1 asked ip-2 then ip-1 at [10/Oct/2025:13:55:36 and 10:00:00"
    assert names.restore("block ip-1 and ip-2, not ip-3") == "block 203.0.113.9 and 2001:db8::1, not ip-3"
    assert names.apply("Chrome/120.0.6099.109 999.1.1.1") == "Chrome/120.0.6099.109 999.1.1.1"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.ip_addresses(), min_size=1, max_size=6))
def test_pseudonyms_hide_every_address(addresses):
    names = redaction.IPPseudonyms()
    hidden = names.apply(" ".join(f"[{a}]" for a in addresses))
    assert re.fullmatch(r"\[ip-\d+\]( \[ip-\d+\])*", hidden), hidden
    assert len(names.mapping()) == len({str(a.ipv4_mapped or a) if a.version == 6 else str(a) for a in addresses})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_secret_values_never_survive(secret):
    # a value ends at the next separator or whitespace, as in a logged request line
    value = "".join(ch for ch in secret if ch not in "&;#\"'=?" and not re.match(r"\s", ch)) or "x"
    line = f'GET /reset?email=a@b.io&password={value}&next=/ HTTP/1.1'
    assert f"password={redaction.REDACTED}&next=/" in redaction.redact(line)


ANSWERS = [
    ({"summary": "s", "attack_type": "sqli", "severity": "high", "confidence": 0.5, "recommended_actions": []}, True),
    ({"summary": "s", "attack_type": None, "severity": "info", "confidence": 0, "recommended_actions": ["a"]}, True),
    ({"summary": "s", "attack_type": "sqli", "severity": "high", "confidence": 0.5}, False),
    ({"summary": "s", "attack_type": "sqli", "severity": "High", "confidence": 0.5, "recommended_actions": []}, False),
    ({"summary": "s", "attack_type": "worm", "severity": "high", "confidence": 0.5, "recommended_actions": []}, False),
    ({"summary": "s", "attack_type": "sqli", "severity": "high", "confidence": -1, "recommended_actions": []}, False),
    ({"summary": "s", "attack_type": "sqli", "severity": "high", "confidence": 0.5, "recommended_actions": ["a"] * 6},
     False),
    ({"summary": "s", "attack_type": "sqli", "severity": "high", "confidence": 0.5, "recommended_actions": [],
      "extra": 1}, False),
    ({"summary": 3, "attack_type": "sqli", "severity": "high", "confidence": 0.5, "recommended_actions": []}, False),
]


@pytest.mark.parametrize(("answer", "valid"), ANSWERS)
def test_the_pydantic_model_and_the_sent_schema_agree(answer, valid):
    schema_ok = jsonschema.Draft202012Validator(explanations.response_schema()).is_valid(answer)
    try:
        llm_client.parse_answer(json.dumps(answer))
        model_ok = True
    except (ValidationError, ValueError):
        model_ok = False
    assert schema_ok == model_ok == valid
