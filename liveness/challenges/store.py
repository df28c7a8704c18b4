"""Where challenge sessions live, so any worker serves any frame and a restart loses nothing.

Documents of kind ``challenge_sessions`` (``liveness.storage.documents``): in the service's SQLite
file by default, in MongoDB (collection ``challenge_sessions``) when ``mongodb_uri`` is set.  A
row holds the session's JSON state (``liveness.challenges.steps``), its status, an
optimistic-concurrency ``version`` (every update is a compare-and-set on it), the final result
once completed, and - only when ``challenge_return_frame`` is on - the best frame as base64 JPEG.
Frames are never stored otherwise.  Times are epoch seconds from the server clock.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from liveness.challenges.steps import ACTIVE, COMPLETED, FAILED, STEPS_DONE
from liveness.errors import KEY_SESSION_LIMIT, TOO_MANY_SESSIONS, LivenessError
from liveness.storage.documents import Cap, Document, DocumentStore, Group, MongoDocuments, SqliteDocuments

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


@dataclass(frozen=True)
class SessionLimits:
    """How many challenge sessions may be live at once (all keys / one key) and how many one key may
    start in any ``window_s``."""

    total: int
    per_key: int | None = None
    per_key_in_window: int | None = None
    window_s: float = 60.0

    def caps(self, now: float) -> list[Cap]:
        caps = [Cap(self.total, LIVE_STATUSES, now)]
        if self.per_key is not None:
            caps.append(Cap(self.per_key, LIVE_STATUSES, now, per_owner=True))
        if self.per_key_in_window is not None:
            caps.append(Cap(self.per_key_in_window, None, now, per_owner=True, window_s=self.window_s))
        return caps

    def refusal(self, cap: Cap) -> LivenessError:
        if not cap.per_owner:
            return too_many(cap.limit)
        if cap.window_s is None:
            what, retry = f"{cap.limit} active challenge sessions", 5
        else:
            what, retry = f"{cap.limit} challenge sessions started in {cap.window_s:g} s", int(cap.window_s)
        return LivenessError(
            KEY_SESSION_LIMIT, f"This API key already has {what}; complete or let some expire first.",
            {"limit": cap.limit, "retry_after": retry, **({"window_s": cap.window_s} if cap.window_s else {})},
        )


class SessionStore(ABC):
    @abstractmethod
    def create(self, row: SessionRow, limits: SessionLimits | int, now: float) -> None:
        """Insert; raise TOO_MANY_SESSIONS when ``limits.total`` unexpired live sessions exist,
        KEY_SESSION_LIMIT when the row's key is over its own limits (an int: the total only)."""

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
    def counts(self, now: float, key_id: str | None = None) -> dict[str, int]:
        """Sessions per state, of ``key_id`` only if given."""

    @abstractmethod
    def token_secret(self) -> bytes:
        """The result-token secret used when neither jwt_secret nor a key store gives one."""

    def close(self) -> None:
        pass


KIND = "challenge_sessions"
_SECRET = "challenge_token_secret"


def _document(row: SessionRow) -> Document:
    return Document(
        kind=KIND, id=row.session_id, owner=row.key_id, created_at=row.created_at, expires_at=row.expires_at,
        status=row.status, version=row.version, outcome=(row.result or {}).get("verdict"),
        body={"state": row.state, "result": row.result, "best_frame": row.best_frame},
    )


def _row(doc: Document) -> SessionRow:
    b = doc.body
    return SessionRow(doc.id, doc.owner, doc.created_at, doc.expires_at, doc.status, doc.version, b["state"],
                      b.get("result"), b.get("best_frame"))


def _counts(tally: Mapping[Group, int]) -> dict[str, int]:
    def total(pred: Callable[[Group], bool]) -> int:
        return sum(n for g, n in tally.items() if pred(g))

    def live(g: Group) -> bool:
        return g.status in LIVE_STATUSES

    return {
        "active": total(lambda g: live(g) and not g.expired),
        "passed": total(lambda g: g.status == COMPLETED and g.outcome == "passed"),
        # a session that failed a step never got a verdict, yet it did fail
        "failed": total(lambda g: (g.status == COMPLETED and g.outcome == "failed") or g.status == FAILED),
        "expired": total(lambda g: live(g) and g.expired),
    }


class DocumentSessionStore(SessionStore):
    """Challenge sessions as documents of any DocumentStore."""

    def __init__(self, docs: DocumentStore) -> None:
        self.docs = docs

    def create(self, row: SessionRow, limits: SessionLimits | int, now: float) -> None:
        if isinstance(limits, int):
            limits = SessionLimits(limits)
        hit = self.docs.insert_capped(_document(row), limits.caps(now))
        if hit is not None:
            raise limits.refusal(hit)

    def get(self, session_id: str) -> SessionRow | None:
        doc = self.docs.get(KIND, session_id)
        return _row(doc) if doc else None

    def update(self, row: SessionRow) -> bool:
        return self.docs.update(_document(row))

    def delete(self, session_id: str) -> None:
        self.docs.delete(KIND, session_id)

    def purge(self, before: float) -> int:
        return len(self.docs.purge(KIND, before))

    def counts(self, now: float, key_id: str | None = None) -> dict[str, int]:
        return _counts(self.docs.tally(KIND, now, owner=key_id))

    def token_secret(self) -> bytes:
        return self.docs.secret(_SECRET)

    def close(self) -> None:
        self.docs.close()


# Rows written before the document store (challenges schema v1: table ``challenge_sessions``).

def _from_sqlite_v1(r: Mapping[str, Any]) -> Document:
    return _document(SessionRow(r["session_id"], r["key_id"], r["created_at"], r["expires_at"], r["status"],
                                r["version"], json.loads(r["state"]), json.loads(r["result"]) if r["result"] else None,
                                r["best_frame"]))


def _from_mongo_v1(d: Mapping[str, Any]) -> Document:
    return _document(SessionRow(d["_id"], d["key_id"], d["created_at"], d["expires_at"], d["status"], d["version"],
                                json.loads(d["state"]), d.get("result"), d.get("best_frame")))


class SqliteSessionStore(DocumentSessionStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        docs = SqliteDocuments(path)
        docs.adopt_tables("challenges", 2, {"challenge_sessions": _from_sqlite_v1})
        super().__init__(docs)


class MongoSessionStore(DocumentSessionStore):
    def __init__(self, client_or_uri: Any, db_name: str = "liveness") -> None:
        docs = MongoDocuments(client_or_uri, db_name)
        docs.adopt(KIND, _from_mongo_v1)
        docs.adopt_secret(_SECRET, "challenge_meta")
        super().__init__(docs)


def open_session_store(sqlite_path: str, mongodb_uri: str | None) -> SessionStore:
    return MongoSessionStore(mongodb_uri) if mongodb_uri else SqliteSessionStore(sqlite_path)
