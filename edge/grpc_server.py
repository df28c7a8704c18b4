"""The BioID-style gRPC API (proto/liveness/bws/v1/liveness.proto, docs/GRPC.md): a ``grpc.aio``
server that runs beside the HTTP one in every service worker and calls the same ``LivenessApp``.

BentoML's new-style services cannot serve gRPC themselves, so each worker starts one of these in
its own event loop (``start_grpc_server`` from the service's startup hook) on the shared
``grpc_port``: gRPC binds with SO_REUSEPORT, so N workers listen on one port and the kernel
spreads incoming connections over them.  No BentoML import here.

Per call: ``authorization: Bearer <JWT>`` -> key_id (``liveness.tokens``, API-key kind) -> the core checks
the key (revoked -> UNAUTHENTICATED) and its quota (RESOURCE_EXHAUSTED) and charges one unit only
when a verdict is reached, exactly like the HTTP API.  Metadata: ``reference-number`` (request,
optional) is echoed and ``jobid`` (a uuid) sent as initial metadata; ``response-time-ms`` is a
trailer.  Liveness outcomes are answers, not RPC errors (``JobStatus`` + ``JobError``); an
unexpected exception (ours: a locked key store, a bug) is ``INTERNAL`` with ``error-code:
internal_error``, logged with the call's jobid and without request data, never charged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import grpc

from edge import render
from edge.protogen import load
from liveness.admission import settle_after_send
from liveness.errors import INTERNAL_ERROR, MISSING_IMAGE, MISSING_VIDEO, MULTIPLE_FACES, NO_FACE, NOT_READY, INVALID_REQUEST, LivenessError
from liveness.keys import Principal
from liveness.pipeline import FACE_CUT_OFF, FACE_TOO_SMALL, MULTIPLE_FACES_FLAG
from liveness.tokens import TokenService, bearer_token, token_service

if TYPE_CHECKING:
    from liveness.app import LivenessApp
    from liveness.pipeline import LivenessResult
    from liveness.settings import Settings

log = logging.getLogger("liveness.grpc")
pb2, pb2_grpc = load()

MAX_IMAGES = 2
# BioID's JobError codes.
REJECTED = "RejectedByPassiveLiveDetection"
NO_FACE_FOUND = "NoFaceFound"
MULTIPLE_FACES_FOUND = "MultipleFacesFound"
FAILURE_TO_ACQUIRE = "FailureToAcquire"
# Our quality flags as BWS-style quality checks.
QUALITY_CHECKS = (
    (FACE_TOO_SMALL, "FaceTooSmall", "The face is smaller than the configured minimum size."),
    (FACE_CUT_OFF, "FaceCutOff", "The face reaches the image border."),
    (MULTIPLE_FACES_FLAG, "MultipleFaces", "More than one face is in the image."),
)


def status_code(err: LivenessError) -> grpc.StatusCode:
    """Our error catalogue -> BWS 3's status codes (docs/GRPC.md)."""
    if err.status == 401:
        return grpc.StatusCode.UNAUTHENTICATED
    if err.status == 429:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if err.status == 503:
        return grpc.StatusCode.UNAVAILABLE
    if 400 <= err.status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, error_code: str = "") -> None:
        super().__init__(details)
        self.code, self.details, self.error_code = code, details, error_code


# -- answers -------------------------------------------------------------------------------------


def _quality(flags: tuple[str, ...]) -> list[Any]:
    return [
        pb2.QualityAssessment(check=name, result=flag in flags, score=1.0 if flag in flags else 0.0, text=text)
        for flag, name, text in QUALITY_CHECKS
    ]


def _image_properties(result: "LivenessResult") -> Any:
    f = result.face
    face = pb2.Face(box=pb2.Box(left=f.x, top=f.y, width=f.w, height=f.h), texture_liveness_score=result.score)
    if f.keypoints is not None and len(f.keypoints) >= 2:  # image-left eye first
        face.left_eye.x, face.left_eye.y = (float(v) for v in f.keypoints[0])
        face.right_eye.x, face.right_eye.y = (float(v) for v in f.keypoints[1])
    return pb2.ImageProperties(faces=[face], quality_assessments=_quality(result.quality_flags))


def image_response(results: list["LivenessResult"]) -> Any:
    """With 2 images both must be live; the score is the lower one."""
    live = all(r.is_live for r in results)
    errors = [
        pb2.JobError(
            error_code=REJECTED,
            message=(f"image {i + 1}: " if len(results) > 1 else "")
            + f"liveness score {r.score:.4f} is below the threshold {r.threshold:g}.",
        )
        for i, r in enumerate(results)
        if not r.is_live
    ]
    return pb2.LivenessDetectionResponse(
        status=pb2.SUCCEEDED,
        errors=errors,
        image_properties=[_image_properties(r) for r in results],
        live=live,
        liveness_score=min(r.score for r in results),
    )


