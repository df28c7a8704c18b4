"""BioID BWS 3 adapters (edge/bws_grpc.py: the ``bioid.services.v1.BioIDWebService`` servicer;
edge/bws_rest.py: BWS 3's JSON routes) on the real core (fake inference backend, SQLite key store
in tmp_path, injected clocks), with client-signed BWS JWTs (liveness/keys/bws.py).

What a BWS client relies on (docs/GRPC.md "BioID BWS 3", docs/COMPATIBILITY.md): the messages and
their values (live/spoof from the fake's p(live), the lower score of two images, quality checks
1.0 passed / 0.0 failed, the AccuracyLevel of a PhotoVerify, eyes named by the person's side),
FAULTED answers for no usable face, the metadata (``jobid``, ``bws-version``, ``date``,
``reference-number``, ``response-time-ms``), the status codes of refused calls (REST: our HTTP
status with a google.rpc.Status body) and the charges: one unit per answered call, none for a
refused one.

The fake models: RetinaFace and YuNet find one face (at ``FACE_BOX``) in every image brighter than
40; both anti-spoof models say p(live) 0.9 for a crop brighter than 150, else 0.1; MobileFaceNet's
embedding is a unit vector whose angle is set by the face's grey level (``ANGLE``), so the cosine
of a flat grey live image against a flat grey 200 photo is ``COSINE[level]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
import uuid
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from edge import bws_grpc, bws_rest
from edge.bws_grpc import BWS_VERSION, IMPOSTOR_MEAN, IMPOSTOR_SD, LEVEL_Z, BwsServicer, pb2, pb2_grpc
from liveness import errors as E
from liveness.detection.base import Face
from liveness.errors import LivenessError
from liveness.keys.bws import AUDIENCE, LEEWAY_S, MAX_LIFETIME_S, BwsTokenVerifier, sign_client_jwt
from liveness.pipeline import LivenessResult
from tests.edge.grpc_context import Aborted, Context, served_channel
from tests.edge.helpers import YUNET_FACE_BOX, b64, jpeg, used, yunet_one_face
from tests.fakes import Box, FakeBackend, detector_image, retinaface_responder
from tests.video_helpers import encode

FACE_BOX = YUNET_FACE_BOX  # both fake detectors put the face there (fractions of the image)
LIVE, SPOOF, NO_FACE = jpeg(level=200), jpeg(level=100), jpeg(level=10)
LEVEL = pb2.PhotoVerifyResponse.AccuracyLevel
CHECKS = ["FaceTooSmall", "FaceCutOff", "MultipleFaces"]

# The cosine of a flat grey live image of this level against the flat grey 200 photo.
COSINE = {200: 1.0, 250: 0.99, 240: 0.34, 230: 0.29, 220: 0.255, 210: 0.235, 190: 0.21, 170: 0.1,
          100: 1.0, 60: -0.6}
ANGLE = {level: math.acos(c) for level, c in COSINE.items()}
ANGLE[100] = 1.0  # a spoof-grey face: only ever compared with a photo of its own level


# -- the fake models ----------------------------------------------------------------------------------


def faces(x: np.ndarray) -> list[Box]:
    return [Box(*FACE_BOX)] if detector_image(x).mean() > 40 else []


def p_live(crop: np.ndarray) -> float:
    return 0.9 if crop.mean() > 150 else 0.1


def embedder(x: np.ndarray) -> list[np.ndarray]:
    """(N, 3, 112, 112) aligned faces (RGB, ImageNet-normalised) -> (N, 128): a unit vector at
    ``ANGLE`` of the nearest known grey level (R channel: x = (v / 255 - 0.485) / 0.229)."""
    out = np.zeros((x.shape[0], 128), np.float32)
    for i in range(x.shape[0]):
        grey = (float(x[i, 0].mean()) * 0.229 + 0.485) * 255
        angle = ANGLE[min(ANGLE, key=lambda level: abs(level - grey))]
        out[i, 0], out[i, 1] = np.cos(angle), np.sin(angle)
    return [out]


def backend(**overrides: Any) -> FakeBackend:
    return FakeBackend(**{"retinaface": retinaface_responder(faces), "minifasnet_v2": p_live,
                          "minifasnet_v1se": p_live, "yunet": yunet_one_face, "mobilefacenet": embedder, **overrides})


def clip(level: int, n: int = 12) -> bytes:
    return encode([np.full((240, 320, 3), level, np.uint8) for _ in range(n)], 10)


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return {"live": clip(200), "spoof": clip(100), "none": clip(10)}


# -- the core, clients, the two adapters ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def bws_clock(clock, monkeypatch):
    """The one seam: the adapters' JWT verifier (``verifier_for``) judges time on the test's clock."""
    monkeypatch.setattr(bws_grpc, "BwsTokenVerifier", lambda store: BwsTokenVerifier(store, clock))
    return clock


@pytest.fixture
def core(make_core):
    return make_core(backend=backend(), verification_enabled=True, video_min_selected_frames=5)


@dataclass
class Client:
    """A BWS client: an API key with its client id and key, signing its own JWTs on ``clock``."""

    core: Any
    name: str
    key_id: str
    client_id: str
    key_b64: str
    clock: Any

    def jwt(self, **kw: Any) -> str:
        return sign_client_jwt(self.client_id, self.key_b64, **{"now": self.clock(), **kw})

    def claims_jwt(self, key: bytes | None = None, **claims: Any) -> str:
        """A JWT with these claims over BWS's (None drops one), signed with the client key or ``key``."""
        now = int(self.clock())
        base = {"sub": self.client_id, "iss": self.client_id, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600}
        body = {k: v for k, v in {**base, **claims}.items() if v is not None}
        return jwt.encode(body, key or base64.b64decode(self.key_b64), algorithm="HS256")

    def metadata(self, **extra: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.jwt()}"), *extra.items())

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.jwt()}", **extra}

    @property
    def used(self) -> int:
        return used(self.core, self.name)


def new_client(core, clock, name: str = "bws", limit: int = 10) -> Client:
    key = core.keys.create(name, limit)
    issued = core.keys.create_bws_client(name)
    return Client(core, name, key.info.key_id, issued.client.client_id, issued.key_b64, clock)


@pytest.fixture
def client(core, clock) -> Client:
    return new_client(core, clock)


class Grpc:
    """The BWS servicer as ``add_bws_servicer`` builds it for ``core`` (its JWT verifier, or none
    without authentication), with ``clock`` for its ``date``."""

    def __init__(self, core, clock) -> None:
        self.core = core
        self.observed: list[tuple[str, str]] = []
        self.servicer = BwsServicer(core, bws_grpc.verifier_for(core), lambda e, o: self.observed.append((e, o)),
                                    clock=clock)

    def call(self, method: str, request, metadata=()) -> tuple[Any, Context]:
        context = Context(tuple(metadata))

        async def run():
            try:
                return await getattr(self.servicer, method)(request, context)
            except Aborted as a:
                return a
            finally:
                await context.end()

        return asyncio.run(run()), context


@pytest.fixture
def rpc(core, clock) -> Grpc:
    return Grpc(core, clock)


def rest_client(get_core) -> TestClient:
    return TestClient(Starlette(routes=bws_rest.bws_routes(get_core)))


@pytest.fixture
def rest(core) -> TestClient:
    return rest_client(lambda: core)


def images(*data: bytes) -> Any:
    return pb2.LivenessDetectionRequest(live_images=[pb2.ImageData(image=d) for d in data])


def photo_request(live: tuple[bytes, ...], photo: bytes, disable: bool = False) -> Any:
    return pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=d) for d in live], photo=photo,
                                  disable_liveness_detection=disable)


def live_json(*data: bytes) -> dict[str, Any]:
    return {"liveImages": [{"image": b64(d)} for d in data]}


