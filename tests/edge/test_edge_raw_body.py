"""edge/raw_body.py (and the route table edge/apis.py builds for it): bodies over a route's
limit are refused with 413 before they are read (Content-Length first, then a counted read),
in the route's own error format; under the limit the body reaches the API whole, with the
framework's Content-Type hidden and the client's in ``x-liveness-content-type``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from edge import apis
from edge import video as video_api
from edge.methods import AllowedMethods
from edge.raw_body import BODY_LENGTH, ORIGINAL_CONTENT_TYPE, RawBodyMiddleware, replayed_body
from edge.spread import SpreadConnections
from liveness.settings import Settings

LIMIT = 100


class Inner:
    """The app behind the middleware: records what it was given and answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        if scope["type"] == "http":
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
        self.calls.append((scope, body))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def too_large(path: str, limit: int) -> dict[str, Any]:
    return {"error": {"code": "image_too_large", "message": f"{path} over {limit}"}}


def run(mw, scope: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """-> (messages sent, receive() calls)."""
    sent: list[dict[str, Any]] = []
    queue = list(messages)
    calls = 0

    async def receive():
        nonlocal calls
        calls += 1
        if not queue:
            raise AssertionError("receive() called after the body was read")
        return queue.pop(0)

    async def send(m):
        sent.append(m)

    asyncio.run(mw(scope, receive, send))
    return sent, calls


def http(path: str = "/v1/liveness", method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None):
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


def chunk(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


@pytest.fixture
def inner() -> Inner:
    return Inner()


@pytest.fixture
def mw(inner) -> RawBodyMiddleware:
    return RawBodyMiddleware(inner, {"/v1/liveness": LIMIT, "/liveness": 10}, too_large)


def headers_of(scope) -> list[tuple[bytes, bytes]]:
    return list(scope["headers"])


def test_the_body_arrives_whole_with_the_content_type_moved(mw, inner):
    scope = http(headers=[(b"content-type", b"multipart/form-data; boundary=x"), (b"x-api-key", b"lk_1")])
    sent, _ = run(mw, scope, [chunk(b"abc", True), chunk(b"def", True), chunk(b"g")])
    assert sent[0]["status"] == 200
    (seen, body), = inner.calls
    assert body == b"abcdefg"
    h = headers_of(seen)
    assert (b"content-type", b"application/octet-stream") in h
    assert (ORIGINAL_CONTENT_TYPE.encode(), b"multipart/form-data; boundary=x") in h
    assert (b"x-api-key", b"lk_1") in h  # other headers untouched
    assert [k for k, _ in h].count(b"content-type") == 1


def test_a_client_cannot_forge_the_original_content_type(mw, inner):
    scope = http(headers=[(ORIGINAL_CONTENT_TYPE.encode(), b"multipart/form-data; boundary=evil"),
                          (b"content-type", b"image/jpeg")])
    run(mw, scope, [chunk(b"x")])
    h = headers_of(inner.calls[0][0])
    assert [v for k, v in h if k == ORIGINAL_CONTENT_TYPE.encode()] == [b"image/jpeg"]


@pytest.mark.parametrize(("chunks", "length"), [([chunk(b"")], b"0"), ([chunk(b"ab", True), chunk(b"c")], b"3"),
                                               ([chunk(b"", True), chunk(b"")], b"0")])
def test_the_body_length_travels_and_a_client_cannot_forge_it(mw, inner, chunks, length):
    run(mw, http(headers=[(BODY_LENGTH.encode(), b"0"), (BODY_LENGTH.encode(), b"99")]), chunks)
    h = headers_of(inner.calls[0][0])
    assert [v for k, v in h if k == BODY_LENGTH.encode()] == [length]


def test_replayed_body_undoes_the_frameworks_empty_body_substitution():
    # BentoML's JSON serde hands a bytes API b"{}" for an empty body.
    assert replayed_body(b"{}", {BODY_LENGTH: "0"}) == b""
    assert replayed_body(b"{}", {BODY_LENGTH: "2"}) == b"{}"
    assert replayed_body(b"{}", {}) == b"{}"  # not behind the middleware: the body as given


def test_no_content_type_travels_as_empty(mw, inner):
    run(mw, http(), [chunk(b"x")])
    h = headers_of(inner.calls[0][0])
    assert (ORIGINAL_CONTENT_TYPE.encode(), b"") in h and (b"content-type", b"application/octet-stream") in h


def test_after_the_replay_receive_is_the_servers_again(inner):
    seen = []

    async def app(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())  # e.g. waiting for a disconnect

    mw = RawBodyMiddleware(app, {"/v1/liveness": LIMIT}, too_large)
    run(mw, http(), [chunk(b"ab", True), chunk(b"c"), {"type": "http.disconnect"}])
    assert seen == [{"type": "http.request", "body": b"abc", "more_body": False}, {"type": "http.disconnect"}]


def test_content_length_over_the_limit_is_refused_without_reading(mw, inner):
    scope = http(headers=[(b"content-length", str(LIMIT + 1).encode()), (b"content-type", b"image/jpeg")])
    sent, receives = run(mw, scope, [])
    assert receives == 0 and inner.calls == []
    start, body = sent
    assert start["status"] == 413
    payload = json.loads(body["body"])
    assert payload == {"error": {"code": "image_too_large", "message": f"/v1/liveness over {LIMIT}"}}
    h = dict(start["headers"])
    assert h[b"content-type"] == b"application/json" and h[b"connection"] == b"close"
    assert h[b"content-length"] == str(len(body["body"])).encode()


def test_a_chunked_body_is_counted_and_refused_when_it_passes_the_limit(mw, inner):
    half = b"x" * (LIMIT // 2)
    sent, receives = run(mw, http(), [chunk(half, True), chunk(half, True), chunk(b"y", True), chunk(b"never read")])
    assert sent[0]["status"] == 413 and inner.calls == [] and receives == 3  # stopped at the byte over


def test_exactly_the_limit_passes_and_a_lying_content_length_is_still_counted(mw, inner):
    run(mw, http(), [chunk(b"x" * LIMIT)])
    assert inner.calls[0][1] == b"x" * LIMIT
    scope = http(headers=[(b"content-length", b"5")])
    sent, _ = run(mw, scope, [chunk(b"x" * (LIMIT + 1))])
    assert sent[0]["status"] == 413 and len(inner.calls) == 1
    scope = http(headers=[(b"content-length", b"lots")])  # not a number: the counted read decides
    sent, _ = run(mw, scope, [chunk(b"x" * 10)])
    assert sent[0]["status"] == 200 and len(inner.calls) == 2


def test_the_limit_is_per_route(mw, inner):
    sent, _ = run(mw, http("/liveness"), [chunk(b"x" * 11)])
    assert json.loads(sent[1]["body"])["error"]["message"] == "/liveness over 10"


def test_a_client_gone_mid_body_ends_quietly(mw, inner):
    sent, _ = run(mw, http(), [chunk(b"ab", True), {"type": "http.disconnect"}])
    assert sent == [] and inner.calls == []


@pytest.mark.parametrize("scope", [
    http("/v1/other", headers=[(b"content-type", b"image/jpeg"), (b"content-length", b"999999")]),
    http("/v1/liveness", method="GET", headers=[(b"content-type", b"image/jpeg")]),
    {"type": "websocket", "path": "/v1/liveness", "headers": [(b"content-type", b"image/jpeg")]},
    {"type": "lifespan"},
])
def test_other_routes_methods_and_protocols_pass_through_untouched(mw, inner, scope):
    asyncio.run(mw(scope, None, None)) if scope["type"] in ("websocket", "lifespan") else run(mw, scope, [chunk(b"x")])
    seen = inner.calls[0][0]
    assert seen is scope  # the very scope: no header rewritten


def test_over_real_http_framing(inner):
    client = TestClient(RawBodyMiddleware(inner, {"/v1/liveness": 1000}, too_large))
    r = client.post("/v1/liveness", content=b"x" * 1001, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large" and inner.calls == []
    r = client.post("/v1/liveness", files={"image": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")})
    assert r.status_code == 200
    scope, body = inner.calls[0]
    original = dict(scope["headers"])[ORIGINAL_CONTENT_TYPE.encode()].decode()
    assert original.startswith("multipart/form-data; boundary=") and b"\xff\xd8\xff" in body


# -- the route table of edge/apis.py ---------------------------------------------------------------


class Service:
    def __init__(self) -> None:
        self.middlewares: list[tuple[type, dict[str, Any]]] = []

    def add_asgi_middleware(self, cls, **options) -> None:
        self.middlewares.append((cls, options))


def test_every_api_route_is_bounded_as_documented():
    settings = Settings(max_image_bytes=3 * 1024 * 1024, video_max_bytes=5 * 1024 * 1024, http_requests_per_connection=7)
    service = Service()
    apis.add_middleware(service, settings)
    (spread, spread_opts), (methods, methods_opts), (raw, raw_opts) = service.middlewares
    assert spread is SpreadConnections and spread_opts == {"every": 7}
    assert methods is AllowedMethods and methods_opts["refuse"] is apis.method_not_allowed  # before any body is read
    assert raw is RawBodyMiddleware
    image = 3 * 1024 * 1024 * 4 // 3 + 64 * 1024  # base64 inflation plus framing
    assert apis.body_limit(settings) == image
    assert video_api.body_limit(settings) == 5 * 1024 * 1024 + 64 * 1024
    assert raw_opts["routes"] == {
        "/liveness": image, "/v1/liveness": image, "/v1/video-liveness": 5 * 1024 * 1024 + 64 * 1024,
        "/start": 64 * 1024, "/process": image, "/complete": 64 * 1024,
        "/v1/sessions": image, "/v1/verify": 2 * image,
    }
    body = raw_opts["too_large"]("/v1/liveness", image)
    assert body == {"error": {"code": "image_too_large", "message":
                              f"The request body exceeds {image} bytes (images up to {3 * 1024 * 1024} bytes)."}}


def test_413_bodies_in_each_routes_format():
    s = Settings(max_image_bytes=2048, video_max_bytes=4096)
    assert apis.too_large(s, "/liveness", 9) == {  # FACIA's style: {"error": message}
        "error": "The request body exceeds 9 bytes (images up to 2048 bytes)."}
    assert apis.too_large(s, "/v1/video-liveness", 9) == {"error": {
        "code": "video_too_large", "message": "The request body exceeds 9 bytes (videos up to 4096 bytes)."}}
    for path in ("/v1/liveness", "/start", "/process", "/complete", "/v1/sessions", "/v1/verify"):
        assert apis.too_large(s, path, 9)["error"]["code"] == "image_too_large"
