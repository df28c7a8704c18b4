"""SQLite-backed ``KeyStore``: one file, safe across threads (a lock around one connection) and
across processes (WAL + busy_timeout + ``BEGIN IMMEDIATE`` write transactions)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from liveness.storage.sqlite import SqliteFile, run_script

from .bws import BwsClient
from .base import (
    DEFAULT_LEASE_S,
    Clock,
    KeyInfo,
    KeyStore,
    Reservation,
    Usage,
    as_utc,
    bucket_for,
    generate_token_secret,
    hash_key,
    invalid_key_error,
    missing_key_error,
    new_lease_id,
    pick_by_ref,
    quota_exceeded_error,
    utcnow,
)

SCHEMA_VERSION = 2

_SCHEMA = """
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
    reclaimed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, bucket)
);
"""

_LEASES = """
CREATE TABLE leases (
    lease_id   TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX leases_expiry ON leases (expires_at)
"""
_SCHEMA += ";" + _LEASES
# v1 -> v2: reservations become leases (a unit reserved by a process that died is given back).
_LEASES_V2 = "ALTER TABLE usage ADD COLUMN reclaimed INTEGER NOT NULL DEFAULT 0;" + _LEASES

_KEY_COLUMNS = "key_id, name, prefix, quota_limit, period, created_at, revoked_at"

# BWS 3 client credentials (liveness.keys.bws): the key is stored as is, HMAC verification needs it.
BWS_SCHEMA_VERSION = 1
_BWS_SCHEMA = """
CREATE TABLE bws_clients (
    client_id  TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES api_keys (key_id),
    client_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


def _row_to_bws(row: tuple) -> tuple[BwsClient, str]:
    client_id, key_id, client_key, created_at, revoked_at = row
    return BwsClient(client_id, key_id, datetime.fromisoformat(created_at),
                     datetime.fromisoformat(revoked_at) if revoked_at else None), client_key


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


class SqliteKeyStore(SqliteFile, KeyStore):
    def __init__(
        self, path: str | os.PathLike[str], *, clock: Clock | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        SqliteFile.__init__(self, path)
        self.clock = clock or utcnow
        self.lease_s = lease_s
        self._migrate_schema("keys", SCHEMA_VERSION, _SCHEMA, {2: lambda conn: run_script(conn, _LEASES_V2)})
        self._migrate_schema("bws_clients", BWS_SCHEMA_VERSION, _BWS_SCHEMA)

    def close(self) -> None:
        SqliteFile.close(self)

    # ------------------------------------------------------------------ lookups

    @staticmethod
    def _by_hash(conn: sqlite3.Connection, key_hash: str) -> KeyInfo | None:
        row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return _row_to_info(row) if row else None

    @staticmethod
    def _by_id(conn: sqlite3.Connection, key_id: str) -> KeyInfo | None:
        row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        return _row_to_info(row) if row else None

    @staticmethod
    def _resolve(conn: sqlite3.Connection, ref: str) -> KeyInfo:
        row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (ref,)).fetchone()
        by_name = conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE name = ? ORDER BY created_at", (ref,)
        ).fetchall()
        return pick_by_ref(ref, _row_to_info(row) if row else None, [_row_to_info(r) for r in by_name])

    # ------------------------------------------------------------------ KeyStore API

    def _insert_key(self, info: KeyInfo, key_hash: str) -> bool:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO api_keys (key_id, name, prefix, key_hash, quota_limit, period,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (info.key_id, info.name, info.prefix, key_hash, info.limit, info.period,
                     info.created_at.isoformat()),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def _find_by_hash(self, key_hash: str) -> KeyInfo | None:
        with self._read() as conn:
            return self._by_hash(conn, key_hash)

    def _find_by_id(self, key_id: str) -> KeyInfo | None:
        with self._read() as conn:
            return self._by_id(conn, key_id)

    def reserve(self, raw_key: str | None) -> Reservation:
        if not raw_key:
            raise missing_key_error()
        return self._reserve(lambda conn: self._by_hash(conn, hash_key(raw_key)))

    def reserve_id(self, key_id: str) -> Reservation:
        return self._reserve(lambda conn: self._by_id(conn, key_id))

    def _reserve(self, lookup) -> Reservation:
        now = as_utc(self.clock())
        with self._write() as conn:
            info = lookup(conn)
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
            lease_id, expires = new_lease_id(), now + timedelta(seconds=self.lease_s)
            conn.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (lease_id, info.key_id, bucket, expires.timestamp()))
        return Reservation(
            key_id=info.key_id, period=info.period, bucket=bucket, used=int(used),
            limit=info.limit, reserved_at=now, lease_id=lease_id, lease_expires_at=expires,
        )

    def token_secret(self) -> bytes:
        with self._write() as conn:  # the first caller (CLI or worker) creates it; all read it
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('jwt_secret', ?)", (generate_token_secret(),)
            )
            (value,) = conn.execute("SELECT value FROM meta WHERE key = 'jwt_secret'").fetchone()
        return value.encode("utf-8")

    def commit(self, reservation: Reservation) -> None:
        with self._write() as conn:
            if self._end_lease(conn, reservation):
                sql = "UPDATE usage SET succeeded = succeeded + 1 WHERE key_id = ? AND bucket = ?"
            else:  # reclaimed while the request ran: the answer went out, so the unit is charged again
                sql = ("UPDATE usage SET succeeded = succeeded + 1, used = used + 1, reclaimed = reclaimed - 1"
                       " WHERE key_id = ? AND bucket = ?")
            conn.execute(sql, (reservation.key_id, reservation.bucket))

    def refund(self, reservation: Reservation) -> None:
        with self._write() as conn:
            if self._end_lease(conn, reservation):
                conn.execute(
                    "UPDATE usage SET used = MAX(used - 1, 0), refunded = refunded + 1"
                    " WHERE key_id = ? AND bucket = ?",
                    (reservation.key_id, reservation.bucket),
                )

    @staticmethod
    def _end_lease(conn: sqlite3.Connection, reservation: Reservation) -> bool:
        """Remove the reservation's lease; False when the sweeper reclaimed it already."""
        if not reservation.lease_id:
            return True
        return conn.execute("DELETE FROM leases WHERE lease_id = ?", (reservation.lease_id,)).rowcount == 1

    def reclaim_expired(self) -> int:
        now = as_utc(self.clock()).timestamp()
        with self._write() as conn:
            groups = conn.execute(
                "SELECT key_id, bucket, COUNT(*) FROM leases WHERE expires_at < ? GROUP BY key_id, bucket", (now,)
            ).fetchall()
            for key_id, bucket, n in groups:
                conn.execute(
                    "UPDATE usage SET used = MAX(used - ?, 0), reclaimed = reclaimed + ? WHERE key_id = ? AND bucket = ?",
                    (n, n, key_id, bucket),
                )
            conn.execute("DELETE FROM leases WHERE expires_at < ?", (now,))
        return sum(n for _, _, n in groups)

    def _insert_bws_client(self, client: BwsClient, key_b64: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO bws_clients VALUES (?, ?, ?, ?, NULL)",
                         (client.client_id, client.key_id, key_b64, client.created_at.isoformat()))

    def _find_bws_client(self, client_id: str) -> tuple[BwsClient, str] | None:
        with self._read() as conn:
            row = conn.execute("SELECT client_id, key_id, client_key, created_at, revoked_at FROM bws_clients"
                               " WHERE client_id = ?", (client_id,)).fetchone()
        return _row_to_bws(row) if row else None

    def _bws_clients(self) -> list[BwsClient]:
        with self._read() as conn:
            rows = conn.execute("SELECT client_id, key_id, client_key, created_at, revoked_at FROM bws_clients"
                                " ORDER BY created_at, client_id").fetchall()
        return [_row_to_bws(r)[0] for r in rows]

    def _revoke_bws_client(self, client_id: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute("UPDATE bws_clients SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
                         (now.isoformat(), client_id))

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
                "SELECT used, succeeded, refunded, reclaimed FROM usage WHERE key_id = ? AND bucket = ?",
                (info.key_id, bucket),
            ).fetchone()
        used, succeeded, refunded, reclaimed = (int(v) for v in row) if row else (0, 0, 0, 0)
        return Usage(
            key_id=info.key_id, period=info.period, bucket=bucket, used=used, limit=info.limit,
            remaining=max(0, info.limit - used), succeeded=succeeded, refunded=refunded, reclaimed=reclaimed,
        )
