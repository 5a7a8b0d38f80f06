"""A saved model's forest as arrays (forest.Trees, iforest.npz): scored and explained in NumPy alone,
to the bit as scikit-learn's forest scores and explains, with no scikit-learn import and no forest
process; a damaged file is refused before a walk could run away; format 1 models (iforest.skops)
still read, with the same findings."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from model_formats import train_both

import log_analyser
from log_analyser_core import pipeline
from log_analyser_core.detectors import forest, model_store
from log_analyser_core.detectors.forest_process import ForestProcess
from log_analyser_core.errors import ConfigError, ExitCode

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "access.log"


def _data(rows: int, seed: int = 0, width: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(size=(rows, width)) * rng.uniform(0.5, 200.0, size=width)
    X[:, 2] = np.round(X[:, 2])   # whole numbers: rows tie with the thresholds' neighbours
    X[::7, 4] = 0.0               # a feature mostly zero, as many are
    X[::40] *= 30.0               # a few clients far from the rest
    return X


@pytest.fixture(scope="module")
def fitted():
    X = _data(1500)
    scaler, fitted = forest.fit(X, n_estimators=120, max_samples="auto", random_state=3)
    return scaler, fitted, forest.Trees.of(scaler, fitted, {"n_estimators": 120})


def test_trees_score_and_explain_as_the_forest_does_to_the_bit(fitted, monkeypatch):
    scaler, model, trees = fitted
    X = np.vstack([_data(1500), _data(700, seed=1), _data(300, seed=2) * 5.0])
    X[5, 3] = np.nan   # a missing value goes where the tree sends it
    monkeypatch.setattr(forest, "TREE_ROWS", 256)   # several blocks of rows,
    monkeypatch.setattr(forest, "SPLIT_ROWS", 1000)  # on two threads
    assert np.array_equal(trees.scores(X), forest.forest_scores(model, scaler.transform(X)))
    rows = X[::97]
    assert np.array_equal(trees.contributions(rows), _through_decision_paths(scaler, model, rows))
    assert np.array_equal(forest.path_contributions(scaler, model, rows), trees.contributions(rows))


def test_values_just_above_a_threshold_split_as_scikit_learn_reads_them(fitted):
    """scikit-learn's trees compare the row as float32: a value just above a threshold that rounds to
    float32 at or below it goes left. Unscaled here, so the rows are the values the trees compare."""
    import dataclasses

    _, model, trees = fitted
    plain = dataclasses.replace(trees, center=np.zeros(9), scale=np.ones(9))
    rng = np.random.default_rng(5)
    inner = np.flatnonzero(trees.left != -1)
    X = rng.normal(size=(len(inner), 9))
    X[np.arange(len(inner)), trees.feature[inner]] = np.nextafter(trees.threshold[inner], np.inf)
    assert (X.astype(np.float32) != X).any()
    assert np.array_equal(plain.scores(X), forest.forest_scores(model, X))
    assert np.array_equal(plain.contributions(X[:300]), _through_decision_paths(_identity(), model, X[:300]))


def _identity():
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer()


def _through_decision_paths(scaler, model, X: np.ndarray) -> np.ndarray:
    """The reference: the same attribution over scikit-learn's own ``decision_path`` of each tree
    (a sparse row x node matrix), with each node's expected path length filled bottom-up from its
    tree's arrays: how the forest's contributions were computed before Trees."""
    Z = scaler.transform(X)
    total = np.zeros(X.shape)
    for estimator in model.estimators_:
        tree = estimator.tree_
        left, right, counts = tree.children_left, tree.children_right, tree.n_node_samples
        expected = forest.average_path_length(counts)
        for node in range(tree.node_count - 1, -1, -1):
            if left[node] != -1:
                expected[node] = 1.0 + (counts[left[node]] * expected[left[node]]
                                         + counts[right[node]] * expected[right[node]]) / counts[node]
        parent = np.full(tree.node_count, -1)
        for children in (left, right):
            inner = children != -1
            parent[children[inner]] = np.flatnonzero(inner)
        child = np.flatnonzero(parent >= 0)
        credit = np.zeros((len(child), X.shape[1]))
        credit[np.arange(len(child)), tree.feature[parent[child]]] = expected[parent[child]] - 1.0 - expected[child]
        total += estimator.decision_path(Z).tocsc()[:, child] @ credit
    return total / len(model.estimators_)


def test_trees_saved_and_read_back_are_the_same_forest(fitted, tmp_path):
    scaler, model, trees = fitted
    trees.save(tmp_path / "iforest.npz")
    again = forest.Trees.load(tmp_path / "iforest.npz", width=9)
    X = _data(400, seed=4)
    assert np.array_equal(again.scores(X), forest.forest_scores(model, scaler.transform(X)))
    assert again.params == {"n_estimators": 120}
    with pytest.raises(forest.Refused, match="'center' is not 8 numbers"):
        forest.Trees.load(tmp_path / "iforest.npz", width=8)


def _saved(trees: forest.Trees, path: Path, **changes) -> Path:
    trees.save(path)
    with np.load(path) as arrays:
        kept = {key: arrays[key] for key in arrays.files}
    kept.update(changes)
    np.savez(path, **{key: value for key, value in kept.items() if value is not None})
    return path


def _cycle(trees: forest.Trees) -> np.ndarray:
    left = trees.left.copy()
    inner = np.flatnonzero(left != -1)
    left[inner[3]] = inner[1]   # a child before its parent: a walk could loop for ever
    return left


@pytest.mark.parametrize(("changes", "message"), [
    ({"roots": None}, "no roots array"),
    ({"left": "_cycle"}, "a child is not after its parent in the same tree"),
    ({"left": "_other_tree"}, "a child is not after its parent in the same tree"),
    ({"right": "_one_child"}, "a node has one child"),
    ({"feature": "_far_feature"}, "a split is not on one of the 9 features"),
    ({"threshold": "_nan_threshold"}, "a split's threshold is not a number"),
    ({"scale": np.zeros(9)}, "'scale' holds a zero"),
    ({"max_samples": np.int64(0)}, "'max_samples' is not a positive whole number"),
    ({"samples": np.array([1.5])}, "'samples' is not one integer value per node"),
    ({"roots": np.array([0, 0])}, "'roots' are not the increasing first nodes of the trees"),
    ({"params": np.array("[1, 2]")}, "'params' is not a mapping"),
])
def test_a_damaged_forest_file_is_refused(fitted, tmp_path, changes, message):
    trees = fitted[2]
    made = {"_cycle": lambda: _cycle(trees),
            "_other_tree": lambda: np.where(np.arange(len(trees.left)) == 0, trees.roots[1], trees.left),
            "_one_child": lambda: np.where(np.arange(len(trees.right)) == 0, -1, trees.right),
            "_far_feature": lambda: np.where(trees.left != -1, 9, trees.feature),
            "_nan_threshold": lambda: np.where(trees.left != -1, np.nan, trees.threshold)}
    changes = {key: made[value]() if isinstance(value, str) else value for key, value in changes.items()}
    path = _saved(trees, tmp_path / "iforest.npz", **changes)
    with pytest.raises(forest.Refused, match=message):
        forest.Trees.load(path, width=9)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same training saved as format 1 (iforest.skops) and format 2 (iforest.npz)."""
    return train_both([str(SAMPLE)], tmp_path_factory.mktemp("models"), pipeline.Settings(detectors=("iforest",)))


