"""What a session is: its parameters (validated at the boundary), its stored record, its status."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal, Mapping

from liveness.errors import INVALID_REQUEST, LivenessError

MODES = ("passive", "video", "challenge", "passive-verify", "video-verify", "challenge-verify")
Mode = Literal["passive", "video", "challenge", "passive-verify", "video-verify", "challenge-verify"]

TTL_MIN_S, TTL_MAX_S, TTL_DEFAULT_S = 60, 86400, 600
MAX_ATTEMPTS_LIMIT = 10
DEVICE_ID_MAX = 128

# Azure Face's session status names.
NOT_STARTED, STARTED, RESULT_AVAILABLE, EXPIRED = "NotStarted", "Started", "ResultAvailable", "Expired"

# Attempt states
RUNNING, DONE, ERROR = "running", "completed", "failed"
REALFACE, SPOOFFACE = "realface", "spoofface"
ABANDONED = "attempt_abandoned"  # the error code of a running attempt that can no longer finish


@dataclass(frozen=True)
class SessionParams:
    mode: Mode
    device_correlation_id: str | None = None
    auth_token_ttl_seconds: int = TTL_DEFAULT_S
    send_results_to_client: bool = False
    max_attempts: int = 3
    enable_session_image: bool = False

    @property
    def family(self) -> str:
        """passive | video | challenge: which endpoints the token opens."""
        return self.mode.split("-")[0]

    @property
    def verify(self) -> bool:
        return self.mode.endswith("-verify")

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "device_correlation_id": self.device_correlation_id,
            "auth_token_ttl_seconds": self.auth_token_ttl_seconds, "send_results_to_client": self.send_results_to_client,
            "max_attempts": self.max_attempts, "enable_session_image": self.enable_session_image,
        }


# Azure's camelCase names are accepted too, so a client of that API can switch by changing the URL.
_ALIASES = {
    "livenessOperationMode": "mode", "deviceCorrelationId": "device_correlation_id",
    "authTokenTimeToLiveInSeconds": "auth_token_ttl_seconds", "sendResultsToClient": "send_results_to_client",
    "maxAttempts": "max_attempts", "enableSessionImage": "enable_session_image",
}


def _bad(message: str, field_name: str) -> LivenessError:
    return LivenessError(INVALID_REQUEST, message, {"field": field_name})


def _int(doc: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = doc.get(name, default)
    if isinstance(v, str) and v.strip().isdigit():  # multipart form fields are text
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(f"'{name}' must be an integer in {lo}..{hi}.", name)
    return v


def _bool(doc: Mapping[str, Any], name: str) -> bool:
    v = doc.get(name, False)
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
        return v.lower() in ("true", "1")
    if not isinstance(v, bool):
        raise _bad(f"'{name}' must be true or false.", name)
    return v


def parse_params(raw: Mapping[str, Any]) -> SessionParams:
    """The request's JSON (or form fields) -> SessionParams; unknown fields are refused so a
    typo (``send_result_to_client``) cannot silently change what the client sees."""
    doc = {_ALIASES.get(k, k): v for k, v in raw.items()}
    known = set(SessionParams.__dataclass_fields__) | {"verify_image"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise _bad(f"Unknown field(s): {', '.join(unknown)}.", unknown[0])
    mode = doc.get("mode")
    if isinstance(mode, str):
        mode = mode.strip().lower()
    if mode not in MODES:
        raise _bad(f"'mode' must be one of: {', '.join(MODES)}.", "mode")
    device = doc.get("device_correlation_id")
    if device is not None and (not isinstance(device, str) or not device.strip() or len(device) > DEVICE_ID_MAX):
        raise _bad(f"'device_correlation_id' must be a non-empty string of at most {DEVICE_ID_MAX} characters.",
                   "device_correlation_id")
    return SessionParams(
        mode=mode,
        device_correlation_id=device.strip() if isinstance(device, str) else None,
        auth_token_ttl_seconds=_int(doc, "auth_token_ttl_seconds", TTL_DEFAULT_S, TTL_MIN_S, TTL_MAX_S),
        send_results_to_client=_bool(doc, "send_results_to_client"),
        max_attempts=_int(doc, "max_attempts", 3, 1, MAX_ATTEMPTS_LIMIT),
        enable_session_image=_bool(doc, "enable_session_image"),
    )


@dataclass(frozen=True)
class SessionRecord:
    """One stored session.  ``state`` holds the attempts (JSON); ``reference`` the verify
    embedding (float32 bytes), wiped when the session expires or is deleted."""

    session_id: str
    key_id: str
    params: SessionParams
    created_at: float
    expires_at: float
    version: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"attempts": []})
    reference: bytes | None = None
    verify_image: dict[str, Any] | None = None  # the reference's face box and quality, no pixels

    @property
    def attempts(self) -> list[dict[str, Any]]:
        return self.state["attempts"]

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def with_state(self, state: dict[str, Any], **changes: Any) -> "SessionRecord":
        return replace(self, state=state, **changes)

    def has_result(self) -> bool:
        return any(a.get("result") for a in self.attempts)

    def passed(self) -> bool:
        return any((a.get("result") or {}).get("decision") == REALFACE for a in self.attempts)

    def status(self, now: float) -> str:
        if self.has_result():
            return RESULT_AVAILABLE
        if self.expired(now):
            return EXPIRED
        return STARTED if self.attempts else NOT_STARTED


def settled(attempt: dict[str, Any], now: float, session_expired: bool, running_limit_s: float) -> dict[str, Any]:
    """The attempt as the app server should read it.  A challenge whose client went away, or an
    attempt whose worker died, stays ``running`` in the store; once it can no longer finish (the
    session expired, or it has run longer than any attempt can) it reads as failed.  It still
    counts against ``max_attempts``: abandoning a challenge must not buy a fresh try."""
    if attempt.get("status") != RUNNING:
        return attempt
    started = datetime.fromisoformat(attempt["received_at"]).timestamp()
    if not session_expired and now - started <= running_limit_s:
        return attempt
    return {**attempt, "status": ERROR, "error": {
        "code": ABANDONED, "message": "The attempt was never completed (client gone or session expired)."}}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
