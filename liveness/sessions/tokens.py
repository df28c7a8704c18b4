"""The client's session token: an HS256 JWT bound to one session and mode.

Secrets come from ``session_token_secrets`` (the first signs; every one verifies, so a new
secret is rolled out by putting it first and the old one stays until its tokens have expired,
at most ``auth_token_ttl_seconds`` <= 24 h).  Without configuration, one secret generated once and
kept in the session store is used, so every worker agrees.  The ``kid`` header names the secret by
a fingerprint, never the secret itself.
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
import time
from dataclasses import dataclass
from typing import Sequence

import jwt

from liveness.errors import INVALID_SESSION_TOKEN, SESSION_TOKEN_EXPIRED, LivenessError

ALGORITHM = "HS256"
TOKEN_TYPE = "liveness_session"
LEEWAY_S = 5  # clock skew between workers/hosts


def looks_like_token(credential: object) -> bool:
    """A JWT (three base64url parts, JSON header) rather than an API key (``lk_...``)."""
    return isinstance(credential, str) and credential.startswith("eyJ") and credential.count(".") == 2


@dataclass(frozen=True)
class TokenClaims:
    session_id: str
    mode: str
    expires_at: int


def _kid(secret: bytes) -> str:
    return hashlib.sha256(b"kid:" + secret).hexdigest()[:12]


class SessionTokens:
    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one session token secret is needed")
        self._secrets = [(_kid(s), s) for s in secrets]

    def issue(self, session_id: str, mode: str, issued_at: float, ttl_s: int) -> str:
        kid, secret = self._secrets[0]
        claims = {"typ": TOKEN_TYPE, "sid": session_id, "mode": mode, "iat": int(issued_at),
                  "exp": int(issued_at) + int(ttl_s), "jti": _secrets.token_hex(8)}
        return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": kid})

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """Claims of a valid token; INVALID_SESSION_TOKEN / SESSION_TOKEN_EXPIRED otherwise.
        Messages never echo the token.  Expiry is judged on ``now`` (the service's clock, the
        same one that expires the session row), default the wall clock."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise LivenessError(INVALID_SESSION_TOKEN, "The session token is malformed.") from None
        # The named secret first; the rest too, for a token issued before kid existed or by a
        # peer whose configuration lists the same secret under another fingerprint.
        candidates = sorted(self._secrets, key=lambda ks: ks[0] != kid)
        options = {"require": ["sid", "mode", "exp", "iat", "typ"], "verify_exp": False, "verify_iat": False}
        for _, secret in candidates:
            try:
                claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=options)
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                break
            if claims.get("typ") != TOKEN_TYPE or not isinstance(claims.get("sid"), str):
                break
            if not isinstance(claims["exp"], int) or (time.time() if now is None else now) >= claims["exp"] + LEEWAY_S:
                raise LivenessError(SESSION_TOKEN_EXPIRED, "The session token has expired; ask the app server for a new session.")
            return TokenClaims(claims["sid"], str(claims["mode"]), int(claims["exp"]))
        raise LivenessError(INVALID_SESSION_TOKEN, "The session token is invalid.")
