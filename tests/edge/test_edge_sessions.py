"""App-server sessions and face verification over HTTP (edge/sessions.py, edge/apis.py
``create_session`` / ``verify``): ``POST /v1/sessions`` as JSON or multipart (a ``parameters``
JSON part or one field per parameter, ``verify_image`` and Azure's names), ``POST /v1/verify``
with two images, and the Starlette reads ``GET|DELETE /v1/sessions[/{id}]`` and the attempt
image.  One unit per session, charged at creation once its parameters (and reference) proved
valid; another key's session is 404 (README "Sessions").  The real SessionService on the real
core (fake backend, fake clock); no model is loaded."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from edge import apis
from edge import sessions as session_api
from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, LivenessError
from liveness.imaging import ImageLimits
from liveness.sessions import SessionService, flows, parse_params
from tests.edge.helpers import Part, Svc, b64, body_of, ctx, jpeg, multipart, served, used

LIMITS = ImageLimits()
REF = jpeg(seed=3)


# -- parsing POST /v1/sessions -------------------------------------------------------------------------


def test_json_parameters_and_key():
    key, parsed = session_api.parse_create(
        json.dumps({"mode": "video", "device_correlation_id": "dev-1", "max_attempts": 2, "hash_id": "lk_j"}).encode(),
        "application/json", {}, LIMITS)
    assert key == "lk_j"  # hash_id is the key, not an (unknown) parameter
    params, reference = parsed()
    assert (params.mode, params.device_correlation_id, params.max_attempts, reference) == ("video", "dev-1", 2, None)


@pytest.mark.parametrize("name", ["verify_image", "VerifyImage", "verifyImage"])
def test_json_reference_is_base64_under_any_of_its_names(name):
    _, parsed = session_api.parse_create(json.dumps({"mode": "passive-verify", name: b64(REF)}).encode(),
                                         "application/json", {"x-api-key": "lk"}, LIMITS)
    params, reference = parsed()
    assert params.verify and reference == REF


def test_json_reference_must_be_a_string():
    _, parsed = session_api.parse_create(json.dumps({"mode": "passive-verify", "verify_image": [1]}).encode(),
                                         "application/json", {}, LIMITS)
    with pytest.raises(LivenessError) as e:
        parsed()
    assert (e.value.kind, e.value.message, e.value.details) == (
        INVALID_REQUEST, "'verify_image' must be a base64 string.", {"field": "verify_image"})


def test_azure_camel_case_parameters():
    _, parsed = session_api.parse_create(json.dumps({"livenessOperationMode": "Passive", "sendResultsToClient": True,
                                                     "deviceCorrelationId": "d"}).encode(), "", {}, LIMITS)
    params, _ = parsed()
    assert (params.mode, params.send_results_to_client, params.device_correlation_id) == ("passive", True, "d")


def test_json_errors_are_at_once_parameter_errors_when_parsed():
    with pytest.raises(LivenessError) as e:
        session_api.parse_create(b"{oops", "application/json", {}, LIMITS)
    assert e.value.message == "The body is not valid JSON."
    _, parsed = session_api.parse_create(json.dumps({"mode": "passive", "send_result_to_client": True}).encode(),
                                         "application/json", {}, LIMITS)
    with pytest.raises(LivenessError) as e:
        parsed()  # a typo is refused, never silently ignored
    assert e.value.details == {"field": "send_result_to_client"}


@pytest.mark.parametrize("part", ["parameters", "Parameters"])
def test_multipart_parameters_part_and_verify_image_file(part):
    body, ct = multipart([Part(part, json.dumps({"mode": "passive-verify"}), None, "application/json"),
                          Part("VerifyImage", REF, "id.jpg", "image/jpeg"), Part("hash_id", "lk_f")])
    key, parsed = session_api.parse_create(body, ct, {}, LIMITS)
    params, reference = parsed()
    assert (key, params.mode, reference) == ("lk_f", "passive-verify", REF)


def test_multipart_one_field_per_parameter_and_a_base64_reference():
    body, ct = multipart([Part("mode", "passive-verify"), Part("max_attempts", "4"), Part("send_results_to_client", "true"),
                          Part("verify_image", b64(REF)), Part("hash_id", "lk_f")])
    key, parsed = session_api.parse_create(body, ct, {"x-api-key": "lk_h"}, LIMITS)
    params, reference = parsed()
    assert (key, params.max_attempts, params.send_results_to_client, reference) == ("lk_h", 4, True, REF)


def test_multipart_parameters_part_that_is_not_json():
    body, ct = multipart([Part("parameters", "{mode: passive}")])
    _, parsed = session_api.parse_create(body, ct, {}, LIMITS)
    with pytest.raises(LivenessError) as e:
        parsed()
    assert (e.value.kind, e.value.message) == (INVALID_REQUEST, "The body is not valid JSON.")


def test_an_empty_reference_is_no_reference():
    body, ct = multipart([Part("mode", "passive"), Part("verify_image", b"", "a.jpg")])
    assert session_api.parse_create(body, ct, {}, LIMITS)[1]()[1] is None


# -- parsing POST /v1/verify ---------------------------------------------------------------------------


A, B = jpeg(seed=1), jpeg(seed=2)


@pytest.mark.parametrize(("first", "second"), session_api.PAIR_FIELDS)
def test_verify_pairs_multipart_and_json(first, second):
    body, ct = multipart([Part(first, A, "a.jpg"), Part(second, B, "b.jpg")])
    assert session_api.parse_verify(body, ct, {"x-api-key": "lk"}, LIMITS)[1]() == (A, B)
    key, images = session_api.parse_verify(json.dumps({first: b64(A), second: b64(B), "hash_id": "lk_j"}).encode(),
                                           "application/json", {}, LIMITS)
    assert key == "lk_j" and images() == (A, B)


@pytest.mark.parametrize(("doc", "message", "details"), [
    ({"image1": b64(A)}, "Send two images: 'image1' and 'image2'.", {"field": "image2"}),
    ({"image2": b64(A)}, "Send two images: 'image1' and 'image2'.", {"field": "image1"}),
    ({"probe": b64(A), "reference": ""}, "Send two images: 'reference' and 'probe'.", {"field": "reference"}),
    ({}, "Send two images: 'image1' and 'image2'.", {}),
    ({"img": b64(A)}, "Send two images: 'image1' and 'image2'.", {}),
])
def test_verify_missing_images_name_the_field(doc, message, details):
    _, images = session_api.parse_verify(json.dumps(doc).encode(), "application/json", {}, LIMITS)
    with pytest.raises(LivenessError) as e:
        images()
    assert (e.value.kind, e.value.message, e.value.details) == (MISSING_IMAGE, message, details)


@pytest.mark.parametrize(("value", "out"), [(None, 50), ("7", 7), ("0", 0)])
def test_query_int(value, out):
    assert session_api.query_int({} if value is None else {"limit": value}, "limit", 50) == out


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", ""])
def test_query_int_refuses_non_digits(value):
    with pytest.raises(LivenessError) as e:
        session_api.query_int({"limit": value}, "limit", 50)
    assert (e.value.kind, e.value.message, e.value.details) == (
        INVALID_REQUEST, "'limit' must be a positive integer.", {"field": "limit"})


# -- POST /v1/sessions on the real service ---------------------------------------------------------


@pytest.fixture
def svc(make_core, clock):
    core = make_core()
    sessions = SessionService(core, core.settings, clock=clock)
    yield Svc(core, sessions=sessions)
    sessions.close()


def create(svc: Svc, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None):
    c = ctx(headers, content_type=content_type, path="/v1/sessions")
    r = served(apis.create_session(svc, body, c))
    assert r.status_code == c.response.status_code
    return r.status_code, body_of(r)


def test_create_answers_a_token_and_charges_one_unit(svc):
    key = svc.core.keys.create("app", 5).raw_key
    status, out = create(svc, json.dumps({"mode": "passive", "auth_token_ttl_seconds": 120}).encode(),
                         headers={"X-API-Key": key})
    assert status == 200 and set(out) == {"session_id", "auth_token", "mode", "expires_at"}
    assert out["mode"] == "passive" and out["auth_token"].startswith("eyJ") and out["auth_token"].count(".") == 2
    assert out["expires_at"] == "1970-01-12T13:48:40.000Z"  # the fake clock's 1_000_000 s + the 120 s ttl
    assert used(svc.core, "app") == 1


def test_create_multipart_with_parameters_part(svc):
    key = svc.core.keys.create("app", 5).raw_key
    body, ct = multipart([Part("parameters", json.dumps({"mode": "challenge", "max_attempts": 1}), None, "application/json")])
    status, out = create(svc, body, ct, {"Authorization": f"Bearer {key}"})
    assert (status, out["mode"]) == (200, "challenge") and used(svc.core, "app") == 1


@pytest.mark.parametrize(("doc", "status", "code", "field"), [
    ({}, 400, "invalid_request", "mode"),
    ({"mode": "selfie"}, 400, "invalid_request", "mode"),
    ({"mode": "passive", "max_attempts": 11}, 400, "invalid_request", "max_attempts"),
    ({"mode": "passive", "typo": 1}, 400, "invalid_request", "typo"),
    ({"mode": "passive-verify"}, 400, "missing_image", "verify_image"),
    ({"mode": "passive", "verify_image": b64(REF)}, 400, "invalid_request", "verify_image"),
    ({"mode": "passive-verify", "verify_image": "!!"}, 400, "invalid_base64", None),
])
def test_bad_parameters_are_refused_with_the_field_and_not_charged(svc, doc, status, code, field):
    key = svc.core.keys.create("app", 5).raw_key
    got, out = create(svc, json.dumps(doc).encode(), headers={"X-API-Key": key})
    assert (got, out["error"]["code"]) == (status, code)
    if field is not None:
        assert out["error"]["details"]["field"] == field
    assert used(svc.core, "app") == 0


def test_a_refused_key_costs_no_parsing(svc):
    status, out = create(svc, b"{not even json", headers={"X-API-Key": "lk_unknown"})
    assert (status, out["error"]["code"]) == (400, "invalid_request")  # the body is framed before the key check ...
    status, out = create(svc, json.dumps({"mode": "nonsense", "verify_image": "!!"}).encode(),
                         headers={"X-API-Key": "lk_unknown"})
    assert (status, out["error"]["code"]) == (401, "invalid_api_key")  # ... its contents after it
    status, out = create(svc, json.dumps({"mode": "passive"}).encode())
    assert (status, out["error"]["code"]) == (401, "missing_api_key")


def test_a_spent_quota_is_429(svc):
    key = svc.core.keys.create("app", 1).raw_key
    assert create(svc, json.dumps({"mode": "passive"}).encode(), headers={"X-API-Key": key})[0] == 200
    status, out = create(svc, json.dumps({"mode": "passive"}).encode(), headers={"X-API-Key": key})
    assert (status, out["error"]["code"]) == (429, "quota_exceeded") and used(svc.core, "app") == 1


def test_sessions_disabled(svc):
    key = svc.core.keys.create("app", 5).raw_key
    status, out = create(Svc(svc.core, sessions=None), json.dumps({"mode": "passive"}).encode(), headers={"X-API-Key": key})
    assert (status, out["error"]["message"]) == (400, "Sessions are disabled on this server (LIVENESS_SESSIONS_ENABLED).")
    assert used(svc.core, "app") == 0


def test_a_reference_without_a_face_is_422_naming_verify_image_and_not_charged(make_core, clock):
    core = make_core(verification_enabled=True)  # the fake YuNet finds no face
    sessions = SessionService(core, core.settings, clock=clock)
    try:
        key = core.keys.create("app", 5).raw_key
        body, ct = multipart([Part("parameters", json.dumps({"mode": "passive-verify"})),
                              Part("verify_image", REF, "id.jpg", "image/jpeg")])
        status, out = create(Svc(core, sessions=sessions), body, ct, {"X-API-Key": key})
        assert (status, out["error"]["code"], out["error"]["details"]["field"]) == (422, "no_face", "verify_image")
        assert used(core, "app") == 0
    finally:
        sessions.close()


# -- POST /v1/verify ---------------------------------------------------------------------------------


def verify(core, body: bytes, content_type: str, headers: dict[str, str]):
    c = ctx(headers, content_type=content_type, path="/v1/verify")
    r = served(apis.verify(Svc(core), body, c))
    return r.status_code, body_of(r)


@pytest.mark.parametrize("value", [{}, [], 7, True])
def test_verify_with_a_non_string_image_in_json_is_400_not_500(make_core, value):
    core = make_core(verification_enabled=True)
    key = core.keys.create("app", 5).raw_key
    body = json.dumps({"image1": value, "image2": "AAAA"}).encode()
    status, out = verify(core, body, "application/json", {"X-API-Key": key})
    assert (status, out["error"]["code"], out["error"]["details"]) == (400, "invalid_request", {"field": "image1"})
    assert used(core, "app") == 0


def test_verify_without_a_face_is_422_naming_the_image_and_not_charged(make_core):
    core = make_core(verification_enabled=True)
    key = core.keys.create("app", 5).raw_key
    body, ct = multipart([Part("image1", A, "a.jpg"), Part("image2", B, "b.jpg")])
    status, out = verify(core, body, ct, {"X-API-Key": key})
    assert (status, out["error"]["code"], out["error"]["details"]["field"]) == (422, "no_face", "image1")
    status, out = verify(core, json.dumps({"image1": b64(A)}).encode(), "application/json", {"X-API-Key": key})
    assert (status, out["error"]["code"], out["error"]["details"]) == (400, "missing_image", {"field": "image2"})
    status, out = verify(core, json.dumps({"image1": b64(A), "image2": b64(B)}).encode(), "application/json",
                         {"X-API-Key": "lk_unknown"})
    assert (status, out["error"]["code"]) == (401, "invalid_api_key")
    assert used(core, "app") == 0


def test_verify_when_verification_is_off_is_503(make_core):
    core = make_core()
    key = core.keys.create("app", 5).raw_key
    status, out = verify(core, json.dumps({"image1": b64(A), "image2": b64(B)}).encode(), "application/json",
                         {"X-API-Key": key})
    assert (status, out["error"]["code"]) == (503, "verification_unavailable")
    assert used(core, "app") == 0


# -- the reads: GET|DELETE /v1/sessions ... ------------------------------------------------------------


@pytest.fixture
def reads(svc):
    return TestClient(Starlette(routes=session_api.session_routes(lambda: svc.sessions)))


def new(svc: Svc, key: str, **params) -> dict:
    return asyncio.run(svc.sessions.create(key, parse_params({"mode": "passive", **params}), None))


def test_get_list_and_delete(svc, reads, clock):
    key = svc.core.keys.create("app", 5).raw_key
    first = new(svc, key, device_correlation_id="dev-7")
    clock.advance(1)
    second = new(svc, key)
    h = {"X-API-Key": key}
    r = reads.get(f"/v1/sessions/{first['session_id']}", headers=h)
    assert r.status_code == 200
    got = r.json()
    assert (got["session_id"], got["status"], got["mode"], got["device_correlation_id"]) == (
        first["session_id"], "NotStarted", "passive", "dev-7")
    assert (got["attempts"], got["result"], got["session_expired"], got["max_attempts"]) == ([], None, False, 3)
    listed = reads.get("/v1/sessions", headers=h).json()["sessions"]
    assert [s["session_id"] for s in listed] == [second["session_id"], first["session_id"]]  # newest first
    assert "attempts" not in listed[0]
    assert [s["session_id"] for s in reads.get("/v1/sessions?limit=1", headers=h).json()["sessions"]] == [second["session_id"]]
    r = reads.delete(f"/v1/sessions/{first['session_id']}", headers=h)
    assert (r.status_code, r.content) == (204, b"")
    r = reads.get(f"/v1/sessions/{first['session_id']}", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
    assert used(svc.core, "app") == 2  # reads are never charged


def test_reads_take_the_key_from_the_query_or_bearer(svc, reads):
    key = svc.core.keys.create("app", 5).raw_key
    sid = new(svc, key)["session_id"]
    assert reads.get(f"/v1/sessions/{sid}?hash_id={key}").status_code == 200
    assert reads.get(f"/v1/sessions/{sid}", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_another_keys_session_is_404_never_403(svc, reads):
    owner = svc.core.keys.create("owner", 5).raw_key
    other = svc.core.keys.create("other", 5).raw_key
    sid = new(svc, owner)["session_id"]
    h = {"X-API-Key": other}
    for r in (reads.get(f"/v1/sessions/{sid}", headers=h), reads.delete(f"/v1/sessions/{sid}", headers=h),
              reads.get(f"/v1/sessions/{sid}/attempts/1/image", headers=h)):
        assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
    assert reads.get("/v1/sessions", headers=h).json() == {"sessions": []}
    assert reads.get(f"/v1/sessions/{sid}", headers={"X-API-Key": owner}).status_code == 200  # not deleted


@pytest.mark.parametrize(("headers", "code"), [({}, "missing_api_key"), ({"X-API-Key": "lk_unknown"}, "invalid_api_key")])
def test_reads_refuse_bad_keys(svc, reads, headers, code):
    for r in (reads.get("/v1/sessions", headers=headers), reads.get("/v1/sessions/x", headers=headers),
              reads.delete("/v1/sessions/x", headers=headers)):
        assert (r.status_code, r.json()["error"]["code"]) == (401, code)


def test_a_bad_limit(svc, reads):
    key = svc.core.keys.create("app", 5).raw_key
    r = reads.get("/v1/sessions?limit=many", headers={"X-API-Key": key})
    assert (r.status_code, r.json()) == (400, {"error": {"code": "invalid_request",
                                                         "message": "'limit' must be a positive integer.",
                                                         "details": {"field": "limit"}}})


def test_the_attempt_image_only_with_enable_session_image(svc, reads):
    key = svc.core.keys.create("app", 5).raw_key
    h = {"X-API-Key": key}
    kept = new(svc, key, enable_session_image=True)
    plain = new(svc, key)
    selfie = jpeg(seed=9)
    for made in (kept, plain):
        out = asyncio.run(flows.passive_attempt(svc.sessions, made["auth_token"], lambda: selfie))
        assert out.error is None and out.view["status"] == "completed"
    r = reads.get(f"/v1/sessions/{kept['session_id']}/attempts/1/image", headers=h)
    assert (r.status_code, r.content, r.headers["content-type"], r.headers["cache-control"]) == (
        200, selfie, "image/jpeg", "no-store")
    r = reads.get(f"/v1/sessions/{plain['session_id']}/attempts/1/image", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
    r = reads.get(f"/v1/sessions/{kept['session_id']}/attempts/2/image", headers=h)
    assert r.status_code == 404
    got = reads.get(f"/v1/sessions/{kept['session_id']}", headers=h).json()
    assert got["status"] == "ResultAvailable" and got["result"]["decision"] == "realface"
    assert got["attempts"][0]["attempt_id"] == 1 and got["attempts"][0]["status"] == "completed"
    assert used(svc.core, "app") == 2  # the sessions, not their attempts


def test_reads_while_loading_are_503(svc):
    client = TestClient(Starlette(routes=session_api.session_routes(lambda: None)))
    r = client.get("/v1/sessions", headers={"X-API-Key": "lk"})
    assert (r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) == (503, "not_ready", "1")