def test_a_model_holds_its_forest_as_arrays_and_reads_it_without_scikit_learn_objects(models):
    old, new = models
    assert sorted(p.name for p in new.iterdir()) == ["iforest.npz", "model.json", "reference.npz"]
    assert json.loads((new / "model.json").read_text())["format_version"] == model_store.FORMAT_VERSION == 2
    read = model_store.load(new).baseline.scale_model
    assert read.trees_ is not None and not hasattr(read, "forest_") and read.remote is None
    assert (read.n_estimators, read.max_samples, read.random_state) == (200, "auto", 0)
    assert forest.saved_as_trees(new) and not forest.saved_as_trees(old)


def test_format_1_and_format_2_models_give_the_same_findings(models):
    old, new = models
    results = [pipeline.analyse([str(SAMPLE)], pipeline.Settings(model=str(folder))) for folder in (old, new)]
    first, second = ([(f.ip, f.score, f.flagged, f.detector_scores, f.contributions, f.explanation)
                      for f in result.findings] for result in results)
    assert first == second and any(row[2] for row in first)


def test_a_run_with_a_format_2_model_starts_no_forest_process(models, monkeypatch, tmp_path):
    old, new = models
    started = []
    monkeypatch.setattr(ForestProcess, "start", classmethod(lambda cls: started.append(cls)))
    monkeypatch.setattr(pipeline, "_sklearn_imported", lambda: False)
    assert log_analyser.main(["-f", str(SAMPLE), "--model", str(new), "-o", str(tmp_path / "a.json"), "-q"]) == 0
    assert started == []
    assert log_analyser.main(["-f", str(SAMPLE), "--model", str(old), "-o", str(tmp_path / "b.json"), "-q"]) == 0
    assert started   # a format 1 model is read by scikit-learn, in the forest's process (none started here)


