"""BentoML service: HTTP in, ``liveness.LivenessApp`` out.  No liveness logic lives here."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

import bentoml
from _bentoml_sdk.io_models import IORootModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from liveness.api import challenges as challenge_api
from liveness.api import facia, native
from liveness.api import sessions as session_api
from liveness.api import video as video_api
from liveness.api.admin import _authorise, admin_routes
from liveness.api.challenge_ws import challenge_ws_routes
from liveness.api.demo import demo_routes
from liveness.api.grpc_server import start_grpc_server, stop_grpc_server
from liveness.api.raw_body import ORIGINAL_CONTENT_TYPE, RawBodyMiddleware
from liveness.api.spread import SpreadConnections
from liveness.app import LivenessApp
from liveness.challenges import ChallengeService
from liveness.errors import IMAGE_TOO_LARGE, INVALID_REQUEST, VIDEO_TOO_LARGE, LivenessError
from liveness.sessions import SessionService, flows, looks_like_token, require_sessions
from liveness.settings import get_settings
from liveness.video import check_video

log = logging.getLogger("liveness")
settings = get_settings()

# BentoML 1.4.39 rebuilds the pydantic JSON schema of a root-input model on every request
# (IORootModel.model_validate_json): 11% of the worker's GIL time under load (py-spy, see
# docs/PERFORMANCE.md).  The schema of a class never changes, so compute it once per class.
_schema_cache: dict[tuple[type, str], dict[str, Any]] = {}
_original_schema = IORootModel.model_json_schema.__func__  # type: ignore[attr-defined]


def _cached_schema(cls: type, *args: Any, **kwargs: Any) -> dict[str, Any]:
    if args or kwargs:
        return _original_schema(cls, *args, **kwargs)
    key = (cls, "default")
    if key not in _schema_cache:
        _schema_cache[key] = _original_schema(cls)
    return dict(_schema_cache[key])


IORootModel.model_json_schema = classmethod(_cached_schema)  # type: ignore[method-assign]

BATCH_SIZE = bentoml.metrics.Histogram(
    name="liveness_batch_size",
    documentation="Rows per model invocation (dynamic batching)",
    labelnames=["model", "version"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="liveness_model_seconds",
    documentation="Wall time of one batched model invocation",
    labelnames=["model", "version"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
)
VERSION_REQUESTS = bentoml.metrics.Counter(
    name="liveness_model_requests",
    documentation="Decisions each model version took part in",
    labelnames=["model", "version"],
)
VERSION_LATENCY = bentoml.metrics.Histogram(
    name="liveness_model_request_seconds",
    documentation="Pipeline time of the requests each model version served",
    labelnames=["model", "version"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
VERSION_SCORES = bentoml.metrics.Histogram(
    name="liveness_model_live_probability",
    documentation="Live-class probability per anti-spoof model version (judge a canary by it)",
    labelnames=["model", "version"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
SHADOW_DIFF = bentoml.metrics.Histogram(
    name="liveness_shadow_abs_diff",
    documentation="|p_live(shadow) - p_live(serving)| on sampled requests",
    labelnames=["model", "stable", "candidate"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
DECISIONS = bentoml.metrics.Counter(
    name="liveness_decisions",
    documentation="Liveness answers by endpoint and outcome",
    labelnames=["endpoint", "outcome"],
)


def observe_batch(model: str, version: int, rows: int, seconds: float) -> None:
    BATCH_SIZE.labels(model=model, version=str(version)).observe(rows)
    MODEL_SECONDS.labels(model=model, version=str(version)).observe(seconds)
    log.debug("batch model=%s version=%d rows=%d %.1fms", model, version, rows, seconds * 1000)


def observe_result(result: Any) -> None:
    seconds = sum(result.timings_ms.values()) / 1000
    for m in result.models:
        labels = {"model": m.name, "version": str(m.version)}
        VERSION_REQUESTS.labels(**labels).inc()
        VERSION_LATENCY.labels(**labels).observe(seconds)
        if m.name in result.model_scores:
            VERSION_SCORES.labels(**labels).observe(result.model_scores[m.name])


def observe_shadow(model: str, stable: int, candidate: int, p_stable: float, p_candidate: float) -> None:
    SHADOW_DIFF.labels(model=model, stable=str(stable), candidate=str(candidate)).observe(abs(p_stable - p_candidate))


def current_core() -> LivenessApp | None:
    svc = bentoml.get_current_service()
    return getattr(svc, "core", None) if svc is not None else None


async def status_check(_: Request) -> PlainTextResponse:
    core = current_core()
    if core is None or not core.ready:
        return PlainTextResponse("Service is loading", status_code=503)
    return PlainTextResponse("Service is live")


def current_challenges() -> ChallengeService | None:
    svc = bentoml.get_current_service()
    return getattr(svc, "challenges", None) if svc is not None else None


def current_sessions() -> SessionService | None:
    svc = bentoml.get_current_service()
    return getattr(svc, "sessions", None) if svc is not None else None


async def challenge_status(request: Request) -> JSONResponse:
    svc = current_challenges()
    if svc is None:
        return JSONResponse({"error": {"code": "not_ready", "message": "Models are loading."}}, 503)
    key = native.api_key_from(request.headers, dict(request.query_params))
    try:
        return JSONResponse(await svc.status(key, request.path_params["session_id"]))
    except LivenessError as err:
        return JSONResponse(err.envelope(), err.status, headers=err.headers())


async def challenge_stats(_: Request) -> JSONResponse:
    svc = current_challenges()
    if svc is None:
        return JSONResponse({"error": {"code": "not_ready", "message": "Models are loading."}}, 503)
    return JSONResponse(await asyncio.to_thread(svc.stats))


async def health(_: Request) -> JSONResponse:
    core = current_core()
    ready = core is not None and core.ready and current_challenges() is not None
    return JSONResponse({"status": "healthy" if ready else "loading"}, 200 if ready else 503)


status_app = Starlette(
    routes=[
        Route("/status_check", status_check, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/stats", challenge_stats, methods=["GET"]),
        Route("/status/{session_id}", challenge_status, methods=["GET"]),
        *admin_routes(current_core, lambda: settings.admin_key_sha256),
        *session_api.session_routes(current_sessions),
        *challenge_ws_routes(current_challenges, lambda: settings.admin_key_sha256, get_sessions=current_sessions,
                             max_frame_bytes=lambda: settings.max_image_bytes,
                             min_frame_interval=1 / getattr(settings, "challenge_max_fps", 15.0)),
        *demo_routes(),
    ]
)

# Base64 inflates by 4/3; JSON and multipart framing need a little more.
BODY_LIMIT = settings.max_image_bytes * 4 // 3 + 64 * 1024


def respond(ctx: bentoml.Context, status: int, payload: dict[str, Any]) -> Any:
    # A ready response skips BentoML's pydantic round trip of the output (6% of GIL time);
    # BentoML still applies ctx's status and headers to it.
    ctx.response.status_code = status
    return JSONResponse(payload, status_code=status)


def retry_later(ctx: bentoml.Context, err: LivenessError) -> None:
    """503s (model_unavailable, not_ready) and throttling 429s tell the client when to come back."""
    for name, value in (err.headers() or {}).items():
        ctx.response.headers[name] = value


def too_large(path: str, limit: int) -> dict[str, Any]:
    if path == "/v1/video-liveness":
        message = f"The request body exceeds {limit} bytes (videos up to {settings.video_max_bytes} bytes)."
        return LivenessError(VIDEO_TOO_LARGE, message).envelope()
    message = f"The request body exceeds {limit} bytes (images up to {settings.max_image_bytes} bytes)."
    if path == "/liveness":
        return {"error": message}
    return LivenessError(IMAGE_TOO_LARGE, message).envelope()


@bentoml.service(
    name="liveness",
    # One worker per core: a worker is bound by its event loop (GIL) well before the CPU is.
    workers=int(os.environ.get("LIVENESS_WORKERS") or os.cpu_count() or 1),
    traffic={"timeout": 30},
)
@bentoml.asgi_app(status_app, path="/")
class Liveness:
    def __init__(self) -> None:
        self.core = LivenessApp(settings, observer=observe_batch, shadow_observer=observe_shadow)
        self.challenges = ChallengeService(self.core, settings)
        self.sessions = SessionService(self.core, settings) if settings.sessions_enabled else None
        if self.sessions is not None:
            self.sessions.challenges = self.challenges

    async def __is_ready__(self) -> bool:  # async: runs in the serving loop (the Triton probe lives there)
        return self.core.ready

    @bentoml.on_startup
    async def start_grpc(self) -> None:  # one gRPC server per worker, same port (docs/GRPC.md)
        self.grpc = await start_grpc_server(
            self.core, settings, observe=lambda endpoint, outcome: DECISIONS.labels(endpoint=endpoint, outcome=outcome).inc()
        )

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        await stop_grpc_server(getattr(self, "grpc", None))
        self.challenges.close()
        if self.sessions is not None:
            self.sessions.close()
        self.core.close()

    @bentoml.api(route="/liveness")
    async def liveness(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """FACIA-compatible: JSON {"hash_id", "selfie_image"} -> 201 {"liveness_result", "message"}."""
        limits = self.core.pipeline.limits
        key, doc = facia.parse_request(body)
        try:
            result = await self.core.check_image(key, lambda: facia.selfie_bytes(doc, limits))
        except LivenessError as err:
            status, payload = facia.error_response(err)
            DECISIONS.labels(endpoint="facia", outcome=err.code).inc()
            retry_later(ctx, err)
            return respond(ctx, status, payload)
        DECISIONS.labels(endpoint="facia", outcome="live" if result.is_live else "spoof").inc()
        observe_result(result)
        return respond(ctx, facia.SUCCESS_STATUS, facia.response(result))

    @bentoml.api(route="/v1/liveness")
    async def v1_liveness(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Native: multipart `image`, JSON {"image": base64}, or a raw image body; key in X-API-Key."""
        request_id = ctx.request.headers.get("x-request-id") or uuid.uuid4().hex
        ctx.response.headers["x-request-id"] = request_id
        content_type = ctx.request.headers.get(ORIGINAL_CONTENT_TYPE, "")
        try:
            key, image = native.parse_request(body, content_type, ctx.request.headers, self.core.pipeline.limits)
            if looks_like_token(key):  # a client of an app-server session (README "Sessions")
                out = await flows.passive_attempt(self._sessions(), key, image)
                return session_answer(ctx, "session_passive", out, request_id, native.response)
            result = await self.core.check_image(key, image)
        except LivenessError as err:
            DECISIONS.labels(endpoint="native", outcome=err.code).inc()
            retry_later(ctx, err)
            return respond(ctx, err.status, {**err.envelope(), "request_id": request_id})
        DECISIONS.labels(endpoint="native", outcome="live" if result.is_live else "spoof").inc()
        observe_result(result)
        return respond(ctx, 200, native.response(result, request_id))

    @bentoml.api(route="/v1/video-liveness")
    async def v1_video_liveness(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Video (mp4, webm, mov, GIF) as the raw body or multipart `video`; flags return_photo,
        return_normalized in the query; key in X-API-Key.  FindFace/BioID semantics."""
        request_id = ctx.request.headers.get("x-request-id") or uuid.uuid4().hex
        ctx.response.headers["x-request-id"] = request_id
        content_type = ctx.request.headers.get(ORIGINAL_CONTENT_TYPE, "")
        try:
            req = video_api.parse_video_request(body, content_type, ctx.request.headers, ctx.request.query_params)
            if looks_like_token(req.api_key):
                out = await flows.video_attempt(
                    self._sessions(), req.api_key, req.video, req.content_type,
                    return_photo=req.return_photo, return_normalized=req.return_normalized,
                )
                return session_answer(ctx, "session_video", out, request_id, video_api.video_response)
            result = await check_video(
                self.core, req.api_key, req.video(), req.content_type,
                return_photo=req.return_photo, return_normalized=req.return_normalized,
            )
        except LivenessError as err:
            DECISIONS.labels(endpoint="video", outcome=err.code).inc()
            retry_later(ctx, err)
            return respond(ctx, err.status, {**err.envelope(), "request_id": request_id})
        doc = video_api.video_response(result, request_id)
        DECISIONS.labels(endpoint="video", outcome=doc["decision"]).inc()
        return respond(ctx, 200, doc)

    # -- active challenges (liveness.challenges; README "Active challenges") ---------------------

    async def _challenge_call(self, ctx: bentoml.Context, endpoint: str, call) -> Any:
        try:
            payload = await call()
        except LivenessError as err:
            DECISIONS.labels(endpoint=endpoint, outcome=err.code).inc()
            retry_later(ctx, err)
            return respond(ctx, err.status, err.envelope())
        if endpoint == "challenge_complete" and "verdict" in payload:
            DECISIONS.labels(endpoint=endpoint, outcome=payload["verdict"]).inc()
        return respond(ctx, 200, payload)

    @bentoml.api(route="/start")
    async def challenge_start(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """JSON {"challenges"?: [...] (needs X-Admin-Key)} -> session_id, instruction, ..."""

        async def call() -> dict[str, Any]:
            key, doc = challenge_api.parse(body, ctx.request.headers)
            challenges = challenge_api.challenges_field(doc)
            if looks_like_token(key):
                if challenges is not None:
                    raise LivenessError(INVALID_REQUEST, "A session token cannot choose challenges.")
                return await flows.challenge_start(self._sessions(), key)
            if challenges is not None:
                _authorise(ctx.request, settings.admin_key_sha256)
            return await self.challenges.start(key, challenges, admin=challenges is not None)

        return await self._challenge_call(ctx, "challenge_start", call)

    @bentoml.api(route="/process")
    async def challenge_process(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """JSON {"session_id", "image": base64 frame} -> face_detected, instruction, step_completed, ..."""

        async def call() -> dict[str, Any]:
            key, doc = challenge_api.parse(body, ctx.request.headers)
            frame = challenge_api.frame_bytes(doc, self.core.pipeline.limits)
            if looks_like_token(key):
                return await flows.challenge_process(self._sessions(), key, doc.get("session_id"), frame)
            return await self.challenges.process(key, doc.get("session_id"), frame)

        return await self._challenge_call(ctx, "challenge_process", call)

    @bentoml.api(route="/complete")
    async def challenge_complete(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """JSON {"session_id"} -> verdict, result_token, ... (charges one unit, once)."""

        async def call() -> dict[str, Any]:
            key, doc = challenge_api.parse(body, ctx.request.headers)
            if looks_like_token(key):
                return flows.challenge_answer(await flows.challenge_complete(self._sessions(), key, doc.get("session_id")))
            return await self.challenges.complete(key, doc.get("session_id"))

        return await self._challenge_call(ctx, "challenge_complete", call)

    # -- app-server sessions and face verification (liveness.sessions; README "Sessions") -------

    def _sessions(self) -> SessionService:
        return require_sessions(self.sessions)

    @bentoml.api(route="/v1/sessions")
    async def create_session(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """App server: {mode, device_correlation_id?, auth_token_ttl_seconds?, send_results_to_client?,
        max_attempts?, enable_session_image?} (+ verify_image for *-verify modes) -> {session_id, auth_token}."""
        content_type = ctx.request.headers.get(ORIGINAL_CONTENT_TYPE, "")
        try:
            key, parsed = session_api.parse_create(body, content_type, ctx.request.headers, self.core.pipeline.limits)
            service = self._sessions()
            await self.core.admit(key)  # a refused key costs no parsing or face work
            params, reference = parsed()
            payload = await service.create(key, params, reference)
        except LivenessError as err:
            retry_later(ctx, err)
            return respond(ctx, err.status, err.envelope())
        return respond(ctx, 200, payload)

    @bentoml.api(route="/v1/verify")
    async def verify(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Two images (multipart image1/image2 or JSON base64) -> {is_identical, match_confidence}."""
        content_type = ctx.request.headers.get(ORIGINAL_CONTENT_TYPE, "")
        try:
            key, images = session_api.parse_verify(body, content_type, ctx.request.headers, self.core.pipeline.limits)
            payload = await self.core.compare_faces(key, images)
        except LivenessError as err:
            retry_later(ctx, err)
            return respond(ctx, err.status, err.envelope())
        return respond(ctx, 200, payload)


def session_answer(ctx: bentoml.Context, endpoint: str, out: Any, request_id: str, full: Any) -> Any:
    """A session client's answer: the attempt's error, or the endpoint's full answer only when the
    session sends results to the client; always the session view."""
    if out.error is not None:
        DECISIONS.labels(endpoint=endpoint, outcome=out.error.code).inc()
        return respond(ctx, out.error.status, {**out.error.envelope(), "request_id": request_id, "session": out.view})
    live = getattr(out.result, "is_live", getattr(out.result, "alive", False))
    DECISIONS.labels(endpoint=endpoint, outcome="live" if live else "spoof").inc()
    body = full(out.result, request_id) if out.send_results else {"request_id": request_id}
    return respond(ctx, 200, {**body, "session": out.view})


CHALLENGE_BODY_LIMIT = 64 * 1024
Liveness.add_asgi_middleware(SpreadConnections, every=settings.http_requests_per_connection)
Liveness.add_asgi_middleware(
    RawBodyMiddleware,
    routes={"/liveness": BODY_LIMIT, "/v1/liveness": BODY_LIMIT, "/v1/video-liveness": video_api.body_limit(settings),
            "/start": CHALLENGE_BODY_LIMIT, "/process": BODY_LIMIT, "/complete": CHALLENGE_BODY_LIMIT,
            "/v1/sessions": BODY_LIMIT, "/v1/verify": 2 * BODY_LIMIT},
    too_large=too_large,
)
