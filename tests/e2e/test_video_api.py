"""POST /v1/video-liveness over real HTTP: verdicts on the dev videos, flags, errors, quota."""

from __future__ import annotations

import base64
import io
import zipfile

import cv2
import httpx
import numpy as np
import pytest

from e2e_conftest import MEDIA
from tests.video_helpers import encode, fit, gif_segment, read_frames, stored_frames

VIDEOS = MEDIA / "videos"
MP4 = VIDEOS / "jomariya_real_1.mp4"
GIF = VIDEOS / "silentface_demo.gif"


def post(server, key, data: bytes, content_type: str = "video/mp4", params: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/video-liveness", content=data, params=params,
        headers={"X-API-Key": key, "Content-Type": content_type}, timeout=120,
    )


def test_real_selfie_video_is_alive_with_photo_and_normalized_face(server, make_key, usage):
    key = make_key(5)
    r = post(server, key, MP4.read_bytes(), params={"return_photo": "true", "return_normalized": "1"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["alive"] is True and doc["decision"] == "live" and doc["errors"] == []
    assert doc["average_liveness"] >= doc["liveness_threshold"]
    best = doc["best_face"]
    assert {"liveness", "quality", "bbox", "frame_no", "frame_ts", "photo", "normalized"} <= set(best)
    assert base64.b64decode(best["photo"])[:2] == b"\xff\xd8" and base64.b64decode(best["normalized"])[:4] == b"\x89PNG"
    assert 0 <= best["quality"] <= 1 and best["bbox"]["right"] > best["bbox"]["left"]
    judged = [f for f in doc["frames"] if f["liveness"] is not None]
    assert len(judged) >= 7 and all("frame_ts" in f and "quality" in f for f in doc["frames"])
    assert {m["name"] for m in doc["models"]} >= {"retinaface", "minifasnet_v2", "minifasnet_v1se"}
    assert usage(key)["used"] == 1  # one unit per video


@pytest.fixture(scope="module")
def phone_clips() -> dict[str, bytes]:
    """Phone containers made from the real dev selfie (40 frames, every 4th: 2.7 s at 15 fps)."""
    upright = read_frames(MP4, every=4, limit=40)  # 368x656 portrait
    cif = [fit(f, 288, 352) for f in upright]  # H.263 allows only a few sizes; portrait CIF
    return {
        "3gp-h264": encode(upright, 15, codec="h264", fmt="3gp"),
        # The same clip as a phone stores it: landscape frames plus a -90 display matrix.
        "3gp-h264-rotated": encode(stored_frames(upright, -90), 15, codec="h264", fmt="3gp", rotation=-90),
        "3g2-mpeg4": encode(upright, 15, codec="mpeg4", fmt="3g2"),
        "3gp-h263-cif-rotated": encode(stored_frames(cif, -90), 15, codec="h263", fmt="3gp", rotation=-90),
    }


@pytest.mark.parametrize("name,content_type,codec", [
    ("3gp-h264", "video/3gpp", "h264"),
    ("3g2-mpeg4", "video/3gpp2", "mpeg4"),
    ("3gp-h263-cif-rotated", "video/3gpp", "h263"),
])
def test_phone_3gp_clips_are_alive(server, make_key, usage, phone_clips, name, content_type, codec):
    key = make_key(5)
    r = post(server, key, phone_clips[name], content_type)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["alive"] is True and doc["decision"] == "live" and doc["errors"] == [], doc
    assert (doc["video"]["container"], doc["video"]["codec"], doc["video"]["frame_count"]) == ("mp4", codec, 40)
    assert usage(key)["used"] == 1


def test_rotated_3gp_is_judged_like_its_upright_twin(server, make_key, phone_clips):
    key = make_key(5)
    docs = {}
    for name in ("3gp-h264", "3gp-h264-rotated"):
        r = post(server, key, phone_clips[name], "video/3gpp", params={"return_photo": "true"})
        assert r.status_code == 200, r.text
        docs[name] = r.json()
    up, rot = docs["3gp-h264"], docs["3gp-h264-rotated"]
    assert (rot["alive"], rot["decision"], rot["errors"]) == (up["alive"], up["decision"], up["errors"]) == (True, "live", [])
    assert [f["frame_no"] for f in rot["frames"]] == [f["frame_no"] for f in up["frames"]]
    assert rot["average_liveness"] == pytest.approx(up["average_liveness"], abs=0.01)
    # The frames were turned upright before the models saw them: same face boxes, upright photo.
    for fu, fr in zip(up["frames"], rot["frames"]):
        assert all(abs(fr["bbox"][side] - fu["bbox"][side]) <= 8 for side in ("left", "top", "right", "bottom")), (fu, fr)
    for doc in (up, rot):
        photo = cv2.imdecode(np.frombuffer(base64.b64decode(doc["best_face"]["photo"]), np.uint8), cv2.IMREAD_COLOR)
        assert photo.shape == (656, 368, 3)


@pytest.mark.parametrize("first,last,alive", [(0, 32, True), (33, 61, False), (62, 87, False)], ids=["real", "replay", "print"])
def test_demo_gif_segments(server, make_key, first, last, alive):
    r = post(server, make_key(5), gif_segment(GIF, first, last), "image/gif")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["alive"] is alive
    if not alive:
        assert [e["code"] for e in doc["errors"]] == ["RejectedByPassiveLiveDetection"]


def test_no_face_is_failure_to_acquire_and_not_charged(server, make_key, usage):
    key = make_key(5)
    gray = encode([np.full((240, 320, 3), 120, np.uint8)] * 20, 10)
    doc = post(server, key, gray).json()
    assert doc["alive"] is False and [e["code"] for e in doc["errors"]] == ["FailureToAcquire"]
    assert usage(key)["used"] == 0


def test_hostile_videos_get_clear_errors_and_are_not_charged(server, make_key, usage):
    key = make_key(5)
    data = MP4.read_bytes()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.txt", "not a video")
    big = encode([np.zeros((2160, 3840, 3), np.uint8)] * 2, 5)
    cases = {
        "truncated": (data[: len(data) // 3], 400, "corrupt_video"),
        "zip": (zipped.getvalue(), 415, "unsupported_video"),
        "4k": (big, 413, "video_resolution_too_high"),
    }
    for name, (body, status, code) in cases.items():
        r = post(server, key, body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
    r = post(server, key, b"x" * (11 * 1024 * 1024))
    assert r.status_code == 413 and r.json()["error"]["code"] == "video_too_large"
    assert usage(key)["used"] == 0


def test_video_needs_a_key(server):
    r = httpx.post(f"{server.url}/v1/video-liveness", content=MP4.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
