"""Native ``POST /v1/liveness`` (edge/native.py, edge/apis.py ``native_liveness``): the three
body forms (multipart ``image`` and its aliases, JSON base64, the raw image), the key in
X-API-Key / Bearer / ``hash_id``, the documented answer and error envelope with ``request_id``
(README "Native"), charging (one unit per verdict; refusals, bad input, no face and our failures
are free), and a session token running the session's attempt instead.  The real core on the
fake backend; no model is loaded."""

from __future__ import annotations

import asyncio
import sqlite3
import hashlib
import json
import re

import pytest

from edge import apis, native
from edge.raw_body import BODY_LENGTH
from liveness import errors as E
from liveness.detection.base import Face
from liveness.errors import LivenessError
from liveness.imaging import ImageLimits
from liveness.inference.repository import ModelVersion
from liveness.pipeline import LivenessResult
from liveness.sessions import SessionService, parse_params
from tests.edge.helpers import GIF, Part, Svc, b64, body_of, ctx, jpeg, multipart, served, used
from tests.fakes import Box, FakeBackend, retinaface_responder

LIMITS = ImageLimits()
IMAGE = jpeg()


def parse(body: bytes, content_type: str, headers: dict[str, str] | None = None):
    return native.parse_request(body, content_type, headers or {}, LIMITS)


# -- parsing: multipart ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["image", "file", "selfie_image", "image_base64"])
def test_multipart_image_field_and_its_aliases(field):
    body, ct = multipart([Part(field, IMAGE, "selfie.jpg", "image/jpeg")])
    key, image = parse(body, ct, {"x-api-key": "lk_1"})
    assert key == "lk_1" and image() == IMAGE


def test_multipart_field_precedence_is_image_first():
    other = jpeg(seed=5)
    body, ct = multipart([Part("file", other, "b.jpg"), Part("image", IMAGE, "a.jpg")])
    assert parse(body, ct)[1]() == IMAGE


def test_multipart_field_may_carry_base64_text_or_a_data_uri():
    body, ct = multipart([Part("image", b64(IMAGE))])
    assert parse(body, ct)[1]() == IMAGE
    body, ct = multipart([Part("image", "data:image/jpeg;base64," + b64(IMAGE))])
    assert parse(body, ct)[1]() == IMAGE
    body, ct = multipart([Part("image", "not base64 at all!")])
    with pytest.raises(LivenessError) as e:
        parse(body, ct)[1]()
    assert e.value.kind is E.INVALID_BASE64


def test_multipart_key_from_hash_id_field_unless_a_header_names_one():
    body, ct = multipart([Part("hash_id", "lk_form"), Part("image", IMAGE, "a.jpg")])
    assert parse(body, ct)[0] == "lk_form"
    assert parse(body, ct, {"x-api-key": "lk_header"})[0] == "lk_header"
    assert parse(body, ct, {"authorization": "Bearer lk_bearer"})[0] == "lk_bearer"


@pytest.mark.parametrize("parts", [[Part("other", "x")], [Part("image", b"", "empty.jpg")], []])
def test_multipart_without_an_image_is_missing_image_when_read(parts):
    body, ct = multipart(parts)
    key, image = parse(body, ct)  # parsing the form is fine ...
    with pytest.raises(LivenessError) as e:
        image()  # ... the missing image is reported when the image is needed (after the key check)
    assert (e.value.kind, e.value.message) == (E.MISSING_IMAGE, "Send the image in a multipart field named 'image'.")


def test_multipart_boundary_forms_and_content_type_case():
    body, _ = multipart([Part("image", IMAGE, "a.jpg")], boundary="simple")
    for ct in ('multipart/form-data; boundary="simple"', "Multipart/Form-Data; boundary=simple",
               "multipart/form-data; charset=utf-8; boundary=simple"):
        assert parse(body, ct)[1]() == IMAGE
    with pytest.raises(LivenessError) as e:
        parse(body, "multipart/form-data")
    assert (e.value.kind, e.value.message) == (E.INVALID_REQUEST, "multipart/form-data without a boundary.")
    with pytest.raises(LivenessError) as e:
        parse(b"garbage, not a form", "multipart/form-data; boundary=simple")
    assert e.value.kind is E.INVALID_REQUEST and e.value.message.startswith("Malformed multipart body")


# -- parsing: JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["image", "file", "selfie_image", "image_base64"])
def test_json_base64_field_and_its_aliases(field):
    key, image = parse(json.dumps({field: b64(IMAGE), "hash_id": "lk_json"}).encode(), "application/json")
    assert key == "lk_json" and image() == IMAGE


