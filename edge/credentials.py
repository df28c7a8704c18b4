"""Who is calling: the one place that reads a credential off a request.

An API key comes in ``X-API-Key``, else ``Authorization: Bearer <key>`` (what
``bentoml.SyncHTTPClient(token=...)`` sends), else a ``hash_id`` field (FACIA's JSON body, a form
field or the query string).  The same slot may hold an app-server session's token instead
(``is_session_token``: the adapters then run the session's attempt).  The admin key comes in
``X-Admin-Key`` (HTTP) or ``admin_key`` (the challenge WebSocket's start message) and is compared
with the configured sha256 in constant time.  A request without any credential on a route the
operator opened (``anonymous_routes``) is the ``RouteKey`` of that route's key (``or_route_key``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Mapping

from liveness.errors import ADMIN_DISABLED, INVALID_ADMIN_KEY, LivenessError
from liveness.keys import Credential, RouteKey
from liveness.tokens import bearer_token
from liveness.tokens import looks_like_token as is_session_token

__all__ = ["anonymous_key", "api_key_from", "authorise_admin", "check_admin_key", "is_session_token", "or_route_key"]

ADMIN_OFF = "The admin API is off: set LIVENESS_ADMIN_KEY_SHA256 (see `liveness admin-key`)."
ADMIN_WRONG = "Missing or wrong X-Admin-Key."


def api_key_from(headers: Mapping[str, str], fields: Mapping[str, Any]) -> str | None:
    """The caller's API key (or session token), or None when it sent none."""
    key = headers.get("x-api-key") or bearer_token(headers.get("authorization")) or fields.get("hash_id")
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    return key.strip() if isinstance(key, str) and key.strip() else None


def anonymous_key(routes: Mapping[str, str], path: str) -> str | None:
    """The key ``path`` is charged to when its caller sends no credential: an exact entry of
    ``routes`` first, else the longest prefix entry ("/status/*") that matches; None: closed."""
    if path in routes:
        return routes[path]
    prefixes = [p for p in routes if p.endswith("*") and path.startswith(p[:-1])]
    return routes[max(prefixes, key=len)] if prefixes else None


def or_route_key(credential: Credential, routes: Mapping[str, str], path: str) -> Credential:
    """``credential``, or for a caller that sent none on an open route, its ``RouteKey``."""
    if credential is not None or not routes:
        return credential
    ref = anonymous_key(routes, path)
    return RouteKey(ref) if ref is not None else None


def check_admin_key(key: str, expected_sha256: str | None, *, off: str = ADMIN_OFF, wrong: str = ADMIN_WRONG) -> None:
    """Raises ADMIN_DISABLED when no admin key is configured, INVALID_ADMIN_KEY when ``key`` is
    empty or not the configured one."""
    if not expected_sha256:
        raise LivenessError(ADMIN_DISABLED, off)
    digest = hashlib.sha256(key.encode()).hexdigest()
    if not key or not hmac.compare_digest(digest, expected_sha256.lower()):
        raise LivenessError(INVALID_ADMIN_KEY, wrong)


def authorise_admin(headers: Mapping[str, str], expected_sha256: str | None) -> None:
    """An HTTP request's ``X-Admin-Key`` (the admin API, and admin options of other endpoints)."""
    check_admin_key(headers.get("x-admin-key", ""), expected_sha256)
