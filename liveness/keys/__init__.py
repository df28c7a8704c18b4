"""API-key ("hash_id") store with request quotas.  No web-framework imports here."""

from __future__ import annotations

from .base import (
    DEFAULT_LEASE_S,
    DEFAULT_PERIOD,
    PERIODS,
    Clock,
    Credential,
    IssuedKey,
    KeyInfo,
    KeyLookupError,
    KeyStore,
    Period,
    Prepaid,
    Principal,
    Reservation,
    RouteKey,
    Usage,
    bucket_for,
    hash_key,
)
from .sqlite_store import SqliteKeyStore

__all__ = [
    "DEFAULT_PERIOD", "PERIODS", "Clock", "Credential", "IssuedKey", "KeyInfo", "KeyLookupError",
    "KeyStore", "Period", "Prepaid", "Principal", "Reservation", "RouteKey", "Usage", "bucket_for", "hash_key", "SqliteKeyStore",
    "open_key_store",
]


def open_key_store(
    sqlite_path: str, mongodb_uri: str | None, *, clock: Clock | None = None, lease_s: float = DEFAULT_LEASE_S
) -> KeyStore:
    """MongoDB when ``mongodb_uri`` is non-empty, otherwise the SQLite file at ``sqlite_path``."""
    if mongodb_uri:
        from .mongo_store import MongoKeyStore  # pymongo imported only when Mongo is used

        return MongoKeyStore(mongodb_uri, clock=clock, lease_s=lease_s)
    return SqliteKeyStore(sqlite_path, clock=clock, lease_s=lease_s)
