"""Stored detections: FindFace's ``return_detection`` / ``detection_id`` (docs/COMPATIBILITY.md).

A video check asked for ``return_detection`` that ends ``alive`` keeps its best face as a
*detection*: the face's embedding (MobileFaceNet, 128 float32), its box, the embedder version
that made it (embeddings of different versions are not comparable), the owning key and an
expiry (``detection_ttl_s``).  ``/v1/verify`` accepts its id in place of an image.

Privacy: the image is never kept - nothing could read it back, so keeping it would only be a
liability.  The embedding is the document's blob, wiped by the purge at expiry (the periodic one
here and ``liveness sessions purge``); SQLite's secure_delete zeroes the freed pages.

Ownership: an id is 32 url-safe characters (192 random bits) and works only for the key that
made it; another key's id, an expired one and an unknown one all answer the same
``detection_not_found`` (404), so ids cannot be probed.

Caps: a key holds at most ``detection_max_per_key`` unexpired detections (429
``detection_limit``) and all keys together ``detection_max_total`` (503
``too_many_detections``), so no key fills the store; the check and the insert are one SQLite
write transaction (MongoDB: best effort, liveness.storage.documents).
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from liveness.clock import Clock, wall
from liveness.errors import DETECTION_LIMIT, DETECTION_NOT_FOUND, TOO_MANY_DETECTIONS, LivenessError
from liveness.inference.repository import ModelVersion
from liveness.settings import Settings
from liveness.storage.documents import Cap, Document, DocumentStore, MongoDocuments, SqliteDocuments

log = logging.getLogger("liveness.detections")

KIND = "detections"  # the document kind (a MongoDB collection of this name)
ID_BYTES = 24  # -> 32 url-safe characters


@dataclass(frozen=True)
class DetectionRef:
    """A request's pointer to a stored detection (``detection_id1`` / ``detection_id2`` of
    ``/v1/verify``), resolved for the caller's key only."""

    detection_id: str


@dataclass(frozen=True)
class Detection:
    detection_id: str
    key_id: str
    embedding: np.ndarray  # (128,) float32, L2-normalised
    bbox: tuple[int, int, int, int]  # left, top, right, bottom in the frame's pixels
    model: ModelVersion  # the embedder that made ``embedding``
    created_at: float
    expires_at: float
    quality: str = "high"  # quality_for_recognition of the face (high | medium | low) ...
    reasons: tuple[str, ...] = ()  # ... and why it is not high

    def describe(self) -> dict[str, object]:
        """What ``/v1/verify`` says of the face (``FaceTemplate.describe``'s shape, plus the id)."""
        left, top, right, bottom = self.bbox
        return {"detection_id": self.detection_id,
                "face_rectangle": {"top": top, "left": left, "width": right - left, "height": bottom - top},
                "quality_for_recognition": self.quality, "reasons": list(self.reasons)}


def _document(d: Detection) -> Document:
    return Document(
        kind=KIND, id=d.detection_id, owner=d.key_id, created_at=d.created_at, expires_at=d.expires_at,
        body={"bbox": list(d.bbox), "model": {"name": d.model.name, "version": d.model.version, "sha256": d.model.sha256},
              "quality": d.quality, "reasons": list(d.reasons)},
        blob=np.asarray(d.embedding, np.float32).tobytes(),
    )


def _detection(doc: Document) -> Detection:
    m = doc.body["model"]
    return Detection(
        detection_id=doc.id, key_id=doc.owner, embedding=np.frombuffer(doc.blob or b"", np.float32).copy(),
        bbox=tuple(doc.body["bbox"]), model=ModelVersion(m["name"], int(m["version"]), m["sha256"]),  # type: ignore[arg-type]
        created_at=doc.created_at, expires_at=doc.expires_at, quality=doc.body.get("quality", "high"),
        reasons=tuple(doc.body.get("reasons", ())),
    )


def _not_found() -> LivenessError:
    return LivenessError(DETECTION_NOT_FOUND, "No such detection for this API key (unknown or expired).")


