"""The ``/v1/challenge/ws`` adapter against a fake ChallengeService (protocol, errors, limits)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from edge.challenge_ws import CLOSE_POLICY, CLOSE_TOO_BIG, PATH, challenge_ws_routes
from edge.demo import demo_routes
from liveness.errors import INVALID_API_KEY, ErrorKind, LivenessError

ADMIN_KEY = "admin-secret"
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()

class FakeChallenges:
    """Two frames with a face complete one step; a frame b"spoof" fails the session."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate  # process() holds each frame until the test opens it
        self.calls: list[tuple[str, Any]] = []
        self.frames = 0

    async def start(self, credential: str, challenges: list[str] | None = None, admin: bool = False) -> dict:
        if credential != "lk_good":
            raise LivenessError(INVALID_API_KEY, "Unknown API key.")
        self.calls.append(("start", (challenges, admin)))
        return {"session_id": "s1", "instruction": "Blink", "current_step": 1, "total_steps": 1,
                "expires_in_minutes": 5}

    async def process(self, credential: str, session_id: str, frame: bytes) -> dict:
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait, 60)
        self.frames += 1
        failed = frame == b"spoof"
        done = not failed and self.frames >= 2
        return {"face_detected": True, "instruction": "Blink", "step_completed": done,
                "verification_complete": done, "verification_failed": failed, "current_step": 1,
                "total_steps": 1, "reason": "spoof" if failed else None, "passive_score": 0.9}

    async def complete(self, credential: str, session_id: str) -> dict:
        self.calls.append(("complete", session_id))
        verdict = "fail" if self.frames < 2 else "pass"
        return {"verdict": verdict, "verification_time": 1.5, "steps_completed": 1, "result_token": "tok"}

def make_client(service: Any, min_interval: float = 0.0) -> TestClient:
    app = Starlette(routes=[
        *challenge_ws_routes(lambda: service, lambda: ADMIN_SHA, max_frame_bytes=lambda: 1000,
                             min_frame_interval=min_interval),
        *demo_routes(),
    ])
    return TestClient(app)

