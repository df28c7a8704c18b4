"""SQLite-backed ``KeyStore``: one file, safe across threads (a lock around one connection) and
across processes (WAL + busy_timeout + ``BEGIN IMMEDIATE`` write transactions)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Iterator

from .base import (
    DEFAULT_PERIOD,
    Clock,
    IssuedKey,
    KeyInfo,
    KeyStore,
    Reservation,
    Usage,
    as_utc,
    bucket_for,
    display_prefix,
    generate_key_id,
    generate_raw_key,
    hash_key,
    invalid_key_error,
    missing_key_error,
    pick_by_ref,
    quota_exceeded_error,
    utcnow,
    validate_new_key,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_SCHEMA_V1 = """
CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    quota_limit INTEGER NOT NULL CHECK (quota_limit >= 0),
    period      TEXT NOT NULL CHECK (period IN ('day', 'month', 'total')),
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_name ON api_keys (name);
CREATE TABLE usage (
    key_id    TEXT NOT NULL REFERENCES api_keys (key_id),
    bucket    TEXT NOT NULL,
    used      INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    succeeded INTEGER NOT NULL DEFAULT 0,
    refunded  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, bucket)
);
"""

_KEY_COLUMNS = "key_id, name, prefix, quota_limit, period, created_at, revoked_at"


def _row_to_info(row: sqlite3.Row | tuple) -> KeyInfo:
    key_id, name, prefix, limit, period, created_at, revoked_at = row
    return KeyInfo(
        key_id=key_id,
        name=name,
        prefix=prefix,
        limit=int(limit),
        period=period,
        created_at=datetime.fromisoformat(created_at),
        revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
    )


class SqliteKeyStore(KeyStore):
    def __init__(self, path: str | os.PathLike[str], *, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or utcnow
        self._lock = threading.RLock()
        self._conn_obj: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    # ------------------------------------------------------------------ plumbing

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
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database write lock up front (``BEGIN IMMEDIATE``),
        so read-check-update sequences cannot interleave with other processes."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN")  # one consistent snapshot for multi-statement reads
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has key-store schema v{version}; this code knows v{SCHEMA_VERSION}"
                )
            if version < 1:
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            # Future migrations: ``if version < 2: ...``
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        with self._lock:
            if self._conn_obj is not None and self._conn_pid == os.getpid():
                self._conn_obj.close()
            self._conn_obj = None

    # ------------------------------------------------------------------ lookups

    @staticmethod
    def _by_hash(conn: sqlite3.Connection, raw_key: str) -> KeyInfo | None:
        row = conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (hash_key(raw_key),)
        ).fetchone()
        return _row_to_info(row) if row else None

    @staticmethod
    def _resolve(conn: sqlite3.Connection, ref: str) -> KeyInfo:
        row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (ref,)).fetchone()
        by_name = conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE name = ? ORDER BY created_at", (ref,)
        ).fetchall()
        return pick_by_ref(ref, _row_to_info(row) if row else None, [_row_to_info(r) for r in by_name])

    # ------------------------------------------------------------------ KeyStore API

    def create(self, name: str, limit: int, period: str = DEFAULT_PERIOD) -> IssuedKey:
        validate_new_key(name, limit, period)
        raw_key = generate_raw_key()
        created_at = as_utc(self.clock())
        for _attempt in range(5):
            info = KeyInfo(
                key_id=generate_key_id(),
                name=name,
                prefix=display_prefix(raw_key),
                limit=limit,
                period=period,  # type: ignore[arg-type]
                created_at=created_at,
            )
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO api_keys (key_id, name, prefix, key_hash, quota_limit, period,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (info.key_id, name, info.prefix, hash_key(raw_key), limit, period,
                         created_at.isoformat()),
                    )
                return IssuedKey(info=info, raw_key=raw_key)
            except sqlite3.IntegrityError:  # key_id collision (astronomically unlikely): retry
                continue
        raise RuntimeError("could not allocate a unique key_id")

    def authenticate(self, raw_key: str | None) -> KeyInfo:
        if not raw_key:
            raise missing_key_error()
        with self._read() as conn:
            info = self._by_hash(conn, raw_key)
        if info is None or info.revoked:
            raise invalid_key_error()
        return info

    def reserve(self, raw_key: str | None) -> Reservation:
        if not raw_key:
            raise missing_key_error()
        now = as_utc(self.clock())
        with self._write() as conn:
            info = self._by_hash(conn, raw_key)
            if info is None or info.revoked:
                raise invalid_key_error()
            bucket = bucket_for(info.period, now)
            conn.execute(
                "INSERT OR IGNORE INTO usage (key_id, bucket) VALUES (?, ?)", (info.key_id, bucket)
            )
            charged = conn.execute(
                "UPDATE usage SET used = used + 1 WHERE key_id = ? AND bucket = ? AND used < ?",
                (info.key_id, bucket, info.limit),
            ).rowcount
            if charged != 1:
                raise quota_exceeded_error(info, bucket, now)
            (used,) = conn.execute(
                "SELECT used FROM usage WHERE key_id = ? AND bucket = ?", (info.key_id, bucket)
            ).fetchone()
        return Reservation(
            key_id=info.key_id, period=info.period, bucket=bucket, used=int(used),
            limit=info.limit, reserved_at=now,
        )

    def commit(self, reservation: Reservation) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE usage SET succeeded = succeeded + 1 WHERE key_id = ? AND bucket = ?",
                (reservation.key_id, reservation.bucket),
            )

    def refund(self, reservation: Reservation) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE usage SET used = MAX(used - 1, 0), refunded = refunded + 1"
                " WHERE key_id = ? AND bucket = ?",
                (reservation.key_id, reservation.bucket),
            )

    def list_keys(self) -> list[KeyInfo]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"
            ).fetchall()
        return [_row_to_info(r) for r in rows]

    def get(self, ref: str) -> KeyInfo:
        with self._read() as conn:
            return self._resolve(conn, ref)

    def revoke(self, ref: str) -> KeyInfo:
        now = as_utc(self.clock())
        with self._write() as conn:
            info = self._resolve(conn, ref)
            if info.revoked:
                return info
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now.isoformat(), info.key_id),
            )
        return replace(info, revoked_at=now)

    def usage(self, ref: str) -> Usage:
        now = as_utc(self.clock())
        with self._read() as conn:
            info = self._resolve(conn, ref)
            bucket = bucket_for(info.period, now)
            row = conn.execute(
                "SELECT used, succeeded, refunded FROM usage WHERE key_id = ? AND bucket = ?",
                (info.key_id, bucket),
            ).fetchone()
        used, succeeded, refunded = (int(v) for v in row) if row else (0, 0, 0)
        return Usage(
            key_id=info.key_id, period=info.period, bucket=bucket, used=used, limit=info.limit,
            remaining=max(0, info.limit - used), succeeded=succeeded, refunded=refunded,
        )
