"""Socket.IO channel of the active challenge at ``/socket.io/``: Liveness_service's real-time
clients (its ``li.py`` / ``li_ssl.py`` servers, Flask-SocketIO) work with only the host changed.

A thin adapter: python-socketio's ``AsyncServer`` (ASGI) carries the events; the flow, its
limits and its charging are the challenge WebSocket's ``Channel`` over ``ChallengeService``
(edge.challenge_ws), so a session costs one unit at its start, frames are metered on the
injected clock and by the service, and the per-key session caps hold.

Events (README "Active challenges", docs/COMPATIBILITY.md):

client -> server
  connect   credential: the ``auth`` dict ``{"api_key"}`` (or ``{"auth_token"}``, an app-server
            session's token; ``challenges`` + ``admin_key`` as on the WebSocket), else the query
            ``?api_key=`` (or ``hash_id``), else ``X-API-Key`` / ``Authorization: Bearer``, else the
            key ``anonymous_routes`` names for ``/socket.io/`` (the seed's clients send none)
  frame     one frame: JPEG (PNG, WebP) bytes as a binary attachment, a base64 string or data URI,
            or ``{"image": ...}`` holding either

server -> client
  challenge every field of ``POST /start`` + ``challenge`` (the seed's step name: BLINK, CENTER,
            TURN_LEFT, ...; ``step`` is ours); again after each completed step, for the next one
  feedback  every field of ``POST /process`` + the seed's ``status`` (SUCCESS: a step was done,
            FAIL: no face or the session failed, INFO: otherwise) and ``message``; one per frame,
            ``reason: "frame_too_fast"`` for a dropped one
  result    every field of ``POST /complete`` + ``status`` (SUCCESS / FAIL; COMPLETED for a
            session token that keeps results from the client) and ``token`` (= ``result_token``);
            then the server disconnects
  error     ``{"code", "message", "status", "success": false}``: at connect (then disconnect),
            for a frame that is not an image (the session goes on: that frame is not analysed),
            or for what ends the session (expiry, our failure: then disconnect)

A disconnect leaves the session in the store until it expires, as the WebSocket does.  Frames
are checked against the image byte limit before any decode (and engine.io refuses messages over
``max_http_buffer_size``); they are never logged or kept.

Several workers share the port and no balancer is sticky: Engine.IO's session ids name the
worker that answered the handshake, and a polling request that lands on another worker is relayed
to it over its private Unix socket (edge.socketio_workers: started with the worker's first
Socket.IO request; ``stop_worker_sockets`` from the service's shutdown hook), so every client
transport works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs

import socketio
from starlette.routing import Mount

from edge import render
from edge.challenge_ws import MIN_FRAME_INTERVAL_S, Channel, Events, ServiceGetter, driver_for, error_event, parse_start
from edge.challenges import frame_bytes
from edge.credentials import api_key_from, is_session_token, or_route_key
from edge.socketio_workers import SessionRouter, own_session_ids, stop_worker_sockets
from liveness.imaging import ImageLimits
from liveness import errors as E
from liveness.errors import LivenessError

log = logging.getLogger("liveness.challenge_socketio")

PATH = "/socket.io/"  # the anonymous_routes entry that opens the endpoint to callers without a key
MOUNT = "/socket.io"
PING_INTERVAL_S = 20  # a long poll must answer within BentoML's 30 s traffic timeout
FORWARD_TIMEOUT_S = PING_INTERVAL_S + 5  # a long poll relayed to its worker: past its ping, within the 30 s
# A frame's error that costs only that frame (its input, or a busy decoder): the session goes on.
RECOVERABLE = frozenset(k.code for k in (
    E.MISSING_IMAGE, E.INVALID_BASE64, E.EMPTY_IMAGE, E.UNSUPPORTED_FORMAT, E.CORRUPT_IMAGE, E.IMAGE_TOO_LARGE,
    E.IMAGE_TOO_MANY_PIXELS, E.IMAGE_TOO_SMALL, E.INVALID_REQUEST, E.BUSY,
))
_SEED_NAMES = {"look_center": "CENTER"}  # the seed's sequence words; the rest are ours in capitals


def seed_challenge(step: str | None) -> str | None:
    return None if step is None else _SEED_NAMES.get(step, step.upper())


# -- events ----------------------------------------------------------------------------------------------


def _challenge_event(started: Mapping[str, Any]) -> dict[str, Any]:
    return {**started, "type": "challenge", "success": True, "step": started.get("challenge"),
            "challenge": seed_challenge(started.get("challenge"))}


def _next_challenge(feedback: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("session_id", "instruction", "current_step", "total_steps", "step")
    return {**{k: feedback.get(k) for k in keys}, "type": "challenge", "success": True,
            "challenge": seed_challenge(feedback.get("step"))}


def _feedback_event(out: Mapping[str, Any]) -> dict[str, Any]:
    if out.get("step_completed"):
        status = "SUCCESS"
    elif out.get("face_detected") is False or out.get("verification_failed"):
        status = "FAIL"
    else:
        status = "INFO"
    message = "Frame skipped: too soon after the previous one." if out.get("reason") == "frame_too_fast" \
        else out.get("instruction")
    return {**out, "type": "feedback", "success": True, "status": status, "message": message,
            "step": out.get("challenge"), "challenge": seed_challenge(out.get("challenge"))}


def _result_event(done: Mapping[str, Any]) -> dict[str, Any]:
    event = {**done, "type": "result"}
    if "verdict" not in done:  # a session token whose results stay with the app server
        return {**event, "status": "COMPLETED"}
    return {**event, "status": "SUCCESS" if done.get("passed") else "FAIL", "token": done.get("result_token")}


def _error_event(err: LivenessError) -> dict[str, Any]:
    return {**error_event(err), "success": False}


EVENTS = Events(challenge=_challenge_event, feedback=_feedback_event, result=_result_event, error=_error_event)


# -- connect: who is calling -------------------------------------------------------------------------------


def start_request(auth: Any, environ: Mapping[str, Any], routes: Mapping[str, str]) -> dict[str, Any]:
    """The start the connection asks for (``parse_start``'s shape, its limits and refusals):
    the credential from ``auth``, the query, the headers, or the route's anonymous key."""
    auth = auth if isinstance(auth, dict) else {}
    doc: dict[str, Any] = {"type": "start", **{k: auth[k] for k in ("api_key", "auth_token", "challenges", "admin_key")
                                               if auth.get(k) is not None}}
    if not doc.get("api_key") and not doc.get("auth_token"):
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        headers = {"x-api-key": environ.get("HTTP_X_API_KEY"), "authorization": environ.get("HTTP_AUTHORIZATION")}
        sent = api_key_from({k: v for k, v in headers.items() if v},
                            {"hash_id": (query.get("api_key") or query.get("hash_id") or [None])[0]})
        if sent is not None:
            doc["api_key"] = sent
    if isinstance(doc.get("api_key"), str) and is_session_token(doc["api_key"]):
        doc["auth_token"] = doc.pop("api_key")  # a session token sent where a key goes, as on REST
    route_key = None
    if not doc.get("api_key") and not doc.get("auth_token"):
        route_key = or_route_key(None, routes, PATH)
        if route_key is None:
            raise LivenessError(E.MISSING_API_KEY, "Connect with auth {\"api_key\": ...}, ?api_key= or an X-API-Key "
                                                   "header (or ask the operator to open /socket.io/ in anonymous_routes).")
        doc["api_key"] = "route-key"  # validated like any start, then replaced by the route's key
    start = parse_start(json.dumps(doc))
    if route_key is not None:
        start["api_key"] = route_key
    return start


def frame_payload(data: Any, limits: Any) -> bytes:
    """A ``frame`` event's image bytes, size-checked before any decode.  Raises MISSING_IMAGE,
    IMAGE_TOO_LARGE, INVALID_BASE64 or INVALID_REQUEST (the frame's error event)."""
    if isinstance(data, dict):
        data = next((data[k] for k in ("image", "frame", "image_base64") if data.get(k) is not None), None)
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > limits.max_bytes:
            raise LivenessError(E.IMAGE_TOO_LARGE, f"A frame exceeds {limits.max_bytes} bytes.")
        return raw
    if isinstance(data, str):
        return frame_bytes({"image": data}, limits)()  # the REST frame's base64 / data-URI rules and limits
    if data is None:
        raise LivenessError(E.MISSING_IMAGE, "A frame event needs JPEG bytes, a base64 string or {\"image\": ...}.")
    raise LivenessError(E.INVALID_REQUEST, "A frame is JPEG bytes, a base64 string or {\"image\": ...}.")


# -- the server ----------------------------------------------------------------------------------------------


def challenge_socketio_app(
    get_service: ServiceGetter,
    admin_key_sha256: Callable[[], str | None],
    *,
    get_sessions: ServiceGetter = lambda: None,
    anonymous_routes: Callable[[], Mapping[str, str]] = dict,
    max_frame_bytes: int = 2 * 1024 * 1024,
    min_frame_interval: float = MIN_FRAME_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    cors_origins: list[str] | str | None = None,
    worker_id: str | None = None,
) -> socketio.ASGIApp:
    """The ASGI app serving ``/socket.io/``.  ``clock`` (monotonic seconds) times the frame interval;
    ``cors_origins`` None: same origin only (python-socketio's default); ``worker_id`` (default: the
    process id) starts every Engine.IO session id (edge.socketio_workers)."""
    if isinstance(cors_origins, (list, tuple)) and "*" in cors_origins:
        cors_origins = "*"  # python-socketio's "any origin" is the string, not a list entry
    sio = socketio.AsyncServer(
        async_mode="asgi", cors_allowed_origins=cors_origins, always_connect=True,  # events may go out in connect
        # room for a base64 frame of max_frame_bytes; over it engine.io drops the message
        max_http_buffer_size=max_frame_bytes * 4 // 3 + 64 * 1024,
        ping_interval=PING_INTERVAL_S, logger=False, engineio_logger=False,
    )
    own_session_ids(sio.eio, worker_id or str(os.getpid()))
    channels: dict[str, Channel] = {}
    watchers: dict[str, asyncio.Task[None]] = {}

    def deliver(sid: str) -> Callable[[dict[str, Any]], Any]:
        async def send(event: dict[str, Any]) -> None:
            payload = {k: v for k, v in event.items() if k != "type"}
            await sio.emit(event["type"], payload, to=sid)
            if event["type"] == "feedback" and payload.get("step_completed") and not (
                    payload.get("verification_complete") or payload.get("verification_failed")):
                await sio.emit("challenge", {k: v for k, v in _next_challenge(payload).items() if k != "type"}, to=sid)
        return send

    async def refuse(sid: str, err: LivenessError) -> bool:
        await deliver(sid)(_error_event(err))
        return False  # always_connect: the server then disconnects the client

    async def watch(sid: str, channel: Channel) -> None:
        """Ends the connection once the result went out or the session ended in an error."""
        await channel.finished.wait()
        await channel.wait_worker()
        failure = channel.failure
        if failure is not None:
            if not isinstance(failure, LivenessError):
                render.log_unexpected("challenge socket.io", failure, logger=log)
                failure = LivenessError(E.INTERNAL_ERROR, "Internal error.")
            await channel.send(_error_event(failure))
        channels.pop(sid, None)
        watchers.pop(sid, None)
        await sio.disconnect(sid)

    @sio.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        service = get_service()
        if service is None:
            return await refuse(sid, LivenessError(E.NOT_READY, "The challenge service is loading; retry shortly.",
                                                   {"retry_after": 1}))
        channel = Channel(deliver(sid), min_frame_interval, clock, events=EVENTS,
                          recoverable=lambda err: err.code in RECOVERABLE)
        try:
            start = start_request(auth, environ, anonymous_routes())
            await channel.start(driver_for(start, service, get_sessions, admin_key_sha256()))
        except LivenessError as err:
            return await refuse(sid, err)
        except Exception as exc:  # noqa: BLE001 - the client gets an error event, the log the traceback
            render.log_unexpected("challenge socket.io", exc, logger=log)
            return await refuse(sid, LivenessError(E.INTERNAL_ERROR, "Internal error."))
        channels[sid] = channel
        watchers[sid] = asyncio.create_task(watch(sid, channel))
        return True

    @sio.on("frame")
    async def frame(sid: str, data: Any = None) -> None:
        channel = channels.get(sid)
        if channel is None or channel.finished.is_set():
            return  # not started, or over: as the seed, later frames are ignored
        try:
            payload = frame_payload(data, channel_limits(get_service(), max_frame_bytes))
        except LivenessError as err:
            await channel.send(_error_event(err))
            return
        await channel.frame(payload)

    @sio.on("disconnect")
    async def disconnect(sid: str, reason: Any = None) -> None:
        channel = channels.pop(sid, None)
        watcher = watchers.pop(sid, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        if channel is not None:
            channel.cancel()  # the session stays in the store until it expires

    return socketio.ASGIApp(sio, socketio_path=PATH.strip("/"))


def channel_limits(service: Any, max_frame_bytes: int) -> Any:
    """The image limits a frame is checked against: the pipeline's (byte limit at most ``max_frame_bytes``)."""
    limits = getattr(getattr(getattr(service, "ops", None), "pipeline", None), "limits", None) or ImageLimits()
    return replace(limits, max_bytes=min(limits.max_bytes, max_frame_bytes))


def challenge_socketio_routes(get_service: ServiceGetter, admin_key_sha256: Callable[[], str | None], *,
                              worker_id: str | None = None, runtime_dir: Path | None = None,
                              **options: Any) -> list[Mount]:
    """The mount of the Socket.IO endpoint in the Starlette app at ``/`` (edge.routes): the app behind
    the router that relays a polling request to the worker holding its session.  ``worker_id``
    (default: the process id) and ``runtime_dir`` (default: a 0700 directory per service under the
    temp dir) place this worker among the others (edge.socketio_workers)."""
    worker_id = worker_id or str(os.getpid())
    app = challenge_socketio_app(get_service, admin_key_sha256, worker_id=worker_id, **options)
    router = SessionRouter(app, worker_id, runtime_dir, max_body_bytes=app.engineio_server.eio.max_http_buffer_size,
                           forward_timeout_s=FORWARD_TIMEOUT_S)
    return [Mount(MOUNT, app=router)]


__all__ = ["EVENTS", "PATH", "challenge_socketio_app", "challenge_socketio_routes", "frame_payload",
           "seed_challenge", "start_request", "stop_worker_sockets"]
