"""BioID BWS 3's RESTful JSON API: ``POST /api/v1/livenessdetection``, ``/api/v1/videolivenessdetection``
and ``/api/v1/photoverify`` (docs/GRPC.md "BioID BWS 3").  ``GET /livez`` and ``/readyz``, BWS's
probes, are BentoML's own at the same paths.

The JSON is BWS 3's protobuf messages in camelCase (proto3 JSON: enums as their names, every field
present): ``{"liveImages": [{"image": base64, "tags": [...]}]}``, ``{"video": base64}``,
``{"liveImages", "photo", "disableLivenessDetection"}``.  Auth is what BWS REST clients send:
``Authorization: Bearer <JWT signed with the client key>``.  The calls are ``edge.bws_grpc``'s
(same use cases, same renderers); errors are google.rpc.Status JSON (``{"code": <gRPC code>,
"message", "details": [ErrorInfo{reason: our error code}]}``) with our HTTP status.

Starlette routes (service.py stays wiring only), so this module bounds its own bodies: the
Content-Length, then a counted read, before any JSON is parsed, and JSON depth/size limits
(``edge.json_body``) before the parser runs.  A successful call's unit is committed once the
answer has been sent (``settle_after_send``), as on every HTTP API.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any, Awaitable, Callable

from google.protobuf import json_format
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge import bws_grpc, render
from edge.bws_grpc import BWS_VERSION, pb2
from edge.grpc_server import status_code
from edge.raw_body import read_body
from edge.json_body import parse_object
from liveness.admission import settle_after_send
from liveness.errors import (IMAGE_TOO_LARGE, INVALID_BASE64, INVALID_REQUEST, MULTIPLE_FACES, NO_FACE, NOT_READY,
                             VIDEO_TOO_LARGE, LivenessError)
from liveness.imaging import strip_data_uri_and_b64decode
from liveness.keys import Principal
from liveness.tokens import bearer_token

LIVENESS_PATH = "/api/v1/livenessdetection"
VIDEO_PATH = "/api/v1/videolivenessdetection"
PHOTO_PATH = "/api/v1/photoverify"
SLACK = 64 * 1024  # JSON framing, tags
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def _image_body_limit(core: Any, images: int) -> int:
    return images * (core.pipeline.limits.max_bytes * 4 // 3 + 4) + SLACK


def _video_body_limit(core: Any) -> int:
    return core.settings.video_max_bytes * 4 // 3 + SLACK


# -- errors ----------------------------------------------------------------------------------------


def status_json(err: LivenessError) -> dict[str, Any]:
    return {"code": status_code(err).value[0], "message": err.message,
            "details": [{"@type": ERROR_INFO, "reason": err.code, "domain": "liveness",
                         "metadata": {k: str(v) for k, v in err.details.items() if isinstance(v, (str, int, float))}}]}


def error_response(err: LivenessError, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(status_json(err), status_code=err.status, headers={**headers, **(err.headers() or {})})


# -- requests --------------------------------------------------------------------------------------


def _image(value: Any, limits: Any, field: str) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise LivenessError(INVALID_REQUEST, f"'{field}' must be a base64 string.", {"field": field})
    try:
        return strip_data_uri_and_b64decode(value, limits)
    except LivenessError as e:
        e.details.setdefault("field", field)
        raise


def _bool(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise LivenessError(INVALID_REQUEST, f"'{field}' must be true or false.", {"field": field})
    return value


def _live_images(doc: dict[str, Any], limits: Any) -> list[Any]:
    items = doc.get("liveImages")
    if items is None:
        return []
    if not isinstance(items, list):
        raise LivenessError(INVALID_REQUEST, "'liveImages' must be an array.", {"field": "liveImages"})
    if len(items) > bws_grpc.MAX_LIVE_IMAGES:
        bws_grpc.check_image_count(len(items))  # before any image is decoded
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise LivenessError(INVALID_REQUEST, f"'liveImages[{i}]' must be an object.", {"field": f"liveImages[{i}]"})
        tags = item.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise LivenessError(INVALID_REQUEST, f"'liveImages[{i}].tags' must be an array of strings.",
                                {"field": f"liveImages[{i}].tags"})
        out.append(pb2.ImageData(image=_image(item.get("image"), limits, f"liveImages[{i}].image"), tags=tags))
    return out


def liveness_request(doc: dict[str, Any], limits: Any) -> Any:
    return pb2.LivenessDetectionRequest(live_images=_live_images(doc, limits))


def photo_request(doc: dict[str, Any], limits: Any) -> Any:
    return pb2.PhotoVerifyRequest(live_images=_live_images(doc, limits), photo=_image(doc.get("photo"), limits, "photo"),
                                  disable_liveness_detection=_bool(doc.get("disableLivenessDetection"),
                                                                   "disableLivenessDetection"))


def video_request(doc: dict[str, Any], max_bytes: int) -> Any:
    value = doc.get("video")
    if value is None or value == "":
        return pb2.VideoLivenessDetectionRequest()
    if not isinstance(value, str):
        raise LivenessError(INVALID_REQUEST, "'video' must be a base64 string.", {"field": "video"})
    if len(value) > max_bytes * 4 // 3 + 4:
        raise LivenessError(VIDEO_TOO_LARGE, f"The video exceeds {max_bytes} bytes.", {"field": "video"})
    text = value
    if value[:5].lower() == "data:":
        _, comma, text = value.partition(",")
        if not comma:
            raise LivenessError(INVALID_BASE64, "'video' is a data URI without data (data:<type>;base64,<data>).",
                                {"field": "video"})
    text = "".join(text.split())  # line-wrapped base64 (MIME, PEM-style), as images accept
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                                validate=True)
    except (binascii.Error, ValueError):
        raise LivenessError(INVALID_BASE64, "'video' is not valid base64.", {"field": "video"}) from None
    return pb2.VideoLivenessDetectionRequest(video=data)


# -- routes ----------------------------------------------------------------------------------------

Parse = Callable[[Any, dict[str, Any]], Any]
Run = Callable[[Any, Principal | None, Any], Awaitable[Any]]


def bws_routes(get_core: Callable[[], Any]) -> list[Route]:
    """Starlette routes; ``get_core`` -> this worker's LivenessApp or None while it loads."""

    def endpoint(limit: Callable[[Any], int], parse: Parse, run: Run, faulted_type: Any,
                 metric: str, too_large: Any = IMAGE_TOO_LARGE) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            t0 = time.perf_counter()
            jobid = render.job_id()  # the same form as the gRPC calls'
            headers = {"jobid": jobid, "bws-version": BWS_VERSION}
            ref = request.headers.get("reference-number")
            if ref and ref.isprintable() and len(ref) <= 256:
                headers["reference-number"] = ref

            def done(response: Response) -> Response:
                response.headers["response-time-ms"] = f"{(time.perf_counter() - t0) * 1000:.1f}"
                return response

            core = get_core()
            if core is None or not core.ready:
                return done(error_response(LivenessError(NOT_READY, "The service is loading; retry shortly."), headers))
            with settle_after_send() as pending:
                response = await answer(request, core, headers, jobid)
            return done(render.settle_when_sent(response, pending))

        async def answer(request: Request, core: Any, headers: dict[str, str], jobid: str) -> Response:
            from edge import metrics

            try:
                credential = await _credential(core, request)
                doc = parse_object(await read_body(request, limit(core), too_large))
                message = await asyncio.to_thread(parse, core, doc)
                reply = await run(core, credential, message)
            except LivenessError as err:
                metrics.decision(metric, err.code)
                if err.kind in (NO_FACE, MULTIPLE_FACES):
                    reply = bws_grpc.faulted_response(err, faulted_type)
                else:
                    return error_response(err, headers)
            except ClientDisconnect:
                return Response(status_code=499)
            except Exception as exc:  # noqa: BLE001 - ours: logged without request data, never charged
                render.log_unexpected(request.url.path, exc, jobid)
                metrics.decision(metric, render.UNEXPECTED.code)
                return error_response(render.UNEXPECTED, headers)
            else:
                metrics.decision(metric, "live" if reply.live else "spoof")
            body = json_format.MessageToDict(reply, always_print_fields_with_no_presence=True)
            return JSONResponse(body, headers=headers)

        return handle

    async def _credential(core: Any, request: Request) -> Principal | None:
        verifier = bws_grpc.verifier_for(core)
        if verifier is None:
            return None
        token = bearer_token(request.headers.get("authorization"))
        return Principal(await asyncio.to_thread(verifier.verify, token))

    def limits(core: Any) -> Any:
        return core.pipeline.limits

    return [
        Route(LIVENESS_PATH, endpoint(lambda c: _image_body_limit(c, bws_grpc.MAX_LIVE_IMAGES),
                                      lambda c, d: liveness_request(d, limits(c)), bws_grpc.run_liveness,
                                      pb2.LivenessDetectionResponse, "bws_rest_image"), methods=["POST"]),
        Route(VIDEO_PATH, endpoint(_video_body_limit, lambda c, d: video_request(d, c.settings.video_max_bytes),
                                   bws_grpc.run_video, pb2.LivenessDetectionResponse, "bws_rest_video", VIDEO_TOO_LARGE),
              methods=["POST"]),
        Route(PHOTO_PATH, endpoint(lambda c: _image_body_limit(c, bws_grpc.MAX_LIVE_IMAGES + 1),
                                   lambda c, d: photo_request(d, limits(c)), bws_grpc.run_photo_verify,
                                   pb2.PhotoVerifyResponse, "bws_rest_photoverify"), methods=["POST"]),
    ]
