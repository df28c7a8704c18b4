"""BWS 3 client credentials: a client id and a symmetric key bound to one API key, and the
verification of the JWTs BWS clients sign themselves (docs/GRPC.md "BioID BWS 3").

A BWS 3 client does not ask a server for a token: it holds a client id and a base64 key and
signs its own JWT (HS256 with the base64-decoded key bytes; BioID's portal keys are 512 bit and
its Java sample signs HS512, so HS384/HS512 are accepted too), with ``sub`` = ``iss`` = the
client id, ``aud`` = "BWS" and ``iat``/``nbf``/``exp`` (20 minutes in BioID's samples).

The server must hold the same key to verify the HMAC, so it cannot be a one-way hash like the API
keys: it is stored as is, in the key store (SQLite ``bws_clients`` table / MongoDB ``bws_clients``
collection), next to the stored ``jwt_secret`` that already lets whoever reads that store mint
bearer tokens.  The store is the trust boundary: protect it (file mode 0600, a private volume).
A client key proves only *which API key* is calling: revoke the API key (or the client) and its
JWTs stop at once, and the key store still decides quota on every call.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Protocol

import jwt

from liveness.errors import INVALID_API_KEY, MISSING_API_KEY, LivenessError
from liveness.keys.base import Revocable

AUDIENCE = "BWS"
ALGORITHMS = ("HS256", "HS384", "HS512")  # one symmetric key; BWS's own clients sign HS512
KEY_BYTES = 64  # 512 bit, like the keys of BioID's portal
LEEWAY_S = 5.0  # clock skew between a client and us
MAX_LIFETIME_S = 24 * 3600  # a self-signed token living longer than this is refused (exp - iat)


@dataclass(frozen=True)
class BwsClient(Revocable):
    """A stored BWS client: never its key."""

    client_id: str
    key_id: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class IssuedBwsClient:
    """``create_bws_client``'s result: the client and its base64 key (shown once)."""

    client: BwsClient
    key_b64: str = field(repr=False)


def new_client_id() -> str:
    return str(uuid.uuid4())


def new_client_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_key(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class BwsClientSource(Protocol):
    """What the verifier needs of a key store."""

    def bws_client_key(self, client_id: str) -> tuple[str, bytes] | None: ...


def _missing() -> LivenessError:
    return LivenessError(MISSING_API_KEY, "A BWS JWT is missing (authorization: Bearer <JWT>).")


def _invalid(why: str) -> LivenessError:
    return LivenessError(INVALID_API_KEY, f"The BWS JWT is {why}.")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BwsTokenVerifier:
    """``verify(token) -> key_id`` for self-signed BWS client JWTs, on an injected clock (the
    same interface as ``liveness.tokens.BearerTokens``, so the gRPC frame takes either)."""

    reads_store = True  # each verify looks the client's key up: callers on an event loop use a thread

    def __init__(self, store: BwsClientSource, clock: Callable[[], float] = time.time,
                 leeway_s: float = LEEWAY_S) -> None:
        self.store = store
        self.clock = clock
        self.leeway_s = leeway_s

    def verify(self, token: str | None, now: float | None = None) -> str:
        """The key_id the token's client is bound to.  Raises MISSING_API_KEY / INVALID_API_KEY
        (messages never echo the token)."""
        if not token:
            raise _missing()
        try:
            header = jwt.get_unverified_header(token)
            unverified: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise _invalid("malformed") from None
        if header.get("alg") not in ALGORITHMS:
            raise _invalid("not HMAC-signed (HS256/HS384/HS512)")
        client_id = unverified.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise _invalid("without a subject (the client id)")
        found = self.store.bws_client_key(client_id)
        if found is None:
            raise _invalid("of an unknown or revoked client")
        key_id, key = found
        try:
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS), audience=AUDIENCE, issuer=client_id,
                                options={"require": ["sub", "iss", "aud", "exp"], "verify_exp": False,
                                         "verify_nbf": False, "verify_iat": False})
        except jwt.InvalidAudienceError:
            raise _invalid('not for audience "BWS"') from None
        except jwt.InvalidIssuerError:
            raise _invalid("issued by another client (iss must equal sub)") from None
        except jwt.InvalidTokenError:
            raise _invalid("invalid (signature or claims)") from None
        self._judge_time(claims, self.clock() if now is None else now)
        return key_id

    def _judge_time(self, claims: dict[str, Any], now: float) -> None:
        exp, nbf, iat = claims.get("exp"), claims.get("nbf", None), claims.get("iat", None)
        if not _number(exp) or any(v is not None and not _number(v) for v in (nbf, iat)):
            raise _invalid("invalid (exp/nbf/iat must be numbers)")
        if now >= exp + self.leeway_s:
            raise _invalid("expired")
        if (nbf is not None and nbf > now + self.leeway_s) or (iat is not None and iat > now + self.leeway_s):
            raise _invalid("not valid yet")
        start = iat if iat is not None else nbf
        if start is not None and exp - start > MAX_LIFETIME_S:
            raise _invalid(f"valid for more than {MAX_LIFETIME_S} s")


def sign_client_jwt(client_id: str, key_b64: str, *, now: float | None = None, ttl_s: int = 20 * 60,
                    algorithm: str = "HS256", audience: str = AUDIENCE) -> str:
    """What a BWS client does (tests, tools): a JWT for ``client_id`` signed with its key."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": client_id, "iss": client_id, "aud": audience, "iat": issued, "nbf": issued,
              "exp": issued + ttl_s}
    try:
        key = decode_key(key_b64)
    except (binascii.Error, ValueError) as e:
        raise ValueError("the client key must be base64") from e
    return jwt.encode(claims, key, algorithm=algorithm)
