"""The one token service: every JWT this server issues or accepts, on one secret ring.

Three kinds, HS256, told apart by the ``typ`` claim so one can never be taken for another:

    kind              typ                 claims                              verify errors
    API-key bearer    api_key (*)         sub (key_id), iat, exp, jti         MISSING_API_KEY / INVALID_API_KEY
    liveness session  liveness_session    sid, mode, iat, exp, jti            INVALID_SESSION_TOKEN / SESSION_TOKEN_EXPIRED
    challenge result  challenge_result    sid, verdict, ..., iss, iat, exp    jwt.InvalidTokenError (customers verify these)

(*) gRPC bearer tokens made before the typ claim existed carry none: a missing ``typ`` is accepted
for the API-key kind only.  A bearer token proves only *which key* is calling; the key store still
decides on every call (revoked -> refused, no quota -> refused).

The ring (``SecretRing``): secrets newest first; the first signs every new token and names itself
in the ``kid`` header by a fingerprint (never the secret); every secret verifies (the named one is
tried first).  Rotation: put the new secret first, keep the old one after it until the tokens it
signed have expired (session tokens <= 24 h, result tokens ``challenge_token_ttl_s``, bearer tokens
their ``--ttl``), then drop it.  ``token_ring`` builds the ring from Settings and the stores
(precedence documented there and in README "Configuration").

Expiry is judged on the service's clock (injected; default the wall clock), with the leeway each
kind always had: bearer and result tokens none (and an ``iat`` in the future is refused), session
tokens ``SESSION_LEEWAY_S`` (clock skew between workers; ``iat`` not judged).  Error messages
never echo a token.
"""

from __future__ import annotations

import hashlib
import logging
import secrets as _secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

import jwt

from liveness.errors import (
    INVALID_API_KEY,
    INVALID_SESSION_TOKEN,
    MISSING_API_KEY,
    SESSION_TOKEN_EXPIRED,
    LivenessError,
)

if TYPE_CHECKING:
    from liveness.settings import Settings

__all__ = [
    "ALGORITHM", "API_KEY", "CHALLENGE_RESULT", "LIVENESS_SESSION", "MAX_TTL_S", "BearerTokens", "ResultTokens",
    "SecretRing", "SessionClaims", "SessionTokens", "TokenService", "bearer_token", "fingerprint",
    "looks_like_token", "token_ring", "token_service", "verify_result_token",
]

log = logging.getLogger("liveness.tokens")

ALGORITHM = "HS256"
API_KEY = "api_key"
LIVENESS_SESSION = "liveness_session"
CHALLENGE_RESULT = "challenge_result"
MAX_TTL_S = 366 * 24 * 3600  # bearer tokens (``liveness tokens create --ttl``)
SESSION_LEEWAY_S = 5  # clock skew between workers/hosts

Clock = Callable[[], float]


class SecretSource(Protocol):
    """A store that keeps a generated secret (``KeyStore``, the session and challenge stores)."""

    def token_secret(self) -> bytes: ...


# -- the ring ------------------------------------------------------------------------------------


def fingerprint(secret: bytes) -> str:
    """The ``kid`` of a secret: names it without revealing it."""
    return hashlib.sha256(b"kid:" + secret).hexdigest()[:12]


class SecretRing:
    """Secrets newest first: the first signs, every one verifies."""

    def __init__(self, secrets: Iterable[bytes | str]) -> None:
        ring: dict[str, bytes] = {}
        for s in secrets:
            raw = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            if raw:
                ring.setdefault(fingerprint(raw), raw)  # a secret listed twice keeps its first place
        if not ring:
            raise ValueError("at least one token secret is needed")
        self._ring = list(ring.items())

    @property
    def signer(self) -> tuple[str, bytes]:
        """(kid, secret) of the secret that signs."""
        return self._ring[0]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(kid for kid, _ in self._ring)

    def verifiers(self, kid: object) -> list[bytes]:
        """Every secret, the one ``kid`` names first (a token issued before kid existed, or by a
        peer listing the same secret, still verifies)."""
        return [s for _, s in sorted(self._ring, key=lambda ks: ks[0] != kid)]

    def __len__(self) -> int:
        return len(self._ring)


def configured_secrets(settings: "Settings") -> list[str]:
    """``token_secrets`` when set; else ``jwt_secret`` then ``session_token_secrets``."""
    if settings.token_secrets:
        return [s for s in settings.token_secrets if s]
    return [s for s in (settings.jwt_secret, *settings.session_token_secrets) if s]


