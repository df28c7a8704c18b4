"""The BioID-style gRPC adapter (edge/grpc_server.py, docs/GRPC.md): the servicer's methods
called with a fake ``ServicerContext`` on the real core (fake backend: no model is loaded), and
one round trip through an in-process ``grpc.aio`` server on a local port.

What a client relies on: liveness outcomes are answers (``SUCCEEDED``/``FAULTED`` + ``JobError``
codes), everything else an RPC status (the docs' table) with details ``<code>: <message>`` and
the ``error-code`` trailer; ``jobid`` and the echoed ``reference-number`` as initial metadata,
``response-time-ms`` as a trailer; a Bearer JWT naming the key; one unit per call that reaches a
verdict (two images = one unit), nothing for bad input, no face, deadlines or our failures."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime, timezone

import grpc
import numpy as np
import pytest

from edge import grpc_server as G
from edge.grpc_server import LivenessServicer, image_response, max_message_bytes, no_face_response, pb2, pb2_grpc, status_code
from liveness import errors as E
from liveness.detection.base import Face
from liveness.errors import LivenessError
from liveness.pipeline import LivenessResult
from liveness.settings import Settings
from tests.edge.grpc_context import Aborted, Context, served_channel
from tests.edge.helpers import FACE, jpeg, used
from tests.fakes import Box, FakeBackend, detector_image, retinaface_responder
from tests.video_helpers import encode

try:  # the one token service (liveness/tokens.py), being introduced while these tests were written
    from liveness.tokens import BearerTokens, token_service
except ImportError:  # before it: the gRPC helpers of liveness.keys.tokens
    BearerTokens = token_service = None
    from liveness.keys.tokens import make_token, signing_secret


# -- the status table --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "code"), [
    (E.MISSING_API_KEY, grpc.StatusCode.UNAUTHENTICATED),
    (E.INVALID_API_KEY, grpc.StatusCode.UNAUTHENTICATED),
    (E.QUOTA_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (E.NOT_READY, grpc.StatusCode.UNAVAILABLE),
    (E.MODEL_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
    (E.INTERNAL_ERROR, grpc.StatusCode.INTERNAL),
    *((k, grpc.StatusCode.INVALID_ARGUMENT) for k in (
        E.MISSING_IMAGE, E.EMPTY_IMAGE, E.CORRUPT_IMAGE, E.UNSUPPORTED_FORMAT, E.IMAGE_TOO_LARGE,
        E.IMAGE_TOO_MANY_PIXELS, E.IMAGE_TOO_SMALL, E.INVALID_REQUEST, E.MISSING_VIDEO, E.UNSUPPORTED_VIDEO,
        E.VIDEO_TOO_LARGE, E.VIDEO_TOO_LONG, E.VIDEO_FPS_TOO_HIGH, E.VIDEO_RESOLUTION_TOO_HIGH, E.CORRUPT_VIDEO,
        E.VIDEO_TIMEOUT)),
])
def test_status_codes_as_documented(kind, code):
    assert status_code(LivenessError(kind, "m")) is code


def test_the_message_limit_leaves_room_for_two_images_or_a_video():
    assert max_message_bytes(Settings(max_image_bytes=3_000_000, video_max_bytes=5_000_000)) == 6_000_000 + 65536
    assert max_message_bytes(Settings(max_image_bytes=2_000_000, video_max_bytes=1_000_000)) == 4_000_000 + 65536


# -- answers ----------------------------------------------------------------------------------------------


def result(live: bool, score: float, flags: tuple[str, ...] = (), keypoints=None) -> LivenessResult:
    face = Face(10.4, 20.6, 100.2, 120.0, 0.99, keypoints)
    return LivenessResult(live, score, 0.5, face, 1, flags, {}, (), (640, 480))


def test_image_response_fields():
    r = image_response([result(True, 0.9123, ("face_cut_off",), np.array([[30.5, 40.0], [70.25, 41.0], [0, 0]]))])
    assert (r.status, r.live, list(r.errors)) == (pb2.SUCCEEDED, True, [])
    assert r.liveness_score == pytest.approx(0.9123, abs=1e-6)
    (props,) = r.image_properties
    (face,) = props.faces
    assert (face.box.left, face.box.top, face.box.width, face.box.height) == pytest.approx((10.4, 20.6, 100.2, 120.0), abs=1e-4)
    assert face.texture_liveness_score == pytest.approx(0.9123, abs=1e-6)
    assert (face.left_eye.x, face.left_eye.y, face.right_eye.x, face.right_eye.y) == (30.5, 40.0, 70.25, 41.0)
    checks = {q.check: (q.result, q.score) for q in props.quality_assessments}
    assert checks == {"FaceTooSmall": (False, 0.0), "FaceCutOff": (True, 1.0), "MultipleFaces": (False, 0.0)}
    assert props.rotated == 0 and props.quality_score == 0


def test_image_response_without_keypoints_has_no_eyes():
    (props,) = image_response([result(True, 0.9)]).image_properties
    assert not props.faces[0].HasField("left_eye") and not props.faces[0].HasField("right_eye")


def test_two_images_live_only_if_both_and_the_lower_score():
    r = image_response([result(True, 0.91), result(False, 0.2)])
    assert (r.status, r.live) == (pb2.SUCCEEDED, False) and r.liveness_score == pytest.approx(0.2)
    assert [(e.error_code, e.message) for e in r.errors] == [
        ("RejectedByPassiveLiveDetection", "image 2: liveness score 0.2000 is below the threshold 0.5.")]
    r = image_response([result(False, 0.12345)])
    assert [e.message for e in r.errors] == ["liveness score 0.1235 is below the threshold 0.5."]


def test_no_face_responses_are_faulted_answers():
    r = no_face_response(LivenessError(E.NO_FACE, "No face was found in the image."))
    assert (r.status, r.live, [(e.error_code, e.message) for e in r.errors]) == (
        pb2.FAULTED, False, [("NoFaceFound", "No face was found in the image.")])
    r = no_face_response(LivenessError(E.MULTIPLE_FACES, "2 faces", {"faces": 2, "image": 1}))
    assert [(e.error_code, e.message) for e in r.errors] == [("MultipleFacesFound", "image 2: 2 faces")]


# -- the servicer on the real core --------------------------------------------------------------------------


@pytest.fixture
def core(make_core):
    def p_live(crop: np.ndarray) -> float:  # bright images are live, dark ones a spoof
        return 0.9 if crop.mean() > 150 else 0.1

    return make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE]), minifasnet_v2=p_live,
                                         minifasnet_v1se=p_live))


class Harness:
    """The servicer as ``start_grpc_server`` builds it for ``core`` (its bearer-token verifier,
    or none without authentication), and tokens for its keys."""

    def __init__(self, core) -> None:
        self.core = core
        self.observed: list[tuple[str, str]] = []
        auth = None
        if core.keys is not None:
            if token_service is not None:
                auth = token_service(core.settings, keys=core.keys).bearer
            else:
                auth = signing_secret(core.settings.jwt_secret, core.keys)
        self.auth = auth
        self.servicer = LivenessServicer(core, auth, lambda e, o: self.observed.append((e, o)))

    def issue(self, key_id: str, ttl_s: int = 600, *, at: float | None = None, foreign: bool = False) -> str:
        """A bearer token for ``key_id`` issued ``at`` (epoch seconds; default now), signed with
        the server's secret or (``foreign``) with another one."""
        other = b"another-secret-of-32-characters!"
        if token_service is not None:
            tokens = BearerTokens([other]) if foreign else self.auth
            return tokens.issue(key_id, ttl_s, now=at)
        when = None if at is None else datetime.fromtimestamp(at, timezone.utc)
        return make_token(other if foreign else self.auth, key_id, ttl_s, now=when)

    def token(self, name: str, limit: int = 5) -> str:
        return self.issue(self.core.keys.create(name, limit).info.key_id)

    def call(self, method: str, request, metadata=(), remaining=None, delivered: bool = True):
        """Run one call to its end: ``delivered=False`` ends it cancelled (the client's deadline
        passed while the answer was on its way)."""
        context = Context(tuple(metadata), remaining)

        async def run():
            try:
                return await getattr(self.servicer, method)(request, context)
            except Aborted as a:
                return a
            finally:
                await context.end(cancelled=not delivered)

        return asyncio.run(run()), context


