"""Where sessions live, so any worker serves any call and a restart loses nothing.

Documents (``liveness.storage.documents``) in the service's SQLite file by default, in MongoDB
when ``mongodb_uri`` is set.  Three kinds (in MongoDB, three collections of these names):

* ``liveness_sessions``: owned by the API key; parameters, attempts (JSON), the verify reference
  embedding (the blob: wiped at expiry and on delete) and an optimistic-concurrency ``version``
  (updates compare-and-set);
* ``liveness_session_images``: owned by their session; kept only for sessions created with
  ``enable_session_image``, each with its own expiry (``session_image_retention_s``);
* ``liveness_device_failures``: failed attempts per (key, device_correlation_id), for throttling.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

from liveness.sessions.model import SessionParams, SessionRecord
from liveness.storage.documents import Document, DocumentStore, Match, MongoDocuments, SqliteDocuments


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


SESSIONS, IMAGES, FAILURES = "liveness_sessions", "liveness_session_images", "liveness_device_failures"
_SECRET = "session_token_secret"


def _document(rec: SessionRecord) -> Document:
    return Document(
        kind=SESSIONS, id=rec.session_id, owner=rec.key_id, created_at=rec.created_at, expires_at=rec.expires_at,
        version=rec.version, blob=rec.reference,
        body={"params": rec.params.as_dict(), "state": rec.state, "verify_image": rec.verify_image},
    )


def _record(doc: Document) -> SessionRecord:
    b = doc.body
    return SessionRecord(session_id=doc.id, key_id=doc.owner, params=SessionParams(**b["params"]),
                         created_at=doc.created_at, expires_at=doc.expires_at, version=doc.version, state=b["state"],
                         reference=doc.blob, verify_image=b.get("verify_image"))


def _image_id(session_id: str, attempt: int) -> str:
    return f"{session_id}:{attempt}"


def _image(session_id: str, attempt: int, data: bytes, media_type: str, created_at: float,
           expires_at: float) -> Document:
    return Document(kind=IMAGES, id=_image_id(session_id, attempt), owner=session_id, created_at=created_at,
                    expires_at=expires_at, body={"attempt": attempt, "media_type": media_type}, blob=data)


def _device(key_id: str, device: str) -> str:
    # JSON, not a separator: a device id is the app server's free text and may contain any one.
    return json.dumps([key_id, device])


def _failure(key_id: str, device: str, at: float, failure_id: str | None = None) -> Document:
    # A failure only matters within the window the purge is handed, so its expiry is its own time:
    # purge(now - window) then drops exactly the failures older than the window.
    return Document(kind=FAILURES, id=failure_id or uuid.uuid4().hex, owner=_device(key_id, device), created_at=at,
                    expires_at=at)


def _just_after(t: float) -> float:
    # purge() drops expires_at < t; images go at their expiry itself (get_image refuses them then).
    return math.nextafter(t, math.inf)


class DocumentSessionStore(SessionStore):
    """Sessions, their images and device failures as documents of any DocumentStore."""

    def __init__(self, docs: DocumentStore) -> None:
        self.docs = docs

    def create(self, rec: SessionRecord) -> None:
        self.docs.insert(_document(rec))

    def get(self, session_id: str) -> SessionRecord | None:
        doc = self.docs.get(SESSIONS, session_id)
        return _record(doc) if doc else None

    def update(self, rec: SessionRecord) -> bool:
        return self.docs.update(_document(rec))

    def delete(self, session_id: str) -> bool:
        self.docs.delete_owned(IMAGES, [session_id])  # first: no image outlives its session
        return self.docs.delete(SESSIONS, session_id)

    def list(self, key_id: str, limit: int) -> list[SessionRecord]:
        return [_record(d) for d in self.docs.list_owned(SESSIONS, key_id, limit)]

    def put_image(self, session_id: str, attempt: int, data: bytes, media_type: str, created_at: float,
                  expires_at: float) -> None:
        self.docs.upsert(_image(session_id, attempt, data, media_type, created_at, expires_at))

    def get_image(self, session_id: str, attempt: int, now: float) -> tuple[bytes, str] | None:
        doc = self.docs.get(IMAGES, _image_id(session_id, attempt))
        if doc is None or doc.expires_at <= now or doc.blob is None:
            return None
        return doc.blob, doc.body["media_type"]

    def record_failure(self, key_id: str, device: str, at: float) -> None:
        self.docs.insert(_failure(key_id, device, at))

    def failures_since(self, key_id: str, device: str, since: float) -> tuple[int, float | None]:
        owner = _device(key_id, device)
        n = self.docs.count(FAILURES, Match(owner=owner, created_since=since))
        if n == 0:
            return 0, None
        # with one failure at or after ``since``, the newest of all is the newest of those
        return n, self.docs.list_owned(FAILURES, owner, 1)[0].created_at

    def purge(self, now: float, retention_s: float, failure_window_s: float) -> PurgeCounts:
        wiped = self.docs.clear_blobs(SESSIONS, now)
        gone = self.docs.purge(SESSIONS, now - retention_s)
        images = self.docs.delete_owned(IMAGES, gone) + len(self.docs.purge(IMAGES, _just_after(now)))
        failures = len(self.docs.purge(FAILURES, now - failure_window_s))
        return PurgeCounts(wiped, len(gone), images, failures)

    def token_secret(self) -> bytes:
        return self.docs.secret(_SECRET)

    def close(self) -> None:
        self.docs.close()


# Rows written before the document store (sessions schema v1: three tables of these names).

def _session_v1(session_id: str, r: Mapping[str, Any], params: dict[str, Any], state: dict[str, Any],
                verify_image: dict[str, Any] | None) -> Document:
    reference = bytes(r["reference"]) if r.get("reference") is not None else None
    return _document(SessionRecord(
        session_id=session_id, key_id=r["key_id"], params=SessionParams(**params), created_at=r["created_at"],
        expires_at=r["expires_at"], version=r["version"], state=state, reference=reference, verify_image=verify_image,
    ))


def _session_from_sqlite_v1(r: Mapping[str, Any]) -> Document:
    return _session_v1(r["session_id"], r, json.loads(r["params"]), json.loads(r["state"]),
                       json.loads(r["verify_image"]) if r["verify_image"] else None)


def _session_from_mongo_v1(d: Mapping[str, Any]) -> Document:
    return _session_v1(d["_id"], d, json.loads(d["params"]), json.loads(d["state"]), d.get("verify_image"))


def _image_from_sqlite_v1(r: Mapping[str, Any]) -> Document:
    return _image(r["session_id"], r["attempt"], bytes(r["data"]), r["media_type"], r["created_at"], r["expires_at"])


def _image_from_mongo_v1(d: Mapping[str, Any]) -> Document:
    return _image(d["session_id"], d["attempt"], bytes(d["data"]), d["media_type"], d["created_at"], d["expires_at"])


def _failure_from_sqlite_v1(r: Mapping[str, Any]) -> Document:
    return _failure(r["key_id"], r["device"], r["at"])


def _failure_from_mongo_v1(d: Mapping[str, Any]) -> Document:
    return _failure(d["key_id"], d["device"], d["at"], str(d["_id"]))


class SqliteSessionStore(DocumentSessionStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        docs = SqliteDocuments(path)
        docs.adopt_tables("sessions", 2, {SESSIONS: _session_from_sqlite_v1, IMAGES: _image_from_sqlite_v1,
                                          FAILURES: _failure_from_sqlite_v1})
        super().__init__(docs)


class MongoSessionStore(DocumentSessionStore):
    def __init__(self, client_or_uri: Any, db_name: str = "liveness") -> None:
        docs = MongoDocuments(client_or_uri, db_name)
        docs.adopt(SESSIONS, _session_from_mongo_v1)
        docs.adopt(IMAGES, _image_from_mongo_v1)
        docs.adopt(FAILURES, _failure_from_mongo_v1)
        docs.adopt_secret(_SECRET, "liveness_sessions_meta")
        super().__init__(docs)


def open_session_store(sqlite_path: str, mongodb_uri: str | None) -> SessionStore:
    return MongoSessionStore(mongodb_uri) if mongodb_uri else SqliteSessionStore(sqlite_path)
