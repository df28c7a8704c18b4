"""The Starlette app BentoML mounts at ``/``: what is not a POST API.

Health (``/status_check``, ``/health``), the challenge status and stats, the admin API, the
session reads, the challenge WebSocket, the browser demo, and the OpenAPI document
(``/docs.json``, ``edge.openapi``) with its Swagger UI (``/docs``).  Each route finds this
worker's services on the running BentoML service (None while it loads: 503).

BentoML serves its own generated ``/docs.json``, but its app lists the routes of a mounted
Starlette app (``PassiveMount``, which matches only the paths this app has) before its own
``docs.json`` route, so ours answers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from edge import openapi, render
from edge.admin import admin_routes
from edge.bws_rest import bws_routes
from edge.azure import azure_routes
from edge import challenges as challenge_api
from edge.challenge_socketio import challenge_socketio_routes
from edge.challenge_ws import challenge_ws_routes
from edge.credentials import api_key_from, authorise_admin, or_route_key
from edge.demo import demo_routes
from edge.sessions import session_routes
from liveness.admission import ANONYMOUS
from liveness.errors import LivenessError
from liveness.settings import Settings


def _current(name: str) -> Any:
    svc = bentoml.get_current_service()
    return getattr(svc, name, None) if svc is not None else None


def current_core() -> Any:  # LivenessApp | None
    return _current("core")


def request_credential(request: Request, core: Any) -> Any:
    """A Starlette request's credential: the one it sent (header or query), else its route's
    anonymous key when the operator opened the route (``anonymous_routes``)."""
    key = api_key_from(request.headers, dict(request.query_params))
    return or_route_key(key, core.settings.anonymous_routes, request.url.path) if core is not None else key


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
    body, status = await challenge_api.health(current_core(), current_challenges())  # Liveness_service's fields
    return JSONResponse(body, status)


async def challenge_status(request: Request) -> JSONResponse:
    svc = current_challenges()
    if svc is None:
        return render.not_ready()
    key = request_credential(request, current_core())
    try:
        return JSONResponse(await svc.status(key, request.path_params["session_id"]))
    except LivenessError as err:
        return render.error(err, success=False)  # Liveness_service's flag, beside our envelope


async def stats_scope(request: Request, admission: Any, admin_key_sha256: str | None) -> str | None:
    """Whose challenge sessions ``/stats`` counts: None (every tenant) for the admin key or when
    authentication is disabled, else the API key's key_id (checked, never charged).  Raises
    INVALID_ADMIN_KEY / ADMIN_DISABLED for a wrong X-Admin-Key, MISSING_API_KEY without any
    credential, and the key's refusal (INVALID_API_KEY, QUOTA_EXCEEDED)."""
    if request.headers.get("x-admin-key"):
        authorise_admin(request.headers, admin_key_sha256)
        return None
    if admission.keys is None:  # authentication disabled: open, every tenant
        return None
    # owner, not identify: a key whose quota is spent may still see its own sessions
    key_id = await admission.owner(request_credential(request, current_core()))
    return None if key_id == ANONYMOUS else key_id


def stats_endpoint(admin_key_sha256: Callable[[], str | None]) -> Callable[[Request], Awaitable[JSONResponse]]:
    """``GET /stats``; ``admin_key_sha256()`` -> the configured admin key's sha256 (or None)."""

    async def challenge_stats(request: Request) -> JSONResponse:
        svc = current_challenges()
        if svc is None:
            return render.not_ready()
        try:
            key_id = await stats_scope(request, svc.admission, admin_key_sha256())
        except LivenessError as err:
            return render.error(err)
        return JSONResponse(await asyncio.to_thread(svc.stats, key_id=key_id))

    return challenge_stats


async def openapi_json(_: Request) -> Response:
    return Response(openapi.document_bytes(), media_type="application/json")


async def swagger_ui(_: Request) -> HTMLResponse:
    return HTMLResponse(openapi.SWAGGER_UI)


def status_app(settings: Settings) -> Starlette:
    return Starlette(
        routes=[
            Route("/docs.json", openapi_json, methods=["GET"]),
            Route("/docs", swagger_ui, methods=["GET"]),
            Route("/status_check", status_check, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/stats", stats_endpoint(lambda: settings.admin_key_sha256), methods=["GET"]),
            Route("/status/{session_id}", challenge_status, methods=["GET"]),
            *admin_routes(current_core, lambda: settings.admin_key_sha256),
            *session_routes(current_sessions),
            *azure_routes(current_sessions),
            *challenge_ws_routes(current_challenges, lambda: settings.admin_key_sha256, get_sessions=current_sessions,
                                 max_frame_bytes=lambda: settings.max_image_bytes,
                                 min_frame_interval=1 / getattr(settings, "challenge_max_fps", 15.0)),
            *demo_routes(),
            *challenge_socketio_routes(current_challenges, lambda: settings.admin_key_sha256, get_sessions=current_sessions,
                                       anonymous_routes=lambda: settings.anonymous_routes,
                                       max_frame_bytes=settings.max_image_bytes,
                                       min_frame_interval=1 / settings.challenge_max_fps,
                                       cors_origins=list(settings.socketio_cors_origins) or None),  # Liveness_service
            *bws_routes(current_core),  # BioID BWS 3's JSON API (docs/GRPC.md)
        ]
    )
