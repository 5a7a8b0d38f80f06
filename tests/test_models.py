"""Detector selection, score fusion, forest attributions and the trained baseline (forest only: fast)."""
from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import polars as pl
import pytest
from conftest import DATA

import anomaly_detector as detect
import log_analyser
from log_analyser_core.detectors import attribution, model_store
from log_analyser_core.detectors import forest as forest_math
from log_analyser_core.errors import ConfigError, ExitCode, MissingExtraError
from log_analyser_core.pipeline import Settings, analyse, train

FOREST = ("iforest",)
SCANNER = '{ip} - - [10/Mar/2026:10:{m:02d}:{s:02d} +0000] "GET /{word}.php HTTP/1.1" 404 180 "-" "Mozilla/5.0"'
RATE_FEATURES = {"request_rate", "peak_rpm"}
PATH_DIVERSITY = {"distinct_404_paths", "distinct_paths", "path_entropy"}


def write_log(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def buster_log(tmp_path_factory):
    """Browsers, four monitors that keep fetching one missing page, and a directory brute force."""
    import loggen

    generated = loggen.generate(20_000, seed=5, attackers=False, dirbuster=True)
    path = tmp_path_factory.mktemp("buster") / "access.log"
    buster = generated.labels.filter(pl.col("attack_type") == "dirbuster")["ip"][0]
    return write_log(path, generated.lines.to_list()), buster


def test_quantile_map_follows_the_reference_quantiles_and_keeps_rising_above_them():
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    scale = np.array([0.0, 10.0, 20.0, 50.0])
    mapped = detect.quantile_map(np.array([0.5, 2.0, 2.5, 4.0, 8.0, 40.0, 400.0]), reference, scale)
    assert mapped.tolist()[:4] == [0.0, 10.0, 15.0, 50.0]
    assert 50.0 < mapped[4] < mapped[5] == 100.0 == mapped[6]   # 10x the reference maximum reaches 100


def test_quantile_map_gives_tied_reference_scores_one_value():
    mapped = detect.quantile_map(np.array([1.0, 1.0]), np.array([1.0, 1.0, 1.0, 2.0]), np.array([0, 0, 30.0, 60]))
    assert mapped.tolist() == [10.0, 10.0]


@pytest.mark.parametrize(("how", "expected"), [("min", [10.0, 0.0]), ("mean", [35.0, 40.0]), ("max", [60.0, 80.0])])
def test_fusion(how, expected):
    scores = {"iforest": np.array([10.0, 80.0]), "autoencoder": np.array([60.0, 0.0])}
    assert detect.fuse(scores, how).tolist() == expected


def test_unknown_fusion_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown fusion 'vote'"):
        detect.fuse({"iforest": np.zeros(2)}, "vote")


def test_forest_contributions_add_up_to_the_path_length_gap():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (200, 3)), [[0.0, 9.0, 0.0]]])
    forest = detect.IsolationForestDetector(n_estimators=50, random_state=0).fit(X)
    contributions = attribution.forest_contributions(forest, X[-2:])
    # s(x) = 2 ** (-mean path length / c(max_samples)): recover the mean path length from sklearn's score
    c = forest_math.average_path_length(np.array([forest.forest_.max_samples_]))[0]
    mean_path = -np.log2(forest.score_samples(X[-2:])) * c
    trees = forest_math.Trees.of(forest.scaler_, forest.forest_)
    root = np.mean(trees.expected_lengths[trees.roots])
    assert np.allclose(contributions.sum(axis=1), root - mean_path)
    assert contributions[1].argmax() == 1 and contributions[1, 1] > 3 * np.abs(contributions[1, [0, 2]]).max()


def test_planted_flood_is_explained_by_request_rate(planted_log):
    path, labels = planted_log
    flood = labels.filter(pl.col("attack_type") == "dos")["ip"][0]
    finding = next(f for f in analyse([str(path)], Settings(detectors=FOREST)).findings if f.ip == flood)
    top = [c.feature for c in finding.contributions["iforest"]]
    assert top[0] in RATE_FEATURES and RATE_FEATURES <= set(top)
    assert any("requests per minute" in line and line.startswith("Isolation Forest") for line in finding.explanation)
    assert all(c.value > c.typical for c in finding.contributions["iforest"] if c.feature in RATE_FEATURES)


