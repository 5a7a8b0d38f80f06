"""The run's Isolation Forest in a process of its own (detectors/forest_process.py): the same forest,
the same scores and explanations as one fitted in the run's process, whatever becomes of the process."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import anomaly_detector as detect
from log_analyser_core import pipeline
from log_analyser_core.detectors import attribution, forest_process
from log_analyser_core.detectors.forest_process import ForestProcess

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "access.log"


@pytest.fixture
def remote():
    process = ForestProcess.start()
    assert process is not None
    yield process
    process.close()


def _matrix(rows: int, columns: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(size=(rows, columns))
    X[::50] *= 40.0   # a few clients far from the rest
    return X


def test_a_forest_in_its_process_scores_and_explains_as_one_fitted_here(remote):
    X = _matrix(3_000)
    there = detect.IsolationForestDetector(n_estimators=60, random_state=3, remote=remote).fit(X)
    here = detect.IsolationForestDetector(n_estimators=60, random_state=3).fit(X)
    assert not hasattr(there, "forest_")   # held by the process, not fitted here
    assert np.array_equal(there.score_samples(X), here.score_samples(X))
    other = _matrix(700, seed=1)
    assert np.array_equal(there.score_samples(other), here.score_samples(other))
    assert np.array_equal(attribution.forest_contributions(there, X[:40]),
                          attribution.forest_contributions(here, X[:40]))
    assert not hasattr(there, "forest_")


def test_a_lost_process_is_replaced_by_a_forest_fitted_here(remote):
    X = _matrix(2_000)
    there = detect.IsolationForestDetector(n_estimators=40, random_state=0, remote=remote).fit(X)
    here = detect.IsolationForestDetector(n_estimators=40, random_state=0).fit(X)
    remote._process.kill()
    remote._process.wait()
    assert np.array_equal(there.score_samples(X), here.score_samples(X))
    assert hasattr(there, "forest_") and there.remote is None
    assert np.array_equal(there.contributions(X[:5]), here.contributions(X[:5]))


def test_a_forest_held_remotely_is_fitted_here_before_it_is_pickled(remote):
    import pickle

    X = _matrix(500)
    there = detect.IsolationForestDetector(n_estimators=20, random_state=0, remote=remote).fit(X)
    copy = pickle.loads(pickle.dumps(there))
    assert copy.remote is None
    assert np.array_equal(copy.score_samples(X), detect.IsolationForestDetector(
        n_estimators=20, random_state=0).fit(X).score_samples(X))


def test_a_process_that_cannot_start_or_fails_leaves_the_fit_here(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert ForestProcess.start() is None
    monkeypatch.undo()
    monkeypatch.setattr(forest_process, "_CHILD", "import sys; sys.exit(3)")   # dies before answering
    dying = ForestProcess.start()
    assert dying is not None
    X = _matrix(400)
    fitted = detect.IsolationForestDetector(n_estimators=20, random_state=0, remote=dying).fit(X)
    assert fitted.remote is None and hasattr(fitted, "forest_")
    assert dying._process.wait(timeout=30) == 3


def test_the_process_refuses_what_it_cannot_do_and_stays_usable(remote):
    with pytest.raises(forest_process.Lost, match="asked before a fit"):
        remote.scores(_matrix(10))
    with pytest.raises(forest_process.Lost, match="unknown request 'shutdown'"):
        remote._call("shutdown", [])
    remote.fit(_matrix(300), 10, "auto", 0)
    assert remote.scores(_matrix(10)).shape == (10,)


def test_messages_carry_matrices_exactly_and_refuse_anything_else():
    stream = io.BytesIO()
    arrays = [np.arange(12.0).reshape(3, 4), np.array([np.nan, -0.0, 1e308]), np.zeros((0, 5))]
    forest_process.write(stream, {"op": "scores", "n": 1}, arrays)
    stream.seek(0)
    header, back = forest_process.read(stream)
    assert header["op"] == "scores" and header["n"] == 1
    assert [a.shape for a in back] == [(3, 4), (3,), (0, 5)]
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(arrays, back, strict=True))
    assert np.signbit(back[1][1])
    with pytest.raises(EOFError):   # ends inside the matrix
        forest_process.read(io.BytesIO(stream.getvalue()[:-9]))
    with pytest.raises(EOFError):
        forest_process.read(io.BytesIO(b""))
    for line in (b'{"arrays": [[-1]]}\n', b'{"arrays": [[2, 2, 2]]}\n', b'{"arrays": [["3"]]}\n', b'[1, 2]\n',
                 b'{"op": "fit"}\n', b"not json\n"):
        with pytest.raises(ValueError):
            forest_process.read(io.BytesIO(line))


def test_a_caller_that_imported_scikit_learn_already_starts_no_process(monkeypatch):
    import sklearn.ensemble  # noqa: F401

    monkeypatch.setattr(ForestProcess, "start", classmethod(lambda cls: pytest.fail("started")))
    assert any(f.flagged for f in pipeline.analyse([str(SAMPLE)]).findings)


def test_an_analysis_gives_the_same_findings_with_the_forest_in_its_process_or_here(monkeypatch, tmp_path):
    started = []
    start = ForestProcess.start.__func__

    def counted(cls):
        started.append(start(cls))
        return started[-1]

    monkeypatch.setattr(ForestProcess, "start", classmethod(counted))
    monkeypatch.setattr(pipeline, "_sklearn_imported", lambda: False)   # as in a fresh process
    there = pipeline.analyse([str(SAMPLE)])
    assert len(started) == 1 and started[0] is not None
    assert started[0]._process.poll() is not None   # ended with the run
    monkeypatch.setattr(ForestProcess, "start", classmethod(lambda cls: None))
    here = pipeline.analyse([str(SAMPLE)])
    assert [f.flagged for f in there.findings].count(True) >= 3
    assert [(f.ip, f.score, f.flagged, f.contributions, f.explanation) for f in there.findings] == \
        [(f.ip, f.score, f.flagged, f.contributions, f.explanation) for f in here.findings]


def test_a_table_too_large_to_send_is_fitted_here(monkeypatch):
    monkeypatch.setattr(pipeline, "REMOTE_MAX_CLIENTS", 5)
    monkeypatch.setattr(pipeline, "_sklearn_imported", lambda: False)
    sent = []
    monkeypatch.setattr(ForestProcess, "fit", lambda self, *args: sent.append(args))
    closed = []
    close = ForestProcess.close
    monkeypatch.setattr(ForestProcess, "close", lambda self: closed.append(self) or close(self))
    result = pipeline.analyse([str(SAMPLE)])
    assert sent == [] and closed and any(f.flagged for f in result.findings)


RUN = textwrap.dedent("""
    import json, sys
    import log_analyser
    code = log_analyser.main(["-f", sys.argv[1], "-o", sys.argv[2]])
    print(json.dumps({"code": code, "sklearn": "sklearn" in sys.modules, "scipy": "scipy" in sys.modules}))
