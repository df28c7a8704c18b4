"""Video API adapter (FindFace-like answer): request parsing and response building only.

The route (wired in service.py) should sit behind ``RawBodyMiddleware`` with
``body_limit(settings)`` so an oversized upload is refused before it is read, then::

    req = parse_video_request(body, original_content_type, headers, query)
    result = await check_video(app, req.api_key, req.video(), req.content_type,
                               return_photo=req.return_photo, return_normalized=req.return_normalized,
                               return_detection=req.return_detection)
    return video_response(result, request_id)

Accepted bodies: the video itself (``video/mp4``, ``video/quicktime``, ``video/webm``,
``image/gif``, ``application/octet-stream``; the magic bytes decide the container), or
``multipart/form-data`` with the file in a field named ``video`` (or ``file``); an empty body is
an empty video (``empty_video``, after the key check).  Flags
``return_photo`` / ``return_normalized`` / ``return_detection`` come from the query string or form
fields (``1``/``true``/``yes``/``on``).  ``return_detection`` (FindFace's) answers
``best_face.detection_id``: the id of the live best face's stored embedding, which ``/v1/verify``
accepts in place of an image (liveness.detections), or null with ``best_face.detection_reason``.  A JSON (base64) body is refused: a 10 MB video would be a
13 MB string.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from edge.multipart import parse_form
from edge.credentials import api_key_from
from liveness.errors import INVALID_REQUEST, MISSING_VIDEO, LivenessError
from liveness.settings import Settings
from liveness.video import VideoResult

VIDEO_FIELDS = ("video", "file", "sample")  # "sample": FindFace's multipart name for the clip
FLAGS = ("return_photo", "return_normalized", "return_detection")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
MULTIPART_SLACK = 64 * 1024


def body_limit(settings: Settings) -> int:
    """HTTP body limit for the video route: the video plus multipart overhead."""
    return settings.video_max_bytes + MULTIPART_SLACK


@dataclass(frozen=True)
class VideoRequest:
    api_key: str | None
    video: Callable[[], bytes]
    content_type: str  # of the video itself when known (raw body), else ""
    return_photo: bool = False
    return_normalized: bool = False
    return_detection: bool = False


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LivenessError(INVALID_REQUEST, f"'{name}' must be true or false.", {"field": name})


def parse_video_request(
    body: bytes,
    content_type: str,
    headers: Mapping[str, str],
    query: Mapping[str, Any] | None = None,
) -> VideoRequest:
    """-> the key, a callable giving the video bytes and the flags.  Errors are LivenessErrors."""
    query = query or {}
    media = content_type.split(";")[0].strip().lower()
    flags = {name: _flag(name, query[name]) for name in FLAGS if name in query}
    if media == "multipart/form-data":
        form = parse_form(body, content_type)
        part = next((form[f] for f in VIDEO_FIELDS if f in form), None)
        for name in FLAGS:
            if name in form and name not in flags:
                flags[name] = _flag(name, form[name])

        def form_video() -> bytes:
            if not part:
                raise LivenessError(MISSING_VIDEO, "Send the video in a multipart field named 'video'.")
            return part

        return VideoRequest(api_key_from(headers, form), form_video, "", **flags)
    # An empty body, whatever its type, is an empty video (empty_video, once the key is checked).
    if body and (media == "application/json" or (media in ("", "text/plain") and body.lstrip()[:1] == b"{")):
        raise LivenessError(
            INVALID_REQUEST,
            "Send the video as the request body (Content-Type video/mp4, video/webm, video/quicktime or "
            "image/gif) or as multipart/form-data field 'video'; JSON/base64 is not accepted for video.",
        )
    return VideoRequest(api_key_from(headers, {}), lambda: body, media, **flags)


def refuse_detection_for_sessions(req: VideoRequest) -> None:
    """A session's client cannot keep detections: they belong to an API key, and the session's
    app server reads its result itself (README "Sessions")."""
    if req.return_detection:
        raise LivenessError(INVALID_REQUEST, "'return_detection' needs an API key; a session token cannot keep detections.",
                            {"field": "return_detection"})


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def video_response(result: VideoResult, request_id: str) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    if result.best_face is not None:
        b = result.best_face
        left, top, right, bottom = b.bbox
        best = {
            "liveness": round(b.liveness, 6),
            "quality": round(b.quality, 4),
            "bbox": {"left": left, "top": top, "right": right, "bottom": bottom},
            "frame_no": b.frame_no,
            "frame_ts": round(b.frame_ts, 3),
        }
        if b.photo_jpeg is not None:
            best["photo"] = _b64(b.photo_jpeg)
        if b.normalized_png is not None:
            best["normalized"] = _b64(b.normalized_png)
        if b.detection_id is not None or b.detection_reason is not None:  # return_detection was asked
            best["detection_id"] = b.detection_id
            if b.detection_id is None:
                best["detection_reason"] = b.detection_reason
    return {
        "request_id": request_id,
        "alive": result.alive,
        "decision": result.verdict.value,
        "average_liveness": None if result.average_liveness is None else round(result.average_liveness, 6),
        "liveness_threshold": result.threshold,
        "best_face": best,
        "frames": [f.as_dict() for f in result.frames],
        "frames_selected": result.frames_selected,
        "frames_analyzed": result.frames_analyzed,
        "stopped_early": result.stopped_early,
        "errors": [e.as_dict() for e in result.errors],
        "video": result.video.as_dict(),
        "models": [m.as_dict() for m in result.models],
        "timings_ms": result.timings_ms,
    }