class DetectionStore:
    """Detections as documents of any ``DocumentStore``; synchronous (callers use a thread)."""

    def __init__(self, docs: DocumentStore, settings: Settings, *, clock: Clock = wall) -> None:
        self.docs = docs
        self.ttl_s = settings.detection_ttl_s
        self.max_per_key = settings.detection_max_per_key
        self.max_total = settings.detection_max_total
        self.purge_every_s = settings.session_purge_interval_s
        self.clock = clock
        self._last_purge = -math.inf

    def _caps(self, now: float) -> tuple[Cap, Cap]:
        return Cap(self.max_per_key, None, now, per_owner=True), Cap(self.max_total, None, now)

    def _refuse(self, cap: Cap, per_key: Cap) -> LivenessError:
        if cap is per_key:
            return LivenessError(DETECTION_LIMIT, f"This API key already holds {self.max_per_key} unexpired detections "
                                 f"(detection_max_per_key); each expires {self.ttl_s:g} s after it was made.",
                                 {"limit": self.max_per_key})
        return LivenessError(TOO_MANY_DETECTIONS, "The server holds its maximum of stored detections; retry later.",
                             {"retry_after": 1})

    def check_room(self, key_id: str) -> None:
        """Raise now what ``put`` would (a cap reached), before a request does any work."""
        now = self.clock()
        per_key, total = self._caps(now)
        probe = Document(kind=KIND, id="", owner=key_id, created_at=now, expires_at=now)
        for cap in (per_key, total):
            if self.docs.count(KIND, cap.match(probe)) >= cap.limit:
                raise self._refuse(cap, per_key)

    def put(self, key_id: str, embedding: np.ndarray, bbox: tuple[int, int, int, int], model: ModelVersion,
            quality: str = "high", reasons: tuple[str, ...] = ()) -> Detection:
        """Store one detection for ``key_id``; raises DETECTION_LIMIT / TOO_MANY_DETECTIONS."""
        now = self.clock()
        self.maybe_purge(now)
        d = Detection(secrets.token_urlsafe(ID_BYTES), key_id, np.asarray(embedding, np.float32), bbox, model,
                      now, now + self.ttl_s, quality, tuple(reasons))
        per_key, total = self._caps(now)
        reached = self.docs.insert_capped(_document(d), (per_key, total))
        if reached is not None:
            raise self._refuse(reached, per_key)
        return d

    def get(self, key_id: str, detection_id: Any) -> Detection:
        """The caller's unexpired detection; DETECTION_NOT_FOUND for any other id."""
        if not isinstance(detection_id, str) or not detection_id or len(detection_id) > 128:
            raise _not_found()
        self.maybe_purge(self.clock())
        doc = self.docs.get(KIND, detection_id)
        if doc is None or doc.blob is None or doc.expires_at <= self.clock() or not secrets.compare_digest(doc.owner, key_id):
            raise _not_found()
        return _detection(doc)

    def purge(self, now: float | None = None) -> int:
        """Delete the detections expired at ``now`` (their embeddings with them); -> how many."""
        now = self.clock() if now is None else now
        return len(self.docs.purge(KIND, math.nextafter(now, math.inf)))  # purge drops expires_at < t

    def maybe_purge(self, now: float) -> None:
        """The periodic purge, run as detections are made and read (every ``session_purge_interval_s``)."""
        if now - self._last_purge < self.purge_every_s:
            return
        self._last_purge = now
        try:
            n = self.purge(now)
            if n:
                log.info("detection purge: %d expired", n)
        except Exception:
            log.warning("detection purge failed", exc_info=True)

    def close(self) -> None:
        self.docs.close()


def open_detection_store(settings: Settings, clock: Clock = wall) -> DetectionStore:
    """In the service's SQLite file, or MongoDB when ``mongodb_uri`` is set."""
    docs: DocumentStore = MongoDocuments(settings.mongodb_uri) if settings.mongodb_uri else SqliteDocuments(settings.db_path)
    return DetectionStore(docs, settings, clock=clock)