def assert_status_json(r, status: int, grpc_code: grpc.StatusCode, reason: str) -> dict[str, Any]:
    """A REST error: our HTTP status, google.rpc.Status JSON with our code in ErrorInfo.reason."""
    assert r.status_code == status, r.text
    doc = r.json()
    assert set(doc) == {"code", "message", "details"} and doc["message"]
    assert doc["code"] == grpc_code.value[0]
    (info,) = doc["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["reason"], info["domain"]) == (reason, "liveness") and isinstance(info["metadata"], dict)
    assert r.headers["bws-version"] == BWS_VERSION and str(uuid.UUID(r.headers["jobid"])) == r.headers["jobid"]
    assert float(r.headers["response-time-ms"]) >= 0
    return doc


# -- the renderers ---------------------------------------------------------------------------------------


def result(live: bool, score: float, flags: tuple[str, ...] = ()) -> LivenessResult:
    return LivenessResult(live, score, 0.5, Face(10.0, 20.0, 100.0, 120.0, 0.99, None), 1, flags, {}, (), (640, 480))


def template(keypoints=((100.0, 50.0), (160.0, 52.0))) -> Any:
    return SimpleNamespace(face=SimpleNamespace(keypoints=np.array(keypoints)))


def verification(cosines: list[float], threshold: float = 0.42, liveness: list[LivenessResult] | None = None) -> Any:
    from liveness.operations import PhotoVerification

    matches = [SimpleNamespace(cosine=c) for c in cosines]
    return PhotoVerification(liveness, matches, [template() for _ in cosines], template(), threshold)


def test_bws_version_is_the_bws_3_contract_served_by_us():
    assert BWS_VERSION.startswith("3.0.0-liveness.")


def test_quality_assessments_score_1_for_a_passed_check_0_for_a_failed_one():
    r = bws_grpc.liveness_response([result(True, 0.9, ("face_cut_off",))])
    (props,) = r.image_properties
    assert [(q.check, q.score, q.message) for q in props.quality_assessments] == [
        ("FaceTooSmall", 1.0, ""), ("FaceCutOff", 0.0, "The face reaches the image border."), ("MultipleFaces", 1.0, "")]
    (face,) = props.faces
    assert (face.texture_liveness_score, face.motion_liveness_score, face.movement_direction) == (0.9, 0.0, 0.0)
    assert not face.HasField("left_eye") and not face.HasField("right_eye")  # RetinaFace gives no keypoints


def test_two_images_are_live_only_if_both_are_with_the_lower_score_and_the_image_named():
    r = bws_grpc.liveness_response([result(True, 0.91), result(False, 0.2)])
    assert (r.status, r.live, r.liveness_score) == (pb2.SUCCEEDED, False, 0.2)
    assert [(e.error_code, e.message) for e in r.errors] == [
        ("RejectedByPassiveLiveDetection", "image 2: liveness score 0.2000 is below the threshold 0.5.")]
    r = bws_grpc.liveness_response([result(False, 0.12345)])
    assert [e.message for e in r.errors] == ["liveness score 0.1235 is below the threshold 0.5."]


def cut(level: int) -> float:
    return IMPOSTOR_MEAN + dict(LEVEL_Z)[level] * IMPOSTOR_SD


@pytest.mark.parametrize(("cosine", "threshold", "level", "codes"), [
    (0.99, 0.42, LEVEL.LEVEL_5, []),
    (0.42, 0.42, LEVEL.LEVEL_5, []),  # every extrapolated cut is below the default threshold
    (0.4199, 0.42, LEVEL.NOT_RECOGNIZED, ["NotRecognized"]),
    (-0.3, 0.42, LEVEL.NOT_RECOGNIZED, ["NotRecognized"]),
    (cut(5) + 1e-6, 0.0, LEVEL.LEVEL_5, []),
    (cut(4) + 1e-6, 0.0, LEVEL.LEVEL_4, []),
    (cut(3) + 1e-6, 0.0, LEVEL.LEVEL_3, []),
    (cut(2) + 1e-6, 0.0, LEVEL.LEVEL_2, []),
    (cut(1) + 1e-6, 0.0, LEVEL.LEVEL_1, []),
    (cut(1) - 1e-3, 0.2, LEVEL.NOT_RECOGNIZED, []),  # a match at the threshold, but below LEVEL_1's cut
    (0.19, 0.2, LEVEL.NOT_RECOGNIZED, ["NotRecognized"]),
])
def test_photo_verify_levels_follow_the_far_cuts_never_below_the_threshold(cosine, threshold, level, codes):
    r = bws_grpc.photo_verify_response(verification([cosine], threshold))
    assert (r.status, r.verification_level, [e.error_code for e in r.errors]) == (pb2.SUCCEEDED, level, codes)
    assert r.verification_score == pytest.approx(max(0.0, cosine))
    assert (r.live, r.liveness_score) == (False, 0.0)  # liveness was disabled


def test_photo_verify_the_lower_cosine_decides_and_a_spoof_is_not_recognized_whatever_the_similarity():
    r = bws_grpc.photo_verify_response(verification([0.95, 0.3]))
    assert (r.verification_level, r.verification_score) == (LEVEL.NOT_RECOGNIZED, pytest.approx(0.3))
    assert r.errors[0].message == "similarity 0.3000 is below the threshold 0.42."
    r = bws_grpc.photo_verify_response(verification([0.95], liveness=[result(False, 0.1)]))
    assert (r.verification_level, r.live, r.liveness_score) == (LEVEL.NOT_RECOGNIZED, False, pytest.approx(0.1))
    assert [e.error_code for e in r.errors] == ["RejectedByPassiveLiveDetection"]
    assert r.verification_score == pytest.approx(0.95)
    r = bws_grpc.photo_verify_response(verification([0.95, 0.9], liveness=[result(True, 0.9), result(True, 0.7)]))
    assert (r.verification_level, r.live, r.liveness_score) == (LEVEL.LEVEL_5, True, pytest.approx(0.7))


def test_photo_verify_faces_carry_eyes_by_the_persons_side():
    r = bws_grpc.photo_verify_response(verification([0.9]))
    for face in (r.image_properties[0].faces[0], r.photo_properties.faces[0]):
        assert (face.right_eye.x, face.right_eye.y, face.left_eye.x, face.left_eye.y) == (100.0, 50.0, 160.0, 52.0)
    assert list(r.image_properties[0].quality_assessments) == []  # no liveness, no quality checks


@pytest.mark.parametrize(("err", "response_type", "code", "message"), [
    (LivenessError(E.NO_FACE, "No face."), pb2.LivenessDetectionResponse, "FaceNotFound", "No face."),
    (LivenessError(E.NO_FACE, "No face.", {"image": 1}), pb2.LivenessDetectionResponse, "FaceNotFound",
     "image 2: No face."),
    (LivenessError(E.MULTIPLE_FACES, "2 faces.", {"field": "photo"}), pb2.PhotoVerifyResponse,
     "MultipleFacesFound", "photo: 2 faces."),
])
def test_faulted_answers_name_where_and_have_the_rpcs_type(err, response_type, code, message):
    r = bws_grpc.faulted_response(err, response_type)
    assert isinstance(r, response_type) and (r.status, r.live) == (pb2.FAULTED, False)
    assert [(e.error_code, e.message) for e in r.errors] == [(code, message)]


def test_the_verifier_is_the_key_stores_and_none_without_authentication(make_core):
    core = make_core()
    assert bws_grpc.verifier_for(core).store is core.keys
    assert bws_grpc.verifier_for(make_core(auth_enabled=False)) is None


# -- gRPC: LivenessDetection --------------------------------------------------------------------------------


def test_grpc_the_client_key_lookup_runs_off_the_event_loop(rpc, client, monkeypatch):
    """A BWS JWT names a client whose key is read from the key store: a blocking read, so it
    runs in a thread, not on the event loop every call of the worker shares."""
    verifier, threads = rpc.servicer.tokens, []
    verify = verifier.verify

    def spy(token, *args, **kwargs):
        threads.append(threading.get_ident())
        return verify(token, *args, **kwargs)

    monkeypatch.setattr(verifier, "verify", spy)
    r, _ = rpc.call("LivenessDetection", images(LIVE), client.metadata())
    assert r.live and len(threads) == 1 and threads[0] != threading.get_ident()  # asyncio.run's loop: this thread


def test_grpc_live_image_fields_metadata_and_one_unit(rpc, client, clock):
    r, ctx = rpc.call("LivenessDetection", images(LIVE), client.metadata(**{"reference-number": "order-42"}))
    assert isinstance(r, pb2.LivenessDetectionResponse)
    assert (r.status, r.live, list(r.errors)) == (pb2.SUCCEEDED, True, [])
    assert r.liveness_score == pytest.approx(0.9, abs=1e-6)
    (props,) = r.image_properties
    (face,) = props.faces
    assert face.texture_liveness_score == pytest.approx(r.liveness_score)
    assert (face.motion_liveness_score, face.movement_direction, props.rotated, props.quality_score) == (0, 0, 0, 0)
    assert [(q.check, q.score) for q in props.quality_assessments] == [(c, 1.0) for c in CHECKS]
    initial = dict(ctx.initial)
    assert str(uuid.UUID(initial["jobid"])) == initial["jobid"] and ctx.initial[0][0] == "jobid"
    assert initial["bws-version"] == BWS_VERSION and initial["reference-number"] == "order-42"
    assert initial["date"] == formatdate(clock(), usegmt=True) == "Mon, 12 Jan 1970 13:46:40 GMT"
    assert parsedate_to_datetime(initial["date"]).timestamp() == clock()
    assert float(ctx.trailing["response-time-ms"]) >= 0 and "error-code" not in ctx.trailing
    assert client.used == 1 and rpc.observed == [("bws_image", "live")]


def test_grpc_the_date_follows_the_servicers_clock_and_the_reference_is_optional(rpc, client, clock):
    clock.advance(86400 + 1.5)
    r, ctx = rpc.call("LivenessDetection", images(LIVE), client.metadata())
    assert r.live and [k for k, _ in ctx.initial] == ["jobid", "bws-version", "date"]
    assert dict(ctx.initial)["date"] == "Tue, 13 Jan 1970 13:46:41 GMT"


def test_grpc_a_spoof_is_succeeded_not_live_and_charged(rpc, client):
    r, ctx = rpc.call("LivenessDetection", images(SPOOF), client.metadata())
    assert (r.status, r.live) == (pb2.SUCCEEDED, False) and r.liveness_score == pytest.approx(0.1, abs=1e-6)
    assert [(e.error_code, e.message) for e in r.errors] == [
        ("RejectedByPassiveLiveDetection", "liveness score 0.1000 is below the threshold 0.5.")]
    assert "error-code" not in ctx.trailing
    assert client.used == 1 and rpc.observed == [("bws_image", "spoof")]


def test_grpc_two_images_are_one_unit_live_only_if_both(rpc, client):
    r, _ = rpc.call("LivenessDetection", images(LIVE, SPOOF), client.metadata())
    assert (r.status, r.live, len(r.image_properties)) == (pb2.SUCCEEDED, False, 2)
    assert r.liveness_score == pytest.approx(0.1, abs=1e-6)
    assert [(e.error_code, e.message[:8]) for e in r.errors] == [("RejectedByPassiveLiveDetection", "image 2:")]
    assert [p.faces[0].texture_liveness_score for p in r.image_properties] == pytest.approx([0.9, 0.1], abs=1e-6)
    r, _ = rpc.call("LivenessDetection", images(LIVE, LIVE), client.metadata())
    assert r.live and list(r.errors) == []
    assert client.used == 2


def test_grpc_tags_are_accepted_and_ignored(rpc, client):
    request = pb2.LivenessDetectionRequest(live_images=[pb2.ImageData(image=LIVE, tags=["up", "left"])])
    r, _ = rpc.call("LivenessDetection", request, client.metadata())
    assert r.live and r.liveness_score == pytest.approx(0.9, abs=1e-6) and client.used == 1


@pytest.mark.parametrize(("data", "message"), [
    ((NO_FACE,), "No face was found in the image."),
    ((LIVE, NO_FACE), "image 2: No face was found in the image."),
])
def test_grpc_no_face_is_a_faulted_answer_and_not_charged(rpc, client, data, message):
    r, ctx = rpc.call("LivenessDetection", images(*data), client.metadata())
    assert isinstance(r, pb2.LivenessDetectionResponse)
    assert (r.status, r.live, r.liveness_score, list(r.image_properties)) == (pb2.FAULTED, False, 0.0, [])
    assert [(e.error_code, e.message) for e in r.errors] == [("FaceNotFound", message)]
    assert "response-time-ms" in ctx.trailing and "error-code" not in ctx.trailing
    assert client.used == 0 and rpc.observed == [("bws_image", "no_face")]


def test_grpc_several_faces_with_the_reject_policy_are_multiple_faces_found(make_core, clock):
    two = retinaface_responder([Box(0.05, 0.1, 0.3, 0.4), Box(0.6, 0.1, 0.3, 0.4)])
    core = make_core(backend=backend(retinaface=two), multi_face_policy="reject")
    rpc, client = Grpc(core, clock), new_client(core, clock)
    r, _ = rpc.call("LivenessDetection", images(LIVE), client.metadata())
    assert (r.status, [e.error_code for e in r.errors]) == (pb2.FAULTED, ["MultipleFacesFound"])
    assert client.used == 0


@pytest.mark.parametrize(("data", "code", "details"), [
    ((), "missing_image", "missing_image: live_images is empty: send 1 or 2 images."),
    ((LIVE, LIVE, LIVE), "invalid_request", "invalid_request: 3 live_images: send 1 or 2 images."),
    ((b"not an image",), "unsupported_format", None),
    ((LIVE[:300],), "corrupt_image", None),
    ((b"",), "empty_image", None),
    ((jpeg(20, 20, level=200),), "image_too_small", None),
    ((LIVE, b"not an image"), "unsupported_format", None),
])
def test_grpc_bad_input_is_invalid_argument_and_not_charged(rpc, client, data, code, details):
    a, ctx = rpc.call("LivenessDetection", images(*data), client.metadata())
    assert isinstance(a, Aborted) and a.code is grpc.StatusCode.INVALID_ARGUMENT
    assert a.details == details if details else a.details.startswith(f"{code}: ")
    assert ctx.trailing["error-code"] == code and "response-time-ms" in ctx.trailing
    assert {"jobid", "bws-version", "date"} <= set(dict(ctx.initial))  # sent before the work
    assert client.used == 0 and rpc.observed == [("bws_image", code)]


def test_grpc_images_over_the_byte_or_pixel_limit_are_invalid_argument(make_core, clock):
    core = make_core(backend=backend(), max_image_bytes=4096, max_image_pixels=20_000)
    rpc, client = Grpc(core, clock), new_client(core, clock)
    for data, code in ((jpeg(320, 240), "image_too_large"), (jpeg(200, 150, level=128), "image_too_many_pixels")):
        a, ctx = rpc.call("LivenessDetection", images(data), client.metadata())
        assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert client.used == 0


def bad_tokens(client: Client) -> dict[str, tuple[tuple[tuple[str, str], ...], str]]:
    """name -> (metadata, error code): every way a BWS JWT is refused."""
    other = new_client(client.core, client.clock, "other")
    forged = jwt.encode({"sub": client.client_id, "iss": client.client_id, "aud": AUDIENCE,
                         "exp": int(client.clock()) + 600}, b"k" * 64, algorithm="HS256")
    unsigned = jwt.encode({"sub": client.client_id, "iss": client.client_id, "aud": AUDIENCE,
                           "exp": int(client.clock()) + 600}, None, algorithm="none")
    tokens = {
        "forged": forged,  # the right client id, signed with another key
        "other client's key": client.claims_jwt(key=base64.b64decode(other.key_b64)),
        "wrong audience": client.jwt(audience="not-BWS"),
        "no audience": client.claims_jwt(aud=None),
        "issuer is not the subject": client.claims_jwt(iss="someone-else"),
        "unknown client": sign_client_jwt("not-a-client", client.key_b64, now=client.clock()),
        "alg none": unsigned,
        "not yet valid": client.jwt(now=client.clock() + 600),
        "lives too long": client.claims_jwt(exp=int(client.clock()) + MAX_LIFETIME_S + 60),
        "garbage": "not-a-jwt",
        "an API key": client.core.keys.create("raw", 5).raw_key,
    }
    out = {name: ((("authorization", f"Bearer {t}"),), "invalid_api_key") for name, t in tokens.items()}
    out["no metadata"] = ((), "missing_api_key")
    out["Basic scheme"] = ((("authorization", "Basic abc"),), "missing_api_key")
    out["empty bearer"] = ((("authorization", "Bearer "),), "missing_api_key")
    out["x-api-key"] = ((("x-api-key", "lk_whatever"),), "missing_api_key")  # only the Bearer JWT counts
    return out


def test_grpc_refused_jwts_are_unauthenticated_with_metadata_and_never_charged(rpc, client):
    for name, (metadata, code) in bad_tokens(client).items():
        for method, request in (("LivenessDetection", images(LIVE)), ("PhotoVerify", photo_request((LIVE,), LIVE)),
                                ("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=b"x"))):
            a, ctx = rpc.call(method, request, metadata)
            assert isinstance(a, Aborted) and a.code is grpc.StatusCode.UNAUTHENTICATED, (name, method)
            assert a.details.startswith(f"{code}: ") and ctx.trailing["error-code"] == code, (name, method)
            token = dict(metadata).get("authorization", "").partition(" ")[2]
            assert len(token) < 8 or token not in a.details  # never echoed
            assert {"jobid", "bws-version", "date"} <= set(dict(ctx.initial)) and "response-time-ms" in ctx.trailing
    assert rpc.core.backend.calls == []  # no work for a caller we refuse
    assert client.used == used(rpc.core, "other") == 0


def test_grpc_an_expired_jwt_is_judged_on_the_injected_clock_with_leeway(rpc, client, clock):
    token = client.jwt(ttl_s=60)
    clock.advance(60 + LEEWAY_S - 0.5)
    r, _ = rpc.call("LivenessDetection", images(LIVE), (("authorization", f"Bearer {token}"),))
    assert r.live  # within the leeway
    clock.advance(1.0)
    a, ctx = rpc.call("LivenessDetection", images(LIVE), (("authorization", f"Bearer {token}"),))
    assert (a.code, a.details) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key: The BWS JWT is expired.")
    assert client.used == 1


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_grpc_jwts_signed_as_bioids_samples_do_are_accepted(rpc, client, algorithm):
    r, _ = rpc.call("LivenessDetection", images(LIVE), (("authorization", f"bearer {client.jwt(algorithm=algorithm)}"),))
    assert r.live and client.used == 1


def test_grpc_a_revoked_client_or_a_revoked_api_key_stops_its_jwts_at_once(rpc, client, core, clock):
    token = client.jwt()
    assert rpc.call("LivenessDetection", images(LIVE), (("authorization", f"Bearer {token}"),))[0].live
    core.keys.revoke_bws_client(client.client_id)
    a, ctx = rpc.call("LivenessDetection", images(LIVE), (("authorization", f"Bearer {token}"),))
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    second = new_client(core, clock, "second")
    token = second.jwt()
    core.keys.revoke("second")
    a, ctx = rpc.call("LivenessDetection", images(LIVE), (("authorization", f"Bearer {token}"),))
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    assert client.used == 1 and second.used == 0


def test_grpc_a_spent_quota_is_resource_exhausted(core, clock, rpc):
    client = new_client(core, clock, "small", limit=1)
    assert rpc.call("LivenessDetection", images(LIVE), client.metadata())[0].live
    a, ctx = rpc.call("LivenessDetection", images(LIVE), client.metadata())
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota_exceeded")
    a, ctx = rpc.call("PhotoVerify", photo_request((LIVE,), LIVE), client.metadata())
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota_exceeded")
    assert client.used == 1


def test_grpc_not_ready_is_unavailable(rpc, client, core):
    core.backend.close()  # the fake backend is no longer ready
    a, ctx = rpc.call("LivenessDetection", images(LIVE), client.metadata())
    assert (a.code, a.details, ctx.trailing["error-code"]) == (
        grpc.StatusCode.UNAVAILABLE, "not_ready: The service is loading; retry shortly.", "not_ready")
    assert client.used == 0


def test_grpc_without_authentication_no_jwt_is_needed(make_core, clock):
    core = make_core(backend=backend(), auth_enabled=False)
    rpc = Grpc(core, clock)
    assert rpc.servicer.tokens is None
    r, ctx = rpc.call("LivenessDetection", images(LIVE))
    assert (r.status, r.live) == (pb2.SUCCEEDED, True) and dict(ctx.initial)["bws-version"] == BWS_VERSION


def test_grpc_our_failure_is_internal_and_refunded(make_core, clock):
    def broken(crop):
        raise RuntimeError("boom")

    core = make_core(backend=backend(minifasnet_v2=broken))
    rpc, client = Grpc(core, clock), new_client(core, clock)
    a, ctx = rpc.call("LivenessDetection", images(LIVE), client.metadata())
    assert a.code is grpc.StatusCode.INTERNAL and ctx.trailing["error-code"] == "internal_error"
    assert "boom" not in a.details
    usage = core.keys.usage(client.name)
    assert (usage.used, usage.refunded) == (0, 1)


# -- gRPC: VideoLivenessDetection ---------------------------------------------------------------------------


def test_grpc_a_live_video_is_succeeded_with_its_judged_frames_and_one_unit(rpc, client, clips):
    r, ctx = rpc.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=clips["live"]),
                      client.metadata(**{"reference-number": "v-1"}))
    assert isinstance(r, pb2.LivenessDetectionResponse)
    assert (r.status, r.live, list(r.errors)) == (pb2.SUCCEEDED, True, [])
    assert r.liveness_score == pytest.approx(0.9, abs=1e-6)
    assert [p.frame_number for p in r.image_properties] == list(range(7))  # BWS's 7 live frames decide
    for p in r.image_properties:
        assert p.faces[0].texture_liveness_score == pytest.approx(0.9, abs=1e-6)
        assert [q.check for q in p.quality_assessments] == CHECKS
    assert {"jobid", "bws-version", "date"} <= set(dict(ctx.initial)) and dict(ctx.initial)["reference-number"] == "v-1"
    assert client.used == 1 and rpc.observed == [("bws_video", "live")]


def test_grpc_a_spoof_video_is_succeeded_not_live_and_charged(rpc, client, clips):
    r, _ = rpc.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=clips["spoof"]), client.metadata())
    assert (r.status, r.live) == (pb2.SUCCEEDED, False) and r.liveness_score == pytest.approx(0.1, abs=1e-6)
    assert [e.error_code for e in r.errors] == ["RejectedByPassiveLiveDetection"]
    assert client.used == 1


