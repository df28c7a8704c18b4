"""HTTP adapter for app-server sessions and face verification: request parsing only.

``POST /v1/sessions``: JSON parameters, or multipart with a ``parameters`` JSON part (or one
field per parameter) and a ``verify_image`` file for ``*-verify`` modes (Azure's ``Parameters`` /
``VerifyImage`` names work too); JSON may carry ``verify_image`` as base64.
``POST /v1/verify``: two images, multipart ``image1``/``image2`` (or JSON base64); either may be
replaced by a stored detection of the caller's (``detection_id1`` / ``detection_id2``: FindFace's
``return_detection``, liveness.detections).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge import render
from edge.challenges import parse_json
from edge.credentials import api_key_from
from edge.multipart import parse_form
from liveness.detections import DetectionRef
from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, LivenessError
from liveness.imaging import ImageLimits, sniff_format, strip_data_uri_and_b64decode
from liveness.sessions import SessionParams, parse_params

PARAM_PARTS = ("parameters", "Parameters")
VERIFY_PARTS = ("verify_image", "VerifyImage", "verifyImage")
PAIR_FIELDS = (("image1", "image2"), ("reference", "probe"), ("image_a", "image_b"))
DETECTION_FIELDS = ("detection_id1", "detection_id2")  # in place of image1 / image2


def _image_value(value: Any, limits: ImageLimits, field: str = "image") -> bytes | None:
    """A file part, or base64 text (in a form field or JSON)."""
    if value is None or value == b"" or value == "":
        return None
    if not isinstance(value, (str, bytes)):  # JSON: a number, list or object where base64 belongs
        raise LivenessError(INVALID_REQUEST, f"'{field}' must be a base64 string.", {"field": field})
    if isinstance(value, str):
        return strip_data_uri_and_b64decode(value, limits)
    if sniff_format(value) is None and value.isascii():
        return strip_data_uri_and_b64decode(value.decode("ascii"), limits)
    return value


def parse_create(
    body: bytes, content_type: str, headers: Mapping[str, str], limits: ImageLimits
) -> tuple[str | None, Callable[[], tuple[SessionParams, bytes | None]]]:
    """-> (api key, a callable giving the parameters and the reference image bytes).  The
    callable runs after the key is checked, so a refused client costs no parsing."""
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        form = parse_form(body, content_type)
        part = next((form[p] for p in PARAM_PARTS if p in form), None)

        def from_form() -> tuple[SessionParams, bytes | None]:
            if part is not None:
                doc = parse_json(part)
            else:
                doc = {k: v.decode("utf-8", "replace") for k, v in form.items() if k not in VERIFY_PARTS + ("hash_id",)}
            image = _image_value(next((form[p] for p in VERIFY_PARTS if p in form), None), limits)
            return parse_params(doc), image

        return api_key_from(headers, form), from_form
    doc = parse_json(body)

    def from_json() -> tuple[SessionParams, bytes | None]:
        fields = {k: v for k, v in doc.items() if k not in VERIFY_PARTS + ("hash_id",)}
        value = next((doc[p] for p in VERIFY_PARTS if doc.get(p) is not None), None)
        if value is not None and not isinstance(value, str):
            raise LivenessError(INVALID_REQUEST, "'verify_image' must be a base64 string.", {"field": "verify_image"})
        return parse_params(fields), _image_value(value, limits)

    return api_key_from(headers, doc), from_json


def _detection_value(value: Any, field: str) -> DetectionRef | None:
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value.strip():
        raise LivenessError(INVALID_REQUEST, f"'{field}' must be a detection_id string.", {"field": field})
    return DetectionRef(value.strip())


def parse_verify(
    body: bytes, content_type: str, headers: Mapping[str, str], limits: ImageLimits
) -> tuple[str | None, Callable[[], tuple[bytes | DetectionRef, bytes | DetectionRef]]]:
    """-> (api key, a callable giving the two faces: image bytes or a ``DetectionRef``).  The first
    pair of names present is used: ``image1``/``image2`` (each replaceable by ``detection_id1`` /
    ``detection_id2``), ``reference``/``probe``, ``image_a``/``image_b``."""
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        fields: Mapping[str, Any] = parse_form(body, content_type)
    else:
        fields = parse_json(body)

    def first_pair() -> tuple[bytes | DetectionRef, bytes | DetectionRef]:
        a, b = PAIR_FIELDS[0]
        faces: list[bytes | DetectionRef] = []
        for image_field, detection_field in ((a, DETECTION_FIELDS[0]), (b, DETECTION_FIELDS[1])):
            image = _image_value(fields.get(image_field), limits, image_field)
            detection = _detection_value(fields.get(detection_field), detection_field)
            if image is not None and detection is not None:
                raise LivenessError(INVALID_REQUEST, f"Send '{image_field}' or '{detection_field}', not both.",
                                    {"field": detection_field})
            face = image if image is not None else detection
            if face is None:
                message = (f"Send two faces: '{a}' (or '{DETECTION_FIELDS[0]}') and '{b}' (or '{DETECTION_FIELDS[1]}')."
                           if any(f in fields for f in DETECTION_FIELDS) else f"Send two images: '{a}' and '{b}'.")
                raise LivenessError(MISSING_IMAGE, message, {"field": image_field})
            faces.append(face)
        return faces[0], faces[1]

    def images() -> tuple[bytes | DetectionRef, bytes | DetectionRef]:
        if any(f in fields for f in (*PAIR_FIELDS[0], *DETECTION_FIELDS)):
            return first_pair()
        for a, b in PAIR_FIELDS[1:]:
            if a in fields or b in fields:
                first, second = _image_value(fields.get(a), limits, a), _image_value(fields.get(b), limits, b)
                if first is None or second is None:
                    missing = a if first is None else b
                    raise LivenessError(MISSING_IMAGE, f"Send two images: '{a}' and '{b}'.", {"field": missing})
                return first, second
        raise LivenessError(MISSING_IMAGE, "Send two images: 'image1' and 'image2'.")

    return api_key_from(headers, fields), images


def query_int(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise LivenessError(INVALID_REQUEST, f"'{name}' must be a positive integer.", {"field": name})
    return int(value)


# -- GET /v1/sessions, GET|DELETE /v1/sessions/{id}, GET /v1/sessions/{id}/attempts/{n}/image ------

def session_routes(get_service: Callable[[], Any]) -> list[Route]:
    """Starlette routes (BentoML APIs are POST-only); ``get_service`` -> this worker's
    SessionService or None while loading."""

    async def call(request: Request, fn: Callable[[Any, str | None], Any]) -> Response:
        svc = get_service()
        if svc is None:
            return render.not_ready()
        key = api_key_from(request.headers, dict(request.query_params))
        try:
            return await fn(svc, key)
        except LivenessError as err:
            return render.error(err)
        except Exception as exc:  # noqa: BLE001 - ours: the documented envelope, never the framework's text
            request_id = render.request_id(request.headers.get("x-request-id"))
            render.log_unexpected(request.url.path, exc, request_id)
            return render.error(render.UNEXPECTED, request_id=request_id)

    async def list_sessions(request: Request) -> Response:
        async def fn(svc: Any, key: str | None) -> Response:
            return JSONResponse(await svc.list(key, query_int(request.query_params, "limit", 50)))
        return await call(request, fn)

    async def get_session(request: Request) -> Response:
        async def fn(svc: Any, key: str | None) -> Response:
            return JSONResponse(await svc.get(key, request.path_params["session_id"]))
        return await call(request, fn)

    async def delete_session(request: Request) -> Response:
        async def fn(svc: Any, key: str | None) -> Response:
            await svc.delete(key, request.path_params["session_id"])
            return Response(status_code=204)
        return await call(request, fn)

    async def session_image(request: Request) -> Response:
        async def fn(svc: Any, key: str | None) -> Response:
            data, media_type = await svc.image(key, request.path_params["session_id"], request.path_params["attempt"])
            return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})
        return await call(request, fn)

    return [
        Route("/v1/sessions", list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}", delete_session, methods=["DELETE"]),
        Route("/v1/sessions/{session_id}/attempts/{attempt:int}/image", session_image, methods=["GET"]),
    ]