def test_json_null_field_falls_through_to_the_next_alias():
    _, image = parse(json.dumps({"image": None, "file": b64(IMAGE)}).encode(), "application/json")
    assert image() == IMAGE


@pytest.mark.parametrize("ct", ["text/plain", "", "Application/JSON; charset=utf-8"])
def test_json_without_its_content_type_is_still_json(ct):
    _, image = parse(b"  " + json.dumps({"image": b64(IMAGE)}).encode(), ct)
    assert image() == IMAGE


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "The body is not valid JSON."),
    (b"[1, 2]", "The JSON body must be an object."),
    (b"\xff{", "The body is not valid JSON."),
])
def test_bad_json_is_invalid_request_at_once(body, message):
    with pytest.raises(LivenessError) as e:
        parse(body, "application/json")
    assert (e.value.kind, e.value.status, e.value.message) == (E.INVALID_REQUEST, 400, message)


@pytest.mark.parametrize(("doc", "kind", "message"), [
    ({}, E.MISSING_IMAGE, "The JSON body needs an 'image' field with base64 image data."),
    ({"image": ""}, E.MISSING_IMAGE, "The JSON body needs an 'image' field with base64 image data."),
    ({"image": 12}, E.INVALID_REQUEST, "'image' must be a base64 string."),
    ({"image": ["AAAA"]}, E.INVALID_REQUEST, "'image' must be a base64 string."),
])
def test_json_image_errors_come_when_the_image_is_read(doc, kind, message):
    key, image = parse(json.dumps(doc).encode(), "application/json", {"x-api-key": "lk"})
    assert key == "lk"
    with pytest.raises(LivenessError) as e:
        image()
    assert (e.value.kind, e.value.message) == (kind, message)


def test_json_base64_over_the_byte_limit_is_refused_from_its_length():
    _, image = native.parse_request(json.dumps({"image": "A" * 8000}).encode(), "application/json", {},
                                    ImageLimits(max_bytes=2048))
    with pytest.raises(LivenessError) as e:
        image()
    assert e.value.kind is E.IMAGE_TOO_LARGE and e.value.status == 413


# -- parsing: raw body -------------------------------------------------------------------------------


@pytest.mark.parametrize("ct", ["image/jpeg", "image/png", "application/octet-stream", "image/webp"])
def test_raw_body_is_the_image_and_the_key_comes_from_headers_only(ct):
    key, image = parse(IMAGE, ct, {"x-api-key": "lk_raw"})
    assert key == "lk_raw" and image() is IMAGE
    assert parse(IMAGE, ct)[0] is None


def test_a_raw_body_that_happens_to_start_with_a_brace_is_json_only_without_a_type():
    with pytest.raises(LivenessError):
        parse(b"{garbage", "")
    assert parse(b"{garbage", "image/jpeg")[1]() == b"{garbage"  # a declared image type is raw


# -- the answer ----------------------------------------------------------------------------------------


def test_response_fields_types_and_rounding():
    r = LivenessResult(
        is_live=False, score=0.0723312345, threshold=0.5, face=Face(178.04, 136.26, 223.0, 225.0, 0.992449),
        faces_found=2, quality_flags=("face_cut_off", "multiple_faces"),
        model_scores={"minifasnet_v2": 0.00133349, "minifasnet_v1se": 0.1433291},
        models=(ModelVersion("retinaface", 1, "1bcfde6ab910389a" + "0" * 48),),
        image_size=(480, 640), timings_ms={"decode": 2.34}, acquisition="retinaface_128",
    )
    assert native.response(r, "rid") == {
        "request_id": "rid", "decision": "spoof", "is_live": False, "score": 0.072331, "threshold": 0.5,
        "face": {"x": 178.0, "y": 136.3, "width": 223.0, "height": 225.0, "score": 0.9924},
        "faces_found": 2, "detector_pass": "retinaface_128", "quality_flags": ["face_cut_off", "multiple_faces"],
        "model_scores": {"minifasnet_v2": 0.001333, "minifasnet_v1se": 0.143329},
        "models": [{"name": "retinaface", "version": 1, "sha256": "1bcfde6ab910389a"}],
        "image": {"width": 480, "height": 640}, "timings_ms": {"decode": 2.34},
    }
    assert native.response(LivenessResult(True, 0.5, 0.5, Face(0, 0, 1, 1, 1.0), 1, (), {}, (), (1, 1)),
                           "r")["decision"] == "live"