def test_grpc_a_video_without_faces_is_failure_to_acquire_and_not_charged(rpc, client, clips):
    r, _ = rpc.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=clips["none"]), client.metadata())
    assert (r.status, r.live, r.liveness_score) == (pb2.FAULTED, False, 0.0)
    assert [e.error_code for e in r.errors] == ["FailureToAcquire"]
    assert all(not p.faces for p in r.image_properties)
    assert client.used == 0


@pytest.mark.parametrize(("video", "code"), [(b"", "missing_video"), (b"PK\x03\x04" * 8, "unsupported_video")])
def test_grpc_bad_videos_are_invalid_argument_and_not_charged(rpc, client, video, code):
    a, ctx = rpc.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=video), client.metadata())
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert client.used == 0


def test_grpc_a_video_over_the_byte_limit_is_invalid_argument(make_core, clock, clips):
    core = make_core(backend=backend(), video_max_bytes=1024)
    rpc, client = Grpc(core, clock), new_client(core, clock)
    a, ctx = rpc.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=clips["live"]), client.metadata())
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "video_too_large")
    assert client.used == 0


# -- gRPC: PhotoVerify ---------------------------------------------------------------------------------------


def test_grpc_photo_verify_a_live_match_is_level_5_with_eyes_and_one_unit(rpc, client):
    r, ctx = rpc.call("PhotoVerify", photo_request((LIVE,), LIVE), client.metadata(**{"reference-number": "pv"}))
    assert isinstance(r, pb2.PhotoVerifyResponse)
    assert (r.status, list(r.errors), r.verification_level, r.live) == (pb2.SUCCEEDED, [], LEVEL.LEVEL_5, True)
    assert r.verification_score == pytest.approx(1.0, abs=1e-5)
    assert r.liveness_score == pytest.approx(0.9, abs=1e-6)
    (props,) = r.image_properties
    (face,) = props.faces
    assert face.texture_liveness_score == pytest.approx(r.liveness_score)
    assert [(q.check, q.score) for q in props.quality_assessments] == [(c, 1.0) for c in CHECKS]
    # YuNet's keypoints: image-left eye first; BWS's left eye is the person's (on the image's right)
    for f in (face, r.photo_properties.faces[0]):
        assert (f.right_eye.x, f.left_eye.x) == pytest.approx((0.42 * 320, 0.58 * 320), abs=1.0)
        assert f.right_eye.y == pytest.approx(0.45 * 240, abs=1.0) == f.left_eye.y
    assert dict(ctx.initial)["reference-number"] == "pv" and "error-code" not in ctx.trailing
    assert client.used == 1 and rpc.observed == [("bws_photoverify", "live")]


