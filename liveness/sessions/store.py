"""Where sessions live, so any worker serves any call and a restart loses nothing.

SQLite (the service's db file) by default, MongoDB when ``mongodb_uri`` is set.  Three tables:

* ``liveness_sessions``: parameters, attempts (JSON), the verify reference embedding (bytes, wiped
  at expiry and on delete) and an optimistic-concurrency ``version`` (updates compare-and-set);
* ``liveness_session_images``: kept only for sessions created with ``enable_session_image``,
  each with its own expiry (``session_image_retention_s``);
* ``liveness_device_failures``: failed attempts per (key, device_correlation_id), for throttling.
"""

from __future__ import annotations

import json
import os
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from liveness.sessions.model import SessionParams, SessionRecord
from liveness.storage.sqlite import SqliteFile


@dataclass(frozen=True)
class PurgeCounts:
    references_wiped: int = 0
    sessions_deleted: int = 0
    images_deleted: int = 0
    failures_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class SessionStore(ABC):
    @abstractmethod
    def create(self, rec: SessionRecord) -> None: ...

    @abstractmethod
    def get(self, session_id: str) -> SessionRecord | None: ...

    @abstractmethod
    def update(self, rec: SessionRecord) -> bool:
        """Write ``rec`` (state, reference) if the stored version is still ``rec.version``."""

    @abstractmethod
    def delete(self, session_id: str) -> bool:
        """Remove the session, its reference embedding and its images; -> whether it existed."""

    @abstractmethod
    def list(self, key_id: str, limit: int) -> list[SessionRecord]:
        """The key's sessions, newest first."""

    @abstractmethod
    def put_image(self, session_id: str, attempt: int, data: bytes, media_type: str, created_at: float,
                  expires_at: float) -> None: ...

    @abstractmethod
    def get_image(self, session_id: str, attempt: int, now: float) -> tuple[bytes, str] | None: ...

    @abstractmethod
    def record_failure(self, key_id: str, device: str, at: float) -> None: ...

    @abstractmethod
    def failures_since(self, key_id: str, device: str, since: float) -> tuple[int, float | None]:
        """(failed attempts at or after ``since``, time of the latest one)."""

    @abstractmethod
    def purge(self, now: float, retention_s: float, failure_window_s: float) -> PurgeCounts:
        """Wipe expired sessions' reference embeddings, delete sessions expired more than
        ``retention_s`` ago, images past their expiry and failures older than the window."""

    @abstractmethod
    def token_secret(self) -> bytes:
        """The session-token secret used when none is configured (generated once, shared)."""

    def close(self) -> None:
        pass


def _params_json(p: SessionParams) -> str:
    return json.dumps(p.as_dict())


def _params(text: str) -> SessionParams:
    return SessionParams(**json.loads(text))


_SCHEMA = """
CREATE TABLE liveness_sessions (
    session_id   TEXT PRIMARY KEY,
    key_id       TEXT NOT NULL,
    params       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL,
    version      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    reference    BLOB,
    verify_image TEXT
);
CREATE INDEX liveness_sessions_key ON liveness_sessions (key_id, created_at);
CREATE INDEX liveness_sessions_expiry ON liveness_sessions (expires_at);
CREATE TABLE liveness_session_images (
    session_id TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (session_id, attempt)
);
CREATE INDEX liveness_session_images_expiry ON liveness_session_images (expires_at);
CREATE TABLE liveness_device_failures (
    key_id TEXT NOT NULL,
    device TEXT NOT NULL,
    at     REAL NOT NULL
);
CREATE INDEX liveness_device_failures_lookup ON liveness_device_failures (key_id, device, at)
"""

_COLS = "session_id, key_id, params, created_at, expires_at, version, state, reference, verify_image"


def _row(r: tuple) -> SessionRecord:
    return SessionRecord(
        session_id=r[0], key_id=r[1], params=_params(r[2]), created_at=r[3], expires_at=r[4], version=r[5],
        state=json.loads(r[6]), reference=bytes(r[7]) if r[7] is not None else None,
        verify_image=json.loads(r[8]) if r[8] else None,
    )


