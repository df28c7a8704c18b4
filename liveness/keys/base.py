"""API keys ("hash_id") with request quotas: shared types, helpers and the ``KeyStore`` contract.

Raw keys look like ``lk_<43 url-safe chars>`` and are shown exactly once, by ``create``.  Stores keep
only ``sha256(raw_key)`` (hex) plus an 8-character display prefix; a plain hash is enough because
the keys carry 256 bits of entropy, so there is nothing to brute-force.

Quota accounting is per *bucket*: ``"2026-11-24"`` for daily keys, ``"2026-11"`` for monthly keys
and ``"total"`` for lifetime keys.  ``reserve`` charges one request up front in a single atomic
conditional update; the caller then either ``commit``s (success) or ``refund``s (the request ended
with an error the client is not charged for).  A refund always goes to the bucket the reservation
was made in, even if the period rolled over in between.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, Literal, get_args

from liveness.errors import INVALID_API_KEY, MISSING_API_KEY, QUOTA_EXCEEDED, LivenessError

if TYPE_CHECKING:
    from .bws import BwsClient, IssuedBwsClient

Period = Literal["day", "month", "total"]
PERIODS: tuple[str, ...] = get_args(Period)
DEFAULT_PERIOD: Period = "month"

KEY_PREFIX = "lk_"
DISPLAY_PREFIX_LEN = 8

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- value types


class Revocable:
    """A stored credential that can be revoked (an API key, a BWS client): once set, its
    ``revoked_at`` is never cleared."""

    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class KeyInfo(Revocable):
    """Everything about a key that is safe to show; never the raw key nor its hash."""

    key_id: str
    name: str
    prefix: str
    limit: int
    period: Period
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class IssuedKey:
    """Result of ``KeyStore.create``: the stored record plus the raw key (shown once)."""

    info: KeyInfo
    raw_key: str = field(repr=False)


@dataclass(frozen=True)
class Reservation:
    """One request charged against a key; pass it to ``commit`` or ``refund`` exactly once."""

    key_id: str
    period: Period
    bucket: str
    used: int  # bucket usage right after this reservation (including it)
    limit: int
    reserved_at: datetime
    # The stored lease: a unit neither committed nor refunded by ``lease_expires_at`` (its process
    # died) is given back by ``reclaim_expired``.
    lease_id: str = ""
    lease_expires_at: datetime | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class Usage:
    key_id: str
    period: Period
    bucket: str
    used: int
    limit: int
    remaining: int
    succeeded: int
    refunded: int
    reclaimed: int = 0  # units whose request never settled (a crashed process), given back


# A request is settled well within this (the HTTP traffic timeout is 30 s, a video's own
# deadline less); a lease older than that belongs to a process that died mid-request.
DEFAULT_LEASE_S = 120.0


def new_lease_id() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class Principal:
    """A caller already authenticated by other means (e.g. a verified bearer token): it names
    the key by ``key_id``, never by the raw key.  Stores still refuse a revoked or unknown id."""

    key_id: str


@dataclass(frozen=True)
class Prepaid(Principal):
    """A caller whose work is already paid for: a client holding an app-server session's token
    (``liveness.sessions``), charged once when the session was created.  It is admitted while
    its key is not revoked, even with the quota spent by that very session, and never charged."""

    session_id: str = ""


@dataclass(frozen=True)
class RouteKey:
    """A caller that sent no credential on a route the operator opened to such callers
    (``anonymous_routes``: trusted networks only), charged to the key ``ref`` names (a key_id or a
    key's name).  Resolved by the store on every request, so revoking that key closes the route
    and a key created after start-up is found."""

    ref: str


# What a front end hands the core: a raw API key (HTTP), a ``Principal`` (gRPC token), a
# ``RouteKey`` (an open route), or None.
Credential = str | Principal | RouteKey | None


class KeyLookupError(LookupError):
    """An admin lookup (``revoke``/``usage``) by key_id or name matched no key, or several."""


# --------------------------------------------------------------------------- helpers


def generate_raw_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def generate_token_secret() -> str:
    return secrets.token_urlsafe(48)


def generate_key_id() -> str:
    return secrets.token_hex(6)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def display_prefix(raw_key: str) -> str:
    return raw_key[:DISPLAY_PREFIX_LEN]


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("clock must return a timezone-aware datetime")
    return moment.astimezone(timezone.utc)


def bucket_for(period: str, moment: datetime) -> str:
    moment = as_utc(moment)
    if period == "day":
        return moment.strftime("%Y-%m-%d")
    if period == "month":
        return moment.strftime("%Y-%m")
    if period == "total":
        return "total"
    raise ValueError(f"unknown period {period!r}")


def bucket_resets_at(period: str, moment: datetime) -> datetime | None:
    """Start of the bucket after the one ``moment`` falls in (``None`` for ``total``)."""
    moment = as_utc(moment)
    if period == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if period == "month":
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return (first + timedelta(days=32)).replace(day=1)
    return None


def validate_new_key(name: str, limit: int, period: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("limit must be an integer >= 0")
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")


def invalid_key_error() -> LivenessError:
    return LivenessError(INVALID_API_KEY, "API key is invalid or revoked")


def missing_key_error() -> LivenessError:
    return LivenessError(MISSING_API_KEY, "API key is missing")


def quota_exceeded_error(info: KeyInfo, bucket: str, moment: datetime) -> LivenessError:
    details: dict[str, object] = {"limit": info.limit, "period": info.period, "bucket": bucket}
    resets = bucket_resets_at(info.period, moment)
    if resets is not None:
        details["resets_at"] = resets.isoformat()
    return LivenessError(
        QUOTA_EXCEEDED, f"quota of {info.limit} requests per {info.period} exhausted", details
    )


def pick_by_ref(ref: str, by_id: KeyInfo | None, by_name: list[KeyInfo]) -> KeyInfo:
    """Resolve an admin reference: exact key_id first, then the single active key with that
    name, then (only revoked ones left) the most recently created one."""
    if by_id is not None:
        return by_id
    active = [k for k in by_name if not k.revoked]
    if len(active) == 1:
        return active[0]
    if len(active) > 1:
        ids = ", ".join(k.key_id for k in active)
        raise KeyLookupError(f"name {ref!r} is ambiguous (key_ids: {ids}); use a key_id")
    if by_name:
        return max(by_name, key=lambda k: k.created_at)
    raise KeyLookupError(f"no key with key_id or name {ref!r}")


# --------------------------------------------------------------------------- contract


def _usable(info: KeyInfo | None) -> KeyInfo:
    if info is None or info.revoked:
        raise invalid_key_error()
    return info


class KeyStore(ABC):
    """Storage for API keys and their per-period usage counters.

    Implementations must be safe to share between threads and must never overspend a quota,
    even when several processes use the same backing store.
    """

    clock: Clock

    def create(self, name: str, limit: int, period: str = DEFAULT_PERIOD) -> IssuedKey:
        """Issue a key.  The raw key is only in the returned value; only its hash is stored."""
        validate_new_key(name, limit, period)
        raw_key = generate_raw_key()
        created_at = self._stored_time(as_utc(self.clock()))
        for _attempt in range(5):
            info = KeyInfo(
                key_id=generate_key_id(), name=name, prefix=display_prefix(raw_key), limit=limit,
                period=period, created_at=created_at,  # type: ignore[arg-type]
            )
            if self._insert_key(info, hash_key(raw_key)):
                return IssuedKey(info=info, raw_key=raw_key)
        raise RuntimeError("could not allocate a unique key_id")

    def authenticate(self, raw_key: str | None) -> KeyInfo:
        """Look a raw key up without charging it.  Raises MISSING_API_KEY / INVALID_API_KEY."""
        if not raw_key:
            raise missing_key_error()
        return _usable(self._find_by_hash(hash_key(raw_key)))

    def authenticate_id(self, key_id: str) -> KeyInfo:
        """Look a key up by its exact key_id (never by name).  Raises INVALID_API_KEY when the
        id is unknown or the key is revoked."""
        return _usable(self._find_by_id(key_id))

    def _stored_time(self, t: datetime) -> datetime:
        """``t`` at the precision the backend keeps (what a read gives back)."""
        return t

    @abstractmethod
    def _insert_key(self, info: KeyInfo, key_hash: str) -> bool:
        """Store a new key; False when its key_id is taken (astronomically unlikely: retried)."""

    @abstractmethod
    def _find_by_hash(self, key_hash: str) -> KeyInfo | None: ...

    @abstractmethod
    def _find_by_id(self, key_id: str) -> KeyInfo | None: ...

    def check(self, raw_key: str | None) -> KeyInfo:
        """Authenticate and refuse a spent quota, without charging: the cheap gate in front of
        the work.  ``reserve`` stays the only atomic, authoritative charge."""
        return self._spendable(self.authenticate(raw_key))

    @abstractmethod
    def reserve(self, raw_key: str | None) -> Reservation:
        """Authenticate and atomically charge one request in the current bucket.

        Raises MISSING_API_KEY / INVALID_API_KEY, or QUOTA_EXCEEDED when used >= limit."""

    def check_id(self, key_id: str) -> KeyInfo:
        """``check`` for a caller identified by key_id (see ``Principal``)."""
        return self._spendable(self.authenticate_id(key_id))

    def _spendable(self, info: KeyInfo) -> KeyInfo:
        usage = self.usage(info.key_id)
        if usage.remaining <= 0:
            raise quota_exceeded_error(info, usage.bucket, as_utc(self.clock()))
        return info

    @abstractmethod
    def reserve_id(self, key_id: str) -> Reservation:
        """``reserve`` for a caller identified by key_id: same atomic charge, same errors."""

    def _named(self, credential: Credential) -> Credential:
        """A ``RouteKey`` as the ``Principal`` of the key it names; other credentials as they are."""
        if not isinstance(credential, RouteKey):
            return credential
        try:
            return Principal(self.get(credential.ref).key_id)
        except KeyLookupError:
            raise LivenessError(INVALID_API_KEY, "This route's anonymous key does not exist (anonymous_routes).",
                                {"key": credential.ref}) from None

    def authenticate_credential(self, credential: Credential) -> KeyInfo:
        """The caller's key if it is valid (not revoked), spent quota or not."""
        credential = self._named(credential)
        if isinstance(credential, (Prepaid, Principal)):
            return self.authenticate_id(credential.key_id)
        return self.authenticate(credential)

    def check_credential(self, credential: Credential) -> KeyInfo:
        credential = self._named(credential)
        if isinstance(credential, Prepaid):
            return self.authenticate_id(credential.key_id)
        if isinstance(credential, Principal):
            return self.check_id(credential.key_id)
        return self.check(credential)

    def reserve_credential(self, credential: Credential) -> Reservation:
        credential = self._named(credential)
        if isinstance(credential, Prepaid):
            raise ValueError("a Prepaid caller is never charged")
        if isinstance(credential, Principal):
            return self.reserve_id(credential.key_id)
        return self.reserve(credential)

    @abstractmethod
    def token_secret(self) -> bytes:
        """The HMAC secret for bearer tokens: generated once, stored with the keys, so every
        worker and the admin CLI agree on it without configuration (``jwt_secret`` overrides)."""

    @abstractmethod
    def commit(self, reservation: Reservation) -> None:
        """Record that the reserved request succeeded (the charge stands, and its lease ends).
        Committed after its lease was reclaimed, the unit is charged again: the answer went out."""

    @abstractmethod
    def refund(self, reservation: Reservation) -> None:
        """Give the reserved request back (in its original bucket; never below 0), once: nothing
        when its lease was already reclaimed."""

    @abstractmethod
    def reclaim_expired(self) -> int:
        """Give back every unit whose lease expired unsettled (its process died between
        reserve and commit); -> how many.  Run at start-up and by a sweeper."""

    @abstractmethod
    def list_keys(self) -> list[KeyInfo]:
        """All keys, oldest first, revoked ones included."""

    @abstractmethod
    def get(self, ref: str) -> KeyInfo:
        """Resolve a key_id or name (see ``pick_by_ref``).  Raises ``KeyLookupError``."""

    @abstractmethod
    def revoke(self, ref: str) -> KeyInfo:
        """Revoke by key_id or name; idempotent (keeps the first revocation time)."""

    @abstractmethod
    def usage(self, ref: str) -> Usage:
        """Usage of the current bucket for a key_id or name."""

    # -- BWS 3 client credentials (liveness.keys.bws; docs/GRPC.md "BioID BWS 3") ---------------

    def create_bws_client(self, ref: str) -> "IssuedBwsClient":
        """A new BWS client id and key for the (not revoked) key ``ref``; the key is stored as is
        (HMAC verification needs it) and returned once."""
        from .bws import BwsClient, IssuedBwsClient, encode_key, new_client_id, new_client_key

        info = self.get(ref)
        if info.revoked:
            raise ValueError(f"key {info.key_id} ({info.name!r}) is revoked")
        key_b64 = encode_key(new_client_key())
        client = BwsClient(new_client_id(), info.key_id, self._stored_time(as_utc(self.clock())))
        self._insert_bws_client(client, key_b64)
        return IssuedBwsClient(client, key_b64)

    def bws_client_key(self, client_id: str) -> tuple[str, bytes] | None:
        """(key_id, key bytes) of an active client, or None (unknown or revoked client)."""
        from .bws import decode_key

        found = self._find_bws_client(client_id)
        if found is None or found[0].revoked:
            return None
        return found[0].key_id, decode_key(found[1])

    def list_bws_clients(self) -> list["BwsClient"]:
        """Every BWS client (never a key), oldest first."""
        return self._bws_clients()

    def revoke_bws_client(self, client_id: str) -> "BwsClient":
        """Revoke a client (its JWTs stop at once); idempotent.  Raises ``KeyLookupError``."""
        from dataclasses import replace as _replace

        found = self._find_bws_client(client_id)
        if found is None:
            raise KeyLookupError(f"no BWS client {client_id!r}")
        client = found[0]
        if client.revoked:
            return client
        now = self._stored_time(as_utc(self.clock()))
        self._revoke_bws_client(client_id, now)
        return _replace(client, revoked_at=now)

    def _insert_bws_client(self, client: "BwsClient", key_b64: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no BWS clients")

    def _find_bws_client(self, client_id: str) -> "tuple[BwsClient, str] | None":
        raise NotImplementedError(f"{type(self).__name__} keeps no BWS clients")

    def _bws_clients(self) -> list["BwsClient"]:
        raise NotImplementedError(f"{type(self).__name__} keeps no BWS clients")

    def _revoke_bws_client(self, client_id: str, now: datetime) -> None:
        raise NotImplementedError(f"{type(self).__name__} keeps no BWS clients")

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self) -> "KeyStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
