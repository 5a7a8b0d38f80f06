"""A small namespaced key/value cache with expiry, in one SQLite file.

Every stage that asks a slow or metered service (AbuseIPDB, an LLM) stores its answers here under
its own namespace. Values are JSON documents; times are seconds since the epoch from an injectable
clock. The file lives in the user cache directory unless the caller names another path.

Robustness, because a cache must never be the reason a run fails:
- WAL mode and a busy timeout, so two runs sharing one file both succeed;
- the schema version is SQLite's ``user_version``, upgraded by the ordered ``MIGRATIONS``;
- a file that is not a database (or fails its integrity check) is moved aside with a warning and
  rebuilt; a file from a newer version is left alone and the cache is disabled for the run.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

log = logging.getLogger(__name__)

APP_NAME = "log_analyser"
FILE_NAME = "cache.sqlite3"
BUSY_TIMEOUT_MS = 15_000

# MIGRATIONS[n] upgrades a file from schema version n to n + 1; the file's version is len(MIGRATIONS).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE entries (
               namespace TEXT NOT NULL,
               key TEXT NOT NULL,
               value TEXT NOT NULL,          -- JSON
               stored_at REAL NOT NULL,      -- seconds since the epoch
               expires_at REAL NOT NULL,     -- seconds since the epoch
               PRIMARY KEY (namespace, key)
           ) WITHOUT ROWID""",
        "CREATE INDEX entries_expiry ON entries (expires_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class KeyValueCache(Protocol):
    """What a stage needs of a cache; CacheStore is the SQLite one, tests may pass a dict-backed one."""

    def get(self, namespace: str, key: str) -> object | None: ...

    def put(self, namespace: str, key: str, value: object, ttl_seconds: float) -> None: ...


def default_cache_path() -> Path:
    """``<user cache dir>/log_analyser/cache.sqlite3`` (platformdirs), never the working directory."""
    from platformdirs import user_cache_path

    return user_cache_path(APP_NAME, appauthor=False) / FILE_NAME


@dataclass(frozen=True)
class NamespaceStats:
    namespace: str
    entries: int
    expired: int       # still stored, but no longer returned by get()


@dataclass(frozen=True)
class CacheStats:
    path: Path
    size_bytes: int    # the database file plus its WAL
    schema_version: int
    namespaces: tuple[NamespaceStats, ...]
    enabled: bool = True

    @property
    def entries(self) -> int:
        return sum(n.entries for n in self.namespaces)


def _enter_wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Switch the file to WAL mode, waiting for other connections as the busy timeout promises.

    SQLite answers ``PRAGMA journal_mode = WAL`` with "database is locked" at once, without calling
    the busy handler, when another connection holds the file (two runs creating a new cache together),
    so the wait is done here. WAL mode is stored in the file: once one run has set it, the others find
    it set and need no lock.
    """
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


class CacheStore:
    """Namespaced JSON values with a time to live. Safe to share between threads and processes.

    ``get`` returns None for a missing or expired entry; no method raises on a broken cache: a
    database error is logged and the call behaves as a miss (or a no-op for writes).
    """

    def __init__(self, path: Path | str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.enabled = True
        self._warned: set[str] = set()   # actions already warned about: one warning each, not one per lookup

    # -- opening, migrating, recovering -------------------------------------------------------
    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None and self.enabled:
            try:
                self._conn = self._open()
            except sqlite3.OperationalError:
                raise   # locked, or cannot be opened at all: not the file's fault, never move it
            except sqlite3.DatabaseError as exc:   # not a database, or malformed
                if not self.path.is_file():
                    raise
                self._move_aside(exc)
                self._conn = self._open()
            if not self.enabled:
                self._conn.close()
                self._conn = None
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy_ms = BUSY_TIMEOUT_MS
        conn = sqlite3.connect(self.path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _enter_wal(conn, deadline=time.monotonic() + busy_ms / 1000)
            conn.execute("PRAGMA synchronous = NORMAL")
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")   # one process migrates; the other waits, then sees the result
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                log.warning("cache %s has schema version %d, newer than this program's %d: not using it",
                            self.path, version, SCHEMA_VERSION)
                self.enabled = False
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _move_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        log.warning("cache %s is unreadable (%s): moved it to %s and starting a new one", self.path, exc, target)
        self.path.replace(target)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def _run(self, action: str, work: Callable[[sqlite3.Connection], object], default: object) -> object:
        with self._lock:
            try:
                conn = self._connection()
                return default if conn is None else work(conn)
            except (sqlite3.Error, OSError, ValueError) as exc:   # ValueError: a stored value that is not JSON
                if self._conn is None:   # it cannot even be opened: unusable for the rest of the run
                    self.enabled = False
                first = action not in self._warned
                self._warned.add(action)
                log.log(logging.WARNING if first else logging.DEBUG,
                        "cache %s: %s failed (%s); continuing without it", self.path, action, exc)
                return default

    # -- the interface ------------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> object | None:
        """The value stored under (namespace, key), or None when missing or expired."""
        def work(conn: sqlite3.Connection) -> object | None:
            row = conn.execute("SELECT value FROM entries WHERE namespace = ? AND key = ? AND expires_at > ?",
                               (namespace, key, self._clock())).fetchone()
            return None if row is None else json.loads(row[0])
        return self._run("read", work, None)

    def put(self, namespace: str, key: str, value: object, ttl_seconds: float) -> None:
        """Store a JSON-serialisable ``value`` for ``ttl_seconds`` (replacing any older one)."""
        if ttl_seconds <= 0:
            return
        document = json.dumps(value, separators=(",", ":"), sort_keys=True)

        def work(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                         (namespace, key, document, now, now + ttl_seconds))
        self._run("write", work, None)

    def stats(self) -> CacheStats:
        """Entries per namespace (and how many of them have expired), file size and schema version."""
        def work(conn: sqlite3.Connection) -> tuple[NamespaceStats, ...]:
            rows = conn.execute("SELECT namespace, COUNT(*), SUM(expires_at <= ?) FROM entries "
                                "GROUP BY namespace ORDER BY namespace", (self._clock(),)).fetchall()
            return tuple(NamespaceStats(ns, count, int(expired or 0)) for ns, count, expired in rows)
        namespaces = self._run("stats", work, ())
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return CacheStats(path=self.path, size_bytes=size, schema_version=SCHEMA_VERSION,
                          namespaces=namespaces, enabled=self.enabled)  # type: ignore[arg-type]

    def clear(self, namespace: str | None = None, expired_only: bool = False) -> int:
        """Delete the entries of one namespace (or all); returns how many were removed."""
        clauses: list[str] = []
        params: list[str | float] = []
        if namespace is not None:
            clauses.append("namespace = ?")
            params.append(namespace)
        if expired_only:
            clauses.append("expires_at <= ?")
            params.append(self._clock())
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return cast(int, self._run("clear", lambda conn: conn.execute(f"DELETE FROM entries{where}", params).rowcount,
                                   0))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> CacheStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
