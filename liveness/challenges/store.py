"""Where challenge sessions live, so any worker serves any frame and a restart loses nothing.

SQLite (the service's db file, table ``challenge_sessions``) by default, MongoDB (collection
``challenge_sessions``) when ``mongodb_uri`` is set.  A row holds the session's JSON state
(``liveness.challenges.steps``), its status, an optimistic-concurrency ``version`` (every update
is a compare-and-set on it), the final result once completed, and - only when
``challenge_return_frame`` is on - the best frame as base64 JPEG.  Frames are never stored
otherwise.  Times are epoch seconds from the server clock.
"""

from __future__ import annotations

import json
import os
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

from liveness.challenges.steps import ACTIVE, COMPLETED, FAILED, STEPS_DONE
from liveness.errors import TOO_MANY_SESSIONS, LivenessError
from liveness.storage.sqlite import SqliteFile

LIVE_STATUSES = (ACTIVE, STEPS_DONE)


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    key_id: str
    created_at: float
    expires_at: float
    status: str
    version: int
    state: dict[str, Any]
    result: dict[str, Any] | None = None
    best_frame: str | None = None  # base64 JPEG, only with challenge_return_frame

    def with_state(self, state: dict[str, Any], **changes: Any) -> "SessionRow":
        return replace(self, state=state, status=state["status"], **changes)


def too_many(limit: int) -> LivenessError:
    return LivenessError(
        TOO_MANY_SESSIONS, f"Too many active challenge sessions (limit {limit}); try again shortly.", {"retry_after": 5}
    )


