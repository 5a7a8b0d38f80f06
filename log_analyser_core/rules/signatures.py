"""Request payload signatures: SQL injection, XSS, path traversal, SSRF and command injection / RCE probes.

Every field a log records that an attacker writes is inspected: the request target (path and
query), the user agent, the Referer, the Host (vhost), a request line that is not HTTP, and the
request headers a format logs (X-Forwarded-For, X-Real-IP, CF-Connecting-IP). Each is
URL-decoded twice (so ``%2527`` and ``%252e%252e%252f`` are seen as ``'`` and ``../``; ``%u0027``
and overlong UTF-8 too), '+' in the query read as a space, base64 inside a lookup string
(``${jndi:.../Base64/...}``, ``${base64Decoder:...}``) decoded beside it, case-folded, and HTML
entities (``&lt;``, ``&#x3c;``, ``&#60``) decoded; every signature is one regular expression
applied to the distinct values of a column at once.
Each client gets one Evidence per signature family it triggered, with its matching-request count
and up to three example lines.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import polars as pl

from log_analyser_core.parsing import events as log_events
from log_analyser_core.parsing import sources as log_input
from log_analyser_core.results import AttackType, Evidence, ExampleLine, Severity

EXAMPLES = 3
CHUNK_EVENTS = 2**20   # events matched at once (see matches)


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    attack_type: AttackType
    severity: Severity
    pattern: str           # Rust regex over the decoded, lower-cased text


SIGNATURES: tuple[Signature, ...] = (
    Signature("sig-sqli", "SQL injection payload", AttackType.SQLI, Severity.HIGH,
              r"(union(\s|/\*[^*]*\*/|\*/|/\*!?\d*|\()+(all\s+|distinct\s+)?select\b|\bselect\b.{1,100}\bfrom\b.{1,60}\b(where|limit|information_schema)\b"
              r"|['\"`)]\s*(or|and|xor|\|\||&&)\s*['\"(]?\s*\w*\s*['\"]?\s*(=|<|>|like\b|is\b)|\b(or|and)\s+\d+\s*=\s*\d+"
              r"|\b(sleep|benchmark|pg_sleep|extractvalue|updatexml|load_file)\s*\(|waitfor\s+delay\s"
              r"|information_schema|@@version|\binto\s+(out|dump)file\b|;\s*(drop|insert|delete|update|shutdown)\s"
              r"|['\"]\s*(--|#|/\*)|\border\s+by\s+\d+\s*(--|#)|\bchar\(\d+\)\s*(\+|\|\|)|0x[0-9a-f]{8,}\b.*\bselect)"),
    Signature("sig-xss", "Cross-site scripting payload", AttackType.XSS, Severity.HIGH,
              r"(<\s*/?\s*(script|iframe|svg|object|embed|img|body|marquee|details|video|audio)\b|javascript\s*:|vbscript\s*:"
              r"|\bon(error|load|mouseover|focus|click|begin|toggle|animationstart|pointerover)\s*=|document\.(cookie|domain)"
              r"|\b(alert|prompt|confirm)\s*(\(|`)|expression\s*\(|<[^>]*\bstyle\s*=[^>]*expression|\bsrcdoc\s*=)"),
    Signature("sig-path-traversal", "Path traversal or local file inclusion", AttackType.PATH_TRAVERSAL,
              Severity.HIGH,
              r"(\.\.[/\\]|\.\.;[/\\]|[/\\]\.\.$|/etc/(passwd|shadow|group|hosts|issue)|\bc:[/\\]+windows|win\.ini|boot\.ini"
              r"|/proc/self/(environ|cmdline|fd)|\bfile:///|php://(filter|input)|web-inf/web\.xml)"),
    Signature("sig-rce", "Command injection, RCE exploit probe or log4shell payload", AttackType.RCE, Severity.CRITICAL,
              r"(\$\{\s*(jndi|env|sys|lower|upper|::-)|\$\{[^}]*j[^}]*n[^}]*d[^}]*i\s*:"
              # Text4Shell (commons-text StringSubstitutor) lookups that run code or reach out
              r"|\$\{\s*(script|dns|url|file|base64decoder|java|const|xml|properties)\s*:"
              # a shell command after ';', '|' or '`' inside a parameter's value
              r"|=[^&\n]*[;|`]\s*(id|ls|pwd|cat|wget|curl|uname|whoami|ping|nc|ncat|bash|sh|rm|echo|busybox|tftp"
              r"|chmod|cd|python3?|perl|php|nslookup|dig|sleep|ifconfig|netstat|ps)(\s|\$\{?ifs|[;|&`]|$)"
              r"|[;|`&]\s*(cat\s+/|ls\s+-|id\s*($|[;|&`'\"\n])|whoami|uname\s+-|wget\s|curl\s|nc\s+-|ncat\s|bash\s+-"
              r"|sh\s+-c|ping\s+-[cn]|nslookup\s|echo\s|busybox|chmod\s+\+?[0-7x])"
              r"|\$\(\s*(cat|ls|id|whoami|uname|wget|curl|echo|sleep)\b|`\s*(id|whoami|uname)\b|\(\)\s*\{\s*:?\s*;?\s*\}\s*;"
              r"|/bin/(ba|z|da)?sh\b|\bcmd(\.exe)?\s*/c\b|powershell(\.exe)?\s+-\w|powershell.{0,60}(\biex\b|invoke-expression|downloadstring|frombase64string)|\b(shell_exec|passthru|proc_open|popen|system|exec|eval)\s*\("
              r"|eval-stdin\.php|invokefunction|call_user_func_array|allow_url_include|auto_prepend_file|/boaform/"
              r"|/hnap1|/gponform|/cgi-bin/(\.%2e|\.\.)|\bwget\s+https?://|\bcurl\s+(-\w+\s+)*https?://|/shell\?|\bnc\s+-e\b"
              r"|class\.module\.classloader|\bognl\b|%\{\(#|/_ignition/execute-solution|/solr/admin/cores\?.*action="
              r"|\\think\\(app|container|request|view|template|module))"),
    Signature("sig-ssrf", "Server-side request forgery: a URL parameter aimed at an internal address",
              AttackType.SSRF, Severity.HIGH,
              r"=\s*(https?|gopher|dict|ftp|file|ldap|tftp)://([^/@?&\s]*@)?(localhost\b|127\.\d+\.\d+\.\d+|0\.0\.0\.0|0/"
              r"|10\.\d+\.\d+\.\d+|192\.168\.\d+|172\.(1[6-9]|2\d|3[01])\.\d+|169\.254\.\d+|100\.100\.100\.200"
              r"|\[(::1?|0:0:0:0:0:0:0:1|::ffff:[0-9a-f.:]+)\]|metadata\.google\.internal|2130706433\b|0x7f0+1\b)"
              r"|=\s*gopher://"),
)


def _decode_pairs() -> tuple[list[str], list[str]]:
    """Percent escapes of ASCII and the overlong/%u forms used to dodge filters, both hex cases."""
    patterns, values = [], []
    for code in list(range(0x20, 0x7f)) + [0x00, 0x09, 0x0a, 0x0d]:
        for text in {f"%{code:02x}", f"%{code:02X}"}:
            patterns.append(text)
            values.append(chr(code) if code else " ")
        for text in {f"%u00{code:02x}", f"%u00{code:02X}", f"%U00{code:02X}"}:
            patterns.append(text)
            values.append(chr(code) if code else " ")
    patterns += ["%c0%af", "%C0%AF", "%c1%9c", "%C1%9C", "%e0%80%af"]
    values += ["/", "/", "\\", "\\", "/"]
    return patterns, values


def url_decode(text: pl.Expr) -> pl.Expr:
    """One round of percent-decoding (ASCII only; other escapes stay as they are)."""
    patterns, values = _decode_pairs()
    return text.str.replace_many(patterns, values, leftmost=True)


def _entity_pairs() -> tuple[list[str], list[str]]:
    """HTML entities of the characters markup and script payloads need (``&lt;``, ``&#60;``,
    ``&#x3c;``, ``&#0060``...), lower-case; the forms ending in ';' come first, so they win."""
    named = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&sol;": "/", "&lpar;": "(", "&rpar;": ")",
             "&colon;": ":", "&semi;": ";", "&equals;": "=", "&grave;": "`", "&tab;": "\t", "&newline;": "\n"}
    patterns, values = list(named), list(named.values())
    for char in "<>\"'/():;=`{}$ \t\n":
        code = ord(char)
        forms = [f"&#{code};", f"&#0{code};", f"&#00{code};", f"&#x{code:x};", f"&#x0{code:x};", f"&#x00{code:x};"]
        patterns += forms + [f.removesuffix(";") for f in forms]
        values += [char] * (2 * len(forms))
    return patterns, values