def no_face_response(err: LivenessError) -> Any:
    """NO_FACE / MULTIPLE_FACES: the job ran but could not judge -> FAULTED, not an RPC error."""
    code = NO_FACE_FOUND if err.kind is NO_FACE else MULTIPLE_FACES_FOUND
    where = f"image {err.details['image'] + 1}: " if "image" in err.details else ""
    return pb2.LivenessDetectionResponse(
        status=pb2.FAULTED, errors=[pb2.JobError(error_code=code, message=where + err.message)], live=False
    )


def video_response(result: Any) -> Any:
    props = []
    for fr in result.frames:
        p = pb2.ImageProperties(frame_number=float(fr.frame_no), quality_score=float(fr.quality or 0.0),
                                quality_assessments=_quality(fr.quality_flags) if fr.liveness is not None else [])
        if fr.liveness is not None and fr.bbox is not None:
            left, top, right, bottom = fr.bbox
            p.faces.append(pb2.Face(box=pb2.Box(left=left, top=top, width=right - left, height=bottom - top),
                                    texture_liveness_score=float(fr.liveness)))
        props.append(p)
    codes = {issue.code for issue in result.errors}
    return pb2.LivenessDetectionResponse(
        status=pb2.FAULTED if FAILURE_TO_ACQUIRE in codes else pb2.SUCCEEDED,
        errors=[pb2.JobError(error_code=issue.code, message=issue.message) for issue in result.errors],
        image_properties=props,
        live=bool(result.alive),
        liveness_score=float(result.average_liveness or 0.0),
    )


# -- the service ---------------------------------------------------------------------------------


Observe = Callable[[str, str], None]  # (endpoint, outcome)


class TokenVerifier(Protocol):
    def verify(self, token: str | None) -> str: ...  # -> key_id; raises MISSING_/INVALID_API_KEY


def _reads_a_store(tokens: TokenVerifier) -> bool:
    """A verifier that looks its secret up in a store (BWS clients) runs off the event loop; one
    that only checks a signature (bearer tokens) runs on it."""
    return bool(getattr(tokens, "reads_store", False))


class CallFrame:
    """What every servicer on this server shares per call (ours and BWS 3's, edge/bws_grpc.py):
    metadata in and out, the bearer JWT -> ``Principal``, the deadline, ``LivenessError`` -> status
    code, no-face outcomes as answers (``faulted``), metrics.  A servicer overrides the hooks."""

    def __init__(self, core: "LivenessApp", tokens: TokenVerifier | None, observe: Observe | None = None) -> None:
        self.core = core
        self.tokens = tokens  # None: authentication disabled (LIVENESS_AUTH_ENABLED=false)
        self.observe = observe or (lambda endpoint, outcome: None)

    async def _credential(self, metadata: dict[str, str]) -> Principal | None:
        if self.tokens is None:
            return None
        token = bearer_token(metadata.get("authorization"))
        if _reads_a_store(self.tokens):
            return Principal(await asyncio.to_thread(self.tokens.verify, token))
        return Principal(self.tokens.verify(token))

    def initial_metadata(self, metadata: dict[str, str]) -> list[tuple[str, str]]:
        """The response's initial metadata; the first entry is the call's jobid."""
        initial = [("jobid", render.job_id())]
        if metadata.get("reference-number"):
            initial.append(("reference-number", metadata["reference-number"]))
        return initial

    def faulted(self, err: LivenessError) -> Any:
        """The answer for NO_FACE / MULTIPLE_FACES (a job that ran but could not judge)."""
        return no_face_response(err)

    async def _call(self, request: Any, context: grpc.aio.ServicerContext,
                    work: Callable[[Principal | None], Awaitable[Any]], endpoint: str) -> Any:
        t0 = time.perf_counter()
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        initial = self.initial_metadata(metadata)
        await context.send_initial_metadata(initial)

        def trailer(*extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
            return (("response-time-ms", f"{(time.perf_counter() - t0) * 1000:.1f}"), *extra)

        with settle_after_send() as pending:
            response = await self._answer(context, metadata, work, endpoint, initial[0][1], trailer)
        if pending:  # settled when the call ends: delivered, or cancelled (deadline, client gone)
            context.add_done_callback(lambda call: _settle(pending, delivered=not call.cancelled()))
        return response

    async def _answer(self, context: grpc.aio.ServicerContext, metadata: dict[str, str],
                      work: Callable[[Principal | None], Awaitable[Any]], endpoint: str, jobid: str,
                      trailer: Callable[..., tuple[tuple[str, str], ...]]) -> Any:
        try:
            if not self.core.ready:
                raise LivenessError(NOT_READY, "The service is loading; retry shortly.")
            credential = await self._credential(metadata)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the check started")
            try:
                # Cancelling the check on the deadline refunds its reservation (LivenessApp.charge).
                response = await asyncio.wait_for(work(credential), remaining)
            except asyncio.TimeoutError:
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed during the check") from None
        except LivenessError as err:
            self.observe(endpoint, err.code)
            if err.kind in (NO_FACE, MULTIPLE_FACES):
                context.set_trailing_metadata(trailer())
                return self.faulted(err)
            await context.abort(status_code(err), f"{err.code}: {err.message}",
                                trailing_metadata=trailer(("error-code", err.code)))
        except _Abort as a:
            await context.abort(a.code, a.details, trailing_metadata=trailer())
        except Exception as exc:  # ours (a store error, a bug): logged without request data, never charged
            render.log_unexpected(endpoint, exc, jobid, logger=log)
            self.observe(endpoint, INTERNAL_ERROR.code)
            await context.abort(grpc.StatusCode.INTERNAL, f"{render.UNEXPECTED.code}: {render.UNEXPECTED.message}",
                                trailing_metadata=trailer(("error-code", INTERNAL_ERROR.code)))
        self.observe(endpoint, "live" if response.live else "spoof")
        context.set_trailing_metadata(trailer())
        return response


_SETTLING: set[asyncio.Task] = set()


def _settle(pending: list[Callable[..., Awaitable[None]]], delivered: bool) -> None:
    """Run a finished call's settlements (liveness.admission ``settle_after_send``): a unit is
    committed only when the answer was delivered, so a client whose deadline passed while the
    answer was on its way pays nothing."""
    for settle in pending:
        task = asyncio.ensure_future(settle(delivered=delivered))
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)


