"""Redaction of secrets and personal data in log text before it leaves the machine.

Used on every log line sent to a language model. ``redact`` removes what a request can carry by
accident or on purpose: values of secret-looking parameters and cookies (``token``, ``password``,
``session``, ``key``, ``auth``, ...), ``Authorization``/``Cookie``-style header values, bearer and
basic credentials, JWTs, passwords in URLs, e-mail addresses and the authenticated user field of
common/combined lines. ``IPPseudonyms`` replaces IP addresses with stable ``ip-N`` names and can
restore them in text that comes back.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

from log_analyser_core.parsing.address import canonical

REDACTED = "[REDACTED]"
EMAIL = "[EMAIL]"
USER = "[USER]"

# Parameter and cookie names whose values are secrets, matched per name token ("api_key" -> api, key)
# and as name endings ("accesstoken", "phpsessid"), case-insensitively.
SECRET_NAME_TOKENS = frozenset({
    "token", "password", "passwd", "pwd", "pass", "passphrase", "secret", "session", "sessionid", "sessid",
    "sid", "auth", "authorization", "apikey", "key", "signature", "sig", "credential", "credentials", "jwt",
    "otp", "pin", "code", "csrf", "xsrf", "nonce", "hash", "ticket", "cookie",
})
SECRET_NAME_ENDINGS = ("token", "key", "secret", "password", "passwd", "sessid", "session", "auth", "sessionid")

_PAIR = re.compile(r"""(?<=[?&;\s"'])([^=&;#\s"'?]{1,100})=([^&;#\s"']*)""")
_HEADER = re.compile(r"""(?i)\b((?:proxy-)?authorization|set-cookie|cookie|x-api-key|x-auth-token|api-key|"""
                     r"""x-csrf-token|x-amz-security-token)(\s*[:=]\s*)[^"\r\n]*""")
_HEADER_WORDS = ("authorization", "cookie", "api-key", "auth-token", "csrf-token", "security-token")
_SCHEME_WORDS = ("bearer", "basic", "digest", "negotiate", "ntlm")
_SCHEME_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic|digest|negotiate|ntlm)(\s+)[A-Za-z0-9\-._~+/]{8,}=*")
_JWT = re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"']+):[^/\s@\"']+@")
_EMAIL = re.compile(r"[\w.+\-]{1,64}(?:@|%40)[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})+")
# host, ident and authenticated user at the start of a common/combined line
_REMOTE_USER = re.compile(r"^(\S+ \S+ )(?!-\s)(\S+)( \[)")

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\w)")
_IP = re.compile(f"{_IPV6.pattern}|{_IPV4.pattern}")
_PSEUDONYM = re.compile(r"\bip-(\d+)\b")


def is_secret_name(name: str) -> bool:
    """True if a parameter or cookie called ``name`` probably carries a secret."""
    lowered = unquote(name).lower()
    tokens = [token for token in re.split(r"[^a-z0-9]+", lowered) if token]
    if any(token in SECRET_NAME_TOKENS for token in tokens):
        return True
    return any(token.endswith(SECRET_NAME_ENDINGS) for token in tokens)


def _pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    return f"{name}={REDACTED}" if value and is_secret_name(name) else match.group(0)


def redact(text: str) -> str:
    """``text`` with secrets and personal data replaced by ``[REDACTED]``, ``[EMAIL]`` or ``[USER]``."""
    # Cheap substring checks first: most lines need none of the (slower) patterns.
    lowered = text.lower()
    text = _REMOTE_USER.sub(lambda m: f"{m.group(1)}{USER}{m.group(3)}", text, count=1)
    if any(word in lowered for word in _HEADER_WORDS):
        text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if any(word in lowered for word in _SCHEME_WORDS):
        text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "@" in text or "%40" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
        text = _EMAIL.sub(EMAIL, text)
    return _PAIR.sub(_pair, text) if "=" in text else text


class IPPseudonyms:
    """Consistent pseudonyms for IP addresses: the first address seen is ``ip-1``, the next ``ip-2``...

    One instance per request, so the numbering depends only on what that request contains (the
    pseudonyms reveal nothing and the request stays cacheable).
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def name(self, address: str) -> str:
        """The pseudonym of ``address`` (canonical form, so ``::FFFF:1.2.3.4`` and ``1.2.3.4`` agree)."""
        canonical = _canonical(address) or address
        if canonical not in self._names:
            self._names[canonical] = f"ip-{len(self._names) + 1}"
        return self._names[canonical]

    def apply(self, text: str) -> str:
        """``text`` with every valid IPv4 and IPv6 address replaced by its pseudonym."""
        def swap(match: re.Match[str]) -> str:
            return self.name(match.group(0)) if _canonical(match.group(0)) else match.group(0)
        return _IP.sub(swap, text)

    def restore(self, text: str) -> str:
        """Pseudonyms in ``text`` (e.g. a model's answer) replaced by the real addresses."""
        return restore(text, self.mapping())

    def mapping(self) -> dict[str, str]:
        """pseudonym -> address."""
        return {name: address for address, name in self._names.items()}


def restore(text: str, mapping: dict[str, str]) -> str:
    """``text`` with the pseudonyms of ``mapping`` (ip-N -> address) replaced by the addresses."""
    return _PSEUDONYM.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def _canonical(text: str) -> str | None:
    return canonical(text)