def test_happy_path_emits_challenge_feedback_result_then_closes():
    svc = FakeChallenges()
    with make_client(svc).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": "lk_good", "challenges": ["blink"], "admin_key": ADMIN_KEY}))
        first = ws.receive_json()
        assert first == {"type": "challenge", "session_id": "s1", "instruction": "Blink", "current_step": 1,
                         "total_steps": 1, "expires_in_minutes": 5}
        events = []
        for _ in range(2):
            ws.send_bytes(b"\xff\xd8jpeg")
            events.append(ws.receive_json())
            if events[-1]["type"] == "feedback" and events[-1].get("reason") == "frame_too_fast":
                continue
        while events[-1]["type"] != "result":
            events.append(ws.receive_json())
        assert [e["type"] for e in events if e.get("reason") != "frame_too_fast"] == ["feedback", "feedback", "result"]
        assert events[-1] == {"type": "result", "verdict": "pass", "steps_completed": 1,
                              "verification_time": 1.5, "result_token": "tok"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000
    assert svc.calls[0] == ("start", (["blink"], True))

def test_failed_verification_still_completes():
    svc = FakeChallenges()
    with make_client(svc).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": "lk_good"}))
        ws.receive_json()
        ws.send_bytes(b"spoof")
        assert ws.receive_json()["reason"] == "spoof"
        assert ws.receive_json()["verdict"] == "fail"
    assert svc.calls[0] == ("start", (None, False))

def test_frames_while_busy_are_dropped_with_feedback():
    gate = threading.Event()  # frame "a" stays in analysis until the drop was seen (was: a 0.3 s delay)
    svc = FakeChallenges(gate)
    with make_client(svc).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": "lk_good"}))
        ws.receive_json()
        ws.send_bytes(b"a")
        ws.send_bytes(b"b")
        dropped = ws.receive_json()
        assert dropped["type"] == "feedback" and dropped["reason"] == "frame_too_fast"
        assert dropped["instruction"] == "Blink" and dropped["current_step"] == 1
        gate.set()
        assert ws.receive_json()["reason"] is None
    assert svc.frames == 1

@pytest.mark.parametrize(
    ("first", "code", "close"),
    [
        ({"type": "start", "api_key": "lk_bad"}, "invalid_api_key", CLOSE_POLICY),
        ({"type": "start"}, "missing_api_key", CLOSE_POLICY),
        ({"type": "start", "api_key": "lk_good", "admin_key": "nope"}, "invalid_admin_key", CLOSE_POLICY),
        ({"type": "start", "api_key": "lk_good", "challenges": "blink"}, "invalid_request", CLOSE_POLICY),
        ({"type": "hello"}, "invalid_request", CLOSE_POLICY),
        ({"type": "start", "api_key": "lk_good", "auth_token": "eyJ.a.b"}, "invalid_request", CLOSE_POLICY),
        ({"type": "start", "auth_token": "eyJ.a.b", "challenges": ["blink"]}, "invalid_request", CLOSE_POLICY),
        ({"type": "start", "auth_token": 7}, "invalid_request", CLOSE_POLICY),
        # make_client wires no session service: sessions are off on this server
        ({"type": "start", "auth_token": "eyJ.a.b"}, "invalid_request", CLOSE_POLICY),
    ],
)
def test_bad_start_gives_error_event_and_close(first, code, close):
    with make_client(FakeChallenges()).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps(first))
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == code and err["message"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == close

def test_binary_before_start_and_oversized_frame():
    client = make_client(FakeChallenges())
    with client.websocket_connect(PATH) as ws:
        ws.send_bytes(b"\xff\xd8")
        assert ws.receive_json()["code"] == "invalid_request"
    with client.websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": "lk_good"}))
        ws.receive_json()
        ws.send_bytes(b"x" * 1001)
        assert ws.receive_json()["code"] == "image_too_large"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == CLOSE_TOO_BIG
    with client.websocket_connect(PATH) as ws:
        ws.send_text("x" * 5000)
        assert ws.receive_json()["code"] == "invalid_request"

def test_not_ready_service_closes_try_again():
    app = Starlette(routes=challenge_ws_routes(lambda: None, lambda: None))
    with TestClient(app).websocket_connect(PATH) as ws:
        err = ws.receive_json()
        assert err["code"] == "not_ready" and err["status"] == 503
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1013

def test_demo_page_and_assets_are_served():
    client = make_client(FakeChallenges())
    page = client.get("/demo")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert 'id="api-key"' in page.text and "/demo/assets/app.js" in page.text
    js = client.get("/demo/assets/app.js")
    assert js.status_code == 200 and "/v1/challenge/ws" in js.text
    assert client.get("/demo/assets/style.css").status_code == 200
    assert client.get("/demo/assets/../../errors.py").status_code == 404


def test_service_rate_limit_is_a_dropped_frame_not_an_error():
    class Limited(FakeChallenges):
        async def process(self, credential, session_id, frame):
            if frame == b"fast":
                raise LivenessError(ErrorKind("frame_too_fast", 429), "Too fast.")
            return await super().process(credential, session_id, frame)

    with make_client(Limited()).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": "lk_good"}))
        ws.receive_json()
        ws.send_bytes(b"fast")
        assert ws.receive_json()["reason"] == "frame_too_fast"
        ws.send_bytes(b"ok")
        assert ws.receive_json()["face_detected"] is True


def test_result_event_of_a_session_token_shows_only_what_the_session_allows():
    from edge.challenge_ws import _result_event

    hidden = _result_event({"session_id": "c1", "session": {"status": "completed", "attempt_id": 1}})
    assert hidden == {"type": "result", "session": {"status": "completed", "attempt_id": 1}}
    shown = _result_event({"verdict": "passed", "steps_completed": 1, "verification_time": 2.0,
                           "result_token": "t", "session": {"status": "completed"}})
    assert shown["verdict"] == "passed" and shown["result_token"] == "t" and shown["session"]["status"] == "completed"
