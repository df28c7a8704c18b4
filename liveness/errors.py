"""One error type for the whole domain: a machine-readable code, an HTTP status and a message.

Adapters (native JSON envelope, FACIA bodies, gRPC status codes) translate a ``LivenessError``
into their own wire format; the domain never formats responses itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    # Whether the client pays for a request that ends with this error.  Only our own
    # success is charged; bad input and our failures are refunded.
    charged: bool = False


# The documented catalogue (README "Errors").  Adding a code here is the only way to add one.
MISSING_IMAGE = ErrorKind("missing_image", 400)
INVALID_BASE64 = ErrorKind("invalid_base64", 400)
INVALID_REQUEST = ErrorKind("invalid_request", 400)
METHOD_NOT_ALLOWED = ErrorKind("method_not_allowed", 405)
REQUEST_TIMEOUT = ErrorKind("request_timeout", 408)  # headers or body too slow (edge/timeouts.py); the connection closes
EMPTY_IMAGE = ErrorKind("empty_image", 400)
UNSUPPORTED_FORMAT = ErrorKind("unsupported_format", 415)
CORRUPT_IMAGE = ErrorKind("corrupt_image", 400)
IMAGE_TOO_LARGE = ErrorKind("image_too_large", 413)
IMAGE_TOO_MANY_PIXELS = ErrorKind("image_too_many_pixels", 413)
IMAGE_TOO_SMALL = ErrorKind("image_too_small", 400)
# Video (liveness.video): container limits are checked from metadata before any frame is decoded.
MISSING_VIDEO = ErrorKind("missing_video", 400)
EMPTY_VIDEO = ErrorKind("empty_video", 400)
VIDEO_TOO_LARGE = ErrorKind("video_too_large", 413)
VIDEO_TOO_LONG = ErrorKind("video_too_long", 413)
VIDEO_FPS_TOO_HIGH = ErrorKind("video_fps_too_high", 413)
VIDEO_RESOLUTION_TOO_HIGH = ErrorKind("video_resolution_too_high", 413)
UNSUPPORTED_VIDEO = ErrorKind("unsupported_video", 415)
CORRUPT_VIDEO = ErrorKind("corrupt_video", 400)
VIDEO_TIMEOUT = ErrorKind("video_timeout", 422)
NO_FACE = ErrorKind("no_face", 422)
MULTIPLE_FACES = ErrorKind("multiple_faces", 422)
MISSING_API_KEY = ErrorKind("missing_api_key", 401)
INVALID_API_KEY = ErrorKind("invalid_api_key", 401)
QUOTA_EXCEEDED = ErrorKind("quota_exceeded", 429)
INVALID_ADMIN_KEY = ErrorKind("invalid_admin_key", 401)
ADMIN_DISABLED = ErrorKind("admin_disabled", 403)
UNKNOWN_MODEL = ErrorKind("unknown_model", 404)
ROLLOUT_REJECTED = ErrorKind("rollout_rejected", 409)
NOT_READY = ErrorKind("not_ready", 503)
MODEL_UNAVAILABLE = ErrorKind("model_unavailable", 503)
INTERNAL_ERROR = ErrorKind("internal_error", 500)
BUSY = ErrorKind("busy", 503)  # a bounded resource (the decode memory pool) stayed full; retry
# Active challenges (liveness.challenges, README "Active challenges").
SESSION_NOT_FOUND = ErrorKind("session_not_found", 404)  # unknown id, or another key's session
SESSION_EXPIRED = ErrorKind("session_expired", 410)
SESSION_FINISHED = ErrorKind("session_finished", 409)  # a frame for a session already passed/failed
FRAME_TOO_FAST = ErrorKind("frame_too_fast", 429)  # over challenge_max_fps: not charged, session unchanged
TOO_MANY_SESSIONS = ErrorKind("too_many_sessions", 503)  # the server-wide cap (all keys)
# One key over its own challenge-session limits (concurrent or per minute): the client's doing, so 429.
KEY_SESSION_LIMIT = ErrorKind("key_session_limit", 429)
# App-server sessions (liveness.sessions, README "Sessions"): the client's short-lived token.
INVALID_SESSION_TOKEN = ErrorKind("invalid_session_token", 401)
SESSION_TOKEN_EXPIRED = ErrorKind("session_token_expired", 401)
TOKEN_MODE_MISMATCH = ErrorKind("token_mode_mismatch", 403)  # a video token on the image endpoint, ...
ATTEMPTS_EXHAUSTED = ErrorKind("attempts_exhausted", 403)  # max_attempts used: the token is spent
SESSION_COMPLETED = ErrorKind("session_completed", 409)  # a realface result ends the session
TOO_MANY_FAILED_ATTEMPTS = ErrorKind("too_many_failed_attempts", 429)  # per device_correlation_id
VERIFICATION_UNAVAILABLE = ErrorKind("verification_unavailable", 503)  # the embedding model is not loaded
# Stored detections (liveness.detections: FindFace's return_detection / detection_id on /v1/verify).
DETECTION_NOT_FOUND = ErrorKind("detection_not_found", 404)  # unknown, expired, or another key's detection_id
DETECTION_LIMIT = ErrorKind("detection_limit", 429)  # this key holds detection_max_per_key unexpired detections
TOO_MANY_DETECTIONS = ErrorKind("too_many_detections", 503)  # all keys together hold detection_max_total

CATALOGUE: tuple[ErrorKind, ...] = tuple(
    v for v in list(globals().values()) if isinstance(v, ErrorKind)
)


@dataclass
class LivenessError(Exception):
    kind: ErrorKind
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.kind.code}: {self.message}")

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def status(self) -> int:
        return self.kind.status

    @property
    def retry_after(self) -> int | None:
        """Seconds for a ``Retry-After`` header: every 503, and the 429s that know when."""
        if self.status == 503:
            return int(self.details.get("retry_after", 1))
        if self.status == 429 and "retry_after" in self.details:
            return int(self.details["retry_after"])
        return None

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}