class LivenessServicer(CallFrame, pb2_grpc.LivenessWebServiceServicer):
    async def LivenessDetection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def work(credential: Principal | None) -> Any:
            images = [item.image for item in request.live_images]
            if not images:
                raise LivenessError(MISSING_IMAGE, "live_images is empty: send 1 or 2 images.")
            if len(images) > MAX_IMAGES:
                raise LivenessError(INVALID_REQUEST, f"{len(images)} live_images: send 1 or 2 images.")
            return image_response(await self.core.check_images(credential, images))

        return await self._call(request, context, work, "grpc_image")

    async def VideoLivenessDetection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def work(credential: Principal | None) -> Any:
            from liveness.video import check_video  # av/cv2 video stack only when used

            if not request.video:
                raise LivenessError(MISSING_VIDEO, "video is empty.")
            return video_response(await check_video(self.core, credential, request.video, ""))

        return await self._call(request, context, work, "grpc_video")


# -- lifecycle -----------------------------------------------------------------------------------


def max_message_bytes(settings: "Settings") -> int:
    """Room for our own limits (2 images or 1 video) plus framing: a bigger message is refused by
    gRPC itself (RESOURCE_EXHAUSTED) before any of our code runs."""
    return max(MAX_IMAGES * settings.max_image_bytes, settings.video_max_bytes) + 64 * 1024


async def start_grpc_server(
    core: "LivenessApp", settings: "Settings", observe: Observe | None = None, tokens: TokenService | None = None
) -> grpc.aio.Server | None:
    """Start this worker's gRPC server in the running loop; ``None`` when ``grpc_enabled`` is off.
    Raises when the port cannot be bound, so a misconfiguration stops the service visibly.
    ``observe(endpoint, outcome)`` counts answers (the HTTP side's ``liveness_decisions``).
    ``tokens``: the worker's token service (default: one on the key store's ring)."""
    if not settings.grpc_enabled:
        return None
    bearer = None
    if core.keys is not None:  # authentication enabled
        bearer = (tokens or await asyncio.to_thread(token_service, settings, keys=core.keys)).bearer
    limit = max_message_bytes(settings)
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 1),  # every worker binds the same port; the kernel spreads connections
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ])
    pb2_grpc.add_LivenessWebServiceServicer_to_server(LivenessServicer(core, bearer, observe), server)
    from edge.bws_grpc import add_bws_servicer  # BioID's BWS 3 contract on the same port (docs/GRPC.md)

    add_bws_servicer(server, core, observe)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise RuntimeError(f"gRPC: cannot listen on {address}: {e}") from e
    await server.start()
    log.info("gRPC (liveness.bws.v1.LivenessWebService) listening on %s", address)
    return server


async def stop_grpc_server(server: grpc.aio.Server | None, grace_s: float = 5.0) -> None:
    if server is not None:
        await server.stop(grace_s)
