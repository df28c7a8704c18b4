"""The Starlette routes of edge/routes.py: ``GET /stats`` (a credential decides whose counts: the
admin key every tenant's, an API key its own, none 401; open without authentication) and the
OpenAPI document (``/docs.json``, ``/docs``, edge/openapi.py), including that every route the
service serves is documented.  The real core and ChallengeService (fake backend, fake clock)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

import edge.routes as routes
from edge import apis, openapi
from liveness.challenges.service import ChallengeService
from liveness.errors import CATALOGUE
from tests.edge.helpers import Svc, used

ADMIN = "admin-key-for-route-tests"
ADMIN_SHA = hashlib.sha256(ADMIN.encode()).hexdigest()


@pytest.fixture
def make_svc(make_core, clock, monkeypatch):
    """``make_svc(**settings)`` -> the worker's services, installed as the running BentoML service."""
    opened: list[ChallengeService] = []

    def make(**overrides: Any) -> Svc:
        core = make_core(**{"admin_key_sha256": ADMIN_SHA, **overrides})
        challenges = ChallengeService(core, core.settings, measure=False, clock=clock)
        opened.append(challenges)
        svc = Svc(core, challenges=challenges)
        monkeypatch.setattr(routes.bentoml, "get_current_service", lambda: svc)
        return svc

    yield make
    for service in opened:
        service.close()


def client_of(svc: Svc) -> TestClient:
    return TestClient(routes.status_app(svc.core.settings))


def sessions(svc: Svc, key: str, n: int) -> None:
    import asyncio

    for _ in range(n):
        asyncio.run(svc.challenges.start(key))


# -- GET /stats --------------------------------------------------------------------------------------


def test_stats_needs_a_credential(make_svc):
    svc = make_svc()
    r = client_of(svc).get("/stats")
    assert (r.status_code, r.json()) == (401, {"error": {"code": "missing_api_key", "message": "API key is missing"}})


def test_an_api_key_sees_only_its_own_sessions_and_pays_nothing(make_svc):
    svc = make_svc()
    a, b = svc.core.keys.create("a", 100).raw_key, svc.core.keys.create("b", 100).raw_key
    sessions(svc, a, 2)
    sessions(svc, b, 3)
    client, before = client_of(svc), (used(svc.core, "a"), used(svc.core, "b"))
    for request in ({"headers": {"X-API-Key": a}}, {"headers": {"Authorization": f"Bearer {a}"}},
                    {"params": {"hash_id": a}}):
        r = client.get("/stats", **request)
        assert (r.status_code, r.json()["active_sessions"]) == (200, 2), request
    assert client.get("/stats", headers={"X-API-Key": b}).json()["active_sessions"] == 3
    assert (used(svc.core, "a"), used(svc.core, "b")) == before  # checked, never charged