def token_ring(
    settings: "Settings",
    *,
    keys: SecretSource | None = None,
    sessions: SecretSource | None = None,
    challenges: SecretSource | None = None,
) -> SecretRing:
    """The one ring of this deployment.  Precedence:

    1. ``token_secrets`` set: exactly those (the first signs); nothing stored is read.
    2. else ``jwt_secret`` and/or ``session_token_secrets`` set: ``jwt_secret`` first (it signs, so
       customers keep verifying result tokens with it), then ``session_token_secrets``.
    3. else nothing configured: the key store's stored secret signs (the challenge store's without
       a key store, then the session store's).

    In 2 and 3, the stored secrets that signed a kind before the upgrade and that no configured
    secret replaced stay verify-only after the configured ones, so tokens issued before keep
    working until they expire: without ``jwt_secret``, the key store's (bearer and result tokens)
    and the challenge store's (result tokens without a key store); without
    ``session_token_secrets``, the session store's.  Setting ``jwt_secret`` therefore still
    invalidates bearer tokens signed with the stored one, as it always did.
    """
    ring: list[bytes | str] = list(configured_secrets(settings))
    if settings.token_secrets and (settings.jwt_secret or settings.session_token_secrets):
        log.warning("token_secrets is set: jwt_secret and session_token_secrets are ignored "
                    "(list them in token_secrets to keep their tokens verifying)")
    if not settings.token_secrets:
        stored: list[SecretSource | None] = []
        if not settings.jwt_secret:
            stored += [keys, challenges]
        if not settings.session_token_secrets:
            stored.append(sessions)
        ring += [s.token_secret() for s in stored if s is not None]
    if not ring:
        raise ValueError("no token secret: configure token_secrets or give token_ring a store")
    return SecretRing(ring)


# -- the kinds -----------------------------------------------------------------------------------


class MalformedToken(jwt.DecodeError):
    """Not a JWT at all (no readable header)."""


INVALID = "The token is invalid."


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Kind:
    """One kind of token on a ring: signs with the ring's first secret (``kid`` header), verifies
    with any, refuses another kind's ``typ``, judges time on ``clock``."""

    typ: str
    untyped_ok = False  # a token without typ is of this kind (older gRPC tokens)
    required: tuple[str, ...] = ("exp", "iat")
    leeway_s: float = 0.0
    judge_iat = True  # an iat in the future is refused

    def __init__(self, ring: SecretRing | Sequence[bytes | str], clock: Clock = time.time) -> None:
        self.ring = ring if isinstance(ring, SecretRing) else SecretRing(ring)
        self.clock = clock

    def _sign(self, claims: Mapping[str, Any]) -> str:
        kid, secret = self.ring.signer
        return jwt.encode({"typ": self.typ, **claims}, secret, algorithm=ALGORITHM, headers={"kid": kid})

    def _shape_ok(self, claims: dict[str, Any]) -> bool:
        return True

    def _decode(self, token: object, now: float | None) -> dict[str, Any]:
        """The claims of a valid token of this kind; raises ``MalformedToken``,
        ``jwt.ExpiredSignatureError`` or ``jwt.InvalidTokenError`` (fixed messages)."""
        if not isinstance(token, str) or not token:
            raise MalformedToken("The token is malformed.")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise MalformedToken("The token is malformed.") from None
        options: dict[str, Any] = {"require": list(self.required), "verify_exp": False, "verify_iat": False,
                                   "verify_nbf": False}  # time is judged below, on our clock
        for secret in self.ring.verifiers(kid):
            try:
                claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=options)
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                break
            return self._judge(claims, self.clock() if now is None else now)
        raise jwt.InvalidTokenError(INVALID)

    def _judge(self, claims: dict[str, Any], now: float) -> dict[str, Any]:
        typ = claims.get("typ")
        if not (typ == self.typ or (typ is None and self.untyped_ok)) or not self._shape_ok(claims):
            raise jwt.InvalidTokenError(INVALID)  # another kind, or not ours
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf", 0)
        if not (_number(exp) and _number(iat) and _number(nbf)):
            raise jwt.InvalidTokenError(INVALID)
        if (self.judge_iat and iat > now + self.leeway_s) or nbf > now + self.leeway_s:
            raise jwt.InvalidTokenError(INVALID)  # not yet valid
        if now >= exp + self.leeway_s:
            raise jwt.ExpiredSignatureError("The token has expired.")
        return claims