@pytest.fixture
def h(core) -> Harness:
    return Harness(core)


LIVE, SPOOF = jpeg(level=200), jpeg(level=60)


def images(*data: bytes):
    return pb2.LivenessDetectionRequest(live_images=[pb2.ImageData(image=d) for d in data])


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_one_live_image_is_succeeded_with_metadata_and_one_unit(h):
    token = h.token("g")
    r, ctx = h.call("LivenessDetection", images(LIVE), (*bearer(token), ("reference-number", "order-42")))
    assert (r.status, r.live, list(r.errors)) == (pb2.SUCCEEDED, True, [])
    assert r.liveness_score == pytest.approx(0.9, abs=1e-6)
    (props,) = r.image_properties
    box = props.faces[0].box
    assert (box.left, box.top, box.width, box.height) == pytest.approx((96, 60, 112, 108), abs=1.01)
    initial = dict(ctx.initial)
    assert uuid.UUID(initial["jobid"]) and initial["reference-number"] == "order-42"
    assert float(ctx.trailing["response-time-ms"]) >= 0 and "error-code" not in ctx.trailing
    assert used(h.core, "g") == 1 and h.observed == [("grpc_image", "live")]


def test_an_answer_the_client_never_received_is_not_charged(h):
    """The unit is settled when the call ends: committed when the answer was delivered, given back
    when the call ended cancelled (the client's deadline passed while the answer was on its way)."""
    token = h.token("g")
    r, ctx = h.call("LivenessDetection", images(LIVE), bearer(token), delivered=False)
    assert r.live and len(ctx.done_callbacks) == 1
    assert used(h.core, "g") == 0
    h.call("LivenessDetection", images(LIVE), bearer(token))
    assert used(h.core, "g") == 1


