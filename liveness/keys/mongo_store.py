"""MongoDB-backed ``KeyStore``.

Atomicity comes from MongoDB's single-document guarantees: the usage document for
``(key_id, bucket)`` is created with an upsert (``$setOnInsert``), then charged with one
``find_one_and_update({"used": {"$lt": limit}}, {"$inc": {"used": 1}})``.  No client-side
read-modify-write is involved, so any number of threads/processes/hosts can share the store.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, ContextManager

from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from .bws import BwsClient
from .base import (
    DEFAULT_LEASE_S, Clock, KeyInfo, KeyStore, Reservation, Usage,
    as_utc, bucket_for, generate_token_secret, new_lease_id, pick_by_ref, quota_exceeded_error, utcnow,
)

SCHEMA_VERSION = 2  # v2: leases (no data change: the collection is created on use)
_KEY_PROJECTION = {
    "_id": 0, "key_id": 1, "name": 1, "prefix": 1, "limit": 1, "period": 1,
    "created_at": 1, "revoked_at": 1,
}


def _aware(value: datetime | None) -> datetime | None:
    # pymongo returns naive UTC datetimes unless the client was built with tz_aware=True.
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _to_ms(value: datetime) -> datetime:
    """BSON dates have millisecond precision; truncate up front so returned values match."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _doc_to_info(doc: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        key_id=doc["key_id"],
        name=doc["name"],
        prefix=doc["prefix"],
        limit=int(doc["limit"]),
        period=doc["period"],
        created_at=_aware(doc["created_at"]),  # type: ignore[arg-type]
        revoked_at=_aware(doc.get("revoked_at")),
    )