# -- POST /v1/liveness on the real core ----------------------------------------------------------------


FACE_PX = Box(96, 60, 112, 108, 0.97)


@pytest.fixture
def core(make_core):
    return make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE_PX], image_size=(320, 240)),
                                         minifasnet_v2=0.95, minifasnet_v1se=0.75))


def post(svc: Svc, body: bytes, content_type: str, headers: dict[str, str] | None = None):
    c = ctx(headers, content_type=content_type)
    r = served(apis.native_liveness(svc, body, c))
    assert r.status_code == c.response.status_code
    return r.status_code, body_of(r), c


def fake_sha(model: str, version: int) -> str:
    return hashlib.sha256(f"fake:{model}:{version}".encode()).hexdigest()[:16]


def test_a_verdict_is_200_with_the_documented_fields_and_one_unit(core):
    key = core.keys.create("native", 5).raw_key
    status, body, c = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key, "X-Request-ID": "req-42"})
    assert status == 200 and used(core, "native") == 1
    assert body["request_id"] == "req-42" and c.response.headers["x-request-id"] == "req-42"
    assert (body["decision"], body["is_live"], body["threshold"]) == ("live", True, 0.5)
    assert body["score"] == pytest.approx(0.85, abs=1e-6)
    assert body["face"] == {"x": 96.0, "y": 60.0, "width": 112.0, "height": 108.0, "score": 0.97}
    assert (body["faces_found"], body["detector_pass"], body["quality_flags"]) == (1, "reference", [])
    assert body["model_scores"] == pytest.approx({"minifasnet_v2": 0.95, "minifasnet_v1se": 0.75}, abs=1e-6)
    assert body["models"] == [{"name": m, "version": v, "sha256": fake_sha(m, v)}
                              for m, v in (("retinaface", 1), ("minifasnet_v2", 2), ("minifasnet_v1se", 2))]
    assert body["image"] == {"width": 320, "height": 240}
    assert set(body["timings_ms"]) == {"decode", "detect", "classify"}


def test_a_request_id_is_generated_when_none_is_sent(core):
    key = core.keys.create("native", 5).raw_key
    _, body, c = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key})
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"]) and c.response.headers["x-request-id"] == body["request_id"]
    _, err, c = post(Svc(core), b"", "image/jpeg", {"X-API-Key": "lk_nope"})
    assert re.fullmatch(r"[0-9a-f]{32}", err["request_id"]) and c.response.headers["x-request-id"] == err["request_id"]


def test_every_body_form_and_credential_form_reaches_a_verdict(core):
    key = core.keys.create("native", 10).raw_key
    svc = Svc(core)
    form, ct = multipart([Part("image", IMAGE, "selfie.jpg", "image/jpeg")])
    assert post(svc, form, ct, {"X-API-Key": key})[0] == 200
    form, ct = multipart([Part("hash_id", key), Part("file", IMAGE, "selfie.jpg")])
    assert post(svc, form, ct)[0] == 200
    assert post(svc, json.dumps({"hash_id": key, "image": b64(IMAGE)}).encode(), "application/json")[0] == 200
    assert post(svc, json.dumps({"image_base64": b64(IMAGE)}).encode(), "application/json",
                {"Authorization": f"Bearer {key}"})[0] == 200
    assert post(svc, IMAGE, "application/octet-stream", {"Authorization": f"bearer {key}"})[0] == 200
    assert used(core, "native") == 5


@pytest.mark.parametrize(("headers", "code", "message"), [
    ({}, "missing_api_key", "API key is missing"),
    ({"X-API-Key": "lk_unknown"}, "invalid_api_key", "API key is invalid or revoked"),
    ({"Authorization": "Basic bGs6eA=="}, "missing_api_key", "API key is missing"),
])
def test_refused_credentials_are_401_envelopes_before_the_image_is_read(core, headers, code, message):
    core.keys.create("native", 5)
    status, body, _ = post(Svc(core), b"not even an image", "image/jpeg", {**headers, "X-Request-ID": "r1"})
    assert (status, body) == (401, {"error": {"code": code, "message": message}, "request_id": "r1"})
    assert used(core, "native") == 0


