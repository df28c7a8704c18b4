"""Real-time active-liveness channel: ``/v1/challenge/ws`` (a Starlette WebSocket route).

A thin adapter over ``ChallengeService`` (liveness.challenges): it speaks JSON events and binary
JPEG frames, the service owns sessions, steps, keys and verdicts.

Protocol (docs in README "Challenge WebSocket"):

client -> server
  1. text   {"type": "start", "api_key": "lk_...", "challenges"?: ["blink", ...], "admin_key"?: "..."}
            or {"type": "start", "auth_token": "<session token>"} (an app-server session of mode
            challenge[-verify]: the browser never holds the API key)
  2. binary one JPEG frame per message (~8-10 fps), any number
     text   {"type": "cancel"} ends the session (close 1000)

server -> client (text, JSON)
  {"type": "challenge", "session_id", "instruction", "current_step", "total_steps", "expires_in_minutes"}
  {"type": "feedback", "face_detected", "instruction", "step_completed", "current_step", "total_steps",
   "reason", "passive_score"}                     one per frame; reason "frame_too_fast" = frame dropped
  {"type": "result", "verdict", "steps_completed", "verification_time", "result_token"}   then close 1000
                                                  with a session token: the verdict fields only if the
                                                  session sends results to the client, and "session"
  {"type": "error", "code", "message", "status"}  then close (see ``close_code``)

The per-connection flow (``Channel``, ``driver_for``, ``parse_start``) is shared with the
Socket.IO endpoint (edge.challenge_socketio), which words its events as Liveness_service did.

Frames that arrive faster than ``min_frame_interval`` (on the injected ``clock``) or while the
previous frame is still being processed are dropped (a feedback event with reason
"frame_too_fast"), never queued: the client is live video, so the newest frame is the one worth
analysing.

Limits: a text message (the start message, cancel) is at most ``MAX_START_BYTES``: no text
message carries a frame, frames are binary and at most ``max_frame_bytes`` (the image byte
limit).  Every text message is parsed by the edge's one JSON parser (``edge.json_body``: depth
and container limits), so a hostile one is an ``invalid_request`` error event (close 1008),
never our failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from edge import render
from edge.credentials import check_admin_key
from edge.json_body import parse_object
from liveness.challenges.service import chosen_challenges, refuse_choice_by_session_token
from liveness.errors import (
    IMAGE_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    MISSING_API_KEY,
    NOT_READY,
    LivenessError,
)
from liveness.sessions import flows, require_sessions

log = logging.getLogger("liveness.challenge_ws")

PATH = "/v1/challenge/ws"
FRAME_TOO_FAST = "frame_too_fast"  # feedback reason of a dropped frame (also ChallengeService's error code)
MAX_START_BYTES = 4 * 1024          # the start message (and any other text message)
MIN_FRAME_INTERVAL_S = 1 / 15       # the page sends 8-10 fps; allow jitter, refuse floods
IDLE_TIMEOUT_S = 30.0               # no message for this long ends the socket
START_TIMEOUT_S = 10.0              # the start message must come this soon after connecting

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008                # authentication / quota / protocol violation
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013             # the service is not ready / a model is unavailable

ServiceGetter = Callable[[], Any]   # -> ChallengeService of this worker (or None while loading)


def close_code(err: LivenessError) -> int:
    if err.status == 413:
        return CLOSE_TOO_BIG
    if err.status == 503:
        return CLOSE_TRY_AGAIN
    if err.status >= 500:
        return CLOSE_INTERNAL
    return CLOSE_POLICY


def _refusal(data: bytes) -> str:
    try:
        parse_object(data, empty_ok=False)
    except LivenessError as err:
        return err.message
    raise AssertionError(f"edge.json_body accepted {data!r}")


_NOT_AN_OBJECT = _refusal(b"[]")  # the parser's words for valid JSON that is no object


def _json_message(text: str, what: str) -> dict[str, Any] | None:
    """A text message as a JSON object by the edge's one parser (``edge.json_body``); None when
    it is valid JSON but no object.  Raises INVALID_REQUEST in the socket's words (``what``: "The
    start message", ...): not JSON, or nested or packed past the parser's limits (its details)."""
    try:
        return parse_object(text, empty_ok=False)
    except LivenessError as err:
        if err.details:  # a structure limit (max_depth, max_containers)
            raise LivenessError(INVALID_REQUEST, err.message.replace("The JSON body", what), err.details) from None
        if err.message == _NOT_AN_OBJECT:
            return None
        raise LivenessError(INVALID_REQUEST, f"{what} is not valid JSON.") from None


