"""Common variants of the combined format, recognised without a preset each.

Sites add a virtual host in front (``$host``, ``%v:%p``) and fields at the end (request time,
upstream time, X-Forwarded-For, a request id) to nginx's and Apache's combined format. From a
sample of lines, :func:`infer` finds the lead and the trailing fields, column-wise, and writes the
nginx ``log_format`` string they amount to, which compiles like any custom format; its name says
what was chosen (``combined+vhost+request_time+forwarded_for``).
"""
from __future__ import annotations

from collections import Counter
from typing import cast

import polars as pl

from log_analyser_core.parsing.formats import QUOTED, LogFormat, compile_format

_CORE = (r'\S+ \S+ \S+ \[[^\]]*\] "' + QUOTED + r'" (?:\d{3}|-) (?:\d+|-) "' + QUOTED + '" "' + QUOTED + '"')
_SHAPE = rf"^(?P<lead>(?:[^\s\"\[]+ )?){_CORE}(?P<rest>(?: .*)?)$"
_TOKEN = r'"' + QUOTED + r'"|\S+'
_COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
             '"$http_user_agent"')
# a trailing field's kind, by what most of its values look like (first match wins)
_ADDRESS = r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]*:[0-9a-fA-F:.]+)"
_KINDS = (
    ("request_id", r'^"?[0-9a-f]{16,64}"?$'),
    ("time", r'^"?(?:\d+\.\d{1,6}|-)"?$'),
    ("forwarded_for", rf'^"?(?:-|{_ADDRESS}(?:, ?{_ADDRESS})*)"?$'),
)
MAJORITY = 0.9   # share of values a field must fit to be given a kind


def infer(lines: pl.Series) -> LogFormat | None:
    """The combined variant that ``lines`` (a sample) are written in, or None when they are not
    combined with a lead and/or trailing fields."""
    parts = lines.str.extract_groups(_SHAPE).struct.unnest().drop_nulls()
    if parts.height < max(1, lines.len() // 2):
        return None
    lead, lead_name = _lead(parts["lead"])
    tail, names = _tail(parts["rest"])
    if lead is None or (not lead and not tail):
        return None
    name = "+".join(["combined", *([lead_name] if lead else []), *names])
    fmt = compile_format(f"{lead}{_COMBINED}{tail}", name=name)
    return fmt


def _lead(leads: pl.Series) -> tuple[str | None, str]:
    """The format text before the client address: '', '$host ' or '$host:$server_port '."""
    empty = _share(leads == "")
    if empty >= MAJORITY:
        return "", ""
    if empty > 1 - MAJORITY:
        return None, ""   # some lines have a lead and some do not: not one format
    if _share(leads.str.contains(r"^[^\s:]+:\d+ $")) >= MAJORITY:
        return "$host:$server_port ", "vhost:port"
    return "$host ", "vhost"


def _tail(rests: pl.Series) -> tuple[str, list[str]]:
    """The format text after the user agent, and the names of the fields read from it."""
    tokens = rests.str.extract_all(_TOKEN)
    counts = tokens.list.len()
    width = int(counts.mode().sort()[0]) if counts.len() else 0
    same = tokens.filter(counts == width)
    parts, names, seen = [], [], Counter[str]()
    for position in range(width):
        values = same.list.get(position)
        quoted = _share(values.str.starts_with('"')) >= MAJORITY
        kind = next((k for k, pattern in _KINDS if _share(values.str.contains(pattern)) >= MAJORITY),
                    "opaque")
        seen[kind] += 1
        variable, label = _variable(kind, seen[kind], position)
        parts.append(f'"{variable}"' if quoted else variable)
        if label:
            names.append(label)
    return "".join(f" {part}" for part in parts), names


def _share(mask: pl.Series) -> float:
    return cast(float, mask.mean() or 0.0)


def _variable(kind: str, nth: int, position: int) -> tuple[str, str]:
    """The nginx variable for a trailing field, and its label in the format's name ('' if unnamed)."""
    if kind == "time":   # nginx writes $request_time first, then $upstream_response_time
        return ("$request_time", "request_time") if nth == 1 else ("$upstream_response_time", "upstream_time")
    if kind == "forwarded_for" and nth == 1:
        return "$http_x_forwarded_for", "forwarded_for"
    if kind == "request_id" and nth == 1:
        return "$request_id", "request_id"
    return f"$field{position + 1}", ""