def test_a_spent_quota_is_429_with_resets_at(core):
    key = core.keys.create("native", 1, "day").raw_key
    assert post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key})[0] == 200
    status, body, _ = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key})
    assert status == 429 and body["error"]["code"] == "quota_exceeded"
    details = body["error"]["details"]
    assert (details["limit"], details["period"]) == (1, "day") and details["resets_at"].endswith("+00:00")
    assert used(core, "native") == 1


@pytest.mark.parametrize(("body", "ct", "status", "code"), [
    (b"", "image/jpeg", 400, "empty_image"),
    (GIF, "image/gif", 415, "unsupported_format"),
    (b"%PDF-1.4 not an image", "application/octet-stream", 415, "unsupported_format"),
    (IMAGE[:700], "image/jpeg", 400, "corrupt_image"),
    (json.dumps({"image": "!!"}).encode(), "application/json", 400, "invalid_base64"),
    (json.dumps({}).encode(), "application/json", 400, "missing_image"),
    (b"{bad", "application/json", 400, "invalid_request"),
    (jpeg(20, 20, level=90), "image/jpeg", 400, "image_too_small"),
])
def test_bad_input_has_its_code_and_status_and_is_never_charged(core, body, ct, status, code):
    key = core.keys.create("native", 5).raw_key
    got_status, got, _ = post(Svc(core), body, ct, {"X-API-Key": key, "X-Request-ID": "bad"})
    assert (got_status, got["error"]["code"], got["request_id"]) == (status, code, "bad")
    assert isinstance(got["error"]["message"], str) and got["error"]["message"]
    assert used(core, "native") == 0 and core.keys.usage("native").refunded == 0  # never even reserved


def test_size_policy(make_core):
    core = make_core(max_image_bytes=4096, max_image_pixels=20_000)
    key = core.keys.create("native", 5).raw_key
    status, body, _ = post(Svc(core), jpeg(320, 240), "image/jpeg", {"X-API-Key": key})
    assert (status, body["error"]["code"]) == (413, "image_too_large")
    status, body, _ = post(Svc(core), json.dumps({"image": b64(jpeg(320, 240))}).encode(), "application/json",
                           {"X-API-Key": key})
    assert (status, body["error"]["code"]) == (413, "image_too_large")
    flat = jpeg(200, 150, level=128)
    assert len(flat) < 4096
    status, body, _ = post(Svc(core), flat, "image/jpeg", {"X-API-Key": key})
    assert (status, body["error"]["code"]) == (413, "image_too_many_pixels")
    assert used(core, "native") == 0


def test_no_face_is_422_and_not_charged(make_core):
    core = make_core(backend=FakeBackend())
    key = core.keys.create("native", 5).raw_key
    status, body, _ = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key, "X-Request-ID": "nf"})
    assert (status, body) == (422, {"error": {"code": "no_face", "message": "No face was found in the image."},
                                    "request_id": "nf"})
    assert used(core, "native") == 0


def test_multiple_faces_under_reject_is_422_with_the_count(make_core):
    faces = [Box(10, 10, 100, 100), Box(180, 80, 100, 100)]
    core = make_core(backend=FakeBackend(retinaface=retinaface_responder(faces, image_size=(320, 240))),
                     multi_face_policy="reject")
    key = core.keys.create("native", 5).raw_key
    status, body, _ = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key})
    assert (status, body["error"]["code"], body["error"]["details"]) == (422, "multiple_faces", {"faces": 2})
    assert used(core, "native") == 0


def test_our_failure_is_500_internal_error_and_refunded(make_core):
    def broken(crop):
        raise RuntimeError("GPU on fire")

    core = make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE_PX], image_size=(320, 240)),
                                         minifasnet_v1se=broken))
    key = core.keys.create("native", 5).raw_key
    status, body, _ = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key, "X-Request-ID": "ours"})
    assert (status, body) == (500, {"error": {"code": "internal_error",
                                              "message": "The liveness check failed on the server."},
                                    "request_id": "ours"})
    usage = core.keys.usage("native")
    assert (usage.used, usage.refunded) == (0, 1)


def test_the_unit_is_committed_only_once_the_answer_is_sent(core):
    """The success is settled by the response's background task, which the server runs after the
    body is on the socket: a worker killed before that leaves a lease, not a charge."""
    key = core.keys.create("native", 5).raw_key
    c = ctx({"X-API-Key": key}, content_type="image/jpeg")
    r = asyncio.run(apis.native_liveness(Svc(core), IMAGE, c))  # answered, not yet sent
    assert r.status_code == 200
    usage = core.keys.usage("native")
    assert (usage.used, usage.succeeded) == (1, 0)  # reserved (a lease), not committed
    asyncio.run(r.background())  # the server sends, then runs this
    usage = core.keys.usage("native")
    assert (usage.used, usage.succeeded) == (1, 1)


