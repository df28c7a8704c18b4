"""The BentoML APIs' adapters: the raw body and the request context in, the wire answer out.

service.py's ``@bentoml.api`` methods delegate here, one line each, passing the service instance
(``svc``: this worker's ``core``, ``challenges`` and ``sessions``).  A credential that is an
app-server session's token runs that session's attempt instead of the API-key check (README
"Sessions").  Every API sits behind ``RawBodyMiddleware`` (``add_middleware``): the body arrives
bounded and unparsed, its real Content-Type in ``ORIGINAL_CONTENT_TYPE`` (and an empty body as
``b""``, not the framework's ``b"{}"``: ``replayed_body``).  In front of it, ``AllowedMethods``
answers a wrong method on any known path 405 (``method_not_allowed``, with ``Allow``).

Errors: a ``LivenessError`` is rendered in the route's format (``_guard``); any other exception
is our failure, answered ``500 internal_error`` in that format with a ``request_id`` and logged
without request data (``render.log_unexpected``).  It is never charged: the admission context
refunds a reserved unit on any exception that leaves it (liveness.admission).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Awaitable, Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import Route

from edge import challenges as challenge_api
from edge import facia, metrics, native, render
from edge import sessions as session_api
from edge import video as video_api
from edge.credentials import authorise_admin, is_session_token, or_route_key
from edge.methods import AllowedMethods, http_routes
from edge.raw_body import ORIGINAL_CONTENT_TYPE, RawBodyMiddleware, replayed_body
from edge.spread import SpreadConnections
from liveness.admission import settle_after_send
from liveness.challenges.service import refuse_choice_by_session_token
from liveness.errors import IMAGE_TOO_LARGE, METHOD_NOT_ALLOWED, VIDEO_TOO_LARGE, LivenessError
from liveness.sessions import SessionService, flows, require_sessions
from liveness.settings import Settings
from liveness.video import check_video

log = logging.getLogger("liveness.api")

Ctx = Any  # bentoml.Context
CHALLENGE_BODY_LIMIT = 64 * 1024
FACIA_PATH = "/liveness"


async def _guard(ctx: Ctx, endpoint: str | None, call: Callable[[], Awaitable[Any]],
                 fail: Callable[..., Response] = render.error, **extra: Any) -> Response:
    """Run one API call: a dict it returns is a 200 answer; a LivenessError it raises is counted
    under ``endpoint`` and rendered by ``fail`` (the native envelope plus ``extra``, or FACIA's).
    Any other exception is our failure: logged without request data, counted and rendered as
    ``internal_error`` with the request's id (``extra``'s, else the X-Request-ID one).

    A unit the call earned is committed only after the response has been sent (a background task
    of the response): a worker killed before that leaves a lease the sweep gives back, so a client
    never pays for an answer it did not receive."""
    with settle_after_send() as pending:
        response = await _answer(ctx, endpoint, call, fail, **extra)
    return render.settle_when_sent(response, pending)


async def _answer(ctx: Ctx, endpoint: str | None, call: Callable[[], Awaitable[Any]],
                  fail: Callable[..., Response], **extra: Any) -> Response:
    try:
        out = await call()
    except LivenessError as err:
        if endpoint is not None:
            metrics.decision(endpoint, err.code)
        return fail(err, ctx, **extra)
    except Exception as exc:  # noqa: BLE001 - ours; CancelledError (a BaseException) passes
        request_id = extra.get("request_id") or _request_id(ctx)
        render.log_unexpected(endpoint or ctx.request.url.path, exc, request_id, logger=log)
        if endpoint is not None:
            metrics.decision(endpoint, render.UNEXPECTED.code)
        return fail(render.UNEXPECTED, ctx, **{**extra, "request_id": request_id})
    return out if isinstance(out, Response) else render.answer(ctx, 200, out)


def _request_id(ctx: Ctx) -> str:
    """The request's id (a client's X-Request-ID if it is a short safe token, else a new one),
    echoed in the X-Request-ID response header."""
    request_id = render.request_id(ctx.request.headers.get("x-request-id"))
    ctx.response.headers["x-request-id"] = request_id
    return request_id


def _body(body: bytes, ctx: Ctx) -> bytes:
    return replayed_body(body, ctx.request.headers)


def _content_type(ctx: Ctx) -> str:
    return ctx.request.headers.get(ORIGINAL_CONTENT_TYPE, "")


def _caller(svc: Any, ctx: Ctx, key: Any) -> Any:
    """The request's credential: the one it sent, else its route's anonymous key (if opened)."""
    return or_route_key(key, svc.core.settings.anonymous_routes, ctx.request.url.path)


def _sessions(svc: Any) -> SessionService:
    return require_sessions(svc.sessions)


def _outcome(result: Any) -> str:
    return "live" if getattr(result, "is_live", getattr(result, "alive", False)) else "spoof"


def session_answer(ctx: Ctx, endpoint: str, out: flows.Outcome, request_id: str, full: Callable[..., Any]) -> Response:
    """A session client's answer: the attempt's error, or the endpoint's full answer only when the
    session sends results to the client; always the session view."""
    if out.error is not None:
        metrics.decision(endpoint, out.error.code)
        return render.error(out.error, ctx, request_id=request_id, session=out.view)
    metrics.decision(endpoint, _outcome(out.result))
    body = full(out.result, request_id) if out.send_results else {"request_id": request_id}
    return render.answer(ctx, 200, {**body, "session": out.view})


# -- passive: FACIA, native, video -------------------------------------------------------------


async def facia_liveness(svc: Any, body: bytes, ctx: Ctx) -> Response:
    body = _body(body, ctx)

    async def call() -> Response:
        key, doc = facia.parse_request(body)
        key = _caller(svc, ctx, key)
        limits = svc.core.pipeline.limits
        result = await svc.core.check_image(key, lambda: facia.selfie_bytes(doc, limits))
        metrics.decision("facia", _outcome(result))
        metrics.observe_result(result)
        return render.answer(ctx, facia.SUCCESS_STATUS, facia.response(result))

    return await _guard(ctx, "facia", call, fail=render.facia_error)


async def native_liveness(svc: Any, body: bytes, ctx: Ctx) -> Response:
    body = _body(body, ctx)
    request_id = _request_id(ctx)

    async def call() -> Response:
        key, image = native.parse_request(body, _content_type(ctx), ctx.request.headers, svc.core.pipeline.limits)
        key = _caller(svc, ctx, key)
        if is_session_token(key):
            out = await flows.passive_attempt(_sessions(svc), key, image)
            return session_answer(ctx, "session_passive", out, request_id, native.response)
        result = await svc.core.check_image(key, image)
        metrics.decision("native", _outcome(result))
        metrics.observe_result(result)
        return render.answer(ctx, 200, native.response(result, request_id))

    return await _guard(ctx, "native", call, request_id=request_id)


async def video_liveness(svc: Any, body: bytes, ctx: Ctx) -> Response:
    body = _body(body, ctx)
    request_id = _request_id(ctx)

    async def call() -> Response:
        req = video_api.parse_video_request(body, _content_type(ctx), ctx.request.headers, ctx.request.query_params)
        flags = {"return_photo": req.return_photo, "return_normalized": req.return_normalized}
        key = _caller(svc, ctx, req.api_key)
        if is_session_token(key):
            video_api.refuse_detection_for_sessions(req)
            out = await flows.video_attempt(_sessions(svc), key, req.video, req.content_type, **flags)
            return session_answer(ctx, "session_video", out, request_id, video_api.video_response)
        result = await check_video(svc.core, key, req.video(), req.content_type, **flags,
                                   return_detection=req.return_detection)
        doc = video_api.video_response(result, request_id)
        metrics.decision("video", doc["decision"])
        return render.answer(ctx, 200, doc)

    return await _guard(ctx, "video", call, request_id=request_id)


# -- active challenges (liveness.challenges; README "Active challenges") -------------------------


async def _challenge_route(svc: Any, body: bytes, ctx: Ctx, name: str, handle: Any) -> Response:
    """A challenge route: its JSON body and caller parsed once, ``handle(key, doc)`` answers."""
    body = _body(body, ctx)

    async def call() -> dict[str, Any]:
        key, doc = challenge_api.parse(body, ctx.request.headers)
        return await handle(_caller(svc, ctx, key), doc)

    return await _guard(ctx, name, call, success=False)  # Liveness_service's flag, beside our envelope


async def challenge_start(svc: Any, body: bytes, ctx: Ctx) -> Response:
    async def handle(key: str | None, doc: dict[str, Any]) -> dict[str, Any]:
        challenges = doc.get("challenges")  # checked by the service (chosen_challenges)
        if is_session_token(key):
            refuse_choice_by_session_token(challenges is not None)
            return await flows.challenge_start(_sessions(svc), key)
        if challenges is not None:
            authorise_admin(ctx.request.headers, svc.core.settings.admin_key_sha256)
        return await svc.challenges.start(key, challenges, admin=challenges is not None)

    return await _challenge_route(svc, body, ctx, "challenge_start", handle)


async def challenge_process(svc: Any, body: bytes, ctx: Ctx) -> Response:
    async def handle(key: str | None, doc: dict[str, Any]) -> dict[str, Any]:
        frame = challenge_api.frame_bytes(doc, svc.core.pipeline.limits)
        if is_session_token(key):
            return await flows.challenge_process(_sessions(svc), key, doc.get("session_id"), frame)
        return await svc.challenges.process(key, doc.get("session_id"), frame)

    return await _challenge_route(svc, body, ctx, "challenge_process", handle)


async def challenge_complete(svc: Any, body: bytes, ctx: Ctx) -> Response:
    async def handle(key: str | None, doc: dict[str, Any]) -> dict[str, Any]:
        if is_session_token(key):
            done = flows.challenge_answer(await flows.challenge_complete(_sessions(svc), key, doc.get("session_id")))
        else:
            done = await svc.challenges.complete(key, doc.get("session_id"))
        if "verdict" in done:
            metrics.decision("challenge_complete", done["verdict"])
        return done

    return await _challenge_route(svc, body, ctx, "challenge_complete", handle)


# -- app-server sessions and face verification (liveness.sessions; README "Sessions") -----------


async def create_session(svc: Any, body: bytes, ctx: Ctx) -> Response:
    body = _body(body, ctx)

    async def call() -> dict[str, Any]:
        key, parsed = session_api.parse_create(body, _content_type(ctx), ctx.request.headers, svc.core.pipeline.limits)
        key = _caller(svc, ctx, key)
        return await _sessions(svc).create(key, parsed)  # parsed once the key is admitted

    return await _guard(ctx, None, call)


async def verify(svc: Any, body: bytes, ctx: Ctx) -> Response:
    body = _body(body, ctx)

    async def call() -> dict[str, Any]:
        key, images = session_api.parse_verify(body, _content_type(ctx), ctx.request.headers, svc.core.pipeline.limits)
        key = _caller(svc, ctx, key)
        return await svc.core.compare_faces(key, images)

    return await _guard(ctx, None, call)


# -- BentoML's OpenTelemetry middleware --------------------------------------------------------


def tracing_config(settings: Settings) -> dict[str, Any]:
    """BentoML's ``tracing`` service config: its OpenTelemetry middleware runs on every request
    even when no trace is sampled (the profile: ~9 % of the workers' busy samples and ~19 % of
    their GIL time with Prometheus); unless ``http_tracing`` asks for traces, every URL is
    excluded, so the middleware hands each request straight on."""
    return {} if settings.http_tracing else {"excluded_urls": [".*"]}


# -- body limits ---------------------------------------------------------------------------------


def body_limit(settings: Settings) -> int:
    """An image route's body limit: base64 inflates by 4/3; JSON and multipart framing need a little more."""
    return settings.max_image_bytes * 4 // 3 + 64 * 1024