class BearerTokens(_Kind):
    """gRPC bearer tokens naming an API key (``python -m liveness tokens create``)."""

    typ = API_KEY
    untyped_ok = True
    required = ("sub", "exp", "iat", "jti")

    def issue(self, key_id: str, ttl_s: int, *, now: float | None = None) -> str:
        if not key_id:
            raise ValueError("key_id must be non-empty")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl must be an integer number of seconds in 1..{MAX_TTL_S}")
        issued = int(self.clock() if now is None else now)
        return self._sign({"sub": key_id, "iat": issued, "exp": issued + ttl_s, "jti": _secrets.token_hex(8)})

    def _shape_ok(self, claims: dict[str, Any]) -> bool:
        return isinstance(claims.get("sub"), str) and bool(claims["sub"])

    def verify(self, token: str | None, now: float | None = None) -> str:
        """The key_id a valid, unexpired token names.  Raises MISSING_API_KEY / INVALID_API_KEY."""
        if not token:
            raise LivenessError(MISSING_API_KEY, "A bearer token is missing (metadata 'authorization: Bearer <token>').")
        try:
            return str(self._decode(token, now)["sub"])
        except jwt.ExpiredSignatureError:
            raise LivenessError(INVALID_API_KEY, "The bearer token has expired.") from None
        except jwt.InvalidTokenError:
            raise LivenessError(INVALID_API_KEY, "The bearer token is invalid.") from None


@dataclass(frozen=True)
class SessionClaims:
    session_id: str
    mode: str
    expires_at: int


class SessionTokens(_Kind):
    """A client's session token, bound to one app-server session and its mode."""

    typ = LIVENESS_SESSION
    required = ("typ", "sid", "mode", "exp", "iat")
    leeway_s = SESSION_LEEWAY_S
    judge_iat = False

    def issue(self, session_id: str, mode: str, issued_at: float, ttl_s: int) -> str:
        return self._sign({"sid": session_id, "mode": mode, "iat": int(issued_at), "exp": int(issued_at) + int(ttl_s),
                           "jti": _secrets.token_hex(8)})

    def _shape_ok(self, claims: dict[str, Any]) -> bool:
        return isinstance(claims.get("sid"), str)

    def verify(self, token: str, now: float | None = None) -> SessionClaims:
        """Claims of a valid token; INVALID_SESSION_TOKEN / SESSION_TOKEN_EXPIRED otherwise.  ``now``:
        the session service's clock (the same one that expires the session row)."""
        try:
            claims = self._decode(token, now)
        except MalformedToken:
            raise LivenessError(INVALID_SESSION_TOKEN, "The session token is malformed.") from None
        except jwt.ExpiredSignatureError:
            raise LivenessError(SESSION_TOKEN_EXPIRED, "The session token has expired; ask the app server for a new session.") from None
        except jwt.InvalidTokenError:
            raise LivenessError(INVALID_SESSION_TOKEN, "The session token is invalid.") from None
        return SessionClaims(claims["sid"], str(claims["mode"]), int(claims["exp"]))


class ResultTokens(_Kind):
    """A challenge session's signed verdict (``result_token``), verified by customers."""

    typ = CHALLENGE_RESULT
    required = ("sid", "verdict", "exp", "iat")

    def issue(self, claims: Mapping[str, Any], issued_at: float, ttl_s: int) -> str:
        return self._sign({**claims, "iat": int(issued_at), "exp": int(issued_at) + int(ttl_s)})

    def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims of a valid, unexpired result token (raises ``jwt.InvalidTokenError``;
        ``jwt.ExpiredSignatureError`` when it expired)."""
        return self._decode(token, now)


class TokenService:
    """Every kind on one ring and one clock: ``bearer``, ``session``, ``result``."""

    def __init__(self, ring: SecretRing | Sequence[bytes | str], clock: Clock = time.time) -> None:
        self.ring = ring if isinstance(ring, SecretRing) else SecretRing(ring)
        self.clock = clock
        self.bearer = BearerTokens(self.ring, clock)
        self.session = SessionTokens(self.ring, clock)
        self.result = ResultTokens(self.ring, clock)


def token_service(
    settings: "Settings",
    *,
    keys: SecretSource | None = None,
    sessions: SecretSource | None = None,
    challenges: SecretSource | None = None,
    clock: Clock = time.time,
) -> TokenService:
    """``TokenService`` on ``token_ring(settings, ...)``."""
    return TokenService(token_ring(settings, keys=keys, sessions=sessions, challenges=challenges), clock)


# -- helpers -------------------------------------------------------------------------------------


def verify_result_token(secret: bytes | str, token: str) -> dict[str, Any]:
    """What a customer runs: the claims of a valid, unexpired result token signed with ``secret``
    (the ring's first: ``jwt_secret`` when configured).  Raises ``jwt.InvalidTokenError``."""
    return ResultTokens([secret]).verify(token)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def looks_like_token(credential: object) -> bool:
    """A JWT (three base64url parts, JSON header) rather than an API key (``lk_...``)."""
    return isinstance(credential, str) and credential.startswith("eyJ") and credential.count(".") == 2