class MongoKeyStore(KeyStore):
    """``client_or_uri``: a ``MongoClient`` (or mongomock client) or a ``mongodb://`` URI.

    ``serialize=True`` additionally runs every operation of this object under a process-local
    lock.  Real MongoDB never needs it (and it would only cost throughput); it exists for
    in-process fakes such as mongomock, which is not thread-safe: its ``find_one_and_update``
    is a find followed by a separate update, and its unique-index check races too.
    """

    def __init__(
        self,
        client_or_uri: Any,
        db_name: str = "liveness",
        *,
        clock: Clock | None = None,
        serialize: bool = False,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self._owns_client = isinstance(client_or_uri, str)
        self.client = MongoClient(client_or_uri, tz_aware=True) if self._owns_client else client_or_uri
        self.db = self.client[db_name]
        self.keys = self.db["api_keys"]
        self.usage_docs = self.db["usage"]
        self.meta = self.db["meta"]
        self.leases = self.db["leases"]
        self.bws = self.db["bws_clients"]  # BWS 3 client credentials (liveness.keys.bws): keys stored as is
        self.clock = clock or utcnow
        self.lease_s = lease_s
        self._lock: threading.RLock | None = threading.RLock() if serialize else None
        self._migrate()

    def _guard(self) -> ContextManager[Any]:
        return self._lock if self._lock is not None else nullcontext()

    def _migrate(self) -> None:
        try:
            self.meta.update_one(
                {"_id": "schema"}, {"$setOnInsert": {"version": SCHEMA_VERSION}}, upsert=True
            )
        except DuplicateKeyError:  # another process created it concurrently
            pass
        version = int(self.meta.find_one({"_id": "schema"})["version"])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"key-store schema v{version}; this code knows v{SCHEMA_VERSION}")
        self.keys.create_index([("key_hash", ASCENDING)], unique=True, name="key_hash_unique")
        self.keys.create_index([("key_id", ASCENDING)], unique=True, name="key_id_unique")
        self.keys.create_index([("name", ASCENDING)], name="name")
        self.usage_docs.create_index(
            [("key_id", ASCENDING), ("bucket", ASCENDING)], unique=True, name="key_bucket_unique"
        )
        self.leases.create_index([("expires_at", ASCENDING)], name="lease_expiry")

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # ------------------------------------------------------------------ lookups

    def _by_id(self, key_id: str) -> KeyInfo | None:
        doc = self.keys.find_one({"key_id": key_id}, dict(_KEY_PROJECTION))
        return _doc_to_info(doc) if doc else None

    def _resolve(self, ref: str) -> KeyInfo:
        by_id = self.keys.find_one({"key_id": ref}, dict(_KEY_PROJECTION))
        by_name = [_doc_to_info(d) for d in self.keys.find({"name": ref}, dict(_KEY_PROJECTION))]
        return pick_by_ref(ref, _doc_to_info(by_id) if by_id else None, by_name)

    # ------------------------------------------------------------------ KeyStore API

    def _stored_time(self, t: datetime) -> datetime:
        return _to_ms(t)

    def _insert_key(self, info: KeyInfo, key_hash: str) -> bool:
        try:
            with self._guard():
                self.keys.insert_one({
                    "key_id": info.key_id, "name": info.name, "prefix": info.prefix, "key_hash": key_hash,
                    "limit": info.limit, "period": info.period, "created_at": info.created_at, "revoked_at": None,
                })
        except DuplicateKeyError:
            return False
        return True

    def _find_by_hash(self, key_hash: str) -> KeyInfo | None:
        with self._guard():
            doc = self.keys.find_one({"key_hash": key_hash}, dict(_KEY_PROJECTION))
        return _doc_to_info(doc) if doc else None

    def _find_by_id(self, key_id: str) -> KeyInfo | None:
        with self._guard():
            return self._by_id(key_id)

    def reserve(self, raw_key: str | None) -> Reservation:
        with self._guard():
            return self._reserve(self.authenticate(raw_key))

    def reserve_id(self, key_id: str) -> Reservation:
        with self._guard():
            return self._reserve(self.authenticate_id(key_id))

    def _reserve(self, info: KeyInfo) -> Reservation:
        now = as_utc(self.clock())
        bucket = bucket_for(info.period, now)
        where = {"key_id": info.key_id, "bucket": bucket}
        try:
            self.usage_docs.update_one(
                where,
                {"$setOnInsert": {"used": 0, "succeeded": 0, "refunded": 0, "created_at": now}},
                upsert=True,
            )
        except DuplicateKeyError:  # a concurrent upsert won the race; the doc exists now
            pass
        doc = self.usage_docs.find_one_and_update(
            {**where, "used": {"$lt": info.limit}},
            {"$inc": {"used": 1}},
            projection={"used": 1},  # keep _id: mongomock re-finds by it
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise quota_exceeded_error(info, bucket, now)
        # Not one transaction with the increment (a replica set would be needed): a crash in
        # between leaves that one unit charged, as every unit was before leases.
        lease_id, expires = new_lease_id(), _to_ms(now + timedelta(seconds=self.lease_s))
        self.leases.insert_one({"_id": lease_id, "key_id": info.key_id, "bucket": bucket, "expires_at": expires})
        return Reservation(
            key_id=info.key_id, period=info.period, bucket=bucket, used=int(doc["used"]),
            limit=info.limit, reserved_at=now, lease_id=lease_id, lease_expires_at=expires,
        )

    def token_secret(self) -> bytes:
        with self._guard():  # the first caller (CLI or worker) creates it; all read it
            try:
                self.meta.update_one(
                    {"_id": "jwt_secret"}, {"$setOnInsert": {"value": generate_token_secret()}}, upsert=True
                )
            except DuplicateKeyError:  # another process created it concurrently
                pass
            return str(self.meta.find_one({"_id": "jwt_secret"})["value"]).encode("utf-8")

    def _end_lease(self, reservation: Reservation) -> bool:
        """Remove the reservation's lease; False when the sweeper reclaimed it already."""
        return not reservation.lease_id or self.leases.delete_one({"_id": reservation.lease_id}).deleted_count == 1

    def commit(self, reservation: Reservation) -> None:
        with self._guard():
            # Reclaimed while the request ran: the answer went out, so the unit is charged again.
            inc = {"succeeded": 1} if self._end_lease(reservation) else {"succeeded": 1, "used": 1, "reclaimed": -1}
            self.usage_docs.update_one({"key_id": reservation.key_id, "bucket": reservation.bucket}, {"$inc": inc})

    def refund(self, reservation: Reservation) -> None:
        where = {"key_id": reservation.key_id, "bucket": reservation.bucket}
        with self._guard():
            if not self._end_lease(reservation):
                return
            result = self.usage_docs.update_one(
                {**where, "used": {"$gt": 0}}, {"$inc": {"used": -1, "refunded": 1}}
            )
            if result.matched_count == 0:  # already at 0: count the refund, never go negative
                self.usage_docs.update_one(where, {"$inc": {"refunded": 1}})

    def reclaim_expired(self) -> int:
        now = _to_ms(as_utc(self.clock()))
        n = 0
        with self._guard():
            for lease in list(self.leases.find({"expires_at": {"$lt": now}})):
                if self.leases.delete_one({"_id": lease["_id"]}).deleted_count != 1:
                    continue  # another process reclaimed (or its request settled) first
                where = {"key_id": lease["key_id"], "bucket": lease["bucket"]}
                if self.usage_docs.update_one({**where, "used": {"$gt": 0}},
                                              {"$inc": {"used": -1, "reclaimed": 1}}).matched_count == 0:
                    self.usage_docs.update_one(where, {"$inc": {"reclaimed": 1}})
                n += 1
        return n

    def _insert_bws_client(self, client: BwsClient, key_b64: str) -> None:
        with self._guard():
            self.bws.insert_one({"_id": client.client_id, "key_id": client.key_id, "client_key": key_b64,
                                 "created_at": client.created_at, "revoked_at": None})

    @staticmethod
    def _doc_to_bws(doc: dict[str, Any]) -> tuple[BwsClient, str]:
        return BwsClient(doc["_id"], doc["key_id"], _aware(doc["created_at"]),  # type: ignore[arg-type]
                         _aware(doc.get("revoked_at"))), str(doc["client_key"])

    def _find_bws_client(self, client_id: str) -> tuple[BwsClient, str] | None:
        with self._guard():
            doc = self.bws.find_one({"_id": client_id})
        return self._doc_to_bws(doc) if doc else None

    def _bws_clients(self) -> list[BwsClient]:
        with self._guard():
            docs = list(self.bws.find({}).sort([("created_at", ASCENDING), ("_id", ASCENDING)]))
        return [self._doc_to_bws(d)[0] for d in docs]

    def _revoke_bws_client(self, client_id: str, now: datetime) -> None:
        with self._guard():
            self.bws.update_one({"_id": client_id, "revoked_at": None}, {"$set": {"revoked_at": now}})

    def list_keys(self) -> list[KeyInfo]:
        order = [("created_at", ASCENDING), ("key_id", ASCENDING)]
        with self._guard():
            return [_doc_to_info(d) for d in self.keys.find({}, dict(_KEY_PROJECTION)).sort(order)]

    def get(self, ref: str) -> KeyInfo:
        with self._guard():
            return self._resolve(ref)

    def revoke(self, ref: str) -> KeyInfo:
        with self._guard():
            info = self._resolve(ref)
            if info.revoked:
                return info
            now = _to_ms(as_utc(self.clock()))
            result = self.keys.update_one(
                {"key_id": info.key_id, "revoked_at": None}, {"$set": {"revoked_at": now}}
            )
            if result.modified_count == 0:  # revoked concurrently: report the stored time
                return self._resolve(info.key_id)
        return replace(info, revoked_at=now)

    def usage(self, ref: str) -> Usage:
        with self._guard():
            info = self._resolve(ref)
            bucket = bucket_for(info.period, as_utc(self.clock()))
            doc = self.usage_docs.find_one({"key_id": info.key_id, "bucket": bucket}) or {}
        used = int(doc.get("used", 0))
        return Usage(
            key_id=info.key_id, period=info.period, bucket=bucket, used=used, limit=info.limit,
            remaining=max(0, info.limit - used), succeeded=int(doc.get("succeeded", 0)),
            refunded=int(doc.get("refunded", 0)), reclaimed=int(doc.get("reclaimed", 0)),
        )