def test_planted_directory_brute_force_is_explained_by_distinct_404_paths(buster_log):
    path, buster = buster_log
    findings = {f.ip: f for f in analyse([path], Settings(detectors=FOREST)).findings}
    contributions = attribution.explain(*_baseline_and_rows(path, buster), limit=8)[0]["iforest"]
    assert findings[buster].rank == 1 and findings[buster].flagged
    assert {c.feature for c in findings[buster].contributions["iforest"]} & PATH_DIVERSITY
    assert "distinct_404_paths" in [c.feature for c in contributions]
    assert next(c for c in contributions if c.feature == "distinct_404_paths").value >= 700
    # the monitors have as many 404s but one distinct 404 path: that feature does not explain them
    for finding in findings.values():
        if finding.flagged and finding.ip != buster:
            assert "distinct_404_paths" not in {c.feature for c in finding.contributions["iforest"]}


def _baseline_and_rows(path, ip):
    import file_parser
    from log_analyser_core.features import client as ip_features

    table = ip_features.compute(file_parser.parse([path]).events)
    used = ip_features.logged_features(table)
    baseline = detect.fit_baseline(table, used, FOREST)
    return baseline, detect.feature_matrix(table, used), [table["client_ip"].to_list().index(ip)]


def test_only_flagged_findings_are_explained(planted_log):
    path, _ = planted_log
    for finding in analyse([str(path)], Settings(detectors=FOREST)).findings:
        assert bool(finding.contributions) == finding.flagged == bool(finding.explanation)
        for items in finding.contributions.values():
            assert [c.contribution for c in items] == sorted((c.contribution for c in items), reverse=True)
            assert all(0 < c.share <= 1 for c in items)


def test_unknown_detector_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown detector lof"):
        detect.resolve_detectors(("iforest", "lof"))


def test_without_the_deep_extra_the_default_runs_the_forest_and_autoencoder_fails_with_a_hint(
        monkeypatch, capsys, planted_log):
    # neither of the deep extra's packages, whether or not this environment has them (CI's core jobs do not)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("keras", "tensorflow") else real(name, *a))
    assert detect.available_detectors() == FOREST
    with pytest.raises(MissingExtraError) as raised:
        detect.resolve_detectors(("autoencoder",))
    assert raised.value.hint == "pip install '.[deep]' in the log_analyser source tree"
    path, _ = planted_log
    code = log_analyser.main(["-f", str(path), "-o", "-", "--output-format", "json", "-v"])
    out, err = capsys.readouterr()
    anomaly = [d for d in json.loads(out)["summary"]["detectors"] if d in ("iforest", "autoencoder")]
    assert code == ExitCode.OK and anomaly == ["iforest"] and "note: detectors: iforest\n" in err
    code = log_analyser.main(["-f", str(path), "--detectors", "iforest,autoencoder"])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.USAGE and err == ("error: the autoencoder detector needs the 'tensorflow' package, "
                                              "which is not installed (pip install '.[deep]' in the log_analyser "
                                              "source tree)")


def test_summary_says_which_detectors_ran(capsys, planted_log):
    """Which models ran is in the JSON and the PDF; on stderr only with -v (to a new user it is jargon)."""
    path, _ = planted_log
    code = log_analyser.main(["-f", str(path), "--detectors", "iforest", "-v"])
    assert code == ExitCode.OK and "note: detectors: iforest\n" in capsys.readouterr().err
    code = log_analyser.main(["-f", str(path), "--detectors", "iforest"])
    assert code == ExitCode.OK and "note: detectors:" not in capsys.readouterr().err


@pytest.mark.heavy
def test_autoencoder_is_not_fitted_on_too_few_clients(tmp_path):
    import loggen

    if not importlib.util.find_spec("keras"):
        pytest.fail("the deep extra is part of the dev extra: pip install -e '.[dev]'")
    path = write_log(tmp_path / "few.log", loggen.generate(6_000, seed=2).lines.to_list())
    result = analyse([path], Settings(detectors=("iforest", "autoencoder")))
    assert tuple(d for d in result.summary.detectors if d in ("iforest", "autoencoder")) == FOREST
    assert "autoencoder not run: 43 clients are too few to fit it (needs 50)" in result.summary.notes[0]