def test_metadata_keys_are_case_insensitive_and_the_reference_is_optional(h):
    token = h.token("g")
    r, ctx = h.call("LivenessDetection", images(LIVE), (("Authorization", f"bearer {token}"),))
    assert r.live and [k for k, _ in ctx.initial] == ["jobid"]


def test_two_images_are_one_unit_the_lower_score_and_name_the_image(h):
    token = h.token("g")
    r, _ = h.call("LivenessDetection", images(LIVE, SPOOF), bearer(token))
    assert (r.status, r.live) == (pb2.SUCCEEDED, False) and r.liveness_score == pytest.approx(0.1, abs=1e-6)
    assert [e.error_code for e in r.errors] == ["RejectedByPassiveLiveDetection"]
    assert r.errors[0].message.startswith("image 2: liveness score 0.1000")
    assert len(r.image_properties) == 2
    r, _ = h.call("LivenessDetection", images(LIVE, LIVE), bearer(token))
    assert r.live
    assert used(h.core, "g") == 2 and h.observed == [("grpc_image", "spoof"), ("grpc_image", "live")]


def test_no_face_is_a_faulted_answer_not_an_rpc_error_and_not_charged(make_core):
    h = Harness(make_core(backend=FakeBackend()))
    token = h.token("g")
    r, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert (r.status, r.live, [e.error_code for e in r.errors]) == (pb2.FAULTED, False, ["NoFaceFound"])
    assert "response-time-ms" in ctx.trailing and "error-code" not in ctx.trailing
    assert used(h.core, "g") == 0 and h.observed == [("grpc_image", "no_face")]


def test_no_face_in_the_second_image_names_it(make_core):
    def faces(x):
        return [FACE] if detector_image(x).mean() > 150 else []

    h = Harness(make_core(backend=FakeBackend(retinaface=retinaface_responder(faces))))
    r, _ = h.call("LivenessDetection", images(LIVE, SPOOF), bearer(h.token("g")))
    assert [(e.error_code, e.message) for e in r.errors] == [("NoFaceFound", "image 2: No face was found in the image.")]
    assert used(h.core, "g") == 0