RUN = textwrap.dedent("""
    import json, sys
    import log_analyser
    code = log_analyser.main(["-f", sys.argv[1], "-o", sys.argv[2], "--model", sys.argv[3]])
    children = open(f"/proc/{__import__('os').getpid()}/task/{__import__('os').getpid()}/children").read().split()
    print(json.dumps({"code": code, "sklearn": "sklearn" in sys.modules, "skops": "skops" in sys.modules,
                      "children": children}))
""")


def test_an_analysis_with_a_format_2_model_imports_no_scikit_learn(models, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-c", RUN, str(SAMPLE), str(tmp_path / "out.json"), str(models[1])],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(run.stdout.splitlines()[-1]) == {"code": 0, "sklearn": False, "skops": False,
                                                       "children": []}, run.stderr
    flagged = [f for f in json.loads((tmp_path / "out.json").read_text())["findings"] if f["flagged"]]
    assert flagged and all(f["contributions"]["iforest"] for f in flagged[:3])


def test_a_damaged_format_2_model_is_a_one_line_error_naming_the_file(models, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(models[1], folder)
    (folder / "iforest.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ConfigError, match="damaged model: cannot read it") as raised:
        model_store.load(folder)
    assert raised.value.path == str(folder / "iforest.npz")
    (folder / "iforest.npz").unlink()
    with pytest.raises(ConfigError, match="iforest.npz is missing"):
        model_store.load(folder)
    code = log_analyser.main(["-f", str(SAMPLE), "--model", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.USAGE and err.startswith("error: ") and "\n" not in err, err


def test_a_format_1_model_is_upgraded_in_place_without_its_training_log(models, tmp_path, capsys):
    old, new = models
    folder = tmp_path / "upgraded"
    shutil.copytree(old, folder)
    assert log_analyser.main(["train", "--upgrade", str(folder)]) == ExitCode.OK
    assert "upgraded to model format 2" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in new.iterdir())
    assert json.loads((folder / "model.json").read_text()) == json.loads((new / "model.json").read_text())
    with np.load(folder / "iforest.npz") as upgraded, np.load(new / "iforest.npz") as trained:
        assert upgraded.files == trained.files and all(np.array_equal(upgraded[k], trained[k]) for k in trained.files)
    assert log_analyser.main(["train", "--upgrade", str(folder)]) == ExitCode.OK
    assert "in model format 2 already" in capsys.readouterr().err


def test_an_upgrade_refuses_a_hostile_model_and_writes_nothing(models, tmp_path):
    import skops.io

    folder = tmp_path / "hostile"
    shutil.copytree(models[0], folder)
    skops.io.dump({"scaler": os.system, "forest": None, "params": {}}, folder / "iforest.skops")
    with pytest.raises(ConfigError, match="not trusted: posix.system"):
        model_store.upgrade(folder)
    assert not (folder / "iforest.npz").exists()
    assert json.loads((folder / "model.json").read_text())["format_version"] == 1


@pytest.mark.parametrize("argv", [["--upgrade", "m", "--save", "m2"], ["--upgrade", "m", "-f", "x.log"],
                                  ["-f", "x.log"], ["--save", "m"], []])
def test_train_takes_a_log_and_a_folder_or_an_upgrade_alone(argv, capsys):
    assert log_analyser.main(["train", *argv]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--upgrade" in err and "error" in err
