"""The autoencoder detector (the deep extra: Keras 3 on TensorFlow). Slow: marked, and still run by .ci/run.
Every test that trains or loads a network is marked heavy (CI's core jobs lack the deep extra); the stderr
filter needs no TensorFlow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
from conftest import ROOT

import anomaly_detector as detect
import log_analyser
from log_analyser_core.detectors import model_store
from log_analyser_core.errors import ExitCode
from log_analyser_core.pipeline import Settings, analyse, train

pytestmark = pytest.mark.slow
BOTH = ("iforest", "autoencoder")
RATE_FEATURES = {"request_rate", "peak_rpm"}
PATH_DIVERSITY = {"distinct_404_paths", "distinct_paths", "path_entropy"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """60k benign lines (200 clients), a scanner, a login brute force, a flood, a directory brute force and
    four benign monitors that keep fetching one missing page."""
    import loggen

    generated = loggen.generate(60_000, seed=3, dirbuster=True)
    path = tmp_path_factory.mktemp("deep") / "access.log"
    path.write_text("\n".join(generated.lines.to_list()) + "\n", encoding="utf-8")
    attackers = dict(zip(*generated.labels.filter(pl.col("label") == "attack")[["attack_type", "ip"]], strict=True))
    return str(path), attackers


@pytest.fixture(scope="module")
def result(planted):
    return analyse([planted[0]], Settings(detectors=BOTH))


@pytest.mark.heavy
def test_follows_the_estimator_conventions_and_is_deterministic():
    from log_analyser_core.detectors.autoencoder import AutoencoderDetector

    # eight features driven by two hidden factors; the last client breaks that pattern in feature 2 only
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (401, 2)) @ rng.normal(0, 1, (2, 8)) + rng.normal(0, 0.05, (401, 8))
    X[400] = np.median(X[:400], axis=0)
    X[400, 2] += 4.0 * X[:, 2].std()
    first = AutoencoderDetector(bottleneck=2, random_state=0).fit(X)
    scores = first.score_samples(X)
    assert scores.argmax() == 400 and scores.min() >= 0.0
    assert np.quantile(scores, 0.99) == pytest.approx(first.threshold_)
    assert hasattr(first, "model_") and 1 <= first.epochs_run_ <= first.epochs
    assert np.array_equal(scores, AutoencoderDetector(bottleneck=2, random_state=0).fit(X).score_samples(X))
    assert first.feature_errors(X[-1:])[0].argmax() == 2


@pytest.mark.heavy
def test_both_detectors_run_and_every_planted_attacker_is_flagged(result, planted):
    _, attackers = planted
    findings = {f.ip: f for f in result.findings}
    assert tuple(d for d in result.summary.detectors if d in BOTH) == BOTH
    assert "quantile-mapped" in result.summary.notes[0]
    for ip in attackers.values():
        assert findings[ip].flagged and set(findings[ip].detector_scores) == set(BOTH)
        # the finding's score is the verdict (anomaly fused with rule evidence); the detectors' own
        # scores are both high
        assert min(findings[ip].detector_scores.values()) >= 40.0
    autoencoder_top = sorted(findings.values(), key=lambda f: -f.detector_scores["autoencoder"])[:9]
    assert set(attackers.values()) <= {f.ip for f in autoencoder_top}


@pytest.mark.heavy
def test_autoencoder_scores_share_the_forest_scale(result):
    forest = np.sort([f.detector_scores["iforest"] for f in result.findings])
    network = np.sort([f.detector_scores["autoencoder"] for f in result.findings])
    assert np.abs(forest - network).max() <= 0.11   # quantile-mapped on the run's own clients


@pytest.mark.heavy
def test_planted_anomalies_are_explained_by_the_planted_feature(result, planted):
    _, attackers = planted
    findings = {f.ip: f for f in result.findings}
    flood = findings[attackers["dos"]].contributions
    buster = findings[attackers["dirbuster"]].contributions
    assert flood["iforest"][0].feature in RATE_FEATURES
    assert {c.feature for c in flood["autoencoder"]} & RATE_FEATURES   # top three (with burstiness)
    assert {c.feature for c in buster["autoencoder"]} & PATH_DIVERSITY
    assert {c.feature for c in buster["iforest"]} & PATH_DIVERSITY
    assert any(line.startswith("autoencoder (") and "minute" in line for line in findings[attackers["dos"]].explanation)


@pytest.mark.heavy
def test_same_input_and_seed_give_the_same_report(result, planted):
    again = analyse([planted[0]], Settings(detectors=BOTH))
    assert [(f.ip, f.score, f.detector_scores) for f in again.findings] == \
        [(f.ip, f.score, f.detector_scores) for f in result.findings]


@pytest.mark.heavy
def test_a_trained_model_round_trips(tmp_path, planted, capsys):
    import loggen

    good = tmp_path / "good.log"
    good.write_text("\n".join(loggen.generate(60_000, seed=8, attackers=False).lines.to_list()) + "\n")
    summary = train([str(good)], str(tmp_path / "model"), Settings(detectors=BOTH))
    assert summary["autoencoder"]["epochs_run"] >= 1 and summary["autoencoder"]["threshold"] > 0
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["autoencoder.json", "autoencoder.keras", "autoencoder.npz", "iforest.npz", "model.json",
                     "reference.npz"]
    metadata = json.loads((tmp_path / "model" / "model.json").read_text())
    assert {"keras", "tensorflow"} <= set(metadata["versions"])
    loaded = model_store.load(tmp_path / "model").baseline
    again = model_store.load(tmp_path / "model").baseline
    table = _table(planted[0])
    assert np.array_equal(detect.score_with(loaded, table)[0], detect.score_with(again, table)[0])
    code = log_analyser.main(["-f", planted[0], "--model", str(tmp_path / "model"), "--detectors", "autoencoder",
                              "-o", "-", "--output-format", "json"])
    report = json.loads(capsys.readouterr().out)
    anomaly = [d for d in report["summary"]["detectors"] if d in ("iforest", "autoencoder")]
    assert code == ExitCode.OK and anomaly == ["autoencoder"]
    flagged = {f["ip"] for f in report["findings"] if f["flagged"]}
    assert set(planted[1].values()) <= flagged


@pytest.mark.heavy
def test_numpy_forward_pass_equals_keras_predictions():
    from log_analyser_core.detectors.autoencoder import AutoencoderDetector, DenseNetwork

    rng = np.random.default_rng(1)
    X = rng.lognormal(0, 1, (300, 6))
    detector = AutoencoderDetector(epochs=3, random_state=0).fit(X)
    Z = detector._scaled(np.vstack([X, rng.normal(0, 50, (20, 6))]))   # also rows far outside the training set
    keras_out = detector.model_.predict(Z, verbose=0)
    numpy_out = DenseNetwork.from_keras(detector.model_).predict(Z)
    assert np.abs(keras_out - numpy_out).max() <= 1e-5
    assert np.abs(numpy_out).max() > 0.1   # a network that outputs ~0 everywhere would compare equal trivially


SCORE_WITHOUT_TENSORFLOW = textwrap.dedent("""
    import json, sys
    import log_analyser
    code = log_analyser.main(["-f", sys.argv[1], "--model", sys.argv[2], "-o", sys.argv[3]])
    print(json.dumps({"code": code, "modules": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
""")


@pytest.mark.heavy
def test_scoring_with_a_saved_autoencoder_does_not_import_tensorflow(tmp_path):
    import loggen

    good, today = tmp_path / "good.log", tmp_path / "today.log"
    good.write_text("\n".join(loggen.generate(18_000, seed=8, attackers=False).lines.to_list()) + "\n")
    today.write_text("\n".join(loggen.generate(6_000, seed=9).lines.to_list()) + "\n")
    summary = train([str(good)], str(tmp_path / "model"), Settings(detectors=BOTH))
    assert summary["detectors"] == list(BOTH)
    run = subprocess.run([sys.executable, "-c", SCORE_WITHOUT_TENSORFLOW, str(today), str(tmp_path / "model"),
                          str(tmp_path / "report.json")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"code": 0, "modules": []}
    report = json.loads((tmp_path / "report.json").read_text())
    assert [d for d in report["summary"]["detectors"] if d in BOTH] == list(BOTH)
    loaded = model_store.load(tmp_path / "model").baseline.detectors["autoencoder"]
    assert not hasattr(loaded, "model_")   # read from autoencoder.npz, not through Keras


def test_damaged_autoencoder_weights_are_a_config_error(tmp_path):
    from log_analyser_core.detectors.autoencoder import DenseNetwork
    from log_analyser_core.errors import ConfigError

    rng = np.random.default_rng(0)
    widths = (6, 4, 2, 4, 6)
    shapes = zip(widths[:-1], widths[1:], strict=True)
    good = DenseNetwork([(rng.normal(0, 1, (a, b)), rng.normal(0, 1, b)) for a, b in shapes])
    good.save(tmp_path / "ok.npz")
    assert DenseNetwork.load(tmp_path / "ok.npz").predict(np.ones((3, 6))).shape == (3, 6)
    np.savez(tmp_path / "short.npz", w0=np.ones((6, 4)), b0=np.ones(4))
    np.savez(tmp_path / "mismatch.npz", **{f"{k}{i}": np.ones((6, 4)) if k == "w" else np.ones(4)
                                          for i in range(4) for k in "wb"})
    (tmp_path / "text.npz").write_text("not numpy")
    for name in ("short", "mismatch", "text"):
        with pytest.raises(ConfigError, match="autoencoder"):
            DenseNetwork.load(tmp_path / f"{name}.npz")


def _table(path):
    import file_parser
    from log_analyser_core.features import client as ip_features

    return ip_features.compute(file_parser.parse([path]).events)


NATIVE_NOISE = textwrap.dedent("""
    import os, sys, threading
    from log_analyser_core.detectors import autoencoder
    def other_thread():   # e.g. the progress bar, writing while a preload thread imports TensorFlow
        sys.stderr.write("parsing 40%\\r")
        sys.stderr.flush()
        print("warning: 3 lines do not parse", file=sys.stderr)
    with autoencoder._native_stderr_silenced(True):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1795331351.999444   31562 port.cc:153] oneDNN custom operations are on.\\n")
        writer = threading.Thread(target=other_thread)
        writer.start()
        writer.join()
        os.write(2, b"E0000 00:00:1795330621.672391   13193 node_def_util.cc:682] NodeDef mentions attribute\\n")
    print("after", file=sys.stderr)
""")


def test_native_notices_are_hidden_but_other_output_to_stderr_passes(tmp_path):
    run = subprocess.run([sys.executable, "-c", NATIVE_NOISE], capture_output=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert run.stderr == b"parsing 40%\rwarning: 3 lines do not parse\nafter\n"