def test_grpc_photo_verify_a_spoof_is_not_recognized_whatever_the_similarity(rpc, client):
    r, _ = rpc.call("PhotoVerify", photo_request((SPOOF,), SPOOF), client.metadata())
    assert (r.status, r.live, r.verification_level) == (pb2.SUCCEEDED, False, LEVEL.NOT_RECOGNIZED)
    assert r.verification_score == pytest.approx(1.0, abs=1e-5) and r.liveness_score == pytest.approx(0.1, abs=1e-6)
    assert [e.error_code for e in r.errors] == ["RejectedByPassiveLiveDetection"]
    assert client.used == 1 and rpc.observed == [("bws_photoverify", "spoof")]


def test_grpc_photo_verify_without_liveness_a_non_match_is_not_recognized(rpc, client):
    r, _ = rpc.call("PhotoVerify", photo_request((jpeg(level=60),), LIVE, disable=True), client.metadata())
    assert (r.status, r.live, r.liveness_score, r.verification_level) == (pb2.SUCCEEDED, False, 0.0,
                                                                          LEVEL.NOT_RECOGNIZED)
    assert r.verification_score == 0.0  # max(0, cosine -0.6)
    assert [(e.error_code, e.message) for e in r.errors] == [
        ("NotRecognized", "similarity 0.0000 is below the threshold 0.42.")]
    assert r.image_properties[0].faces[0].texture_liveness_score == 0.0
    assert r.image_properties[0].faces[0].HasField("left_eye")
    assert client.used == 1


