"""Azure Face liveness routes (edge/azure.py) on the real SessionService over the real core (fake
inference backend, fake clock, SQLite in tmp_path): Azure's bodies in, Azure's shapes and error
bodies out, per API version; one unit per session and none for the client's calls or bad input."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from edge import azure
from edge.methods import AllowedMethods
from liveness.errors import LivenessError
from liveness.sessions import SessionService
from tests.edge.helpers import jpeg, used

PREVIEW = "v1.2-preview.1"


@pytest.fixture
def env(make_core, clock):
    core = make_core()
    sessions = SessionService(core, core.settings, clock=clock)
    client = TestClient(Starlette(routes=azure.azure_routes(lambda: sessions)))
    key = core.keys.create("app", 10).raw_key
    yield client, core, key, clock
    sessions.close()


def h(key: str) -> dict[str, str]:
    return {"Ocp-Apim-Subscription-Key": key}


def phone(client, version: str, kind: str, token: str, image: bytes = b""):
    files = {"Metadata": (None, "{}", "application/json"), "Content": ("c.jpg", image or jpeg(), "image/jpeg")}
    return client.post(f"/face/{version}/{kind}/singleModal", files=files, headers={"Authorization": f"Bearer {token}"})


def test_params_map_azure_names_and_ignore_unknown_ones():
    p = azure.session_params({"livenessOperationMode": "PassiveActive", "deviceCorrelationId": "d",
                              "authTokenTimeToLiveInSeconds": "120", "sendResultsToClient": True,
                              "numberOfClientAttemptsAllowed": 2, "returnVerifyImageHash": True, "whatever": 1},
                             azure.Api(PREVIEW, verify=True))
    assert (p.mode, p.device_correlation_id, p.auth_token_ttl_seconds, p.send_results_to_client, p.max_attempts) == (
        "passive-verify", "d", 120, True, 2)


@pytest.mark.parametrize(("doc", "field"), [
    ({}, "livenessOperationMode"),
    ({"livenessOperationMode": "Active"}, "livenessOperationMode"),
    ({"livenessOperationMode": "Passive", "authTokenTimeToLiveInSeconds": 59}, "authTokenTimeToLiveInSeconds"),
    ({"livenessOperationMode": "Passive", "sendResultsToClient": "maybe"}, "sendResultsToClient"),
    ({"livenessOperationMode": "Passive", "deviceCorrelationId": ""}, "deviceCorrelationId"),
])
def test_bad_params_name_azure_fields(doc, field):
    with pytest.raises(LivenessError) as e:
        azure.session_params(doc, azure.Api(PREVIEW, verify=False))
    assert e.value.details["field"] == field and f"'{field}'" in e.value.message
    assert azure.error_response(e.value).status_code == 400


def test_error_bodies_map_to_azure_codes_or_keep_ours():
    from liveness.errors import NO_FACE, QUOTA_EXCEEDED, SESSION_NOT_FOUND, UNSUPPORTED_FORMAT

    cases = [(SESSION_NOT_FOUND, 404, "SessionNotFound"), (UNSUPPORTED_FORMAT, 400, "InvalidImage"),
             (QUOTA_EXCEEDED, 403, "403"), (NO_FACE, 422, "no_face")]
    for kind, status, code in cases:
        r = azure.error_response(LivenessError(kind, "m"))
        assert (r.status_code, json.loads(r.body)) == (status, {"error": {"code": code, "message": "m"}})


def test_preview_round_trip_and_charges(env):
    client, core, key, clock = env
    base = f"/face/{PREVIEW}/detectLiveness/singleModal/sessions"
    r = client.post(base, json={"livenessOperationMode": "Passive", "sendResultsToClient": True,
                                "deviceCorrelationId": "dev"}, headers=h(key))
    assert r.status_code == 200 and set(r.json()) == {"sessionId", "authToken"} and r.headers["apim-request-id"]
    sid, token = r.json()["sessionId"], r.json()["authToken"]
    assert used(core, "app") == 1
    s = client.get(f"{base}/{sid}", headers=h(key)).json()
    assert (s["status"], s["sessionExpired"], s["deviceCorrelationId"], "result" in s) == ("NotStarted", False, "dev", False)
    clock.advance(2)
    c = phone(client, PREVIEW, "detectLiveness", token)
    assert c.status_code == 200 and c.json()["livenessDecision"] == "realface"  # the fake backend: p(live) 0.9
    assert c.json()["target"]["imageType"] == "Color" and "minifasnet" in c.json()["modelVersionUsed"]
    s = client.get(f"{base}/{sid}", headers={"X-API-Key": key}).json()
    assert s["status"] == "ResultAvailable" and s["sessionStartDateTime"] == "1970-01-12T13:46:42.000Z"
    entry = s["result"]
    assert (entry["id"], entry["requestId"], entry["response"]["statusCode"]) == (1, c.headers["apim-request-id"], 200)
    assert entry["request"]["url"] == f"/face/{PREVIEW}/detectLiveness/singleModal"
    assert entry["request"]["contentType"].startswith("multipart/form-data") and len(entry["digest"]) == 64
    assert client.get(f"{base}/{sid}/audit", headers=h(key)).json() == [entry]
    assert client.get(f"{base}/{sid}/audit?start=1", headers=h(key)).json() == []
    assert [i["id"] for i in client.get(base, headers=h(key)).json()] == [sid]
    assert client.get(f"/face/{PREVIEW}/detectLivenessWithVerify/singleModal/sessions", headers=h(key)).json() == []
    assert used(core, "app") == 1  # reads and the client's call cost nothing
    d = client.delete(f"{base}/{sid}", headers=h(key))
    assert (d.status_code, d.content) == (200, b"")
    r = client.get(f"{base}/{sid}", headers=h(key))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "SessionNotFound")


def test_the_client_learns_nothing_without_send_results(env):
    client, core, key, _ = env
    r = client.post(f"/face/v1.1-preview.1/detectLiveness/singleModal/sessions",
                    json={"livenessOperationMode": "Passive"}, headers=h(key))
    c = phone(client, "v1.1-preview.1", "detectLiveness", r.json()["authToken"])
    assert (c.status_code, c.content) == (204, b"")
    s = client.get(f"/face/v1.1-preview.1/detectLiveness/singleModal/sessions/{r.json()['sessionId']}", headers=h(key))
    assert s.json()["result"]["response"]["statusCode"] == 204


def test_ga_shapes(env):
    client, core, key, _ = env
    r = client.post("/face/v1.2/detectLiveness-sessions", json={"livenessOperationMode": "Passive",
                                                                "numberOfClientAttemptsAllowed": 1}, headers=h(key))
    s = r.json()
    assert (r.status_code, s["status"], s["results"]) == (200, "NotStarted", {"attempts": []})
    c = phone(client, "v1.2", "detectLiveness", s["authToken"], b"\x00not an image")
    assert (c.status_code, c.json()["error"]["code"]) == (400, "InvalidImage")  # recorded as a failed attempt
    got = client.get(f"/face/v1.2/detectLiveness-sessions/{s['sessionId']}", headers=h(key)).json()
    assert got["status"] == "Failed" and got["authToken"].count(".") == 2  # its one attempt is spent
    (attempt,) = got["results"]["attempts"]
    assert (attempt["attemptStatus"], attempt["error"]["code"]) == ("Failed", "InvalidImage")
    assert attempt["error"]["targets"]["color"]["faceRectangle"] == {"top": 0, "left": 0, "width": 0, "height": 0}
    again = phone(client, "v1.2", "detectLiveness", s["authToken"])
    assert (again.status_code, again.json()["error"]["code"]) == (403, "attempts_exhausted")
    assert used(core, "app") == 1


@pytest.mark.parametrize(("request_kw", "status", "code"), [
    ({"json": {"livenessOperationMode": "Passive"}}, 401, "401"),  # no key
    ({"content": b"{", "headers": {"X-API-Key": "KEY"}}, 400, "BadArgument"),
    ({"json": [1], "headers": {"X-API-Key": "KEY"}}, 400, "BadArgument"),
    ({"json": {"livenessOperationMode": "Passive"}, "headers": {"X-API-Key": "lk_nope"}}, 401, "401"),
])
def test_create_refusals_are_azure_shaped_and_free(env, request_kw, status, code):
    client, core, key, _ = env
    if "headers" in request_kw:
        request_kw = {**request_kw, "headers": {k: v.replace("KEY", key) for k, v in request_kw["headers"].items()}}
    r = client.post("/face/v1.2/detectLiveness-sessions", **request_kw)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code) and set(r.json()) == {"error"}
    assert used(core, "app") == 0


def test_with_verify_needs_the_reference_from_the_app_server(env):
    client, core, key, _ = env
    base = f"/face/{PREVIEW}/detectLivenessWithVerify/singleModal/sessions"
    r = client.post(base, files={"Parameters": (None, json.dumps({"livenessOperationMode": "Passive"}))}, headers=h(key))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BadArgument") and used(core, "app") == 0


def test_client_call_refusals(env):
    client, core, key, _ = env
    s = client.post(f"/face/{PREVIEW}/detectLiveness/singleModal/sessions", json={"livenessOperationMode": "Passive"},
                    headers=h(key)).json()
    url = f"/face/{PREVIEW}/detectLiveness/singleModal"
    r = client.post(url, files={"Content": ("c", jpeg())})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "401")
    r = client.post(url, content=jpeg(), headers={"Authorization": f"Bearer {s['authToken']}"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BadArgument")
    r = client.post(url, files={"Content": ("c", jpeg()), "VerifyImage": ("v", jpeg())},
                    headers={"Authorization": f"Bearer {s['authToken']}"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BadArgument")
    r = phone(client, PREVIEW, "detectLivenessWithVerify", s["authToken"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "token_mode_mismatch")
    # None of these reached an attempt: the session is untouched.
    got = client.get(f"/face/{PREVIEW}/detectLiveness/singleModal/sessions/{s['sessionId']}", headers=h(key)).json()
    assert got["status"] == "NotStarted" and used(core, "app") == 1


def test_body_over_the_limit_is_refused_before_it_is_read(make_core, clock):
    core = make_core()
    sessions = SessionService(core, core.settings, clock=clock)
    try:
        client = TestClient(Starlette(routes=azure.azure_routes(lambda: sessions, body_limit=lambda: 100)))
        key = core.keys.create("app", 10).raw_key
        r = client.post("/face/v1.2/detectLiveness-sessions", content=b"{" + b" " * 200 + b"}", headers=h(key))
        assert (r.status_code, r.json()["error"]["code"]) == (400, "InvalidImageSize") and used(core, "app") == 0
    finally:
        sessions.close()


def test_loading_is_503_and_every_path_knows_its_methods():
    client = TestClient(Starlette(routes=azure.azure_routes(lambda: None)))
    r = client.get(f"/face/{PREVIEW}/detectLiveness/singleModal/sessions")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "not_ready")
    methods = AllowedMethods(None, azure.azure_routes(lambda: None), refuse=lambda *_: None)
    scope = {"type": "http", "method": "PUT", "path": f"/face/{PREVIEW}/detectLiveness/singleModal/sessions/abc"}
    assert methods.allowed(scope) == ["GET", "HEAD", "DELETE"]
    scope = {**scope, "path": "/face/v1.2/detectLivenessWithVerify/singleModal"}
    assert methods.allowed(scope) == ["POST"]


def test_every_route_is_documented():
    from edge import openapi

    paths = openapi.document()["paths"]
    for route in azure.azure_routes(lambda: None):
        path = route.path.replace("{session_id}", "{session_id}")
        assert path in paths, path
        assert {m.lower() for m in route.methods} - {"head"} <= set(paths[path]), path
