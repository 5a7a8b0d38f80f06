from __future__ import annotations

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


@pytest.fixture(scope="session")
def planted_log(tmp_path_factory):
    """20k benign lines plus a planted scanner, brute force and flood; returns (path, labels)."""
    import loggen

    generated = loggen.generate(20_000, seed=3)
    path = tmp_path_factory.mktemp("planted") / "access.log"
    path.write_text("\n".join(generated.lines.to_list()) + "\n", encoding="utf-8")
    return path, generated.labels


@pytest.fixture(autouse=True)
def isolated_configuration(tmp_path_factory, monkeypatch):
    """No user config file or LOG_ANALYSER_* variable of the machine leaks into a test."""
    import os

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    for name in [name for name in os.environ if name.startswith("LOG_ANALYSER_")]:
        monkeypatch.delenv(name)