def parse_start(text: str) -> dict[str, Any]:
    """Validate the first message; returns {"api_key", "auth_token", "challenges", "admin_key"}
    (exactly one of api_key / auth_token)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_START_BYTES:
        raise LivenessError(INVALID_REQUEST, f"The start message exceeds {MAX_START_BYTES} bytes.")
    doc = _json_message(text, "The start message")
    if doc is None or doc.get("type") != "start":
        raise LivenessError(INVALID_REQUEST, 'The first message must be {"type": "start", "api_key": ...}.')
    api_key, auth_token = doc.get("api_key"), doc.get("auth_token")
    if not api_key and not auth_token:
        raise LivenessError(MISSING_API_KEY, "The start message needs an api_key (or a session's auth_token).")
    if api_key and auth_token:
        raise LivenessError(INVALID_REQUEST, "Send either api_key or auth_token, not both.")
    for name, value in (("api_key", api_key), ("auth_token", auth_token)):
        if value and not isinstance(value, str):
            raise LivenessError(INVALID_REQUEST, f"'{name}' must be a string.")
    challenges = doc.get("challenges")
    if challenges is not None:
        chosen_challenges(challenges)  # refused before anything is looked up (the service checks it too)
    admin_key = doc.get("admin_key")
    if admin_key is not None and not isinstance(admin_key, str):
        raise LivenessError(INVALID_REQUEST, "'admin_key' must be a string.")
    if auth_token:
        refuse_choice_by_session_token(challenges is not None or admin_key is not None)
    return {"api_key": api_key or None, "auth_token": auth_token or None, "challenges": challenges,
            "admin_key": admin_key}


class _KeyDriver:
    """The flow for an API key: ChallengeService charges its unit at the start."""

    def __init__(self, service: Any, api_key: str, challenges: list[str] | None, admin: bool) -> None:
        self.service, self.key, self.challenges, self.admin = service, api_key, challenges, admin

    async def start(self) -> dict[str, Any]:
        return await self.service.start(self.key, self.challenges, admin=self.admin)

    async def process(self, session_id: str, frame: bytes) -> dict[str, Any]:
        return await self.service.process(self.key, session_id, frame)

    async def complete(self, session_id: str) -> dict[str, Any]:
        return await self.service.complete(self.key, session_id)


class _TokenDriver:
    """The flow for an app-server session's token: one attempt of that session (liveness.sessions)."""

    def __init__(self, sessions: Any, token: str) -> None:
        self.sessions, self.token = sessions, token

    async def start(self) -> dict[str, Any]:
        return await flows.challenge_start(self.sessions, self.token)

    async def process(self, session_id: str, frame: bytes) -> dict[str, Any]:
        return await flows.challenge_process(self.sessions, self.token, session_id, lambda: frame)

    async def complete(self, session_id: str) -> dict[str, Any]:
        return flows.challenge_answer(await flows.challenge_complete(self.sessions, self.token, session_id))


def _challenge_event(started: dict[str, Any]) -> dict[str, Any]:
    keys = ("session_id", "instruction", "current_step", "total_steps", "expires_in_minutes")
    return {"type": "challenge", **{k: started.get(k) for k in keys}}


def _feedback_event(out: dict[str, Any]) -> dict[str, Any]:
    keys = ("face_detected", "instruction", "step_completed", "current_step", "total_steps", "reason", "passive_score")
    return {"type": "feedback", **{k: out.get(k) for k in keys}}


def _result_event(done: dict[str, Any]) -> dict[str, Any]:
    keys = ("verdict", "steps_completed", "verification_time", "result_token")
    event = {"type": "result", **{k: done.get(k) for k in keys}}
    if "session" in done:  # a session token's attempt: the verdict may be for the app server only
        event = {k: v for k, v in event.items() if k == "type" or k in done}
        event["session"] = done["session"]
    return event


def error_event(err: LivenessError) -> dict[str, Any]:
    return {"type": "error", "code": err.code, "message": err.message, "status": err.status}