""")


def test_the_analysing_process_never_imports_scikit_learn(tmp_path):
    assert SAMPLE.stat().st_size >= pipeline.PRELOAD_MIN_BYTES   # the sample is large enough to start one
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-c", RUN, str(SAMPLE), str(tmp_path / "out.json")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen == {"code": 0, "sklearn": False, "scipy": False}, run.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    flagged = [f for f in report["findings"] if f["flagged"]]
    assert flagged and all(f["contributions"]["iforest"] for f in flagged[:3])


def test_the_cli_starts_the_process_before_its_own_imports_and_the_run_takes_it(monkeypatch, tmp_path):
    started = []
    start = ForestProcess.start.__func__
    monkeypatch.setattr(ForestProcess, "start", classmethod(lambda cls: started.append(start(cls)) or started[-1]))
    monkeypatch.setattr(pipeline, "_sklearn_imported", lambda: False)
    import log_analyser

    assert log_analyser.main(["-f", str(SAMPLE), "-o", str(tmp_path / "out.json"), "-q"]) == 0
    assert len(started) == 1 and started[0]._process.wait(timeout=30) == 0   # one process, taken and ended
    assert forest_process._spare is None
    small = tmp_path / "small.log"
    small.write_text(SAMPLE.read_text()[:200_000])   # under MIN_BYTES: none started early
    forest_process.start_early([str(small)])
    forest_process.start_early(["/nonexistent/*.log"])
    assert forest_process._spare is None and len(started) == 1


def test_a_process_started_early_that_no_run_takes_is_ended():
    import signal

    forest_process.start_early([str(SAMPLE)])
    spare = forest_process._spare
    assert spare is not None
    forest_process.discard()   # killed: it held nothing
    assert spare._process.poll() == -signal.SIGKILL and forest_process._spare is None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A forest-only model trained on the sample log, as format 1 saved it (iforest.skops): read by
    scikit-learn, so into the forest's process (a format 2 model needs neither: test_forest_trees.py)."""
    from model_formats import train_both

    return train_both([str(SAMPLE)], tmp_path_factory.mktemp("model"), pipeline.Settings(detectors=("iforest",)))[0]


