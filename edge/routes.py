"""The Starlette app BentoML mounts at ``/``: what is not a POST API.

Health (``/status_check``, ``/health``), the challenge status and stats, the admin API, the
session reads, the challenge WebSocket and the browser demo.  Each route finds this worker's
services on the running BentoML service (None while it loads: 503).
"""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from edge import render
from edge.admin import admin_routes
from edge.challenge_ws import challenge_ws_routes
from edge.credentials import api_key_from
from edge.demo import demo_routes
from edge.sessions import session_routes
from liveness.errors import LivenessError
from liveness.settings import Settings


def _current(name: str) -> Any:
    svc = bentoml.get_current_service()
    return getattr(svc, name, None) if svc is not None else None


def current_core() -> Any:  # LivenessApp | None
    return _current("core")


def current_challenges() -> Any:  # ChallengeService | None
    return _current("challenges")


def current_sessions() -> Any:  # SessionService | None
    return _current("sessions")


async def status_check(_: Request) -> PlainTextResponse:
    core = current_core()
    if core is None or not core.ready:
        return PlainTextResponse("Service is loading", status_code=503)
    return PlainTextResponse("Service is live")


async def health(_: Request) -> JSONResponse:
    core = current_core()
    ready = core is not None and core.ready and current_challenges() is not None
    return JSONResponse({"status": "healthy" if ready else "loading"}, 200 if ready else 503)


async def challenge_status(request: Request) -> JSONResponse:
    svc = current_challenges()
    if svc is None:
        return render.not_ready()
    key = api_key_from(request.headers, dict(request.query_params))
    try:
        return JSONResponse(await svc.status(key, request.path_params["session_id"]))
    except LivenessError as err:
        return render.error(err)


async def challenge_stats(_: Request) -> JSONResponse:
    svc = current_challenges()
    if svc is None:
        return render.not_ready()
    return JSONResponse(await asyncio.to_thread(svc.stats))


def status_app(settings: Settings) -> Starlette:
    return Starlette(
        routes=[
            Route("/status_check", status_check, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/stats", challenge_stats, methods=["GET"]),
            Route("/status/{session_id}", challenge_status, methods=["GET"]),
            *admin_routes(current_core, lambda: settings.admin_key_sha256),
            *session_routes(current_sessions),
            *challenge_ws_routes(current_challenges, lambda: settings.admin_key_sha256, get_sessions=current_sessions,
                                 max_frame_bytes=lambda: settings.max_image_bytes,
                                 min_frame_interval=1 / getattr(settings, "challenge_max_fps", 15.0)),
            *demo_routes(),
        ]
    )
