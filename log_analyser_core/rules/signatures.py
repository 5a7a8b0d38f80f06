"""Request payload signatures: SQL injection, XSS, path traversal and command injection / RCE probes.

The request target (path and query) and the user agent are each URL-decoded twice (so ``%2527`` and
``%252e%252e%252f`` are seen as ``'`` and ``../``), '+' in the query read as a space, and
case-folded; every signature is one regular expression applied to the whole column at once.
Each client gets one Evidence per signature family it triggered, with its matching-request count
and up to three example lines.
"""
from __future__ import annotations

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
              r"(\.\.[/\\]|[/\\]\.\.$|/etc/(passwd|shadow|group|hosts|issue)|\bc:[/\\]+windows|win\.ini|boot\.ini"
              r"|/proc/self/(environ|cmdline|fd)|\bfile:///|php://(filter|input)|web-inf/web\.xml)"),
    Signature("sig-rce", "Command injection, RCE exploit probe or log4shell payload", AttackType.RCE, Severity.CRITICAL,
              r"(\$\{\s*(jndi|env|sys|lower|upper|::-)|\$\{[^}]*j[^}]*n[^}]*d[^}]*i\s*:"
              r"|[;|`&]\s*(cat\s+/|ls\s+-|id\s*($|[;|&`'\"\n])|whoami|uname\s+-|wget\s|curl\s|nc\s+-|ncat\s|bash\s+-"
              r"|sh\s+-c|ping\s+-[cn]|nslookup\s|echo\s|busybox|chmod\s+\+?[0-7x])"
              r"|\$\(\s*(cat|ls|id|whoami|uname|wget|curl|echo|sleep)\b|`\s*(id|whoami|uname)\b|\(\)\s*\{\s*:?\s*;?\s*\}\s*;"
              r"|/bin/(ba|z|da)?sh\b|\bcmd(\.exe)?\s*/c\b|powershell|\b(shell_exec|passthru|proc_open|popen|system|exec|eval)\s*\("
              r"|eval-stdin\.php|invokefunction|call_user_func_array|allow_url_include|auto_prepend_file|/boaform/"
              r"|/hnap1|/gponform|/cgi-bin/(\.%2e|\.\.)|\bwget\s+https?://|\bcurl\s+(-\w+\s+)*https?://|/shell\?|\bnc\s+-e\b"
              r"|class\.module\.classloader|\bognl\b|%\{\(#|/_ignition/execute-solution|/solr/admin/cores\?.*action=)"),
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


def decoded(text: pl.Expr) -> pl.Expr:
    """URL-decoded twice and lower-cased."""
    return url_decode(url_decode(text)).str.to_lowercase()


def _parts(events: pl.DataFrame) -> list[pl.Series]:
    """The request target (path, newline, query with '+' as space) and the user agent."""
    query = pl.col("query").fill_null("").str.replace_all("+", " ", literal=True)
    target = pl.concat_str([pl.col("path").fill_null(""), query], separator="\n")
    return [events.select(target.alias("target")).to_series(), events["user_agent"]]


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
        found = log_events.text_masks(values, patterns, transform=lambda text: pl.select(decoded(pl.lit(text)))
                                      .to_series())
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
