"""Video ``POST /v1/video-liveness`` (edge/video.py, edge/apis.py ``video_liveness``), beyond
what tests/test_video_units.py covers: the field alias and flag forms, query over form,
Content-Type handling, the answer's rounding and nulls (docs/VIDEO.md "Answer"), and the
adapter on the real core: 200 for every verdict, one unit per live/spoof verdict, nothing for
FailureToAcquire, bad input or a refused key, errors in the native envelope with request_id.
Clips are flat frames made in memory (tests/video_helpers.py); no model is loaded."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace

import numpy as np
import pytest

from edge import apis
from edge.video import MULTIPART_SLACK, body_limit, parse_video_request, video_response
from liveness.errors import INVALID_REQUEST, MISSING_VIDEO, LivenessError
from liveness.inference.repository import ModelVersion
from liveness.sessions import parse_params
from liveness.settings import Settings
from liveness.video import BestFace, FrameResult, Verdict, VideoInfo, VideoIssue, VideoResult
from tests.edge.helpers import Part, Svc, body_of, ctx, multipart, served, used
from tests.fakes import Box, FakeBackend, detector_image, retinaface_responder
from tests.video_helpers import encode

MP4 = b"\x00\x00\x00\x20ftypisom" + b"\x00" * 8


# -- parsing ---------------------------------------------------------------------------------------


def test_multipart_file_alias_and_video_first():
    body, ct = multipart([Part("file", b"FILEBYTES", "a.mp4", "video/mp4")])
    assert parse_video_request(body, ct, {}).video() == b"FILEBYTES"
    body, ct = multipart([Part("file", b"FILEBYTES", "a.mp4"), Part("video", b"VIDEOBYTES", "b.mp4")])
    req = parse_video_request(body, ct, {})
    assert req.video() == b"VIDEOBYTES" and req.content_type == ""  # the container is sniffed, not declared


def test_multipart_key_from_a_hash_id_field_or_a_header():
    body, ct = multipart([Part("hash_id", "lk_form"), Part("video", MP4, "a.mp4")])
    assert parse_video_request(body, ct, {}).api_key == "lk_form"
    assert parse_video_request(body, ct, {"x-api-key": "lk_header"}).api_key == "lk_header"


def test_an_empty_video_part_is_missing_video():
    body, ct = multipart([Part("video", b"", "a.mp4")])
    with pytest.raises(LivenessError) as e:
        parse_video_request(body, ct, {}).video()
    assert (e.value.kind, e.value.message) == (MISSING_VIDEO, "Send the video in a multipart field named 'video'.")


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), (" on ", True), (b"true", True), (True, True),
    ("", False), ("0", False), ("false", False), ("No", False), ("off", False), (b"0", False), (False, False),
])
def test_flag_values(value, expected):
    req = parse_video_request(MP4, "video/mp4", {}, {"return_photo": value, "return_normalized": value})
    assert (req.return_photo, req.return_normalized) == (expected, expected)


@pytest.mark.parametrize("name", ["return_photo", "return_normalized"])
def test_a_bad_flag_names_its_field(name):
    with pytest.raises(LivenessError) as e:
        parse_video_request(MP4, "video/mp4", {}, {name: "sometimes"})
    assert (e.value.kind, e.value.message, e.value.details) == (INVALID_REQUEST, f"'{name}' must be true or false.",
                                                                 {"field": name})


def test_form_flags_and_the_query_wins_over_the_form():
    body, ct = multipart([Part("video", MP4, "a.mp4"), Part("return_photo", "true"), Part("return_normalized", "yes")])
    req = parse_video_request(body, ct, {}, {})
    assert (req.return_photo, req.return_normalized) == (True, True)
    req = parse_video_request(body, ct, {}, {"return_photo": "false"})
    assert (req.return_photo, req.return_normalized) == (False, True)
    body, ct = multipart([Part("video", MP4, "a.mp4"), Part("return_photo", "perhaps")])
    with pytest.raises(LivenessError) as e:
        parse_video_request(body, ct, {}, {})
    assert e.value.details == {"field": "return_photo"}
    assert parse_video_request(body, ct, {}, {"return_photo": "1"}).return_photo  # the bad form value is never read


def test_defaults_and_the_raw_body_content_type():
    req = parse_video_request(MP4, "Video/MP4; codecs=avc1", {"authorization": "Bearer lk_b"})
    assert (req.api_key, req.content_type, req.return_photo, req.return_normalized) == ("lk_b", "video/mp4", False, False)
    assert req.video() == MP4
    req = parse_video_request(MP4, "", {})
    assert req.content_type == "" and req.api_key is None and req.video() == MP4


@pytest.mark.parametrize(("body", "ct"), [
    (b'{"video": "AAAA"}', "application/json"),
    (b'  {"video": "AAAA"}', "text/plain"),
    (b'{"video": "AAAA"}', ""),
])
def test_json_is_refused_with_how_to_send_a_video(body, ct):
    with pytest.raises(LivenessError) as e:
        parse_video_request(body, ct, {})
    assert e.value.kind is INVALID_REQUEST and e.value.status == 400
    assert "JSON/base64 is not accepted for video" in e.value.message and "multipart/form-data field 'video'" in e.value.message


@pytest.mark.parametrize("ct", ["video/mp4", "application/octet-stream", "", "application/json", "text/plain"])
def test_an_empty_raw_body_is_the_empty_video_whatever_its_type(ct):
    req = parse_video_request(b"", ct, {"x-api-key": "lk_1"})  # parsing is fine: the key is checked first ...
    assert (req.api_key, req.video()) == ("lk_1", b"")  # ... then liveness.video refuses 0 bytes: empty_video


def test_body_limit_is_the_video_plus_multipart_slack():
    assert MULTIPART_SLACK == 64 * 1024
    assert body_limit(Settings(video_max_bytes=2_000_000)) == 2_000_000 + 64 * 1024


# -- the answer --------------------------------------------------------------------------------------


def result(**over) -> VideoResult:
    base = dict(
        alive=False, verdict=Verdict.SPOOF, average_liveness=0.1234567, threshold=0.5,
        best_face=BestFace(12, 0.4004, 0.98765432, 0.887449, (0, 196, 276, 508), None, b"\x89PNG fake"),
        frames=(FrameResult(12, 0.4004, True, 0.98765432, 0.887449, None, False, 1, (0, 196, 276, 508)),),
        errors=(VideoIssue("RejectedByPassiveLiveDetection", "7 spoof", {"live": 0, "spoof": 7, "failures": 0}),),
        models=(ModelVersion("retinaface", 1, "f" * 64),), video=VideoInfo("mp4", "h264", 368, 656, 26.667, 30.0, 800, 99),
        frames_selected=30, frames_analyzed=8, stopped_early=True, charged=True, timings_ms={"total": 214.3},
    )
    return VideoResult(**{**base, **over})


def test_answer_rounding_and_types():
    d = video_response(result(), "rid-v")
    assert d["request_id"] == "rid-v" and d["alive"] is False and d["decision"] == "spoof"
    assert d["average_liveness"] == 0.123457 and d["liveness_threshold"] == 0.5
    assert d["best_face"] == {"liveness": 0.987654, "quality": 0.8874, "bbox": {"left": 0, "top": 196, "right": 276,
                              "bottom": 508}, "frame_no": 12, "frame_ts": 0.4, "normalized": base64.b64encode(
                              b"\x89PNG fake").decode()}
    assert "photo" not in d["best_face"]  # only with return_photo
    assert (d["frames_selected"], d["frames_analyzed"], d["stopped_early"]) == (30, 8, True)
    assert d["errors"] == [{"code": "RejectedByPassiveLiveDetection", "message": "7 spoof",
                            "details": {"live": 0, "spoof": 7, "failures": 0}}]
    assert d["timings_ms"] == {"total": 214.3} and d["video"]["container"] == "mp4"
    assert "charged" not in d and "frames_decoded" not in d  # internal


@pytest.mark.parametrize(("verdict", "decision"), [(Verdict.LIVE, "live"), (Verdict.SPOOF, "spoof"),
                                                   (Verdict.FAILURE_TO_ACQUIRE, "failure_to_acquire")])
def test_decision_names(verdict, decision):
    assert video_response(result(verdict=verdict), "r")["decision"] == decision


def test_detection_fields_only_when_a_detection_was_asked_for():
    best = result().best_face
    assert "detection_id" not in video_response(result(), "r")["best_face"]
    d = video_response(result(best_face=replace(best, detection_id="abc")), "r")["best_face"]
    assert d["detection_id"] == "abc" and "detection_reason" not in d
    d = video_response(result(best_face=replace(best, detection_reason="not_alive")), "r")["best_face"]
    assert (d["detection_id"], d["detection_reason"]) == (None, "not_alive")


def test_no_face_anywhere_gives_nulls():
    d = video_response(result(best_face=None, average_liveness=None, frames=()), "r")
    assert d["best_face"] is None and d["average_liveness"] is None and d["frames"] == []


# -- POST /v1/video-liveness on the real core -----------------------------------------------------------

LEVEL = {"L": 200, "S": 100, "N": 10}  # what the fake models see: live face, spoof face, no face


def clip(pattern: str) -> bytes:
    return encode([np.full((240, 320, 3), LEVEL[c], np.uint8) for c in pattern], 10)


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return {"live": clip("L" * 12), "spoof": clip("S" * 12), "none": clip("N" * 12)}


@pytest.fixture
def core(make_core):
    def faces(x: np.ndarray) -> list[Box]:
        return [Box(0.3, 0.25, 0.4, 0.5)] if detector_image(x).mean() > 40 else []

    def p_live(crop: np.ndarray) -> float:
        return 0.9 if crop.mean() > 150 else 0.1

    backend = FakeBackend(retinaface=retinaface_responder(faces), minifasnet_v2=p_live, minifasnet_v1se=p_live)
    return make_core(backend=backend, video_min_selected_frames=5)


def post(svc: Svc, body: bytes, content_type: str, headers: dict[str, str] | None = None, query: str = ""):
    c = ctx(headers, content_type=content_type, query=query, path="/v1/video-liveness")
    r = served(apis.video_liveness(svc, body, c))
    assert r.status_code == c.response.status_code
    return r.status_code, body_of(r)


def test_a_live_clip_is_200_alive_and_one_unit(core, clips):
    key = core.keys.create("vid", 5).raw_key
    status, d = post(Svc(core), clips["live"], "video/mp4", {"X-API-Key": key, "X-Request-ID": "v1"})
    assert (status, d["request_id"], d["alive"], d["decision"]) == (200, "v1", True, "live")
    assert d["average_liveness"] == pytest.approx(0.9, abs=1e-6) and d["errors"] == []
    assert d["best_face"]["liveness"] == pytest.approx(0.9, abs=1e-6) and "photo" not in d["best_face"]
    assert d["video"]["container"] == "mp4" and d["video"]["width"] == 320 and d["video"]["height"] == 240
    assert used(core, "vid") == 1


def test_a_spoof_clip_is_200_not_alive_and_one_unit(core, clips):
    key = core.keys.create("vid", 5).raw_key
    status, d = post(Svc(core), clips["spoof"], "video/mp4", {"X-API-Key": key})
    assert (status, d["alive"], d["decision"]) == (200, False, "spoof")
    assert [e["code"] for e in d["errors"]] == ["RejectedByPassiveLiveDetection"]
    assert used(core, "vid") == 1


def test_failure_to_acquire_is_200_and_refunded(core, clips):
    key = core.keys.create("vid", 5).raw_key
    status, d = post(Svc(core), clips["none"], "video/mp4", {"X-API-Key": key})
    assert (status, d["alive"], d["decision"], d["best_face"]) == (200, False, "failure_to_acquire", None)
    assert [e["code"] for e in d["errors"]] == ["FailureToAcquire"]
    usage = core.keys.usage("vid")
    assert (usage.used, usage.refunded) == (0, 1)


def test_multipart_upload_and_return_photo_from_the_query(core, clips):
    key = core.keys.create("vid", 5).raw_key
    form, ct = multipart([Part("video", clips["live"], "selfie.mp4", "video/mp4")])
    status, d = post(Svc(core), form, ct, {"X-API-Key": key}, query="return_photo=true&return_normalized=1")
    assert status == 200 and d["alive"]
    assert base64.b64decode(d["best_face"]["photo"])[:3] == b"\xff\xd8\xff"  # a JPEG of the frame
    assert base64.b64decode(d["best_face"]["normalized"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert used(core, "vid") == 1


@pytest.mark.parametrize(("body", "ct", "status", "code"), [
    (b'{"video": "AAAA"}', "application/json", 400, "invalid_request"),
    (b"", "video/mp4", 400, "empty_video"),
    (b"", "", 400, "empty_video"),
    (b"", "application/json", 400, "empty_video"),
    (b"PK\x03\x04 a zip, not a video" * 4, "video/mp4", 415, "unsupported_video"),
    (b"\xff\xd8\xff\xe0 a jpeg" * 4, "application/octet-stream", 415, "unsupported_video"),
])
def test_bad_input_is_an_envelope_and_never_charged(core, body, ct, status, code):
    key = core.keys.create("vid", 5).raw_key
    got, d = post(Svc(core), body, ct, {"X-API-Key": key, "X-Request-ID": "bad"})
    assert (got, d["error"]["code"], d["request_id"]) == (status, code, "bad")
    assert used(core, "vid") == 0


def test_a_truncated_clip_is_corrupt_video(core, clips):
    key = core.keys.create("vid", 5).raw_key
    status, d = post(Svc(core), clips["live"][: len(clips["live"]) // 2], "video/mp4", {"X-API-Key": key})
    assert (status, d["error"]["code"]) == (400, "corrupt_video")
    assert used(core, "vid") == 0


def test_over_video_max_bytes_is_413(make_core, clips):
    core = make_core(video_max_bytes=1024)
    key = core.keys.create("vid", 5).raw_key
    assert len(clips["live"]) > 1024
    status, d = post(Svc(core), clips["live"], "video/mp4", {"X-API-Key": key})
    assert (status, d["error"]["code"]) == (413, "video_too_large")


@pytest.mark.parametrize(("headers", "code"), [({}, "missing_api_key"), ({"X-API-Key": "lk_nope"}, "invalid_api_key")])
def test_a_refused_key_is_401_before_the_video_is_probed(core, headers, code):
    status, d = post(Svc(core), b"not a video at all", "video/mp4", headers)
    assert (status, d["error"]["code"]) == (401, code)


def test_a_spent_quota_is_429(core, clips):
    key = core.keys.create("vid", 1).raw_key
    assert post(Svc(core), clips["live"], "video/mp4", {"X-API-Key": key})[0] == 200
    status, d = post(Svc(core), clips["live"], "video/mp4", {"X-API-Key": key})
    assert (status, d["error"]["code"]) == (429, "quota_exceeded") and used(core, "vid") == 1


def test_a_video_session_token_gets_the_session_view_and_is_not_charged(core, clips, sessions):
    key = core.keys.create("app", 5).raw_key
    made = asyncio.run(sessions.create(key, parse_params({"mode": "video"}), None))
    status, d = post(Svc(core, sessions=sessions), clips["live"], "video/mp4",
                     {"Authorization": f"Bearer {made['auth_token']}", "X-Request-ID": "sv"})
    assert (status, d) == (200, {"request_id": "sv", "session": {
        "session_id": made["session_id"], "attempt_id": 1, "status": "completed", "attempts_remaining": 2}})
    assert used(core, "app") == 1  # the session's unit only
    status, d = post(Svc(core, sessions=sessions), clips["live"], "video/mp4",
                     {"Authorization": f"Bearer {made['auth_token']}"})
    assert (status, d["error"]["code"]) == (409, "session_completed")