def test_a_model_that_is_not_loaded_is_503_with_retry_after_and_refunded(core):
    key = core.keys.create("native", 5).raw_key
    for v in core.backend.loaded_versions("minifasnet_v2"):
        asyncio.run(core.backend.unload("minifasnet_v2", v))
    c = ctx({"X-API-Key": key}, content_type="image/jpeg")
    r = served(apis.native_liveness(Svc(core), IMAGE, c))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert body_of(r)["error"]["code"] == "model_unavailable"
    assert used(core, "native") == 0


# -- a session token instead of an API key (README "Sessions") ----------------------------------------


# ``sessions``: the SessionService fixture of tests/edge/conftest.py, on this module's ``core``.


def new_session(sessions: SessionService, key: str, **params) -> dict:
    return asyncio.run(sessions.create(key, parse_params({"mode": "passive", **params}), None))


def test_a_session_token_runs_the_sessions_attempt_and_hides_the_verdict(core, sessions):
    key = core.keys.create("app", 5).raw_key
    made = new_session(sessions, key)
    assert used(core, "app") == 1  # the session paid once, at creation
    svc = Svc(core, sessions=sessions)
    status, body, _ = post(svc, IMAGE, "image/jpeg", {"Authorization": f"Bearer {made['auth_token']}",
                                                      "X-Request-ID": "s1"})
    assert status == 200
    assert body == {"request_id": "s1", "session": {"session_id": made["session_id"], "attempt_id": 1,
                                                    "status": "completed", "attempts_remaining": 2}}
    assert used(core, "app") == 1  # the client's attempt is never charged


def test_a_session_that_sends_results_gets_the_full_answer_plus_the_session(core, sessions):
    key = core.keys.create("app", 5).raw_key
    made = new_session(sessions, key, send_results_to_client=True, max_attempts=2)
    status, body, _ = post(Svc(core, sessions=sessions), IMAGE, "image/jpeg",
                           {"X-API-Key": made["auth_token"]})  # the token works in any credential slot
    assert status == 200 and body["decision"] == "live" and body["score"] == pytest.approx(0.85, abs=1e-6)
    session = body["session"]
    assert (session["attempt_id"], session["attempts_remaining"], session["result"]["decision"]) == (1, 1, "realface")


def test_a_session_attempts_input_error_is_the_envelope_with_the_session(core, sessions):
    key = core.keys.create("app", 5).raw_key
    made = new_session(sessions, key, send_results_to_client=True)
    status, body, _ = post(Svc(core, sessions=sessions), b"", "image/jpeg",
                           {"Authorization": f"Bearer {made['auth_token']}", "X-Request-ID": "e1"})
    assert status == 400 and body["error"]["code"] == "empty_image" and body["request_id"] == "e1"
    assert body["session"]["attempt_id"] == 1 and body["session"]["error"]["code"] == "empty_image"
    assert used(core, "app") == 1


def test_session_tokens_when_sessions_are_off_and_forged_tokens(core, sessions):
    status, body, _ = post(Svc(core, sessions=None), IMAGE, "image/jpeg", {"Authorization": "Bearer eyJa.b.c"})
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"] == "Sessions are disabled on this server (LIVENESS_SESSIONS_ENABLED)."
    status, body, _ = post(Svc(core, sessions=sessions), IMAGE, "image/jpeg", {"Authorization": "Bearer eyJa.b.c"})
    assert (status, body["error"]["code"]) == (401, "invalid_session_token")


def test_a_video_token_on_the_image_endpoint_is_403_token_mode_mismatch(core, sessions):
    key = core.keys.create("app", 5).raw_key
    made = new_session(sessions, key, mode="video")
    status, body, _ = post(Svc(core, sessions=sessions), IMAGE, "image/jpeg",
                           {"Authorization": f"Bearer {made['auth_token']}"})
    assert (status, body["error"]["code"], body["error"]["details"]) == (403, "token_mode_mismatch", {"mode": "video"})