def test_a_model_read_into_the_process_scores_as_one_read_here(model, remote):
    from log_analyser_core.detectors import model_store

    there = model_store.load(model, remote=remote).baseline.scale_model
    here = model_store.load(model).baseline.scale_model
    assert not hasattr(there, "forest_") and hasattr(here, "forest_")
    assert (there.n_estimators, there.max_samples, there.random_state) == \
        (here.n_estimators, here.max_samples, here.random_state)
    X = _matrix(500, columns=here.scaler_.n_features_in_)
    assert np.array_equal(there.score_samples(X), here.score_samples(X))
    assert np.array_equal(there.contributions(X[:7]), here.contributions(X[:7]))
    remote._process.kill()   # lost: read here
    remote._process.wait()
    other = _matrix(50, columns=here.scaler_.n_features_in_, seed=2)
    assert np.array_equal(there.score_samples(other), here.score_samples(other))
    assert there.remote is None and hasattr(there, "forest_")


def test_a_hostile_model_is_refused_by_the_process_as_it_is_here(model, remote, tmp_path):
    import shutil

    import skops.io

    from log_analyser_core.detectors import model_store
    from log_analyser_core.errors import ConfigError

    folder = tmp_path / "copy"
    shutil.copytree(model, folder)
    skops.io.dump({"scaler": os.system, "forest": None, "params": {}}, folder / "iforest.skops")
    for process in (remote, None):
        with pytest.raises(ConfigError, match="not trusted: posix.system") as refused:
            model_store.load(folder, remote=process)
        assert refused.value.path == str(folder / "iforest.skops")
        assert "only load models made by log_analyser train" in str(refused.value.hint)
    (folder / "iforest.skops").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ConfigError, match=r"damaged model: cannot read it"):
        model_store.load(folder, remote=remote)
    assert remote._process.poll() is None   # refused, not lost


def test_an_analysis_with_a_model_reads_it_into_the_process(model, monkeypatch, tmp_path):
    settings = pipeline.Settings(model=str(model))
    monkeypatch.setattr(pipeline, "_sklearn_imported", lambda: False)
    there = pipeline.analyse([str(SAMPLE)], settings)
    monkeypatch.setattr(ForestProcess, "start", classmethod(lambda cls: None))
    here = pipeline.analyse([str(SAMPLE)], settings)
    assert [(f.ip, f.score, f.flagged, f.contributions) for f in there.findings] == \
        [(f.ip, f.score, f.flagged, f.contributions) for f in here.findings]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    code = RUN.replace('"-o", sys.argv[2]]', '"-o", sys.argv[2], "--model", sys.argv[3]]')
    run = subprocess.run([sys.executable, "-c", code, str(SAMPLE), str(tmp_path / "out.json"), str(model)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(run.stdout.splitlines()[-1]) == {"code": 0, "sklearn": False, "scipy": False}, run.stderr


def test_ctrl_c_is_left_to_the_run_the_process_serves(remote):
    import signal
    import time

    time.sleep(0.3)   # inside its imports, most likely
    remote._process.send_signal(signal.SIGINT)
    remote.fit(_matrix(300), 10, "auto", 0)   # still there, and answers
    assert remote.scores(_matrix(5)).shape == (5,)


def test_a_forest_replaced_in_the_process_by_another_detectors_is_made_here(remote):
    X, Y = _matrix(800), _matrix(800, seed=5)
    first = detect.IsolationForestDetector(n_estimators=30, random_state=0, remote=remote).fit(X)
    second = detect.IsolationForestDetector(n_estimators=30, random_state=1, remote=remote).fit(Y)
    assert remote.holder is second
    assert np.array_equal(first.score_samples(X), detect.IsolationForestDetector(
        n_estimators=30, random_state=0).fit(X).score_samples(X))
    assert hasattr(first, "forest_") and not hasattr(second, "forest_")   # the process kept the second's
    assert np.array_equal(second.score_samples(Y), detect.IsolationForestDetector(
        n_estimators=30, random_state=1).fit(Y).score_samples(Y))


def test_a_run_that_wants_no_process_ends_the_one_started_early_at_once(monkeypatch):
    import signal

    forest_process.start_early([str(SAMPLE)])
    spare = forest_process._spare
    assert spare is not None
    monkeypatch.setattr(pipeline, "_sklearn_imported", lambda: True)   # this run fits here
    with pipeline._forest_process(SAMPLE.stat().st_size, pipeline.Settings(), pipeline.engines.named("polars")) as got:
        assert got is None and forest_process._spare is None
        # ended before the run's work, not after it, and killed: not waited for while it imports
        assert spare._process.poll() == -signal.SIGKILL
