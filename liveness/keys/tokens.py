"""Bearer tokens for the gRPC API: HS256 JWTs that name an API key by its key_id.

``python -m liveness tokens create --key KEY --ttl SECONDS`` makes one.  Claims: ``sub`` (the
key_id), ``iat``, ``exp`` and a random ``jti``.  A token proves only *which key* is calling; the
key store still decides on every call (revoked key -> refused, spent quota -> refused), so
revoking a key stops its tokens at once.  The signing secret is ``settings.jwt_secret`` or, when
unset, the one kept in the key store (``KeyStore.token_secret``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import jwt

from liveness.errors import INVALID_API_KEY, MISSING_API_KEY, LivenessError
from liveness.keys.base import KeyStore, as_utc, utcnow

ALGORITHM = "HS256"
MAX_TTL_S = 366 * 24 * 3600


def signing_secret(configured: str | None, store: KeyStore) -> bytes:
    return configured.encode("utf-8") if configured else store.token_secret()


def make_token(secret: bytes, key_id: str, ttl_s: int, *, now: datetime | None = None) -> str:
    if not key_id:
        raise ValueError("key_id must be non-empty")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be an integer number of seconds in 1..{MAX_TTL_S}")
    issued = as_utc(now or utcnow())
    claims = {
        "sub": key_id,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_s)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def verify_token(secret: bytes, token: str | None) -> str:
    """The key_id a valid, unexpired token names.  Raises MISSING_API_KEY / INVALID_API_KEY;
    the message never echoes the token."""
    if not token:
        raise LivenessError(MISSING_API_KEY, "A bearer token is missing (metadata 'authorization: Bearer <token>').")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "iat", "jti"]}
        )
    except jwt.ExpiredSignatureError:
        raise LivenessError(INVALID_API_KEY, "The bearer token has expired.") from None
    except jwt.InvalidTokenError:
        raise LivenessError(INVALID_API_KEY, "The bearer token is invalid.") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise LivenessError(INVALID_API_KEY, "The bearer token is invalid.")
    return sub