# --- the trained baseline -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def forest_model(tmp_path_factory):
    """A forest-only model trained on benign generated traffic (no attackers)."""
    import loggen

    folder = tmp_path_factory.mktemp("model")
    log = write_log(folder / "good.log", loggen.generate(20_000, seed=11, attackers=False).lines.to_list())
    summary = train([log], str(folder / "model"), Settings(detectors=FOREST))
    return folder / "model", summary


@pytest.fixture(scope="module")
def format_1_model(tmp_path_factory):
    """A forest-only model as format 1 saved it (iforest.skops): the damage cases cover both formats'
    common files and the skops file that format 1 models are read from."""
    import loggen
    from model_formats import train_both

    folder = tmp_path_factory.mktemp("model1")
    log = write_log(folder / "good.log", loggen.generate(20_000, seed=11, attackers=False).lines.to_list())
    return train_both([log], folder, Settings(detectors=FOREST))[0]


def site_wide_scan(tmp_path, scanners=120):
    """A day when scanners are the majority: 120 IPs each requesting 40 missing .php pages, plus browsers."""
    import loggen

    lines = loggen.generate(4_000, seed=12, attackers=False).lines.to_list()
    lines += [SCANNER.format(ip=f"10.9.{k // 200}.{k % 200 + 1}", m=k % 60, s=j, word=f"w{k}x{j}")
              for k in range(scanners) for j in range(40)]
    return write_log(tmp_path / "today.log", lines)


def test_train_saves_features_versions_and_a_training_summary(forest_model):
    folder, summary = forest_model
    assert sorted(p.name for p in folder.iterdir()) == ["iforest.npz", "model.json", "reference.npz"]
    metadata = json.loads((folder / "model.json").read_text())
    assert "requests" in metadata["features"] and "request_time_mean" not in metadata["features"]  # not logged
    assert len(metadata["typical"]) == len(metadata["features"])
    assert {"numpy", "scikit-learn", "log_analyser"} <= set(metadata["versions"])
    assert metadata["training"]["clients"] == summary["clients"] > 40
    assert metadata["training"]["parsed_lines"] == 20_000 and metadata["detectors"] == ["iforest"]


def test_a_site_wide_attack_cannot_hide_from_the_baseline(forest_model, tmp_path):
    folder, _ = forest_model
    today = site_wide_scan(tmp_path)
    scanners = {f"10.9.{k // 200}.{k % 200 + 1}" for k in range(120)}
    alone = analyse([today], Settings(detectors=FOREST))
    against = analyse([today], Settings(model=str(folder)))
    # the anomaly score's view (the rule stages catch these scanners either way)
    def anomalous(f):
        return f.detector_scores["iforest"] >= Settings().threshold
    recall_alone = sum(anomalous(f) for f in alone.findings if f.ip in scanners) / len(scanners)
    recall_baseline = sum(anomalous(f) for f in against.findings if f.ip in scanners) / len(scanners)
    assert recall_alone < 0.2 and recall_baseline == 1.0
    assert all(f.flagged for f in against.findings if f.ip in scanners)
    assert "scored against the baseline model" in against.summary.notes[0]
    browsers = [f for f in against.findings if f.ip not in scanners]
    assert sum(f.flagged for f in browsers) <= 0.1 * len(browsers)
    # reasons compare with the trusted period's typical client, not with today's scanner majority
    scanner = next(f for f in against.findings if f.ip in scanners)
    assert any(d.feature == "error_4xx_ratio" and d.typical < 0.1 for d in scanner.deviations)


def test_model_scores_do_not_depend_on_the_other_clients(forest_model, tmp_path):
    folder, _ = forest_model
    today = site_wide_scan(tmp_path)
    fewer = site_wide_scan(tmp_path / "..", scanners=10)
    full = {f.ip: f.score for f in analyse([today], Settings(model=str(folder))).findings}
    part = {f.ip: f.score for f in analyse([fewer], Settings(model=str(folder))).findings}
    assert all(part[ip] == full[ip] for ip in part)


def test_model_trained_on_other_features_is_a_clear_error(tmp_path, capsys):
    import loggen

    timed = [f"{line} 0.{k % 900 + 100}" for k, line in enumerate(loggen.generate(6_000, seed=4).lines.to_list())]
    train([write_log(tmp_path / "timed.log", timed)], str(tmp_path / "timed"), Settings(detectors=FOREST))
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--model", str(tmp_path / "timed")])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.USAGE and err.startswith("error: ") and "\n" not in err
    assert "trained on features this log does not record: request_time_mean, request_time_max" in err