def test_grpc_photo_verify_without_liveness_judges_no_liveness(rpc, client):
    r, _ = rpc.call("PhotoVerify", photo_request((LIVE,), LIVE, disable=True), client.metadata())
    assert (r.verification_level, r.live, r.liveness_score, list(r.errors)) == (LEVEL.LEVEL_5, False, 0.0, [])
    assert not any(m.startswith("minifasnet") for m in rpc.core.backend.models_called())
    assert client.used == 1


@pytest.mark.parametrize(("live_level", "threshold", "level", "codes"), [
    (250, 0.42, LEVEL.LEVEL_5, []),
    (240, 0.42, LEVEL.NOT_RECOGNIZED, ["NotRecognized"]),  # 0.34 is below the default threshold
    (250, 0.2, LEVEL.LEVEL_5, []),
    (240, 0.2, LEVEL.LEVEL_4, []),
    (230, 0.2, LEVEL.LEVEL_3, []),
    (220, 0.2, LEVEL.LEVEL_2, []),
    (210, 0.2, LEVEL.LEVEL_1, []),
    (190, 0.2, LEVEL.NOT_RECOGNIZED, []),  # above the threshold, below LEVEL_1's cut
    (170, 0.2, LEVEL.NOT_RECOGNIZED, ["NotRecognized"]),
])
def test_grpc_photo_verify_accuracy_levels_from_the_verifiers_cosine(make_core, clock, live_level, threshold, level,
                                                                    codes):
    core = make_core(backend=backend(), verification_enabled=True, verify_threshold=threshold)
    rpc, client = Grpc(core, clock), new_client(core, clock)
    r, _ = rpc.call("PhotoVerify", photo_request((jpeg(level=live_level),), LIVE), client.metadata())
    assert (r.status, r.live, r.verification_level) == (pb2.SUCCEEDED, True, level)
    assert [e.error_code for e in r.errors] == codes
    assert r.verification_score == pytest.approx(COSINE[live_level], abs=1e-4)
    assert client.used == 1


def test_grpc_photo_verify_two_live_images_the_lower_cosine_and_score_decide(rpc, client):
    r, _ = rpc.call("PhotoVerify", photo_request((LIVE, jpeg(level=250)), LIVE), client.metadata())
    assert (r.verification_level, r.live, len(r.image_properties)) == (LEVEL.LEVEL_5, True, 2)
    assert r.verification_score == pytest.approx(0.99, abs=1e-4)
    r, _ = rpc.call("PhotoVerify", photo_request((LIVE, jpeg(level=170)), LIVE), client.metadata())
    assert r.verification_level == LEVEL.NOT_RECOGNIZED and r.verification_score == pytest.approx(0.1, abs=1e-4)
    r, _ = rpc.call("PhotoVerify", photo_request((LIVE, SPOOF), LIVE), client.metadata())
    assert (r.live, r.verification_level) == (False, LEVEL.NOT_RECOGNIZED)
    assert r.liveness_score == pytest.approx(0.1, abs=1e-6)
    assert [(e.error_code, e.message[:8]) for e in r.errors] == [("RejectedByPassiveLiveDetection", "image 2:")]
    assert client.used == 3  # 1-2 live images and a photo are one unit


@pytest.mark.parametrize(("live", "photo", "message"), [
    ((LIVE,), NO_FACE, "photo: No face was found in the image."),
    ((NO_FACE,), LIVE, "live_images[0]: No face was found in the image."),
    ((LIVE, NO_FACE), LIVE, "live_images[1]: No face was found in the image."),
])
def test_grpc_photo_verify_no_face_is_a_faulted_photo_verify_answer(rpc, client, live, photo, message):
    r, ctx = rpc.call("PhotoVerify", photo_request(live, photo), client.metadata())
    assert isinstance(r, pb2.PhotoVerifyResponse)  # the RPC's own type: the wire can serialize it
    assert (r.status, r.live, r.verification_level) == (pb2.FAULTED, False, LEVEL.NOT_RECOGNIZED)
    assert [(e.error_code, e.message) for e in r.errors] == [("FaceNotFound", message)]
    assert "error-code" not in ctx.trailing
    assert client.used == 0