class SessionStore(ABC):
    @abstractmethod
    def create(self, row: SessionRow, max_active: int, now: float) -> None:
        """Insert; raise TOO_MANY_SESSIONS when ``max_active`` unexpired live sessions exist."""

    @abstractmethod
    def get(self, session_id: str) -> SessionRow | None: ...

    @abstractmethod
    def update(self, row: SessionRow) -> bool:
        """Write ``row`` if the stored version is still ``row.version`` (then version + 1)."""

    @abstractmethod
    def delete(self, session_id: str) -> None: ...

    @abstractmethod
    def purge(self, before: float) -> int:
        """Delete sessions that expired before ``before``; -> how many."""

    @abstractmethod
    def counts(self, now: float) -> dict[str, int]: ...

    @abstractmethod
    def token_secret(self) -> bytes:
        """The result-token secret used when neither jwt_secret nor a key store gives one."""

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE challenge_sessions (
    session_id TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    result     TEXT,
    best_frame TEXT
);
CREATE INDEX challenge_sessions_expiry ON challenge_sessions (expires_at);
CREATE INDEX challenge_sessions_status ON challenge_sessions (status, expires_at)
"""

_COLS = "session_id, key_id, created_at, expires_at, status, version, state, result, best_frame"


def _row(r: tuple) -> SessionRow:
    return SessionRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]) if r[7] else None, r[8])


class SqliteSessionStore(SqliteFile, SessionStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._migrate_schema("challenges", 1, _SCHEMA)

    def create(self, row: SessionRow, max_active: int, now: float) -> None:
        with self._write() as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM challenge_sessions WHERE status IN (?, ?) AND expires_at > ?", (*LIVE_STATUSES, now)
            ).fetchone()
            if n >= max_active:
                raise too_many(max_active)
            conn.execute(
                f"INSERT INTO challenge_sessions ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.session_id, row.key_id, row.created_at, row.expires_at, row.status, row.version,
                 json.dumps(row.state), json.dumps(row.result) if row.result else None, row.best_frame),
            )

    def get(self, session_id: str) -> SessionRow | None:
        with self._read() as conn:
            r = conn.execute(f"SELECT {_COLS} FROM challenge_sessions WHERE session_id = ?", (session_id,)).fetchone()
        return _row(r) if r else None

    def update(self, row: SessionRow) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE challenge_sessions SET status = ?, version = version + 1, state = ?, result = ?, best_frame = ? "
                "WHERE session_id = ? AND version = ?",
                (row.status, json.dumps(row.state), json.dumps(row.result) if row.result else None, row.best_frame,
                 row.session_id, row.version),
            )
            return cur.rowcount == 1

    def delete(self, session_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM challenge_sessions WHERE session_id = ?", (session_id,))

    def purge(self, before: float) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM challenge_sessions WHERE expires_at < ?", (before,)).rowcount

    def counts(self, now: float) -> dict[str, int]:
        with self._read() as conn:
            active = conn.execute(
                "SELECT COUNT(*) FROM challenge_sessions WHERE status IN (?, ?) AND expires_at > ?", (*LIVE_STATUSES, now)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT json_extract(result, '$.verdict'), COUNT(*) FROM challenge_sessions WHERE status = ? GROUP BY 1",
                (COMPLETED,),
            ).fetchall()
            failed_open = conn.execute(
                "SELECT COUNT(*) FROM challenge_sessions WHERE status = ?", (FAILED,)
            ).fetchone()[0]
            expired = conn.execute(
                "SELECT COUNT(*) FROM challenge_sessions WHERE status IN (?, ?) AND expires_at <= ?", (*LIVE_STATUSES, now)
            ).fetchone()[0]
        by = {v: n for v, n in rows}
        return {"active": active, "passed": by.get("passed", 0), "failed": by.get("failed", 0) + failed_open,
                "expired": expired}

    def token_secret(self) -> bytes:
        return self._stored_secret("challenge_token_secret")


class MongoSessionStore(SessionStore):
    def __init__(self, client_or_uri: Any, db_name: str = "liveness") -> None:
        from pymongo import ASCENDING, MongoClient

        self.client = MongoClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
        db = self.client[db_name]
        self.sessions, self.meta = db["challenge_sessions"], db["challenge_meta"]
        self.sessions.create_index([("expires_at", ASCENDING)])
        self.sessions.create_index([("status", ASCENDING), ("expires_at", ASCENDING)])

    @staticmethod
    def _doc(row: SessionRow) -> dict[str, Any]:
        return {"_id": row.session_id, "key_id": row.key_id, "created_at": row.created_at, "expires_at": row.expires_at,
                "status": row.status, "version": row.version, "state": json.dumps(row.state),
                "result": row.result, "best_frame": row.best_frame}

    def create(self, row: SessionRow, max_active: int, now: float) -> None:
        # count-then-insert is not atomic across processes: the cap can overshoot by the number
        # of concurrent starts (documented); SQLite's check is exact.
        if self.sessions.count_documents({"status": {"$in": list(LIVE_STATUSES)}, "expires_at": {"$gt": now}}) >= max_active:
            raise too_many(max_active)
        self.sessions.insert_one(self._doc(row))

    def get(self, session_id: str) -> SessionRow | None:
        d = self.sessions.find_one({"_id": session_id})
        if d is None:
            return None
        return SessionRow(d["_id"], d["key_id"], d["created_at"], d["expires_at"], d["status"], d["version"],
                          json.loads(d["state"]), d.get("result"), d.get("best_frame"))

    def update(self, row: SessionRow) -> bool:
        res = self.sessions.update_one(
            {"_id": row.session_id, "version": row.version},
            {"$set": {"status": row.status, "state": json.dumps(row.state), "result": row.result,
                      "best_frame": row.best_frame}, "$inc": {"version": 1}},
        )
        return res.matched_count == 1

    def delete(self, session_id: str) -> None:
        self.sessions.delete_one({"_id": session_id})

    def purge(self, before: float) -> int:
        return self.sessions.delete_many({"expires_at": {"$lt": before}}).deleted_count

    def counts(self, now: float) -> dict[str, int]:
        live = {"$in": list(LIVE_STATUSES)}
        return {
            "active": self.sessions.count_documents({"status": live, "expires_at": {"$gt": now}}),
            "passed": self.sessions.count_documents({"status": COMPLETED, "result.verdict": "passed"}),
            "failed": self.sessions.count_documents({"status": COMPLETED, "result.verdict": "failed"})
            + self.sessions.count_documents({"status": FAILED}),
            "expired": self.sessions.count_documents({"status": live, "expires_at": {"$lte": now}}),
        }

    def token_secret(self) -> bytes:
        self.meta.update_one({"_id": "challenge_token_secret"},
                             {"$setOnInsert": {"value": secrets.token_urlsafe(48)}}, upsert=True)
        return self.meta.find_one({"_id": "challenge_token_secret"})["value"].encode("utf-8")


def open_session_store(sqlite_path: str, mongodb_uri: str | None) -> SessionStore:
    return MongoSessionStore(mongodb_uri) if mongodb_uri else SqliteSessionStore(sqlite_path)
