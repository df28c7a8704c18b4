"""Edge timeouts against slow clients: a request's head and its body must arrive within bounds.

BentoML 1.4.39 runs one ``uvicorn.Server`` per worker (``_bentoml_impl.worker.service``) with
``http="auto"``, which is h11 here (httptools is not installed), and passes it only
``timeout_keep_alive`` (5 s) and ``timeout_graceful_shutdown``.  uvicorn 0.54 has no header or body
timeout: its keep-alive timer starts only after a response, and every received byte cancels it.
BentoML's traffic ``timeout`` (``TimeoutMiddleware``) answers 504 after 30 s but only once the
head is complete, and leaves the connection open.  So a client that trickles its headers holds a
connection (and a file descriptor) for as long as it likes, and one that trickles its body holds
it for 30 s, then for ever if it keeps trickling.

- **Head** (``HeadTimeoutProtocol``, an ``H11Protocol``): a timer starts when a connection opens
  and again when a response completes (a kept-alive connection waits for its next request).  The
  request line and headers must be complete before it fires; otherwise the connection is closed,
  after a 408 when part of a head arrived.  ``install_header_timeout`` makes it what uvicorn's
  ``"auto"`` and ``"h11"`` protocols resolve to in this process; it must run before uvicorn loads
  its config, which a worker does after importing service.py.
- **Body** (``BodyTimeoutMiddleware``, raw ASGI): the app's ``receive()`` calls share one deadline,
  ``timeout_s`` after the head; at the deadline the client gets a 408 with ``Connection: close``
  and the app gets ``http.disconnect``.  Only the event loop waits: no thread is held.

The 408 body is the native error envelope (code ``request_timeout``), FACIA's ``{"error": ...}``
on FACIA's routes.  No BentoML import here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, Awaitable, Callable, Collection

import h11
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.h11_impl import H11Protocol

from liveness import errors

log = logging.getLogger("liveness.timeouts")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_TIMEOUT = errors.REQUEST_TIMEOUT.code  # the error code of both 408s
FACIA_PATHS = frozenset({"/liveness"})
PROTOCOL = f"{__name__}:HeadTimeoutProtocol"


def error_body(message: str, request_id: str | None = None) -> dict[str, Any]:
    """The native envelope of a 408."""
    return {"error": {"code": REQUEST_TIMEOUT, "message": message}, "request_id": request_id or uuid.uuid4().hex}


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# -- the request head ----------------------------------------------------------------------------


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on every request head (module docstring)."""

    header_timeout_s: float = 0.0  # install_header_timeout sets it; 0: no deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope:  # a head was parsed: a request (or a WebSocket upgrade) began
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        self._arm_head_timer()  # first: a pipelined request that super() parses cancels it
        super().on_response_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        if self.header_timeout_s > 0:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        timer, self._head_timer = getattr(self, "_head_timer", None), None
        if timer is not None:
            timer.cancel()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # closed already, or a request is being served (the body deadline's business)
        partial_head = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if partial_head:
            payload = _json(error_body(f"The request headers did not arrive within {self.header_timeout_s:g} s."))
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(payload), payload)
            )
        # else: an idle connection, or the unread rest of a body already answered: just close.
        log.debug("closed %s: no complete request head within %g s (partial: %s)",
                  self.client, self.header_timeout_s, partial_head)
        self.transport.close()


def install_header_timeout(seconds: float) -> None:
    """Make uvicorn's ``auto`` and ``h11`` HTTP protocols ``HeadTimeoutProtocol`` in this process,
    with this deadline (seconds; 0 or less: leave uvicorn's protocols alone)."""
    if seconds <= 0:
        return
    HeadTimeoutProtocol.header_timeout_s = float(seconds)
    for name in ("auto", "h11"):
        uvicorn_config.HTTP_PROTOCOLS[name] = PROTOCOL


# -- the request body ----------------------------------------------------------------------------


class BodyTimeoutMiddleware:
    """A deadline on an HTTP request's body, ``timeout_s`` after its head (module docstring).

    Must sit outside every middleware that reads bodies (``RawBodyMiddleware``): add it first."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], timeout_s: float,
                 facia_paths: Collection[str] = FACIA_PATHS) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.facia_paths = frozenset(facia_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.timeout_s <= 0:
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_done = started = expired = answered = False

        async def timed_receive() -> Message:
            nonlocal body_done, expired, answered
            if expired:
                return {"type": "http.disconnect"}
            if body_done:  # after the body only a disconnect is awaited: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                expired = True
                if not started:
                    answered = True
                    await self._reject(scope, send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 408 was this request's answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not answered:
                raise
            log.debug("%s %s after its body timed out", scope.get("method"), scope.get("path"), exc_info=True)

    async def _reject(self, scope: Scope, send: Send) -> None:
        message = f"The request body did not arrive within {self.timeout_s:g} s."
        request_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = request_id or uuid.uuid4().hex
        payload = {"error": message} if scope.get("path") in self.facia_paths else error_body(message, request_id)
        body = _json(payload)
        log.debug("408 %s %s: body not complete within %g s", scope.get("method"), scope.get("path"), self.timeout_s)
        await send({
            "type": "http.response.start",
            "status": 408,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"), (b"x-request-id", request_id.encode("latin-1"))],
        })
        await send({"type": "http.response.body", "body": body})


def add_timeouts(service: Any, settings: Any) -> None:
    """Both deadlines for a BentoML service: ``settings.header_timeout_s`` (uvicorn's protocol in this
    process) and ``settings.body_timeout_s`` (ASGI).  Call before any other ``add_asgi_middleware``
    that reads bodies (BentoML nests the first added outermost)."""
    install_header_timeout(settings.header_timeout_s)
    service.add_asgi_middleware(BodyTimeoutMiddleware, timeout_s=settings.body_timeout_s)