def test_grpc_faulted_answers_keep_their_rpcs_type_call_after_call(rpc, client):
    for method, request, response_type in (
        ("PhotoVerify", photo_request((LIVE,), NO_FACE), pb2.PhotoVerifyResponse),
        ("LivenessDetection", images(NO_FACE), pb2.LivenessDetectionResponse),
        ("PhotoVerify", photo_request((NO_FACE,), LIVE), pb2.PhotoVerifyResponse),
    ):
        r, _ = rpc.call(method, request, client.metadata())
        assert type(r) is response_type and r.status == pb2.FAULTED


@pytest.mark.parametrize(("live", "photo", "code", "details"), [
    ((), LIVE, "missing_image", "missing_image: live_images is empty: send 1 or 2 images."),
    ((LIVE, LIVE, LIVE), LIVE, "invalid_request", "invalid_request: 3 live_images: send 1 or 2 images."),
    ((LIVE,), b"", "missing_image", "missing_image: photo is empty."),
    ((LIVE,), b"not an image", "unsupported_format", None),
    ((b"not an image",), LIVE, "unsupported_format", None),
    ((LIVE,), LIVE[:300], "corrupt_image", None),
])
def test_grpc_photo_verify_bad_input_is_invalid_argument_and_not_charged(rpc, client, live, photo, code, details):
    a, ctx = rpc.call("PhotoVerify", photo_request(live, photo), client.metadata())
    assert isinstance(a, Aborted) and a.code is grpc.StatusCode.INVALID_ARGUMENT
    assert a.details == details if details else a.details.startswith(f"{code}: ")
    assert ctx.trailing["error-code"] == code and client.used == 0


def test_grpc_photo_verify_an_oversized_photo_is_invalid_argument(make_core, clock):
    core = make_core(backend=backend(), verification_enabled=True, max_image_bytes=4096)
    rpc, client = Grpc(core, clock), new_client(core, clock)
    a, ctx = rpc.call("PhotoVerify", photo_request((LIVE,), jpeg(320, 240)), client.metadata())
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, "image_too_large")
    assert client.used == 0


def test_grpc_photo_verify_without_verification_is_unavailable(make_core, clock):
    core = make_core(backend=backend())  # verification_enabled=False
    rpc, client = Grpc(core, clock), new_client(core, clock)
    a, ctx = rpc.call("PhotoVerify", photo_request((LIVE,), LIVE), client.metadata())
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.UNAVAILABLE, "verification_unavailable")
    assert client.used == 0


# -- gRPC over the wire ---------------------------------------------------------------------------------------


def test_grpc_the_bws_service_answers_on_our_grpc_port(core, client):
    observed: list[tuple[str, str]] = []

    async def scenario():
        async with served_channel(core, lambda e, o: observed.append((e, o))) as channel:
            stub = pb2_grpc.BioIDWebServiceStub(channel)
            call = stub.LivenessDetection(images(LIVE), metadata=client.metadata(**{"reference-number": "w-1"}),
                                          timeout=30)
            response = await call
            initial, trailing = dict(await call.initial_metadata()), dict(await call.trailing_metadata())
            faulted = await stub.PhotoVerify(photo_request((LIVE,), NO_FACE), metadata=client.metadata(), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.PhotoVerify(photo_request((LIVE,), LIVE), timeout=30)
            return response, initial, trailing, faulted, refused.value

    response, initial, trailing, faulted, err = asyncio.run(scenario())
    assert (response.status, response.live) == (pb2.SUCCEEDED, True)
    assert uuid.UUID(initial["jobid"]) and initial["reference-number"] == "w-1"
    assert initial["bws-version"] == BWS_VERSION and parsedate_to_datetime(initial["date"]).tzinfo is not None
    assert float(trailing["response-time-ms"]) >= 0
    assert (faulted.status, faulted.errors[0].error_code) == (pb2.FAULTED, "FaceNotFound")
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED and err.details().startswith("missing_api_key: ")
    assert dict(err.trailing_metadata())["error-code"] == "missing_api_key"
    assert "bws-version" in dict(err.initial_metadata())
    assert client.used == 1
    assert observed == [("bws_image", "live"), ("bws_photoverify", "no_face"), ("bws_photoverify", "missing_api_key")]


# -- REST: /api/v1/livenessdetection ------------------------------------------------------------------------


def test_rest_routes_are_bws_paths_post_only():
    routes = bws_rest.bws_routes(lambda: None)
    assert [(r.path, r.methods) for r in routes] == [
        ("/api/v1/livenessdetection", {"POST"}), ("/api/v1/videolivenessdetection", {"POST"}),
        ("/api/v1/photoverify", {"POST"})]
    assert not {"/livez", "/readyz"} & {r.path for r in routes}  # BentoML's own probes, not shadowed


def test_rest_live_image_is_bws_json_with_headers_and_one_unit(rest, client):
    r = rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers(**{"Reference-Number": "ref-7"}))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"status", "errors", "imageProperties", "live", "livenessScore"}
    assert (doc["status"], doc["live"], doc["errors"]) == ("SUCCEEDED", True, [])
    assert doc["livenessScore"] == pytest.approx(0.9, abs=1e-6)
    (props,) = doc["imageProperties"]
    assert props == {"rotated": 0, "qualityScore": 0.0, "frameNumber": 0, "faces": [
        {"textureLivenessScore": doc["livenessScore"], "motionLivenessScore": 0.0, "movementDirection": 0.0}],
        "qualityAssessments": [{"check": c, "score": 1.0, "message": ""} for c in CHECKS]}
    assert uuid.UUID(r.headers["jobid"]) and r.headers["bws-version"] == BWS_VERSION
    assert r.headers["reference-number"] == "ref-7" and float(r.headers["response-time-ms"]) >= 0
    assert client.used == 1


def test_rest_a_spoof_and_two_images(rest, client):
    doc = rest.post("/api/v1/livenessdetection", json=live_json(SPOOF), headers=client.headers()).json()
    assert (doc["status"], doc["live"]) == ("SUCCEEDED", False)
    assert doc["errors"] == [{"errorCode": "RejectedByPassiveLiveDetection",
                              "message": "liveness score 0.1000 is below the threshold 0.5."}]
    doc = rest.post("/api/v1/livenessdetection", json=live_json(LIVE, SPOOF), headers=client.headers()).json()
    assert (doc["live"], len(doc["imageProperties"])) == (False, 2)
    assert doc["livenessScore"] == pytest.approx(0.1, abs=1e-6) and doc["errors"][0]["message"].startswith("image 2:")
    assert client.used == 2  # two images are one unit


def test_rest_tags_and_data_uris_are_accepted(rest, client):
    body = {"liveImages": [{"image": "data:image/jpeg;base64," + b64(LIVE), "tags": ["up"]}]}
    doc = rest.post("/api/v1/livenessdetection", json=body, headers=client.headers()).json()
    assert doc["live"] is True and client.used == 1


def test_rest_no_face_is_a_200_faulted_answer_and_not_charged(rest, client):
    r = rest.post("/api/v1/livenessdetection", json=live_json(LIVE, NO_FACE), headers=client.headers())
    assert r.status_code == 200 and r.headers["bws-version"] == BWS_VERSION
    assert r.json() == {"status": "FAULTED", "live": False, "livenessScore": 0.0, "imageProperties": [],
                        "errors": [{"errorCode": "FaceNotFound", "message": "image 2: No face was found in the image."}]}
    assert client.used == 0


