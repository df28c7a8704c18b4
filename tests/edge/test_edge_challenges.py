"""Active challenges over HTTP (edge/challenges.py, edge/apis.py ``challenge_*``, the
``/status/{id}`` route of edge/routes.py): ``POST /start`` {challenges?}, ``/process``
{session_id, image|frame|image_base64}, ``/complete`` {session_id}; the key in X-API-Key,
Bearer or ``hash_id``; an explicit ``challenges`` list needs X-Admin-Key; one unit per session,
charged at ``/complete`` only (README "Active challenges").  The real ChallengeService on the
real core (fake backend, fake clock, no landmark model: steps never complete)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from starlette.testclient import TestClient

from edge import apis, challenges as challenge_api
from liveness.challenges.service import ChallengeService, chosen_challenges
from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, LivenessError
from liveness.imaging import ImageLimits
from tests.edge.helpers import Svc, b64, body_of, ctx, jpeg, served, used

ADMIN = "admin-key-for-tests"
ADMIN_SHA = hashlib.sha256(ADMIN.encode()).hexdigest()
CHOICE_REFUSED = ("'challenges' must be a list of 1-8 of: blink, turn_left, turn_right, look_center, smile, open_mouth, "
                  "raise_brows, wink.")
FRAME = jpeg()


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "doc"), [(b"", {}), (b"  \n", {}), (b'{"session_id": "s"}', {"session_id": "s"})])
def test_parse_json_empty_is_an_empty_object(body, doc):
    assert challenge_api.parse_json(body) == doc


@pytest.mark.parametrize(("body", "message"), [
    (b"{nope", "The body is not valid JSON."), (b"\xff\xfe", "The body is not valid JSON."),
    (b"[]", "The JSON body must be an object."), (b"3", "The JSON body must be an object."),
])
def test_parse_json_refusals(body, message):
    with pytest.raises(LivenessError) as e:
        challenge_api.parse_json(body)
    assert (e.value.kind, e.value.message) == (INVALID_REQUEST, message)


def test_parse_reads_the_key_from_header_bearer_or_hash_id():
    assert challenge_api.parse(b'{"hash_id": "lk_body"}', {})[0] == "lk_body"
    assert challenge_api.parse(b'{"hash_id": "lk_body"}', {"x-api-key": "lk_h"})[0] == "lk_h"
    assert challenge_api.parse(b"", {"authorization": "Bearer lk_b"}) == ("lk_b", {})


@pytest.mark.parametrize("field", ["image", "frame", "image_base64"])
def test_frame_field_aliases_are_decoded_lazily(field):
    get = challenge_api.frame_bytes({field: b64(FRAME)}, ImageLimits())
    assert get() == FRAME
    lazy = challenge_api.frame_bytes({field: "!!!"}, ImageLimits())  # nothing decoded yet ...
    with pytest.raises(LivenessError) as e:
        lazy()  # ... until the frame is needed
    assert e.value.code == "invalid_base64"


def test_a_missing_frame():
    with pytest.raises(LivenessError) as e:
        challenge_api.frame_bytes({"session_id": "s"}, ImageLimits())()
    assert (e.value.kind, e.value.message) == (MISSING_IMAGE, "The JSON body needs an 'image' field with a base64 frame.")


@pytest.mark.parametrize("value", ["blink", [], [1], ["blink", None], {"blink": 1}, ["levitate"], ["blink"] * 9, [["blink"]]])
def test_a_choice_of_challenges_is_checked_once_by_the_service(value):
    with pytest.raises(LivenessError) as e:
        chosen_challenges(value)
    assert (e.value.kind, e.value.message) == (INVALID_REQUEST, CHOICE_REFUSED)


def test_a_valid_choice_is_kept_in_order():
    assert chosen_challenges(["smile", "blink", "smile"]) == ["smile", "blink", "smile"]
    assert chosen_challenges(["blink"] * 8) == ["blink"] * 8


# -- the endpoints on the real service ------------------------------------------------------------------


@pytest.fixture
def svc(make_core, clock):
    core = make_core(admin_key_sha256=ADMIN_SHA)
    service = ChallengeService(core, core.settings, measure=False, clock=clock)
    yield Svc(core, challenges=service)
    service.close()


def call(endpoint, svc: Svc, doc: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = ctx(headers, content_type="application/json", path="/x")
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    r = served(endpoint(svc, body, c))
    assert r.status_code == c.response.status_code
    return r.status_code, body_of(r)


def start(svc, doc=None, headers=None):
    return call(apis.challenge_start, svc, {} if doc is None else doc, headers)


def process(svc, doc, headers=None):
    return call(apis.challenge_process, svc, doc, headers)


def complete(svc, doc, headers=None):
    return call(apis.challenge_complete, svc, doc, headers)


def test_start_answers_the_flask_services_fields_and_charges_the_session(svc):
    key = svc.core.keys.create("ch", 5).raw_key
    status, body = start(svc, {}, {"X-API-Key": key})
    assert status == 200
    assert len(body["session_id"]) >= 32 and isinstance(body["instruction"], str) and body["instruction"]
    assert (body["current_step"], body["total_steps"], body["expires_in_minutes"]) == (1, 3, 10.0)
    assert (body["step_timeout_seconds"], body["max_fps"]) == (20.0, 15.0)
    assert used(svc.core, "ch") == 1  # one unit per session, at the start
    assert start(svc, b"", {"Authorization": f"Bearer {key}"})[0] == 200  # an empty body is {}
    assert start(svc, {"hash_id": key})[0] == 200
    assert svc.core.keys.usage("ch").succeeded == 3


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "missing_api_key"), ({"X-API-Key": "lk_unknown"}, 401, "invalid_api_key"),
])
def test_start_refuses_bad_keys(svc, headers, status, code):
    got, body = start(svc, {}, headers)
    assert (got, body["error"]["code"]) == (status, code) and body["success"] is False and set(body) == {"error", "success"}


def test_choosing_challenges_needs_the_admin_key(svc, make_core, clock):
    key = svc.core.keys.create("ch", 5).raw_key
    status, body = start(svc, {"challenges": ["blink", "smile"]}, {"X-API-Key": key})
    assert (status, body["error"]["code"], body["error"]["message"]) == (401, "invalid_admin_key", "Missing or wrong X-Admin-Key.")
    status, body = start(svc, {"challenges": ["blink", "smile"]}, {"X-API-Key": key, "X-Admin-Key": ADMIN})
    assert (status, body["total_steps"], body["current_step"]) == (200, 2, 1)
    status, body = start(svc, {"challenges": ["levitate"]}, {"X-API-Key": key, "X-Admin-Key": ADMIN})
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    status, body = start(svc, {"challenges": "blink"}, {"X-API-Key": key, "X-Admin-Key": ADMIN})
    assert (status, body["error"]["message"]) == (400, CHOICE_REFUSED)

    off = make_core(db_path=svc.core.settings.db_path.with_name("off.sqlite3"))  # no admin key configured
    service = ChallengeService(off, off.settings, measure=False, clock=clock)
    try:
        other = off.keys.create("ch", 5).raw_key
        status, body = start(Svc(off, challenges=service), {"challenges": ["blink"]},
                             {"X-API-Key": other, "X-Admin-Key": ADMIN})
        assert (status, body["error"]["code"]) == (403, "admin_disabled")
    finally:
        service.close()


def test_a_session_token_cannot_choose_challenges(svc):
    status, body = start(svc, {"challenges": ["blink"]}, {"Authorization": "Bearer eyJa.b.c"})
    assert (status, body["error"]) == (400, {"code": "invalid_request", "message": "A session token cannot choose challenges."})


def test_process_frames_and_complete_are_paid_by_the_start(svc, clock):
    key = svc.core.keys.create("ch", 5).raw_key
    h = {"X-API-Key": key}
    sid = start(svc, {}, h)[1]["session_id"]
    for field in ("image", "frame", "image_base64"):
        clock.advance(0.2)
        status, out = process(svc, {"session_id": sid, field: b64(FRAME)}, h)
        assert status == 200
        assert (out["face_detected"], out["step_completed"], out["verification_complete"],
                out["verification_failed"], out["current_step"], out["total_steps"]) == (True, False, False, False, 1, 3)
        assert out["passive_score"] == pytest.approx(0.9, abs=1e-6) and out["reason"] is None
        assert out["warning"] == "landmarks_unavailable"  # no landmark model here: steps cannot complete
    assert used(svc.core, "ch") == 1  # the start; frames are never charged
    status, done = complete(svc, {"session_id": sid}, h)
    assert status == 200
    assert (done["verdict"], done["passed"], done["reasons"], done["steps_completed"], done["total_steps"]) == (
        "failed", False, ["steps_incomplete"], 0, 3)
    assert done["session_id"] == sid and done["result_token"].count(".") == 2
    assert used(svc.core, "ch") == 1
    assert complete(svc, {"session_id": sid}, h) == (200, done)  # the stored verdict, never charged
    assert used(svc.core, "ch") == 1
    status, body = process(svc, {"session_id": sid, "image": b64(FRAME)}, h)
    assert (status, body["error"]["code"]) == (409, "session_finished")


def test_frames_too_fast_are_429_with_retry_after_ms_and_change_nothing(svc, clock):
    key = svc.core.keys.create("ch", 5).raw_key
    h = {"X-API-Key": key}
    sid = start(svc, {}, h)[1]["session_id"]
    assert process(svc, {"session_id": sid, "image": b64(FRAME)}, h)[0] == 200
    status, body = process(svc, {"session_id": sid, "image": b64(FRAME)}, h)  # two frames at once
    assert (status, body["error"]["code"]) == (429, "frame_too_fast")
    assert body["error"]["message"] == "Frames may come at most 15 per second."
    assert body["error"]["details"] == {"retry_after_ms": 34}  # half a frame left of 1.5, at 15 fps
    clock.advance(0.03)
    assert process(svc, {"session_id": sid, "image": b64(FRAME)}, h)[0] == 429
    clock.advance(0.004)
    assert process(svc, {"session_id": sid, "image": b64(FRAME)}, h)[0] == 200
    assert asyncio.run(svc.challenges.status(key, sid))["frames"] == 2  # refused frames left no trace


def test_the_frame_is_read_only_after_the_key_and_the_session_are_checked(svc):
    key = svc.core.keys.create("ch", 5).raw_key
    h = {"X-API-Key": key}
    sid = start(svc, {}, h)[1]["session_id"]
    bad = {"session_id": sid, "image": "!!!"}
    assert process(svc, bad, {"X-API-Key": "lk_unknown"})[1]["error"]["code"] == "invalid_api_key"
    assert process(svc, {**bad, "session_id": "no-such-session"}, h)[1]["error"]["code"] == "session_not_found"
    assert process(svc, bad, h) == (400, {"error": {"code": "invalid_base64", "message": "image is not valid base64"},
                                          "success": False})
    status, body = process(svc, {"session_id": sid}, h)
    assert (status, body["error"]["code"]) == (400, "missing_image")


@pytest.mark.parametrize("doc", [{}, {"session_id": 7}, {"session_id": ""}])
def test_a_missing_session_id(svc, doc):
    key = svc.core.keys.create("ch", 5).raw_key
    for endpoint in (apis.challenge_process, apis.challenge_complete):
        status, body = call(endpoint, svc, {**doc, "image": b64(FRAME)}, {"X-API-Key": key})
        assert (status, body["error"]) == (400, {"code": "invalid_request", "message": "'session_id' (a string) is required."})
    assert used(svc.core, "ch") == 0


def test_another_keys_session_is_404_and_not_charged(svc):
    owner = svc.core.keys.create("owner", 5).raw_key
    other = svc.core.keys.create("other", 5).raw_key
    sid = start(svc, {}, {"X-API-Key": owner})[1]["session_id"]
    for endpoint in (apis.challenge_process, apis.challenge_complete):
        status, body = call(endpoint, svc, {"session_id": sid, "image": b64(FRAME)}, {"X-API-Key": other})
        assert (status, body["error"]["code"]) == (404, "session_not_found")
    assert used(svc.core, "other") == 0 and used(svc.core, "owner") == 1  # the owner's start


def test_an_expired_session_is_410_and_never_charged(svc, clock):
    key = svc.core.keys.create("ch", 5).raw_key
    h = {"X-API-Key": key}
    sid = start(svc, {}, h)[1]["session_id"]
    clock.advance(601)
    assert process(svc, {"session_id": sid, "image": b64(FRAME)}, h)[1]["error"]["code"] == "session_expired"
    status, body = complete(svc, {"session_id": sid}, h)
    assert (status, body["error"]["code"]) == (410, "session_expired")
    assert used(svc.core, "ch") == 1  # the start; expiry charges nothing more


def test_a_spent_quota_refuses_a_start_but_not_what_it_paid_for(svc, clock):
    key = svc.core.keys.create("ch", 1).raw_key
    h = {"X-API-Key": key}
    first = start(svc, {}, h)[1]["session_id"]
    status, body = start(svc, {}, h)
    assert (status, body["error"]["code"]) == (429, "quota_exceeded")
    clock.advance(0.2)
    assert process(svc, {"session_id": first, "image": b64(FRAME)}, h)[0] == 200  # the paid session goes on
    assert complete(svc, {"session_id": first}, h)[0] == 200
    assert complete(svc, {"session_id": first}, h)[0] == 200  # and its stored verdict stays readable
    assert used(svc.core, "ch") == 1


def test_status_route_reads_the_session_with_the_key_from_header_or_query(svc, monkeypatch):
    import edge.routes as routes

    monkeypatch.setattr(routes.bentoml, "get_current_service", lambda: svc)
    client = TestClient(routes.status_app(svc.core.settings))
    key = svc.core.keys.create("ch", 5).raw_key
    sid = start(svc, {}, {"X-API-Key": key})[1]["session_id"]
    r = client.get(f"/status/{sid}", headers={"X-API-Key": key})
    assert r.status_code == 200
    s = r.json()
    assert (s["session_id"], s["status"], s["current_step"], s["total_steps"], s["frames"]) == (sid, "active", 1, 3, 0)
    assert client.get(f"/status/{sid}?hash_id={key}").status_code == 200
    r = client.get(f"/status/{sid}")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
    r = client.get("/status/unknown", headers={"X-API-Key": key})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "session_not_found")
    stats = client.get("/stats", headers={"X-API-Key": key}).json()
    assert (stats["active_sessions"], stats["steps_per_session"]) == (1, 3)
    monkeypatch.setattr(routes.bentoml, "get_current_service", lambda: None)
    r = client.get(f"/status/{sid}", headers={"X-API-Key": key})
    assert (r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) == (503, "not_ready", "1")


# -- Liveness_service's fields over HTTP --------------------------------------------------------------------


def test_answers_carry_liveness_services_fields_and_errors_its_success_flag(svc, clock):
    key = svc.core.keys.create("ch", 5).raw_key
    status, started = start(svc, {}, {"X-API-Key": key})
    assert (status, started["success"], type(started["expires_in_minutes"])) == (200, True, int)
    sid = started["session_id"]
    status, fb = process(svc, {"session_id": sid, "image": b64(FRAME)}, {"X-API-Key": key})
    assert (status, fb["success"], fb["face_detected"], fb["challenge"]) == (200, True, True, started["challenge"])
    status, err = process(svc, {"session_id": "nope", "image": b64(FRAME)}, {"X-API-Key": key})
    assert (status, err["success"], err["error"]["code"]) == (404, False, "session_not_found")
    status, done = complete(svc, {"session_id": sid}, {"X-API-Key": key})
    assert (status, done["success"], done["verdict"], done["total_blinks"]) == (200, False, "failed", 0)
    assert done["verified_image"] is None and isinstance(done["timestamp"], str)
    assert used(svc.core, "ch") == 1


def test_health_has_liveness_services_fields_and_a_server_wide_count(svc, monkeypatch):
    import edge.routes as routes

    monkeypatch.setattr(routes.bentoml, "get_current_service", lambda: svc)
    a, b = svc.core.keys.create("a", 5).raw_key, svc.core.keys.create("b", 5).raw_key
    for key in (a, b, b):
        assert start(svc, {}, {"X-API-Key": key})[0] == 200
    r = TestClient(routes.status_app(svc.core.settings)).get("/health")  # no key
    body = r.json()
    assert r.status_code == 200 and body == {"status": "healthy", "service": "liveness", "version": body["version"],
                                             "active_sessions": 3, "max_sessions": 1000}
    assert isinstance(body["version"], str) and body["version"]
    assert (used(svc.core, "a"), used(svc.core, "b")) == (1, 2)  # /health charges nothing


def test_health_while_loading(svc, monkeypatch):
    import edge.routes as routes

    monkeypatch.setattr(routes.bentoml, "get_current_service", lambda: Svc(svc.core, challenges=None))
    r = TestClient(routes.status_app(svc.core.settings)).get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading" and set(r.json()) == {"status", "service", "version"}