@pytest.mark.parametrize(("edit", "message"), [
    (lambda folder: (folder / "model.json").unlink(), "not a model directory"),
    (lambda folder: (folder / "model.json").write_text("{"), "cannot read the model"),
    (lambda folder: _rewrite(folder, features=["requests", "telepathy"]), "does not compute: telepathy"),
    (lambda folder: _rewrite(folder, format_version=99), "in format 99, made by a newer log_analyser"),
    (lambda folder: _rewrite(folder, detectors=["iforest"]) or _plant(folder), "not trusted: posix.system"),
])
def test_broken_or_hostile_models_are_refused(format_1_model, tmp_path, edit, message):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(format_1_model, folder)
    edit(folder)
    with pytest.raises(ConfigError, match=message):
        model_store.load(folder)


def _rewrite(folder, **changes):
    metadata = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**metadata, **changes}))


def _plant(folder):
    """Replace the forest with a file that would call os.system if it were unpickled."""
    import os

    import skops.io

    skops.io.dump({"scaler": os.system, "forest": None, "params": {}}, folder / "iforest.skops")


def test_model_without_the_requested_detector(forest_model):
    with pytest.raises(ConfigError, match="no autoencoder detector"):
        model_store.load(forest_model[0], ("autoencoder",))


def test_train_cli(capsys, tmp_path):
    import loggen

    log = write_log(tmp_path / "good.log", loggen.generate(6_000, seed=2, attackers=False).lines.to_list())
    code = log_analyser.main(["train", "-f", log, "--save", str(tmp_path / "m"), "--detectors", "iforest"])
    assert code == ExitCode.OK and "trained iforest on 40 clients (6,000 lines)" in capsys.readouterr().err
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--model", str(tmp_path / "m"), "-o", "-",
                              "--output-format", "json"])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK and "scored against the baseline model" in err
    assert json.loads(out)["summary"]["clients"] == 7


def test_train_says_which_detector_it_could_not_fit_and_records_only_those_it_did(capsys, tmp_path):
    import loggen

    log = write_log(tmp_path / "good.log", loggen.generate(6_000, seed=2, attackers=False).lines.to_list())
    code = log_analyser.main(["train", "-f", log, "--save", str(tmp_path / "m"), "--detectors", "iforest,autoencoder"])
    err = capsys.readouterr().err
    assert code == ExitCode.OK and "trained iforest on 40 clients (6,000 lines)" in err
    assert "note: autoencoder not trained: 40 clients are too few to fit it (needs 50)" in err
    metadata = json.loads((tmp_path / "m" / "model.json").read_text())
    assert metadata["detectors"] == metadata["training"]["detectors"] == ["iforest"]
    assert "skipped" not in metadata["training"]


def test_train_on_too_few_clients_is_an_input_error(capsys):
    code = log_analyser.main(["train", "-f", str(DATA / "small.log"), "--save", "unused"])
    assert code == ExitCode.INPUT and "too few to learn" in capsys.readouterr().err


def test_help_states_how_models_are_loaded(capsys):
    log_analyser.main(["--help"])
    out = capsys.readouterr().out
    assert "--detectors" in out and "--model" in out and "without unpickling" in out
    assert log_analyser.main(["train", "--help"]) == 0 and "--save" in capsys.readouterr().out


def _arrays(folder, drop: str | None = None, **changes):
    import numpy as np

    with np.load(folder / "reference.npz") as arrays:
        kept = {key: arrays[key] for key in arrays.files if key != drop}
    np.savez(folder / "reference.npz", **{**kept, **changes})


def _swap_estimator(folder):
    import skops.io
    from sklearn.preprocessing import RobustScaler

    state = skops.io.load(folder / "iforest.skops", trusted=list(model_store.TRUSTED_SKOPS_TYPES))
    skops.io.dump({**state, "forest": RobustScaler().fit([[0.0] * 3])}, folder / "iforest.skops")