class SqliteSessionStore(SqliteFile, SessionStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._migrate_schema("sessions", 1, _SCHEMA)

    def create(self, rec: SessionRecord) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO liveness_sessions ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.session_id, rec.key_id, _params_json(rec.params), rec.created_at, rec.expires_at, rec.version,
                 json.dumps(rec.state), rec.reference, json.dumps(rec.verify_image) if rec.verify_image else None),
            )

    def get(self, session_id: str) -> SessionRecord | None:
        with self._read() as conn:
            r = conn.execute(f"SELECT {_COLS} FROM liveness_sessions WHERE session_id = ?", (session_id,)).fetchone()
        return _row(r) if r else None

    def update(self, rec: SessionRecord) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE liveness_sessions SET version = version + 1, state = ?, reference = ? "
                "WHERE session_id = ? AND version = ?",
                (json.dumps(rec.state), rec.reference, rec.session_id, rec.version),
            )
            return cur.rowcount == 1

    def delete(self, session_id: str) -> bool:
        with self._write() as conn:
            conn.execute("DELETE FROM liveness_session_images WHERE session_id = ?", (session_id,))
            return conn.execute("DELETE FROM liveness_sessions WHERE session_id = ?", (session_id,)).rowcount == 1

    def list(self, key_id: str, limit: int) -> list[SessionRecord]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLS} FROM liveness_sessions WHERE key_id = ? ORDER BY created_at DESC LIMIT ?",
                (key_id, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def put_image(self, session_id: str, attempt: int, data: bytes, media_type: str, created_at: float,
                  expires_at: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO liveness_session_images VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, attempt, media_type, created_at, expires_at, data),
            )

    def get_image(self, session_id: str, attempt: int, now: float) -> tuple[bytes, str] | None:
        with self._read() as conn:
            r = conn.execute(
                "SELECT data, media_type FROM liveness_session_images WHERE session_id = ? AND attempt = ? "
                "AND expires_at > ?", (session_id, attempt, now),
            ).fetchone()
        return (bytes(r[0]), r[1]) if r else None

    def record_failure(self, key_id: str, device: str, at: float) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO liveness_device_failures VALUES (?, ?, ?)", (key_id, device, at))

    def failures_since(self, key_id: str, device: str, since: float) -> tuple[int, float | None]:
        with self._read() as conn:
            n, last = conn.execute(
                "SELECT COUNT(*), MAX(at) FROM liveness_device_failures WHERE key_id = ? AND device = ? AND at >= ?",
                (key_id, device, since),
            ).fetchone()
        return int(n), last

    def purge(self, now: float, retention_s: float, failure_window_s: float) -> PurgeCounts:
        with self._write() as conn:
            wiped = conn.execute(
                "UPDATE liveness_sessions SET reference = NULL, version = version + 1 "
                "WHERE reference IS NOT NULL AND expires_at <= ?", (now,),
            ).rowcount
            old = "SELECT session_id FROM liveness_sessions WHERE expires_at < ?"
            images = conn.execute(
                f"DELETE FROM liveness_session_images WHERE expires_at <= ? OR session_id IN ({old})",
                (now, now - retention_s),
            ).rowcount
            deleted = conn.execute("DELETE FROM liveness_sessions WHERE expires_at < ?", (now - retention_s,)).rowcount
            failures = conn.execute(
                "DELETE FROM liveness_device_failures WHERE at < ?", (now - failure_window_s,)
            ).rowcount
        return PurgeCounts(wiped, deleted, images, failures)

    def token_secret(self) -> bytes:
        return self._stored_secret("session_token_secret")


