"""FACIA-compatible ``POST /liveness`` (edge/facia.py, edge/apis.py ``facia_liveness``): the
request shape (``hash_id`` + base64 ``selfie_image`` in JSON), FACIA's exact bodies and statuses
(README "FACIA-compatible"), and charging: one unit for a verdict, nothing for a refusal, bad
input, a missing face or our failure.  The real core on the fake backend; no model is loaded."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from edge import apis, facia
from liveness import errors as E
from liveness.detection.base import Face
from liveness.errors import LivenessError
from liveness.imaging import ImageLimits
from liveness.pipeline import LivenessResult
from tests.edge.helpers import FACE, GIF, Svc, b64, body_of, ctx, jpeg, served, used
from tests.fakes import FakeBackend, retinaface_responder

CORRUPT = {"error": "Invalid or corrupt selfie image. Images must be in PNG, JPG, or JPEG format."}
REQUIRED = {"error": "Selfie_image is required and must be a JPEG, JPG or PNG."}
CREDENTIALS = {"message": "Invalid credentials"}
LIMIT = {"message": "Your request limit has been reached."}


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_request_takes_hash_id_from_the_json_body():
    key, doc = facia.parse_request(json.dumps({"hash_id": " lk_abc ", "selfie_image": "AAAA"}).encode())
    assert key == "lk_abc" and doc == {"hash_id": " lk_abc ", "selfie_image": "AAAA"}


@pytest.mark.parametrize("body", [b"", b"   ", b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe", b"null"])
def test_a_body_that_is_not_a_json_object_is_an_empty_request(body):
    # Not an error of its own: FACIA answers such a request 401 (no hash_id), as below.
    assert facia.parse_request(body) == (None, {})


def test_selfie_bytes_plain_and_data_uri_base64():
    data = jpeg(64, 48)
    limits = ImageLimits()
    assert facia.selfie_bytes({"selfie_image": b64(data)}, limits) == data
    assert facia.selfie_bytes({"selfie_image": "data:image/jpeg;base64," + b64(data)}, limits) == data
    assert facia.selfie_bytes({"selfie_image": "data:image/png;base64," + b64(data)}, limits) == data  # type ignored


@pytest.mark.parametrize("value", [None, "", "   ", 7, ["AAAA"], {"b64": "AAAA"}])
def test_selfie_bytes_missing_or_not_a_string_is_missing_image(value):
    doc = {} if value is None else {"selfie_image": value}
    with pytest.raises(LivenessError) as e:
        facia.selfie_bytes(doc, ImageLimits())
    assert e.value.kind is E.MISSING_IMAGE


def test_selfie_bytes_bad_base64_and_over_the_byte_limit():
    with pytest.raises(LivenessError) as e:
        facia.selfie_bytes({"selfie_image": "!!!not base64!!!"}, ImageLimits())
    assert e.value.kind is E.INVALID_BASE64
    with pytest.raises(LivenessError) as e:
        facia.selfie_bytes({"selfie_image": b64(b"x" * 3000)}, ImageLimits(max_bytes=2048))
    assert e.value.kind is E.IMAGE_TOO_LARGE


# -- answers -------------------------------------------------------------------------------------


def result(is_live: bool, score: float) -> LivenessResult:
    return LivenessResult(is_live, score, 0.5, Face(1, 2, 3, 4, 0.9), 1, (), {}, (), (10, 10))


def test_success_body_is_an_int_flag_and_the_full_precision_score():
    assert facia.SUCCESS_STATUS == 201
    assert facia.response(result(True, 0.9935680164951683)) == {
        "liveness_result": {"is_live": 1, "liveness_score": 0.9935680164951683}, "message": "Success"}
    body = facia.response(result(False, 0.072331))
    assert body["liveness_result"] == {"is_live": 0, "liveness_score": 0.072331}
    assert type(body["liveness_result"]["is_live"]) is int
    assert type(body["liveness_result"]["liveness_score"]) is float  # a numpy float would not serialise
    assert type(facia.response(result(True, np.float32(0.75)))["liveness_result"]["liveness_score"]) is float


@pytest.mark.parametrize(("kind", "status", "body"), [
    (E.MISSING_API_KEY, 401, CREDENTIALS),
    (E.INVALID_API_KEY, 401, CREDENTIALS),
    (E.QUOTA_EXCEEDED, 429, LIMIT),
    (E.MISSING_IMAGE, 400, REQUIRED),
    (E.INVALID_BASE64, 400, CORRUPT),
    (E.EMPTY_IMAGE, 400, CORRUPT),
    (E.UNSUPPORTED_FORMAT, 400, CORRUPT),  # FACIA says 400 where the native API says 415
    (E.CORRUPT_IMAGE, 400, CORRUPT),
    (E.INVALID_REQUEST, 400, CORRUPT),
    (E.IMAGE_TOO_LARGE, 413, {"error": "the message"}),
    (E.IMAGE_TOO_MANY_PIXELS, 413, {"error": "the message"}),
    (E.IMAGE_TOO_SMALL, 400, {"error": "the message"}),
    (E.NO_FACE, 400, {"error": "the message"}),  # FACIA: 400, where the native API says 422
    (E.MULTIPLE_FACES, 400, {"error": "the message"}),
    (E.INTERNAL_ERROR, 500, {"error": "the message"}),
    (E.NOT_READY, 503, {"error": "the message"}),
    (E.MODEL_UNAVAILABLE, 503, {"error": "the message"}),
])
def test_error_bodies_and_statuses(kind, status, body):
    assert facia.error_response(LivenessError(kind, "the message", {"x": 1})) == (status, body)


# -- POST /liveness on the real core -----------------------------------------------------------------


def post(svc: Svc, doc: object, headers: dict[str, str] | None = None) -> tuple[int, dict, object]:
    c = ctx(headers, content_type="application/json", path="/liveness")
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    r = served(apis.facia_liveness(svc, body, c))
    assert r.status_code == c.response.status_code
    return r.status_code, body_of(r), r


@pytest.fixture
def core(make_core):
    return make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE]),
                                         minifasnet_v2=0.95, minifasnet_v1se=0.85))


def test_a_verdict_is_201_and_charges_one_unit(core):
    key = core.keys.create("facia", 5).raw_key
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})
    assert status == 201 and body["message"] == "Success" and body["liveness_result"]["is_live"] == 1
    # The fused score as the pipeline computed it, unrounded: the native answer's score, which
    # rounds to 6 decimals, agrees with it to that precision.
    score = body["liveness_result"]["liveness_score"]
    assert score == pytest.approx(0.9, abs=1e-6) and set(body["liveness_result"]) == {"is_live", "liveness_score"}
    assert used(core, "facia") == 1
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": "data:image/jpeg;base64," + b64(jpeg(seed=1))})
    assert status == 201 and used(core, "facia") == 2


def test_a_spoof_is_201_with_is_live_0(make_core):
    core = make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE]), minifasnet_v2=0.1, minifasnet_v1se=0.2))
    key = core.keys.create("facia", 5).raw_key
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})
    assert (status, body["liveness_result"]["is_live"]) == (201, 0)
    assert body["liveness_result"]["liveness_score"] == pytest.approx(0.15, abs=1e-6)
    assert used(core, "facia") == 1


@pytest.mark.parametrize("doc", [
    {"selfie_image": "AAAA"},
    {"hash_id": "", "selfie_image": "AAAA"},
    {"hash_id": "lk_unknown", "selfie_image": "AAAA"},
    b"{not json",
])
def test_missing_or_unknown_hash_id_is_401_invalid_credentials(core, doc):
    core.keys.create("facia", 5)
    assert post(Svc(core), doc)[:2] == (401, CREDENTIALS)
    assert used(core, "facia") == 0


def test_the_key_is_read_from_hash_id_only_not_from_headers(core):
    key = core.keys.create("facia", 5).raw_key
    doc = {"selfie_image": b64(jpeg())}
    assert post(Svc(core), doc, {"X-API-Key": key})[:2] == (401, CREDENTIALS)
    assert post(Svc(core), doc, {"Authorization": f"Bearer {key}"})[:2] == (401, CREDENTIALS)
    assert used(core, "facia") == 0


def test_a_revoked_key_is_401(core):
    key = core.keys.create("facia", 5).raw_key
    core.keys.revoke("facia")
    assert post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})[:2] == (401, CREDENTIALS)


def test_a_refused_key_costs_no_image_decoding(core):
    # the image is decoded after the key check: a bad key with a bad image is still 401, not 400
    assert post(Svc(core), {"hash_id": "lk_unknown", "selfie_image": "!!!"})[:2] == (401, CREDENTIALS)


def test_a_spent_quota_is_429_and_charges_nothing_more(core):
    key = core.keys.create("facia", 1).raw_key
    assert post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})[0] == 201
    status, body, r = post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})
    assert (status, body) == (429, LIMIT) and "retry-after" not in r.headers
    assert used(core, "facia") == 1


@pytest.mark.parametrize(("doc", "status", "body"), [
    ({}, 400, REQUIRED),
    ({"selfie_image": ""}, 400, REQUIRED),
    ({"selfie_image": "%%%"}, 400, CORRUPT),                       # not base64
    ({"selfie_image": b64(b"just some text bytes")}, 400, CORRUPT),  # not an image
    ({"selfie_image": b64(GIF)}, 400, CORRUPT),                    # unsupported format
    ({"selfie_image": b64(jpeg()[:600])}, 400, CORRUPT),           # truncated
])
def test_bad_input_is_facias_400_and_never_charged(core, doc, status, body):
    key = core.keys.create("facia", 5).raw_key
    assert post(Svc(core), {"hash_id": key, **doc})[:2] == (status, body)
    assert used(core, "facia") == 0


def test_size_policy(make_core):
    core = make_core(max_image_bytes=4096, max_image_pixels=20_000)
    key = core.keys.create("facia", 5).raw_key
    big = jpeg(320, 240)  # noise: far more than 4096 bytes
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(big)})
    assert status == 413 and set(body) == {"error"} and "4096" in body["error"]
    many = jpeg(200, 150, level=128)  # flat: small file, 30000 pixels
    assert len(many) < 4096
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(many)})
    assert status == 413 and set(body) == {"error"}
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg(20, 20, level=128))})
    assert status == 400 and set(body) == {"error"} and body != CORRUPT  # too small: its own message
    assert used(core, "facia") == 0


def test_no_face_is_400_with_the_message_and_not_charged(make_core):
    core = make_core(backend=FakeBackend())  # the fake detector finds nothing
    key = core.keys.create("facia", 5).raw_key
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})
    assert (status, body) == (400, {"error": "No face was found in the image."})
    assert used(core, "facia") == 0


def test_our_failure_is_500_and_refunded(make_core):
    def broken(crop):
        raise RuntimeError("the model server went away")

    core = make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE]), minifasnet_v2=broken))
    key = core.keys.create("facia", 5).raw_key
    status, body, _ = post(Svc(core), {"hash_id": key, "selfie_image": b64(jpeg())})
    assert (status, body) == (500, {"error": "The liveness check failed on the server."})
    assert used(core, "facia") == 0
    assert core.keys.usage("facia").refunded == 1  # it was reserved (valid input), then given back
