"""The SQLite cache, on real files: hits, expiry, namespaces, migrations, two processes, corruption."""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import ROOT

from log_analyser_core.enrich import cache as cache_store
from log_analyser_core.enrich.cache import CacheStore


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    with CacheStore(tmp_path / "cache.sqlite3", clock=clock) as opened:
        yield opened


def test_put_then_get_returns_the_value(store):
    store.put("abuseipdb", "1.2.3.4", {"abuse_score": 97, "isp": "x"}, ttl_seconds=60)
    assert store.get("abuseipdb", "1.2.3.4") == {"abuse_score": 97, "isp": "x"}
    assert store.get("abuseipdb", "5.6.7.8") is None


def test_namespaces_are_separate(store):
    store.put("abuseipdb", "k", 1, 60)
    store.put("llm", "k", 2, 60)
    assert (store.get("abuseipdb", "k"), store.get("llm", "k")) == (1, 2)
    assert store.clear("llm") == 1
    assert (store.get("abuseipdb", "k"), store.get("llm", "k")) == (1, None)


def test_entries_expire_after_their_ttl(store, clock):
    store.put("abuseipdb", "k", "v", ttl_seconds=3600)
    clock.now += 3599
    assert store.get("abuseipdb", "k") == "v"
    clock.now += 1
    assert store.get("abuseipdb", "k") is None
    assert store.stats().namespaces[0].expired == 1


def test_put_replaces_and_zero_ttl_stores_nothing(store):
    store.put("ns", "k", "old", 60)
    store.put("ns", "k", "new", 60)
    store.put("ns", "other", "x", 0)
    assert store.get("ns", "k") == "new" and store.get("ns", "other") is None
    assert store.stats().entries == 1


def test_values_survive_reopening(tmp_path, clock):
    path = tmp_path / "c.sqlite3"
    with CacheStore(path, clock=clock) as first:
        first.put("ns", "k", [1, "two", None], 60)
    with CacheStore(path, clock=clock) as second:
        assert second.get("ns", "k") == [1, "two", None]


def test_stats_and_clear(store, clock):
    for i in range(5):
        store.put("abuseipdb", f"ip{i}", i, ttl_seconds=10 if i < 2 else 1000)
    store.put("llm", "a", "b", 1000)
    clock.now += 100
    stats = store.stats()
    assert [(n.namespace, n.entries, n.expired) for n in stats.namespaces] == [("abuseipdb", 5, 2), ("llm", 1, 0)]
    assert stats.entries == 6 and stats.size_bytes > 0 and stats.schema_version == cache_store.SCHEMA_VERSION
    assert store.clear("abuseipdb", expired_only=True) == 2
    assert store.clear() == 4
    assert store.stats().entries == 0


def test_file_uses_wal_and_records_its_schema_version(store, tmp_path):
    store.put("ns", "k", 1, 60)
    with sqlite3.connect(tmp_path / "cache.sqlite3") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == cache_store.SCHEMA_VERSION


def test_default_path_is_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cache_store.default_cache_path()
    assert path == tmp_path / "log_analyser" / "cache.sqlite3"
    with CacheStore() as store:
        store.put("ns", "k", 1, 60)
    assert path.is_file() and not (ROOT / "cache.sqlite3").exists()


def test_an_old_schema_is_migrated(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite3"
    with CacheStore(path) as store:
        store.put("ns", "k", 1, 60)
    extra = ("CREATE TABLE notes (id INTEGER PRIMARY KEY)",)
    monkeypatch.setattr(cache_store, "MIGRATIONS", (*cache_store.MIGRATIONS, extra))
    monkeypatch.setattr(cache_store, "SCHEMA_VERSION", 2)
    with CacheStore(path) as store:
        assert store.get("ns", "k") == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
        assert raw.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0


def test_a_newer_schema_is_left_alone_and_not_used(tmp_path, caplog):
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with caplog.at_level(logging.WARNING), CacheStore(path) as store:
        store.put("ns", "k", 1, 60)
        assert store.get("ns", "k") is None and not store.stats().enabled
    assert "newer than this program" in caplog.text
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 99


@pytest.mark.parametrize("damage", ["not a database", "truncated"])
def test_a_corrupt_file_is_moved_aside_and_rebuilt(tmp_path, caplog, damage):
    path = tmp_path / "c.sqlite3"
    if damage == "not a database":
        path.write_bytes(b"this is not an SQLite file\n" * 200)
    else:
        with CacheStore(path) as store:
            for i in range(500):
                store.put("ns", f"k{i}", "x" * 200, 60)
        data = path.read_bytes()
        path.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])
    with caplog.at_level(logging.WARNING), CacheStore(path) as store:
        store.put("ns", "fresh", 1, 60)
        assert store.get("ns", "fresh") == 1
    assert "moved it to" in caplog.text
    assert len(list(tmp_path.glob("c.sqlite3.corrupt-*"))) == 1


def test_an_unusable_location_is_a_warning_not_a_failure(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING), CacheStore(blocker / "sub" / "c.sqlite3") as store:
        store.put("ns", "k", 1, 60)
        assert store.get("ns", "k") is None
    assert "continuing without it" in caplog.text


WRITER = textwrap.dedent("""
    import sys
    from log_analyser_core.enrich.cache import CacheStore
    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with CacheStore(path) as store:
        for i in range(count):
            store.put("ns", f"{name}-{i}", {"i": i}, 3600)
            assert store.get("ns", f"{name}-{i}") == {"i": i}
    print("done")
""")


def test_two_processes_share_one_cache(tmp_path):
    path = tmp_path / "shared.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "300"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert all(out.strip() == "done" and "continuing without it" not in err for out, err in outputs), outputs
    with CacheStore(path) as store:
        assert store.stats().entries == 600
        assert store.get("ns", "a-299") == {"i": 299} and store.get("ns", "b-0") == {"i": 0}


def test_a_new_file_held_by_another_writer_is_waited_for_before_entering_wal(tmp_path, caplog):
    # SQLite refuses the switch to WAL at once (no busy handler) while another connection writes.
    path = tmp_path / "c.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.4, holder.execute, ("COMMIT",))
    release.start()
    try:
        with caplog.at_level(logging.WARNING), CacheStore(path) as store:
            store.put("ns", "k", 1, 60)
            assert store.get("ns", "k") == 1
    finally:
        release.join()
        holder.close()
    assert "continuing without it" not in caplog.text
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_directory_in_the_way_is_never_moved(tmp_path, caplog):
    folder = tmp_path / "cache.sqlite3"
    folder.mkdir()
    with caplog.at_level(logging.WARNING), CacheStore(folder) as store:
        assert store.get("ns", "k") is None
    assert folder.is_dir() and "continuing without it" in caplog.text and "moved" not in caplog.text


def test_a_locked_cache_is_waited_for_then_skipped_but_never_moved(tmp_path, caplog, monkeypatch):
    path = tmp_path / "c.sqlite3"
    with CacheStore(path) as store:
        store.put("ns", "k", 1, 60)
    monkeypatch.setattr(cache_store, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING), CacheStore(path) as store:
            store.put("ns", "other", 2, 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in caplog.text and "moved" not in caplog.text
    assert not list(tmp_path.glob("*.corrupt-*"))
    with CacheStore(path) as store:
        assert store.get("ns", "k") == 1


def test_a_tampered_value_is_a_miss(store, tmp_path):
    store.put("ns", "k", {"a": 1}, 60)
    with sqlite3.connect(tmp_path / "cache.sqlite3") as raw:
        raw.execute("UPDATE entries SET value = '{broken'")
    assert store.get("ns", "k") is None
