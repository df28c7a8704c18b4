"""ASGI middleware for routes that parse their own bodies.

Two jobs, both before any handler runs: (1) refuse bodies over the route's byte limit without
reading them into memory (Content-Length checked first, then a counted read for chunked
uploads); (2) hide the real Content-Type from the framework, which would otherwise pick its own
deserializer (and, for multipart, spool uploads to temporary files and fetch URL-valued file
fields).  The original type travels in ``x-liveness-content-type``, and the body's length in
``x-liveness-body-length``: BentoML hands an API ``b"{}"`` for an empty body (its JSON serde's
default), so an API tells an empty body from a literal ``{}`` by that header (``replayed_body``).
A client cannot forge either header: both are replaced.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Mapping

from liveness.errors import IMAGE_TOO_LARGE, LivenessError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ORIGINAL_CONTENT_TYPE = "x-liveness-content-type"
BODY_LENGTH = "x-liveness-body-length"
_OURS = (b"content-type", ORIGINAL_CONTENT_TYPE.encode(), BODY_LENGTH.encode())
TooLarge = Callable[[str, int], dict[str, Any]]  # (path, limit) -> JSON body of the 413


class RawBodyMiddleware:
    def __init__(self, app: Any, routes: dict[str, int], too_large: TooLarge) -> None:
        self.app = app
        self.routes = routes
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _OURS]
        original = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(scope, send, limit)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._reject(scope, send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        full = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": full, "more_body": False}
            return await receive()

        headers += [(b"content-type", b"application/octet-stream"), (ORIGINAL_CONTENT_TYPE.encode(), original),
                    (BODY_LENGTH.encode(), str(len(full)).encode())]
        await self.app({**scope, "headers": headers}, replay, send)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        payload = json.dumps(self.too_large(scope["path"], limit)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def replayed_body(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The body an API was given, as the client sent it: ``b""`` where the framework substituted
    ``b"{}"`` for an empty one (``BODY_LENGTH`` says 0)."""
    return b"" if headers.get(BODY_LENGTH) == "0" else body


async def read_body(request: Any, limit: int, kind: Any = None) -> bytes:
    """A Starlette route's body (no RawBodyMiddleware in front of it), refused with ``kind``
    (default IMAGE_TOO_LARGE, 413) over ``limit`` bytes: by its Content-Length before a byte is
    read, else while it is read, so an oversized chunked upload is never held in full."""
    too_large = LivenessError(kind or IMAGE_TOO_LARGE, f"The request body exceeds {limit} bytes.", {"limit": limit})
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