def too_large(settings: Settings, path: str, limit: int) -> dict[str, Any]:
    """The 413 body of a route's oversized request, in that route's format."""
    if path == "/v1/video-liveness":
        message = f"The request body exceeds {limit} bytes (videos up to {settings.video_max_bytes} bytes)."
        return LivenessError(VIDEO_TOO_LARGE, message).envelope()
    message = f"The request body exceeds {limit} bytes (images up to {settings.max_image_bytes} bytes)."
    if path == "/liveness":
        return {"error": message}
    return LivenessError(IMAGE_TOO_LARGE, message).envelope()


# -- methods -----------------------------------------------------------------------------------------


def method_not_allowed(scope: dict[str, Any], allowed: list[str]) -> Response:
    """The 405 of a known path asked with another method: FACIA's body on ``/liveness``, else
    the native envelope with a request_id (``AllowedMethods`` adds the Allow header)."""
    method = str(scope.get("method", ""))[:16]
    err = LivenessError(METHOD_NOT_ALLOWED, f"{method} is not allowed here; use {', '.join(allowed)}.",
                        {"allowed": allowed})
    if scope.get("path") == FACIA_PATH:
        return render.facia_error(err)
    request_id = render.request_id(Headers(scope=scope).get("x-request-id"))
    response = render.error(err, request_id=request_id)
    response.headers["x-request-id"] = request_id
    return response


