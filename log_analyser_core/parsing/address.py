"""One notion of a client address: canonical IPv4 or IPv6 text, or nothing.

Every address in a log was written by the client (or by whoever set its X-Forwarded-For), and
blocklists are applied to firewalls and web servers. Python's ``ipaddress`` accepts a scoped IPv6
address (``fe80::1%<scope>``) whose scope may hold any character but ``/`` (newlines, ``;``, ``}``)
and keeps the scope in ``str()``: such text is not an address here. What :func:`canonical` returns
holds only hexadecimal digits, ``.`` and ``:``.
"""
from __future__ import annotations

import ipaddress
import re
import socket

_CANONICAL_TEXT = re.compile(r"[0-9a-f.:]{2,39}")   # what str() of an unscoped address can be
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_PLAIN_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}", re.ASCII)   # already canonical: no need to ask ipaddress


def canonical(text: str | None) -> str | None:
    """The canonical text of an IPv4 or IPv6 address (lower case, IPv6 compressed, IPv4-mapped
    IPv6 folded to IPv4), or None for anything else: a scoped IPv6 address, a host name, markup."""
    if not text or "%" in text:
        return None
    if _PLAIN_IPV4.fullmatch(text):
        return text
    fast = _ipv6_text(text) if ":" in text else None
    if fast is not None:
        return fast
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    result = str(mapped or address)
    return result if _CANONICAL_TEXT.fullmatch(result) else None


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _ipv6_text(text: str) -> str | None:
    """``canonical`` for most IPv6 text, through the C library (a million distinct addresses from
    one attacker cost seconds, not a minute of ``ipaddress``): None where ``ipaddress`` decides."""
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None
    if packed.startswith(_MAPPED_PREFIX):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    result = socket.inet_ntop(socket.AF_INET6, packed)
    # both follow RFC 5952; dotted forms (IPv4-compatible) are left to ipaddress
    return result if "." not in result and _CANONICAL_TEXT.fullmatch(result) else None


def canonical_all(texts: list[str | None]) -> list[str | None]:
    """``canonical`` of each text. IPv6 text goes through the C library in one tight loop (an
    attacker's million distinct addresses: half the time of a call to ``canonical`` each); what
    that loop cannot settle (a scope, an IPv4-mapped or dotted form, not IPv6 at all) is left to
    ``canonical``."""
    pton, ntop, family, mapped = socket.inet_pton, socket.inet_ntop, socket.AF_INET6, _MAPPED_PREFIX
    made: list[str | None] = []
    add = made.append
    for text in texts:
        if text is None:
            add(None)
            continue
        try:
            packed = pton(family, text)
        except (OSError, ValueError):
            add(canonical(text))
            continue
        result = ntop(family, packed)
        # as _ipv6_text: RFC 5952 text, lower-case hexadecimal digits and colons; the rest as canonical()
        add(result if "." not in result and "%" not in text and not packed.startswith(mapped) else canonical(text))
    return made


def parse(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address object of ``canonical(text)`` (one parse, not two), or None."""
    if not text or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    result = mapped or address
    return result if _CANONICAL_TEXT.fullmatch(str(result)) else None


def is_canonical(text: str) -> bool:
    """Whether ``text`` is already an address in its canonical form (what a blocklist may write)."""
    return canonical(text) == text
