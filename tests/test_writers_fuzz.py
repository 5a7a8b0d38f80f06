"""A bounded fuzz test of every report writer (issue 22): generated hostile strings in every text
field a finding carries (address, reasons, evidence, example lines, reputation, geography, the LLM
note, the summary's notes and sources), written in every output format, and each output read back
by the program that consumes it: nginx -t, apache2 -t, iptables-restore / ip6tables-restore
--test, nft -c, a CSV reader, a JSON parser, an XML parser for the HTML report's SVG charts, and
pdftotext. Derandomised (the same examples on every run) and bounded to a few examples."""
from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_exports_tools import apache_test, check, nginx_test, tool

import reporting
from log_analyser_core.parsing.address import is_canonical
from log_analyser_core.results import AttackType, Evidence, ExampleLine, Geo, LLMNote, Reputation, Severity

FRAGMENTS = [
    "\n-I INPUT 1 -j ACCEPT\n#", ";include'evil.conf';#", "}\ntable inet filter { }\n", "\x1b[31m", "\x00",
    "\r\n=HYPERLINK(\"http://x\")", " =1+1", "\t@SUM(A1)", "<script>window.__xss=1</script>", "]]>", "&#27;",
    "\u202e", "$\\frac{a}{$", "%", "fe80::1%eth0", "\ud7ff\ue000\uffff", "x" * 9000, "\\", '"', "'", "{{7*7}}",
    "</svg>", "\x7f\x85\x9b", "ሴ𝕏😀",
]
HOSTILE = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), min_size=1, max_size=4).map("".join)
ADDRESSES = st.one_of(HOSTILE, st.sampled_from(["fe80::1%1;#", "192.0.2.1 ; deny all", "2001:db8::1", "198.51.100.7"]))


def with_hostile_text(base, texts: list[str], ips: list[str]):
    """``base`` with its first flagged findings carrying the generated texts in every field."""
    flagged = [i for i, f in enumerate(base.findings) if f.flagged][:len(ips)]
    findings = list(base.findings)
    for k, (index, ip) in enumerate(zip(flagged, ips, strict=False)):
        text = texts[k % len(texts)]
        example = ExampleLine(text[:50], 7, text, rebuilt=bool(k % 2))
        evidence = Evidence(kind="rule", rule_id=text[:30] or "r", title=text, severity=Severity.HIGH, count=3,
                            attack_type=AttackType.SQLI,
                            tags=(text[:20],), examples=(example,))
        findings[index] = replace(
            findings[index], ip=ip, reasons=(text, "plain reason"), explanation=(text,),
            evidence=(evidence, *findings[index].evidence),
            reputation=Reputation(status="ok", abuse_score=90, total_reports=3, usage_type=text, isp=text,
                                  domain=text, last_reported=text[:40]),
            geo=Geo(country="DE", asn=64500, as_org=text),
            llm_note=LLMNote(status="ok", model=text[:40] or "m", summary=text, attack_type="sqli",
                             severity="high", confidence=0.5, recommended_actions=(text,), detail=text))
    summary = replace(base.summary, notes=(*texts, *base.summary.notes), sources=(texts[0], *base.summary.sources))
    return replace(base, findings=tuple(findings), summary=summary)


def check_csv(text: str, result) -> None:
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)   # only the row terminator '\n'
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(result.findings) and len(text.splitlines()) == len(rows) + 1
    for row in rows:
        for cell in row.values():
            assert not cell.lstrip().startswith(("=", "+", "@")) or cell.startswith("'"), cell


def check_html(text: str) -> None:
    assert "<script>window.__xss" not in text
    charts = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', text)
    assert charts
    for data in charts:
        ET.fromstring(base64.b64decode(data))   # raises on markup or characters XML 1.0 forbids


def check_pdf(data: bytes, tmp_path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, timeout=60)
    assert done.returncode == 0 and b"log_analyser" in done.stdout.replace(b"\n", b" "), done.stderr


def check_exports(result, tmp_path) -> None:
    render = {kind: reporting.render(kind, result, severity=Severity.LOW) for kind in
              ("blocklist", "nginx", "apache", "iptables", "ip6tables", "nftables", "crowdsec", "ecs")}
    assert nginx_test(tmp_path, render["nginx"]).returncode == 0
    assert apache_test(tmp_path, render["apache"]).returncode == 0
    for program in ("iptables", "ip6tables"):
        done = check([tool(f"{program}-restore"), "--test", "--noflush"], render[program])
        assert done.returncode == 0, done.stderr
    (tmp_path / "blocklist.nft").write_text(render["nftables"])
    assert check([tool("nft"), "-c", "-f", str(tmp_path / "blocklist.nft")]).returncode == 0
    json.loads(render["crowdsec"])
    # NDJSON is split at '\n' only: str.splitlines() would also split inside a string holding U+0085
    assert all(json.loads(line) for line in render["ecs"].split("\n") if line.strip())
    assert all(is_canonical(line) for line in render["blocklist"].splitlines() if line and not line.startswith("#"))


@pytest.mark.slow
def test_every_writer_survives_hostile_text_and_its_consumer_accepts_the_output(hostile_result, tmp_path_factory):
    @settings(max_examples=4, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(texts=st.lists(HOSTILE, min_size=1, max_size=3), ips=st.lists(ADDRESSES, min_size=1, max_size=3))
    def writers(texts, ips):
        tmp_path = tmp_path_factory.mktemp("fuzz")
        result = with_hostile_text(hostile_result, texts, ips)
        check_csv(reporting.render("csv", result), result)
        document = json.loads(reporting.render("json", result, version="fuzz"))
        assert len(document["findings"]) == len(result.findings)
        reporting.render("table", result, top=10, width=100)
        check_html(reporting.render("html", result, version="fuzz"))
        check_pdf(reporting.render("pdf", result, version="fuzz", pages=3), tmp_path)
        check_exports(result, tmp_path)

    writers()