def rest_bad_tokens(client: Client) -> list[tuple[dict[str, str], str]]:
    out = [({"Authorization": metadata[0][1]} if metadata else {}, code)
           for metadata, code in bad_tokens(client).values() if not metadata or metadata[0][0] == "authorization"]
    return [*out, ({"X-API-Key": client.core.keys.create("raw2", 5).raw_key}, "missing_api_key")]


def test_rest_refused_jwts_are_401_status_json_and_never_charged(rest, client):
    for headers, code in rest_bad_tokens(client):
        for path, body in (("/api/v1/livenessdetection", live_json(LIVE)), ("/api/v1/videolivenessdetection", {"video": "AAAA"}),
                           ("/api/v1/photoverify", {**live_json(LIVE), "photo": b64(LIVE)})):
            r = rest.post(path, json=body, headers={**headers, "Reference-Number": "r"})
            doc = assert_status_json(r, 401, grpc.StatusCode.UNAUTHENTICATED, code)
            token = headers.get("Authorization", "").partition(" ")[2]
            assert len(token) < 8 or token not in r.text  # never echoed
            assert doc["details"][0]["metadata"] == {} and r.headers["reference-number"] == "r"
    assert client.core.backend.calls == []
    assert client.used == used(client.core, "other") == 0


def test_rest_an_expired_jwt_and_a_revoked_client_are_401(rest, client, core, clock):
    token = client.jwt(ttl_s=60)
    clock.advance(60 + LEEWAY_S)
    r = rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers={"Authorization": f"Bearer {token}"})
    doc = assert_status_json(r, 401, grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    assert doc["message"] == "The BWS JWT is expired."
    core.keys.revoke_bws_client(client.client_id)
    r = rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers())
    assert_status_json(r, 401, grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    assert client.used == 0


def test_rest_a_spent_quota_is_429_resource_exhausted(rest, core, clock):
    client = new_client(core, clock, "small", limit=1)
    assert rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers()).status_code == 200
    r = rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers())
    doc = assert_status_json(r, 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "quota_exceeded")
    assert doc["details"][0]["metadata"]["limit"] == "1"
    assert client.used == 1


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({}, 400, "missing_image"),
    ({"liveImages": []}, 400, "missing_image"),
    ({"liveImages": "x"}, 400, "invalid_request"),
    ({"liveImages": ["x"]}, 400, "invalid_request"),
    ({"liveImages": [{"image": b64(LIVE), "tags": "up"}]}, 400, "invalid_request"),
    ({"liveImages": [{"image": b64(LIVE), "tags": [1]}]}, 400, "invalid_request"),
    ({"liveImages": [{"image": 123}]}, 400, "invalid_request"),
    ({"liveImages": [{"image": "@@not base64@@"}]}, 400, "invalid_base64"),
    ({"liveImages": [{"image": ""}]}, 400, "empty_image"),
    ({"liveImages": [{}]}, 400, "empty_image"),
    ({"liveImages": [{"image": b64(b"not an image at all")}]}, 415, "unsupported_format"),
    ({"liveImages": [{"image": b64(LIVE[:300])}]}, 400, "corrupt_image"),
    ({"liveImages": [{"image": b64(LIVE)}] * 3}, 400, "invalid_request"),
    ({"liveImages": [{"image": b64(LIVE)}] * 5}, 400, "invalid_request"),
    (b"{", 400, "invalid_request"),
    (b"[1]", 400, "invalid_request"),
    (b"[" * 40 + b"]" * 40, 400, "invalid_request"),  # nested deeper than edge.json_body allows
])
def test_rest_bad_input_is_status_json_and_not_charged(rest, client, body, status, reason):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = rest.post("/api/v1/livenessdetection", headers=client.headers(**{"Content-Type": "application/json"}), **kw)
    assert_status_json(r, status, grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert client.used == 0


def test_rest_base64_errors_name_the_camel_case_field(rest, client):
    r = rest.post("/api/v1/livenessdetection", json={"liveImages": [{"image": b64(LIVE)}, {"image": "@@"}]},
                  headers=client.headers())
    doc = assert_status_json(r, 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_base64")
    assert doc["details"][0]["metadata"]["field"] == "liveImages[1].image"


def test_rest_too_many_images_are_counted_as_sent(rest, client):
    r = rest.post("/api/v1/livenessdetection", json=live_json(*[LIVE] * 5), headers=client.headers())
    assert r.json()["message"] == "5 live_images: send 1 or 2 images."


@pytest.fixture
def small(make_core, clock):
    """A core with small limits (8 KiB images, 100,000 pixels, 200 KB videos) and its client."""
    core = make_core(backend=backend(), verification_enabled=True, max_image_bytes=8192, max_image_pixels=100_000,
                     video_max_bytes=200_000, video_min_selected_frames=5)
    return rest_client(lambda: core), new_client(core, clock)


def test_rest_images_over_the_limits_are_413(small):
    rest, client = small
    r = rest.post("/api/v1/livenessdetection", json=live_json(jpeg(200, 150)), headers=client.headers())
    doc = assert_status_json(r, 413, grpc.StatusCode.INVALID_ARGUMENT, "image_too_large")
    assert doc["details"][0]["metadata"]["field"] == "liveImages[0].image"
    r = rest.post("/api/v1/livenessdetection", json=live_json(jpeg(400, 300, level=128)), headers=client.headers())
    assert_status_json(r, 413, grpc.StatusCode.INVALID_ARGUMENT, "image_too_many_pixels")
    r = rest.post("/api/v1/photoverify", json={**live_json(LIVE), "photo": b64(jpeg(200, 150))}, headers=client.headers())
    doc = assert_status_json(r, 413, grpc.StatusCode.INVALID_ARGUMENT, "image_too_large")
    assert doc["details"][0]["metadata"]["field"] == "photo"
    assert client.used == 0


def test_rest_bodies_over_the_route_limit_are_413_before_parsing(small):
    rest, client = small
    limit = 2 * (8192 * 4 // 3 + 4) + 64 * 1024
    for content in (b"x" * (limit + 1), iter([b"x" * limit, b"x"])):  # by Content-Length; chunked, counted
        r = rest.post("/api/v1/livenessdetection", content=content, headers=client.headers())
        doc = assert_status_json(r, 413, grpc.StatusCode.INVALID_ARGUMENT, "image_too_large")
        assert doc["details"][0]["metadata"]["limit"] == str(limit)
    r = rest.post("/api/v1/photoverify", content=b"x" * (limit + 1), headers=client.headers())
    assert r.status_code == 400  # PhotoVerify's limit holds 3 images: this one is read, and is not JSON
    r = rest.post("/api/v1/videolivenessdetection", content=b"x" * (200_000 * 4 // 3 + 64 * 1024 + 1),
                  headers=client.headers())
    assert_status_json(r, 413, grpc.StatusCode.INVALID_ARGUMENT, "video_too_large")
    assert client.used == 0


def test_rest_auth_is_checked_before_the_body(small):
    rest, client = small
    r = rest.post("/api/v1/livenessdetection", content=b"x" * 1_000_000)
    assert_status_json(r, 401, grpc.StatusCode.UNAUTHENTICATED, "missing_api_key")


# -- REST: video and PhotoVerify --------------------------------------------------------------------------------


def test_rest_video_live_spoof_and_failure_to_acquire(rest, client, clips):
    r = rest.post("/api/v1/videolivenessdetection", json={"video": b64(clips["live"])}, headers=client.headers())
    assert r.status_code == 200 and r.headers["bws-version"] == BWS_VERSION
    doc = r.json()
    assert (doc["status"], doc["live"], doc["errors"]) == ("SUCCEEDED", True, [])
    assert [p["frameNumber"] for p in doc["imageProperties"]] == list(range(7))
    doc = rest.post("/api/v1/videolivenessdetection", json={"video": b64(clips["spoof"])}, headers=client.headers()).json()
    assert (doc["status"], doc["live"], doc["errors"][0]["errorCode"]) == ("SUCCEEDED", False,
                                                                          "RejectedByPassiveLiveDetection")
    assert client.used == 2
    doc = rest.post("/api/v1/videolivenessdetection", json={"video": b64(clips["none"])}, headers=client.headers()).json()
    assert (doc["status"], doc["live"], [e["errorCode"] for e in doc["errors"]]) == ("FAULTED", False, ["FailureToAcquire"])
    assert client.used == 2  # no verdict, no unit


def test_rest_a_data_uri_video_is_accepted(rest, client, clips):
    r = rest.post("/api/v1/videolivenessdetection", json={"video": "data:video/mp4;base64," + b64(clips["live"])},
                  headers=client.headers())
    assert r.status_code == 200 and r.json()["live"] is True and client.used == 1


def test_rest_a_line_wrapped_base64_video_is_accepted_as_images_are(rest, client, clips):
    text = b64(clips["live"])
    wrapped = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))  # MIME line length
    r = rest.post("/api/v1/videolivenessdetection", json={"video": wrapped}, headers=client.headers())
    assert r.status_code == 200 and r.json()["live"] is True and client.used == 1


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({}, 400, "missing_video"),
    ({"video": ""}, 400, "missing_video"),
    ({"video": 5}, 400, "invalid_request"),
    ({"video": "@@not base64@@"}, 400, "invalid_base64"),
    ({"video": b64(b"PK\x03\x04" * 8)}, 415, "unsupported_video"),
    ({"video": "A" * 300_000}, 413, "video_too_large"),
])
def test_rest_bad_videos_are_status_json_and_not_charged(small, body, status, reason):
    rest, client = small
    r = rest.post("/api/v1/videolivenessdetection", json=body, headers=client.headers())
    assert_status_json(r, status, grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert client.used == 0


def test_rest_a_data_uri_video_without_payload_is_invalid_base64(rest, client):
    r = rest.post("/api/v1/videolivenessdetection", json={"video": "data:video/mp4;base64"}, headers=client.headers())
    assert_status_json(r, 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_base64")
    assert client.used == 0


def test_rest_photo_verify_is_bws_json_with_level_names_and_one_unit(rest, client):
    r = rest.post("/api/v1/photoverify", json={**live_json(LIVE), "photo": b64(LIVE)}, headers=client.headers())
    assert r.status_code == 200 and r.headers["bws-version"] == BWS_VERSION
    doc = r.json()
    assert set(doc) == {"status", "errors", "imageProperties", "photoProperties", "verificationLevel",
                        "verificationScore", "live", "livenessScore"}
    assert (doc["status"], doc["errors"], doc["verificationLevel"], doc["live"]) == ("SUCCEEDED", [], "LEVEL_5", True)
    assert doc["verificationScore"] == pytest.approx(1.0, abs=1e-5)
    face = doc["photoProperties"]["faces"][0]
    assert face["leftEye"]["x"] > face["rightEye"]["x"]
    doc = rest.post("/api/v1/photoverify", json={**live_json(jpeg(level=60)), "photo": b64(LIVE),
                                                 "disableLivenessDetection": True}, headers=client.headers()).json()
    assert (doc["verificationLevel"], doc["verificationScore"], doc["live"], doc["livenessScore"]) == (
        "NOT_RECOGNIZED", 0.0, False, 0.0)
    assert [e["errorCode"] for e in doc["errors"]] == ["NotRecognized"]
    assert client.used == 2


def test_rest_photo_verify_no_face_is_a_faulted_answer(rest, client):
    r = rest.post("/api/v1/photoverify", json={**live_json(LIVE), "photo": b64(NO_FACE)}, headers=client.headers())
    assert r.status_code == 200
    doc = r.json()
    assert (doc["status"], doc["verificationLevel"], doc["live"]) == ("FAULTED", "NOT_RECOGNIZED", False)
    assert doc["errors"] == [{"errorCode": "FaceNotFound", "message": "photo: No face was found in the image."}]
    assert client.used == 0


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({"photo": b64(LIVE)}, 400, "missing_image"),
    (live_json(LIVE), 400, "missing_image"),
    ({**live_json(LIVE), "photo": 7}, 400, "invalid_request"),
    ({**live_json(LIVE), "photo": "@@"}, 400, "invalid_base64"),
    ({**live_json(LIVE), "photo": b64(b"not an image")}, 415, "unsupported_format"),
    ({**live_json(LIVE, LIVE, LIVE), "photo": b64(LIVE)}, 400, "invalid_request"),
    ({**live_json(LIVE), "photo": b64(LIVE), "disableLivenessDetection": "yes"}, 400, "invalid_request"),
])
def test_rest_photo_verify_bad_input_is_status_json_and_not_charged(rest, client, body, status, reason):
    r = rest.post("/api/v1/photoverify", json=body, headers=client.headers())
    assert_status_json(r, status, grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert client.used == 0


def test_rest_photo_verify_without_verification_is_503(make_core, clock):
    core = make_core(backend=backend())
    rest, client = rest_client(lambda: core), new_client(core, clock)
    r = rest.post("/api/v1/photoverify", json={**live_json(LIVE), "photo": b64(LIVE)}, headers=client.headers())
    assert_status_json(r, 503, grpc.StatusCode.UNAVAILABLE, "verification_unavailable")
    assert r.headers["retry-after"] == "1" and client.used == 0


# -- REST: the frame ---------------------------------------------------------------------------------------------


def test_rest_loading_is_503_not_ready_with_retry_after(make_core, clock):
    for path in ("/api/v1/livenessdetection", "/api/v1/videolivenessdetection", "/api/v1/photoverify"):
        r = rest_client(lambda: None).post(path, json={}, headers={"Reference-Number": "x"})
        assert_status_json(r, 503, grpc.StatusCode.UNAVAILABLE, "not_ready")
        assert (r.headers["retry-after"], r.headers["reference-number"]) == ("1", "x")
    core = make_core(backend=backend())
    client = new_client(core, clock)
    core.backend.close()  # loaded, then no longer ready
    r = rest_client(lambda: core).post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers())
    assert_status_json(r, 503, grpc.StatusCode.UNAVAILABLE, "not_ready")
    assert client.used == 0


