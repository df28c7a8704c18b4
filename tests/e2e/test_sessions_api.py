"""App-server sessions and face verification over real HTTP with the real models.

The app server (API key) creates a session and reads/deletes it; the "client" uses only the
session's token on the usual endpoints (/v1/liveness, /v1/video-liveness, /start /process
/complete).  Verification uses the dev verification pairs (pairs.csv), the real video and the
Silent-Face images.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import sqlite3
import time
from typing import Iterator

import httpx
import jwt
import pytest

from e2e_conftest import MEDIA, create_key, key_usage, run_cli, start_server
from video_jpegs import jpeg_frames

pytestmark = pytest.mark.e2e

SECRET = "e2e-session-secret-0123456789abcdef-0123"
ENV = {
    "LIVENESS_SESSION_TOKEN_SECRETS": json.dumps([SECRET]),
    "LIVENESS_SESSION_THROTTLE_FAILURES": "3",
    # The challenge round trip replays the dev video's blinks: one blink step.
    "LIVENESS_CHALLENGE_POOL": json.dumps(["blink"]),
    "LIVENESS_CHALLENGE_STEPS": "1",
    # Replays take as long as the machine makes them: no step or face-missing timeout may fire.
    "LIVENESS_CHALLENGE_STEP_TIMEOUT_S": "3600",
    "LIVENESS_CHALLENGE_FACE_MISSING_S": "3600",
}
# A frame is sent this long after the answer to the previous one, so the server's timestamps of
# two frames are always more than this apart (> 1/15 s, the frame-rate caps), however the
# machine schedules the requests.
SPACING_S = 0.1
IMAGES = MEDIA / "images"
T1, F1 = IMAGES / "silentface_image_T1.jpg", IMAGES / "silentface_image_F1.jpg"
VER = MEDIA / "verification"
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("sessions")
    db = d / "keys.sqlite3"
    srv = start_server(db, d, ENV)
    try:
        yield {"url": srv.url, "db": db, "dir": d, "server": srv}
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def video_frame(tmp_path_factory) -> bytes:
    """A frame of the dev video as JPEG: the reference face of that person."""
    import av
    import cv2

    with av.open(str(VIDEO)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i == 100:
                ok, buf = cv2.imencode(".jpg", fr.to_ndarray(format="bgr24"))
                assert ok
                return buf.tobytes()
    pytest.fail("video too short")


def create(url: str, key: str, params: dict, reference: bytes | None = None) -> httpx.Response:
    headers = {"X-API-Key": key}
    if reference is None:
        return httpx.post(url + "/v1/sessions", json=params, headers=headers, timeout=60)
    files = {"parameters": (None, json.dumps(params), "application/json"),
             "verify_image": ("ref.jpg", reference, "image/jpeg")}
    return httpx.post(url + "/v1/sessions", files=files, headers=headers, timeout=60)


def new_session(url: str, key: str, params: dict, reference: bytes | None = None) -> dict:
    r = create(url, key, params, reference)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"] and body["auth_token"].count(".") == 2
    return body


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def client_image(url: str, token: str, data: bytes) -> httpx.Response:
    return httpx.post(url + "/v1/liveness", content=data, timeout=60,
                      headers={**bearer(token), "content-type": "image/jpeg"})


def read(url: str, key: str, sid: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/sessions/{sid}", headers={"X-API-Key": key}, timeout=30)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- passive


def test_passive_round_trip_charges_once_and_delete_removes_everything(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "passive", "device_correlation_id": "phone-1"})
    assert key_usage(key)["used"] == 1  # the session is charged at creation, once
    r = read(url, key, s["session_id"])
    assert r.status_code == 200 and r.json()["status"] == "NotStarted"

    image = T1.read_bytes()
    r = client_image(url, s["auth_token"], image)
    assert r.status_code == 200, r.text
    body = r.json()
    # send_results_to_client is false: the client learns only that the check completed
    assert body["session"] == {"session_id": s["session_id"], "attempt_id": 1, "status": "completed",
                               "attempts_remaining": 2}
    assert "decision" not in body and "score" not in body

    doc = read(url, key, s["session_id"]).json()
    assert doc["status"] == "ResultAvailable" and not doc["session_expired"]
    assert doc["device_correlation_id"] == "phone-1" and doc["auth_token_ttl_seconds"] == 600
    res = doc["result"]
    assert res["decision"] == "realface" and res["score"] > 0.9
    assert res["digest"] == sha256(image)
    assert set(res["target_face_rectangle"]) == {"top", "left", "width", "height"}
    assert {m["name"] for m in res["model_versions"]} >= {"retinaface", "minifasnet_v2", "minifasnet_v1se"}
    assert res["latency_ms"] > 0 and doc["attempts"][0]["received_at"].endswith("Z")
    assert key_usage(key)["used"] == 1  # the client's attempt is not charged

    r = httpx.delete(f"{url}/v1/sessions/{s['session_id']}", headers={"X-API-Key": key})
    assert r.status_code == 204
    assert read(url, key, s["session_id"]).status_code == 404
    r = client_image(url, s["auth_token"], image)  # a deleted session's token is dead
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_session_token"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM documents WHERE kind = 'liveness_sessions' AND id = ?",
                            (s["session_id"],)).fetchone()[0] == 0


def test_results_to_client_attempts_and_completion(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "passive", "send_results_to_client": True, "max_attempts": 3})
    r = client_image(url, s["auth_token"], F1.read_bytes())
    assert r.status_code == 200 and r.json()["decision"] == "spoof" and r.json()["is_live"] is False, r.text
    assert r.json()["session"]["result"]["decision"] == "spoofface"
    r = client_image(url, s["auth_token"], T1.read_bytes())
    assert r.json()["decision"] == "live" and r.json()["session"]["attempts_remaining"] == 1
    r = client_image(url, s["auth_token"], T1.read_bytes())  # a realface result ends the session
    assert r.status_code == 409 and r.json()["error"]["code"] == "session_completed"
    doc = read(url, key, s["session_id"]).json()
    assert [a["result"]["decision"] for a in doc["attempts"]] == ["spoofface", "realface"]
    assert doc["result"]["decision"] == "realface"


def test_input_errors_count_as_attempts_and_spend_the_token(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "passive", "max_attempts": 1})
    blank = _blank_png()
    r = client_image(url, s["auth_token"], blank)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face", r.text
    assert r.json()["session"]["attempt_id"] == 1
    r = client_image(url, s["auth_token"], T1.read_bytes())
    assert r.status_code == 403 and r.json()["error"]["code"] == "attempts_exhausted"
    doc = read(url, key, s["session_id"]).json()
    assert doc["attempts"][0]["status"] == "failed" and doc["attempts"][0]["error"]["code"] == "no_face"
    assert key_usage(key)["used"] == 1


def test_token_checks(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "video"})
    r = client_image(url, s["auth_token"], T1.read_bytes())  # a video token on the image endpoint
    assert r.status_code == 403 and r.json()["error"]["code"] == "token_mode_mismatch"
    now = int(time.time())
    stale = jwt.encode({"typ": "liveness_session", "sid": s["session_id"], "mode": "passive", "iat": now - 700,
                        "exp": now - 100, "jti": "x"}, SECRET, algorithm="HS256")
    r = client_image(url, stale, T1.read_bytes())
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_token_expired"
    foreign = jwt.encode({"typ": "liveness_session", "sid": s["session_id"], "mode": "passive", "iat": now,
                          "exp": now + 600, "jti": "x"}, "another-secret-0123456789abcdef-0123", algorithm="HS256")
    r = client_image(url, foreign, T1.read_bytes())
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_session_token"
    # the token never works as an API key
    r = httpx.get(f"{url}/v1/sessions/{s['session_id']}", headers=bearer(s["auth_token"]))
    assert r.status_code == 401


def test_foreign_key_sees_404_and_lists_only_its_own(env):
    url, db = env["url"], env["db"]
    owner, other = create_key(db, 10), create_key(db, 10)
    s = new_session(url, owner, {"mode": "passive"})
    assert read(url, other, s["session_id"]).status_code == 404
    assert read(url, other, "no-such-session").status_code == 404
    r = httpx.delete(f"{url}/v1/sessions/{s['session_id']}", headers={"X-API-Key": other})
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    assert read(url, owner, s["session_id"]).status_code == 200  # still there
    mine = httpx.get(f"{url}/v1/sessions", headers={"X-API-Key": owner}).json()["sessions"]
    theirs = httpx.get(f"{url}/v1/sessions", headers={"X-API-Key": other}).json()["sessions"]
    assert [x["session_id"] for x in mine] == [s["session_id"]] and theirs == []


def test_bad_requests_are_not_charged(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    for params, code in [({"mode": "selfie"}, "invalid_request"),
                         ({"mode": "passive", "auth_token_ttl_seconds": 5}, "invalid_request"),
                         ({"mode": "passive-verify"}, "missing_image")]:
        r = create(url, key, params)
        assert r.status_code in (400, 422) and r.json()["error"]["code"] == code, r.text
    r = create(url, key, {"mode": "passive-verify"}, _blank_png())
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
    assert r.json()["error"]["details"]["field"] == "verify_image"
    two = _two_faces()
    r = create(url, key, {"mode": "passive-verify"}, two)
    assert r.status_code == 422 and r.json()["error"]["code"] == "multiple_faces", r.text
    assert key_usage(key)["used"] == 0
    r = httpx.post(url + "/v1/sessions", json={"mode": "passive"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_device_throttling(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 20)
    params = {"mode": "passive", "device_correlation_id": "attacker-phone", "max_attempts": 10,
              "send_results_to_client": True}
    s = new_session(url, key, params)
    for _ in range(3):  # LIVENESS_SESSION_THROTTLE_FAILURES=3
        assert client_image(url, s["auth_token"], F1.read_bytes()).json()["decision"] == "spoof"
    r = client_image(url, s["auth_token"], T1.read_bytes())
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failed_attempts"
    assert int(r.headers["retry-after"]) > 0
    r = create(url, key, params)  # nor a fresh session for that device
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_failed_attempts"
    used = key_usage(key)["used"]
    ok = new_session(url, key, {**params, "device_correlation_id": "other-phone"})
    assert client_image(url, ok["auth_token"], T1.read_bytes()).json()["decision"] == "live"
    assert key_usage(key)["used"] == used + 1


def test_session_image_only_when_enabled_and_purge_command(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    image = T1.read_bytes()
    kept = new_session(url, key, {"mode": "passive", "enable_session_image": True})
    plain = new_session(url, key, {"mode": "passive"})
    for s in (kept, plain):
        assert client_image(url, s["auth_token"], image).status_code == 200
    r = httpx.get(f"{url}/v1/sessions/{kept['session_id']}/attempts/1/image", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.content == image and r.headers["content-type"] == "image/jpeg"
    r = httpx.get(f"{url}/v1/sessions/{plain['session_id']}/attempts/1/image", headers={"X-API-Key": key})
    assert r.status_code == 404
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM documents WHERE kind = 'liveness_session_images' AND owner = ?",
                            (plain["session_id"],)).fetchone()
    assert n == 0
    out = json.loads(run_cli(db, "sessions", "purge").stdout)
    assert set(out) == {"references_wiped", "sessions_deleted", "images_deleted", "failures_deleted", "detections_deleted"}


# ----------------------------------------------------------------------------- video and challenge


def test_video_round_trip(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "video", "send_results_to_client": True})
    data = VIDEO.read_bytes()
    r = httpx.post(url + "/v1/video-liveness", content=data, timeout=120,
                   headers={**bearer(s["auth_token"]), "content-type": "video/mp4"})
    assert r.status_code == 200, r.text
    assert r.json()["alive"] is True and r.json()["session"]["result"]["decision"] == "realface"
    assert "photo" not in (r.json()["best_face"] or {})  # not asked for by the client
    doc = read(url, key, s["session_id"]).json()
    assert doc["result"]["digest"] == sha256(data) and doc["result"]["decision"] == "realface"
    assert key_usage(key)["used"] == 1


def _challenge(url: str, token: str) -> tuple[dict, list[dict], dict]:
    r = httpx.post(url + "/start", json={}, headers=bearer(token), timeout=60)
    assert r.status_code == 200, r.text
    started = r.json()
    answers = []
    for frame in jpeg_frames(VIDEO, 60, 320, 2):
        r = httpx.post(url + "/process", headers=bearer(token), timeout=60,
                       json={"session_id": started["session_id"], "image": base64.b64encode(frame).decode()})
        assert r.status_code == 200, r.text
        answers.append(r.json())
        if answers[-1]["verification_complete"] or answers[-1]["verification_failed"]:
            break
        time.sleep(SPACING_S)
    r = httpx.post(url + "/complete", json={"session_id": started["session_id"]}, headers=bearer(token), timeout=60)
    assert r.status_code == 200, r.text
    return started, answers, r.json()


def test_challenge_round_trip(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "challenge", "device_correlation_id": "laptop"})
    started, answers, done = _challenge(url, s["auth_token"])
    assert started["liveness_session_id"] == s["session_id"]
    assert answers[-1]["verification_complete"], answers[-1]
    assert "passive_score" not in answers[-1] and "frame_score" not in answers[-1]  # results stay server-side
    assert "verdict" not in done and "result_token" not in done and done["session"]["status"] == "completed"
    doc = read(url, key, s["session_id"]).json()
    assert doc["result"]["decision"] == "realface", doc
    assert doc["result"]["digest"].startswith("sha256:") and len(doc["result"]["digest"]) == 71
    assert key_usage(key)["used"] == 1  # the session, not the challenge, is charged
    # another key cannot drive this challenge with its own API key
    other = create_key(db, 10)
    r = httpx.post(url + "/complete", json={"session_id": started["session_id"]}, headers={"X-API-Key": other})
    assert r.status_code == 404


def _challenge_ws(url: str, token: str) -> tuple[dict, list[dict], dict]:
    """The same replay over /v1/challenge/ws: start with the token, one frame per feedback event."""
    from wsproto.utilities import LocalProtocolError
    from ws_client import WebSocket

    with WebSocket(url, "/v1/challenge/ws") as ws:
        ws.send_json({"type": "start", "auth_token": token})
        started = ws.receive_json()
        assert started["type"] == "challenge", started
        feedback: list[dict] = []
        for frame in jpeg_frames(VIDEO, 60, 320, 2):
            try:
                ws.send_bytes(frame)
            except LocalProtocolError:
                # A dropped frame's feedback overtakes the previous frame's answer, so the server
                # can finish (result, then close) while we send the next one: read what it sent.
                break
            event = ws.receive_json()
            if event["type"] == "result":
                return started, feedback, event
            assert event["type"] == "feedback", event
            feedback.append(event)
            time.sleep(SPACING_S)
        while True:  # the result, after any feedback still on its way
            event = ws.receive_json()
            if event["type"] == "result":
                return started, feedback, event
            assert event["type"] == "feedback", event
            feedback.append(event)


@pytest.mark.parametrize("send_results", [False, True])
def test_challenge_over_websocket_with_a_session_token(env, send_results):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "challenge", "send_results_to_client": send_results})
    started, feedback, result = _challenge_ws(url, s["auth_token"])
    assert started["session_id"] and feedback and result["session"]["status"] == "completed"
    assert result["session"]["session_id"] == s["session_id"] and result["session"]["attempt_id"] == 1
    if send_results:
        assert result["verdict"] == "passed" and result["result_token"], result
        assert result["session"]["result"]["decision"] == "realface"
    else:  # the verdict, scores and result token stay with the app server
        assert set(result) == {"type", "session"}, result
        assert all(e["passive_score"] is None for e in feedback)
    doc = read(url, key, s["session_id"]).json()
    assert doc["status"] == "ResultAvailable" and doc["result"]["decision"] == "realface", doc
    assert doc["result"]["digest"].startswith("sha256:")
    assert key_usage(key)["used"] == 1  # the session, not the challenge
    # The token is spent on that session's mode only, and the attempt ended the session.
    from ws_client import WebSocket

    with WebSocket(url, "/v1/challenge/ws") as ws:
        ws.send_json({"type": "start", "auth_token": s["auth_token"]})
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == "session_completed", err
    passive = new_session(url, key, {"mode": "passive"})
    forged = s["auth_token"][:-4] + ("AAAA" if not s["auth_token"].endswith("AAAA") else "BBBB")
    for token, code in ((passive["auth_token"], "token_mode_mismatch"), (forged, "invalid_session_token")):
        with WebSocket(url, "/v1/challenge/ws") as ws:
            ws.send_json({"type": "start", "auth_token": token})
            err = ws.receive_json()
            assert err["type"] == "error" and err["code"] == code, err
    assert read(url, key, passive["session_id"]).json()["attempts"] == []


# ----------------------------------------------------------------------------- verification


def _pairs() -> list[tuple[str, str, bool]]:
    with open(VER / "pairs.csv", newline="") as f:
        return [(r["file_a"], r["file_b"], r["same_person"] == "yes") for r in csv.DictReader(f)]


def test_verify_endpoint_on_pairs_csv(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 100)
    pairs = _pairs()
    for a, b, same in pairs:
        files = {"image1": (a, (VER / a).read_bytes(), "image/jpeg"), "image2": (b, (VER / b).read_bytes(), "image/jpeg")}
        r = httpx.post(url + "/v1/verify", files=files, headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["is_identical"] is same, (a, b, body)
        assert 0.0 <= body["match_confidence"] <= 1.0
        assert {m["name"] for m in body["models"]} == {"yunet", "mobilefacenet"}
    assert key_usage(key)["used"] == len(pairs)
    r = httpx.post(url + "/v1/verify", files={"image1": ("a", (VER / pairs[0][0]).read_bytes(), "image/jpeg")},
                   headers={"X-API-Key": key})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_image"
    assert key_usage(key)["used"] == len(pairs)


# RetinaFace (the liveness detector) finds no face in the tight close-ups img6 and img17 at its
# default confidence; img10 is the same person as img5.
@pytest.mark.parametrize("probe,same", [("deepface_img10.jpg", True), ("deepface_img8.jpg", False)])
def test_passive_verify_round_trip(env, probe, same):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    s = new_session(url, key, {"mode": "passive-verify", "send_results_to_client": True},
                    (VER / "deepface_img5.jpg").read_bytes())
    assert s["verify_image"]["quality_for_recognition"] in ("high", "medium")
    assert set(s["verify_image"]["face_rectangle"]) == {"top", "left", "width", "height"}
    r = client_image(url, s["auth_token"], (VER / probe).read_bytes())
    assert r.status_code == 200, r.text
    vr = read(url, key, s["session_id"]).json()["result"]["verify_result"]
    assert vr["is_identical"] is same, vr
    assert r.json()["session"]["result"]["verify_result"] == vr
    assert {m["name"] for m in read(url, key, s["session_id"]).json()["result"]["model_versions"]} >= {"mobilefacenet"}


def test_video_and_challenge_verify(env, video_frame):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    same = new_session(url, key, {"mode": "video-verify"}, video_frame)
    other = new_session(url, key, {"mode": "video-verify"}, (VER / "deepface_img5.jpg").read_bytes())
    data = VIDEO.read_bytes()
    for s in (same, other):
        r = httpx.post(url + "/v1/video-liveness", content=data, timeout=120,
                       headers={**bearer(s["auth_token"]), "content-type": "video/mp4"})
        assert r.status_code == 200, r.text
    assert read(url, key, same["session_id"]).json()["result"]["verify_result"]["is_identical"] is True
    assert read(url, key, other["session_id"]).json()["result"]["verify_result"]["is_identical"] is False

    chal = new_session(url, key, {"mode": "challenge-verify"}, video_frame)
    _, _, _ = _challenge(url, chal["auth_token"])
    res = read(url, key, chal["session_id"]).json()["result"]
    assert res["decision"] == "realface" and res["verify_result"]["is_identical"] is True, res
    assert res["verify_result"]["frames"] > 0


def test_deleting_a_verify_session_removes_its_embedding(env):
    url, db = env["url"], env["db"]
    key = create_key(db, 10)
    # a reference no other test uses: equal images give equal embeddings
    s = new_session(url, key, {"mode": "passive-verify"}, (VER / "deepface_img25.jpg").read_bytes())
    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT blob FROM documents WHERE kind = 'liveness_sessions' AND id = ?",
                               (s["session_id"],)).fetchone()
    assert blob is not None and len(blob) == 128 * 4
    assert httpx.delete(f"{url}/v1/sessions/{s['session_id']}", headers={"X-API-Key": key}).status_code == 204
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM documents WHERE blob = ?", (blob,)).fetchone()[0]
        left = conn.execute("SELECT COUNT(*) FROM documents WHERE id = ?", (s["session_id"],)).fetchone()[0]
    assert rows == 0 and left == 0


# ----------------------------------------------------------------------------- restart


def test_session_survives_restart(tmp_path):
    db = tmp_path / "keys.sqlite3"
    key = create_key(db, 5)
    first = start_server(db, tmp_path, ENV)
    try:
        s = new_session(first.url, key, {"mode": "passive", "send_results_to_client": True})
        assert client_image(first.url, s["auth_token"], F1.read_bytes()).json()["decision"] == "spoof"
    finally:
        first.stop()
    second = start_server(db, tmp_path, ENV)
    try:
        r = client_image(second.url, s["auth_token"], T1.read_bytes())  # same token, new process
        assert r.status_code == 200 and r.json()["decision"] == "live", r.text
        doc = read(second.url, key, s["session_id"]).json()
        assert [a["attempt_id"] for a in doc["attempts"]] == [1, 2]
        assert key_usage(key)["used"] == 1
    finally:
        second.stop()


# ----------------------------------------------------------------------------- helpers


def _blank_png() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".png", np.full((240, 320, 3), 200, np.uint8))
    return buf.tobytes()


def _two_faces() -> bytes:
    import cv2
    import numpy as np

    a = cv2.imread(str(VER / "deepface_img5.jpg"))
    b = cv2.imread(str(VER / "deepface_img8.jpg"))
    h = min(a.shape[0], b.shape[0])
    a = cv2.resize(a, (int(a.shape[1] * h / a.shape[0]), h))
    b = cv2.resize(b, (int(b.shape[1] * h / b.shape[0]), h))
    ok, buf = cv2.imencode(".jpg", np.hstack([a, b]))
    return buf.tobytes()