# Each damage gives one ConfigError naming the file (issue 22, item 12), never a crash later on.
@pytest.mark.parametrize(("edit", "file", "message"), [
    (lambda f: (f / "reference.npz").unlink(), "", "reference.npz is missing"),
    (lambda f: (f / "iforest.skops").unlink(), "", "iforest.skops is missing"),
    (lambda f: (f / "iforest.skops").write_bytes(b"PK\x03\x04 not a zip"), "iforest.skops", "cannot read it"),
    (lambda f: _rewrite(f, format_version=2), "", "iforest.npz is missing"),
    (lambda f: (f / "reference.npz").write_bytes(b"junk"), "reference.npz", "cannot read it"),
    (lambda f: _arrays(f, drop="center"), "reference.npz", "no center array"),
    (lambda f: _arrays(f, drop="reference_iforest"), "reference.npz", "no reference_iforest array"),
    (lambda f: _arrays(f, reference_iforest=__import__("numpy").array([])), "reference.npz",
     "'reference_iforest' is not a non-empty list of numbers"),
    (lambda f: _arrays(f, spread=__import__("numpy").array([1.0, 2.0])), "reference.npz", "'spread' is not"),
    (lambda f: _arrays(f, scale=__import__("numpy").array([1.0, float("nan")])), "reference.npz", "'scale' is not"),
    (lambda f: _rewrite(f, features=["requests"]), "model.json", "'typical' is not a list of 1 numbers"),
    (lambda f: _rewrite(f, features="requests"), "model.json", "'features' is not a non-empty list"),
    (lambda f: _rewrite(f, detectors=[]), "model.json", "'detectors' is not a non-empty list"),
    (lambda f: _rewrite(f, detectors=["autoencoder"]), "model.json", "lacks iforest"),
    (lambda f: _rewrite(f, training={}), "model.json", "'training.clients' is not"),
    (lambda f: _rewrite(f, typical="many"), "model.json", "'typical' is not a list"),
    (lambda f: _rewrite(f, format_version="1"), "model.json",
     "format version is '1'; this version reads formats 1 and 2"),
    (lambda f: _rewrite(f, format_version=None), "model.json", "format version is missing"),
    (_swap_estimator, "iforest.skops", "expected a RobustScaler and an IsolationForest, found RobustScaler and "
                                       "RobustScaler"),
])
def test_damaged_models_are_one_line_errors_naming_the_file(format_1_model, tmp_path, capsys, edit, file, message):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(format_1_model, folder)
    edit(folder)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        model_store.load(folder)
    assert raised.value.path == str(folder / file if file else folder)
    code = log_analyser.main(["-f", str(DATA / "small.log"), "--model", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.USAGE and err.startswith("error: ") and "\n" not in err, err


def test_past_fit_clients_the_detectors_fit_on_a_seeded_sample_and_score_everyone(monkeypatch):
    import file_parser
    from log_analyser_core.features import client as ip_features

    table = ip_features.compute(file_parser.parse([str(DATA.parent.parent / "examples/access.log")]).events)
    used = ip_features.logged_features(table)
    monkeypatch.setattr(detect, "FIT_CLIENTS", 20)
    first, again = (detect.fit_baseline(table, used, FOREST, random_state=3) for _ in range(2))
    assert table.height > 20 and first.clients == 20
    scores = detect.score_with(first, table)[0]
    assert len(scores) == table.height and np.array_equal(scores, detect.score_with(again, table)[0])


def test_the_fit_sample_is_drawn_by_address_in_the_tables_order(monkeypatch):
    # so that Spark, which never holds the whole table on the driver, draws the same clients
    import polars as pl

    import file_parser
    from log_analyser_core.features import client as ip_features

    table = ip_features.compute(file_parser.parse([str(DATA.parent.parent / "examples/access.log")]).events)
    monkeypatch.setattr(detect, "FIT_CLIENTS", 20)
    sample = detect.fit_sample(table, random_state=3)
    shuffled = detect.fit_sample(table.sample(fraction=1.0, shuffle=True, seed=1), random_state=3)
    assert sample.height == 20 and sample.columns == table.columns
    assert sorted(sample["client_ip"].cast(pl.String)) == sorted(shuffled["client_ip"].cast(pl.String))
    assert sample["client_ip"].cast(pl.String).to_list() == sorted(sample["client_ip"].cast(pl.String).to_list())
    assert set(detect.fit_sample(table, random_state=4)["client_ip"]) != set(sample["client_ip"])
    assert detect.fit_sample(table.head(20), random_state=3).equals(table.head(20))
