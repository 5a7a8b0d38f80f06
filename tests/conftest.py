from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"
# Real public logs live beside the checkout (never copied into the repo); CI has them there too.
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"the shared data folder is missing: {SHARED}"
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def _no_installed_crs(tmp_path_factory):
    """No test sees a Core Rule Set the machine's user installed (``rules update --crs``): the user
    data dir is a temp folder for the whole session, so runs without --crs find none."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        patch.setenv("XDG_DATA_DIRS", str(tmp_path_factory.mktemp("xdg-data-dirs")))   # nor a system-wide one
        yield


@pytest.fixture(scope="session")
def planted_log(tmp_path_factory):
    """20k benign lines plus a planted scanner, brute force and flood; returns (path, labels)."""
    import loggen

    generated = loggen.generate(20_000, seed=3)
    path = tmp_path_factory.mktemp("planted") / "access.log"
    path.write_text("\n".join(generated.lines.to_list()) + "\n", encoding="utf-8")
    return path, generated.labels


@pytest.fixture
def abuseipdb():
    """A scripted AbuseIPDB API v2 on 127.0.0.1 (tests/abuseipdb_server.py)."""
    from abuseipdb_server import FakeAbuseIPDB

    with FakeAbuseIPDB() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_real_abuseipdb(monkeypatch, tmp_path_factory):
    """No test reaches the real AbuseIPDB or the user's cache and keys: a closed local port and a temp cache."""
    from abuseipdb_server import closed_port_url

    monkeypatch.setenv("ABUSEIPDB_BASE_URL", closed_port_url())
    monkeypatch.delenv("ABUSEIPDB_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
@pytest.fixture(scope="session")
def hostile_result(tmp_path_factory):
    """The pipeline's result on a log with an XSS corpus, a Cyrillic user agent and a markup 'address',
    with the later stages' fields filled in (see tests/reportdata.py)."""
    import reportdata

    return reportdata.hostile_result(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="session")
def small_result():
    """The pipeline's result on tests/data/small.log, read by a relative path so that golden
    files do not depend on where the checkout lives; the forest alone, so that they do not depend
    on whether the deep extra (TensorFlow) is installed."""
    from log_analyser_core.pipeline import Settings, analyse

    here = os.getcwd()
    os.chdir(DATA)
    try:
        return analyse(["small.log"], Settings(detectors=("iforest",)))
    finally:
        os.chdir(here)
@pytest.fixture(autouse=True)
def isolated_configuration(tmp_path_factory, monkeypatch):
    """No user config file or LOG_ANALYSER_* variable of the machine leaks into a test, and no run
    appends its summary to the CI job's page (GitHub Actions sets GITHUB_STEP_SUMMARY)."""
    import os

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    for name in [name for name in os.environ if name.startswith("LOG_ANALYSER_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)   # the table's width: tests that want one set it


@pytest.fixture(scope="session")
def piped_and_file_results():
    """tests/data/small.log analysed twice, the forest alone: read from standard input (its example
    lines cannot be read again, so they are rebuilt from the parsed fields) and from the file by its
    absolute path (read back wherever the result is rendered)."""
    import io

    from log_analyser_core.pipeline import Settings, analyse

    settings = Settings(detectors=("iforest",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((DATA / "small.log").read_bytes())))
        piped = analyse(["-"], settings)
    return piped, analyse([str(DATA / "small.log")], settings)