@dataclass(frozen=True)
class Events:
    """How a channel words its events (each gets the service's answer, returns the event with its
    ``type``): this socket's compact ones by default; the Socket.IO channel's carry every field of
    the matching REST answer (edge.challenge_socketio)."""

    challenge: Callable[[dict[str, Any]], dict[str, Any]] = _challenge_event
    feedback: Callable[[dict[str, Any]], dict[str, Any]] = _feedback_event
    result: Callable[[dict[str, Any]], dict[str, Any]] = _result_event
    error: Callable[[LivenessError], dict[str, Any]] = error_event


Send = Callable[[dict[str, Any]], Awaitable[None]]   # delivers one event to the client (if still there)
_KEPT = ("instruction", "current_step", "total_steps", "challenge")  # what a dropped frame's feedback repeats


class Channel:
    """One connected client of a real-time transport (this WebSocket, or Socket.IO): sends are
    serialised, frames are analysed one at a time; a frame that comes too soon or while one is
    being analysed is dropped with a ``frame_too_fast`` feedback.  ``finished`` is set when the
    result was sent or the session failed (``failure``: what to report).  ``recoverable(err)``:
    whether a frame's error only costs that frame (an error event; the session goes on) instead
    of ending the channel (the default: every error ends it)."""

    def __init__(self, send: Send, min_frame_interval: float, clock: Callable[[], float] = time.monotonic, *,
                 events: Events = Events(), recoverable: Callable[[LivenessError], bool] = lambda err: False) -> None:
        self._deliver = send
        self.min_frame_interval = min_frame_interval
        self.clock = clock
        self.events = events
        self.recoverable = recoverable
        self.send_lock = asyncio.Lock()
        self.driver: _KeyDriver | _TokenDriver | None = None
        self.session_id = ""
        self.state: dict[str, Any] = {}       # last known instruction / step, for dropped frames
        self.last_frame_at = float("-inf")
        self.worker: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        self.failure: BaseException | None = None

    async def send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            await self._deliver(event)

    async def start(self, driver: _KeyDriver | _TokenDriver) -> None:
        self.driver = driver
        started = await driver.start()
        self.session_id = started["session_id"]
        self.state = {k: started.get(k) for k in _KEPT}
        await self.send(self.events.challenge(started))

    def busy(self) -> bool:
        return self.worker is not None and not self.worker.done()

    async def dropped(self) -> None:
        await self.send(self.events.feedback({
            **self.state, "session_id": self.session_id, "face_detected": None, "step_completed": False,
            "verification_complete": False, "verification_failed": False,
            "reason": FRAME_TOO_FAST, "passive_score": None,
        }))

    async def frame(self, data: bytes) -> None:
        now = self.clock()
        if self.busy() or now - self.last_frame_at < self.min_frame_interval:
            await self.dropped()
            return
        self.last_frame_at = now
        self.worker = asyncio.create_task(self._analyse(data))

    async def _analyse(self, data: bytes) -> None:
        try:
            try:
                out = await self.driver.process(self.session_id, data)
            except LivenessError as err:
                if err.code == FRAME_TOO_FAST:  # the service's own rate limit: drop, don't fail
                    await self.dropped()
                    return
                if not self.recoverable(err):
                    raise
                await self.send(self.events.error(err))  # this frame only: the session goes on
                return
            self.state = {k: out.get(k, self.state.get(k)) for k in _KEPT}
            await self.send(self.events.feedback(out))
            if out.get("verification_complete") or out.get("verification_failed"):
                done = await self.driver.complete(self.session_id)
                await self.send(self.events.result(done))
                self.finished.set()
        except BaseException as e:  # noqa: BLE001 - handed to the receive loop, which reports it
            self.failure = e
            self.finished.set()

    async def wait_worker(self) -> None:
        if self.worker is not None:
            await asyncio.gather(self.worker, return_exceptions=True)

    def cancel(self) -> None:
        if self.busy():
            assert self.worker is not None
            self.worker.cancel()


async def _receive(ws: WebSocket, timeout: float) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    return msg


async def _fail(ws: WebSocket, err: LivenessError, send_lock: asyncio.Lock | None = None) -> None:
    event = error_event(err)
    lock = send_lock or asyncio.Lock()
    async with lock:
        if ws.application_state == WebSocketState.CONNECTED:
            try:
                await ws.send_text(json.dumps(event))
                await ws.close(close_code(err), reason=err.code[:120])
            except (RuntimeError, WebSocketDisconnect, OSError):
                pass


