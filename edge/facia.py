"""FACIA-compatible ``POST /liveness``: FACIA's request shape, status codes and exact bodies."""

from __future__ import annotations

from typing import Any

from edge.credentials import api_key_from
from edge.json_body import parse_object_or_error
from liveness import errors as E
from liveness.errors import LivenessError
from liveness.imaging import ImageLimits, strip_data_uri_and_b64decode
from liveness.pipeline import LivenessResult

SUCCESS_STATUS = 201

INVALID_CREDENTIALS = {"message": "Invalid credentials"}
CORRUPT = {"error": "Invalid or corrupt selfie image. Images must be in PNG, JPG, or JPEG format."}
REQUIRED = {"error": "Selfie_image is required and must be a JPEG, JPG or PNG."}
LIMIT_REACHED = {"message": "Your request limit has been reached."}


def parse_request(body: bytes) -> tuple[str | None, dict[str, Any]]:
    """-> (hash_id, the JSON document).  The image is decoded later, after authentication."""
    # Invalid JSON reads as an empty request (FACIA answers it with its own errors, key first);
    # a body nested or packed past the edge's limits is refused outright (400).
    doc = parse_object_or_error(body)
    if isinstance(doc, LivenessError):
        doc = {}
    return api_key_from({}, doc), doc


def selfie_bytes(doc: dict[str, Any], limits: ImageLimits) -> bytes:
    image = doc.get("selfie_image")
    if not isinstance(image, str) or not image.strip():
        raise LivenessError(E.MISSING_IMAGE, "selfie_image is required")
    return strip_data_uri_and_b64decode(image, limits)


def response(result: LivenessResult) -> dict[str, Any]:
    return {
        # Full precision, as FACIA answers (docs/COMPATIBILITY.md "FACIA"): no rounding here.
        "liveness_result": {"is_live": int(result.is_live), "liveness_score": float(result.score)},
        "message": "Success",
    }


def error_response(err: LivenessError) -> tuple[int, dict[str, Any]]:
    """FACIA's bodies for the cases FACIA documents; FACIA's style for the ones it does not."""
    kind = err.kind
    if kind in (E.MISSING_API_KEY, E.INVALID_API_KEY):
        return 401, INVALID_CREDENTIALS
    if kind is E.QUOTA_EXCEEDED:
        return 429, LIMIT_REACHED
    if kind is E.MISSING_IMAGE:
        return 400, REQUIRED
    if kind in (E.INVALID_BASE64, E.EMPTY_IMAGE, E.UNSUPPORTED_FORMAT, E.CORRUPT_IMAGE, E.INVALID_REQUEST):
        return 400, CORRUPT
    if kind in (E.IMAGE_TOO_LARGE, E.IMAGE_TOO_MANY_PIXELS, E.IMAGE_TOO_SMALL):
        return kind.status, {"error": err.message}
    if kind in (E.NO_FACE, E.MULTIPLE_FACES):
        return 400, {"error": err.message}
    return kind.status, {"error": err.message}
