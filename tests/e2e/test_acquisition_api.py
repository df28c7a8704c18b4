"""Real-world framings (tools/realworld_media.py, made from the dev media) over real HTTP: every
endpoint that looks for a face finds it — FACIA, native, video, app-server session attempts and
challenge frames — and the native answer says which detector pass did."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest

from e2e_conftest import MEDIA, REPO
from video_helpers import encode, read_frames
from tools.realworld_media import dev_realworld_set, jpeg, opencv_face_box, reframe, small_face

pytestmark = pytest.mark.e2e

SOURCES = REPO.parent / "shared" / "models"
YUNET = SOURCES / "detection" / "yunet" / "yunet_s_640_640.onnx"
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"


@pytest.fixture(scope="module")
def samples():
    return dev_realworld_set(MEDIA, SOURCES)


@pytest.fixture(scope="module")
def key(make_key):
    return make_key(1000)


def small_in_landscape(bgr: np.ndarray, face_px: int) -> np.ndarray:
    """The frame scaled so its face is ``face_px`` wide in a 1920x1080 frame (a webcam far away)."""
    frame = small_face(bgr, opencv_face_box(bgr, YUNET), face_px)  # 4000x3000
    return np.ascontiguousarray(frame[960:2040, 1040:2960])


def test_native_and_facia_find_the_face_in_every_realworld_image(client, key, usage, samples):
    passes = {}
    before = usage(key)["used"]
    for s in samples:
        r = client.post("/v1/liveness", content=s.data, headers={"X-API-Key": key, "content-type": "application/octet-stream"})
        assert r.status_code == 200, (s.name, r.text)
        body = r.json()
        passes[s.name] = body["detector_pass"]
        assert body["decision"] in ("live", "spoof")
        f = client.post("/liveness", json={"hash_id": key, "selfie_image": base64.b64encode(s.data).decode()})
        assert f.status_code == 201, (s.name, f.text)
        assert f.json()["liveness_result"]["liveness_score"] == pytest.approx(body["score"], abs=1e-4)
    assert usage(key)["used"] - before == 2 * len(samples)
    assert passes["T1@0.55"] == "reference"
    assert passes["T1@12MP/120px"].startswith("yunet_")
    assert passes["img6/png16"] == "retinaface_128"


def test_dev_images_keep_their_reference_answers(client, key):
    for name, score in (("T1", 0.9936), ("F1", 0.0723), ("F2", 0.1813)):
        data = (MEDIA / "images" / f"silentface_image_{name}.jpg").read_bytes()
        body = client.post("/v1/liveness", content=data, headers={"X-API-Key": key, "content-type": "image/jpeg"}).json()
        assert body["detector_pass"] == "reference"
        assert body["score"] == pytest.approx(score, abs=1e-3)


@pytest.mark.parametrize("framing", ["close_up", "small_face"])
def test_video_with_real_world_framing_is_acquired(client, key, framing):
    frames = read_frames(VIDEO, every=8, limit=31)  # frames 0..240
    if framing == "close_up":
        made = [reframe(f, opencv_face_box(f, YUNET), 0.65, (1080, 1350)) for f in frames]
    else:
        made = [small_in_landscape(f, 110) for f in frames]
    clip = encode(made, 30 / 8)
    r = client.post("/v1/video-liveness", content=clip, headers={"X-API-Key": key, "content-type": "video/mp4"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == [], body["errors"]
    assert body["decision"] == "live"
    judged = [f for f in body["frames"] if f["liveness"] is not None]
    assert judged and all(f["face_found"] for f in body["frames"])
    if framing == "small_face":
        assert {f["detector_pass"].split("/")[0] for f in judged} <= {"yunet_640", "yunet_960"}
        assert [m["name"] for m in body["models"]][:2] == ["yunet", "retinaface"]


def test_session_attempt_with_a_12mp_photo(server, key, samples):
    url = server.url
    r = httpx.post(url + "/v1/sessions", json={"mode": "passive"}, headers={"X-API-Key": key}, timeout=60)
    assert r.status_code == 200, r.text
    session = r.json()
    photo = next(s for s in samples if s.name == "vid200@12MP/200px")
    r = httpx.post(url + "/v1/liveness", content=photo.data, timeout=60,
                   headers={"Authorization": f"Bearer {session['auth_token']}", "content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["session"]["status"] == "completed"
    doc = httpx.get(f"{url}/v1/sessions/{session['session_id']}", headers={"X-API-Key": key}, timeout=30).json()
    assert doc["status"] == "ResultAvailable"
    res = doc["result"]
    assert res["decision"] == "realface", res
    assert [m["name"] for m in res["model_versions"]][:2] == ["yunet", "retinaface"]


def test_challenge_frames_are_acquired(server, key):
    url = server.url
    r = httpx.post(url + "/start", json={}, headers={"X-API-Key": key}, timeout=60)
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    frames = [small_in_landscape(f, 140) for f in read_frames(VIDEO, every=5, limit=9)]
    for i, bgr in enumerate(frames):
        if i:
            time.sleep(0.12)  # after the previous answer: server-side gaps > 0.12 s (cap: 15 fps)
        r = httpx.post(url + "/process", json={"session_id": sid, "image": base64.b64encode(jpeg(bgr)).decode()},
                       headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["face_detected"] is True, body
        if body["verification_failed"]:
            break