def driver_for(start: dict[str, Any], service: Any, get_sessions: ServiceGetter,
               admin_key_sha256: str | None) -> _KeyDriver | _TokenDriver:
    """The flow a validated start (``parse_start``) asks for: an app-server session's attempt for
    an ``auth_token``, else the API key's own session (admin options checked first)."""
    if start["auth_token"] is not None:
        return _TokenDriver(require_sessions(get_sessions()), start["auth_token"])
    if start["admin_key"] is not None:
        check_admin_key(start["admin_key"], admin_key_sha256,
                        off="Admin options are off: set LIVENESS_ADMIN_KEY_SHA256.", wrong="Wrong admin_key.")
    return _KeyDriver(service, start["api_key"], start["challenges"], admin=start["admin_key"] is not None)


def challenge_ws_routes(
    get_service: ServiceGetter,
    admin_key_sha256: Callable[[], str | None],
    *,
    get_sessions: ServiceGetter = lambda: None,
    max_frame_bytes: Callable[[], int] = lambda: 2 * 1024 * 1024,
    min_frame_interval: float = MIN_FRAME_INTERVAL_S,
    idle_timeout: float = IDLE_TIMEOUT_S,
    start_timeout: float = START_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
) -> list[WebSocketRoute]:
    """The socket's route.  ``clock`` (monotonic seconds) times the frame interval."""

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        channel: Channel | None = None

        async def deliver(event: dict[str, Any]) -> None:
            if ws.application_state == WebSocketState.CONNECTED:
                await ws.send_text(json.dumps(event))

        try:
            service = get_service()
            if service is None:
                raise LivenessError(NOT_READY, "The challenge service is loading; retry shortly.", {"retry_after": 1})
            msg = await _receive(ws, start_timeout)
            if msg.get("text") is None:
                raise LivenessError(INVALID_REQUEST, 'Send {"type": "start", ...} as text before any frame.')
            start = parse_start(msg["text"])
            channel = Channel(deliver, min_frame_interval, clock)
            await channel.start(driver_for(start, service, get_sessions, admin_key_sha256()))
            limit = max_frame_bytes()
            while not channel.finished.is_set():
                recv = asyncio.ensure_future(_receive(ws, idle_timeout))
                done_wait = asyncio.ensure_future(channel.finished.wait())
                await asyncio.wait({recv, done_wait}, return_when=asyncio.FIRST_COMPLETED)
                done_wait.cancel()
                if not recv.done():
                    recv.cancel()
                    await asyncio.gather(recv, return_exceptions=True)
                    break
                msg = recv.result()
                if msg.get("bytes") is not None:
                    data = msg["bytes"]
                    if len(data) > limit:
                        raise LivenessError(IMAGE_TOO_LARGE, f"A frame exceeds {limit} bytes.")
                    if not data:
                        continue
                    await channel.frame(data)
                elif msg.get("text") is not None:
                    if _is_cancel(msg["text"]):
                        channel.cancel()
                        await ws.close(CLOSE_NORMAL, reason="cancelled")
                        return
                    raise LivenessError(INVALID_REQUEST, 'After "start" send binary JPEG frames or {"type": "cancel"}.')
            await channel.wait_worker()
            if channel.failure is not None:
                raise channel.failure
            async with channel.send_lock:
                if ws.application_state == WebSocketState.CONNECTED:
                    await ws.close(CLOSE_NORMAL)
        except WebSocketDisconnect:
            if channel is not None:
                channel.cancel()
        except asyncio.TimeoutError:
            await _fail(ws, LivenessError(INVALID_REQUEST, "No message within the time limit."),
                        channel.send_lock if channel else None)
        except LivenessError as err:
            if channel is not None:
                channel.cancel()
            await _fail(ws, err, channel.send_lock if channel else None)
        except asyncio.CancelledError:
            if channel is not None:
                channel.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the socket gets an error event, the log the traceback
            render.log_unexpected("challenge websocket", exc, logger=log)
            if channel is not None:
                channel.cancel()
            await _fail(ws, LivenessError(INTERNAL_ERROR, "Internal error."), channel.send_lock if channel else None)

    return [WebSocketRoute(PATH, endpoint)]


def _is_cancel(text: str) -> bool:
    """Whether a text message after "start" is {"type": "cancel"}: over ``MAX_START_BYTES`` or
    not JSON it is not (the caller's protocol error); past the parser's limits it is refused."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_START_BYTES:
        return False
    try:
        doc = _json_message(text, "The message")
    except LivenessError as err:
        if err.details:
            raise
        return False
    return doc is not None and doc.get("type") == "cancel"