@pytest.mark.parametrize(("request_images", "code", "details"), [
    ((), "missing_image", "missing_image: live_images is empty: send 1 or 2 images."),
    ((LIVE, LIVE, LIVE), "invalid_request", "invalid_request: 3 live_images: send 1 or 2 images."),
])
def test_zero_or_three_images_are_invalid_argument(h, request_images, code, details):
    a, ctx = h.call("LivenessDetection", images(*request_images), bearer(h.token("g")))
    assert (a.code, a.details) == (grpc.StatusCode.INVALID_ARGUMENT, details)
    assert ctx.trailing["error-code"] == code and "response-time-ms" in ctx.trailing
    assert ctx.initial is not None  # sent before the work: there on errors too
    assert used(h.core, "g") == 0 and h.observed == [("grpc_image", code)]


@pytest.mark.parametrize(("data", "code"), [
    (b"", "empty_image"), (b"GIF89a" + b"\x00" * 30, "unsupported_format"), (LIVE[:500], "corrupt_image"),
    (jpeg(20, 20, level=200), "image_too_small"),
])
def test_bad_images_are_invalid_argument_and_not_charged(h, data, code):
    a, ctx = h.call("LivenessDetection", images(data), bearer(h.token("g")))
    assert a.code is grpc.StatusCode.INVALID_ARGUMENT and a.details.startswith(f"{code}: ")
    assert ctx.trailing["error-code"] == code and used(h.core, "g") == 0


@pytest.mark.parametrize(("metadata", "code"), [
    ((), "missing_api_key"),
    ((("authorization", "Basic abc"),), "missing_api_key"),
    ((("authorization", "Bearer not-a-jwt"),), "invalid_api_key"),
    ((("x-api-key", "lk_whatever"),), "missing_api_key"),  # only the Bearer token counts on gRPC
])
def test_missing_or_bad_tokens_are_unauthenticated(h, metadata, code):
    a, ctx = h.call("LivenessDetection", images(LIVE), metadata)
    assert a.code is grpc.StatusCode.UNAUTHENTICATED and ctx.trailing["error-code"] == code
    assert a.details.startswith(f"{code}: ")


def test_a_token_signed_with_another_secret_an_expired_token_and_a_revoked_key(h):
    info = h.core.keys.create("g", 5).info
    expired = h.issue(info.key_id, 1, at=datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp())
    for token in (h.issue(info.key_id, foreign=True), expired):
        a, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
        assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    token = h.issue(info.key_id)
    h.core.keys.revoke("g")
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    assert used(h.core, "g") == 0


def test_an_app_server_session_token_is_not_a_grpc_token(h):
    from liveness.sessions import SessionService, parse_params

    sessions = SessionService(h.core, h.core.settings)  # the wall clock: the token is fresh
    try:
        key = h.core.keys.create("app", 5).raw_key
        made = asyncio.run(sessions.create(key, parse_params({"mode": "passive"}), None))
    finally:
        sessions.close()
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(made["auth_token"]))
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_api_key")
    assert used(h.core, "app") == 1  # the session's own unit only


def test_a_spent_quota_is_resource_exhausted(h):
    token = h.token("g", limit=1)
    assert h.call("LivenessDetection", images(LIVE), bearer(token))[0].live
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota_exceeded")
    assert used(h.core, "g") == 1


def test_not_ready_is_unavailable(h):
    token = h.token("g")
    h.core.backend.close()  # the fake backend is no longer ready
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert (a.code, a.details, ctx.trailing["error-code"]) == (
        grpc.StatusCode.UNAVAILABLE, "not_ready: The service is loading; retry shortly.", "not_ready")


def test_our_failure_is_internal_and_refunded(make_core):
    def broken(crop):
        raise RuntimeError("boom")

    h = Harness(make_core(backend=FakeBackend(retinaface=retinaface_responder([FACE]), minifasnet_v2=broken)))
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(h.token("g")))
    assert (a.code, a.details) == (grpc.StatusCode.INTERNAL, "internal_error: The liveness check failed on the server.")
    usage = h.core.keys.usage("g")
    assert (usage.used, usage.refunded) == (0, 1)


