"""One SQLite file shared by threads and processes: a lock around one connection per process,
WAL + busy_timeout, and ``BEGIN IMMEDIATE`` write transactions."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

BUSY_TIMEOUT_MS = 30_000

# One schema step, run inside the write transaction that records the new version.
Upgrade = Callable[[sqlite3.Connection], None]


def run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the surrounding transaction; statements one by one keep it.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


class SqliteFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn_obj: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _conn(self) -> sqlite3.Connection:
        # Caller holds self._lock.  A connection must not cross a fork: reopen in the child.
        if self._conn_obj is None or self._conn_pid != os.getpid():
            conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit; transactions are explicit below
                check_same_thread=False,  # guarded by self._lock
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._set_wal(conn)
            # WAL + NORMAL: a commit survives any process crash or restart; only a power cut can
            # lose the last few increments, which errs in the client's favour.  FULL would fsync
            # twice per request (reserve + commit) on the hot path.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Deleted rows (images, embeddings) are overwritten with zeros, not just unlinked.
            conn.execute("PRAGMA secure_delete = ON")
            self._conn_obj, self._conn_pid = conn, os.getpid()
        return self._conn_obj

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching journal mode needs an exclusive lock and does not always go through the busy
        # handler, so retry briefly when several processes open a fresh file at once.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _write(self, *, erase: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database write lock up front (``BEGIN IMMEDIATE``),
        so read-check-update sequences cannot interleave with other processes.

        ``erase``: the transaction removes biometric data, so after the commit the write-ahead
        log is checkpointed and truncated too: secure_delete zeroes the freed pages in the
        database file, but the log still holds the frames that once wrote the data."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if erase:
                # TRUNCATE waits (busy handler) for other processes' readers to move past the
                # log, copies every frame into the database and empties the log file.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN")  # one consistent snapshot for multi-statement reads
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _migrate_schema(self, component: str, version: int, schema: str,
                        upgrades: Mapping[int, Upgrade] | None = None) -> None:
        """Bring ``component``'s tables to ``version``: a new file gets ``schema`` (the latest
        layout) directly, an older one runs ``upgrades[v]`` for each version ``v`` it lacks.
        All in one write transaction, so of several processes opening the file at once exactly
        one upgrades and the others see the result.  A file written by newer code is refused."""
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            key = "schema_version" if component == "keys" else f"{component}_schema_version"
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            current = int(row[0]) if row else 0
            if current > version:
                raise RuntimeError(f"{self.path} has {component} schema v{current}; this code knows v{version}")
            if current < 1:
                run_script(conn, schema)
            else:
                self._upgrade(conn, component, current, version, upgrades or {})
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, str(version)),
            )

    def _upgrade(self, conn: sqlite3.Connection, component: str, current: int, version: int,
                 upgrades: Mapping[int, Upgrade]) -> None:
        for step in range(current + 1, version + 1):
            if step not in upgrades:
                raise RuntimeError(f"{self.path}: no upgrade of {component} schema v{step - 1} to v{step}")
            upgrades[step](conn)

    def _stored_secret(self, name: str) -> bytes:
        """A random secret generated on first use and kept in ``meta`` under ``name``, so every
        worker and the admin CLI agree on it without configuration."""
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
            if row is None:
                value = secrets.token_urlsafe(48)
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (name, value))
            else:
                value = row[0]
        return value.encode("utf-8")

    def close(self) -> None:
        with self._lock:
            if self._conn_obj is not None and self._conn_pid == os.getpid():
                self._conn_obj.close()
            self._conn_obj = None
