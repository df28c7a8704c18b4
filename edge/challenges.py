"""HTTP adapter for active challenges: request parsing.

``POST /start`` {challenges?}, ``POST /process`` {session_id, image}, ``POST /complete``
{session_id}; key in X-API-Key (or ``Authorization: Bearer``, or ``hash_id`` in the JSON).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from edge.credentials import api_key_from
from edge.native import base64_field
from liveness.errors import INVALID_REQUEST, LivenessError
from liveness.imaging import ImageLimits

FRAME_FIELDS = ("image", "frame", "image_base64")


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise LivenessError(INVALID_REQUEST, "The body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise LivenessError(INVALID_REQUEST, "The JSON body must be an object.")
    return doc


def parse(body: bytes, headers: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    doc = parse_json(body)
    return api_key_from(headers, doc), doc


def frame_bytes(doc: dict[str, Any], limits: ImageLimits) -> Callable[[], bytes]:
    """A callable giving the frame's bytes: it runs after the key and session are checked."""
    return base64_field(doc, FRAME_FIELDS, limits, "The JSON body needs an 'image' field with a base64 frame.")


def challenges_field(doc: dict[str, Any]) -> list[str] | None:
    value = doc.get("challenges")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise LivenessError(INVALID_REQUEST, "'challenges' must be a list of challenge names.")
    return value