def test_a_deadline_already_passed_is_deadline_exceeded_without_work(h):
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(h.token("g")), remaining=0.0)
    assert (a.code, a.details) == (grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the check started")
    assert "error-code" not in ctx.trailing and "response-time-ms" in ctx.trailing
    assert h.core.backend.calls == [] and used(h.core, "g") == 0


class DeadlineDuringClassification:
    """``asyncio`` as edge.grpc_server sees it, except that ``wait_for`` times out at the moment
    the classifiers are reached: a deadline during the check, without waiting on a clock."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.timeouts: list[float | None] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def wait_for(self, aw, timeout):
        self.timeouts.append(timeout)
        task = asyncio.ensure_future(aw)
        await self.reached.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise asyncio.TimeoutError


def test_a_deadline_during_the_check_cancels_it_and_refunds_the_unit(h, monkeypatch):
    deadline = DeadlineDuringClassification()
    monkeypatch.setattr(G, "asyncio", deadline)
    backend = h.core.backend
    real_infer = backend.infer

    async def hanging(model, x, version):
        if model.startswith("minifasnet"):
            deadline.reached.set()
            await asyncio.Event().wait()  # the classifier never answers
        return await real_infer(model, x, version)

    monkeypatch.setattr(backend, "infer", hanging)
    a, _ = h.call("LivenessDetection", images(LIVE), bearer(h.token("g")), remaining=8.5)
    assert (a.code, a.details) == (grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed during the check")
    assert deadline.timeouts == [8.5]  # the client's remaining time bounds the check
    usage = h.core.keys.usage("g")
    assert (usage.used, usage.refunded) == (0, 1)  # reserved (valid input, a face), then given back


def test_without_authentication_no_token_is_needed_and_nothing_is_charged(make_core):
    core = make_core(auth_enabled=False)
    h = Harness(core)
    assert h.auth is None and core.keys is None
    r, _ = h.call("LivenessDetection", images(LIVE))
    assert r.status == pb2.SUCCEEDED and r.live


# -- video -------------------------------------------------------------------------------------------------


def clip(level: int, n: int = 12) -> bytes:
    return encode([np.full((240, 320, 3), level, np.uint8) for _ in range(n)], 10)


@pytest.fixture
def video_h(make_core) -> Harness:
    def faces(x):
        return [Box(0.3, 0.25, 0.4, 0.5)] if detector_image(x).mean() > 40 else []

    def p_live(crop):
        return 0.9 if crop.mean() > 150 else 0.1

    return Harness(make_core(backend=FakeBackend(retinaface=retinaface_responder(faces), minifasnet_v2=p_live,
                                                 minifasnet_v1se=p_live), video_min_selected_frames=5))


def test_a_live_video_is_succeeded_with_one_property_per_judged_frame(video_h):
    h = video_h
    r, _ = h.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=clip(200)), bearer(h.token("g")))
    assert (r.status, r.live, list(r.errors)) == (pb2.SUCCEEDED, True, [])
    assert r.liveness_score == pytest.approx(0.9, abs=1e-6)
    assert [p.frame_number for p in r.image_properties] == [float(i) for i in range(7)]  # 7 live frames decide
    box = r.image_properties[0].faces[0].box
    assert (box.left, box.top, box.width, box.height) == pytest.approx((96, 60, 128, 120), abs=1.01)
    assert all([q.check for q in p.quality_assessments] == ["FaceTooSmall", "FaceCutOff", "MultipleFaces"]
               for p in r.image_properties)
    assert used(h.core, "g") == 1 and h.observed == [("grpc_video", "live")]


def test_a_video_without_faces_is_faulted_failure_to_acquire_and_not_charged(video_h):
    h = video_h
    r, _ = h.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=clip(10)), bearer(h.token("g")))
    assert (r.status, r.live, [e.error_code for e in r.errors]) == (pb2.FAULTED, False, ["FailureToAcquire"])
    assert r.liveness_score == 0.0 and all(not p.faces for p in r.image_properties)
    assert used(h.core, "g") == 0


@pytest.mark.parametrize(("video", "code"), [(b"", "missing_video"), (b"PK\x03\x04" * 8, "unsupported_video")])
def test_bad_videos_are_invalid_argument(video_h, video, code):
    a, ctx = video_h.call("VideoLivenessDetection", pb2.VideoLivenessDetectionRequest(video=video),
                          bearer(video_h.token("g")))
    assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert used(video_h.core, "g") == 0


# -- over the wire ------------------------------------------------------------------------------------------


def test_an_in_process_server_round_trip(make_core):
    core = make_core()
    token = Harness(core).token("wire")
    observed: list[tuple[str, str]] = []

    async def scenario():
        async with served_channel(core, lambda e, o: observed.append((e, o))) as channel:
            stub = pb2_grpc.LivenessWebServiceStub(channel)
            call = stub.LivenessDetection(images(jpeg()), metadata=(
                ("authorization", f"Bearer {token}"), ("reference-number", "ref-7")), timeout=30)
            response = await call
            initial = dict(await call.initial_metadata())
            trailing = dict(await call.trailing_metadata())
            bad = stub.LivenessDetection(images(jpeg()), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await bad
            return response, initial, trailing, e.value

    response, initial, trailing, err = asyncio.run(scenario())
    assert response.status == pb2.SUCCEEDED and response.live
    assert uuid.UUID(initial["jobid"]) and initial["reference-number"] == "ref-7"
    assert float(trailing["response-time-ms"]) >= 0
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED and err.details().startswith("missing_api_key: ")
    assert dict(err.trailing_metadata())["error-code"] == "missing_api_key"
    assert used(core, "wire") == 1 and observed == [("grpc_image", "live"), ("grpc_image", "missing_api_key")]


def test_grpc_can_be_switched_off(make_core):
    core = make_core(grpc_enabled=False)
    assert asyncio.run(G.start_grpc_server(core, core.settings)) is None
    asyncio.run(G.stop_grpc_server(None))  # nothing to stop


def test_an_unexpected_failure_is_internal(h, monkeypatch):
    token = h.token("g")

    def locked(credential):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(h.core.keys, "check_credential", locked)
    a, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert isinstance(a, Aborted) and a.code is grpc.StatusCode.INTERNAL
    assert ctx.trailing["error-code"] == "internal_error"
    assert a.details == "internal_error: The request failed on the server."  # not the exception's text
    assert float(ctx.trailing["response-time-ms"]) >= 0 and h.observed == [("grpc_image", "internal_error")]


def test_a_store_failure_while_reserving_is_internal_and_charges_nothing(h, monkeypatch, caplog):
    token = h.token("g")

    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    real_reserve = h.core.keys.reserve_credential
    monkeypatch.setattr(h.core.keys, "reserve_credential", locked)
    with caplog.at_level("ERROR", logger="liveness.grpc"):
        # the image decodes and has one face; reserving its unit then fails in the store
        a, ctx = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert a.code is grpc.StatusCode.INTERNAL and ctx.trailing["error-code"] == "internal_error"
    usage = h.core.keys.usage("g")
    assert (usage.used, usage.refunded) == (0, 0)  # never reserved, never charged
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "liveness.grpc"]
    jobid = dict(ctx.initial)["jobid"]
    assert logged.startswith(f"unexpected sqlite3.OperationalError in grpc_image (request_id {jobid}): database is locked")
    monkeypatch.setattr(h.core.keys, "reserve_credential", real_reserve)
    response, _ = h.call("LivenessDetection", images(LIVE), bearer(token))
    assert response.live and used(h.core, "g") == 1  # the key works again once the store does


def test_images_over_the_byte_or_pixel_limit_are_invalid_argument(make_core):
    h = Harness(make_core(max_image_bytes=4096, max_image_pixels=20_000))
    token = h.token("g")
    for data, code in ((jpeg(320, 240), "image_too_large"), (jpeg(200, 150, level=128), "image_too_many_pixels")):
        a, ctx = h.call("LivenessDetection", images(data), bearer(token))
        assert (a.code, ctx.trailing["error-code"]) == (grpc.StatusCode.INVALID_ARGUMENT, code)
    assert used(h.core, "g") == 0
