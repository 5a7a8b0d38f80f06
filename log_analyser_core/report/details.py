"""`--details IP`: one client's full evidence for the terminal.

Everything from the log passes through ``terminal_safe``, so an escape sequence in a user agent is
shown as ``\\x1b`` and never reaches the terminal raw.
"""
from __future__ import annotations

import ipaddress
import textwrap

from log_analyser_core.errors import ConfigError
from log_analyser_core.report import model
from log_analyser_core.report.text import RESET, SEVERITY_COLOURS, terminal_safe
from log_analyser_core.results import REBUILT_MARK, REBUILT_NOTE, AnalysisResult, ExampleLine, Finding

SAMPLE_LINES = 10
EXAMPLES = 3            # example lines shown per piece of evidence
EXAMPLE_CHARS = 300
NOTE_WIDTH = 100


def _normal(ip: str) -> str:
    """An address in the parser's spelling: IPv6 compressed, IPv4-mapped IPv6 as IPv4."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def find(result: AnalysisResult, ip: str) -> Finding:
    """The finding for ``ip``; a ConfigError naming the address when the log has no such client."""
    wanted = _normal(ip)
    for finding in result.findings:
        if finding.ip in (ip, wanted):
            return finding
    raise ConfigError(f"no client {terminal_safe(ip)!r} in the log", hint="--details takes an address from the table")


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", title] + [f"  {line}" for line in lines] if lines else []


def _example(example: ExampleLine) -> str:
    """'access.log:12: LINE', or '-:12 (rebuilt): LINE' for a line rebuilt from its fields."""
    raw = example.raw if len(example.raw) <= EXAMPLE_CHARS else example.raw[:EXAMPLE_CHARS] + "…"
    return terminal_safe(f"{model.example_place(example)}: {raw}")


def render_details(result: AnalysisResult, ip: str, colour: bool = False) -> str:
    """A multi-line report on one client: verdict, reasons, features vs typical, evidence,
    reputation, location, the LLM note and the client's first log lines."""
    f, tz = find(result, ip), result.summary.tz
    severity = f.severity.label if f.flagged else f"{f.severity.label}, not flagged"
    if colour and f.flagged:
        severity = f"{SEVERITY_COLOURS[f.severity.label]}{severity}{RESET}"
    lines = [f"client {terminal_safe(f.ip)}: rank {f.rank} of {len(result.findings)}, score {f.score:.1f} ({severity})",
             f"  {f.requests:,} requests, {f.errors:,} errors, "
             f"{model.fmt_time(f.first_seen, tz)} to {model.fmt_time(f.last_seen, tz)}",
             f"  attack types: {', '.join(f.attack_types) or 'none named'}"]
    if f.detector_scores:
        lines.append("  detectors: " + ", ".join(f"{k} {v:.1f}" for k, v in f.detector_scores.items()))
    lines += _section("why it stands out", [terminal_safe(r) for r in f.reasons])
    bars = model.feature_bars(f, model.typical_values(result), model.feature_index(result))
    lines += _section("compared with the typical client", [
        f"{b.feature:<22} {model.fmt_number(b.value):>12}  typical {model.fmt_number(b.typical):>10}"
        + (f"  z {b.z:.1f}" if b.z is not None else "") for b in bars])
    lines += _section("evidence", _evidence_lines(f))
    lines += _section("enrichment", [terminal_safe(t) for t in (model.geo_text(f.geo),
                                                                model.reputation_text(f.reputation)) if t])
    lines += _section("language-model note", [terminal_safe(t) for t in model.llm_lines(f.llm_note)])
    samples = model.sample_requests(result, [f.ip], SAMPLE_LINES).get(f.ip, [])
    lines += _section(f"first {len(samples)} requests", [_example(e) for e in samples])
    if model.any_rebuilt([*samples, *(x for item in f.evidence for x in item.examples[:EXAMPLES])]):
        lines += ["", *textwrap.wrap(f"({REBUILT_MARK}): {REBUILT_NOTE}", NOTE_WIDTH, subsequent_indent="  ")]
    return "\n".join(lines) + "\n"


def _evidence_lines(finding: Finding) -> list[str]:
    lines = []
    for item in finding.evidence:
        lines.append(terminal_safe(model.evidence_heading(item)))
        lines.extend(f"    {_example(e)}" for e in item.examples[:EXAMPLES])
    return lines
