"""Issue 22 item 6: a quiet client's Finding is made when it is read (results.Findings). Everything
the lazy sequence gives must be what building every Finding at once gives."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import reporting
from log_analyser_core import pipeline, ranking
from log_analyser_core.results import AnalysisResult, Finding, Findings, flagged_findings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "access.log"


def _distinct_log(path: Path, clients: int = 300) -> Path:
    """One request per IPv6 client, plus a few loud ones (many errors, a scan)."""
    lines = [f'2001:db8::{k:x} - - [07/Dec/2026:10:{k // 60 % 60:02d}:{k % 60:02d} +0000] "GET /p/{k % 7} HTTP/1.1" '
             f'200 {500 + k % 13} "-" "Mozilla/5.0"' for k in range(clients)]
    lines += [f'203.0.113.9 - - [07/Dec/2026:11:00:{k:02d} +0000] "GET /.env{k} HTTP/1.1" 404 10 "-" "sqlmap/1.7"'
              for k in range(40)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["example", "distinct"])
def result(request, tmp_path_factory) -> AnalysisResult:
    log = EXAMPLE if request.param == "example" else _distinct_log(tmp_path_factory.mktemp("lazy") / "d.log")
    return pipeline.analyse([str(log)])


def _eager(result: AnalysisResult) -> tuple[Finding, ...]:
    findings = result.findings
    assert isinstance(findings, Findings)
    return tuple(findings[k] for k in range(len(findings)))


def test_the_pipeline_makes_quiet_findings_lazily(result):
    findings = result.findings
    assert isinstance(findings, Findings)
    assert len(findings.loud) < len(findings)
    assert all(f.flagged or f.deviations or f.evidence or f.internal for f in findings.loud.values())


def test_reading_one_by_one_iterating_and_slicing_give_the_same_findings(result):
    findings = result.findings
    one_by_one = _eager(result)
    assert tuple(findings) == one_by_one
    assert findings[3:40:3] == one_by_one[3:40:3]
    assert findings[-1] == one_by_one[-1]
    assert [f.rank for f in one_by_one] == list(range(1, len(one_by_one) + 1))
    assert findings == one_by_one and one_by_one == findings and findings == list(one_by_one)
    with pytest.raises(IndexError):
        findings[len(findings)]


def test_the_lazy_findings_equal_those_made_all_at_once(result):
    """ranking.findings with every client loud is the eager construction: the same findings, in order."""
    table = result.features
    by_ip = {f.ip: f for f in result.findings}
    scores = np.array([by_ip[ip].score for ip in table["client_ip"].to_list()])
    by_detector = {"iforest": np.array([by_ip[ip].detector_scores.get("iforest", 0.0)
                                        for ip in table["client_ip"].to_list()])}
    flagged = np.array([by_ip[ip].flagged for ip in table["client_ip"].to_list()])
    used = list(result.summary.features_used)
    settings = pipeline.Settings()
    lazy = ranking.findings(table, used, scores, by_detector, flagged, settings.reasons)
    eager = ranking.findings(table, used, scores, by_detector, flagged, settings.reasons,
                               judged_loud=np.ones(table.height, dtype=bool))
    assert len(eager.loud) == table.height
    assert tuple(lazy) == tuple(eager.loud[k] for k in range(table.height))


def test_flagged_findings_come_from_the_loud_ones_without_making_quiet_ones(result):
    findings = result.findings
    assert flagged_findings(findings) == [f for f in _eager(result) if f.flagged]
    assert result.summary.flagged == len(flagged_findings(findings))


@pytest.mark.parametrize("kind", ["json", "csv", "table", "markdown"])
def test_writers_write_the_same_text_from_the_lazy_sequence_and_a_tuple(result, kind):
    eager = dataclasses.replace(result, findings=_eager(result))
    assert reporting.render(kind, result) == reporting.render(kind, eager)


def test_the_json_of_a_quiet_client_is_that_of_its_finding(result):
    findings = result.findings
    parts = findings.parts(0, len(findings))
    quiet = [q for q in parts if not isinstance(q, Finding)]
    assert quiet
    for q in quiet:
        assert reporting.quiet_json(q) == reporting.finding_json(q.finding())
        assert list(reporting.quiet_json(q)) == list(reporting.finding_json(q.finding()))
    assert [f if isinstance(f, Finding) else f.finding() for f in parts] == list(findings)
