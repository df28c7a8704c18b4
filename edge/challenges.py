"""HTTP adapter for active challenges: request parsing, and the ``GET /health`` answer.

``POST /start`` {challenges?}, ``POST /process`` {session_id, image}, ``POST /complete``
{session_id}; key in X-API-Key (or ``Authorization: Bearer``, or ``hash_id`` in the JSON).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Mapping

from edge.credentials import api_key_from
from edge.json_body import parse_object
from edge.native import base64_field
from liveness.imaging import ImageLimits

FRAME_FIELDS = ("image", "frame", "image_base64")
SERVICE_NAME = "liveness"


def _release() -> str:
    try:
        return version("liveness")
    except PackageNotFoundError:
        return "0"


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a body (``{}`` when empty), by the edge's one parser (``edge.json_body``:
    depth and container limits).  Raises INVALID_REQUEST."""
    return parse_object(body)


def parse(body: bytes, headers: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    doc = parse_json(body)
    return api_key_from(headers, doc), doc


def frame_bytes(doc: dict[str, Any], limits: ImageLimits) -> Callable[[], bytes]:
    """A callable giving the frame's bytes: it runs after the key and session are checked."""
    return base64_field(doc, FRAME_FIELDS, limits, "The JSON body needs an 'image' field with a base64 frame.")


async def health(core: Any, challenges: Any) -> tuple[dict[str, Any], int]:
    """``GET /health`` (no key): Liveness_service's fields.  ``active_sessions`` is the
    server-wide count of live challenge sessions (all keys together, as that service showed it
    publicly): load, never a tenant's figure; ``max_sessions`` is ``challenge_max_sessions``."""
    body: dict[str, Any] = {"status": "loading", "service": SERVICE_NAME, "version": _release()}
    if core is None or not core.ready or challenges is None:
        return body, 503
    active = await asyncio.to_thread(challenges.active_sessions)
    return {**body, "status": "healthy", "active_sessions": active,
            "max_sessions": challenges.settings.challenge_max_sessions}, 200
