"""Wrong methods (edge/methods.py ``AllowedMethods``, edge/apis.py ``method_not_allowed`` and
``known_routes``): a known path asked with a method it does not serve is ``405
method_not_allowed`` with ``Allow`` naming every method of the path, in the route's own format
(FACIA's on ``/liveness``, else the native envelope with a request_id), before any body is
read; everything else passes through untouched.  The route table is the served one: the
BentoML APIs of service.py and the routes of the Starlette app it mounts."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from edge import apis
from edge.methods import AllowedMethods, allow_order, http_routes
from edge.raw_body import RawBodyMiddleware


@pytest.fixture(scope="module")
def served():
    import service  # the BentoML service declaration (no model is loaded: that is __init__'s)

    return service.Liveness


class Inner:
    """Stands in for BentoML's app: records what reached it and answers 200 "inner"."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
            await PlainTextResponse("inner")(scope, receive, send)


@pytest.fixture
def inner() -> Inner:
    return Inner()


@pytest.fixture
def client(served, inner) -> TestClient:
    """The middleware as add_middleware installs it, in front of the raw-body limits."""
    app = RawBodyMiddleware(inner, {"/v1/liveness": 1000}, lambda path, limit: {"error": "too large"})
    return TestClient(AllowedMethods(app, apis.known_routes(served), apis.method_not_allowed))


def test_known_routes_are_every_api_and_every_route_of_the_mounted_app(served):
    table: dict[str, set[str]] = {}
    for route in apis.known_routes(served):
        table.setdefault(route.path, set()).update(route.methods)
    for api in served.apis.values():
        assert "POST" in table[api.route]
    assert {"/liveness", "/v1/liveness", "/v1/video-liveness", "/start", "/process", "/complete", "/v1/sessions",
            "/v1/verify"} <= {p for p, m in table.items() if "POST" in m}
    assert table["/v1/sessions"] == {"GET", "HEAD", "POST"}  # a Starlette GET and a BentoML POST
    assert table["/v1/sessions/{session_id}"] == {"GET", "HEAD", "DELETE"}
    assert table["/health"] == {"GET", "HEAD"} and table["/v1/admin/models/{model}/promote"] == {"POST"}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/liveness"), ("DELETE", "/start"), ("GET", "/process"), ("PATCH", "/complete"),
    ("GET", "/v1/video-liveness"), ("PUT", "/v1/verify"), ("OPTIONS", "/v1/liveness"),
])
def test_a_wrong_method_on_an_api_is_405_in_the_native_envelope(client, inner, method, path):
    r = client.request(method, path, headers={"X-Request-ID": "m-1"}, content=b"x" * 5000)  # over the body limit
    assert (r.status_code, r.headers["allow"], r.headers["content-type"]) == (405, "POST", "application/json")
    assert r.json() == {"error": {"code": "method_not_allowed", "message": f"{method} is not allowed here; use POST.",
                                  "details": {"allowed": ["POST"]}}, "request_id": "m-1"}
    assert r.headers["x-request-id"] == "m-1" and inner.seen == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_wrong_method_on_the_facia_route_is_405_in_facias_shape(client, inner, method):
    r = client.request(method, "/liveness")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    assert r.json() == {"error": f"{method} is not allowed here; use POST."}
    assert inner.seen == []


def test_a_head_request_gets_the_405_without_a_body(client):
    r = client.head("/v1/liveness")
    assert (r.status_code, r.headers["allow"], r.content) == (405, "POST", b"")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/v1/sessions/abc", "GET, HEAD, DELETE"),  # Starlette alone said "GET, HEAD"
    ("PUT", "/v1/sessions", "GET, HEAD, POST"),
    ("POST", "/health", "GET, HEAD"), ("DELETE", "/status/s1", "GET, HEAD"),
    ("GET", "/v1/admin/models/minifasnet_v2/promote", "POST"), ("POST", "/v1/admin/models", "GET, HEAD"),
    ("POST", "/v1/sessions/abc/attempts/1/image", "GET, HEAD"),
])
def test_every_route_of_the_service_names_all_its_methods(client, inner, method, path, allow):
    r = client.request(method, path)
    assert (r.status_code, r.headers["allow"], r.json()["error"]["code"]) == (405, allow, "method_not_allowed")
    assert r.json()["error"]["details"] == {"allowed": allow.split(", ")}
    assert re.fullmatch(r"[0-9a-f]{32}", r.json()["request_id"]) and inner.seen == []


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/liveness"), ("GET", "/v1/sessions"), ("POST", "/v1/sessions"), ("DELETE", "/v1/sessions/abc"),
    ("HEAD", "/health"), ("GET", "/v1/sessions/abc/attempts/2/image"),
    ("GET", "/no/such/route"), ("POST", "/metrics"),  # unknown to the table: the framework's own answer
    ("GET", "/v1/sessions/abc/attempts/x/image"),  # not an int: no route matches, the framework's 404
])
def test_served_methods_and_unknown_paths_pass_through(client, inner, method, path):
    r = client.request(method, path)
    assert r.status_code == 200 and inner.seen == [(method, path)]


def test_a_cors_preflight_passes_through(client, inner):
    r = client.options("/v1/liveness", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and inner.seen == [("OPTIONS", "/v1/liveness")]


def test_websockets_and_lifespan_pass_through(served):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    mw = AllowedMethods(app, apis.known_routes(served), apis.method_not_allowed)
    asyncio.run(mw({"type": "websocket", "path": "/v1/liveness", "headers": []}, None, None))
    asyncio.run(mw({"type": "lifespan"}, None, None))
    assert seen == ["websocket", "lifespan"]


def test_a_hostile_method_or_request_id_is_not_echoed(client):
    r = client.request("X" * 40, "/v1/liveness", headers={"X-Request-ID": "<b>" * 10})
    body = r.json()
    assert r.status_code == 405 and body["error"]["message"] == "X" * 16 + " is not allowed here; use POST."
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"]) and r.headers["x-request-id"] == body["request_id"]


def test_allow_order_and_http_routes():
    assert allow_order({"DELETE", "HEAD", "GET", "BREW", "POST"}) == ["GET", "HEAD", "POST", "DELETE", "BREW"]
    app = Starlette(routes=[])
    assert http_routes(app.routes) == []

    async def ep(request):  # pragma: no cover
        return PlainTextResponse("")

    routes = [Route("/a", ep, methods=["GET"]), Mount("/m", app=app), WebSocketRoute("/ws", ep)]
    assert [r.path for r in http_routes(routes)] == ["/a"]


def test_the_405_body_is_json_an_operator_can_read():
    r = apis.method_not_allowed({"type": "http", "method": "GET", "path": "/v1/verify", "headers": []}, ["POST"])
    assert r.status_code == 405 and json.loads(r.body)["error"]["code"] == "method_not_allowed"


def test_a_route_that_serves_every_method_is_never_refused():
    async def ep(request):  # pragma: no cover
        return PlainTextResponse("")

    everything = Route("/any", Inner())  # an ASGI app as the endpoint: no methods of its own
    assert everything.methods is None
    routes = http_routes([everything, Route("/any", ep, methods=["GET"])])
    mw = AllowedMethods(None, routes, apis.method_not_allowed)
    assert mw.allowed({"type": "http", "method": "BREW", "path": "/any", "headers": []}) is None
    assert mw.allowed({"type": "http", "method": "BREW", "path": "/other", "headers": []}) is None
