"""FindFace drop-in on the real core (fake inference backend, injected clock): ``return_detection``
on ``POST /v1/video-liveness`` and ``detection_id1``/``detection_id2`` on ``POST /v1/verify``
(liveness/detections.py, liveness/video/check.py, edge/video.py, edge/sessions.py
``parse_verify``), and FindFace's keyless calls on routes opened by ``anonymous_routes``.

The fake models: RetinaFace finds a face in every frame brighter than 40; the anti-spoof models
say live for a bright crop; YuNet finds one face (with five keypoints) in the image's content;
MobileFaceNet's embedding is a unit vector whose angle follows the aligned face's brightness, so
two flat images of the same grey level are "the same person" and of far-apart levels are not.
What is stored is read back from the SQLite file itself."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge import apis
from edge.sessions import parse_verify
from edge.video import parse_video_request
from liveness.detections import KIND, DetectionRef, DetectionStore
from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, LivenessError
from liveness.imaging import ImageLimits
from liveness.sessions import parse_params
from tests.edge.helpers import YUNET_FACE_BOX, Part, Svc, body_of, ctx, jpeg, multipart, served, used, yunet_one_face
from tests.fakes import Box, FakeBackend, detector_image, retinaface_responder
from tests.video_helpers import encode

LEVEL = {"L": 200, "S": 100, "N": 10}  # live face, spoof face, no face
MATCH_LEVEL, OTHER_LEVEL = 200, 60  # a verify image like the live frames / unlike them
FACE_BOX = YUNET_FACE_BOX  # both fake detectors put the face there (fractions of the image)


# -- the fake recognition models -------------------------------------------------------------------


def embedder(x: np.ndarray) -> list[np.ndarray]:
    """(N, 3, 112, 112) aligned faces -> (N, 128): a unit vector at an angle set by the brightness."""
    out = np.zeros((x.shape[0], 128), np.float32)
    for i in range(x.shape[0]):
        angle = float(x[i].mean())  # ImageNet-normalised: about 1.5 for grey 200, -0.8 for grey 60
        out[i, 0], out[i, 1] = np.cos(angle), np.sin(angle)
    return [out]


def clip(pattern: str) -> bytes:
    return encode([np.full((240, 320, 3), LEVEL[c], np.uint8) for c in pattern], 10)


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    return {"live": clip("L" * 12), "spoof": clip("S" * 12), "none": clip("N" * 12)}


def backend() -> FakeBackend:
    def faces(x: np.ndarray) -> list[Box]:
        return [Box(*FACE_BOX)] if detector_image(x).mean() > 40 else []

    def p_live(crop: np.ndarray) -> float:
        return 0.9 if crop.mean() > 150 else 0.1

    return FakeBackend(retinaface=retinaface_responder(faces), minifasnet_v2=p_live, minifasnet_v1se=p_live,
                       yunet=yunet_one_face, mobilefacenet=embedder)


@pytest.fixture
def core(make_core, clock):
    app = make_core(backend=backend(), verification_enabled=True, video_min_selected_frames=5,
                    detection_ttl_s=600, detection_max_per_key=3)
    # The one seam: the app's detection store on the test's clock (same file, same settings).
    app.detections = DetectionStore(app.detections.docs, app.settings, clock=clock)
    return app


# -- calling the adapters ----------------------------------------------------------------------------


def post_video(core, body: bytes, headers: dict[str, str], query: str = "return_detection=true",
               content_type: str = "video/mp4", sessions=None) -> tuple[int, dict]:
    c = ctx(headers, content_type=content_type, query=query, path="/v1/video-liveness")
    r = served(apis.video_liveness(Svc(core, sessions=sessions), body, c))
    return r.status_code, body_of(r)


def post_verify(core, doc: dict, headers: dict[str, str]) -> tuple[int, dict]:
    c = ctx(headers, content_type="application/json", path="/v1/verify")
    r = served(apis.verify(Svc(core), json.dumps(doc).encode(), c))
    return r.status_code, body_of(r)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def flat_jpeg(level: int) -> str:
    return b64(jpeg(320, 240, level=level))


def stored(core) -> list[tuple]:
    with sqlite3.connect(core.settings.db_path) as conn:
        return conn.execute("SELECT id, owner, body, blob, expires_at FROM documents WHERE kind = ?", (KIND,)).fetchall()


def db_bytes(core) -> bytes:
    path = Path(core.settings.db_path)
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def detect(core, key: str, clips) -> str:
    status, d = post_video(core, clips["live"], {"X-API-Key": key})
    assert (status, d["alive"]) == (200, True), d
    return d["best_face"]["detection_id"]


# -- return_detection ----------------------------------------------------------------------------------


def test_a_live_clip_keeps_only_the_embedding_and_costs_one_unit(core, clips, clock):
    key = core.keys.create("ff", 10).raw_key
    status, d = post_video(core, clips["live"], {"X-API-Key": key}, query="return_detection=true&return_photo=true")
    assert (status, d["alive"], d["decision"]) == (200, True, "live")
    detection_id = d["best_face"]["detection_id"]
    assert isinstance(detection_id, str) and len(detection_id) == 32 and "detection_reason" not in d["best_face"]
    assert used(core, "ff") == 1  # the verdict's unit; the detection costs nothing more
    ((row_id, owner, body, blob, expires_at),) = stored(core)
    assert row_id == detection_id and owner == core.keys.get("ff").key_id and expires_at == clock() + 600
    assert len(blob) == 128 * 4  # the float32 embedding, and nothing else
    assert set(json.loads(body)) == {"bbox", "model", "quality", "reasons"}
    # The frame the client asked to see is nowhere in the file: not the JPEG, not any slice of it.
    photo = base64.b64decode(d["best_face"]["photo"])
    data = db_bytes(core)
    assert photo[:3] == b"\xff\xd8\xff" and not any(photo[i:i + 64] in data for i in range(0, len(photo) - 64, 64))


def test_without_the_flag_nothing_is_stored_and_the_answer_is_unchanged(core, clips):
    key = core.keys.create("ff", 10).raw_key
    status, d = post_video(core, clips["live"], {"X-API-Key": key}, query="")
    assert status == 200 and d["alive"] and "detection_id" not in d["best_face"]
    assert stored(core) == [] and used(core, "ff") == 1


def test_a_spoof_verdict_makes_no_detection(core, clips):
    key = core.keys.create("ff", 10).raw_key
    status, d = post_video(core, clips["spoof"], {"X-API-Key": key})
    assert (status, d["decision"]) == (200, "spoof")
    assert (d["best_face"]["detection_id"], d["best_face"]["detection_reason"]) == (None, "not_alive")
    assert stored(core) == [] and used(core, "ff") == 1  # the spoof verdict, as without the flag


def test_failure_to_acquire_makes_no_detection_and_is_refunded(core, clips):
    key = core.keys.create("ff", 10).raw_key
    status, d = post_video(core, clips["none"], {"X-API-Key": key})
    assert (status, d["decision"], d["best_face"]) == (200, "failure_to_acquire", None)
    assert stored(core) == [] and used(core, "ff") == 0


def test_per_key_cap_refuses_before_any_work_and_charges_nothing(core, clips, clock):
    key, other = core.keys.create("ff", 10).raw_key, core.keys.create("other", 10).raw_key
    for _ in range(3):
        detect(core, key, clips)
    assert used(core, "ff") == 3
    calls = len(core.backend.calls)
    status, d = post_video(core, clips["live"], {"X-API-Key": key})
    assert (status, d["error"]["code"], d["error"]["details"]) == (429, "detection_limit", {"limit": 3})
    assert used(core, "ff") == 3 and len(core.backend.calls) == calls  # not charged, no model ran
    assert post_video(core, clips["live"], {"X-API-Key": other})[0] == 200  # another key is not held up
    clock.advance(600)  # the first three expire ...
    assert isinstance(detect(core, key, clips), str)  # ... and make room
    assert used(core, "ff") == 4


def test_the_cap_checked_at_insert_refunds_the_verdict(make_core, clips):
    """A request that passed the early check can still meet a full key at the insert (another
    request's detection landed meanwhile): the insert's own cap check (one SQLite write
    transaction) refuses it, and its unit is refunded.  The one seam: the early check lets a
    third detection in just before this request's own."""
    core = make_core(backend=backend(), verification_enabled=True, video_min_selected_frames=5, detection_max_per_key=3)
    key = core.keys.create("ff", 10).raw_key
    key_id = core.keys.get("ff").key_id
    for _ in range(2):
        detect(core, key, clips)
    store, check_room = core.detections, core.detections.check_room

    def meanwhile(k: str) -> None:
        check_room(k)  # room for one more ...
        store.put(key_id, np.eye(128, dtype=np.float32)[0], (0, 0, 1, 1), core.backend.version_info("mobilefacenet", 1))

    store.check_room = meanwhile  # ... which another request takes
    status, d = post_video(core, clips["live"], {"X-API-Key": key})
    assert (status, d["error"]["code"]) == (429, "detection_limit")
    usage = core.keys.usage("ff")
    assert (usage.used, usage.refunded) == (2, 1) and len(stored(core)) == 3


def test_a_server_wide_cap_is_503(make_core, clips, clock):
    core = make_core(backend=backend(), verification_enabled=True, video_min_selected_frames=5, detection_max_total=1)
    key, other = core.keys.create("ff", 10).raw_key, core.keys.create("other", 10).raw_key
    detect(core, key, clips)
    status, d = post_video(core, clips["live"], {"X-API-Key": other})
    assert (status, d["error"]["code"]) == (503, "too_many_detections") and used(core, "other") == 0


def test_return_detection_needs_face_verification(make_core, clips):
    core = make_core(backend=backend(), verification_enabled=False, video_min_selected_frames=5)
    key = core.keys.create("ff", 10).raw_key
    status, d = post_video(core, clips["live"], {"X-API-Key": key})
    assert (status, d["error"]["code"]) == (503, "verification_unavailable") and used(core, "ff") == 0


def test_a_session_token_cannot_keep_detections(core, clips, sessions):
    key = core.keys.create("app", 5).raw_key
    made = asyncio.run(sessions.create(key, parse_params({"mode": "video"}), None))
    status, d = post_video(core, clips["live"], {"Authorization": f"Bearer {made['auth_token']}"}, sessions=sessions)
    assert (status, d["error"]["code"], d["error"]["details"]) == (400, "invalid_request", {"field": "return_detection"})
    assert stored(core) == [] and used(core, "app") == 1  # the session's own unit only


# -- /v1/verify with detection ids ----------------------------------------------------------------------


def test_verify_a_detection_against_a_matching_and_a_different_image(core, clips):
    key = core.keys.create("ff", 10).raw_key
    detection_id = detect(core, key, clips)
    status, d = post_verify(core, {"detection_id1": detection_id, "image2": flat_jpeg(MATCH_LEVEL)}, {"X-API-Key": key})
    assert status == 200 and d["is_identical"] is True and d["match_confidence"] > 0.99
    assert d["faces"][0]["detection_id"] == detection_id and "detection_id" not in d["faces"][1]
    assert set(d["faces"][0]) == {"detection_id", "face_rectangle", "quality_for_recognition", "reasons"}
    status, d = post_verify(core, {"image1": flat_jpeg(OTHER_LEVEL), "detection_id2": detection_id}, {"X-API-Key": key})
    assert status == 200 and d["is_identical"] is False
    status, d = post_verify(core, {"detection_id1": detection_id, "detection_id2": detection_id}, {"X-API-Key": key})
    assert status == 200 and d["is_identical"] is True
    assert used(core, "ff") == 1 + 3  # the video, then one unit per comparison as for two images


def test_another_keys_an_unknown_or_an_expired_detection_is_404_and_not_charged(core, clips, clock):
    key, other = core.keys.create("ff", 10).raw_key, core.keys.create("other", 10).raw_key
    detection_id = detect(core, key, clips)
    image = flat_jpeg(MATCH_LEVEL)
    for doc, headers in (({"detection_id1": detection_id, "image2": image}, {"X-API-Key": other}),
                         ({"detection_id1": "x" * 32, "image2": image}, {"X-API-Key": key})):
        status, d = post_verify(core, doc, headers)
        assert (status, d["error"]["code"], d["error"]["details"]) == (404, "detection_not_found", {"field": "detection_id1"})
    clock.advance(599.9)
    assert post_verify(core, {"detection_id1": detection_id, "image2": image}, {"X-API-Key": key})[0] == 200
    clock.advance(0.1)  # expires_at itself: expired
    status, d = post_verify(core, {"image1": image, "detection_id2": detection_id}, {"X-API-Key": key})
    assert (status, d["error"]["code"], d["error"]["details"]) == (404, "detection_not_found", {"field": "detection_id2"})
    assert (used(core, "ff"), used(core, "other")) == (2, 0)


def test_expired_detections_are_purged_from_the_file(core, clips, clock):
    key = core.keys.create("ff", 10).raw_key
    first = detect(core, key, clips)
    clock.advance(300)
    second = detect(core, key, clips)
    clock.advance(300)  # the first has expired, the second has not
    assert core.detections.purge() == 1
    assert [r[0] for r in stored(core)] == [second]
    embedding = np.frombuffer(stored(core)[0][3], np.float32)
    assert first.encode() not in db_bytes(core)
    clock.advance(300)
    assert core.detections.purge() == 1 and stored(core) == []
    assert embedding.tobytes() not in db_bytes(core)  # secure_delete + WAL checkpoint: the bytes are gone


def test_bad_verify_input_is_400_and_not_charged(core, clips):
    key = core.keys.create("ff", 10).raw_key
    detection_id = detect(core, key, clips)
    image = flat_jpeg(MATCH_LEVEL)
    cases = [({"image1": image, "detection_id1": detection_id, "image2": image}, 400, "invalid_request", "detection_id1"),
             ({"detection_id1": 7, "image2": image}, 400, "invalid_request", "detection_id1"),
             ({"detection_id1": detection_id}, 400, "missing_image", "image2")]
    for doc, status, code, field in cases:
        got, d = post_verify(core, doc, {"X-API-Key": key})
        assert (got, d["error"]["code"], d["error"]["details"]["field"]) == (status, code, field)
    assert used(core, "ff") == 1  # the video only


# -- FindFace's keyless calls on opened routes ------------------------------------------------------------


def test_keyless_findface_calls_on_opened_routes_are_charged_to_the_named_key(make_core, clips):
    core = make_core(backend=backend(), verification_enabled=True, video_min_selected_frames=5,
                     anonymous_routes={"/v1/video-liveness": "findface", "/v1/verify": "findface"})
    core.keys.create("findface", 10)
    other = core.keys.create("other", 10).raw_key
    status, d = post_video(core, clips["live"], {})  # no credential at all, as FindFace's client sends
    assert (status, d["alive"]) == (200, True)
    detection_id = d["best_face"]["detection_id"]
    status, d = post_verify(core, {"detection_id1": detection_id, "image2": flat_jpeg(MATCH_LEVEL)}, {})
    assert (status, d["is_identical"]) == (200, True)
    assert used(core, "findface") == 2
    # A caller that does send a key is judged by it: the anonymous key's detection is not its own.
    status, d = post_verify(core, {"detection_id1": detection_id, "image2": flat_jpeg(MATCH_LEVEL)}, {"X-API-Key": other})
    assert (status, d["error"]["code"]) == (404, "detection_not_found") and used(core, "other") == 0


# -- parsing -------------------------------------------------------------------------------------------------


def test_the_return_detection_flag_from_the_query_or_the_form():
    mp4 = b"\x00\x00\x00\x20ftypisom" + b"\x00" * 8
    assert parse_video_request(mp4, "video/mp4", {}, {"return_detection": "true"}).return_detection is True
    assert parse_video_request(mp4, "video/mp4", {}, {}).return_detection is False
    body, ct = multipart([Part("video", mp4, "a.mp4"), Part("return_detection", "1")])
    assert parse_video_request(body, ct, {}, {}).return_detection is True
    with pytest.raises(LivenessError) as e:
        parse_video_request(mp4, "video/mp4", {}, {"return_detection": "maybe"})
    assert e.value.details == {"field": "return_detection"}


def test_parse_verify_detection_ids_in_json_and_multipart():
    image = jpeg(seed=3)
    _, faces = parse_verify(json.dumps({"detection_id1": " abc ", "image2": b64(image)}).encode(), "application/json",
                            {}, ImageLimits())
    assert faces() == (DetectionRef("abc"), image)
    body, ct = multipart([Part("image1", image, "a.jpg"), Part("detection_id2", "def")])
    assert parse_verify(body, ct, {}, ImageLimits())[1]() == (image, DetectionRef("def"))
    _, faces = parse_verify(json.dumps({"detection_id2": "def"}).encode(), "application/json", {}, ImageLimits())
    with pytest.raises(LivenessError) as e:
        faces()
    assert (e.value.kind, e.value.details) == (MISSING_IMAGE, {"field": "image1"})
    assert "detection_id1" in e.value.message
    _, faces = parse_verify(json.dumps({"detection_id1": ["x"], "image2": b64(image)}).encode(), "application/json",
                            {}, ImageLimits())
    with pytest.raises(LivenessError) as e:
        faces()
    assert e.value.kind is INVALID_REQUEST
