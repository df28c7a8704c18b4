"""BentoML service: the wiring of HTTP and gRPC to ``liveness.LivenessApp``.  The adapters live in
``edge`` (one line per API here); no liveness logic lives here."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import bentoml

from edge import apis, bentoml_patch, challenge_socketio, lifecycle, metrics, timeouts
from edge.grpc_server import start_grpc_server, stop_grpc_server
from edge.routes import status_app
from liveness.app import LivenessApp, front_services
from liveness.settings import get_settings

lifecycle.bind_to_parent()  # a worker stops when its `bentoml serve` goes (edge/lifecycle.py)
bentoml_patch.cache_root_input_schemas()
settings = get_settings()


@bentoml.service(
    name="liveness",
    # One worker per core: a worker is bound by its event loop (GIL) well before the CPU is.
    workers=int(os.environ.get("LIVENESS_WORKERS") or os.cpu_count() or 1),
    traffic={"timeout": 30},
    tracing=apis.tracing_config(settings),  # OpenTelemetry's per-request work only when asked for
)
@bentoml.asgi_app(status_app(settings), path="/")
class Liveness:
    def __init__(self) -> None:
        self.core = LivenessApp(settings, observer=metrics.observe_batch, shadow_observer=metrics.observe_shadow)
        self.tokens, self.challenges, self.sessions = front_services(self.core, settings)  # one token ring

    async def __is_ready__(self) -> bool:  # async: runs in the serving loop (the Triton probe lives there)
        return self.core.ready

    @bentoml.on_startup
    async def start_background(self) -> None:  # one gRPC server per worker, same port (docs/GRPC.md)
        self.grpc = await start_grpc_server(self.core, settings, observe=metrics.decision, tokens=self.tokens)
        self.sweeper = asyncio.create_task(self.core.admission.sweep_periodically())  # crashed requests' units

    @bentoml.on_shutdown
    async def shutdown(self) -> None:
        await stop_grpc_server(getattr(self, "grpc", None))
        await challenge_socketio.stop_worker_sockets()  # the Socket.IO sessions' Unix socket (started lazily)
        if (sweeper := getattr(self, "sweeper", None)) is not None:
            sweeper.cancel()
        self.challenges.close()
        if self.sessions is not None:
            self.sessions.close()
        self.core.close()

    # A raw body reaches an API through a positional-only `bytes` parameter (RawBodyMiddleware).
    @bentoml.api(route="/liveness")
    async def liveness(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """FACIA-compatible: JSON {"hash_id", "selfie_image"} -> 201 {"liveness_result", "message"}."""
        return await apis.facia_liveness(self, body, ctx)

    @bentoml.api(route="/v1/liveness")
    async def v1_liveness(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Native: multipart `image`, JSON {"image": base64}, or a raw image body; key in X-API-Key."""
        return await apis.native_liveness(self, body, ctx)

    @bentoml.api(route="/v1/video-liveness")
    async def v1_video_liveness(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Video (mp4, webm, mov, GIF) as the raw body or multipart `video`; flags return_photo,
        return_normalized in the query; key in X-API-Key.  FindFace/BioID semantics."""
        return await apis.video_liveness(self, body, ctx)

    @bentoml.api(route="/start")
    async def challenge_start(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """JSON {"challenges"?: [...] (needs X-Admin-Key)} -> session_id, instruction, ..."""
        return await apis.challenge_start(self, body, ctx)

    @bentoml.api(route="/process")
    async def challenge_process(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """JSON {"session_id", "image": base64 frame} -> face_detected, instruction, step_completed, ..."""
        return await apis.challenge_process(self, body, ctx)

    @bentoml.api(route="/complete")
    async def challenge_complete(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """JSON {"session_id"} -> verdict, result_token, ... (the unit /start charged buys it)."""
        return await apis.challenge_complete(self, body, ctx)

    @bentoml.api(route="/v1/sessions")
    async def create_session(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """App server: {mode, device_correlation_id?, auth_token_ttl_seconds?, send_results_to_client?,
        max_attempts?, enable_session_image?} (+ verify_image for *-verify modes) -> {session_id, auth_token}."""
        return await apis.create_session(self, body, ctx)

    @bentoml.api(route="/v1/verify")
    async def verify(self, body: bytes, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Two images (multipart image1/image2 or JSON base64) -> {is_identical, match_confidence}."""
        return await apis.verify(self, body, ctx)


timeouts.add_timeouts(Liveness, settings)  # first: the body deadline wraps every body reader
apis.add_middleware(Liveness, settings)
