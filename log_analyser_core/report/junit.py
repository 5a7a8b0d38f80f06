"""JUnit XML for CI test reporters (GitLab, Jenkins, GitHub): one test case per flagged client.

A case fails when the client is at least as severe as ``--fail-on`` (so the report agrees with the
exit code); without ``--fail-on`` every case passes and the report only lists. The layout follows the
Apache Ant JUnit report that those reporters read; tests/data/junit-ant.xsd checks it.
"""
from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from log_analyser_core.results import AnalysisResult, Finding, Severity, flagged_findings

# XML 1.0 cannot carry most C0 controls even escaped; an attacker's string is shown with them as \xNN.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` with characters XML 1.0 cannot hold written as visible escapes (ElementTree escapes the rest)."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def _detail(finding: Finding) -> str:
    return "\n".join([f"{finding.ip}: score {finding.score:.1f} ({finding.severity.label}), {finding.requests:,} "
                      f"requests, attack types: {', '.join(finding.attack_types) or '-'}",
                      *(f"  - {reason}" for reason in finding.reasons)])


def _case(suite: ET.Element, finding: Finding, fail_on: Severity | None) -> bool:
    """One test case; a failure element when the client is at least ``fail_on``. (The Ant format has
    no output element per case: passing cases are described in the suite's system-out.)"""
    attack = finding.attack_types[0] if finding.attack_types else "anomaly"
    case = ET.SubElement(suite, "testcase", name=xml_text(finding.ip), classname=f"log_analyser.{xml_text(attack)}",
                         time="0")
    failed = fail_on is not None and finding.severity >= fail_on
    if failed:
        first = finding.reasons[0] if finding.reasons else "anomalous behaviour"
        failure = ET.SubElement(case, "failure", type=finding.severity.label,
                                message=xml_text(f"{finding.ip}: {finding.severity.label} {attack}: {first}"))
        failure.text = xml_text(_detail(finding))
    return failed


def render_junit(result: AnalysisResult, fail_on: Severity | None = None,
                 now: datetime | None = None, hostname: str | None = None) -> str:
    """The JUnit XML document (UTF-8 text): a ``testsuites`` root holding one ``testsuite``."""
    flagged = flagged_findings(result.findings)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    root = ET.Element("testsuites")   # the Ant format gives the root no attributes
    suite = ET.SubElement(root, "testsuite", name="log_analyser", package="log_analyser", id="0",
                          timestamp=stamp, hostname=xml_text(hostname or socket.gethostname() or "localhost"),
                          tests=str(len(flagged)), errors="0", time="0")
    properties = ET.SubElement(suite, "properties")
    s = result.summary
    for name, value in (("sources", " ".join(s.sources)), ("clients", str(s.clients)),
                        ("parsed_lines", str(s.parsed_lines)),
                        ("fail_on", fail_on.label if fail_on is not None else "")):
        ET.SubElement(properties, "property", name=name, value=xml_text(value))
    failures = sum(_case(suite, finding, fail_on) for finding in flagged)
    suite.set("failures", str(failures))
    passed = [_detail(f) for f in flagged if fail_on is None or f.severity < fail_on]
    ET.SubElement(suite, "system-out").text = xml_text("\n".join(
        [f"{s.clients:,} clients, {s.flagged:,} flagged, parsed {s.parsed_lines:,} of {s.total_lines:,} lines",
         *passed]))
    ET.SubElement(suite, "system-err").text = ""
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
