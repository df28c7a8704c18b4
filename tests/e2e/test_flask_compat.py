"""Liveness_service (Flask/MediaPipe) clients against a served Bento, with only the host changed:
its REST client calls exactly as its README documents them (``requests``, no key, no body on
``/start``) and its real-time client (python-socketio's ``socketio.Client``, connecting with only
the URL) on routes the operator opened with ``LIVENESS_ANONYMOUS_ROUTES`` to the named key
``kiosk``.  Real models, real frames of the dev video (a blink: the pool is set to ``blink`` so
that a client that may not choose its challenges still gets one the video passes), real SQLite.

Asserted: every documented field with its documented type, ``verified_image`` (the operator keeps
frames here: ``LIVENESS_CHALLENGE_RETURN_FRAME``), one unit per session charged to ``kiosk`` and
none for bad input, and the seed's Socket.IO events.

Frames are paced as in test_challenges.py: each is sent ``SPACING_S`` after the answer to the
previous one (over Socket.IO: after its ``feedback`` event), so the server's timestamps are more
than 1 / challenge_max_fps apart whatever the scheduling; step and face-missing timeouts are far
beyond any replay.  Two workers, as a 2-core production server has: Engine.IO's polling
transport (the clients' default first transport, and the only one with ``transports=["polling"]``)
keeps its session in the worker that answered the handshake, and a poll that the kernel hands to the
other worker is relayed to it (edge/socketio_workers.py, docs/COMPATIBILITY.md "Liveness_service").
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any, Iterator

import jwt
import pytest
import requests
import socketio

from e2e_conftest import MEDIA, create_key, key_usage, start_server
from tests.socketio_helpers import Events
from video_jpegs import jpeg_frames

pytestmark = pytest.mark.e2e

SECRET = "e2e-flask-compat-result-secret-0123456789abcdef"
OPEN_ROUTES = {"/start": "kiosk", "/process": "kiosk", "/complete": "kiosk", "/status/*": "kiosk", "/socket.io/": "kiosk"}
ENV = {
    "LIVENESS_ANONYMOUS_ROUTES": json.dumps(OPEN_ROUTES),
    "LIVENESS_CHALLENGE_POOL": '["blink"]',
    "LIVENESS_CHALLENGE_STEPS": "1",
    "LIVENESS_CHALLENGE_RETURN_FRAME": "true",
    "LIVENESS_CHALLENGE_STEP_TIMEOUT_S": "3600",
    "LIVENESS_CHALLENGE_FACE_MISSING_S": "3600",
    "LIVENESS_JWT_SECRET": SECRET,
    "LIVENESS_WORKERS": "2",  # polling sessions must work whichever worker a request lands on
}
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"
T1 = MEDIA / "images" / "silentface_image_T1.jpg"
SPACING_S = 0.1
EVENT_WAIT_S = 120.0  # a guard against a hung server only; every wait ends on an event


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Iterator[tuple[str, Any]]:
    d = tmp_path_factory.mktemp("flask-compat")
    db = d / "keys.sqlite3"
    kiosk = create_key(db, 100, name="kiosk")
    srv = start_server(db, d, ENV)
    try:
        yield srv.url, kiosk
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def blink_frames() -> list[bytes]:
    return jpeg_frames(VIDEO, 60, 320, step=2)  # a blink (test_challenges.py)


def used(kiosk: Any) -> int:
    return key_usage(kiosk)["used"]


def is_jpeg_b64(text: Any) -> bool:
    return isinstance(text, str) and base64.b64decode(text)[:3] == b"\xff\xd8\xff"


def test_health_as_documented(seed):
    url, _ = seed
    body = requests.get(url + "/health").json()
    assert body["status"] == "healthy" and isinstance(body["service"], str) and isinstance(body["version"], str)
    assert type(body["active_sessions"]) is int and type(body["max_sessions"]) is int


def test_the_rest_client_as_documented(seed, blink_frames):
    url, kiosk = seed
    before = used(kiosk)
    # Start session (the README's Python client: no key, no body)
    r = requests.post(url + "/start")
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["success"] is True and isinstance(started["session_id"], str)
    assert isinstance(started["instruction"], str) and (started["current_step"], started["total_steps"]) == (1, 1)
    assert started["expires_in_minutes"] == 10 and type(started["expires_in_minutes"]) is int
    session_id = started["session_id"]
    assert used(kiosk) == before + 1  # the session's one unit, to the route's key

    answer: dict[str, Any] = {}
    for i, frame in enumerate(blink_frames):
        if i:
            time.sleep(SPACING_S)
        image_data = base64.b64encode(frame).decode()
        r = requests.post(url + "/process", json={"session_id": session_id, "image": image_data})
        assert r.status_code == 200, r.text
        answer = r.json()
        for field, kind in (("success", bool), ("face_detected", bool), ("instruction", str), ("step_completed", bool),
                            ("verification_complete", bool), ("verification_failed", bool), ("current_step", int),
                            ("total_steps", int)):
            assert type(answer[field]) is kind, (field, answer)
        if answer["verification_complete"] or answer["verification_failed"]:
            break
    assert answer["verification_complete"], answer

    status = requests.get(f"{url}/status/{session_id}").json()
    assert (status["success"], status["session_id"], status["completed"]) == (True, session_id, True)
    assert isinstance(datetime.fromisoformat(status["created_at"]), datetime)
    assert type(status["current_step"]) is int and status["total_steps"] == 1 and isinstance(status["instruction"], str)

    r = requests.post(url + "/complete", json={"session_id": session_id})
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["success"], done["session_id"], done["verdict"]) == (True, session_id, "passed"), done
    assert is_jpeg_b64(done["verified_image"]) and done["verified_image_path"] is None
    assert isinstance(done["verification_time"], float) and done["steps_completed"] == 1
    assert type(done["total_blinks"]) is int and done["total_blinks"] >= 1
    assert isinstance(datetime.fromisoformat(done["timestamp"]), datetime)
    assert jwt.decode(done["result_token"], SECRET, algorithms=["HS256"])["sid"] == session_id
    assert used(kiosk) == before + 1  # frames, status and verdict were paid for by the start


def test_bad_input_gets_a_documented_error_and_is_never_charged(seed):
    url, kiosk = seed
    r = requests.post(url + "/start", data=b"{not json", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["success"]) == (400, "invalid_request", False)
    r = requests.post(url + "/start", headers={"X-API-Key": "lk_not-a-key"})  # a sent key is judged by itself
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key")
    before = used(kiosk)
    session_id = requests.post(url + "/start").json()["session_id"]
    for image, code in (("%%% not base64 %%%", "invalid_base64"),
                        (base64.b64encode(b"\xff\xd8\xff garbage" * 50).decode(), "corrupt_image")):
        r = requests.post(url + "/process", json={"session_id": session_id, "image": image})
        body = r.json()
        assert r.status_code in (400, 415) and body["success"] is False, r.text
        assert body["error"]["code"] in (code, "unsupported_format") and isinstance(body["error"]["message"], str)
    r = requests.post(url + "/process", json={"session_id": "liveness_1699123456_1234", "image": "AAAA"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["success"]) == (404, "session_not_found", False)
    assert requests.get(f"{url}/status/{session_id}").json()["frames"] == 0
    assert used(kiosk) == before + 1  # that session only


@pytest.mark.parametrize("transports", [None, ["polling"], ["websocket"]])
def test_the_socketio_client_with_only_the_url(seed, blink_frames, transports):
    url, kiosk = seed
    before = used(kiosk)
    client = socketio.Client(reconnection=False)
    recorder = Events(client, EVENT_WAIT_S)
    client.connect(url, transports=transports, wait_timeout=EVENT_WAIT_S)
    try:
        name, challenge = recorder.next()
        assert name == "challenge" and challenge["challenge"] == "BLINK" and challenge["success"] is True, challenge
        assert type(challenge["expires_in_minutes"]) is int and isinstance(challenge["session_id"], str)
        assert used(kiosk) == before + 1
        feedback = []
        for i, frame in enumerate(blink_frames):
            if i:
                time.sleep(SPACING_S)
            client.emit("frame", frame)  # binary JPEG, as the seed's clients send
            name, event = recorder.next()
            assert name == "feedback", (name, event)
            assert event["status"] in ("SUCCESS", "INFO", "FAIL") and isinstance(event["message"], str)
            feedback.append(event)
            if event["verification_complete"] or event["verification_failed"]:
                break
        assert feedback[-1]["verification_complete"] and feedback[-1]["status"] == "SUCCESS", feedback[-1]
        name, result = recorder.next()
        assert name == "result", (name, result)
        assert (result["status"], result["verdict"], result["success"]) == ("SUCCESS", "passed", True), result
        assert jwt.decode(result["token"], SECRET, algorithms=["HS256"])["sid"] == challenge["session_id"]
        assert is_jpeg_b64(result["verified_image"]) and type(result["total_blinks"]) is int
        assert recorder.next()[0] == "disconnect"  # the server ends the connection after the result
    finally:
        client.disconnect()
    assert used(kiosk) == before + 1


def test_a_bad_socketio_frame_is_an_error_event_and_costs_nothing(seed):
    url, kiosk = seed
    before = used(kiosk)
    client = socketio.Client(reconnection=False)
    recorder = Events(client, EVENT_WAIT_S)
    client.connect(url, wait_timeout=EVENT_WAIT_S)
    try:
        session_id = recorder.next()[1]["session_id"]
        client.emit("frame", b"\xff\xd8\xff garbage" * 50)
        name, err = recorder.next()
        assert name == "error" and err["code"] in ("corrupt_image", "unsupported_format") and err["success"] is False
        time.sleep(SPACING_S)
        client.emit("frame", T1.read_bytes())  # the session goes on
        name, event = recorder.next()
        assert (name, event["face_detected"]) == ("feedback", True), event
    finally:
        client.disconnect()
    status = requests.get(f"{url}/status/{session_id}").json()  # the session is left to expire
    assert (status["status"], status["frames"]) == ("active", 1)
    assert used(kiosk) == before + 1
