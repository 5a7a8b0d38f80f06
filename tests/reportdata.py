"""A hostile log and an 'enriched' result for the report tests.

The log is generated traffic with planted attackers, plus a client whose requests carry an XSS
corpus, a client with a Cyrillic user agent, and a 'client address' that is itself markup. The
result is the real pipeline's output with the later stages' fields (attack types, evidence,
reputation, geo, LLM note) filled in with dataclasses.replace, so every report section is drawn.
The parser accepts only IP addresses as clients, so the markup 'address' is put into the result
in place of a stand-in address: writers must still escape whatever a result holds.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.results import (
    AnalysisResult,
    AttackType,
    Evidence,
    ExampleLine,
    Geo,
    LLMNote,
    Reputation,
    Severity,
)

XSS_IP = "203.0.113.66"
CYRILLIC_IP = "198.51.100.23"
MARKUP_IP = "<img/src=x/onerror=window.__xss=7>"
MARKUP_STAND_IN = "192.0.2.250"   # the address logged for it; replaced by MARKUP_IP in the result
CYRILLIC_UA = "Мозилла/5.0 (Тестовый агент; ещё длиннее: съешь же ещё этих мягких французских булок)"
# Each payload, if it ever ran, would set window.__xss; the CSP and escaping must both stop it.
XSS_CORPUS = (
    "<script>window.__xss=1</script>",
    "\u202eexe.txt\x1b[31m",
    '\\"><img src=x onerror=\\"window.__xss=2\\">',
    "<svg onload=window.__xss=3>",
    "</script><script>window.__xss=4</script>",
    "'-window.__xss=5-'",
    "<iframe srcdoc=\\\"<script>parent.__xss=6</script>\\\"></iframe>",
    "javascript:window.__xss=8",
    "<style>body{display:none}</style><b onmouseover=window.__xss=9>x</b>",
)
LONG_PATH = "/" + "a" * 700 + "?q=" + "b" * 300


def _line(ip: str, minute: int, path: str, status: int, ua: str, referer: str = "-") -> str:
    return (f'{ip} - - [02/Mar/2026:03:{minute // 60:02d}:{minute % 60:02d} +0100] "GET {path} HTTP/1.1" '
            f'{status} 512 "{referer}" "{ua}"')


def hostile_lines() -> list[str]:
    lines = []
    for i in range(60):
        payload = XSS_CORPUS[i % len(XSS_CORPUS)]
        path = "/search?q=" + payload.replace(" ", "%20").replace('\\"', "%22")
        lines.append(_line(XSS_IP, i, path, 404 if i % 3 else 500, payload, referer=payload))
    for i in range(50):
        lines.append(_line(CYRILLIC_IP, i, f"/.env.{i}" if i % 2 else LONG_PATH, 404, CYRILLIC_UA))
    for i in range(40):
        lines.append(_line(MARKUP_STAND_IN, i, f"/admin/{i}", 403, "curl/8.5.0"))
    return lines


def write_hostile_log(folder: Path) -> Path:
    import loggen

    generated = loggen.generate(3000, seed=11)
    path = folder / "hostile.log"
    path.write_text("\n".join(generated.lines.to_list() + hostile_lines()) + "\n", encoding="utf-8")
    return path


def _examples(result: AnalysisResult, ip: str, limit: int = 4) -> tuple[ExampleLine, ...]:
    from log_analyser_core.parsing import sources as log_input

    rows = log_input.with_raw(result.events.filter(pl.col("client_ip").cast(pl.String) == ip).head(limit))
    return tuple(ExampleLine(str(r["source"]), r["line_number"], r["raw"], r["rebuilt"])
                 for r in rows.iter_rows(named=True))


def enrich(result: AnalysisResult) -> AnalysisResult:
    """Fill every optional finding field for flagged clients, with hostile strings where a log
    (or a remote service) could put them."""
    countries = ("RU", "DE", "CN", "US", "BR")
    findings = []
    for i, f in enumerate(result.findings):
        if not f.flagged:
            findings.append(f)
            continue
        kind = (AttackType.XSS, AttackType.SCANNER, AttackType.BRUTE_FORCE, AttackType.DOS)[i % 4]
        evidence = (Evidence("rule", f"test-{kind.value}-001", f"Planted {kind.value} rule", Severity.HIGH, kind,
                             f.requests, _examples(result, f.ip), ("attack.t1190", "<b>tag</b>")),)
        findings.append(replace(
            f, attack_types=(kind.value,), evidence=evidence,
            reputation=Reputation("ok", abuse_score=87, total_reports=42, last_reported="2026-03-01T10:00:00Z",
                                  usage_type="Data Center", isp="<script>window.__xss=10</script> ISP",
                                  domain="evil.example", is_tor=i % 2 == 0),
            geo=Geo(countries[i % len(countries)], 64500 + i, "ООО Ромашка <i>AS</i>"),
            llm_note=LLMNote("ok", "test-model", summary=f"Client probes the site. {XSS_CORPUS[0]}",
                             attack_type=kind.value, severity="high", confidence=0.8,
                             recommended_actions=("block at the edge", "review <img src=x onerror=alert(1)>")),
        ))
    return replace(result, findings=tuple(findings))


def with_markup_address(result: AnalysisResult) -> AnalysisResult:
    """``result`` with MARKUP_IP wherever the stand-in address is (findings, events, features)."""
    def swap(frame: pl.DataFrame) -> pl.DataFrame:
        columns = [c for c in ("client_ip", "peer_ip") if c in frame.columns]
        return frame.with_columns(pl.col(c).cast(pl.String).replace(MARKUP_STAND_IN, MARKUP_IP)
                                  .cast(frame.schema[c]) for c in columns)
    findings = tuple(replace(f, ip=MARKUP_IP) if f.ip == MARKUP_STAND_IN else f for f in result.findings)
    return replace(result, findings=findings, events=swap(result.events), features=swap(result.features))


def hostile_result(folder: Path) -> AnalysisResult:
    result = analyse([str(write_hostile_log(folder))], Settings(threshold=30.0))
    return enrich(with_markup_address(result))