@pytest.mark.parametrize(("ref", "echoed"), [("order-42", True), ("r" * 256, True), ("r" * 257, False),
                                             ("a\tb", False)])
def test_rest_reference_numbers_are_echoed_when_short_and_printable(rest, client, ref, echoed):
    r = rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers(**{"Reference-Number": ref}))
    assert r.status_code == 200 and r.headers.get("reference-number") == (ref if echoed else None)


def test_rest_every_call_gets_its_own_jobid(rest, client):
    ids = {rest.post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers()).headers["jobid"]
           for _ in range(3)}
    assert len(ids) == 3 and all(uuid.UUID(i) for i in ids)


def test_rest_without_authentication_no_jwt_is_needed(make_core):
    core = make_core(backend=backend(), auth_enabled=False)
    r = rest_client(lambda: core).post("/api/v1/livenessdetection", json=live_json(LIVE))
    assert r.status_code == 200 and r.json()["live"] is True


def test_rest_our_failure_is_500_internal_and_refunded(make_core, clock, caplog):
    def broken(crop):
        raise RuntimeError("boom")

    core = make_core(backend=backend(minifasnet_v2=broken))
    client = new_client(core, clock)
    r = rest_client(lambda: core).post("/api/v1/livenessdetection", json=live_json(LIVE), headers=client.headers())
    doc = assert_status_json(r, 500, grpc.StatusCode.INTERNAL, "internal_error")
    assert "boom" not in json.dumps(doc)
    usage = core.keys.usage(client.name)
    assert (usage.used, usage.refunded) == (0, 1)
