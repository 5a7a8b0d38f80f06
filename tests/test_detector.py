from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import anomaly_detector as detect
from log_analyser_core.errors import InputError
from log_analyser_core.pipeline import Settings, analyse
from log_analyser_core.results import Severity

COMBINED = '{ip} - - [10/Mar/2026:09:{m:02d}:{s:02d} +0000] "GET /page HTTP/1.1" 200 512 "-" "Mozilla/5.0"'


def test_planted_attackers_rank_above_every_benign_client(planted_log):
    path, labels = planted_log
    result = analyse([str(path)])
    attackers = set(labels.filter(pl.col("label") == "attack")["ip"])
    ranks = {f.ip: f.rank for f in result.findings}
    assert max(ranks[ip] for ip in attackers) == len(attackers)
    flagged = {f.ip for f in result.findings if f.flagged}
    assert attackers <= flagged


def test_planted_anomalies_are_explained_by_the_planted_feature(planted_log):
    path, labels = planted_log
    by_type = dict(zip(labels["attack_type"], labels["ip"], strict=True))
    findings = {f.ip: f for f in analyse([str(path)]).findings}
    features = {kind: {d.feature for d in findings[ip].deviations} for kind, ip in by_type.items() if kind}
    assert features["dos"] & {"request_rate", "peak_rpm"}
    assert features["scanner"] & {"error_4xx_ratio", "status_404", "distinct_404_paths"}
    assert features["brute_force"] & {"post_ratio", "sensitive_ratio", "status_401"}
    assert any("requests per minute" in r for r in findings[by_type["dos"]].reasons)


def test_output_is_deterministic(planted_log):
    path, _ = planted_log
    first = [(f.ip, f.score) for f in analyse([str(path)]).findings]
    second = [(f.ip, f.score) for f in analyse([str(path)]).findings]
    assert first == second


def test_detector_follows_the_estimator_conventions():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (300, 4)), [[12.0, 12.0, 12.0, 12.0]]])
    detector = detect.IsolationForestDetector(random_state=0).fit(X)
    scores = detector.score_samples(X)
    assert hasattr(detector, "forest_") and hasattr(detector, "scaler_")
    assert scores.argmax() == 300 and 0.0 < scores.min() and scores.max() <= 1.0


@pytest.mark.parametrize(("score", "severity"), [(0, Severity.INFO), (19.9, Severity.INFO), (20, Severity.LOW),
                                                 (40, Severity.MEDIUM), (60, Severity.HIGH), (80, Severity.CRITICAL),
                                                 (100, Severity.CRITICAL)])
def test_severity_bands(score, severity):
    assert detect.severity_for(score) is severity


def test_one_client_is_scored_zero_with_a_note(tmp_path):
    path = tmp_path / "one.log"
    path.write_text("\n".join(COMBINED.format(ip="192.0.2.1", m=i // 60, s=i % 60) for i in range(50)) + "\n")
    result = analyse([str(path)])
    assert [f.score for f in result.findings] == [0.0]
    assert "iforest" not in result.summary.detectors and "too few" in result.summary.notes[0]


def test_identical_clients_are_not_flagged(tmp_path):
    lines = [COMBINED.format(ip=f"192.0.2.{ip}", m=m, s=0) for ip in range(1, 60) for m in range(5)]
    path = tmp_path / "same.log"
    path.write_text("\n".join(lines) + "\n")
    result = analyse([str(path)])
    assert result.summary.flagged == 0 and max(f.score for f in result.findings) == 0.0


def test_all_malformed_input_is_an_input_error(tmp_path):
    path = tmp_path / "junk.log"
    path.write_text("not a log line\n" * 20)
    with pytest.raises(InputError, match="only 0 of 20 lines parse"):
        analyse([str(path)])


def test_contamination_flags_that_fraction(planted_log):
    path, _ = planted_log
    result = analyse([str(path)], Settings(contamination=0.05))
    assert result.summary.flagged == int(np.ceil(0.05 * result.summary.clients))
    assert [f.flagged for f in result.findings] == sorted([f.flagged for f in result.findings], reverse=True)


def test_no_attackers_means_nothing_above_medium(tmp_path):
    import loggen

    generated = loggen.generate(20_000, seed=5, attackers=False)
    path = tmp_path / "benign.log"
    path.write_text("\n".join(generated.lines.to_list()) + "\n")
    result = analyse([str(path)])
    assert not result.at_least(Severity.HIGH)
    assert len(result.at_least(Severity.MEDIUM)) <= 1


def test_a_lone_attacker_is_still_caught_by_its_behaviour(tmp_path):
    line = ('203.0.113.9 - - [10/Mar/2026:10:{m:02d}:{s:02d} +0000] '
            '"GET /item?id=1%27%20OR%201=1-- HTTP/1.1" 200 9 "-" "x"')
    path = tmp_path / "one.log"
    path.write_text("\n".join(line.format(m=i // 60, s=i % 60) for i in range(30)) + "\n")
    (finding,) = analyse([str(path)]).findings
    assert finding.flagged and finding.attack_types == ("sqli",) and finding.severity >= Severity.HIGH


def test_all_lines_malformed_gives_an_empty_result(tmp_path):
    path = tmp_path / "junk.log"
    path.write_text("garbage\nmore garbage\n")
    result = analyse([str(path)], Settings(max_unparsed_ratio=1.0))
    assert result.findings == () and result.summary.unparsed_lines == 2


def test_a_forest_scores_two_halves_on_two_threads_as_it_scores_the_whole():
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(4)
    X = rng.normal(size=(detect.SPLIT_ROWS + 1_001, 6))
    forest = IsolationForest(n_estimators=50, random_state=0).fit(X[:5_000])
    assert np.array_equal(detect.forest_scores(forest, X), forest.score_samples(X))
    small = X[:1_000]
    assert np.array_equal(detect.forest_scores(forest, small), forest.score_samples(small))


def test_the_same_matrix_is_scored_once_and_an_equal_one_from_the_memo():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3_000, 4))
    detector = detect.IsolationForestDetector(n_estimators=20, random_state=0).fit(X)
    first = detector.score_samples(X)
    calls = []
    score = detector.forest_.score_samples
    detector.forest_.score_samples = lambda rows: calls.append(len(rows)) or score(rows)
    assert np.array_equal(detector.score_samples(X), first)            # the same object
    assert np.array_equal(detector.score_samples(X.copy()), first)     # equal values
    assert calls == []
    other = X.copy()
    other[0, 0] += 1.0
    detector.score_samples(other)
    assert calls == [3_000]
