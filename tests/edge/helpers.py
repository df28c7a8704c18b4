"""Shared helpers of the edge adapter tests (imported as ``tests.edge.helpers``).

Nothing here loads a model or opens a socket: images are made in memory, a BentoML request
context is a real Starlette ``Request`` plus BentoML's own ``ResponseContext``, and multipart
bodies are framed by hand so a test controls every byte of the boundary."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import bentoml
import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from edge.raw_body import ORIGINAL_CONTENT_TYPE
from tests.fakes import Box

BOUNDARY = "----LivenessTestBoundary7MA4YWxkTrZu0gW"
# A face the fake RetinaFace finds in any image (fractions of its width and height).
FACE = Box(0.3, 0.25, 0.35, 0.45)


def jpeg(width: int = 320, height: int = 240, level: int | None = None, seed: int = 0) -> bytes:
    """A JPEG of noise (or a flat grey ``level``)."""
    if level is None:
        pixels = np.random.default_rng(seed).integers(60, 200, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.full((height, width, 3), level, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Part:
    name: str | None
    value: bytes | str
    filename: str | None = None
    content_type: str | None = None


def multipart(parts: Iterable[Part | tuple], boundary: str = BOUNDARY) -> tuple[bytes, str]:
    """-> (body, Content-Type) of a multipart/form-data request; a tuple is ``Part(*tuple)``."""
    out = bytearray()
    for p in parts:
        p = p if isinstance(p, Part) else Part(*p)
        out += f"--{boundary}\r\n".encode()
        disposition = "form-data" + (f'; name="{p.name}"' if p.name is not None else "")
        if p.filename is not None:
            disposition += f'; filename="{p.filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if p.content_type is not None:
            out += f"Content-Type: {p.content_type}\r\n".encode()
        out += b"\r\n" + (p.value.encode() if isinstance(p.value, str) else p.value) + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@dataclass
class Ctx:
    """What ``edge.apis`` uses of a ``bentoml.Context``: the request and the response context."""

    request: Request
    response: Any = field(default_factory=bentoml.Context.ResponseContext)


def ctx(headers: dict[str, str] | None = None, *, content_type: str | None = None, query: str = "",
        path: str = "/v1/liveness") -> Ctx:
    """A request context as an API sees it behind RawBodyMiddleware: the client's Content-Type
    travels in ``x-liveness-content-type`` (``content_type``), the framework sees octet-stream."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw.append((b"content-type", b"application/octet-stream"))
    if content_type is not None:
        raw.append((ORIGINAL_CONTENT_TYPE.encode(), content_type.encode("latin-1")))
    scope = {"type": "http", "method": "POST", "path": path, "headers": raw, "query_string": query.encode(),
             "scheme": "http", "server": ("test", 80), "client": ("127.0.0.1", 1234), "root_path": ""}
    return Ctx(Request(scope))


def served(endpoint_call: Any) -> Response:
    """Run an API adapter's coroutine and then its response's background tasks, as the server does
    once the response is sent: a request's unit is committed (or a waived one refunded) there."""

    async def serve() -> Response:
        response = await endpoint_call
        if response.background is not None:
            await response.background()
        return response

    return asyncio.run(serve())


def body_of(response: Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.body)


@dataclass
class Svc:
    """The BentoML service instance the API adapters receive: this worker's services."""

    core: Any
    challenges: Any = None
    sessions: Any = None


def used(app: Any, name: str) -> int:
    """Units charged to key ``name`` (of ``app.keys``) in its current period."""
    return app.keys.usage(name).used


# Where the fake YuNet puts the face (fractions of the image's content; FindFace and BWS tests).
YUNET_FACE_BOX = (0.3, 0.25, 0.4, 0.5)


def yunet_one_face(x: np.ndarray) -> list[np.ndarray]:
    """YuNet outputs (cls, obj, bbox, kps at strides 8, 16, 32) holding one face at ``YUNET_FACE_BOX`` of
    the image's content (the zero padding excluded), with plausible keypoints; none in a dark image."""
    n, _, ph, pw = x.shape
    outs = {k: [np.zeros((n, (ph // s) * (pw // s), d), np.float32) for s in (8, 16, 32)]
            for k, d in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))}
    for i in range(n):
        content = x[i].sum(axis=0) > 0
        if not content.any() or x[i][:, content].mean() <= 40:  # like the fake RetinaFace: dark = no face
            continue
        h, w = int(content.any(axis=1).sum()), int(content.any(axis=0).sum())
        x0, y0, fw, fh = YUNET_FACE_BOX[0] * w, YUNET_FACE_BOX[1] * h, YUNET_FACE_BOX[2] * w, YUNET_FACE_BOX[3] * h
        cx, cy = x0 + fw / 2, y0 + fh / 2
        s, k = 32, 2
        cols = pw // s
        c, r = int(cx // s), int(cy // s)
        idx = r * cols + c
        outs["cls"][k][i, idx, 0] = outs["obj"][k][i, idx, 0] = 0.95
        outs["bbox"][k][i, idx] = (cx / s - c, cy / s - r, np.log(fw / s), np.log(fh / s))
        points = [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)]
        outs["kps"][k][i, idx] = [v for px, py in points for v in ((x0 + px * fw) / s - c, (y0 + py * fh) / s - r)]
    return [*outs["cls"], *outs["obj"], *outs["bbox"], *outs["kps"]]
