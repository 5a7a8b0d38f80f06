from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import SHARED

import log_analyser
from log_analyser_core import evaluation
from log_analyser_core.errors import ExitCode, InputError
from log_analyser_core.pipeline import analyse

# Floors a little below what the shipped rules reach on the dev set (README, 'Detection quality').
RECALL_FLOOR, FPR_CEILING, TYPE_ACCURACY_FLOOR = 0.95, 0.01, 0.95


@pytest.fixture(scope="module")
def dev_set(tmp_path_factory):
    import make_labelled

    lines, labels = make_labelled.generate(60_000, seed=0)
    folder = tmp_path_factory.mktemp("dev")
    (folder / "dev.log").write_text("\n".join(lines.to_list()) + "\n")
    labels.write_csv(folder / "labels.csv")
    return folder / "dev.log", folder / "labels.csv"


def test_dev_set_has_every_attack_type_and_heavy_benign_users(dev_set):
    labels = pl.read_csv(dev_set[1])
    types = set(labels.filter(pl.col("label") == "attack")["attack_type"])
    assert types == {"sqli", "xss", "path_traversal", "rce", "scanner", "dir_bruteforce", "brute_force",
                     "credential_stuffing", "dos", "bad_bot", "data_exfiltration"}
    assert {"10.20.0.15", "66.249.66.17"} <= set(labels.filter(pl.col("label") == "benign")["ip"])


def test_generator_is_deterministic():
    import make_labelled

    first, second = make_labelled.generate(5_000, seed=4), make_labelled.generate(5_000, seed=4)
    assert first[0].equals(second[0]) and first[1].equals(second[1])


def test_quality_floors_on_the_dev_set(dev_set, capsys):
    code = log_analyser.main(["evaluate", "-f", str(dev_set[0]), "--labels", str(dev_set[1]), "--json"])
    scores = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK
    assert scores["recall"] >= RECALL_FLOOR
    assert scores["false_positive_rate"] <= FPR_CEILING
    assert scores["type_accuracy"] >= TYPE_ACCURACY_FLOOR
    assert scores["confusion"]["benign"].get("-", 0) == scores["benign"] - scores["false_positives"]


def test_text_report(dev_set, capsys):
    code = log_analyser.main(["evaluate", "-f", str(dev_set[0]), "--labels", str(dev_set[1])])
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert "precision" in out and "recall by attack type:" in out and "confusion" in out and "sqli" in out


def finding(ip, flagged, types=()):
    return type("F", (), {"ip": ip, "flagged": flagged, "attack_types": tuple(types)})()


def test_score_arithmetic():
    labels = [evaluation.Label("a", True, "sqli"), evaluation.Label("b", True, "dos"),
              evaluation.Label("c", False, ""), evaluation.Label("d", False, ""), evaluation.Label("z", True, "xss")]
    findings = [finding("a", True, ["sqli"]), finding("b", True, ["bad_bot"]), finding("c", True, ["dos"]),
                finding("d", False), finding("e", False)]
    scores = evaluation.score(findings, labels)
    assert (scores.true_positives, scores.false_positives) == (2, 1)
    assert scores.precision == pytest.approx(2 / 3, abs=1e-4) and scores.recall == 1.0
    assert scores.false_positive_rate == 0.5 and scores.type_accuracy == 0.5
    assert scores.confusion["dos"] == {"bad_bot": 1} and scores.confusion["benign"] == {"dos": 1, "-": 1}
    assert scores.missing == ["z"] and scores.unlabelled == 1


def test_attacks_labelled_without_a_type_count_for_recall_only():
    scores = evaluation.score([finding("a", True, ["sqli"])], [evaluation.Label("a", True, "")])
    assert scores.recall == 1.0 and scores.type_accuracy is None


@pytest.mark.parametrize(("text", "fragment"), [
    ("ip,label\n1.2.3.4,maybe\n", ":2: bad label"),
    ("ip,label,attack_type\n1.2.3.4,attack,hacking\n", "attack_type 'hacking'"),
    ("address,verdict\n1.2.3.4,attack\n", "header"),
])
def test_bad_labels(tmp_path, text, fragment):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        evaluation.read_labels(path)
    assert fragment in str(caught.value)


def test_missing_labels_file_is_an_input_error(tmp_path, capsys):
    code = log_analyser.main(["evaluate", "-f", str(SHARED / "public" / "elastic_examples" / "apache_logs"),
                              "--labels", str(tmp_path / "none.csv")])
    assert code == ExitCode.INPUT and "cannot read labels" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["acunetix.txt", "netsparker.txt", "w3af.txt"])
def test_every_scanner_ip_is_flagged_as_scanner(shared, name):
    scanners = {"acunetix.txt": {"192.168.4.25"}, "netsparker.txt": {"192.168.4.164"},
                "w3af.txt": {"192.168.4.163", "192.168.1.20"}}[name]
    findings = {f.ip: f for f in analyse([str(shared / "public" / "ocatak_apache-http-logs" / name)]).findings}
    for ip in scanners:
        assert findings[ip].flagged and findings[ip].attack_types[0] == "scanner", ip
        assert findings[ip].internal   # 192.168/16: analysed, and marked


def test_real_traffic_false_positives_stay_rare(shared):
    result = analyse([str(shared / "public" / "elastic_examples" / "apache_logs")])
    flagged = [f for f in result.findings if f.flagged]
    assert len(flagged) / len(result.findings) <= 0.005
    crawlers = [f for f in result.findings if f.attack_types == ("crawler",)]
    assert len(crawlers) >= 10 and not any(f.flagged for f in crawlers)


def test_form_spam_bots_are_found(shared):
    result = analyse([str(shared / "public" / "nielsbasjes_yauaa" / "hackers-access.log")])
    flagged = [f for f in result.findings if f.flagged]
    assert len(flagged) / len(result.findings) >= 0.55
    assert all("bad_bot" in f.attack_types or "credential_stuffing" in f.attack_types for f in flagged)


def test_report_to_a_file(dev_set, capsys, tmp_path):
    out = tmp_path / "quality.json"
    code = log_analyser.main(["evaluate", "-f", str(dev_set[0]), "--labels", str(dev_set[1]), "--json",
                              "-o", str(out)])
    assert code == ExitCode.OK and capsys.readouterr().out == ""
    assert json.loads(out.read_text())["attackers"] >= 30