def test_the_admin_key_sees_every_tenant(make_svc):
    svc = make_svc()
    a, b = svc.core.keys.create("a", 100).raw_key, svc.core.keys.create("b", 100).raw_key
    sessions(svc, a, 2)
    sessions(svc, b, 3)
    stats = client_of(svc).get("/stats", headers={"X-Admin-Key": ADMIN}).json()
    assert (stats["active_sessions"], stats["completed_sessions"], stats["failed_sessions"]) == (5, 0, 0)
    # With an API key beside it, the admin key still decides (and a wrong one is refused).
    assert client_of(svc).get("/stats", headers={"X-Admin-Key": ADMIN, "X-API-Key": a}).json()["active_sessions"] == 5


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({"X-API-Key": "lk_unknown"}, 401, "invalid_api_key"),
    ({"X-Admin-Key": "wrong"}, 401, "invalid_admin_key"),
])
def test_stats_refusals(make_svc, headers, status, code):
    svc = make_svc()
    if "X-Admin-Key" in headers:
        headers = {**headers, "X-API-Key": svc.core.keys.create("a", 100).raw_key}  # a good key does not help
    r = client_of(svc).get("/stats", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_an_admin_key_on_a_server_without_one(make_svc):
    svc = make_svc(admin_key_sha256=None)
    r = client_of(svc).get("/stats", headers={"X-Admin-Key": ADMIN})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_disabled")


def test_a_spent_key_still_sees_its_own_stats_and_a_revoked_one_does_not(make_svc):
    svc = make_svc()
    key = svc.core.keys.create("spent", 1).raw_key
    reservation = svc.core.keys.reserve(key)
    svc.core.keys.commit(reservation)
    r = client_of(svc).get("/stats", headers={"X-API-Key": key})  # reading costs nothing, needs no quota
    assert (r.status_code, r.json()["active_sessions"]) == (200, 0)
    svc.core.keys.revoke("spent")
    r = client_of(svc).get("/stats", headers={"X-API-Key": key})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key")


def test_without_authentication_stats_are_open_and_count_every_tenant(make_svc):
    svc = make_svc(auth_enabled=False)
    sessions(svc, None, 2)
    r = client_of(svc).get("/stats")
    assert (r.status_code, r.json()["active_sessions"]) == (200, 2)
    assert client_of(svc).get("/stats", headers={"X-API-Key": "anything"}).json()["active_sessions"] == 2


def test_stats_while_loading(make_svc, monkeypatch):
    svc = make_svc()
    monkeypatch.setattr(routes.bentoml, "get_current_service", lambda: None)
    r = client_of(svc).get("/stats", headers={"X-Admin-Key": ADMIN})
    assert (r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) == (503, "not_ready", "1")


def test_stats_asks_the_service_for_one_tenant_or_all(make_svc):
    svc = make_svc()
    key = svc.core.keys.create("a", 100)
    calls: list[Any] = []
    svc.challenges.stats = lambda key_id=None: calls.append(key_id) or {"active_sessions": 0}
    client = client_of(svc)
    client.get("/stats", headers={"X-API-Key": key.raw_key})
    client.get("/stats", headers={"X-Admin-Key": ADMIN})
    assert calls == [key.info.key_id, None]


# -- the OpenAPI document ------------------------------------------------------------------------------


def test_docs_json_serves_our_document(make_svc):
    client = client_of(make_svc())
    r = client.get("/docs.json")
    assert (r.status_code, r.headers["content-type"]) == (200, "application/json")
    assert r.json() == openapi.document()
    ui = client.get("/docs")
    assert ui.status_code == 200 and ui.headers["content-type"].startswith("text/html")
    assert "/static_content/swagger-ui-bundle.js" in ui.text and "googletagmanager" not in ui.text


def test_the_document_is_valid_openapi_3_1():
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    doc = openapi.document()
    OPENAPI_31_VALIDATOR.validate(doc)
    assert doc["openapi"] == "3.1.0"


def _documented() -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in openapi.document()["paths"].items() for method in item}


def _api_paths(settings: Any) -> set[str]:
    """The BentoML API routes, as edge/apis.py puts them behind RawBodyMiddleware."""
    seen: dict[str, Any] = {}

    class Service:
        def add_asgi_middleware(self, middleware: Any, **options: Any) -> None:
            seen.update(options.get("routes", {}) if isinstance(options.get("routes"), dict) else {})

    apis.add_middleware(Service(), settings)
    return set(seen)


def test_every_served_route_is_documented(make_svc):
    settings = make_svc().core.settings
    served: set[tuple[str, str]] = set()
    for route in routes.status_app(settings).routes:
        if isinstance(route, (WebSocketRoute, Mount)):
            continue  # the challenge WebSocket and the demo's static assets (the module docstring says so)
        assert isinstance(route, Route), route
        served |= {(route.path.replace(":int}", "}"), m) for m in route.methods or () if m != "HEAD"}
    api_paths = _api_paths(settings)
    assert {"/liveness", "/v1/liveness", "/start", "/v1/verify"} <= api_paths
    served |= {(p, "POST") for p in api_paths}
    documented = _documented()
    assert served - documented == set(), "served but not in edge/openapi.py"
    bentoml_own = {("/", "GET"), ("/healthz", "GET"), ("/livez", "GET"), ("/readyz", "GET"), ("/metrics", "GET")}
    assert documented - served == bentoml_own, "documented but not served"


def _responses() -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(path, method, status, r) for path, item in openapi.document()["paths"].items()
            for method, op in item.items() for status, r in op["responses"].items()]


def test_error_codes_come_from_the_catalogue_with_their_status():
    status_of = {k.code: k.status for k in CATALOGUE}
    doc = openapi.document()
    assert doc["components"]["schemas"]["ErrorCode"]["enum"] == [k.code for k in CATALOGUE]
    checked = 0
    for path, method, status, r in _responses():
        schema = r.get("content", {}).get("application/json", {}).get("schema", {})
        for part in schema.get("allOf", []):
            codes = part.get("properties", {}).get("error", {}).get("properties", {}).get("code", {}).get("enum")
            if codes:
                checked += 1
                assert {status_of[c] for c in codes} == {int(status)}, (path, method, status, codes)
    assert checked > 50


def test_every_operation_is_complete():
    ids = set()
    for path, item in openapi.document()["paths"].items():
        for method, op in item.items():
            assert op["operationId"] not in ids
            ids.add(op["operationId"])
            assert "security" in op and op["responses"], (path, method)
            assert any(s.startswith("2") for s in op["responses"]), (path, method)
            if method == "post" and "requestBody" in op:
                assert "text/plain" not in op["requestBody"]["content"], path