class MongoSessionStore(SessionStore):
    def __init__(self, client_or_uri: Any, db_name: str = "liveness") -> None:
        from pymongo import ASCENDING, DESCENDING, MongoClient

        self.client = MongoClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
        db = self.client[db_name]
        self.sessions = db["liveness_sessions"]
        self.images = db["liveness_session_images"]
        self.failures = db["liveness_device_failures"]
        self.meta = db["liveness_sessions_meta"]
        self.sessions.create_index([("key_id", ASCENDING), ("created_at", DESCENDING)])
        self.sessions.create_index([("expires_at", ASCENDING)])
        self.images.create_index([("expires_at", ASCENDING)])
        self.failures.create_index([("key_id", ASCENDING), ("device", ASCENDING), ("at", ASCENDING)])

    @staticmethod
    def _rec(d: dict[str, Any]) -> SessionRecord:
        return SessionRecord(
            session_id=d["_id"], key_id=d["key_id"], params=_params(d["params"]), created_at=d["created_at"],
            expires_at=d["expires_at"], version=d["version"], state=json.loads(d["state"]),
            reference=bytes(d["reference"]) if d.get("reference") is not None else None,
            verify_image=d.get("verify_image"),
        )

    def create(self, rec: SessionRecord) -> None:
        self.sessions.insert_one({
            "_id": rec.session_id, "key_id": rec.key_id, "params": _params_json(rec.params),
            "created_at": rec.created_at, "expires_at": rec.expires_at, "version": rec.version,
            "state": json.dumps(rec.state), "reference": rec.reference, "verify_image": rec.verify_image,
        })

    def get(self, session_id: str) -> SessionRecord | None:
        d = self.sessions.find_one({"_id": session_id})
        return self._rec(d) if d else None

    def update(self, rec: SessionRecord) -> bool:
        res = self.sessions.update_one(
            {"_id": rec.session_id, "version": rec.version},
            {"$set": {"state": json.dumps(rec.state), "reference": rec.reference}, "$inc": {"version": 1}},
        )
        return res.matched_count == 1

    def delete(self, session_id: str) -> bool:
        self.images.delete_many({"session_id": session_id})
        return self.sessions.delete_one({"_id": session_id}).deleted_count == 1

    def list(self, key_id: str, limit: int) -> list[SessionRecord]:
        return [self._rec(d) for d in self.sessions.find({"key_id": key_id}).sort("created_at", -1).limit(limit)]

    def put_image(self, session_id: str, attempt: int, data: bytes, media_type: str, created_at: float,
                  expires_at: float) -> None:
        self.images.replace_one(
            {"_id": f"{session_id}:{attempt}"},
            {"session_id": session_id, "attempt": attempt, "media_type": media_type, "created_at": created_at,
             "expires_at": expires_at, "data": data},
            upsert=True,
        )

    def get_image(self, session_id: str, attempt: int, now: float) -> tuple[bytes, str] | None:
        d = self.images.find_one({"_id": f"{session_id}:{attempt}", "expires_at": {"$gt": now}})
        return (bytes(d["data"]), d["media_type"]) if d else None

    def record_failure(self, key_id: str, device: str, at: float) -> None:
        self.failures.insert_one({"key_id": key_id, "device": device, "at": at})

    def failures_since(self, key_id: str, device: str, since: float) -> tuple[int, float | None]:
        q = {"key_id": key_id, "device": device, "at": {"$gte": since}}
        n = self.failures.count_documents(q)
        last = next(iter(self.failures.find(q).sort("at", -1).limit(1)), None)
        return n, (last["at"] if last else None)

    def purge(self, now: float, retention_s: float, failure_window_s: float) -> PurgeCounts:
        wiped = self.sessions.update_many(
            {"reference": {"$ne": None}, "expires_at": {"$lte": now}},
            {"$set": {"reference": None}, "$inc": {"version": 1}},
        ).modified_count
        old = [d["_id"] for d in self.sessions.find({"expires_at": {"$lt": now - retention_s}}, {"_id": 1})]
        images = self.images.delete_many({"$or": [{"expires_at": {"$lte": now}}, {"session_id": {"$in": old}}]}).deleted_count
        deleted = self.sessions.delete_many({"_id": {"$in": old}}).deleted_count
        failures = self.failures.delete_many({"at": {"$lt": now - failure_window_s}}).deleted_count
        return PurgeCounts(wiped, deleted, images, failures)

    def token_secret(self) -> bytes:
        self.meta.update_one({"_id": "session_token_secret"},
                             {"$setOnInsert": {"value": secrets.token_urlsafe(48)}}, upsert=True)
        return self.meta.find_one({"_id": "session_token_secret"})["value"].encode("utf-8")


def open_session_store(sqlite_path: str, mongodb_uri: str | None) -> SessionStore:
    return MongoSessionStore(mongodb_uri) if mongodb_uri else SqliteSessionStore(sqlite_path)
