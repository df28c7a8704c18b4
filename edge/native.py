"""Native API ``POST /v1/liveness``: JSON base64, multipart upload or a raw image body."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from edge.credentials import api_key_from
from edge.json_body import parse_object
from edge.multipart import parse_form
from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, LivenessError
from liveness.imaging import ImageLimits, sniff_format, strip_data_uri_and_b64decode
from liveness.pipeline import LivenessResult

IMAGE_FIELDS = ("image", "file", "selfie_image", "image_base64")


def parse_request(
    body: bytes, content_type: str, headers: Mapping[str, str], limits: ImageLimits
) -> tuple[str | None, Callable[[], bytes]]:
    """-> (api key, a callable giving the image bytes).  The callable runs after the key is
    checked, so a refused client costs no base64 decoding.  Errors are LivenessErrors."""
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        form = parse_form(body, content_type)
        part = next((form[f] for f in IMAGE_FIELDS if f in form), None)

        def form_image() -> bytes:
            if not part:
                raise LivenessError(MISSING_IMAGE, "Send the image in a multipart field named 'image'.")
            # A form field may carry base64 text instead of a file.
            if sniff_format(part) is None and _is_ascii(part):
                return strip_data_uri_and_b64decode(part.decode("ascii"), limits)
            return part

        return api_key_from(headers, form), form_image
    if body and (media == "application/json" or (media in ("", "text/plain") and body.lstrip()[:1] == b"{")):
        doc = parse_object(body, empty_ok=False)
        missing = "The JSON body needs an 'image' field with base64 image data."
        return api_key_from(headers, doc), base64_field(doc, IMAGE_FIELDS, limits, missing)
    # Anything else is the image itself (image/jpeg, image/png, application/octet-stream); an
    # empty body, whatever its type, is an empty image (empty_image, once the key is checked).
    return api_key_from(headers, {}), lambda: body


def base64_field(doc: Mapping[str, Any], fields: tuple[str, ...], limits: ImageLimits, missing: str) -> Callable[[], bytes]:
    """A callable giving the decoded base64 image of the first of ``fields`` in the JSON ``doc``
    (MISSING_IMAGE with the ``missing`` message when there is none)."""
    text = next((doc[f] for f in fields if doc.get(f) is not None), None)

    def get() -> bytes:
        if text is None or text == "":
            raise LivenessError(MISSING_IMAGE, missing)
        if not isinstance(text, str):
            raise LivenessError(INVALID_REQUEST, "'image' must be a base64 string.")
        return strip_data_uri_and_b64decode(text, limits)

    return get


def _is_ascii(b: bytes) -> bool:
    return b.isascii() and bool(b.strip())


def response(result: LivenessResult, request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "decision": "live" if result.is_live else "spoof",
        "is_live": result.is_live,
        "score": round(result.score, 6),
        "threshold": result.threshold,
        "face": result.face.as_dict(),
        "faces_found": result.faces_found,
        "detector_pass": result.acquisition,
        "quality_flags": list(result.quality_flags),
        "model_scores": {k: round(v, 6) for k, v in result.model_scores.items()},
        "models": [m.as_dict() for m in result.models],
        "image": {"width": result.image_size[0], "height": result.image_size[1]},
        "timings_ms": result.timings_ms,
    }