_ENTITIES = _entity_pairs()
# base64 after a lookup's prefix: JNDIExploit's /Base64/<command>, Text4Shell's ${base64Decoder:...}
_BASE64 = re.compile(r"(?i)(?:/base64/|base64decoder:|base64:)([a-z0-9+/_-]{8,}={0,2})")


def _with_base64(text: str) -> str:
    """``text`` and, after a newline, what each base64 run in a lookup string decodes to."""
    found = []
    for match in _BASE64.finditer(text):
        token = match.group(1).replace("-", "+").replace("_", "/")
        try:
            found.append(base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace"))
        except (binascii.Error, ValueError):
            continue
    return "\n".join([text, *found])


def decoded(text: pl.Expr) -> pl.Expr:
    """URL-decoded twice, lower-cased, HTML entities decoded (no base64: see ``decode_text``)."""
    lowered = url_decode(url_decode(text)).str.to_lowercase()
    return lowered.str.replace_many(*_ENTITIES, leftmost=True)


def decode_text(values: pl.Series) -> pl.Series:
    """The distinct values of a field as signatures read them (see the module docstring)."""
    once = pl.select(url_decode(url_decode(pl.lit(values)))).to_series()
    lookups = once.str.contains("(?i)base64")
    if lookups.any():   # rare: decoded in Python, value by value
        once = once.zip_with(~lookups, pl.Series([_with_base64(v) if hit else v for v, hit
                                                  in zip(once.to_list(), lookups.to_list(), strict=True)],
                                                 dtype=pl.String))
    return once.str.to_lowercase().str.replace_many(*_ENTITIES, leftmost=True)


# besides the request target; the logged request headers (forwarded-for ...) too
INSPECTED = ("user_agent", "referer", "vhost", "request", *log_events.HEADER_COLUMNS)


def _parts(events: pl.DataFrame) -> list[pl.Series]:
    """The request target (path, newline, query with '+' as space) and every other attacker-written
    field the log recorded (INSPECTED: a format that does not log one has no such column)."""
    query = pl.col("query").fill_null("").str.replace_all("+", " ", literal=True)
    target = pl.concat_str([pl.col("path").fill_null(""), query], separator="\n")
    others = [events[name] for name in INSPECTED
              if name in events.columns and events[name].null_count() < events.height]
    return [events.select(target.alias("target")).to_series(), *others]


def matches(events: pl.DataFrame, signatures: tuple[Signature, ...] = SIGNATURES,
            chunk_events: int = CHUNK_EVENTS) -> pl.DataFrame:
    """One boolean column per signature id, over every event (same row order as ``events``).

    Each part is decoded and matched once per distinct value (targets and user agents repeat), on
    ``chunk_events`` events at a time: the decoded text of every distinct target of a log whose
    requests are all unique would take several times the memory of the events table."""
    return pl.concat([_matches(events.slice(offset, chunk_events), signatures)
                      for offset in range(0, max(events.height, 1), chunk_events)])


def _matches(events: pl.DataFrame, signatures: tuple[Signature, ...]) -> pl.DataFrame:
    masks = {s.id: pl.Series([False] * events.height, dtype=pl.Boolean) for s in signatures}
    patterns = {s.id: s.pattern for s in signatures}
    for values in _parts(events):
        found = log_events.text_masks(values, patterns, transform=decode_text)
        masks = {name: mask | found[name] for name, mask in masks.items()}
    return pl.DataFrame([mask.alias(name) for name, mask in masks.items()])


def detect(events: pl.DataFrame, signatures: tuple[Signature, ...] = SIGNATURES) -> dict[str, list[Evidence]]:
    """Evidence by client ip: one item per signature family a client's requests matched."""
    events = events.with_row_index("_row")
    hits = pl.concat([events.select("_row", "client_ip", "source", "line_number", "timestamp"),
                      matches(events, signatures)], how="horizontal")
    evidence: dict[str, list[Evidence]] = {}
    for signature in signatures:
        matched = hits.filter(pl.col(signature.id)).sort("client_ip", "timestamp", "source", "line_number")
        if not matched.height:
            continue
        counts = dict(matched.group_by("client_ip").len().iter_rows())
        first = matched.group_by("client_ip", maintain_order=True).head(EXAMPLES)["_row"]
        rows = log_input.with_rebuilt(events[first])
        examples: dict[str, list[ExampleLine]] = {}
        for ip, source, number, raw, rebuilt in rows.select("client_ip", "source", "line_number", "raw",
                                                             "rebuilt").iter_rows():
            examples.setdefault(ip, []).append(ExampleLine(source, number, raw, rebuilt))
        for ip, lines in examples.items():
            evidence.setdefault(ip, []).append(Evidence(
                kind="signature", rule_id=signature.id, title=signature.title, severity=signature.severity,
                attack_type=signature.attack_type, count=int(counts[ip]), examples=tuple(lines)))
    return evidence