async def _never(_: Any) -> Response:  # a stand-in endpoint: only the route's path and methods are used
    raise AssertionError("AllowedMethods never calls a route")


def known_routes(service: Any) -> list[Route]:
    """Every HTTP route of the service: its BentoML APIs (POST) and the routes of the Starlette
    app mounted at ``/`` (edge.routes ``status_app``)."""
    routes = [Route(api.route, _never, methods=["POST"]) for api in getattr(service, "apis", {}).values()]
    for app, path, _ in getattr(service, "mount_apps", []):
        if path in ("", "/"):
            routes += http_routes(getattr(app, "routes", []))
    return routes


def add_middleware(service: Any, settings: Settings) -> None:
    """Connection spreading, 405s for wrong methods and the bounded raw bodies of every API route.
    Called once the service is declared (its APIs and mounted app are known)."""
    image = body_limit(settings)
    service.add_asgi_middleware(SpreadConnections, every=settings.http_requests_per_connection)
    service.add_asgi_middleware(AllowedMethods, routes=known_routes(service), refuse=method_not_allowed)
    service.add_asgi_middleware(
        RawBodyMiddleware,
        routes={"/liveness": image, "/v1/liveness": image, "/v1/video-liveness": video_api.body_limit(settings),
                "/start": CHALLENGE_BODY_LIMIT, "/process": image, "/complete": CHALLENGE_BODY_LIMIT,
                "/v1/sessions": image, "/v1/verify": 2 * image},
        too_large=partial(too_large, settings),
    )
