"""The OpenAPI 3.1 document of the HTTP API: ``GET /docs.json`` (Swagger UI at ``/docs`` and ``/``).

Written by hand, as data, because BentoML's generated document cannot know what the handlers do:
every API takes its raw body through a positional-only ``bytes`` parameter (``edge.raw_body``),
so BentoML documents every POST body as text/plain and no response but a generic 200.  This one
says what each route accepts (JSON with base64 fields, multipart fields, raw image or video
bodies), how the caller is identified (``X-API-Key``, ``Authorization: Bearer``, ``X-Admin-Key``)
and every status each route can answer with its body: the native error envelope
``{"error": {"code", "message", "details"?}, "request_id"?}``, FACIA's bodies on ``/liveness``,
and the success bodies.

How to read and extend it: the small schema helpers come first; then the error responses, built
from ``liveness.errors`` (a route lists the error kinds it can raise, ``errors(...)`` groups them
by their status and restricts each status's ``error.code`` to those kinds' codes); then one
function per group of routes.  A new route: add its operation to a group (or a new group in
``document``); tests/edge/test_edge_routes.py fails while a served route is undocumented, and
tests/e2e/test_openapi.py runs schemathesis against a served Bento with this document.

Not in the document: the WebSocket ``/v1/challenge/ws`` and the Socket.IO endpoint ``/socket.io/``
(OpenAPI cannot describe either; README "Active challenges"), the demo's static assets under ``/demo/assets/``, and BentoML's own
``/schema.json`` (its client's service description).  Wrong methods on a documented path answer
405 ``method_not_allowed`` with an ``Allow`` header.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, Callable, Iterable

from liveness import errors as E
from liveness.challenges.service import MAX_CHOSEN
from liveness.challenges.steps import CHALLENGES
from liveness.errors import ErrorKind
from liveness.sessions.model import DEVICE_ID_MAX, MAX_ATTEMPTS_LIMIT, MODES, TTL_DEFAULT_S, TTL_MAX_S, TTL_MIN_S

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
TEXT = "text/plain"
HTML = "text/html"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
VIDEO_TYPES = ("video/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "video/webm", "image/gif")
OCTETS = "application/octet-stream"

# -- schema pieces -------------------------------------------------------------------------------

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
BINARY: Schema = {"type": "string", "format": "binary"}
ANY_OBJECT: Schema = {"type": "object"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if "type" in schema and "$ref" not in schema:
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: Iterable[str] = (), *, extra: bool = True, **more: Any) -> Schema:
    """An object; ``required`` names must be in ``properties``; ``extra=False`` refuses others."""
    out: Schema = {"type": "object", "properties": properties}
    required = list(required)
    assert set(required) <= set(properties), set(required) - set(properties)
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    return {**out, **more}


def arr(items: Schema, **more: Any) -> Schema:
    return {"type": "array", "items": items, **more}


def desc(schema: Schema, text: str) -> Schema:
    return {**schema, "description": text}


def b64(text: str) -> Schema:
    return {"type": "string", "minLength": 1, "contentEncoding": "base64",
            "description": f"{text} (base64, with or without a `data:image/...;base64,` prefix)"}


def content(schema: Schema, *media_types: str) -> dict[str, Any]:
    return {m: {"schema": schema} for m in media_types or (JSON,)}


def response(text: str, schema: Schema | None = None, *media_types: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": text}
    if schema is not None:
        out["content"] = content(schema, *media_types)
    if headers:
        out["headers"] = headers
    return out


def header(text: str, schema: Schema = STR, *, required: bool = False) -> dict[str, Any]:
    return {"description": text, "schema": schema, "required": required}


def query(name: str, schema: Schema, text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


def path_param(name: str, schema: Schema, text: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": text, **more}


def request_id_param() -> dict[str, Any]:
    return {"name": "X-Request-ID", "in": "header", "required": False, "schema": STR,
            "description": "Echoed back in the answer's X-Request-ID (one is generated otherwise)."}


HASH_ID: Schema = desc(STR, "The API key in the body (FACIA's name), instead of an X-API-Key header.")
RETRY_AFTER = header("Seconds to wait before retrying.", INT, required=True)
RETRY_AFTER_OPTIONAL = header("Seconds to wait before retrying (when the server knows).", INT)
REQUEST_ID = header("The request's id: the client's X-Request-ID, or a generated one.", required=True)

# -- security ------------------------------------------------------------------------------------

SECURITY_SCHEMES: dict[str, Any] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An API key (`liveness keys create`).  POST APIs also accept it as `hash_id` in the "
                              "JSON or form body; GET routes as `hash_id` in the query."},
    "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "API key or session JWT",
               "description": "`Authorization: Bearer <API key>`, or an app-server session's `auth_token` "
                              "(JWT, `POST /v1/sessions`) on the client endpoints of its mode."},
    "HashIdQuery": {"type": "apiKey", "in": "query", "name": "hash_id",
                    "description": "The API key in the query string (GET routes)."},
    "BwsJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "BWS client JWT",
               "description": "A JWT the BWS client signs itself (HS256 with its base64-decoded client key; sub = iss "
                              "= client id, aud = \"BWS\"): `liveness keys bws-client KEY`."},
    "AdminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key",
                 "description": "The admin key whose sha256 is `LIVENESS_ADMIN_KEY_SHA256` (`liveness admin-key`)."},
}
API_KEY = [{"ApiKey": []}, {"Bearer": []}]  # the client endpoints: an API key or a session token
API_KEY_GET = [{"ApiKey": []}, {"Bearer": []}, {"HashIdQuery": []}]
ADMIN = [{"AdminKey": []}]
NONE: list[dict[str, list[str]]] = []

# -- errors --------------------------------------------------------------------------------------

KEY = (E.MISSING_API_KEY, E.INVALID_API_KEY, E.QUOTA_EXCEEDED)
# Calls on what the key already paid for or owns (frames, verdicts, results, deletion): no quota needed.
OWNER_KEY = (E.MISSING_API_KEY, E.INVALID_API_KEY)
SESSION_TOKEN = (E.INVALID_SESSION_TOKEN, E.SESSION_TOKEN_EXPIRED, E.TOKEN_MODE_MISMATCH, E.ATTEMPTS_EXHAUSTED,
                 E.SESSION_COMPLETED, E.TOO_MANY_FAILED_ATTEMPTS)
ADMIN_KEY = (E.INVALID_ADMIN_KEY, E.ADMIN_DISABLED)
SERVER = (E.NOT_READY, E.MODEL_UNAVAILABLE, E.INTERNAL_ERROR)
IMAGE = (E.MISSING_IMAGE, E.INVALID_BASE64, E.EMPTY_IMAGE, E.UNSUPPORTED_FORMAT, E.CORRUPT_IMAGE, E.IMAGE_TOO_LARGE,
         E.IMAGE_TOO_MANY_PIXELS, E.IMAGE_TOO_SMALL, E.BUSY)
FACE = (E.NO_FACE, E.MULTIPLE_FACES)
VIDEO = (E.MISSING_VIDEO, E.EMPTY_VIDEO, E.VIDEO_TOO_LARGE, E.VIDEO_TOO_LONG, E.VIDEO_FPS_TOO_HIGH,
         E.VIDEO_RESOLUTION_TOO_HIGH, E.UNSUPPORTED_VIDEO, E.CORRUPT_VIDEO, E.VIDEO_TIMEOUT)
BODY = (E.INVALID_REQUEST, E.REQUEST_TIMEOUT)  # a body that is not JSON / multipart, or too slow to arrive
DETECTION_CAPS = (E.DETECTION_LIMIT, E.TOO_MANY_DETECTIONS)  # return_detection (liveness.detections)


def envelope(codes: Iterable[str]) -> Schema:
    """The native envelope whose ``error.code`` is one of ``codes``."""
    return {"allOf": [ref("Error"), {"properties": {"error": {"properties": {"code": {"enum": sorted(set(codes))}}}}}]}


def _status_headers(status: int, request_id: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if status == 503:
        out["Retry-After"] = RETRY_AFTER
    elif status == 429:
        out["Retry-After"] = RETRY_AFTER_OPTIONAL
    if request_id and status not in (408, 413):  # those two may come before the handler runs
        out["X-Request-ID"] = REQUEST_ID
    return out


def errors(*groups: Iterable[ErrorKind], request_id: bool = False) -> dict[str, Any]:
    """The native error responses of ``groups`` (kinds), one per status."""
    by_status: dict[int, set[str]] = {}
    for kind in (k for g in groups for k in g):
        by_status.setdefault(kind.status, set()).add(kind.code)
    return {
        str(status): response(", ".join(f"`{c}`" for c in sorted(codes)), envelope(codes),
                              headers=_status_headers(status, request_id))
        for status, codes in sorted(by_status.items())
    }


def unrouted_404(responses: dict[str, Any]) -> dict[str, Any]:
    """A route with path parameters: a value its pattern refuses (``attempt`` not digits, an id
    holding ``/``) matches no route, and the router answers 404 ``Not Found`` in plain text."""
    out = copy.deepcopy(responses)
    plain = {"schema": desc(STR, "`Not Found`: no route has this path.")}
    if "404" in out:
        out["404"]["content"][TEXT] = plain
        out["404"]["description"] += "; plain text when no route has the path"
    else:
        out["404"] = {"description": "No route has this path.", "content": {TEXT: plain}}
    return out


GATEWAY_TIMEOUT = {"504": response("BentoML's traffic timeout (30 s): the answer took too long.", ref("PlainError"))}


def catalogue_table() -> str:
    rows = "\n".join(f"| `{k.code}` | {k.status} |" for k in E.CATALOGUE)
    return f"| code | status |\n|---|---|\n{rows}"


# -- component schemas ---------------------------------------------------------------------------

ERROR = obj(
    {
        "error": obj({"code": desc(ref("ErrorCode"), "Machine-readable; the table in the API description."),
                      "message": desc(STR, "For people; may change."),
                      "details": desc(ANY_OBJECT, "Code-specific facts (`field`, `resets_at`, `retry_after_ms`, ...).")},
                     ["code", "message"], extra=False),
        "request_id": desc(STR, "The request's id (native liveness and video endpoints)."),
        "session": desc(ref("SessionAttemptView"), "A session client's attempt, when a session token made the request."),
    },
    ["error"],
    description="The native error envelope of every endpoint but FACIA's `/liveness`.",
)

MODEL_VERSION = obj({"name": STR, "version": INT, "sha256": desc(STR, "The first 16 hex digits of the model file's sha256.")},
                    ["name", "version", "sha256"])
FACE_BOX = obj({"x": NUM, "y": NUM, "width": NUM, "height": NUM, "score": NUM, "keypoints": arr(arr(NUM))},
               ["x", "y", "width", "height", "score"], description="The judged face, in pixels of the oriented image.")
RECTANGLE = obj({"top": INT, "left": INT, "width": INT, "height": INT}, ["top", "left", "width", "height"])
EDGES = obj({"left": INT, "top": INT, "right": INT, "bottom": INT}, ["left", "top", "right", "bottom"])
TIMINGS = {"type": "object", "additionalProperties": NUM, "description": "Milliseconds per stage."}

NATIVE_RESULT = obj(
    {
        "request_id": STR, "decision": {"enum": ["live", "spoof"]}, "is_live": BOOL, "score": NUM, "threshold": NUM,
        "face": ref("FaceBox"), "faces_found": INT,
        "detector_pass": desc(STR, "The acquisition pass that found the face (`reference`, or a fallback)."),
        "quality_flags": arr({"enum": ["face_too_small", "face_cut_off", "multiple_faces"]}),
        "model_scores": {"type": "object", "additionalProperties": NUM},
        "models": arr(ref("ModelVersion")), "image": obj({"width": INT, "height": INT}, ["width", "height"]),
        "timings_ms": TIMINGS, "session": ref("SessionAttemptView"),
    },
    ["request_id", "decision", "is_live", "score", "threshold", "face", "faces_found", "quality_flags",
     "model_scores", "models", "image", "timings_ms"],
    description="A passive verdict (with `session` when a session token that sends results made the request).",
)

SESSION_CLIENT_ANSWER = obj(
    {"request_id": STR, "session": ref("SessionAttemptView")}, ["request_id", "session"],
    description="A session client's answer when the session does not send results to the client.",
)

VIDEO_FRAME = obj(
    {"frame_no": INT, "frame_ts": NUM, "face_found": BOOL, "liveness": nullable(NUM), "quality": nullable(NUM),
     "reason": nullable(STR), "bbox": ref("Edges"), "faces_found": INT, "quality_flags": arr(STR), "detector_pass": STR},
    ["frame_no", "frame_ts", "face_found", "liveness", "quality", "reason"],
)
VIDEO_RESULT = obj(
    {
        "request_id": STR, "alive": BOOL, "decision": {"enum": ["live", "spoof", "failure_to_acquire"]},
        "average_liveness": nullable(NUM), "liveness_threshold": NUM,
        "best_face": nullable(obj(
            {"liveness": NUM, "quality": NUM, "bbox": ref("Edges"), "frame_no": INT, "frame_ts": NUM,
             "photo": b64("The full frame, JPEG; only with return_photo"),
             "normalized": b64("The 112x112 face, PNG; only with return_normalized"),
             "detection_id": nullable(desc(STR, "Only with return_detection: the id of this face's stored embedding "
                                                "(`/v1/verify` `detection_id1`/`detection_id2`, this key only, "
                                                "`detection_ttl_s`); null unless alive")),
             "detection_reason": desc({"enum": ["not_alive", "no_face_for_recognition"]},
                                      "Why `detection_id` is null (only then)")},
            ["liveness", "quality", "bbox", "frame_no", "frame_ts"])),
        "frames": arr(ref("VideoFrame")), "frames_selected": INT, "frames_analyzed": INT, "stopped_early": BOOL,
        "errors": arr(obj({"code": {"enum": ["RejectedByPassiveLiveDetection", "FailureToAcquire"]}, "message": STR,
                           "details": ANY_OBJECT}, ["code", "message"])),
        "video": obj({"container": STR, "codec": STR, "width": INT, "height": INT, "duration_s": NUM, "fps": NUM,
                      "frame_count": INT}, ["container", "codec", "width", "height", "duration_s", "fps", "frame_count"]),
        "models": arr(ref("ModelVersion")), "timings_ms": TIMINGS, "session": ref("SessionAttemptView"),
    },
    ["request_id", "alive", "decision", "average_liveness", "liveness_threshold", "best_face", "frames",
     "frames_selected", "frames_analyzed", "stopped_early", "errors", "video", "models", "timings_ms"],
    description="One verdict for the clip (200 for every verdict; docs/VIDEO.md).",
)

MODEL_VERSIONS_MAP = {"type": "object", "additionalProperties": INT, "description": "model -> version that decided"}
CHALLENGE_NAME = {"enum": list(CHALLENGES)}
SUCCESS = desc(BOOL, "Liveness_service's flag: true on every answer (on the verdict: whether the check passed).")
CURRENT_CHALLENGE = desc(nullable(CHALLENGE_NAME), "The step being asked for (null once all are done or the session failed).")
CHALLENGE_START = obj(
    {"success": {"const": True}, "challenge": CHALLENGE_NAME,
     "session_id": STR, "instruction": STR, "current_step": INT, "total_steps": INT,
     "expires_in_minutes": desc(INT, "Whole minutes (Liveness_service's type); `expires_at` is exact."),
     "expires_at": desc(NUM, "Unix time."), "step_timeout_seconds": NUM, "max_fps": NUM,
     "liveness_session_id": desc(STR, "The app-server session (session tokens only)."), "attempt_id": INT},
    ["session_id", "instruction", "current_step", "total_steps", "expires_in_minutes", "expires_at"],
    description="The session and its first step (a session token's answer also has the attempt).",
)
PROGRESS = {"success": {"const": True}, "session_id": STR, "current_step": INT, "total_steps": INT,
            "steps_completed": INT, "challenge": CURRENT_CHALLENGE, "expires_in_seconds": NUM}
CHALLENGE_FRAME = obj(
    {**PROGRESS, "face_detected": BOOL, "instruction": STR, "step_completed": BOOL, "completed_step": nullable(STR),
     "verification_complete": BOOL, "verification_failed": BOOL, "reason": nullable(STR),
     "frame_score": nullable(NUM), "passive_score": nullable(NUM), "model_versions": MODEL_VERSIONS_MAP,
     "warning": STR},
    ["session_id", "current_step", "total_steps", "face_detected", "instruction", "step_completed",
     "verification_complete", "verification_failed", "reason"],
    description="Feedback on one frame (a session token that hides results gets no scores).",
)
CHALLENGE_VERDICT = obj(
    {"session_id": STR, "verdict": {"enum": ["passed", "failed"]}, "passed": BOOL, "reasons": arr(STR),
     "verification_time": NUM, "steps_completed": INT, "total_steps": INT, "completed_steps": arr(STR),
     "passive_score": nullable(NUM), "threshold": NUM, "model_versions": MODEL_VERSIONS_MAP,
     "result_token": desc(STR, "HS256 JWT (`typ: challenge_result`)."), "token_expires_in": NUM,
     "best_frame": b64("The best frame, JPEG (challenge_return_frame)"), "session": ref("SessionAttemptView"),
     "success": SUCCESS, "timestamp": desc(STR, "When the verdict was made, ISO 8601 (UTC)."),
     "total_blinks": desc(INT, "Blinks seen over the whole session."),
     "verified_image": nullable(b64("The best frame, JPEG, of a passed session; only with challenge_return_frame, "
                                    "else null")),
     "verified_image_path": desc({"type": "null"}, "Always null: no frame is ever written to a file.")},
    ["session_id"],
    description="The verdict (the same one on every call); a session token that hides results gets only "
                "`session_id` and `session`.",
)
CHALLENGE_STATUS = obj(
    {**PROGRESS, "created_at": desc(STR, "ISO 8601 (UTC)."),
     "completed": desc(BOOL, "Every step is done (the session can be completed, or passed)."),
     "status": {"enum": ["active", "steps_done", "failed", "completed"]}, "instruction": STR,
     "verification_complete": BOOL, "verification_failed": BOOL, "reason": nullable(STR),
     "completed_steps": arr(STR), "frames": INT, "passive_score": nullable(NUM), "verdict": {"enum": ["passed", "failed"]}},
    ["success", "session_id", "created_at", "completed", "current_step", "total_steps", "status", "instruction",
     "verification_complete", "verification_failed", "completed_steps", "frames"],
)
CHALLENGE_STATS = obj(
    {"active_sessions": INT, "completed_sessions": INT, "failed_sessions": INT, "expired_sessions": INT,
     "max_sessions": INT, "challenge_pool": arr(CHALLENGE_NAME), "steps_per_session": INT,
     "session_expiry_minutes": INT},
    ["active_sessions", "completed_sessions", "failed_sessions", "expired_sessions"],
    description="Challenge-session counts: every tenant's with the admin key (or without authentication), "
                "the caller's own with an API key.",
)

SESSION_RESULT = obj(
    {"decision": {"enum": ["realface", "spoofface"]}, "score": nullable(NUM), "threshold": NUM,
     "target_face_rectangle": nullable(ref("Rectangle")), "model_versions": arr(ANY_OBJECT), "latency_ms": NUM,
     "digest": desc(STR, "sha256 of the judged input (challenge: of the frames' chain)."), "reasons": arr(STR),
     "verify_result": obj({"is_identical": BOOL, "match_confidence": NUM, "frames": INT, "reason": STR},
                          ["is_identical", "match_confidence"])},
    ["decision", "score", "threshold", "model_versions", "digest"],
)
ATTEMPT_ERROR = obj({"code": STR, "message": STR}, ["code", "message"])
SESSION_ATTEMPT_VIEW = obj(
    {"session_id": STR, "attempt_id": INT, "status": {"const": "completed"}, "attempts_remaining": INT,
     "result": ref("SessionResult"), "error": ATTEMPT_ERROR},
    ["session_id", "attempt_id", "status", "attempts_remaining"],
    description="What a session's client learns of its attempt (`result` / `error` only when the session sends "
                "results to the client).",
)
VERIFY_FACE = obj({"face_rectangle": ref("Rectangle"), "quality_for_recognition": {"enum": ["high", "medium", "low"]},
                   "reasons": arr(STR),
                   "detection_id": desc(STR, "/v1/verify: the stored detection this face came from")},
                  ["face_rectangle", "quality_for_recognition", "reasons"])
SESSION_CREATED = obj(
    {"session_id": STR, "auth_token": desc(STR, "HS256 JWT (`typ: liveness_session`) for the client."),
     "mode": {"enum": list(MODES)}, "expires_at": desc(STR, "ISO 8601, UTC."), "verify_image": ref("VerifyFace")},
    ["session_id", "auth_token", "mode", "expires_at"],
)
SESSION_FIELDS: dict[str, Schema] = {
    "session_id": STR, "status": {"enum": ["NotStarted", "Started", "ResultAvailable", "Expired"]},
    "mode": {"enum": list(MODES)}, "created_at": STR, "expires_at": STR, "auth_token_ttl_seconds": INT,
    "session_expired": BOOL, "device_correlation_id": nullable(STR), "send_results_to_client": BOOL,
    "enable_session_image": BOOL, "max_attempts": INT, "attempts_used": INT, "result": nullable(ref("SessionResult")),
}
SESSION_REQUIRED = ["session_id", "status", "mode", "created_at", "expires_at", "session_expired", "max_attempts",
                    "attempts_used", "result"]
SESSION_VIEW = obj(
    {**SESSION_FIELDS,
     "attempts": arr(obj({"attempt_id": INT, "status": {"enum": ["running", "completed", "failed"]}, "received_at": STR,
                          "result": ref("SessionResult"), "error": ATTEMPT_ERROR}, ["attempt_id", "status"])),
     "verify_image": ref("VerifyFace")},
    [*SESSION_REQUIRED, "attempts"],
)
SESSION_LIST = obj({"sessions": arr(obj(SESSION_FIELDS, SESSION_REQUIRED))}, ["sessions"],
                   description="The key's sessions, newest first.")
VERIFY_RESULT = obj(
    {"is_identical": BOOL, "match_confidence": NUM, "threshold": NUM, "faces": arr(ref("VerifyFace")),
     "models": arr(ref("ModelVersion"))},
    ["is_identical", "match_confidence", "threshold", "faces", "models"],
)
MODEL_STATE = obj(
    {"model": STR, "versions_on_disk": arr(INT), "loaded_here": arr(INT),
     "policy": obj({"mode": STR, "version": INT, "candidate": INT, "percent": NUM}, ["mode"]),
     "serving": INT, "candidate": nullable(INT), "mode": STR, "percent": NUM, "previous": nullable(INT)},
    ["model", "versions_on_disk", "loaded_here", "policy", "serving", "candidate", "mode", "percent", "previous"],
)
MODEL_STATES = obj({"models": arr(ref("ModelState"))}, ["models"])

COMPONENT_SCHEMAS: dict[str, Schema] = {
    "ErrorCode": {"type": "string", "enum": [k.code for k in E.CATALOGUE],
                  "description": "Every documented error code (liveness/errors.py)."},
    "Error": ERROR,
    "PlainError": obj({"error": STR}, ["error"], description="BentoML's own error body (timeouts)."),
    "ModelVersion": MODEL_VERSION, "FaceBox": FACE_BOX, "Rectangle": RECTANGLE, "Edges": EDGES,
    "NativeResult": NATIVE_RESULT, "SessionClientAnswer": SESSION_CLIENT_ANSWER,
    "VideoFrame": VIDEO_FRAME, "VideoResult": VIDEO_RESULT,
    "ChallengeStart": CHALLENGE_START, "ChallengeFrame": CHALLENGE_FRAME, "ChallengeVerdict": CHALLENGE_VERDICT,
    "ChallengeStatus": CHALLENGE_STATUS, "ChallengeStats": CHALLENGE_STATS,
    "SessionResult": SESSION_RESULT, "SessionAttemptView": SESSION_ATTEMPT_VIEW, "VerifyFace": VERIFY_FACE,
    "SessionCreated": SESSION_CREATED, "SessionView": SESSION_VIEW, "SessionList": SESSION_LIST,
    "VerifyResult": VERIFY_RESULT, "ModelState": MODEL_STATE, "ModelStates": MODEL_STATES,
    "FaciaSuccess": obj({"liveness_result": obj({"is_live": {"enum": [0, 1]}, "liveness_score": NUM},
                                                ["is_live", "liveness_score"]),
                         "message": {"const": "Success"}}, ["liveness_result", "message"]),
    "FaciaMessage": obj({"message": STR}, ["message"]),
    "FaciaError": obj({"error": STR}, ["error"]),
}

# -- operations ----------------------------------------------------------------------------------


def operation(operation_id: str, summary: str, responses: dict[str, Any], *, tags: list[str],
              security: list[dict[str, list[str]]], description: str | None = None, body: dict[str, Any] | None = None,
              parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": tags, "security": security}
    if description:
        out["description"] = description
    if parameters:
        out["parameters"] = parameters
        if any(p["in"] == "path" for p in parameters):
            responses = unrouted_404(responses)
    if body is not None:
        out["requestBody"] = body
    out["responses"] = {**responses, **GATEWAY_TIMEOUT}
    return out


def body(contents: dict[str, Any], *, required: bool = True, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"required": required, "content": contents}
    if text:
        out["description"] = text
    return out


def multipart(properties: dict[str, Schema], required: Iterable[str] = (), files: dict[str, str] | None = None) -> dict[str, Any]:
    """A multipart/form-data body; ``files`` maps a field to the content types its part may have."""
    out: dict[str, Any] = {"schema": obj(properties, required)}
    if files:
        out["encoding"] = {name: {"contentType": types} for name, types in files.items()}
    return out


def raw(text: str, *media_types: str) -> dict[str, Any]:
    return {m: {"schema": desc({**BINARY, "minLength": 1}, text)} for m in media_types}


def ok(text: str, schema: Schema, *, request_id: bool = False, status: str = "200") -> dict[str, Any]:
    return {status: response(text, schema, headers={"X-Request-ID": REQUEST_ID} if request_id else None)}


def facia_routes() -> dict[str, Any]:
    def facia(text: str, schema: str) -> dict[str, Any]:
        return response(text, ref(schema))

    responses = {
        "201": facia("The verdict (FACIA answers 201).", "FaciaSuccess"),
        "400": facia("No `selfie_image`, not base64, not an image, corrupt, too small, no usable face, or a body "
                     "past the JSON limits.", "FaciaError"),
        "401": facia("`Invalid credentials`: missing, unknown or revoked `hash_id`.", "FaciaMessage"),
        "408": facia("The body arrived too slowly (the connection closes).", "FaciaError"),
        "413": facia("Body, bytes or pixels over the limits.", "FaciaError"),
        "429": facia("`Your request limit has been reached.`", "FaciaMessage"),
        "500": facia("Our failure.", "FaciaError"),
        "503": {**facia("Models loading, backend unavailable, or busy.", "FaciaError"),
                "headers": {"Retry-After": RETRY_AFTER}},
    }
    request = obj({"hash_id": desc(STR, "The API key."), "selfie_image": b64("The selfie: JPEG, PNG or WebP")},
                  ["hash_id", "selfie_image"])
    return {"/liveness": {"post": operation(
        "facia_liveness", "FACIA-compatible passive liveness", responses, tags=["FACIA"], security=NONE,
        description="FACIA's request, status codes and exact bodies (README \"FACIA-compatible\").  The key is the "
                    "body's `hash_id`; invalid JSON reads as an empty request.",
        body=body({JSON: {"schema": request}}),
    )}}


def liveness_routes() -> dict[str, Any]:
    image_fields = {"hash_id": HASH_ID}
    native_body = body({
        "multipart/form-data": multipart(
            {"image": desc(BINARY, "The image (a JPEG, PNG or WebP file, or base64 text).  `file`, `selfie_image` "
                                   "and `image_base64` are accepted names too."), **image_fields},
            ["image"], {"image": ", ".join(IMAGE_TYPES)}),
        JSON: {"schema": obj({"image": b64("The image: JPEG, PNG or WebP; `file`, `selfie_image` and `image_base64` "
                                           "are accepted names too"), **image_fields}, ["image"])},
        **raw("The image itself.", *IMAGE_TYPES, OCTETS),
    }, text="The image: multipart field `image`, JSON base64, or the raw body (an empty one is `empty_image`).")
    native = operation(
        "native_liveness", "Passive liveness of one image", {
            **ok("The verdict (`decision`), or a session client's answer.",
                 {"anyOf": [ref("NativeResult"), ref("SessionClientAnswer")]}, request_id=True),
            **errors(KEY, SESSION_TOKEN, SERVER, IMAGE, FACE, BODY, [E.VERIFICATION_UNAVAILABLE], request_id=True),
        },
        tags=["Liveness"], security=API_KEY, parameters=[request_id_param()], body=native_body,
        description="One unit per verdict (never for bad input, no face, or our failure).  A `passive` session's "
                    "token runs one attempt of that session instead.",
    )
    flag = {"type": "boolean", "default": False}
    flags = [query("return_photo", flag, "Return the best frame as `best_face.photo` (base64 JPEG).  Also 1/yes/on."),
             query("return_normalized", flag, "Return the 112x112 face as `best_face.normalized` (base64 PNG)."),
             query("return_detection", flag, "FindFace's: keep the live best face's embedding (never the image) for "
                                             "`detection_ttl_s` and return its id as `best_face.detection_id`, for "
                                             "`/v1/verify`.  No extra unit; API keys only (not session tokens).")]
    video_body = body({
        **raw("The video itself (the magic bytes decide the container).", *VIDEO_TYPES, OCTETS),
        "multipart/form-data": multipart(
            {"video": desc(BINARY, "The video (`file` works too)."), "return_photo": STR, "return_normalized": STR,
             "return_detection": STR, "hash_id": HASH_ID}, ["video"], {"video": ", ".join((*VIDEO_TYPES, OCTETS))}),
    }, text="MP4/QuickTime, 3GP/3G2, WebM or animated GIF, as the body or multipart `video`; JSON is refused.")
    video = operation(
        "video_liveness", "Liveness of a short selfie video", {
            **ok("The clip's verdict (FindFace's shape), or a session client's answer.",
                 {"anyOf": [ref("VideoResult"), ref("SessionClientAnswer")]}, request_id=True),
            **errors(KEY, SESSION_TOKEN, SERVER, VIDEO, BODY, [E.NO_FACE, E.VERIFICATION_UNAVAILABLE],
                     DETECTION_CAPS, request_id=True),
        },
        tags=["Liveness"], security=API_KEY, parameters=[request_id_param(), *flags], body=video_body,
        description="Limits are read from the container before any frame is decoded (docs/VIDEO.md).  A `video` "
                    "session's token runs one attempt of that session.",
    )
    return {"/v1/liveness": {"post": native}, "/v1/video-liveness": {"post": video}}


CHALLENGE_ERRORS = ("Errors on /start, /process, /complete and /status add Liveness_service's `success: false` "
                    "beside the envelope.  The same flow runs over Socket.IO at `/socket.io/` (not an OpenAPI "
                    "operation; README \"Active challenges\").")


def challenge_routes() -> dict[str, Any]:
    session_id = desc({"type": "string", "minLength": 1}, "The challenge session's id (from /start).")
    start = operation(
        "challenge_start", "Start an active-challenge session", {
            **ok("The session and its first instruction.", ref("ChallengeStart")),
            **errors(KEY, SESSION_TOKEN, SERVER, BODY, ADMIN_KEY,
                     [E.IMAGE_TOO_LARGE, E.TOO_MANY_SESSIONS, E.KEY_SESSION_LIMIT]),
        },
        tags=["Active challenges"], security=[*API_KEY, {"ApiKey": [], "AdminKey": []}],
        body=body({JSON: {"schema": obj(
            {"challenges": desc(arr(CHALLENGE_NAME, minItems=1, maxItems=MAX_CHOSEN),
                                "Explicit steps instead of a random draw; needs X-Admin-Key."), "hash_id": HASH_ID})}},
            required=False, text="Optional; an empty body draws `challenge_steps` random challenges."),
        description="One quota unit per session.  A `challenge` session's token starts that session's attempt.  "
                    + CHALLENGE_ERRORS,
    )
    frame_fields = {"session_id": session_id,
                    "image": b64("One camera frame, JPEG, PNG or WebP (`frame` or `image_base64` work too)"),
                    "hash_id": HASH_ID}
    process = operation(
        "challenge_process", "Send one frame", {
            **ok("Feedback on the frame.", ref("ChallengeFrame")),
            **errors(OWNER_KEY, SESSION_TOKEN, SERVER, BODY, IMAGE,
                     [E.SESSION_NOT_FOUND, E.SESSION_EXPIRED, E.SESSION_FINISHED, E.FRAME_TOO_FAST]),
        },
        tags=["Active challenges"], security=API_KEY,
        body=body({JSON: {"schema": obj(frame_fields, ["session_id", "image"])}}),
        description="Frames are never charged; more than `challenge_max_fps` on average get `frame_too_fast` "
                    "(`details.retry_after_ms`).",
    )
    complete = operation(
        "challenge_complete", "The session's verdict", {
            **ok("The verdict and a signed result token.", ref("ChallengeVerdict")),
            **errors(OWNER_KEY, SESSION_TOKEN, SERVER, BODY, [E.IMAGE_TOO_LARGE, E.SESSION_NOT_FOUND, E.SESSION_EXPIRED]),
        },
        tags=["Active challenges"], security=API_KEY,
        body=body({JSON: {"schema": obj({"session_id": session_id, "hash_id": HASH_ID}, ["session_id"])}}),
    )
    status = operation(
        "challenge_status", "A challenge session's progress", {
            **ok("Progress of the session.", ref("ChallengeStatus")),
            **errors(OWNER_KEY, [E.SESSION_NOT_FOUND, E.SESSION_EXPIRED, E.NOT_READY]),
        },
        tags=["Active challenges"], security=API_KEY_GET,
        parameters=[path_param("session_id", STR, "The challenge session's id.")],
    )
    stats = operation(
        "challenge_stats", "Challenge-session counts", {
            **ok("Counts: all tenants' with the admin key, the caller's own with an API key.", ref("ChallengeStats")),
            **errors(OWNER_KEY, ADMIN_KEY, [E.NOT_READY]),
        },
        tags=["Active challenges"], security=[*ADMIN, *API_KEY_GET],
        description="Needs a credential: X-Admin-Key sees every tenant, an API key only its own sessions (never "
                    "charged).  Open, with every tenant's counts, when authentication is disabled.",
    )
    return {"/start": {"post": start}, "/process": {"post": process}, "/complete": {"post": complete},
            "/status/{session_id}": {"get": status}, "/stats": {"get": stats}}


def session_routes() -> dict[str, Any]:
    params: dict[str, Schema] = {
        "mode": {"enum": list(MODES), "description": "Which endpoints the token opens; `*-verify` needs verify_image."},
        "device_correlation_id": desc({"type": "string", "minLength": 1, "maxLength": DEVICE_ID_MAX},
                                      "Failed attempts are throttled per device."),
        "auth_token_ttl_seconds": {"type": "integer", "minimum": TTL_MIN_S, "maximum": TTL_MAX_S,
                                   "default": TTL_DEFAULT_S},
        "send_results_to_client": {"type": "boolean", "default": False},
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS_LIMIT, "default": 3},
        "enable_session_image": {"type": "boolean", "default": False},
    }
    verify_modes = [m for m in MODES if m.endswith("-verify")]
    other_modes = [m for m in MODES if m not in verify_modes]

    def reference_goes_with(mode_of: Callable[[Schema], Schema]) -> Schema:
        """A reference image comes with a ``*-verify`` mode, and only with one.  (JSON only: schemathesis
        4.32 cannot evaluate a conditional over a multipart body's binary part.)"""
        return {"if": {"required": ["verify_image"]}, "then": mode_of({"enum": verify_modes}),
                "else": mode_of({"enum": other_modes})}

    create_params = obj(params, ["mode"], extra=False)
    create_json = obj({**params, "verify_image": b64("The reference face (`*-verify` modes)"), "hash_id": HASH_ID},
                      ["mode"], extra=False,
                      description="Unknown fields are refused; Azure's camelCase names (`livenessOperationMode`, "
                                  "`deviceCorrelationId`, ...) are accepted too.",
                      **reference_goes_with(lambda mode: {"properties": {"mode": mode}}))
    create = operation(
        "create_session", "Create an app-server session", {
            **ok("The session and the client's token.", ref("SessionCreated")),
            **errors(KEY, SERVER, BODY, IMAGE, FACE, [E.TOO_MANY_FAILED_ATTEMPTS, E.VERIFICATION_UNAVAILABLE]),
        },
        tags=["Sessions"], security=API_KEY,
        body=body({
            JSON: {"schema": create_json},
            "multipart/form-data": multipart(
                {"parameters": desc(create_params, "The parameters, a JSON part (`Parameters` works too; or one "
                                                   "form field per parameter instead)."),
                 "verify_image": desc(BINARY, "The reference face (`VerifyImage` works too)."), "hash_id": HASH_ID},
                ["parameters"], files={"parameters": JSON, "verify_image": ", ".join(IMAGE_TYPES)}),
        }),
        description="One quota unit, charged once the parameters (and the reference) proved valid.",
    )
    session_id = path_param("session_id", STR, "The session's id.")
    listing = operation(
        "list_sessions", "The key's sessions", {
            **ok("Newest first.", ref("SessionList")),
            **errors(OWNER_KEY, [E.INVALID_REQUEST, E.NOT_READY]),
        },
        tags=["Sessions"], security=API_KEY_GET,
        parameters=[query("limit", {"type": "integer", "minimum": 0, "default": 50},
                          "At most this many (capped by `session_list_max`).")],
    )
    get = operation(
        "get_session", "A session and its result", {
            **ok("The session.", ref("SessionView")), **errors(OWNER_KEY, [E.SESSION_NOT_FOUND, E.NOT_READY]),
        },
        tags=["Sessions"], security=API_KEY_GET, parameters=[session_id],
    )
    delete = operation(
        "delete_session", "Delete a session", {
            "204": response("Deleted (its reference embedding and images with it)."),
            **errors(OWNER_KEY, [E.SESSION_NOT_FOUND, E.NOT_READY]),
        },
        tags=["Sessions"], security=API_KEY_GET, parameters=[session_id],
    )
    image = operation(
        "session_attempt_image", "An attempt's stored image", {
            "200": response("The image (`Cache-Control: no-store`).", BINARY, *IMAGE_TYPES),
            **errors(OWNER_KEY, [E.SESSION_NOT_FOUND, E.NOT_READY]),
        },
        tags=["Sessions"], security=API_KEY_GET,
        parameters=[session_id, path_param("attempt", {"type": "integer", "minimum": 0}, "The attempt's id.")],
        description="Only sessions created with `enable_session_image`, for `session_image_retention_s`.",
    )
    detection_ids = {
        "detection_id1": desc(STR, "In place of `image1`: a `best_face.detection_id` of this key "
                                   "(`/v1/video-liveness?return_detection=true`)."),
        "detection_id2": desc(STR, "In place of `image2`: a `best_face.detection_id` of this key."),
    }
    # Each face is an image or a detection id (not both: 400 invalid_request).
    either = {"allOf": [{"anyOf": [{"required": ["image1"]}, {"required": ["detection_id1"]}]},
                        {"anyOf": [{"required": ["image2"]}, {"required": ["detection_id2"]}]}]}
    pair = {"image1": desc(BINARY, "The first face (`reference` / `image_a` work too)."),
            "image2": desc(BINARY, "The second face (`probe` / `image_b`)."), **detection_ids, "hash_id": HASH_ID}
    verify = operation(
        "verify", "Are two faces the same person?", {
            **ok("The match.", ref("VerifyResult")),
            **errors(KEY, SERVER, BODY, IMAGE, FACE, [E.VERIFICATION_UNAVAILABLE, E.DETECTION_NOT_FOUND]),
        },
        tags=["Sessions"], security=API_KEY,
        body=body({
            "multipart/form-data": {"schema": obj(pair, **either), "encoding": {
                "image1": {"contentType": ", ".join(IMAGE_TYPES)}, "image2": {"contentType": ", ".join(IMAGE_TYPES)}}},
            JSON: {"schema": obj({"image1": b64("The first face"), "image2": b64("The second face"), **detection_ids,
                                  "hash_id": HASH_ID}, **either)},
        }),
        description="One unit, once both faces are valid: an image holds exactly one face, a detection id is an "
                    "unexpired detection of this key (another key's, an expired or an unknown id: 404 "
                    "`detection_not_found`, not charged); an error names the field (`details.field`).",
    )
    return {
        "/v1/sessions": {"post": create, "get": listing},
        "/v1/sessions/{session_id}": {"get": get, "delete": delete},
        "/v1/sessions/{session_id}/attempts/{attempt}/image": {"get": image},
        "/v1/verify": {"post": verify},
    }


def admin_routes() -> dict[str, Any]:
    model = path_param("model", STR, "A model of the repository (`minifasnet_v2`, ...).", example="minifasnet_v2")
    version = {"type": "integer", "minimum": 1, "examples": [1]}
    failures = errors(ADMIN_KEY, [E.NOT_READY, E.UNKNOWN_MODEL, E.ROLLOUT_REJECTED, E.INVALID_REQUEST])
    states = ok("Every model's versions and policy.", ref("ModelStates"))

    def post(op_id: str, summary: str, request: Schema | None, answer: dict[str, Any]) -> dict[str, Any]:
        return {"post": operation(op_id, summary, {**answer, **failures}, tags=["Admin"], security=ADMIN,
                                  parameters=[model],
                                  body=None if request is None else body({JSON: {"schema": request}}))}

    experiment = obj({"version": version, "percent": {"type": "number", "minimum": 0, "maximum": 100, "examples": [10]}},
                     ["version", "percent"])
    base = "/v1/admin"
    return {
        f"{base}/models": {"get": operation("admin_models", "Models, versions and policies", {
            **states, **errors(ADMIN_KEY, [E.NOT_READY])}, tags=["Admin"], security=ADMIN)},
        f"{base}/models/{{model}}/load": post(
            "admin_load", "Load and validate a version on this worker", obj({"version": version}, ["version"]),
            ok("The parity check of the loaded version.", obj(
                {"loaded": obj({"model": STR, "version": INT, "metric": STR, "max_diff": NUM, "tolerance": NUM,
                                "inputs": INT}, ["model", "version"])}, ["loaded"]))),
        f"{base}/models/{{model}}/promote": post("admin_promote", "Serve a version to everyone",
                                                 obj({"version": version}, ["version"]), states),
        f"{base}/models/{{model}}/rollback": post("admin_rollback", "Back to the previous version (or stop an "
                                                  "experiment)", None, states),
        f"{base}/models/{{model}}/canary": post("admin_canary", "Serve a candidate to a share of keys", experiment,
                                                states),
        f"{base}/models/{{model}}/shadow": post("admin_shadow", "Run a candidate on the side", experiment, states),
        f"{base}/shadow-report": {"get": operation("admin_shadow_report", "Shadow agreement", {
            **ok("Per model, stable and candidate.", obj({"shadow": arr(obj(
                {"model": STR, "stable": INT, "candidate": INT, "samples": INT, "agree": INT, "mean_abs_diff": NUM,
                 "max_abs_diff": NUM, "agreement": NUM}, ["model", "stable", "candidate", "samples", "agreement"]))},
                ["shadow"])),
            **errors(ADMIN_KEY, [E.NOT_READY])}, tags=["Admin"], security=ADMIN)},
    }


def operations_routes() -> dict[str, Any]:
    def get(op_id: str, summary: str, responses: dict[str, Any], description: str | None = None) -> dict[str, Any]:
        return {"get": operation(op_id, summary, responses, tags=["Operations"], security=NONE, description=description)}

    probe_503 = response("Not ready, with the reason.", STR, TEXT)
    return {
        "/status_check": get("status_check", "FACIA's health check", {
            "200": response("`Service is live`", STR, TEXT), "503": response("`Service is loading`", STR, TEXT)}),
        "/health": get("health", "Health of the challenge service", {
            "200": response("Ready.", obj(
                {"status": {"const": "healthy"}, "service": STR, "version": STR,
                 "active_sessions": desc(INT, "Live challenge sessions of all keys together (server-wide load)."),
                 "max_sessions": desc(INT, "`challenge_max_sessions`.")},
                ["status", "service", "version", "active_sessions", "max_sessions"])),
            "503": response("Loading.", obj({"status": {"const": "loading"}, "service": STR, "version": STR},
                                            ["status", "service", "version"]))},
            "Liveness_service's fields; no key needed."),
        "/healthz": get("healthz", "Liveness probe (BentoML)", {"200": response("Alive.", STR, TEXT)}),
        "/livez": get("livez", "Liveness probe (BentoML)", {"200": response("Alive.", STR, TEXT)}),
        "/readyz": get("readyz", "Readiness probe (BentoML): true once the models are loaded", {
            "200": response("Ready.", STR, TEXT), "503": probe_503}),
        "/metrics": get("metrics", "Prometheus metrics", {
            "200": response("Prometheus text exposition: BentoML's request metrics and `liveness_*`.", STR, TEXT)}),
        "/docs.json": get("openapi", "This document", {"200": response("OpenAPI 3.1.", ANY_OBJECT)}),
        "/docs": get("swagger_ui", "Swagger UI", {"200": response("HTML.", STR, HTML)}),
        "/": get("index", "Swagger UI (BentoML's page)", {"200": response("HTML.", STR, HTML)}),
        "/demo": get("demo", "The browser demo of the active challenge", {"200": response("HTML.", STR, HTML)},
                     "Drives the WebSocket `/v1/challenge/ws` with the camera (README \"Real time\")."),
    }


def bws_routes() -> dict[str, Any]:
    """BioID BWS 3's JSON API (edge/bws_rest.py, docs/GRPC.md "BioID BWS 3"): BWS's camelCase
    messages, errors as google.rpc.Status JSON; auth a self-signed BWS client JWT."""
    point = obj({"x": NUM, "y": NUM}, ["x", "y"])
    face = obj({"leftEye": point, "rightEye": point, "textureLivenessScore": NUM, "motionLivenessScore": NUM,
                "movementDirection": NUM}, ["textureLivenessScore", "motionLivenessScore", "movementDirection"])
    quality = obj({"check": STR, "score": NUM, "message": STR}, ["check", "score", "message"])
    props = obj({"rotated": INT, "faces": arr(face), "qualityScore": NUM, "qualityAssessments": arr(quality),
                 "frameNumber": INT}, ["rotated", "faces", "qualityScore", "qualityAssessments", "frameNumber"])
    job = {"status": {"enum": ["SUCCEEDED", "FAULTED", "CANCELLED"]},
           "errors": arr(obj({"errorCode": STR, "message": STR}, ["errorCode", "message"])),
           "imageProperties": arr(props), "live": BOOL}
    liveness = obj({**job, "livenessScore": NUM}, [*job, "livenessScore"])
    photo = obj({**job, "photoProperties": props, "verificationLevel": {"enum": [
        "NOT_RECOGNIZED", "LEVEL_1", "LEVEL_2", "LEVEL_3", "LEVEL_4", "LEVEL_5"]}, "verificationScore": NUM,
        "livenessScore": NUM}, [*job, "verificationLevel", "verificationScore", "livenessScore"])
    status = obj({"code": desc(INT, "The gRPC status code (3 INVALID_ARGUMENT, 16 UNAUTHENTICATED, ...)."),
                  "message": STR, "details": arr(obj({"@type": STR, "reason": desc(STR, "Our error code."),
                                                      "domain": STR, "metadata": ANY_OBJECT}, ["reason"]))},
                 ["code", "message", "details"])
    headers = {"jobid": header("This call's id.", required=True),
               "bws-version": header("The BWS contract version served.", required=True),
               "response-time-ms": header("Server-side time of the call.", required=True),
               "reference-number": header("The request's Reference-Number, echoed.")}
    image = obj({"image": b64("An image: JPEG, PNG or WebP"), "tags": arr(STR)}, ["image"])
    security = [{"BwsJwt": []}]
    ref_param = [{"name": "Reference-Number", "in": "header", "required": False, "schema": STR,
                  "description": "Echoed back in the answer's reference-number header."}]

    def failures(*groups: Iterable[ErrorKind]) -> dict[str, Any]:
        by_status: dict[int, set[str]] = {}
        for kind in (k for g in (*groups, KEY, SERVER, [E.INVALID_REQUEST]) for k in g):
            by_status.setdefault(kind.status, set()).add(kind.code)
        out = {str(st): response(", ".join(f"`{c}`" for c in sorted(codes)) + " (in `details[].reason`)", status,
                                 headers={**headers, **_status_headers(st, False)})
               for st, codes in sorted(by_status.items())}
        return {**out, **errors([E.REQUEST_TIMEOUT])}  # the body timeout answers before the route runs

    def post(op_id: str, summary: str, request: Schema, answer: Schema, *groups: Iterable[ErrorKind]) -> dict[str, Any]:
        return {"post": operation(op_id, summary, {"200": response("The job's answer (FAULTED: no usable face).",
                                                                   answer, headers=headers), **failures(*groups)},
                                  tags=["BioID BWS"], security=security, parameters=ref_param,
                                  body=body(content(request)))}

    images = desc(arr(image, minItems=1, maxItems=2), "1 or 2 live images.")
    return {
        "/api/v1/livenessdetection": post(
            "bws_liveness_detection", "BWS 3 LivenessDetection (passive, 1-2 images)",
            obj({"liveImages": images}, ["liveImages"]), liveness, IMAGE),
        "/api/v1/videolivenessdetection": post(
            "bws_video_liveness_detection", "BWS 3 VideoLivenessDetection",
            obj({"video": b64("A video: MP4, MOV, WebM, GIF, ...")}, ["video"]),
            liveness, VIDEO, [E.INVALID_BASE64, E.BUSY]),
        "/api/v1/photoverify": post(
            "bws_photo_verify", "BWS 3 PhotoVerify (liveness + one-to-one comparison with a photo)",
            obj({"liveImages": images, "photo": b64("The reference photo (ID document)"),
                 "disableLivenessDetection": BOOL}, ["liveImages", "photo"]), photo, IMAGE,
            [E.VERIFICATION_UNAVAILABLE]),
    }


DESCRIPTION = """\
On-premises face liveness (presentation-attack detection).  README.md is the guide; this document
is the contract of every HTTP route.

**Credentials.**  An API key in `X-API-Key` (or `Authorization: Bearer <key>`, or `hash_id` in the
body or, on GET routes, the query); an app-server session's `auth_token` as `Authorization: Bearer`
on its mode's client endpoints; the admin key in `X-Admin-Key`.  A request is charged only when it
succeeds.

**Errors.**  Every endpoint but FACIA's `/liveness` answers errors with the envelope
`{"error": {"code", "message", "details"?}, "request_id"?}` (`request_id` on the native liveness and
video endpoints; `session` when a session token made the request).  503s carry `Retry-After`, and
so do the 429s that know when.  A wrong method on a documented path answers 405
`method_not_allowed` with `Allow`.

Not described here: the WebSocket `/v1/challenge/ws` and the Socket.IO endpoint `/socket.io/`
(Liveness_service's events; README "Active challenges") and the gRPC API (docs/GRPC.md).

"""


@lru_cache(maxsize=1)
def azure_routes() -> dict[str, Any]:
    """Azure Face liveness sessions (edge/openapi_azure.py, which imports this module's helpers)."""
    from edge.openapi_azure import azure_routes as azure_group

    return azure_group()


def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group in (facia_routes, liveness_routes, challenge_routes, session_routes, azure_routes, admin_routes,
                  operations_routes, bws_routes):
        for path, item in group().items():
            paths.setdefault(path, {}).update(item)
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("liveness")
    except PackageNotFoundError:
        release = "0"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "liveness", "version": release,
                 "description": DESCRIPTION + "**Error codes** (status per code):\n\n" + catalogue_table(),
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "tags": [{"name": n} for n in ("FACIA", "Liveness", "Active challenges", "Sessions", "Azure Face", "Admin", "Operations", "BioID BWS")],
        "paths": paths,
        "components": {"schemas": COMPONENT_SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())


@lru_cache(maxsize=1)
def document_bytes() -> bytes:
    return json.dumps(_document(), separators=(",", ":")).encode()


# Swagger UI from BentoML's bundled assets (``/static_content``), without BentoML's index page's
# analytics tag: nothing here calls out of the network.
SWAGGER_UI = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>liveness API</title>
  <link rel="stylesheet" type="text/css" href="/static_content/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="/static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="/static_content/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"""
