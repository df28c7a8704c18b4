"""The one JSON parser of the edge: an object, at most ``MAX_DEPTH`` levels deep.

Python's parser recurses once per level, so ~1,000 levels in a 2 KB body used to end in a
``RecursionError`` and a 500.  The depth is measured before parsing, at C speed: ``bytes.count``
decides most bodies at once (a base64 image holds no brackets; ~0.4 ms per MB), and only a body
with more brackets than the depth limit has its strings blanked (they may contain brackets)
and the running depth of the rest summed with numpy.  Bodies are already bounded in bytes by the route's limit
(``edge.raw_body``); WebSocket messages by ``challenge_ws``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from liveness.errors import INVALID_REQUEST, LivenessError

MAX_DEPTH = 32  # our documents nest 3 levels; 32 leaves room for any client's envelope
# Arrays and objects in one body: ours have a handful.  More is a memory bomb (a 12 MB body of
# "[]," is 4 million Python lists), refused before the parser allocates any of them.
MAX_CONTAINERS = 10_000

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text (strings ignored; an upper bound for an
    invalid one, which the parser then refuses anyway)."""
    if data.count(b"[") + data.count(b"{") == 0:
        return 0
    blanked = _STRING.sub(b'""', data)
    steps = _OPEN[np.frombuffer(blanked, np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def structure_error(data: bytes, max_depth: int = MAX_DEPTH) -> LivenessError | None:
    """Why ``data`` is refused before parsing (too many containers, too deep), or None."""
    containers = data.count(b"[") + data.count(b"{")
    if containers <= max_depth:
        return None
    if containers > MAX_CONTAINERS:
        return LivenessError(
            INVALID_REQUEST, f"The JSON body has too many arrays and objects (the limit is {MAX_CONTAINERS}).",
            {"max_containers": MAX_CONTAINERS},
        )
    if nesting_depth(data) > max_depth:
        return LivenessError(
            INVALID_REQUEST, f"The JSON body is nested too deeply (the limit is {max_depth} levels).",
            {"max_depth": max_depth},
        )
    return None


def parse_object(data: bytes | str, *, empty_ok: bool = True, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The JSON object in ``data`` (``{}`` for an empty body when ``empty_ok``).  Raises
    INVALID_REQUEST for invalid JSON, a non-object or nesting over ``max_depth``."""
    doc = parse_object_or_error(data, empty_ok=empty_ok, max_depth=max_depth)
    if isinstance(doc, LivenessError):
        raise doc
    return doc


def parse_object_or_error(data: bytes | str, *, empty_ok: bool = True,
                         max_depth: int = MAX_DEPTH) -> dict[str, Any] | LivenessError:
    """``parse_object``, for callers that treat unreadable JSON their own way (FACIA): a body over
    the structure limits still raises; invalid JSON or a non-object is returned as its error."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if empty_ok and not raw.strip():
        return {}
    refused = structure_error(raw, max_depth)
    if refused is not None:
        raise refused
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return LivenessError(INVALID_REQUEST, "The body is not valid JSON.")
    if not isinstance(doc, dict):
        return LivenessError(INVALID_REQUEST, "The JSON body must be an object.")
    return doc