def test_an_unexpected_failure_below_the_adapter_is_still_the_internal_error_envelope(core, monkeypatch):
    key = core.keys.create("native", 5).raw_key

    def locked(credential):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(core.keys, "check_credential", locked)
    status, body, c = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key, "X-Request-ID": "u1"})
    assert (status, body["error"]["code"], body["request_id"]) == (500, "internal_error", "u1")
    assert body == {"error": {"code": "internal_error", "message": "The request failed on the server."},
                    "request_id": "u1"}  # nothing of the exception leaks
    assert c.response.headers["x-request-id"] == "u1"


def test_a_store_failure_while_reserving_is_500_logged_without_the_image_and_never_charged(core, monkeypatch, caplog):
    key = core.keys.create("native", 5).raw_key

    def locked(credential):
        raise sqlite3.OperationalError("database is locked")

    def leaky(*a, **k):  # an exception whose text quotes the request
        raise ValueError(f"cannot use {b64(IMAGE)[:40]}")

    monkeypatch.setattr(core.keys, "reserve_credential", locked)
    with caplog.at_level("ERROR", logger="liveness.api"):
        status, body, _ = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key, "X-Request-ID": "u2"})
        assert (status, body["error"]["code"], body["request_id"]) == (500, "internal_error", "u2")
        usage = core.keys.usage("native")
        assert (usage.used, usage.refunded) == (0, 0)  # the unit was never reserved
        monkeypatch.setattr(core.keys, "reserve_credential", leaky)
        status, body, _ = post(Svc(core), json.dumps({"image": b64(IMAGE)}).encode(), "application/json",
                               {"X-API-Key": key})
        assert (status, body["error"]["code"]) == (500, "internal_error")
        assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    first, second = [r.getMessage() for r in caplog.records if r.name == "liveness.api"]
    assert first.startswith("unexpected sqlite3.OperationalError in native (request_id u2): database is locked\n")
    assert second.startswith(f"unexpected builtins.ValueError in native (request_id {body['request_id']})\n")
    assert b64(IMAGE)[:40] not in second and "Traceback" in second  # the frames, never the text
    assert used(core, "native") == 0


def test_a_routing_store_failure_inside_the_admission_is_500_and_never_charged(core, monkeypatch):
    key = core.keys.create("native", 5).raw_key

    async def broken(*a, **k):  # the policy store behind the routing table, inside the admitted block
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(core.admission, "route", broken)
    status, body, _ = post(Svc(core), IMAGE, "image/jpeg", {"X-API-Key": key})
    assert (status, body["error"]["code"]) == (500, "internal_error")
    assert used(core, "native") == 0


@pytest.mark.parametrize(("sent", "echoed"), [
    ("req-42", "req-42"), ("a" * 128, "a" * 128), ("ok_id.1:2-3", "ok_id.1:2-3"),
    ("a" * 129, None), ("has space", None), ("<script>", None), ("é", None), ("", None),
])
def test_the_request_id_is_echoed_only_when_short_and_safe(core, sent, echoed):
    _, body, c = post(Svc(core), b"", "image/jpeg", {"X-API-Key": "lk_nope", "X-Request-ID": sent})
    if echoed is None:
        assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    else:
        assert body["request_id"] == echoed
    assert c.response.headers["x-request-id"] == body["request_id"]


@pytest.mark.parametrize("ct", ["image/jpeg", "application/octet-stream", "", "application/json", "text/plain"])
def test_an_empty_body_is_empty_image_whatever_its_type_after_the_key(core, ct):
    key = core.keys.create("native", 5).raw_key
    status, body, _ = post(Svc(core), b"", ct, {"X-API-Key": key})
    assert (status, body["error"]["code"]) == (400, "empty_image") and used(core, "native") == 0
    status, body, _ = post(Svc(core), b"", ct, {"X-API-Key": "lk_unknown"})
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")


def test_an_empty_body_is_told_from_a_literal_brace_pair_by_the_body_length_header(core):
    # BentoML hands the API b"{}" for an empty body; RawBodyMiddleware's header says it was empty.
    key = core.keys.create("native", 5).raw_key
    for ct, literal in (("image/jpeg", (415, "unsupported_format")), ("application/json", (400, "missing_image"))):
        c = ctx({"X-API-Key": key, BODY_LENGTH: "0"}, content_type=ct)
        r = served(apis.native_liveness(Svc(core), b"{}", c))
        assert (r.status_code, body_of(r)["error"]["code"]) == (400, "empty_image")
        c = ctx({"X-API-Key": key, BODY_LENGTH: "2"}, content_type=ct)
        r = served(apis.native_liveness(Svc(core), b"{}", c))
        assert (r.status_code, body_of(r)["error"]["code"]) == literal
